"""What the SDXL and FLUX pipelines share around the sampler: choosing the sampler and its options, the progress
bar over model calls, ``callback_on_step_end`` and ``interrupt`` through the samplers' step-end protocol."""

from __future__ import annotations

import inspect
import json
import operator
import os
from pathlib import Path
from typing import Callable

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


class Interrupted(Exception):
    """Raised from a step end when the pipeline's ``interrupt`` flag is set; carries the state made so far."""

    def __init__(self, latents: torch.Tensor):
        super().__init__("interrupted")
        self.latents = latents


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
    """Refuse options the sampler does not take (nothing is silently ignored) and the ones the pipeline owns."""
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


def takes_generator(function) -> bool:
    target = function.function if isinstance(function, SamplerSpec) else function
    return "generator" in inspect.signature(target).parameters


class PipelineDenoiser:
    """A bridge denoiser as the pipeline runs it: a progress bar step per model call, and the step-end protocol of
    :class:`~k_diffusing.samplers.base.SamplerRun` turned into diffusers' ``callback_on_step_end`` (called once per
    sampler step with the state after it; a returned ``latents`` replaces the state, returned conditioning tensors
    replace those in ``state``) and ``interrupt`` (stops after the current step, keeping what was made). With
    ``check_finite`` the state after every step is checked for NaN/inf (one host sync per step)."""

    def __init__(self, pipe, inner, sigmas: list[float], progress, state: dict,
                 callback: Callable | None, tensor_inputs: list[str], check_finite: bool = False):
        self.pipe, self.inner, self.sigmas, self.progress = pipe, inner, sigmas, progress
        self.geometry = inner.geometry
        self.takes_host_sigma = getattr(inner, "takes_host_sigma", False)
        self.state, self.callback, self.tensor_inputs = state, callback, tensor_inputs
        self.check_finite = check_finite

    def __call__(self, x, sigma, **kwargs):
        out = self.inner(x, sigma, **kwargs)
        self.progress.update()
        return out

    def _step_sigmas(self, i: int) -> str:
        if 0 <= i < len(self.sigmas) - 1:
            return f"sigma {self.sigmas[i]:.6g} -> {self.sigmas[i + 1]:.6g}"
        return "a step of the sampler's own schedule"

    def timestep(self, i: int) -> torch.Tensor:
        """The timestep the network sees at step ``i``'s sigma (what diffusers' callbacks receive as ``t``), from the
        host path the samplers use, so it is the very value the network got."""
        return torch.tensor(self.inner.host_t(self.sigmas[i]), dtype=torch.float32)

    def on_step_end(self, i: int, x: torch.Tensor):
        if self.check_finite and not bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                f"the latents hold NaN/inf after sampler step {i} ({self._step_sigmas(i)}); check_finite=True "
                "stopped the run there (common causes: float16 overflow in the network, a schedule outside the "
                "model's range, a sampler option such as a large s_noise)"
            )
        replaced = None
        if self.callback is not None:
            kwargs = {k: (x if k == "latents" else self.state[k]) for k in self.tensor_inputs}
            outputs = self.callback(self.pipe, i, self.timestep(i), kwargs) or {}
            replaced = outputs.pop("latents", None)
            for key, value in outputs.items():
                if key in self.state:
                    self.state[key] = value
        if self.pipe.interrupt:
            raise Interrupted(x if replaced is None else replaced)
        return replaced


def diffusers_parent(cls: type) -> type:
    """The diffusers pipeline class a K pipeline class extends (``KSDXLPipeline`` -> ``StableDiffusionXLPipeline``)."""
    return next(c for c in cls.__mro__[1:] if c.__module__.startswith("diffusers."))


class SavesAsParent:
    """Mixin for the K pipelines: ``save_pretrained`` is the parent's, with ``model_index.json`` naming the diffusers
    parent class, so plain ``diffusers.DiffusionPipeline.from_pretrained`` loads the folder (the K class's own
    ``from_pretrained`` loads it too)."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        index = Path(save_directory) / "model_index.json"
        config = json.loads(index.read_text())
        config["_class_name"] = diffusers_parent(type(self)).__name__
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


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


def check_schedule_fits(sigmas: torch.Tensor, schedule: str, sigma_max: float, model: str) -> None:
    """A named schedule must start at or below the model's largest noise level (the top of its sigma table): above
    it the network would be fed a clamped timestep that does not match the noise in ``x``."""
    if float(sigmas[0]) > sigma_max * (1 + SIGMA_MAX_SLACK_TABLE):
        raise ValueError(
            f"sigma_schedule={schedule!r} starts at sigma {float(sigmas[0]):.6g}, above {sigma_max:.6g}, the largest "
            f"noise level of {model}; choose a schedule over the model's sigma table "
            "(karras, exponential, normal, simple, sgm_uniform, beta, kl_optimal ...)"
        )


def run_sampler(pipe, function, spec: SamplerSpec | None, bridge, sigmas: torch.Tensor, x: torch.Tensor,
                generator, sampler_kwargs: dict, state: dict, callback: Callable | None,
                tensor_inputs: list[str], check_finite: bool = False) -> tuple[torch.Tensor, bool]:
    """Run ``function`` on ``bridge`` over ``sigmas`` from ``x`` with the pipeline's progress bar (counting model
    calls), callbacks, interrupt and the opt-in ``check_finite``; returns ``(x, interrupted)``. ``pipe.k_sigmas`` keeps the call's schedule (as a
    parent pipeline's ``scheduler.sigmas`` does), for callbacks and :mod:`k_diffusing.parity`."""
    check_sigmas(sigmas, bridge.geometry)
    pipe.k_sigmas = sigmas.detach().cpu()
    kwargs = dict(sampler_kwargs)
    if takes_generator(function):
        kwargs.setdefault("generator", generator)
    pipe._num_timesteps = len(sigmas) - 1
    per_step = spec.calls_per_step if spec is not None else 1
    # An estimate (multi-call samplers take one call on the step into 0; restart and dpm_adaptive vary), set to the
    # real count when sampling ends.
    calls = per_step * pipe._num_timesteps - (per_step - 1 if sigmas[-1] == 0 else 0)
    with pipe.progress_bar(total=calls) as progress:
        model = PipelineDenoiser(pipe, bridge, sigmas.tolist(), progress, state, callback, tensor_inputs,
                                 check_finite)
        try:
            # CPU sigmas: the samplers read them as host floats, so no device copy or sync is needed
            return function(model, x, sigmas, disable=True, **kwargs), False
        except Interrupted as stop:
            return stop.latents, True
        finally:
            progress.total = progress.n
            progress.refresh()
