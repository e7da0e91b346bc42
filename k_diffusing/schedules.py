"""Sigma schedules: pure functions returning descending CPU float64 1-D tensors that end in 0.

Every schedule returns the noise levels a sampler walks through, ``sigma_0 > sigma_1 > ... > sigma_n = 0``: ``n``
steps, ``n + 1`` values (k-diffusion's, A1111's and ComfyUI's convention), computed in float64 on the CPU. Two kinds
of input exist:

- a sigma range ``(sigma_min, sigma_max)``: the formula is continuous in sigma;
- the model's sigma table: a 1-D ascending tensor of the model's discrete noise levels, index = training timestep
  ``t`` (SDXL: 1000 values 0.0292 .. 14.6146 from :func:`discrete_sigma_table`; FLUX / SD3: flow sigmas such as
  :func:`flow_sigma_table`). Where a schedule is defined on timesteps, ``t <-> sigma`` goes through the table with
  linear interpolation in ``log sigma`` between neighbouring entries (k-diffusion's ``DiscreteSchedule``; exact
  table entries at integer ``t``): :func:`timestep_to_sigma`, :func:`sigma_to_timestep`.

``get_sigmas(name, n, sigma_table=None, sigma_min=None, sigma_max=None, **options)`` is the one entry point; the range
schedules take their default range from the table's ends (``sigma_table[0]``, ``sigma_table[-1]``).

==================  ===========================  ==============  ===========  ============  =========================
name                function                     table           sigma range  values        source
==================  ===========================  ==============  ===========  ============  =========================
karras              get_sigmas_karras            for the range   required     n + 1         Karras 2022, Eq. 5
exponential         get_sigmas_exponential       for the range   required     n + 1         k-diffusion
polyexponential     get_sigmas_polyexponential   for the range   required     n + 1         k-diffusion
vp                  get_sigmas_vp                unused          not taken    n + 1         Karras 2022, Table 1
laplace             get_sigmas_laplace           for the range   required     <= n + 1 (a)  Hang 2024 / ComfyUI
kl_optimal          get_sigmas_kl_optimal        for the range   required     n + 1         Sabour 2024, Thm. 3.1
linear_quadratic    get_sigmas_linear_quadratic  for sigma_max   sigma_max    n + 1         Genmo Mochi 1
normal              get_sigmas_normal            required        optional     n + 1         k-diffusion / ComfyUI
sgm_uniform         get_sigmas_sgm_uniform       required        optional     n + 1         ComfyUI / diffusers
simple              get_sigmas_simple            required        not taken    n + 1         ComfyUI
ddim_uniform        get_sigmas_ddim_uniform      required        not taken    n + 1 (b)     Song 2020 / diffusers
beta                get_sigmas_beta              required        not taken    <= n + 1 (c)  Lee 2024
turbo               get_sigmas_turbo             required        not taken    n + 1, n<=10  Sauer 2023 / ComfyUI
align_your_steps    get_sigmas_align_your_steps  checked (d)     not taken    n + 1         Sabour 2024
gits                get_sigmas_gits              checked (d)     not taken    n + 1 (e)     Chen 2024 / ComfyUI
optimal_steps       get_sigmas_optimal_steps     checked (f)     not taken    n + 1 (e)     Pei 2025 / ComfyUI
ltxv                get_sigmas_ltxv              checked (f)     not taken    n + 1         Lightricks / ComfyUI
==================  ===========================  ==============  ===========  ============  =========================

(a) values repeated by the clamp to ``[sigma_min, sigma_max]`` are dropped (ComfyUI keeps them as zero-length
steps, and returns no final 0). (b) ComfyUI returns more than ``n + 1`` when ``n c < N - 1``, ``c = N // n``
(``comfyui=True`` reproduces it); by default always ``n + 1``, equal to diffusers' 'leading' spacing. (c) timesteps
that round to the same integer are dropped, as in ComfyUI. (d) published tables for VE models: the table, when
given, only guards against using them on a flow model. (e) ``n >= 2`` (gits) and ``n >= 3`` (optimal_steps), the
minimums of ComfyUI's nodes. (f) flow schedules: a VE table (largest sigma > 1) raises.
"sigma range: not taken" means passing ``sigma_min`` / ``sigma_max`` raises a ValueError rather than being ignored.

Flow models (``sigma`` in ``[0, 1]``, ``sigma_max = 1``). By default (``geometry=None``) the range formulas act on
the sigmas they are given, as k-diffusion and ComfyUI do: karras / exponential / polyexponential / kl_optimal are
finite and well defined with ``sigma_max = 1`` and start at 1. ``geometry="flow"`` (or ``k_diffusing.geometry.FLOW``)
instead applies the formula to the VE noise level ``sigma_ve = sigma / (1 - sigma)`` (the model's actual
noise-to-signal ratio, ``exp(-lambda)``) and maps each value back, so that e.g. Karras' ``rho``-spacing means the same
thing on SDXL and on FLUX. ``sigma = 1`` is ``sigma_ve = inf`` there: kl_optimal (``atan(inf) = pi/2``) and laplace
(clamp to ``[sigma_min_ve, inf]``) stay well defined and keep a schedule from ``sigma_max = 1``; karras, exponential
and polyexponential have no finite upper end and raise, asking for ``sigma_max < 1``. Laplace on flow shows why the
option exists: in flow units its clamp to ``sigma_max = 1`` swallows half of the steps (ComfyUI keeps them as
zero-length steps at 1), in VE units none. ``geometry="ve"`` is the identity (same as ``None``).

k-diffusion returns float32; these return float64. The drop-ins equal k-diffusion run with torch's default dtype set
to float64 to 1e-12 relative, and its ordinary float32 output to its float32 rounding: <= 1.5e-6 relative for karras
(rho = 7) on SDXL's range, up to 2e-5 for rho = 3 over 1e-3 .. 1e3 (karras and polyexponential amplify the rounding
of the base by rho), and 2e-4 for vp at ``t = eps_s``, where k-diffusion's float32 ``exp(.) - 1`` cancels (ours uses
``expm1``). ``device`` moves the float64 result (MPS has no float64: build on the CPU and cast). ``n < 1`` raises
(k-diffusion returns ``[0]`` for ``n = 0``), and so does a range with ``sigma_min <= 0`` or ``sigma_min >= sigma_max``.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Callable, NamedTuple

import numpy as np
import torch

from .geometry import GEOMETRIES, Geometry, VarianceExploding
from .names import did_you_mean, unknown_name

__all__ = [
    "SCHEDULES",
    "ScheduleSpec",
    "append_zero",
    "discrete_sigma_table",
    "flow_sigma_table",
    "get_sigmas",
    "get_sigmas_align_your_steps",
    "get_sigmas_beta",
    "get_sigmas_ddim_uniform",
    "get_sigmas_exponential",
    "get_sigmas_gits",
    "get_sigmas_karras",
    "get_sigmas_kl_optimal",
    "get_sigmas_laplace",
    "get_sigmas_linear_quadratic",
    "get_sigmas_ltxv",
    "get_sigmas_normal",
    "get_sigmas_optimal_steps",
    "get_sigmas_polyexponential",
    "get_sigmas_sgm_uniform",
    "get_sigmas_simple",
    "get_sigmas_turbo",
    "get_sigmas_vp",
    "list_schedules",
    "sigma_to_timestep",
    "timestep_to_sigma",
]

# Align Your Steps: the 10-step schedules published by the authors (Sabour et al. 2024, arXiv 2404.14507; NVIDIA's
# quick-start page research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), 11 noise levels each, and for the
# discrete models the same schedules as training-timestep indices. The page also lists DeepFloyd-IF stage 1 (not a
# model this package runs); no table has been published for flow models (FLUX, SD3).
AYS_SIGMAS = {
    "sd1": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
AYS_TIMESTEPS = {
    "sd1": (999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0),
    "sdxl": (999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0),
}
AYS_ALIASES = {"sd15": "sd1", "sd1.5": "sd1"}

# Optimal Stepsize (Pei et al. 2025, arXiv 2503.21774): the authors' searched flow-sigma schedules as contributed to
# ComfyUI's OptimalStepsScheduler (ComfyUI pull request 7584 by the first author: FLUX, 10 steps; Wan 2.1, 20 steps,
# for shift 8). Chroma (40 steps) was added to that node later; its origin is not documented there.
OPTIMAL_STEPS_SIGMAS = {
    "flux": (0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001),
    "wan": (1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946, 0.927,
            0.902, 0.864, 0.776, 0.539, 0.208, 0.001),
    "chroma": (0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917, 0.9, 0.881,
               0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451, 0.402, 0.355, 0.311, 0.27,
               0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058, 0.048, 0.001),
}
OPTIMAL_STEPS_MIN = 3  # ComfyUI's OptimalStepsScheduler takes steps >= 3
GITS_MIN_STEPS, GITS_MAX_TABLE_STEPS = 2, 20  # the published GITS tables cover 2 .. 20 steps
LTXV_TOKENS = (1024, 4096)  # LTXV's shift is base_shift at 1024 latent tokens and max_shift at 4096, linear between

LAPLACE_EPSILON = 1e-5  # keeps log(1 - 2|1/2 - x|) finite at x = 0 and x = 1 (ComfyUI's value)
TURBO_STEPS = 10  # the SDTurbo timesteps: 10 evenly spaced trailing timesteps (999, 899, ..., 99 on 1000)


# ---------------------------------------------------------------------------------------------------------------
# Shared checks and conversions
# ---------------------------------------------------------------------------------------------------------------


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a 0 appended (k-diffusion's helper; keeps ``x``'s dtype and device)."""
    return torch.cat([x, x.new_zeros([1])])


def _steps(n, minimum: int = 1) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"n (the number of steps) must be an integer, got {n!r}") from None
    if n < minimum:
        raise ValueError(f"n (the number of steps) must be >= {minimum}, got {n}")
    return n


