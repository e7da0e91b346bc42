"""What the K pipelines share: the parent's own ``__call__``, run with the loaded scheduler untouched when the call
gives no K option and with a :class:`~k_diffusing.scheduler.KScheduler` in its place when it does, the checks made
before it, the call's signature, and saving under the parent's name."""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from .. import seeding
from ..geometry import FLOW, VE, Geometry
from ..scheduler import KScheduler, is_flow_config
from .arguments import check_call_arguments, check_known
from .checks import check_latents, check_sigmas, check_steps


def diffusers_parent(cls: type) -> type:
    """The diffusers pipeline class a K pipeline class extends (``KSDXLPipeline`` -> ``StableDiffusionXLPipeline``)."""
    return next(c for c in cls.__mro__[1:] if c.__module__.startswith("diffusers."))


def call_signature(parent_call, own_call) -> inspect.Signature:
    """The parent's ``__call__`` signature with ``own_call``'s keyword-only arguments added (before the parent's
    ``**kwargs``, if it has one): what ``inspect.signature`` reports for a K pipeline's ``__call__``, which takes
    ``*args, <extras>, **kwargs`` and hands the rest to the parent unchanged."""
    parent = list(inspect.signature(parent_call).parameters.values())
    extras = [p for p in inspect.signature(own_call).parameters.values() if p.kind is p.KEYWORD_ONLY]
    named = [p for p in parent if p.kind is not p.VAR_KEYWORD]
    rest = [p for p in parent if p.kind is p.VAR_KEYWORD]
    return inspect.Signature(named + extras + rest, return_annotation=inspect.signature(parent_call).return_annotation)


@cache
def _parent_signature(parent: type) -> inspect.Signature:
    return inspect.signature(parent.__call__)


def _prompts(call: dict) -> int | None:
    """The number of prompts of the call, as the parent counts them; None where the parent's ``check_inputs``
    refuses the prompt arguments (it then says why)."""
    prompt, embeds = call.get("prompt"), call.get("prompt_embeds")
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, list):
        return len(prompt)
    if prompt is None and isinstance(embeds, torch.Tensor):
        return embeds.shape[0]
    return None


def _images(call: dict) -> int | None:
    """The number of images the call makes (prompts times ``num_images_per_prompt``); None as :func:`_prompts`."""
    prompts = _prompts(call)
    return None if prompts is None else prompts * call["num_images_per_prompt"]


def _has_text(value) -> bool:
    """A prompt argument that says something (an empty negative prompt is the same as none)."""
    return bool(value.strip()) if isinstance(value, str) else isinstance(value, list) and any(map(_has_text, value))


def _accepted_keywords(parent: inspect.Signature) -> list[str]:
    """The keyword arguments a parent's ``__call__`` uses: its named parameters, and where it has ``**kwargs``
    the deprecated ones the SD-family parents still read from it (with their own deprecation message)."""
    named = [n for n, p in parent.parameters.items() if p.kind is not p.VAR_KEYWORD and n != "self"]
    if any(p.kind is p.VAR_KEYWORD for p in parent.parameters.values()):
        named += list(LEGACY_CALLBACK_KEYWORDS)
    return named


# The legacy callback arguments StableDiffusion(XL)Pipeline.__call__ still pops from its **kwargs (deprecated in
# diffusers for callback_on_step_end); any other name there would be dropped silently, so it is refused.
LEGACY_CALLBACK_KEYWORDS = ("callback", "callback_steps")

# The K options: a call's extra arguments with the value that means "not given". A call that gives none of them runs
# the parent with its loaded scheduler untouched; any one of them (a sampler, a schedule, sampler options, the seed
# modes, quantized timesteps, the NaN check) needs a KScheduler, so it starts the K machinery.
K_OPTION_DEFAULTS = {"sampler": None, "sigma_schedule": None, "sampler_kwargs": None, "quantize_timesteps": None,
                     "check_finite": False, "noise": "diffusers", "seed": None, "noise_options": None}


