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
from .dpmpp import final_denoise
from .exponential import combine, exp_moment, exp_weights, lagrange_basis

# The default stochastic interval: the paper's and diffusers' tau = 1 for timesteps 200 <= t <= 800 of a
# 1000-step DDPM model (ComfyUI: 20% to 80% of the model's sigma range), here as the VE noise levels of SD / SDXL
# at t = 200 and t = 800, so that the default is the same noise range in every geometry.
SA_SOLVER_TAU_SIGMA_VE = (0.5717, 5.111)


def tau_interval(geometry: Geometry, sigma_ve_min: float = SA_SOLVER_TAU_SIGMA_VE[0],
                 sigma_ve_max: float = SA_SOLVER_TAU_SIGMA_VE[1], eta: float = 1.0) -> Callable[[float], float]:
    """``tau(sigma) = eta`` where the VE noise level of ``sigma`` lies in ``[sigma_ve_min, sigma_ve_max]``, else 0."""
    return lambda sigma: eta if sigma_ve_min <= geometry.to_ve(sigma) <= sigma_ve_max else 0.0


def diffusers_weights(nodes: list[float], H: float) -> list[float]:
    """diffusers' SASolverScheduler's weights: :func:`exp_weights`, except for 2 nodes, where the linear
    interpolant's value at ``theta = 0`` is weighted ``1 - e^{-H}`` as there but its slope ``H / 2`` instead of the
    exact ``H phi_2(-H)`` (its ``stochastic_adams_bashforth_update`` / ``_moulton_update`` at order 2, "similar to
    UniPC": an O(h^3) change per step, so the order is kept)."""
    if len(nodes) != 2:
        return exp_weights(nodes, H)
    moments = (exp_moment(0, H), H / 2)
    return [coeffs[0] * moments[0] + coeffs[1] * moments[1] for coeffs in lagrange_basis(nodes)]


def _adams_step(geo: Geometry, x: torch.Tensor, sigma: float, sigma_next: float, lams: list[float],
                denoised: list[torch.Tensor], tau: float, noise: torch.Tensor | None, s_noise: float,
                weights_of=exp_weights) -> torch.Tensor:
    """One stochastic Adams step ``sigma -> sigma_next`` with ``D`` interpolated through ``(lams, denoised)``
    (``weights_of(nodes, H)``: :func:`exp_weights` or :func:`diffusers_weights`).

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
        weights = weights_of([(lam - lam_s) / h for lam in lams[:used]], h + tau_h)
    x = (sigma_next / sigma) * math.exp(-tau_h) * x + geo.alpha(sigma_next) * combine(weights, denoised[:used])
    if noise is not None:
        x = x + sigma_next * math.sqrt(-math.expm1(-2 * tau_h)) * s_noise * noise
    return x


def end_orders(steps: int, i: int) -> tuple[int, int]:
    """The caps ``(N - 1 - i, N - i)`` on the predictor and corrector orders of step ``i`` of an ``N``-step schedule
    that ends in 0: ComfyUI's ``lower_order_to_end`` rule (comfy/k_diffusion/sampling.py, ``sample_sa_solver``)."""
    return steps - 1 - i, steps - i


def diffusers_orders(steps: int, i: int) -> tuple[int, int]:
    """The caps ``(N - i, N - i + 2)`` on the predictor order of step ``i`` of an ``N``-step schedule and on the
    order of the correction made at its start: diffusers' SASolverScheduler with ``lower_order_final`` (its step
    ``i`` computes ``min(predictor_order, N - i)`` and, for the next step's correction, ``min(corrector_order,
    N - i + 1)``)."""
    return steps - i, steps - i + 2


