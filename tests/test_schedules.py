"""Sigma schedules: k-diffusion parity for the drop-ins, each formula against an independent re-derivation,
cross-checks with diffusers' EulerDiscreteScheduler spacings, properties over many n and ranges, and the registry's
errors."""

import importlib.util
import math
import pathlib
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betaincinv
from scipy.stats import laplace

from k_diffusing.geometry import FLOW, VE
from k_diffusing.schedules import (
    AYS_SIGMAS,
    AYS_TIMESTEPS,
    GITS_GRID_SIGMAS,
    GITS_STEPS,
    OPTIMAL_STEPS_SIGMAS,
    SCHEDULES,
    append_zero,
    discrete_sigma_table,
    flow_sigma_table,
    get_sigmas,
    get_sigmas_align_your_steps,
    get_sigmas_beta,
    get_sigmas_ddim_uniform,
    get_sigmas_exponential,
    get_sigmas_gits,
    get_sigmas_karras,
    get_sigmas_kl_optimal,
    get_sigmas_laplace,
    get_sigmas_linear_quadratic,
    get_sigmas_ltxv,
    get_sigmas_normal,
    get_sigmas_optimal_steps,
    get_sigmas_polyexponential,
    get_sigmas_sgm_uniform,
    get_sigmas_simple,
    get_sigmas_turbo,
    get_sigmas_vp,
    sigma_to_timestep,
    timestep_to_sigma,
)

SDXL_BETAS = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
SDXL = discrete_sigma_table(SDXL_BETAS)
FLUX = flow_sigma_table(math.exp(1.15))  # FLUX's shift at 1024 x 1024 (mu = 1.15)
TABLES = {"sdxl": SDXL, "flow": flow_sigma_table(1.0), "flux": FLUX}
RANGES = [(float(SDXL[0]), float(SDXL[-1])), (0.002, 80.0), (0.003, 1.0)]
RANGE_SCHEDULES = ["karras", "exponential", "polyexponential", "laplace", "kl_optimal"]
TABLE_SCHEDULES = ["normal", "sgm_uniform", "simple", "ddim_uniform", "beta", "turbo"]
MAY_DROP = {"laplace", "beta"}  # documented to drop repeated values
PUBLISHED = ["align_your_steps", "gits", "optimal_steps", "ltxv"]  # published tables / ComfyUI's model schedules
FLOW_ONLY = {"optimal_steps", "ltxv"}


def assert_schedule(sigmas, n, exact_length=True):
    """Descending CPU float64, strictly descending, finite, ending in exactly 0, n + 1 values (or fewer)."""
    assert sigmas.dtype == torch.float64 and sigmas.device.type == "cpu" and sigmas.ndim == 1
    assert torch.isfinite(sigmas).all()
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    assert (sigmas[:-1] > sigmas[1:]).all(), sigmas
    assert len(sigmas) == n + 1 if exact_length else 2 <= len(sigmas) <= n + 1


def log_linear(values):
    """Max |second difference| of a sequence relative to its range: 0 for values linear in the index."""
    v = np.asarray(values, dtype=np.float64)
    return np.abs(np.diff(v, 2)).max() / np.ptp(v) if len(v) > 2 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# k-diffusion parity
# ---------------------------------------------------------------------------------------------------------------

DROP_INS = [
    ("karras", lambda m, n, r: m.get_sigmas_karras(n, *r)),
    ("karras_rho3", lambda m, n, r: m.get_sigmas_karras(n, *r, rho=3.0)),
    ("exponential", lambda m, n, r: m.get_sigmas_exponential(n, *r)),
    ("polyexponential", lambda m, n, r: m.get_sigmas_polyexponential(n, *r, rho=2.5)),
    ("vp", lambda m, n, r: m.get_sigmas_vp(n)),
]


@pytest.mark.parametrize("n", [1, 2, 10, 25, 100, 1000])
@pytest.mark.parametrize("rng", RANGES, ids=["sdxl", "wide", "flow"])
@pytest.mark.parametrize("name,call", DROP_INS, ids=[d[0] for d in DROP_INS])
def test_dropin_equals_k_diffusion(kdiff, name, call, rng, n):
    """k-diffusion computing in float64 agrees to 1e-12; in its own float32, to its float32 rounding: karras and
    polyexponential amplify the rounding of the base by rho (measured <= 2e-5 relative over these ranges, <= 1.1e-6 on
    SDXL's with rho = 7), and vp's exp(.) - 1 cancels at t = eps_s (2.1e-4; ours uses expm1)."""
    ours = call(sys.modules["k_diffusing.schedules"], n, rng)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        theirs64 = call(kdiff, n, rng)
    finally:
        torch.set_default_dtype(previous)
    theirs32 = call(kdiff, n, rng)
    assert ours.dtype == torch.float64 and theirs32.dtype == torch.float32 and len(ours) == len(theirs32) == n + 1
    torch.testing.assert_close(ours, theirs64, rtol=1e-12, atol=0)
    rtol32 = {"vp": 3e-4, "karras_rho3": 2.5e-5}.get(name, 3e-6)
    if name == "karras" and rng == RANGES[0]:
        rtol32 = 1.5e-6
    torch.testing.assert_close(ours.float(), theirs32, rtol=rtol32, atol=0)


def test_append_zero_and_device(kdiff):
    for x in (torch.tensor([3.0, 2.0]), torch.tensor([3.0, 2.0], dtype=torch.float64)):
        assert torch.equal(append_zero(x), kdiff.append_zero(x)) and append_zero(x).dtype == x.dtype
    assert get_sigmas_karras(5, 0.1, 10.0, device="cpu").device.type == "cpu"
    s = get_sigmas_karras(5, torch.tensor(0.1), torch.tensor(10.0))  # k-diffusion accepts 0-d tensors too
    torch.testing.assert_close(s, get_sigmas_karras(5, 0.1, 10.0), rtol=1e-7, atol=0)


@pytest.fixture(scope="module")
def kd_external(kdiff):
    """k-diffusion's external.py (DiscreteSchedule: sigma <-> t, get_sigmas), loaded beside the `kdiff` oracle."""
    origin = pathlib.Path(importlib.util.find_spec("k_diffusion").origin).parent / "external.py"
    spec = importlib.util.spec_from_file_location("kd_oracle.external", origin)
    module = importlib.util.module_from_spec(spec)
    sys.modules["kd_oracle.external"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [1, 2, 7, 20, 50, 333])
