"""Offline tiny FLUX pipelines and the analytic flow transformer (k_diffusing.testing.tiny_flux).

Tolerances are measured (fp32 CPU, diffusers 0.42.1) and stated next to each check. Every exactness check has a
negative control: a deliberately wrong model (std off by 1%, sigma off by 1e-3) must break it.
"""

import math
import socket

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from k_diffusing.testing.tiny_flux import (
    AnalyticFluxTransformer,
    analytic_flux_pipeline,
    flux_scheduler_config,
    gaussian_flow_velocity,
    save_tiny_flux,
    tiny_flux_components,
    tiny_flux_pipeline,
)

GUIDANCE = [pytest.param(True, id="dev"), pytest.param(False, id="schnell")]
MODELS = ("transformer", "vae", "text_encoder", "text_encoder_2")


def _run(pipe, steps=2, output_type="latent", seed=0, **kwargs):
    kwargs.setdefault("max_sequence_length", 32)
    generator = torch.Generator().manual_seed(seed)
    out = pipe("a photo of a cat", num_inference_steps=steps, output_type=output_type, generator=generator, **kwargs)
    return out.images


# --- scheduler and components --------------------------------------------------------------------------------------


def test_scheduler_config_is_flux_dev():
    sched = tiny_flux_components()["scheduler"]
    assert isinstance(sched, diffusers.FlowMatchEulerDiscreteScheduler)
    cfg = sched.config
    assert (cfg.num_train_timesteps, cfg.shift, cfg.use_dynamic_shifting) == (1000, 3.0, True)
    assert (cfg.base_shift, cfg.max_shift, cfg.base_image_seq_len, cfg.max_image_seq_len) == (0.5, 1.15, 256, 4096)
    assert cfg.time_shift_type == "exponential"
    schnell = flux_scheduler_config(use_dynamic_shifting=False, shift=1.0)
    assert not schnell["use_dynamic_shifting"] and schnell["shift"] == 1.0 and schnell["base_shift"] == 0.5
    # the 2-step schedule at 256 image tokens: mu = 0.5, sigma(0.5) = e^0.5 / (e^0.5 + 1)
    sched.set_timesteps(sigmas=[1.0, 0.5], mu=0.5)
    torch.testing.assert_close(sched.sigmas, torch.tensor([1.0, math.exp(0.5) / (math.exp(0.5) + 1), 0.0]))


