"""Tiny components for the zoo's transformer and video families (PixArt, ...), at diffusers' fast-test sizes.

Each builder takes the scheduler and returns the pipeline's constructor keywords: random, deterministic (seeded),
fp32, eval-mode models built from configs, with the offline tokenizers of :mod:`.tokenizers`. The sizes are those of
diffusers' own ``get_dummy_components`` for the pipeline (``tests/pipelines/<name>/test_*.py``), named in each
docstring, except where a size the zoo shares (the T5 width, the image side) had to match.
"""

from __future__ import annotations

import string

import torch

from diffusers import (
    AutoencoderDC,
    AutoencoderKLCogVideoX,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    CogVideoXTransformer3DModel,
    HeliosTransformer3DModel,
    LTXVideoTransformer3DModel,
    PixArtTransformer2DModel,
    PriorTransformer,
    SanaTransformer2DModel,
    UNet2DConditionModel,
    VQModel,
)
from diffusers.pipelines.kandinsky.text_encoder import MCLIPConfig, MultilingualCLIP
from diffusers.pipelines.shap_e import ShapERenderer
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizerFast,
    T5EncoderModel,
    XLMRobertaTokenizerFast,
)

from .tiny import PROJECTION_DIM, TEXT_HIDDEN_SIZE, clip_text_config, seeded, tiny_sdxl_vae
from .tiny_flux import T5_D_MODEL, _t5_config
from .tokenizers import clip_tokenizer, t5_tokenizer, t5_vocab

SEED = 0  # component seeds: SEED, SEED + 1, ... one per model, as in zoo.py
SD15_VAE_SCALING_FACTOR = 0.18215  # SD 1.5's vae/config.json (PixArt-alpha reuses SD's VAE)


def seeded_eval(seed: int, make):
    """``make()`` built right after ``torch.manual_seed(seed)`` (the caller's RNG untouched), in eval mode."""
    with seeded(seed):
        return make().eval()


def sd_vae():
    """The zoo's two-block SD VAE (:func:`~.tiny.tiny_sdxl_vae`, seed SEED + 1, ``vae_scale_factor`` 2) with SD 1.5's
    scaling factor (SD 1.5, PixArt-alpha and Marigold use SD's VAE)."""
    vae = tiny_sdxl_vae(SEED + 1)
    vae.register_to_config(scaling_factor=SD15_VAE_SCALING_FACTOR)
    return vae


def t5_encoder(seed: int):
    """A tiny T5 encoder (width :data:`~.tiny_flux.T5_D_MODEL`) and its offline tokenizer."""
    tokenizer = t5_tokenizer()
    return tokenizer, seeded_eval(seed, lambda: T5EncoderModel(_t5_config(tokenizer)))


def pixart(scheduler, sample_size: int) -> dict:
    """PixArt-alpha's layout at diffusers' ``tests/pipelines/pixart_alpha`` sizes: a two-layer
    PixArtTransformer2DModel (3 heads of 8, patch 2, ``ada_norm_single``, learned sigma: 8 output channels for 4
    latent ones, which the pipeline splits off), captions from a T5 of width 32, and the zoo's two-block SD VAE
    (``vae_scale_factor`` 2) with SD 1.5's scaling factor. ``sample_size`` is the latent side."""
    tokenizer, text_encoder = t5_encoder(SEED + 2)
    transformer = seeded_eval(
        SEED,
        lambda: PixArtTransformer2DModel(
            sample_size=sample_size,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=T5_D_MODEL,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        ),
    )
    vae = sd_vae()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


COGVIDEOX_SIZE = 16  # pixels; diffusers' fast test: "cannot reduce because convolution kernel becomes bigger"
COGVIDEOX_NUM_FRAMES = 8  # (8 - 1) // 4 + 1 = 2 latent frames
COGVIDEOX_TEXT_LENGTH = 16  # the transformer's max_text_seq_length = the pipeline's max_sequence_length
LTX_NUM_FRAMES = 9  # 8 k + 1 frames: 3 latent frames with the VAE's temporal factor 4
SHAP_E_EMBEDDING_DIM = 32  # the prior's latent: num_embeddings x embedding_dim = 32 x 32
GEMMA_HIDDEN_SIZE = 8  # = the Sana transformer's caption_channels (diffusers' Sana Sprint fast test)
KANDINSKY_EMBED_DIM = 32  # the image embedding width of diffusers' Kandinsky 2.2 fast tests (text_embedder_hidden_size)


