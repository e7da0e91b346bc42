"""Noise geometry: how a model's noisy sample relates to clean data, described once for every sampler.

A model lives in a geometry where its marginals are ``x = alpha(sigma) * x0 + sigma * eps`` (Kingma et al. 2021,
"Variational Diffusion Models", arXiv 2107.00630, Eq. 1; Lu et al. 2022, arXiv 2206.00927, Sec. 2). Two cases
matter here:

- variance exploding (VE), ``alpha = 1``: k-diffusion's convention (Karras et al. 2022, arXiv 2206.00364), also how
  discrete eps- and v-prediction models are run after their input scaling;
- flow matching / rectified flow, ``alpha = 1 - sigma`` with ``sigma`` in ``[0, 1]`` (Liu et al. 2022, arXiv
  2209.03003; Esser et al. 2024, arXiv 2403.03206): FLUX and SD3.

Dividing by ``alpha`` maps any such model to VE: ``x_ve = x / alpha`` has noise level ``sigma_ve = sigma / alpha``.
Everything a sampler needs beyond the plain probability-flow ODE is derived from that map:

- the half log-SNR ``lambda = log(alpha / sigma) = -log(sigma_ve)`` of the exponential integrators;
- the ancestral split (how far to step down deterministically and how much fresh noise to add), done in VE units
  and mapped back, so that ``eta = 1`` is the exact DDPM posterior step in every geometry;
- re-noising to a higher level (Karras churn, restart, LCM).

The probability-flow ODE itself needs no geometry: for ``x = alpha x0 + sigma eps`` with ``alpha`` affine in
``sigma`` (both cases above), ``dx/dsigma = (x - D(x, sigma)) / sigma`` (Karras et al. 2022, Eq. 3 with
``s = 1``; for flow, ``dx/dsigma = eps - x0 = (x - x0) / sigma``). Samplers that integrate that ODE in ``sigma``
(Euler, Heun, LMS, ...) are therefore correct unchanged in both geometries, and on flow models they coincide with
diffusers' FlowMatch schedulers.

All methods take and return Python floats: the sampler loops compute their coefficients on the host from CPU sigmas,
never from tensors that live with ``x``. Infinite values are legal where the geometry has them (flow ``sigma = 1``
has ``sigma_ve = inf`` and ``lambda = -inf``; ``sigma = 0`` has ``lambda = +inf``) and every method is written so
that these limits give finite, correct results instead of NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple


def safe_log(v: float) -> float:
    """``log(v)`` for ``v >= 0`` with ``log(0) = -inf`` and ``log(inf) = inf`` (``math.log(0)`` raises)."""
    return -math.inf if v == 0 else math.log(v)


def safe_exp(v: float) -> float:
    """``exp(v)`` that returns ``inf`` instead of raising on overflow."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


class AncestralStep(NamedTuple):
    """One ancestral step from ``sigma`` to ``sigma_next``, in model coordinates.

    Step deterministically to ``sigma_down``, then ``x_next = x_scale * x_down + sigma_up * z`` with ``z ~ N(0, I)``.
    In VE, ``x_scale = 1`` and this is k-diffusion's ``get_ancestral_step``.
    """

    sigma_down: float
    sigma_up: float
    x_scale: float


class Renoise(NamedTuple):
    """Raising the noise level: ``x_hat = x_scale * x + noise_std * z`` has the marginal at the higher sigma."""

    x_scale: float
    noise_std: float


