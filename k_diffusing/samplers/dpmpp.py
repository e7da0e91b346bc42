"""DPM-Solver++ family in data prediction (Lu et al. 2022b, arXiv 2211.01095), written with ``alpha`` and the half
log-SNR ``lambda = log(alpha / sigma)`` of the model's geometry, so one formula is exact for VE and flow models.

The first-order step of all of them is DDIM in data prediction (Lu et al. 2022b, Eq. 8):
``x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D``, ``h = lambda_t - lambda_s``. At flow ``sigma_s = 1``
(``lambda_s = -inf``, ``h = inf``) it is the exact limit ``x_t = sigma_t x_s + alpha_t D``; into ``sigma_t = 0`` it
returns ``D``. Ancestral variants step deterministically to ``sigma_down`` and add noise with
:meth:`Geometry.ancestral_step`'s split; SDE variants use the SDE form of the first-order step
(:func:`sde_data_step`, :func:`sde_noise`).

Higher-order stages or history taken across an infinite step (flow ``sigma = 1``) have the first-order step as their
exact limit, so they are skipped there (``math.isfinite(h)``).
"""

from __future__ import annotations

import functools
import math

import torch

from ..geometry import AncestralStep, Geometry
from .base import SamplerRun


def data_step(geo: Geometry, x: torch.Tensor, sigma: float, sigma_to: float, denoised: torch.Tensor) -> torch.Tensor:
    """First-order data-prediction (DDIM) step from ``sigma`` to ``sigma_to``, Lu et al. 2022b, Eq. 8:
    ``(sigma_to / sigma) x - alpha_to expm1(-h) D``. Finite at ``sigma_to = 0`` (gives ``D``) and at flow
    ``sigma = 1`` (gives ``sigma_to x + alpha_to D``)."""
    h = geo.half_log_snr(sigma_to) - geo.half_log_snr(sigma)
    return (sigma_to / sigma) * x - geo.alpha(sigma_to) * math.expm1(-h) * denoised


def ancestral_noise(run: SamplerRun, x_down: torch.Tensor, step: AncestralStep, sigma: float, sigma_next: float,
                    s_noise: float) -> torch.Tensor:
    """Second half of an ancestral step: ``x_next = x_scale x_down + sigma_up s_noise z``; no draw when
    ``sigma_up = 0`` (``eta = 0`` or the step into sigma = 0)."""
    if step.sigma_up == 0:
        return x_down
    return step.x_scale * x_down + step.sigma_up * s_noise * run.noise(sigma, sigma_next)


def ancestral_data_step(run: SamplerRun, x: torch.Tensor, sigma: float, sigma_next: float, denoised: torch.Tensor,
                        eta: float, s_noise: float) -> torch.Tensor:
    """A :func:`data_step` to ``sigma_down`` then fresh noise up to ``sigma_next`` (:meth:`Geometry.ancestral_step`);
    with ``eta = 0`` this is the plain DDIM step."""
    step = run.geometry.ancestral_step(sigma, sigma_next, eta)
    return ancestral_noise(run, data_step(run.geometry, x, sigma, step.sigma_down, denoised), step, sigma,
                           sigma_next, s_noise)


def check_brownian(brownian: bool, noise_sampler) -> None:
    """The multistep SDE samplers' noise choice. ``brownian=True`` (default): a Brownian tree, k-diffusion's and
    ComfyUI's noise, so a seed gives the same Brownian path whatever the step count. ``brownian=False``: independent
    Gaussian draws per step, as diffusers' SDE-DPM-Solver++ draws them; the same distribution (each step needs one
    increment over its own interval) with one draw a step instead of some 15-19 (a tree query descends about 24
    levels; the tree computes them ahead, off the critical path: ``benchmarks/RESULTS.md`` section 7), but the noise
    is tied to the step index instead of the sigma interval. An explicit ``noise_sampler`` decides by itself, so
    ``brownian=False`` with one is refused."""
    if not isinstance(brownian, bool):
        raise TypeError(f"brownian must be True or False, got {brownian!r}")
    if noise_sampler is not None and not brownian:
        raise ValueError("brownian=False has no effect with an explicit noise_sampler; pass one or the other")


