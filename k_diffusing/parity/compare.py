"""Compare two traces of one pair: per-step divergence, first step beyond tolerance, final and image differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..regression import psnr_from_mse
from .pairs import Pair, Tolerance
from .trace import Trace


@dataclass
class Comparison:
    """``step_diff[k]`` is max |ours - theirs| after step k (for a relative tolerance, divided by the largest |latent|
    of the diffusers trajectory: float32 rounding is largest there and carries over to later steps);
    ``first_divergent`` the first step whose difference exceeds the tolerance (None: none does)."""

    pair: Pair
    ours: Trace
    theirs: Trace
    step_diff: list[float]
    first_divergent: int | None
    final_max: float
    final_mean: float
    final_relative: float  # final_max / the largest |latent| on the trajectory
    mean_shift: float  # |mean(ours) - mean(theirs)| / std(theirs) of the final latents
    std_ratio: float  # std(ours) / std(theirs) of the final latents
    psnr: float  # dB between the decoded images in [0, 1]; inf when identical, NaN at the sampler level

    @property
    def schedules_match(self) -> bool:
        return len(self.ours.sigmas) == len(self.theirs.sigmas)

    @property
    def passed(self) -> bool:
        """Exact pairs: every step within tolerance. Distribution-only pairs: final mean and std within it."""
        if not self.schedules_match:
            return False
        if self.pair.exact:
            return self.first_divergent is None
        return self.mean_shift <= self.pair.tolerance.value and abs(self.std_ratio - 1) <= self.pair.tolerance.value

    @property
    def measured(self) -> float:
        """The number the tolerance bounds: the largest step difference (exact) or the larger statistic gap."""
        if self.pair.exact:
            return max(self.step_diff, default=math.inf)
        return max(self.mean_shift, abs(self.std_ratio - 1))


def step_difference(a: torch.Tensor, b: torch.Tensor, tolerance: Tolerance, scale: float) -> float:
    """max |a - b|, divided by ``scale`` (the largest |latent| on the trajectory) when the tolerance is relative."""
    diff = float((a - b).abs().max())
    return diff / scale if tolerance.relative else diff


def psnr(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: ``10 log10(1 / MSE)``; NaN without images."""
    if a is None or b is None:
        return math.nan
    return psnr_from_mse(float(((a.double() - b.double()) ** 2).mean()), peak=1.0)


def compare(pair: Pair, ours: Trace, theirs: Trace) -> Comparison:
    steps = min(len(ours.latents), len(theirs.latents))
    scale = max(max(float(x.abs().max()) for x in theirs.latents), 1e-30)
    diffs = [step_difference(ours.latents[k], theirs.latents[k], pair.tolerance, scale) for k in range(steps)]
    first = next((k for k, d in enumerate(diffs) if d > pair.tolerance.value), None) if pair.exact else None
    a, b = ours.latents[-1], theirs.latents[-1]
    delta = (a - b).abs()
    return Comparison(
        pair, ours, theirs, diffs, first,
        final_max=float(delta.max()), final_mean=float(delta.mean()),
        final_relative=float(delta.max()) / scale,
        mean_shift=abs(float(a.mean() - b.mean())) / float(b.std()), std_ratio=float(a.std() / b.std()),
        psnr=psnr(ours.images, theirs.images),
    )