class Geometry:
    """``x = alpha(sigma) x0 + sigma eps``; subclasses define ``alpha`` and the inverse of ``sigma -> sigma / alpha``."""

    name: str = "geometry"
    sigma_max: float = math.inf  # the largest sigma the geometry has (flow: 1)

    def alpha(self, sigma: float) -> float:
        raise NotImplementedError

    def from_ve(self, sigma_ve: float) -> float:
        """The sigma whose VE noise level ``sigma / alpha(sigma)`` is ``sigma_ve``."""
        raise NotImplementedError

    def to_ve(self, sigma: float) -> float:
        """VE noise level ``sigma / alpha(sigma)``; ``inf`` where ``alpha = 0``."""
        a = self.alpha(sigma)
        return math.inf if a == 0 else sigma / a

    def half_log_snr(self, sigma: float) -> float:
        """``lambda = log(alpha / sigma) = -log(sigma_ve)`` (Lu et al. 2022, arXiv 2206.00927, Sec. 3.1)."""
        return -safe_log(self.to_ve(sigma))

    def sigma_at(self, lam: float) -> float:
        """Inverse of :meth:`half_log_snr`."""
        return self.from_ve(safe_exp(-lam))

    def ancestral_step(self, sigma: float, sigma_next: float, eta: float = 1.0) -> AncestralStep:
        """Ancestral split in VE units, mapped back (Ho et al. 2020, arXiv 2006.11239, Eq. 7; k-diffusion's form).

        With ``s, s' = sigma_ve(sigma), sigma_ve(sigma_next)``: ``up = min(s', eta s' sqrt(1 - s'^2 / s^2))``,
        ``down = sqrt(s'^2 - up^2)``. ``eta = 1`` draws from the DDPM posterior q(x_next | x, x0 = D);
        ``eta = 0`` is the deterministic step.
        """
        if not eta:
            return AncestralStep(sigma_next, 0.0, 1.0)
        s, s_next = self.to_ve(sigma), self.to_ve(sigma_next)
        up_ve = min(s_next, eta * s_next * math.sqrt(max(0.0, 1.0 - (s_next / s) ** 2)))
        down_ve = math.sqrt(max(0.0, s_next**2 - up_ve**2))
        sigma_down = self.from_ve(down_ve)
        a_next = self.alpha(sigma_next)
        return AncestralStep(sigma_down, a_next * up_ve, a_next / self.alpha(sigma_down))

    def renoise(self, sigma: float, sigma_hat: float) -> Renoise:
        """Move a sample at ``sigma`` to the higher level ``sigma_hat``: VE variance ``s_hat^2 - s^2`` is added."""
        s, s_hat = self.to_ve(sigma), self.to_ve(sigma_hat)
        a_hat = self.alpha(sigma_hat)
        if s_hat == math.inf:  # flow sigma_hat = 1: pure noise, x forgotten
            return Renoise(0.0, 1.0)
        return Renoise(a_hat / self.alpha(sigma), a_hat * math.sqrt(max(0.0, s_hat**2 - s**2)))

    def churn(self, sigma: float, gamma: float) -> float:
        """Karras et al. 2022 Alg. 2 line 5, ``sigma_hat = (1 + gamma) sigma``, applied to the VE noise level."""
        return self.from_ve(self.to_ve(sigma) * (1.0 + gamma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VarianceExploding(Geometry):
    """``x = x0 + sigma eps`` (Song et al. 2021, arXiv 2011.13456; Karras et al. 2022): k-diffusion's convention."""

    name = "ve"
    sigma_max = math.inf

    def alpha(self, sigma: float) -> float:
        return 1.0

    def from_ve(self, sigma_ve: float) -> float:
        return sigma_ve


class FlowMatching(Geometry):
    """``x = (1 - sigma) x0 + sigma eps``, ``sigma`` in ``[0, 1]`` (rectified flow, Liu et al. 2022, arXiv 2209.03003)."""

    name = "flow"
    sigma_max = 1.0

    def alpha(self, sigma: float) -> float:
        return 1.0 - sigma

    def from_ve(self, sigma_ve: float) -> float:
        # sigma / (1 - sigma) = v  <=>  sigma = v / (1 + v)
        return 1.0 if sigma_ve == math.inf else sigma_ve / (1.0 + sigma_ve)


VE = VarianceExploding()
FLOW = FlowMatching()

GEOMETRIES = {g.name: g for g in (VE, FLOW)}


def geometry_of(model) -> Geometry:
    """The geometry a denoiser declares in its ``geometry`` attribute; plain callables are VE, as in k-diffusion."""
    geometry = getattr(model, "geometry", None)
    if geometry is None:
        return VE
    if isinstance(geometry, str):
        try:
            return GEOMETRIES[geometry]
        except KeyError:
            raise ValueError(
                f"unknown geometry {geometry!r} on {type(model).__name__}; accepted: {sorted(GEOMETRIES)} "
                "or a k_diffusing.geometry.Geometry instance"
            ) from None
    if not isinstance(geometry, Geometry):
        raise TypeError(f"model.geometry must be a Geometry or one of {sorted(GEOMETRIES)}, got {geometry!r}")
    return geometry