@pytest.mark.parametrize("table", ["sdxl", "flux"])
def test_normal_equals_k_diffusion_discrete_schedule(kd_external, table, n):
    """k-diffusion interpolates at float32 timesteps (t.float()): 1e-6 relative."""
    oracle = kd_external.DiscreteSchedule(TABLES[table], quantize=False)
    ours = get_sigmas_normal(n, TABLES[table])
    torch.testing.assert_close(ours, oracle.get_sigmas(n), rtol=1e-6, atol=0)
    sigma = torch.tensor([0.031, 0.05, 0.3, 1.0, 3.3, 14.0], dtype=torch.float64)
    sigma = sigma[sigma <= TABLES[table][-1]]
    torch.testing.assert_close(sigma_to_timestep(sigma, TABLES[table]), oracle.sigma_to_t(sigma), rtol=1e-6, atol=1e-6)


def test_timestep_sigma_round_trip():
    t = torch.tensor([0.0, 0.25, 1.0, 17.5, 998.9, 999.0], dtype=torch.float64)
    sigma = timestep_to_sigma(t, SDXL)
    torch.testing.assert_close(sigma_to_timestep(sigma, SDXL), t, rtol=0, atol=1e-9)
    idx = torch.tensor([0, 1, 500, 999])
    torch.testing.assert_close(timestep_to_sigma(idx, SDXL), SDXL[idx], rtol=1e-14, atol=0)
    # between entries: log-sigma is linear in t
    mid = timestep_to_sigma(torch.tensor([0.5]), SDXL)
    torch.testing.assert_close(mid, (SDXL[0] * SDXL[1]).sqrt().reshape(1), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def test_discrete_sigma_table_sdxl():
    """sqrt((1 - alphabar) / alphabar) re-derived in Python floats; SDXL's range 0.0292 .. 14.6146."""
    alphabar, expected = 1.0, []
    for b in SDXL_BETAS.tolist():
        alphabar *= 1.0 - b
        expected.append(math.sqrt((1.0 - alphabar) / alphabar))
    torch.testing.assert_close(SDXL, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert SDXL.dtype == torch.float64 and len(SDXL) == 1000
    assert abs(SDXL[0].item() - 0.0291672) < 1e-6 and abs(SDXL[-1].item() - 14.614641) < 1e-5


def test_flow_sigma_table():
    """shift(t / N) for t = 1 .. N, against the same formula written for one value: a s / (1 + (a - 1) s)."""
    a = 3.0
    table = flow_sigma_table(a)
    assert len(table) == 1000 and table[-1] == 1.0 and (torch.diff(table) > 0).all()
    s = 250 / 1000
    assert table[249].item() == pytest.approx(a * s / (1 + (a - 1) * s), rel=1e-15)
    torch.testing.assert_close(flow_sigma_table(1.0), torch.arange(1, 1001, dtype=torch.float64) / 1000)


# ---------------------------------------------------------------------------------------------------------------
# Formulas against independent re-derivations
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0, 12.0])
def test_karras_rho_spacing(rho):
    """sigma^(1/rho) is linear in the step index, the ends are exactly sigma_max and sigma_min (Eq. 5)."""
    lo, hi = RANGES[0]
    s = get_sigmas_karras(30, lo, hi, rho=rho)
    assert_schedule(s, 30)
    assert s[0].item() == pytest.approx(hi, rel=1e-14) and s[-2].item() == pytest.approx(lo, rel=1e-13)
    assert log_linear(s[:-1].numpy() ** (1 / rho)) < 1e-13


def test_exponential_and_polyexponential():
    lo, hi = RANGES[1]
    s = get_sigmas_exponential(17, lo, hi)
    assert log_linear(np.log(s[:-1].numpy())) < 1e-13
    torch.testing.assert_close(get_sigmas_polyexponential(17, lo, hi, rho=1.0), s, rtol=1e-13, atol=0)
    p = get_sigmas_polyexponential(17, lo, hi, rho=2.0)
    ramp = (np.log(p[:-1].numpy()) - math.log(lo)) / (math.log(hi) - math.log(lo))  # = r_i^rho
    assert log_linear(np.sqrt(ramp)) < 1e-12
    assert p[0].item() == pytest.approx(hi, rel=1e-14) and p[-2].item() == pytest.approx(lo, rel=1e-14)


def test_vp_inverts_to_uniform_t():
    """log(1 + sigma^2) = beta_d t^2 / 2 + beta_min t: solving the quadratic for t gives linspace(1, eps_s, n)."""
    beta_d, beta_min, eps_s = 19.9, 0.1, 1e-3
    s = get_sigmas_vp(12)
    c = np.log1p(s[:-1].numpy() ** 2)
    t = (-beta_min + np.sqrt(beta_min**2 + 2 * beta_d * c)) / beta_d
    np.testing.assert_allclose(t, np.linspace(1, eps_s, 12), rtol=1e-10)
    assert s[0].item() == pytest.approx(152.1670, rel=1e-5)


def test_kl_optimal_is_uniform_in_atan():
    """Sabour et al. Thm. 3.1: tan((1 - u) atan sigma_max + u atan sigma_min) = uniform in atan(sigma), exact ends."""
    lo, hi = RANGES[0]
    s = get_sigmas_kl_optimal(25, lo, hi)
    assert_schedule(s, 25)
    assert s[0].item() == hi and s[-2].item() == lo
    assert log_linear(np.arctan(s[:-1].numpy())) < 1e-12
    assert get_sigmas_kl_optimal(1, lo, hi).tolist() == [hi, 0.0]


def test_laplace_against_scipy_quantiles():
    """Interior values equal exp(Laplace(mu, beta).ppf(1 - x)); on x in [0.1, 0.9] the 1e-5 regulariser inside the
    log moves log sigma by at most beta * 1e-5 / 0.2."""
    n, lo, hi = 41, 1e-3, 1e3
    for mu, beta in [(0.0, 0.5), (0.7, 1.3)]:
        s = get_sigmas_laplace(n, lo, hi, mu=mu, beta=beta)
        x = np.linspace(0, 1, n)
        inside = (x >= 0.1) & (x <= 0.9)
        np.testing.assert_allclose(s[:-1].numpy()[inside], np.exp(laplace.ppf(1 - x[inside], mu, beta)),
                                   rtol=beta * 1e-5 / 0.2 * 1.01)
    clamped = get_sigmas_laplace(10, *RANGES[0])
    assert clamped[0].item() == RANGES[0][1] and clamped[-2].item() == RANGES[0][0]


