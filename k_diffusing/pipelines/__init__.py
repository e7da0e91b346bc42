"""diffusers pipelines whose denoising loop is a k-sampler."""

from .flux import KFluxPipeline
from .sdxl import KSDXLPipeline

__all__ = ["KFluxPipeline", "KSDXLPipeline"]
