"""Bad input to the pipelines is refused before any model call, with a message naming it; the opt-in NaN/inf check
names the model call; ``interrupt`` stops after the model call whose callback set it and returns what was made."""

import re

import numpy as np
import pytest
import torch

import k_diffusing.sampling as sampling
from k_diffusing import KFluxPipeline, KSDXLPipeline
from k_diffusing.geometry import FLOW, VE
from k_diffusing.testing.tiny import tiny_sdxl_pipeline
from k_diffusing.testing.tiny_flux import tiny_flux_pipeline

SDXL = dict(prompt="a red circle", height=32, width=32, output_type="latent")
FLUX = dict(prompt="a red circle", height=32, width=32, output_type="latent", max_sequence_length=16)


@pytest.fixture(scope="module")
def pipes():
    return tiny_sdxl_pipeline(KSDXLPipeline), tiny_flux_pipeline(KFluxPipeline)


NETWORKS = ("text_encoder", "text_encoder_2", "unet", "transformer", "vae")


def _no_model_calls(pipe, monkeypatch) -> dict[str, int]:
    """Count the calls of every network of ``pipe`` (text encoders, denoiser, VAE); a call fails the test. Returns the
    counts (a refusal must leave them all at 0)."""
    counts = {}
    for name in NETWORKS:
        module = getattr(pipe, name, None)
        if module is None:
            continue
        counts[name] = 0

        def refuse(*args, _name=name, **kwargs):
            counts[_name] += 1
            raise AssertionError(f"the {_name} ran before the input was refused")

        monkeypatch.setattr(module, "forward", refuse)
        if name == "vae":
            monkeypatch.setattr(module, "decode", refuse)
            monkeypatch.setattr(module, "encode", refuse)
    return counts


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sigmas": [0.5, 0.2], "sigma_schedule": "karras"}, "both choose the schedule"),
        ({"sigmas": [0.2, 0.5], "sampler": "euler"}, "must descend"),
        ({"sigmas": [0.9, float("nan")], "sampler": "euler"}, "must be finite"),
        ({"sampler": "euler", "sampler_kwargs": {"etta": 1.0}}, "does not take option"),
        ({"sampler": "euler_ancestrl"}, "Did you mean 'euler_ancestral'"),
        ({"sampler": "euler_ancestrl"}, r"Valid samplers: .*euler_ancestral"),
        ({"sigma_schedule": "karas"}, r"unknown schedule 'karas'. Did you mean 'karras'\? Valid schedules: .*simple"),
        ({"num_inference_steps": 0}, r"num_inference_steps must be >= 1 \(the number of sampler steps\), got 0"),
        ({"num_inference_steps": -3, "sigma_schedule": "karras"}, "num_inference_steps must be >= 1"),
        ({"sigmas": [0.9, 0.5, -0.1], "sampler": "euler"}, r"sigmas must be >= 0, got \[0\.9.*, -0\.1"),
        ({"sigmas": [0.9, float("inf")], "sampler": "euler"}, "must be finite"),
        ({"sigmas": [[0.9, 0.5], [0.3, 0.0]], "sampler": "euler"}, r"sigmas must be a 1-D sequence .* got shape \(2, 2\)"),
        ({"sampler": "euler", "sampler_kwargs": {"eta": 1.0}}, r"sampler 'euler' does not take option\(s\) \['eta'\]"),
        ({"sampler": "dpmpp_2m", "sampler_kwargs": {"s_noise": 1.0}}, r"Its options: "),
        ({"sampler": "euler", "sigma_schedule": "vp"}, r"sigma_schedule='vp' starts at sigma 15\d\.\d+, above"),
    ],
)
def test_bad_schedule_input_is_refused(pipes, which, kwargs, message, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    _no_model_calls(pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipe(**call, **kwargs, generator=torch.Generator().manual_seed(0))


NAN = float("nan")
# A newcomer's bad inputs (issue 17): each must be refused before any network runs, naming the argument. The tuples:
# the call's extra keywords, the error type, a pattern the message must match (it names the argument), and which
# pipelines the case applies to (an argument the parent does not take is refused as unknown, also named).
BAD_INPUTS = [
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"eta": NAN}}, ValueError,
     r"sampler_kwargs\['eta'\] must be a finite number >= 0 and <= 100, got nan"),
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"eta": -1}}, ValueError, r"sampler_kwargs\['eta'\] .* got -1"),
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"eta": "high"}}, TypeError,
     r"sampler_kwargs\['eta'\] must be a finite number .* got 'high'"),
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"s_noise": 1e6}}, ValueError,
     r"sampler_kwargs\['s_noise'\] must be .* <= 100, got 1000000.0"),
    ({"sampler": "dpm_adaptive", "sampler_kwargs": {"rtol": -1}}, ValueError, r"sampler_kwargs\['rtol'\] must be .* > 0"),
    ({"sampler": "euler", "sampler_kwargs": ["eta"]}, TypeError, r"sampler_kwargs must be a dict .* got \['eta'\]"),
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"noise_sampler": "x"}}, TypeError,
     r"sampler_kwargs\['noise_sampler'\] must be a callable"),
    ({"sampler": "restart", "sampler_kwargs": {"restart_list": "bogus"}}, TypeError,
     r"sampler_kwargs\['restart_list'\] must be a list of restart intervals"),
    ({"sampler": "restart", "sampler_kwargs": {"restart_list": [(2.0, 0.1, 1, 3)]}}, TypeError,
     r"sampler_kwargs\['restart_list'\] .* 0 < t_min < t_max"),
    ({"sampler": "uni_pc", "sampler_kwargs": {"order": 9}}, ValueError, "order must be 1, 2 or 3, got 9"),
    ({"guidance_scale": NAN}, ValueError, "guidance_scale must be a finite number >= 0, got nan"),
    ({"guidance_scale": -3}, ValueError, "guidance_scale must be a finite number >= 0, got -3"),
    ({"guidance_scale": "7"}, TypeError, "guidance_scale must be a finite number >= 0, got '7'"),
    ({"guidance_rescale": 5}, ValueError, "guidance_rescale must be a finite number >= 0 and <= 1, got 5", "sdxl"),
    ({"denoising_end": 1.5}, ValueError, r"denoising_end must be a finite number > 0 and <= 1 or None, got 1.5",
     "sdxl"),
    ({"true_cfg_scale": "2"}, TypeError, r"true_cfg_scale must be a finite number >= 0, got '2'", "flux"),
    ({"true_cfg_scale": 2.0}, TypeError, r"unexpected keyword argument\(s\) \['true_cfg_scale'\]", "sdxl"),
    ({"guidance_rescale": 0.5}, TypeError, r"unexpected keyword argument\(s\) \['guidance_rescale'\]", "flux"),
    ({"num_inference_step": 4}, TypeError, r"\['num_inference_step'\]\. Did you mean 'num_inference_steps'\?"),
    # sizes: SDXL's check_inputs refuses non-multiples of 8 (early too); FluxPipeline rounds any size down to a
    # multiple of 2 vae_scale_factor (2 here) with a warning, so only sizes that round to nothing are refused
    ({"height": 0}, ValueError, r"height must be a positive multiple of 8 \(pixels\) or None, got 0", "sdxl"),
    ({"height": 0}, ValueError, r"height must be an int >= 2 \(pixels; the parent rounds it down to a multiple of "
                                r"2\) or None, got 0", "flux"),
    ({"height": -32}, ValueError, r"height must be (a positive multiple of|an int >=) \d+ .* got -32"),
    ({"width": 31}, ValueError, r"width must be a positive multiple of 8 \(pixels\) or None, got 31", "sdxl"),
    ({"width": 1}, ValueError, r"width must be an int >= 2 .* got 1", "flux"),
    ({"width": 32.0}, TypeError, r"width must be (a positive multiple|an int >=) .* got 32.0 \(float\)"),
    # eta: the parents pass it to a scheduler whose step takes it (DDIM) and drop it for the others (SDXL's Euler)
    ({"eta": 0.3}, ValueError, r"eta=0.3 is used only by schedulers whose step takes eta .* "
                               r"EulerDiscreteScheduler ignores it", "sdxl"),
    ({"prompt": []}, ValueError, r"prompt must be a string or a non-empty list of strings .* got \[\]"),
    ({"prompt": 7}, TypeError, r"prompt must be a string or a non-empty list of strings .* got 7"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x"], "guidance_scale": 5.0, "true_cfg_scale": 2.0}, ValueError,
     r"negative_prompt must be one string, or a list of one per prompt \(2\), got a list of 1", "flux"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"], "guidance_scale": 5.0}, ValueError,
     r"negative_prompt must be one string, or a list of one per prompt \(2\), got a list of 3", "sdxl"),
    ({"negative_prompt": "blurry"}, ValueError,
     r"negative_prompt is used only with true_cfg_scale > 1 .* got true_cfg_scale=1.0", "flux"),
    ({"negative_prompt": "blurry", "guidance_scale": 1.0}, ValueError,
     r"negative_prompt is used only with guidance_scale > 1 .* got guidance_scale=1.0", "sdxl"),
    ({"generator": 42}, TypeError, r"generator must be a torch.Generator or a non-empty list of them .* got 42"),
    ({"generator": [torch.Generator(), torch.Generator()]}, ValueError,
     r"generator must be one torch.Generator, or a list of one per image \(1\), got a list of 2"),
    ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt must be an int >= 1, got 0"),
    ({"callback_on_step_end": 5}, TypeError, "callback_on_step_end must be a callable .* got 5"),
    ({"output_type": "png"}, ValueError, r"output_type must be one of 'pil', 'np', 'pt', 'latent', got 'png'"),
    ({"check_finite": "yes"}, TypeError, "check_finite must be True or False, got 'yes'"),
    ({"quantize_timesteps": 1}, TypeError, "quantize_timesteps must be True or False or None, got 1", "sdxl"),
    ({"max_sequence_length": 0}, ValueError, r"max_sequence_length must be an int >= 1 and <= 512, got 0", "flux"),
]


