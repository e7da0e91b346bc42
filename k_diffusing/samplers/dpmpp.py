"""DPM-Solver++ family in data prediction (Lu et al. 2022b, arXiv 2211.01095), written with ``alpha`` and the half
log-SNR ``lambda = log(alpha / sigma)`` of the model's geometry, so one formula is exact for VE and flow models.

The first-order step of all of them is DDIM in data prediction (Lu et al. 2022b, Eq. 8):
``x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D``, ``h = lambda_t - lambda_s``. At flow ``sigma_s = 1``
(``lambda_s = -inf``, ``h = inf``) it is the exact limit ``x_t = sigma_t x_s + alpha_t D``.
"""

from __future__ import annotations

import math

import torch

from .base import SamplerRun


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M), Lu et al. 2022b (arXiv 2211.01095), Alg. 2.

    Any geometry. Order 2, 1 call per step, deterministic. First-order (DDIM) on the first step, after an infinite
    step (flow ``sigma = 1``, where the correction's limit is 0) and on the step into sigma = 0, which returns ``D``.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
            denoised_d = denoised
            if old_denoised is not None and math.isfinite(h_last):
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - geo.alpha(sigma_next) * math.expm1(-h) * denoised_d
            h_last = h
        old_denoised = denoised
    return run.finish(x)


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint", *, generator=None):
    """DPM-Solver++(2M) SDE, Lu et al. 2022b (arXiv 2211.01095), Sec. 4 / App. with the SDE variant of the
    first-order step (Gonzalez et al. 2023, SEEDS, arXiv 2305.14267, Eq. 9); k-diffusion's ``sample_dpmpp_2m_sde``.

    ``x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-(1 + eta) h}) D + sigma_t sqrt(1 - e^{-2 eta h}) z``
    plus a second-order correction from the previous ``D`` (``solver_type`` 'midpoint' or 'heun').
    Any geometry. Order 2 as an ODE solver (eta = 0), 1 call per step, stochastic (Brownian tree by default,
    per-item trees with a list of generators). The step into sigma = 0 returns ``D``.
    """
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator, brownian=True)
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
            alpha_next = geo.alpha(sigma_next)
            phi = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
            x = (sigma_next / sigma) * math.exp(-eta_h) * x + alpha_next * phi * denoised
            if old_denoised is not None and math.isfinite(h_last):
                r = h_last / h
                if solver_type == "heun":
                    coeff = phi / (-h - eta_h) + 1
                else:
                    coeff = 0.5 * phi
                x = x + alpha_next * coeff * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + run.noise(sigma, sigma_next) * sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old_denoised = denoised
    return run.finish(x)
