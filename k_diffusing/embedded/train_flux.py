"""Train a tiny FLUX-architecture pipeline on procedural captioned shapes, on CPU, and save it for KFluxPipeline.

Usage: ``python -m k_diffusing.embedded.train_flux --out DIR [--steps N] [--minutes M] [--seed S]``; the defaults
(7500 transformer steps, 500 VAE steps, seed 0, one thread) are the recipe of the committed embedded model.

Components (diffusers/transformers classes, so ``KFluxPipeline.from_pretrained(DIR)`` loads them offline): CLIP
(hidden 32, pooled -> ``pooled_projection_dim``) and T5 (d_model 32 -> ``joint_attention_dim``) text encoders with
the local tokenizers of :mod:`k_diffusing.testing.tiny_flux`, an ``AutoencoderKL`` with two blocks
(vae_scale_factor 2, ``LATENT_CHANNELS`` = 4 latent channels, no quant convs as FLUX.1's VAE; 32x32 images ->
4x16x16 latents -> 64 packed tokens of 16 features) and a ``FluxTransformer2DModel`` (``in_channels`` 16 = 4 x
latent channels; by default ``--transformer-size 2 4 4``: 2 double-stream + 4 single-stream blocks, 4 heads of 16,
rotary axes (4, 4, 8), 0.59 M parameters; ``guidance_embeds=False``: schnell-style, the pipeline passes
``guidance=None``).

Stage 1 trains the VAE alone and then sets FLUX-style
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

Budget, AdamW, EMA, checkpoints and the training log: :mod:`k_diffusing.embedded.training`, shared with the SDXL
trainer. The dataset is :func:`k_diffusing.embedded.shapes.dataset`.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from k_diffusing.embedded.training import (
    budget,
    common_arguments,
    common_values,
    denoiser_stage,
    prepare,
    shapes_vae,
    vae_stage,
)

LATENT_CHANNELS = 4
IN_CHANNELS = 4 * LATENT_CHANNELS  # 2x2 packed patches
DEFAULT_MAX_SEQUENCE_LENGTH = 48  # the byte-level T5 tokenizer gives the shapes captions 27..40 tokens


# --- components --------------------------------------------------------------------------------------------------


def build_components(
    seed: int = 0, image_size: int = 32, vae_channels=(16, 32), transformer_size=(2, 4, 4)
) -> dict:
    """Fresh, deterministic components of ``FluxPipeline`` (fp32, CPU, eval mode)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from k_diffusing.testing.tiny import seeded
    from k_diffusing.testing.tiny_flux import (
        flux_scheduler_config,
        tiny_flux_components,
        tiny_flux_transformer,
    )

    # Text encoders and tokenizers exactly as the tiny FLUX test pipeline builds them (CLIP seed + 2, T5 seed + 3).
    text = tiny_flux_components(guidance_embeds=False, seed=seed)
    layers, single_layers, heads = transformer_size
    transformer = tiny_flux_transformer(
        guidance_embeds=False,
        seed=seed,
        in_channels=IN_CHANNELS,
        num_layers=layers,
        num_single_layers=single_layers,
        num_attention_heads=heads,
    )
    with seeded(seed + 1):
        vae = shapes_vae(
            vae_channels,
            LATENT_CHANNELS,
            image_size,
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
    transformer_size=(2, 4, 4),
    threads: int | None = 1,
    print_every: int = 50,
    log=print,
) -> dict:
    """Both stages, then save into ``out``; returns the training log (loss curves, times, sizes)."""
    if timesteps not in ("logit-normal", "uniform"):
        raise ValueError(f"timesteps must be 'logit-normal' or 'uniform', got {timesteps!r}")
    start = time.time()
    vae_steps, vae_deadline, deadline = budget(minutes, steps, vae_steps, vae_fraction, start)
    pixels, captions, gen = prepare(seed, images, image_size, threads, log)

    components = build_components(seed, image_size, vae_channels, transformer_size)
    pipe = assemble(components)
    # Saved with the pipeline, so samplers know how many T5 tokens the transformer was trained on.
    components["tokenizer_2"].model_max_length = max_sequence_length
    vae, transformer = components["vae"], components["transformer"]
    encoders = [components["text_encoder"], components["text_encoder_2"]]
    record = {
        "seed": seed,
        "images": images,
        "batch": batch,
        "timesteps": timesteps,
        "max_sequence_length": max_sequence_length,
        "freeze_text": freeze_text,
        "transformer_size": list(transformer_size),
        "params": {
            k: sum(p.numel() for p in components[k].parameters())
            for k in ("transformer", "vae", "text_encoder", "text_encoder_2")
        },
    }
    log(f"parameters: {record['params']}")

    mean, std = vae_stage(
        vae, pixels, steps=vae_steps, deadline=vae_deadline, batch=batch, lr=vae_lr, kl_weight=kl_weight, gen=gen,
        record=record, log=log, print_every=print_every, shift=True, start=start,
    )

    for m in [transformer, *encoders]:
        m.requires_grad_(False)

    def batch_loss(idx):
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = sample_t(batch, timesteps, gen)
        return flow_loss(pipe, x0, [captions[i] for i in idx.tolist()], t, noise, max_sequence_length)

    return denoiser_stage(
        pipe, [transformer] + ([] if freeze_text else encoders), batch_loss, n=len(captions), batch=batch,
        steps=steps, deadline=deadline, lr=lr, ema_decay=ema_decay, gen=gen, out=out, record=record,
        save_every=save_every, log=log, print_every=print_every, label="transformer", start=start,
    )


def main(argv=None):
    p = common_arguments(__doc__.split("\n\n")[0], "FLUX", "transformer", steps=7500)
    p.add_argument("--timesteps", choices=("logit-normal", "uniform"), default="logit-normal")
    p.add_argument("--max-sequence-length", type=int, default=DEFAULT_MAX_SEQUENCE_LENGTH)
    p.add_argument(
        "--transformer-size",
        type=int,
        nargs=3,
        default=(2, 4, 4),
        metavar=("DOUBLE", "SINGLE", "HEADS"),
        help="double-stream blocks, single-stream blocks, attention heads of 16",
    )
    a = p.parse_args(argv)
    train(
        a.out,
        timesteps=a.timesteps,
        max_sequence_length=a.max_sequence_length,
        transformer_size=tuple(a.transformer_size),
        **common_values(a),
    )


if __name__ == "__main__":
    main()
