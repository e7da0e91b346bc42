"""diffusers schedulers read as k-samplers: which sampler a loaded scheduler is, and its own sigmas.

The pipeline's ``scheduler`` component is only read: a fresh copy (``type(s).from_config(s.config)``) is set up for
the requested steps, and its sigmas, timesteps and initial-noise convention are taken from the copy.

Latent conventions: the Euler family (Euler, Euler a, Heun, KDPM2, LMS, DPM-Solver SDE) keeps VE latents
``x = x0 + sigma eps`` (``init_noise_sigma`` = the first sigma or ``sqrt(sigma^2 + 1)``); the DDPM family (DDIM,
DDPM, DPM-Solver multistep, UniPC, DEIS, LCM) keeps VP latents ``x / sqrt(sigma^2 + 1)`` (``init_noise_sigma = 1``).
Our samplers run in VE units, so VP latents are multiplied by ``sqrt(sigma_0^2 + 1)`` on the way in.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..noise import BrownianTreeNoiseSampler


@dataclass(frozen=True)
class Equivalent:
    """The k-sampler a scheduler class runs, with the options read from its config. ``step_options`` maps keywords
    of the base's ``step`` to sampler options (TCD's ``eta`` is tcd's ``gamma``: the pipeline passes it per call;
    absent, the base step's default); ``run_options(base, kwargs)`` gives options computed from the set-up base
    and those values, one entry per step of its own schedule (TCD's intermediate sigmas); ``schedule_options(own)``
    gives options that follow from the base's own schedule (a :class:`SchedulerSigmas`) and shape its calls (the
    extra call of a schedule ending on a repeated sigma); ``final_scale(base)`` is the factor by which the base's
    own last step multiplies its result (UnCLIP's), applied on its own schedule."""

    sampler: str
    kwargs: dict = field(default_factory=dict)
    step_options: dict = field(default_factory=dict)
    run_options: Callable | None = None
    schedule_options: Callable | None = None
    final_scale: Callable | None = None


def _dpm_multistep(config) -> Equivalent:
    algorithm, order = config.algorithm_type, config.solver_order
    if algorithm == "dpmsolver++" and order == 2 and config.solver_type == "midpoint":
        return Equivalent("dpmpp_2m", {"lower_order_final": bool(config.lower_order_final)},
                          schedule_options=_final_call)
    if algorithm == "sde-dpmsolver++" and order == 2:
        name = "dpmpp_2m_sde_heun" if config.solver_type == "heun" else "dpmpp_2m_sde"
        return Equivalent(name)
    raise ValueError(
        f"DPMSolverMultistepScheduler(algorithm_type={algorithm!r}, solver_order={order}, "
        f"solver_type={config.solver_type!r}) has no k-sampler equivalent here; pass sampler= (e.g. 'dpmpp_2m', "
        "'dpmpp_2m_sde', 'dpmpp_3m_sde')"
    )


def limits_denoised(config) -> bool:
    """Whether the scheduler's config clips (``clip_sample``; a consistency model's ``clip_denoised``, to [-1, 1])
    or thresholds (``thresholding``) its predicted sample; the bridge then applies the same limit to every ``D``
    (:func:`x0_limit`)."""
    return bool(config.get("thresholding", False) or clips_denoised(config))


def clips_denoised(config) -> bool:
    """Whether the config clips the predicted sample: ``clip_sample`` (the DDPM family) or ``clip_denoised``
    (CMStochasticIterativeScheduler), both to ``[-clip_sample_range, clip_sample_range]`` (default 1)."""
    return bool(config.get("clip_sample", False) or config.get("clip_denoised", False))


def _ddim(config, name: str) -> Equivalent:
    """DDIM with eta = 0 is Euler in VE units (Song et al. 2020, arXiv 2010.02502, Eq. 14). With clipping or
    thresholding its step is ``x' = D_c + sigma' eps`` with the limited ``D_c`` but the network's own ``eps``
    (``use_clipped_model_output=False``, what the pipelines pass): a function of two estimates of ``x0``, where a
    k-sampler's step sees one."""
    if limits_denoised(config):
        raise ValueError(
            f"{name} with clip_sample/thresholding steps to x' = clip(x0) + sigma' eps with the network's unclipped "
            "eps: that update needs two different estimates of x0 and a k-sampler sees one, so no k-sampler is "
            f"its exact equivalent. Pass sampler= (e.g. 'euler': the limit is then applied to D for every sampler, "
            f"which is {name} with use_clipped_model_output=True), or set clip_sample=False and thresholding=False"
        )
    return Equivalent("euler")


def _ddpm(config, name: str) -> Equivalent:
    """DDPM's ancestral step with the posterior variance ``beta~_t`` (Ho et al. 2020, arXiv 2006.11239, Eq. 7),
    which is k-diffusion's ``ddpm``; a limited ``x0`` enters the posterior mean as ``D`` does."""
    variance = config.get("variance_type") or "fixed_small"
    if variance not in ("fixed_small", "fixed_small_log"):
        raise ValueError(
            f"{name}(variance_type={variance!r}) draws its step noise with a variance other than DDPM's posterior "
            "variance (learned ones come from the network's extra output channels, which a denoiser D(x, sigma) "
            "does not return): no k-sampler is its exact equivalent; pass sampler= or use variance_type='fixed_small'"
        )
    return Equivalent("ddpm")


def _unclip_final_scale(scheduler) -> float:
    """UnCLIPScheduler's last step (``t = 0``, ``prev_timestep = t - 1``) returns ``beta_0 / (1 - abar_0) x0``: it
    takes ``beta_0`` from ``betas`` and ``1 - abar_0`` from ``alphas_cumprod``, whose ``abar_0 = 1 - beta_0`` is
    rounded to float32, so the factor is not 1 (Karlo's squaredcos table: 0.99947, 5.3e-4 below)."""
    return float(scheduler.betas[0].double() / (1 - scheduler.alphas_cumprod[0].double()))


def _unclip(config) -> Equivalent:
    """UnCLIP (Karlo) steps by DDPM's posterior (``fixed_small_log`` is its standard deviation): ``ddpm``, with the
    factor of its last step (:func:`_unclip_final_scale`)."""
    return replace(_ddpm(config, "UnCLIPScheduler"), final_scale=_unclip_final_scale)


def _tcd_sigmas_s(scheduler, kwargs: dict) -> dict:
    """TCD's intermediate levels (diffusers' ``TCDScheduler.step``): after the step from ``t`` the sample is taken to
    timestep ``s = floor((1 - gamma) t_prev)`` (``t_prev``: the next timestep, 0 after the last), computed as
    diffusers computes it (a float32 product, so ``0.7 * 10`` floors to 6), before re-noising to ``t_prev``."""
    timesteps = scheduler.timesteps.cpu()
    previous = torch.cat([timesteps[1:], torch.zeros(1, dtype=timesteps.dtype)])
    s = torch.floor((1 - kwargs["gamma"]) * previous).to(torch.long)
    acp = scheduler.alphas_cumprod.to(torch.float32).cpu()[s]
    return {"sigmas_s": (((1 - acp) / acp) ** 0.5).double().tolist()}


def _dpm_singlestep(config) -> Equivalent:
    """DPM-Solver(++) singlestep on the base's own grid: the intermediate points are its grid points, in the groups
    of its ``order_list`` (which ``set_timesteps`` has fitted, ``lower_order_final`` included; sliced for a run
    started mid-schedule); a repeated ``sigma_min`` end is its final call."""
    if config.algorithm_type == "sde-dpmsolver++":
        raise ValueError("DPMSolverSinglestepScheduler(algorithm_type='sde-dpmsolver++') draws noise inside its "
                         "singlestep SDE update, which dpmpp_singlestep does not: no k-sampler is its exact "
                         "equivalent; pass sampler=")
    return Equivalent("dpmpp_singlestep", {"order": config.solver_order, "solver_type": config.solver_type,
                                           "algorithm_type": config.algorithm_type},
                      run_options=lambda base, kwargs: {"orders": list(base.order_list)},
                      schedule_options=_final_call)


def _sa_solver_taus(scheduler, kwargs: dict) -> dict:
    """SASolverScheduler's tau of each step: its own ``tau_func`` at the step's timestep."""
    return {"taus": [float(scheduler.tau_func(t)) for t in scheduler.timesteps]}


def _sa_solver(config) -> Equivalent:
    """SA-Solver as diffusers runs it (``sa_solver_diffusers``; ComfyUI's ``sa_solver`` is another method)."""
    if config.algorithm_type != "data_prediction":
        raise ValueError(f"SASolverScheduler(algorithm_type={config.algorithm_type!r}) integrates the noise "
                         "prediction; sa_solver_diffusers is its data-prediction form: use "
                         "algorithm_type='data_prediction' or pass sampler=")
    return Equivalent("sa_solver_diffusers", {"predictor_order": config.predictor_order,
                                              "corrector_order": config.corrector_order,
                                              "lower_order_final": bool(config.lower_order_final)},
                      run_options=_sa_solver_taus, schedule_options=_final_call)


def _pndm(config) -> Equivalent:
    """PNDM with ``skip_prk_steps`` (PLMS, the SD 1.x default) is ``plms``; its pseudo Runge-Kutta warm-up
    evaluates the network at half-way timesteps ``t - stride / 2`` of the integer training grid, which are not in
    the schedule a k-sampler is given."""
    if not config.get("skip_prk_steps", False):
        raise ValueError(
            "PNDMScheduler(skip_prk_steps=False) warms up with pseudo Runge-Kutta steps that call the network at "
            "half-way timesteps t - stride/2 of the training grid, points no k-sampler schedule holds, so no k-sampler "
            "is its exact equivalent; use skip_prk_steps=True (PLMS, SD 1.x's config: equivalent 'plms') or pass sampler="
        )
    return Equivalent("plms")


def _descending(config, name: str) -> None:
    """Refuse a flow scheduler configured with ``invert_sigmas`` (its sigmas run upwards from 0)."""
    if config.get("invert_sigmas", False):
        raise ValueError(f"{name}(invert_sigmas=True) runs sigma upwards from 0; no k-sampler integrates that way. "
                         "Use invert_sigmas=False or pass sampler= with a descending schedule")


def _flow_match_euler(config) -> Equivalent:
    """Euler in flow geometry; with ``stochastic_sampling`` its step is ``x = (1 - s') D + s' z``, i.e. ``lcm``."""
    _descending(config, "FlowMatchEulerDiscreteScheduler")
    return Equivalent("lcm" if config.get("stochastic_sampling", False) else "euler")


def _flow_match_lcm(config) -> Equivalent:
    """FlowMatchLCMScheduler's step is ``x = (1 - s') D + s' z`` with fresh noise ``z`` (Luo et al. 2023, arXiv
    2310.04378, Alg. 3, in flow units): ``lcm``. With ``scale_factors`` it upsamples ``D`` between steps, so the state
    changes shape, which a k-sampler's state (one tensor through the run) cannot."""
    _descending(config, "FlowMatchLCMScheduler")
    if config.get("scale_factors"):
        raise ValueError(
            f"FlowMatchLCMScheduler(scale_factors={list(config.scale_factors)}) upsamples the denoised estimate "
            "between steps (the latents grow), and a k-sampler's state keeps one shape through the run, so no "
            "k-sampler is its exact equivalent; use scale_factors=None or pass sampler=")
    return Equivalent("lcm")


def _ltx_euler_ancestral_rf(config) -> Equivalent:
    """LTXEulerAncestralRFScheduler (ComfyUI's ``sample_euler_ancestral_RF``) with ``eta = 0`` is the flow Euler step
    ``x' = (s'/s) x + (1 - s'/s) D``: ``euler``. With ``eta > 0`` it steps to ``sigma_down = s' (1 + (s'/s - 1)
    eta)``, a split linear in the flow sigma, where ``euler_ancestral`` steps to the DDPM posterior's ``sigma_down``
    (VE ``s_ve'^2 / s_ve``; at ``eta = 1``, s = 0.8, s' = 0.6: 0.45 against 0.36); with ``s_noise = 0`` it still
    steps to that ``sigma_down`` and then adds no noise."""
    if config.eta:
        raise ValueError(
            f"LTXEulerAncestralRFScheduler(eta={config.eta}, s_noise={config.s_noise}) splits each step at "
            "sigma_down = sigma_next (1 + (sigma_next / sigma - 1) eta), linear in the flow sigma (ComfyUI's "
            "euler_ancestral_RF), and re-noises to sigma_next by s_noise (not at all at s_noise=0); the catalogue's "
            "euler_ancestral splits by the DDPM posterior (in VE units), so no k-sampler is its exact equivalent; "
            "use eta=0 (equivalent 'euler') or pass sampler=")
    return Equivalent("euler")


def _consistency(config) -> Equivalent:
    """CMStochasticIterativeScheduler (Song et al. 2023, arXiv 2303.01469, Alg. 1) is ``lcm`` with its boundary
    ``epsilon = sigma_min`` and its ``s_noise``: ``x' = D + s_noise sqrt(sigma'^2 - sigma_min^2) z``, D by its
    parameterisation (:class:`ConsistencyPreconditioning`). ``sigma_min`` is the config's value: its schedule ends
    on the float32 rounding of it (9.5e-11 above 0.002), so its last step adds noise of std ``sqrt(sigma_min32^2 -
    sigma_min^2)`` (6.2e-7; diffusers computes it in float32: 6.7e-7), which ``lcm`` adds too."""
    return Equivalent("lcm", {"sigma_min": float(config.sigma_min), "s_noise": float(config.s_noise)},
                      schedule_options=_consistency_schedule)


def _consistency_schedule(own) -> dict:
    """CMStochasticIterativeScheduler's calls and noise on its own schedule: a schedule ending on a repeated
    ``sigma_min`` (the call at ``sigma_min`` itself: 40 steps, or custom timesteps with 39) ends with a step from it
    to itself (``final_call``); a one-step schedule draws no noise (Song et al.'s one-step generation ``f(x_T, T)``),
    though its step ends at the float32 ``sigma_min``: ``s_noise = 0`` there."""
    return {"final_call": own.ends_repeated, **({"s_noise": 0.0} if len(own.sigmas) == 2 else {})}


class ConsistencyPreconditioning:
    """A consistency model's parameterisation (Song et al. 2023, arXiv 2303.01469, App. C) as the EDM preconditioning
    methods KScheduler calls on EDM bases (Karras et al. 2022, arXiv 2206.00364, Table 1), by
    CMStochasticIterativeScheduler's own formulas: ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` (its
    ``scale_model_input``), ``c_noise`` its ``sigma_to_t`` (``250 log sigma``), ``D = c_out F + c_skip x`` with its
    ``get_scalings_for_boundary_condition`` (``epsilon = sigma_min``: ``D(x, sigma_min) = x``)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def precondition_inputs(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return sample / ((sigma**2 + self.scheduler.config.sigma_data**2) ** 0.5)

    def precondition_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.scheduler.sigma_to_t(sigma.double().numpy()))

    def precondition_outputs(self, sample: torch.Tensor, model_output: torch.Tensor,
                             sigma: torch.Tensor) -> torch.Tensor:
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition(sigma)
        return c_out * model_output + c_skip * sample


def edm_preconditioning(scheduler):
    """What gives an EDM-parameterised base's ``c_in``, ``c_noise`` and ``D`` (``precondition_inputs / _noise /
    _outputs``): the base itself where it keeps those methods (EDMEuler, EDMDPMSolverMultistep,
    CosineDPMSolverMultistep), a :class:`ConsistencyPreconditioning` for a consistency model; None otherwise."""
    if all(hasattr(scheduler, f"precondition_{part}") for part in ("inputs", "noise", "outputs")):
        return scheduler
    if known_class(scheduler) == "CMStochasticIterativeScheduler":
        return ConsistencyPreconditioning(scheduler)
    return None


def _cosine_dpm(config) -> Equivalent:
    """CosineDPMSolverMultistepScheduler (Stable Audio) is SDE-DPM-Solver++ on its EDM-preconditioned sigmas with
    Brownian noise (:func:`brownian_noise_for`): order 2 is ``dpmpp_2m_sde`` (eta 1; its step into 0 is first order,
    ``D``), order 1 its first-order step, the DDPM posterior draw: ``ddpm``."""
    if config.final_sigmas_type != "zero":
        raise ValueError(
            f"CosineDPMSolverMultistepScheduler(final_sigmas_type={config.final_sigmas_type!r}) ends on a repeated "
            "sigma_min, and its zero-length last step asks its Brownian tree for the noise of that empty interval "
            "at its lower edge: diffusers itself fails there (RecursionError in torchsde's BrownianInterval), so "
            "there is no native result to reproduce; use final_sigmas_type='zero' or pass sampler=")
    if config.solver_order not in (1, 2):
        raise ValueError(f"CosineDPMSolverMultistepScheduler(solver_order={config.solver_order}) has updates of "
                         "order 1 and 2 only (diffusers' step leaves the sample undefined above); use 1 or 2")
    if config.solver_order == 1:
        return Equivalent("ddpm")
    return Equivalent("dpmpp_2m_sde_heun" if config.solver_type == "heun" else "dpmpp_2m_sde")


def _minimax_timestep(sigma: float) -> float:
    """MiniMax-H3's timestep ``t = 1 - sigma`` (``t = 1``: clean), the float32 difference as its scheduler keeps it."""
    return float(np.float32(1.0) - np.float32(sigma))


