"""Property-based tests (hypothesis) of the schedules and the samplers (issue 7): over random step counts, sigma
ranges, sigma tables, batch sizes, dtypes and both geometries.

Schedules: every registered schedule, called through ``get_sigmas``, returns a 1-D CPU float64 tensor of ``n + 1``
finite values (``laplace`` and ``beta`` may drop repeats: at most ``n + 1``), non-increasing (strictly decreasing where
the module docstring promises it), positive before a final exact 0, inside the range it was given, starting at
``sigma_max`` where the formula pins it; ``get_sigmas`` equals the schedule's own function.

Samplers: every catalogue sampler gives finite output of the input's shape and dtype, the same bits on a repeated
run with the same generators, leaves torch's global RNG alone when given generators, and is batch invariant:
item ``i`` of a batch made with per-item generators ``[g_0, ..., g_{B-1}]`` equals the item made alone with ``[g_i]``,
which equals the item made alone with the single generator ``g_i`` (the clarifications: "a list of one generator
must give the same result").
README ("Noise and batch invariance") says "equals" and states no tolerance, so this checks bit equality
(``torch.equal``); the analytic denoiser is elementwise and the samplers' coefficients are Python floats, so nothing
but the generators may couple the batch items.

Determinism of the examples: every test runs with ``derandomize=True`` (hypothesis derives its examples from the
test's name, the same on every run and in CI) and ``database=None`` (no example database is read or written).
"""

import inspect
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from k_diffusing import FLOW, VE, list_samplers
from k_diffusing import schedules as S
from k_diffusing.testing.analytic import gaussian
from k_diffusing.testing.measure import runnable
from k_diffusing.testing.convergence import initial_noise

PROPERTY = settings(derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# ---------------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------------

RANGE_PINNED = ["karras", "exponential", "polyexponential", "kl_optimal"]  # first = sigma_max, last nonzero = sigma_min
RANGE_SCHEDULES = RANGE_PINNED + ["laplace"]
TABLE_SCHEDULES = ["normal", "sgm_uniform", "simple", "ddim_uniform", "beta", "turbo"]
MAY_DROP_REPEATS = {"laplace", "beta"}  # documented: "<= n + 1" values
MAY_REPEAT = {"polyexponential"}  # documented: large rho rounds the last sigmas to sigma_min (non-increasing only)

steps = st.integers(1, 200)


@st.composite
def ve_ranges(draw):
    """(sigma_min, sigma_max): sigma_min from 1e-4 to 1e3, sigma_max 0.01 to 6 decades above it."""
    lo = 10.0 ** draw(st.floats(-4.0, 3.0))
    return lo, lo * 10.0 ** draw(st.floats(0.01, 6.0))


@st.composite
def flow_ranges(draw, allow_one=True):
    """(sigma_min, sigma_max) with 0 < sigma_min < sigma_max <= 1 (exactly 1 sometimes, when allowed)."""
    lo = 10.0 ** draw(st.floats(-4.0, -0.05))
    if allow_one and draw(st.booleans()):
        return lo, 1.0
    hi = lo + (1.0 - lo) * draw(st.floats(0.01, 0.999))
    assume(lo < hi < 1.0)
    return lo, hi


def range_options(draw, name):
    if name == "karras":
        return {"rho": draw(st.floats(0.5, 12.0))}
    if name == "polyexponential":
        return {"rho": draw(st.floats(0.25, 4.0))}
    if name == "laplace":
        return {"mu": draw(st.floats(-3.0, 3.0)), "beta": draw(st.floats(0.1, 2.0))}
    return {}


@st.composite
def sigma_tables(draw):
    """A model's ascending sigma table: a discrete VP table from random linear / scaled-linear betas, or a flow table
    with a random shift."""
    size = draw(st.integers(10, 1000))
    if draw(st.booleans()):
        start = 10.0 ** draw(st.floats(-5.0, -3.0))
        end = start * 10.0 ** draw(st.floats(0.3, 2.0))
        assume(end < 0.5)
        betas = torch.linspace(start, end, size, dtype=torch.float64)
        if draw(st.booleans()):
            betas = torch.linspace(start**0.5, end**0.5, size, dtype=torch.float64) ** 2
        return S.discrete_sigma_table(betas)
    return S.flow_sigma_table(shift=10.0 ** draw(st.floats(-0.5, 1.0)), num_train_timesteps=size)


def check_contract(sigmas, name, n, lo, hi, strict):
    """The contract of every schedule (module docstring of k_diffusing/schedules.py)."""
    assert isinstance(sigmas, torch.Tensor) and sigmas.ndim == 1, name
    assert sigmas.dtype == torch.float64 and sigmas.device.type == "cpu", name
    if name in MAY_DROP_REPEATS:
        assert 2 <= len(sigmas) <= n + 1, (name, n, len(sigmas))
    else:
        assert len(sigmas) == n + 1, (name, n, len(sigmas))
    assert torch.isfinite(sigmas).all(), (name, sigmas)
    assert sigmas[-1].item() == 0.0, (name, sigmas[-1])
    body = sigmas[:-1]
    assert (body > 0).all(), (name, sigmas)
    steps_ = body[1:] - body[:-1]
    assert (steps_ < 0).all() if strict else (steps_ <= 0).all(), (name, sigmas)
    assert body.min().item() >= lo and body.max().item() <= hi, (name, lo, hi, body.min().item(), body.max().item())


@settings(PROPERTY, max_examples=60)
@given(data=st.data(), name=st.sampled_from(RANGE_SCHEDULES), n=steps, bounds=ve_ranges())
def test_range_schedules_ve(data, name, n, bounds):
    lo, hi = bounds
    options = range_options(data.draw, name)
    sigmas = S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi, **options)
    check_contract(sigmas, name, n, lo, hi, strict=name not in MAY_REPEAT and hi / lo >= 1.02)
    assert torch.equal(sigmas, S.SCHEDULES[name].function(n, lo, hi, **options))
    if name in RANGE_PINNED:
        assert sigmas[0].item() == hi
        if n >= 2:
            assert sigmas[-2].item() == lo


