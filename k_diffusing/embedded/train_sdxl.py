"""Train a tiny SDXL-architecture pipeline on procedural captioned shapes, on CPU, and save it for KSDXLPipeline.

Usage: ``python -m k_diffusing.embedded.train_sdxl --out DIR [--steps N] [--minutes M] [--seed S]``; the defaults
(4500 UNet steps, 500 VAE steps, seed 0, one thread) are the recipe of the committed embedded model.

Components (all diffusers/transformers classes, so ``KSDXLPipeline.from_pretrained(DIR)`` loads them offline):
two CLIP text encoders (hidden 32, 5 layers; byte-level BPE tokenizers from :mod:`k_diffusing.testing.tokenizers`
with merges that keep each of the captions' 22 words whole;
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

Budget, AdamW, EMA, checkpoints and the training log: :mod:`k_diffusing.embedded.training`, shared with the FLUX
trainer. Batch 32, deterministic from ``--seed`` with a step budget (one thread by default).
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

TEXT_HIDDEN_SIZE = 32
PROJECTION_DIM = 32
ADDITION_TIME_EMBED_DIM = 8
LATENT_CHANNELS = 4


# --- components --------------------------------------------------------------------------------------------------


def build_components(
    seed: int = 0, image_size: int = 32, unet_channels=(32, 64), vae_channels=(16, 32)
) -> dict:
    """Fresh, deterministic components of ``StableDiffusionXLPipeline`` (fp32, CPU, train mode off)."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from k_diffusing.testing.tiny import clip_text_config, sdxl_scheduler_config, seeded
    from k_diffusing.testing.tokenizers import clip_tokenizer

    from k_diffusing.embedded.shapes import caption_words

    # Word-level BPE merges for the captions' closed vocabulary: each word is one token.
    tokenizer, tokenizer_2 = clip_tokenizer(words=caption_words()), clip_tokenizer(words=caption_words())
    scale = 2 ** (len(vae_channels) - 1)
    with seeded(seed):
        vae = shapes_vae(vae_channels, LATENT_CHANNELS, image_size)
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


# --- objective -----------------------------------------------------------------------------------------------------


def loss_weights(alphas_cumprod: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-timestep weights of the eps MSE, normalised to mean 1 over the timesteps.

    ``"uniform"``: 1 (the plain eps loss). ``"v"``: ``1 + sigma_t^2`` with ``sigma_t^2 = (1 - abar_t) / abar_t``,
    which makes the eps MSE equal to the v-prediction MSE up to a constant (Salimans & Ho 2022, arXiv:2202.00512,
    Sec. 4: ``|v - v_hat|^2 = |eps - eps_hat|^2 / abar_t``; "SNR + 1" weighting in Hang et al. 2023,
    arXiv:2303.09556). The network still predicts eps (the saved scheduler says ``prediction_type="epsilon"``); the
    weighting only makes it accurate at high noise, where the denoised estimate ``x - sigma * eps`` multiplies the
    eps error by sigma (up to 14.6 on SDXL's table) and a tiny model's colours and layout otherwise drift.
    """
    if weighting == "uniform":
        return torch.ones_like(alphas_cumprod)
    w = 1.0 / alphas_cumprod  # = 1 + sigma^2
    return w / w.mean()


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
    weighting: str = "v",
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

    from k_diffusing.testing.tiny import sdxl_scheduler_config

    if uncond not in ("zeros", "empty"):
        raise ValueError(f"uncond must be 'zeros' or 'empty', got {uncond!r}")
    if weighting not in ("v", "uniform"):
        raise ValueError(f"weighting must be 'v' or 'uniform', got {weighting!r}")
    start = time.time()
    vae_steps, vae_deadline, deadline = budget(minutes, steps, vae_steps, vae_fraction, start)
    pixels, captions, gen = prepare(seed, images, image_size, threads, log)

    components = build_components(seed, image_size, unet_channels, vae_channels)
    pipe = assemble(components, force_zeros_for_empty_prompt=(uncond == "zeros"))
    vae, unet = components["vae"], components["unet"]
    encoders = [components["text_encoder"], components["text_encoder_2"]]
    record = {
        "seed": seed,
        "images": images,
        "batch": batch,
        "uncond": uncond,
        "weighting": weighting,
        "freeze_text": freeze_text,
        "params": {
            k: sum(p.numel() for p in components[k].parameters())
            for k in ("unet", "vae", "text_encoder", "text_encoder_2")
        },
    }
    log(f"parameters: {record['params']}")

    mean, std = vae_stage(
        vae, pixels, steps=vae_steps, deadline=vae_deadline, batch=batch, lr=vae_lr, kl_weight=kl_weight, gen=gen,
        record=record, log=log, print_every=print_every, shift=False, start=start,
    )

    noise_scheduler = DDPMScheduler.from_config(sdxl_scheduler_config())
    weights = loss_weights(noise_scheduler.alphas_cumprod, weighting)
    for m in [unet, *encoders]:
        m.requires_grad_(False)

    def eps_loss(idx):
        """SDXL's objective: MSE of the predicted noise at a uniform DDPM timestep, weighted per timestep
        (:func:`loss_weights`); 10% unconditional rows."""
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=gen)
        xt = noise_scheduler.add_noise(x0, noise, t)
        drop = torch.rand(batch, generator=gen) < uncond_prob
        with torch.set_grad_enabled(not freeze_text):
            embeds, added = conditioning(pipe, [captions[i] for i in idx.tolist()], image_size, drop, uncond)
        pred = unet(xt, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        return (weights[t] * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()

    return denoiser_stage(
        pipe, [unet] + ([] if freeze_text else encoders), eps_loss, n=len(captions), batch=batch, steps=steps,
        deadline=deadline, lr=lr, ema_decay=ema_decay, gen=gen, out=out, record=record, save_every=save_every,
        log=log, print_every=print_every, label="unet", start=start,
    )


def main(argv=None):
    p = common_arguments(__doc__.split("\n\n")[0], "SDXL", "UNet", steps=4500)
    p.add_argument("--uncond", choices=("zeros", "empty"), default="zeros")
    p.add_argument("--uncond-prob", type=float, default=0.1)
    p.add_argument(
        "--weighting", choices=("v", "uniform"), default="v", help="per-timestep weight of the eps loss"
    )
    a = p.parse_args(argv)
    train(a.out, uncond=a.uncond, uncond_prob=a.uncond_prob, weighting=a.weighting, **common_values(a))


if __name__ == "__main__":
    main()