def test_components_are_tiny_consistent_and_seeded():
    rng_before = torch.get_rng_state()
    comps = tiny_flux_components(seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # construction leaves the caller's RNG alone
    tr, vae, clip, t5 = (comps[name] for name in MODELS)
    assert tr.config.in_channels == 4 * vae.config.latent_channels == 4 and tr.config.guidance_embeds
    assert tr.config.pooled_projection_dim == clip.config.hidden_size == 32
    assert tr.config.joint_attention_dim == t5.config.d_model == 32
    assert sum(tr.config.axes_dims_rope) == tr.config.attention_head_dim == 16
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (0.3611, 0.1159)
    assert (t5.config.d_kv, t5.config.d_ff, t5.config.num_layers, t5.config.num_heads) == (8, 37, 2, 4)
    assert t5.config.relative_attention_num_buckets == 8 and t5.config.feed_forward_proj == "gated-gelu"
    for name in MODELS:
        model = comps[name]
        assert not model.training
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        assert sum(p.numel() for p in model.parameters()) < 100_000
    assert comps["image_encoder"] is None and comps["feature_extractor"] is None
    again, other = tiny_flux_components(seed=3), tiny_flux_components(seed=4)
    schnell = tiny_flux_components(guidance_embeds=False, seed=3)
    assert not schnell["transformer"].config.guidance_embeds
    for name in MODELS:
        w, w_again, w_other = (next(c[name].parameters()) for c in (comps, again, other))
        assert torch.equal(w, w_again) and not torch.equal(w, w_other)
    for name in MODELS[1:]:  # guidance_embeds changes only the transformer
        a, b = comps[name].state_dict(), schnell[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


# --- tiny pipeline -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guidance_embeds", GUIDANCE)
def test_tiny_pipeline_runs_two_steps(guidance_embeds):
    """Measured on one core: building takes ~35 ms, 2 steps at 32x32 ~20 ms (latent or np; bf16 ~30 ms)."""
    pipe = tiny_flux_pipeline(guidance_embeds=guidance_embeds)
    assert type(pipe) is diffusers.FluxPipeline and pipe.vae_scale_factor == 1
    latents = _run(pipe, height=32, width=32)
    assert latents.shape == (1, 256, 4) and latents.dtype == torch.float32 and torch.isfinite(latents).all()
    assert torch.equal(latents, _run(pipe, height=32, width=32))
    assert not torch.equal(latents, _run(pipe, height=32, width=32, seed=1))
    image = _run(pipe, output_type="np", height=32, width=32)
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert torch.equal(_run(pipe), latents)  # the default size is set to 32x32
    assert _run(pipe, height=2, width=2).shape == (1, 1, 4)  # the smallest size: one token
    # dev feeds guidance_scale to the network; schnell ignores it
    guided = _run(pipe, height=32, width=32, guidance_scale=7.0)
    assert torch.equal(guided, latents) != guidance_embeds


def test_tiny_pipeline_true_cfg_and_batch():
    pipe = tiny_flux_pipeline()
    plain = _run(pipe)
    cfg = _run(pipe, negative_prompt="a dog", true_cfg_scale=2.0)
    assert cfg.shape == plain.shape and not torch.equal(cfg, plain)
    batch = _run(pipe, num_images_per_prompt=3, height=16, width=16)
    assert batch.shape == (3, 64, 4) and torch.isfinite(batch).all()


def test_tiny_pipeline_bf16_runs():
    pipe = tiny_flux_pipeline().to(torch.bfloat16)
    latents = _run(pipe)
    assert latents.dtype == torch.bfloat16 and torch.isfinite(latents.float()).all()
    image = _run(pipe, output_type="np")
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_save_reload_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    path = save_tiny_flux(tmp_path / "tiny-flux", guidance_embeds=False)
    assert (path / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    first = diffusers.FluxPipeline.from_pretrained(path)
    second = diffusers.DiffusionPipeline.from_pretrained(path)
    assert type(second) is diffusers.FluxPipeline and not second.transformer.config.guidance_embeds
    assert second.scheduler.config.use_dynamic_shifting and second.tokenizer_2("a cat").input_ids[-1] == 1
    memory = tiny_flux_pipeline(guidance_embeds=False)
    for name in MODELS:
        saved, reloaded = getattr(memory, name).state_dict(), getattr(first, name).state_dict()
        assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    for pipe in (first, second):
        pipe.set_progress_bar_config(disable=True)
    for output_type in ("latent", "np"):
        a, b, c = (np.asarray(_run(p, output_type=output_type, height=32, width=32)) for p in (first, second, memory))
        # measured: bit for bit, reloaded vs reloaded and reloaded vs in memory (no CLIP text projection here)
        assert np.array_equal(a, b) and np.abs(a - c).max() < 1e-5

    analytic = analytic_flux_pipeline(mean=0.3, std=0.5)
    analytic.save_pretrained(tmp_path / "analytic")
    reloaded = diffusers.FluxPipeline.from_pretrained(tmp_path / "analytic")
    assert isinstance(reloaded.transformer, AnalyticFluxTransformer) and reloaded.transformer.config.std == 0.5
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(_run(reloaded, height=32, width=32), _run(analytic))


# --- analytic transformer ------------------------------------------------------------------------------------------


def _posterior_velocity(x, sigma, mean, std):
    """v = (x - E[x0 | x]) / sigma from the Gaussian posterior mean E[x0 | x] (sigma > 0 only)."""
    x0 = mean + (1 - sigma) * std**2 / ((1 - sigma) ** 2 * std**2 + sigma**2) * (x - (1 - sigma) * mean)
    return (x - x0) / sigma


def test_analytic_velocity_matches_closed_form():
    mean, std = 0.7, 1.9
    model = AnalyticFluxTransformer(mean=mean, std=std)
    x = torch.randn(4, 16, 4, dtype=torch.float64) * 3 + 0.5
    sigma = torch.tensor([1e-6, 0.05, 0.5, 0.98])
    expected = _posterior_velocity(x, sigma.double().reshape(-1, 1, 1), mean, std)
    got = model(x, sigma).sample  # one float32 sigma per row, told in x's dtype (float64)
    assert got.dtype == torch.float64
    # measured 4.8e-10 at sigma = 1e-6 (the reference's own (x - x0) / sigma cancellation), <= 4e-14 elsewhere
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8)
    for i in range(4):  # one sigma for the batch: tensor, 1-element tensor, float
        for timestep in (sigma[i], sigma[i : i + 1], float(sigma[i])):
            out = model(x[i : i + 1], timestep=timestep, return_dict=False)[0]
            torch.testing.assert_close(out, expected[i : i + 1], rtol=1e-8, atol=1e-8)
    # the ends of [0, 1]: at sigma = 1, x = eps and E[x0 | x] = mean; at sigma = 0, x = x0 and E[eps] = 0
    torch.testing.assert_close(model(x, 1.0).sample, x - mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(model(x, 0.0).sample, -x, rtol=0, atol=1e-14)
    # negative controls: a 1% wrong std and a 1e-3 wrong sigma are far outside the tolerance
    wrong_std = AnalyticFluxTransformer(mean=mean, std=std * 1.01)(x, sigma).sample
    assert (wrong_std - expected).abs().max() > 1e-3
    assert (model(x, sigma + 1e-3).sample - expected).abs().max() > 1e-3


def test_analytic_velocity_is_the_regression_of_eps_minus_x0():
    """Monte Carlo, independent of any formula: least squares of eps - x0 on x = (1 - s) x0 + s eps recovers the
    velocity's slope and intercept (2e5 samples: standard error of the slope up to 3.9e-3 at s = 0.02; measured
    max error 3.9e-3; tolerance 0.012, three standard errors)."""
    mean, std, n = -0.4, 0.6, 200_000
    gen = torch.Generator().manual_seed(5)
    x0 = mean + std * torch.randn(n, generator=gen, dtype=torch.float64)
    eps = torch.randn(n, generator=gen, dtype=torch.float64)
    for s in (0.02, 0.3, 0.8, 1.0):
        x = (1 - s) * x0 + s * eps
        design = torch.stack([torch.ones_like(x), x], dim=1)
        intercept, slope = torch.linalg.lstsq(design, (eps - x0)[:, None]).solution.flatten().tolist()
        v0, v1 = (gaussian_flow_velocity(torch.tensor([0.0, 1.0], dtype=torch.float64), s, mean, std)).tolist()
        assert abs(intercept - v0) < 0.012 and abs(slope - (v1 - v0)) < 0.012


def test_analytic_transformer_interface():
    model = AnalyticFluxTransformer(guidance_embeds=False)
    x = torch.randn(2, 64, 4)
    a = model(x, torch.tensor([0.3, 0.3])).sample
    b = model(
        hidden_states=x, timestep=torch.tensor([0.3, 0.3]), guidance=torch.full([2], 3.5),
        pooled_projections=torch.randn(2, 32), encoder_hidden_states=torch.randn(2, 32, 32),
        txt_ids=torch.zeros(32, 3), img_ids=torch.zeros(64, 3), joint_attention_kwargs={"scale": 0.5},
    ).sample  # fmt: skip
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert isinstance(model(x, 0.3, return_dict=False), tuple)
    assert model.calls == 3 and len(model.sigmas_seen) == 3
    with model.cache_context("cond"), model.cache_context("uncond", step_index=0):
        pass
    assert model.dtype == torch.float32 and model.config.in_channels == 4 and not model.config.guidance_embeds
    with pytest.raises(ValueError):
        model(x, torch.tensor([0.1, 0.2, 0.3]))
    # bf16 input: the sigma is rounded to bf16 first, as in FluxTransformer2DModel (0.98841 -> 0.98828)
    y = model(x.bfloat16(), torch.tensor([0.98841])).sample
    assert y.dtype == torch.bfloat16 and model.sigmas_seen[-1].item() == 0.98828125
    torch.testing.assert_close(y.double(), gaussian_flow_velocity(x.bfloat16().double(), 0.98828125), atol=0.02, rtol=0)
    with pytest.raises(ValueError):
        AnalyticFluxTransformer(std=-1.0)


def _euler_expected(z, sched_sigmas, told_sigmas, mean, std):
    """FlowMatchEuler's x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, told_i) from packed noise z, twice: in
    float64, and emulating the pipeline's float32 arithmetic (v rounded to float32, then x + dt * v in float32)."""
    x64, x32 = z.double(), z.float()
    for i, told in enumerate(told_sigmas):
        x64 = x64 + (sched_sigmas[i + 1].double() - sched_sigmas[i].double()) * gaussian_flow_velocity(
            x64, told, mean, std
        )
        v32 = gaussian_flow_velocity(x32.double(), told, mean, std).float()
        x32 = x32 + (sched_sigmas[i + 1] - sched_sigmas[i]) * v32
    return x64, x32


@pytest.mark.parametrize("guidance_embeds", GUIDANCE)
def test_analytic_pipeline_follows_euler_recursion_exactly(guidance_embeds):
    """The whole FluxPipeline (packing, shifted sigmas, timestep / 1000, guidance, step) against the recursion.

    The network is told float32(t) / 1000, not the scheduler's sigma (they differ by ~1 ulp). The pipeline matches
    the float32 emulation bit for bit and the float64 recursion to 2.2e-6 (measured at 30 steps, |x| <= 8.6).
    Schnell uses its static schedule (shift 1, no dynamic shifting).
    """
    mean, std, steps = -1.0, 2.0, 30
    scheduler = None
    if not guidance_embeds:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(
            flux_scheduler_config(use_dynamic_shifting=False, shift=1.0)
        )
    z = torch.randn(2, 256, 4, generator=torch.Generator().manual_seed(1))

    def final(pipe, **kwargs):
        return _run(pipe, steps=steps, latents=z, num_images_per_prompt=2, **kwargs).double()

    pipe = analytic_flux_pipeline(mean=mean, std=std, scheduler=scheduler, guidance_embeds=guidance_embeds)
    out = final(pipe)
    assert pipe.transformer.calls == steps
    sched = pipe.scheduler
    told = (sched.timesteps.to(torch.float32) / 1000).double()
    torch.testing.assert_close(torch.cat(pipe.transformer.sigmas_seen), told.repeat_interleave(2), rtol=0, atol=0)
    assert sched.sigmas[0] == 1.0 and sched.sigmas[-1] == 0.0
    if not guidance_embeds:  # static shift 1: plain linspace
        torch.testing.assert_close(sched.sigmas[:-1].double(), torch.linspace(1, 1 / steps, steps, dtype=torch.float64))
    expected, emulated = _euler_expected(z, sched.sigmas, told, mean, std)
    assert torch.equal(out.float(), emulated)
    assert (out - expected).abs().max() < 1e-5
    # guidance and true CFG are no-ops for a model that ignores conditioning (true CFG costs a second call)
    assert torch.equal(out, final(pipe, guidance_scale=9.0, negative_prompt="a dog", true_cfg_scale=3.0))
    assert pipe.transformer.calls == 3 * steps
    wrong = analytic_flux_pipeline(mean=mean, std=std * 1.01, scheduler=scheduler, guidance_embeds=guidance_embeds)
    assert (final(wrong) - expected).abs().max() > 1e-3


def test_analytic_pipeline_reproduces_the_data_distribution():
    """FluxPipeline (FLUX.1-dev's FlowMatchEuler, dynamic shift, 100 steps) with the exact transformer samples
    N(mean, std^2).

    sigma_max = 1 exactly, so the start x = eps is already the right marginal for any (mean, std), and the exact
    flow ends at mean + std eps. 8 images of 64x64 (1024 tokens x 4 = 32768 elements; sampling error of the mean
    0.5 / sqrt(32768) = 0.0028, of the std 0.002). Measured for N(0.3, 0.5^2), seed 0: mean 0.2939 (the noise
    itself has mean -0.0125, i.e. 2.3 standard errors), std 0.4903 = 0.9794 x that of the exact flow endpoint of
    the same noise: Euler's own first-order bias in std is -2.1% at 100 steps (-9.9% at 20, -0.5% at 400), in the
    mean 1.3e-4. Tolerances: |mean - 0.3| < 0.015, |std / 0.5 - 1| < 0.035; a model for std 0.55 gives 0.540 (+8%).
    """
    mean, std, steps = 0.3, 0.5, 100

    def sample(model_std):
        pipe = analytic_flux_pipeline(mean=mean, std=model_std)
        x = _run(pipe, steps=steps, num_images_per_prompt=8, height=64, width=64).double()
        return x, pipe

    x, pipe = sample(std)
    assert x.shape == (8, 1024, 4)
    # the noise the pipeline drew (randn_tensor with the seed-0 generator, then packed) and Euler's endpoint for it
    z = pipe._pack_latents(torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(0)), 8, 1, 64, 64)
    expected, _ = _euler_expected(z, pipe.scheduler.sigmas, (pipe.scheduler.timesteps / 1000).double(), mean, std)
    assert (x - expected).abs().max() < 1e-5  # measured 1.1e-6
    exact_flow = mean + std * z.double()
    assert -0.025 < x.std().item() / exact_flow.std().item() - 1 < -0.017  # Euler's bias, measured -2.06%
    assert abs(x.mean().item() - mean) < 0.015 and abs(x.std().item() / std - 1) < 0.035
    wrong, _ = sample(std * 1.1)  # negative control
    assert abs(wrong.std().item() / std - 1) > 0.035
