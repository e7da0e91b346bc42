"""DPM-Solver / DPM-Solver++ family: k-diffusion parity, convergence order on the bimodal mixture, sample moments on
Gaussian data (VE and flow from sigma = 1), flow limits and call counts.

Tolerances (measured values in the comments, all deterministic with the fixed seeds):
- parity: max abs diff <= 1e-5 (measured <= 4e-6) for the DPM-Solver++ samplers; <= 5e-5 for dpm_fast/adaptive
  (measured up to 3e-5), whose eps-form steps cancel large terms: both k-diffusion's float32 run and ours differ
  from a float64 solve by 1e-5 .. 5e-5 on this problem.
- order: the fitted slope of the max error (float64, log-uniform sigmas) within the stated interval.
- moments: computed exactly (no sampling error, see ``exact_moments``); |std / data std - 1| within a stated
  tolerance a little above the measured discretisation error, the mean to 1e-9. One sampled test covers the default
  Brownian-tree noise path with tolerances of 4 standard errors.
"""

import functools
import math
import warnings

import pytest
import torch

from k_diffusing.geometry import FLOW, VE
from k_diffusing.noise import GaussianNoiseSampler
from k_diffusing.samplers.dpm_solver import (
    sample_dpm_adaptive,
    sample_dpm_adaptive_sigmas,
    sample_dpm_fast,
    sample_dpm_fast_sigmas,
)
from k_diffusing.samplers.dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
)
from k_diffusing.testing import analytic
from k_diffusing.testing.convergence import (
    fit_order,
    initial_noise,
    log_uniform_sigmas,
    sample_moments,
)

GEOMETRIES = [VE, FLOW]


@pytest.fixture(autouse=True)
def _quiet_brownian_tree():
    # torchsde warns when a query lands a float32 ulp outside the tree's interval (k-diffusion's sigma round trips)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
        yield


# ---------------------------------------------------------------------------------------------------------------
# k-diffusion parity (VE, float32, Karras sigmas)
# ---------------------------------------------------------------------------------------------------------------
SIGMA_MIN, SIGMA_MAX = 0.03, 14.6


@pytest.fixture
def setup(kdiff):
    model = analytic.bimodal(VE)
    sigmas = kdiff.get_sigmas_karras(10, SIGMA_MIN, SIGMA_MAX)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)) * SIGMA_MAX
    return model, sigmas, x


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_2s_ancestral_parity(kdiff, setup, eta):
    model, sigmas, x = setup
    torch.manual_seed(5)  # both draw their noise from the global RNG
    ref = kdiff.sample_dpmpp_2s_ancestral(model, x, sigmas, disable=True, eta=eta)
    torch.manual_seed(5)
    out = sample_dpmpp_2s_ancestral(model, x, sigmas, disable=True, eta=eta)
    assert _max_diff(out, ref) <= 1e-5  # measured 8e-7


def _quantised_log(s):
    return torch.round(s.double().log() * 1e3) / 1e3


@pytest.mark.parametrize("eta,r", [(0.0, 0.5), (1.0, 0.5), (0.7, 0.3)])
def test_dpmpp_sde_parity(kdiff, setup, eta, r):
    model, sigmas, x = setup
    # The tree is queried at the stage's sigma_s, which k-diffusion computes in float32 and we in float64; a
    # Brownian path moves by ~sqrt(dt) between two such neighbours (measured 7.5e-4 on the result), so both runs
    # use a tree whose time is log(sigma) rounded to 1e-3: the same Brownian path at the same (rounded) times.
    def noise():
        return kdiff.BrownianTreeNoiseSampler(x, SIGMA_MIN, SIGMA_MAX, seed=42, transform=_quantised_log)

    ref = kdiff.sample_dpmpp_sde(model, x, sigmas, disable=True, eta=eta, r=r, noise_sampler=noise())
    out = sample_dpmpp_sde(model, x, sigmas, disable=True, eta=eta, r=r, noise_sampler=noise())
    assert _max_diff(out, ref) <= 1e-5  # measured 1.3e-6


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_3m_sde_parity(kdiff, setup, eta):
    model, sigmas, x = setup
    ref = kdiff.sample_dpmpp_3m_sde(model, x, sigmas, disable=True, eta=eta,
                                    noise_sampler=kdiff.BrownianTreeNoiseSampler(x, SIGMA_MIN, SIGMA_MAX, seed=42))
    out = sample_dpmpp_3m_sde(model, x, sigmas, disable=True, eta=eta,
                              noise_sampler=kdiff.BrownianTreeNoiseSampler(x, SIGMA_MIN, SIGMA_MAX, seed=42))
    assert _max_diff(out, ref) <= 1e-5  # measured 2.6e-6