def test_laplace_on_flow_drops_clamped_half_unless_in_ve_units():
    """In flow units every x < 1/2 clamps to sigma_max = 1 (ComfyUI: zero-length steps); in VE units none do."""
    lo = float(FLUX[0])
    raw = get_sigmas_laplace(20, lo, 1.0)
    assert_schedule(raw, 20, exact_length=False)
    assert len(raw) == 12 and raw[0] == 1.0  # the 10 points x = i / 19 < 1/2 collapse into one
    ve = get_sigmas_laplace(20, lo, 1.0, geometry="flow")
    assert_schedule(ve, 20)
    expected = [FLOW.from_ve(v) for v in get_sigmas_laplace(20, FLOW.to_ve(lo), 1e300)[:-1].tolist()]
    torch.testing.assert_close(ve[:-1], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("n,lin,thr", [(2, None, 0.025), (10, None, 0.025), (25, None, 0.025), (30, 5, 0.1),
                                       (50, 2, 0.025)])
def test_linear_quadratic_re_derived(n, lin, thr):
    """s = 1 - sigma / sigma_max: linear to thr over L steps, then the quadratic with q(L) = thr, q'(L) = thr / L,
    q(n) = 1, here solved as a 3 x 3 linear system."""
    L = n // 2 if lin is None else lin
    A = np.array([[L * L, L, 1.0], [2.0 * L, 1.0, 0.0], [n * n, n, 1.0]])
    a, b, c = np.linalg.solve(A, [thr, thr / L, 1.0])
    i = np.arange(n + 1, dtype=np.float64)
    s = np.where(i < L, i * thr / L, a * i * i + b * i + c)
    ours = get_sigmas_linear_quadratic(n, 1.0, threshold_noise=thr, linear_steps=lin)
    assert_schedule(ours, n)
    np.testing.assert_allclose(ours.numpy(), 1.0 - s, rtol=1e-12, atol=1e-14)
    scaled = get_sigmas_linear_quadratic(n, 14.6, threshold_noise=thr, linear_steps=lin)
    torch.testing.assert_close(scaled, 14.6 * ours, rtol=1e-14, atol=0)


def test_linear_quadratic_small_case_by_hand():
    """n = 4, L = 2, thr = .025: s = 0, .0125, .025, .025 + .0125 + a with a = (2 - .1) / (2 * 2^2) = .2375, 1."""
    torch.testing.assert_close(get_sigmas_linear_quadratic(4, 1.0),
                               torch.tensor([1.0, 0.9875, 0.975, 0.725, 0.0], dtype=torch.float64))
    assert get_sigmas_linear_quadratic(1, 2.0).tolist() == [2.0, 0.0]


@pytest.mark.parametrize("n", [1, 3, 10, 50, 333])
@pytest.mark.parametrize("table", ["sdxl", "flux"])
def test_sgm_uniform_is_uniform_in_t_without_the_last(table, n):
    s = get_sigmas_sgm_uniform(n, TABLES[table])
    assert_schedule(s, n)
    t = sigma_to_timestep(s[:-1], TABLES[table]).numpy()
    np.testing.assert_allclose(t, np.linspace(999, 0, n + 1)[:-1], rtol=0, atol=1e-8)


def test_normal_and_sgm_uniform_take_a_timestep_range():
    lo, hi = 0.1, 10.0
    for fn, points in ((get_sigmas_normal, 9), (get_sigmas_sgm_uniform, 10)):
        s = fn(9, SDXL, sigma_min=lo, sigma_max=hi)
        assert_schedule(s, 9)
        t = sigma_to_timestep(s[:-1], SDXL).numpy()
        t_hi, t_lo = sigma_to_timestep(torch.tensor([hi, lo]), SDXL).tolist()
        np.testing.assert_allclose(t, np.linspace(t_hi, t_lo, points)[:9], atol=1e-8)
    assert get_sigmas_normal(9, SDXL, sigma_min=lo, sigma_max=hi)[-2].item() == pytest.approx(lo, rel=1e-12)


def test_simple_and_ddim_uniform_indices():
    """simple: table[N - 1 - floor(kN/n)]; ddim_uniform: table[1 + j (N // n)], reversed (flow table: sigma = t/N)."""
    table = TABLES["flow"]  # table[i] = (i + 1) / 1000: the index can be read off the value
    for n in (1, 3, 7, 10, 30, 999):
        idx = np.rint(get_sigmas_simple(n, table)[:-1].numpy() * 1000).astype(int) - 1
        assert idx.tolist() == [999 - (k * 1000) // n for k in range(n)]
        idx = np.rint(get_sigmas_ddim_uniform(n, table)[:-1].numpy() * 1000).astype(int) - 1
        assert idx.tolist() == [1 + j * (1000 // n) for j in reversed(range(n))]
    assert get_sigmas_simple(1000, table)[:-1].tolist() == table.flip(0).tolist()


@pytest.mark.parametrize("n", [1, 3, 7, 10, 12, 15, 20, 25, 30, 64, 333, 999])
def test_ddim_uniform_comfyui_count(n):
    """comfyui=True: ComfyUI keeps stepping by c = N // n from index 1 to the table's end: indices 1 + j c <= N - 1,
    ceil((N - 1) / c) steps. The default keeps n steps (its indices are the comfyui ones' lowest n)."""
    table = TABLES["flow"]
    ours = get_sigmas_ddim_uniform(n, table, comfyui=True)
    idx = np.rint(ours[:-1].numpy() * 1000).astype(int) - 1
    step = 1000 // n
    expected = []
    t = 1
    while t <= 999:
        expected.append(t)
        t += step
    assert idx.tolist() == expected[::-1] and ours[-1] == 0
    assert len(idx) == math.ceil(999 / step)
    default = get_sigmas_ddim_uniform(n, table)
    assert default[:-1].tolist() == ours[:-1][-n:].tolist()
    assert (len(idx) > n) == (n * step < 999)


def test_ddim_uniform_comfyui_on_sdxl_at_30_steps():
    """The issue's case: 30 steps on SDXL's 1000 entries, c = 33: ComfyUI has 31 steps from t = 991, ours 30 from
    t = 958."""
    comfy = get_sigmas("ddim_uniform", 30, SDXL, comfyui=True)
    ours = get_sigmas("ddim_uniform", 30, SDXL)
    assert len(comfy) == 32 and len(ours) == 31
    assert comfy[:-1].tolist() == SDXL[[1 + 33 * k for k in range(30, -1, -1)]].tolist()
    assert comfy[0].item() == SDXL[991].item() and ours[0].item() == SDXL[958].item()
    assert comfy[1:].tolist() == ours.tolist()


@pytest.mark.parametrize("n", [1, 2, 5, 10, 16, 30, 100, 300, 999])
def test_beta_timestep_space_re_derived(n):
    """Lee et al. / ComfyUI: t_k = rint(BetaInv(1 - k/n; .6, .6) (N - 1)) (scipy.special.betaincinv here), repeats
    dropped; fewer than n steps appear from n ~ 150 on SDXL's 1000 timesteps."""
    t = np.rint(betaincinv(0.6, 0.6, 1 - np.arange(n) / n) * 999).astype(int)
    t = [int(v) for i, v in enumerate(t) if i == 0 or v != t[i - 1]]
    ours = get_sigmas_beta(n, SDXL)
    assert_schedule(ours, n, exact_length=False)
    assert ours[:-1].tolist() == SDXL[t].tolist()
    assert (len(ours) == n + 1) == (n <= 100)


def test_turbo_timesteps():
    idx = [999 - 100 * k for k in range(10)]
    assert get_sigmas_turbo(10, SDXL).tolist() == SDXL[idx].tolist() + [0.0]
    assert get_sigmas_turbo(1, SDXL).tolist() == [SDXL[999].item(), 0.0]
    assert get_sigmas_turbo(4, SDXL, start=6).tolist() == SDXL[[399, 299, 199, 99]].tolist() + [0.0]


@pytest.mark.parametrize("model", sorted(AYS_SIGMAS))
def test_align_your_steps_published_values(model):
    """n = 10: the published 11 values with the last set to 0. n = 20: the published values at every other
    position (the nodes of linspace(0, 1, 11) are in linspace(0, 1, 21)), geometric means in between."""
    published = torch.tensor(AYS_SIGMAS[model], dtype=torch.float64)
    assert len(published) == 11
    s10 = get_sigmas_align_your_steps(10, model=model)
    assert s10[:-1].tolist() == published[:-1].tolist() and s10[-1] == 0
    s20 = get_sigmas_align_your_steps(20, model=model)
    assert_schedule(s20, 20)
    torch.testing.assert_close(s20[0:20:2], published[:-1], rtol=1e-13, atol=0)
    torch.testing.assert_close(s20[1:20:2], (published[:-1] * published[1:]).sqrt(), rtol=1e-13, atol=0)
    s5 = get_sigmas_align_your_steps(5, model=model)  # nodes of linspace(0, 1, 6) at positions 0, 2, 4, ... of 11
    torch.testing.assert_close(s5[:-1], published[0:10:2], rtol=1e-13, atol=0)


def test_align_your_steps_sdxl_table_matches_diffusers_constant():
    from diffusers.schedulers import AysSchedules

    assert get_sigmas("align_your_steps", 10, SDXL).tolist() == AysSchedules["StableDiffusionXLSigmas"]
    assert get_sigmas("align_your_steps", 10, model="sd1").tolist() == AysSchedules["StableDiffusionSigmas"]
    assert get_sigmas("align_your_steps", 10, model="svd").tolist() == AysSchedules["StableDiffusionVideoSigmas"]
    assert list(AYS_TIMESTEPS["sd1"][:-1]) == AysSchedules["StableDiffusionTimesteps"]
    assert list(AYS_TIMESTEPS["sdxl"][:-1]) == AysSchedules["StableDiffusionXLTimesteps"]


def test_align_your_steps_aliases():
    for alias in ("sd15", "sd1.5"):
        assert torch.equal(get_sigmas("align_your_steps", 13, model=alias), get_sigmas("align_your_steps", 13,
                                                                                        model="sd1"))


# ComfyUI's AlignYourStepsScheduler lists (comfy_extras/nodes_align_your_steps.py), 10 digits: the published timesteps
# read off SD's table.
COMFYUI_AYS = {
    "sd1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662],
    "sdxl": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177],
}


@pytest.mark.parametrize("model", sorted(COMFYUI_AYS))
def test_align_your_steps_timesteps_are_comfyuis_values(model):
    s = get_sigmas("align_your_steps", 10, model=model, source="timesteps")
    assert_schedule(s, 10)
    torch.testing.assert_close(s[:-1], torch.tensor(COMFYUI_AYS[model], dtype=torch.float64), rtol=0, atol=6e-11)
    assert torch.equal(get_sigmas("align_your_steps", 10, SDXL, model=model, source="timesteps"), s)
    s16 = get_sigmas("align_your_steps", 16, model=model, source="timesteps")
    ref = get_sigmas_align_your_steps(16, model=model)  # same interpolation, other published values
    assert_schedule(s16, 16)
    assert (s16[:-1] / ref[:-1] - 1).abs().max() < 0.02


def test_align_your_steps_sigmas_against_timesteps():
    """The finding behind the default: the two published forms differ by at most 1.42 % (SDXL, ninth value: 0.113
    against sigma(13) = 0.11142), and each timestep is within 0.57 of the published noise level's continuous one
    (SD 1.5's 0.399 sits at t = 124.56, published as 124)."""
    for model in ("sd1", "sdxl"):
        sig = torch.tensor(AYS_SIGMAS[model][:-1], dtype=torch.float64)
        ts = torch.tensor(AYS_TIMESTEPS[model][:-1], dtype=torch.float64)
        assert (sigma_to_timestep(sig, SDXL) - ts).abs().max() < 0.57
        rel = get_sigmas("align_your_steps", 10, model=model)[:-1] / get_sigmas(
            "align_your_steps", 10, model=model, source="timesteps")[:-1] - 1
        if model == "sdxl":
            assert rel.abs().argmax().item() == 9 and 0.0141 < rel[9].item() < 0.0143
        assert rel.abs().max() < 0.0143


# ---------------------------------------------------------------------------------------------------------------
# GITS, Optimal Steps, LTXV (ComfyUI's schedule nodes)
# ---------------------------------------------------------------------------------------------------------------

# Rows of the authors' GITS tables as printed in ComfyUI's comfy_extras/nodes_gits.py, keyed (coeff, steps).
GITS_PUBLISHED = {
    (0.80, 2): [14.61464119, 7.49001646, 0.02916753],
    (1.00, 15): [14.61464119, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.84484982,
                 2.19988537, 1.61558151, 1.162866, 0.803307, 0.50118381, 0.27464288, 0.09824532, 0.02916753],
    (1.20, 10): [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823,
                 0.19894916, 0.09824532, 0.02916753],
    (1.50, 20): [14.61464119, 2.45070267, 1.41535246, 0.95350921, 0.72133851, 0.57119018, 0.4783645, 0.43325692,
                 0.38853383, 0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385,
                 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753],
}


@pytest.mark.parametrize("coeff,n", sorted(GITS_PUBLISHED))
def test_gits_published_rows(coeff, n):
    s = get_sigmas("gits", n, coeff=coeff)
    assert s[:-1].tolist() == GITS_PUBLISHED[coeff, n][:-1] and s[-1] == 0


def test_gits_default_is_coeff_1_20():
    assert torch.equal(get_sigmas("gits", 10), get_sigmas("gits", 10, coeff=1.2))
    assert torch.equal(get_sigmas("gits", 10, SDXL), get_sigmas_gits(10, coeff=1.20))


def test_gits_tables_are_points_of_the_search_grid():
    """Independent of the transcription: every published sigma is within 2.7e-5 of SD's sigma at t = 999 (1 - j/100)
    (log-sigma interpolation of the float64 table), each row runs from grid point 0 (t = 999) to 100 (t = 0),
    strictly, with n + 1 points; 15 coefficients 0.80 .. 1.50."""
    assert sorted(GITS_STEPS) == list(range(80, 151, 5))
    for j, value in GITS_GRID_SIGMAS.items():
        assert value == pytest.approx(timestep_to_sigma(999 * (1 - j / 100), SDXL).item(), rel=2.7e-5)
    for rows in GITS_STEPS.values():
        assert len(rows) == 19
        for n, row in enumerate(rows, start=2):
            assert len(row) == n + 1 and row[0] == 0 and row[-1] == 100
            assert all(a < b for a, b in zip(row, row[1:]))


@pytest.mark.parametrize("coeff", [0.8, 1.2, 1.5])
def test_gits_interpolates_the_20_step_table_beyond_20(coeff):
    """n = 40: the 20-step table's 21 values at every other point (linspace(0, 1, 21) within linspace(0, 1, 41)) and
    their geometric means in between, as ComfyUI's loglinear_interp."""
    published = torch.tensor([GITS_GRID_SIGMAS[j] for j in GITS_STEPS[round(coeff * 100)][-1]], dtype=torch.float64)
    s40 = get_sigmas("gits", 40, coeff=coeff)
    assert_schedule(s40, 40)
    torch.testing.assert_close(s40[0:40:2], published[:-1], rtol=1e-13, atol=0)
    torch.testing.assert_close(s40[1:40:2], (published[:-1] * published[1:]).sqrt(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("coeff", [c / 100 for c in range(80, 151, 5)])
def test_gits_properties(coeff):
    for n in list(range(2, 26)) + [50, 200]:
        s = get_sigmas("gits", n, coeff=coeff)
        assert_schedule(s, n)
        assert s[0].item() == pytest.approx(14.61464119, rel=1e-14)


@pytest.mark.parametrize("model,steps", [("flux", 10), ("wan", 20), ("chroma", 40)])
def test_optimal_steps_published_and_interpolated(model, steps):
    """At the table's own step count: the published sigmas, last set to 0; at twice it: the published values at every
    other point, geometric means in between (log-linear interpolation)."""
    published = OPTIMAL_STEPS_SIGMAS[model]
    assert len(published) == steps + 1 and published[-1] == 0.001
    s = get_sigmas("optimal_steps", steps, FLUX, model=model)
    assert s[:-1].tolist() == list(published[:-1]) and s[-1] == 0
    p = torch.tensor(published, dtype=torch.float64)
    s2 = get_sigmas("optimal_steps", 2 * steps, model=model)
    assert_schedule(s2, 2 * steps)
    torch.testing.assert_close(s2[0 : 2 * steps : 2], p[:-1], rtol=1e-13, atol=0)
    torch.testing.assert_close(s2[1 : 2 * steps : 2], (p[:-1] * p[1:]).sqrt(), rtol=1e-13, atol=0)
    comfy_name = {"flux": "FLUX", "wan": "Wan", "chroma": "Chroma"}[model]
    assert torch.equal(get_sigmas_optimal_steps(7, model=comfy_name), get_sigmas_optimal_steps(7, model=model))
    for n in range(3, 60):
        assert_schedule(get_sigmas("optimal_steps", n, model=model), n)


def test_optimal_steps_written_out():
    """FLUX's 10-step table (Pei et al. 2025, in ComfyUI's OptimalStepsScheduler) and its 5-step interpolation:
    nodes of linspace(0, 1, 6) are the published points 0, 2, 4, 6, 8, 10."""
    flux = [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808]
    assert get_sigmas("optimal_steps", 10).tolist() == flux + [0.0]
    torch.testing.assert_close(get_sigmas("optimal_steps", 5)[:-1], torch.tensor(flux[0::2], dtype=torch.float64),
                               rtol=1e-14, atol=0)


def ltxv_reference(n, tokens, max_shift, base_shift, stretch, terminal):
    """The LTXV formula written out: mu linear in tokens through (1024, base) and (4096, max); FLUX's time shift
    sigma = e^mu u / (e^mu u + 1 - u) at u = 1 - k/n; stretch 1 - sigma so that the last nonzero value is terminal."""
    mu = base_shift + (max_shift - base_shift) / 3072 * (tokens - 1024)
    out = []
    for k in range(n):
        u = 1 - k / n
        out.append(math.exp(mu) * u / (math.exp(mu) * u + 1 - u))
    if stretch and n > 1:
        scale = (1 - out[-1]) / (1 - terminal)
        out = [1 - (1 - v) / scale for v in out]
    return torch.tensor(out + [0.0], dtype=torch.float64)


@pytest.mark.parametrize("n,tokens,max_shift,base_shift,stretch,terminal", [
    (20, 4096, 2.05, 0.95, True, 0.1), (4, 4096, 2.05, 0.95, False, 0.1), (7, 1024, 2.05, 0.95, True, 0.25),
    (30, 6144, 2.05, 0.95, True, 0.1), (12, 300, 1.5, 0.5, True, 0.05), (1, 4096, 2.05, 0.95, True, 0.1),
])
def test_ltxv_formula(n, tokens, max_shift, base_shift, stretch, terminal):
    s = get_sigmas("ltxv", n, FLUX, tokens=tokens, max_shift=max_shift, base_shift=base_shift, stretch=stretch,
                   terminal=terminal)
    assert_schedule(s, n)
    torch.testing.assert_close(s, ltxv_reference(n, tokens, max_shift, base_shift, stretch, terminal), rtol=1e-13,
                               atol=1e-15)
    assert s[0].item() == 1.0
    if stretch and n > 1:
        assert s[-2].item() == pytest.approx(terminal, rel=1e-13)


def test_ltxv_by_hand():
    """Two steps at 1024 tokens (mu = base_shift = 0.95) without stretch: sigma_1 = sigmoid(0.95) = 0.72111...;
    with the defaults the last nonzero sigma is terminal = 0.1."""
    s = get_sigmas_ltxv(2, tokens=1024, stretch=False)
    assert s.tolist() == pytest.approx([1.0, 1 / (1 + math.exp(-0.95)), 0.0], rel=1e-15)
    assert s[1].item() == pytest.approx(0.721115, abs=1e-6)
    assert get_sigmas_ltxv(2).tolist() == pytest.approx([1.0, 0.1, 0.0], rel=1e-14)
    more, fewer = get_sigmas_ltxv(20, tokens=8192), get_sigmas_ltxv(20, tokens=2048)
    assert (more[1:-2] > fewer[1:-2]).all()  # more tokens, more shift (the ends are 1, terminal and 0 for both)


# ---------------------------------------------------------------------------------------------------------------
# Geometry option: formulas in VE units on flow
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["karras", "exponential", "polyexponential", "kl_optimal"])
def test_flow_geometry_is_the_formula_in_ve_units(name):
    lo, hi = float(FLUX[0]), float(FLUX[-2])
    ours = get_sigmas(name, 15, sigma_min=lo, sigma_max=hi, geometry=FLOW)
    assert_schedule(ours, 15)
    ve = get_sigmas(name, 15, sigma_min=FLOW.to_ve(lo), sigma_max=FLOW.to_ve(hi))
    expected = torch.tensor([FLOW.from_ve(v) for v in ve.tolist()], dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=1e-13, atol=0)
    assert ours[0].item() == pytest.approx(hi, rel=1e-13) and ours[-2].item() == pytest.approx(lo, rel=1e-12)
    for identity in ("ve", VE):
        torch.testing.assert_close(get_sigmas(name, 15, SDXL, geometry=identity), get_sigmas(name, 15, SDXL),
                                   rtol=0, atol=0)


def test_flow_geometry_from_sigma_one():
    """kl_optimal: atan(inf) = pi/2, starts at exactly 1; karras: no finite upper end, a clear error."""
    s = get_sigmas("kl_optimal", 12, FLUX, geometry="flow")
    assert_schedule(s, 12)
    assert s[0] == 1.0 and s[-2].item() == pytest.approx(FLUX[0].item(), rel=1e-12)
    raw = get_sigmas("karras", 12, FLUX)  # flow units: finite, starts at 1 (k-diffusion / ComfyUI behaviour)
    assert_schedule(raw, 12)
    assert raw[0] == 1.0
    with pytest.raises(ValueError, match=r"sigma_ve = inf .* pass sigma_max < 1"):
        get_sigmas("karras", 12, FLUX, geometry="flow")
    with pytest.raises(ValueError, match="exceeds the flow geometry's largest sigma"):
        get_sigmas_karras(12, 0.01, 2.0, geometry=FLOW)


# ---------------------------------------------------------------------------------------------------------------
# diffusers cross-checks (EulerDiscreteScheduler on SDXL's configuration)
# ---------------------------------------------------------------------------------------------------------------

SDXL_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                   steps_offset=1)
DIFFUSERS_NS = [2, 3, 7, 10, 20, 25, 30, 50, 99, 100]


@pytest.fixture(scope="module")
def euler():
    """``euler(n, **config) -> (sigmas, timesteps)`` in float64, and diffusers' own sigma table, which it computes
    from float32 alphas_cumprod (1.3e-5 relative from the float64 table at t = 0)."""
    diffusers = pytest.importorskip("diffusers")

    def run(n, **config):
        scheduler = diffusers.EulerDiscreteScheduler(**SDXL_CONFIG, **config)
        with warnings.catch_warnings():  # numpy 2's __array__ copy-keyword deprecation, inside diffusers
            warnings.simplefilter("ignore", DeprecationWarning)
            scheduler.set_timesteps(n)
        return scheduler.sigmas.double(), scheduler.timesteps.double()

    alphas_cumprod = diffusers.EulerDiscreteScheduler(**SDXL_CONFIG).alphas_cumprod.double()
    run.table = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    return run


def test_sdxl_table_against_diffusers(euler):
    torch.testing.assert_close(SDXL, euler.table, rtol=1.5e-5, atol=0)


@pytest.mark.parametrize("n", DIFFUSERS_NS)
@pytest.mark.parametrize("name,flag", [("karras", "use_karras_sigmas"), ("exponential", "use_exponential_sigmas"),
                                       ("beta", "use_beta_sigmas")])
def test_range_schedules_against_diffusers(euler, name, flag, n):
    """'linspace' spacing makes diffusers' range the table's ends; diffusers returns float32 (rtol 1e-6). beta uses
    space='sigma', diffusers' variant (linear in sigma). n = 1 differs: diffusers' one-step 'linspace' is t = 0."""
    theirs, _ = euler(n, timestep_spacing="linspace", **{flag: True})
    options = {"space": "sigma"} if name == "beta" else {}
    torch.testing.assert_close(get_sigmas(name, n, euler.table, **options), theirs, rtol=1e-6, atol=0)


@pytest.mark.parametrize("n", DIFFUSERS_NS)
def test_normal_against_diffusers_linspace(euler, n):
    """Same timesteps; diffusers interpolates sigma linearly, k-diffusion/ours log-linearly: equal at integer t,
    <= 2e-4 relative in between for n <= 100 (measured 1.6e-4 at n = 99)."""
    theirs, timesteps = euler(n, timestep_spacing="linspace")
    ours = get_sigmas_normal(n, euler.table)
    torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=0)
    integer = timesteps == timesteps.round()
    torch.testing.assert_close(ours[:-1][integer], theirs[:-1][integer], rtol=1e-6, atol=0)


@pytest.mark.parametrize("n", [1] + DIFFUSERS_NS)
def test_simple_and_sgm_uniform_against_trailing(euler, n):
    """simple = 'trailing' when n divides 1000, else one timestep higher where kN/n has a fraction >= 1/2 (999 -
    floor(kN/n) against 999 - round(kN/n)); sgm_uniform's continuous t is within 1.5 timesteps of 'trailing'."""
    theirs, timesteps = euler(n, timestep_spacing="trailing")
    simple = get_sigmas_simple(n, euler.table)
    t_simple = sigma_to_timestep(simple[:-1], euler.table)
    assert (t_simple - timesteps).abs().max() <= 1 + 1e-6 and (t_simple >= timesteps - 1e-6).all()
    if 1000 % n == 0:
        torch.testing.assert_close(simple, theirs, rtol=1e-6, atol=0)
    t_sgm = sigma_to_timestep(get_sigmas_sgm_uniform(n, euler.table)[:-1], euler.table)
    assert (t_sgm - timesteps).abs().max() <= 1.5


@pytest.mark.parametrize("n", [1] + DIFFUSERS_NS)
def test_ddim_uniform_equals_leading(euler, n):
    theirs, _ = euler(n, timestep_spacing="leading")
    torch.testing.assert_close(get_sigmas_ddim_uniform(n, euler.table), theirs, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Properties over many n and ranges
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), lo=st.floats(1e-3, 1.0), ratio=st.floats(1.5, 1e4), rho=st.floats(0.5, 12.0),
       poly_rho=st.floats(0.25, 3.0))
def test_range_schedules_properties(n, lo, ratio, rho, poly_rho):
    """polyexponential's rho stays <= 3: with r^rho < 1e-16 its last sigmas round to sigma_min (documented)."""
    hi = lo * ratio
    for name in RANGE_SCHEDULES + ["linear_quadratic"]:
        options = {"karras": {"rho": rho}, "polyexponential": {"rho": poly_rho}}.get(name, {})
        bounds = {"sigma_max": hi} if name == "linear_quadratic" else {"sigma_min": lo, "sigma_max": hi}
        s = get_sigmas(name, n, **bounds, **options)
        assert_schedule(s, n, exact_length=name not in MAY_DROP)
        assert s[0].item() <= hi * (1 + 1e-12)
        if name != "linear_quadratic":
            assert s[-2].item() >= lo * (1 - 1e-12)
        if name not in MAY_DROP:
            assert s[0].item() == pytest.approx(hi, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), lo=st.floats(1e-4, 0.3), top=st.floats(0.5, 1.0))
