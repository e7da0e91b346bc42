"""Input checks shared by :class:`~k_diffusing.scheduler.KScheduler` and the K pipelines: choosing the sampler and
its options, step counts, schedules and user latents. Each refuses with a message naming the value and what is
accepted."""

from __future__ import annotations

import inspect
import operator

import numpy as np
import torch

from ..geometry import Geometry
from ..names import did_you_mean
from ..registry import SamplerSpec, resolve_sampler
from ..samplers.base import check_schedule
from .schedulers import equivalent

# Sampler options the pipeline supplies itself.
PIPELINE_OWNED = {"generator"}
# Relative slack on the top of a model's sigma table (Align Your Steps' SDXL table starts at 14.615 over a 14.6146 top).
SIGMA_MAX_SLACK_TABLE = 1e-4


def choose_sampler(sampler, sigma_schedule: str | None):
    """``(function, spec or None, schedule)`` for a registry name, an A1111 name (whose schedule suffix applies unless
    ``sigma_schedule`` is given) or a sampler function."""
    if callable(sampler) and not isinstance(sampler, str):
        spec = sampler if isinstance(sampler, SamplerSpec) else None
        return sampler, spec, sigma_schedule
    resolved = resolve_sampler(sampler)
    return resolved.spec, resolved.spec, sigma_schedule or resolved.schedule


def pick_sampler(scheduler, sampler, sigma_schedule: str | None, sampler_kwargs: dict | None):
    """``(function, spec, schedule, kwargs)``: the requested sampler, or with ``sampler=None`` the k-sampler
    equivalent to ``scheduler`` with the options read from its config; the options are checked."""
    kwargs = dict(sampler_kwargs or {})
    if sampler is None:
        eq = equivalent(scheduler)
        function, spec, schedule = choose_sampler(eq.sampler, sigma_schedule)
        kwargs = {**eq.kwargs, **kwargs}
    else:
        function, spec, schedule = choose_sampler(sampler, sigma_schedule)
    check_sampler_kwargs(function, spec, kwargs)
    return function, spec, schedule, kwargs


def check_sampler_kwargs(function, spec: SamplerSpec | None, sampler_kwargs: dict) -> None:
    """Refuse options the sampler does not take (nothing is silently ignored) and the ones the pipeline owns (their
    values: :data:`~k_diffusing.pipelines.arguments.SAMPLER_OPTIONS`, checked as the KScheduler is built)."""
    owned = sorted(PIPELINE_OWNED & set(sampler_kwargs))
    if owned:
        raise ValueError(f"sampler_kwargs may not set {owned}: pass the pipeline's `generator` argument instead")
    if spec is not None:
        accepted = [o for o in spec.options if o not in PIPELINE_OWNED]
        name = spec.name
    else:
        params = inspect.signature(function).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        fixed = {"model", "x", "sigmas", "extra_args", "callback", "disable"}
        accepted = [p for p in params if p not in fixed | PIPELINE_OWNED]
        name = getattr(function, "__name__", repr(function))
    unknown = sorted(set(sampler_kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"sampler {name!r} does not take option(s) {unknown}.{did_you_mean(unknown[0], accepted)} "
            f"Its options: {', '.join(accepted) or 'none'}"
        )


def check_steps(num_inference_steps) -> int:
    """``num_inference_steps`` as an int >= 1 (it counts sampler steps); TypeError for a non-integer."""
    if isinstance(num_inference_steps, bool):
        raise TypeError(f"num_inference_steps must be an int (the number of sampler steps), got {num_inference_steps}")
    try:
        steps = operator.index(num_inference_steps)
    except TypeError:
        raise TypeError(
            f"num_inference_steps must be an int (the number of sampler steps), got {num_inference_steps!r} "
            f"({type(num_inference_steps).__name__})"
        ) from None
    if steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1 (the number of sampler steps), got {steps}")
    return steps


def check_latents(latents, expected: tuple[int, ...], layout: str) -> None:
    """User ``latents``: a tensor of any floating dtype (the pipeline casts it, as the parent does) of exactly the
    shape this call makes (``layout`` names the axes)."""
    if latents is None:
        return
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise TypeError(f"latents must have a floating dtype (float16, bfloat16, float32, float64), got {latents.dtype}")
    if tuple(latents.shape) != tuple(expected):
        raise ValueError(f"latents have shape {tuple(latents.shape)}, this call needs {tuple(expected)} ({layout})")


def check_sigmas(sigmas, geometry: Geometry) -> None:
    """A sampler's schedule (or the user's ``sigmas``, before any scheduler shifts them) must be a finite,
    non-increasing 1-D sequence of at least 2 values, ending at or above 0, inside ``geometry``'s sigma range (flow:
    at most 1)."""
    if not isinstance(sigmas, torch.Tensor):
        try:
            sigmas = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"sigmas must be a 1-D sequence of numbers, got {sigmas!r}") from None
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D sequence of at least 2 values, got shape {tuple(sigmas.shape)}")
    check_schedule(sigmas.tolist(), geometry)


def check_schedule_fits(sigmas: torch.Tensor, schedule: str | None, sigma_max: float, model: str) -> None:
    """A named schedule (``schedule``) or custom sigmas (``None``) must start at or below the model's largest noise
    level (the top of its sigma table): above it the network would be fed a clamped timestep that does not match the
    noise in ``x``."""
    if float(sigmas[0]) > sigma_max * (1 + SIGMA_MAX_SLACK_TABLE):
        what = "custom sigmas start" if schedule is None else f"sigma_schedule={schedule!r} starts"
        advice = ("pass sigmas within the model's range" if schedule is None else "choose a schedule over the model's "
                  "sigma table (karras, exponential, normal, simple, sgm_uniform, beta, kl_optimal ...)")
        raise ValueError(f"{what} at sigma {float(sigmas[0]):.6g}, above {sigma_max:.6g}, the largest noise level "
                         f"of {model}; {advice}")
