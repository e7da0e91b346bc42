"""Samplers that step through the clean-data estimate: the DDPM posterior step (Ho et al. 2020) and multistep
consistency sampling (LCM, Luo et al. 2023)."""

from __future__ import annotations

import torch

from .base import SamplerRun
from .euler import sample_euler_ancestral


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, *,
                generator=None):
    """DDPM ancestral sampling, Ho et al. 2020 (arXiv 2006.11239), Alg. 2 with ``x0 = D`` (Eq. 6-7): a draw from the
    posterior ``q(x_next | x, x0 = D)`` every step.

    Why it is :func:`sample_euler_ancestral` with ``eta = 1``: in VE units ``x = x0 + s eps``, the forward step
    ``x = x_next + sqrt(s^2 - s'^2) xi`` makes the posterior ``N(D + (s'^2 / s^2)(x - D), s'^2 (s^2 - s'^2) / s^2)``;
    the ancestral split has ``sigma_up^2 = s'^2 (s^2 - s'^2) / s^2`` and ``sigma_down = s'^2 / s``, so its Euler step
    ``D + (sigma_down / s)(x - D)`` plus ``sigma_up z`` is that same draw.

    Any geometry (the split is done in VE units by :meth:`Geometry.ancestral_step`, so this is the DDPM posterior on
    flow models too). Order 1, 1 call per step, stochastic. The variance is the posterior one (``beta~_t``, Ho et al.
    Sec. 3.2; diffusers' DDPMScheduler ``variance_type='fixed_small'``), and skipping levels gives the posterior of
    the coarser chain, as in diffusers with fewer inference steps. As in Alg. 2 (``z = 0`` when ``t = 1``), no noise
    is added on the step into sigma = 0, which returns ``D``; a schedule that ends above 0 ends with a noisy draw.
    Noise: ``noise_sampler`` or independent Gaussian draws from ``generator``.
    """
    return sample_euler_ancestral(model, x, sigmas, extra_args, callback, disable, eta=1.0, s_noise=1.0,
                                  noise_sampler=noise_sampler, generator=generator)


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, *, generator=None):
    """Multistep consistency sampling, Luo et al. 2023 (arXiv 2310.04378), Alg. 3 (after Song et al. 2023,
    arXiv 2303.01469, Alg. 1): ``x0 = D(x, sigma)``, then fresh noise from level 0 up to ``sigma_next``:
    ``x = alpha(sigma_next) x0 + sigma_next z``.

    Any geometry (re-noising by :meth:`Geometry.renoise`). 1 call per step, stochastic; the step into sigma = 0
    returns ``D`` without noise. Not a solver of the diffusion ODE/SDE: with an exact denoiser it returns a posterior
    mean at the last nonzero sigma, which under-disperses (meant for consistency-distilled models).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            up = run.geometry.renoise(0.0, sigma_next)
            x = up.x_scale * x + up.noise_std * run.noise(sigma, sigma_next)
    return run.finish(x)
