"""CFG++ samplers: classifier-free guidance whose renoising uses the unconditional estimate (Chung et al. 2024,
"CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models", arXiv 2406.08070).

CFG++'s DDIM step (the paper's Algorithm 1, Eq. 9) takes the guided Tweedie estimate ``D = D_u + lambda (D_c - D_u)``
as the clean part and the unconditional noise estimate ``eps_u = (x - alpha D_u) / sigma`` as the noise part:

    x_to = alpha(sigma_to) D + sigma_to eps_u = alpha_to D + (sigma_to / sigma) (x - alpha U),      U = D_u,

where ordinary CFG renoises with the guided ``eps`` (``U = D``). :func:`cfg_pp_step` writes that step with the
model's geometry (``alpha = 1`` in VE, ``1 - sigma`` in flow), so every sampler here is correct on flow models
without a branch on the model type; at flow ``sigma = 1`` (``alpha = 0``) it is ``sigma_to x + alpha_to D``, at
``sigma_to = 0`` it returns ``D``. In VE it is the authors' ``x = denoised + d_uncond * sigma_next`` (their
reference implementation, github.com/CFGpp-diffusion/CFGpp, ``latent_sdxl.py``).

Higher-order samplers follow the authors' DPM-Solver++(2M) and 2S pattern: the DDIM part becomes
:func:`cfg_pp_step`, the history carries the unconditional estimates, and the current step's correction uses the
guided one. With ``U = D`` (unconditional estimate equal to the conditional one) each sampler here is its base
sampler exactly (up to float rounding), which ``tests/test_cfg_pp.py`` checks in both geometries.

CFG++ is not a discretisation of one ODE: per step the guidance adds ``alpha_to (D - U)`` whatever the step size,
so its effect grows with the step count (the paper uses ``lambda`` in ``[0, 1]`` at its step counts). The model must
offer ``denoise_with_uncond`` (:class:`k_diffusing.CFGDenoiser`, or a K pipeline's scheduler, which evaluates the
unconditional branch at every scale).
"""

from __future__ import annotations

import math

import torch

from ..geometry import Geometry
from .base import SamplerRun, to_d, uses_uncond
from .dpmpp import ancestral_noise, data_step
from .exponential import exp_weights

CFG_PP_REFERENCE = "Chung et al. 2024, arXiv 2406.08070 (CFG++)"


def cfg_pp_step(geo: Geometry, x: torch.Tensor, sigma: float, sigma_to: float, denoised: torch.Tensor,
                uncond: torch.Tensor) -> torch.Tensor:
    """CFG++'s DDIM step (Chung et al. 2024, arXiv 2406.08070, Eq. 9): ``alpha_to D + (sigma_to / sigma)
    (x - alpha U)``, the guided clean estimate renoised with the unconditional noise estimate."""
    return geo.alpha(sigma_to) * denoised + (sigma_to / sigma) * (x - geo.alpha(sigma) * uncond)


def _report(run: SamplerRun, i: int, x, sigma: float, denoised, uncond) -> None:
    run.report(i, x, sigma, sigma, denoised, uncond_denoised=uncond)


@uses_uncond
@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler (DDIM) with CFG++: :func:`cfg_pp_step` from each sigma to the next (the paper's Algorithm 1; the
    authors' ``euler_cfg++``). Base: ``euler``. 1 call per step (both branches), deterministic."""
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    x = run.x
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        x = cfg_pp_step(run.geometry, x, sigma, sigma_next, denoised, uncond)
    return run.finish(x)


@uses_uncond
@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                  s_noise=1.0, noise_sampler=None, *, generator=None):
    """Ancestral Euler with CFG++: :func:`cfg_pp_step` to ``sigma_down``, then fresh noise up to ``sigma_next``
    (:meth:`Geometry.ancestral_step`; the authors' ``euler_a_cfg++``). Base: ``euler_ancestral``. Stochastic
    (``eta``, ``s_noise``); no noise on the step into sigma = 0."""
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        step = geo.ancestral_step(sigma, sigma_next, eta)
        x = ancestral_noise(run, cfg_pp_step(geo, x, sigma, step.sigma_down, denoised, uncond), step, sigma,
                            sigma_next, s_noise)
    return run.finish(x)