def _kandinsky_unet(conditioning: str):
    """The Kandinsky 2.x decoder UNet at diffusers' ``tests/pipelines/kandinsky*`` sizes: two blocks (32, 64) with
    simple cross-attention, 8 output channels (eps and a learned variance, which the pipelines split off), and the
    addition embedding and encoder projection of ``conditioning``: ``"image"`` (2.2: the image embedding only) or
    ``"text_image"`` (2.1: the MCLIP text states and pooled embedding with the image embedding)."""
    return seeded_eval(
        SEED,
        lambda: UNet2DConditionModel(
            in_channels=4,
            out_channels=8,
            addition_embed_type=conditioning,
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=(32, 64),
            layers_per_block=1,
            encoder_hid_dim=KANDINSKY_EMBED_DIM,
            encoder_hid_dim_type=f"{conditioning}_proj",
            cross_attention_dim=KANDINSKY_EMBED_DIM,
            attention_head_dim=4,
            resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
        ),
    )


def _movq():
    """The Kandinsky 2.x fast tests' two-block MoVQ: a VQModel with spatial norm, ``movq_scale_factor`` 2."""
    return seeded_eval(
        SEED + 1,
        lambda: VQModel(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            in_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            norm_type="spatial",
            num_vq_embeddings=12,
            out_channels=3,
            up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
            vq_embed_dim=4,
        ),
    )


def kandinsky22(scheduler) -> dict:
    """Kandinsky 2.2's decoder layout at diffusers' ``tests/pipelines/kandinsky2_2`` sizes: the UNet conditioned on
    the image embedding only and the MoVQ."""
    return {"unet": _kandinsky_unet("image"), "scheduler": scheduler, "movq": _movq()}


def xlm_roberta_tokenizer():
    """An offline ``XLMRobertaTokenizerFast`` (Unigram): XLM-R's specials ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
    ``<unk>`` 3 (the id the class fixes), ``<mask>`` 4, then :func:`~.tokenizers.t5_vocab`'s words and characters
    (diffusers' fast test loads YiYiXu/tiny-random-mclip-base from the hub). Sequences are ``<s> ... </s>``."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    pieces = [(piece, score) for piece, score in t5_vocab() if piece not in specials]
    return XLMRobertaTokenizerFast(vocab=[(token, 0.0) for token in specials] + pieces)


def kandinsky21(scheduler) -> dict:
    """Kandinsky 2.1's decoder layout at diffusers' ``tests/pipelines/kandinsky/test_kandinsky_img2img.py`` sizes:
    a MultilingualCLIP (a five-layer XLM-Roberta of width 32, 4 heads, and its linear map of the masked mean to the
    32-wide pooled embedding) over :func:`xlm_roberta_tokenizer`, the UNet conditioned on text and image
    (``"text_image"``) and the MoVQ."""
    tokenizer = xlm_roberta_tokenizer()
    config = MCLIPConfig(
        transformerDimSize=KANDINSKY_EMBED_DIM,
        imageDimSize=KANDINSKY_EMBED_DIM,
        hidden_size=KANDINSKY_EMBED_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    return {
        "text_encoder": seeded_eval(SEED + 2, lambda: MultilingualCLIP(config)),
        "tokenizer": tokenizer,
        "unet": _kandinsky_unet("text_image"),
        "scheduler": scheduler,
        "movq": _movq(),
    }


def kandinsky_image_embeds(seed: int) -> dict:
    """``image_embeds`` and ``negative_image_embeds`` (the prior's outputs), N(0, 1) from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(2, 1, KANDINSKY_EMBED_DIM, generator=generator)
    return {"image_embeds": embeds[0], "negative_image_embeds": embeds[1]}


def marigold_depth(scheduler) -> dict:
    """Marigold depth's layout at diffusers' ``tests/pipelines/marigold/test_marigold_depth.py`` sizes: a two-block
    UNet (32, 64; two layers per block) reading the image latents and the noisy depth latents concatenated (8
    channels in, 4 out), the zoo's two-block SD VAE (the fast test's, ``vae_scale_factor`` 2) with SD's scaling
    factor, and a CLIP text encoder of width 32 (the pipeline encodes the empty prompt once); affine-invariant depth
    (scale and shift invariant) as in the fast test."""
    tokenizer = clip_tokenizer()
    unet = seeded_eval(
        SEED,
        lambda: UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            in_channels=8,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN_SIZE,
        ),
    )
    vae = sd_vae()
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": seeded_eval(SEED + 2, lambda: CLIPTextModel(clip_text_config(tokenizer))),
        "tokenizer": tokenizer,
        "prediction_type": "depth",
        "scale_invariant": True,
        "shift_invariant": True,
    }