def _minimax_denoised(x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
    """MiniMax-H3's ``x0 = x + (1 - t) v``: its network predicts the data-ward velocity ``x0 - eps``."""
    return x + (1.0 - t) * v


@dataclass(frozen=True)
class FlowConvention:
    """A flow scheduler that names its noise level and velocity otherwise than diffusers' FlowMatch ones (``t = sigma
    N``, ``v = eps - x0``, ``D = x - sigma v``): ``timestep(sigma)``, what it feeds the network, and ``denoised(x, t,
    v)``, its own ``x0`` formula at that timestep. Its ``scale_noise`` takes the timestep at face value."""

    timestep: Callable[[float], float]
    denoised: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]


FLOW_CONVENTIONS = {"MiniMaxH3Scheduler": FlowConvention(_minimax_timestep, _minimax_denoised)}
# Flow-matching scheduler classes whose names do not start with FlowMatch.
FLOW_CLASSES = {"LTXEulerAncestralRFScheduler", *FLOW_CONVENTIONS}


def flow_convention(scheduler) -> FlowConvention | None:
    """The :class:`FlowConvention` of ``scheduler``'s class (or nearest listed base), None for the FlowMatch one."""
    return next((FLOW_CONVENTIONS[c.__name__] for c in type(scheduler).__mro__ if c.__name__ in FLOW_CONVENTIONS),
                None)


