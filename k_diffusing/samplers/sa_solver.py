"""SA-Solver, the stochastic Adams solver of Xue et al. 2023 (arXiv 2309.05019), in data prediction.

The variance-controlled diffusion SDE of the paper, with ``tau`` constant over a step ``h = lambda_t -
lambda_s``, has the exact solution (written with ``alpha`` and the half log-SNR of the model's geometry)

    x_t = (sigma_t / sigma_s) e^{-tau^2 h} x_s + alpha_t int_0^1 H e^{-H (1 - theta)} D(theta) dtheta
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) z,                     H = (1 + tau^2) h.

The SA-Predictor replaces ``D`` by the Lagrange polynomial in ``lambda`` through the last ``s_p`` denoised values
(Eq. 15), the SA-Corrector by the one through the new value at ``lambda_t`` and the last ``s_c - 1`` (Eq. 18), with
the predictor's noise. Both integrals are exact (:func:`k_diffusing.samplers.exponential.exp_weights`); ``tau = 0``
gives the deterministic exponential Adams-Bashforth / Adams-Moulton pair.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..geometry import Geometry
from .base import SamplerRun
from .exponential import combine, exp_moment, exp_weights

# The default stochastic interval: the paper's and diffusers' tau = 1 for timesteps 200 <= t <= 800 of a
# 1000-step DDPM model (ComfyUI: 20% to 80% of the model's sigma range), here as the VE noise levels of SD / SDXL
# at t = 200 and t = 800, so that the default is the same noise range in every geometry.
SA_SOLVER_TAU_SIGMA_VE = (0.5717, 5.111)


def tau_interval(geometry: Geometry, sigma_ve_min: float = SA_SOLVER_TAU_SIGMA_VE[0],
                 sigma_ve_max: float = SA_SOLVER_TAU_SIGMA_VE[1], eta: float = 1.0) -> Callable[[float], float]:
    """``tau(sigma) = eta`` where the VE noise level of ``sigma`` lies in ``[sigma_ve_min, sigma_ve_max]``, else 0."""
    return lambda sigma: eta if sigma_ve_min <= geometry.to_ve(sigma) <= sigma_ve_max else 0.0


def _adams_step(geo: Geometry, x: torch.Tensor, sigma: float, sigma_next: float, lams: list[float],
                denoised: list[torch.Tensor], tau: float, noise: torch.Tensor | None, s_noise: float) -> torch.Tensor:
    """One stochastic Adams step ``sigma -> sigma_next`` with ``D`` interpolated through ``(lams, denoised)``.

    Nodes at ``lambda = -inf`` (flow sigma = 1) are dropped (the exact limit of the interpolation); the first node is
    always used. Multiple nodes occur only on finite steps.
    """
    lam_s, lam_t = geo.half_log_snr(sigma), geo.half_log_snr(sigma_next)
    h = lam_t - lam_s
    tau_h = tau * tau * h if tau else 0.0
    used = 1 + sum(1 for lam in lams[1:] if math.isfinite(lam))
    if used == 1:
        weights = [exp_moment(0, h + tau_h)]
    else:
        weights = exp_weights([(lam - lam_s) / h for lam in lams[:used]], h + tau_h)
    x = (sigma_next / sigma) * math.exp(-tau_h) * x + geo.alpha(sigma_next) * combine(weights, denoised[:used])
    if noise is not None:
        x = x + sigma_next * math.sqrt(-math.expm1(-2 * tau_h)) * s_noise * noise
    return x


def end_orders(steps: int, i: int) -> tuple[int, int]:
    """The caps ``(N - 1 - i, N - i)`` on the predictor and corrector orders of step ``i`` of an ``N``-step schedule
    that ends in 0: ComfyUI's ``lower_order_to_end`` rule (comfy/k_diffusion/sampling.py, ``sample_sa_solver``)."""
    return steps - 1 - i, steps - i


