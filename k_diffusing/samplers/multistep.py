"""Linear multistep samplers: one model call per step, the history of past derivatives extrapolated by a polynomial.

One piece of math is shared: the Adams-Bashforth coefficients ``c_j = int_a^b L_j(t) dt`` of the Lagrange basis
polynomials ``L_j`` through the past nodes (:func:`lagrange_integrals`). Uniform nodes give the classical fixed-step
coefficients (PLMS, iPNDM), the actual sigmas the variable-step ones (LMS, iPNDM-v, rhoAB-DEIS), VP times tAB-DEIS.

``lms``, ``plms``, ``ipndm``, ``ipndm_v`` and ``gradient_estimation`` integrate ``dx/dsigma = (x - D) / sigma`` in
sigma, so they need no geometry (in VE, ``d = eps`` and they are the papers' methods exactly). ``deis`` is an
exponential integrator: it extrapolates ``eps`` in VE coordinates, where the linear part of the ODE vanishes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .base import SamplerRun, to_d
from .dpmpp import diffusers_order, final_denoise
from .euler import heun_step

# The VP-SDE of Song et al. 2021 (arXiv 2011.13456, App. C; k-diffusion's get_sigmas_vp): the diffusion time t of
# DEIS's 'tab' mode, with sigma_ve(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1.
VP_BETA_MIN = 0.1
VP_BETA_D = 19.9

# Gauss-Legendre points for the non-polynomial integrand of DEIS 'tab' (smooth in sigma_ve; checked against
# adaptive quadrature to ~1e-12 relative in the tests).
TAB_QUADRATURE_POINTS = 16


@functools.cache
def _gauss_legendre(points: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return tuple(nodes.tolist()), tuple(weights.tolist())


def lagrange_basis(nodes: Sequence[float], t: float) -> list[float]:
    """``[L_j(t)]``: the Lagrange basis polynomials of ``nodes`` (``L_j(nodes[k]) = [j == k]``) at ``t``."""
    values = []
    for j, t_j in enumerate(nodes):
        value = 1.0
        for k, t_k in enumerate(nodes):
            if k != j:
                value *= (t - t_k) / (t_j - t_k)
        values.append(value)
    return values


def lagrange_integrals(nodes: Sequence[float], a: float, b: float, time: Callable[[float], float] | None = None,
                       density: Callable[[float], float] | None = None) -> list[float]:
    """``[int_a^b L_j(time(r)) density(r) dr]`` for the Lagrange basis ``L_j`` of ``nodes`` (``time`` defaults to
    the identity, ``density`` to 1).

    With neither the integrand is a polynomial of degree ``len(nodes) - 1`` and Gauss-Legendre quadrature with
    ``ceil(len(nodes) / 2)`` points integrates it exactly (degree ``2 m - 1`` with ``m`` points): these are the
    Adams-Bashforth coefficients for the step ``a -> b``, in closed form from Python floats. With a ``time`` map or
    a ``density``, ``TAB_QUADRATURE_POINTS`` points are used.
    """
    exact = time is None and density is None
    points = (len(nodes) + 1) // 2 if exact else TAB_QUADRATURE_POINTS
    half, mid = (b - a) / 2, (a + b) / 2
    totals = [0.0] * len(nodes)
    for u, w in zip(*_gauss_legendre(points)):
        r = mid + half * u
        weight = w * half * (1.0 if density is None else density(r))
        for j, value in enumerate(lagrange_basis(nodes, r if time is None else time(r))):
            totals[j] += weight * value
    return totals


def adams_bashforth_fixed(order: int) -> list[float]:
    """Fixed-step Adams-Bashforth coefficients (1; 3/2, -1/2; 23/12, -16/12, 5/12; 55/24, -59/24, 37/24, -9/24):
    the Lagrange integrals over one unit step of the nodes 0, -1, ..., -(order - 1)."""
    return lagrange_integrals([-float(k) for k in range(order)], 0.0, 1.0)


def linear_multistep_coeff(order, t, i, j):
    """k-diffusion's helper: ``int_{t[i]}^{t[i+1]}`` of the Lagrange basis polynomial of node ``t[i - j]`` through
    ``t[i], ..., t[i - order + 1]``, exactly (k-diffusion uses scipy's adaptive quadrature)."""
    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")
    return lagrange_integrals(_past([float(v) for v in t], i, order), float(t[i]), float(t[i + 1]))[j]


def _past(sigmas: Sequence[float], i: int, k: int) -> list[float]:
    """The nodes ``sigma_i, sigma_{i-1}, ..., sigma_{i-k+1}``, newest first."""
    return [sigmas[i - j] for j in range(k)]


def _check_order(name: str, order: int) -> None:
    if order < 1:
        raise ValueError(f"{name} must be at least 1, got {order}")


def _multistep_in_sigma(run: SamplerRun, order: int, coefficients: Callable[[int, int], list[float]],
                        denoised_at_zero: bool, heun_first: bool = False) -> torch.Tensor:
    """Explicit linear multistep on ``dx/dsigma = d``: ``x_{i+1} = x_i + sum_j c_j d_{i-j}`` with the ``k`` newest
    derivatives (``k = min(i + 1, order)``) and ``c = coefficients(i, k)``. With ``denoised_at_zero``, the step into
    sigma = 0 is the Euler step (it lands on ``D``). With ``heun_first`` and at least two steps, the first step is
    Heun's (:func:`heun_step`, 1 more call) and only its first derivative enters the history."""
    x = run.x
    ds: list[torch.Tensor] = []  # newest first
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        ds = [to_d(x, sigma, denoised)] + ds[: order - 1]
        if i == 0 and heun_first and len(run.sigmas) > 2:
            x = heun_step(run, x, sigma, sigma_next, denoised)
        elif sigma_next == 0 and denoised_at_zero:
            x = denoised
        else:
            x = x + sum(c * d for c, d in zip(coefficients(i, len(ds)), ds))
    return run.finish(x)


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (variable-step Adams-Bashforth) in sigma, k-diffusion's ``sample_lms`` (after Karras et al.
    2022, arXiv 2206.00364, and Liu et al. 2022, arXiv 2202.09778, who apply linear multistep to diffusion ODEs).

    Any geometry (the ODE ``dx/dsigma = (x - D) / sigma``). Order up to ``order`` (4), 1 call per step, deterministic.
    Coefficients are the exact integrals of the Lagrange basis over ``[sigma_i, sigma_{i+1}]`` (k-diffusion computes
    the same numbers with scipy quadrature every step). The order ramps up over the first steps, and the step into
    sigma = 0 keeps the full order (as k-diffusion: the polynomial is extrapolated to 0).
    """
    _check_order("order", order)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    s = run.sigmas
    return _multistep_in_sigma(run, order, lambda i, k: lagrange_integrals(_past(s, i, k), s[i], s[i + 1]),
                               denoised_at_zero=False)


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """Improved PNDM (iPNDM), Zhang & Chen 2022 (arXiv 2204.13902): PNDM's (Liu et al. 2022, arXiv 2202.09778)
    fixed-step 4th-order Adams-Bashforth combination of past ``eps`` with the DDIM transfer, warmed up by lower-order
    Adams-Bashforth instead of Runge-Kutta steps.

    In VE the DDIM transfer with ``eps`` is an Euler step in sigma with ``d = eps``, so this is fixed-coefficient
    Adams-Bashforth on ``dx/dsigma = (x - D) / sigma``: ``x + (sigma_{i+1} - sigma_i) sum_j c_j d_{i-j}``. Any
    geometry (on flow models, the same multistep on the flow ODE in sigma, as ComfyUI runs it). 1 call per step,
    deterministic. The coefficients assume equal steps, so on a non-uniform schedule the order drops (measured ~2 on
    log-uniform sigmas). The step into sigma = 0 is the Euler step (returns ``D``), as in ComfyUI.
    """
    _check_order("max_order", max_order)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    return _multistep_in_sigma(run, max_order, _fixed_step_coefficients(run.sigmas, max_order),
                               denoised_at_zero=True)


def _fixed_step_coefficients(s: list[float], max_order: int) -> Callable[[int, int], list[float]]:
    """``(i, k) -> (sigma_{i+1} - sigma_i) * AB_k``: fixed-step Adams-Bashforth weights of order ``k`` scaled by
    the step, as PNDM applies them to ``eps`` whatever the step sizes."""
    fixed = [adams_bashforth_fixed(k) for k in range(1, max_order + 1)]
    return lambda i, k: [(s[i + 1] - s[i]) * c for c in fixed[k - 1]]


PLMS_ORDER = 4  # PNDMScheduler's pndm_order


@torch.no_grad()
def sample_plms(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """PLMS, the pseudo linear multistep method of Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on
    Manifolds" (arXiv 2202.09778, Eq. 12 with the DDIM transfer of Eq. 9), as diffusers' ``PNDMScheduler`` runs it
    with ``skip_prk_steps=True`` (the Stable Diffusion 1.x/2.x default; after crowsonkb's PLMS for CompVis
    latent-diffusion): fixed-step Adams-Bashforth on ``eps`` with a pseudo improved-Euler warm-up.

    In VE the DDIM transfer with ``eps`` is the Euler step ``x + (sigma_{i+1} - sigma_i) eps`` and ``eps = d =
    (x - D) / sigma``, so the method is, on ``dx/dsigma = d``:
    - step 0: Euler to ``sigma_1``, a call there, then the step again with the mean of the two derivatives (Heun;
      PNDMScheduler's counter 0 and 1). The derivative at the predicted point does not enter the history;
    - step ``i >= 1``: ``x + (sigma_{i+1} - sigma_i) sum_j c_j d_{i-j}`` with the fixed Adams-Bashforth weights of
      order ``min(i + 1, 4)``: (3, -1) / 2, (23, -16, 5) / 12, then (55, -59, 37, -9) / 24, over the derivatives at
      the start of each step (the scheduler's ``ets``).
    A one-step schedule is a single Euler (DDIM) step, as PNDMScheduler makes at ``num_inference_steps=1``. Every
    step, the last one included, keeps its order: into sigma = 0 the transfer extrapolates ``eps`` to 0 (PNDM with
    ``set_alpha_to_one=True``); with ``set_alpha_to_one=False`` the schedule ends at ``sigma(t = 0)`` instead
    (0.0292 on SD's betas). The weights assume equal steps, so on other schedules the order drops, as for
    :func:`sample_ipndm` (which differs only in its Euler warm-up and its step into 0): measured 2.0 on log-uniform
    sigmas in VE and flow (40 to 320 steps). On flow models it is the same multistep on the flow ODE in sigma, where
    the Euler step is the DDIM step too (and defined from sigma = 1, where VE units are not).

    Any geometry. 1 call per step plus 1 on the first (``n + 1`` calls for ``n >= 2`` steps), deterministic.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    return _multistep_in_sigma(run, PLMS_ORDER, _fixed_step_coefficients(run.sigmas, PLMS_ORDER),
                               denoised_at_zero=False, heun_first=True)


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM with variable-step coefficients (ComfyUI's ``ipndm_v``), after Zhang & Chen 2022 (arXiv 2204.13902):
    Adams-Bashforth with the exact Lagrange integrals over the actual sigmas.

    Any geometry (the ODE ``dx/dsigma = (x - D) / sigma``). Order up to ``max_order`` (4), 1 call per step,
    deterministic. Identical to :func:`sample_lms` except on the step into sigma = 0, which here is the Euler step
    (returns ``D``), as in ComfyUI; equal to :func:`sample_ipndm` on equal steps. ComfyUI's version (from
    zju-pi/diff-sampler) uses closed-form weights that are the exact variable-step ones only up to order 2 (its
    order-4 weights differ from AB4 even on equal steps), so the two differ on orders 3-4.
    """
    _check_order("max_order", max_order)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    s = run.sigmas
    return _multistep_in_sigma(run, max_order, lambda i, k: lagrange_integrals(_past(s, i, k), s[i], s[i + 1]),
                               denoised_at_zero=True)


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0):
    """Gradient estimation, Permenter & Yuan 2023 (arXiv 2306.04848): DDIM with the extrapolated
    ``eps_bar = gamma eps_i + (1 - gamma) eps_{i-1}`` (``ge_gamma = 2``; 1 is Euler/DDIM).

    In VE, ``d = eps`` and DDIM is Euler in sigma, so the step is ``x + (sigma_{i+1} - sigma_i) d_bar`` with
    ``d_bar = gamma d_i + (1 - gamma) d_{i-1}``; any geometry (the ODE in sigma, as ComfyUI runs it on flow models).
    1 call per step, deterministic. The first step is plain Euler. First order: ``gamma = 2`` extrapolates ``d`` to
    the end of the step instead of its middle (measured ~1); it targets few-step sampling, not asymptotic order.
    The step into sigma = 0 is the Euler step (returns ``D``), as in ComfyUI.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    s = run.sigmas

    def coefficients(i, k):
        dt = s[i + 1] - s[i]
        return [dt] if k == 1 else [ge_gamma * dt, (1 - ge_gamma) * dt]

    return _multistep_in_sigma(run, 2, coefficients, denoised_at_zero=True)


def vp_time(sigma_ve: float) -> float:
    """Diffusion time ``t`` of the VP-SDE (``VP_BETA_MIN``, ``VP_BETA_D``) whose VE noise level is ``sigma_ve``:
    the root of ``beta_d t^2 / 2 + beta_min t = log(1 + sigma_ve^2)``."""
    return (math.sqrt(VP_BETA_MIN**2 + 2 * VP_BETA_D * math.log1p(sigma_ve**2)) - VP_BETA_MIN) / VP_BETA_D


DEIS_MODES = ("tab", "rhoab", "logrho")


def deis_coefficients(deis_mode: str, rhos: Sequence[float], rho_next: float) -> list[float]:
    """DEIS's ``[C_j] = [int_{rho_0}^{rho_next} L_j dr]`` for the Lagrange basis through the nodes ``rhos`` (newest
    first, all finite and positive, like ``rho_next``), the polynomial in the mode's variable: ``rho`` ('rhoab'), the
    VP time ``t(rho)`` ('tab') or ``u = log rho`` ('logrho', integrated over ``u`` with ``dr = e^u du``: the
    integrand is smooth on any step, so 16 Gauss-Legendre points give it to rounding however far ``rho`` falls)."""
    if deis_mode == "rhoab":
        return lagrange_integrals(rhos, rhos[0], rho_next)
    if deis_mode == "tab":
        return lagrange_integrals([vp_time(r) for r in rhos], rhos[0], rho_next, vp_time)
    return lagrange_integrals([math.log(r) for r in rhos], math.log(rhos[0]), math.log(rho_next), density=math.exp)


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, deis_mode="tab", *,
                lower_order_final=False, final_call=False):
    """DEIS, Zhang & Chen 2022 (arXiv 2204.13902), tAB-DEIS and rhoAB-DEIS: an exponential
    integrator whose ``eps`` is extrapolated by the polynomial through the last ``max_order`` predictions.

    Geometry: in VE coordinates (``x_ve = x / alpha``, ``rho = sigma_ve = sigma / alpha``) the probability-flow ODE is
    ``dx_ve / drho = eps`` with no linear part, so the exponential integrator step is
    ``x_ve' = x_ve + sum_j C_j eps_{i-j}`` with ``C_j = int_{rho_i}^{rho_{i+1}} L_j dr``, ``L_j`` the Lagrange basis
    through the past nodes:
    - ``'rhoab'``: nodes and polynomial in ``rho`` (rhoAB-DEIS): exact variable-step Adams-Bashforth on ``eps``;
    - ``'tab'``: nodes and polynomial in the diffusion time ``t`` (tAB-DEIS). A sampler only knows noise levels,
      so ``t`` is taken to be the time of the standard VP-SDE (Song et al. 2021, beta_min = 0.1, beta_d = 19.9,
      the setting of the DEIS paper's VPSDE experiments) at the same VE noise level: ``L_j(t(rho))`` integrated
      over ``rho`` by Gauss-Legendre quadrature. ComfyUI fits its VP time to EDM's range (0.002 .. 80) instead,
      so its 'tab' coefficients differ slightly;
    - ``'logrho'``: nodes and polynomial in ``log rho``: diffusers' ``DEISMultistepScheduler``
      (``solver_type='logrho'``, the only one it has; its closed-form integrals ``ind_fn`` are these ``C_j``).
      Unlike 'tab' it needs no model of the diffusion time.
    The coefficients: :func:`deis_coefficients`.
    It is written as the DDIM step in data prediction (exact from flow sigma = 1) plus
    ``alpha_{i+1} sum_{j>=1} C_j (eps_{i-j} - eps_i)`` (the ``C_j`` sum to ``rho_{i+1} - rho_i``).
    Any geometry. Order up to ``max_order`` (3), 1 call per step, deterministic. A prediction made at an infinite
    ``rho`` (flow sigma = 1) is dropped from the history (the exact limit of its Lagrange weight is 0). The first
    step and the step into sigma = 0 are DDIM steps (the latter returns ``D``), as in ComfyUI.

    The defaults are ComfyUI's. With ``deis_mode='logrho'`` and ``max_order`` its ``solver_order``, two options make
    it diffusers' ``DEISMultistepScheduler``, whose schedules end above 0 (at ``sigma(t = 0)``, or on a repeated
    sigma with Karras, exponential, beta or flow sigmas):
        lower_order_final: on a schedule of fewer than 15 steps (the final call counted), the last step is first
            order and the one before at most second (:func:`.dpmpp.diffusers_order`).
        final_call: on a schedule ending above 0, call the model once more at the last sigma and return the sample
            unchanged (:func:`.dpmpp.final_denoise`): diffusers' zero-length last step on a schedule ending on a
            repeated sigma.
    """
    _check_order("max_order", max_order)
    if deis_mode not in DEIS_MODES:
        raise ValueError(f"deis_mode must be one of {DEIS_MODES}, got {deis_mode!r}")
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    final = final_call and run.sigmas[-1] > 0
    n_steps = len(run.sigmas) - 1 + final
    history: list[tuple[float, torch.Tensor]] = []  # (rho, eps), newest first, finite rho only
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        rho, rho_next = geo.to_ve(sigma), geo.to_ve(sigma_next)
        alpha, alpha_next = geo.alpha(sigma), geo.alpha(sigma_next)
        eps = (x - alpha * denoised) / sigma
        h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
        x_next = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * denoised  # DDIM
        past = history[: diffusers_order(i, n_steps, max_order, lower_order_final) - 1]
        if past and sigma_next > 0:
            coeffs = deis_coefficients(deis_mode, [rho] + [r for r, _ in past], rho_next)
            x_next = x_next + alpha_next * sum(c * (e - eps) for c, (_, e) in zip(coeffs[1:], past))
        if math.isfinite(rho):
            history = ([(rho, eps)] + history)[: max_order - 1]
        x = x_next
    if final:
        final_denoise(run, x)
    return run.finish(x)
