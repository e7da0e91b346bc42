"""What :mod:`k_diffusing.embedded.train_sdxl` and :mod:`k_diffusing.embedded.train_flux` share.

Both trainers run the same two stages on :func:`k_diffusing.embedded.shapes.dataset`:

1. :func:`vae_stage` trains the ``AutoencoderKL`` alone (L1 + L2 reconstruction + ``kl_weight`` KL) and sets its
   ``scaling_factor`` to 1 / std of the training latents, as SD does (FLUX also sets ``shift_factor`` to their mean);
2. :func:`denoiser_stage` freezes the VAE and trains the denoiser (and the text encoders unless frozen) with AdamW,
   gradient clipping at 1 and an EMA of the trained weights (what gets saved), on a per-model ``batch_loss(idx)``:
   SDXL's eps objective, FLUX's rectified-flow objective.

The budget is ``--minutes`` of wall clock for both stages (``--vae-fraction`` of it for stage 1) and/or a number of
steps per stage, whichever ends first; only a step budget makes a run repeatable bit for bit (one thread, fixed
seed). The output folder is rewritten every ``--save-every`` minutes, atomically (written beside it and swapped
in), so checkpoints can be sampled while training runs; ``training_log.json`` in it holds the loss curves.
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


def shapes_vae(vae_channels, latent_channels: int, image_size: int, **config):
    """The trainers' ``AutoencoderKL``: one block per entry of ``vae_channels`` (vae_scale_factor
    ``2 ** (len - 1)``), one layer each, 8 norm groups; ``config`` adds model-specific settings."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=tuple(vae_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=image_size,
        **config,
    )


def prepare(seed: int, images: int, image_size: int, threads: int | None, log):
    """Seed everything, set the thread count and make the dataset: returns (pixels, captions, generator)."""
    from k_diffusing.embedded.shapes import dataset

    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pixels, captions = dataset(images, seed=seed, size=image_size)
    pixels = pixels.float().contiguous()
    log(f"dataset: {len(captions)} images {tuple(pixels.shape[1:])}, e.g. {captions[0]!r}")
    return pixels, captions, gen


def report(log, label, history, every, since):
    """Log the mean loss of the last ``every`` steps after the first step and every ``every`` steps."""
    step = len(history)
    if step % every == 0 or step == 1:
        recent, elapsed = history[-every:], time.time() - since
        log(f"{label} step {step} loss {sum(recent) / len(recent):.4f} ({elapsed:.0f}s, {step / elapsed:.2f} it/s)")


