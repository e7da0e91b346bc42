"""Train a tiny SDXL-architecture pipeline on procedural captioned shapes, on CPU, and save it for KSDXLPipeline.

Usage: ``python -m k_diffusing.embedded.train_sdxl --out DIR [--minutes M] [--steps N] [--seed S]``.

Components (all diffusers/transformers classes, so ``KSDXLPipeline.from_pretrained(DIR)`` loads them offline):
two CLIP text encoders (hidden 32, 5 layers, byte-level tokenizers from :mod:`k_diffusing.testing.tokenizers`;
``text_encoder_2`` projects the pooled output to 32), an ``AutoencoderKL`` (two blocks: vae_scale_factor 2,
4 latent channels, 32x32 images -> 4x16x16 latents) and a ``UNet2DConditionModel`` with SDXL's ``text_time``
added conditioning (cross-attention 64 = the two encoders' penultimate states concatenated, added embedding
32 pooled + 6 time ids x 8 features = 80).

Stage 1 trains the VAE alone (L1 + L2 reconstruction + ``kl_weight`` KL) and sets ``scaling_factor`` to
1 / std of the training latents, as SD does. Stage 2 freezes the VAE and trains the UNet with SDXL's objective:
eps prediction on the scaled-linear DDPM table (``DDPMScheduler.add_noise`` with the betas of
:func:`k_diffusing.testing.tiny.sdxl_scheduler_config`), t uniform in 0..999, MSE. Conditioning is computed by the
pipeline's own ``encode_prompt`` and ``_get_add_time_ids`` (original = target = image size, crop (0, 0)), i.e.
exactly what ``StableDiffusionXLPipeline.__call__`` feeds the UNet at inference.

Text encoders: trained jointly with the UNet by default (``--freeze-text`` keeps them random): the vocabulary is
closed and small, and random byte-level encoders give the UNet hard-to-separate caption features.

Classifier-free guidance dropout (``--uncond-prob``, 10%): with ``--uncond zeros`` (default) the dropped rows get
zero prompt and pooled embeddings, which is what the saved pipeline uses as the negative at inference
(``force_zeros_for_empty_prompt=True``, as SDXL was trained); with ``--uncond empty`` the caption is replaced by ""
and the pipeline is saved with ``force_zeros_for_empty_prompt=False`` so that inference encodes "" too.

Budget: ``--minutes`` of wall clock for both stages (``--vae-fraction`` of it for stage 1) and/or ``--steps``
(stage 2) / ``--vae-steps``; whichever ends first. AdamW, batch 32, an EMA of the trained weights (saved),
deterministic from ``--seed`` (one thread by default). The folder is rewritten every ``--save-every`` minutes
(atomically: written beside it and swapped in) so intermediate checkpoints can be sampled while training runs.
``training_log.json`` in the folder holds the loss curves.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import time

import torch
import torch.nn.functional as F

TEXT_HIDDEN_SIZE = 32
PROJECTION_DIM = 32
ADDITION_TIME_EMBED_DIM = 8
LATENT_CHANNELS = 4


# --- components --------------------------------------------------------------------------------------------------


def build_components(
    seed: int = 0, image_size: int = 32, unet_channels=(32, 64), vae_channels=(16, 32)
) -> dict:
    """Fresh, deterministic components of ``StableDiffusionXLPipeline`` (fp32, CPU, train mode off)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from k_diffusing.testing.tiny import clip_text_config, sdxl_scheduler_config, seeded
    from k_diffusing.testing.tokenizers import clip_tokenizer

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer()
    scale = 2 ** (len(vae_channels) - 1)
    with seeded(seed):
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
        )
    with seeded(seed + 1):
        unet = UNet2DConditionModel(
            sample_size=image_size // scale,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            down_block_types=("CrossAttnDownBlock2D",) * len(unet_channels),
            up_block_types=("CrossAttnUpBlock2D",) * len(unet_channels),
            block_out_channels=tuple(unet_channels),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=tuple(c // 16 for c in unet_channels),
            transformer_layers_per_block=1,
            use_linear_projection=True,
            cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
            addition_embed_type="text_time",
            addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=PROJECTION_DIM
            + 6 * ADDITION_TIME_EMBED_DIM,
        )
    with seeded(seed + 2):
        text_encoder = CLIPTextModel(clip_text_config(tokenizer))
    with seeded(seed + 3):
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": EulerDiscreteScheduler.from_config(sdxl_scheduler_config()),
        "image_encoder": None,
        "feature_extractor": None,
    }


