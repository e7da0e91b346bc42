"""Smoke test of k_diffusing.embedded.train_sdxl: a few steps of both stages, reload offline, render, loss falls."""

import json

import pytest
import torch

pytest.importorskip("diffusers")

from k_diffusing.embedded import train_sdxl


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded_sdxl") / "pipe"
    record = train_sdxl.train(
        out,
        steps=12,
        vae_steps=8,
        images=64,
        batch=8,
        seed=0,
        threads=1,
        print_every=100,
        log=lambda *a: None,
    )
    return out, record


def test_smoke_training_saves_a_loadable_pipeline_that_renders(smoke_run):
    from k_diffusing import KSDXLPipeline

    out, record = smoke_run
    assert (out / "model_index.json").exists()
    assert json.loads((out / "training_log.json").read_text())["unet_steps"] == 12
    assert record["folder_bytes"] < 20e6
    pipe = KSDXLPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["vae_scaling_factor"])
    image = pipe(
        "a large red circle on the left, blue background",
        num_inference_steps=3,
        guidance_scale=5.0,
        height=32,
        width=32,
        sampler="euler",
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert image.shape == (1, 3, 32, 32)
    assert torch.isfinite(image).all()


def test_smoke_training_losses_decrease(smoke_run):
    _, record = smoke_run
    vae, unet = record["vae_loss"], record["unet_loss"]
    assert len(vae) == 8 and len(unet) == 12
    assert sum(vae[-3:]) / 3 < 0.9 * sum(vae[:3]) / 3
    assert sum(unet[-4:]) / 4 < 0.8 * sum(unet[:4]) / 4


def test_v_weighting_turns_the_eps_mse_into_the_v_mse():
    """Salimans & Ho 2022: with x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and v = sqrt(abar) eps - sqrt(1 - abar) x0,
    |v - v_hat|^2 = |eps - eps_hat|^2 / abar, i.e. the 'v' weights up to one constant over the timesteps."""
    from diffusers import DDPMScheduler

    from k_diffusing.testing.tiny import sdxl_scheduler_config

    abar = DDPMScheduler.from_config(sdxl_scheduler_config()).alphas_cumprod.double()
    weights = train_sdxl.loss_weights(abar, "v").double()
    assert weights.mean().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 10, 500, 900, 999])
    a, s = abar[t].sqrt()[:, None], (1 - abar[t]).sqrt()[:, None]
    x0, eps = torch.randn(5, 64, generator=g, dtype=torch.float64), torch.randn(5, 64, generator=g, dtype=torch.float64)
    eps_hat = eps + 0.1 * torch.randn(5, 64, generator=g, dtype=torch.float64)
    xt = a * x0 + s * eps
    x0_hat = (xt - s * eps_hat) / a
    v_mse = ((a * eps - s * x0) - (a * eps_hat - s * x0_hat)).pow(2).mean(1)
    weighted_eps_mse = weights[t] * (eps - eps_hat).pow(2).mean(1)
    ratio = v_mse / weighted_eps_mse
    assert torch.allclose(ratio, ratio[0].expand(5), rtol=1e-10)
    assert torch.equal(train_sdxl.loss_weights(abar, "uniform"), torch.ones_like(abar))
