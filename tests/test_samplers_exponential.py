"""Exponential integrators from ComfyUI's catalogue (RES multistep, exponential Heun, SEEDS, ER-SDE, SA-Solver):
the phi-function quadrature, deterministic convergence orders, sample moments, model-call counts and flow sigma = 1.

Numbers quoted in comments were measured on this code (float64, analytic denoisers, fixed seeds).
"""

import inspect
import math

import pytest
import torch
from scipy.integrate import quad

from k_diffusing.geometry import FLOW, VE
from k_diffusing.samplers import exponential as E
from k_diffusing.samplers import sa_solver as S
from k_diffusing.testing import analytic
from k_diffusing.testing.convergence import fit_order, initial_noise, log_uniform_sigmas, sample_moments

GEOMETRIES = [VE, FLOW]
TAU_0 = {"tau_func": lambda sigma: 0.0}


def schedule(geometry, n, sigma_ve_max=14.6, sigma_ve_min=0.03):
    """``n`` steps log-uniform in the VE sigma, then 0; flow starts at sigma = 1 (lambda = -inf)."""
    sigmas = torch.cat([log_uniform_sigmas(geometry, n - 1, sigma_ve_max, sigma_ve_min),
                        torch.zeros(1, dtype=torch.float64)])
    if geometry is FLOW:
        sigmas[0] = 1.0
    return sigmas


class Counter:
    """Wraps a denoiser and records the sigma of every call."""

    def __init__(self, inner):
        self.inner, self.geometry, self.sigmas = inner, inner.geometry, []

    def __call__(self, x, sigma, **kwargs):
        self.sigmas.append(float(sigma[0]))
        return self.inner(x, sigma, **kwargs)


# --- phi functions and exponential quadrature ---------------------------------------------------------------------

@pytest.mark.parametrize("z", [-1e-9, -1e-3, -0.5, -0.999999, -1.000001, -3.0, -40.0])
def test_phi_matches_closed_forms(z):
    assert E.phi(0, z) == pytest.approx(math.exp(z), rel=1e-14)
    assert E.phi(1, z) == pytest.approx(math.expm1(z) / z, rel=1e-14)
    if abs(z) > 0.1:  # the closed form of phi_2 cancels near 0; the series is checked against phi_2(0) = 1/2
        assert E.phi(2, z) == pytest.approx((math.expm1(z) - z) / z**2, rel=1e-12)
    else:
        assert E.phi(2, z) == pytest.approx(0.5 + z / 6, rel=1e-6)


def test_phi_limits():
    for k in range(1, 5):
        assert E.phi(k, -math.inf) == 0.0
        assert E.phi(k, 0.0) == pytest.approx(1 / math.factorial(k), rel=1e-15)
        assert E.exp_moment(k, math.inf) == 1.0
    assert E.exp_moment(0, 1e-300) == pytest.approx(1e-300, rel=1e-12)


@pytest.mark.parametrize("nodes", [[0.0], [0.0, -0.7], [0.0, 0.5], [0.0, -0.7, -1.5], [1.0, 0.0, -0.8, -1.9]])
@pytest.mark.parametrize("H", [1e-6, 0.3, 5.0, 40.0])
def test_exp_weights_integrate_interpolating_polynomials_exactly(nodes, H):
    weights = E.exp_weights(nodes, H)
    assert sum(weights) == pytest.approx(-math.expm1(-H), rel=1e-11)
    for k in range(len(nodes)):
        exact = quad(lambda t, k=k: H * math.exp(-H * (1 - t)) * t**k, 0, 1, epsabs=0, epsrel=1e-13, points=[1.0])[0]
        rule = sum(w * n**k for w, n in zip(weights, nodes))
        assert rule == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_exp_weights_at_infinite_step_evaluate_at_the_end():
    assert E.exp_weights([0.0, 1.0], math.inf) == pytest.approx([0.0, 1.0])
    assert E.midpoint_weights([0.0, 0.5], 2.0) == pytest.approx([0.0, -math.expm1(-2.0)])


def test_er_sde_integrals_match_scipy():
    def psi(sigma):
        return E.er_sde_noise_scaler(sigma) / sigma

    for s, t in [(14.6, 0.03), (80.0, 40.0), (0.1, 0.03), (14.6, 10.0)]:
        i1, i2 = E._er_sde_integrals(psi, s, t)
        q1 = quad(lambda u: 1 / E.er_sde_noise_scaler(u), t, s, epsabs=0, epsrel=1e-13)[0]
        q2 = quad(lambda u, s=s: (u - s) / E.er_sde_noise_scaler(u), t, s, epsabs=0, epsrel=1e-13)[0]
        assert i1 == pytest.approx(q1, rel=1e-12) and i2 == pytest.approx(q2, rel=1e-12)