@pytest.mark.parametrize("n,eta", [(5, 0.0), (10, 0.0), (11, 0.0), (12, 0.0), (10, 0.5)])
def test_dpm_fast_parity(kdiff, setup, n, eta):
    model, _, x = setup
    torch.manual_seed(3)
    ref = kdiff.sample_dpm_fast(model, x, SIGMA_MIN, SIGMA_MAX, n, disable=True, eta=eta)
    torch.manual_seed(3)
    out = sample_dpm_fast(model, x, SIGMA_MIN, SIGMA_MAX, n, disable=True, eta=eta)
    assert _max_diff(out, ref) <= 5e-5  # measured 4e-6 .. 2.8e-5


@pytest.mark.parametrize("order,eta", [(2, 0.0), (3, 0.0), (3, 0.5)])
def test_dpm_adaptive_parity(kdiff, setup, order, eta):
    model, _, x = setup
    torch.manual_seed(3)
    ref, ref_info = kdiff.sample_dpm_adaptive(model, x, SIGMA_MIN, SIGMA_MAX, order=order, eta=eta, disable=True,
                                              return_info=True)
    torch.manual_seed(3)
    calls = model.calls
    out, info = sample_dpm_adaptive(model, x, SIGMA_MIN, SIGMA_MAX, order=order, eta=eta, disable=True,
                                    return_info=True)
    assert _max_diff(out, ref) <= 5e-5  # measured 1.4e-6 .. 2.9e-5
    # same accept/reject sequence; D at a rejected step's start is reused, so fewer calls than k-diffusion
    assert (info["steps"], info["n_accept"], info["n_reject"]) == (
        ref_info["steps"], ref_info["n_accept"], ref_info["n_reject"])
    assert info["nfe"] == model.calls - calls == ref_info["nfe"] - info["n_reject"]


# ---------------------------------------------------------------------------------------------------------------
# convergence order on the bimodal mixture (float64, eta = 0)
# ---------------------------------------------------------------------------------------------------------------
@functools.cache
def _order_problem(geo):
    """convergence.empirical_order's problem (bimodal data, 64 elements, seed 0, log-uniform sigmas from VE 20 to
    0.05) with its reference ODE solution computed once per geometry."""
    model = analytic.bimodal(geo)
    sigma_max, sigma_min = log_uniform_sigmas(geo, 1).tolist()
    x = initial_noise(model, sigma_max, (1, 64), torch.Generator().manual_seed(0))
    return model, x, model.exact_flow(x, sigma_max, sigma_min)


