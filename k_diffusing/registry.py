"""The sampler catalogue: short names as ComfyUI uses them, metadata, and A1111 display names.

``get_sampler("dpmpp_2m")`` returns a :class:`SamplerSpec`; ``resolve_sampler("DPM++ 2M Karras")`` also returns the
schedule an A1111 name implies. ``list_samplers()`` lists every spec. Unknown names raise a ``ValueError`` that lists
the valid names and suggests the closest. A1111's timestep samplers: "DDIM" resolves to euler on ddim_uniform
(:data:`A1111_DDIM` says what differs), "PLMS" is refused with its nearest catalogue choice (:data:`A1111_PLMS`).

``order`` is the convergence order of the sampler's deterministic part (eta = 0 where it has one), measured on the
analytic Gaussian-mixture denoiser in both geometries by ``tests/test_catalogue.py`` and ``python -m k_diffusing``;
``calls_per_step`` counts model evaluations of a typical step (the step into sigma = 0 may take fewer);
``stochastic`` says whether the sampler draws noise at its default settings.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .names import unknown_name
from .samplers.base import needs_uncond


@dataclass(frozen=True)
class SamplerSpec:
    """One catalogue entry. Calling it runs the sampler with its ``defaults`` under the caller's keywords."""

    name: str
    target: str  # "module:function" inside k_diffusing.samplers
    order: int | None  # None: not an ODE solver (ddpm, lcm)
    calls_per_step: int
    stochastic: bool
    reference: str
    display_names: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # other short names that resolve to this entry (ComfyUI's)

    @property
    def function(self) -> Callable:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(f"k_diffusing.samplers.{module}"), attr)

    @property
    def needs_uncond(self) -> bool:
        """CFG++: the model must offer ``denoise_with_uncond`` (:class:`k_diffusing.CFGDenoiser`, the K pipelines)."""
        return needs_uncond(self.function)

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options (``sampler_kwargs``) the sampler accepts."""
        fixed = {"model", "x", "sigmas", "extra_args", "callback", "disable"}
        params = inspect.signature(self.function).parameters
        return tuple(p for p in params if p not in fixed and p not in self.defaults)

    def __call__(self, model, x, sigmas, **kwargs):
        return self.function(model, x, sigmas, **{**self.defaults, **kwargs})


def _spec(name, target, order, calls, stochastic, reference, display=(), aliases=(), **defaults) -> SamplerSpec:
    return SamplerSpec(name, target, order, calls, stochastic, reference, tuple(display), defaults, tuple(aliases))


def _cfg_pp(base: str, order: int, calls: int, stochastic: bool, note: str = "") -> SamplerSpec:
    """The CFG++ variant of ``base`` (``samplers/cfg_pp.py``): ComfyUI's name ``<base>_cfg_pp``."""
    return SamplerSpec(f"{base}_cfg_pp", f"cfg_pp:sample_{base}_cfg_pp", order, calls, stochastic,
                       f"Chung et al. 2024, arXiv 2406.08070 (CFG++) on {base}{note}")


KARRAS = "Karras et al. 2022, arXiv 2206.00364, Alg. 2"
DPMSOLVER = "Lu et al. 2022, arXiv 2206.00927"
DPMPP = "Lu et al. 2022b, arXiv 2211.01095"