@settings(PROPERTY, max_examples=60)
@given(data=st.data(), name=st.sampled_from(RANGE_SCHEDULES), n=steps)
def test_range_schedules_flow_geometry(data, name, n):
    """``geometry="flow"``: the formula acts on sigma / (1 - sigma); kl_optimal and laplace accept sigma_max = 1,
    karras / exponential / polyexponential raise there (documented) and work below it."""
    unbounded_ok = name in ("kl_optimal", "laplace")
    lo, hi = data.draw(flow_ranges(allow_one=True))
    options = range_options(data.draw, name)
    if hi == 1.0 and not unbounded_ok:
        with pytest.raises(ValueError, match="sigma_max < 1"):
            S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi, geometry="flow", **options)
        return
    sigmas = S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi, geometry="flow", **options)
    check_contract(sigmas, name, n, lo, hi, strict=False)
    assert sigmas.max().item() <= 1.0
    if name in RANGE_PINNED:
        # pinned in VE units; the round trip sigma -> sigma / (1 - sigma) -> sigma may move an end one ulp inwards
        # (the clip to [lo, hi] only removes outward errors), the tolerance tests/test_schedules.py also uses
        assert sigmas[0].item() == (1.0 if hi == 1.0 else pytest.approx(hi, rel=1e-13))
        if n >= 2:
            assert sigmas[-2].item() == pytest.approx(lo, rel=1e-12)


@settings(PROPERTY, max_examples=40)
@given(data=st.data(), name=st.sampled_from(RANGE_SCHEDULES), n=steps)
def test_range_schedules_flow_sigmas_as_given(data, name, n):
    """``geometry=None`` on flow sigmas: the formulas act on the sigmas themselves and are finite up to 1."""
    lo, hi = data.draw(flow_ranges(allow_one=True))
    sigmas = S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi, **range_options(data.draw, name))
    check_contract(sigmas, name, n, lo, hi, strict=False)
    if name in RANGE_PINNED:
        assert sigmas[0].item() == hi


@settings(PROPERTY, max_examples=40)
@given(data=st.data(), name=st.sampled_from(TABLE_SCHEDULES), table=sigma_tables())
def test_table_schedules(data, name, table):
    size = len(table)
    t_lo, t_hi = table[0].item(), table[-1].item()
    limit = {"simple": size, "ddim_uniform": size - 1, "turbo": S.TURBO_STEPS}.get(name, 200)
    n = data.draw(st.integers(1, min(limit, 200)), label="n")
    options, bounds = {}, {}
    if name == "turbo":
        options["start"] = data.draw(st.integers(0, S.TURBO_STEPS - n), label="start")
    if name == "beta":
        options = {"alpha": data.draw(st.floats(0.2, 3.0)), "beta": data.draw(st.floats(0.2, 3.0)),
                   "space": data.draw(st.sampled_from(["timestep", "sigma"]))}
    if name in ("normal", "sgm_uniform") and data.draw(st.booleans(), label="sub-range"):
        u = sorted(data.draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2, unique=True)))
        # a sub-range of the table, uniform in log sigma
        bounds = {k: math.exp(math.log(t_lo) + v * (math.log(t_hi) - math.log(t_lo))) for k, v in
                  zip(("sigma_min", "sigma_max"), u)}
        assume(bounds["sigma_max"] > bounds["sigma_min"] * (1 + 1e-9))
    sigmas = S.get_sigmas(name, n, sigma_table=table, **bounds, **options)
    lo, hi = bounds.get("sigma_min", t_lo), bounds.get("sigma_max", t_hi)
    check_contract(sigmas, name, n, lo * (1 - 1e-12), hi * (1 + 1e-12), strict=True)
    if name in ("normal", "sgm_uniform"):
        assert sigmas[0].item() == pytest.approx(hi, rel=1e-12)
    if name in ("simple", "beta"):
        assert sigmas[0].item() == t_hi
    if name == "normal" and n >= 2:
        assert sigmas[-2].item() == pytest.approx(lo, rel=1e-12)
    if name == "beta" and options["space"] == "sigma" and n >= 2:
        assert sigmas[-2].item() == pytest.approx(t_lo, rel=1e-12)


