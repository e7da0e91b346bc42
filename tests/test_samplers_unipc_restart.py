"""UniPC (samplers/unipc.py), DDPM and LCM (samplers/ddpm.py) and Restart (samplers/restart.py) on the analytic
denoisers in VE and flow geometry, with diffusers' UniPCMultistepScheduler and DDPMScheduler (driven in a plain loop)
and k-diffusion's sample_heun as oracles."""

import math
from itertools import pairwise

import pytest
import torch

from k_diffusing.geometry import FLOW, VE
from k_diffusing.samplers.ddpm import sample_ddpm, sample_lcm
from k_diffusing.samplers.restart import (
    DEFAULT_RESTART_LIST,
    restart_plan,
    sample_restart,
)
from k_diffusing.samplers.unipc import sample_uni_pc, sample_uni_pc_bh2
from k_diffusing.testing import analytic
from k_diffusing.testing.convergence import (
    fit_order,
    initial_noise,
    log_uniform_sigmas,
    sample_moments,
)

GEOMETRIES = [VE, FLOW]
geometry_ids = pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)


def schedule(geometry, n, sigma_ve_max=30.0, sigma_ve_min=0.02):
    """``n`` steps, log-uniform in VE sigma, then 0; flow starts at sigma = 1 (lambda = -inf)."""
    sigmas = log_uniform_sigmas(geometry, n - 1, sigma_ve_max, sigma_ve_min)
    sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    if geometry is FLOW:
        sigmas[0] = 1.0
    return sigmas


# ---------------------------------------------------------------------------------------------------------------
# UniPC: empirical order
# ---------------------------------------------------------------------------------------------------------------

# UniP-p alone has order p; UniC-p raises it to p + 1 (Zhao et al. 2023, Sec. 3). Measured fits over n = 20..160
# (lower_order_final=False, which would otherwise end with a first-order step), VE = flow to 3 digits:
#   UniPC   bh1: 2.00 3.04 3.78   bh2: 1.98 2.90 3.80   (p = 1, 2, 3; p = 3 reaches 3.84 / 3.95 at n = 320..640)
#   UniP    bh1: 1.15 2.06 3.32   bh2: 1.15 1.99 3.32
DECLARED_ORDER = {(1, True): 2, (2, True): 3, (3, True): 4, (1, False): 1, (2, False): 2, (3, False): 3}
ORDER_NS = (20, 40, 80, 160)
ORDER_TOL = 0.35


@pytest.fixture(scope="module", params=GEOMETRIES, ids=lambda g: g.name)
def bimodal_problem(request):
    """The bimodal denoiser, the order-test schedules, one start sample and its exact ODE solution (computed once)."""
    model = analytic.bimodal(request.param)
    sigmas = {n: log_uniform_sigmas(request.param, n) for n in ORDER_NS}
    start, end = float(sigmas[ORDER_NS[0]][0]), float(sigmas[ORDER_NS[0]][-1])
    x = initial_noise(model, start, (1, 64), torch.Generator().manual_seed(0))
    return model, sigmas, x, model.exact_flow(x, start, end)