def _final_call(own) -> dict:
    """A multistep scheduler whose schedule ends on a repeated sigma (``final_sigmas_type="sigma_min"`` on Karras,
    exponential, beta or flow sigmas) calls the network once more there (UniPC corrects its last step with it):
    the sampler's ``final_call``."""
    return {"final_call": own.ends_repeated}


def _unipc(config) -> Equivalent:
    name = "uni_pc_bh2" if config.solver_type == "bh2" else "uni_pc"
    kwargs = {"order": config.solver_order, "lower_order_final": config.lower_order_final,
              "use_corrector": not config.disable_corrector}
    return Equivalent(name, kwargs, schedule_options=_final_call)


_EQUIVALENTS = {
    "EulerDiscreteScheduler": lambda c: Equivalent("euler"),
    "EulerAncestralDiscreteScheduler": lambda c: Equivalent("euler_ancestral"),
    "HeunDiscreteScheduler": lambda c: Equivalent("heun"),
    "KDPM2DiscreteScheduler": lambda c: Equivalent("dpm_2"),
    "KDPM2AncestralDiscreteScheduler": lambda c: Equivalent("dpm_2_ancestral"),
    "LMSDiscreteScheduler": lambda c: Equivalent("lms"),
    "DPMSolverSDEScheduler": lambda c: Equivalent("dpmpp_sde"),
    "DPMSolverMultistepScheduler": _dpm_multistep,
    "UniPCMultistepScheduler": _unipc,
    "DEISMultistepScheduler": lambda c: Equivalent("deis", {"max_order": c.solver_order, "deis_mode": "logrho",
                                                           "lower_order_final": bool(c.lower_order_final)},
                                                   schedule_options=_final_call),
    "DDIMScheduler": lambda c: _ddim(c, "DDIMScheduler"),
    "DDPMScheduler": lambda c: _ddpm(c, "DDPMScheduler"),
    "DDIMParallelScheduler": lambda c: _ddim(c, "DDIMParallelScheduler"),
    "DDPMParallelScheduler": lambda c: _ddpm(c, "DDPMParallelScheduler"),
    "CogVideoXDDIMScheduler": lambda c: _ddim(c, "CogVideoXDDIMScheduler"),
    "SCMScheduler": lambda c: Equivalent("lcm"),
    "TCDScheduler": lambda c: Equivalent("tcd", step_options={"eta": "gamma"}, run_options=_tcd_sigmas_s),
    "PNDMScheduler": _pndm,
    "DPMSolverSinglestepScheduler": _dpm_singlestep,
    "SASolverScheduler": _sa_solver,
    "EDMEulerScheduler": lambda c: Equivalent("euler"),
    "EDMDPMSolverMultistepScheduler": _dpm_multistep,
    "LCMScheduler": lambda c: Equivalent("lcm"),
    "FlowMatchEulerDiscreteScheduler": _flow_match_euler,
    "FlowMatchHeunDiscreteScheduler": lambda c: Equivalent("heun"),
    "FlowMatchLCMScheduler": _flow_match_lcm,
    "LTXEulerAncestralRFScheduler": _ltx_euler_ancestral_rf,
    "MiniMaxH3Scheduler": lambda c: Equivalent("euler"),
    "UnCLIPScheduler": _unclip,
    "CMStochasticIterativeScheduler": _consistency,
    "CosineDPMSolverMultistepScheduler": _cosine_dpm,
}

