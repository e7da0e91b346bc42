"""SA-Solver's lowered orders on the last steps (ComfyUI's ``lower_order_to_end``): on an N-step schedule ending in
0, step i predicts with order <= N - 1 - i and corrects with order <= N - i.

Two checks. (1) With a nonlinear denoiser, the option changes nothing before step N - 3 (bit-identical callbacks,
same noise) and changes the rest. (2) With a denoiser that is linear in the half log-SNR lambda and ignores x, an
Adams step of order >= 2 is exact, so every corrected and predicted point can be compared with the exact solution
x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda D(lambda) dlambda (Lu et al. 2022b,
arXiv 2211.01095, Eq. 9); the lowered last predictor step must equal the first-order (DDIM) step written out here.
"""

import math

import pytest
import torch

from k_diffusing.geometry import FLOW, VE
from k_diffusing.samplers import sa_solver as S
from k_diffusing.testing import analytic
from k_diffusing.testing.convergence import initial_noise, log_uniform_sigmas

GEOMETRIES = [VE, FLOW]
TAU_0 = {"tau_func": lambda sigma: 0.0}
N = 10


def schedule(geometry, n=N):
    """``n`` steps log-uniform in the VE sigma from 14.6 to 0.03, then 0."""
    return torch.cat([log_uniform_sigmas(geometry, n - 1, 14.6, 0.03), torch.zeros(1, dtype=torch.float64)])


def trace(sampler, model, x, sigmas, **kwargs):
    """Every callback's (x, denoised), cloned."""
    seen = []

    def record(d):
        seen.append((d["x"].clone(), d["denoised"].clone()))

    return sampler(model, x, sigmas, disable=True, callback=record, **kwargs), seen


class LinearInLambda:
    """D(x, sigma) = a + b lambda(sigma), independent of x."""

    def __init__(self, geometry, a, b):
        self.geometry, self.a, self.b = geometry, a, b

    def __call__(self, x, sigma, **kwargs):
        lam = self.geometry.half_log_snr(float(sigma[0]))
        return (self.a + self.b * lam).expand_as(x).clone()

    def exact(self, x, sigma, sigma_next):
        """The exact ODE step: int e^lam (a + b lam) dlam = e^lam (a + b (lam - 1))."""
        lam_s, lam_t = self.geometry.half_log_snr(sigma), self.geometry.half_log_snr(sigma_next)
        primitive = lambda lam: math.exp(lam) * (self.a + self.b * (lam - 1.0))  # noqa: E731
        return (sigma_next / sigma) * x + sigma_next * (primitive(lam_t) - primitive(lam_s))

    def first_order(self, x, sigma, sigma_next):
        """The exponential-Euler (DDIM) step with D frozen at lambda_s."""
        lam_s, lam_t = self.geometry.half_log_snr(sigma), self.geometry.half_log_snr(sigma_next)
        return (sigma_next / sigma) * x + sigma_next * (math.exp(lam_t) - math.exp(lam_s)) * (self.a + self.b * lam_s)

    def implicit_first_order(self, x, sigma, sigma_next):
        """The order-1 corrector: D taken at lambda_t only."""
        lam_s, lam_t = self.geometry.half_log_snr(sigma), self.geometry.half_log_snr(sigma_next)
        return (sigma_next / sigma) * x + sigma_next * (math.exp(lam_t) - math.exp(lam_s)) * (self.a + self.b * lam_t)