def test_flow_geometry_properties(n, lo, top):
    for name in RANGE_SCHEDULES:
        hi = min(top, 0.999) if name in ("karras", "exponential", "polyexponential") else top
        s = get_sigmas(name, n, sigma_min=lo, sigma_max=hi, geometry=FLOW)
        assert_schedule(s, n, exact_length=name not in MAY_DROP)
        assert s[0].item() <= hi and s[-2].item() >= lo * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 999), table=st.sampled_from(sorted(TABLES)))
def test_table_schedules_properties(n, table):
    sigma_table = TABLES[table]
    for name in TABLE_SCHEDULES:
        steps = min(n, 10) if name == "turbo" else n
        s = get_sigmas(name, steps, sigma_table)
        assert_schedule(s, steps, exact_length=name not in MAY_DROP)
        assert s[0].item() <= sigma_table[-1].item() * (1 + 1e-12)
        assert s[-2].item() >= sigma_table[0].item() * (1 - 1e-12)
    if table == "sdxl":
        assert_schedule(get_sigmas("align_your_steps", n, sigma_table), n)
        assert_schedule(get_sigmas("vp", n), n)


# ---------------------------------------------------------------------------------------------------------------
# Registry and errors
# ---------------------------------------------------------------------------------------------------------------


def test_registry_covers_the_catalogue():
    assert set(SCHEDULES) == set(RANGE_SCHEDULES + TABLE_SCHEDULES + PUBLISHED + ["vp", "linear_quadratic"])
    assert SCHEDULES["karras"].options == ("rho", "geometry")
    assert SCHEDULES["gits"].options == ("coeff",) and SCHEDULES["optimal_steps"].options == ("model",)
    assert SCHEDULES["ltxv"].options == ("tokens", "max_shift", "base_shift", "stretch", "terminal")
    assert SCHEDULES["align_your_steps"].options == ("model", "source")
    assert SCHEDULES["ddim_uniform"].options == ("comfyui",)
    for spec in SCHEDULES.values():
        assert spec.reference and spec.function.__doc__
        args = {"sigma_table": FLUX if spec.name in FLOW_ONLY else SDXL} if spec.table != "unused" else {}
        assert_schedule(get_sigmas(spec.name, 8, **args), 8)