def assemble(components: dict, force_zeros_for_empty_prompt: bool = True):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        **components,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- helpers -----------------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of parameters, decay warmed up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, modules, decay: float):
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def swap(self):
        """Exchange live and averaged weights (call twice to restore)."""
        for p, s in zip(self.params, self.shadow):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def save_pipeline(pipe, out: pathlib.Path, log: dict) -> None:
    """save_pretrained into a sibling folder, then swap it in (readers never see half a folder)."""
    out = pathlib.Path(out)
    tmp = out.with_name(out.name + ".saving")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training_log.json").write_text(json.dumps(log))
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def folder_size(path) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


# --- stages ------------------------------------------------------------------------------------------------------


def train_vae(
    vae, images, steps, deadline, batch, lr, kl_weight, generator, log, print_every
):
    """Stage 1: L1 + L2 reconstruction + kl_weight * KL (per element); returns the loss history."""
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    n, history, step, t0 = len(images), [], 0, time.time()
    while step < steps and time.time() < deadline:
        x = images[torch.randint(0, n, (batch,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=generator
        )
        rec = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        step += 1
        if step % print_every == 0 or step == 1:
            log(
                f"vae step {step} loss {sum(history[-print_every:]) / len(history[-print_every:]):.4f} "
                f"({time.time() - t0:.0f}s)"
            )
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def encode_latents(vae, images, batch=256):
    """Posterior mean and std of every image, unscaled."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        d = vae.encode(images[i : i + batch]).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


def conditioning(pipe, captions, image_size, drop, uncond):
    """SDXL's UNet conditioning for ``captions`` as ``__call__`` builds it; rows in ``drop`` unconditional."""
    if uncond == "empty":
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        captions,
        device=torch.device("cpu"),
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
    )
    if uncond == "zeros":
        keep = (~drop).to(prompt_embeds.dtype)
        prompt_embeds = prompt_embeds * keep[:, None, None]
        pooled = pooled * keep[:, None]
    time_ids = pipe._get_add_time_ids(
        (image_size, image_size),
        (0, 0),
        (image_size, image_size),
        dtype=prompt_embeds.dtype,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    ).repeat(len(captions), 1)
    return prompt_embeds, {"text_embeds": pooled, "time_ids": time_ids}


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
    uncond: str = "zeros",
    uncond_prob: float = 0.1,
    freeze_text: bool = False,
    ema_decay: float = 0.999,
    save_every: float | None = None,
    unet_channels=(32, 64),
    vae_channels=(16, 32),
    threads: int | None = 1,
    print_every: int = 50,
    log=print,
) -> dict:
    """Both stages, then save into ``out``; returns the training log (loss curves, times, sizes)."""
    from diffusers import DDPMScheduler

    from k_diffusing.embedded.shapes import dataset
    from k_diffusing.testing.tiny import sdxl_scheduler_config

    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps")
    if uncond not in ("zeros", "empty"):
        raise ValueError(f"uncond must be 'zeros' or 'empty', got {uncond!r}")
    if threads:
        torch.set_num_threads(threads)
    out = pathlib.Path(out)
    start = time.time()
    total = math.inf if minutes is None else 60.0 * minutes
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    pixels, captions = dataset(images, seed=seed, size=image_size)
    pixels = pixels.float().contiguous()
    log(
        f"dataset: {len(captions)} images {tuple(pixels.shape[1:])}, e.g. {captions[0]!r} "
        f"({time.time() - start:.0f}s)"
    )

    components = build_components(seed, image_size, unet_channels, vae_channels)
    pipe = assemble(components, force_zeros_for_empty_prompt=(uncond == "zeros"))
    vae, unet = components["vae"], components["unet"]
    encoders = [components["text_encoder"], components["text_encoder_2"]]
    record = {
        "seed": seed,
        "images": images,
        "batch": batch,
        "uncond": uncond,
        "freeze_text": freeze_text,
        "params": {
            k: sum(p.numel() for p in components[k].parameters())
            for k in ("unet", "vae", "text_encoder", "text_encoder_2")
        },
    }
    log(f"parameters: {record['params']}")

    # Stage 1: the VAE.
    vae_deadline = start + vae_fraction * total
    if vae_steps is None:
        vae_steps = math.inf if minutes is not None else max(1, steps // 2)
    record["vae_loss"] = train_vae(
        vae,
        pixels,
        vae_steps,
        vae_deadline,
        batch,
        vae_lr,
        kl_weight,
        gen,
        log,
        print_every,
    )
    mean, std = encode_latents(vae, pixels)
    sample_std = float(
        torch.sqrt((mean**2).mean() - mean.mean() ** 2 + (std**2).mean())
    )
    vae.register_to_config(scaling_factor=1.0 / sample_std)
    with torch.no_grad():
        rec = vae.decode(mean[:256]).sample
    record["vae_rec_l1"] = float((rec - pixels[:256]).abs().mean())
    record["vae_time_s"] = time.time() - start
    log(
        f"vae: {len(record['vae_loss'])} steps, reconstruction L1 {record['vae_rec_l1']:.4f} (in [-1,1]), "
        f"latent std {sample_std:.3f} -> scaling_factor {vae.config.scaling_factor:.4f}"
    )
    sf = record["vae_scaling_factor"] = vae.config.scaling_factor
    mean, std = mean * sf, std * sf

    # Stage 2: the UNet (and the text encoders unless frozen).
    noise_scheduler = DDPMScheduler.from_config(sdxl_scheduler_config())
    trained = [unet] + ([] if freeze_text else encoders)
    for m in [unet, *encoders]:
        m.requires_grad_(False)
    for m in trained:
        m.train().requires_grad_(True)
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = EMA(trained, ema_decay)
    max_steps = math.inf if steps is None else steps
    n, history, step, t_unet = len(captions), [], 0, time.time()
    last_save = time.time()

    def checkpoint():
        for m in trained:
            m.eval()
        ema.swap()
        record.update(
            unet_loss=history, unet_steps=step, train_time_s=time.time() - start
        )
        save_pipeline(pipe, out, record)
        ema.swap()
        for m in trained:
            m.train()

    while step < max_steps and time.time() - start < total:
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (batch,), generator=gen
        )
        xt = noise_scheduler.add_noise(x0, noise, t)
        drop = torch.rand(batch, generator=gen) < uncond_prob
        with torch.set_grad_enabled(not freeze_text):
            embeds, added = conditioning(
                pipe, [captions[i] for i in idx.tolist()], image_size, drop, uncond
            )
        pred = unet(xt, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        history.append(loss.item())
        step += 1
        if step % print_every == 0 or step == 1:
            recent = history[-print_every:]
            rate = step / (time.time() - t_unet)
            log(
                f"unet step {step} loss {sum(recent) / len(recent):.4f} ({time.time() - start:.0f}s, "
                f"{rate:.2f} it/s)"
            )
        if save_every and time.time() - last_save > 60.0 * save_every:
            checkpoint()
            last_save = time.time()
            log(f"checkpoint at step {step} -> {out}")

    checkpoint()
    record["folder_bytes"] = folder_size(out)
    (out / "training_log.json").write_text(json.dumps(record))
    log(
        f"done: {step} unet steps in {time.time() - start:.0f}s; saved {out} ({record['folder_bytes'] / 1e6:.1f} MB)"
    )
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", required=True, help="output folder (a diffusers SDXL pipeline)"
    )
    p.add_argument(
        "--minutes", type=float, default=None, help="wall-clock budget for both stages"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="UNet steps (stops at whichever of minutes/steps first)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=8192, help="dataset size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument(
        "--vae-fraction",
        type=float,
        default=0.12,
        help="share of --minutes for the VAE stage",
    )
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--uncond", choices=("zeros", "empty"), default="zeros")
    p.add_argument("--uncond-prob", type=float, default=0.1)
    p.add_argument(
        "--freeze-text",
        action="store_true",
        help="keep the random text encoders frozen",
    )
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument(
        "--save-every",
        type=float,
        default=None,
        help="minutes between intermediate checkpoints",
    )
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
        uncond=a.uncond,
        uncond_prob=a.uncond_prob,
        freeze_text=a.freeze_text,
        ema_decay=a.ema_decay,
        save_every=a.save_every,
        threads=a.threads,
        print_every=a.print_every,
    )


if __name__ == "__main__":
    main()