_SPECS = [
    _spec("euler", "euler:sample_euler", 1, 1, False, KARRAS, ["Euler"], aliases=["ddim"]),
    _spec("euler_ancestral", "euler:sample_euler_ancestral", 1, 1, True, "Ho et al. 2020, arXiv 2006.11239",
          ["Euler a"]),
    _spec("heun", "euler:sample_heun", 2, 2, False, KARRAS, ["Heun"]),
    _spec("heunpp2", "euler:sample_heunpp2", 1, 3, False, "Heun++ (Carzit's A1111 extension; no paper), after Karras et al. 2022"),
    _spec("dpm_2", "euler:sample_dpm_2", 2, 2, False, f"{DPMSOLVER} (DPM-Solver-2) in {KARRAS}", ["DPM2"]),
    _spec("dpm_2_ancestral", "euler:sample_dpm_2_ancestral", 2, 2, True, f"{DPMSOLVER} (DPM-Solver-2), ancestral",
          ["DPM2 a"]),
    _spec("lms", "multistep:sample_lms", 3, 1, False, "linear multistep (Adams-Bashforth) in sigma", ["LMS"]),
    _spec("dpm_fast", "dpm_solver:sample_dpm_fast_sigmas", 3, 1, False, f"{DPMSOLVER}, Alg. 1 (DPM-Solver-fast)",
          ["DPM fast"]),
    _spec("dpm_adaptive", "dpm_solver:sample_dpm_adaptive_sigmas", 3, 3, False, f"{DPMSOLVER}, Alg. 2 (adaptive)",
          ["DPM adaptive"]),
    _spec("dpmpp_2s_ancestral", "dpmpp:sample_dpmpp_2s_ancestral", 2, 2, True, f"{DPMPP}, Alg. 1 (2S)",
          ["DPM++ 2S a"]),
    _spec("dpmpp_sde", "dpmpp:sample_dpmpp_sde", 2, 2, True, f"{DPMPP} (SDE variant)", ["DPM++ SDE"],
          aliases=["dpmpp_sde_gpu"]),
    _spec("dpmpp_2m", "dpmpp:sample_dpmpp_2m", 2, 1, False, f"{DPMPP}, Alg. 2 (2M)", ["DPM++ 2M"]),
    _spec("dpmpp_singlestep", "singlestep:sample_dpmpp_singlestep", 2, 1, False,
          f"{DPMPP}, Alg. 1 (2S) on the schedule's own grid, as diffusers' DPMSolverSinglestepScheduler"),
    _spec("dpmpp_2m_sde", "dpmpp:sample_dpmpp_2m_sde", 2, 1, True, f"{DPMPP} (2M SDE)", ["DPM++ 2M SDE"],
          aliases=["dpmpp_2m_sde_gpu"]),
    _spec("dpmpp_2m_sde_heun", "dpmpp:sample_dpmpp_2m_sde", 2, 1, True, f"{DPMPP} (2M SDE, Heun correction)",
          ["DPM++ 2M SDE Heun"], aliases=["dpmpp_2m_sde_heun_gpu"], solver_type="heun"),
    _spec("dpmpp_3m_sde", "dpmpp:sample_dpmpp_3m_sde", 2, 1, True, f"{DPMPP} (3M SDE)", ["DPM++ 3M SDE"],
          aliases=["dpmpp_3m_sde_gpu"]),
    _spec("ddpm", "ddpm:sample_ddpm", None, 1, True, "Ho et al. 2020, arXiv 2006.11239, Alg. 2", ["DDPM"]),
    _spec("lcm", "ddpm:sample_lcm", None, 1, True, "Luo et al. 2023, arXiv 2310.04378", ["LCM"]),
    _spec("tcd", "ddpm:sample_tcd", 1, 1, True,
          "Zheng et al. 2024, arXiv 2402.19159 (TCD's strategic stochastic sampling, as diffusers' TCDScheduler)"),
    _spec("plms", "multistep:sample_plms", 2, 1, False,
          "Liu et al. 2022, arXiv 2202.09778 (PLMS, as diffusers' PNDMScheduler with skip_prk_steps)"),
    _spec("ipndm", "multistep:sample_ipndm", 2, 1, False, "Zhang & Chen 2022, arXiv 2204.13902 (iPNDM)"),
    _spec("ipndm_v", "multistep:sample_ipndm_v", 3, 1, False, "Zhang & Chen 2022, arXiv 2204.13902 (iPNDM, variable step)"),
    _spec("deis", "multistep:sample_deis", 3, 1, False, "Zhang & Chen 2022, arXiv 2204.13902 (DEIS)"),
    _spec("res_multistep", "exponential:sample_res_multistep", 2, 1, False, "Zhang et al. 2023, arXiv 2308.02157"),
    _spec("res_multistep_ancestral", "exponential:sample_res_multistep_ancestral", 2, 1, True,
          "Zhang et al. 2023, arXiv 2308.02157, ancestral"),
    _spec("gradient_estimation", "multistep:sample_gradient_estimation", 1, 1, False,
          "Permenter & Yuan 2023, arXiv 2306.04848"),
    _spec("er_sde", "exponential:sample_er_sde", 2, 1, True, "Cui et al. 2023, arXiv 2309.06169"),
    _spec("seeds_2", "exponential:sample_seeds_2", 2, 2, True, "Gonzalez et al. 2023, arXiv 2305.14267"),
    _spec("seeds_3", "exponential:sample_seeds_3", 3, 3, True, "Gonzalez et al. 2023, arXiv 2305.14267"),
    _spec("sa_solver", "sa_solver:sample_sa_solver", 4, 1, True, "Xue et al. 2023, arXiv 2309.05019"),
    _spec("sa_solver_pece", "sa_solver:sample_sa_solver_pece", 4, 2, True, "Xue et al. 2023, arXiv 2309.05019 (PECE)"),
    _spec("sa_solver_diffusers", "sa_solver:sample_sa_solver_diffusers", 2, 1, True,
          "Xue et al. 2023, arXiv 2309.05019, as diffusers' SASolverScheduler"),
    _spec("uni_pc", "unipc:sample_uni_pc", 4, 1, False, "Zhao et al. 2023, arXiv 2302.04867, B(h) = h", ["UniPC"]),
    _spec("uni_pc_bh2", "unipc:sample_uni_pc_bh2", 4, 1, False, "Zhao et al. 2023, arXiv 2302.04867, B(h) = e^h - 1"),
    _spec("exp_heun_2_x0", "exponential:sample_exp_heun_2_x0", 2, 2, False,
          "exponential Heun (c2 = 1) in data prediction, Gonzalez et al. 2023, arXiv 2305.14267"),
    _spec("exp_heun_2_x0_sde", "exponential:sample_exp_heun_2_x0_sde", 2, 2, True,
          "exponential Heun, SDE, Gonzalez et al. 2023, arXiv 2305.14267"),
    _spec("restart", "restart:sample_restart", 2, 2, True, "Xu et al. 2023, arXiv 2306.14878", ["Restart"]),
    _cfg_pp("euler", 1, 1, False),
    _cfg_pp("euler_ancestral", 1, 1, True),
    _cfg_pp("dpmpp_2s_ancestral", 2, 2, True, " (the authors' 2S form)"),
    _cfg_pp("dpmpp_2m", 2, 1, False),
    _cfg_pp("res_multistep", 2, 1, False),
    _cfg_pp("res_multistep_ancestral", 2, 1, True),
    _cfg_pp("gradient_estimation", 1, 1, False),
]

SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in _SPECS}
# ComfyUI's other names: "ddim" runs euler there; the *_gpu SDE samplers differ only in building the Brownian tree on
# the accelerator instead of the CPU (same values on a CPU run).
ALIASES: dict[str, SamplerSpec] = {alias: s for s in _SPECS for alias in s.aliases}

# A1111's "Schedule type" names, as it displays them (lower-cased, they are also the suffixes of its older combined
# names such as "DPM++ 2M Karras"); the first name of a schedule is the one written into PNG parameters.
A1111_SCHEDULE_NAMES = {
    "Automatic": None,
    "Karras": "karras",
    "Exponential": "exponential",
    "Polyexponential": "polyexponential",
    "SGM Uniform": "sgm_uniform",
    "KL Optimal": "kl_optimal",
    "Align Your Steps": "align_your_steps",
    "Simple": "simple",
    "Normal": "normal",
    "DDIM": "ddim_uniform",
    "Beta": "beta",
    "Uniform": "normal",
}
A1111_SCHEDULES = {name.lower(): schedule for name, schedule in A1111_SCHEDULE_NAMES.items()}

_DISPLAY = {d.lower(): s for s in _SPECS for d in s.display_names}

# A1111's timestep samplers (modules/sd_samplers_timesteps.py and sd_samplers_timesteps_impl.py, v1.6 to v1.10; read
# for the facts below). Both run on one timestep grid, t_k = min(1 + k c, 999) for k = 0 .. ceil(1000 / c) - 1 with
# c = 1000 // steps (``steps`` values when steps divides 1000, more otherwise: 31 for 30 steps, 8 for 7), from the
# largest t down to t = 1: one step fewer than the grid has values, and they return the latent at t = 1
# (sigma 0.0413 on the SD / SDXL table) without a last denoising step. They ignore A1111's "Schedule type". The
# initial latent is unit noise read as the VP latent x_T, sqrt(1 + sigma_T^2) z in VE units; the K pipelines start a
# named schedule such as ddim_uniform at sigma_T z (k-diffusion's convention: 0.4 % lower at 20 steps).
A1111_DDIM = (
    "A1111's DDIM (Song et al. 2020, arXiv 2010.02502), a = alphabar_t: "
    "x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s_t^2) eps + s_t z with "
    "s_t = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev), eta = 0 by default (setting 'Eta for DDIM', written "
    "as 'Eta DDIM'). In VE units (x / sqrt(a)) at eta = 0 this is the Euler step "
    "x + (sigma_prev - sigma) eps; at eta > 0 it is euler_ancestral's step with that eta. 'DDIM' runs euler on the "
    "ddim_uniform schedule: when steps divides 1000 the same grid and the same steps down to t = 1 (equal within "
    "1e-12 on the analytic denoiser, tests/test_catalogue.py), then one more model call, the Euler step from "
    "sigma(t = 1) into 0, which removes the noise A1111 leaves in. Measured on the embedded SDXL model (4 prompts, "
    "guidance 5, 20 steps; tests/test_catalogue.py): from the same initial latent the final latents differ by at most "
    "0.18 (the latents reach 3.6); through KSDXLPipeline, which starts the schedule at sigma_0 z where A1111 starts at "
    "sqrt(1 + sigma_0^2) z, by 0.21 (0.27 at 10 steps, 0.19 at 50). For step counts that do not divide 1000 "
    "A1111's grid starts higher (30 steps: A1111 from t = 991, ddim_uniform from t = 958; 0.27 there)."
)
# PLMS's nearest catalogue choice differs in its first step: measured on the embedded SDXL model (4 prompts, guidance
# 5, from the same initial latent), ipndm on ddim_uniform differs from a re-implementation of A1111's PLMS by up to
# 11.3 at 10 steps, 8.8 at 20, 0.26 at 30 and 0.15 at 50 (tests/test_catalogue.py), where DDIM's end-noise difference
# alone is about 0.2: fixed-coefficient multistep on this grid amplifies the first step's difference at few steps.
A1111_PLMS = (
    "A1111's PLMS is not in the catalogue: CompVis latent-diffusion's pseudo linear multistep (fixed-coefficient "
    "Adams-Bashforth up to order 4 on the noise prediction, with DDIM transfers) on A1111's DDIM timestep grid "
    "t = 1 + k * (1000 // steps), stopping at t = 1, warmed up by one pseudo improved-Euler (Heun) step of 2 model "
    "calls. The nearest catalogue choice is sampler 'ipndm' with sigma_schedule 'ddim_uniform': the same multistep on "
    "the same grid, but warmed up by an Euler step and ending with a step into sigma 0; at 20 steps and fewer the "
    "warm-up changes the image"
)
# name (lower case) -> (catalogue sampler, schedule) for the A1111 timestep samplers the catalogue reproduces step
# for step; "ddim" written in lower case alone is ComfyUI's short name (ALIASES: euler on the chosen schedule).
A1111_TIMESTEP_SAMPLERS = {"ddim": ("euler", "ddim_uniform")}
A1111_TIMESTEP_REFUSED = {"plms": A1111_PLMS}
# On A1111's DDIM grid (ddim_uniform), the catalogue sampler whose steps each one takes (generate --from-png's
# --best-effort runs it)
A1111_TIMESTEP_NEAREST = {"ddim": "euler", "plms": "ipndm"}


