"""Run one parity pair through both pipelines and record, step by step, what each side did.

Both sides share every component of one pipeline folder and get the same prompt, seed and initial noise. The k side
is ``KSDXLPipeline`` / ``KFluxPipeline`` with a ``KScheduler`` around the pair's scheduler loaded (so it samples on
that scheduler's own sigmas, with the k-sampler of :func:`k_side`); the other side is the diffusers parent pipeline
driving the scheduler itself. Per step we keep the sigma,
the timestep the network saw and the latent after the step, all in the k-sampler's units: VE latents
``x0 + sigma eps`` for SDXL (VP schedulers' latents are multiplied by ``sqrt(sigma^2 + 1)``), the flow state for
FLUX.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..pipelines.common import diffusers_parent
from ..pipelines.schedulers import (_EQUIVALENTS, Equivalent, equivalent, keeps_vp_latents, known_class,
                                    read_schedule, set_up)
from ..registry import get_sampler
from ..scheduler import KScheduler
from .pairs import Pair


@dataclass
class Trace:
    """What one side did: ``sigmas`` (n + 1), ``timesteps`` (the network's timestep at each step's first call),
    ``call_timesteps`` (every network call), ``latents`` (the state after each step, float64 CPU, k-sampler units)
    and the decoded ``images`` (B, 3, H, W) in [0, 1]."""

    label: str
    sigmas: list[float]
    timesteps: list[float]
    call_timesteps: list[float]
    latents: list[torch.Tensor]
    images: torch.Tensor


class _NetworkCalls:
    """The timestep of every forward of ``network`` (positional, as the UNet gets it, or ``timestep=``)."""

    def __init__(self, network, scale: float):
        self.timesteps: list[float] = []
        self.scale = scale
        self._handle = network.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = kwargs["timestep"] if "timestep" in kwargs else args[1]
        self.timesteps.append(float(t.flatten()[0]) * self.scale)

    def remove(self):
        self._handle.remove()


def network_of(pipe):
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def has_equivalent(scheduler) -> bool:
    """Whether ``scheduler``'s class (or a base class) has a k-equivalent in the bridge's table."""
    return known_class(scheduler) in _EQUIVALENTS


def k_side(pair: Pair, scheduler) -> Equivalent:
    """The k-sampler and options ``scheduler`` is compared with: its k-equivalent, which must be the pair's
    ``sampler`` (else the table is wrong), with the options read from its config; for a scheduler without one (a
    port written from scratch, a diffusers class the table does not map), the pair's ``sampler`` and
    ``sampler_kwargs``, which the pair names."""
    get_sampler(pair.sampler)  # an unknown name raises, with suggestions
    if not has_equivalent(scheduler):
        return Equivalent(pair.sampler, dict(pair.sampler_kwargs))
    found = equivalent(scheduler)
    if found.sampler != pair.sampler:
        raise ValueError(f"pair {pair.name!r}: {pair.diffusers_side} runs k-sampler {found.sampler!r}, not "
                         f"{pair.sampler!r}")
    if pair.sampler_kwargs:
        raise ValueError(f"pair {pair.name!r}: {pair.scheduler_name} has a k-equivalent, whose options come from its "
                         f"config; sampler_kwargs {pair.sampler_kwargs} are for schedulers without one")
    return found


def check_stages(scheduler, steps: int) -> None:
    """Refuse a scheduler without a k-equivalent whose steps cannot be told apart among its network calls: one that
    makes more calls than steps (a multi-stage method) must say which call ends a step with diffusers'
    ``state_in_first_order`` (True except while a step waits for its later calls, as in HeunDiscreteScheduler)."""
    if has_equivalent(scheduler):
        return
    fresh = set_up(copy.deepcopy(scheduler), steps)
    if hasattr(fresh, "state_in_first_order"):
        return
    calls, own_steps = len(fresh.timesteps), len(read_schedule(fresh).sigmas) - 1
    if calls != own_steps:
        raise ValueError(
            f"{type(scheduler).__name__} makes {calls} network calls for {own_steps} steps but has no "
            "state_in_first_order: the harness compares the state after each step and cannot tell which call ends "
            "one. Give it a state_in_first_order property, False while a step waits for its later calls (as "
            "diffusers' HeunDiscreteScheduler has)")


def build_scheduler(pipe, pair: Pair, steps: int):
    """The pair's scheduler over the pipeline's own scheduler config, checked: its k side (:func:`k_side`) and
    step structure (:func:`check_stages`)."""
    scheduler = pair.scheduler_class().from_config(pipe.scheduler.config, **pair.config)
    k_side(pair, scheduler)
    check_stages(scheduler, steps)
    return scheduler


def _run(pipe, label: str, options: dict, generators, record_step, read_sigmas) -> Trace:
    """Call ``pipe`` with a step-end callback that keeps the states ``record_step`` accepts, and hook its network."""
    states, call_index, calls = [], [], _NetworkCalls(network_of(pipe), 1000.0 if hasattr(pipe, "transformer") else 1)

    def on_step_end(p, i, t, tensors):
        latent = record_step(p, tensors["latents"], i, len(states))
        if latent is not None:
            states.append(latent.detach().to("cpu", torch.float64))
            call_index.append(len(calls.timesteps))
        return {}

    try:
        images = pipe(generator=generators, output_type="pt", callback_on_step_end=on_step_end, **options).images
    finally:
        calls.remove()
    firsts = [0] + call_index[:-1]
    timesteps = [calls.timesteps[k] for k in firsts if k < len(calls.timesteps)]
    return Trace(label, read_sigmas(pipe), timesteps, calls.timesteps, states, images.float().cpu())


def _generators(seed: int, batch: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + b) for b in range(batch)]


def _side(run, pipe, pair: Pair, options: dict, seed: int) -> Trace:
    """One side, seeded: image b of the batch by generator ``seed + b``. For a ``global_noise`` pair the initial
    latents are drawn first and passed in, and torch's global RNG is seeded with ``seed``, so that the parent's
    step noise (global RNG) and ours (a fresh generator) are the same stream."""
    batch = len(options["prompt"]) if isinstance(options["prompt"], list) else 1
    if not pair.global_noise:
        return run(options, _generators(seed, batch))
    if batch != 1:
        raise ValueError(f"pair {pair.name!r} draws global-RNG noise: run it with a batch of 1")
    latents = initial_latents(pipe, options, _generators(seed, 1))
    torch.manual_seed(seed)
    return run({**options, "latents": latents}, _generators(seed, 1))


def initial_latents(pipe, options: dict, generators) -> torch.Tensor:
    """The parent's initial noise for one image (FLUX: packed), as its ``prepare_latents`` draws it."""
    if not hasattr(pipe, "transformer"):
        raise ValueError("global-RNG pairs are FLUX pairs (KSDXLPipeline passes its generator to the scheduler)")
    channels = pipe.transformer.config.in_channels // 4
    return pipe.prepare_latents(1, channels, options["height"], options["width"], torch.float32,
                                pipe._execution_device, generators)[0]


