"""CFG++ samplers (Chung et al. 2024, arXiv 2406.08070) and CFGDenoiser.

- With the unconditional estimate equal to the conditional one, every CFG++ sampler equals its base sampler, in VE
  and flow geometry, from flow sigma = 1 too.
- With two exact Gaussian denoisers (conditional and unconditional data), every CFG++ sampler matches its update
  formula written out here independently in float64, in VE coordinates (the authors' VE forms; flow runs are mapped
  to VE with ``x_ve = x / alpha``, ``sigma_ve = sigma / alpha``).
"""

from __future__ import annotations

import math

import pytest
import torch

from k_diffusing import CFGDenoiser, get_sampler, list_samplers, resolve_sampler
from k_diffusing.geometry import FLOW, VE
from k_diffusing.testing.analytic import gaussian

CFG_PP = {
    "euler_cfg_pp": "euler",
    "euler_ancestral_cfg_pp": "euler_ancestral",
    "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral",
    "dpmpp_2m_cfg_pp": "dpmpp_2m",
    "res_multistep_cfg_pp": "res_multistep",
    "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
    "gradient_estimation_cfg_pp": "gradient_estimation",
}
COND = (0.5, 1.5)  # data mean, std of the conditional Gaussian
UNCOND = (-0.3, 1.0)
GUIDANCE = 0.6


# ComfyUI's KSampler sampler names (comfy/samplers.py: KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"], 2025).
COMFYUI_SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]


def test_every_comfyui_name_resolves():
    shown = {name for s in list_samplers() for name in (s.name, *s.aliases)}
    assert set(COMFYUI_SAMPLERS) <= shown
    for name in COMFYUI_SAMPLERS:
        resolve_sampler(name)
    listed = {s.name for s in list_samplers()}
    assert set(CFG_PP) <= listed
    assert all(get_sampler(name).needs_uncond for name in CFG_PP)
    assert not any(get_sampler(base).needs_uncond for base in CFG_PP.values())
    aliases = {"ddim": "euler", "dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
               "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde"}
    for alias, name in aliases.items():
        assert resolve_sampler(alias).spec.name == name
        assert alias in get_sampler(name).aliases  # list_samplers() shows it on the entry