# The last step's alpha-bar of schedulers without sigmas, where it is not their final_alpha_cumprod: LCM returns its
# denoised sample (sigma 0); TCD steps to timestep 0 (abar_0).
_FINAL_ALPHA_CUMPROD = {"LCMScheduler": lambda s: 1.0, "TCDScheduler": lambda s: s.alphas_cumprod[0]}

# Schedulers whose timesteps pair one-to-one with the first len(timesteps) of their sigmas.
_PAIRED = {"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
           "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
           "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "EDMEulerScheduler",
           "EDMDPMSolverMultistepScheduler", "FlowMatchLCMScheduler", "LTXEulerAncestralRFScheduler",
           "MiniMaxH3Scheduler", "DPMSolverSinglestepScheduler", "SASolverScheduler", "CMStochasticIterativeScheduler",
           "CosineDPMSolverMultistepScheduler"}


_DISCRETE_TOKENS = ("diffuses discrete tokens (masked or categorical states, sampled from logits), not Gaussian "
                    "latents: there is no denoiser D(x, sigma) for a k-sampler to call")
# Scheduler classes no k-sampler can run, whatever the sampler: a KScheduler refuses them when it is built.
REFUSED = {
    "AmusedScheduler": _DISCRETE_TOKENS,
    "VQDiffusionScheduler": _DISCRETE_TOKENS,
    "BlockRefinementScheduler": _DISCRETE_TOKENS,
    "EntropyBoundScheduler": _DISCRETE_TOKENS,
    "DiscreteDDIMScheduler": _DISCRETE_TOKENS,
    "FlowMapEulerDiscreteScheduler": "is for flow *map* models: the network predicts the jump from t to r (step takes "
                                     "r_timestep), not a velocity or denoised estimate at one noise level",
    "PiflowScheduler": "is for pi-Flow models: the network outputs a policy that the scheduler integrates between "
                       "its grid points, not one denoised estimate per noise level",
    "RePaintScheduler": "resamples: its timesteps jump back up (undo/redo cycles) and its step takes the original "
                        "image and mask; a k-sampler's schedule only descends",
    "KarrasVeScheduler": "has its own protocol (add_noise_to_input, step(model_output, sigma_hat, sigma_prev, "
                         "sample_hat), step_correct) that its pipeline calls instead of step(model_output, t, x)",
    "ScoreSdeVeScheduler": "has its own predictor-corrector protocol (step_pred, step_correct) that its pipeline calls "
                           "instead of step(model_output, t, x)",
    "RFD4ProteinaScheduler": "integrates protein structures (coordinates and latents of several modalities with their "
                             "own time grids), not one image latent with one noise level",
    "IPNDMScheduler": "is iPNDM in its own form, which no catalogue sampler is: it keeps no noise table and no "
                      "prediction_type (its levels are sigma = sin^2(pi s / 2), alpha = sqrt(1 - sigma^2) for s from "
                      "1 to 0, and its eps = sigma x + alpha F holds for a v-prediction network only), starts at zero "
                      "SNR (alpha = 0: its step takes D = 0 there by max(alpha, 1e-8)), and steps by fixed-weight "
                      "Adams-Bashforth of eps over the VE sigma, keeping order 4 on the step into 0; the catalogue's "
                      "ipndm runs a schedule from zero SNR in flow units, where it combines flow velocities eps - D "
                      "over the flow sigma, and steps into 0 by Euler (to D): on diffusers' levels the two differ by "
                      "33% (5 steps) to 6% (25 steps) of max |x| on an analytic v-model",
    "DDIMInverseScheduler": "runs the schedule upwards (inversion, data to noise); the catalogue's samplers integrate "
                            "from noise to data",
    "DPMSolverMultistepInverseScheduler": "runs the schedule upwards (inversion, data to noise); the catalogue's "
                                          "samplers integrate from noise to data",
}