def k_label(found: Equivalent) -> str:
    """A k-sampler with its options: ``uni_pc_bh2(order=2, ...)``."""
    options = ", ".join(f"{k}={v!r}" for k, v in found.kwargs.items())
    return f"{found.sampler}({options})" if options else found.sampler


def k_scheduler(pair: Pair, scheduler) -> KScheduler:
    """The k side's scheduler: a ``KScheduler`` around ``scheduler`` running its equivalent (``sampler=None``), or
    for a scheduler without one the pair's sampler (:func:`k_side`) on the scheduler's own sigmas."""
    found = k_side(pair, scheduler)
    if has_equivalent(scheduler):
        return KScheduler.from_scheduler(scheduler)
    return KScheduler.from_scheduler(scheduler, sampler=found.sampler, sampler_kwargs=found.kwargs)


def trace_k(pipe, pair: Pair, options: dict, seed: int) -> Trace:
    """The k side: the K pipeline with :func:`k_scheduler` loaded; VP latents (the KScheduler keeps them as its base
    does) are brought to VE units as on the diffusers side. The parent's loop calls back after every model call: a
    step ends after each ``scheduler.order``-th call (the pairs' samplers make the same calls every step) and after
    the last."""
    scheduler = build_scheduler(pipe, pair, options["num_inference_steps"])
    k_pipe = type(pipe)(**{**pipe.components, "scheduler": k_scheduler(pair, scheduler)})
    k_pipe.set_progress_bar_config(disable=True)

    def record(p, x, i, k):
        if not ((i + 1) % p.scheduler.order == 0 or i == len(p.scheduler.timesteps) - 1):
            return None
        if not p.scheduler.vp_latents:
            return x
        return x.double() * math.sqrt(p.scheduler.k_sigmas[k + 1] ** 2 + 1)

    def run(opts, generators):
        return _run(k_pipe, k_label(k_side(pair, scheduler)), opts, generators, record,
                    lambda p: [float(s) for s in p.k_sigmas])

    return _side(run, k_pipe, pair, options, seed)


def trace_diffusers(pipe, pair: Pair, options: dict, seed: int) -> Trace:
    """The diffusers side: the parent pipeline class driving the pair's scheduler. Sub-step callbacks of two-stage
    schedulers (Heun, KDPM2, DPM-Solver SDE, a port's with ``state_in_first_order``) are skipped; VP latents are
    brought to VE units for SDXL."""
    scheduler = build_scheduler(pipe, pair, options["num_inference_steps"])
    native = diffusers_parent(type(pipe))(**{**pipe.components, "scheduler": scheduler})
    native.set_progress_bar_config(disable=True)
    vp = pair.kind == "sdxl" and keeps_vp_latents(native.scheduler)

    def record(p, x, i, k):
        last = i == len(p.scheduler.timesteps) - 1  # a two-stage scheduler's step into 0 is one stage
        if not (getattr(p.scheduler, "state_in_first_order", True) or last):
            return None
        if not vp:
            return x
        sigma = float(read_schedule(p.scheduler).sigmas[k + 1])
        return x.double() * math.sqrt(sigma**2 + 1)

    def run(opts, generators):
        return _run(native, pair.diffusers_side, opts, generators, record,
                    lambda p: [float(s) for s in read_schedule(p.scheduler).sigmas])

    return _side(run, native, pair, options, seed)