# --- deterministic convergence order -------------------------------------------------------------------------------

# (name, sampler, deterministic settings, declared order, step counts). Fitted orders measured (VE / flow):
# res_multistep 1.98 / 1.98, exp_heun 1.95 / 1.95 (phi_1: 1.94), seeds_2 1.91 (phi_2: 1.90), seeds_3 2.90 on
# 20..160 steps (2.79 on 10..80, local slopes rising to 2.95), er_sde 2.20 (local slopes falling to 2.06: the
# paper's first-difference D' keeps its third stage at order 2), sa_solver 3.98, sa_solver_pece 3.97 (predictor 3 +
# corrector 4; local slopes between 3.0 and 4.9, 3.86 at 160 -> 320 steps).
ORDER_CASES = [
    ("res_multistep", E.sample_res_multistep, {}, 2, (10, 20, 40, 80)),
    ("res_multistep_ancestral eta=0", E.sample_res_multistep_ancestral, {"eta": 0.0}, 2, (10, 20, 40, 80)),
    ("exp_heun_2_x0", E.sample_exp_heun_2_x0, {}, 2, (10, 20, 40, 80)),
    ("exp_heun_2_x0 phi_1", E.sample_exp_heun_2_x0, {"solver_type": "phi_1"}, 2, (10, 20, 40, 80)),
    ("seeds_2 eta=0", E.sample_seeds_2, {"eta": 0.0}, 2, (10, 20, 40, 80)),
    ("seeds_2 eta=0 phi_2", E.sample_seeds_2, {"eta": 0.0, "solver_type": "phi_2"}, 2, (10, 20, 40, 80)),
    ("seeds_3 eta=0", E.sample_seeds_3, {"eta": 0.0}, 3, (20, 40, 80, 160)),
    ("er_sde eta=0", E.sample_er_sde, {"eta": 0.0}, 2, (10, 20, 40, 80)),
    ("sa_solver tau=0", S.sample_sa_solver, TAU_0, 4, (10, 20, 40, 80)),
    ("sa_solver_pece tau=0", S.sample_sa_solver_pece, TAU_0, 4, (10, 20, 40, 80)),
]
ORDER_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def order_problem():
    """Per geometry: the bimodal denoiser, convergence.empirical_order's starting point and the exact ODE solution
    (computed once: every step count shares the endpoints)."""
    problems = {}
    for geometry in GEOMETRIES:
        model = analytic.bimodal(geometry)
        ends = log_uniform_sigmas(geometry, 1)
        x = initial_noise(model, float(ends[0]), (1, 64), torch.Generator().manual_seed(0))
        problems[geometry.name] = (model, x, model.exact_flow(x, float(ends[0]), float(ends[-1])))
    return problems


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("name,sampler,kwargs,order,ns", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_deterministic_order(order_problem, geometry, name, sampler, kwargs, order, ns):
    """convergence.empirical_order's measurement (float64, log-uniform VE sigmas 20 -> 0.05) with the oracle shared."""
    model, x, exact = order_problem[geometry.name]
    errors = [(sampler(model, x, log_uniform_sigmas(geometry, n), disable=True, **kwargs) - exact).abs().max().item()
              for n in ns]
    measured = fit_order(ns, errors)
    assert abs(measured - order) <= ORDER_TOLERANCE, (name, measured, errors)


# --- exact reductions and model-call counts ------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
def test_reductions(geometry):
    model = analytic.bimodal(geometry)
    sigmas = schedule(geometry, 9)
    x = initial_noise(model, float(sigmas[0]), (2, 32), torch.Generator().manual_seed(1))
    torch.testing.assert_close(E.sample_res_multistep_ancestral(model, x, sigmas, disable=True, eta=0.0),
                               E.sample_res_multistep(model, x, sigmas, disable=True), rtol=0, atol=0)
    heun = E.sample_exp_heun_2_x0(model, x, sigmas, disable=True)
    torch.testing.assert_close(E.sample_exp_heun_2_x0_sde(model, x, sigmas, disable=True, eta=0.0), heun,
                               rtol=0, atol=0)
    torch.testing.assert_close(E.sample_seeds_2(model, x, sigmas, disable=True, eta=0.0, r=1.0, solver_type="phi_2"),
                               heun, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(5)
    pece = S.sample_sa_solver_pece(model, x, sigmas, disable=True, generator=gen)
    gen = torch.Generator().manual_seed(5)
    torch.testing.assert_close(S.sample_sa_solver(model, x, sigmas, disable=True, use_pece=True, generator=gen), pece,
                               rtol=0, atol=0)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("sampler,kwargs", [(E.sample_er_sde, {"eta": 0.0}), (S.sample_sa_solver, TAU_0),
                                            (E.sample_seeds_3, {"eta": 0.0}),
                                            (E.sample_exp_heun_2_x0_sde, {"eta": 0.0})])
def test_no_stochasticity_draws_no_noise(geometry, sampler, kwargs):
    model = analytic.gaussian(geometry=geometry)
    sigmas = schedule(geometry, 8)
    x = initial_noise(model, float(sigmas[0]), (2, 16), torch.Generator().manual_seed(2))
    a = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(3), **kwargs)
    b = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(4), **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
def test_model_calls(geometry):
    n = 6
    sigmas = schedule(geometry, n)
    x = torch.zeros(1, 4, dtype=torch.float64)
    first = 1 if geometry is FLOW else None  # calls on the first step: stages collapse onto flow sigma = 1

    def calls(sampler, **kwargs):
        model = Counter(analytic.gaussian(geometry=geometry))
        sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(0), **kwargs)
        return model.sigmas

    for sampler, stages in [(E.sample_seeds_2, 2), (E.sample_seeds_3, 3)]:
        assert len(calls(sampler)) == (first or stages) + stages * (n - 2) + 1
    heun = calls(E.sample_exp_heun_2_x0_sde)
    assert len(heun) == 2 * (n - 1) + 1 and heun[1] == float(sigmas[1])  # stage at c = 1 exists even from sigma = 1
    assert len(calls(E.sample_res_multistep_ancestral)) == n
    assert len(calls(E.sample_er_sde)) == n
    assert len(calls(S.sample_sa_solver)) == n
    assert len(calls(S.sample_sa_solver_pece)) == 2 * n - 1
    stage = calls(E.sample_seeds_2)[-2]  # the last full step's stage, at the midpoint in lambda
    lam = [geometry.half_log_snr(s) for s in (float(sigmas[-3]), float(sigmas[-2]))]
    assert stage == pytest.approx(geometry.sigma_at(0.5 * (lam[0] + lam[1])), rel=1e-12)