def check_supported(scheduler) -> None:
    """Refuse a scheduler class no k-sampler can run (:data:`REFUSED`), naming it and why."""
    name = next((c.__name__ for c in type(scheduler).__mro__ if c.__name__ in REFUSED), None)
    if name is not None:
        raise ValueError(f"KScheduler cannot run {type(scheduler).__name__}: {name} {REFUSED[name]}")


def known_class(scheduler) -> str:
    """The name of ``scheduler``'s class or, for a subclass (a port in progress, a patched scheduler), of its nearest
    base class with a k-sampler equivalent; its own class name when there is none."""
    return next((c.__name__ for c in type(scheduler).__mro__ if c.__name__ in _EQUIVALENTS), type(scheduler).__name__)


def equivalent(scheduler) -> Equivalent:
    """The k-sampler equivalent to ``scheduler`` (or to its nearest known base class, :func:`known_class`);
    ValueError for a scheduler without one."""
    known = known_class(scheduler)
    if known not in _EQUIVALENTS:
        raise ValueError(
            f"{type(scheduler).__name__} has no k-sampler equivalent; pass sampler= explicitly. Schedulers with "
            f"one (or their subclasses): {', '.join(sorted(_EQUIVALENTS))}"
        )
    return _EQUIVALENTS[known](scheduler.config)