def cogvideox(scheduler) -> dict:
    """CogVideoX-2b's layout at diffusers' ``tests/pipelines/cogvideo/test_cogvideox.py`` sizes: a one-layer
    CogVideoXTransformer3DModel (4 heads of 8, patch 2, sinusoidal positions for a 2 x 2 latent and
    :data:`COGVIDEOX_TEXT_LENGTH` text tokens), a four-block AutoencoderKLCogVideoX (x8 spatial, x4 temporal, 4
    latent channels) and a T5 of width 32 (= ``text_embed_dim``)."""
    tokenizer, text_encoder = t5_encoder(SEED + 2)
    transformer = seeded_eval(
        SEED,
        lambda: CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=T5_D_MODEL,
            num_layers=1,
            sample_width=2,
            sample_height=2,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=COGVIDEOX_TEXT_LENGTH,
        ),
    )
    vae = seeded_eval(
        SEED + 1,
        lambda: AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        ),
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def ltx(scheduler) -> dict:
    """LTX-Video's layout at diffusers' ``tests/pipelines/ltx/test_ltx_condition.py`` sizes: a one-layer
    LTXVideoTransformer3DModel (4 heads of 8, patch 1 x 1 x 1, 8 latent channels), an AutoencoderKLLTXVideo with
    four 8-wide blocks (x4 spatial, x4 temporal, no timestep conditioning, frame-wise coding off) and a T5 of width
    32 (= ``caption_channels``)."""
    tokenizer, text_encoder = t5_encoder(SEED + 2)
    transformer = seeded_eval(
        SEED,
        lambda: LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=T5_D_MODEL,
        ),
    )
    vae = seeded_eval(
        SEED + 1,
        lambda: AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        ),
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def helios(scheduler) -> dict:
    """Helios's layout at diffusers' ``tests/pipelines/helios/test_helios.py`` sizes: a two-layer
    HeliosTransformer3DModel at Wan's sizes (:data:`WAN_TRANSFORMER_SIZES`) with multi-term memory patches for the
    history latents, guidance cross-attention and a zero history timestep, :func:`wan_vae` and a T5 of width 32
    (= ``text_dim``)."""
    tokenizer, text_encoder = t5_encoder(SEED + 2)
    transformer = seeded_eval(
        SEED,
        lambda: HeliosTransformer3DModel(
            **WAN_TRANSFORMER_SIZES,
            text_dim=T5_D_MODEL,
            rope_dim=(4, 4, 4),
            has_multi_term_memory_patch=True,
            guidance_cross_attn=True,
            zero_history_timestep=True,
            is_amplify_history=False,
        ),
    )
    return {
        "transformer": transformer,
        "vae": wan_vae(),
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


# The transformer sizes of diffusers' Wan and Helios fast tests (tests/pipelines/wan, tests/pipelines/helios).
WAN_TRANSFORMER_SIZES = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
}