def _sigmas(geometry, n: int) -> torch.Tensor:
    if geometry is FLOW:
        return torch.cat([torch.linspace(1.0, 0.02, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    return torch.cat([torch.exp(torch.linspace(math.log(14.6), math.log(0.03), n, dtype=torch.float64)),
                      torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("geometry", [VE, FLOW], ids=["ve", "flow"])
@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_equals_base_when_uncond_is_cond(name, geometry):
    model = gaussian(*COND, geometry=geometry)
    sigmas = _sigmas(geometry, 12)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0].clamp(max=1)
    stochastic = get_sampler(name).stochastic
    noise = {"generator": torch.Generator().manual_seed(1)} if stochastic else {}
    base_noise = {"generator": torch.Generator().manual_seed(1)} if stochastic else {}
    for scale in (0.6, 3.0):  # D_u + g (D_c - D_u) = D_c for any g when uncond is cond
        out = get_sampler(name)(CFGDenoiser(model, model, scale), x, sigmas, disable=True, **noise)
        base = get_sampler(CFG_PP[name])(model, x, sigmas, disable=True, **base_noise)
        assert (out - base).abs().max().item() <= 1e-6
        noise = {"generator": torch.Generator().manual_seed(1)} if stochastic else {}
        base_noise = {"generator": torch.Generator().manual_seed(1)} if stochastic else {}


def test_cfg_pp_differs_from_base_with_guidance():
    """The test above cannot pass by ignoring U: with distinct denoisers the CFG++ step is not ordinary CFG."""
    cond, uncond = gaussian(*COND), gaussian(*UNCOND)
    guided = CFGDenoiser(cond, uncond, GUIDANCE)
    sigmas, x = _sigmas(VE, 8), torch.randn(1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in ("euler_cfg_pp", "dpmpp_2m_cfg_pp"):
        diff = (get_sampler(name)(guided, x * 14.6, sigmas, disable=True)
                - get_sampler(CFG_PP[name])(guided, x * 14.6, sigmas, disable=True)).abs().max().item()
        assert diff > 1e-2


# --- independent float64 reference in VE coordinates ------------------------------------------------------------

def _posterior_mean(x_ve: torch.Tensor, s_ve: float, mean: float, std: float) -> torch.Tensor:
    """E[x0 | x0 + s_ve eps = x_ve] for x0 ~ N(mean, std^2)."""
    return mean + std * std / (std * std + s_ve * s_ve) * (x_ve - mean)


def _pair(x_ve, s_ve):
    d_c, d_u = _posterior_mean(x_ve, s_ve, *COND), _posterior_mean(x_ve, s_ve, *UNCOND)
    return d_u + GUIDANCE * (d_c - d_u), d_u


def _ancestral(s, s_next, eta=1.0):
    up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
    return math.sqrt(s_next**2 - up**2), up


def _phi1(z):
    return math.expm1(z) / z


def _phi2(z):
    return (_phi1(z) - 1) / z


def reference(name: str, x_ve: torch.Tensor, s: list[float], noises: list[torch.Tensor],
              alpha=lambda sigma_ve: 1.0) -> torch.Tensor:
    """The CFG++ update formulas in VE (``s``: VE sigmas, ``noises``: the unit noises of the ancestral steps in
    order; ``alpha``: the model's alpha as a function of the VE sigma). Euler, Euler a, 2S a and 2M are the authors'
    (Chung et al. 2024, reference implementation); RES and gradient estimation apply the same rule: the clean part
    is the guided D, the renoising and the history the unconditional U."""
    x, noise = x_ve.clone(), iter(noises)
    u_old = d_u_old = None
    h_old = None
    for i in range(len(s) - 1):
        d, u = _pair(x, s[i])
        ancestral = name in ("euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral_cfg_pp")
        s_down, s_up = _ancestral(s[i], s[i + 1]) if ancestral else (s[i + 1], 0.0)
        if name in ("euler_cfg_pp", "euler_ancestral_cfg_pp"):
            x_new = d + (x - u) / s[i] * s_down
        elif name == "dpmpp_2s_ancestral_cfg_pp":
            if s_down == 0:
                x_new = d
            else:
                t, t_next = -math.log(s[i]), -math.log(s_down)
                h = t_next - t
                s_mid = math.exp(-(t + h / 2))
                x_2 = (s_mid / s[i]) * x - math.expm1(-h / 2) * u
                d_2, u_2 = _pair(x_2, s_mid)
                x_new = d_2 - math.exp(-h) * u_2 + (s_down / s[i]) * x
        elif name == "dpmpp_2m_cfg_pp":
            if u_old is None or s[i + 1] == 0:
                x_new = d + (x - u) / s[i] * s[i + 1]
            else:
                h = math.log(s[i]) - math.log(s[i + 1])
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                x_new = d - math.exp(-h) * u - math.expm1(-h) * (d - u_old) / (2 * r) + math.exp(-h) * x
        elif name in ("res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp"):
            h = math.log(s[i]) - math.log(s_down) if s_down > 0 else math.inf
            x_new = d + (x - u) / s[i] * s_down
            if u_old is not None and math.isfinite(h):
                c2 = -h_old / h
                b2 = _phi2(-h) / c2
                x_new = x_new + h * b2 * (u_old - d)
            h_old = h
        elif name == "gradient_estimation_cfg_pp":
            # Its base integrates the ODE in the model's own sigma (ComfyUI's choice on flow models), so the
            # gradient correction is taken in model coordinates: x = a x_ve, sigma = a sigma_ve.
            a, a_next = alpha(s[i]), alpha(s[i + 1])
            sigma, sigma_next = a * s[i], a_next * s[i + 1]
            d_u = (a * x - u) / sigma  # dx/dsigma of the unconditional ODE
            if s[i + 1] == 0:
                x_new = d
            else:
                x_new = d + (x - u) / s[i] * s[i + 1]  # the CFG++ DDIM step, in VE
                if d_u_old is not None:
                    x_new = x_new + (2.0 - 1) * (d_u - d_u_old) * (sigma_next - sigma) / a_next
            d_u_old = d_u
        else:
            raise AssertionError(name)
        if s_up > 0:
            x_new = x_new + s_up * next(noise)
        x, u_old = x_new, u
    return x


class _ListNoise:
    def __init__(self, noises):
        self.noises, self.i = noises, 0

    def __call__(self, sigma, sigma_next):
        self.i += 1
        return self.noises[self.i - 1]


def _denoiser(mean, std, geometry):
    return gaussian(mean, std, geometry=geometry)


@pytest.mark.parametrize("geometry", [VE, FLOW], ids=["ve", "flow"])
@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_matches_the_update_formula_on_two_gaussians(name, geometry):
    n = 10
    if geometry is FLOW:  # a flow run is checked in VE coordinates; sigma = 1 has no finite VE image
        sigmas = torch.cat([torch.linspace(0.97, 0.03, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    else:
        sigmas = _sigmas(VE, n)
    g = torch.Generator().manual_seed(3)
    noises = [torch.randn(2, 16, generator=g, dtype=torch.float64) for _ in range(n)]
    s_ve = [geometry.to_ve(float(s)) if s > 0 else 0.0 for s in sigmas]
    x_ve = torch.randn(2, 16, generator=g, dtype=torch.float64) * math.sqrt(COND[1] ** 2 + s_ve[0] ** 2)
    model = CFGDenoiser(_denoiser(*COND, geometry), _denoiser(*UNCOND, geometry), GUIDANCE)
    kwargs = {"noise_sampler": _ListNoise(noises)} if get_sampler(name).stochastic else {}
    out = get_sampler(name)(model, x_ve * geometry.alpha(float(sigmas[0])), sigmas, disable=True, **kwargs)
    alpha = lambda sigma_ve: geometry.alpha(geometry.from_ve(sigma_ve))  # noqa: E731
    expected = reference(name, x_ve, s_ve, noises, alpha)  # final sigma 0: alpha = 1, x = x_ve
    assert (out - expected).abs().max().item() <= 1e-10


def test_reference_catches_a_wrong_renoise():
    """Negative control: Euler CFG++ renoising with the guided estimate (ordinary CFG) is caught by the reference."""
    sigmas = _sigmas(VE, 10)
    s = [float(v) for v in sigmas]
    x_ve = torch.randn(2, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 14.6
    model = CFGDenoiser(gaussian(*COND), gaussian(*UNCOND), GUIDANCE)
    ordinary = get_sampler("euler")(model, x_ve, sigmas, disable=True)
    assert (ordinary - reference("euler_cfg_pp", x_ve, s, [])).abs().max().item() > 1e-2


def test_plain_model_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match="CFGDenoiser"):
        get_sampler("euler_cfg_pp")(gaussian(), torch.zeros(1, 4), _sigmas(VE, 3), disable=True)


def test_cfg_denoiser_checks_and_combines():
    cond, uncond = gaussian(*COND), gaussian(*UNCOND)
    x, sigma = torch.randn(1, 8, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    d, u = CFGDenoiser(cond, uncond, 2.5).denoise_with_uncond(x, sigma)
    assert torch.allclose(u, uncond(x, sigma)) and torch.allclose(d, u + 2.5 * (cond(x, sigma) - u))
    assert CFGDenoiser(gaussian(geometry=FLOW), gaussian(geometry=FLOW), 1.0).geometry is FLOW
    with pytest.raises(ValueError, match="geometry"):
        CFGDenoiser(gaussian(geometry=FLOW), gaussian(), 1.0)
    with pytest.raises(ValueError, match="finite"):
        CFGDenoiser(cond, uncond, float("nan"))
    with pytest.raises(TypeError, match="guidance_scale"):
        CFGDenoiser(cond, uncond, "7")
    with pytest.raises(TypeError, match="uncond"):
        CFGDenoiser(cond, None, 1.0)
