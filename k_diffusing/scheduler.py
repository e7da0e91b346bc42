"""KScheduler: any k-sampler behind diffusers' scheduler protocol, so every diffusers pipeline can run it.

    pipe.scheduler = KScheduler.from_config(pipe.scheduler.config, sampler="dpmpp_2m_sde", sigma_schedule="karras")

Inversion of control: a diffusers pipeline owns the loop and calls the network; a k-sampler is a function that calls
its denoiser. KScheduler runs the sampler in a greenlet (a coroutine on the pipeline's own thread: same grad mode,
same CUDA stream, no locks) that is suspended at every model call. ``step(model_output, t, sample)`` turns the
network's output into the denoised estimate ``D``, resumes the sampler with it, and returns the point of the
sampler's next model call (or its result after the last call) as ``prev_sample``. The functional samplers are
unchanged.

The call plan: before sampling, :func:`plan_calls` runs the sampler once on a 1-element zero tensor with a zero
denoiser and zero noise, recording the sigma of every model call and where each sampler step starts. ``timesteps``
lists one entry per call (multi-call samplers list every call, as diffusers' HeunDiscreteScheduler does) and
``order`` is the calls per step. Samplers whose calls depend on the data (``dpm_adaptive``) are refused.

Latent convention: the base scheduler's. VE units for discrete models (``x = x0 + sigma eps``, as diffusers' Euler
schedulers keep them: ``scale_model_input`` divides by ``sqrt(sigma^2 + 1)``), except VP units
``x / sqrt(sigma^2 + 1)`` on the own schedule of a scheduler that keeps those (DDIM, DPM-Solver, UniPC, DEIS); flow
units for flow models (``x = (1 - sigma) x0 + sigma eps``, unscaled). The sampler itself always runs in VE or flow
units. Latents the pipeline changes between calls (inpainting's blend with the re-noised original,
a callback that returns new latents) become the sampler's state: ``step`` copies them into the tensor the sampler
asked about when they are not the very tensor it handed out.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import diffusers
import greenlet
import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.utils import BaseOutput

from .denoisers import (PREDICTION_TYPES, DiscreteDenoiser, FlowDenoiser, clip_x0, discrete_denoised,
                        sigmas_from_alphas_cumprod, threshold_x0)
from .geometry import FLOW, VE, Geometry
from .names import did_you_mean
from . import seeding
from .registry import SamplerSpec, get_sampler, list_samplers
from .samplers.base import distinct_sigmas, dry_run, needs_uncond, parameters
from .schedules import flow_sigma_table, get_sigmas
from .pipelines.arguments import check_call_arguments
from .pipelines.checks import check_schedule_fits, check_sigmas, check_steps, pick_sampler
from .pipelines.schedulers import (FLOW_CLASSES, brownian_noise_for, call_keywords, check_supported,
                                   edm_preconditioning, equivalent, flow_convention, flow_shift, known_class,
                                   limits_denoised, read_schedule, set_up)

logger = logging.getLogger(__name__)

# KScheduler's own config keys; every other key is the base scheduler's.
OWN_KEYS = ("base_scheduler", "sampler", "sigma_schedule", "sampler_kwargs", "quantize_timesteps", "check_finite",
            "noise", "noise_options")
# Samplers whose model calls depend on the data, so no schedule of timesteps can be given to the pipeline upfront.
UNPLANNABLE = {"dpm_adaptive"}


@dataclass(frozen=True)
class CallPlan:
    """The model calls of one sampler run: the sigma of each call, the index of each step's first call, and
    whether the sampler asks for the unconditional estimate too (CFG++)."""

    sigmas: tuple[float, ...]
    step_starts: tuple[int, ...]
    needs_uncond: bool = False

    @property
    def order(self) -> int:
        """Calls per step (diffusers' ``scheduler.order``, by which pipelines skip ``t_start * order`` timesteps for
        img2img): the most frequent count of the steps between the first (a warm-up: plms's pseudo-Heun step) and
        the last (which may take fewer: heun's step into 0); the larger on a tie."""
        bounds = self.step_starts + (len(self.sigmas),)
        counts = [b - a for a, b in zip(bounds, bounds[1:])]
        middle = counts[1:-1] or counts[:-1] or counts or [1]
        return max(sorted(set(middle), reverse=True), key=middle.count)


def takes(function, name: str) -> bool:
    """Whether a sampler (spec or function) has parameter ``name`` (signatures read once)."""
    return name in parameters(function)


def plan_calls(function: Callable, kwargs: dict, sigmas: list[float], geometry: Geometry) -> CallPlan:
    """Record the model calls of ``function`` in a :func:`dry_run`. Valid for every sampler whose call sigmas depend
    only on the schedule and options."""
    dry = {k: v for k, v in kwargs.items() if k not in ("noise_sampler", "brownian", "generator")}
    recorder = dry_run(function, geometry, sigmas, **dry)
    starts = tuple(s for s in recorder.step_starts if s < len(recorder.sigmas))
    return CallPlan(tuple(recorder.sigmas), tuple(sorted(set(starts))), recorder.needs_uncond)


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place modification counter (-1 for inference-mode tensors, which keep none)."""
    return -1 if tensor.is_inference() else tensor._version


class _Call(NamedTuple):
    """A model call the suspended sampler asks for: the point ``x`` (the sampler's own tensor), its sigma, and
    whether it wants ``(D, D_uncond)`` back instead of ``D`` (CFG++)."""

    x: torch.Tensor
    sigma: float
    uncond: bool = False


class _Done(NamedTuple):
    x: torch.Tensor


class _PairedTimesteps:
    """A timestep rule: the base's own timestep where ``(key(sigma), t)`` is one of its pairs, else
    ``rule(sigma)``. ``key`` rounds the sigma as the pairs were stored (exact floats by default)."""

    def __init__(self, known, rule: Callable[[float], float], key: Callable[[float], float] = float):
        self.known = {} if known is None else dict(zip(known[0].tolist(), known[1].tolist()))
        self.rule = rule
        self.key = key

    def host_t(self, sigma: float) -> float:
        key = self.key(sigma)
        return self.known[key] if key in self.known else self.rule(sigma)


def _float32(sigma: float) -> float:
    """``sigma`` rounded to float32 (an EDM base keeps its sigmas, and pairs them, in float32)."""
    return float(torch.tensor(sigma, dtype=torch.float32))


def _preconditioned_noise(preconditioning, sigma: float) -> float:
    """An EDM-preconditioned base's timestep: its ``precondition_noise(sigma)`` (``c_noise``; ``0.25 log sigma`` for
    EDM's Karras schedule) on the float32 sigma, as the base evaluates it."""
    return float(preconditioning.precondition_noise(torch.tensor([sigma], dtype=torch.float32)).reshape(()))


class _Suspending:
    """The denoiser the live sampler sees: each call suspends the sampler and hands ``(x, sigma)`` to ``step``,
    which resumes it with ``D(x, sigma)``."""

    takes_host_sigma = True

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def __call__(self, x, sigma, sigma_host=None, **_):
        return greenlet.getcurrent().parent.switch(_Call(x, float(sigma[0]) if sigma_host is None else sigma_host))

    def denoise_with_uncond(self, x, sigma, sigma_host=None, **_):
        sigma = float(sigma[0]) if sigma_host is None else sigma_host
        return greenlet.getcurrent().parent.switch(_Call(x, sigma, True))


@dataclass
class KSchedulerOutput(BaseOutput):
    """``prev_sample``: the point of the sampler's next model call (its result after the last call);
    ``pred_original_sample``: the denoised estimate ``D`` of this call."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def _catalogue_name(sampler, spec: SamplerSpec | None, function) -> str | None:
    """The catalogue name the seed modes' rules go by: the name the user gave when it is a ``*_gpu`` alias
    (ComfyUI's device-side Brownian trees), else the spec's, else the catalogue entry whose function this is."""
    if isinstance(sampler, str) and sampler.strip().endswith("_gpu"):
        return sampler.strip()
    if spec is not None:
        return spec.name
    return next((s.name for s in list_samplers() if s.function is function and not s.defaults), None)


def _rule_name(name: str | None) -> str | None:
    """``name`` without ComfyUI's ``_gpu`` suffix (the same sampler, with its Brownian tree on the device)."""
    return name[: -len("_gpu")] if name is not None and name.endswith("_gpu") else name


def is_flow_config(class_name: str, config) -> bool:
    """Flow matching: a FlowMatch* scheduler or another flow class (LTX's Euler ancestral RF, MiniMax-H3), or a
    DPM/UniPC-style one configured with flow sigmas."""
    return (class_name.startswith("FlowMatch") or class_name in FLOW_CLASSES
            or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def _base_class(name: str | None, config: dict) -> type:
    """The diffusers scheduler class that computes the schedule: the config's ``_class_name``, or (when it names
    none) FlowMatchEulerDiscreteScheduler for a flow-looking config and EulerDiscreteScheduler otherwise; a config
    whose keys are exactly another class's (one built in code) is refused, as it would silently run Euler."""
    if name:
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)) or cls is KScheduler:
            raise ValueError(f"base scheduler {name!r} is not a diffusers scheduler class")
        return cls
    flow_keys = {"shift", "use_dynamic_shifting", "base_shift", "max_shift"}
    guess = (diffusers.FlowMatchEulerDiscreteScheduler if flow_keys & set(config) and "beta_start" not in config
             else diffusers.EulerDiscreteScheduler)
    keys = {k for k in config if not k.startswith("_") and k not in OWN_KEYS}
    owners = [name for name in dir(diffusers) if name.endswith("Scheduler") and name != guess.__name__
              and isinstance(getattr(diffusers, name), type) and _config_keys(getattr(diffusers, name)) == keys]
    if owners and not keys <= (_config_keys(guess) or keys):
        raise ValueError(
            f"the config names no _class_name (a scheduler built in code keeps none until it is saved) and its keys "
            f"are exactly {' or '.join(f'{o}' + chr(39) + 's' for o in owners)}, not {guess.__name__}'s (the class "
            f"assumed then): use KScheduler.from_scheduler(scheduler) or pass base_scheduler='<its class name>'"
        )
    return guess


def _carried_in_flow(base) -> str | None:
    """"trig" for a TrigFlow base (SCM), "vp" for VP latents whose table reaches zero SNR (``alphas_cumprod[-1] =
    0``, CogVideoX's ``rescale_betas_zero_snr``), else None: what KScheduler carries in flow units."""
    if base.config.get("prediction_type") == "trigflow":
        return "trig"
    table = getattr(base, "alphas_cumprod", None)
    return "vp" if table is not None and float(table[-1]) == 0.0 else None


def _x0_limit(config) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The base's limit on its predicted sample, applied to every ``D``: dynamic thresholding (``thresholding``,
    which wins, as in diffusers' steps) or clipping (``clip_sample``); None when the config has neither."""
    if not limits_denoised(config):
        return None
    if config.get("thresholding", False):
        ratio, top = config.dynamic_thresholding_ratio, config.sample_max_value
        limit = functools.partial(threshold_x0, ratio=ratio, max_value=top)
        what = f"dynamic thresholding (ratio {ratio}, sample_max_value {top})"
    else:
        limit = functools.partial(clip_x0, limit=config.get("clip_sample_range", 1.0))
        what = f"clip_sample (range {config.get('clip_sample_range', 1.0)})"
    logger.info("KScheduler: the base scheduler's config asks for %s; it is applied to the denoised estimate D "
                "of every sampler, as the base's own steps apply it to x0", what)
    return limit


def _config_keys(cls: type) -> set[str] | None:
    """The config keys a scheduler class's ``__init__`` takes (None: it takes any, ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {name for name in params if name != "self"}


def _timesteps_like(base_timesteps, values: list[float], device) -> torch.Tensor:
    """The call plan's timesteps: in the base's integer dtype where the base keeps integer timesteps (DDIM, PNDM,
    LCM, DPM-Solver: int64) and every value is a whole number (the base's own schedule), float64 where the base
    keeps float64 ones (computed in numpy: consistency models, DPM-Solver SDE), float32 otherwise."""
    integer = isinstance(base_timesteps, torch.Tensor) and not base_timesteps.is_floating_point()
    if integer and all(float(v).is_integer() for v in values):
        return torch.tensor(values, dtype=torch.float64).to(base_timesteps.dtype).to(device)
    wide = isinstance(base_timesteps, torch.Tensor) and base_timesteps.dtype == torch.float64
    return torch.tensor(values, dtype=torch.float64 if wide else torch.float32, device=device)


def _same(value, default) -> bool:
    """``value == default`` for plain values; False where the comparison is not a plain bool (tensors)."""
    try:
        return bool(value == default)
    except (TypeError, RuntimeError, ValueError):
        return False


def _is_uniform_flow_default(sigmas) -> bool:
    """``sigmas`` are ``linspace(1, 1/n, n)``, the FLUX-family pipelines' default (they always pass sigmas)."""
    values = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    n = len(values)
    return n >= 1 and bool(torch.allclose(values, torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64), atol=1e-6))


class KScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs a k-sampler (any registry name, A1111 name or sampler function).

    Args:
        base_scheduler: the diffusers scheduler class (name) whose config this is; it computes the scheduler's own
            schedule (``sigma_schedule=None``) and, with ``sampler=None``, names the k-equivalent sampler.
        sampler: registry name (``"dpmpp_2m"``), A1111 name (``"DPM++ 2M Karras"``; its schedule suffix applies
            unless ``sigma_schedule`` is given) or a sampler function ``f(model, x, sigmas, ...)``. ``None``: the
            k-sampler equivalent to the base scheduler (EulerDiscrete -> euler, Heun -> heun, ...), so swapping
            KScheduler in changes only the implementation.
        sigma_schedule: a schedule of :mod:`k_diffusing.schedules` over the model's sigma table (discrete) or shifted
            flow table (flow). ``None``: the base scheduler's own sigmas.
        sampler_kwargs: the sampler's options (``eta``, ``s_noise``, ``order``, ...); unknown ones raise.
        quantize_timesteps: feed the network the nearest integer timestep (ComfyUI) instead of the continuous one
            (k-diffusion, A1111); discrete models only. ``None``: the seed mode's rule (quantized for "comfyui",
            continuous otherwise).
        check_finite: after every call, raise ``FloatingPointError`` if the latents hold NaN/inf (one host sync per
            call on an accelerator).
        noise: the seed mode (:mod:`k_diffusing.seeding`): "diffusers" (default: the generators draw the sampler's
            noise as before), "comfyui" or "a1111". In the two program modes the seed(s) are the ``initial_seed()``
            of the generator(s) the pipeline gives ``step`` (or :meth:`set_generator`), or :meth:`set_seed`; the
            per-step noise and Brownian trees follow the program, and so do ``init_noise_sigma``, the timesteps fed
            to the network and the schedule (see :meth:`set_timesteps`). The pipeline still draws the initial noise
            itself, which is the program's noise when its generators are the program's: "comfyui" needs one CPU
            generator seeded with the seed (diffusers' ``randn_tensor`` then draws ComfyUI's batch), "a1111" a list
            of generators seeded ``seed + i``, one per image (CPU generators with ``noise_options={"rng": "cpu"}``,
            generators on the pipeline's device for the default "gpu" source); a single generator is accepted for
            a batch of one. The NV source and variation seeds need the initial noise drawn by
            :func:`k_diffusing.seeding.initial_noise` (the K pipelines do it): :meth:`set_seed` is then required.
            Latents are kept in VE units in these modes (no VP latents).
        noise_options: the mode's options ("a1111": ``rng``, ``subseed``, ``subseed_strength``,
            ``eta_noise_seed_delta``; "comfyui": none); others are refused.
        **base_config: the base scheduler's config (betas, spacing, prediction type, shift, ...).
    """

    config_name = "scheduler_config.json"
    _compatibles: list = []
    order = 1

    def __init__(self, base_scheduler: str | None = None, sampler: str | Callable | None = None,
                 sigma_schedule: str | None = None, sampler_kwargs: dict[str, Any] | None = None,
                 quantize_timesteps: bool | None = None, check_finite: bool = False, noise: str = "diffusers",
                 noise_options: dict | None = None, **base_config):
        base_config = {k: v for k, v in base_config.items() if not k.startswith("_")}
        cls = _base_class(base_scheduler, base_config)
        accepted = _config_keys(cls)
        unknown = sorted(set(base_config) - accepted) if accepted is not None else []
        if unknown:
            raise TypeError(
                f"KScheduler got unexpected keyword argument(s) {unknown}.{did_you_mean(unknown[0], OWN_KEYS)} "
                f"It takes its own {', '.join(OWN_KEYS)} and {cls.__name__}'s config keys: "
                f"{', '.join(sorted(accepted))}"
            )
        self._set_base(cls.from_config(base_config), sampler, sigma_schedule, sampler_kwargs, quantize_timesteps,
                       check_finite, noise, noise_options)

    @classmethod
    def from_scheduler(cls, scheduler, sampler: str | Callable | None = None, sigma_schedule: str | None = None,
                       sampler_kwargs: dict[str, Any] | None = None, quantize_timesteps: bool | None = None,
                       check_finite: bool = False, noise: str = "diffusers",
                       noise_options: dict | None = None) -> "KScheduler":
        """A KScheduler around a scheduler object (a copy of it computes the schedule; its config need not carry
        ``_class_name``). From a KScheduler, its base is reused."""
        if isinstance(scheduler, KScheduler):
            scheduler = scheduler.base
        self = cls.__new__(cls)
        self._set_base(copy.deepcopy(scheduler), sampler, sigma_schedule, sampler_kwargs, quantize_timesteps,
                       check_finite, noise, noise_options)
        return self

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """From a diffusers scheduler's config (its ``_class_name`` names the base) or a saved KScheduler config;
        ``sampler``, ``sigma_schedule``, ... come as keywords, other keywords override base config entries."""
        if "pretrained_model_name_or_path" in kwargs:
            config, kwargs = cls.load_config(kwargs.pop("pretrained_model_name_or_path"), return_unused_kwargs=True,
                                             **kwargs)
        config = dict(config or {})
        is_own = config.get("_class_name") == cls.__name__
        own = {k: config[k] for k in OWN_KEYS if k in config}
        if not is_own:
            own = {"base_scheduler": config.get("_class_name")}
        own.update({k: kwargs.pop(k) for k in OWN_KEYS if k in kwargs})
        # keys of the config dict its base class does not know are dropped, as diffusers drops them when a config
        # moves between scheduler classes; keyword arguments are the caller's own and are checked (typos raise)
        accepted = _config_keys(_base_class(own.get("base_scheduler"), {**config, **kwargs}))
        base_config = {k: v for k, v in config.items()
                       if k not in OWN_KEYS and not k.startswith("_") and (accepted is None or k in accepted)}
        scheduler = cls(**own, **base_config, **kwargs)
        return (scheduler, {}) if return_unused_kwargs else scheduler

    def _set_base(self, base, sampler, sigma_schedule, sampler_kwargs, quantize_timesteps, check_finite,
                  noise="diffusers", noise_options=None):
        check_call_arguments({"sampler_kwargs": sampler_kwargs, "quantize_timesteps": quantize_timesteps,
                              "check_finite": check_finite})
        self._mode = seeding.seed_mode(noise, noise_options)
        check_supported(base)
        self.base = base
        # VP latents that reach zero SNR (CogVideoX's rescaled betas: sigma = inf in VE units) and TrigFlow (SCM) are
        # carried in flow units, where that end is sigma = 1: x_flow = x_vp sqrt(s^2 + (1 - s)^2) (TrigFlow: over
        # sigma_data), s = sigma_vp / (alpha_vp + sigma_vp); the flow ODE there is the same probability flow
        self._carried = _carried_in_flow(base)
        self._data_scale = float(base.config.get("sigma_data", 1.0)) if self._carried == "trig" else 1.0
        self.geometry = FLOW if is_flow_config(type(base).__name__, base.config) or self._carried else VE
        self._flow = flow_convention(base)  # a flow base's own timestep and velocity convention (MiniMax-H3)
        prediction_type = base.config.get("prediction_type") or "epsilon"
        if (self.geometry is VE or self._carried == "vp") and prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not supported; accepted: "
                             f"{', '.join(map(repr, PREDICTION_TYPES))} (discrete) or a flow-matching scheduler")
        self._prediction_type = prediction_type
        self._limit = _x0_limit(base.config)
        # LCM's boundary condition (Luo et al. 2023, arXiv 2310.04378, Eq. 9 with c_skip/c_out of its timestep):
        # part of what the distilled model outputs, so applied to D for every sampler, after the limit as LCM does
        self._boundary = getattr(base, "get_scalings_for_boundary_condition_discrete", None)
        self._steps_to_prev = "prev_timestep" in inspect.signature(base.step).parameters  # UnCLIP's step target
        # EDM preconditioning (Karras et al. 2022, arXiv 2206.00364, Table 1): the base's own c_in, c_noise and
        # c_skip / c_out (EDMEuler, EDMDPMSolverMultistep, CosineDPMSolverMultistep keep them as methods; a
        # consistency model's by its scheduler's formulas)
        self._edm = edm_preconditioning(base)
        if quantize_timesteps and (self.geometry is FLOW or self._edm):
            raise ValueError("quantize_timesteps applies to discrete (eps/v) models; flow models take sigma * 1000 "
                             "and EDM-preconditioned ones their c_noise(sigma)")
        if self._mode.name == "comfyui" and quantize_timesteps is False and self.geometry is VE:
            raise ValueError("noise='comfyui' feeds the network ComfyUI's integer timesteps (the nearest table entry "
                             "in log sigma); quantize_timesteps=False contradicts it: leave it None")
        self._quantize = self.geometry is VE and not self._edm and (
            bool(quantize_timesteps) if quantize_timesteps is not None else self._mode.name == "comfyui")
        self._function, self._spec, self._schedule, self._kwargs = pick_sampler(base, sampler, sigma_schedule,
                                                                                sampler_kwargs)
        self._equivalent = equivalent(base) if sampler is None else None
        self._step_values = {}
        self._schedule_kwargs = {}
        self._sampler_id = _catalogue_name(sampler, self._spec, self._function)
        if self._mode.seeded:
            self._check_seeded(base)
        target = self._spec.function if self._spec is not None else self._function
        if any(target is get_sampler(name).function for name in UNPLANNABLE):
            raise ValueError(
                f"sampler {sampler!r} chooses its number of model calls from the data (adaptive step size), so a "
                "pipeline cannot be given its timesteps in advance; use it through k_diffusing.sampling, or pick "
                "a fixed-step sampler (dpm_fast, dpmpp_2m, uni_pc, ...)"
            )
        config = {k: v for k, v in base.config.items() if not k.startswith("_") and k not in OWN_KEYS}
        base_name = type(base).__name__ if hasattr(diffusers, type(base).__name__) else known_class(base)
        self.register_to_config(**config, base_scheduler=base_name, sampler=sampler, sigma_schedule=sigma_schedule,
                                sampler_kwargs=dict(sampler_kwargs or {}),
                                quantize_timesteps=None if quantize_timesteps is None else bool(quantize_timesteps),
                                check_finite=bool(check_finite), noise=self._mode.name,
                                noise_options=dict(self._mode.options))
        self._generator = None
        self._seed = None
        self._noise_layout = None
        self._guidance = None
        self.timesteps = None
        self.sigmas = None
        self.num_inference_steps = None
        self._plan = None
        self._vp = False
        self._plans: dict[tuple, CallPlan] = {}
        self._reset()

    def _check_seeded(self, base) -> None:
        """The seed modes choose the sampler's noise themselves: an explicit ``noise_sampler`` (a second source) and
        stochastic samplers that take none are refused."""
        if "noise_sampler" in self._kwargs:
            raise ValueError(f"sampler_kwargs noise_sampler and noise={self._mode.name!r} both choose the sampler's "
                             "noise; pass one")
        stochastic = self._spec.stochastic if self._spec is not None else True
        if stochastic and not takes(self._function, "noise_sampler"):
            raise ValueError(f"{self._sampler_name()} takes no noise_sampler, so noise={self._mode.name!r} cannot "
                             "give it the program's noise")

    @property
    def noise_mode(self) -> seeding.SeedMode:
        """The checked seed mode (``noise`` and ``noise_options``)."""
        return self._mode

    def set_seed(self, seed) -> None:
        """The seed(s) of the seed mode, in place of the generators' ``initial_seed()``: "comfyui" one int for the
        batch; "a1111" an int (image ``i`` gets A1111's ``seed + i``, or ``seed`` with a variation strength) or one
        per image. ``None`` goes back to the generators. Required for the NV source and variation seeds, whose
        initial noise the caller draws with :func:`k_diffusing.seeding.initial_noise`."""
        if seed is not None and not self._mode.seeded:
            raise ValueError("set_seed applies to noise='comfyui' or 'a1111'; noise='diffusers' uses the generators")
        self._seed = None if seed is None else seeding.check_seeds(seed)

    def set_noise_layout(self, shape, pack: Callable | None = None) -> None:
        """The shape the seed modes draw the sampler's noise in (the batch's unpacked latent shape) and ``pack``,
        which maps a draw to the loop's latent layout: FLUX draws (B, C, H, W) and packs it with the pipeline's
        ``_pack_latents``, as ComfyUI and Forge draw unpacked latents (the K FLUX pipelines set this). ``None``:
        the latents' own shape."""
        self._noise_layout = None if shape is None else (tuple(shape), pack)

    # --- the schedule ------------------------------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None, sigmas: list[float] | None = None, mu: float | None = None,
                      **base_kwargs):
        """Set up the run: the schedule (the base scheduler's own, or ``sigma_schedule``), then the call plan.

        ``timesteps`` / ``sigmas`` are custom schedules as the base scheduler takes them (they replace
        ``num_inference_steps``); ``mu`` is the dynamic flow shift. With a ``sigma_schedule``, FLUX-family
        pipelines' default ``sigmas`` (``linspace(1, 1/n, n)``) only give the step count; other custom schedules
        are refused (two schedules would be chosen). ``base_kwargs``: other keywords of the base's
        ``set_timesteps`` (LCM's ``original_inference_steps``), passed to it; they shape the base's own schedule,
        so with a ``sigma_schedule`` a value other than None is refused. Keywords the base does not take raise.
        """
        call_keywords(self.base.set_timesteps, base_kwargs, f"{type(self.base).__name__}.set_timesteps")
        given = {k: v for k, v in base_kwargs.items() if v is not None}
        if given and self._schedule is not None:
            raise ValueError(f"set_timesteps({', '.join(f'{k}={v!r}' for k, v in given.items())}) shapes "
                             f"{type(self.base).__name__}'s own schedule, but sigma_schedule={self._schedule!r} "
                             "chooses the schedule; pass sigma_schedule=None to use it")
        self._reset()
        if timesteps is not None and sigmas is not None:
            raise ValueError("Only one of `timesteps` or `sigmas` can be passed")
        if self._mode.draws_own_initial_noise and self._seed is None:
            raise ValueError(
                f"noise_options {self._mode.options} need the initial noise drawn by k_diffusing.seeding."
                "initial_noise (a pipeline's generators cannot draw the NV source or variation seeds): use the K "
                "pipelines (noise='a1111', seed=...), or pass those latents and call scheduler.set_seed(seed)")
        own = None
        schedule = self._program_schedule()
        # ComfyUI's KSampler and A1111 compute some samplers' schedules for steps + 1 and drop the second-to-last
        # sigma (seeding.DISCARD_PENULTIMATE); only schedules made from a step count, not custom ones
        discard = seeding.discards_penultimate(self._mode, _rule_name(self._sampler_id))
        if schedule is not None:
            if timesteps is not None or (sigmas is not None and not _is_uniform_flow_default(sigmas)):
                raise ValueError(f"custom {'timesteps' if timesteps is not None else 'sigmas'} and "
                                 f"sigma_schedule={schedule!r} both choose the schedule; pass one")
            steps = check_steps(len(sigmas) if sigmas is not None else num_inference_steps)
            k_sigmas = self._named_schedule(steps + discard, mu, schedule)
            known = None
        else:
            if sigmas is not None and not takes(self.base.set_timesteps, "sigmas") and _is_uniform_flow_default(sigmas):
                num_inference_steps, sigmas = len(sigmas), None  # FluxPipeline's default sigmas, FlowMatchHeun
            if timesteps is None and sigmas is None:
                num_inference_steps = check_steps(num_inference_steps) + discard
            elif sigmas is not None and len(sigmas) > 1:  # one sigma: a one-step FLUX run, the base appends 0
                check_sigmas(sigmas, self.geometry)
            if discard and sigmas is not None and _is_uniform_flow_default(sigmas):
                sigmas = np.linspace(1.0, 1 / (len(sigmas) + 1), len(sigmas) + 1)  # the FLUX pipelines' rule
            else:
                discard = discard and timesteps is None and sigmas is None
            own = read_schedule(set_up(self.base, num_inference_steps, timesteps, sigmas, mu, **given))  # our copy
            k_sigmas, known = own.sigmas, own.known
            if self._carried:  # VE levels (inf at zero SNR) to flow ones
                k_sigmas = k_sigmas.apply_(FLOW.from_ve)
                known = None if known is None else (known[0].double().apply_(FLOW.from_ve), known[1])
            if sigmas is not None and self.geometry is VE:
                check_schedule_fits(k_sigmas, None, self._sigma_max(), "the model's sigma table")
        if discard:
            k_sigmas = seeding.drop_penultimate(k_sigmas)
        check_sigmas(k_sigmas, self.geometry)
        self._k_sigmas = k_sigmas.tolist()
        self._own = own
        # VP latents x / sqrt(sigma^2 + 1), as the base keeps them (DDIM, DPM-Solver, UniPC, DEIS on their own
        # schedule): the loop then holds what the native scheduler would, also above sigma = 0 (denoising_end).
        # The seed modes keep VE latents (the programs' x) and feed the network the program's timestep (no pairs).
        self._vp = self.geometry is VE and own is not None and own.vp_latents and not self._mode.seeded
        if self._mode.seeded:
            known = None
        self._init_noise_sigma = self._initial_scale(own, self._k_sigmas[0])
        self._bridge = self._timestep_map(known)
        eq = self._equivalent
        self._schedule_kwargs = eq.schedule_options(own) if eq and eq.schedule_options and own is not None else {}
        self._plan = self._plan_for(self._k_sigmas)
        self._check_first_call(self._plan, self._k_sigmas[0])
        if self._plan.needs_uncond and self._guidance is None:
            raise ValueError(
                f"{self._sampler_name()} is a CFG++ sampler: it needs the unconditional prediction next to the "
                "guided one, which a pipeline's loop does not hand to its scheduler. Use a K pipeline "
                "(KSDXLPipeline, KSDPipeline, KSD3Pipeline, the SDXL img2img/inpaint/ControlNet ones, KFluxPipeline "
                "with a negative prompt), or give the scheduler a source with scheduler.set_guidance(fn)"
            )
        # TrigFlow's timesteps end with its final t = 0, which is no call (its pipeline loops over timesteps[:-1])
        final = [self._bridge.host_t(self._k_sigmas[-1])] if self._carried == "trig" else []
        self.timesteps = _timesteps_like(getattr(self.base, "timesteps", None),
                                         [self._bridge.host_t(s) for s in self._plan.sigmas] + final, device)
        self.sigmas = torch.tensor(self._plan.sigmas + (self._k_sigmas[-1],), dtype=torch.float32)
        self.num_inference_steps = len(self._k_sigmas) - 1
        self.order = self._plan.order

    def _check_first_call(self, plan: CallPlan, sigma_0: float) -> None:
        """Refuse a run whose first model call is not at its first sigma: the sampler adds noise before that call
        (churn), but a pipeline calls the network on its initial latents first. (rel_tol: dpm_fast's first call
        comes back from its log-sigma grid one ulp off sigma_0.)"""
        if not math.isclose(plan.sigmas[0], sigma_0, rel_tol=1e-9):
            raise ValueError(
                f"{self._sampler_name()} makes its first model call at sigma {plan.sigmas[0]:.6g}, not at the "
                f"schedule's first sigma {sigma_0:.6g}: it adds noise before that call (s_churn > 0 with "
                f"s_tmin <= {sigma_0:.6g} <= s_tmax), but a pipeline calls the network on its initial "
                f"latents first. Set sampler_kwargs s_tmax below {sigma_0:.6g} (or s_churn=0)"
            )

    def _plan_for(self, sigmas: list[float]) -> CallPlan:
        """The call plan of the sampler on ``sigmas``, cached per schedule (the sampler and options are fixed)."""
        options = {**self._kwargs, **self._schedule_kwargs}
        key = (tuple(sigmas), tuple(sorted(self._schedule_kwargs.items())))
        if key not in self._plans:
            self._plans[key] = plan_calls(self._function, options, sigmas, self.geometry)
        return self._plans[key]

    def _named_schedule(self, steps: int, mu: float | None, schedule: str) -> torch.Tensor:
        config = self.base.config
        if self._carried == "trig":
            raise ValueError(f"sigma_schedule={schedule!r} needs the model's noise levels, and a TrigFlow model "
                             "(SCMScheduler) has no table; use sigma_schedule=None (its own timesteps)")
        if self._carried:  # the VP table in flow units (zero SNR: 1)
            table = sigmas_from_alphas_cumprod(self.base.alphas_cumprod.double()).apply_(FLOW.from_ve)
            return get_sigmas(schedule, steps, sigma_table=table)
        if self.geometry is FLOW:
            table = flow_sigma_table(flow_shift(self.base, mu), config.num_train_timesteps)
            sigmas = get_sigmas(schedule, steps, sigma_table=table)
            check_schedule_fits(sigmas, schedule, FLOW.sigma_max, "a flow model (x = (1 - sigma) x0 + sigma eps)")
        elif self._edm:  # a continuous model: the range its config gives, no table
            sigmas = get_sigmas(schedule, steps, sigma_min=config.sigma_min, sigma_max=config.sigma_max)
        else:
            table = sigmas_from_alphas_cumprod(self.base.alphas_cumprod.double())
            sigmas = get_sigmas(schedule, steps, sigma_table=table)
            check_schedule_fits(sigmas, schedule, float(table[-1]), "the model's sigma table")
        return sigmas

    def _sigma_max(self) -> float:
        """The largest noise level of a discrete model: the top of its sigma table, or an EDM config's sigma_max."""
        if self._edm:
            return float(self.base.config.sigma_max)
        return float(sigmas_from_alphas_cumprod(self.base.alphas_cumprod.double())[-1])

    def _program_schedule(self) -> str | None:
        """The named schedule of the run: ``sigma_schedule``; in the seed modes, a discrete base configured with
        Karras or exponential sigmas gets the catalogue schedule over the model's table, whose range is the table's
        ends as in ComfyUI (``calculate_sigmas``: ``model_sampling.sigma_min / sigma_max``) and A1111
        (``get_sigmas``: ``model_wrap.sigmas[0] / [-1]``); diffusers' own spans only the spaced timesteps."""
        if self._schedule is not None or not self._mode.seeded or self.geometry is FLOW:
            return self._schedule
        config = self.base.config
        if config.get("use_karras_sigmas", False):
            return "karras"
        if config.get("use_exponential_sigmas", False):
            return "exponential"
        return None

    def _initial_scale(self, own, sigma_0: float) -> float:
        """What the pipeline multiplies unit initial noise by: flow 1 (the state at sigma_0 is the noise itself);
        discrete, the base scheduler's own ``init_noise_sigma`` on its own schedule (exact parity, e.g.
        ``sqrt(sigma^2 + 1)`` for 'leading' spacing, 1 for VP latents), else the first sigma (k-diffusion's
        convention). The seed modes: the program's rule (:func:`seeding.initial_scale`); FLUX-family pipelines do
        not apply it (their schedules start at sigma 1, where ComfyUI's ``sigma_0 * noise`` is the noise).
        """
        if self._mode.seeded:
            top = None if self.geometry is FLOW else self._sigma_max()
            return seeding.initial_scale(self._mode, sigma_0, top, flow=self.geometry is FLOW)
        if self.geometry is FLOW:
            return 1.0
        if own is None:
            return sigma_0
        return own.init_noise_sigma

    def _timestep_map(self, known):
        """A bridge denoiser used only for its sigma -> timestep rule (``host_t``)."""
        if self._carried == "trig":  # TrigFlow's t: tan t = s / (1 - s)
            return _PairedTimesteps(known, lambda s: math.atan2(s, 1.0 - s))
        if self._carried:
            ve = DiscreteDenoiser(None, self.base.alphas_cumprod, self._prediction_type,
                                  "quantized" if self._quantize else "continuous", None)
            return _PairedTimesteps(known, lambda s: ve.host_t(FLOW.to_ve(s)))
        if self._flow is not None:
            return _PairedTimesteps(known, self._flow.timestep)
        if self.geometry is FLOW:
            return FlowDenoiser(None, self.base.config.num_train_timesteps, known)
        if self._edm:
            return _PairedTimesteps(known, functools.partial(_preconditioned_noise, self._edm), key=_float32)
        mode = "quantized" if self._quantize else "continuous"
        return DiscreteDenoiser(None, self.base.alphas_cumprod, self.base.config.prediction_type, mode, known)

    @property
    def vp_latents(self) -> bool:
        """Whether the loop's latents are VP-scaled, ``x / sqrt(sigma^2 + 1)`` (the base's own convention)."""
        return self._vp

    @property
    def k_sigmas(self) -> list[float]:
        """The sampler's schedule of the last ``set_timesteps`` (``num_inference_steps + 1`` values, float64)."""
        self._require_plan()
        return list(self._k_sigmas)

    @property
    def init_noise_sigma(self) -> float | torch.Tensor:
        """What the pipeline multiplies the initial noise by; a tensor (the base's dtype) where the base gives
        one (the Euler family), a float otherwise, as the base. Before ``set_timesteps``: the base's own value
        (ConsistencyModelPipeline scales its latents before it sets the timesteps)."""
        own = getattr(self.base, "init_noise_sigma", None)
        if not hasattr(self, "_init_noise_sigma"):
            return 1.0 if own is None else own
        value = self._init_noise_sigma
        return torch.tensor(value, dtype=own.dtype) if isinstance(own, torch.Tensor) else value

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """The base scheduler's training table (pipelines index it with ``timesteps``: Kandinsky img2img)."""
        return self.base.alphas_cumprod

    @property
    def step_index(self) -> int | None:
        """The index of the next call into ``timesteps`` (None before the first call)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        """Start at call ``begin_index`` (img2img, the SDXL refiner): it must be the first call of a sampler step
        whose run from there makes the same calls as the tail of the full plan."""
        self._begin_step(begin_index)
        self._begin_index = begin_index

    def __len__(self) -> int:
        return self.base.config.num_train_timesteps

    def _reset(self):
        greenlet_ = getattr(self, "_greenlet", None)
        if greenlet_ is not None and not greenlet_.dead:
            greenlet_.throw()
        self._greenlet = None
        self._pending = None
        self._handed = None
        self._handed_version = -1
        self._step_index = None
        self._begin_index = None

    def _require_plan(self):
        if self._plan is None:
            raise RuntimeError("KScheduler.set_timesteps must be called before sampling")

    def _begin_step(self, index: int) -> int:
        """The sampler step whose first call is ``index``, checked against the (cached) plan of the run from there."""
        self._require_plan()
        starts = self._plan.step_starts
        if index not in starts:
            raise ValueError(
                f"begin index {index} is not the first model call of a step of {self._sampler_name()} (steps start "
                f"at calls {list(starts)}); this sampler cannot start mid-schedule here"
            )
        step = starts.index(index)
        steps = distinct_sigmas(self._k_sigmas)  # the sampler's steps: zero-length ones are no steps
        tail = self._plan_for(steps[step:])
        self._check_first_call(tail, steps[step])  # img2img / refiner start with churn
        if tail.sigmas != self._plan.sigmas[index:]:
            raise ValueError(
                f"{self._sampler_name()} started at step {step} makes other model calls than the tail of its "
                "full run, so it cannot start mid-schedule (img2img strength, denoising_start)"
            )
        return step

    def _sampler_name(self) -> str:
        if self._spec is not None:
            return f"sampler {self._spec.name!r}"
        return f"sampler {getattr(self._function, '__name__', repr(self._function))}"

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """diffusers' rule: the call whose timestep equals ``timestep``; the second match when there are several."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        indices = (schedule == torch.as_tensor(timestep).to(schedule.device)).nonzero()
        if len(indices) == 0:
            raise ValueError(f"timestep {float(timestep)} is not one of this run's timesteps")
        return int(indices[1 if len(indices) > 1 else 0])

    def _init_step_index(self, timestep):
        self._require_plan()
        if self._step_index is None:
            self._step_index = self._begin_index if self._begin_index is not None else (
                0 if timestep is None else self.index_for_timestep(timestep))

    # --- the protocol ------------------------------------------------------------------------------------------

    def set_guidance(self, source: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """What a CFG++ sampler needs besides the guided prediction: ``source(model_output) -> (guided, uncond)``,
        the guided and the unconditional network predictions of the current call (same units as
        ``model_output``). The K pipelines set it (they capture the network's unconditional branch); ``None``
        removes it."""
        self._guidance = source

    @property
    def needs_uncond(self) -> bool:
        """Whether the sampler reads the unconditional estimate (the CFG++ samplers, or a function marked with
        :func:`k_diffusing.samplers.base.uses_uncond`)."""
        return needs_uncond(self._function)

    def set_generator(self, generator) -> None:
        """The generator(s) for the sampler's noise when the pipeline passes none to ``step`` (FluxPipeline and
        most flow pipelines): pass the generator you give the pipeline for reproducible noise."""
        self._generator = generator

    def scale_model_input(self, sample: torch.Tensor, timestep=None, **base_kwargs) -> torch.Tensor:
        """The network's input at the current call: ``x / sqrt(sigma^2 + 1)`` for discrete models (VP scaling of
        VE latents), the latents themselves for flow models and VP latents. ``base_kwargs``: what the base's own
        ``scale_model_input`` takes and ignores (SA-Solver's ``generator``); others raise."""
        if base_kwargs:
            call_keywords(self.base.scale_model_input, base_kwargs, f"{type(self.base).__name__}.scale_model_input")
        self._init_step_index(timestep)
        if self.geometry is FLOW or self._vp:
            return sample
        s = torch.full((), self._plan.sigmas[self._step_index], dtype=torch.float32, device=sample.device)
        if self._edm:
            return self._edm.precondition_inputs(sample, s)
        return sample / (s**2 + 1) ** 0.5

    def _denoised(self, x: torch.Tensor, sigma: float, model_output: torch.Tensor) -> torch.Tensor:
        """``D`` at the call's point from the network's output, limited as the base's config says (clip /
        threshold). Eps and flow take the host float (torch rounds a Python scalar to the tensor's dtype first: the
        same bits as the bridge's sigma tensor); v needs ``sqrt(s^2 + 1)`` in the state dtype, as the bridge
        computes it."""
        prediction = model_output.to(x.dtype)
        if self._carried:
            denoised = self._carried_denoised(x, sigma, prediction)
        elif self._flow is not None:
            denoised = self._flow.denoised(x, self._bridge.host_t(sigma), prediction)
        elif self.geometry is FLOW:
            denoised = x - sigma * prediction
        elif self._edm:
            denoised = self._edm.precondition_outputs(x, prediction, torch.tensor(sigma, dtype=torch.float32))
        else:
            kind = self._prediction_type
            s = sigma if kind == "epsilon" else torch.full((1,) * x.ndim, sigma, dtype=x.dtype, device=x.device)
            denoised = discrete_denoised(x, s, prediction, kind)
        if self._limit is not None:
            denoised = self._limit(denoised)
        if self._boundary is not None:  # D = c_out D + c_skip x_vp at the call's timestep
            c_skip, c_out = self._boundary(torch.tensor(self._bridge.host_t(sigma), dtype=torch.float32))
            denoised = c_out * denoised + c_skip * (x / math.sqrt(sigma**2 + 1))
        return denoised

    def _state_scale(self, sigma: float) -> float:
        """The sampler's state over the loop's latents at ``sigma``: ``sqrt(sigma^2 + 1)`` for VP latents in VE
        units, ``sqrt(s^2 + (1 - s)^2) / sigma_data`` for latents carried in flow units, else 1."""
        if self._carried:
            return math.hypot(sigma, 1.0 - sigma) / self._data_scale
        return math.sqrt(sigma**2 + 1) if self._vp else 1.0

    def _to_state(self, latents: torch.Tensor, sigma: float) -> torch.Tensor:
        """The sampler's state (VE or flow units) from the loop's latents at ``sigma``."""
        scale = self._state_scale(sigma)
        return latents * scale if scale != 1.0 else latents

    def _to_latents(self, x: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        """The loop's latents (in ``dtype``) from the sampler's state at ``sigma``."""
        scale = self._state_scale(sigma)
        return (x / scale if scale != 1.0 else x).to(dtype)

    def _carried_denoised(self, x: torch.Tensor, sigma: float, prediction: torch.Tensor) -> torch.Tensor:
        """``D`` (state units) of a base carried in flow units, by the base's own formula on its latents:
        VP with ``alpha = (1 - s) / r``, ``sigma_vp = s / r`` (``r = sqrt(s^2 + (1 - s)^2)``; v at zero SNR is
        ``D = -v``); TrigFlow's ``x0 = cos(t) x - sin(t) F`` at the base's own ``t``, over ``sigma_data``."""
        latents = x / self._state_scale(sigma)
        if self._carried == "trig":
            t = self._bridge.host_t(sigma)
            return (math.cos(t) * latents - math.sin(t) * prediction) / self._data_scale
        r = math.hypot(sigma, 1.0 - sigma)
        alpha, sigma_vp = (1.0 - sigma) / r, sigma / r
        if self._prediction_type == "sample":
            return prediction
        if self._prediction_type == "v_prediction":
            return alpha * latents - sigma_vp * prediction
        return (latents - sigma_vp * prediction) / alpha

    def _mode_seeds(self, batch: int, generator, device: torch.device):
        """The seed mode's seed(s): :meth:`set_seed`'s, else the generators' ``initial_seed()``, which must be the
        generators the program's initial noise needs (see the class docstring)."""
        if self._seed is not None:
            return seeding.batch_seeds(self._mode, self._seed, batch)
        mode = self._mode.name
        if generator is None:
            raise ValueError(f"noise={mode!r} takes its seed from the generator the pipeline passes, and this "
                             "pipeline passed none: call scheduler.set_generator(generator) or scheduler.set_seed(seed)")
        generators = [generator] if isinstance(generator, torch.Generator) else list(generator)
        if mode == "comfyui":
            if len(generators) != 1 or generators[0].device.type != "cpu":
                raise ValueError("noise='comfyui' draws the whole batch's initial noise on the CPU from one seed: pass "
                                 "one torch.Generator('cpu') seeded with it")
            return generators[0].initial_seed()
        if len(generators) != batch:
            raise ValueError(f"noise='a1111' gives each image its own seed: pass a list of {batch} generators seeded "
                             "seed + i (one per image), or use the K pipelines' seed=")
        want = "cpu" if self._mode.rng == "cpu" else device.type
        wrong = [g.device.type for g in generators if g.device.type != want]
        if wrong:
            raise ValueError(f"noise='a1111' with rng={self._mode.rng!r} needs generators on {want} (they draw the "
                             f"initial noise), got generators on {wrong[0]}; pass noise_options rng="
                             f"{'cpu' if wrong[0] == 'cpu' else 'gpu'!r} or move the generators")
        return [g.initial_seed() for g in generators]

    def _mode_noise(self, sample: torch.Tensor, generator, run_sigmas: list[float]):
        """The seed mode's noise sampler for a run over ``run_sigmas`` (:func:`seeding.noise_sampler`)."""
        shape, pack = self._noise_layout if self._noise_layout is not None else (tuple(sample.shape), None)
        if math.prod(shape) != sample.numel() or shape[0] != sample.shape[0]:
            raise ValueError(f"set_noise_layout shape {shape} does not fit the latents {tuple(sample.shape)}")
        name = _rule_name(self._sampler_id)
        brownian = name in seeding.BROWNIAN_SAMPLERS and self._kwargs.get("brownian", True)
        seeds = self._mode_seeds(shape[0], generator, sample.device)
        return seeding.noise_sampler(self._mode, seeds, shape, sample.device, run_sigmas, brownian=brownian,
                                     on_device_tree=(self._sampler_id or "").endswith("_gpu"), pack=pack,
                                     full_sigmas=self._k_sigmas)

    def _start(self, sample: torch.Tensor, generator) -> _Call:
        step = self._begin_step(self._step_index)
        kwargs = {**self._kwargs, **self._schedule_kwargs, **self._equivalent_options(step)}
        sigmas = self._k_sigmas[step:]
        generator = generator if generator is not None else self._generator
        if self._mode.seeded:
            if takes(self._function, "noise_sampler"):
                kwargs["noise_sampler"] = self._mode_noise(sample, generator, sigmas)
                kwargs.pop("brownian", None)  # the mode's noise sampler already is a tree or independent draws
        elif takes(self._function, "generator"):
            kwargs.setdefault("generator", generator)
        if self.config.sampler is None and self._own is not None and "noise_sampler" not in kwargs:
            own_noise = brownian_noise_for(self.base, sample, self._own.sigmas.to(torch.float32), generator)
            if own_noise is not None:
                kwargs["noise_sampler"] = own_noise
        if (generator is None and "noise_sampler" not in kwargs and not self._mode.seeded
                and (self._spec is None or self._spec.stochastic)):
            logger.warning("KScheduler: %s draws its noise from torch's global RNG (the pipeline passed no "
                           "generator to step); call scheduler.set_generator(g) for reproducible noise",
                           self._sampler_name())
        model = _Suspending(self.geometry)

        def run(x):
            final = self._function(model, x, torch.tensor(sigmas, dtype=torch.float64), disable=True, **kwargs)
            eq = self._equivalent
            if eq is not None and eq.final_scale is not None and self._own is not None:
                final = final * eq.final_scale(self.base)  # the base's own last step (UnCLIP)
            return _Done(final)

        self._greenlet = greenlet.greenlet(run)
        return self._resume(self._to_state(sample, sigmas[0]))

    def _equivalent_options(self, step: int) -> dict:
        """The equivalent's options from the base's ``step`` keywords of this run (their base defaults where the
        pipeline passed none) and from the set-up base (per-step lists, from ``step`` on)."""
        eq = self._equivalent
        if eq is None or not (eq.step_options or eq.run_options):
            return {}
        defaults = inspect.signature(self.base.step).parameters
        options = {name: self._step_values.get(base_name, defaults[base_name].default)
                   for base_name, name in eq.step_options.items()}
        if eq.run_options is not None and self._own is not None:  # on the base's own schedule
            options.update({k: v[step:] for k, v in eq.run_options(self.base, options).items()})
        return options

    def _resume(self, value):
        self._greenlet.parent = greenlet.getcurrent()
        return self._greenlet.switch(value)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, *args, generator=None,
             return_dict: bool = True, eta: float | None = None, **base_kwargs):
        """Give the sampler ``D`` at the current call and run it to its next call.

        Args:
            model_output: the network's (guided) prediction at ``sample``: eps / v / x0 (discrete) or velocity (flow).
            timestep: the current timestep (used only to find the start when no begin index was set).
            sample: the latents the network saw; if they are not the tensor the last ``step`` returned (inpainting,
                a callback), they replace the sampler's state.
            args: further positional arguments, bound in the order of the base's ``step`` (DDIM and TCD: ``eta``
                first; LCM: ``generator``), as diffusers' own loops pass them.
            generator: one ``torch.Generator`` or one per batch item, for stochastic samplers (read at the first call).
            eta: what SD-family pipelines pass to every scheduler whose ``step`` takes it (their ``eta`` argument,
                default 0): 0 or None. The sampler's own ``eta`` goes in ``sampler_kwargs`` (DDIM's eta is
                ``euler_ancestral``'s), so another value raises rather than being dropped.
            base_kwargs: other keywords of the base scheduler's ``step``: honoured where they ask for what KScheduler
                does anyway (their default; LTX's ``per_token_timesteps`` equal to ``timestep`` for every token),
                refused otherwise; keywords the base's ``step`` does not take raise.

        Returns:
            :class:`KSchedulerOutput` (``prev_sample``, ``pred_original_sample``) or that tuple.
        """
        if args:
            bound = self._positional(args, {"generator": generator, "return_dict": return_dict, "eta": eta,
                                            **base_kwargs})
            generator, return_dict, eta = bound.pop("generator"), bound.pop("return_dict"), bound.pop("eta")
            base_kwargs = bound
        step_options = self._equivalent.step_options if self._equivalent is not None else {}
        if eta is not None and "eta" in step_options:  # the equivalent's own option (TCD's gamma)
            base_kwargs["eta"] = eta
        elif eta:
            raise ValueError(f"step(eta={eta!r}): KScheduler takes the sampler's eta as sampler_kwargs={{'eta': "
                             f"{eta!r}}} (a stochastic sampler: DDIM's eta is euler_ancestral's); the pipeline's eta "
                             "must be 0 here (it is the sampler's own option only where the base is TCD)")
        passed = {k: base_kwargs.pop(k) for k in list(base_kwargs) if k in step_options}
        if self._steps_to_prev:  # absent, UnCLIP's step goes to t - 1: checked like None
            base_kwargs.setdefault("prev_timestep", None)
        if base_kwargs:
            self._check_step_extras(base_kwargs, timestep)
        if self._greenlet is None:
            self._step_values = passed
        self._init_step_index(timestep)
        index = self._step_index
        if index >= len(self._plan.sigmas):
            raise RuntimeError(f"step called {index + 1} times; this run has {len(self._plan.sigmas)} model calls")
        if self._greenlet is None:
            call = self._start(sample, generator)
            self._check_call(call, index)  # later calls are checked as they arrive, below
        else:
            call = self._pending
            if not (sample is self._handed and _version(sample) == self._handed_version):
                call.x.copy_(self._to_state(sample, call.sigma))
        if call.uncond:  # CFG++: the guided and the unconditional estimate (set_guidance)
            guided, uncond = self._guidance(model_output)
            denoised = self._denoised(call.x, call.sigma, guided)
            result = self._resume((denoised, self._denoised(call.x, call.sigma, uncond)))
        else:
            denoised = self._denoised(call.x, call.sigma, model_output)
            result = self._resume(denoised)
        self._step_index = index + 1
        if isinstance(result, _Call):
            self._check_call(result, index + 1)
            self._pending = result
        elif self._step_index != len(self._plan.sigmas):
            raise RuntimeError(f"{self._sampler_name()} finished after {self._step_index} model calls; its plan has "
                               f"{len(self._plan.sigmas)}")
        next_sigma = result.sigma if isinstance(result, _Call) else self._k_sigmas[-1]
        prev_sample = self._to_latents(result.x, next_sigma, sample.dtype)
        self._handed, self._handed_version = prev_sample, _version(prev_sample)
        if self.config.check_finite and not bool(torch.isfinite(prev_sample).all()):
            raise FloatingPointError(
                f"the latents hold NaN/inf after model call {index} (sigma {call.sigma:.6g}); check_finite=True "
                "stopped the run there (common causes: float16 overflow in the network, a schedule outside the "
                "model's range, a sampler option such as a large s_noise)"
            )
        # x0 is the same in VE, VP and flow units; TrigFlow's state is over sigma_data
        out_denoised = (denoised * self._data_scale if self._data_scale != 1.0 else denoised).to(sample.dtype)
        if not return_dict:
            return prev_sample, out_denoised
        return KSchedulerOutput(prev_sample=prev_sample, pred_original_sample=out_denoised)

    def _positional(self, args: tuple, keywords: dict) -> dict:
        """``keywords`` with the positional ``args`` of a ``step`` call bound to the names the base's ``step`` has
        after ``(model_output, timestep, sample)``; a name given both ways, or too many, raise as Python would."""
        names = list(inspect.signature(self.base.step).parameters)[3:]
        if len(args) > len(names):
            raise TypeError(f"{type(self.base).__name__}.step takes {len(names) + 3} positional arguments "
                            f"(model_output, timestep, sample, {', '.join(names)}), got {len(args) + 3}")
        defaults = {"generator": None, "return_dict": True, "eta": None}
        for name, value in zip(names, args):
            if keywords.get(name, defaults.get(name)) is not defaults.get(name):
                raise TypeError(f"step got multiple values for argument {name!r}")
            keywords[name] = value
        return keywords

    def _check_step_extras(self, extras: dict, timestep) -> None:
        """The base ``step``'s own keywords: accepted at their defaults (what KScheduler does anyway) and for
        ``per_token_timesteps`` equal to ``timestep`` everywhere; refused otherwise, naming the value."""
        owner = f"{type(self.base).__name__}.step"
        call_keywords(self.base.step, extras, owner)
        defaults = inspect.signature(self.base.step).parameters
        for name, value in extras.items():
            if name == "per_token_timesteps" and value is not None:
                if not bool((torch.as_tensor(value) == torch.as_tensor(timestep).to(torch.as_tensor(value))).all()):
                    raise ValueError(
                        "per_token_timesteps that differ across tokens (conditioning tokens held at other noise "
                        "levels) need a per-token step, which a k-sampler (one sigma for the whole state) cannot "
                        "take; KScheduler runs only calls whose per-token timesteps all equal the step's timestep")
                continue
            if name == "prev_timestep":
                self._check_prev_timestep(value, timestep)
                continue
            default = defaults[name].default
            if value is not None and not (default is not inspect.Parameter.empty and _same(value, default)):
                raise ValueError(f"{owner}({name}={value!r}) changes what {type(self.base).__name__} computes, which "
                                 f"KScheduler's sampler does not do; leave {name} at its default ({default!r}) and "
                                 "pass sampler options in sampler_kwargs")

    def _check_prev_timestep(self, value, timestep) -> None:
        """UnCLIP's ``prev_timestep`` (its pipelines pass the next timestep, None at the last): the step's target,
        which must be the next call's timestep (None: ``t - 1``, one training step, only at the last call, whose
        ``t - 1 = -1`` is the clean end); another target is refused, as the sampler steps through its schedule."""
        self._init_step_index(timestep)
        index = self._step_index
        last = index + 1 >= len(self.timesteps)
        wanted = None if last else self.timesteps[index + 1]
        if (value is None) != last or (value is not None and not bool(torch.as_tensor(value).cpu() == wanted.cpu())):
            raise ValueError(
                f"{type(self.base).__name__}.step(prev_timestep={value!r}) at call {index} steps to another timestep "
                f"than the schedule's next ({None if wanted is None else int(wanted)}; None at the last call, where "
                "t - 1 is the clean end); KScheduler's sampler steps through its schedule: pass the next timestep, "
                "as UnCLIP's pipelines do")

    def _check_call(self, call, index: int):
        if not isinstance(call, _Call):
            raise RuntimeError(f"{self._sampler_name()} finished after {index} model calls; its plan has "
                               f"{len(self._plan.sigmas)}")
        planned = self._plan.sigmas[index]
        if call.sigma != planned:
            raise RuntimeError(
                f"{self._sampler_name()} asked for sigma {call.sigma!r} at model call {index}, its plan says "
                f"{planned!r}: its calls depend on more than the schedule and options, which KScheduler cannot run"
            )

    def _noise_sigmas(self, timesteps, like: torch.Tensor) -> torch.Tensor:
        """The sigma of each timestep for ``add_noise`` by diffusers' rule: the current call once sampling has
        begun, else the begin index, else a timestep lookup."""
        self._require_plan()
        timesteps = torch.as_tensor(timesteps).reshape(-1)
        if self._begin_index is None and self._step_index is None:
            indices = [self.index_for_timestep(t) for t in timesteps]
        else:
            index = self._step_index if self._step_index is not None else self._begin_index
            indices = [index] * len(timesteps)
        sigma = self.sigmas[indices].to(device=like.device, dtype=like.dtype)
        return sigma.reshape((-1,) + (1,) * (like.ndim - 1))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """``x0`` noised to each timestep's sigma in this scheduler's latent units: ``x0 + sigma noise`` (VE),
        that over ``sqrt(sigma^2 + 1)`` (VP latents), ``(1 - sigma) x0 + sigma noise`` (flow)."""
        sigma = self._noise_sigmas(timesteps, original_samples)
        if self._carried:  # ((1 - s) x0 + s sigma_data noise) / r: the base's VP / TrigFlow latents
            r = (sigma**2 + (1.0 - sigma) ** 2) ** 0.5
            return ((1.0 - sigma) * original_samples + sigma * self._data_scale * noise) / r
        if self.geometry is FLOW:
            return sigma * noise + (1.0 - sigma) * original_samples
        noised = original_samples + noise * sigma
        return noised / (sigma**2 + 1) ** 0.5 if self._vp else noised

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor) -> torch.Tensor:
        """FlowMatchEulerDiscreteScheduler's name for :meth:`add_noise` (flow img2img / inpainting). A base with its
        own flow convention (MiniMax-H3) takes ``timestep`` at face value in that convention: its own
        ``scale_noise``, which reads no schedule."""
        if self._flow is not None:
            return self.base.scale_noise(sample, timestep, noise)
        return self.add_noise(sample, noise, timestep)

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs):
        """diffusers' ``save_config``, refusing what JSON cannot hold (a sampler function, a noise sampler object)."""
        for key in ("sampler", "sampler_kwargs"):
            try:
                json.dumps(self.config[key])
            except TypeError:
                raise ValueError(
                    f"KScheduler cannot save {key}={self.config[key]!r}: only registry names and JSON-serializable "
                    "options round-trip through scheduler_config.json"
                ) from None
        return super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
