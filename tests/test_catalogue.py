"""Properties every catalogue sampler must have: registry metadata, batch invariance with per-item generators,
no host syncs inside the loop, float32 state for half-precision input, finite output from flow sigma = 1."""

import inspect

import pytest
import torch

from k_diffusing import FLOW, VE, get_sampler, list_samplers, resolve_sampler
from k_diffusing.testing.analytic import gaussian
from k_diffusing.testing.measure import runnable
from k_diffusing.testing.convergence import initial_noise, log_uniform_sigmas

SPECS = list_samplers()
STOCHASTIC = [s for s in SPECS if s.stochastic]
GEOMETRIES = [VE, FLOW]

# dpm_adaptive accepts or rejects a step from the error norm of the whole batch: that decision is an inherent host
# sync and couples the batch items (k-diffusion's algorithm, Lu et al. 2022 Alg. 2). Everything else must pass.
INHERENTLY_SYNCING = {"dpm_adaptive"}


def schedule(geometry, n=12):
    """A short schedule ending in 0; flow starts at sigma = 1 (lambda = -inf)."""
    sigmas = torch.cat([log_uniform_sigmas(geometry, n - 1, 30.0, 0.05), torch.zeros(1, dtype=torch.float64)])
    if geometry is FLOW:
        sigmas = torch.cat([torch.ones(1, dtype=torch.float64), sigmas[1:]])
    return sigmas


def test_registry_metadata():
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names))
    for spec in SPECS:
        assert callable(spec.function), spec.name
        assert (spec.order is None or spec.order >= 1) and spec.calls_per_step >= 1
        assert spec.reference
        params = inspect.signature(spec.function).parameters
        for fixed in ("model", "x", "sigmas", "extra_args", "callback", "disable"):
            assert fixed in params, (spec.name, fixed)
        if spec.stochastic:
            assert "generator" in params and "noise_sampler" in params, spec.name
        assert set(spec.defaults) <= set(params), spec.name


@pytest.mark.parametrize(
    "name,expected,schedule_name",
    [
        ("dpmpp_2m", "dpmpp_2m", None),
        ("DPM++ 2M Karras", "dpmpp_2m", "karras"),
        ("DPM++ 2M SDE Heun Exponential", "dpmpp_2m_sde_heun", "exponential"),
        ("Euler a", "euler_ancestral", None),
        ("euler a  karras", "euler_ancestral", "karras"),
        ("DPM++ SDE", "dpmpp_sde", None),
        ("UniPC SGM Uniform", "uni_pc", "sgm_uniform"),
    ],
)
def test_a1111_names_resolve(name, expected, schedule_name):
    resolved = resolve_sampler(name)
    assert resolved.spec.name == expected and resolved.schedule == schedule_name


def test_unknown_sampler_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as err:
        get_sampler("dpmpp_2n")
    message = str(err.value)
    assert "'dpmpp_2n'" in message and "Did you mean 'dpmpp_2m'?" in message
    assert "euler_ancestral" in message and "uni_pc_bh2" in message


def test_a1111_schedules_exist():
    from k_diffusing.registry import A1111_SCHEDULES
    from k_diffusing.schedules import SCHEDULES

    for schedule_name in A1111_SCHEDULES.values():
        assert schedule_name is None or schedule_name in SCHEDULES


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("spec", [s for s in STOCHASTIC if s.name not in INHERENTLY_SYNCING], ids=lambda s: s.name)
def test_batch_invariance(spec, geometry):
    """Image i of a batch made with generators [g_0, g_1, g_2] equals the image made alone with g_i, passed either
    as one generator or as a list of one."""
    model = gaussian(geometry=geometry)
    sigmas = schedule(geometry)
    x = initial_noise(model, float(sigmas[0]), (3, 2, 8), torch.Generator().manual_seed(7)).float()
    batch = runnable(spec)(model, x, sigmas, disable=True,
                           generator=[torch.Generator().manual_seed(100 + i) for i in range(3)])
    assert torch.isfinite(batch).all()
    for i in range(3):
        alone = runnable(spec)(model, x[i : i + 1], sigmas, disable=True,
                               generator=torch.Generator().manual_seed(100 + i))
        listed = runnable(spec)(model, x[i : i + 1], sigmas, disable=True,
                                generator=[torch.Generator().manual_seed(100 + i)])
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(listed, alone, rtol=0, atol=0)
    other = runnable(spec)(model, x, sigmas, disable=True,
                           generator=[torch.Generator().manual_seed(200 + i) for i in range(3)])
    assert not torch.equal(other, batch), "the generators must drive the noise"


class SyncTrap(torch.Tensor):
    """A tensor that raises on every operation that copies a value to the host (what a GPU would sync on)."""

    FORBIDDEN = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__format__"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in cls.FORBIDDEN:
            raise AssertionError(f"host sync inside the sampler: Tensor.{name}")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_sync_trap_catches_what_it_should():
    t = torch.ones(3).as_subclass(SyncTrap)
    for sync in (lambda: t.sum().item(), lambda: bool((t > 0).all()), lambda: float(t[0]), lambda: min(t[0], t[1])):
        with pytest.raises(AssertionError, match="host sync"):
            sync()


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.name)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.name not in INHERENTLY_SYNCING], ids=lambda s: s.name)
def test_no_host_sync_and_finite_from_sigma_max(spec, geometry):
    model = gaussian(geometry=geometry)
    sigmas = schedule(geometry)
    x = initial_noise(model, float(sigmas[0]), (2, 16), torch.Generator().manual_seed(3)).float()
    kwargs = {"generator": torch.Generator().manual_seed(4)} if spec.stochastic else {}
    out = runnable(spec)(model, x.as_subclass(SyncTrap), sigmas, disable=True, **kwargs)
    out = torch.Tensor(out.as_subclass(torch.Tensor))
    assert torch.isfinite(out).all()
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_half_precision_input_keeps_float32_state(spec):
    seen = []

    class Recorder:
        geometry = VE

        def __init__(self):
            self.inner = gaussian()

        def __call__(self, x, sigma, **kw):
            seen.append((x.dtype, sigma.dtype))
            return self.inner(x, sigma).half()  # a half-precision network's output

    sigmas = schedule(VE, 6)
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0)).mul(30).half()
    kwargs = {"generator": torch.Generator().manual_seed(1)} if spec.stochastic else {}
    out = runnable(spec)(Recorder(), x, sigmas, disable=True, **kwargs)
    assert out.dtype == torch.float16
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.name not in {"dpm_fast", "dpm_adaptive"}],
                         ids=lambda s: s.name)
def test_callback_once_per_step(spec):
    events = []
    sigmas = schedule(VE, 8)
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)) * 30
    kwargs = {"generator": torch.Generator().manual_seed(1)} if spec.stochastic else {}
    runnable(spec)(gaussian(), x, sigmas, disable=True, callback=events.append, **kwargs)
    assert [e["i"] for e in events] == list(range(len(sigmas) - 1))
    for e in events:
        assert set(e) >= {"x", "i", "sigma", "sigma_hat", "denoised"}
