"""DPM-Solver-1/2/3 in noise prediction, singlestep (Lu et al. 2022a, arXiv 2206.00927): the fixed-budget
DPM-Solver-fast (Sec. 3.4) and the adaptive DPM-Solver-12/23 (App. C, adaptive step size), with k-diffusion's
signatures (``sample_dpm_fast``, ``sample_dpm_adaptive``) and ``sigmas``-taking wrappers for the registry.

The model's ``D`` is turned into ``eps = (x - alpha D) / sigma`` and every stage is written with the geometry's
``alpha``, ``sigma`` and half log-SNR ``lambda = log(alpha / sigma)`` (Lu et al. 2022a, Eq. 3.7 and Sec. 3.3, Algs. 1-2):

    x_t = (alpha_t / alpha_s) x_s - sigma_t expm1(h) eps_s,    h = lambda_t - lambda_s,

so one formula is exact for VE models (k-diffusion's ``t = -log sigma``) and flow models. These solvers build their
own grid in ``lambda`` between ``sigma_max`` and ``sigma_min``, which must both have a finite ``lambda`` (on flow
models ``sigma_max < 1``); the ``*_sigmas`` wrappers start from flow ``sigma = 1`` with one DDIM step instead.

Ancestral noise (``eta > 0``, k-diffusion's extension): each step goes deterministically to ``sigma_down`` of
:meth:`Geometry.ancestral_step` (never below ``sigma_min``), then :meth:`Geometry.renoise` brings it back up to the
step's target level.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..geometry import Geometry
from .base import SamplerRun
from .dpmpp import ancestral_data_step


class _Solver:
    """What the DPM-Solver loops share: the model in noise prediction with a progress bar over model calls, the
    step index of the callback, and the ancestral split in ``lambda``."""

    def __init__(self, run: SamplerRun, pbar, eta: float, s_noise: float):
        self.run, self.geo, self.pbar = run, run.geometry, pbar
        self.eta, self.s_noise = eta, s_noise
        self.i = 0

    def eps(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps, D)`` at half log-SNR ``lam``: ``eps = (x - alpha D) / sigma``."""
        sigma = self.geo.sigma_at(lam)
        denoised = self.run.denoise(x, sigma)
        self.pbar.update()
        return (x - self.geo.alpha(sigma) * denoised) / sigma, denoised

    def report(self, x: torch.Tensor, sigma: float, denoised: torch.Tensor, **more) -> None:
        self.run.report(self.i, x, sigma, sigma, denoised, **more)
        self.i += 1

    def lam_down(self, lam: float, lam_next: float, lam_end: float) -> float:
        """Where the deterministic part of an ancestral step ends: ``lambda(sigma_down)``, at most ``lam_end``."""
        if not self.eta:
            return lam_next
        step = self.geo.ancestral_step(self.geo.sigma_at(lam), self.geo.sigma_at(lam_next), self.eta)
        return min(lam_end, self.geo.half_log_snr(step.sigma_down))

    def renoise(self, x: torch.Tensor, lam: float, lam_down: float, lam_next: float) -> torch.Tensor:
        """Noise from ``sigma_down`` back up to the step's target ``sigma_next`` (no draw when they coincide)."""
        if lam_down == lam_next:
            return x
        sigma, sigma_next = self.geo.sigma_at(lam), self.geo.sigma_at(lam_next)
        up = self.geo.renoise(self.geo.sigma_at(lam_down), sigma_next)
        return up.x_scale * x + up.noise_std * self.s_noise * self.run.noise(sigma, sigma_next)