def test_end_orders_rule():
    """ComfyUI's caps: predictor N - 1 - i, corrector N - i."""
    assert [S.end_orders(10, i) for i in (0, 6, 7, 8, 9)] == [(9, 10), (3, 4), (2, 3), (1, 2), (0, 1)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("sampler", [S.sample_sa_solver, S.sample_sa_solver_pece], ids=["pec", "pece"])
@pytest.mark.parametrize("kwargs", [TAU_0, {}], ids=["tau0", "default_tau"])
def test_option_changes_exactly_the_last_steps(geometry, sampler, kwargs):
    """Callbacks 0 .. N - 4 bit-identical (same generator), N - 3 on different (the correction at sigma_{N-3} drops
    from order 4 to 3), and the result differs."""
    model = analytic.bimodal(geometry)
    sigmas = schedule(geometry)
    x = initial_noise(model, float(sigmas[0]), (2, 16), torch.Generator().manual_seed(0))
    runs = {flag: trace(sampler, model, x, sigmas, generator=torch.Generator().manual_seed(1),
                        lower_order_to_end=flag, **kwargs) for flag in (True, False)}
    (low, low_seen), (full, full_seen) = runs[True], runs[False]
    assert len(low_seen) == len(full_seen) == N
    for i in range(N - 3):
        assert torch.equal(low_seen[i][0], full_seen[i][0]) and torch.equal(low_seen[i][1], full_seen[i][1]), i
    for i in range(N - 3, N):
        assert not torch.equal(low_seen[i][0], full_seen[i][0]), i
    assert not torch.equal(low, full)
    default = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(default, low), "ComfyUI's behaviour is the default"


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
def test_no_change_when_the_schedule_does_not_end_in_zero(geometry):
    """ComfyUI applies the rule only when the last sigma is 0."""
    model = analytic.bimodal(geometry)
    sigmas = log_uniform_sigmas(geometry, N, 14.6, 0.03)
    x = initial_noise(model, float(sigmas[0]), (2, 16), torch.Generator().manual_seed(0))
    for sampler in (S.sample_sa_solver, S.sample_sa_solver_pece):
        a = sampler(model, x, sigmas, disable=True, lower_order_to_end=True, **TAU_0)
        b = sampler(model, x, sigmas, disable=True, lower_order_to_end=False, **TAU_0)
        assert torch.equal(a, b)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
def test_orders_used_against_exact_steps(geometry):
    """D linear in lambda: orders >= 2 are exact. Full orders: every point from sigma_1 on is exact. Lowered: exact up
    to sigma_{N-2}; the point at sigma_{N-1} is the first-order predictor step from the exact point at sigma_{N-2}
    (PEC), or the order-1 correction of it (PECE)."""
    gen = torch.Generator().manual_seed(3)
    model = LinearInLambda(geometry, torch.randn(1, 8, generator=gen, dtype=torch.float64),
                           torch.randn(1, 8, generator=gen, dtype=torch.float64))
    sigmas = schedule(geometry)
    s = sigmas.tolist()
    x0 = initial_noise(analytic.bimodal(geometry), s[0], (1, 8), torch.Generator().manual_seed(4))
    exact = [x0]
    for i in range(N - 1):
        exact.append(model.exact(exact[-1], s[i], s[i + 1]))

    def points(sampler, flag):
        return [x for x, _ in trace(sampler, model, x0, sigmas, lower_order_to_end=flag, **TAU_0)[1]]

    for sampler in (S.sample_sa_solver, S.sample_sa_solver_pece):
        full = points(sampler, False)
        for i in range(1, N):
            torch.testing.assert_close(full[i], exact[i], rtol=1e-10, atol=1e-12)
        low = points(sampler, True)
        for i in range(1, N - 1):
            torch.testing.assert_close(low[i], exact[i], rtol=1e-10, atol=1e-12)
    pec_last = points(S.sample_sa_solver, True)[N - 1]
    torch.testing.assert_close(pec_last, model.first_order(exact[N - 2], s[N - 2], s[N - 1]), rtol=1e-10, atol=1e-12)
    assert (pec_last - exact[N - 1]).abs().max() > 1e-6  # the first-order error is visible
    pece_last = points(S.sample_sa_solver_pece, True)[N - 1]
    torch.testing.assert_close(pece_last, model.implicit_first_order(exact[N - 2], s[N - 2], s[N - 1]),
                               rtol=1e-10, atol=1e-12)