@pytest.mark.parametrize("use_corrector", [True, False], ids=["unipc", "unip"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_uni_pc_empirical_order(bimodal_problem, solver_type, order, use_corrector):
    model, sigmas, x, exact = bimodal_problem
    errors = []
    for n in ORDER_NS:
        out = sample_uni_pc(model, x, sigmas[n], disable=True, order=order, solver_type=solver_type,
                            use_corrector=use_corrector, lower_order_final=False)
        errors.append((out - exact).abs().max().item())
    measured = fit_order(ORDER_NS, errors)
    declared = DECLARED_ORDER[order, use_corrector]
    assert abs(measured - declared) <= ORDER_TOL, (measured, declared, errors)


# ---------------------------------------------------------------------------------------------------------------
# UniPC: parity with diffusers' UniPCMultistepScheduler
# ---------------------------------------------------------------------------------------------------------------


def diffusers_unipc(model, x_ve, scheduler):
    """Drive the scheduler (epsilon prediction, VP latents) with a VE denoiser in a plain loop: the latent is
    ``x_vp = x_ve / sqrt(1 + sigma^2)`` and ``eps = (x_ve - D(x_ve, sigma)) / sigma`` at the scheduler's own sigma
    (so its integer timesteps never reach the model). Returns the final sample in VE units."""
    sigmas = [float(s) for s in scheduler.sigmas]
    x = x_ve / math.sqrt(1 + sigmas[0] ** 2)
    for i, t in enumerate(scheduler.timesteps):
        x_ve = x * math.sqrt(1 + sigmas[i] ** 2)
        eps = (x_ve - model(x_ve, torch.full((x.shape[0],), sigmas[i], dtype=x.dtype))) / sigmas[i]
        x = scheduler.step(eps, t, x).prev_sample
    return x * math.sqrt(1 + sigmas[-1] ** 2)


UNIPC_PAIRS = [  # solver_type, order, lower_order_final, final_sigmas_type, use_corrector
    ("bh2", 2, True, "zero", True),  # diffusers' defaults
    ("bh2", 3, True, "zero", True),
    ("bh1", 3, True, "sigma_min", True),  # diffusers 0.42.1 bh1 returns NaN on a step into sigma = 0
    ("bh2", 3, False, "sigma_min", True),
    ("bh1", 1, True, "sigma_min", True),
    ("bh2", 2, True, "zero", False),
]


@pytest.mark.parametrize("solver_type,order,lower_order_final,final_sigmas_type,use_corrector", UNIPC_PAIRS)
def test_uni_pc_matches_diffusers(solver_type, order, lower_order_final, final_sigmas_type, use_corrector):
    """Same sigmas (the scheduler's, 12 steps on SD's scaled_linear table), same start, bimodal VE model.
    Measured max |diff|: 1e-14 when the scheduler's sigmas are made float64 (it then runs the same formula in the
    same precision), <= 3.6e-6 with its own float32 sigmas (its log-SNR in float32)."""
    diffusers = pytest.importorskip("diffusers")
    model, n = analytic.bimodal(VE), 12

    def make():
        scheduler = diffusers.UniPCMultistepScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_order=order,
            solver_type=solver_type, lower_order_final=lower_order_final, final_sigmas_type=final_sigmas_type,
            disable_corrector=[] if use_corrector else list(range(n)))
        scheduler.set_timesteps(n)
        return scheduler

    scheduler = make()
    sigmas = scheduler.sigmas.double()
    x = initial_noise(model, float(sigmas[0]), (2, 1, 64), torch.Generator().manual_seed(0))
    ours = sample_uni_pc(model, x, sigmas, disable=True, order=order, solver_type=solver_type,
                         use_corrector=use_corrector, lower_order_final=lower_order_final)
    assert torch.isfinite(ours).all()
    assert (ours - diffusers_unipc(model, x, scheduler)).abs().max().item() <= 1e-5
    exact_precision = make()
    exact_precision.sigmas = exact_precision.sigmas.double()
    assert (ours - diffusers_unipc(model, x, exact_precision)).abs().max().item() <= 1e-12


@geometry_ids
@pytest.mark.parametrize("sampler", [sample_uni_pc, sample_uni_pc_bh2], ids=["bh1", "bh2"])
def test_uni_pc_defaults_accurate_and_finite_from_sigma_max(sampler, geometry):
    """Default settings (order 3, corrector, lower order at the end) on a schedule ending in 0 (flow: from
    sigma = 1), against the exact ODE solution of Gaussian data. Measured max error at 24 steps: VE 9.0e-4 (bh1) /
    1.1e-3 (bh2), flow 8.2e-4 / 1.1e-3; Euler's is 0.43."""
    model = analytic.gaussian(geometry=geometry)
    sigmas = schedule(geometry, 24)
    x = initial_noise(model, float(sigmas[0]), (2, 256), torch.Generator().manual_seed(1))
    out = sampler(model, x, sigmas, disable=True)
    assert torch.isfinite(out).all()
    assert (out - model.exact_flow(x, float(sigmas[0]), 0.0)).abs().max().item() <= 5e-3


# ---------------------------------------------------------------------------------------------------------------
# DDPM
# ---------------------------------------------------------------------------------------------------------------


def test_ddpm_matches_diffusers_ddpm_scheduler():
    """The same posterior draws as diffusers' DDPMScheduler (fixed_small variance, no clipping, 'leading' spacing,
    noise injected from identically seeded generators). Measured max |diff|: 5e-15 with its alphas_cumprod made
    float64, 1.0e-6 with its own float32 table (3.3 with other noise)."""
    diffusers = pytest.importorskip("diffusers")
    model, n = analytic.bimodal(VE), 20

    def make():
        scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            clip_sample=False)
        scheduler.set_timesteps(n)
        return scheduler

    def run_diffusers(scheduler, x_ve):
        acp = scheduler.alphas_cumprod
        g = torch.Generator().manual_seed(5)
        x = x_ve * acp[scheduler.timesteps[0]].double().sqrt()
        for t in scheduler.timesteps:
            a = float(acp[t])
            sigma = math.sqrt((1 - a) / a)
            x_ve = x / math.sqrt(a)
            eps = (x_ve - model(x_ve, torch.full((x.shape[0],), sigma, dtype=x.dtype))) / sigma
            x = scheduler.step(eps, t, x, generator=g).prev_sample
        return x

    scheduler = make()
    acp = scheduler.alphas_cumprod.double()
    sigmas = torch.tensor([math.sqrt((1 - acp[t]) / acp[t]) for t in scheduler.timesteps] + [0.0], dtype=torch.float64)
    x = initial_noise(model, float(sigmas[0]), (2, 1, 64), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)
    ours = sample_ddpm(model, x, sigmas, disable=True,
                       noise_sampler=lambda s, s_next: torch.randn(x.shape, generator=g, dtype=torch.float64))
    assert (ours - run_diffusers(scheduler, x)).abs().max().item() <= 1e-5
    exact_precision = make()
    exact_precision.alphas_cumprod = exact_precision.alphas_cumprod.double()
    assert (ours - run_diffusers(exact_precision, x)).abs().max().item() <= 1e-12


