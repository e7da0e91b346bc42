"""Smoke test of k_diffusing.embedded.train_flux: a few steps of both stages, reload offline, render, loss falls."""

import json

import pytest
import torch

pytest.importorskip("diffusers")

from k_diffusing.embedded import train_flux


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded_flux") / "pipe"
    record = train_flux.train(
        out,
        steps=12,
        vae_steps=8,
        images=64,
        batch=8,
        max_sequence_length=16,
        seed=0,
        threads=1,
        print_every=100,
        log=lambda *a: None,
    )
    return out, record


def test_smoke_training_saves_a_loadable_pipeline_that_renders(smoke_run):
    from k_diffusing import KFluxPipeline

    out, record = smoke_run
    assert (out / "model_index.json").exists()
    assert json.loads((out / "training_log.json").read_text())["transformer_steps"] == 12
    assert record["folder_bytes"] < 20e6
    pipe = KFluxPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["vae_scaling_factor"])
    assert pipe.vae.config.shift_factor == pytest.approx(record["vae_shift_factor"])
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels
    assert not pipe.transformer.config.guidance_embeds
    image = pipe(
        "a large red circle on the left, blue background",
        num_inference_steps=3,
        height=32,
        width=32,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert image.shape == (1, 3, 32, 32)
    assert torch.isfinite(image).all()


def test_smoke_training_losses_decrease(smoke_run):
    _, record = smoke_run
    vae, flow = record["vae_loss"], record["transformer_loss"]
    assert len(vae) == 8 and len(flow) == 12
    assert sum(vae[-3:]) / 3 < 0.9 * sum(vae[:3]) / 3
    assert sum(flow[-4:]) / 4 < 0.9 * sum(flow[:4]) / 4
