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
==================  ===========================  ==============  ===========  ============  =========================

(a) values repeated by the clamp to ``[sigma_min, sigma_max]`` are dropped (ComfyUI keeps them as zero-length
steps, and returns no final 0). (b) ComfyUI returns more than ``n + 1`` when ``n`` does not divide the table length;
ours always has ``n + 1`` and equals diffusers' 'leading' spacing. (c) timesteps that round to the same integer
are dropped, as in ComfyUI. (d) the table, when given, only guards against using a VE table on a flow model.
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
    "get_sigmas_karras",
    "get_sigmas_kl_optimal",
    "get_sigmas_laplace",
    "get_sigmas_linear_quadratic",
    "get_sigmas_normal",
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
# quick-start page research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), 11 sigmas each. No table has been
# published for flow models (FLUX, SD3).
AYS_SIGMAS = {
    "sd1": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}

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


def get_sigmas_ddim_uniform(n, sigma_table) -> torch.Tensor:
    """DDIM's uniform timestep skipping, Song et al. 2020 (arXiv 2010.02502), Sec. 4.2: ComfyUI "ddim_uniform".

    ``sigma = table[1 + j c]`` for ``j = n - 1 .. 0``, ``c = N // n``, then 0: diffusers' 'leading' spacing with
    ``steps_offset = 1`` (SD / SDXL). ``n <= N - 1``. When ``n`` does not divide ``N``, ComfyUI keeps stepping by
    ``c`` up to ``N - 1`` and returns more than ``n`` steps; this returns exactly ``n``.
    """
    table = _table(sigma_table)
    size = len(table)
    n = _steps(n)
    if n > size - 1:
        raise ValueError(f"ddim_uniform needs n <= len(sigma_table) - 1 = {size - 1}, got n={n}")
    return _finish(table[1 + np.arange(n - 1, -1, -1) * (size // n)])


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


def get_sigmas_align_your_steps(n, sigma_table=None, model="sdxl") -> torch.Tensor:
    """Align Your Steps, Sabour et al. 2024 (arXiv 2404.14507): the published 10-step schedules, log-linearly
    interpolated.

    ``model``: "sd1" (SD 1.x / 2.x), "sdxl", "svd" (:data:`AYS_SIGMAS`, 11 values each). ``n = 10`` returns the
    published values with the last (0.029 / 0.002) replaced by 0; otherwise ``log sigma`` is interpolated linearly
    over ``linspace(0, 1, 11)`` at ``linspace(0, 1, n + 1)`` (the authors' ``loglinear_interp``) and the last value
    set to 0. No table is published for flow models: a flow ``sigma_table`` (all sigmas <= 1) raises.
    """
    n = _steps(n)
    if model not in AYS_SIGMAS:
        raise ValueError(f"unknown Align Your Steps model {model!r}; published tables: {sorted(AYS_SIGMAS)}")
    if sigma_table is not None and _table(sigma_table)[-1] <= 1.0:
        raise ValueError(
            "align_your_steps has no published table for flow models (sigma_table ends at <= 1); "
            "use e.g. kl_optimal or karras with geometry='flow'"
        )
    published = np.array(AYS_SIGMAS[model], dtype=np.float64)
    if n + 1 == len(published):
        return _finish(published[:-1])
    # log-linear interpolation on the ascending order, as the authors' loglinear_interp
    nodes = np.linspace(0.0, 1.0, len(published))
    values = np.exp(np.interp(np.linspace(0.0, 1.0, n + 1), nodes, np.log(published[::-1])))[::-1]
    return _finish(values[:-1])


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
]

SCHEDULES: dict[str, ScheduleSpec] = {s.name: s for s in _SPECS}


def list_schedules() -> list[ScheduleSpec]:
    """Every registered schedule, in catalogue order."""
    return list(_SPECS)


def get_sigmas(name: str, n: int, sigma_table=None, sigma_min=None, sigma_max=None, **options) -> torch.Tensor:
    """``n`` steps of the schedule ``name``: a descending CPU float64 tensor of ``n + 1`` sigmas ending in 0.

    ``laplace`` and ``beta`` may return fewer values (repeats dropped); see the module docstring's table for what each
    schedule takes. ``sigma_table`` is the model's ascending sigma table; range schedules default to its ends, and
    explicit ``sigma_min`` / ``sigma_max`` override them. ``options`` are the schedule function's own keywords
    (``rho``, ``geometry``, ``alpha``, ``model`` ...). Raises ValueError on an unknown name (with the closest valid
    one), ``n < 1``, a missing table or range, a range passed to a schedule that takes none, or an unknown option.
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
