"""KSDXLPipeline: diffusers' StableDiffusionXLPipeline with its denoising loop replaced by a k-sampler.

Everything but the loop is the parent's: prompt encoding (both CLIPs, clip_skip, LoRA scale), micro-conditioning,
IP-adapter embeddings, guidance-scale embedding, decoding (VAE upcast, latents mean/std, watermark), loading, saving,
offloading. The loop becomes: wrap the UNet as a VE denoiser (:class:`~k_diffusing.denoisers.DiscreteDenoiser`,
classifier-free guidance batched in one UNet call, ``guidance_rescale``), choose sigmas, call the sampler.
The pipeline's ``scheduler`` is read, never changed: its schedule comes from a fresh copy.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor

from ..denoisers import DiscreteDenoiser, sigmas_from_alphas_cumprod
from ..schedules import get_sigmas
from ..geometry import VE
from .common import (SavesAsParent, check_latents, check_schedule_fits, check_sigmas, check_steps, pick_sampler,
                     run_sampler)
from .schedulers import brownian_noise_for, scheduler_sigmas


def _custom_sigmas(sigmas) -> torch.Tensor:
    """User sigmas as the sampler's schedule: float64, with a final 0 appended when missing (as diffusers' Euler
    does with custom sigmas)."""
    values = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    return values if values[-1] == 0 else torch.cat([values, values.new_zeros(1)])


class KSDXLPipeline(SavesAsParent, StableDiffusionXLPipeline):
    """StableDiffusionXLPipeline whose denoising loop is a k-sampler (see ``__call__``'s extra arguments)."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] = None,
        sigmas: list[float] = None,
        denoising_end: float | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image=None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        negative_original_size: tuple[int, int] | None = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        sampler: str | Callable | None = None,
        sigma_schedule: str | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        quantize_timesteps: bool = False,
        check_finite: bool = False,
        **kwargs,
    ):
        r"""The parent's ``__call__`` (same arguments, same meaning) with a k-sampler as the denoising loop.

        Extra arguments:
            sampler: a registry name (``"dpmpp_2m"``), an A1111 name (``"DPM++ 2M Karras"``, whose schedule suffix
                applies unless ``sigma_schedule`` is given) or a sampler function ``f(model, x, sigmas, ...)``.
                ``None``: the k-sampler equivalent to the loaded scheduler (EulerDiscrete -> euler, ...), so the
                default output is the parent's.
            sigma_schedule: a schedule name of :mod:`k_diffusing.schedules` over the UNet's sigma table. ``None``: the
                loaded scheduler's own sigmas (its spacing and Karras/exponential/beta flags).
            sampler_kwargs: the sampler's options (``eta``, ``s_noise``, ``order``, ...); unknown ones raise.
            quantize_timesteps: feed the UNet the nearest integer timestep (ComfyUI) instead of the continuous one
                (k-diffusion, A1111).
            check_finite: after every sampler step, stop with a ``FloatingPointError`` naming the step and its
                sigmas if the latents hold NaN/inf. Off by default: the check reads a tensor back to the host, one
                device sync per step on an accelerator.

        Refused before any model call, with a message naming the value and what is accepted: an unknown sampler or
        schedule name (closest valid one suggested), sampler options the sampler does not take,
        ``num_inference_steps`` that is not an int >= 1, ``sigmas`` that are not a finite non-increasing 1-D sequence
        ending at or above 0, a ``sigma_schedule`` starting above the top of the UNet's sigma table (e.g. ``vp``;
        custom ``sigmas`` above it are fed the clamped timestep, as diffusers does), and ``latents`` that are not a
        floating-point tensor of shape ``(batch * num_images_per_prompt, in_channels, height / 8, width / 8)`` (any
        float dtype; they are cast to float32 for the sampler).

        Notes:
            ``num_inference_steps`` counts sampler steps (``n + 1`` sigmas). ``latents`` is unit-variance noise: with
            the scheduler's own sigmas it is multiplied by the scheduler's ``init_noise_sigma`` exactly as the parent
            does (converted to VE units for VP schedulers such as DPMSolverMultistep); with any other schedule or
            custom ``sigmas``, by the first sigma (k-diffusion's convention). ``generator`` (one, or one per image)
            draws the initial noise and then the sampler's per-step noise. ``callback_on_step_end`` is called once
            per sampler step with the state after it; the progress bar counts model calls. ``eta`` belongs to DDIM-
            like schedulers in the parent and is ignored there for other schedulers; here a nonzero ``eta`` raises:
            pass ``sampler_kwargs={"eta": ...}``. Latents returned above sigma = 0 (``denoising_end``, a schedule that
            ends above 0) follow the parent: VE-scaled (``x0 + sigma * eps``) except with the scheduler's own
            sigmas of a VP scheduler (DDIM, DPM-Solver multistep, UniPC, DEIS), where they are divided by
            ``sqrt(sigma^2 + 1)`` as that scheduler returns them; after an ``interrupt`` they are VE-scaled.
        """
        callback = kwargs.pop("callback", None)
        callback_steps = kwargs.pop("callback_steps", None)
        if kwargs:
            raise TypeError(f"KSDXLPipeline.__call__ got unexpected keyword arguments {sorted(kwargs)}")
        if callback is not None or callback_steps is not None:
            raise ValueError("`callback` / `callback_steps` are deprecated in diffusers; use `callback_on_step_end`")
        if eta:
            raise ValueError(f"eta={eta} is a DDIM scheduler option; pass sampler_kwargs={{'eta': {eta}}} instead")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 0. Defaults and checks, as the parent.
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)
        self.check_inputs(
            prompt, prompt_2, height, width, None, negative_prompt, negative_prompt_2, prompt_embeds,
            negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, ip_adapter_image,
            ip_adapter_image_embeds, callback_on_step_end_tensor_inputs,
        )
        if timesteps is not None and sigmas is not None:
            raise ValueError("Only one of `timesteps` or `sigmas` can be passed")
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._denoising_end = denoising_end
        self._interrupt = False

        # 1. The sampler and its sigmas (before any model runs, so bad input fails fast).
        if sigmas is not None and sigma_schedule is not None:
            raise ValueError(f"`sigmas` and sigma_schedule={sigma_schedule!r} both choose the schedule; pass one")
        if sigmas is not None:
            check_sigmas(sigmas, VE)
        function, spec, schedule, sampler_kwargs = pick_sampler(self.scheduler, sampler, sigma_schedule,
                                                                sampler_kwargs)
        alphas_cumprod = self.scheduler.alphas_cumprod
        if timesteps is not None and schedule is not None:
            raise ValueError(f"`timesteps` and sigma_schedule={schedule!r} both choose the schedule; pass one")
        num_inference_steps = check_steps(num_inference_steps)
        own = None  # the scheduler's own schedule, when it is the one used
        if sigmas is None and schedule is not None:
            table = sigmas_from_alphas_cumprod(alphas_cumprod.double())
            k_sigmas, known = get_sigmas(schedule, num_inference_steps, sigma_table=table), None
            check_schedule_fits(k_sigmas, schedule, float(table[-1]), "the UNet's sigma table")
        elif sigmas is not None and sampler is not None:
            k_sigmas, known = _custom_sigmas(sigmas), None
        else:
            own = scheduler_sigmas(self.scheduler, num_inference_steps, timesteps, sigmas)
            k_sigmas, known = own.sigmas, own.known
        check_sigmas(k_sigmas, VE)
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        n_images = batch_size * num_images_per_prompt
        shape = (n_images, self.unet.config.in_channels, int(height) // self.vae_scale_factor,
                 int(width) // self.vae_scale_factor)
        check_latents(latents, shape, "images, UNet in_channels, height / vae_scale_factor, width / vae_scale_factor")
        if isinstance(generator, list) and len(generator) != n_images:
            raise ValueError(f"got {len(generator)} generators for a batch of {n_images} images; pass one per image")

        # 2. Prompt, micro-conditioning, IP-adapter: the parent's methods.
        device = self._execution_device
        lora_scale = cross_attention_kwargs.get("scale", None) if cross_attention_kwargs is not None else None
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
            self.encode_prompt(
                prompt=prompt, prompt_2=prompt_2, device=device, num_images_per_prompt=num_images_per_prompt,
                do_classifier_free_guidance=self.do_classifier_free_guidance, negative_prompt=negative_prompt,
                negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, lora_scale=lora_scale,
                clip_skip=self.clip_skip,
            )
        )
        add_text_embeds = pooled_prompt_embeds
        if self.text_encoder_2 is None:
            projection_dim = int(pooled_prompt_embeds.shape[-1])
        else:
            projection_dim = self.text_encoder_2.config.projection_dim
        add_time_ids = self._get_add_time_ids(original_size, crops_coords_top_left, target_size,
                                              dtype=prompt_embeds.dtype, text_encoder_projection_dim=projection_dim)
        if negative_original_size is not None and negative_target_size is not None:
            negative_add_time_ids = self._get_add_time_ids(
                negative_original_size, negative_crops_coords_top_left, negative_target_size,
                dtype=prompt_embeds.dtype, text_encoder_projection_dim=projection_dim,
            )
        else:
            negative_add_time_ids = add_time_ids
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
            add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds], dim=0)
            add_time_ids = torch.cat([negative_add_time_ids, add_time_ids], dim=0)
        state = {
            "prompt_embeds": prompt_embeds.to(device),
            "add_text_embeds": add_text_embeds.to(device),
            "add_time_ids": add_time_ids.to(device).repeat(n_images, 1),
        }
        image_embeds = None
        if ip_adapter_image is not None or ip_adapter_image_embeds is not None:
            image_embeds = self.prepare_ip_adapter_image_embeds(
                ip_adapter_image, ip_adapter_image_embeds, device, n_images, self.do_classifier_free_guidance
            )
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            scale = torch.tensor(self.guidance_scale - 1).repeat(n_images)
            timestep_cond = self.get_guidance_scale_embedding(
                scale, embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=prompt_embeds.dtype)

        # 3. The bridge: UNet with batched classifier-free guidance, as a VE denoiser; its input in prompt_embeds' dtype,
        # as the parent's latents (reading unet.dtype walks every module: 0.65 ms per call).
        def net(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cfg = self.do_classifier_free_guidance
            model_input = torch.cat([x_in] * 2) if cfg else x_in
            added_cond_kwargs = {"text_embeds": state["add_text_embeds"], "time_ids": state["add_time_ids"]}
            if image_embeds is not None:
                added_cond_kwargs["image_embeds"] = image_embeds
            prediction = self.unet(
                model_input, torch.cat([t] * 2) if cfg else t, encoder_hidden_states=state["prompt_embeds"],
                timestep_cond=timestep_cond, cross_attention_kwargs=self.cross_attention_kwargs,
                added_cond_kwargs=added_cond_kwargs, return_dict=False,
            )[0]
            if cfg:
                uncond, text = prediction.chunk(2)
                prediction = uncond + self.guidance_scale * (text - uncond)
                if self.guidance_rescale > 0.0:
                    prediction = rescale_noise_cfg(prediction, text, guidance_rescale=self.guidance_rescale)
            return prediction

        bridge = DiscreteDenoiser(
            net, alphas_cumprod, self.scheduler.config.prediction_type,
            "quantized" if quantize_timesteps else "continuous", known, net_dtype=prompt_embeds.dtype,
        )

        # 4. denoising_end: keep the steps whose timestep is at or above the cut-off, as the parent.
        if denoising_end is not None and isinstance(denoising_end, float) and 0 < denoising_end < 1:
            n_train = self.scheduler.config.num_train_timesteps
            cutoff = int(round(n_train - denoising_end * n_train))
            step_t = bridge.sigma_to_t(k_sigmas[:-1].to(torch.float32))
            k_sigmas = k_sigmas[: int((step_t >= cutoff).sum()) + 1]

        # 5. Initial latents: the parent's noise, scaled to the first sigma (see the docstring).
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        else:
            latents = latents.to(device)
        sigma_0 = float(k_sigmas[0])
        if own is not None:
            scale = own.init_noise_sigma * (math.sqrt(sigma_0**2 + 1) if own.vp_latents else 1.0)
        else:
            scale = sigma_0
        x = latents.to(torch.float32) * scale

        # 6. Sample.
        if sampler is None and own is not None and "noise_sampler" not in sampler_kwargs:
            own_noise = brownian_noise_for(self.scheduler, x, own.sigmas.to(torch.float32))
            if own_noise is not None:
                sampler_kwargs["noise_sampler"] = own_noise
        x, interrupted = run_sampler(self, function, spec, bridge, k_sigmas, x, generator, sampler_kwargs, state,
                                     callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        if own is not None and own.vp_latents and not interrupted:  # the parent's VP latents (identity at 0)
            x = x / math.sqrt(float(k_sigmas[-1]) ** 2 + 1)
        return self._decode(x.to(prompt_embeds.dtype), output_type, return_dict)

    def _decode(self, latents: torch.Tensor, output_type: str, return_dict: bool):
        """The parent's decoding tail (upcast a float16 VAE that needs it, undo the latent normalisation, decode,
        watermark, post-process, release hooks), written against the parent's public methods."""
        if output_type == "latent":
            image = latents
        else:
            needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
            if needs_upcasting:
                self.upcast_vae()
                latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
            else:
                latents = latents.to(self.vae.dtype)
            mean = getattr(self.vae.config, "latents_mean", None)
            std = getattr(self.vae.config, "latents_std", None)
            if mean is not None and std is not None:
                mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
                std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
                latents = latents * std / self.vae.config.scaling_factor + mean
            else:
                latents = latents / self.vae.config.scaling_factor
            image = self.vae.decode(latents, return_dict=False)[0]
            if needs_upcasting:
                self.vae.to(dtype=torch.float16)
            if self.watermark is not None:
                image = self.watermark.apply_watermark(image)
            image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return StableDiffusionXLPipelineOutput(images=image)