def test_sa_solver_default_tau_interval():
    for geometry in GEOMETRIES:
        tau = S.tau_interval(geometry)
        assert tau(geometry.from_ve(1.0)) == 1.0
        assert tau(geometry.from_ve(10.0)) == 0.0 and tau(geometry.from_ve(0.1)) == 0.0
    assert S.tau_interval(FLOW)(1.0) == 0.0


def test_invalid_knobs_raise():
    model, x, sigmas = analytic.gaussian(), torch.zeros(1, 2), schedule(VE, 3)
    with pytest.raises(ValueError, match="solver_type"):
        E.sample_seeds_2(model, x, sigmas, disable=True, solver_type="phi_3")
    with pytest.raises(ValueError, match="r must be"):
        E.sample_seeds_2(model, x, sigmas, disable=True, r=0.0)
    with pytest.raises(ValueError, match="r_1 < r_2"):
        E.sample_seeds_3(model, x, sigmas, disable=True, r_1=0.7, r_2=0.6)
    with pytest.raises(ValueError, match="max_stage"):
        E.sample_er_sde(model, x, sigmas, disable=True, max_stage=4)


# --- stochastic: sample moments ------------------------------------------------------------------------------------

# (name, sampler, settings, steps). Relative std error measured at that step count with 100 000 samples
# (VE / flow): res_multistep_ancestral +0.9% / +0.9% (+4% at 20 steps), exp_heun_2_x0_sde -0.8% / -0.7%, seeds_2
# -0.6% / -0.6%, seeds_3 +0.0% / +0.0% at 20 steps, er_sde +0.1% / -0.5%, er_sde with phi = s^2 -0.2% / -0.2%,
# sa_solver +0.3% / +0.4%, sa_solver_pece +0.3% / +0.4%, sa_solver with tau = 1 everywhere +0.1% / +0.1%.
# Mean errors all below 0.012.
MOMENT_CASES = [
    ("res_multistep_ancestral", E.sample_res_multistep_ancestral, {}, 40),
    ("exp_heun_2_x0_sde", E.sample_exp_heun_2_x0_sde, {}, 40),
    ("seeds_2", E.sample_seeds_2, {}, 40),
    ("seeds_3", E.sample_seeds_3, {}, 20),
    ("er_sde", E.sample_er_sde, {}, 40),
    ("er_sde reverse-time SDE", E.sample_er_sde, {"noise_scaler": lambda s: s * s}, 40),
    ("sa_solver", S.sample_sa_solver, {}, 40),
    ("sa_solver_pece", S.sample_sa_solver_pece, {}, 40),
    ("sa_solver tau=1", S.sample_sa_solver, {"tau_func": lambda sigma: 1.0}, 40),
]
# 20 000 samples: the sampling error of the std is 0.5% and of the mean 0.011 (std 1.5), so the tolerances allow
# the measured bias plus about 3.5 standard errors.
STD_TOLERANCE = 0.025
MEAN_TOLERANCE = 0.04


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("name,sampler,kwargs,n", MOMENT_CASES, ids=[c[0] for c in MOMENT_CASES])
def test_moments(geometry, name, sampler, kwargs, n):
    model = analytic.gaussian(geometry=geometry)
    mean, std = sample_moments(sampler, model, schedule(geometry, n), shape=(4, 5000), **kwargs)
    assert abs(mean - model.data_mean) <= MEAN_TOLERANCE, (name, mean)
    assert abs(std / model.data_std - 1) <= STD_TOLERANCE, (name, std)


