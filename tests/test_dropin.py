"""k_diffusing.sampling is a drop-in for k_diffusion.sampling: same names, same parameters and defaults."""

import inspect
import math

import pytest
import torch

import k_diffusing.sampling as ours

DROP_IN = [
    "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_lms",
    "sample_dpm_fast", "sample_dpm_adaptive", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "get_sigmas_karras", "get_sigmas_exponential",
    "get_sigmas_polyexponential", "get_sigmas_vp", "to_d", "get_ancestral_step", "default_noise_sampler",
    "BrownianTreeNoiseSampler", "append_zero", "linear_multistep_coeff", "BatchedBrownianTree",
]


def _params(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    return list(inspect.signature(target).parameters.values())


@pytest.mark.parametrize("name", DROP_IN)
def test_same_name_and_parameters(kdiff, name):
    theirs = getattr(kdiff, name)
    mine = getattr(ours, name)
    theirs_params, mine_params = _params(theirs), _params(mine)
    # k-diffusion's parameters come first, in the same order, same kind and same defaults; ours may add
    # keyword-only or defaulted parameters after them.
    assert [p.name for p in mine_params[: len(theirs_params)]] == [p.name for p in theirs_params]
    for a, b in zip(theirs_params, mine_params):
        if a.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        assert b.kind == a.kind, (name, a.name)
        if a.default is not inspect.Parameter.empty and not callable(a.default):
            assert b.default == a.default or (
                isinstance(a.default, float) and math.isinf(a.default) and math.isinf(b.default)
            ), (name, a.name, a.default, b.default)
    for extra in mine_params[len(theirs_params):]:
        assert extra.default is not inspect.Parameter.empty or extra.kind is inspect.Parameter.VAR_KEYWORD, (
            f"{name}: added parameter {extra.name} must be optional"
        )


def test_get_ancestral_step_matches(kdiff):
    for s, s_next, eta in [(14.6, 10.0, 1.0), (3.0, 0.5, 0.7), (1.0, 0.0, 1.0), (2.0, 1.0, 0.0)]:
        a = ours.get_ancestral_step(torch.tensor(s), torch.tensor(s_next), eta)
        b = kdiff.get_ancestral_step(torch.tensor(s), torch.tensor(s_next), eta)
        for u, v in zip(a, b):
            assert abs(float(u) - float(v)) < 1e-6


def test_to_d_matches(kdiff):
    x, den, sigma = torch.randn(3, 4, 5), torch.randn(3, 4, 5), torch.rand(3) + 0.1
    torch.testing.assert_close(ours.to_d(x, sigma, den), kdiff.to_d(x, sigma, den), rtol=0, atol=0)


@pytest.fixture
def parity_problem(kdiff):
    from k_diffusing.testing.analytic import bimodal

    sigmas = kdiff.get_sigmas_karras(12, 0.0292, 14.6146)  # float32, ends in 0, as k-diffusion users pass them
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)) * 14.6146
    return bimodal(), x, sigmas


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("sample_euler", {}),
        ("sample_euler_ancestral", {"eta": 0.8, "s_noise": 1.01}),
        ("sample_dpmpp_2m", {}),
        ("sample_dpmpp_2m_sde", {"eta": 0.7, "solver_type": "midpoint"}),
        ("sample_dpmpp_2m_sde", {"eta": 1.0, "solver_type": "heun"}),
    ],
)
def test_kdiffusion_parity(kdiff, parity_problem, name, kwargs):
    """Same model, sigmas and noise as k-diffusion (global RNG seeded alike, or the same Brownian tree seed):
    the same result to float32 tolerance. (The other drop-in samplers are checked in their family's test file.)"""
    model, x, sigmas = parity_problem
    if "sde" in name:
        make = lambda: kdiff.BrownianTreeNoiseSampler(x, 0.0292, 14.6146, seed=5)  # noqa: E731
        theirs = getattr(kdiff, name)(model, x, sigmas, disable=True, noise_sampler=make(), **kwargs)
        mine = getattr(ours, name)(model, x, sigmas, disable=True, noise_sampler=make(), **kwargs)
    else:
        torch.manual_seed(9)
        theirs = getattr(kdiff, name)(model, x, sigmas, disable=True, **kwargs)
        torch.manual_seed(9)
        mine = getattr(ours, name)(model, x, sigmas, disable=True, **kwargs)
    assert (mine - theirs).abs().max().item() <= 1e-5
