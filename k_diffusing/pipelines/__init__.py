"""diffusers pipelines whose denoising loop is a k-sampler."""

from .sdxl import KSDXLPipeline

__all__ = ["KSDXLPipeline"]