@dataclass
class SchedulerSigmas:
    """A scheduler's own schedule in k-sampler form."""

    sigmas: torch.Tensor  # float64, descending, the k-sampler's sigmas
    known: tuple[torch.Tensor, torch.Tensor] | None  # (sigma, timestep) pairs the scheduler feeds the network
    init_noise_sigma: float  # what the parent multiplies the initial noise by
    vp_latents: bool
    ends_repeated: bool = False  # the schedule ends on a repeated sigma (a zero-length last step)


def set_up(scheduler, num_inference_steps, timesteps=None, sigmas=None, mu=None, **extra):
    """``scheduler.set_timesteps`` called with what the pipeline gave (as diffusers' ``retrieve_timesteps``: custom
    ``timesteps`` or ``sigmas`` replace the step count; HeliosPipeline passes both a count and sigmas), ``mu`` only
    where accepted, ``extra`` keywords the scheduler takes (LCM's ``original_inference_steps``), on the CPU;
    returns the scheduler."""
    params = set(inspect.signature(scheduler.set_timesteps).parameters)
    for name, value in (("timesteps", timesteps), ("sigmas", sigmas)):
        if value is not None and name not in params:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps does not take custom {name}")
    kwargs = {"timesteps": timesteps, "sigmas": sigmas, **extra}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if mu is not None and "mu" in params:
        kwargs["mu"] = mu
    if num_inference_steps is not None:
        kwargs["num_inference_steps"] = num_inference_steps
    scheduler.set_timesteps(device="cpu", **kwargs)
    return scheduler


def call_keywords(method, given: dict, owner: str) -> None:
    """Refuse keywords that ``method`` (a base scheduler's ``set_timesteps`` or ``step``) does not take, naming the
    ones it does: KScheduler takes what its base takes, so a typo is not dropped."""
    params = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword argument(s) {unknown}; it takes: "
                        f"{', '.join(p for p in params if p != 'self')}")


