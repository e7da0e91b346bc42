"""Explicit Euler-type steps on the probability-flow ODE in sigma (Karras et al. 2022, arXiv 2206.00364)."""

from __future__ import annotations

import math

import torch

from .base import SamplerRun, churn, to_d


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=math.inf, s_noise=1.0, noise_sampler=None, *, generator=None):
    """Euler steps with optional churn, Karras et al. 2022 (arXiv 2206.00364) Alg. 2 without the 2nd-order correction.

    Any geometry (the ODE ``dx/dsigma = (x - D) / sigma`` holds in VE and flow; on flow models this is diffusers'
    FlowMatchEulerDiscreteScheduler). Order 1, 1 model call per step; stochastic only with ``s_churn > 0``.
    The step into sigma = 0 lands on ``D`` exactly.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = churn(run, x, sigma, s_churn, s_tmin, s_tmax, s_noise)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, sigma_hat, denoised)
        x = to_d(x, sigma_hat, denoised).mul_(sigma_next - sigma_hat).add_(x)  # = x + d dt, one allocation
    return run.finish(x)


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, *, generator=None):
    """Ancestral Euler: an Euler (DDIM) step to ``sigma_down``, then fresh noise up to ``sigma_next``
    (Ho et al. 2020, arXiv 2006.11239, Alg. 2, in Karras et al.'s sigma parametrisation; k-diffusion's
    ``sample_euler_ancestral``).

    Any geometry: the split ``(sigma_down, sigma_up)`` comes from :meth:`Geometry.ancestral_step`, so ``eta = 1`` is
    the DDPM posterior step on flow models too. Order 1, 1 call per step, stochastic (``eta``, ``s_noise``).
    No noise is added on the step into sigma = 0.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        step = run.geometry.ancestral_step(sigma, sigma_next, eta)
        x = x + to_d(x, sigma, denoised) * (step.sigma_down - sigma)
        if sigma_next > 0:
            x = step.x_scale * x + step.sigma_up * s_noise * run.noise(sigma, sigma_next)
    return run.finish(x)


def _dpm_2_step(run: SamplerRun, x: torch.Tensor, sigma: float, sigma_to: float, d: torch.Tensor) -> torch.Tensor:
    """One DPM-Solver-2 step in VE form from ``sigma`` to ``sigma_to`` given ``d = dx/dsigma`` at ``sigma``: an
    Euler half step to the midpoint in log sigma, then the full step with the midpoint's derivative (Lu et al. 2022,
    arXiv 2206.00927, DPM-Solver-2 with r1 = 1/2, as k-diffusion writes it). A plain Euler step when
    ``sigma_to = 0``."""
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = math.sqrt(sigma * sigma_to)  # exp(lerp(log sigma, log sigma_to, 1/2))
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, run.denoise(x_mid, sigma_mid))
    return x + d_mid * (sigma_to - sigma)