def sde_data_step(geo: Geometry, x: torch.Tensor, sigma: float, sigma_next: float, denoised: torch.Tensor,
                  h: float, eta_h: float) -> torch.Tensor:
    """Deterministic part of the first-order SDE-DPM-Solver++ step (Lu et al. 2022b, App. / Gonzalez et al. 2023,
    arXiv 2305.14267, Eq. 9, with k-diffusion's ``eta``): ``(sigma_t / sigma_s) e^{-eta h} x_s
    + alpha_t (1 - e^{-(1 + eta) h}) D``."""
    return (sigma_next / sigma) * math.exp(-eta_h) * x + geo.alpha(sigma_next) * -math.expm1(-h - eta_h) * denoised


def sde_noise(run: SamplerRun, x: torch.Tensor, sigma: float, sigma_next: float, eta_h: float,
              s_noise: float) -> torch.Tensor:
    """Noise of the SDE step, ``+ sigma_t sqrt(1 - e^{-2 eta h}) s_noise z``; no draw for ``eta = 0``."""
    if not eta_h:
        return x
    return x + run.noise(sigma, sigma_next) * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise


# diffusers' DPMSolverMultistep and DEIS schedulers lower the order of their last steps (``lower_order_final``) only
# on schedules of fewer steps than this.
DIFFUSERS_LOWER_ORDER_BELOW = 15


def diffusers_order(i: int, n_steps: int, order: int, lower_order_final: bool) -> int:
    """The order diffusers' ``DPMSolverMultistepScheduler`` and ``DEISMultistepScheduler`` take at step ``i`` of
    ``n_steps`` after their warm-up, for solver order ``order``: ``min(order, n_steps - i)`` (first order on the last
    step, at most second on the one before: their ``lower_order_final`` and ``lower_order_second``) on a schedule of
    fewer than 15 steps with ``lower_order_final``, else ``order``."""
    if lower_order_final and n_steps < DIFFUSERS_LOWER_ORDER_BELOW:
        return min(order, n_steps - i)
    return order