def given_k_options(values: dict) -> list[str]:
    """The names of the K options in ``values`` that are given a value other than their default (``None``, ``False``
    for ``check_finite``, ``"diffusers"`` for ``noise``); an empty ``sampler_kwargs={}`` counts as given."""
    given = []
    for name, value in values.items():
        default = K_OPTION_DEFAULTS[name]
        if not (value is default or (isinstance(value, str) and value == default)):
            given.append(name)
    return given


@dataclass(frozen=True)
class SizeRule:
    """What a parent pipeline does with an image ``height`` or ``width`` (pixels): it requires a multiple of
    ``multiple`` (``rounds`` False: its ``check_inputs`` raises for any other size), or it rounds any size down to a
    multiple of ``multiple`` (``rounds`` True: FluxPipeline warns "Dimensions will be resized accordingly"), so
    that the least size it renders is ``multiple``. ``multiple`` 1: any positive size (FluxKontextPipeline keeps
    only the aspect ratio)."""

    multiple: int
    rounds: bool

    def accepted(self) -> str:
        if self.multiple == 1:
            return "a positive int (pixels) or None"
        if self.rounds:
            return (f"an int >= {self.multiple} (pixels; the parent rounds it down to a multiple of {self.multiple}) "
                    "or None")
        return f"a positive multiple of {self.multiple} (pixels) or None"

    def check(self, name: str, value) -> None:
        """Refuse a size the parent fails on (not an int, below ``multiple``: no latent pixel) or, when it does not
        round, refuses itself; None is the parent's default. The parents replace 0 by their default without a word,
        which is refused too."""
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be {self.accepted()}, got {value!r} ({type(value).__name__})")
        if value < self.multiple or (not self.rounds and value % self.multiple):
            raise ValueError(f"{name} must be {self.accepted()}, got {value}")


def _geometry(scheduler) -> Geometry:
    """The noise geometry a scheduler's sigmas live in (a loaded scheduler's: flow for the FlowMatch family and
    schedulers configured with flow sigmas, else VE)."""
    if isinstance(scheduler, KScheduler):
        return scheduler.geometry
    return FLOW if is_flow_config(type(scheduler).__name__, scheduler.config) else VE


def _check_custom_schedule(call: dict, scheduler, parent: type) -> None:
    """Custom ``timesteps`` / ``sigmas``: one of them, and only where the scheduler's ``set_timesteps`` takes it (the
    parents' ``retrieve_timesteps`` rules, which they apply only after the prompt is encoded); the sigmas must be a
    schedule of the scheduler's geometry. The FLUX-family parents pass sigmas (``linspace(1, 1 / n, n)``) to every
    scheduler, so one that takes none fails there (FlowMatchHeun), as it does in the parent."""
    takes = inspect.signature(scheduler.set_timesteps).parameters
    if _passes_sigmas(parent) and "sigmas" not in takes:
        raise ValueError(f"{parent.__name__} passes sigmas to its scheduler's set_timesteps, which "
                         f"{type(scheduler).__name__} does not take (the parent fails there after encoding the "
                         "prompt): pass a sampler (the KScheduler runs on that scheduler's own sigmas) or load a "
                         "scheduler that takes sigmas")
    custom = [name for name in ("timesteps", "sigmas") if call.get(name) is not None]
    if len(custom) == 2:
        raise ValueError("timesteps and sigmas both choose the schedule; pass one")
    for name in custom:
        if name not in takes:
            raise ValueError(f"{name}= needs a scheduler whose set_timesteps takes custom {name}; "
                             f"{type(scheduler).__name__} does not: load one that does, or pass a sampler (a "
                             "KScheduler takes both)")
    if call.get("sigmas") is not None:
        check_sigmas(call["sigmas"], _geometry(scheduler))


def _passes_sigmas(parent: type) -> bool:
    """Whether the parent pipeline passes its own default ``sigmas`` to ``set_timesteps`` (the FLUX family)."""
    return parent.__module__.startswith("diffusers.pipelines.flux.")


