"""k-diffusing: functional k-diffusion-style samplers, correct on eps, v and flow-matching models, for diffusers'
SDXL and FLUX pipelines.

The sampler core (``k_diffusing.sampling``, ``k_diffusing.schedules``, the registry) imports only torch, torchsde
and scipy; the pipelines import diffusers when first used.
"""

from .geometry import FLOW, VE, FlowMatching, Geometry, VarianceExploding
from .guidance import CFGDenoiser
from .registry import SamplerSpec, get_sampler, list_samplers, resolve_sampler
from . import seeding
from .seeding import NOISE_MODES, SeedMode

__version__ = "0.1.0"

_PIPELINES = {"KFluxPipeline", "KSDXLPipeline", "KSDPipeline", "KSDXLImg2ImgPipeline", "KSDXLInpaintPipeline",
              "KSDXLControlNetPipeline", "KSD3Pipeline", "KFluxImg2ImgPipeline", "KFluxInpaintPipeline",
              "KFluxFillPipeline", "KFluxKontextPipeline"}


def __getattr__(name):
    """The pipelines and KScheduler import diffusers, so they load on first use: ``k_diffusing.KScheduler``,
    ``k_diffusing.KSDXLPipeline``, ``KFluxPipeline``, ``KSDXLImg2ImgPipeline``, ..."""
    if name in _PIPELINES:
        from . import pipelines

        return getattr(pipelines, name)
    if name == "KScheduler":
        from .scheduler import KScheduler

        return KScheduler
    raise AttributeError(f"module 'k_diffusing' has no attribute {name!r}")

__all__ = [
    "CFGDenoiser",
    "FLOW",
    *sorted(_PIPELINES),
    "KScheduler",
    "VE",
    "FlowMatching",
    "Geometry",
    "VarianceExploding",
    "SamplerSpec",
    "get_sampler",
    "list_samplers",
    "resolve_sampler",
    "NOISE_MODES",
    "SeedMode",
    "seeding",
]
