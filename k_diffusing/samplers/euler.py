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
        x = x + to_d(x, sigma_hat, denoised) * (sigma_next - sigma_hat)
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