def test_get_sigmas_range_defaults_and_overrides():
    torch.testing.assert_close(get_sigmas("karras", 10, SDXL), get_sigmas_karras(10, SDXL[0], SDXL[-1]))
    torch.testing.assert_close(get_sigmas("karras", 10, SDXL, sigma_min=0.1, rho=5.0),
                               get_sigmas_karras(10, 0.1, SDXL[-1], rho=5.0))
    torch.testing.assert_close(get_sigmas("exponential", 10, sigma_min=0.1, sigma_max=3.0),
                               get_sigmas_exponential(10, 0.1, 3.0))
    torch.testing.assert_close(get_sigmas("linear_quadratic", 10, FLUX), get_sigmas_linear_quadratic(10, 1.0))


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(ValueError) as err:
        get_sigmas("karas", 10, SDXL)
    message = str(err.value)
    assert "unknown schedule 'karas'" in message and "Did you mean 'karras'?" in message
    assert all(name in message for name in SCHEDULES)


@pytest.mark.parametrize("n", [0, -3, 2.5, "10"])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n \\(the number of steps\\)"):
        get_sigmas("karras", n, SDXL)
    with pytest.raises(ValueError, match="n \\(the number of steps\\)"):
        get_sigmas_karras(n, 0.1, 10.0)


