"""Analytic denoisers: exact posterior means ``D(x, sigma) = E[x0 | x]`` for Gaussian and Gaussian-mixture data, in
any geometry, with the exact probability-flow ODE solution to test samplers against.

Data are i.i.d. per element. For ``x = alpha x0 + sigma eps`` and ``x0 ~ N(mu, s^2)``, ``x ~ N(alpha mu,
alpha^2 s^2 + sigma^2)`` and (Gaussian conditioning)

    D(x, sigma) = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x - alpha mu).

Along the probability-flow ODE the standardised value ``u = (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2)`` is
constant (in VE units this is DESIGN.md's ``x(sigma) = mu + (x0 - mu) sqrt((s^2 + sigma^2) / (s^2 + sigma0^2))``),
which gives the exact solution in closed form, including from flow ``sigma = 1``. For a mixture the posterior mean is
the responsibility-weighted sum of the components' means; its ODE has no closed form and is integrated by scipy's
DOP853 at tight tolerance (an oracle independent of the samplers under test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import VE, Geometry


def _broadcast_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)) if sigma.ndim else sigma


@dataclass
class GaussianMixtureDenoiser:
    """Exact denoiser for i.i.d. elements drawn from ``sum_k w_k N(mu_k, s_k^2)``, in ``geometry``.

    Called as a k-diffusion model: ``D(x, sigma_batch) -> denoised``; ``calls`` counts evaluations.
    """

    weights: tuple[float, ...] = (1.0,)
    means: tuple[float, ...] = (0.0,)
    stds: tuple[float, ...] = (1.0,)
    geometry: Geometry = VE

    def __post_init__(self):
        if not (len(self.weights) == len(self.means) == len(self.stds)):
            raise ValueError("weights, means and stds must have the same length")
        total = sum(self.weights)
        self.weights = tuple(w / total for w in self.weights)
        self.calls = 0

    # data statistics -------------------------------------------------------------------------------------------
    @property
    def data_mean(self) -> float:
        return sum(w * m for w, m in zip(self.weights, self.means))

    @property
    def data_std(self) -> float:
        second = sum(w * (s * s + m * m) for w, m, s in zip(self.weights, self.means, self.stds))
        return math.sqrt(second - self.data_mean**2)

    # the denoiser ------------------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma, **_) -> torch.Tensor:
        self.calls += 1
        sigma = _broadcast_sigma(sigma, x)
        alpha = self.geometry.alpha(sigma)
        alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        log_resp, means = [], []
        for w, m, s in zip(self.weights, self.means, self.stds):
            var = alpha * alpha * s * s + sigma * sigma
            resid = x - alpha * m
            log_resp.append(math.log(w) - 0.5 * torch.log(var) - 0.5 * resid * resid / var)
            means.append(m + alpha * s * s / var * resid)
        if len(means) == 1:
            return means[0].expand_as(x).clone()
        resp = torch.softmax(torch.stack(log_resp), dim=0)
        return (resp * torch.stack(means)).sum(0)

    # exact probability-flow ODE solution -----------------------------------------------------------------------
    def exact_flow(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """The exact probability-flow ODE solution from ``sigma_from`` to ``sigma_to`` (float64)."""
        geo = self.geometry
        if len(self.weights) == 1:
            (m,), (s,) = self.means, self.stds
            a0, a1 = geo.alpha(sigma_from), geo.alpha(sigma_to)
            u = (x.double() - a0 * m) / math.sqrt(a0 * a0 * s * s + sigma_from**2)
            return a1 * m + u * math.sqrt(a1 * a1 * s * s + sigma_to**2)
        return self._integrate_ve(x, sigma_from, sigma_to)

    def _integrate_ve(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Integrate ``d x_ve / d log(sigma_ve) = x_ve - D_ve`` with scipy DOP853 (rtol = atol = 1e-12)."""
        from scipy.integrate import solve_ivp

        geo = self.geometry
        s0, s1 = geo.to_ve(sigma_from), geo.to_ve(sigma_to)
        if not (math.isfinite(s0) and s1 > 0):
            raise ValueError("the mixture oracle needs finite start and positive end noise levels")
        ve = GaussianMixtureDenoiser(self.weights, self.means, self.stds, VE)
        y0 = (x.double() / geo.alpha(sigma_from)).flatten().numpy()

        def rhs(tau, y):
            yt = torch.from_numpy(y)
            return (yt - ve(yt, math.exp(tau))).numpy()

        sol = solve_ivp(rhs, (math.log(s0), math.log(s1)), y0, method="DOP853", rtol=1e-12, atol=1e-12)
        if not sol.success:
            raise RuntimeError(f"reference ODE solve failed: {sol.message}")
        return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(x.shape) * geo.alpha(sigma_to)


def gaussian(mean: float = 0.5, std: float = 1.5, geometry: Geometry = VE) -> GaussianMixtureDenoiser:
    """``x0 ~ N(mean, std^2)``: linear posterior mean, closed-form ODE solution."""
    return GaussianMixtureDenoiser((1.0,), (mean,), (std,), geometry)


def bimodal(geometry: Geometry = VE) -> GaussianMixtureDenoiser:
    """A two-component mixture with a strongly non-linear posterior mean, for convergence-order tests."""
    return GaussianMixtureDenoiser((0.3, 0.7), (-1.5, 1.0), (0.3, 0.5), geometry)
