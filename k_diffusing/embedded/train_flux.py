"""Train a tiny FLUX-architecture pipeline on procedural captioned shapes, on CPU, and save it for KFluxPipeline.

Usage: ``python -m k_diffusing.embedded.train_flux --out DIR [--minutes M] [--steps N] [--seed S]``.

Components (diffusers/transformers classes, so ``KFluxPipeline.from_pretrained(DIR)`` loads them offline): CLIP
(hidden 32, pooled -> ``pooled_projection_dim``) and T5 (d_model 32 -> ``joint_attention_dim``) text encoders with
the local tokenizers of :mod:`k_diffusing.testing.tiny_flux`, an ``AutoencoderKL`` with two blocks
(vae_scale_factor 2, ``LATENT_CHANNELS`` = 4 latent channels, no quant convs as FLUX.1's VAE; 32x32 images ->
4x16x16 latents -> 64 packed tokens of 16 features) and a ``FluxTransformer2DModel`` (``in_channels`` 16 = 4 x
latent channels, 1 double + 1 single block, 2 heads of 16, rotary axes (4, 4, 8), ``guidance_embeds=False``:
schnell-style, the pipeline passes ``guidance=None``).

Stage 1 trains the VAE alone (:func:`k_diffusing.embedded.train_sdxl.train_vae`) and then sets FLUX-style
``shift_factor`` = mean and ``scaling_factor`` = 1 / std of the training latents (posterior mean + noise), so the
pipeline's ``(z - shift) * scale`` latents are ~zero-mean, unit-variance.

Stage 2 freezes the VAE and trains the transformer with the rectified-flow objective (Liu et al. 2022,
arXiv:2209.03003; Esser et al. 2024, arXiv:2403.03206): ``x_t = (1 - t) x0 + t eps``, target ``v = eps - x0``, MSE.
t is drawn from the **logit-normal** distribution (sigmoid of N(0, 1), SD3's default "lognorm(0, 1)") by default,
``--timesteps uniform`` draws it uniformly in [0, 1]. Latents are packed with the pipeline's own ``_pack_latents``,
image ids from ``_prepare_latent_image_ids``, text from ``encode_prompt`` (``--max-sequence-length`` T5 tokens,
48 by default: every shapes caption fits; sample with the same value); the transformer gets ``timestep = t``
(in [0, 1]; it multiplies by 1000 itself, as ``FluxPipeline.__call__`` passes ``timestep / 1000``) and
``guidance=None``. Nothing is dropped for
classifier-free guidance (FLUX.1 is sampled without a negative prompt).

Text encoders: trained jointly with the transformer by default (``--freeze-text`` keeps them random), as in
:mod:`k_diffusing.embedded.train_sdxl`.

Reused from :mod:`k_diffusing.embedded.train_sdxl` by import (not copied): ``EMA``, ``save_pipeline`` (atomic
save_pretrained + ``training_log.json``), ``folder_size``, ``train_vae`` and ``encode_latents``. The dataset is
:func:`k_diffusing.embedded.shapes.dataset`. Budget, EMA, checkpointing and logging behave as in train_sdxl.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import torch
import torch.nn.functional as F

from k_diffusing.embedded.train_sdxl import (
    EMA,
    encode_latents,
    folder_size,
    save_pipeline,
    train_vae,
)

LATENT_CHANNELS = 4
IN_CHANNELS = 4 * LATENT_CHANNELS  # 2x2 packed patches
DEFAULT_MAX_SEQUENCE_LENGTH = 48  # the byte-level T5 tokenizer gives the shapes captions 27..40 tokens


# --- components --------------------------------------------------------------------------------------------------


def build_components(seed: int = 0, image_size: int = 32, vae_channels=(16, 32)) -> dict:
    """Fresh, deterministic components of ``FluxPipeline`` (fp32, CPU, eval mode)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from k_diffusing.testing.tiny import seeded
    from k_diffusing.testing.tiny_flux import (
        flux_scheduler_config,
        tiny_flux_components,
        tiny_flux_transformer,
    )

    # Text encoders and tokenizers exactly as the tiny FLUX test pipeline builds them (CLIP seed + 2, T5 seed + 3).
    text = tiny_flux_components(guidance_embeds=False, seed=seed)
    transformer = tiny_flux_transformer(guidance_embeds=False, seed=seed, in_channels=IN_CHANNELS)
    with seeded(seed + 1):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
            block_out_channels=tuple(vae_channels),
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=8,
            sample_size=image_size,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=1.0,
            shift_factor=0.0,
        )
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": text["text_encoder"],
        "text_encoder_2": text["text_encoder_2"],
        "tokenizer": text["tokenizer"],
        "tokenizer_2": text["tokenizer_2"],
        # schnell-style: no guidance embedding; FLUX.1's dynamic-shift FlowMatchEuler for sampling.
        "scheduler": FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config()),
        "image_encoder": None,
        "feature_extractor": None,
    }


