"""The bridge: a diffusers network wrapped as a k-diffusion denoiser ``D(x, sigma) -> x0 estimate``.

Discrete eps- and v-prediction models (SD, SDXL) are trained on a DDPM table ``abar_t``; in VE units
(``x = x0 + sigma eps``, ``sigma_t = sqrt((1 - abar_t) / abar_t)``) the network sees the VP-scaled input
``c_in x = x / sqrt(sigma^2 + 1)`` and the timestep ``t(sigma)`` (Karras et al. 2022, arXiv 2206.00364, Table 1, VP
column; k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser``):

- eps prediction: ``D = x - sigma eps(c_in x, t)``;
- v prediction (Salimans & Ho 2022, arXiv 2202.00512, Eq. 22 in VP form ``v = alpha eps - s x0``):
  ``D = c_skip x + c_out v`` with ``c_skip = 1 / (sigma^2 + 1)``, ``c_out = -sigma / sqrt(sigma^2 + 1)``;
- sample (x0) prediction (Shap-E, the Kandinsky priors, diffusers' ``prediction_type="sample"``): ``D`` is the
  network's output.

Schedulers that clip or threshold their predicted sample (DDIM, DDPM, DPM-Solver, ... with ``clip_sample`` or
``thresholding``) do it to ``D``: :func:`clip_x0`, :func:`threshold_x0`.

``t(sigma)`` interpolates linearly in log sigma between neighbouring table entries (continuous timesteps, as
k-diffusion and A1111), or takes the nearest integer timestep (``timesteps="quantized"``, as ComfyUI). ``known`` pairs
``(sigma_i, t_i)`` from a diffusers scheduler override both where the sigma matches exactly, so the network sees the
very timestep the scheduler would pass (needed for exact parity: diffusers interpolates some schedules linearly in
sigma, and rounds others to integer timesteps).

No host syncs: called with a sigma tensor alone (k-diffusion's contract), ``t`` is tensor arithmetic on the sigma batch
in float32 (about 20 small device ops); called by a sampler of this package, which also passes the sigma as a Python
float (the host-sigma protocol of :class:`~k_diffusing.samplers.base.SamplerRun`), ``t`` is computed on the host in
float64 by the same rule and filled in with one op (the float32 sigma it sees, the same ``known`` pairs; the two paths
agree to float32 rounding of ``t``, and exactly on ``known`` pairs).

The network call itself (classifier-free guidance, conditioning) is the caller's ``net(x_in, t) -> prediction``; the
denoiser casts the input to ``net_dtype`` and the prediction back to the sampler's dtype.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import numpy as np
import torch

from .geometry import FLOW, VE

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_MODES = ("continuous", "quantized")


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``sigma_t = sqrt((1 - abar_t) / abar_t)``, ascending in ``t`` (DDPM table in VE units)."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def log_sigma_to_t(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """Continuous timestep of each ``sigma``: linear interpolation in ``log sigma`` over the ascending table
    ``log_sigmas`` (index = timestep), clamped to the table's ends."""
    log_sigma = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
    high = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(log_sigmas) - 1)
    low = high - 1
    w = (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
    return low.to(sigma.dtype) + w


def paired_timesteps(sigma: torch.Tensor, t: torch.Tensor, known) -> torch.Tensor:
    """``t``, except where ``sigma`` equals one of the ``known = (sigmas, timesteps)`` pairs of a scheduler: there the
    paired timestep (the first match), so the network sees exactly what the scheduler would pass it."""
    if known is None:
        return t
    known_sigma, known_t = (k.to(sigma.device) for k in known)
    hit = sigma[:, None] == known_sigma[None, :]
    return torch.where(hit.any(1), known_t[hit.to(torch.uint8).argmax(1)], t)


def discrete_denoised(x: torch.Tensor, s: torch.Tensor, prediction: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """``D`` in VE units from a discrete network's prediction at ``x`` (``s``: sigma, broadcastable): eps gives
    ``x - s eps``; v gives ``c_skip x + c_out v`` with ``c_skip = 1 / (s^2 + 1)``, ``c_out = -s / sqrt(s^2 + 1)``;
    sample is ``D`` itself (x0 is the same in VE and VP units)."""
    if prediction_type == "epsilon":
        return x - s * prediction
    if prediction_type == "sample":
        return prediction
    return x / (s**2 + 1) - s / (s**2 + 1) ** 0.5 * prediction


def clip_x0(denoised: torch.Tensor, limit: float) -> torch.Tensor:
    """``D`` clamped to ``[-limit, limit]`` (diffusers' ``clip_sample`` with ``clip_sample_range``; Ho et al. 2020,
    arXiv 2006.11239, clip x0 to the data range [-1, 1])."""
    return denoised.clamp(-limit, limit)


def threshold_x0(denoised: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding, Saharia et al. 2022 (Imagen, arXiv 2205.11487, Sec. 2.3): per image, ``s`` = the
    ``ratio`` quantile of ``|D|`` clamped to ``[1, max_value]``; ``D`` clamped to ``[-s, s]`` and divided by ``s``.
    As diffusers' ``_threshold_sample``: the quantile over all but the batch axis, in float32 for half dtypes."""
    flat = denoised.reshape(denoised.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(denoised.shape).to(denoised.dtype)


def _as_known(known):
    return None if known is None else tuple(torch.as_tensor(k, dtype=torch.float32) for k in known)


def host_log_sigma_to_t(sigma: float, log_sigmas: list[float], quantize: bool) -> float:
    """:func:`log_sigma_to_t` (or, with ``quantize``, the nearest table index in log sigma, ties to the lower) for one
    host ``sigma``, in float64 over the ascending ``log_sigmas``."""
    if sigma <= 0:
        return 0.0
    log_sigma = min(max(math.log(sigma), log_sigmas[0]), log_sigmas[-1])
    high = min(max(bisect.bisect_left(log_sigmas, log_sigma), 1), len(log_sigmas) - 1)
    low = high - 1
    if quantize:
        return float(low if log_sigma - log_sigmas[low] <= log_sigmas[high] - log_sigma else high)
    return low + (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])


class BridgeDenoiser:
    """What both bridges share: ``sigma_to_t`` on a sigma tensor (subclasses), ``host_t`` on a host float, and the
    choice between them per call (see the module docstring)."""

    takes_host_sigma = True

    def __init__(self, known):
        self.known = _as_known(known)
        self._known_host: dict[float, float] = {}
        if self.known is not None:
            for s, t in zip(*(k.tolist() for k in self.known)):
                self._known_host.setdefault(s, t)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def host_t_unpaired(self, sigma: float) -> float:
        raise NotImplementedError

    def host_t(self, sigma: float) -> float:
        """The timestep the network sees at the host ``sigma`` (rounded to float32 first, as the sampler's sigma
        batch is)."""
        sigma = float(np.float32(sigma))
        t = self._known_host.get(sigma)
        return self.host_t_unpaired(sigma) if t is None else t

    def timesteps(self, sigma: torch.Tensor, sigma_host: float | None) -> torch.Tensor:
        """One float32 timestep per batch item: from ``sigma_host`` when the sampler passed it, else from ``sigma``."""
        if sigma_host is None:
            return self.sigma_to_t(sigma)
        return torch.full(sigma.shape, self.host_t(sigma_host), dtype=torch.float32, device=sigma.device)


class DiscreteDenoiser(BridgeDenoiser):
    """A discrete-time eps- or v-prediction network as a VE k-diffusion denoiser (see the module docstring).

    Args:
        net: ``net(x_in, t) -> prediction``; ``x_in`` is ``c_in x`` in ``net_dtype``, ``t`` one timestep per item.
        alphas_cumprod: the training table ``abar_t`` (a diffusers scheduler's ``alphas_cumprod``).
        prediction_type: "epsilon", "v_prediction" or "sample".
        timesteps: "continuous" (log-sigma interpolation) or "quantized" (nearest integer timestep).
        known: optional ``(sigmas, timesteps)`` a scheduler pairs exactly; they take precedence where they match.
        net_dtype: dtype of the network input (the sampler keeps float32 state).
    """

    geometry = VE

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", timesteps: str = "continuous", known=None,
                 net_dtype: torch.dtype = torch.float32):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not supported; accepted: {PREDICTION_TYPES}")
        if timesteps not in TIMESTEP_MODES:
            raise ValueError(f"timesteps {timesteps!r} is not a mode; accepted: {TIMESTEP_MODES}")
        super().__init__(known)
        self.net = net
        self.prediction_type = prediction_type
        self.quantize = timesteps == "quantized"
        self.sigmas = sigmas_from_alphas_cumprod(alphas_cumprod.to(torch.float32))
        self.log_sigmas = self.sigmas.log()
        self._log_sigmas_host = self.sigmas.to(torch.float64).log().tolist()
        self.net_dtype = net_dtype

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep the network sees at each ``sigma`` (float tensor)."""
        sigma = sigma.to(torch.float32)
        log_sigmas = self.log_sigmas.to(sigma.device)
        if self.quantize:
            t = (log_sigmas[None, :] - sigma.log()[:, None]).abs().argmin(1).to(torch.float32)
        else:
            t = log_sigma_to_t(sigma, log_sigmas)
        return paired_timesteps(sigma, t, self.known)

    def host_t_unpaired(self, sigma: float) -> float:
        return host_log_sigma_to_t(sigma, self._log_sigmas_host, self.quantize)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, sigma_host: float | None = None, **_) -> torch.Tensor:
        s = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)).to(x.dtype)
        x_in = x / (s**2 + 1) ** 0.5  # c_in x, written as diffusers' scale_model_input writes it
        prediction = self.net(x_in.to(self.net_dtype), self.timesteps(sigma, sigma_host)).to(x.dtype)
        return discrete_denoised(x, s, prediction, self.prediction_type)


class FlowDenoiser(BridgeDenoiser):
    """A rectified-flow velocity network (FLUX, SD3) as a flow-geometry denoiser: ``x = (1 - sigma) x0 + sigma eps``,
    the network predicts ``v = eps - x0``, so ``D = x - sigma v`` (Liu et al. 2022, arXiv 2209.03003; Esser et al.
    2024, arXiv 2403.03206, Sec. 2). The network gets ``x`` unscaled and the timestep ``t = sigma N``
    (``N = num_train_timesteps``) cast to ``net_dtype`` exactly as diffusers' FluxPipeline casts it (in bf16 this
    rounds ``t``: 988.41 becomes 988); ``known`` scheduler pairs take precedence as in :class:`DiscreteDenoiser`.

    Args:
        net: ``net(x, t) -> v`` with ``x`` in ``net_dtype`` and ``t`` (already in ``net_dtype``) one per item.
    """

    geometry = FLOW

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_train_timesteps: int = 1000,
                 known=None, net_dtype: torch.dtype = torch.float32):
        super().__init__(known)
        self.net = net
        self.num_train_timesteps = num_train_timesteps
        self.net_dtype = net_dtype

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(torch.float32)
        return paired_timesteps(sigma, sigma * self.num_train_timesteps, self.known)

    def host_t_unpaired(self, sigma: float) -> float:
        return float(np.float32(sigma) * np.float32(self.num_train_timesteps))  # the float32 product, as on the tensor

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, sigma_host: float | None = None, **_) -> torch.Tensor:
        s = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)).to(x.dtype)
        v = self.net(x.to(self.net_dtype), self.timesteps(sigma, sigma_host).to(self.net_dtype)).to(x.dtype)
        return x - s * v