def wan_vae():
    """The Wan and Helios fast tests' AutoencoderKLWan (seed SEED + 1): base width 3, 16 latent channels, x8
    spatial and x4 temporal."""
    return seeded_eval(
        SEED + 1,
        lambda: AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ),
    )


def text_embeds(seed: int, length: int) -> dict:
    """``prompt_embeds`` and ``negative_prompt_embeds`` of ``length`` tokens of width :data:`~.tiny_flux.T5_D_MODEL`
    (a T5 encoder's outputs), N(0, 1) from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(2, 1, length, T5_D_MODEL, generator=generator)
    return {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1]}


def shap_e(scheduler) -> dict:
    """Shap-E's text-to-3D layout at diffusers' ``tests/pipelines/shap_e/test_shap_e.py`` sizes: a one-layer
    PriorTransformer that predicts the clean latent (32 embeddings of width 32, with a variance half the pipeline
    splits off) conditioned on a CLIPTextModelWithProjection of width 32, and the renderer (unused for latent
    output, required by the constructor)."""
    tokenizer = clip_tokenizer()
    prior = seeded_eval(
        SEED,
        lambda: PriorTransformer(
            num_attention_heads=2,
            attention_head_dim=16,
            embedding_dim=SHAP_E_EMBEDDING_DIM,
            num_embeddings=SHAP_E_EMBEDDING_DIM,
            embedding_proj_dim=PROJECTION_DIM,
            time_embed_dim=4 * SHAP_E_EMBEDDING_DIM,
            num_layers=1,
            clip_embed_dim=2 * SHAP_E_EMBEDDING_DIM,
            additional_embeddings=0,
            time_embed_act_fn="gelu",
            norm_in_type="layer",
            encoder_hid_proj_type=None,
            added_emb_type=None,
        ),
    )
    renderer = seeded_eval(
        SEED + 1,
        lambda: ShapERenderer(
            param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)),
            d_latent=SHAP_E_EMBEDDING_DIM,
            d_hidden=8,
            n_output=12,
            background=(0.1, 0.1, 0.1),
        ),
    )
    return {
        "prior": prior,
        "text_encoder": seeded_eval(SEED + 2, lambda: CLIPTextModelWithProjection(clip_text_config(tokenizer))),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "shap_e_renderer": renderer,
    }


def gemma_tokenizer():
    """An offline ``GemmaTokenizerFast``: BPE without merges over ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3,
    ``<mask>`` 4, the word-start marker ``▁`` and single ASCII letters, digits and punctuation, so every prompt is
    spelled out character by character (diffusers' fast test loads hf-internal-testing/dummy-gemma from the hub)."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = ["▁", *string.ascii_letters, *string.digits, *".,!?'-:;()"]
    return GemmaTokenizerFast(vocab={token: i for i, token in enumerate(specials + pieces)}, merges=[])


def sana_sprint(scheduler, sample_size: int) -> dict:
    """Sana Sprint's layout at diffusers' ``tests/pipelines/sana/test_sana_sprint.py`` sizes: a one-layer
    SanaTransformer2DModel with a guidance embedding (2 heads of 4, patch 1), a two-block AutoencoderDC (x2, 4
    latent channels) and a one-layer Gemma2 encoder of width 8 over :func:`gemma_tokenizer`. ``sample_size`` is the
    latent side."""
    tokenizer = gemma_tokenizer()
    transformer = seeded_eval(
        SEED,
        lambda: SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=GEMMA_HIDDEN_SIZE,
            sample_size=sample_size,
            qk_norm="rms_norm_across_heads",
            guidance_embeds=True,
        ),
    )
    vae = seeded_eval(
        SEED + 1,
        lambda: AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=[1, 1],
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        ),
    )
    gemma_config = Gemma2Config(
        head_dim=16,
        hidden_size=GEMMA_HIDDEN_SIZE,
        initializer_range=0.02,
        intermediate_size=64,
        max_position_embeddings=8192,
        num_attention_heads=2,
        num_hidden_layers=1,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": seeded_eval(SEED + 2, lambda: Gemma2Model(gemma_config)),
        "tokenizer": tokenizer,
    }
