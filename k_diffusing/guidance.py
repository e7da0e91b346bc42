"""Classifier-free guidance for the functional API: two denoisers combined into the guided one.

``CFGDenoiser(cond, uncond, guidance_scale)`` is a denoiser ``(x, sigma, **extra) -> D`` with
``D = D_u + g (D_c - D_u)`` (Ho & Salimans 2022, arXiv 2207.12598, Eq. 6, written for the denoised estimates: the
combination is the same for eps, v and x0 predictions, since each is affine in the others at a fixed ``x, sigma``).
It carries the geometry of its two denoisers and offers the unconditional estimate of the same call through
``denoise_with_uncond``, which the CFG++ samplers read (Chung et al. 2024, arXiv 2406.08070).
"""

from __future__ import annotations

import math

import torch

from .geometry import geometry_of


class CFGDenoiser:
    """``D = D_u + guidance_scale (D_c - D_u)`` from a conditional and an unconditional denoiser.

    Args:
        cond, uncond: denoisers ``(x, sigma, **extra_args) -> denoised`` in the same geometry (their ``geometry``
            attribute; plain callables are VE). Both see the same ``extra_args``. Passing the same object twice
            evaluates it once per call.
        guidance_scale: a finite float. 1 gives ``D_c``, 0 gives ``D_u``; CFG++ samplers use scales in about
            ``[0, 1]``, ordinary CFG values above 1.

    Both denoisers are evaluated at every call, whatever the scale: the CFG++ samplers need ``D_u`` even at scales
    where a pipeline would skip it.
    """

    def __init__(self, cond, uncond, guidance_scale: float):
        for name, model in (("cond", cond), ("uncond", uncond)):
            if not callable(model):
                raise TypeError(f"CFGDenoiser {name} must be a denoiser (x, sigma, **extra) -> denoised, got "
                                f"{type(model).__name__}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"guidance_scale must be a float, got {guidance_scale!r}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")
        geometry, uncond_geometry = geometry_of(cond), geometry_of(uncond)
        if geometry is not uncond_geometry:
            raise ValueError(f"cond and uncond denoisers must share a geometry, got {geometry.name} and "
                             f"{uncond_geometry.name}")
        self.cond, self.uncond = cond, uncond
        self.guidance_scale = float(guidance_scale)
        self.geometry = geometry

    def denoise_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D, D_u)`` at one call: the guided estimate and the unconditional one."""
        uncond = self.uncond(x, sigma, **extra)
        cond = uncond if self.cond is self.uncond else self.cond(x, sigma, **extra)
        return uncond + self.guidance_scale * (cond - uncond), uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        return self.denoise_with_uncond(x, sigma, **extra)[0]

    def __repr__(self) -> str:
        return f"CFGDenoiser(guidance_scale={self.guidance_scale:g}, geometry={self.geometry.name})"
