"""Brownian noise off the critical path. Computed ahead (k_diffusing.noise.Prefetching, SamplerRun's ``replay`` dry
run): every query the Brownian samplers make is planned, a query off the plan is still exact, and the worker holds at
most ``depth + 1`` results and never outlives its run. With fewer draws (k_diffusing.brownian.DyadicBrownianTree): the
increments are torchsde's ``BrownianTree`` values bit for bit."""

from __future__ import annotations

import functools
import gc
import math
import random
import threading
import time
import warnings

import pytest
import torch
import torchsde

from k_diffusing import sampling, schedules, seeding
from k_diffusing.geometry import FLOW, VE
from k_diffusing.brownian import DyadicBrownianTree
from k_diffusing.noise import BatchedBrownianTree, BrownianTreeNoiseSampler, Prefetching
from k_diffusing.samplers.base import dry_run
from k_diffusing.testing import analytic

BROWNIAN = {
    "dpmpp_sde": sampling.sample_dpmpp_sde,
    "dpmpp_2m_sde": sampling.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": functools.partial(sampling.sample_dpmpp_2m_sde, solver_type="heun"),
    "dpmpp_3m_sde": sampling.sample_dpmpp_3m_sde,
}
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146
SHAPE = (2, 4, 8, 8)


def _sigmas(geo, n=12):
    if geo is VE:
        return schedules.get_sigmas("karras", n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    return torch.linspace(1, 0, n + 1, dtype=torch.float64)


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "k_diffusing-noise-ahead"]


def _torchsde_increment(seed, t_min, t_max, t0, t1, like):
    """The reference: a fresh torchsde.BrownianTree queried once, normalised as k-diffusion's noise sampler
    (``BrownianTreeNoiseSampler.__call__``: over ``(t1 - t0).abs().sqrt()`` of float64 0-d tensors)."""
    tree = torchsde.BrownianTree(t_min, torch.zeros_like(like), t_max, entropy=seed)
    a, b = sorted((t0, t1))
    return tree(a, b) * (1 if t0 < t1 else -1) / (torch.as_tensor(t1) - torch.as_tensor(t0)).abs().sqrt()