def _range(sigma_min, sigma_max) -> tuple[float, float]:
    lo, hi = float(sigma_min), float(sigma_max)
    if not (0.0 < lo < hi) or math.isnan(hi):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={lo!r}, sigma_max={hi!r}")
    if math.isinf(hi):
        raise ValueError("sigma_max must be finite (for flow sigma = 1, pass sigma_max=1.0)")
    return lo, hi


def _positive(name: str, value) -> float:
    value = float(value)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _finish(values, device="cpu") -> torch.Tensor:
    """float64 tensor of the given descending values with the final 0 appended."""
    return append_zero(torch.from_numpy(np.array(values, dtype=np.float64))).to(device)  # a copy: no negative strides


def _pinned(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` with the first set to exactly ``hi`` and (if more than one) the last to exactly ``lo``: the formulas'
    ends are the bounds mathematically, and e.g. ``(hi^(1/rho))^rho`` misses them by rounding."""
    values[0] = hi
    if len(values) > 1:
        values[-1] = lo
    return values


def _drop_repeats(values: np.ndarray) -> np.ndarray:
    """The first of every run of equal consecutive values (a repeated sigma is a zero-length step)."""
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _geometry(geometry) -> Geometry | None:
    """The geometry whose VE units a formula runs in; ``None`` for the identity (no geometry, or VE)."""
    if isinstance(geometry, str) and geometry in GEOMETRIES:
        geometry = GEOMETRIES[geometry]
    if geometry is None or isinstance(geometry, VarianceExploding):
        return None
    if isinstance(geometry, Geometry):
        return geometry
    raise ValueError(
        f"unknown geometry {geometry!r}; accepted: None, {sorted(GEOMETRIES)} or a k_diffusing.geometry.Geometry"
    )


def _in_units(formula: Callable[[float, float], np.ndarray], sigma_min, sigma_max, geometry,
              infinite_max: bool = False) -> np.ndarray:
    """``formula(lo, hi)`` on the raw range (``geometry=None``) or on the VE range of ``geometry``, mapped back.

    ``infinite_max``: the formula accepts ``hi = inf`` (flow ``sigma_max = 1``).
    """
    lo, hi = _range(sigma_min, sigma_max)
    geo = _geometry(geometry)
    if geo is None:
        return formula(lo, hi)
    if hi > geo.sigma_max:
        raise ValueError(f"sigma_max={hi} exceeds the {geo.name} geometry's largest sigma {geo.sigma_max}")
    lo_ve, hi_ve = geo.to_ve(lo), geo.to_ve(hi)
    if math.isinf(hi_ve) and not infinite_max:
        raise ValueError(
            f"sigma_max={hi} is sigma_ve = inf in the {geo.name} geometry, where this formula has no finite upper "
            f"end: pass sigma_max < {geo.sigma_max} (e.g. the second-largest entry of the model's sigma table) or "
            "geometry=None to apply the formula to the sigmas themselves"
        )
    # the formulas stay within [lo_ve, hi_ve]: the clip only removes the round trip's last-bit error at the ends
    return np.clip([geo.from_ve(float(v)) for v in formula(lo_ve, hi_ve)], lo, hi)


# ---------------------------------------------------------------------------------------------------------------
# Model sigma tables and the timestep <-> sigma map
# ---------------------------------------------------------------------------------------------------------------


def discrete_sigma_table(betas) -> torch.Tensor:
    """The sigma table of a discrete DDPM model: ``sigma_t = sqrt((1 - alphabar_t) / alphabar_t)``, ascending in ``t``.

    Ho et al. 2020 (arXiv 2006.11239), Eq. 4: ``alphabar_t = prod_{s <= t} (1 - beta_s)``; VE noise level of the VP
    marginal ``x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) eps`` after dividing by ``sqrt(alphabar_t)``.
    SD / SDXL ("scaled_linear"): ``betas = linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2`` gives 0.0292 .. 14.6146.
    Computed in float64 (diffusers computes ``alphas_cumprod`` in float32: 1.3e-5 relative difference at ``t = 0``,
    where ``1 - alphabar`` cancels). Betas whose
    last ``alphabar`` is 0 (zero terminal SNR) give ``sigma = inf`` there; the schedules reject infinite tables, so
    clamp that ``alphabar`` first (diffusers uses 2**-24, ComfyUI 4.8973e-8).
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
    if betas.ndim != 1 or len(betas) < 2:
        raise ValueError(f"betas must be a 1-D sequence of at least 2 values, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas <= 1)).all()):
        raise ValueError("betas must lie in (0, 1]")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def _sd_sigma_table() -> torch.Tensor:
    """SD 1.x / SDXL's table: "scaled_linear" betas ``linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2``."""
    return discrete_sigma_table(torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2)


def flow_sigma_table(shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The sigma table of a flow model: ``sigma_t = a s / (1 + (a - 1) s)``, ``s = t / N``, ``t = 1 .. N``, ascending.

    Esser et al. 2024 (arXiv 2403.03206), the resolution-dependent timestep shift with ``a = shift``; diffusers'
    FlowMatchEulerDiscreteScheduler table and ComfyUI's ModelSamplingDiscreteFlow table, reversed to ascending order.
    FLUX's dynamic shift is ``a = exp(mu)`` (ComfyUI's FLUX table is the same formula with ``N = 10000``).
    """
    shift = _positive("shift", shift)
    size = _steps(num_train_timesteps, 2)
    s = torch.arange(1, size + 1, dtype=torch.float64) / size
    return shift * s / (1.0 + (shift - 1.0) * s)


def _table(sigma_table) -> np.ndarray:
    if sigma_table is None:
        raise ValueError("this schedule needs the model's sigma table (sigma_table=...)")
    table = np.asarray(torch.as_tensor(sigma_table).detach().cpu().to(torch.float64), dtype=np.float64)
    if table.ndim != 1 or len(table) < 2:
        raise ValueError(f"sigma_table must be a 1-D tensor of at least 2 sigmas, got shape {table.shape}")
    if not (np.isfinite(table).all() and (table > 0).all()):
        raise ValueError("sigma_table must hold positive finite sigmas (clamp a zero-terminal-SNR entry first)")
    if not (np.diff(table) > 0).all():
        hint = " (it is descending: pass it flipped, index = training timestep)" if (np.diff(table) < 0).all() else ""
        raise ValueError(f"sigma_table must be strictly ascending{hint}")
    return table


def _t_to_sigma(t, table: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(t, np.arange(len(table), dtype=np.float64), np.log(table)))


def _sigma_to_t(sigma, table: np.ndarray) -> np.ndarray:
    return np.interp(np.log(sigma), np.log(table), np.arange(len(table), dtype=np.float64))


def timestep_to_sigma(t, sigma_table) -> torch.Tensor:
    """Sigma at continuous timestep(s) ``t``: linear interpolation of ``log sigma`` between table entries.

    k-diffusion's ``DiscreteSchedule.t_to_sigma`` (in float64); exact table entries at integer ``t``; ``t`` outside
    ``[0, len - 1]`` is clamped.
    """
    return torch.as_tensor(_t_to_sigma(np.asarray(t, dtype=np.float64), _table(sigma_table)), dtype=torch.float64)


def sigma_to_timestep(sigma, sigma_table) -> torch.Tensor:
    """Continuous timestep(s) of ``sigma``: the inverse of :func:`timestep_to_sigma`, clamped to ``[0, len - 1]``.

    k-diffusion's ``DiscreteSchedule.sigma_to_t`` with ``quantize=False`` (ComfyUI rounds to the nearest integer).
    """
    return torch.as_tensor(_sigma_to_t(np.asarray(sigma, dtype=np.float64), _table(sigma_table)), dtype=torch.float64)


def _timestep_range(table: np.ndarray, sigma_min, sigma_max) -> tuple[float, float]:
    """``(t(sigma_max), t(sigma_min))``, the table's ends by default; bounds must lie within the table."""
    lo = table[0] if sigma_min is None else float(sigma_min)
    hi = table[-1] if sigma_max is None else float(sigma_max)
    tol = 1e-9
    if not (table[0] * (1 - tol) <= lo < hi <= table[-1] * (1 + tol)):
        raise ValueError(
            f"need sigma_table[0] <= sigma_min < sigma_max <= sigma_table[-1] = [{table[0]:.6g}, {table[-1]:.6g}], "
            f"got sigma_min={lo!r}, sigma_max={hi!r}"
        )
    return float(_sigma_to_t(hi, table)), float(_sigma_to_t(lo, table))


# ---------------------------------------------------------------------------------------------------------------
# k-diffusion drop-ins
# ---------------------------------------------------------------------------------------------------------------


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, device="cpu", *, geometry=None) -> torch.Tensor:
    """Karras schedule, Karras et al. 2022 (arXiv 2206.00364), Eq. 5.

    ``sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, ``i = 0 .. n - 1``,
    then 0: ``n + 1`` values from exactly ``sigma_max`` to exactly ``sigma_min`` (ends pinned; the formula alone misses
    them by rounding, by up to ~1e-11 relative for ``rho < 1``). ``rho = 7`` is the paper's choice;
    ``rho = 1`` is uniform in sigma, ``rho -> inf`` uniform in log sigma. k-diffusion's ``get_sigmas_karras`` in
    float64; ``geometry``: see the module docstring (needs ``sigma_max < 1`` on flow).
    """
    n = _steps(n)
    rho = _positive("rho", rho)

    def formula(lo, hi):
        ramp = np.linspace(0.0, 1.0, n)
        return _pinned((hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, lo, hi)

    return _finish(_in_units(formula, sigma_min, sigma_max, geometry), device)


def get_sigmas_exponential(n, sigma_min, sigma_max, device="cpu", *, geometry=None) -> torch.Tensor:
    """Exponential schedule: uniform in ``log sigma``, k-diffusion's ``get_sigmas_exponential``.

    ``sigma_i = exp(log sigma_max + i / (n - 1) (log sigma_min - log sigma_max))`` (ends pinned to the bounds), then
    0. In VE this is uniform in the half log-SNR ``lambda = -log sigma``, the step DPM-Solver uses (Lu et al. 2022,
    arXiv 2206.00927). ``geometry``: see the module docstring (needs ``sigma_max < 1`` on flow).
    """
    n = _steps(n)
    return _finish(_in_units(lambda lo, hi: _pinned(np.exp(np.linspace(math.log(hi), math.log(lo), n)), lo, hi),
                             sigma_min, sigma_max, geometry), device)


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1.0, device="cpu", *, geometry=None) -> torch.Tensor:
    """Polynomial in ``log sigma``, k-diffusion's ``get_sigmas_polyexponential``.

    ``sigma_i = exp(r_i^rho (log sigma_max - log sigma_min) + log sigma_min)``, ``r_i = 1 - i / (n - 1)`` (ends pinned
    to the bounds), then 0.
    ``rho = 1`` is the exponential schedule; larger ``rho`` spends more steps at low noise, and once
    ``r_i^rho log(sigma_max / sigma_min) < 1e-16`` the last sigmas round to ``sigma_min`` (repeated values, as in
    k-diffusion: e.g. ``rho = 12``, ``n = 22``). ``geometry``: see the module docstring (needs ``sigma_max < 1`` on
    flow).
    """
    n = _steps(n)
    rho = _positive("rho", rho)

    def formula(lo, hi):
        ramp = np.linspace(1.0, 0.0, n) ** rho
        return _pinned(np.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo)), lo, hi)

    return _finish(_in_units(formula, sigma_min, sigma_max, geometry), device)


def get_sigmas_vp(n, beta_d=19.9, beta_min=0.1, eps_s=1e-3, device="cpu") -> torch.Tensor:
    """Continuous VP schedule, Karras et al. 2022 (arXiv 2206.00364), Table 1 (VP column; Song et al. 2021, arXiv
    2011.13456, VP SDE).

    ``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)`` at ``t = linspace(1, eps_s, n)``, then 0 (computed with
    ``expm1``). Takes no sigma range: ``beta_d = 19.9, beta_min = 0.1, eps_s = 1e-3`` give 152.0 .. 0.0100.
    """
    n = _steps(n)
    beta_d, beta_min, eps_s = float(beta_d), float(beta_min), float(eps_s)
    if not (beta_d >= 0 and beta_min >= 0 and beta_d + beta_min > 0):
        raise ValueError(f"need beta_d >= 0, beta_min >= 0 and not both 0, got {beta_d}, {beta_min}")
    if not 0 < eps_s < 1:
        raise ValueError(f"eps_s must lie in (0, 1), got {eps_s}")
    t = np.linspace(1.0, eps_s, n)
    return _finish(np.sqrt(np.expm1(beta_d * t**2 / 2 + beta_min * t)), device)


# ---------------------------------------------------------------------------------------------------------------
# Other range schedules
# ---------------------------------------------------------------------------------------------------------------


def get_sigmas_laplace(n, sigma_min, sigma_max, mu=0.0, beta=0.5, device="cpu", *, geometry=None) -> torch.Tensor:
    """Laplace schedule, Hang et al. 2024 (arXiv 2407.03297), in ComfyUI's parametrisation (``get_sigmas_laplace``).

    ``log sigma_i`` is the quantile of a Laplace(``mu``, ``beta``) distribution at ``1 - x_i``, ``x_i = i / (n - 1)``:
    ``log sigma_i = mu - beta sgn(1/2 - x_i) log(1 - 2 |1/2 - x_i| + 1e-5)``, clamped to ``[sigma_min, sigma_max]``,
    so that the steps concentrate around ``sigma = exp(mu)`` (SNR 1 for ``mu = 0``). Repeats made by the clamp are
    dropped, then 0 is appended: ``n + 1`` values unless the clamp bites (ComfyUI keeps the repeats as zero-length
    steps and appends no 0). The clamp bites hardest on flow with ``geometry=None``: every ``x < 1/2`` clamps to
    ``sigma_max = 1``, half the steps; with ``geometry="flow"`` the clamp acts on VE sigmas and nothing is lost.
    """
    n = _steps(n)
    mu = float(mu)
    beta = _positive("beta", beta)
    if not math.isfinite(mu):
        raise ValueError(f"mu must be finite, got {mu}")

    def formula(lo, hi):
        x = np.linspace(0.0, 1.0, n)
        lam = mu - beta * np.sign(0.5 - x) * np.log(1.0 - 2.0 * np.abs(0.5 - x) + LAPLACE_EPSILON)
        return np.clip(np.exp(lam), lo, hi)

    return _finish(_drop_repeats(_in_units(formula, sigma_min, sigma_max, geometry, infinite_max=True)), device)


def get_sigmas_kl_optimal(n, sigma_min, sigma_max, device="cpu", *, geometry=None) -> torch.Tensor:
    """KL-optimal schedule, Sabour et al. 2024 (arXiv 2404.14507), Theorem 3.1 (proof in the appendix).

    ``sigma_i = tan((1 - u_i) atan(sigma_max) + u_i atan(sigma_min))``, ``u_i = i / (n - 1)``, then 0: uniform in
    ``atan sigma``. Ends pinned to exactly ``sigma_max`` and ``sigma_min``. With ``geometry="flow"`` the formula acts on
    ``sigma_ve`` and ``sigma_max = 1`` (``atan(inf) = pi/2``) is allowed: the schedule starts at exactly 1.
    ``n = 1`` gives ``[sigma_max, 0]`` (ComfyUI's ``i / (n - 1)`` is NaN there).
    """
    n = _steps(n)

    def formula(lo, hi):
        u = np.linspace(0.0, 1.0, n)
        return _pinned(np.tan((1.0 - u) * math.atan(hi) + u * math.atan(lo)), lo, hi)

    return _finish(_in_units(formula, sigma_min, sigma_max, geometry, infinite_max=True), device)


def get_sigmas_linear_quadratic(n, sigma_max, threshold_noise=0.025, linear_steps=None) -> torch.Tensor:
    """Linear-quadratic schedule of Genmo's Mochi 1 (genmoai/mochi, 2024), as ComfyUI's "linear_quadratic".

    In ``s = 1 - sigma / sigma_max``: ``s_i = i thr / L`` for ``i < L`` (linear up to ``thr = threshold_noise``), then
    the quadratic through ``(L, thr)`` with the same slope ``thr / L`` that reaches ``s_n = 1``:
    ``s_i = thr + (thr / L)(i - L) + a (i - L)^2``, ``a = (L - thr n) / (L (n - L)^2)``;
    ``sigma_i = sigma_max (1 - s_i)``, ``i = 0 .. n``, ending in exactly 0. ``L = linear_steps`` defaults to
    ``n // 2``; ``n = 1`` gives ``[sigma_max, 0]``. ``L`` must satisfy ``L >= thr n / (2 - thr)`` (else the quadratic
    turns back above 1). Made for flow models (``sigma_max = 1``).
    """
    n = _steps(n)
    sigma_max = _positive("sigma_max", sigma_max)
    thr = float(threshold_noise)
    if not 0 < thr < 1:
        raise ValueError(f"threshold_noise must lie in (0, 1), got {threshold_noise!r}")
    if n == 1:
        return _finish([sigma_max])
    lin = n // 2 if linear_steps is None else operator.index(linear_steps)
    if not 1 <= lin <= n - 1:
        raise ValueError(f"linear_steps must lie in [1, n - 1] = [1, {n - 1}], got {lin}")
    if lin * (2 - thr) < thr * n:
        raise ValueError(
            f"linear_steps={lin} is too small for n={n}, threshold_noise={thr}: the quadratic part would not be "
            f"monotone (need linear_steps >= {math.ceil(thr * n / (2 - thr))})"
        )
    i = np.arange(n, dtype=np.float64)
    quad = (lin - thr * n) / (lin * (n - lin) ** 2)
    s = np.where(i < lin, i * thr / lin, thr + (thr / lin) * (i - lin) + quad * (i - lin) ** 2)
    return _finish(sigma_max * (1.0 - s))


# ---------------------------------------------------------------------------------------------------------------
# Schedules on the model's sigma table
# ---------------------------------------------------------------------------------------------------------------


def get_sigmas_normal(n, sigma_table, sigma_min=None, sigma_max=None) -> torch.Tensor:
    """Uniform in the model's continuous timestep: k-diffusion's ``DiscreteSchedule.get_sigmas(n)``, ComfyUI "normal".

    ``t_i = linspace(t(sigma_max), t(sigma_min), n)``, ``sigma_i = sigma(t_i)`` by log-sigma interpolation of the
    table (:func:`timestep_to_sigma`), then 0. The range defaults to the whole table (``t = N - 1 .. 0``); on SDXL this
    is diffusers' 'linspace' spacing, which interpolates sigma linearly instead of log-linearly. ComfyUI takes
    ``t(sigma)`` rounded to an integer and evaluates flow models' sigma(t) in closed form (identical on the default
    range at integer t; ~interpolation error between entries).
    """
    n = _steps(n)
    table = _table(sigma_table)
    t_hi, t_lo = _timestep_range(table, sigma_min, sigma_max)
    return _finish(_t_to_sigma(np.linspace(t_hi, t_lo, n), table))


def get_sigmas_sgm_uniform(n, sigma_table, sigma_min=None, sigma_max=None) -> torch.Tensor:
    """Uniform timesteps without the lowest: ComfyUI "sgm_uniform" (Stability's sgm discretisation).

    ``t_i = linspace(t(sigma_max), t(sigma_min), n + 1)[:-1]``, ``sigma_i = sigma(t_i)``, then 0. Close to diffusers'
    'trailing' spacing (Lin et al. 2023, arXiv 2305.08891, Table 2): within 1.5 timesteps.
    """
    n = _steps(n)
    table = _table(sigma_table)
    t_hi, t_lo = _timestep_range(table, sigma_min, sigma_max)
    return _finish(_t_to_sigma(np.linspace(t_hi, t_lo, n + 1)[:-1], table))


def get_sigmas_simple(n, sigma_table) -> torch.Tensor:
    """Every ``N / n``-th table entry from the top: ComfyUI "simple".

    ``sigma_k = table[N - 1 - floor(k N / n)]``, ``k = 0 .. n - 1``, then 0 (``N = len(table)``, ``n <= N``; exact
    integer arithmetic, where ComfyUI's float ``k * (N / n)`` may land one entry off). Equals diffusers' 'trailing'
    spacing (Lin et al. 2023, arXiv 2305.08891, Table 2) when ``n`` divides ``N``, else within one entry.
    """
    table = _table(sigma_table)
    size = len(table)
    n = _steps(n)
    if n > size:
        raise ValueError(f"simple needs n <= len(sigma_table) = {size}, got n={n}")
    k = np.arange(n)
    return _finish(table[size - 1 - (k * size) // n])


def get_sigmas_ddim_uniform(n, sigma_table, comfyui=False) -> torch.Tensor:
    """DDIM's uniform timestep skipping, Song et al. 2020 (arXiv 2010.02502), Sec. 4.2: ComfyUI "ddim_uniform".

    ``sigma = table[1 + j c]`` for ``j = n - 1 .. 0``, ``c = N // n``, then 0: diffusers' 'leading' spacing with
    ``steps_offset = 1`` (SD / SDXL). ``n <= N - 1``. Always ``n`` steps.

    ``comfyui=True`` reproduces ComfyUI's count (comfy/samplers.py, ``ddim_scheduler``): it keeps stepping by ``c``
    up to the end of the table, ``sigma = table[1 + j c]`` for every ``1 + j c <= N - 1``, then 0, which is
    ``ceil((N - 1) / c)`` steps, more than ``n`` when ``n c < N - 1``; the extra steps are at the top (on SDXL's 1000
    entries: 31 steps for ``n = 30``, top index 991 where the default's is 958; 8 for 7, 13 for 12, 16 for 15; ``n``
    for 10, 20, 25). ComfyUI's special case of a table whose second entry is ~0 (``sigma_table[1] <= 1e-5``: one more
    step and no final 0) is refused rather than reproduced, since every schedule here ends in 0.
    """
    table = _table(sigma_table)
    size = len(table)
    n = _steps(n)
    if n > size - 1:
        raise ValueError(f"ddim_uniform needs n <= len(sigma_table) - 1 = {size - 1}, got n={n}")
    if not comfyui:
        return _finish(table[1 + np.arange(n - 1, -1, -1) * (size // n)])
    if table[1] <= 1e-5:
        raise ValueError("ddim_uniform with comfyui=True: ComfyUI's rule for sigma_table[1] <= 1e-5 (no final 0) is "
                         f"not supported, got sigma_table[1]={table[1]:.3g}")
    return _finish(table[np.arange(1, size, size // n)[::-1]])


def get_sigmas_beta(n, sigma_table, alpha=0.6, beta=0.6, space="timestep") -> torch.Tensor:
    """Beta schedule, Lee et al. 2024 (arXiv 2407.12173): steps at the quantiles of a Beta(alpha, beta) distribution.

    ``q_k = BetaInv(1 - k / n; alpha, beta)``, ``k = 0 .. n - 1`` (``alpha = beta = 0.6``: denser at both ends).
    ``space="timestep"`` (ComfyUI "beta"): ``t_k = rint(q_k (N - 1))``, sigma = ``table[t_k]``; timesteps that round
    alike are dropped (fewer than ``n`` steps possible), then 0. ``space="sigma"`` (diffusers ``use_beta_sigmas``):
    ``sigma_k = sigma_min + q'_k (sigma_max - sigma_min)`` with ``q'`` at ``1 - linspace(0, 1, n)`` (ends exactly at
    the table's ``sigma_min``), the table's ends as range; always ``n + 1`` values.
    """
    from scipy.stats import beta as beta_distribution  # scipy is a dependency; imported where needed

    n = _steps(n)
    table = _table(sigma_table)
    a, b = _positive("alpha", alpha), _positive("beta", beta)
    if space == "timestep":
        t = np.rint(beta_distribution.ppf(1.0 - np.arange(n) / n, a, b) * (len(table) - 1)).astype(np.int64)
        return _finish(table[_drop_repeats(t)])
    if space == "sigma":
        q = beta_distribution.ppf(1.0 - np.linspace(0.0, 1.0, n), a, b)
        return _finish(table[0] + q * (table[-1] - table[0]))
    raise ValueError(f"space must be 'timestep' (ComfyUI) or 'sigma' (diffusers), got {space!r}")


def get_sigmas_turbo(n, sigma_table, start=0) -> torch.Tensor:
    """SDXL-Turbo / SD-Turbo timesteps (Sauer et al. 2023, ADD, arXiv 2311.17042), as ComfyUI's "SDTurbo" scheduler.

    The 10 trailing timesteps ``t_k = (10 - k) (N // 10) - 1`` (999, 899, ..., 99 for ``N = 1000``), ``k = start ..
    start + n - 1``, sigma = ``table[t_k]``, then 0. ``n + start <= 10``; ComfyUI's ``denoise = d`` is
    ``start = 10 - int(10 d)``.
    """
    table = _table(sigma_table)
    n = _steps(n)
    start = operator.index(start)
    if len(table) < TURBO_STEPS:
        raise ValueError(f"turbo needs a table of at least {TURBO_STEPS} sigmas, got {len(table)}")
    if not (0 <= start and n + start <= TURBO_STEPS):
        raise ValueError(f"turbo needs 0 <= start and n + start <= {TURBO_STEPS}, got n={n}, start={start}")
    k = np.arange(start, start + n)
    return _finish(table[(TURBO_STEPS - k) * (len(table) // TURBO_STEPS) - 1])


def _loglinear(published, count: int) -> np.ndarray:
    """``count`` values log-linearly interpolated over the descending ``published`` values: ``log sigma`` linear in
    the position, ``linspace(0, 1, len)`` -> ``linspace(0, 1, count)`` (the AYS authors' ``loglinear_interp``, also
    used by ComfyUI's GITS and Optimal Steps nodes)."""
    published = np.asarray(published, dtype=np.float64)
    nodes = np.linspace(0.0, 1.0, len(published))
    return np.exp(np.interp(np.linspace(0.0, 1.0, count), nodes, np.log(published[::-1])))[::-1]


def _published(n, values) -> torch.Tensor:
    """A published ``len(values)``-point schedule for ``n`` steps: the values themselves when ``n + 1`` points are
    published, else their log-linear interpolation to ``n + 1`` points; the last value is replaced by 0."""
    values = np.asarray(values, dtype=np.float64)
    return _finish(values[:-1] if n + 1 == len(values) else _loglinear(values, n + 1)[:-1])


def _check_ve_table(name: str, sigma_table, hint: str) -> None:
    if sigma_table is not None and _table(sigma_table)[-1] <= 1.0:
        raise ValueError(f"{name} has no published table for flow models (sigma_table ends at <= 1); {hint}")


def _check_flow_table(name: str, sigma_table) -> None:
    if sigma_table is not None and _table(sigma_table)[-1] > 1.0:
        raise ValueError(f"{name} is a flow-model schedule (sigmas in [0, 1]); sigma_table ends at "
                         f"{_table(sigma_table)[-1]:.4g} > 1, a VE table")


def get_sigmas_align_your_steps(n, sigma_table=None, model="sdxl", source="sigmas") -> torch.Tensor:
    """Align Your Steps, Sabour et al. 2024 (arXiv 2404.14507): the published 10-step schedules, log-linearly
    interpolated.

    ``model``: "sd1" (SD 1.x / 2.x; aliases "sd15", "sd1.5"), "sdxl", "svd". ``n = 10`` returns the 11 published
    values with the last replaced by 0; otherwise ``log sigma`` is interpolated linearly over ``linspace(0, 1, 11)``
    at ``linspace(0, 1, n + 1)`` (the authors' ``loglinear_interp``) and the last value set to 0. No table is
    published for flow models: a flow ``sigma_table`` (all sigmas <= 1) raises.

    ``source``: which of the authors' two forms of the schedule (NVIDIA's quick-start page) to use.
    "sigmas" (default): the published noise levels (:data:`AYS_SIGMAS`, 3 decimals), as A1111 / Forge and diffusers'
    ``AysSchedules[...Sigmas]``. "timesteps": the published training-timestep indices (:data:`AYS_TIMESTEPS`; sd1
    and sdxl only) read off the model's table, ``sigma = sigma_table[t]`` (default: the SD / SDXL scaled-linear
    table), then interpolated the same way: ComfyUI's AlignYourStepsScheduler values (its SD1 / SDXL lists are
    these sigmas to 10 digits). The two forms are one schedule rounded two ways: each published timestep is within
    0.57 of the continuous timestep of the published noise level (SD 1.5's 0.399 is t = 124.56, published as 124),
    and the largest difference in sigma is 1.42 % (SDXL's ninth value, 0.113 against ``sigma(13) = 0.1114``, where
    sigma changes 4 % per timestep). The noise levels are the default because the samplers here take continuous
    sigmas, which the integer timesteps only approximate.
    """
    n = _steps(n)
    key = AYS_ALIASES.get(model, model)
    if key not in AYS_SIGMAS:
        raise ValueError(f"unknown Align Your Steps model {model!r}; published tables: {sorted(AYS_SIGMAS)} "
                         f"(aliases: {sorted(AYS_ALIASES)})")
    _check_ve_table("align_your_steps", sigma_table, "use e.g. kl_optimal or karras with geometry='flow'")
    if source == "sigmas":
        return _published(n, AYS_SIGMAS[key])
    if source != "timesteps":
        raise ValueError(f"source must be 'sigmas' (the published noise levels) or 'timesteps' (the published "
                         f"timestep indices, ComfyUI's values), got {source!r}")
    if key not in AYS_TIMESTEPS:
        raise ValueError(f"Align Your Steps publishes timestep indices only for {sorted(AYS_TIMESTEPS)}, not {key!r}")
    table = _table(_sd_sigma_table() if sigma_table is None else sigma_table)
    if len(table) != 1000:
        raise ValueError(f"source='timesteps' indexes a 1000-timestep table, got a sigma_table of {len(table)}")
    return _published(n, table[list(AYS_TIMESTEPS[key])])


def get_sigmas_gits(n, sigma_table=None, coeff=1.20) -> torch.Tensor:
    """GITS, Geometry-Inspired Time Scheduling, Chen et al. 2024 (arXiv 2405.11326): the authors' searched schedules
    for SD 1.5-like models, as ComfyUI's GITSScheduler.

    The authors' tables (:data:`GITS_STEPS`, contributed to ComfyUI as comfy_extras/nodes_gits.py in ComfyUI pull
    request 3769; repository zju-pi/diff-sampler, gits-main) give for each ``coeff`` in 0.80, 0.85, .., 1.50 and each
    ``n`` in 2 .. 20 the ``n + 1`` sigmas, all points of the 101-point grid uniform in SD 1.5's timestep the search
    ran on (``GITS_GRID_SIGMAS[j]`` is the published sigma at grid point ``j``, within 2.7e-5 of this package's
    ``sigma(999 (1 - j / 100))`` on SD's table). ``coeff`` (default 1.20, as ComfyUI) is the paper's coefficient
    trading the search's cost between large and small noise levels. ``n <= 20``: the table, last value replaced by 0;
    ``n > 20``: the 20-step table log-linearly interpolated to ``n + 1`` points (ComfyUI's rule), last set to 0.
    ``n >= 2`` (ComfyUI's minimum; the tables start at 2 steps). The values are SD 1.5's VE sigmas 14.6146 ..
    0.0292, also SDXL's range; a flow ``sigma_table`` raises. ComfyUI's ``denoise = d`` keeps the last
    ``round(n d) + 1`` values of this schedule.
    """
    n = _steps(n, GITS_MIN_STEPS)
    key = round(float(coeff) * 100)
    if key not in GITS_STEPS or abs(float(coeff) * 100 - key) > 1e-6:
        raise ValueError(f"coeff must be one of the published {', '.join(f'{c / 100:.2f}' for c in GITS_STEPS)}, "
                         f"got {coeff!r}")
    _check_ve_table("gits", sigma_table, "its tables are for SD 1.5-like VE models")
    rows = GITS_STEPS[key]
    row = rows[min(n, GITS_MAX_TABLE_STEPS) - GITS_MIN_STEPS]
    return _published(n, [GITS_GRID_SIGMAS[j] for j in row])


def get_sigmas_optimal_steps(n, sigma_table=None, model="flux") -> torch.Tensor:
    """Optimal Stepsize for Diffusion Sampling, Pei et al. 2025 (arXiv 2503.21774): the authors' searched flow
    schedules, as ComfyUI's OptimalStepsScheduler.

    ``model``: "flux" (10 steps, searched on FLUX.1-dev), "wan" (Wan 2.1, 20 steps, for its shift 8), "chroma"
    (40 steps), :data:`OPTIMAL_STEPS_SIGMAS`; ComfyUI's spellings "FLUX", "Wan", "Chroma" are accepted. When ``n``
    is the table's step count the published flow sigmas are returned with the last (0.001) replaced by 0; otherwise
    they are log-linearly interpolated to ``n + 1`` points (ComfyUI's rule, the AYS interpolation) and the last set
    to 0. ``n >= 3`` (ComfyUI's minimum). The schedule ignores the model's resolution shift (FLUX's starts at 0.9968
    whatever the image size), as in ComfyUI; a VE ``sigma_table`` (largest sigma > 1) raises. ComfyUI's ``denoise =
    d`` keeps the last ``round(n d) + 1`` values of this schedule.
    """
    n = _steps(n, OPTIMAL_STEPS_MIN)
    key = model.lower() if isinstance(model, str) else model
    if key not in OPTIMAL_STEPS_SIGMAS:
        raise ValueError(f"unknown Optimal Steps model {model!r}; published tables: {sorted(OPTIMAL_STEPS_SIGMAS)}")
    _check_flow_table("optimal_steps", sigma_table)
    return _published(n, OPTIMAL_STEPS_SIGMAS[key])


def get_sigmas_ltxv(n, sigma_table=None, tokens=4096, max_shift=2.05, base_shift=0.95, stretch=True,
                    terminal=0.1) -> torch.Tensor:
    """LTX-Video's flow schedule (Lightricks, HaCohen et al. 2024, arXiv 2501.00103), as ComfyUI's LTXVScheduler.

    ``u_k = 1 - k / n``, ``k = 0 .. n - 1``; the token-dependent shift
    ``s = base_shift + (max_shift - base_shift) (tokens - 1024) / (4096 - 1024)`` (linear in the number of latent
    tokens through ``(1024, base_shift)`` and ``(4096, max_shift)``); the time shift of FLUX / SD3 with ``mu = s``:
    ``sigma_k = e^s / (e^s + 1 / u_k - 1)``; then, with ``stretch`` (default), the affine map of ``1 - sigma`` that
    keeps ``sigma_0 = 1`` and moves the last nonzero sigma to ``terminal``:
    ``sigma_k <- 1 - (1 - sigma_k) (1 - terminal) / (1 - sigma_{n-1})`` (Lightricks' ``stretch_shift_to_terminal``,
    diffusers' ``shift_terminal``); then 0. Defaults are ComfyUI's: ``tokens = 4096`` (its value without a latent;
    with one, the product of the latent's dimensions after batch and channels, ``frames x height x width``),
    ``max_shift = 2.05``, ``base_shift = 0.95``, ``terminal = 0.1``. Computed in float64 (ComfyUI: float32, ~1e-7).
    ``n = 1`` gives ``[1, 0]`` (ComfyUI's stretch divides 0 by 0 there). ``terminal`` must lie in ``(0, 1)`` (ComfyUI
    allows 0, which repeats the final 0: a zero-length step). A VE ``sigma_table`` (largest sigma > 1) raises.
    """
    n = _steps(n)
    tokens = operator.index(tokens)
    if tokens < 1:
        raise ValueError(f"tokens must be a positive integer (latent frames x height x width), got {tokens}")
    max_shift, base_shift = float(max_shift), float(base_shift)
    if not (math.isfinite(max_shift) and math.isfinite(base_shift)):
        raise ValueError(f"max_shift and base_shift must be finite, got {max_shift!r}, {base_shift!r}")
    terminal = float(terminal)
    if stretch and not 0.0 < terminal < 1.0:
        raise ValueError(f"terminal must lie in (0, 1) (the last nonzero sigma after stretching), got {terminal!r}")
    _check_flow_table("ltxv", sigma_table)
    lo, hi = LTXV_TOKENS
    shift = base_shift + (max_shift - base_shift) * (tokens - lo) / (hi - lo)
    u = 1.0 - np.arange(n, dtype=np.float64) / n
    with np.errstate(over="ignore", invalid="ignore"):
        sigmas = 1.0 / (1.0 + np.exp(-shift) * (1.0 / u - 1.0))
    if not (np.isfinite(sigmas).all() and (np.diff(sigmas) < 0).all() and sigmas[-1] > 0):
        raise ValueError(f"tokens={tokens}, max_shift={max_shift}, base_shift={base_shift} give the shift {shift:.4g}, "
                         "where the shifted sigmas collapse (repeated or zero values in float64)")
    if stretch and n > 1:
        sigmas = 1.0 - (1.0 - sigmas) * (1.0 - terminal) / (1.0 - sigmas[-1])
    return _finish(sigmas)


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------


class ScheduleSpec(NamedTuple):
    """A registered schedule and what it takes.

    ``table``: "required" (needs ``sigma_table``), "range" (uses it only for the default sigma range),
    "checked" (only validated), "unused". ``bounds``: "range" (``sigma_min`` and ``sigma_max``), "sigma_max",
    "optional" (restricts the timestep range), "none" (passing them raises).
    """

    name: str
    function: Callable[..., torch.Tensor]
    table: str
    bounds: str
    reference: str

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options ``get_sigmas`` forwards (everything but the inputs)."""
        inputs = {"n", "sigma_table", "sigma_min", "sigma_max", "device"}
        return tuple(p for p in inspect.signature(self.function).parameters if p not in inputs)


_SPECS = [
    ScheduleSpec("karras", get_sigmas_karras, "range", "range", "Karras et al. 2022, arXiv 2206.00364, Eq. 5"),
    ScheduleSpec("exponential", get_sigmas_exponential, "range", "range", "k-diffusion; uniform in log sigma"),
    ScheduleSpec("polyexponential", get_sigmas_polyexponential, "range", "range", "k-diffusion"),
    ScheduleSpec("vp", get_sigmas_vp, "unused", "none", "Karras et al. 2022, arXiv 2206.00364, Table 1 (VP)"),
    ScheduleSpec("laplace", get_sigmas_laplace, "range", "range", "Hang et al. 2024, arXiv 2407.03297 (ComfyUI)"),
    ScheduleSpec("kl_optimal", get_sigmas_kl_optimal, "range", "range",
                 "Sabour et al. 2024, arXiv 2404.14507, Theorem 3.1"),
    ScheduleSpec("linear_quadratic", get_sigmas_linear_quadratic, "range", "sigma_max", "Genmo Mochi 1 (2024)"),
    ScheduleSpec("normal", get_sigmas_normal, "required", "optional", "k-diffusion DiscreteSchedule / ComfyUI"),
    ScheduleSpec("sgm_uniform", get_sigmas_sgm_uniform, "required", "optional", "ComfyUI; ~ diffusers 'trailing'"),
    ScheduleSpec("simple", get_sigmas_simple, "required", "none", "ComfyUI; diffusers 'trailing' when n | N"),
    ScheduleSpec("ddim_uniform", get_sigmas_ddim_uniform, "required", "none",
                 "Song et al. 2020, arXiv 2010.02502; diffusers 'leading'"),
    ScheduleSpec("beta", get_sigmas_beta, "required", "none", "Lee et al. 2024, arXiv 2407.12173"),
    ScheduleSpec("turbo", get_sigmas_turbo, "required", "none", "Sauer et al. 2023, arXiv 2311.17042 (ComfyUI)"),
    ScheduleSpec("align_your_steps", get_sigmas_align_your_steps, "checked", "none",
                 "Sabour et al. 2024, arXiv 2404.14507"),
    ScheduleSpec("gits", get_sigmas_gits, "checked", "none",
                 "Chen et al. 2024, arXiv 2405.11326 (ComfyUI GITSScheduler)"),
    ScheduleSpec("optimal_steps", get_sigmas_optimal_steps, "checked", "none",
                 "Pei et al. 2025, arXiv 2503.21774 (ComfyUI OptimalStepsScheduler)"),
    ScheduleSpec("ltxv", get_sigmas_ltxv, "checked", "none",
                 "Lightricks LTX-Video, arXiv 2501.00103 (ComfyUI LTXVScheduler)"),
]

SCHEDULES: dict[str, ScheduleSpec] = {s.name: s for s in _SPECS}


def list_schedules() -> list[ScheduleSpec]:
    """Every registered schedule, in catalogue order."""
    return list(_SPECS)


def get_sigmas(name: str, n: int, sigma_table=None, sigma_min=None, sigma_max=None, **options) -> torch.Tensor:
    """``n`` steps of the schedule ``name``: a descending CPU float64 tensor of ``n + 1`` sigmas ending in 0.

    ``laplace`` and ``beta`` may return fewer values (repeats dropped), ``ddim_uniform`` with ``comfyui=True`` more;
    see the module docstring's table for what each schedule takes. ``sigma_table`` is the model's ascending sigma
    table; range schedules default to its ends, and explicit ``sigma_min`` / ``sigma_max`` override them. ``options``
    are the schedule function's own keywords (``rho``, ``geometry``, ``alpha``, ``model``, ``coeff``, ``tokens`` ...).
    Raises ValueError on an unknown name (with the closest valid one), ``n < 1``, a missing table or range, a range
    passed to a schedule that takes none, or an unknown option.
    """
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    spec = SCHEDULES[name]
    n = _steps(n)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        hint = did_you_mean(unknown[0], spec.options)
        raise ValueError(f"schedule {name!r} got unknown option(s) {unknown}.{hint} Its options: {accepted}")
    if spec.table == "required" and sigma_table is None:
        raise ValueError(f"schedule {name!r} needs the model's sigma table (sigma_table=...)")
    given = [k for k, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)) if v is not None]
    if spec.bounds == "none" and given or spec.bounds == "sigma_max" and sigma_min is not None:
        raise ValueError(
            f"schedule {name!r} does not take {' / '.join(given)}: "
            + ("it is defined on the model's table" if spec.table == "required" else "its range is fixed")
            + ("" if spec.bounds == "none" else "; pass sigma_max only")
        )

    if spec.bounds in ("range", "sigma_max"):
        table = None if sigma_table is None else _table(sigma_table)
        wanted = ("sigma_min", "sigma_max") if spec.bounds == "range" else ("sigma_max",)
        bounds = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        for key in wanted:
            if bounds[key] is None:
                if table is None:
                    raise ValueError(
                        f"schedule {name!r} needs {' and '.join(wanted)}, or sigma_table to take them from"
                    )
                bounds[key] = float(table[0] if key == "sigma_min" else table[-1])
        return spec.function(n, *(bounds[k] for k in wanted), **options)
    if spec.bounds == "optional":
        return spec.function(n, sigma_table, sigma_min=sigma_min, sigma_max=sigma_max, **options)
    if spec.table in ("required", "checked"):
        return spec.function(n, sigma_table, **options)
    return spec.function(n, **options)


# ---------------------------------------------------------------------------------------------------------------
# Published tables
# ---------------------------------------------------------------------------------------------------------------

# GITS (Chen et al. 2024, arXiv 2405.11326): the authors' schedules for SD 1.5, as published in ComfyUI's
# comfy_extras/nodes_gits.py (ComfyUI pull request 3769, linked from zju-pi/diff-sampler). Every published sigma is a
# point of the search's 101-point grid, uniform in SD's timestep (t_j = 999 (1 - j / 100)): GITS_GRID_SIGMAS maps
# grid index j to its published value (8 decimals; 98 of the 101 points occur), GITS_STEPS[100 coeff][n - 2] lists
# the grid indices of the published n-step schedule, n = 2 .. 20.
GITS_GRID_SIGMAS = {
    0: 14.61464119, 1: 13.76078796, 2: 12.96784878, 3: 12.2308979, 4: 11.54541874, 5: 10.90732002, 6: 10.31284904,
    7: 9.75859547, 8: 9.24142551, 9: 8.75849152, 10: 8.30717278, 11: 7.88507891, 12: 7.49001646, 13: 7.11996698,
    14: 6.77309084, 15: 6.44769001, 16: 6.14220476, 17: 5.85520077, 18: 5.58536053, 20: 5.09240818, 21: 4.86714602,
    22: 4.65472794, 23: 4.45427561, 24: 4.26497746, 26: 3.91689563, 27: 3.75677586, 28: 3.60512662, 29: 3.46139455,
    30: 3.32507086, 31: 3.1956799, 32: 3.07277966, 33: 2.95596409, 34: 2.84484982, 36: 2.6383388, 37: 2.54230714,
    38: 2.45070267, 39: 2.36326075, 40: 2.27973175, 41: 2.19988537, 42: 2.12350607, 43: 2.05039096, 44: 1.98035145,
    45: 1.91321158, 46: 1.84880662, 47: 1.78698075, 48: 1.72759056, 49: 1.67050016, 50: 1.61558151, 51: 1.56271636,
    52: 1.51179266, 53: 1.46270394, 54: 1.41535246, 55: 1.36964464, 56: 1.32549286, 57: 1.28281462, 58: 1.24153244,
    59: 1.20157266, 60: 1.162866, 61: 1.12534678, 62: 1.08895338, 63: 1.05362725, 64: 1.01931262, 65: 0.98595673,
    66: 0.95350921, 67: 0.92192322, 68: 0.89115214, 69: 0.86115354, 70: 0.83188516, 71: 0.803307, 72: 0.77538133,
    73: 0.74807048, 74: 0.72133851, 75: 0.69515091, 76: 0.66947293, 77: 0.64427125, 78: 0.61951244, 79: 0.59516323,
    80: 0.57119018, 81: 0.54755926, 82: 0.52423614, 83: 0.50118381, 84: 0.4783645, 85: 0.45573691, 86: 0.43325692,
    87: 0.41087446, 88: 0.38853383, 89: 0.36617002, 90: 0.34370604, 91: 0.32104823, 92: 0.29807833, 93: 0.27464288,
    94: 0.25053367, 95: 0.22545385, 96: 0.19894916, 97: 0.17026083, 98: 0.13792117, 99: 0.09824532, 100: 0.02916753,
}
GITS_STEPS = {
    80: (
        (0, 12, 100),
        (0, 4, 14, 100),
        (0, 4, 12, 32, 100),
        (0, 4, 12, 17, 43, 100),
        (0, 3, 9, 12, 17, 43, 100),
        (0, 3, 9, 12, 17, 32, 51, 100),
        (0, 2, 4, 9, 12, 17, 32, 51, 100),
        (0, 1, 3, 5, 9, 12, 17, 32, 51, 100),
        (0, 1, 2, 3, 5, 9, 12, 17, 32, 51, 100),
        (0, 1, 2, 3, 5, 8, 10, 12, 17, 32, 51, 100),
        (0, 1, 2, 3, 5, 8, 10, 12, 16, 21, 32, 51, 100),
        (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 21, 32, 51, 100),
        (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 21, 32, 51, 100),
        (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 21, 32, 51, 100),
        (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 21, 31, 44, 69, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 21, 31, 44, 69, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 32, 46, 70, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17, 22, 32, 46, 70, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17, 21, 27, 34, 47, 71, 100),
    ),
    85: (
        (0, 12, 100),
        (0, 12, 46, 100),
        (0, 4, 14, 51, 100),
        (0, 4, 13, 32, 58, 100),
        (0, 4, 12, 20, 34, 66, 100),
        (0, 3, 9, 12, 20, 34, 66, 100),
        (0, 3, 9, 12, 18, 31, 46, 71, 100),
        (0, 2, 4, 9, 12, 18, 31, 46, 71, 100),
        (0, 2, 4, 9, 12, 16, 22, 32, 46, 71, 100),
        (0, 1, 3, 5, 9, 12, 16, 22, 32, 46, 71, 100),
        (0, 1, 3, 5, 8, 10, 12, 16, 22, 32, 46, 71, 100),
        (0, 1, 2, 3, 5, 8, 10, 12, 16, 22, 32, 46, 71, 100),
        (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 22, 32, 46, 71, 100),
        (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 21, 28, 36, 51, 74, 100),
        (0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 17, 22, 29, 38, 51, 74, 100),
        (0, 1, 2, 3, 4, 6, 8, 9, 10, 12, 14, 17, 22, 29, 38, 51, 74, 100),
        (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 17, 22, 29, 38, 51, 74, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 29, 38, 51, 74, 100),
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 17, 22, 29, 38, 51, 74, 100),
    ),
    90: (
        (0, 14, 100),
        (0, 12, 51, 100),
        (0, 12, 32, 66, 100),
        (0, 12, 21, 37, 68, 100),
        (0, 4, 12, 21, 37, 68, 100),
        (0, 4, 12, 20, 32, 50, 75, 100),
        (0, 3, 9, 13, 21, 32, 50, 75, 100),
        (0, 3, 9, 12, 17, 23, 33, 50, 75, 100),
        (0, 3, 9, 12, 17, 23, 31, 41, 58, 80, 100),
        (0, 2, 5, 9, 12, 17, 23, 31, 41, 58, 80, 100),
        (0, 2, 4, 8, 10, 12, 17, 23, 31, 41, 58, 80, 100),
        (0, 2, 4, 8, 10, 12, 16, 21, 27, 34, 46, 62, 82, 100),
        (0, 1, 3, 5, 8, 10, 12, 16, 21, 27, 34, 46, 62, 82, 100),
        (0, 1, 3, 5, 8, 10, 12, 15, 18, 23, 30, 38, 50, 66, 85, 100),
        (0, 1, 2, 3, 5, 8, 10, 12, 15, 18, 23, 30, 38, 50, 66, 85, 100),
        (0, 1, 2, 3, 5, 8, 10, 12, 14, 17, 21, 26, 32, 40, 51, 66, 85, 100),
        (0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 17, 21, 26, 32, 40, 51, 66, 85, 100),
        (0, 1, 2, 3, 4, 6, 8, 9, 10, 12, 14, 17, 21, 26, 32, 40, 51, 66, 85, 100),
        (0, 1, 2, 3, 4, 6, 8, 9, 10, 12, 14, 17, 20, 23, 28, 33, 41, 52, 68, 86, 100),
    ),
    95: (
        (0, 14, 100),
        (0, 14, 51, 100),
        (0, 12, 34, 68, 100),
        (0, 12, 21, 39, 71, 100),
        (0, 12, 21, 33, 51, 77, 100),
        (0, 4, 12, 21, 33, 51, 77, 100),
        (0, 4, 12, 21, 32, 45, 62, 83, 100),
        (0, 4, 12, 17, 23, 32, 45, 62, 83, 100),
        (0, 3, 9, 12, 17, 23, 32, 45, 62, 83, 100),
        (0, 3, 9, 12, 17, 23, 31, 41, 54, 71, 88, 100),
        (0, 3, 9, 12, 17, 22, 29, 36, 46, 58, 74, 90, 100),
        (0, 2, 5, 9, 12, 17, 22, 29, 36, 46, 58, 74, 90, 100),
        (0, 2, 5, 9, 12, 16, 21, 27, 33, 41, 51, 63, 77, 91, 100),
        (0, 2, 5, 9, 12, 15, 18, 22, 28, 33, 41, 51, 63, 77, 91, 100),
        (0, 2, 4, 8, 10, 12, 15, 18, 22, 28, 33, 41, 51, 63, 77, 91, 100),
        (0, 2, 4, 8, 10, 12, 15, 18, 22, 27, 32, 38, 47, 58, 70, 83, 95, 100),
        (0, 2, 4, 8, 10, 12, 14, 17, 20, 23, 28, 33, 39, 48, 58, 70, 83, 95, 100),
        (0, 1, 3, 5, 8, 10, 12, 14, 17, 20, 23, 28, 33, 39, 48, 58, 70, 83, 95, 100),
        (0, 1, 3, 5, 8, 10, 12, 14, 17, 20, 23, 27, 32, 38, 45, 53, 63, 74, 86, 96, 100),
    ),
    100: (
        (0, 51, 100),
        (0, 14, 66, 100),
        (0, 14, 39, 71, 100),
        (0, 13, 32, 51, 79, 100),
        (0, 12, 21, 34, 54, 80, 100),
        (0, 12, 21, 34, 50, 69, 88, 100),
        (0, 4, 12, 21, 34, 50, 69, 88, 100),
        (0, 4, 12, 21, 32, 44, 58, 74, 90, 100),
        (0, 4, 12, 17, 23, 32, 44, 58, 74, 90, 100),
        (0, 4, 12, 17, 23, 31, 40, 52, 66, 81, 94, 100),
        (0, 4, 12, 17, 23, 31, 39, 50, 62, 74, 87, 97, 100),
        (0, 4, 9, 12, 17, 23, 31, 39, 50, 62, 74, 87, 97, 100),
        (0, 4, 9, 12, 17, 22, 28, 34, 42, 51, 62, 74, 87, 97, 100),
        (0, 4, 9, 12, 17, 22, 28, 34, 41, 50, 60, 71, 83, 93, 99, 100),
        (0, 4, 9, 12, 17, 22, 27, 32, 38, 46, 55, 64, 74, 85, 94, 99, 100),
        (0, 4, 9, 12, 16, 20, 24, 29, 34, 41, 49, 58, 67, 77, 86, 94, 99, 100),
        (0, 4, 9, 12, 16, 20, 24, 28, 33, 38, 45, 52, 61, 70, 79, 88, 95, 99, 100),
        (0, 3, 8, 10, 12, 16, 20, 24, 28, 33, 38, 45, 52, 61, 70, 79, 88, 95, 99, 100),
        (0, 3, 8, 10, 12, 14, 17, 20, 24, 28, 33, 38, 45, 52, 61, 70, 79, 88, 95, 99, 100),
    ),
    105: (
        (0, 66, 100),
        (0, 14, 68, 100),
        (0, 14, 43, 74, 100),
        (0, 14, 34, 57, 82, 100),
        (0, 14, 32, 50, 71, 90, 100),
        (0, 12, 21, 34, 51, 71, 90, 100),
        (0, 12, 21, 34, 50, 66, 82, 95, 100),
        (0, 12, 21, 32, 44, 58, 73, 87, 97, 100),
        (0, 12, 21, 31, 40, 52, 66, 79, 90, 98, 100),
        (0, 12, 20, 29, 38, 50, 62, 74, 85, 94, 99, 100),
        (0, 4, 12, 20, 29, 38, 50, 62, 74, 85, 94, 99, 100),
        (0, 4, 12, 17, 23, 31, 39, 50, 62, 74, 85, 94, 99, 100),
        (0, 4, 12, 17, 23, 31, 38, 48, 58, 69, 79, 88, 95, 99, 100),
        (0, 4, 12, 17, 22, 28, 34, 41, 50, 60, 70, 79, 88, 95, 99, 100),
        (0, 4, 12, 17, 22, 28, 34, 41, 49, 57, 66, 74, 82, 90, 96, 99, 100),
        (0, 4, 12, 17, 22, 28, 33, 39, 46, 54, 62, 70, 78, 85, 91, 96, 99, 100),
        (0, 4, 12, 17, 22, 28, 33, 38, 45, 52, 59, 66, 73, 80, 86, 92, 96, 99, 100),
        (0, 4, 10, 13, 17, 22, 28, 33, 38, 45, 52, 59, 66, 73, 80, 86, 92, 96, 99, 100),
        (0, 4, 10, 13, 17, 22, 28, 33, 38, 44, 50, 56, 62, 69, 75, 81, 87, 92, 96, 99, 100),
    ),
    110: (
        (0, 68, 100),
        (0, 39, 74, 100),
        (0, 17, 50, 80, 100),
        (0, 14, 38, 62, 85, 100),
        (0, 14, 33, 51, 71, 90, 100),
        (0, 14, 32, 50, 68, 84, 96, 100),
        (0, 14, 32, 46, 62, 77, 90, 98, 100),
        (0, 12, 21, 34, 50, 66, 81, 93, 99, 100),
        (0, 12, 21, 33, 45, 58, 71, 84, 94, 99, 100),
        (0, 12, 21, 32, 43, 54, 66, 77, 87, 95, 99, 100),
        (0, 12, 21, 31, 40, 50, 61, 71, 81, 89, 95, 99, 100),
        (0, 12, 21, 30, 38, 48, 58, 68, 77, 85, 91, 96, 99, 100),
        (0, 12, 20, 28, 34, 43, 52, 62, 71, 79, 86, 92, 96, 99, 100),
        (0, 12, 20, 28, 34, 42, 50, 58, 66, 74, 81, 87, 92, 96, 99, 100),
        (0, 12, 17, 23, 31, 38, 46, 54, 62, 70, 77, 83, 89, 94, 97, 99, 100),
        (0, 12, 17, 23, 31, 38, 45, 52, 59, 66, 73, 79, 85, 90, 94, 97, 99, 100),
        (0, 12, 17, 23, 29, 34, 41, 48, 55, 62, 69, 75, 81, 86, 90, 94, 97, 99, 100),
        (0, 4, 12, 17, 23, 29, 34, 41, 48, 55, 62, 69, 75, 81, 86, 90, 94, 97, 99, 100),
        (0, 4, 12, 17, 23, 29, 34, 41, 48, 55, 62, 68, 74, 79, 84, 88, 92, 95, 97, 99, 100),
    ),
    115: (
        (0, 70, 100),
        (0, 46, 79, 100),
        (0, 17, 51, 82, 100),
        (0, 17, 45, 70, 90, 100),
        (0, 17, 38, 58, 79, 94, 100),
        (0, 17, 34, 52, 71, 87, 97, 100),
        (0, 17, 34, 51, 68, 83, 94, 99, 100),
        (0, 14, 32, 46, 61, 74, 86, 95, 99, 100),
        (0, 14, 32, 45, 58, 71, 82, 90, 96, 99, 100),
        (0, 12, 21, 33, 45, 58, 71, 82, 90, 96, 99, 100),
        (0, 12, 21, 32, 43, 55, 66, 75, 84, 91, 96, 99, 100),
        (0, 12, 21, 32, 42, 52, 62, 71, 79, 86, 92, 96, 99, 100),
        (0, 12, 21, 32, 42, 52, 62, 71, 79, 85, 90, 94, 97, 99, 100),
        (0, 12, 21, 32, 41, 50, 58, 66, 73, 79, 85, 90, 94, 97, 99, 100),
        (0, 12, 21, 31, 38, 47, 56, 64, 71, 77, 83, 88, 92, 95, 97, 99, 100),
        (0, 12, 21, 31, 38, 47, 56, 64, 71, 77, 82, 87, 91, 94, 96, 98, 99, 100),
        (0, 12, 21, 31, 38, 46, 54, 61, 68, 74, 79, 84, 88, 91, 94, 96, 98, 99, 100),
        (0, 12, 21, 31, 38, 46, 54, 61, 68, 74, 79, 83, 87, 90, 93, 95, 97, 98, 99, 100),
        (0, 12, 21, 31, 38, 46, 54, 61, 68, 74, 79, 83, 87, 90, 92, 94, 96, 97, 98, 99, 100),
    ),
    120: (
        (0, 71, 100),
        (0, 51, 82, 100),
        (0, 39, 67, 89, 100),
        (0, 34, 58, 79, 94, 100),
        (0, 17, 43, 66, 85, 97, 100),
        (0, 17, 38, 58, 77, 92, 99, 100),
        (0, 17, 38, 55, 71, 85, 94, 99, 100),
        (0, 17, 34, 50, 66, 79, 89, 96, 99, 100),
        (0, 17, 34, 49, 62, 73, 83, 91, 96, 99, 100),
        (0, 17, 33, 46, 58, 70, 79, 87, 93, 97, 99, 100),
        (0, 17, 32, 44, 55, 66, 75, 83, 89, 94, 97, 99, 100),
        (0, 14, 29, 39, 51, 62, 71, 79, 85, 90, 94, 97, 99, 100),
        (0, 14, 29, 38, 50, 60, 69, 77, 83, 88, 92, 95, 97, 99, 100),
        (0, 12, 22, 32, 42, 52, 62, 70, 77, 83, 88, 92, 95, 97, 99, 100),
        (0, 12, 22, 32, 42, 52, 62, 70, 77, 83, 87, 91, 94, 96, 98, 99, 100),
        (0, 12, 22, 32, 42, 52, 62, 70, 77, 83, 87, 90, 93, 95, 97, 98, 99, 100),
        (0, 12, 22, 32, 41, 50, 59, 67, 74, 80, 85, 89, 92, 94, 96, 97, 98, 99, 100),
        (0, 12, 22, 32, 41, 50, 58, 66, 73, 79, 84, 88, 91, 93, 95, 96, 97, 98, 99, 100),
        (0, 12, 22, 32, 41, 50, 58, 66, 73, 79, 83, 87, 90, 92, 94, 95, 96, 97, 98, 99, 100),
    ),
    125: (
        (0, 74, 100),
        (0, 51, 83, 100),
        (0, 43, 71, 91, 100),
        (0, 39, 66, 86, 97, 100),
        (0, 34, 58, 79, 93, 99, 100),
        (0, 32, 52, 71, 86, 95, 99, 100),
        (0, 17, 39, 58, 74, 87, 95, 99, 100),
        (0, 17, 38, 55, 70, 82, 90, 96, 99, 100),
        (0, 17, 34, 50, 65, 77, 86, 93, 97, 99, 100),
        (0, 17, 34, 49, 62, 73, 82, 89, 94, 97, 99, 100),
        (0, 17, 34, 48, 60, 71, 79, 85, 90, 94, 97, 99, 100),
        (0, 17, 33, 46, 58, 69, 77, 84, 89, 93, 96, 98, 99, 100),
        (0, 17, 33, 46, 57, 67, 75, 82, 87, 91, 94, 96, 98, 99, 100),
        (0, 17, 33, 45, 56, 66, 74, 81, 86, 90, 93, 95, 97, 98, 99, 100),
        (0, 17, 33, 45, 56, 66, 74, 80, 85, 89, 92, 94, 96, 97, 98, 99, 100),
        (0, 17, 33, 45, 56, 66, 73, 79, 84, 88, 91, 93, 95, 96, 97, 98, 99, 100),
        (0, 17, 32, 43, 54, 63, 71, 78, 83, 87, 90, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 32, 43, 54, 63, 71, 77, 82, 86, 89, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 32, 43, 53, 62, 70, 76, 81, 85, 88, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
    130: (
        (0, 74, 100),
        (0, 58, 86, 100),
        (0, 51, 79, 95, 100),
        (0, 46, 71, 89, 98, 100),
        (0, 39, 64, 82, 94, 99, 100),
        (0, 34, 55, 73, 87, 95, 99, 100),
        (0, 32, 51, 68, 81, 90, 96, 99, 100),
        (0, 32, 50, 66, 78, 87, 93, 97, 99, 100),
        (0, 17, 38, 55, 70, 81, 89, 94, 97, 99, 100),
        (0, 17, 38, 54, 67, 77, 85, 90, 94, 97, 99, 100),
        (0, 17, 36, 51, 64, 74, 83, 89, 93, 96, 98, 99, 100),
        (0, 17, 34, 50, 63, 73, 81, 87, 91, 94, 96, 98, 99, 100),
        (0, 17, 34, 50, 62, 72, 80, 86, 90, 93, 95, 97, 98, 99, 100),
        (0, 17, 34, 50, 62, 71, 79, 85, 89, 92, 94, 96, 97, 98, 99, 100),
        (0, 17, 34, 50, 62, 71, 79, 84, 88, 91, 93, 95, 96, 97, 98, 99, 100),
        (0, 17, 34, 48, 60, 70, 77, 83, 87, 90, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 34, 48, 60, 70, 77, 82, 86, 89, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 34, 47, 58, 67, 74, 80, 85, 88, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 34, 47, 58, 67, 74, 80, 84, 87, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
    135: (
        (0, 75, 100),
        (0, 66, 90, 100),
        (0, 51, 80, 96, 100),
        (0, 50, 75, 92, 99, 100),
        (0, 46, 70, 86, 95, 99, 100),
        (0, 38, 60, 77, 89, 96, 99, 100),
        (0, 34, 55, 71, 83, 91, 96, 99, 100),
        (0, 34, 54, 70, 81, 89, 94, 97, 99, 100),
        (0, 34, 51, 66, 77, 85, 91, 95, 97, 99, 100),
        (0, 34, 51, 66, 77, 85, 90, 94, 96, 98, 99, 100),
        (0, 32, 50, 64, 74, 82, 88, 92, 95, 97, 98, 99, 100),
        (0, 32, 50, 64, 74, 82, 87, 91, 94, 96, 97, 98, 99, 100),
        (0, 32, 50, 63, 73, 81, 86, 90, 93, 95, 96, 97, 98, 99, 100),
        (0, 32, 48, 61, 71, 79, 85, 89, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 32, 48, 61, 71, 79, 84, 88, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 38, 52, 64, 73, 80, 85, 89, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 36, 50, 62, 71, 78, 83, 87, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 36, 50, 62, 71, 77, 82, 86, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 17, 36, 50, 62, 71, 77, 82, 85, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
    140: (
        (0, 79, 100),
        (0, 66, 90, 100),
        (0, 62, 86, 98, 100),
        (0, 51, 77, 93, 99, 100),
        (0, 50, 71, 86, 95, 99, 100),
        (0, 43, 66, 81, 90, 96, 99, 100),
        (0, 38, 58, 74, 86, 93, 97, 99, 100),
        (0, 38, 58, 73, 83, 90, 94, 97, 99, 100),
        (0, 38, 57, 71, 82, 89, 93, 96, 98, 99, 100),
        (0, 38, 57, 71, 81, 88, 92, 95, 97, 98, 99, 100),
        (0, 34, 54, 69, 79, 86, 91, 94, 96, 97, 98, 99, 100),
        (0, 34, 52, 66, 77, 85, 90, 93, 95, 96, 97, 98, 99, 100),
        (0, 34, 52, 66, 77, 84, 89, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 51, 65, 75, 82, 87, 90, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 51, 64, 74, 81, 86, 89, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 50, 63, 73, 80, 85, 88, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 50, 62, 71, 78, 83, 87, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 50, 62, 71, 78, 83, 86, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 50, 62, 71, 77, 82, 85, 87, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
    145: (
        (0, 79, 100),
        (0, 71, 94, 100),
        (0, 66, 90, 99, 100),
        (0, 58, 81, 94, 99, 100),
        (0, 51, 74, 89, 96, 99, 100),
        (0, 50, 71, 85, 93, 97, 99, 100),
        (0, 45, 66, 80, 89, 94, 97, 99, 100),
        (0, 41, 62, 77, 87, 93, 96, 98, 99, 100),
        (0, 38, 58, 73, 83, 90, 94, 96, 98, 99, 100),
        (0, 38, 58, 73, 83, 89, 93, 95, 97, 98, 99, 100),
        (0, 38, 57, 71, 81, 87, 91, 94, 96, 97, 98, 99, 100),
        (0, 38, 57, 71, 80, 86, 90, 93, 95, 96, 97, 98, 99, 100),
        (0, 38, 57, 70, 79, 85, 89, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 38, 57, 70, 79, 85, 89, 91, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 52, 66, 75, 82, 87, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 52, 66, 75, 82, 86, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 51, 65, 74, 81, 85, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 51, 64, 73, 80, 84, 87, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 34, 51, 64, 73, 79, 83, 86, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
    150: (
        (0, 81, 100),
        (0, 71, 94, 100),
        (0, 69, 91, 99, 100),
        (0, 58, 81, 94, 99, 100),
        (0, 51, 74, 89, 96, 99, 100),
        (0, 50, 71, 85, 93, 97, 99, 100),
        (0, 50, 70, 82, 90, 94, 97, 99, 100),
        (0, 46, 66, 79, 88, 93, 96, 98, 99, 100),
        (0, 46, 66, 79, 87, 92, 95, 97, 98, 99, 100),
        (0, 46, 66, 78, 86, 91, 94, 96, 97, 98, 99, 100),
        (0, 41, 61, 74, 83, 89, 93, 95, 96, 97, 98, 99, 100),
        (0, 41, 61, 74, 83, 89, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 39, 58, 71, 80, 86, 90, 92, 94, 95, 96, 97, 98, 99, 100),
        (0, 39, 58, 71, 80, 86, 90, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 39, 58, 71, 79, 85, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 39, 58, 71, 79, 85, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 38, 56, 69, 77, 83, 87, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 38, 55, 67, 75, 81, 85, 87, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
        (0, 38, 54, 66, 74, 80, 84, 86, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100),
    ),
}
