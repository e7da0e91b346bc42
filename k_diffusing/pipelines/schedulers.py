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
from dataclasses import dataclass, field

import torch

from ..noise import BrownianTreeNoiseSampler


@dataclass(frozen=True)
class Equivalent:
    """The k-sampler a scheduler class runs, with the options read from its config."""

    sampler: str
    kwargs: dict = field(default_factory=dict)
    vp_latents: bool = False


def _dpm_multistep(config) -> Equivalent:
    algorithm, order = config.algorithm_type, config.solver_order
    if algorithm == "dpmsolver++" and order == 2 and config.solver_type == "midpoint":
        return Equivalent("dpmpp_2m", vp_latents=True)
    if algorithm == "sde-dpmsolver++" and order == 2:
        name = "dpmpp_2m_sde_heun" if config.solver_type == "heun" else "dpmpp_2m_sde"
        return Equivalent(name, vp_latents=True)
    raise ValueError(
        f"DPMSolverMultistepScheduler(algorithm_type={algorithm!r}, solver_order={order}, "
        f"solver_type={config.solver_type!r}) has no k-sampler equivalent here; pass sampler= (e.g. 'dpmpp_2m', "
        "'dpmpp_2m_sde', 'dpmpp_3m_sde')"
    )


def _unclipped(config, name: str, sampler: str) -> Equivalent:
    """DDIM (eta = 0 is Euler in VE units: Song et al. 2020, arXiv 2010.02502, Eq. 14), DDPM and LCM, as long as
    they do not clip or threshold the predicted sample (which no k-sampler does)."""
    if getattr(config, "clip_sample", False) or getattr(config, "thresholding", False):
        raise ValueError(
            f"{name} with clip_sample/thresholding has no k-sampler equivalent (samplers never clip x0); set "
            "clip_sample=False and thresholding=False in its config or pass sampler="
        )
    return Equivalent(sampler, vp_latents=True)


def _flow_match_euler(config) -> Equivalent:
    """Euler in flow geometry; with ``stochastic_sampling`` its step is ``x = (1 - s') D + s' z``, i.e. ``lcm``."""
    if config.get("invert_sigmas", False):
        raise ValueError("FlowMatchEulerDiscreteScheduler(invert_sigmas=True) runs sigma upwards from 0; no k-sampler "
                         "integrates that way. Use invert_sigmas=False or pass sampler= with a descending schedule")
    return Equivalent("lcm" if config.get("stochastic_sampling", False) else "euler")


def _unipc(config) -> Equivalent:
    name = "uni_pc_bh2" if config.solver_type == "bh2" else "uni_pc"
    kwargs = {"order": config.solver_order, "lower_order_final": config.lower_order_final,
              "use_corrector": not config.disable_corrector}
    return Equivalent(name, kwargs, vp_latents=True)


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
    "DEISMultistepScheduler": lambda c: Equivalent("deis", {"max_order": c.solver_order}, vp_latents=True),
    "DDIMScheduler": lambda c: _unclipped(c, "DDIMScheduler", "euler"),
    "DDPMScheduler": lambda c: _unclipped(c, "DDPMScheduler", "ddpm"),
    "LCMScheduler": lambda c: _unclipped(c, "LCMScheduler", "lcm"),
    "FlowMatchEulerDiscreteScheduler": _flow_match_euler,
    "FlowMatchHeunDiscreteScheduler": lambda c: Equivalent("heun"),
}

# Schedulers whose timesteps pair one-to-one with the first len(timesteps) of their sigmas.
_PAIRED = {"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
           "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
           "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}


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


def set_up(scheduler, num_inference_steps, timesteps=None, sigmas=None, mu=None):
    """``scheduler.set_timesteps`` called as diffusers' ``retrieve_timesteps`` calls it (custom ``timesteps`` or
    ``sigmas`` replace the step count; ``mu`` only where accepted), on the CPU; returns the scheduler."""
    params = set(inspect.signature(scheduler.set_timesteps).parameters)
    for name, value in (("timesteps", timesteps), ("sigmas", sigmas)):
        if value is not None and name not in params:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps does not take custom {name}")
    kwargs = {"mu": mu} if mu is not None and "mu" in params else {}
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=timesteps, device="cpu", **kwargs)
    elif sigmas is not None:
        scheduler.set_timesteps(sigmas=sigmas, device="cpu", **kwargs)
    else:
        scheduler.set_timesteps(num_inference_steps, device="cpu", **kwargs)
    return scheduler


def scheduler_sigmas(scheduler, num_inference_steps=None, timesteps=None, sigmas=None, mu=None) -> SchedulerSigmas:
    """Set up a copy of ``scheduler`` (:func:`set_up`) and read its schedule: main sigmas (interleaved second-order
    evaluations removed), the (sigma, timestep) pairs it feeds the network, and its initial noise scale. A deep copy,
    not ``from_config``: it keeps what the parent would use (``set_shift`` on a FlowMatch scheduler) and takes 0.13 ms
    where ``from_config`` takes 0.8 ms; ``set_timesteps`` resets the copied step state."""
    return read_schedule(set_up(copy.deepcopy(scheduler), num_inference_steps, timesteps, sigmas, mu))


def read_schedule(scheduler) -> SchedulerSigmas:
    """The schedule of a scheduler whose ``set_timesteps`` has run (a fresh copy, or a pipeline's scheduler after a
    run): main sigmas, (sigma, timestep) pairs and initial noise scale."""
    name = known_class(scheduler)
    ts = scheduler.timesteps.to(torch.float32).cpu()
    if getattr(scheduler, "sigmas", None) is not None:
        table = scheduler.sigmas.to(torch.float32).cpu()
        main = torch.unique_consecutive(table)
    else:  # DDIM / DDPM / LCM: sigma at each timestep, then the final one (DDIM: final_alpha_cumprod; LCM's last
        # step returns its denoised sample, i.e. steps to sigma = 0, whatever its final_alpha_cumprod)
        acp = scheduler.alphas_cumprod.to(torch.float32).cpu()
        final_acp = 1.0 if name == "LCMScheduler" else getattr(scheduler, "final_alpha_cumprod", 1.0)
        final = torch.as_tensor(final_acp, dtype=torch.float32).reshape(1)
        table = torch.cat([acp[scheduler.timesteps.long().cpu()], final.cpu()])
        table = main = ((1 - table) / table) ** 0.5
    known = (table[: len(ts)], ts) if name in _PAIRED or getattr(scheduler, "sigmas", None) is None else None
    init = float(getattr(scheduler, "init_noise_sigma", 1.0))
    return SchedulerSigmas(main.to(torch.float64), known, init, equivalent(scheduler).vp_latents)


def brownian_noise_for(scheduler, x: torch.Tensor, sigmas: torch.Tensor):
    """DPMSolverSDEScheduler's own Brownian noise (a tree over its sigma range seeded by ``noise_sampler_seed``),
    or None when the scheduler is not one or has no fixed seed."""
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