def assemble(components: dict):
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- objective ---------------------------------------------------------------------------------------------------


def sample_t(batch: int, kind: str, generator) -> torch.Tensor:
    """Rectified-flow times in (0, 1): logit-normal sigmoid(N(0, 1)) or uniform."""
    if kind == "logit-normal":
        return torch.sigmoid(torch.randn(batch, generator=generator))
    if kind == "uniform":
        return torch.rand(batch, generator=generator)
    raise ValueError(f"timesteps must be 'logit-normal' or 'uniform', got {kind!r}")


def flow_loss(pipe, x0, captions, t, noise, max_sequence_length):
    """MSE between the transformer's output and v = eps - x0 at x_t = (1 - t) x0 + t eps, as FluxPipeline calls it.

    ``x0``: scaled latents (B, C, h, w); ``t``: (B,) in [0, 1]; ``noise``: like ``x0``.
    """
    b, c, h, w = x0.shape
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    target = noise - x0
    packed = pipe._pack_latents(xt, b, c, h, w)
    target = pipe._pack_latents(target, b, c, h, w)
    img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, x0.device, x0.dtype)
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(
        captions, prompt_2=None, device=x0.device, max_sequence_length=max_sequence_length
    )
    pred = pipe.transformer(
        hidden_states=packed,
        timestep=t,  # FluxPipeline passes timestep / 1000; the transformer multiplies by 1000
        guidance=None,
        pooled_projections=pooled,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    return F.mse_loss(pred, target)


# --- training ----------------------------------------------------------------------------------------------------


def train(
    out,
    minutes: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    images: int = 8192,
    image_size: int = 32,
    batch: int = 32,
    lr: float = 1e-3,
    vae_steps: int | None = None,
    vae_fraction: float = 0.12,
    vae_lr: float = 2e-3,
    kl_weight: float = 1e-4,
    timesteps: str = "logit-normal",
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    freeze_text: bool = False,
    ema_decay: float = 0.999,
    save_every: float | None = None,
    vae_channels=(16, 32),
    threads: int | None = 1,
    print_every: int = 50,
    log=print,
) -> dict:
    """Both stages, then save into ``out``; returns the training log (loss curves, times, sizes)."""
    from k_diffusing.embedded.shapes import dataset

    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps")
    if timesteps not in ("logit-normal", "uniform"):
        raise ValueError(f"timesteps must be 'logit-normal' or 'uniform', got {timesteps!r}")
    if threads:
        torch.set_num_threads(threads)
    out = pathlib.Path(out)
    start = time.time()
    total = math.inf if minutes is None else 60.0 * minutes
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    pixels, captions = dataset(images, seed=seed, size=image_size)
    pixels = pixels.float().contiguous()
    log(f"dataset: {len(captions)} images {tuple(pixels.shape[1:])}, e.g. {captions[0]!r}")

    components = build_components(seed, image_size, vae_channels)
    pipe = assemble(components)
    vae, transformer = components["vae"], components["transformer"]
    encoders = [components["text_encoder"], components["text_encoder_2"]]
    record = {
        "seed": seed,
        "images": images,
        "batch": batch,
        "timesteps": timesteps,
        "max_sequence_length": max_sequence_length,
        "freeze_text": freeze_text,
        "params": {
            k: sum(p.numel() for p in components[k].parameters())
            for k in ("transformer", "vae", "text_encoder", "text_encoder_2")
        },
    }
    log(f"parameters: {record['params']}")

    # Stage 1: the VAE.
    if vae_steps is None:
        vae_steps = math.inf if minutes is not None else max(1, steps // 2)
    record["vae_loss"] = train_vae(
        vae, pixels, vae_steps, start + vae_fraction * total, batch, vae_lr, kl_weight, gen, log, print_every
    )
    mean, std = encode_latents(vae, pixels)
    shift = float(mean.mean())
    sample_std = float(torch.sqrt((mean**2).mean() - mean.mean() ** 2 + (std**2).mean()))
    vae.register_to_config(scaling_factor=1.0 / sample_std, shift_factor=shift)
    with torch.no_grad():
        rec = vae.decode(mean[:256]).sample
    record["vae_rec_l1"] = float((rec - pixels[:256]).abs().mean())
    record["vae_time_s"] = time.time() - start
    record["vae_scaling_factor"] = vae.config.scaling_factor
    record["vae_shift_factor"] = vae.config.shift_factor
    log(
        f"vae: {len(record['vae_loss'])} steps, reconstruction L1 {record['vae_rec_l1']:.4f}, "
        f"shift_factor {shift:.4f}, scaling_factor {vae.config.scaling_factor:.4f}"
    )
    sf = vae.config.scaling_factor
    mean, std = (mean - shift) * sf, std * sf

    # Stage 2: the transformer (and the text encoders unless frozen).
    trained = [transformer] + ([] if freeze_text else encoders)
    for m in [transformer, *encoders]:
        m.requires_grad_(False)
    for m in trained:
        m.train().requires_grad_(True)
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = EMA(trained, ema_decay)
    max_steps = math.inf if steps is None else steps
    n, history, step, t_train, last_save = len(captions), [], 0, time.time(), time.time()

    def checkpoint():
        for m in trained:
            m.eval()
        ema.swap()
        record.update(transformer_loss=history, transformer_steps=step, train_time_s=time.time() - start)
        save_pipeline(pipe, out, record)
        ema.swap()
        for m in trained:
            m.train()

    while step < max_steps and time.time() - start < total:
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = sample_t(batch, timesteps, gen)
        loss = flow_loss(pipe, x0, [captions[i] for i in idx.tolist()], t, noise, max_sequence_length)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        history.append(loss.item())
        step += 1
        if step % print_every == 0 or step == 1:
            recent = history[-print_every:]
            log(
                f"transformer step {step} loss {sum(recent) / len(recent):.4f} ({time.time() - start:.0f}s, "
                f"{step / (time.time() - t_train):.2f} it/s)"
            )
        if save_every and time.time() - last_save > 60.0 * save_every:
            checkpoint()
            last_save = time.time()
            log(f"checkpoint at step {step} -> {out}")

    checkpoint()
    record["folder_bytes"] = folder_size(out)
    (out / "training_log.json").write_text(json.dumps(record))
    log(f"done: {step} transformer steps in {time.time() - start:.0f}s; saved {out} ({record['folder_bytes'] / 1e6:.1f} MB)")
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (a diffusers FLUX pipeline)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for both stages")
    p.add_argument("--steps", type=int, default=None, help="transformer steps (whichever of minutes/steps first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=8192, help="dataset size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--vae-fraction", type=float, default=0.12, help="share of --minutes for the VAE stage")
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--timesteps", choices=("logit-normal", "uniform"), default="logit-normal")
    p.add_argument("--max-sequence-length", type=int, default=DEFAULT_MAX_SEQUENCE_LENGTH)
    p.add_argument("--freeze-text", action="store_true", help="keep the random text encoders frozen")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--save-every", type=float, default=None, help="minutes between intermediate checkpoints")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--print-every", type=int, default=50)
    a = p.parse_args(argv)
    train(
        a.out,
        minutes=a.minutes,
        steps=a.steps,
        seed=a.seed,
        images=a.images,
        batch=a.batch,
        lr=a.lr,
        vae_steps=a.vae_steps,
        vae_fraction=a.vae_fraction,
        kl_weight=a.kl_weight,
        timesteps=a.timesteps,
        max_sequence_length=a.max_sequence_length,
        freeze_text=a.freeze_text,
        ema_decay=a.ema_decay,
        save_every=a.save_every,
        threads=a.threads,
        print_every=a.print_every,
    )


if __name__ == "__main__":
    main()