def _cases():
    for case in BAD_INPUTS:
        kwargs, error, message, *only = case
        for which, name in enumerate(("sdxl", "flux")):
            if not only or only[0] == name:
                yield pytest.param(which, kwargs, error, message, id=f"{name}-{sorted(kwargs.items())!r}"[:90])


@pytest.mark.parametrize("which,kwargs,error,message", list(_cases()))
def test_bad_input_is_refused_before_any_network_runs(pipes, which, kwargs, error, message, monkeypatch):
    pipe, call = pipes[which], {**(SDXL, FLUX)[which], "num_inference_steps": 3}
    counts = _no_model_calls(pipe, monkeypatch)
    with pytest.raises(error, match=message):
        pipe(**{**call, **kwargs})
    assert set(counts) >= {"text_encoder", "vae"} and not any(counts.values())
    with pytest.raises(error, match=message):  # validate() refuses what the call refuses, and runs nothing either
        pipe.validate(**{**call, **kwargs})
    assert not any(counts.values())


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
def test_validate_runs_no_network_and_the_call_then_runs(pipes, which, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    kwargs = dict(call, num_inference_steps=2, sampler="dpmpp_2m_sde", sigma_schedule="karras")
    counts = _no_model_calls(pipe, monkeypatch)
    assert pipe.validate(**kwargs) is None and not any(counts.values())
    monkeypatch.undo()
    assert torch.isfinite(pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images).all()


def test_the_functional_core_promotes_integer_x_as_k_diffusion_does():
    """k-diffusion's arithmetic turns an integer ``x`` into floating point; the result is not cast back to int."""
    def model(x, sigma):
        return x * 0.5

    x, sigmas = torch.full((1, 2), 3, dtype=torch.int64), torch.tensor([2.0, 1.0, 0.0])
    out = sampling.sample_euler(model, x, sigmas)
    assert out.dtype == torch.float32 and torch.equal(out, sampling.sample_euler(model, x.float(), sigmas))
    assert out[0, 0] == 1.125  # 3 - 0.75 (step 2 -> 1), then 2.25 - 1.125 (step 1 -> 0)


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
@pytest.mark.parametrize("steps", [2.5, "4", True])
def test_non_integer_steps_are_a_type_error(pipes, which, steps, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    _no_model_calls(pipe, monkeypatch)
    with pytest.raises(TypeError, match="num_inference_steps must be an int"):
        pipe(**call, num_inference_steps=steps)


def test_a_schedule_the_geometry_cannot_use_is_refused(pipes, monkeypatch):
    """Flow has no sigma above 1 (vp, custom sigmas; align_your_steps has no flow table); SDXL's UNet knows no
    noise level above the top of its table (vp, custom sigmas: the network would see a clamped timestep)."""
    sdxl, flux = pipes
    for pipe in pipes:
        _no_model_calls(pipe, monkeypatch)
    with pytest.raises(ValueError, match=r"above 14.61\d*, the largest noise level of the model's sigma table"):
        sdxl(**SDXL, sigma_schedule="vp")
    with pytest.raises(ValueError, match=r"custom sigmas start at sigma 1e\+06, above 14.61\d*, the largest noise"):
        sdxl(**SDXL, sampler="euler", sigmas=[1e6, 0.0])
    with pytest.raises(ValueError, match=r"above 1, the largest noise level of a flow model"):
        flux(**FLUX, sigma_schedule="vp")
    with pytest.raises(ValueError, match="align_your_steps has no published table for flow models"):
        flux(**FLUX, sigma_schedule="align_your_steps")
    with pytest.raises(ValueError, match=r"sigmas must lie in \[0, 1\] for a model in flow geometry, got 1.5"):
        flux(**FLUX, sampler="euler", sigmas=[1.5, 0.5])


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
def test_bad_latents_are_refused(pipes, which, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    _no_model_calls(pipe, monkeypatch)
    good = _latent_shape(pipe)
    wrong = (good[0] + 1,) + good[1:]
    with pytest.raises(ValueError, match=rf"latents have shape {re.escape(str(wrong))}, this call needs "
                                         rf"{re.escape(str(good))} \(images, "):
        pipe(**call, latents=torch.zeros(wrong))
    with pytest.raises(TypeError, match=r"latents must have a floating dtype .* got torch.int64"):
        pipe(**call, latents=torch.zeros(good, dtype=torch.int64))
    with pytest.raises(TypeError, match="latents must be a torch.Tensor, got ndarray"):
        pipe(**call, latents=np.zeros(good, dtype=np.float32))


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2"])
def test_noise_before_the_first_call_is_refused(pipes, which, sampler, monkeypatch):
    """``s_churn`` covering the first sigma makes these samplers noise the state before their first model call, which
    the parent's loop cannot give them (it calls the network on the initial latents first); with ``s_tmax`` below
    the first sigma they run. FLUX's default first sigma is 1, where the churn has no room: custom sigmas here."""
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    schedule = {"sigma_schedule": "karras"} if which == 0 else {"sigmas": [0.9, 0.5, 0.2]}
    _no_model_calls(pipe, monkeypatch)
    with pytest.raises(ValueError, match=rf"sampler '{sampler}' makes its first model call at sigma .* s_tmax below"):
        pipe(**call, **schedule, num_inference_steps=3, sampler=sampler, sampler_kwargs={"s_churn": 1.0})
    monkeypatch.undo()
    out = pipe(**call, **schedule, num_inference_steps=3, sampler=sampler, generator=torch.Generator().manual_seed(0),
               sampler_kwargs={"s_churn": 1.0, "s_tmax": (10.0, 0.5)[which]}).images
    assert torch.isfinite(out).all()


def _latent_shape(pipe) -> tuple[int, ...]:
    if hasattr(pipe, "unet"):
        return (1, pipe.unet.config.in_channels, 32 // pipe.vae_scale_factor, 32 // pipe.vae_scale_factor)
    side = 32 // (pipe.vae_scale_factor * 2)
    return (1, side * side, pipe.transformer.config.in_channels)


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
def test_float_latents_of_any_width_are_accepted(pipes, which):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    z = torch.randn(_latent_shape(pipe), generator=torch.Generator().manual_seed(0))
    outs = [pipe(**call, num_inference_steps=2, latents=z.to(dtype)).images.float() for dtype in
            (torch.float32, torch.float64, torch.bfloat16)]
    assert (outs[0] - outs[1]).abs().max() == 0.0
    assert (outs[0] - outs[2]).abs().max() < 0.1  # bf16 rounding of the noise only


def _nan_from_call(pipe, monkeypatch, first_bad: int) -> list[int]:
    """The network returns NaN from its ``first_bad``-th call (counting from 1); returns the call counter."""
    network = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    forward, calls = network.forward, [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        out = forward(*args, **kwargs)
        return (out[0] * float("nan"),) + tuple(out[1:]) if calls[0] >= first_bad else out

    monkeypatch.setattr(network, "forward", poisoned)
    return calls


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
def test_check_finite_names_the_call_and_sigma(pipes, which, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    calls = _nan_from_call(pipe, monkeypatch, first_bad=3)
    with pytest.raises(FloatingPointError) as error:
        pipe(**call, num_inference_steps=5, sampler="euler", sigma_schedule="karras", check_finite=True)
    s = pipe.k_sigmas.tolist()
    assert calls[0] == 3  # stopped right after the model call that went bad
    assert f"NaN/inf after model call 2 (sigma {s[2]:.6g})" in str(error.value)


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
def test_without_check_finite_nan_runs_to_the_end(pipes, which, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    calls = _nan_from_call(pipe, monkeypatch, first_bad=3)
    out = pipe(**call, num_inference_steps=5, sampler="euler", sigma_schedule="karras").images
    assert calls[0] == 5 and torch.isnan(out).all()


@pytest.mark.parametrize("which", [0, 1], ids=["sdxl", "flux"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_interrupt_stops_after_the_call_and_returns_the_latents(pipes, which, sampler, monkeypatch):
    pipe, call = pipes[which], (SDXL, FLUX)[which]
    calls = _nan_from_call(pipe, monkeypatch, first_bad=10**9)  # a call counter only

    def stop_at_2(p, i, t, kwargs):
        if i == 2:
            p._interrupt = True
        return {}

    out = pipe(**call, num_inference_steps=6, sampler=sampler, callback_on_step_end=stop_at_2).images
    assert calls[0] == 3  # the parent's loop: calls 0, 1, 2 (heun: step 0 and the first call of step 1), no more
    assert out.shape == _latent_shape(pipe) and torch.isfinite(out).all()


class _Flow:
    geometry = FLOW

    def __call__(self, x, sigma):
        return x * 0


@pytest.mark.parametrize(
    "model,sigmas,message",
    [
        (lambda x, s: x * 0, [1.0, 2.0, 0.0], r"sigmas must descend \(non-increasing, ending at or above 0\), got"),
        (lambda x, s: x * 0, [1.0, float("nan"), 0.0], r"sigmas must be finite \(no NaN/inf\), got \[1.0, nan"),
        (lambda x, s: x * 0, [1.0, 0.5, -0.25], r"sigmas must be >= 0, got \[1.0, 0.5, -0.25\]"),
        (_Flow(), [1.5, 0.5, 0.0], r"sigmas must lie in \[0, 1\] for a model in flow geometry, got 1.5"),
    ],
)
@pytest.mark.parametrize("sampler", ["sample_euler", "sample_dpmpp_2m_sde", "sample_uni_pc"])
def test_functional_samplers_refuse_bad_sigmas(model, sigmas, message, sampler):
    calls = []

    def counted(x, sigma):
        calls.append(1)
        return model(x, sigma)

    counted.geometry = getattr(model, "geometry", None) or VE
    with pytest.raises(ValueError, match=message):
        getattr(sampling, sampler)(counted, torch.zeros(1, 2), torch.tensor(sigmas, dtype=torch.float64))
    assert not calls


@pytest.mark.parametrize("custom", [{"sigmas": [14.6, 1.0, 0.0]}, {"timesteps": [999, 500]}],
                         ids=lambda c: next(iter(c)))
def test_a_custom_schedule_the_loaded_scheduler_cannot_take_is_refused_early(pipes, custom, monkeypatch):
    """Without K options the loaded scheduler runs (PNDM here); the parent refuses custom sigmas / timesteps it
    cannot take only after the prompt is encoded (``retrieve_timesteps``), the K pipeline before any network."""
    from diffusers import PNDMScheduler

    pipe = KSDXLPipeline(**{**pipes[0].components, "scheduler": PNDMScheduler.from_config(pipes[0].scheduler.config)})
    counts = _no_model_calls(pipe, monkeypatch)
    name = next(iter(custom))
    with pytest.raises(ValueError, match=rf"{name}= needs a scheduler whose set_timesteps takes custom {name}; "
                                         "PNDMScheduler does not"):
        pipe(**SDXL, **custom)
    assert not any(counts.values())