def final_denoise(run: SamplerRun, x: torch.Tensor) -> torch.Tensor:
    """``D(x, sigma_last)``: one more model call at the schedule's last sigma, reported to the callback as step
    ``len(run.sigmas) - 1`` (one past the last step). diffusers' multistep schedulers (DPMSolverMultistep, UniPC,
    DEIS) make this call on a schedule that ends on a repeated sigma (``final_sigmas_type='sigma_min'`` with Karras,
    exponential, beta or flow sigmas): their last step has length zero and leaves the sample unchanged (UniPC first
    corrects the step before with the call's output)."""
    sigma = run.sigmas[-1]
    denoised = run.denoise(x, sigma)
    run.report(len(run.sigmas) - 1, x, sigma, sigma, denoised)
    return denoised


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, *, lower_order_final=False,
                    final_call=False):
    """DPM-Solver++(2M), Lu et al. 2022b (arXiv 2211.01095), Alg. 2.

    Any geometry. Order 2, 1 call per step, deterministic. First-order (DDIM) on the first step, after an infinite
    step (flow ``sigma = 1``, where the correction's limit is 0) and on the step into sigma = 0, which returns ``D``.

    The defaults are k-diffusion's. Two options reproduce diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++,
    order 2, midpoint) on schedules that end above 0 (``final_sigmas_type='sigma_min'``):
        lower_order_final: on a schedule of fewer than 15 steps (the final call counted), the last step is first
            order too (:func:`diffusers_order`; diffusers' ``lower_order_final``).
        final_call: on a schedule ending above 0, call the model once more at the last sigma and return the sample
            unchanged (:func:`final_denoise`): diffusers' zero-length last step on a schedule ending on a repeated
            sigma. The result is that of the run without it; only the calls differ.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    final = final_call and run.sigmas[-1] > 0
    n_steps = len(run.sigmas) - 1 + final
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
            denoised_d = denoised
            second_order = diffusers_order(i, n_steps, 2, lower_order_final) == 2
            if old_denoised is not None and math.isfinite(h_last) and second_order:
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = data_step(geo, x, sigma, sigma_next, denoised_d)
            h_last = h
        old_denoised = denoised
    if final:
        final_denoise(run, x)
    return run.finish(x)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                              noise_sampler=None, *, generator=None):
    """DPM-Solver++(2S) with ancestral noise, Lu et al. 2022b (arXiv 2211.01095), Alg. 1 with ``r = 1/2``;
    k-diffusion's ``sample_dpmpp_2s_ancestral``.

    Each step splits ``sigma -> sigma_next`` with :meth:`Geometry.ancestral_step`, takes a 2S step to
    ``sigma_down`` (midpoint in ``lambda``) and adds noise up to ``sigma_next``. Any geometry. Order 2 as an ODE
    solver (``eta = 0``), 2 calls per step; stochastic (``eta``, ``s_noise``; Gaussian noise). 1 call on the step into
    sigma = 0 (``sigma_down = 0``: Euler/DDIM step, returns ``D``) and on a step from flow ``sigma = 1``
    (``lambda = -inf``: the midpoint coincides with the start, the exact limit is DDIM).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        step = geo.ancestral_step(sigma, sigma_next, eta)
        lam = geo.half_log_snr(sigma)
        h = geo.half_log_snr(step.sigma_down) - lam
        if math.isfinite(h):
            # Alg. 1 lines 3-5: u = DDIM to the midpoint s (lambda_s = lambda + h / 2), D = D(u, s)
            sigma_mid = geo.sigma_at(lam + h / 2)
            denoised = run.denoise(data_step(geo, x, sigma, sigma_mid, denoised), sigma_mid)
        # Alg. 1 line 6 with r = 1/2 (D_i = D(u)), then the ancestral noise
        x = ancestral_noise(run, data_step(geo, x, sigma, step.sigma_down, denoised), step, sigma, sigma_next,
                            s_noise)
    return run.finish(x)


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler=None, r=1 / 2, *, generator=None, brownian=True):
    """DPM-Solver++ (stochastic): DPM-Solver++(2S), Lu et al. 2022b (arXiv 2211.01095), Alg. 1, with an ancestral
    split at both stages; k-diffusion's ``sample_dpmpp_sde``.

    Stage 1: ancestral DDIM step from ``sigma`` to ``sigma_s`` (``lambda_s = lambda + r h``), ``D_2 = D(u, sigma_s)``.
    Stage 2: ancestral DDIM step from ``sigma`` to ``sigma_next`` with ``(1 - 1/(2r)) D + 1/(2r) D_2``. Any geometry
    (splits from :meth:`Geometry.ancestral_step`). Order 2 as an ODE solver (``eta = 0``), 2 calls per step;
    stochastic (``eta``, ``s_noise``, Brownian-tree noise by default, per-item trees with a list of generators;
    ``brownian=False``: see :func:`check_brownian`). 1 call on the step into sigma = 0 (Euler/DDIM step, returns
    ``D``) and on a step from flow ``sigma = 1`` (the stage collapses onto the start: ancestral DDIM step, the exact
    limit).
    """
    check_brownian(brownian, noise_sampler)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator, brownian=brownian,
                     replay=functools.partial(sample_dpmpp_sde, eta=eta, s_noise=s_noise, r=r))
    geo, x = run.geometry, run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        lam = geo.half_log_snr(sigma)
        h = geo.half_log_snr(sigma_next) - lam
        if math.isfinite(h):
            sigma_s = geo.sigma_at(lam + r * h)
            x_2 = ancestral_data_step(run, x, sigma, sigma_s, denoised, eta, s_noise)
            denoised_2 = run.denoise(x_2, sigma_s)
            fac = 1 / (2 * r)
            denoised = (1 - fac) * denoised + fac * denoised_2
        x = ancestral_data_step(run, x, sigma, sigma_next, denoised, eta, s_noise)
    return run.finish(x)


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint", *, generator=None, brownian=True):
    """DPM-Solver++(2M) SDE, Lu et al. 2022b (arXiv 2211.01095), Sec. 4 / App. with the SDE variant of the
    first-order step (Gonzalez et al. 2023, SEEDS, arXiv 2305.14267, Eq. 9); k-diffusion's ``sample_dpmpp_2m_sde``.

    ``x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-(1 + eta) h}) D + sigma_t sqrt(1 - e^{-2 eta h}) z``
    plus a second-order correction from the previous ``D`` (``solver_type`` 'midpoint' or 'heun').
    Any geometry. Order 2 as an ODE solver (eta = 0), 1 call per step, stochastic (Brownian tree by default,
    per-item trees with a list of generators; ``brownian=False``: see :func:`check_brownian`). The step into
    sigma = 0 returns ``D``.
    """
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    check_brownian(brownian, noise_sampler)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator, brownian=brownian,
                     replay=functools.partial(sample_dpmpp_2m_sde, eta=eta, s_noise=s_noise, solver_type=solver_type))
    geo, x = run.geometry, run.x
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
            eta_h = eta * h if eta else 0.0
            x = sde_data_step(geo, x, sigma, sigma_next, denoised, h, eta_h)
            if old_denoised is not None and math.isfinite(h_last):
                r = h_last / h
                phi = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
                if solver_type == "heun":
                    coeff = phi / (-h - eta_h) + 1
                else:
                    coeff = 0.5 * phi
                x = x + geo.alpha(sigma_next) * coeff * (1 / r) * (denoised - old_denoised)
            x = sde_noise(run, x, sigma, sigma_next, eta_h, s_noise)
            h_last = h
        old_denoised = denoised
    return run.finish(x)


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, *, generator=None, brownian=True):
    """DPM-Solver++(3M) SDE: third-order multistep DPM-Solver++ (Lu et al. 2022b, arXiv 2211.01095, Sec. 4, order-3
    multistep update) on the SDE first-order step of :func:`sample_dpmpp_2m_sde`; k-diffusion's
    ``sample_dpmpp_3m_sde``.

    With ``h_eta = (1 + eta) h``, ``phi_2 = (e^{-h_eta} - 1) / h_eta + 1``, ``phi_3 = phi_2 / h_eta - 1/2`` and the
    divided differences ``d1, d2`` of the last three ``D`` in ``lambda`` (scaled by ``h``), the step adds
    ``alpha_t (phi_2 d1 - phi_3 d2)`` to :func:`sde_data_step`. Any geometry. 1 call per step; first order on the
    first step, second order on the second (and after an infinite step from flow ``sigma = 1``, whose history is
    unusable). Stochastic (Brownian tree by default; ``brownian=False``: see :func:`check_brownian`). The step into
    sigma = 0 returns ``D``.

    Order: designed as 3; kept bit-compatible with k-diffusion (and the 3M update of DPM-Solver's reference code and
    diffusers), whose ``d2 ~ h^2 D''/2`` carries half the weight the ``phi_3`` term needs (``h^2 D''``). Measured as
    an ODE solver (``eta = 0``): slopes 2.5, 2.5, 2.3, 2.1 from 20 to 320 steps, i.e. order 2 asymptotically.
    """
    check_brownian(brownian, noise_sampler)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator, brownian=brownian,
                     replay=functools.partial(sample_dpmpp_3m_sde, eta=eta, s_noise=s_noise))
    geo, x = run.geometry, run.x
    denoised_1, denoised_2 = None, None
    h_1, h_2 = None, None  # the last two finite steps in lambda (None: no usable history)
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
        eta_h = eta * h if eta else 0.0
        x = sde_data_step(geo, x, sigma, sigma_next, denoised, h, eta_h)
        if h_1 is not None:
            h_eta = h + eta_h
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            d1_0 = (denoised - denoised_1) / (h_1 / h)
            if h_2 is not None:
                # third order: quadratic extrapolation of D in lambda through the last three values
                r0, r1 = h_1 / h, h_2 / h
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + geo.alpha(sigma_next) * (phi_2 * d1 - phi_3 * d2)
            else:
                x = x + geo.alpha(sigma_next) * phi_2 * d1_0
        x = sde_noise(run, x, sigma, sigma_next, eta_h, s_noise)
        finite = math.isfinite(h)
        denoised_1, denoised_2 = (denoised, denoised_1) if finite else (None, None)
        h_1, h_2 = (h, h_1) if finite else (None, None)
    return run.finish(x)
