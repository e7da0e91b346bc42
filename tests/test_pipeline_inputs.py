"""Bad schedule input to the pipelines is refused before any model call, with a message naming it."""

import pytest
import torch

from k_diffusing import KFluxPipeline, KSDXLPipeline
from k_diffusing.testing.tiny import tiny_sdxl_pipeline
from k_diffusing.testing.tiny_flux import tiny_flux_pipeline

SDXL = dict(prompt="a red circle", height=32, width=32, output_type="latent")
FLUX = dict(prompt="a red circle", height=32, width=32, output_type="latent", max_sequence_length=16)


@pytest.fixture(scope="module")
def pipes():
    return tiny_sdxl_pipeline(KSDXLPipeline), tiny_flux_pipeline(KFluxPipeline)


def _no_model_calls(pipe, monkeypatch):
    network = pipe.unet if hasattr(pipe, "unet") else pipe.transformer

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran before the input was refused")

    monkeypatch.setattr(network, "forward", refuse)


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sigmas": [0.5, 0.2], "sigma_schedule": "karras"}, "both choose the schedule"),
        ({"sigmas": [0.2, 0.5], "sampler": "euler"}, "must descend"),
        ({"sigmas": [0.9, float("nan")], "sampler": "euler"}, "must be finite"),
        ({"sampler": "euler", "sampler_kwargs": {"etta": 1.0}}, "does not take option"),
        ({"sampler": "euler_ancestrl"}, "Did you mean 'euler_ancestral'"),
    ],
)
def test_bad_schedule_input_is_refused(pipes, which, kwargs, message, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    _no_model_calls(pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipe(**call, **kwargs, generator=torch.Generator().manual_seed(0))