def train_vae(vae, images, steps, deadline, batch, lr, kl_weight, generator, log, print_every):
    """Stage 1's loop: L1 + L2 reconstruction + kl_weight * KL (per element); returns the loss history."""
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    n, history, step, t0 = len(images), [], 0, time.time()
    while step < steps and time.time() < deadline:
        x = images[torch.randint(0, n, (batch,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        rec = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        step += 1
        report(log, "vae", history, print_every, t0)
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


def vae_stage(
    vae, pixels, *, steps, deadline, batch, lr, kl_weight, gen, record, log, print_every, shift: bool, start
):
    """Stage 1: train the VAE, set its latent scaling (and ``shift_factor`` if ``shift``), fill ``record``.

    Returns the training latents' posterior mean and std in the pipeline's units, ``(z - shift) * scaling_factor``.
    The scale is 1 / the std of posterior samples (mean + std * noise) over the whole set.
    """
    record["vae_loss"] = train_vae(vae, pixels, steps, deadline, batch, lr, kl_weight, gen, log, print_every)
    mean, std = encode_latents(vae, pixels)
    offset = float(mean.mean()) if shift else 0.0
    sample_std = float(torch.sqrt((mean**2).mean() - mean.mean() ** 2 + (std**2).mean()))
    vae.register_to_config(scaling_factor=1.0 / sample_std)
    if shift:
        vae.register_to_config(shift_factor=offset)
        record["vae_shift_factor"] = offset
    with torch.no_grad():
        rec = vae.decode(mean[:256]).sample
    record["vae_rec_l1"] = float((rec - pixels[:256]).abs().mean())
    record["vae_time_s"] = time.time() - start
    scale = record["vae_scaling_factor"] = vae.config.scaling_factor
    log(
        f"vae: {len(record['vae_loss'])} steps, reconstruction L1 {record['vae_rec_l1']:.4f} (in [-1,1]), "
        f"latent std {sample_std:.3f} -> scaling_factor {scale:.4f}" + (f", shift_factor {offset:.4f}" if shift else "")
    )
    return (mean - offset) * scale, std * scale


def denoiser_stage(
    pipe, trained, batch_loss, *, n, batch, steps, deadline, lr, ema_decay, gen, out, record, save_every, log,
    print_every, label, start,
):
    """Stage 2: AdamW (weight decay 1e-2) + clipping + EMA on ``batch_loss(idx)`` for random batches of ``n`` items.

    ``trained``: the modules to train (all others must already be frozen); ``label`` names them in the log and in
    ``record`` (``{label}_loss``, ``{label}_steps``). Checkpoints (EMA weights) go to ``out`` every ``save_every``
    minutes and at the end. Returns ``record`` with ``folder_bytes`` added.
    """
    for m in trained:
        m.train().requires_grad_(True)
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = EMA(trained, ema_decay)
    max_steps = math.inf if steps is None else steps
    history, step, t_train, last_save = [], 0, time.time(), time.time()

    def checkpoint():
        for m in trained:
            m.eval()
        ema.swap()
        record.update({f"{label}_loss": history, f"{label}_steps": step, "train_time_s": time.time() - start})
        save_pipeline(pipe, out, record)
        ema.swap()
        for m in trained:
            m.train()

    while step < max_steps and time.time() < deadline:
        loss = batch_loss(torch.randint(0, n, (batch,), generator=gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        history.append(loss.item())
        step += 1
        report(log, label, history, print_every, t_train)
        if save_every and time.time() - last_save > 60.0 * save_every:
            checkpoint()
            last_save = time.time()
            log(f"checkpoint at step {step} -> {out}")

    checkpoint()
    for m in trained:
        m.eval()
    record["folder_bytes"] = folder_size(out)
    (pathlib.Path(out) / "training_log.json").write_text(json.dumps(record))
    log(f"done: {step} {label} steps in {time.time() - start:.0f}s; saved {out} ({record['folder_bytes'] / 1e6:.1f} MB)")
    return record


def budget(minutes, steps, vae_steps, vae_fraction, start):
    """(vae_steps, vae_deadline, deadline) from the budget options; raises if neither minutes nor steps is given."""
    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps")
    total = math.inf if minutes is None else 60.0 * minutes
    if vae_steps is None:
        vae_steps = math.inf if minutes is not None else max(1, steps // 2)
    return vae_steps, start + vae_fraction * total, start + total


def common_arguments(description: str, model: str, denoiser: str, steps: int) -> argparse.ArgumentParser:
    """The command-line options both trainers take; each adds its own objective's options. The defaults
    (``steps`` denoiser steps, 500 VAE steps, seed 0) are the recipe of the committed embedded model."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, help=f"output folder (a diffusers {model} pipeline)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for both stages")
    p.add_argument(
        "--steps", type=int, default=steps, help=f"{denoiser} steps (stops at whichever of minutes/steps first)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=8192, help="dataset size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vae-steps", type=int, default=500)
    p.add_argument("--vae-fraction", type=float, default=0.12, help="share of --minutes for the VAE stage")
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--freeze-text", action="store_true", help="keep the random text encoders frozen")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--save-every", type=float, default=None, help="minutes between intermediate checkpoints")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--print-every", type=int, default=50)
    return p


COMMON_OPTIONS = (
    "minutes", "steps", "seed", "images", "batch", "lr", "vae_steps", "vae_fraction", "kl_weight", "freeze_text",
    "ema_decay", "save_every", "threads", "print_every",
)


def common_values(args) -> dict:
    """The parsed :func:`common_arguments` as keyword arguments of the trainers' ``train``."""
    return {name: getattr(args, name) for name in COMMON_OPTIONS}
