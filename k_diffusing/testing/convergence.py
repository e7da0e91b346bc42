"""Measuring samplers on analytic denoisers: empirical convergence order and sample moments.

Used by the tests, the catalogue report and the benchmarks, so every number they quote comes from one place.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..geometry import Geometry
from .analytic import GaussianMixtureDenoiser

# The VE noise range of the order tests: wide enough to cover SDXL's (0.03 .. 14.6), away from 0 so that the first
# order step into sigma = 0 does not hide the solver's order (DESIGN.md, "Convergence order").
ORDER_SIGMA_VE_MAX = 20.0
ORDER_SIGMA_VE_MIN = 0.05


def log_uniform_sigmas(geometry: Geometry, n: int, sigma_ve_max: float = ORDER_SIGMA_VE_MAX,
                       sigma_ve_min: float = ORDER_SIGMA_VE_MIN) -> torch.Tensor:
    """``n + 1`` float64 sigmas of ``geometry``, uniform in log VE sigma from ``sigma_ve_max`` to ``sigma_ve_min``
    (no terminal 0)."""
    ve = torch.linspace(math.log(sigma_ve_max), math.log(sigma_ve_min), n + 1, dtype=torch.float64).exp()
    return torch.tensor([geometry.from_ve(float(s)) for s in ve], dtype=torch.float64)


def initial_noise(denoiser: GaussianMixtureDenoiser, sigma: float, shape: Sequence[int],
                  generator: torch.Generator) -> torch.Tensor:
    """A float64 sample of ``N(alpha m, alpha^2 v + sigma^2)``, ``m, v`` the data mean and variance: the exact
    marginal at ``sigma`` for Gaussian data (at flow ``sigma = 1``, pure noise)."""
    a = denoiser.geometry.alpha(sigma)
    std = math.sqrt(a * a * denoiser.data_std**2 + sigma * sigma)
    return a * denoiser.data_mean + std * torch.randn(tuple(shape), generator=generator, dtype=torch.float64)


def max_error(sampler: Callable, denoiser: GaussianMixtureDenoiser, sigmas: torch.Tensor, x: torch.Tensor,
              exact: torch.Tensor, **kwargs) -> float:
    """Max |sampler - exact| over all elements, for one run over ``sigmas``."""
    out = sampler(denoiser, x, sigmas, disable=True, **kwargs)
    return (out.double() - exact).abs().max().item()


def fit_order(ns: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(n)``: the empirical order of convergence."""
    lx = [math.log(n) for n in ns]
    ly = [-math.log(e) for e in errors]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def empirical_order(sampler: Callable, denoiser: GaussianMixtureDenoiser, ns: Sequence[int] = (10, 20, 40, 80),
                    numel: int = 64, seed: int = 0, **kwargs) -> tuple[float, list[float]]:
    """Empirical order of a deterministic sampler on log-uniform sigmas, in float64; returns (order, errors).

    Every step count shares the end points, so the exact ODE solution is computed once."""
    g = torch.Generator().manual_seed(seed)
    ends = log_uniform_sigmas(denoiser.geometry, 1)
    x = initial_noise(denoiser, float(ends[0]), (1, numel), g)
    exact = denoiser.exact_flow(x, float(ends[0]), float(ends[-1]))
    errors = [max_error(sampler, denoiser, log_uniform_sigmas(denoiser.geometry, n), x, exact, **kwargs) for n in ns]
    return fit_order(ns, errors), errors


def sample_moments(sampler: Callable, denoiser: GaussianMixtureDenoiser, sigmas: torch.Tensor,
                   shape: Sequence[int] = (4, 5000), seed: int = 0, **kwargs) -> tuple[float, float]:
    """Mean and standard deviation of the final samples of one run from the marginal at ``sigmas[0]`` (float64);
    the sampler's own noise comes from a generator seeded with ``seed + 1``."""
    g = torch.Generator().manual_seed(seed)
    x = initial_noise(denoiser, float(sigmas[0]), shape, g)
    out = sampler(denoiser, x, sigmas, disable=True, generator=torch.Generator().manual_seed(seed + 1), **kwargs)
    out = out.double()
    return out.mean().item(), out.std().item()