@uses_uncond
@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                     s_noise=1.0, noise_sampler=None, *, generator=None):
    """DPM-Solver++(2S) ancestral with CFG++, as the authors' reference ``dpm++_2s_a_cfg++``: the midpoint (half of
    the step in ``lambda`` towards ``sigma_down``) is the unconditional DDIM step from ``U``; the full step is
    :func:`cfg_pp_step` with the midpoint's guided and unconditional estimates; then the ancestral noise.
    Base: ``dpmpp_2s_ancestral`` (equal when ``U = D``).

    Departs from ComfyUI's ``dpmpp_2s_ancestral_cfg_pp`` (the version ported to Forge), which reaches the midpoint
    with the CFG++ step from the start's ``(D, U)`` and ends with the start's ``U`` and a blend of the start's and
    the midpoint's ``D``; this one is the authors'. Both equal the base when ``U = D``. 2 calls per step, 1 on the
    step into sigma = 0 and from flow ``sigma = 1`` (``lambda = -inf``: the exact limit is the DDIM step).
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        step = geo.ancestral_step(sigma, sigma_next, eta)
        lam = geo.half_log_snr(sigma)
        h = geo.half_log_snr(step.sigma_down) - lam
        if math.isfinite(h):
            sigma_mid = geo.sigma_at(lam + h / 2)
            denoised, uncond = run.denoise_with_uncond(data_step(geo, x, sigma, sigma_mid, uncond), sigma_mid)
        x = ancestral_noise(run, cfg_pp_step(geo, x, sigma, step.sigma_down, denoised, uncond), step, sigma,
                            sigma_next, s_noise)
    return run.finish(x)


@uses_uncond
@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) with CFG++, as the authors' reference ``dpm++_2m_cfg++``:
    ``x_next = cfg_pp_step(D, U) + alpha_next (1 - e^{-h}) (D - U_prev) / (2 r)`` with ``r = h_prev / h`` and the
    previous step's unconditional estimate ``U_prev``. Base: ``dpmpp_2m`` (equal when ``U = D``). 1 call per step,
    deterministic; first order on the first step, after an infinite step (flow ``sigma = 1``), and into sigma = 0
    (returns ``D``)."""
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    old_uncond, h_last = None, None
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        if sigma_next == 0:
            x = denoised
        else:
            h = geo.half_log_snr(sigma_next) - geo.half_log_snr(sigma)
            x_next = cfg_pp_step(geo, x, sigma, sigma_next, denoised, uncond)
            if old_uncond is not None and math.isfinite(h_last):
                r = h_last / h
                x_next = x_next - geo.alpha(sigma_next) * math.expm1(-h) / (2 * r) * (denoised - old_uncond)
            x, h_last = x_next, h
        old_uncond = uncond
    return run.finish(x)


def _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, generator):
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    old_uncond, h_old = None, math.inf
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        step = geo.ancestral_step(sigma, sigma_next, eta)
        h = geo.half_log_snr(step.sigma_down) - geo.half_log_snr(sigma)
        x_down = cfg_pp_step(geo, x, sigma, step.sigma_down, denoised, uncond)
        if old_uncond is not None and math.isfinite(h_old) and math.isfinite(h):
            # RES's history term w_1 (D_prev - D) (exponential Adams-Bashforth 2), with D_prev -> U_prev as in 2M
            w_old = exp_weights([0.0, -h_old / h], h)[1]
            x_down = x_down + geo.alpha(step.sigma_down) * w_old * (old_uncond - denoised)
        x = ancestral_noise(run, x_down, step, sigma, sigma_next, s_noise)
        old_uncond, h_old = uncond, h
    return run.finish(x)


@uses_uncond
@torch.no_grad()
def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """RES multistep (Zhang et al. 2023, arXiv 2308.02157) with CFG++: the exponential Adams-Bashforth step
    ``(sigma_t / sigma) x + alpha_t (b_1 D + b_2 D_prev)`` rewritten as DDIM plus the history term
    ``alpha_t b_2 (D_prev - D)``, then made CFG++ as the authors' 2M: :func:`cfg_pp_step` plus
    ``alpha_t b_2 (U_prev - D)``. Base: ``res_multistep`` (equal when ``U = D``).

    Departs from ComfyUI's ``res_multistep_cfg_pp``, which shifts ``x`` by ``D - U`` and then runs the base step on
    the unconditional estimates, so that the guided estimate enters with weight ``e^{-h}`` instead of 1 (its DDIM
    limit is not CFG++'s Eq. 9). 1 call per step, deterministic; the step into sigma = 0 returns ``D``.
    """
    return _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, 0.0, 0.0, None, None)


@uses_uncond
@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                          s_noise=1.0, noise_sampler=None, *, generator=None):
    """:func:`sample_res_multistep_cfg_pp` to ``sigma_down``, then fresh noise up to ``sigma_next``
    (:meth:`Geometry.ancestral_step`), with the history placed as in ``res_multistep_ancestral``. Base:
    ``res_multistep_ancestral`` (equal when ``U = D``). Stochastic (``eta``, ``s_noise``); the same departure from
    ComfyUI as :func:`sample_res_multistep_cfg_pp`."""
    return _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler,
                                 generator)


@uses_uncond
@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0):
    """Gradient estimation (Permenter & Yuan 2023, arXiv 2306.04848) with CFG++. The base step
    ``x + dt (gamma d + (1 - gamma) d_prev)`` is DDIM plus ``(gamma - 1) dt (d - d_prev)``; here the DDIM part is
    :func:`cfg_pp_step` and the correction uses the unconditional directions ``d_u = (x - U) / sigma``, the noise
    estimate CFG++ renoises with. Base: ``gradient_estimation`` (equal when ``U = D``). 1 call per step,
    deterministic; plain CFG++ DDIM on the first step, ``D`` on the step into sigma = 0."""
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    x = run.x
    d_old = None
    for i, sigma, sigma_next in run.steps():
        denoised, uncond = run.denoise_with_uncond(x, sigma)
        _report(run, i, x, sigma, denoised, uncond)
        d = to_d(x, sigma, uncond)
        if sigma_next == 0:
            x = denoised
        else:
            x_next = cfg_pp_step(run.geometry, x, sigma, sigma_next, denoised, uncond)
            if d_old is not None:
                x_next = x_next + (ge_gamma - 1) * (sigma_next - sigma) * (d - d_old)
            x = x_next
        d_old = d
    return run.finish(x)