@pytest.mark.parametrize("name", TABLE_SCHEDULES)
def test_table_schedule_without_table(name):
    with pytest.raises(ValueError, match=f"schedule '{name}' needs the model's sigma table"):
        get_sigmas(name, 5, sigma_min=0.1, sigma_max=10.0)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(name="karras", n=5), "needs sigma_min and sigma_max, or sigma_table"),
    (dict(name="linear_quadratic", n=5), "needs sigma_max, or sigma_table"),
    (dict(name="simple", n=5, sigma_table=SDXL, sigma_max=3.0), "does not take sigma_max: it is defined on the model"),
    (dict(name="vp", n=5, sigma_min=0.1), "does not take sigma_min: its range is fixed"),
    (dict(name="linear_quadratic", n=5, sigma_table=FLUX, sigma_min=0.1), "pass sigma_max only"),
    (dict(name="karras", n=5, sigma_table=SDXL, rh=7.0), r"unknown option\(s\) \['rh'\]. Did you mean 'rho'\?"),
    (dict(name="simple", n=5, sigma_table=SDXL, rho=7.0), "Its options: none"),
    (dict(name="karras", n=5, sigma_table=SDXL, rho=0.0), "rho must be a positive"),
    (dict(name="karras", n=5, sigma_min=3.0, sigma_max=1.0), "need 0 < sigma_min < sigma_max"),
    (dict(name="exponential", n=5, sigma_min=0.0, sigma_max=1.0), "need 0 < sigma_min < sigma_max"),
    (dict(name="karras", n=5, sigma_table=SDXL, geometry="vp"), "unknown geometry 'vp'"),
    (dict(name="normal", n=5, sigma_table=SDXL, sigma_max=20.0), "sigma_max <= sigma_table"),
    (dict(name="beta", n=5, sigma_table=SDXL, space="log"), "space must be 'timestep'"),
    (dict(name="beta", n=5, sigma_table=SDXL, alpha=-1.0), "alpha must be a positive"),
    (dict(name="turbo", n=11, sigma_table=SDXL), r"n \+ start <= 10"),
    (dict(name="simple", n=1001, sigma_table=SDXL), "simple needs n <= len"),
    (dict(name="ddim_uniform", n=1000, sigma_table=SDXL), "ddim_uniform needs n <= len"),
    (dict(name="align_your_steps", n=5, model="flux"), "published tables: \\['sd1', 'sdxl', 'svd'\\]"),
    (dict(name="align_your_steps", n=5, sigma_table=FLUX), "no published table for flow models"),
    (dict(name="align_your_steps", n=5, source="time"), "source must be 'sigmas'.*or 'timesteps'"),
    (dict(name="align_your_steps", n=5, model="svd", source="timesteps"), r"timestep indices only for \['sd1'"),
    (dict(name="align_your_steps", n=5, sigma_table=SDXL[:500], source="timesteps"), "indexes a 1000-timestep"),
    (dict(name="ddim_uniform", n=2, sigma_table=torch.tensor([1e-7, 1e-6, 1.0, 2.0]), comfyui=True),
     r"sigma_table\[1\] <= 1e-5"),
    (dict(name="gits", n=10, coeff=1.23), "coeff must be one of the published 0.80, 0.85, .*, 1.50, got 1.23"),
    (dict(name="gits", n=1), r"n \(the number of steps\) must be >= 2, got 1"),
    (dict(name="gits", n=10, sigma_table=FLUX), "gits has no published table for flow models"),
    (dict(name="gits", n=10, sigma_min=0.1), "does not take sigma_min"),
    (dict(name="optimal_steps", n=2), r"must be >= 3, got 2"),
    (dict(name="optimal_steps", n=10, model="sdxl"),
     r"unknown Optimal Steps model 'sdxl'.*\['chroma', 'flux', 'wan'\]"),
    (dict(name="optimal_steps", n=10, sigma_table=SDXL), "optimal_steps is a flow-model schedule"),
    (dict(name="ltxv", n=10, sigma_table=SDXL), "ltxv is a flow-model schedule"),
    (dict(name="ltxv", n=10, terminal=0.0), r"terminal must lie in \(0, 1\)"),
    (dict(name="ltxv", n=10, terminal=1.0), r"terminal must lie in \(0, 1\)"),
    (dict(name="ltxv", n=10, tokens=0), "tokens must be a positive integer"),
    (dict(name="ltxv", n=10, max_shift=100.0), "collapse"),
    (dict(name="ltxv", n=10, max_shift=float("nan")), "must be finite"),
    (dict(name="ltxv", n=10, shift=2.0), r"unknown option\(s\) \['shift'\]"),
    (dict(name="linear_quadratic", n=50, sigma_max=1.0, linear_steps=0), r"linear_steps must lie in \[1, n - 1\]"),
    (dict(name="linear_quadratic", n=200, sigma_max=1.0, linear_steps=2), "need linear_steps >= 3"),
    (dict(name="linear_quadratic", n=5, sigma_max=1.0, threshold_noise=1.5), "threshold_noise must lie in"),
    (dict(name="normal", n=5, sigma_table=SDXL.flip(0)), "strictly ascending \\(it is descending"),
    (dict(name="normal", n=5, sigma_table=torch.tensor([0.0, 1.0])), "positive finite"),
])
def test_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_sigmas(**kwargs)


def test_zero_terminal_snr_table_is_rejected_with_a_hint():
    betas = SDXL_BETAS.clone()
    betas[-1] = 1.0  # alphabar_T = 0
    table = discrete_sigma_table(betas)
    assert math.isinf(table[-1].item())
    with pytest.raises(ValueError, match="clamp a zero-terminal-SNR entry"):
        get_sigmas("normal", 5, table)
