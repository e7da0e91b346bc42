"""KSDXLPipeline: diffusers' StableDiffusionXLPipeline running a k-sampler through :class:`~k_diffusing.scheduler.
KScheduler`.

A call is the parent's own ``__call__``, unchanged (:class:`~k_diffusing.pipelines.common.KPipelineMixin`). Without a
K option (``sampler``, ``sigma_schedule``, ``sampler_kwargs``, ``quantize_timesteps``, ``check_finite``, a seed mode)
it runs the loaded scheduler itself and its output is the parent's, bit for bit; with one, a KScheduler takes the
loaded scheduler's place for that call. Prompt encoding (both CLIPs, clip_skip, LoRA scale), micro-conditioning,
IP-adapter embeddings, guidance and its rescale, ``denoising_end``, callbacks, ``interrupt``, the progress bar,
decoding, loading, saving and offloading are the parent's. With a K option the pipeline's ``scheduler`` is read,
never changed.
"""

from __future__ import annotations

from typing import Any, Callable

from diffusers import StableDiffusionXLPipeline

from .common import KPipelineMixin, call_signature


class KSDXLPipeline(KPipelineMixin, StableDiffusionXLPipeline):
    """StableDiffusionXLPipeline whose scheduler runs a k-sampler (see ``__call__``'s extra arguments)."""

    def __call__(self, *args, sampler: str | Callable | None = None, sigma_schedule: str | None = None,
                 sampler_kwargs: dict[str, Any] | None = None, quantize_timesteps: bool | None = None,
                 check_finite: bool = False, noise: str = "diffusers", seed: int | list[int] | None = None,
                 noise_options: dict | None = None, **kwargs):
        r"""The parent's ``__call__`` (same arguments, same meaning, same loop) with a k-sampler as the scheduler
        when any of the extra arguments below is given (the K options). Without them the call is the parent's with
        the loaded scheduler (any class, a subclass, a patched ``step``: PNDM, TCD, ...), bit for bit, after the
        checks listed under "Refused" that apply to it.

        Extra arguments:
            sampler: a registry name (``"dpmpp_2m"``), an A1111 name (``"DPM++ 2M Karras"``, whose schedule suffix
                applies unless ``sigma_schedule`` is given) or a sampler function ``f(model, x, sigmas, ...)``.
                ``None`` with another K option: the k-sampler equivalent to the loaded scheduler (EulerDiscrete ->
                euler, ...; a scheduler without one is refused there); ``None`` with no K option: the loaded
                scheduler itself. A loaded KScheduler is a sampler already chosen: it runs as it is.
            sigma_schedule: a schedule name of :mod:`k_diffusing.schedules` over the UNet's sigma table. ``None``: the
                loaded scheduler's own sigmas (its spacing and Karras/exponential/beta flags).
            sampler_kwargs: the sampler's options (``eta``, ``s_noise``, ``order``, ...); unknown ones raise.
            quantize_timesteps: feed the UNet the nearest integer timestep (ComfyUI) instead of the continuous one
                (k-diffusion, A1111). ``None``: the seed mode's rule (quantized for "comfyui", else continuous).
            check_finite: after every model call, stop with a ``FloatingPointError`` naming the call and its sigma
                if the latents hold NaN/inf. Off by default: the check reads a tensor back to the host, one device
                sync per call on an accelerator.
            noise: the seed mode (:mod:`k_diffusing.seeding`). "diffusers" (default): ``generator`` draws the noise.
                "comfyui": ComfyUI's noise for ``seed`` (the batch's initial noise from one CPU seed, scaled by
                ``sqrt(1 + sigma_0^2)`` when the schedule starts at the UNet's top sigma; its per-step noise and
                Brownian trees; integer timesteps; dpm_2 / dpm_2_ancestral / uni_pc / uni_pc_bh2 schedules without
                their penultimate sigma). "a1111": AUTOMATIC1111's (image ``i`` from seed ``seed + i`` or
                ``seed[i]``, its own generators and Brownian tree; initial scale ``sigma_0``; dpm_2 / dpm_2_ancestral /
                dpmpp_3m_sde without the next-to-last sigma). In both, a base scheduler configured with Karras or
                exponential sigmas gets them over the UNet's whole sigma table, as those programs compute them.
            seed: the program modes' seed (an int; "a1111" also takes one per image). Refused with "diffusers".
            noise_options: "a1111": ``rng`` ("gpu" default, "cpu", "nv"), ``subseed`` (int or one per image) with
                ``subseed_strength`` in [0, 1] (A1111's variation seed), ``eta_noise_seed_delta`` (int, A1111's ENSD).
                "comfyui" takes none. Unknown options are refused.

        Refused before any model call, with a message naming the value and what is accepted: an unknown sampler or
        schedule name (closest valid one suggested), sampler options the sampler does not take, a nonzero ``eta``
        with a K option (a DDIM option in the parent: pass ``sampler_kwargs={"eta": ...}``) or, without one, with a
        loaded scheduler whose ``step`` takes no ``eta`` (the parent drops it), ``height`` / ``width`` that are not
        positive multiples of 8 (the parent refuses them too), ``num_inference_steps`` that is not an int >= 1
        (unless ``timesteps`` or ``sigmas`` are given), custom ``timesteps`` / ``sigmas`` that the loaded
        scheduler's ``set_timesteps`` does not take (without a K option), ``sigmas`` that are not a finite
        non-increasing 1-D sequence ending at or above 0, ``latents`` that are not a floating-point tensor of shape
        ``(batch * num_images_per_prompt, in_channels, height / 8, width / 8)`` (any float dtype: they are cast to
        the dtype the parent draws its noise in), a list of generators that is not one per image, an unknown
        ``noise`` mode or ``noise_options`` entry (or a bad value of one), ``seed`` with ``noise="diffusers"``, and
        ``generator``, ``latents`` or a missing ``seed`` with the program modes. Refused after
        the prompt is encoded, before the UNet runs (the parent sets its scheduler up there): a ``sigma_schedule``
        starting above the top of the UNet's sigma table (e.g. ``vp``; custom ``sigmas`` above it are fed the
        clamped timestep, as diffusers does), ``sigmas`` or ``timesteps`` together with a ``sigma_schedule``.

        Notes:
            ``num_inference_steps`` counts sampler steps (``n + 1`` sigmas); ``scheduler.timesteps`` lists every model
            call (a two-call sampler such as heun makes about ``2 n``, as diffusers' HeunDiscreteScheduler does),
            and the parent's loop, progress bar and ``callback_on_step_end`` go by those calls. ``latents`` is
            unit-variance noise: with the scheduler's own sigmas it is multiplied by the scheduler's
            ``init_noise_sigma`` in VE units exactly as the parent does (``sqrt(sigma_0^2 + 1)`` for VP schedulers
            such as DPMSolverMultistep); with any other schedule or custom ``sigmas``, by the first sigma
            (k-diffusion's convention). ``generator`` (one, or one per image) draws the initial noise and then the
            sampler's noise. The latents the loop holds (callbacks, ``denoising_end``, ``interrupt``) are VE-scaled
            (``x0 + sigma * eps``), the state at the sampler's next model call.
        """
        return self.k_call(args, kwargs, noise, seed, noise_options, sampler=sampler, sigma_schedule=sigma_schedule,
                           sampler_kwargs=sampler_kwargs, quantize_timesteps=quantize_timesteps,
                           check_finite=check_finite)

    __call__.__signature__ = call_signature(StableDiffusionXLPipeline.__call__, __call__)

    def latent_shape(self, images: int, height: int, width: int) -> tuple[tuple[int, ...], str]:
        return ((images, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor),
                "images, UNet in_channels, height / vae_scale_factor, width / vae_scale_factor")

    def noise_layout(self, images: int, height: int, width: int) -> tuple[tuple[int, ...], None]:
        """The seed modes' initial noise shape (the latents' own, as ComfyUI's and A1111's empty latents)."""
        return (images, self.unet.config.in_channels, height // self.vae_scale_factor,
                width // self.vae_scale_factor), None

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator,
                        latents=None):
        """The parent's, with user ``latents`` of any float dtype cast to ``dtype`` (the parent's noise dtype) as
        FluxPipeline's ``prepare_latents`` does; the parent's own keeps their dtype, which the UNet then refuses."""
        if latents is not None:
            latents = latents.to(dtype=dtype)
        return super().prepare_latents(batch_size, num_channels_latents, height, width, dtype, device, generator,
                                       latents)