def _order(sampler, geo, ns, **kwargs):
    model, x, exact = _order_problem(geo)
    errors = [(sampler(model, x, log_uniform_sigmas(geo, n), disable=True, **kwargs) - exact).abs().max().item()
              for n in ns]
    return fit_order(ns, errors), errors


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize(
    "sampler,kwargs,ns,lo,hi",
    [
        # measured slopes 1.89, 1.90 (VE and flow alike)
        (sample_dpmpp_2s_ancestral, {"eta": 0.0}, (10, 20, 40), 1.8, 2.3),
        (sample_dpmpp_sde, {"eta": 0.0}, (10, 20, 40), 1.8, 2.3),
        (sample_dpmpp_sde, {"eta": 0.0, "r": 0.3}, (10, 20, 40), 1.8, 2.3),  # 1.91, 1.90
        (sample_dpmpp_2m_sde, {"eta": 0.0}, (10, 20, 40), 1.8, 2.3),  # 1.96, 2.00
        # k-diffusion's third-order term (as in DPM-Solver's and diffusers' 3M update) carries half the second
        # divided difference it needs: pre-asymptotic slopes 2.51, 2.46, 2.25, 2.12 (-> 2); doubling d2 measures 3
        (sample_dpmpp_3m_sde, {"eta": 0.0}, (20, 40, 80), 2.1, 2.7),
        # n % 3 == 2: DPM-Solver-3 steps and a DPM-Solver-2 remainder; slopes 3.25, 2.91, 3.42
        (sample_dpm_fast_sigmas, {}, (8, 17, 32, 62), 2.8, 3.6),
    ],
    ids=["2s_ancestral", "sde", "sde_r0.3", "2m_sde", "3m_sde", "dpm_fast"],
)
def test_order(sampler, kwargs, ns, lo, hi, geo):
    order, errors = _order(sampler, geo, ns, **kwargs)
    assert lo <= order <= hi, (order, errors)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
def test_dpm_fast_order_limited_by_final_first_order_step(geo):
    # n % 3 == 0 ends with DPM-Solver-2 then DPM-Solver-1: second order (slopes 2.41, 1.87, 2.03)
    order, errors = _order(sample_dpm_fast_sigmas, geo, (18, 33, 63))
    assert 1.8 <= order <= 2.4, (order, errors)


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
def test_dpm_adaptive_meets_tolerance(geo):
    model, x, exact = _order_problem(geo)
    sigmas = log_uniform_sigmas(geo, 1)
    errors = {}
    for order in (2, 3):
        for rtol in (0.05, 0.005):
            out = sample_dpm_adaptive_sigmas(model, x, sigmas, order=order, rtol=rtol, atol=rtol / 10, disable=True)
            errors[order, rtol] = (out - exact).abs().max().item()
    for order in (2, 3):  # measured: about 10x (order 2) and 20x (order 3) smaller with 10x smaller tolerances
        assert errors[order, 0.005] < errors[order, 0.05] / 4, errors
        assert errors[order, 0.005] < 0.01, errors