def scheduler_sigmas(scheduler, num_inference_steps=None, timesteps=None, sigmas=None, mu=None) -> SchedulerSigmas:
    """Set up a copy of ``scheduler`` (:func:`set_up`) and read its schedule: main sigmas (interleaved second-order
    evaluations removed), the (sigma, timestep) pairs it feeds the network, and its initial noise scale. A deep copy,
    not ``from_config``: it keeps what the parent would use (``set_shift`` on a FlowMatch scheduler) and takes 0.13 ms
    where ``from_config`` takes 0.8 ms; ``set_timesteps`` resets the copied step state."""
    return read_schedule(set_up(copy.deepcopy(scheduler), num_inference_steps, timesteps, sigmas, mu))


def read_schedule(scheduler) -> SchedulerSigmas:
    """The schedule of a scheduler whose ``set_timesteps`` has run (a fresh copy, or a pipeline's scheduler after a
    run), whatever its class: main sigmas, (sigma, timestep) pairs and initial noise scale.

    A scheduler that keeps ``sigmas`` (the Euler family, DPM-Solver, UniPC, DEIS, FlowMatch, EDM, ...) gives them
    directly; one that keeps only ``alphas_cumprod`` (DDIM, DDPM, PNDM, LCM, TCD, ...) gives the sigma of each
    timestep, ``sqrt((1 - abar_t) / abar_t)``, then the final one: ``final_alpha_cumprod`` where it has one (DDIM,
    PNDM: 1 or ``abar_0``; TCD: ``abar_0``), else 0 (DDPM's last step; LCM returns its denoised sample). Consecutive
    repeats (PNDM's and Heun's second call at one sigma) are one sigma of the main schedule. Latents:
    :func:`keeps_vp_latents`."""
    name = known_class(scheduler)
    ts = scheduler.timesteps.cpu()
    ts = ts if ts.dtype == torch.float64 else ts.to(torch.float32)  # float64 ones (numpy-computed) are kept
    own_sigmas = getattr(scheduler, "sigmas", None)
    if own_sigmas is not None:
        table = torch.as_tensor(own_sigmas).to(torch.float32).cpu()
        known = (table[: len(ts)], ts) if name in _PAIRED else None
    elif scheduler.config.get("prediction_type") == "trigflow":  # SCM: x = cos(t) x0 + sin(t) sigma_data z
        ts64 = scheduler.timesteps.to(torch.float64).cpu()
        table = torch.tan(ts64.clamp(max=math.pi / 2))  # VE level of x / (sigma_data cos t); pi/2 rounds up to 1.5708
        known = (table[:-1], ts[:-1])  # its timesteps end with the final 0, which is no call
    elif getattr(scheduler, "alphas_cumprod", None) is not None:
        acp = scheduler.alphas_cumprod.to(torch.float32).cpu()
        final_acp = _FINAL_ALPHA_CUMPROD.get(name, lambda s: getattr(s, "final_alpha_cumprod", 1.0))(scheduler)
        final = torch.as_tensor(final_acp, dtype=torch.float32).reshape(1)
        table = torch.cat([acp[scheduler.timesteps.long().cpu()], final.cpu()])
        table = ((1 - table) / table) ** 0.5
        known = (table[: len(ts)], ts)
    else:
        raise ValueError(
            f"{type(scheduler).__name__} keeps neither sigmas nor alphas_cumprod after set_timesteps, so its "
            "schedule cannot be read as noise levels; pass sigma_schedule= (a catalogue schedule) with sampler="
        )
    table = _without_rounding_rises(table)
    main = torch.unique_consecutive(table)
    if len(main) == 1:  # one zero-length step (a 1-step Karras schedule ending on sigma_min): [s, s]
        main = table[-2:]
    return SchedulerSigmas(main.to(torch.float64), known, float(getattr(scheduler, "init_noise_sigma", 1.0)),
                           keeps_vp_latents(scheduler), len(table) > 1 and bool(table[-1] == table[-2]))


def _without_rounding_rises(table: torch.Tensor) -> torch.Tensor:
    """``table`` with rises of at most float32 rounding (1e-6 relative) flattened into repeats: a schedule ending on
    ``sigma_min`` (``final_sigmas_type="sigma_min"``) appends the config's float32 value after a computed one that can
    be an ulp below it (EDM DPM-Solver: 0.0019999996, 0.0020000001). Larger rises stay (and are refused later)."""
    rises = table[1:] - table[:-1]
    small = (rises > 0) & (rises <= 1e-6 * table[:-1].abs())
    if not bool(small.any()):
        return table
    out = table.clone()
    for i in small.nonzero().flatten().tolist():
        out[i + 1] = out[i]
    return out


def keeps_vp_latents(scheduler) -> bool:
    """Whether a discrete scheduler keeps VP latents ``x / sqrt(sigma^2 + 1)``: it multiplies the initial noise by 1
    (the DDPM family) where the Euler family multiplies it by a sigma (VE latents)."""
    return float(getattr(scheduler, "init_noise_sigma", 1.0)) == 1.0