@geometry_ids
def test_ddpm_moments(geometry):
    """500 log-uniform steps, 20 000 samples from the marginal at sigma_max (flow: 1). Measured over 4 seeds:
    mean error <= 0.027, std -0.4% .. -1.7% (first-order bias plus sampling noise, 0.5%)."""
    model = analytic.gaussian(geometry=geometry)
    mean, std = sample_moments(sample_ddpm, model, schedule(geometry, 500))
    assert math.isfinite(mean) and math.isfinite(std)
    assert abs(mean - model.data_mean) <= 0.04
    assert abs(std / model.data_std - 1) <= 0.03


# ---------------------------------------------------------------------------------------------------------------
# LCM
# ---------------------------------------------------------------------------------------------------------------


def lcm_exact_moments(model, sigmas):
    """Mean and std of LCM's output for Gaussian data N(mu, s^2), started from the exact marginal.

    Elements stay Gaussian and independent: if x ~ N(m, v) at sigma (alpha = alpha(sigma)), the posterior mean
    D = mu + k (x - alpha mu), k = alpha s^2 / (alpha^2 s^2 + sigma^2), is N(mu + k (m - alpha mu), k^2 v), and the
    re-noised x' = alpha' D + sigma' z is N(alpha' m_D, alpha'^2 v_D + sigma'^2). The output is the last D.
    """
    geo, mu, s2 = model.geometry, model.data_mean, model.data_std**2
    a = geo.alpha(sigmas[0])
    m, v = a * mu, a * a * s2 + sigmas[0] ** 2
    for sigma, sigma_next in pairwise(sigmas):
        a = geo.alpha(sigma)
        k = a * s2 / (a * a * s2 + sigma**2)
        m, v = mu + k * (m - a * mu), k * k * v
        if sigma_next > 0:
            a_next = geo.alpha(sigma_next)
            m, v = a_next * m, a_next**2 * v + sigma_next**2
    return m, math.sqrt(v)


@geometry_ids
def test_lcm_follows_its_exact_recursion(geometry):
    """4 steps down to VE sigma 0.8 (flow: from sigma = 1), 100 000 samples. The exact output std is 44% below the
    data's (LCM returns a posterior mean); measured over 3 seeds: mean within 0.003, std within 0.35% of the
    recursion."""
    model = analytic.gaussian(geometry=geometry)
    sigmas = schedule(geometry, 4, 14.6, 0.8)
    mean_exact, std_exact = lcm_exact_moments(model, sigmas.tolist())
    assert std_exact < 0.9 * model.data_std  # the recursion is not the data distribution
    mean, std = sample_moments(sample_lcm, model, sigmas, shape=(4, 25000))
    assert abs(mean - mean_exact) <= 0.01
    assert abs(std / std_exact - 1) <= 0.01


