"""KFluxPipeline: diffusers' FluxPipeline with its denoising loop replaced by a k-sampler in flow geometry.

Everything but the loop is the parent's: T5 + CLIP prompt encoding, packed latents and image ids, the resolution-
dependent shift ``mu``, the FLUX-dev guidance embedding (None for schnell), true CFG with negative prompts, IP-adapter
embeddings, decoding. The loop becomes: wrap the transformer as a flow denoiser (:class:`~k_diffusing.denoisers.
FlowDenoiser`, ``D = x - sigma v``), choose sigmas (the scheduler's own, or a catalogue schedule over the model's
shifted flow table), call the sampler. Every sampler is correct here: the geometry is flow
(``x = (1 - sigma) x0 + sigma eps``) and the samplers derive their log-SNR, ancestral split and noise from it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

from ..denoisers import FlowDenoiser
from ..geometry import FLOW
from ..schedules import flow_sigma_table, get_sigmas
from .common import (SavesAsParent, check_latents, check_schedule_fits, check_sigmas, check_steps, pick_sampler,
                     run_sampler)
from .schedulers import flow_shift, scheduler_sigmas


class KFluxPipeline(SavesAsParent, FluxPipeline):
    """FluxPipeline whose denoising loop is a k-sampler (see ``__call__``'s extra arguments)."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        negative_prompt: str | list[str] = None,
        negative_prompt_2: str | list[str] | None = None,
        true_cfg_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.FloatTensor | None = None,
        prompt_embeds: torch.FloatTensor | None = None,
        pooled_prompt_embeds: torch.FloatTensor | None = None,
        ip_adapter_image=None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_ip_adapter_image=None,
        negative_ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_prompt_embeds: torch.FloatTensor | None = None,
        negative_pooled_prompt_embeds: torch.FloatTensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = 512,
        sampler: str | Callable | None = None,
        sigma_schedule: str | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        check_finite: bool = False,
    ):
        r"""The parent's ``__call__`` (same arguments, same meaning) with a k-sampler as the denoising loop.

        Extra arguments:
            sampler: a registry name, an A1111 name or a sampler function; ``None``: the k-sampler equivalent to the
                loaded scheduler (FlowMatchEuler -> euler, FlowMatchHeun -> heun, DPMSolverMultistep / UniPC in flow
                mode -> dpmpp_2m / uni_pc), so the default output is the parent's.
            sigma_schedule: a schedule of :mod:`k_diffusing.schedules` over the model's shifted flow sigma table
                (``simple`` equals the parent's default spacing; ``karras``, ``exponential``, ``beta``,
                ``kl_optimal`` ... as ComfyUI applies them to FLUX). ``None``: the scheduler's own (shifted) sigmas.
            sampler_kwargs: the sampler's options; unknown ones raise.
            check_finite: after every sampler step, stop with a ``FloatingPointError`` naming the step and its
                sigmas if the latents hold NaN/inf. Off by default: the check reads a tensor back to the host, one
                device sync per step on an accelerator.

        ``latents`` are packed unit noise used as the state at the first sigma (1 on every built-in schedule), as in
        the parent. ``generator`` draws the initial noise and then the sampler's per-step noise.
        ``callback_on_step_end`` is called once per sampler step; the progress bar counts model calls (two per call
        of the network pair when true CFG is on count as one).

        Refused before any model call (text encoders included), with a message naming the value and what is
        accepted: an unknown sampler or schedule name (closest valid one suggested), sampler options the sampler does
        not take, ``num_inference_steps`` that is not an int >= 1, ``sigmas`` that are not a finite non-increasing 1-D
        sequence ending at or above 0, any sigma above 1 after the shift (the flow geometry has none; e.g.
        ``sigma_schedule="vp"``, or ``align_your_steps``, which has no flow table), and ``latents`` that are not a
        floating-point tensor of the packed shape ``(batch * num_images_per_prompt, (height / 16) * (width / 16),
        in_channels)`` (16 = 2 x FLUX's vae_scale_factor; any float dtype, cast as the parent casts it).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        self.check_inputs(
            prompt, prompt_2, height, width, negative_prompt=negative_prompt, negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            max_sequence_length=max_sequence_length,
        )
        self._guidance_scale = guidance_scale
        self._joint_attention_kwargs = joint_attention_kwargs or {}
        self._current_timestep = None
        self._interrupt = False

        # 1. The sampler (before any model runs, so bad input fails fast).
        if sigmas is not None and sigma_schedule is not None:
            raise ValueError(f"`sigmas` and sigma_schedule={sigma_schedule!r} both choose the schedule; pass one")
        if sigmas is not None:
            check_sigmas(sigmas, FLOW)
        function, spec, schedule, sampler_kwargs = pick_sampler(self.scheduler, sampler, sigma_schedule,
                                                                sampler_kwargs)

        # 2. Sigmas: the parent's shifted ones, or a catalogue schedule over the shifted flow table. The shift ``mu``
        # depends on the packed sequence length, known from height and width (prepare_latents' rounding).
        num_inference_steps = check_steps(num_inference_steps)
        latent_height = 2 * (int(height) // (self.vae_scale_factor * 2))
        latent_width = 2 * (int(width) // (self.vae_scale_factor * 2))
        seq_len = (latent_height // 2) * (latent_width // 2)
        mu = calculate_shift(
            seq_len, self.scheduler.config.get("base_image_seq_len", 256),
            self.scheduler.config.get("max_image_seq_len", 4096), self.scheduler.config.get("base_shift", 0.5),
            self.scheduler.config.get("max_shift", 1.15),
        )
        known = None
        if sigmas is None and schedule is not None:
            table = flow_sigma_table(flow_shift(self.scheduler, mu), self.scheduler.config.num_train_timesteps)
            k_sigmas = get_sigmas(schedule, num_inference_steps, sigma_table=table)
            check_schedule_fits(k_sigmas, schedule, FLOW.sigma_max, "a flow model (x = (1 - sigma) x0 + sigma eps)")
        else:
            parent_sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps) if sigmas is None else sigmas
            takes_sigmas = "sigmas" in inspect.signature(self.scheduler.set_timesteps).parameters
            if self.scheduler.config.get("use_flow_sigmas", False) or (sigmas is None and not takes_sigmas):
                parent_sigmas = None  # flow-sigma DPM/UniPC, and FlowMatchHeun (which FluxPipeline cannot drive)
            own = scheduler_sigmas(self.scheduler, num_inference_steps, None, parent_sigmas, mu)
            k_sigmas, known = own.sigmas, own.known
        check_sigmas(k_sigmas, FLOW)
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        n_images = batch_size * num_images_per_prompt
        check_latents(latents, (n_images, seq_len, self.transformer.config.in_channels),
                      "images, packed 2x2 patches: (height / (2 vae_scale_factor)) * (width / (2 vae_scale_factor)), "
                      "transformer in_channels")

        # 3. Prompts (the parent's encode_prompt; a second set for true CFG).
        device = self._execution_device
        lora_scale = self._joint_attention_kwargs.get("scale", None)
        has_neg_prompt = negative_prompt is not None or (
            negative_prompt_embeds is not None and negative_pooled_prompt_embeds is not None
        )
        do_true_cfg = true_cfg_scale > 1 and has_neg_prompt
        prompt_embeds, pooled_prompt_embeds, text_ids = self.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            device=device, num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length,
            lora_scale=lora_scale,
        )
        if do_true_cfg:
            negative_prompt_embeds, negative_pooled_prompt_embeds, negative_text_ids = self.encode_prompt(
                prompt=negative_prompt, prompt_2=negative_prompt_2, prompt_embeds=negative_prompt_embeds,
                pooled_prompt_embeds=negative_pooled_prompt_embeds, device=device,
                num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length,
                lora_scale=lora_scale,
            )

        # 4. Packed latents and image ids (the parent's prepare_latents: unit noise, unscaled).
        latents, latent_image_ids = self.prepare_latents(
            n_images, self.transformer.config.in_channels // 4, height, width, prompt_embeds.dtype, device,
            generator, latents,
        )

        # 5. The bridge: the transformer (and its negative twin for true CFG) as a flow denoiser.
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32).expand(n_images)
        image_embeds = negative_image_embeds = None
        if (ip_adapter_image is not None or ip_adapter_image_embeds is not None) and (
            negative_ip_adapter_image is None and negative_ip_adapter_image_embeds is None
        ):
            negative_ip_adapter_image = [np.zeros((width, height, 3), dtype=np.uint8)] * (
                self.transformer.encoder_hid_proj.num_ip_adapters)
        elif (ip_adapter_image is None and ip_adapter_image_embeds is None) and (
            negative_ip_adapter_image is not None or negative_ip_adapter_image_embeds is not None
        ):
            ip_adapter_image = [np.zeros((width, height, 3), dtype=np.uint8)] * (
                self.transformer.encoder_hid_proj.num_ip_adapters)
        if ip_adapter_image is not None or ip_adapter_image_embeds is not None:
            image_embeds = self.prepare_ip_adapter_image_embeds(ip_adapter_image, ip_adapter_image_embeds, device,
                                                                n_images)
        if negative_ip_adapter_image is not None or negative_ip_adapter_image_embeds is not None:
            negative_image_embeds = self.prepare_ip_adapter_image_embeds(
                negative_ip_adapter_image, negative_ip_adapter_image_embeds, device, n_images)
        state = {"prompt_embeds": prompt_embeds}

        def velocity(x: torch.Tensor, t: torch.Tensor, embeds, pooled, ids, ip_embeds, cache: str) -> torch.Tensor:
            if ip_embeds is not None:
                self._joint_attention_kwargs["ip_adapter_image_embeds"] = ip_embeds
            with self.transformer.cache_context(cache):
                return self.transformer(
                    hidden_states=x, timestep=t / 1000, guidance=guidance, pooled_projections=pooled,
                    encoder_hidden_states=embeds, txt_ids=ids, img_ids=latent_image_ids,
                    joint_attention_kwargs=self._joint_attention_kwargs, return_dict=False,
                )[0]

        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self._current_timestep = t[0]
            v = velocity(x, t, state["prompt_embeds"], pooled_prompt_embeds, text_ids, image_embeds, "cond")
            if do_true_cfg:
                v_neg = velocity(x, t, negative_prompt_embeds, negative_pooled_prompt_embeds, negative_text_ids,
                                 negative_image_embeds, "uncond")
                v = v_neg + true_cfg_scale * (v - v_neg)
            return v

        bridge = FlowDenoiser(net, self.scheduler.config.num_train_timesteps, known, net_dtype=latents.dtype)

        # 6. Sample from the packed noise (the state at sigma_0, which is 1 on the built-in schedules).
        x, _ = run_sampler(self, function, spec, bridge, k_sigmas, latents.to(torch.float32), generator,
                           sampler_kwargs, state, callback_on_step_end, callback_on_step_end_tensor_inputs,
                           check_finite)
        self._current_timestep = None
        return self._decode(x.to(latents.dtype), height, width, output_type, return_dict)

    def _decode(self, latents: torch.Tensor, height: int, width: int, output_type: str, return_dict: bool):
        """The parent's decoding tail: unpack, undo the VAE scaling and shift, decode, post-process, free hooks."""
        if output_type == "latent":
            image = latents
        else:
            latents = self._unpack_latents(latents, height, width, self.vae_scale_factor)
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            image = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
            image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return FluxPipelineOutput(images=image)