class Recording(BrownianTreeNoiseSampler):
    """The library's tree, recording which thread computed each query."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.computed: list[tuple[tuple[float, float], str]] = []

    def compute(self, sigma, sigma_next):
        self.computed.append(((float(sigma), float(sigma_next)), threading.current_thread().name))
        return super().compute(sigma, sigma_next)


@pytest.mark.parametrize("geo", [VE, FLOW], ids=lambda g: g.name)
@pytest.mark.parametrize("name", list(BROWNIAN))
def test_every_query_is_planned_and_the_run_is_bit_identical(name, geo):
    # the sampler's own default tree (seeded from the generator) computes every query on the worker, and the result
    # equals the same run fed, one query at a time on the caller's thread, by a tree of the same seed
    sampler, model = BROWNIAN[name], analytic.bimodal(geo)
    sigmas = _sigmas(geo)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    ahead = sampler(model, x, sigmas, disable=True, generator=torch.Generator().manual_seed(7))
    seed = int(torch.randint(0, 2**63 - 1, [], generator=torch.Generator().manual_seed(7)))
    positive = [float(s) for s in sigmas if s > 0]
    tree = Recording(x, min(positive), max(positive), seed=seed)
    planned = sampler(model, x, sigmas, disable=True, noise_sampler=tree)
    one_by_one = BrownianTreeNoiseSampler(x, min(positive), max(positive), seed=seed)
    alone = sampler(model, x, sigmas, disable=True, noise_sampler=lambda s, t: one_by_one(s, t))
    assert torch.equal(ahead, planned) and torch.equal(planned, alone)
    threads = {thread for _, thread in tree.computed}
    assert threads == {"k_diffusing-noise-ahead"}, threads
    queries = dry_run(functools.partial(sampler), geo, [float(s) for s in sigmas]).noise_queries
    assert [q for q, _ in tree.computed] == queries and len(queries) >= len(sigmas) - 2


def test_planned_values_equal_torchsde_in_any_order():
    # the dyadic tree's value for an interval does not depend on the queries before it: planned, shuffled and
    # fresh-tree values are one and the same tensor (torch.equal), which is what makes computing ahead exact
    like = torch.zeros(SHAPE)
    sigmas = [float(s) for s in schedules.get_sigmas("karras", 10, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)]
    queries = [(a, b) for a, b in zip(sigmas, sigmas[1:]) if b > 0] + [(sigmas[2], 0.5), (0.5, sigmas[6])]
    tree = BrownianTreeNoiseSampler(like, sigmas[-2], sigmas[0], seed=11)
    tree.plan(queries)
    planned = [tree(a, b) for a, b in queries]
    shuffled = BrownianTreeNoiseSampler(like, sigmas[-2], sigmas[0], seed=11)
    order = [5, 0, 9, 3, 10, 1, 7, 2, 8, 4, 6]
    backwards = {i: shuffled(*queries[i]) for i in order}
    for i, (a, b) in enumerate(queries):
        fresh = _torchsde_increment(11, sigmas[-2], sigmas[0], a, b, like)
        assert torch.equal(planned[i], fresh) and torch.equal(backwards[i], fresh), (i, a, b)


def test_a_query_off_the_plan_stops_the_worker_and_stays_exact():
    like = torch.zeros(SHAPE)
    queries = [(10.0, 5.0), (5.0, 2.0), (2.0, 1.0)]
    tree = Recording(like, 0.5, 12.0, seed=3)
    tree.plan(queries)
    first = tree(10.0, 5.0)
    off = tree(3.0, 1.0)  # not the next planned query
    later = tree(5.0, 2.0)  # planned, but the plan was dropped at the miss
    assert not _workers()
    for value, (a, b) in [(first, (10.0, 5.0)), (off, (3.0, 1.0)), (later, (5.0, 2.0))]:
        assert torch.equal(value, _torchsde_increment(3, 0.5, 12.0, a, b, like))
    on_caller = [q for q, thread in tree.computed if thread == threading.current_thread().name]
    assert on_caller == [(3.0, 1.0), (5.0, 2.0)]


def test_the_worker_stays_at_most_depth_ahead():
    # memory bound: with nobody taking results, the worker computes depth results for the queue plus the one it
    # holds, then waits
    tree = Recording(torch.zeros(SHAPE), 0.1, 10.0, seed=1)
    queries = [(10.0 - i, 9.0 - i) for i in range(9)]
    tree.plan(queries, depth=2)
    deadline = time.monotonic() + 10
    while len(tree.computed) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(tree.computed) == 3
    assert torch.equal(tree(10.0, 9.0), _torchsde_increment(1, 0.1, 10.0, 10.0, 9.0, torch.zeros(SHAPE)))
    tree.close()
    assert not _workers()
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        tree.plan(queries, depth=0)


def test_an_error_on_the_worker_is_raised_at_the_call():
    class Failing(Prefetching):
        def compute(self, sigma, sigma_next):
            if sigma == 2.0:
                raise RuntimeError("tree failed at 2.0")
            return torch.full((1,), sigma)

    noise = Failing()
    noise.plan([(3.0, 2.0), (2.0, 1.0), (1.0, 0.5)])
    assert noise(3.0, 2.0).item() == 3.0
    with pytest.raises(RuntimeError, match="tree failed at 2.0"):
        noise(2.0, 1.0)
    assert not _workers()


def test_an_abandoned_run_leaves_no_worker():
    # a run that raises mid-way (an interrupted pipeline) drops its tree; the worker, blocked on its full queue, sees
    # the tree collected and ends
    def model(x, sigma, **_):
        if sigma[0] < 3:
            raise KeyboardInterrupt
        return x * 0

    sigmas = _sigmas(VE, 30)
    with pytest.raises(KeyboardInterrupt):
        sampling.sample_dpmpp_2m_sde(model, torch.zeros(SHAPE), sigmas, disable=True,
                                     generator=torch.Generator().manual_seed(0))
    gc.collect()
    deadline = time.monotonic() + 5
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _workers()


def test_eta_zero_builds_no_tree_and_draws_no_seed():
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    sampling.sample_dpmpp_2m_sde(analytic.bimodal(VE), torch.zeros(SHAPE), _sigmas(VE), disable=True, eta=0.0,
                                 generator=generator)
    assert torch.equal(generator.get_state(), state) and not _workers()


@pytest.mark.parametrize("mode", ["comfyui", "a1111"])
def test_seed_mode_trees_compute_ahead_exactly(mode):
    # the programs' trees (ComfyUI: one tree, torchsde's Gaussians; A1111: one per image through its own Gaussian
    # source, swapped into torchsde under the tree lock): planned equals one query at a time, and two of them
    # computing ahead at once on two workers do not see each other's Gaussian source
    sigmas = [float(s) for s in _sigmas(VE)]
    queries = [(a, b) for a, b in zip(sigmas, sigmas[1:]) if b > 0]
    shape = (2, 4, 8, 8)

    def tree(which):
        if which == "comfyui":
            return seeding.noise_sampler("comfyui", 9, shape, sigmas=sigmas, brownian=True)
        return seeding.noise_sampler("a1111", [9, 10], shape, sigmas=sigmas, brownian=True)

    reference = tree(mode)
    expected = [reference(a, b) for a, b in queries]
    mine, other = tree(mode), tree("a1111" if mode == "comfyui" else "comfyui")
    mine.plan(queries)
    other.plan(queries)
    got = [mine(a, b) for a, b in queries]
    other.close()
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


# ---------------------------------------------------------------------------------------------------------------
# k_diffusing.brownian.DyadicBrownianTree: torchsde's BrownianTree, bit for bit, with fewer draws
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, dtype", [((2, 3, 5), torch.float32), ((4,), torch.float64),
                                          ((1, 16, 4), torch.float32)])
def test_dyadic_tree_equals_torchsde_bit_for_bit(shape, dtype):
    # 150 random queries per tree (a fifth starting at t0, a fifth ending at t1, some outside the interval, some
    # empty) in random order, three trees: every increment is torch.equal to torchsde.BrownianTree's
    rng = random.Random(f"{shape}{dtype}")
    for _ in range(3):
        t0, t1, entropy = rng.uniform(0.01, 0.5), rng.uniform(1, 20), rng.randrange(2**31)
        reference = torchsde.BrownianTree(t0, torch.zeros(shape, dtype=dtype), t1, entropy=entropy)
        tree = DyadicBrownianTree(t0, t1, shape, dtype, entropy=entropy)
        for _ in range(150):
            a, b = sorted(rng.uniform(t0 - 0.01, t1 + 0.01) for _ in range(2))
            a = t0 if rng.random() < 0.2 else a
            b = t1 if rng.random() < 0.2 else b
            b = a if rng.random() < 0.05 else b
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchsde warns on queries outside its interval
                expected = reference(a, b)
            assert torch.equal(tree(a, b), expected), (t0, t1, a, b)


def test_dyadic_tree_takes_torchsdes_gaussian_source():
    # the A1111 seed mode swaps torchsde's module function _randn; the tree draws through it as torchsde does
    sigmas = [float(s) for s in _sigmas(VE)]
    queries = [(b, a) for a, b in zip(sigmas, sigmas[1:]) if b > 0]
    randn = seeding.a1111_tree_randn("nv", "cpu")  # A1111's NV source (on the CPU "cpu" equals torchsde's own)
    with seeding.torchsde_randn(randn):
        reference = torchsde.BrownianTree(sigmas[-2], torch.zeros(SHAPE), sigmas[0], entropy=4)
        expected = [reference(a, b) for a, b in queries]
        tree = DyadicBrownianTree(sigmas[-2], sigmas[0], SHAPE, entropy=4)
        assert all(torch.equal(tree(a, b), e) for (a, b), e in zip(queries, expected))
    plain = DyadicBrownianTree(sigmas[-2], sigmas[0], SHAPE, entropy=4)
    assert not torch.equal(plain(*queries[0]), expected[0])


@pytest.mark.parametrize("n", [10, 30, 50])
@pytest.mark.parametrize("span", ["sdxl", "flux"])
def test_dyadic_tree_draws_and_memory_on_a_schedule(n, span):
    # a descending schedule queried as the SDE samplers do (SDXL: Karras over SDXL's sigma range; FLUX: flow sigmas
    # 1 -> 0), 10 / 30 / 50 steps: measured 17.4-18.6 (SDXL) and 15.3-16.0 (FLUX) draws per query against torchsde's
    # 54; increments kept between queries 49-51 / 39-40; held at once during a query 87-94 / 72-74, under the
    # 4 log2(range / tol) bound (96 / 80)
    if span == "sdxl":
        sigmas = [float(s) for s in schedules.get_sigmas("karras", n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)]
    else:
        sigmas = torch.linspace(1, 0, n + 1, dtype=torch.float64).tolist()
    queries = [(b, a) for a, b in zip(sigmas, sigmas[1:]) if b > 0]
    tree = DyadicBrownianTree(sigmas[-2], sigmas[0], (1,), entropy=42)
    own_w, held = tree._w, [0]

    def counting_w(node):
        value = own_w(node)
        held[0] = max(held[0], len({**tree.cache, **tree.used}))
        return value

    tree._w = counting_w
    kept = 0
    for a, b in queries:
        tree(a, b)
        kept = max(kept, len(tree.cache))
    bound = 4 * math.ceil(math.log2((sigmas[0] - sigmas[-2]) / 1e-6))
    assert tree.draws / len(queries) < 20 and kept <= 52 and held[0] <= bound, (
        tree.draws / len(queries), kept, held[0], bound)
    drawn = []
    with seeding.torchsde_randn(lambda size, dtype, device, seed: drawn.append(seed) or torch.zeros(size)):
        reference = torchsde.BrownianTree(sigmas[-2], torch.zeros(1), sigmas[0], entropy=42)
        for a, b in queries:
            reference(a, b)
    assert len(drawn) / len(queries) > 2.5 * tree.draws / len(queries)


def test_dyadic_tree_refuses_bad_input():
    with pytest.raises(ValueError, match="needs t0 < t1, got t0=2.0, t1=1.0"):
        DyadicBrownianTree(2.0, 1.0, (1,))
    with pytest.raises(ValueError, match="needs a <= b, got a=1.5, b=1.2"):
        DyadicBrownianTree(1.0, 2.0, (1,))(1.5, 1.2)
    with pytest.raises(TypeError, match="takes torchsde's tol and pool_size, not w1"):
        BatchedBrownianTree(torch.zeros(1), 0.1, 1.0, seed=1, w1=torch.ones(1))
