"""Drop-in replacement for ``k_diffusion.sampling``: ``import k_diffusing.sampling as sampling``.

Every public sampler and helper of k-diffusion 0.1.1 exists here under the same name with the same arguments (plus
keyword-only extensions such as ``generator``), and gives k-diffusion's result for the same model, sigmas and
``noise_sampler`` on variance-exploding models. Unlike k-diffusion, the samplers also run correctly on flow-matching
models (a model whose ``geometry`` attribute is ``k_diffusing.geometry.FLOW``), keep float32 state for half-precision
inputs, make no host syncs inside their loops, and skip zero-length steps (two equal consecutive sigmas, as
diffusers' schedulers produce; k-diffusion divides by zero on them in its multistep samplers): such a step makes no
model call and draws no noise, and the callback's ``i`` counts the steps that remain. The rest of the catalogue
(``sample_uni_pc``, ``sample_restart``, ...) is exported here too.

Not carried over: ``log_likelihood`` (needs torchdiffeq and is not a sampler) and k-diffusion's internal
``DPMSolver`` / ``PIDStepSizeController`` classes.
"""

from .noise import BatchedBrownianTree, BrownianTreeNoiseSampler, default_noise_sampler
from .samplers.base import to_d
from .samplers.cfg_pp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
    sample_gradient_estimation_cfg_pp,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
)
from .samplers.ddpm import sample_ddpm, sample_lcm, sample_tcd
from .samplers.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from .samplers.dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
)
from .samplers.euler import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_heunpp2,
)
from .samplers.exponential import (
    sample_er_sde,
    sample_exp_heun_2_x0,
    sample_exp_heun_2_x0_sde,
    sample_res_multistep,
    sample_res_multistep_ancestral,
    sample_seeds_2,
    sample_seeds_3,
)
from .samplers.multistep import (
    linear_multistep_coeff,
    sample_deis,
    sample_gradient_estimation,
    sample_ipndm,
    sample_ipndm_v,
    sample_lms,
    sample_plms,
)
from .samplers.restart import sample_restart
from .samplers.sa_solver import sample_sa_solver, sample_sa_solver_diffusers, sample_sa_solver_pece
from .samplers.singlestep import sample_dpmpp_singlestep
from .samplers.unipc import sample_uni_pc, sample_uni_pc_bh2
from .schedules import (
    append_zero,
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_polyexponential,
    get_sigmas_vp,
)

__all__ = [
    "BatchedBrownianTree",
    "BrownianTreeNoiseSampler",
    "append_zero",
    "default_noise_sampler",
    "get_ancestral_step",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_polyexponential",
    "get_sigmas_vp",
    "linear_multistep_coeff",
    "sample_ddpm",
    "sample_deis",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpm_adaptive",
    "sample_dpm_fast",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_cfg_pp",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_2s_ancestral_cfg_pp",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_dpmpp_singlestep",
    "sample_er_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_euler_ancestral_cfg_pp",
    "sample_euler_cfg_pp",
    "sample_exp_heun_2_x0",
    "sample_exp_heun_2_x0_sde",
    "sample_gradient_estimation",
    "sample_gradient_estimation_cfg_pp",
    "sample_heun",
    "sample_heunpp2",
    "sample_ipndm",
    "sample_ipndm_v",
    "sample_lcm",
    "sample_lms",
    "sample_plms",
    "sample_res_multistep",
    "sample_res_multistep_ancestral",
    "sample_res_multistep_ancestral_cfg_pp",
    "sample_res_multistep_cfg_pp",
    "sample_restart",
    "sample_sa_solver",
    "sample_sa_solver_diffusers",
    "sample_sa_solver_pece",
    "sample_seeds_2",
    "sample_seeds_3",
    "sample_uni_pc",
    "sample_tcd",
    "sample_uni_pc_bh2",
    "to_d",
]


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """k-diffusion's VE ancestral split: ``(sigma_down, sigma_up)`` for a step from ``sigma_from`` to ``sigma_to``
    (floats or tensors). For other geometries use ``Geometry.ancestral_step``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_up = sigma_up if sigma_up < sigma_to else sigma_to
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up