def brownian_noise_for(scheduler, x: torch.Tensor, sigmas: torch.Tensor, generator=None):
    """A scheduler's own Brownian noise: DPMSolverSDEScheduler's (a tree over its sigma range seeded by
    ``noise_sampler_seed``), CosineDPMSolverMultistepScheduler's (a tree over its config's ``[sigma_min,
    sigma_max]`` seeded by the ``initial_seed()`` of the generator(s) of the run's first step; without one, a random
    seed, as diffusers); None for other schedulers or without a fixed seed."""
    if known_class(scheduler) == "CosineDPMSolverMultistepScheduler":
        seeds = (None if generator is None else generator.initial_seed() if isinstance(generator, torch.Generator)
                 else [g.initial_seed() for g in generator])
        return BrownianTreeNoiseSampler(x, scheduler.config.sigma_min, scheduler.config.sigma_max, seeds)
    seed = getattr(scheduler.config, "noise_sampler_seed", None)
    if known_class(scheduler) != "DPMSolverSDEScheduler" or seed is None:
        return None
    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, positive.min(), positive.max(), seed)


def flow_shift(scheduler, mu: float) -> float:
    """The shift ``a`` of ``sigma' = a sigma / (1 + (a - 1) sigma)``: ``exp(mu)`` with dynamic shifting (FLUX's
    resolution-dependent shift, Esser et al. 2024, arXiv 2403.03206, Sec. 5.3.2), else the config's ``shift``."""
    config = scheduler.config
    if config.get("use_dynamic_shifting", False):
        if config.get("time_shift_type", "exponential") != "exponential":
            raise ValueError(f"time_shift_type {config.time_shift_type!r} is not supported for catalogue schedules; "
                             "use sigma_schedule=None (the scheduler's own sigmas)")
        return math.exp(mu)
    return float(config.get("shift", 1.0))


def support_table() -> list[tuple[str, str, str]]:
    """``(class, status, detail)`` for every scheduler class diffusers exports: "exact" (``sampler=None`` runs its
    k-equivalent; detail: the sampler at the class's default config, or why that config has none), "explicit"
    (no equivalent: explicit samplers run on its own schedule), "open" (no equivalent and its schedule is not read
    yet: issue 23's remaining work), or "refused" (detail: why no k-sampler can run it)."""
    import diffusers

    rows = []
    for name in sorted(n for n in dir(diffusers) if n.endswith("Scheduler")):
        cls = getattr(diffusers, name)
        if not (isinstance(cls, type) and hasattr(cls, "step")) and name not in REFUSED:
            continue
        if name in REFUSED:
            rows.append((name, "refused", REFUSED[name]))
        elif name in _EQUIVALENTS:
            try:
                eq = _EQUIVALENTS[name](_default_config(cls))
                rows.append((name, "exact", f"`{eq.sampler}`" + (f" {eq.kwargs}" if eq.kwargs else "")))
            except ValueError as error:
                rows.append((name, "exact", f"config-dependent; default config: {str(error).split(';')[0]}"))
        else:
            rows.append((name, *_explicit_support(cls)))
    return rows


def _explicit_support(cls) -> tuple[str, str]:
    """Whether an explicit sampler sets up on the own schedule of a class without an equivalent (default config, 10
    steps): ``("explicit", ...)`` or ``("open", why not)``; neither runs ``sampler=None``."""
    from ..scheduler import KScheduler

    try:
        cls().set_timesteps(10)
    except Exception as error:  # noqa: BLE001 - the class's own default config does not set up
        return "open", (f"no equivalent; its default config fails set_timesteps in diffusers itself "
                        f"({type(error).__name__}: {str(error)[:60]})")
    try:
        KScheduler.from_scheduler(cls(), sampler="euler").set_timesteps(10)
    except Exception as error:  # noqa: BLE001 - any failure means explicit samplers cannot set up on it yet
        return "open", f"no equivalent; explicit samplers do not set up yet ({type(error).__name__}: {str(error)[:80]})"
    return "explicit", "no equivalent yet; explicit samplers set up on its own schedule (default config, 10 steps)"


def _default_config(cls):
    """The class's default config (``FrozenDict`` of its ``__init__`` defaults)."""
    from diffusers.configuration_utils import FrozenDict

    params = inspect.signature(cls.__init__).parameters
    return FrozenDict({k: p.default for k, p in params.items()
                       if k != "self" and p.default is not inspect.Parameter.empty})


def support_markdown() -> str:
    """:func:`support_table` as a Markdown table, counts first (the README's scheduler table)."""
    import diffusers

    rows = support_table()
    counts = {status: sum(r[1] == status for r in rows) for status in ("exact", "explicit", "open", "refused")}
    head = (f"{len(rows)} scheduler classes in diffusers {diffusers.__version__}: " +
            ", ".join(f"{n} {status}" for status, n in counts.items()) + ".\n\n| class | KScheduler | detail |\n|---|---|---|")
    return "\n".join([head, *(f"| {name} | {status} | {detail.replace('|', '/')} |" for name, status, detail in rows)])