def _step_taus(taus, steps: int) -> list[float]:
    """The caller's ``taus``, one per step, each finite and >= 0."""
    values = [float(t) for t in taus]
    if len(values) != steps:
        raise ValueError(f"taus must hold one tau per step ({steps}, the final call's step included), got "
                         f"{len(values)}: {values}")
    bad = [t for t in values if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise ValueError(f"taus must be finite and >= 0, got {bad[0]!r} in {values}")
    return values


def _sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler, predictor_order,
               corrector_order, use_pece, generator, lower_order_to_end, diffusers=False, taus=None,
               final_call=False):
    if predictor_order < 1 or corrector_order < 0:
        raise ValueError(f"need predictor_order >= 1 and corrector_order >= 0, got {predictor_order}, "
                         f"{corrector_order}")
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    final = bool(final_call) and run.sigmas[-1] > 0
    steps = len(run.sigmas) - 1 + final
    if diffusers:
        caps = (lambda i: diffusers_orders(steps, i)) if lower_order_to_end else (
            lambda i: (predictor_order, corrector_order))
    elif lower_order_to_end and run.sigmas[-1] == 0:
        caps = lambda i: end_orders(steps, i)  # noqa: E731
    else:
        caps = lambda i: (predictor_order, corrector_order)  # noqa: E731
    weights_of = diffusers_weights if diffusers else exp_weights
    if taus is not None:
        step_tau = _step_taus(taus, steps).__getitem__
    else:
        tau_func = tau_interval(geo) if tau_func is None else tau_func
        # diffusers evaluates tau at the step's start (its timestep), ComfyUI at its end
        step_tau = (lambda i: tau_func(run.sigmas[i])) if diffusers else (lambda i: tau_func(run.sigmas[i + 1]))
    lams: list[float] = []  # half log-SNR of the denoised values in `history`, newest first
    history: list[torch.Tensor] = []
    keep = max(predictor_order, corrector_order)
    x_prev = tau_prev = noise_prev = None

    def correct(i: int, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
        """SA-Corrector (Eq. 18): redo the last step with the new D at its end, same tau and noise."""
        order = min(corrector_order, len(history) + 1, caps(i)[1])
        return _adams_step(geo, x_prev, run.sigmas[i - 1], sigma, [geo.half_log_snr(sigma)] + lams[: order - 1],
                           [denoised] + history[: order - 1], tau_prev, noise_prev, s_noise, weights_of)

    for i, sigma, sigma_next in run.steps():
        lam = geo.half_log_snr(sigma)
        denoised = run.denoise(x, sigma)
        if x_prev is not None and corrector_order > 0 and (use_pece or sigma_next > 0):
            x = correct(i, sigma, denoised)
            if use_pece:
                denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        lams, history = ([lam] + lams)[:keep], ([denoised] + history)[:keep]
        if sigma_next == 0:
            x = denoised
            continue
        # SA-Predictor (Eq. 15), warming up from order 1
        tau = step_tau(i)
        noise = run.noise(sigma, sigma_next) if (tau or diffusers) and s_noise else None
        order = min(predictor_order, len(history), caps(i)[0])
        x_prev, tau_prev, noise_prev = x, tau, noise
        x = _adams_step(geo, x, sigma, sigma_next, lams[:order], history[:order], tau, noise, s_noise, weights_of)
    if final and corrector_order > 0 and x_prev is not None:
        # diffusers' zero-length last step: its call corrects the step into the last sigma
        x = correct(len(run.sigmas) - 1, run.sigmas[-1], final_denoise(run, x))
    elif final:
        final_denoise(run, x)
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


@torch.no_grad()
def sample_sa_solver_diffusers(model, x, sigmas, extra_args=None, callback=None, disable=None, tau_func=None,
                               s_noise=1.0, noise_sampler=None, predictor_order=2, corrector_order=2, *,
                               lower_order_final=True, taus=None, final_call=False, generator=None):
    """SA-Solver as diffusers' ``SASolverScheduler`` runs it (data prediction), Xue et al. 2023 (arXiv 2309.05019),
    Eqs. 15 and 18, PEC mode: :func:`sample_sa_solver` with diffusers' rules where they differ from ComfyUI's:

    - with 2 nodes the predictor and the corrector weight the slope of ``D`` by ``H / 2`` instead of the exact
      ``H phi_2(-H)`` (:func:`diffusers_weights`; default orders 2 and 2, so this is every step after the
      first);
    - ``lower_order_final`` caps the orders of step ``i`` of ``N`` by :func:`diffusers_orders` on any schedule
      (its last step is a solver step, not a return of ``D``);
    - the step's ``tau`` is taken at its start: ``taus[i]`` (one per step, the final call's step included; diffusers:
      ``tau_func(timestep)``, by default 1 for timesteps 200 to 800) or else ``tau_func(sigma_i)`` (default
      :func:`tau_interval`);
    - noise is drawn on every step, whatever its ``tau``, so that a generator's draws are diffusers'
      ``randn_tensor`` draws, one per step;
    - ``final_call``: on a schedule ending above 0, one more call at the last sigma corrects the last step
      (diffusers' zero-length last step on Karras, exponential, beta or flow sigmas, which end on a repeated sigma).

    Any geometry. Deterministic order 2 with the default orders (``tau = 0``), 1 call per step, stochastic. diffusers'
    own schedules end at ``sigma(alphas_cumprod[0])``, not 0; into 0 the last step returns ``D``.
    """
    return _sa_solver(model, x, sigmas, extra_args, callback, disable, tau_func, s_noise, noise_sampler,
                      predictor_order, corrector_order, False, generator, lower_order_final, diffusers=True,
                      taus=taus, final_call=final_call)