# --- flow sigma = 1 ----------------------------------------------------------------------------------------------

FLOW_CASES = [
    (E.sample_res_multistep, {}), (E.sample_res_multistep_ancestral, {"eta": 0.5}),
    (E.sample_exp_heun_2_x0, {}), (E.sample_exp_heun_2_x0_sde, {}), (E.sample_seeds_2, {"solver_type": "phi_2"}),
    (E.sample_seeds_3, {}), (E.sample_er_sde, {}), (E.sample_er_sde, {"eta": 0.0}),
    (S.sample_sa_solver, {"tau_func": lambda sigma: 1.0}), (S.sample_sa_solver_pece, {}),
]


@pytest.mark.parametrize("sampler,kwargs", FLOW_CASES)
def test_flow_from_sigma_one_is_finite_and_close(sampler, kwargs):
    """From flow sigma = 1 (lambda = -inf) every sampler is finite; on Gaussian data its deterministic version lands
    near the exact ODE solution and its stochastic version near the data's moments."""
    model = analytic.gaussian(geometry=FLOW)
    sigmas = schedule(FLOW, 30)
    x = initial_noise(model, 1.0, (4, 2000), torch.Generator().manual_seed(6))
    if "generator" in inspect.signature(sampler).parameters:
        kwargs = {**kwargs, "generator": torch.Generator().manual_seed(7)}
    out = sampler(model, x, sigmas, disable=True, **kwargs)
    assert torch.isfinite(out).all()
    assert abs(out.mean().item() - model.data_mean) < 0.1 and abs(out.std().item() / model.data_std - 1) < 0.05


@pytest.mark.parametrize("sampler", [E.sample_exp_heun_2_x0, E.sample_res_multistep])
def test_flow_first_step_limits(sampler):
    """The step from sigma = 1 is the exact limit: DDIM for RES (x_t = sigma_t x + alpha_t D), and for exponential
    Heun x_t = sigma_t x + alpha_t D(x_pred, sigma_t) (its corrector weights tend to (0, 1))."""
    model = analytic.gaussian(geometry=FLOW)
    sigmas = torch.tensor([1.0, 0.6], dtype=torch.float64)
    x = initial_noise(model, 1.0, (1, 8), torch.Generator().manual_seed(8))
    s = torch.full((1,), 1.0, dtype=torch.float64)
    predicted = 0.6 * x + 0.4 * model(x, s)
    expected = predicted if sampler is E.sample_res_multistep else 0.6 * x + 0.4 * model(predicted, 0.6 * s)
    torch.testing.assert_close(sampler(model, x, sigmas, disable=True), expected, rtol=1e-12, atol=1e-12)