def _eps_step(geo: Geometry, x: torch.Tensor, lam: float, lam_to: float, eps: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-1 (Lu et al. 2022a, Eq. 3.7): ``(alpha_t / alpha_s) x - sigma_t expm1(h) eps``."""
    sigma, sigma_to = geo.sigma_at(lam), geo.sigma_at(lam_to)
    return (geo.alpha(sigma_to) / geo.alpha(sigma)) * x - sigma_to * math.expm1(lam_to - lam) * eps


def _singlestep(solver: _Solver, x: torch.Tensor, lam: float, lam_to: float, eps: torch.Tensor,
                order: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One DPM-Solver-``order`` step (Lu et al. 2022a, Sec. 3.3: Alg. 1, DPM-Solver-2 with ``r1 = 1/2``; Alg. 2,
    DPM-Solver-3 with ``r1, r2 = 1/3, 2/3``), given ``eps`` at the start; ``order - 1`` new model calls.

    Returns ``(x_high, x_low)``: the step and the embedded lower-order solution of the adaptive pairs (App. C):
    DPM-Solver-1 for order 2, DPM-Solver-2 with ``r1 = 1/3`` (sharing its stage) for order 3; ``None`` for order 1.
    """
    geo = solver.geo
    h = lam_to - lam
    sigma_to = geo.sigma_at(lam_to)
    x_1 = _eps_step(geo, x, lam, lam_to, eps)
    if order == 1:
        return x_1, None
    r1 = 1 / 2 if order == 2 else 1 / 3
    lam_1 = lam + r1 * h
    eps_1, _ = solver.eps(_eps_step(geo, x, lam, lam_1, eps), lam_1)
    # DPM-Solver-2 update (order 2) / the order-2 member of the 23 pair
    x_2 = x_1 - sigma_to / (2 * r1) * math.expm1(h) * (eps_1 - eps)
    if order == 2:
        return x_2, x_1
    # DPM-Solver-3: u_2 at lambda + r2 h, then the third-order update
    r2 = 2 / 3
    lam_2 = lam + r2 * h
    sigma_2 = geo.sigma_at(lam_2)
    u_2 = _eps_step(geo, x, lam, lam_2, eps) - sigma_2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_1 - eps)
    eps_2, _ = solver.eps(u_2, lam_2)
    x_3 = x_1 - sigma_to / r2 * (math.expm1(h) / h - 1) * (eps_2 - eps)
    return x_3, x_2


def _fast_orders(n: int) -> list[int]:
    """Lu et al. 2022a, Sec. 3.4: ``K = floor(n / 3) + 1`` steps, DPM-Solver-3 then one DPM-Solver-2/1 remainder
    step (``n % 3 == 0``: ``3, ..., 3, 2, 1``), ``n`` model calls in all."""
    m = n // 3 + 1
    return [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]


def _fast(solver: _Solver, x: torch.Tensor, lam_start: float, lam_end: float, n: int) -> torch.Tensor:
    """DPM-Solver-fast from ``lam_start`` to ``lam_end`` with ``n`` model calls, steps uniform in ``lambda``."""
    if n < 1:
        raise ValueError(f"dpm_fast needs at least 1 model call, got n={n}")
    if lam_start == lam_end:  # a zero-length interval: no step (base.distinct_sigmas)
        return x
    orders = _fast_orders(n)
    lams = [lam_start + (lam_end - lam_start) * k / len(orders) for k in range(len(orders) + 1)]
    for order, lam, lam_next in zip(orders, lams[:-1], lams[1:]):
        eps, denoised = solver.eps(x, lam)
        solver.report(x, solver.geo.sigma_at(lam), denoised)
        lam_down = solver.lam_down(lam, lam_next, lam_end)
        x, _ = _singlestep(solver, x, lam, lam_down, eps, order)
        x = solver.renoise(x, lam, lam_down, lam_next)
    return x


