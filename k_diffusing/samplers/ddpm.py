"""Samplers that step through the clean-data estimate: the DDPM posterior step (Ho et al. 2020), multistep
consistency sampling (LCM, Luo et al. 2023) and TCD's strategic stochastic sampling (Zheng et al. 2024)."""

from __future__ import annotations

import math

import torch

from .base import SamplerRun, sigmas_to_list, to_d
from .dpmpp import final_denoise
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
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, *, generator=None,
               s_noise=1.0, sigma_min=0.0, final_call=False):
    """Multistep consistency sampling, Luo et al. 2023 (arXiv 2310.04378), Alg. 3 (after Song et al. 2023,
    arXiv 2303.01469, Alg. 1): ``x0 = D(x, sigma)``, then fresh noise from level ``sigma_min`` up to ``sigma_next``:
    ``x = (alpha(sigma_next) / alpha(sigma_min)) x0 + sqrt(sigma_next^2 - sigma_min^2) s_noise z`` (VE variances).

    ``sigma_min``: Song et al.'s boundary ``epsilon`` (0 for LCM): a consistency model's ``D(x, sigma)`` estimates
    the sample at level ``epsilon`` (its ``D(x, epsilon) = x``), so Alg. 1 re-noises by ``sqrt(tau^2 - epsilon^2)``
    and a step that ends at ``epsilon`` adds nothing. ``s_noise`` scales that noise (diffusers'
    CMStochasticIterativeScheduler's ``s_noise``; 1 puts the sample at ``sigma_next``). ``final_call``: on a
    schedule ending above 0, one more step from the last sigma to itself (a call, ``D``, re-noising): diffusers'
    zero-length last step on a schedule ending on a repeated sigma, which a consistency step does not leave unchanged
    (CMStochasticIterativeScheduler's run that reaches ``sigma_min``: its 40 steps, or custom timesteps with 39).

    Any geometry (re-noising by :meth:`Geometry.renoise`). 1 call per step, stochastic; a step ending at or below
    ``sigma_min`` (the step into sigma = 0) returns ``D`` without noise. Not a solver of the diffusion ODE/SDE: with
    an exact denoiser it returns a posterior mean at the last nonzero sigma, which under-disperses (meant for
    consistency-distilled models).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)

    def renoised(denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        if sigma_next <= sigma_min:
            return denoised
        up = run.geometry.renoise(sigma_min, sigma_next)
        return up.x_scale * denoised + up.noise_std * s_noise * run.noise(sigma, sigma_next)

    x = run.x
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        x = renoised(denoised, sigma, sigma_next)
    if final_call and run.sigmas[-1] > 0:
        x = renoised(final_denoise(run, x), run.sigmas[-1], run.sigmas[-1])
    return run.finish(x)


def check_gamma(gamma: float) -> float:
    """TCD's ``gamma`` as a float in ``[0, 1]`` (diffusers' TCDScheduler ``step(eta=...)`` asserts the same range)."""
    value = float(gamma)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1] (0: DDIM, 1: LCM-like, TCD's default 0.3), got {gamma!r}")
    return value


def tcd_default_sigmas_s(sigmas: list[float], gamma: float) -> list[float]:
    """TCD's intermediate level of each step of the schedule ``sigmas`` (as :class:`SamplerRun` walks it, without
    zero-length steps) when none are given: ``sigma_s = (1 - gamma) sigma_next``, and ``sigma_next`` itself on the
    last step (TCD's ``s = floor((1 - gamma) t_prev)`` with ``t_prev = 0`` there: the schedule's end).

    In flow geometry TCD's time is ``t = 1000 sigma``, so this is TCD's own rule without the integer floor; in VE it
    is the same rule read as a continuous stand-in (TCD's grid lives on a model's integer timesteps, which a bridge
    passes as ``sigmas_s``, :func:`tcd_given_sigmas_s`)."""
    return [(1.0 - gamma) * s for s in sigmas[1:-1]] + sigmas[-1:] if len(sigmas) > 1 else []


def tcd_given_sigmas_s(sigmas: list[float], gamma: float, sigmas_s) -> list[float]:
    """The caller's intermediate levels, checked against the schedule ``sigmas`` as passed (zero-length steps
    included): one per step, each in ``[0, sigma_next]``; with ``gamma = 0`` nothing is re-noised, so each must
    equal its ``sigma_next`` (a lower one would leave the sample at ``sigma_s``). Returns those of the steps that
    :class:`SamplerRun` walks: the entries of zero-length steps are dropped, as
    :func:`~k_diffusing.samplers.base.distinct_sigmas` drops the steps."""
    if isinstance(sigmas_s, torch.Tensor):
        given = sigmas_s.detach().to("cpu", torch.float64).reshape(-1).tolist()
    else:
        given = [float(s) for s in sigmas_s]
    if len(given) != len(sigmas) - 1:
        raise ValueError(f"sigmas_s must hold one sigma per step ({len(sigmas) - 1} for the {len(sigmas)} sigmas "
                         f"{sigmas}), got {len(given)}: {given}")
    for i, (sigma_next, sigma_s) in enumerate(zip(sigmas[1:], given)):
        if not (math.isfinite(sigma_s) and 0.0 <= sigma_s <= sigma_next):
            raise ValueError(f"sigmas_s[{i}] must lie in [0, sigma_next = {sigma_next!r}] (the intermediate level "
                             f"of step {i}), got {sigma_s!r}")
        if gamma == 0 and sigma_s != sigma_next:
            raise ValueError(f"with gamma = 0 TCD re-noises nothing, so sigmas_s must equal the next sigmas; "
                             f"sigmas_s[{i}] = {sigma_s!r}, sigma_next = {sigma_next!r}")
    return [s for a, b, s in zip(sigmas, sigmas[1:], given) if b != a]


@torch.no_grad()
def sample_tcd(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, *,
               generator=None, gamma=0.3, sigmas_s=None):
    """Strategic stochastic sampling of Trajectory Consistency Distillation (TCD), Zheng et al. 2024
    (arXiv 2402.19159); diffusers' ``TCDScheduler.step`` with ``eta = gamma``.

    Each step predicts ``D`` at ``sigma``, takes the DDIM (Euler) step down to the intermediate level ``sigma_s``
    (``sigmas_s``, default :func:`tcd_default_sigmas_s`; TCD's ``s = floor((1 - gamma) t_prev)``), then, on every
    step but the last, re-noises forward from ``sigma_s`` to ``sigma_next`` with fresh noise. In VE units that is
    an ancestral step whose ``sigma_down`` is ``sigma_s``: ``x_s = D + (sigma_s / sigma)(x - D)``,
    ``x_next = x_s + sqrt(sigma_next^2 - sigma_s^2) z`` (TCD's VP form
    ``sqrt(a_prev / a_s) x_s + sqrt(1 - a_prev / a_s) z``).
    ``gamma = 0`` is DDIM (:func:`~k_diffusing.samplers.euler.sample_euler`); ``gamma = 1`` denoises to ``D`` and
    re-noises from 0, as :func:`sample_lcm` does (which also re-noises on a last step that ends above 0).

    Any geometry (the Euler step is DDIM in VE and flow alike; re-noising by :meth:`Geometry.renoise`). Order 1 as
    an ODE solver (``gamma = 0``), 1 call per step, stochastic for ``gamma > 0``. With ``gamma > 0`` noise is drawn on
    every step but the last, even where ``sigma_s = sigma_next`` (as TCDScheduler draws it), from ``noise_sampler``
    or ``generator`` (the draws equal diffusers' ``randn_tensor(shape, generator=...)``, as for euler_ancestral).
    The last step returns ``x_s`` without noise: the schedule's last sigma, which for TCD's own grid is
    ``sigma(alphas_cumprod[0])`` (0.0292 on SD's table), not 0. Not a solver of the diffusion SDE: for
    ``0 < gamma`` the sample does not follow the data distribution in general, even with an exact denoiser
    (each DDIM step to ``sigma_s`` under-disperses by ``s^2 (sigma - sigma_s)^2 / (s^2 + sigma^2)`` on Gaussian
    data of variance ``s^2``, and the fresh noise does not restore it); it is meant for TCD-distilled models.
    """
    gamma = check_gamma(gamma)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    if sigmas_s is None:
        intermediate = tcd_default_sigmas_s(run.sigmas, gamma)
    else:
        intermediate = tcd_given_sigmas_s(sigmas_to_list(sigmas), gamma, sigmas_s)
    x, last = run.x, len(run.sigmas) - 2
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        sigma_s = intermediate[i]
        x = x + to_d(x, sigma, denoised) * (sigma_s - sigma)  # DDIM to s: x_s = D + (sigma_s / sigma)(x - D)
        if gamma > 0 and i < last:
            up = run.geometry.renoise(sigma_s, sigma_next)  # forward q(x_next | x_s)
            x = up.x_scale * x + up.noise_std * run.noise(sigma, sigma_next)
    return run.finish(x)
