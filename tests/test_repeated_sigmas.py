"""Zero-length steps (issue 23, item 4): a schedule that repeats a sigma runs with every catalogue sampler, and a
step between two equal sigmas is a no-op (no model call, no noise, not in any multistep history).

For every sampler of ``list_samplers()``, in VE and flow geometry, with repeats at the start, in the middle, at the
end above 0, as repeated zeros, and everywhere at once: the output is finite and equal (``torch.equal``) to the run
on the same schedule with the repeats removed, with the same model calls, callback steps, step ends and noise queries
(stochastic samplers: the same generator seed, and an explicit noise sampler that records its queries). A schedule of
one repeated value returns ``x`` unchanged without any call. The drop-in ``sample_dpm_fast`` / ``sample_dpm_adaptive``
treat ``sigma_min == sigma_max`` the same way.
"""

from __future__ import annotations

import pytest
import torch

from k_diffusing import CFGDenoiser
from k_diffusing.geometry import FLOW, VE
from k_diffusing.registry import list_samplers
from k_diffusing.samplers.base import distinct_sigmas
from k_diffusing.sampling import sample_dpm_adaptive, sample_dpm_fast
from k_diffusing.testing.analytic import GaussianMixtureDenoiser, bimodal

# Distinct schedules (5 steps into 0); flow starts at sigma = 1, the infinite step.
DISTINCT = {"ve": [14.6, 4.0, 1.2, 0.35, 0.06, 0.0], "flow": [1.0, 0.8, 0.55, 0.3, 0.1, 0.0]}
GEOMETRIES = {"ve": VE, "flow": FLOW}


def _repeat(sigmas: list[float], where: str) -> list[float]:
    """The schedule with repeated sigmas at ``where``."""
    s = sigmas
    return {
        "start": [s[0], *s],
        "middle": [*s[:3], s[2], *s[3:]],
        "end_above_0": [*s[:-1], s[-2]],  # ends [..., s, s] (no step into 0)
        "repeated_zeros": [*s, 0.0, 0.0],
        "everywhere": [s[0], s[0], s[1], s[2], s[2], s[2], s[3], s[4], s[4], s[5], s[5]],
    }[where]


class Recorder:
    """Counts model calls and records the step-end protocol around a denoiser (forwarding CFG++'s pair)."""

    def __init__(self, inner):
        self.inner, self.geometry = inner, inner.geometry
        self.calls, self.ends = 0, []

    def __call__(self, x, sigma, **extra):
        self.calls += 1
        return self.inner(x, sigma, **extra)

    def denoise_with_uncond(self, x, sigma, **extra):
        self.calls += 1
        return self.inner.denoise_with_uncond(x, sigma, **extra)

    def on_step_end(self, i, x):
        self.ends.append(i)


def _model(spec, geometry):
    cond = bimodal(geometry)
    if spec.needs_uncond:
        return Recorder(CFGDenoiser(cond, GaussianMixtureDenoiser((1.0,), (-0.3,), (1.0,), geometry), 0.6))
    return Recorder(cond)


def _run(spec, geometry, sigmas: list[float], noise: str):
    """One run from a fixed start; returns ``(x, model, callback steps, noise queries)``."""
    model = _model(spec, geometry)
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * min(sigmas[0], 1.0)
    steps, queries, kwargs = [], [], {}
    if noise == "generator":
        kwargs["generator"] = torch.Generator().manual_seed(1)
    elif noise == "noise_sampler":
        draws = torch.Generator().manual_seed(2)

        def noise_sampler(sigma, sigma_next):
            queries.append((float(sigma), float(sigma_next)))
            return torch.randn(x.shape, generator=draws, dtype=x.dtype)

        kwargs["noise_sampler"] = noise_sampler
    out = spec(model, x, torch.tensor(sigmas, dtype=torch.float64), disable=True,
               callback=lambda info: steps.append((info["i"], float(info["sigma"]))), **kwargs)
    return x, out, model, steps, queries


def _noise_modes(spec) -> list[str]:
    if not spec.stochastic:
        return ["none"]
    return [mode for mode in ("generator", "noise_sampler") if mode in spec.options]


SAMPLERS = list_samplers()


@pytest.mark.parametrize("where", ["start", "middle", "end_above_0", "repeated_zeros", "everywhere"])
@pytest.mark.parametrize("geometry", ["ve", "flow"])
@pytest.mark.parametrize("spec", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_repeat_equals_deduplicated_run(spec, geometry, where):
    repeated = _repeat(DISTINCT[geometry], where)
    deduplicated = distinct_sigmas(repeated)
    assert len(deduplicated) < len(repeated)
    for noise in _noise_modes(spec):
        _, out, model, steps, queries = _run(spec, GEOMETRIES[geometry], repeated, noise)
        _, want, want_model, want_steps, want_queries = _run(spec, GEOMETRIES[geometry], deduplicated, noise)
        assert torch.isfinite(out).all(), noise
        assert torch.equal(out, want), (noise, (out - want).abs().max().item())
        assert model.calls == want_model.calls > 0, noise
        assert model.ends == want_model.ends, noise
        assert steps == want_steps, noise
        assert queries == want_queries, noise


@pytest.mark.parametrize("geometry", ["ve", "flow"])
@pytest.mark.parametrize("spec", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_one_repeated_value_is_no_step(spec, geometry):
    for sigma in (DISTINCT[geometry][0], DISTINCT[geometry][2], 0.0):
        for noise in _noise_modes(spec):
            x, out, model, steps, queries = _run(spec, GEOMETRIES[geometry], [sigma, sigma, sigma], noise)
            assert torch.equal(out, x), (sigma, noise)
            assert (model.calls, model.ends, steps, queries) == (0, [], [], []), (sigma, noise)


def test_distinct_sigmas():
    assert distinct_sigmas([3.0, 3.0, 2.0, 1.0, 1.0, 0.0, 0.0]) == [3.0, 2.0, 1.0, 0.0]
    assert distinct_sigmas([2.0, 2.0]) == [2.0]
    assert distinct_sigmas([2.0, 1.0, 0.0]) == [2.0, 1.0, 0.0]
    assert distinct_sigmas([1.0, 1.0 - 1e-16, 0.0]) == [1.0, 1.0 - 1e-16, 0.0]  # exact equality only


@pytest.mark.parametrize("function", [sample_dpm_fast, sample_dpm_adaptive])
def test_budget_solvers_on_an_empty_interval(function):
    model = Recorder(bimodal(VE))
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    options = {"n": 4} if function is sample_dpm_fast else {}
    assert torch.equal(function(model, x, 0.5, 0.5, disable=True, **options), x)
    assert model.calls == 0