@settings(PROPERTY, max_examples=40)
@given(n=steps, model=st.sampled_from(sorted(S.AYS_SIGMAS)))
def test_align_your_steps(n, model):
    sigmas = S.get_sigmas("align_your_steps", n, model=model)
    published = S.AYS_SIGMAS[model]
    check_contract(sigmas, "align_your_steps", n, published[-1], published[0], strict=True)
    assert sigmas[0].item() == pytest.approx(published[0], rel=1e-12)


@settings(PROPERTY, max_examples=40)
@given(n=steps, beta_d=st.floats(0.0, 40.0), beta_min=st.floats(0.0, 2.0), eps_s=st.floats(1e-5, 0.5))
def test_vp(n, beta_d, beta_min, eps_s):
    assume(beta_d + beta_min > 1e-3)
    sigmas = S.get_sigmas("vp", n, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s)
    top = math.sqrt(math.expm1(beta_d / 2 + beta_min))
    check_contract(sigmas, "vp", n, 0.0, top * (1 + 1e-12), strict=False)
    assert sigmas[0].item() == pytest.approx(top, rel=1e-12)


@settings(PROPERTY, max_examples=40)
@given(n=steps, sigma_max=st.one_of(st.just(1.0), st.floats(1e-3, 1e3)), threshold=st.floats(1e-3, 0.5))
def test_linear_quadratic(n, sigma_max, threshold):
    sigmas = S.get_sigmas("linear_quadratic", n, sigma_max=sigma_max, threshold_noise=threshold)
    check_contract(sigmas, "linear_quadratic", n, 0.0, sigma_max, strict=False)
    assert sigmas[0].item() == sigma_max


@settings(PROPERTY, max_examples=40)
@given(n=st.integers(2, 200), coeff=st.sampled_from(sorted(S.GITS_STEPS)))
def test_gits(n, coeff):
    sigmas = S.get_sigmas("gits", n, coeff=coeff / 100)
    check_contract(sigmas, "gits", n, S.GITS_GRID_SIGMAS[100], S.GITS_GRID_SIGMAS[0] * (1 + 1e-12), strict=True)


@settings(PROPERTY, max_examples=40)
@given(n=st.integers(3, 200), model=st.sampled_from(sorted(S.OPTIMAL_STEPS_SIGMAS)))
def test_optimal_steps(n, model):
    published = S.OPTIMAL_STEPS_SIGMAS[model]
    sigmas = S.get_sigmas("optimal_steps", n, model=model)
    check_contract(sigmas, "optimal_steps", n, published[-1], published[0] * (1 + 1e-12), strict=True)


@settings(PROPERTY, max_examples=40)
@given(n=steps, tokens=st.integers(1, 50000), terminal=st.floats(0.01, 0.9), stretch=st.booleans())
def test_ltxv(n, tokens, terminal, stretch):
    sigmas = S.get_sigmas("ltxv", n, tokens=tokens, terminal=terminal, stretch=stretch)
    check_contract(sigmas, "ltxv", n, 0.0, 1.0, strict=True)
    assert sigmas[0].item() == 1.0


def test_every_schedule_is_covered():
    covered = set(RANGE_SCHEDULES) | set(TABLE_SCHEDULES) | {"align_your_steps", "vp", "linear_quadratic"}
    covered |= {"gits", "optimal_steps", "ltxv"}
    assert covered == set(S.SCHEDULES)


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------

