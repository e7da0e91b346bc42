"""Noise samplers: per-step Gaussian noise from explicit generators, and Brownian trees (torchsde's path).

A noise sampler is a callable ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like the sample, returning unit
Gaussian noise for the step from ``sigma`` to ``sigma_next`` (k-diffusion's contract).

Batch invariance: given a list of generators, one per batch item, item ``i`` of every draw comes from generator ``i``
alone, so image ``i`` of a batch equals the image made alone with generator ``i``. Brownian trees follow the same rule
with one tree per item: :class:`k_diffusing.brownian.DyadicBrownianTree`, the path of ``torchsde.BrownianTree`` (Li et
al. 2020, "Scalable Gradients for Stochastic Differential Equations", arXiv 2001.01328, Sec. 4 for the Brownian tree /
virtual Brownian interval) bit for bit.

Without a generator or a noise sampler, noise comes from torch's global RNG, exactly as in k-diffusion
(``torch.randn_like``); pipelines always pass generators.

Brownian noise off the critical path: a tree query descends about 24 levels and draws full-size noise at each, but
every query a sampler will make is known before it starts (they depend on the schedule and the sampler's options,
not on the data). The Brownian samplers record them in a dry run (``SamplerRun(..., replay=...)``) and hand them to
the tree's :meth:`Prefetching.plan`; a worker thread then computes the increments in order, at most ``depth``
ahead, while the network runs. A tree's value for an interval does not depend on which queries came before (the
dyadic "halfway" tree of torchsde's ``BrownianTree``: every node's split point and seed are fixed by the entropy), so
the values are those of the same queries made one by one, bit for bit; a query that was not planned stops the worker
and is computed on the caller's thread.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Callable, Sequence, Union

import torch

from .brownian import DyadicBrownianTree

GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]
NoiseSampler = Callable[[float, float], torch.Tensor]


def as_generator_list(generator: GeneratorArg, batch_size: int) -> list[torch.Generator] | None:
    """``None`` for one (or no) generator; the list, checked against the batch size, for per-item generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != batch_size:
        raise ValueError(
            f"got a list of {len(generators)} generators for a batch of {batch_size}; pass one generator, "
            "or exactly one per batch item"
        )
    for g in generators:
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator list items must be torch.Generator, got {type(g).__name__}")
    return generators


def randn_like_batch(x: torch.Tensor, generator: GeneratorArg = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Unit Gaussian noise shaped like ``x``, drawn on each generator's own device and moved to ``x.device``.

    One generator draws the whole batch at once; a list draws item ``i`` from generator ``i`` (batch-invariant).
    """
    dtype = x.dtype if dtype is None else dtype
    generators = as_generator_list(generator, x.shape[0])
    if generators is None:
        if generator is None:
            return torch.randn(x.shape, dtype=dtype, device=x.device)
        return torch.randn(x.shape, generator=generator, dtype=dtype, device=generator.device).to(x.device)
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, dtype=dtype, device=g.device).to(x.device) for g in generators]
    )


class GaussianNoiseSampler:
    """Independent ``N(0, I)`` noise at every call, from the given generator(s) (global RNG when ``None``)."""

    def __init__(self, x: torch.Tensor, generator: GeneratorArg = None):
        as_generator_list(generator, x.shape[0])
        self.x = x
        self.generator = generator

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return randn_like_batch(self.x, self.generator)


def default_noise_sampler(x: torch.Tensor, generator: GeneratorArg = None) -> NoiseSampler:
    """k-diffusion's default noise sampler (``randn_like(x)`` every call), plus optional per-item generators."""
    return GaussianNoiseSampler(x, generator)


# torchsde draws its Gaussians through one module function, which the A1111 seed mode swaps while its trees run
# (k_diffusing.seeding.torchsde_randn); every tree query holds this lock, so trees queried from several threads (the
# prefetching workers) never see another tree's Gaussian source.
TORCHSDE_LOCK = threading.RLock()


class _Ahead:
    """A worker thread computing ``compute(*query)`` for ``queries`` in order, at most ``depth`` results ahead of
    the caller (memory: ``depth + 1`` results at most)."""

    def __init__(self, compute: weakref.WeakMethod, queries: Sequence[tuple[float, float]], depth: int):
        self.queries = list(queries)
        self.next = 0
        self.results: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=_compute_ahead, args=(compute, self.queries, self.results, self.stop),
                                       name="k_diffusing-noise-ahead", daemon=True)
        self.thread.start()

    def take(self, query: tuple[float, float]) -> torch.Tensor | None:
        """The next planned result if ``query`` is the next planned query, else ``None`` (and the worker stops)."""
        if self.next >= len(self.queries) or self.queries[self.next] != query:
            self.close()
            return None
        self.next += 1
        result = self.results.get()
        if isinstance(result, BaseException):
            self.close()
            raise result
        return result

    def close(self) -> None:
        """Stop the worker and wait for it (it finishes the query it is on), dropping what it computed."""
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.results.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()


