"""K versions of the other common diffusers pipelines: each is the parent plus :class:`~k_diffusing.scheduler.
KScheduler`, with the extra call arguments of :class:`~k_diffusing.pipelines.sdxl.KSDXLPipeline` (``sampler``,
``sigma_schedule``, ``sampler_kwargs``, ``check_finite``, ``noise``, ``seed``, ``noise_options``, and
``quantize_timesteps`` for discrete models). A call that gives none of them is the parent's, with the loaded
scheduler itself; one that gives any runs a KScheduler. Sizes follow the parent's rule (``size_rule``). In the seed
modes these pipelines give the parent the generators that draw the program's initial noise (the NV source and
variation seeds need KSDXLPipeline or KFluxPipeline); for the FLUX variants the per-step noise is drawn in the packed
layout, so only KFluxPipeline reproduces a program's per-step noise on FLUX.

Every diffusers pipeline also runs a k-sampler with ``pipe.scheduler = KScheduler.from_config(pipe.scheduler.config,
sampler=...)``; these classes only give the names users look for and the per-call choice of sampler.
"""

from __future__ import annotations

from typing import Any, Callable

from diffusers import (
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxKontextPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
)

from .common import KPipelineMixin, SizeRule, call_signature


def k_call(parent: type) -> Callable:
    """A ``__call__`` for a K subclass of ``parent``: the parent's own, run with a KScheduler for the call."""

    def __call__(self, *args, sampler: str | Callable | None = None, sigma_schedule: str | None = None,
                 sampler_kwargs: dict[str, Any] | None = None, quantize_timesteps: bool | None = None,
                 check_finite: bool = False, noise: str = "diffusers", seed: int | list[int] | None = None,
                 noise_options: dict | None = None, **kwargs):
        return self.k_call(args, kwargs, noise, seed, noise_options, sampler=sampler, sigma_schedule=sigma_schedule,
                           sampler_kwargs=sampler_kwargs, quantize_timesteps=quantize_timesteps,
                           check_finite=check_finite)

    __call__.__doc__ = (f"``{parent.__name__}.__call__`` (same arguments, same loop) with a k-sampler as the "
                        "scheduler when an extra argument is given, else with the loaded scheduler as in the parent; "
                        "the extra arguments are KSDXLPipeline's (``quantize_timesteps``: discrete models only).")
    __call__.__signature__ = call_signature(parent.__call__, __call__)
    return __call__


class KSDPipeline(KPipelineMixin, StableDiffusionPipeline):
    """StableDiffusionPipeline (SD 1.x / 2.x) with a k-sampler."""

    __call__ = k_call(StableDiffusionPipeline)


class KSDXLImg2ImgPipeline(KPipelineMixin, StableDiffusionXLImg2ImgPipeline):
    """StableDiffusionXLImg2ImgPipeline (img2img, and the refiner) with a k-sampler."""

    __call__ = k_call(StableDiffusionXLImg2ImgPipeline)


class KSDXLInpaintPipeline(KPipelineMixin, StableDiffusionXLInpaintPipeline):
    """StableDiffusionXLInpaintPipeline with a k-sampler."""

    __call__ = k_call(StableDiffusionXLInpaintPipeline)


class KSDXLControlNetPipeline(KPipelineMixin, StableDiffusionXLControlNetPipeline):
    """StableDiffusionXLControlNetPipeline with a k-sampler."""

    __call__ = k_call(StableDiffusionXLControlNetPipeline)

    @property
    def size_rule(self) -> SizeRule:
        """The parent resizes the control image to ``height`` x ``width`` rounded down to a multiple of
        ``vae_scale_factor`` (``VaeImageProcessor.preprocess``) and renders that size."""
        return SizeRule(self.vae_scale_factor, rounds=True)


class KSD3Pipeline(KPipelineMixin, StableDiffusion3Pipeline):
    """StableDiffusion3Pipeline with a k-sampler in flow geometry."""

    __call__ = k_call(StableDiffusion3Pipeline)

    @property
    def size_rule(self) -> SizeRule:
        """The parent's ``check_inputs`` refuses sizes that are not multiples of ``vae_scale_factor * patch_size``."""
        return SizeRule(self.vae_scale_factor * self.patch_size, rounds=False)


class KFluxImg2ImgPipeline(KPipelineMixin, FluxImg2ImgPipeline):
    """FluxImg2ImgPipeline with a k-sampler in flow geometry."""

    __call__ = k_call(FluxImg2ImgPipeline)


class KFluxInpaintPipeline(KPipelineMixin, FluxInpaintPipeline):
    """FluxInpaintPipeline with a k-sampler in flow geometry."""

    __call__ = k_call(FluxInpaintPipeline)


class KFluxFillPipeline(KPipelineMixin, FluxFillPipeline):
    """FluxFillPipeline with a k-sampler in flow geometry."""

    __call__ = k_call(FluxFillPipeline)


class KFluxKontextPipeline(KPipelineMixin, FluxKontextPipeline):
    """FluxKontextPipeline with a k-sampler in flow geometry."""

    __call__ = k_call(FluxKontextPipeline)

    @property
    def size_rule(self) -> SizeRule:
        """The parent keeps only the aspect ratio of ``height`` x ``width``: it renders ``max_area`` pixels, each side
        rounded down to a multiple of ``2 vae_scale_factor``."""
        return SizeRule(1, rounds=True)


# Zoo case (k_diffusing.testing.zoo) -> K class, for the tests.
BY_ZOO_CASE = {"sd15": KSDPipeline, "sdxl_img2img": KSDXLImg2ImgPipeline, "sdxl_inpaint": KSDXLInpaintPipeline,
               "sdxl_controlnet": KSDXLControlNetPipeline, "sdxl_refiner": KSDXLImg2ImgPipeline, "sd3": KSD3Pipeline,
               "flux_img2img": KFluxImg2ImgPipeline, "flux_inpaint": KFluxInpaintPipeline,
               "flux_fill": KFluxFillPipeline, "flux_kontext": KFluxKontextPipeline}
