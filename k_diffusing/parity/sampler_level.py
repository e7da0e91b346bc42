"""Parity without a pipeline: a diffusers scheduler wrapped as a functional k-sampler, run against ours on the
analytic Gaussian denoiser (:mod:`k_diffusing.testing.analytic`), whose every call is cheap and exactly known.

:func:`scheduler_sampler` is the wrapper. Its sampler takes the k-sampler arguments ``(model, x, sigmas, ...)``
with ``x`` in the model's units (VE ``x0 + sigma eps`` or the flow state), drives the scheduler in a plain loop
(``scale_model_input`` is not needed: the denoiser takes ``(x, sigma)``), and turns each denoised value into the
scheduler's prediction type. The scheduler chooses its sigmas: pass the ones :func:`scheduler_schedule` returns.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import torch

from ..geometry import FLOW, VE
from ..pipelines.schedulers import brownian_noise_for, known_class, read_schedule
from ..registry import get_sampler
from ..scheduler import is_flow_config
from ..testing import analytic
from .pairs import Pair
from .trace import Trace, check_stages, k_label, k_side

EMBEDDED_MODELS = Path(__file__).resolve().parent.parent / "embedded" / "models"


def scheduler_for(pair: Pair):
    """The pair's scheduler over the embedded model's scheduler config (SDXL's or FLUX.1-dev's)."""
    config = json.loads((EMBEDDED_MODELS / pair.kind / "scheduler" / "scheduler_config.json").read_text())
    return pair.scheduler_class().from_config(config, **pair.config)


def _set_up(scheduler, steps: int):
    fresh = type(scheduler).from_config(scheduler.config)
    kwargs = {"mu": 0.0} if "mu" in inspect.signature(fresh.set_timesteps).parameters and fresh.config.get(
        "use_dynamic_shifting", False) else {}  # dynamic shift with mu = 0: the unshifted schedule, image-size free
    fresh.set_timesteps(steps, device="cpu", **kwargs)
    return fresh


def scheduler_schedule(scheduler, steps: int):
    """The scheduler's own k-sampler sigmas (float64) for ``steps`` steps, and its initial-noise scale in VE units
    (flow: in flow units)."""
    own = read_schedule(_set_up(scheduler, steps))
    sigma_0 = float(own.sigmas[0])
    scale = own.init_noise_sigma * (math.sqrt(sigma_0**2 + 1) if _vp_latents(scheduler, own) else 1.0)
    return own.sigmas, scale


def _vp_latents(scheduler, own) -> bool:
    """Whether the scheduler keeps VP latents ``x / sqrt(sigma^2 + 1)``; a flow scheduler's unit
    ``init_noise_sigma`` means the flow state, not VP latents."""
    return own.vp_latents and not _flow(scheduler)


def _flow(scheduler) -> bool:
    """Flow matching: a FlowMatch* class (or subclass), flow sigmas or ``prediction_type="flow_prediction"`` (a
    port's way to say so)."""
    return is_flow_config(known_class(scheduler), scheduler.config)


# The sigma of a two-stage scheduler's second model call, as its own scale_model_input reads it.
_SECOND_STAGE = {
    "KDPM2DiscreteScheduler": lambda s, j: s.sigmas_interpol[j],
    "KDPM2AncestralDiscreteScheduler": lambda s, j: s.sigmas_interpol[j - 1],
    "DPMSolverSDEScheduler": lambda s, j: s.mid_point_sigma,
}


def check_call_sigmas(s) -> None:
    """Refuse a set-up multi-stage scheduler (one with ``state_in_first_order``) whose later calls' sigmas the
    harness cannot read: outside :data:`_SECOND_STAGE`, each call's sigma is ``sigmas[step_index]``, so ``sigmas``
    must list one per call (HeunDiscreteScheduler's layout ``[s_0, s_1, s_1, ..., s_n-1, s_n-1, 0]``)."""
    sigmas = getattr(s, "sigmas", None)
    if (not hasattr(s, "state_in_first_order") or known_class(s) in _SECOND_STAGE or sigmas is None
            or len(sigmas) == len(s.timesteps) + 1):
        return
    raise ValueError(
        f"{type(s).__name__} is multi-stage (state_in_first_order) with {len(s.timesteps)} network calls but "
        f"{len(sigmas)} sigmas: the analytic denoiser needs each call's sigma, read as sigmas[step_index]. List one "
        "sigma per call and the final one (HeunDiscreteScheduler's layout: [s_0, s_1, s_1, ..., 0]); the pipeline "
        "level, which feeds the network your timesteps, does not need it")


def _call_sigma(s, i: int, t) -> float:
    """The sigma of the scheduler's ``i``-th model call (timestep ``t``): its table entry at its step index, the
    second stage's (:data:`_SECOND_STAGE`; other multi-stage schedulers list every call's sigma,
    :func:`check_call_sigmas`) or, without a sigma table (DDIM, DDPM, LCM), ``alphas_cumprod[t]``'s."""
    if getattr(s, "sigmas", None) is None:
        acp = float(s.alphas_cumprod[int(t)])
        return math.sqrt((1 - acp) / acp)
    j = i if getattr(s, "step_index", None) is None else s.step_index
    if not getattr(s, "state_in_first_order", True):
        return float(_SECOND_STAGE.get(known_class(s), lambda s, j: s.sigmas[j])(s, j))
    return float(s.sigmas[j])


def _prediction(s, x_ve: torch.Tensor, denoised: torch.Tensor, sigma: float, flow: bool) -> torch.Tensor:
    """What the scheduler expects from the network, from the denoised value at VE (or flow) ``x_ve``."""
    kind = "flow" if flow else s.config.prediction_type
    if kind in ("flow", "flow_prediction"):
        return (x_ve - denoised) / sigma  # velocity eps - x0 (Lipman et al. 2023)
    if kind == "epsilon":
        return (x_ve - denoised) / sigma
    if kind == "v_prediction":  # v = alpha eps - sigma_vp x0 (Salimans & Ho 2022) in VE terms
        return ((x_ve - denoised) / sigma - sigma * denoised) / math.sqrt(sigma**2 + 1)
    raise ValueError(f"prediction_type {kind!r} is not supported; use epsilon, v_prediction or flow_prediction")


def scheduler_sampler(scheduler):
    """``scheduler`` as a k-sampler ``f(model, x, sigmas, extra_args=None, callback=None, disable=None,
    generator=None)``. ``sigmas`` must be the scheduler's own (:func:`scheduler_schedule`). Like our samplers it
    calls ``callback`` with k-diffusion's dict (``x`` at the start of step ``i``, the step's first ``denoised``) and
    the model's ``on_step_end(i, x)``, if it has one, with the state after step ``i``."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, generator=None):
        s = _set_up(scheduler, len(sigmas) - 1)
        own = read_schedule(s)
        if len(own.sigmas) != len(sigmas) or not torch.allclose(own.sigmas, sigmas.double().cpu(), rtol=1e-6):
            raise ValueError(f"{type(s).__name__} samples on its own sigmas {own.sigmas.tolist()}, not "
                             f"{sigmas.tolist()}: pass scheduler_schedule(scheduler, steps)")
        flow = _flow(s)
        vp = _vp_latents(s, own)

        def model_units(latent, sigma):  # the scheduler's VP latents in VE units
            return latent * math.sqrt(sigma**2 + 1) if vp else latent

        step_takes_generator = "generator" in inspect.signature(s.step).parameters
        step_end = getattr(model, "on_step_end", None)
        latent = x / math.sqrt(float(own.sigmas[0]) ** 2 + 1) if vp else x
        k, start = 0, None
        for i, t in enumerate(s.timesteps):
            if hasattr(s, "scale_model_input"):  # as diffusers' loops do: it sets up the step index (result unused)
                s.scale_model_input(latent, t)
            sigma = _call_sigma(s, i, t)
            x_in = model_units(latent, sigma)
            denoised = model(x_in, torch.full((x.shape[0],), sigma, dtype=x.dtype), **(extra_args or {}))
            start = start or (x_in, denoised)
            kwargs = {"generator": generator} if step_takes_generator and generator is not None else {}
            latent = s.step(_prediction(s, x_in, denoised, sigma, flow), t, latent, **kwargs).prev_sample
            if getattr(s, "state_in_first_order", True) or i == len(s.timesteps) - 1:  # a full step is done
                sigma_k = own.sigmas[k]
                if callback is not None:
                    callback({"x": start[0], "i": k, "sigma": sigma_k, "sigma_hat": sigma_k, "denoised": start[1]})
                if step_end is not None:
                    step_end(k, model_units(latent, float(own.sigmas[k + 1])))
                k, start = k + 1, None
        return model_units(latent, float(own.sigmas[-1]))

    return sample


class _LoggedModel:
    """The analytic denoiser, logging the sigma of every call and the state after every step."""

    def __init__(self, model):
        self.model, self.geometry = model, model.geometry
        self.sigmas, self.states, self.firsts = [], [], [0]

    def __call__(self, x, sigma, **kwargs):
        self.sigmas.append(float(torch.as_tensor(sigma).flatten()[0]))
        return self.model(x, sigma, **kwargs)

    def on_step_end(self, i: int, x: torch.Tensor):
        self.states.append(x.detach().to(torch.float64).clone())
        self.firsts.append(len(self.sigmas))


def _trace(label: str, sampler, model, x, sigmas, **kwargs) -> Trace:
    logged = _LoggedModel(model)
    sampler(logged, x.clone(), sigmas, disable=True, **kwargs)
    step_sigmas = [logged.sigmas[k] for k in logged.firsts[:-1] if k < len(logged.sigmas)]
    return Trace(label, [float(s) for s in sigmas], step_sigmas, logged.sigmas, logged.states, None)


def trace_sampler_level(pair: Pair, steps: int, seed: int, shape=(2, 4, 16, 16), scheduler=None
                        ) -> tuple[Trace, Trace]:
    """Both sides of ``pair`` on the analytic N(0.5, 1.5^2) denoiser (VE, or flow for flow schedulers) from the
    same noise and generator seed; ``timesteps`` in the traces are the sigmas of each step's first call.
    ``scheduler``: an instance to test instead of :func:`scheduler_for` (a port in progress: a subclass of the
    diffusers scheduler it replaces, or a class of its own, compared with the pair's sampler, :func:`k_side`)."""
    scheduler = scheduler_for(pair) if scheduler is None else scheduler
    found = k_side(pair, scheduler)
    check_stages(scheduler, steps)
    check_call_sigmas(_set_up(scheduler, steps))
    model = analytic.gaussian(geometry=FLOW if _flow(scheduler) else VE)
    sigmas, scale = scheduler_schedule(scheduler, steps)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32) * scale
    spec = get_sampler(found.sampler)
    kwargs = dict(found.kwargs)
    noise = brownian_noise_for(scheduler, x, sigmas.to(torch.float32))
    if noise is not None:
        kwargs["noise_sampler"] = noise
    if "generator" in spec.options:
        kwargs["generator"] = torch.Generator().manual_seed(seed + 1)
    ours = _trace(k_label(found), spec, model, x, sigmas.to(torch.float32), **kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    theirs = _trace(pair.diffusers_side, scheduler_sampler(scheduler), model, x, sigmas, generator=generator)
    return ours, theirs
