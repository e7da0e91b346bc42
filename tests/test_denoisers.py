"""The bridge denoisers' two timestep paths (k_diffusing.denoisers): the tensor path (k-diffusion's contract, a sigma
tensor alone) and the host path (a sampler of this package also passes the sigma as a float) give the network the
same timestep: exactly on a scheduler's known pairs, on quantized tables and on flow models, and within float32
rounding of the table interpolation otherwise."""

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from k_diffusing.denoisers import DiscreteDenoiser, FlowDenoiser
from k_diffusing.pipelines.schedulers import scheduler_sigmas
from k_diffusing.samplers.euler import sample_euler

# float32 log sigma (ulp 2.4e-7 near log 2.7) over the table's log spacing (down to 3e-3 per timestep): measured
# 6.8e-5 at most over 20001 sigmas.
INTERPOLATION_ATOL = 1e-4


def _sdxl_scheduler():
    return EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _identity_net(x, t):
    return torch.zeros_like(x)


def _paths(denoiser, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tensor = denoiser.sigma_to_t(torch.tensor(sigmas, dtype=torch.float32)).double().numpy()
    host = np.array([denoiser.host_t(float(s)) for s in sigmas])
    return tensor, host


SWEEP = np.concatenate([np.geomspace(1e-3, 30.0, 20001), [0.0]])  # below, across and above the SDXL table


def test_discrete_continuous_paths_agree_within_float32_rounding():
    tensor, host = _paths(DiscreteDenoiser(_identity_net, _sdxl_scheduler().alphas_cumprod), SWEEP)
    np.testing.assert_allclose(host, tensor, rtol=0, atol=INTERPOLATION_ATOL)
    assert host.min() == 0 and host.max() == 999  # clamped to the table's ends, as the tensor path


def test_discrete_quantized_paths_agree_exactly():
    denoiser = DiscreteDenoiser(_identity_net, _sdxl_scheduler().alphas_cumprod, timesteps="quantized")
    tensor, host = _paths(denoiser, SWEEP)
    np.testing.assert_array_equal(host, tensor)


@pytest.mark.parametrize("config", [{}, {"use_karras_sigmas": True}, {"timestep_spacing": "linspace"}])
def test_known_pairs_give_the_schedulers_timesteps_exactly(config):
    scheduler = EulerDiscreteScheduler.from_config({**_sdxl_scheduler().config, **config})
    own = scheduler_sigmas(scheduler, 13)
    denoiser = DiscreteDenoiser(_identity_net, scheduler.alphas_cumprod, known=own.known)
    known_sigmas, known_t = (k.double().numpy() for k in own.known)
    # float64 sigmas a tenth of a float32 ulp off the pairs: both paths see the sampler's float32 sigma batch
    nudged = known_sigmas * (1 + 6e-9)
    for sigmas in (known_sigmas, nudged):
        tensor, host = _paths(denoiser, sigmas)
        np.testing.assert_array_equal(host, known_t)
        np.testing.assert_array_equal(tensor, known_t)


def test_flow_paths_agree_exactly_with_and_without_known_pairs():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    own = scheduler_sigmas(scheduler, 9)
    for known in (None, own.known):
        denoiser = FlowDenoiser(_identity_net, known=known)
        sigmas = np.concatenate([np.linspace(0.0, 1.0, 4001), own.known[0].double().numpy()])
        tensor, host = _paths(denoiser, sigmas)
        np.testing.assert_array_equal(host, tensor)


class _Recording:
    """A denoiser that records what it was called with; ``takes_host_sigma`` as given."""

    def __init__(self, takes_host_sigma: bool):
        self.takes_host_sigma = takes_host_sigma
        self.calls = []

    def __call__(self, x, sigma, **kwargs):
        self.calls.append((sigma.clone(), kwargs))
        return x * 0.5


@pytest.mark.parametrize("takes", [True, False])
def test_samplers_pass_the_host_sigma_only_to_denoisers_that_take_it(takes):
    model = _Recording(takes)
    sigmas = torch.tensor([3.0, 1.5, 0.25, 0.0], dtype=torch.float64)
    sample_euler(model, torch.ones(2, 3), sigmas, disable=True)
    assert len(model.calls) == 3
    for (sigma, kwargs), expected in zip(model.calls, sigmas.tolist()):
        assert sigma.tolist() == [expected, expected]
        assert kwargs == ({"sigma_host": expected} if takes else {})


def test_bridge_output_is_the_same_on_both_paths():
    """A full call: the host path's timestep fill feeds the same network input and gives the same output as the
    tensor path on a known pair (the step-0 sigma of the scheduler)."""
    scheduler = _sdxl_scheduler()
    own = scheduler_sigmas(scheduler, 10)
    seen = []

    def net(x_in, t):
        seen.append(t.clone())
        return x_in * t[:, None, None, None] / 1000

    denoiser = DiscreteDenoiser(net, scheduler.alphas_cumprod, known=own.known)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = float(own.sigmas[1])
    batch = torch.full((2,), sigma, dtype=torch.float32)
    assert torch.equal(denoiser(x, batch), denoiser(x, batch, sigma_host=sigma))
    assert torch.equal(seen[0], seen[1]) and seen[1].dtype == torch.float32
