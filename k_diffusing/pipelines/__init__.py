"""diffusers pipelines whose denoising loop is a k-sampler (loaded on first use, so that
:mod:`k_diffusing.scheduler` can import the shared helpers here without loading every pipeline)."""

import importlib

_VARIANTS = ["KSDPipeline", "KSDXLImg2ImgPipeline", "KSDXLInpaintPipeline", "KSDXLControlNetPipeline", "KSD3Pipeline",
             "KFluxImg2ImgPipeline", "KFluxInpaintPipeline", "KFluxFillPipeline", "KFluxKontextPipeline"]
_MODULES = {"KFluxPipeline": "flux", "KSDXLPipeline": "sdxl", **{name: "variants" for name in _VARIANTS}}


def __getattr__(name):
    if name in _MODULES:
        return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULES)