class _PIDController:
    """PID step-size control on the error ratio (Söderlind 2003, "Digital filters in adaptive time-stepping",
    ACM TOMS 29; arctan limiter of Söderlind & Wang 2006, J. Comput. Appl. Math. 185), as k-diffusion uses for
    DPM-Solver-12/23: ``h <- h * limiter(e_n^b1 e_{n-1}^b2 e_{n-2}^b3)`` with ``e = 1 / error``; a step is accepted
    when the factor is at least ``accept_safety``. ``pcoeff = dcoeff = 0, icoeff = 1`` is the classic
    ``h (1 / error)^(1 / order)`` controller of Lu et al. 2022a, App. C."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8):
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety, self.eps = accept_safety, eps
        self.inv_errors: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (error + self.eps)
        if not self.inv_errors:
            self.inv_errors = [inv_error] * 3
        self.inv_errors[0] = inv_error
        factor = 1 + math.atan(math.prod(e**b for e, b in zip(self.inv_errors, self.b)) - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors[1:] = self.inv_errors[:2]
        self.h *= factor
        return accept


def _adaptive(solver: _Solver, x: torch.Tensor, lam_start: float, lam_end: float, order: int, rtol: float,
              atol: float, h_init: float, pcoeff: float, icoeff: float, dcoeff: float,
              accept_safety: float) -> tuple[torch.Tensor, dict]:
    """DPM-Solver-12 / 23 from ``lam_start`` to ``lam_end`` (Lu et al. 2022a, App. C, with k-diffusion's PID control).

    The error is ``||(x_low - x_high) / delta||_2 / sqrt(numel)`` with ``delta = max(atol, rtol max(|x_low|,
    |x_prev|))`` over the whole batch. Reading it to accept or reject the step is a host sync per attempted step,
    inherent to the algorithm. ``D`` at the step's start is kept across rejections (k-diffusion evaluates it again),
    so a rejection costs ``order - 1`` calls.
    """
    if order not in {2, 3}:
        raise ValueError(f"order should be 2 or 3, got {order}")
    forward = lam_end > lam_start
    pid = _PIDController(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff,
                         1.5 if solver.eta else order, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    calls_before = solver.run.calls
    lam, x_prev, eps = lam_start, x, None
    while lam < lam_end - 1e-5 if forward else lam > lam_end + 1e-5:
        lam_next = min(lam_end, lam + pid.h) if forward else max(lam_end, lam + pid.h)
        lam_down = solver.lam_down(lam, lam_next, lam_end)
        if eps is None:
            eps, denoised = solver.eps(x, lam)
        x_high, x_low = _singlestep(solver, x, lam, lam_down, eps, order)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = torch.linalg.vector_norm((x_low - x_high) / delta).item() / math.sqrt(x.numel())  # host sync
        accept = pid.propose_step(error)
        solver.report(x, solver.geo.sigma_at(lam), denoised, error=error, h=pid.h, accept=accept)
        if accept:
            x_prev = x_low
            x = solver.renoise(x_high, lam, lam_down, lam_next)
            lam, eps = lam_next, None
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["steps"] += 1
    info["nfe"] = solver.run.calls - calls_before
    return x, info


def _budget_lambdas(geo: Geometry, sigma_min: float, sigma_max: float, eta: float) -> tuple[float, float]:
    """``(lambda(sigma_max), lambda(sigma_min))``, checked: both positive with finite ``lambda``."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    lam_start, lam_end = geo.half_log_snr(sigma_max), geo.half_log_snr(sigma_min)
    if not (math.isfinite(lam_start) and math.isfinite(lam_end)):
        raise ValueError(
            f"sigma_min={sigma_min} and sigma_max={sigma_max} must have a finite log-SNR in {geo.name} geometry "
            "(flow: sigma < 1); to start from flow sigma = 1 use sample_dpm_fast_sigmas / sample_dpm_adaptive_sigmas"
        )
    if eta and lam_end < lam_start:
        raise ValueError("eta must be 0 for reverse sampling")
    return lam_start, lam_end


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0.0,
                    s_noise=1.0, noise_sampler=None, *, generator=None):
    """DPM-Solver-fast, Lu et al. 2022a (arXiv 2206.00927), Sec. 3.4: ``n`` model calls, ``floor(n / 3) + 1`` steps
    uniform in ``lambda`` from ``sigma_max`` to ``sigma_min``, DPM-Solver-3 steps then a DPM-Solver-2/1 remainder.

    Noise prediction in any geometry (``sigma_min``, ``sigma_max`` need a finite ``lambda``: flow ``sigma < 1``).
    Order 3 when ``n % 3 == 2`` (the remainder step is DPM-Solver-2), else limited to 2 by the final DPM-Solver-1
    step; stochastic only with ``eta > 0`` (ancestral, Gaussian noise). Stops at ``sigma_min`` (no step into 0),
    as k-diffusion; ``sigma_min > sigma_max`` integrates backwards (``eta = 0`` only). ``sigma_min == sigma_max``
    is a zero-length interval: ``x`` is returned unchanged, with no model call (k-diffusion divides by ``h = 0``).
    """
    run = SamplerRun(model, x, [sigma_max, sigma_min], extra_args, callback, disable, noise_sampler, generator,
                     descending=False)
    lam_start, lam_end = _budget_lambdas(run.geometry, run.sigmas[-1], run.sigmas[0], eta)
    with tqdm(total=n, disable=disable) as pbar:
        x = _fast(_Solver(run, pbar, eta, s_noise), run.x, lam_start, lam_end, n)
    return run.finish(x)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, disable=None, order=3,
                        rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        eta=0.0, s_noise=1.0, noise_sampler=None, return_info=False, *, generator=None):
    """Adaptive DPM-Solver-12 (``order=2``) / 23 (``order=3``), Lu et al. 2022a (arXiv 2206.00927), App. C, with a
    PID step-size controller in ``lambda`` (k-diffusion's ``sample_dpm_adaptive``).

    Noise prediction in any geometry (``sigma_min``, ``sigma_max`` need a finite ``lambda``: flow ``sigma < 1``).
    ``order`` calls per accepted step, ``order - 1`` per rejected one; one host sync per attempted step to read the
    error. Stochastic only with ``eta > 0`` (ancestral, Gaussian noise; the controller then assumes order 1.5).
    Stops at ``sigma_min`` (no step into 0); ``sigma_min == sigma_max`` returns ``x`` unchanged with no model call.
    The callback gets ``error``, ``h`` and ``accept`` with every attempt.
    With ``return_info`` returns ``(x, {'steps', 'nfe', 'n_accept', 'n_reject'})``.
    """
    run = SamplerRun(model, x, [sigma_max, sigma_min], extra_args, callback, disable, noise_sampler, generator,
                     descending=False)
    lam_start, lam_end = _budget_lambdas(run.geometry, run.sigmas[-1], run.sigmas[0], eta)
    with tqdm(disable=disable) as pbar:
        x, info = _adaptive(_Solver(run, pbar, eta, s_noise), run.x, lam_start, lam_end, order, rtol, atol, h_init,
                            pcoeff, icoeff, dcoeff, accept_safety)
    x = run.finish(x)
    return (x, info) if return_info else x


