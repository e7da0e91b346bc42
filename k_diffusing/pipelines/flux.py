"""KFluxPipeline: diffusers' FluxPipeline running a k-sampler in flow geometry through :class:`~k_diffusing.scheduler.
KScheduler`.

A call is the parent's own ``__call__``, unchanged (:class:`~k_diffusing.pipelines.common.KPipelineMixin`): without a
K option it runs the loaded scheduler itself (the parent's output bit for bit, for the same ``height``, ``width`` and
``max_sequence_length``: the defaults below follow the model's own VAE and tokenizer, which are FluxPipeline's for
FLUX.1), with one a KScheduler in its place for that call. T5 + CLIP prompt encoding, packed latents and image ids, the
resolution-dependent shift ``mu``, the FLUX-dev guidance embedding (None for schnell), true CFG with negative
prompts, IP-adapter embeddings, callbacks, ``interrupt``, the progress bar and decoding are the parent's. Every
sampler is correct here: the geometry is flow (``x = (1 - sigma) x0 + sigma eps``) and the samplers derive their
log-SNR, ancestral split and noise from it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from diffusers import FluxPipeline

from .common import KPipelineMixin, call_signature

# The position of FluxPipeline.__call__'s max_sequence_length among the positional arguments (after self); passed
# that way it is the caller's, and the default below does not apply
_MAX_SEQUENCE_LENGTH_POSITION = list(inspect.signature(FluxPipeline.__call__).parameters).index(
    "max_sequence_length") - 1


def t5_length(pipe) -> int:
    """The T5 prompt length a FLUX pipeline's model was made for: its T5 tokenizer's own limit
    (``model_max_length``), at most FluxPipeline's 512. FLUX.1's tokenizer allows 512, FluxPipeline's default; the
    embedded model was trained with 48 tokens, and 512 (padding it was never trained on) washes its prompts out."""
    if pipe.tokenizer_2 is None:
        return 512
    return min(512, int(pipe.tokenizer_2.model_max_length))


class KFluxPipeline(KPipelineMixin, FluxPipeline):
    """FluxPipeline whose scheduler runs a k-sampler (see ``__call__``'s extra arguments)."""

    def __call__(self, *args, sampler: str | Callable | None = None, sigma_schedule: str | None = None,
                 sampler_kwargs: dict[str, Any] | None = None, check_finite: bool = False, noise: str = "diffusers",
                 seed: int | list[int] | None = None, noise_options: dict | None = None, **kwargs):
        r"""The parent's ``__call__`` (same arguments, same meaning, same loop) with a k-sampler as the scheduler
        when any of the extra arguments below is given (the K options); without them the parent's call with the
        loaded scheduler (any class, a subclass, a patched ``step``), bit for bit.

        Extra arguments:
            sampler: a registry name, an A1111 name or a sampler function; ``None`` with another K option: the
                k-sampler equivalent to the loaded scheduler (FlowMatchEuler -> euler, FlowMatchHeun -> heun,
                DPMSolverMultistep / UniPC in flow mode -> dpmpp_2m / uni_pc); with no K option, the loaded
                scheduler itself (FlowMatchHeun, which takes no ``sigmas``, then fails as in the parent, and is
                refused before the prompt is encoded; pass ``sampler="heun"``).
            sigma_schedule: a schedule of :mod:`k_diffusing.schedules` over the model's shifted flow sigma table
                (``simple`` equals the parent's default spacing; ``karras``, ``exponential``, ``beta``,
                ``kl_optimal`` ... as ComfyUI applies them to FLUX). ``None``: the scheduler's own (shifted) sigmas.
            sampler_kwargs: the sampler's options; unknown ones raise.
            check_finite: after every model call, stop with a ``FloatingPointError`` naming the call and its sigma
                if the latents hold NaN/inf. Off by default: the check reads a tensor back to the host, one device
                sync per call on an accelerator.
            noise, seed, noise_options: the seed mode, as in :class:`~k_diffusing.pipelines.sdxl.KSDXLPipeline`
                ("comfyui", "a1111" with ``seed``). The initial noise and the per-step noise are drawn in the
                unpacked latent shape ``(images, 16, 2 (height // 16), 2 (width // 16))``, as ComfyUI and Forge hold
                FLUX latents, and packed with the pipeline's ``_pack_latents``; the flow schedules start at sigma 1,
                where both programs' initial scale ``sigma_0`` leaves the noise as it is.

        ``latents`` are packed unit noise used as the state at the first sigma (1 on every built-in schedule), as in
        the parent. ``generator`` draws the initial noise and, bound to the KScheduler (FluxPipeline gives its
        ``step`` none), the sampler's noise. ``scheduler.timesteps`` lists every model call (about ``2 n`` for a
        two-call sampler such as heun), and the parent's loop, progress bar and ``callback_on_step_end`` go by them.

        ``height`` and ``width`` are rounded down to multiples of ``2 vae_scale_factor`` as the parent rounds them
        (with its warning): ``width=57`` renders 48 wide with FLUX.1's ``vae_scale_factor`` 8.

        Refused before any model call (text encoders included), with a message naming the value and what is
        accepted: an unknown sampler or schedule name (closest valid one suggested), sampler options the sampler does
        not take, ``height`` / ``width`` below ``2 vae_scale_factor`` (nothing left to render) or not an int,
        ``num_inference_steps`` that is not an int >= 1 (unless ``sigmas`` are given), ``sigmas`` that are
        not a finite non-increasing 1-D sequence in [0, 1], ``latents`` that are not a floating-point tensor of the
        packed shape ``(batch * num_images_per_prompt, (height / 16) * (width / 16), in_channels)`` (16 = 2 x
        FLUX's vae_scale_factor; any float dtype, cast as the parent casts it) and a list of generators that is not
        one per image. Refused after the prompt is encoded, before the transformer runs (the parent sets its
        scheduler up there): any sigma above 1 after the shift (the flow geometry has none; e.g.
        ``sigma_schedule="vp"``, or ``align_your_steps``, which has no flow table) and custom ``sigmas`` together
        with a ``sigma_schedule``.
        """
        if "max_sequence_length" not in kwargs and len(args) < _MAX_SEQUENCE_LENGTH_POSITION:
            kwargs["max_sequence_length"] = self.default_max_sequence_length
        return self.k_call(args, kwargs, noise, seed, noise_options, sampler=sampler, sigma_schedule=sigma_schedule,
                           sampler_kwargs=sampler_kwargs, check_finite=check_finite)

    __call__.__signature__ = call_signature(FluxPipeline.__call__, __call__)

    @property
    def default_max_sequence_length(self) -> int:
        """The default T5 prompt length, :func:`t5_length` of the pipeline's T5 tokenizer."""
        return t5_length(self)

    @property
    def default_sample_size(self) -> int:
        """The default image size in latent pixels: the VAE's trained image size (``vae.config.sample_size``) over
        ``vae_scale_factor``. FluxPipeline fixes it at 128, FLUX.1's 1024 / 8, which this gives too; a model trained
        at another size gets its own (the embedded FLUX model: 32 / 2 = 16, so its default call renders 32x32, not
        the 256x256 it never saw)."""
        if self.vae is None:
            return self._parent_default_sample_size
        return self.vae.config.sample_size // self.vae_scale_factor

    @default_sample_size.setter
    def default_sample_size(self, value: int) -> None:  # FluxPipeline.__init__ assigns its constant
        self._parent_default_sample_size = value

    def noise_layout(self, images: int, height: int, width: int):
        """The seed modes' noise shape, FLUX's unpacked latents ``(images, C, h, w)`` with ``prepare_latents``'
        rounding (``h = 2 (height // (2 vae_scale_factor))``), and the pipeline's packing of it."""
        channels = self.transformer.config.in_channels // 4
        h = 2 * (height // (2 * self.vae_scale_factor))
        w = 2 * (width // (2 * self.vae_scale_factor))

        def pack(noise):
            return self._pack_latents(noise, images, channels, h, w)

        return (images, channels, h, w), pack

    def latent_shape(self, images: int, height: int, width: int) -> tuple[tuple[int, ...], str]:
        side = 2 * self.vae_scale_factor  # prepare_latents' rounding, then 2x2 packing
        return ((images, (height // side) * (width // side), self.transformer.config.in_channels),
                "images, packed 2x2 patches: (height / (2 vae_scale_factor)) * (width / (2 vae_scale_factor)), "
                "transformer in_channels")