def _sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler, predictor_order,
               corrector_order, use_pece, generator, lower_order_to_end):
    if predictor_order < 1 or corrector_order < 0:
        raise ValueError(f"need predictor_order >= 1 and corrector_order >= 0, got {predictor_order}, "
                         f"{corrector_order}")
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    steps = len(run.sigmas) - 1
    lower_end = bool(lower_order_to_end) and run.sigmas[-1] == 0
    caps = (lambda i: end_orders(steps, i)) if lower_end else (lambda i: (predictor_order, corrector_order))
    tau_func = tau_interval(geo) if tau_func is None else tau_func
    lams: list[float] = []  # half log-SNR of the denoised values in `history`, newest first
    history: list[torch.Tensor] = []
    keep = max(predictor_order, corrector_order)
    x_prev = tau_prev = noise_prev = None
    for i, sigma, sigma_next in run.steps():
        lam = geo.half_log_snr(sigma)
        denoised = run.denoise(x, sigma)
        if x_prev is not None and corrector_order > 0 and (use_pece or sigma_next > 0):
            # SA-Corrector (Eq. 18): redo the last step with the new D at its end, same tau and noise
            order = min(corrector_order, len(history) + 1, caps(i)[1])
            x = _adams_step(geo, x_prev, run.sigmas[i - 1], sigma, [lam] + lams[: order - 1],
                            [denoised] + history[: order - 1], tau_prev, noise_prev, s_noise)
            if use_pece:
                denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        lams, history = ([lam] + lams)[:keep], ([denoised] + history)[:keep]
        if sigma_next == 0:
            x = denoised
            continue
        # SA-Predictor (Eq. 15), warming up from order 1
        tau = tau_func(sigma_next)
        noise = run.noise(sigma, sigma_next) if tau and s_noise else None
        order = min(predictor_order, len(history), caps(i)[0])
        x_prev, tau_prev, noise_prev = x, tau, noise
        x = _adams_step(geo, x, sigma, sigma_next, lams[:order], history[:order], tau, noise, s_noise)
    return run.finish(x)


@torch.no_grad()
def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, tau_func=None, s_noise=1.0,
                     noise_sampler=None, predictor_order=3, corrector_order=4, use_pece=False, *,
                     lower_order_to_end=True, generator=None):
    """SA-Solver, Xue et al. 2023 (arXiv 2309.05019), Eqs. 15 and 18 (data prediction), PEC mode.

    Each step evaluates ``D`` at the predicted point, corrects that point with the SA-Corrector (order
    ``corrector_order``, the predictor's noise), keeps the predicted ``D`` in the history (no second evaluation)
    and predicts the next point with the SA-Predictor (order ``predictor_order``); both warm up from order 1/2 on
    the first steps. ``tau_func(sigma_next)`` sets the step's stochasticity (``tau = 0``: ODE; ``tau = 1``: the
    reverse SDE); default :func:`tau_interval` (tau = 1 for VE sigma in ``[0.5717, 5.111]``, else 0).
    ``use_pece=True`` re-evaluates ``D`` after each correction (see :func:`sample_sa_solver_pece`).

    ``lower_order_to_end`` (default True, ComfyUI's behaviour): on a schedule of ``N`` steps that ends in 0, step
    ``i`` (``0 .. N - 1``) predicts (into ``sigma_{i+1}``) with order at most ``N - 1 - i`` and corrects (the point at
    ``sigma_i``) with order at most ``N - i`` (:func:`end_orders`). With the default orders the predictor steps into
    ``sigma_{N-2}`` and ``sigma_{N-1}`` are of order 2 and 1, the corrections at ``sigma_{N-3}`` and ``sigma_{N-2}``
    of order 3 and 2 (PECE: also order 1 at ``sigma_{N-1}``); the steps before are unchanged. The rule and its
    condition (the schedule's last sigma is 0) are ComfyUI's (comfy/k_diffusion/sampling.py, ``sample_sa_solver``,
    variable ``lower_order_to_end``, always on there); diffusers' SASolverScheduler (``lower_order_final``) caps one
    step later, as its last step is a solver step rather than a return of ``D``. The paper does not prescribe it.
    ``False`` keeps the full orders to the end.

    Any geometry. Deterministic order 4 with the default orders (``tau = 0``: predictor 3 plus corrector 4; measured
    3.7 to 4.0, the low-order warm-up costs a little), 1 call per step, stochastic. From flow ``sigma = 1`` the
    first step is first order and its history is dropped. The step into sigma = 0 returns ``D`` (PEC: at the
    predicted point, so the last correction is skipped: nothing would evaluate it).
    """
    return _sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler,
                      predictor_order, corrector_order, use_pece, generator, lower_order_to_end)


@torch.no_grad()
def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, tau_func=None,
                          s_noise=1.0, noise_sampler=None, predictor_order=3, corrector_order=4, *,
                          lower_order_to_end=True, generator=None):
    """SA-Solver in PECE mode, Xue et al. 2023 (arXiv 2309.05019), Eqs. 15 and 18: as :func:`sample_sa_solver`, but
    ``D`` is evaluated again at every corrected point and that value enters the history and the callback.
    ``lower_order_to_end``: ComfyUI's lowered orders on the last steps, as in :func:`sample_sa_solver` (default on).

    Any geometry. Deterministic order 4 (``tau = 0``), 2 calls per step (1 on the first step: ``2 N - 1`` in all),
    stochastic. The step into sigma = 0 returns ``D`` at the corrected point.
    """
    return _sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler,
                      predictor_order, corrector_order, True, generator, lower_order_to_end)