def _compute_ahead(compute: weakref.WeakMethod, queries, results: queue.Queue, stop: threading.Event) -> None:
    """The worker's loop: each result (or the first error) goes into ``results``; returns when done or stopped. It
    holds its noise sampler only while computing, so a sampler dropped mid-run (an error, an interrupted pipeline) is
    collected, and its finalizer stops the worker."""
    try:
        for query in queries:
            method = compute()
            if stop.is_set() or method is None:
                return
            result = method(*query)
            del method
            if not _put(results, result, stop):
                return
    except BaseException as error:  # handed to the caller, who raises it
        _put(results, error, stop)


def _put(results: queue.Queue, item, stop: threading.Event) -> bool:
    """Wait for room in ``results`` and put ``item``; ``False`` if stopped first."""
    while not stop.is_set():
        try:
            results.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


class Prefetching:
    """Noise samplers whose values for a query do not depend on earlier queries: ``plan(queries)`` computes the
    planned ``(sigma, sigma_next)`` queries ahead on a worker thread; ``__call__`` takes the next planned value, or
    computes the query itself (:meth:`compute`) when it is not the next planned one. Subclasses define ``compute``."""

    _ahead: _Ahead | None = None

    def compute(self, sigma, sigma_next) -> torch.Tensor:
        raise NotImplementedError

    def plan(self, queries: Sequence[tuple[float, float]], depth: int = 2) -> None:
        """Compute ``queries`` (in this order) ahead, at most ``depth`` ahead of the calls."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth!r}")
        self.close()
        if queries:
            self._ahead = _Ahead(weakref.WeakMethod(self.compute), [(float(a), float(b)) for a, b in queries], depth)
            weakref.finalize(self, self._ahead.stop.set)

    def close(self) -> None:
        """Stop computing ahead (later calls compute on the caller's thread)."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        if self._ahead is not None:
            value = self._ahead.take((float(sigma), float(sigma_next)))
            if value is not None:
                return value
            self._ahead = None
        return self.compute(sigma, sigma_next)


class BatchedBrownianTree:
    """One Brownian tree per seed: a list of seeds gives one tree per batch item (as k-diffusion). Each is
    :class:`k_diffusing.brownian.DyadicBrownianTree`, whose increments equal ``torchsde.BrownianTree``'s bit for bit
    with about a third of its Gaussian draws. Of torchsde's options (k-diffusion's ``**kwargs``) ``tol`` and
    ``pool_size`` are taken; the others would change the path or do nothing, and are refused."""

    def __init__(self, x: torch.Tensor, t0, t1, seed=None, **kwargs):
        unknown = sorted(set(kwargs) - {"tol", "pool_size"})
        if unknown:
            raise TypeError(f"BatchedBrownianTree takes torchsde's tol and pool_size, not {', '.join(unknown)}")
        t0, t1, self.sign = self._sort(t0, t1)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, []))
        self.batched = isinstance(seed, (list, tuple))
        if self.batched:
            if len(seed) != x.shape[0]:
                raise ValueError(f"got {len(seed)} Brownian seeds for a batch of {x.shape[0]}; pass one per item")
            shape, seeds = x.shape[1:], list(seed)
        else:
            shape, seeds = x.shape, [seed]
        with TORCHSDE_LOCK:
            self.trees = [DyadicBrownianTree(t0, t1, shape, x.dtype, x.device, entropy=s, **kwargs) for s in seeds]

    @staticmethod
    def _sort(a, b):
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0, t1) -> torch.Tensor:
        t0, t1, sign = self._sort(t0, t1)
        with TORCHSDE_LOCK:
            w = torch.stack([tree(t0, t1) for tree in self.trees]) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler(Prefetching):
    """Noise from a Brownian tree over ``[sigma_min, sigma_max]``: the increment ``W(sigma_next) - W(sigma)``
    normalised to unit variance, so samples at different step counts come from one Brownian path.

    Same arguments as k-diffusion's class: ``seed`` is an int or a list of ints (one tree per batch item);
    ``transform`` maps sigma to the tree's time. ``plan(queries)`` computes planned queries ahead
    (:class:`Prefetching`).
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed=None, transform=lambda s: s):
        self.transform = transform
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        self.tree = BatchedBrownianTree(x, t0, t1, seed)

    def compute(self, sigma, sigma_next) -> torch.Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()


def seeds_from_generator(generator: GeneratorArg, batch_size: int):
    """Brownian-tree seed(s) drawn from the generator(s): an int for one generator, a list for per-item ones."""
    generators = as_generator_list(generator, batch_size)
    draw = lambda g: int(torch.randint(0, 2**63 - 1, [], generator=g, device=g.device))  # noqa: E731
    if generators is None:
        return None if generator is None else draw(generator)
    return [draw(g) for g in generators]


def brownian_noise_sampler(x: torch.Tensor, sigmas: Sequence[float], generator: GeneratorArg = None) -> NoiseSampler:
    """Brownian-tree noise over the positive range of ``sigmas``, seeded from ``generator`` (k-diffusion's default
    for the SDE samplers; it draws a random seed from the global RNG when ``generator`` is ``None``)."""
    positive = [s for s in sigmas if s > 0]
    return BrownianTreeNoiseSampler(x, min(positive), max(positive), seed=seeds_from_generator(generator, x.shape[0]))