class ResolvedSampler(NamedTuple):
    spec: SamplerSpec
    schedule: str | None  # the schedule an A1111 name implies, else None


def resolve_sampler(name: str) -> ResolvedSampler:
    """A short name (``"dpmpp_2m"``), or an A1111 display name with an optional schedule suffix
    (``"DPM++ 2M Karras"`` -> dpmpp_2m with the karras schedule).

    A1111's "DDIM" is euler on the ddim_uniform schedule (:data:`A1111_DDIM`: the same steps, plus the step into 0
    that A1111 leaves out); ComfyUI's "ddim" (lower case) is euler on whatever schedule is chosen. A1111's "PLMS" is
    refused with the nearest catalogue choice (:data:`A1111_PLMS`), and so is a schedule suffix on either name
    (A1111 runs them on its own timestep grid)."""
    if not isinstance(name, str):
        raise TypeError(f"sampler name must be a string, got {type(name).__name__}")
    key = name.strip()
    if key in SAMPLERS:
        return ResolvedSampler(SAMPLERS[key], None)
    if key in ALIASES:
        return ResolvedSampler(ALIASES[key], None)
    lowered = " ".join(key.lower().split())
    if lowered in _DISPLAY:
        return ResolvedSampler(_DISPLAY[lowered], None)
    if lowered in A1111_TIMESTEP_SAMPLERS:
        sampler, schedule = A1111_TIMESTEP_SAMPLERS[lowered]
        return ResolvedSampler(SAMPLERS[sampler], schedule)
    if lowered in A1111_TIMESTEP_REFUSED:
        raise ValueError(f"sampler {key!r}: {A1111_TIMESTEP_REFUSED[lowered]}")
    for suffix, schedule in A1111_SCHEDULES.items():
        if lowered.endswith(" " + suffix) and lowered[: -len(suffix) - 1] in _DISPLAY:
            return ResolvedSampler(_DISPLAY[lowered[: -len(suffix) - 1]], schedule)
        base = lowered[: -len(suffix) - 1]
        if lowered.endswith(" " + suffix) and base in A1111_TIMESTEP_NEAREST:
            where = f"sigma_schedule {schedule!r}" if schedule else "the pipeline's own sigmas"
            raise ValueError(f"sampler {key!r}: A1111's {base.upper()} runs on its own timestep grid and takes no "
                             f"schedule; the catalogue's nearest on {where} is sampler "
                             f"{A1111_TIMESTEP_NEAREST[base]!r}")
    names = (list(SAMPLERS) + list(ALIASES) + [d for s in _SPECS for d in s.display_names]
             + [name.upper() for name in A1111_TIMESTEP_SAMPLERS])
    raise unknown_name("sampler", key, names)


def get_sampler(name: str) -> SamplerSpec:
    """The :class:`SamplerSpec` for a short or A1111 name (an A1111 schedule suffix is ignored here: use
    :func:`resolve_sampler` to get it)."""
    return resolve_sampler(name).spec


def list_samplers() -> list[SamplerSpec]:
    """Every catalogue entry, in catalogue order."""
    return list(_SPECS)