def test_lcm_one_step_is_the_denoiser():
    model = analytic.bimodal(FLOW)
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_lcm(model, x, torch.tensor([0.7, 0.0], dtype=torch.float64), disable=True)
    torch.testing.assert_close(out, model(x, torch.full((3,), 0.7, dtype=torch.float64)), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Restart
# ---------------------------------------------------------------------------------------------------------------


@geometry_ids
@pytest.mark.parametrize("restart_list", [[], [(0.1, 2.0, 0, 9)]], ids=["empty", "k0"])
def test_restart_without_restarts_is_heun(kdiff, geometry, restart_list):
    """No restarts: exactly k-diffusion's sample_heun (the probability-flow ODE needs no geometry)."""
    model = analytic.bimodal(geometry)
    sigmas = schedule(geometry, 12)
    x = initial_noise(model, float(sigmas[0]), (2, 32), torch.Generator().manual_seed(2))
    ours = sample_restart(model, x, sigmas, disable=True, restart_list=restart_list)
    heun = kdiff.sample_heun(model, x, sigmas, disable=True)
    assert torch.isfinite(ours).all()
    assert (ours - heun).abs().max().item() <= 1e-12


@geometry_ids
def test_restart_plan_and_model_calls(geometry):
    """t_min = 0.1 snaps to the nearest main sigma; K = 2 restarts of [t_max = 2 ... t_min] in 9 Karras steps;
    model calls = 2 N - 1 (Heun, Euler into 0) + 2 K n_steps; the callback follows the main steps."""
    sigmas = schedule(geometry, 12).tolist()
    j = min(range(1, 12), key=lambda c: abs(math.log(geometry.to_ve(sigmas[c]) / 0.1)))
    plan = restart_plan(geometry, sigmas, DEFAULT_RESTART_LIST)
    assert list(plan) == [j] and len(plan[j]) == 2 and plan[j][0] == plan[j][1]
    descent = plan[j][0]
    assert len(descent) == 10 and descent[0] == geometry.from_ve(2.0) and descent[-1] == sigmas[j]
    assert all(a > b for a, b in pairwise(descent))
    model = analytic.gaussian(geometry=geometry)
    x = initial_noise(model, sigmas[0], (1, 8), torch.Generator().manual_seed(0))
    events = []
    sample_restart(model, x, torch.tensor(sigmas), disable=True, callback=events.append,
                   generator=torch.Generator().manual_seed(1))
    assert model.calls == 2 * 12 - 1 + 2 * 2 * 9
    assert [e["i"] for e in events] == list(range(12))


@geometry_ids
def test_restart_moments(geometry):
    """Default restarts, 20 000 samples from the marginal at sigma_max (flow: 1). Measured over 4 seeds:
    10 main steps: std VE +1.7% .. +2.3% (Heun alone: +9% .. +11%), flow -0.3% .. -0.8%; 20 steps: VE +0.6% .. +1.2%,
    flow -0.1% .. -0.7%; mean error <= 0.005 (+ sampling noise 0.01)."""
    model = analytic.gaussian(geometry=geometry)
    for n in (10, 20):
        mean, std = sample_moments(sample_restart, model, schedule(geometry, n))
        assert abs(mean - model.data_mean) <= 0.04, n
        assert abs(std / model.data_std - 1) <= 0.03, n
    if geometry is VE:  # the restarts are what brings the coarse schedule's error down
        _, std_heun = sample_moments(sample_restart, model, schedule(geometry, 10), restart_list=[])
        assert std_heun / model.data_std - 1 > 0.06


def test_restart_rejects_bad_intervals():
    model = analytic.gaussian()
    x = torch.zeros(1, 4)
    for bad in ([(2.0, 0.1, 1, 5)], [(0.1, 2.0, -1, 5)], [(0.1, 2.0, 1, 0)], [(0.0, 2.0, 1, 5)]):
        with pytest.raises(ValueError, match="restart interval"):
            sample_restart(model, x, schedule(VE, 6), disable=True, restart_list=bad)