class _Capture:
    """Forward hook on the denoising network: the outputs of its calls since the scheduler last read them."""

    def __init__(self):
        self.outputs: list[torch.Tensor] = []
        self.forces_cfg = False  # the parent must be made to run its unconditional branch (do_classifier_free_guidance)

    def __call__(self, module, args, output):
        self.outputs.append(output[0] if isinstance(output, tuple) else output.sample)

    def take(self, count: int) -> list[torch.Tensor]:
        outputs, self.outputs = self.outputs[-count:], []
        if len(outputs) != count:
            raise RuntimeError(f"expected {count} network output(s) before the scheduler step, got {len(outputs)}")
        return outputs


def _batched_cfg_source(capture: _Capture):
    """CFG++ source for parents that run the unconditional and the conditional branch as one batch ``[uncond,
    cond]`` (SD, SDXL, SD3): the guided prediction is the parent's own ``model_output`` (guidance_rescale
    included), the unconditional one the first half of the network's output."""

    def source(model_output):
        (batch,) = capture.take(1)
        return model_output, batch[: batch.shape[0] // 2]

    return source


def _true_cfg_source(capture: _Capture, scale: float):
    """CFG++ source for FLUX-family true CFG (the network runs on the prompt, then on the negative prompt): both
    predictions combined at the user's ``true_cfg_scale`` as FluxPipeline combines them."""

    def source(model_output):
        cond, uncond = capture.take(2)
        return uncond + scale * (cond - uncond), uncond

    return source


# FluxPipeline runs its unconditional branch only with true_cfg_scale > 1; for CFG++ at a scale <= 1 it is given this
# one instead, and the scheduler combines the two predictions at the user's scale itself.
TRUE_CFG_RUN_SCALE = 2.0


def _check_seed_arguments(mode: seeding.SeedMode, seed, call: dict) -> None:
    """One seed source per call: ``seed`` with the program modes, ``generator`` with "diffusers"; the program modes
    draw the initial noise, so user ``latents`` are refused with them."""
    if not mode.seeded:
        if seed is not None:
            raise ValueError("seed= applies to noise='comfyui' or noise='a1111'; with noise='diffusers' pass "
                             "generator=torch.Generator().manual_seed(seed)")
        return
    if call.get("generator") is not None:
        raise ValueError(f"noise={mode.name!r} takes seed=, not generator= (two seed sources): pass seed=<int>")
    if seed is None:
        each = ", or a list with one per image" if mode.name == "a1111" else ""
        raise ValueError(f"noise={mode.name!r} needs seed= (an int{each})")
    seeding.check_seeds(seed)
    if call.get("latents") is not None:
        raise ValueError(f"noise={mode.name!r} draws the initial noise from seed=; latents= would replace it: pass "
                         "one or the other")


def _check_eta(eta, scheduler) -> None:
    """A nonzero ``eta`` (the parents' DDIM option) needs a scheduler whose ``step`` takes it: the parents pass it
    only to such a scheduler and drop it without a word for the others; a KScheduler takes the sampler's ``eta`` in
    ``sampler_kwargs``."""
    if not eta:
        return
    if isinstance(scheduler, KScheduler):
        raise ValueError(f"eta={eta} is a DDIM scheduler option; pass sampler_kwargs={{'eta': {eta}}} instead")
    if "eta" not in inspect.signature(scheduler.step).parameters:
        raise ValueError(f"eta={eta} is used only by schedulers whose step takes eta (DDIM, DDPM-style); "
                         f"{type(scheduler).__name__} ignores it: drop eta, or load such a scheduler")


def _keywords(bound: inspect.BoundArguments) -> dict:
    """The bound call as keyword arguments (the parent's ``**kwargs`` spread out)."""
    out = {}
    for name, value in bound.arguments.items():
        if name == "self":
            continue
        if bound.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


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


class KPipelineMixin(SavesAsParent):
    """Mixin for the K pipelines: a call is the parent's own ``__call__``, with a :class:`KScheduler` as its scheduler
    when the call gives a K option.

    Without a K option (:data:`K_OPTION_DEFAULTS`: no ``sampler``, ``sigma_schedule``, ``sampler_kwargs``,
    ``quantize_timesteps``, ``check_finite``, seed mode) the call is the parent's, with the loaded scheduler object
    as it is (any class, a subclass, a patched ``step``): the output is the parent's, bit for bit. Only the
    argument checks run first (:meth:`_check_call`), and they refuse only what the parent fails on late or
    ignores without a word. A loaded KScheduler is a K option already chosen: it runs as it is.

    With a K option the KScheduler wraps the loaded scheduler (:meth:`KScheduler.from_scheduler`: a copy of it
    computes the schedule; ``sampler=None`` runs its k-equivalent, which exists for the schedulers listed in
    :mod:`k_diffusing.pipelines.schedulers`) and is put in place for the call only, in the instance's ``__dict__``,
    so the pipeline's config and its ``scheduler`` component are untouched. The call's ``generator``, when given, is
    bound to the KScheduler (``set_generator``) for the pipelines whose loop gives ``step`` none (FluxPipeline).
    After the call, ``pipe.k_sigmas`` holds its sampler sigmas (float64 CPU, ``num_inference_steps + 1`` values), as
    a parent pipeline's ``scheduler.sigmas`` keeps its last schedule; None after a call without the K machinery
    (``pipe.scheduler.sigmas`` then has them).

    Text-to-image subclasses give ``latent_shape(images, height, width) -> (shape, axes)`` for the check of user
    ``latents``, and ``noise_layout(images, height, width) -> (shape, pack)`` for the seed modes: the shape the
    programs draw the initial noise in and the function that brings it to the pipeline's latents (FLUX packs).

    Seed modes (``noise="comfyui"`` / ``"a1111"`` with ``seed=``, :mod:`k_diffusing.seeding`): text-to-image K
    pipelines draw the initial noise themselves by the program's rules and pass it as ``latents``; the other K
    pipelines give the parent the generators whose ``randn_tensor`` draws the program's noise (one CPU generator for
    ComfyUI, one per image for A1111's CPU and GPU sources; the NV source and variation seeds are refused there).
    The KScheduler gets the seed(s) (``set_seed``) and draws the per-step noise and Brownian trees by the same rules.
    A loaded KScheduler is not used as it is in these modes (a fresh one carries the mode).
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """The parent's ``from_pretrained``; ``"embedded:sdxl"`` / ``"embedded:flux"`` name the embedded tiny models,
        as the command lines take them (:func:`k_diffusing.gallery.model_location`)."""
        if isinstance(pretrained_model_name_or_path, str) and pretrained_model_name_or_path.startswith("embedded:"):
            from ..gallery import model_location

            pretrained_model_name_or_path = model_location(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def k_call(self, args: tuple, kwargs: dict, noise: str = "diffusers", seed=None, noise_options: dict | None = None,
               **options):
        """Check the call, then run the parent's ``__call__(*args, **kwargs)``: with the loaded scheduler untouched
        when no K option is given, else with the KScheduler ``options`` (``sampler``, ``sigma_schedule``,
        ``sampler_kwargs``, ...) describe, in the seed mode ``noise``. Under :meth:`validate`, return None once
        everything is checked."""
        scheduler, args, kwargs, capture = self._prepare(args, kwargs, noise, seed, noise_options, options)
        if self.__dict__.get("_k_validate_only"):
            return None
        if scheduler is None:
            self.k_sigmas = None
            return super().__call__(*args, **kwargs)
        hook = None if capture is None else self._network().register_forward_hook(capture)
        loaded = self.scheduler
        self.__dict__["scheduler"] = scheduler
        self.__dict__["_k_force_cfg"] = capture is not None and capture.forces_cfg
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.__dict__["scheduler"] = loaded
            self.__dict__.pop("_k_force_cfg", None)
            if hook is not None:
                hook.remove()
            if scheduler.num_inference_steps is not None:
                self.k_sigmas = torch.tensor(scheduler.k_sigmas, dtype=torch.float64)

    def validate(self, *args, **kwargs) -> None:
        """Check a call (the same arguments as ``__call__``) without running it: raises what the call would raise
        before its first network call (text encoders included), or returns None. ``generate`` checks every job so
        before it renders the first."""
        self.__dict__["_k_validate_only"] = True
        try:
            self(*args, **kwargs)
        finally:
            self.__dict__.pop("_k_validate_only", None)

    def _prepare(self, args: tuple, kwargs: dict, noise: str, seed, noise_options: dict | None, options: dict):
        """Every check of a call, in the order a user's mistakes are most clearly named, then the call's set-up:
        ``(scheduler, args, kwargs, capture)``, ``capture`` the CFG++ forward hook to register (or None);
        ``scheduler`` None when the call gives no K option and the loaded scheduler is not a KScheduler (the parent
        runs as it is). The KScheduler's schedule is set here once (a dry run of what the parent's loop sets), so a
        schedule the model cannot use is refused before the prompt is encoded."""
        mode = seeding.seed_mode(noise, noise_options)
        parent = _parent_signature(diffusers_parent(type(self)))
        check_known(kwargs, _accepted_keywords(parent), f"{type(self).__name__}.__call__")
        bound = parent.bind(self, *args, **kwargs)
        bound.apply_defaults()
        call = bound.arguments
        check_call_arguments(_keywords(bound))  # the KScheduler checks its own options when it is built
        _check_seed_arguments(mode, seed, call)
        given = given_k_options({**options, "noise": noise, "seed": seed, "noise_options": noise_options})
        if not given and not isinstance(self.scheduler, KScheduler):
            self._check_call(call, self.scheduler)
            return None, args, kwargs, None
        if isinstance(self.scheduler, KScheduler) and not given:
            scheduler = self.scheduler
        else:
            scheduler = KScheduler.from_scheduler(self.scheduler, **options, noise=mode.name,
                                                  noise_options=noise_options)
        self._check_call(call, scheduler)
        if mode.seeded:
            args, kwargs = (), self._seeded_call(bound, mode, seed, scheduler)
        elif call["generator"] is not None:
            scheduler.set_generator(call["generator"])
        capture = None
        if scheduler.needs_uncond:
            capture, kwargs = self._cfg_pp(call, scheduler, len(args), kwargs)
        scheduler.set_timesteps(**self._schedule_arguments(call, scheduler))
        return scheduler, args, kwargs, capture

    def _network(self) -> torch.nn.Module:
        """The denoising network (``unet`` or ``transformer``)."""
        return getattr(self, "unet", None) or getattr(self, "transformer", None)

    def _schedule_arguments(self, call: dict, scheduler: KScheduler) -> dict:
        """What the parent's loop passes to ``scheduler.set_timesteps`` (``retrieve_timesteps``): custom
        ``timesteps`` or ``sigmas``, else the step count (the FLUX-family parents: ``linspace(1, 1 / n, n)`` as
        sigmas); ``mu`` for a dynamically shifted flow schedule (FLUX's
        resolution-dependent shift, ``calculate_shift`` on the call's packed image length, as FluxPipeline and SD3
        compute it)."""
        arguments = {k: call[k] for k in ("timesteps", "sigmas") if call.get(k) is not None}
        config = scheduler.base.config
        if not arguments and _passes_sigmas(diffusers_parent(type(self))):
            if not config.get("use_flow_sigmas", False):  # the FLUX pipelines' default sigmas
                steps = check_steps(call["num_inference_steps"])
                arguments["sigmas"] = np.linspace(1.0, 1 / steps, steps)
        if not arguments:
            arguments["num_inference_steps"] = call["num_inference_steps"]
        if config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            height, width = self._size(call)
            side = 2 * self.vae_scale_factor
            arguments["mu"] = calculate_shift((height // side) * (width // side),
                                              config.get("base_image_seq_len", 256),
                                              config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                              config.get("max_shift", 1.15))
        return arguments

    def _size(self, call: dict) -> tuple[int, int]:
        """The call's ``(height, width)`` in pixels, the parent's default where not given."""
        default = self.default_sample_size * self.vae_scale_factor
        return int(call.get("height") or default), int(call.get("width") or default)

    @property
    def do_classifier_free_guidance(self):
        """The parent's rule, except during a CFG++ call, whose sampler needs the unconditional branch at any
        guidance scale (the parent skips it at ``guidance_scale <= 1``)."""
        return bool(self.__dict__.get("_k_force_cfg")) or super().do_classifier_free_guidance

    def _cfg_pp(self, call: dict, scheduler: KScheduler, positional: int, kwargs: dict):
        """Set up a CFG++ call: the scheduler reads the network's unconditional prediction from ``capture`` (a
        forward hook for the caller to register), and the parent is made to evaluate that branch. Returns
        ``(capture, kwargs)``."""
        network = self._network()
        capture = _Capture()
        parent = diffusers_parent(type(self))
        names = list(_parent_signature(parent).parameters)
        if isinstance(getattr(parent, "do_classifier_free_guidance", None), property):
            if getattr(network.config, "time_cond_proj_dim", None) is not None:
                raise ValueError(f"{scheduler._sampler_name()} (CFG++) needs an unconditional branch; this model "
                                 "embeds its guidance scale (time_cond_proj_dim) and has none")
            scheduler.set_guidance(_batched_cfg_source(capture))
            capture.forces_cfg = True
        elif "true_cfg_scale" in names:
            if call.get("negative_prompt") is None and call.get("negative_prompt_embeds") is None:
                raise ValueError(f"{scheduler._sampler_name()} (CFG++) needs the unconditional prediction, which "
                                 f"{parent.__name__} makes from a negative prompt: pass negative_prompt (\"\" is fine) "
                                 "and the CFG++ scale as true_cfg_scale (typically 0 to 1)")
            if positional > names.index("true_cfg_scale") - 1:  # names[0] is self
                raise ValueError("pass true_cfg_scale as a keyword argument with a CFG++ sampler")
            scheduler.set_guidance(_true_cfg_source(capture, float(call["true_cfg_scale"])))
            kwargs = {**kwargs, "true_cfg_scale": TRUE_CFG_RUN_SCALE}
        else:
            raise ValueError(f"{scheduler._sampler_name()} (CFG++) needs the unconditional prediction, which "
                             f"{parent.__name__} does not compute; use it with a pipeline that has classifier-free "
                             "guidance (KSDXLPipeline, KFluxPipeline with a negative prompt, ...)")
        return capture, kwargs

    def _seeded_call(self, bound: inspect.BoundArguments, mode: seeding.SeedMode, seed, scheduler: KScheduler) -> dict:
        """The parent's call arguments (all by keyword) with the seed mode's initial noise: ``latents`` drawn here
        (text-to-image), or the generators that draw it; the scheduler gets the seed(s) and the noise layout."""
        call = _keywords(bound)
        images = _images(call)
        if images is None:
            raise ValueError(f"noise={mode.name!r} needs the number of images: pass prompt (a string or a list) or "
                             "prompt_embeds")
        seeds = seeding.batch_seeds(mode, seed, images)
        device = self._execution_device
        layout = getattr(self, "noise_layout", None)
        if layout is not None:
            shape, pack = layout(images, *self._size(call))
            noise = seeding.initial_noise(mode, seed, shape, device)
            call["latents"] = noise if pack is None else pack(noise)
            scheduler.set_noise_layout(shape, pack)
        elif mode.draws_own_initial_noise:
            raise ValueError(f"noise_options {mode.options} (the NV source, variation seeds) need the initial noise "
                             f"drawn by k_diffusing.seeding, which {type(self).__name__} does not take as latents; "
                             "use KSDXLPipeline or KFluxPipeline")
        elif mode.name == "comfyui":
            call["generator"] = torch.Generator("cpu").manual_seed(seeds)
        else:
            where = "cpu" if mode.rng == "cpu" else device
            call["generator"] = [torch.Generator(where).manual_seed(s) for s in seeds]
        scheduler.set_seed(seeds)
        return call

    @property
    def size_rule(self) -> SizeRule:
        """The parent's rule for image heights and widths. The UNet pipelines (SD, SDXL, SDXL inpainting) refuse
        sizes that are not multiples of 8 in ``check_inputs``; a multiple of ``vae_scale_factor`` too is required
        here (the latent cell, 8 in every released VAE). The FLUX pipelines round sizes down to a multiple of
        ``2 vae_scale_factor`` (the latent cell times FLUX's 2x2 packing) with a warning, and render that size.
        Subclasses whose parents differ override this (SD3, SDXL ControlNet, FLUX Kontext)."""
        if getattr(self, "transformer", None) is not None:
            return SizeRule(2 * self.vae_scale_factor, rounds=True)
        return SizeRule(math.lcm(8, self.vae_scale_factor), rounds=False)

    def _check_call(self, call: dict, scheduler) -> None:
        """The refusals that depend on the call, the model or the ``scheduler`` that runs it (a KScheduler, or the
        loaded one when the call gives no K option), which the parent makes late (after encoding the prompt) or not
        at all: nonzero ``eta`` where the scheduler has no use for it, the step count, custom ``timesteps`` and
        ``sigmas``, sizes (:attr:`size_rule`), prompt lists of another length than ``prompt``, a negative prompt no
        branch of the call uses, user ``latents`` and a list of generators of the wrong length."""
        _check_eta(call.get("eta"), scheduler)
        if call.get("timesteps") is None and call.get("sigmas") is None:
            check_steps(call["num_inference_steps"])
        _check_custom_schedule(call, scheduler, diffusers_parent(type(self)))
        for name in ("height", "width"):
            self.size_rule.check(name, call.get(name))
        prompts = _prompts(call)
        if prompts is None:
            return
        for name in ("prompt_2", "negative_prompt", "negative_prompt_2"):
            value = call.get(name)
            if isinstance(value, list) and len(value) != prompts:
                raise ValueError(f"{name} must be one string, or a list of one per prompt ({prompts}), got a list of "
                                 f"{len(value)}")
        self._check_negative_prompt(call, scheduler)
        images = prompts * call["num_images_per_prompt"]
        latent_shape = getattr(self, "latent_shape", None)  # txt2img only: img2img/inpaint latents mean other things
        if latent_shape is not None:
            check_latents(call["latents"], *latent_shape(images, *self._size(call)))
        generator = call["generator"]
        if isinstance(generator, list) and len(generator) != images:
            raise ValueError(f"generator must be one torch.Generator, or a list of one per image ({images}), got a "
                             f"list of {len(generator)}")

    def _check_negative_prompt(self, call: dict, scheduler) -> None:
        """A non-empty ``negative_prompt`` needs a call that runs the unconditional branch, which the parents skip
        without a word: classifier-free guidance (``guidance_scale > 1`` on a model without an embedded guidance
        scale) or FLUX's true CFG (``true_cfg_scale > 1``); a CFG++ sampler (a KScheduler's) runs it at any scale."""
        negative = [call.get(name) for name in ("negative_prompt", "negative_prompt_2")]
        cfg_pp = isinstance(scheduler, KScheduler) and scheduler.needs_uncond
        if not any(_has_text(value) for value in negative) or cfg_pp:
            return
        if "true_cfg_scale" in call:
            scale, needed = "true_cfg_scale", "true_cfg_scale > 1 (FluxPipeline's true CFG)"
        else:
            if getattr(self._network().config, "time_cond_proj_dim", None) is not None:
                raise ValueError("negative_prompt is not used by this model, which embeds its guidance scale "
                                 "(time_cond_proj_dim) and runs no unconditional branch; drop negative_prompt")
            scale, needed = "guidance_scale", "guidance_scale > 1 (classifier-free guidance)"
        if call[scale] <= 1:
            raise ValueError(f"negative_prompt is used only with {needed}, got {scale}={call[scale]!r}; raise "
                             f"{scale} or drop negative_prompt")