def heun_step(run: SamplerRun, x: torch.Tensor, sigma: float, sigma_next: float,
              denoised: torch.Tensor) -> torch.Tensor:
    """Heun's step on ``dx/dsigma = (x - D) / sigma`` given ``D(x, sigma)``, Karras et al. 2022
    (arXiv 2206.00364), Alg. 2 lines 7-11: Euler predictor, trapezoidal corrector (1 more call); a plain Euler step
    into sigma = 0."""
    d = to_d(x, sigma, denoised)  # line 7
    x_next = x + d * (sigma_next - sigma)  # line 8
    if sigma_next == 0:
        return x_next
    d_next = to_d(x_next, sigma_next, run.denoise(x_next, sigma_next))  # lines 9-11
    return x + (d + d_next) / 2 * (sigma_next - sigma)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=math.inf, s_noise=1.0, noise_sampler=None, *, generator=None):
    """Heun steps with optional churn, Karras et al. 2022 (arXiv 2206.00364), Alg. 2.

    Any geometry: Heun's method on ``dx/dsigma = (x - D) / sigma``, which on flow models is Heun in flow coordinates
    (diffusers' FlowMatchHeunDiscreteScheduler). Order 2, 2 model calls per step; stochastic only with
    ``s_churn > 0``. The step into sigma = 0 is a plain Euler step (1 call, Alg. 2 line 9), landing on ``D``.
    Unlike k-diffusion, which draws ``randn_like(x)`` on every step even when ``gamma = 0``, noise is drawn only on
    steps that churn (same results; the global RNG is left untouched otherwise).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = churn(run, x, sigma, s_churn, s_tmin, s_tmax, s_noise)  # lines 4-6
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, sigma_hat, denoised)
        x = heun_step(run, x, sigma_hat, sigma_next, denoised)
    return run.finish(x)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=math.inf, s_noise=1.0, noise_sampler=None, *, generator=None):
    """DPM-Solver-2 in VE form, Lu et al. 2022 (arXiv 2206.00927), DPM-Solver-2 with r1 = 1/2, plus the churn of
    Karras et al. 2022 (arXiv 2206.00364), Alg. 2; k-diffusion's ``sample_dpm_2``.

    In VE, ``x + (sigma_t - sigma_s) eps`` is the DPM-Solver-1 (DDIM) step, so DPM-Solver-2 is the ODE
    ``dx/dsigma = (x - D) / sigma`` integrated with its derivative at the midpoint in log sigma. The same formula on
    a flow model is a second-order Runge-Kutta step in flow sigma (the geometric mean differs from the arithmetic
    one by O(h^2)), so it needs no geometry. Order 2, 2 calls per step; stochastic only with ``s_churn > 0``
    (noise drawn only on steps that churn, unlike k-diffusion). The step into sigma = 0 is an Euler step (1 call).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = churn(run, x, sigma, s_churn, s_tmin, s_tmax, s_noise)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, sigma_hat, denoised)
        x = _dpm_2_step(run, x, sigma_hat, sigma_next, to_d(x, sigma_hat, denoised))
    return run.finish(x)


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None, *, generator=None):
    """Ancestral DPM-Solver-2: a DPM-Solver-2 step (Lu et al. 2022, arXiv 2206.00927, VE form, r1 = 1/2) to
    ``sigma_down``, then fresh noise up to ``sigma_next`` (Ho et al. 2020, arXiv 2006.11239, Eq. 7);
    k-diffusion's ``sample_dpm_2_ancestral``.

    Any geometry: the split comes from :meth:`Geometry.ancestral_step` (in VE units, mapped back), so ``eta = 1``
    is the DDPM posterior step on flow models too; from flow sigma = 1 that step goes to ``sigma_down = 0``, i.e.
    ``x = alpha_next D + sigma_next z``. Order 2 as an ODE solver (eta = 0), 2 calls per step (1 when
    ``sigma_down = 0``), stochastic (``eta``, ``s_noise``). No noise is drawn where ``sigma_up = 0`` (the step into
    sigma = 0, or ``eta = 0``). Where ``eta > 1`` makes ``sigma_down = 0`` before the last step, noise is still added
    (k-diffusion skips it there and returns a sample at sigma = 0 in the middle of the schedule).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        step = run.geometry.ancestral_step(sigma, sigma_next, eta)
        x = _dpm_2_step(run, x, sigma, step.sigma_down, to_d(x, sigma, denoised))
        if step.sigma_up > 0:  # else sigma_down = sigma_next and x_scale = 1
            x = step.x_scale * x + step.sigma_up * s_noise * run.noise(sigma, sigma_next)
    return run.finish(x)


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                   s_tmax=math.inf, s_noise=1.0, noise_sampler=None, *, generator=None):
    """Heun++ ("Heun++test2"), ComfyUI's ``heunpp2``; no paper: the method comes from Carzit's A1111 extensions
    sd-webui-sampler-heunpp / sd-webui-samplers-scheduler (MIT), built on Karras et al. 2022 (arXiv 2206.00364),
    Alg. 2 (with its churn).

    Predictor: Euler steps from ``sigma_hat`` to ``sigma_{i+1}`` and on to ``sigma_{i+2}``, giving derivatives
    ``d1, d2, d3`` there. Update ``x + (w1 d1 + w2 d2 + w3 d3) (sigma_{i+1} - sigma_hat)`` with
    ``w2 = sigma_{i+1} / (3 sigma_0)``, ``w3 = sigma_{i+2} / (3 sigma_0)``, ``w1 = 1 - w2 - w3`` (``sigma_0`` the
    first sigma of the schedule); on the second-to-last step only ``d1, d2`` with ``w2 = sigma_{i+1} / (2 sigma_0)``;
    the last step is Euler (even where the schedule ends above 0, as in ComfyUI). The weights sum to 1 but do not
    meet Heun's second-order condition (they shrink with sigma, so the method tends to Euler at low noise): it is
    first order (measured ~1 in both geometries).
    Any geometry (the ODE in sigma; weights are ratios of the schedule's own sigmas). 3 calls per step, 2 on the
    second-to-last, 1 on the last (into sigma = 0 it lands on ``D``); stochastic only with ``s_churn > 0`` (noise
    drawn only on steps that churn).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x, s = run.x, run.sigmas
    last = len(s) - 2
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = churn(run, x, sigma, s_churn, s_tmin, s_tmax, s_noise)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        x_2 = x + d * dt
        if i == last:
            x = x_2
            continue
        d_2 = to_d(x_2, sigma_next, run.denoise(x_2, sigma_next))
        if i == last - 1:
            w2 = sigma_next / (2 * s[0])
            d_prime = (1 - w2) * d + w2 * d_2
        else:
            sigma_after = s[i + 2]
            x_3 = x_2 + d_2 * (sigma_after - sigma_next)
            d_3 = to_d(x_3, sigma_after, run.denoise(x_3, sigma_after))
            w2, w3 = sigma_next / (3 * s[0]), sigma_after / (3 * s[0])
            d_prime = (1 - w2 - w3) * d + w2 * d_2 + w3 * d_3
        x = x + d_prime * dt
    return run.finish(x)