SPECS = {s.name: s for s in list_samplers()}
# dpm_adaptive accepts or rejects each step from the error norm of the whole batch (Lu et al. 2022, Alg. 2, as in
# k-diffusion): the items are coupled by design, so batch invariance is not a property it has (the same exclusion
# as tests/test_catalogue.py). It is still checked for finite, repeatable output.
BATCH_COUPLED = {"dpm_adaptive"}
# bfloat16 input: SamplerRun keeps the state in promote_types(dtype, float32) and casts the result back once, so the
# samplers accept it (tests/test_catalogue.py checks the float32 state for float16).
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@st.composite
def sampler_sigmas(draw, geometry):
    """1 to 12 steps of a karras / exponential / kl_optimal schedule over a random range; flow sometimes from
    sigma = 1; usually ending in 0, sometimes at sigma_min > 0."""
    n = draw(st.integers(1, 12), label="steps")
    name = draw(st.sampled_from(["karras", "exponential", "kl_optimal"]), label="schedule")
    if geometry is VE:
        lo = 10.0 ** draw(st.floats(-2.5, 0.5), label="log10 sigma_min")
        hi = lo * 10.0 ** draw(st.floats(0.1, 3.0), label="decades")
        sigmas = S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi)
    else:
        lo, hi = draw(flow_ranges(allow_one=True), label="flow range")
        lo = max(lo, 1e-3)
        assume(lo < hi)
        sigmas = S.get_sigmas(name, n, sigma_min=lo, sigma_max=hi, geometry="flow" if hi < 1.0 else None)
    if not draw(st.booleans(), label="ends in 0") and n >= 2:
        sigmas = sigmas[:-1]
    return sigmas


@st.composite
def sampler_cases(draw):
    geometry = draw(st.sampled_from([VE, FLOW]), label="geometry")
    sigmas = draw(sampler_sigmas(geometry))
    batch = draw(st.integers(1, 4), label="batch")
    width = draw(st.integers(1, 6), label="elements per item")
    dtype = draw(st.sampled_from(DTYPES), label="dtype")
    seeds = draw(st.lists(st.integers(0, 2**32 - 1), min_size=batch + 1, max_size=batch + 1, unique=True))
    return geometry, sigmas, batch, width, dtype, seeds


def noise_kwargs(spec, seeds):
    """Per-item generators for samplers that take them (the deterministic ones without a ``generator`` parameter
    get none; they are still checked for batch invariance and repeatability)."""
    if "generator" not in inspect.signature(spec.function).parameters:
        return {}
    return {"generator": [torch.Generator().manual_seed(s) for s in seeds]}


def draw_knobs(draw, spec):
    """The noise knobs a sampler accepts, at their default or a random value: eta in [0, 1], s_churn in [0, 10]
    (makes the Euler / Heun / DPM2 family stochastic), s_noise in [0.5, 1.5]."""
    knobs = {}
    ranges = {"eta": (0.0, 1.0), "s_churn": (0.0, 10.0), "s_noise": (0.5, 1.5)}
    for key, (lo, hi) in ranges.items():
        if key in spec.options and draw(st.booleans(), label=f"set {key}"):
            knobs[key] = draw(st.floats(lo, hi), label=key)
    return knobs


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(PROPERTY, max_examples=15)
@given(case=sampler_cases(), data=st.data())
def test_sampler_properties(name, case, data):
    spec = SPECS[name]
    geometry, sigmas, batch, width, dtype, seeds = case
    knobs = draw_knobs(data.draw, spec)
    model = gaussian(geometry=geometry)
    x = initial_noise(model, float(sigmas[0]), (batch, width), torch.Generator().manual_seed(seeds[-1])).to(dtype)

    rng_before = torch.get_rng_state()
    out = runnable(spec)(model, x, sigmas, disable=True, **knobs, **noise_kwargs(spec, seeds[:batch]))
    assert torch.equal(torch.get_rng_state(), rng_before), "a run with generators must not touch the global RNG"
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all(), out

    again = runnable(spec)(model, x, sigmas, disable=True, **knobs, **noise_kwargs(spec, seeds[:batch]))
    assert torch.equal(again, out), "same inputs and generators must give the same bits"

    if name in BATCH_COUPLED:
        return
    for i in range(batch):
        alone = runnable(spec)(model, x[i : i + 1], sigmas, disable=True,
                               **knobs, **noise_kwargs(spec, seeds[i : i + 1]))
        assert torch.equal(alone, out[i : i + 1]), (i, (alone.double() - out[i : i + 1].double()).abs().max())
        if i == 0 and "generator" in spec.options:  # clarifications: a list of one generator is that generator
            single = runnable(spec)(model, x[:1], sigmas, disable=True, **knobs,
                          generator=torch.Generator().manual_seed(seeds[0]))
            assert torch.equal(single, alone)