# ---------------------------------------------------------------------------------------------------------------
# moments on Gaussian data, schedules ending in 0 (VE: Karras 20 .. 0.02; flow: linear from sigma = 1)
# ---------------------------------------------------------------------------------------------------------------
def _karras(n, sigma_min=0.02, sigma_max=20.0, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def _schedule(geo, n):
    return _karras(n) if geo is VE else torch.linspace(1, 0, n + 1, dtype=torch.float64)


class BasisNoise:
    """Noise for the exact output moments of a sampler that is affine in its random inputs (an affine denoiser and
    a fixed schedule: every sampler here except dpm_adaptive, whose steps depend on the state).

    Batch element 0 follows the mean path (no noise), element 1 carries the initial noise, and every new independent
    N(0, 1) variable gets its own element j >= 2: independent draws (``brownian=False``), or increments of one
    Brownian path built by Brownian bridges where it is queried (``brownian=True``: increments over overlapping
    intervals are correlated exactly as a Brownian tree's, which dpmpp_sde's two stages rely on)."""

    def __init__(self, size, brownian):
        self.size, self.brownian, self.used, self.w = size, brownian, 2, {}

    def _new(self):
        if self.used == self.size:
            raise RuntimeError("BasisNoise ran out of batch elements")
        e = torch.zeros(1, self.size, dtype=torch.float64)
        e[0, self.used] = 1.0
        self.used += 1
        return e

    def _at(self, t):
        if t not in self.w:
            left = max((s for s in self.w if s < t), default=None)
            right = min((s for s in self.w if s > t), default=None)
            if left is None and right is None:
                self.w[t] = torch.zeros(1, self.size, dtype=torch.float64)
            elif left is None or right is None:
                near = left if right is None else right
                self.w[t] = self.w[near] + math.sqrt(abs(t - near)) * self._new()
            else:
                frac = (t - left) / (right - left)
                self.w[t] = (self.w[left] + frac * (self.w[right] - self.w[left])
                             + math.sqrt((t - left) * (right - t) / (right - left)) * self._new())
        return self.w[t]

    def __call__(self, sigma, sigma_next):
        if not self.brownian:
            return self._new()
        return (self._at(sigma_next) - self._at(sigma)) / math.sqrt(abs(sigma_next - sigma))


def exact_moments(sampler, model, sigmas, brownian, size=1024, **kwargs):
    """Mean and std of the sampler's output when started from the exact Gaussian marginal at ``sigmas[0]``: the
    output is affine in the initial noise and the noise variables, so one run on the basis batch gives the mean
    (element 0) and every coefficient (element j minus element 0)."""
    a = model.geometry.alpha(float(sigmas[0]))
    x = torch.full((1, size), a * model.data_mean, dtype=torch.float64)
    x[0, 1] += math.sqrt(a * a * model.data_std**2 + float(sigmas[0]) ** 2)
    noise = BasisNoise(size, brownian)
    out = sampler(model, x, sigmas, disable=True, noise_sampler=noise, **kwargs)[0]
    return out[0].item(), (out[1:noise.used] - out[0]).square().sum().sqrt().item()


# (sampler, steps, Brownian noise (the default of the SDE samplers), kwargs, relative std tolerance);
# exact std errors measured (VE / flow) in the comments
MOMENT_CASES = {
    "2s_ancestral": (sample_dpmpp_2s_ancestral, 40, False, {}, 0.01),  # -0.73% / -0.37%
    "dpmpp_sde": (sample_dpmpp_sde, 40, True, {}, 0.005),  # -0.30% / -0.22%
    "dpmpp_sde_eta0.5_r0.3": (sample_dpmpp_sde, 40, True, {"eta": 0.5, "r": 0.3}, 0.005),  # -0.19% / -0.12%
    "3m_sde": (sample_dpmpp_3m_sde, 80, True, {}, 0.002),  # +0.085% / +0.038% (clarifications: within 0.2%)
    "2m_sde_midpoint": (sample_dpmpp_2m_sde, 80, True, {}, 0.003),  # +0.19% / +0.13%
    "2m_sde_heun": (sample_dpmpp_2m_sde, 80, True, {"solver_type": "heun"}, 0.005),  # +0.33% / +0.22%
    "dpm_fast_eta1": (sample_dpm_fast_sigmas, 40, False, {"eta": 1.0}, 0.002),  # +0.04% / +0.07%
}


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("case", list(MOMENT_CASES))
def test_moments(case, geo):
    sampler, n, brownian, kwargs, std_tol = MOMENT_CASES[case]
    model = analytic.gaussian(geometry=geo)
    mean, std = exact_moments(sampler, model, _schedule(geo, n), brownian, **kwargs)
    assert abs(mean - model.data_mean) <= 1e-9, mean
    assert abs(std / model.data_std - 1) <= std_tol, std


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
def test_dpmpp_sde_needs_brownian_noise(geo):
    # the two stages' noises are increments over nested intervals; drawn independently the std is off by -7.3% (VE)
    # / -5.2% (flow) at 40 steps: the default must stay a Brownian tree
    model = analytic.gaussian(geometry=geo)
    _, std = exact_moments(sample_dpmpp_sde, model, _schedule(geo, 40), brownian=False)
    assert std / model.data_std - 1 < -0.04


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
def test_default_brownian_tree_moments(geo):
    # the default noise path (a Brownian tree seeded from the generator), sampled: 1e4 samples, standard errors
    # 0.015 (mean) and 0.7% (std); exact std bias at 20 steps -1.35% (VE) / -0.86% (flow)
    model = analytic.gaussian(geometry=geo)
    mean, std = sample_moments(sample_dpmpp_sde, model, _schedule(geo, 20), shape=(2, 5000))
    assert abs(mean - model.data_mean) <= 0.06, mean
    assert abs(std / model.data_std - 1) <= 0.035, std


@pytest.mark.parametrize("sampler", [sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_dpmpp_sde],
                         ids=lambda f: f.__name__)
def test_brownian_false_draws_independent_gaussians(sampler):
    # brownian=False is the same run as an explicit Gaussian noise sampler on the generator (diffusers' noise), and
    # not the default Brownian tree; per-item generators keep batch invariance
    model = analytic.gaussian()
    sigmas = _schedule(VE, 12)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * float(sigmas[0])
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    fast = sampler(model, x, sigmas, disable=True, brownian=False, generator=gens)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    explicit = sampler(model, x, sigmas, disable=True, noise_sampler=GaussianNoiseSampler(x, gens))
    alone = sampler(model, x[1:2], sigmas, disable=True, brownian=False, generator=[torch.Generator().manual_seed(6)])
    tree = sampler(model, x, sigmas, disable=True, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    assert torch.equal(fast, explicit) and torch.equal(fast[1:2], alone)
    assert (fast - tree).abs().max() > 0.1


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
def test_brownian_false_moments(geo):
    # sampled as test_default_brownian_tree_moments: 1e4 samples, standard errors 0.015 (mean) and 0.7% (std)
    model = analytic.gaussian(geometry=geo)
    mean, std = sample_moments(sample_dpmpp_2m_sde, model, _schedule(geo, 40), shape=(2, 5000), brownian=False)
    assert abs(mean - model.data_mean) <= 0.06, mean
    assert abs(std / model.data_std - 1) <= 0.035, std


def test_brownian_option_is_checked():
    model, sigmas, x = analytic.gaussian(), _schedule(VE, 4), torch.zeros(1, 4)
    with pytest.raises(ValueError, match="brownian=False has no effect with an explicit noise_sampler"):
        sample_dpmpp_2m_sde(model, x, sigmas, disable=True, brownian=False, noise_sampler=GaussianNoiseSampler(x))
    with pytest.raises(TypeError, match="brownian must be True or False, got 'no'"):
        sample_dpmpp_3m_sde(model, x, sigmas, disable=True, brownian="no")
    with pytest.raises(ValueError, match="brownian=False has no effect with an explicit noise_sampler"):
        sample_dpmpp_sde(model, x, sigmas, disable=True, brownian=False, noise_sampler=GaussianNoiseSampler(x))


# ---------------------------------------------------------------------------------------------------------------
# flow from sigma = 1, the step into 0, call counts, argument checks
# ---------------------------------------------------------------------------------------------------------------
def _seeded(**kwargs):
    return lambda: {"generator": torch.Generator().manual_seed(1), **kwargs}


ALL = {
    "2m": (sample_dpmpp_2m, dict),
    "2s_ancestral": (sample_dpmpp_2s_ancestral, _seeded()),
    "dpmpp_sde": (sample_dpmpp_sde, _seeded()),
    "2m_sde": (sample_dpmpp_2m_sde, _seeded()),
    "2m_sde_heun": (sample_dpmpp_2m_sde, _seeded(solver_type="heun")),
    "3m_sde": (sample_dpmpp_3m_sde, _seeded()),
    "dpm_fast": (sample_dpm_fast_sigmas, _seeded(eta=1.0)),
    "dpm_adaptive": (sample_dpm_adaptive_sigmas, _seeded(eta=1.0)),
}


@pytest.mark.parametrize("case", list(ALL))
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_flow_from_sigma_one_is_finite_and_returns_denoised(case, n):
    sampler, kwargs = ALL[case]
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    out = sampler(analytic.bimodal(FLOW), x, torch.linspace(1, 0, n + 1), disable=True, callback=seen.append,
                  **kwargs())
    assert torch.isfinite(out).all()
    assert torch.equal(out, seen[-1]["denoised"])  # the step into 0 lands on D exactly


EQUIVARIANT = {
    "2m": (sample_dpmpp_2m, {}),
    "2s_ancestral": (sample_dpmpp_2s_ancestral, {"eta": 1.0}),
    "dpmpp_sde": (sample_dpmpp_sde, {"eta": 1.0, "r": 0.3}),
    "2m_sde": (sample_dpmpp_2m_sde, {"eta": 1.0}),
    "2m_sde_heun": (sample_dpmpp_2m_sde, {"eta": 1.0, "solver_type": "heun"}),
    "3m_sde": (sample_dpmpp_3m_sde, {"eta": 1.0}),
    "3m_sde_eta0": (sample_dpmpp_3m_sde, {"eta": 0.0}),
    "dpm_fast": (sample_dpm_fast_sigmas, {"eta": 1.0}),
}


@pytest.mark.parametrize("case", list(EQUIVARIANT))
def test_flow_run_is_the_ve_run_rescaled(case):
    # x_ve = x / alpha and sigma_ve = sigma / alpha map the flow model onto the VE one; with the same noise draws
    # (noise enters both in the same VE units) a geometry-exact sampler gives out_flow = alpha(end) out_ve
    sampler, kwargs = EQUIVARIANT[case]
    flow_sigmas = torch.linspace(0.95, 0, 9, dtype=torch.float64)
    ve_sigmas = torch.tensor([FLOW.to_ve(s) for s in flow_sigmas.tolist()], dtype=torch.float64)
    x_ve = torch.randn(2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * ve_sigmas[0]
    outs = []
    for geo, sigmas, x in [(VE, ve_sigmas, x_ve), (FLOW, flow_sigmas, x_ve * FLOW.alpha(0.95))]:
        noise = {} if sampler is sample_dpmpp_2m else {
            "noise_sampler": GaussianNoiseSampler(x, torch.Generator().manual_seed(3))}
        outs.append(sampler(analytic.bimodal(geo), x, sigmas, disable=True, **noise, **kwargs))
    assert _max_diff(*outs) <= 1e-10


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize(
    "sampler,calls",
    [
        (sample_dpmpp_2s_ancestral, lambda n, first_inf: 2 * n - 1 - first_inf),
        (sample_dpmpp_sde, lambda n, first_inf: 2 * n - 1 - first_inf),
        (sample_dpmpp_3m_sde, lambda n, first_inf: n),
        (sample_dpm_fast_sigmas, lambda n, first_inf: n),
    ],
    ids=["2s_ancestral", "dpmpp_sde", "3m_sde", "dpm_fast"],
)
def test_model_calls(sampler, calls, geo):
    n = 10
    model = analytic.gaussian(geometry=geo)
    sigmas = _schedule(geo, n)
    sampler(model, torch.zeros(1, 4), sigmas, disable=True, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert model.calls == calls(n, geo is FLOW)


def test_dpm_fast_and_adaptive_reject_infinite_log_snr():
    model = analytic.gaussian(geometry=FLOW)
    with pytest.raises(ValueError, match="finite log-SNR"):
        sample_dpm_fast(model, torch.zeros(1, 4), 0.01, 1.0, 10, disable=True)
    with pytest.raises(ValueError, match="finite log-SNR"):
        sample_dpm_adaptive(model, torch.zeros(1, 4), 0.01, 1.0, disable=True)
    with pytest.raises(ValueError, match="must not be 0"):
        sample_dpm_fast(model, torch.zeros(1, 4), 0.0, 0.5, 10, disable=True)


def test_dpm_fast_sigmas_budget_and_reverse():
    model = analytic.bimodal(VE)
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)).double() * 10
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    out = sample_dpm_fast_sigmas(model, x, sigmas, n=9, disable=True)
    assert model.calls == 9
    # the same as dpm_fast with n - 1 calls followed by D at sigma_min
    ref = sample_dpm_fast(model, x, 0.1, 10.0, 8, disable=True)
    assert torch.allclose(out, model(ref, torch.tensor([0.1], dtype=torch.float64)), atol=1e-12, rtol=0)
    # reverse integration (sigma_min > sigma_max) solves the ODE upwards: error 8.7e-3 with 32 calls (0.067 with 17)
    y = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)).double()
    back = sample_dpm_fast(model, y, 10.0, 0.1, 32, disable=True)
    assert (back - model.exact_flow(y, 0.1, 10.0)).abs().max() < 0.02