def _on_schedule(solver: _Solver, x: torch.Tensor, integrate) -> torch.Tensor:
    """Run a budget-based solver on a schedule: from its first to its last nonzero sigma, then into 0.

    A flow schedule starting at ``sigma = 1`` (``lambda = -inf``, where no DPM-Solver step can start) first takes one
    ancestral DDIM step to ``sigmas[1]`` (the exact limit of any DPM-Solver step from there). If the schedule ends in
    0 the last step is DDIM into 0, i.e. ``D(x, sigma_min)``. ``integrate(x, lam_start, lam_end, ddim_calls)``
    covers the rest; ``ddim_calls`` (0 to 2) is the number of those DDIM steps.
    """
    run, geo = solver.run, solver.geo
    sigmas = run.sigmas
    if len(sigmas) < 2:  # one repeated sigma: no step
        return x
    positive = [s for s in sigmas if s > 0]
    sigma_start, sigma_min = positive[0], positive[-1]
    from_infinity = not math.isfinite(geo.half_log_snr(sigma_start))
    ddim_calls = int(from_infinity) + int(sigmas[-1] == 0)
    if from_infinity:
        x = _ddim(solver, x, sigma_start, sigmas[1])
        sigma_start = sigmas[1]
    if sigma_start > 0 and sigma_start != sigma_min:
        x = integrate(x, geo.half_log_snr(sigma_start), geo.half_log_snr(sigma_min), ddim_calls)
    if sigmas[-1] == 0 and sigma_start > 0:
        x = _ddim(solver, x, sigma_min, 0.0)
    return x


def _ddim(solver: _Solver, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One reported ancestral DDIM step (1 model call)."""
    denoised = solver.run.denoise(x, sigma)
    solver.pbar.update()
    solver.report(x, sigma, denoised)
    return ancestral_data_step(solver.run, x, sigma, sigma_next, denoised, solver.eta, solver.s_noise)


@torch.no_grad()
def sample_dpm_fast_sigmas(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0,
                           noise_sampler=None, n=None, *, generator=None):
    """DPM-Solver-fast (Lu et al. 2022a, arXiv 2206.00927, Sec. 3.4) on a schedule: :func:`sample_dpm_fast` between
    the schedule's first and last nonzero sigma, then a DDIM step into 0 if the schedule ends in 0.

    ``n`` is the total number of model calls, by default ``len(sigmas) - 1`` (the budget of a one-call-per-step
    sampler on the same schedule); the step into 0 takes one of them, and so does the first step from flow
    ``sigma = 1`` (DDIM to ``sigmas[1]``, the exact limit there). Only the schedule's ends are used. Any geometry;
    stochastic only with ``eta > 0``. The step into 0 returns ``D``.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    n_total = len(run.sigmas) - 1 if n is None else n
    with tqdm(total=n_total, disable=disable) as pbar:
        solver = _Solver(run, pbar, eta, s_noise)

        def integrate(x, lam_start, lam_end, ddim_calls):
            return _fast(solver, x, lam_start, lam_end, n_total - ddim_calls)

        x = _on_schedule(solver, run.x, integrate)
    return run.finish(x)


@torch.no_grad()
def sample_dpm_adaptive_sigmas(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, rtol=0.05,
                               atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                               eta=0.0, s_noise=1.0, noise_sampler=None, *, generator=None):
    """Adaptive DPM-Solver-12/23 (Lu et al. 2022a, arXiv 2206.00927, App. C) on a schedule:
    :func:`sample_dpm_adaptive` between the schedule's first and last nonzero sigma, then a DDIM step into 0 if the
    schedule ends in 0 (1 call; a flow schedule from ``sigma = 1`` also starts with one DDIM step to ``sigmas[1]``).
    Only the schedule's ends are used; the number of calls follows the tolerances. Any geometry; stochastic only
    with ``eta > 0``. The step into 0 returns ``D``.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    with tqdm(disable=disable) as pbar:
        solver = _Solver(run, pbar, eta, s_noise)

        def integrate(x, lam_start, lam_end, ddim_calls):
            return _adaptive(solver, x, lam_start, lam_end, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff,
                             accept_safety)[0]

        x = _on_schedule(solver, run.x, integrate)
    return run.finish(x)
