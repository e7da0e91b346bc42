"""A zoo of tiny offline diffusers pipelines, one per pipeline family a custom scheduler gets swapped into.

Every case is diffusers' own pipeline class with random, deterministic (seeded), fp32, CPU, eval-mode components,
built from configs (no hub access), plus the call arguments for a small, fast run (a few milliseconds per step at
32x32). :data:`ZOO` maps a short name to a :class:`ZooCase`::

    case = ZOO["flux_fill"]
    pipe = case.build(scheduler=MyScheduler.from_config(case.default_scheduler().config))
    latents = case.run(pipe, seed=0)  # = pipe(**case.inputs(generator))[0], shape case.latent_shape

Sizes come from the repository's tiny components (:mod:`k_diffusing.testing.tiny` for SD/SDXL: CLIP width 32, a
two-block UNet and VAE with ``vae_scale_factor`` 2; :mod:`k_diffusing.testing.tiny_flux` for FLUX: a one-block,
one-latent-channel VAE and a 1 + 1 block transformer). The SD 1.5 and refiner UNets, the FLUX Fill transformer, the
ControlNet and SD3's VAE are derived from those by config overrides (SD3's VAE then equals diffusers' tiny SD3 test
VAE); the SD3 transformer (with patch 2 and a 64-wide joint attention) and the Wan models take diffusers' own tiny
test config sizes (``tests/pipelines/stable_diffusion_3``, ``tests/pipelines/wan``), as do PixArt, Kandinsky 2.1 and
2.2 (2.1 with an offline XLM-Roberta tokenizer), Marigold depth, CogVideoX, LTX-Video, Shap-E, Sana Sprint and
Helios (:mod:`.zoo_models`). Default schedulers follow the model repositories' ``scheduler_config.json`` (the Wan
docs for Wan); see each ``_*_scheduler`` function and, for the newer cases, :mod:`.zoo_schedulers`, which names each
config's source. Together the cases cover every scheduler class the pipelines users run ship with: Euler,
FlowMatchEuler, UniPC, PNDM (SD 1.5), DDIM with ``steps_offset`` 0 (ControlNet, Kandinsky), LCM (also in
v-prediction: Marigold), TCD, EDM DPM-Solver and EDM Euler (Playground v2.5), DPM-Solver (PixArt), CogVideoX DDIM
and DPM, Heun with x0 prediction (Shap-E), SCM (Sana Sprint, TrigFlow) and Helios (UniPC on flow sigmas, one stage).

Every pipeline that offers it returns latents (``output_type="latent"``): SD/SDXL/SD3/PixArt/Kandinsky 2.2/Sana as
(B, C, H, W), FLUX packed as (B, tokens, 4 C), Wan, LTX and Helios as (B, C, frames, H, W), CogVideoX as (B, frames,
C, H, W), Shap-E as (B, embeddings, width). LCM and Sana Sprint return their last denoised estimate, not the
latents. Kandinsky 2.1 has no latent output: it returns the decoded image (``output_type="pt"``, (B, 3, H, W) in [0,
1]). Marigold returns its depth latents (B, 4, H, W) beside the prediction (``output_latent``;
:attr:`ZooCase.output_index`).

Run them single-threaded (``torch.set_num_threads(1)``) on a small shared CPU: the models gain nothing from
intra-op threads, whose spin-waits under load were measured to slow a 4-step SDXL run from 0.07 s to 0.5-13 s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXPipeline,
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    HeliosPipeline,
    HeliosScheduler,
    HeunDiscreteScheduler,
    KandinskyImg2ImgPipeline,
    KandinskyV22Img2ImgPipeline,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    LTXConditionPipeline,
    MarigoldDepthPipeline,
    PixArtAlphaPipeline,
    PNDMScheduler,
    SanaSprintPipeline,
    SCMScheduler,
    SD3Transformer2DModel,
    ShapEPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    TCDScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from . import zoo_schedulers
from .tiny import (
    ADDITION_TIME_EMBED_DIM,
    PROJECTION_DIM,
    TEXT_HIDDEN_SIZE,
    clip_text_config,
    sdxl_scheduler_config,
    seeded,
    tiny_sdxl_components,
    tiny_sdxl_unet,
    tiny_sdxl_vae,
)
from .tiny_flux import _t5_config, flux_scheduler_config, tiny_flux_components, tiny_flux_transformer, tiny_flux_vae
from .tokenizers import clip_tokenizer, t5_tokenizer
from .zoo_models import (
    COGVIDEOX_NUM_FRAMES,
    COGVIDEOX_SIZE,
    COGVIDEOX_TEXT_LENGTH,
    LTX_NUM_FRAMES,
    SEED,
    WAN_TRANSFORMER_SIZES,
    cogvideox,
    helios,
    kandinsky21,
    kandinsky22,
    kandinsky_image_embeds,
    ltx,
    marigold_depth,
    SHAP_E_EMBEDDING_DIM,
    pixart,
    sana_sprint,
    sd_vae,
    seeded_eval,
    shap_e,
    text_embeds,
    wan_vae,
)

DISCRETE = "discrete"  # VP diffusion on a discrete training table (eps, v or x0 prediction)
FLOW = "flow"  # rectified flow, x = (1 - sigma) x0 + sigma eps (velocity prediction)
EDM = "edm"  # Karras et al. 2022: x = x0 + sigma eps on continuous sigmas, c_skip/c_out/c_in/c_noise preconditioning
TRIGFLOW = "trigflow"  # Lu & Song 2024 (sCM): x = cos(t) x0 + sin(t) z with z ~ N(0, sigma_data^2), t in [0, pi/2]
GEOMETRIES = (DISCRETE, FLOW, EDM, TRIGFLOW)

IMAGE_SEED = 1234  # the init / mask / control images, independent of the call's generator
PROMPT = "a photo of a cat riding a horse"
SIZE = 32  # image side in pixels for every case
STEPS = 4
STRENGTH = 0.6
SANA_SPRINT_STEPS = 2  # the pipeline's default; its intermediate_timesteps (1.3) apply to 2 steps only
TCD_ETA = 0.3  # h1t/TCD-SD15-LoRA's recommended gamma (the pipeline's ``eta``)
LCM_TIME_COND_PROJ_DIM = 32  # the guidance-scale embedding width of diffusers' LCM fast test UNet
MAX_SEQUENCE_LENGTH = 32  # T5 tokens (the pipelines' defaults are 256-512)
SD3_VAE_SCALING_FACTOR = 1.5305  # SD3 medium's vae/config.json
SD3_VAE_SHIFT_FACTOR = 0.0609
SD3_T5_D_MODEL = 2 * TEXT_HIDDEN_SIZE  # >= the two CLIPs' concatenated width, as in SD3 (4096 >= 768 + 1280)
NUM_REFINER_TIME_IDS = 5  # original_size (2) + crops_coords_top_left (2) + aesthetic_score (1)
HELIOS_LATENT_FRAMES = 2  # latent frames per chunk (the pipeline's default 9)
HELIOS_NUM_FRAMES = 5  # one chunk: (HELIOS_LATENT_FRAMES - 1) * 4 + 1 frames
WAN_NUM_FRAMES = 5  # 4 k + 1 frames: 2 latent frames with the VAE's temporal factor 4


@dataclass(frozen=True)
class ZooCase:
    """One tiny pipeline: how to build it, how to call it, and what its scheduler sees.

    ``components(scheduler)`` returns the pipeline's constructor keywords (fresh models, same weights every time);
    ``default_scheduler()`` a fresh instance of the family's usual scheduler (configure a replacement from its
    ``.config``); ``inputs(generator)`` the call keywords for a small run with ``output_type="latent"``.
    ``geometry`` is one of :data:`GEOMETRIES`. ``step_gets_generator`` says whether the pipeline's loop
    passes ``generator`` to ``scheduler.step`` (the SD/SDXL pipelines do when ``step`` has a ``generator``
    parameter; SD3, FLUX and Wan never do). ``latent_shape`` is the shape of :meth:`run`'s latents, the pipeline's
    output at ``output_index`` (0, the images or video frames, unless a pipeline returns its latents elsewhere).
    """

    name: str
    pipeline_cls: type
    geometry: str
    step_gets_generator: bool
    latent_shape: tuple[int, ...]
    default_scheduler: Callable[[], Any]
    components: Callable[[Any], dict]
    inputs: Callable[[torch.Generator], dict]
    output_index: int = 0

    def build(self, scheduler=None):
        """The pipeline on CPU with the progress bar off; ``scheduler`` None means :meth:`default_scheduler`."""
        if scheduler is None:
            scheduler = self.default_scheduler()
        pipe = self.pipeline_cls(**self.components(scheduler)).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(self, pipe, seed: int = 0) -> torch.Tensor:
        """``pipe``'s latents for :meth:`inputs` with a fresh generator seeded ``seed`` (its output at
        ``output_index``)."""
        return pipe(**self.inputs(torch.Generator().manual_seed(seed)))[self.output_index]


# --- default schedulers ------------------------------------------------------------------------------------------


def _euler_scheduler(prediction_type: str):
    return lambda: EulerDiscreteScheduler.from_config(sdxl_scheduler_config(prediction_type))


def _configured(scheduler_cls, config):
    """A scheduler factory: ``scheduler_cls.from_config(config())`` (``config`` from :mod:`.zoo_schedulers`)."""
    return lambda: scheduler_cls.from_config(config())


def _flux_scheduler():
    """FLUX.1-dev's FlowMatchEuler (dynamic shifting)."""
    return FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config())


def _sd3_scheduler():
    """SD3 medium's ``scheduler_config.json``: FlowMatchEuler, static shift 3.0, no dynamic shifting."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def _wan_scheduler():
    """Wan 2.1's default (diffusers' Wan docs): UniPC on flow sigmas, flow_shift 3.0 (480p)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


# --- components --------------------------------------------------------------------------------------------------


@functools.cache
def _config_of(builder) -> dict:
    """The config of the model ``builder()`` makes (built once), as a base for overrides: its public keys only
    (``from_config`` would keep the defaults listed in ``_use_default_values`` over any override)."""
    return {key: value for key, value in builder().config.items() if not key.startswith("_")}


def _derived(model_cls, builder, seed: int, **overrides):
    """``model_cls`` from ``builder``'s config with ``overrides``, random weights from ``seed``, in eval mode."""
    with seeded(seed):
        return model_cls.from_config({**_config_of(builder), **overrides}).eval()


def _sdxl(scheduler) -> dict:
    """tiny.py's SDXL base components; no watermarker (the real default depends on invisible-watermark)."""
    return {**tiny_sdxl_components(scheduler=scheduler, seed=SEED), "add_watermarker": False}


def _sd15(scheduler, **unet_overrides) -> dict:
    """SD 1.5's layout: one CLIPTextModel (width 32 = the UNet's cross-attention width), a UNet without SDXL's
    addition embedding or linear projections (``unet_overrides`` on top), SD 1.5's VAE scaling factor; no safety
    checker."""
    unet = _derived(
        UNet2DConditionModel,
        tiny_sdxl_unet,
        SEED,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        use_linear_projection=False,
        addition_embed_type=None,
        addition_time_embed_dim=None,
        projection_class_embeddings_input_dim=None,
        **unet_overrides,
    )
    vae = sd_vae()
    tokenizer = clip_tokenizer()
    return {
        "vae": vae,
        "text_encoder": seeded_eval(SEED + 2, lambda: CLIPTextModel(clip_text_config(tokenizer))),
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def _sdxl_refiner(scheduler) -> dict:
    """SDXL refiner 1.0's layout: ``text_encoder_2`` only (its penultimate states, width 32, are the UNet's
    cross-attention input), ``requires_aesthetics_score`` (5 time ids: the UNet's addition embedding takes
    32 + 5 * 8 = 72 features), ``force_zeros_for_empty_prompt`` off as in the refiner's ``model_index.json``."""
    tokenizer_2 = clip_tokenizer()
    unet = _derived(
        UNet2DConditionModel,
        tiny_sdxl_unet,
        SEED,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        projection_class_embeddings_input_dim=PROJECTION_DIM + NUM_REFINER_TIME_IDS * ADDITION_TIME_EMBED_DIM,
    )
    text_encoder_2 = seeded_eval(SEED + 3, lambda: CLIPTextModelWithProjection(clip_text_config(tokenizer_2)))
    return {
        "vae": tiny_sdxl_vae(SEED + 1),
        "text_encoder": None,
        "text_encoder_2": text_encoder_2,
        "tokenizer": None,
        "tokenizer_2": tokenizer_2,
        "unet": unet,
        "scheduler": scheduler,
        "requires_aesthetics_score": True,
        "force_zeros_for_empty_prompt": False,
        "add_watermarker": False,
    }


def _tiny_controlnet(unet, seed: int):
    """``ControlNetModel.from_unet`` (UNet weights, a conditioning embedding that downsamples by the VAE's 2), with
    its zero-initialized output convolutions drawn from N(0, 0.1^2) so that the control image changes the UNet's
    prediction (a freshly initialized ControlNet contributes exactly zero)."""
    with seeded(seed):
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        for module in (
            controlnet.controlnet_cond_embedding.conv_out,
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
        ):
            for parameter in module.parameters():
                torch.nn.init.normal_(parameter, std=0.1)
    return controlnet.eval()


def _with_controlnet(base):
    """``base``'s components plus a ControlNet made from its UNet (:func:`_tiny_controlnet`, seed SEED + 4)."""

    def components(scheduler) -> dict:
        parts = base(scheduler)
        return {**parts, "controlnet": _tiny_controlnet(parts["unet"], SEED + 4)}

    return components


def _sd15_lcm(scheduler) -> dict:
    """An LCM-distilled SD 1.5 (LCM Dreamshaper's layout): :func:`_sd15` with the UNet's guidance-scale embedding
    (``time_cond_proj_dim``), which LatentConsistencyModelPipeline feeds as ``timestep_cond``."""
    return _sd15(scheduler, time_cond_proj_dim=LCM_TIME_COND_PROJ_DIM)


def _sd3(scheduler) -> dict:
    """SD3's layout: two CLIPTextModelWithProjection (pooled 32 + 32 = the transformer's ``pooled_projection_dim``
    64), a T5 of width 64 (= ``joint_attention_dim``; the CLIPs' concatenated 64-wide states are padded to it), a
    quant-conv-free VAE (tiny_flux's, with 4 latent channels and SD3's scaling and shift factors, so
    ``vae_scale_factor`` 1) and a one-layer SD3Transformer2DModel at diffusers' tiny test sizes, patch 2."""
    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    t5_config = _t5_config(tokenizer_3)
    t5_config.d_model = SD3_T5_D_MODEL
    with seeded(SEED):
        transformer = SD3Transformer2DModel(
            sample_size=SIZE,
            patch_size=2,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=SD3_T5_D_MODEL,
            caption_projection_dim=32,
            pooled_projection_dim=2 * PROJECTION_DIM,
            out_channels=4,
            pos_embed_max_size=SIZE // 2,
        )
    vae = _derived(
        AutoencoderKL,
        tiny_flux_vae,
        SEED + 1,
        latent_channels=4,
        scaling_factor=SD3_VAE_SCALING_FACTOR,
        shift_factor=SD3_VAE_SHIFT_FACTOR,
    )
    return {
        "transformer": transformer.eval(),
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": seeded_eval(SEED + 2, lambda: CLIPTextModelWithProjection(clip_text_config(tokenizer))),
        "tokenizer": tokenizer,
        "text_encoder_2": seeded_eval(SEED + 3, lambda: CLIPTextModelWithProjection(clip_text_config(tokenizer_2))),
        "tokenizer_2": tokenizer_2,
        "text_encoder_3": seeded_eval(SEED + 4, lambda: T5EncoderModel(t5_config)),
        "tokenizer_3": tokenizer_3,
    }


def _flux(scheduler) -> dict:
    components = tiny_flux_components(scheduler=scheduler, seed=SEED)
    del components["image_encoder"], components["feature_extractor"]  # None by default; FluxFill has neither
    return components


def _flux_fill(scheduler) -> dict:
    """FLUX.1-Fill's layout: the transformer reads the packed noisy latents (4), masked-image latents (4) and mask
    (vae_scale_factor^2 = 1 channel, packed 2x2: 4) concatenated, 12 features per token, and predicts 4."""
    transformer = _derived(FluxTransformer2DModel, tiny_flux_transformer, SEED, in_channels=12, out_channels=4)
    return {**_flux(scheduler), "transformer": transformer}


def _wan(scheduler) -> dict:
    """Wan 2.1 T2V's layout at diffusers' tiny test sizes: a two-layer WanTransformer3DModel (2 heads of 12, patch
    (1, 2, 2)), an AutoencoderKLWan with base width 3 (x8 spatial, x4 temporal, 16 latent channels) and a UMT5
    encoder of width 32 (= the transformer's ``text_dim``)."""
    tokenizer = t5_tokenizer()
    umt5_config = UMT5Config(**{**_t5_config(tokenizer).to_dict(), "model_type": "umt5"})
    transformer = seeded_eval(
        SEED, lambda: WanTransformer3DModel(**WAN_TRANSFORMER_SIZES, text_dim=umt5_config.d_model, rope_max_seq_len=32)
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": seeded_eval(SEED + 2, lambda: UMT5EncoderModel(umt5_config)),
        "vae": wan_vae(),
        "scheduler": scheduler,
        "transformer": transformer,
    }


# --- inputs ------------------------------------------------------------------------------------------------------


def _random_image() -> PIL.Image.Image:
    """A SIZE x SIZE RGB image of uniform noise from :data:`IMAGE_SEED`."""
    generator = torch.Generator().manual_seed(IMAGE_SEED)
    pixels = torch.randint(0, 256, (SIZE, SIZE, 3), generator=generator, dtype=torch.uint8)
    return PIL.Image.fromarray(pixels.numpy(), mode="RGB")


def _square_mask() -> PIL.Image.Image:
    """White (repaint) on the centre square of half the side, black (keep) elsewhere."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    mask[SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4] = 255
    return PIL.Image.fromarray(mask.numpy(), mode="L")


def _text_to_image(generator, **extra) -> dict:
    return {
        "prompt": PROMPT,
        "height": SIZE,
        "width": SIZE,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        "generator": generator,
        **extra,
    }


def _img2img(generator, **extra) -> dict:
    return {
        "prompt": PROMPT,
        "image": _random_image(),
        "strength": STRENGTH,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        "generator": generator,
        **extra,
    }


def _inpaint(generator, **extra) -> dict:
    return _text_to_image(generator, image=_random_image(), mask_image=_square_mask(), strength=STRENGTH, **extra)


def _short_t5(make):
    """``make`` with ``max_sequence_length`` :data:`MAX_SEQUENCE_LENGTH` (pipelines with a T5 encoder)."""
    return lambda generator: make(generator, max_sequence_length=MAX_SEQUENCE_LENGTH)


def _control(generator) -> dict:
    """Text to image with the random image as the ControlNet's conditioning image."""
    return _text_to_image(generator, image=_random_image())


def _kandinsky_img2img(generator, **extra) -> dict:
    """The Kandinsky decoders' img2img call: the random image, the prior's image embeddings as inputs
    (:func:`~.zoo_models.kandinsky_image_embeds` from :data:`IMAGE_SEED`)."""
    return {
        "image": _random_image(),
        "strength": STRENGTH,
        "height": SIZE,
        "width": SIZE,
        "num_inference_steps": STEPS,
        "generator": generator,
        **kandinsky_image_embeds(IMAGE_SEED),
        **extra,
    }


def _ltx_inputs(generator, **extra) -> dict:
    return _text_to_image(generator, num_frames=LTX_NUM_FRAMES, max_sequence_length=MAX_SEQUENCE_LENGTH, **extra)


# --- the zoo -----------------------------------------------------------------------------------------------------

_SD_LATENTS = (1, 4, SIZE // 2, SIZE // 2)  # tiny.py's VAE: 4 channels, x2
_LTX_LATENTS = (1, 8, 1 + (LTX_NUM_FRAMES - 1) // 4, SIZE // 4, SIZE // 4)  # unpacked (B, C, F, H, W)
# CogVideoX's VAE: 4 channels, x8 spatial, x4 temporal; latents as (B, F, C, H, W)
_COGVIDEOX_LATENTS = (1, 1 + (COGVIDEOX_NUM_FRAMES - 1) // 4, 4, COGVIDEOX_SIZE // 8, COGVIDEOX_SIZE // 8)
_FLUX_LATENTS = (1, (SIZE // 2) ** 2, 4)  # tiny_flux's VAE: 1 channel, x1; packed 2x2
_EULER_EPS = _euler_scheduler("epsilon")


def _cases():
    yield ZooCase("sd15", StableDiffusionPipeline, DISCRETE, True, _SD_LATENTS, _EULER_EPS, _sd15, _text_to_image)
    yield ZooCase(
        "sd15_v",
        StableDiffusionPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _euler_scheduler("v_prediction"),
        _sd15,
        _text_to_image,
    )
    yield ZooCase(
        "sd15_pndm",
        StableDiffusionPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(PNDMScheduler, zoo_schedulers.sd15),
        _sd15,
        _text_to_image,
    )
    yield ZooCase(
        "sd15_controlnet_ddim",
        StableDiffusionControlNetPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(DDIMScheduler, zoo_schedulers.controlnet_ddim),
        _with_controlnet(_sd15),
        _control,
    )
    # LatentConsistencyModelPipeline passes original_inference_steps to set_timesteps, takes (prev_sample,
    # denoised) from step and returns the last denoised, not the latents.
    yield ZooCase(
        "sd15_lcm",
        LatentConsistencyModelPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(LCMScheduler, zoo_schedulers.consistency_sd15),
        _sd15_lcm,
        _text_to_image,
    )
    yield ZooCase(
        "sd15_tcd",
        StableDiffusionPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(TCDScheduler, zoo_schedulers.consistency_sd15),
        _sd15,
        lambda generator: _text_to_image(generator, guidance_scale=0.0, eta=TCD_ETA),
    )
    yield ZooCase("sdxl", StableDiffusionXLPipeline, DISCRETE, True, _SD_LATENTS, _EULER_EPS, _sdxl, _text_to_image)
    yield ZooCase(
        "sdxl_img2img", StableDiffusionXLImg2ImgPipeline, DISCRETE, True, _SD_LATENTS, _EULER_EPS, _sdxl, _img2img
    )
    yield ZooCase(
        "sdxl_inpaint", StableDiffusionXLInpaintPipeline, DISCRETE, True, _SD_LATENTS, _EULER_EPS, _sdxl, _inpaint
    )
    yield ZooCase(
        "sdxl_controlnet",
        StableDiffusionXLControlNetPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _EULER_EPS,
        _with_controlnet(_sdxl),
        _control,
    )
    yield ZooCase(
        "sdxl_refiner",
        StableDiffusionXLImg2ImgPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _EULER_EPS,
        _sdxl_refiner,
        _img2img,
    )
    yield ZooCase(
        "sdxl_edm",
        StableDiffusionXLPipeline,
        EDM,
        True,
        _SD_LATENTS,
        _configured(EDMDPMSolverMultistepScheduler, zoo_schedulers.playground_v25),
        _sdxl,
        _text_to_image,
    )
    yield ZooCase(
        "sdxl_edm_euler",
        StableDiffusionXLPipeline,
        EDM,
        True,
        _SD_LATENTS,
        _configured(EDMEulerScheduler, zoo_schedulers.playground_v25_euler),
        _sdxl,
        _text_to_image,
    )
    yield ZooCase(
        "pixart",
        PixArtAlphaPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(DPMSolverMultistepScheduler, zoo_schedulers.pixart_alpha),
        functools.partial(pixart, sample_size=SIZE // 2),
        _short_t5(
            lambda generator, **kw: _text_to_image(generator, use_resolution_binning=False, clean_caption=False, **kw)
        ),
    )
    # The prior's image embeddings are inputs (fixed from IMAGE_SEED, like the init image).
    yield ZooCase(
        "kandinsky22_img2img",
        KandinskyV22Img2ImgPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(DDIMScheduler, zoo_schedulers.kandinsky_ddim),
        kandinsky22,
        lambda generator: _kandinsky_img2img(generator, output_type="latent"),
    )
    # Kandinsky 2.1 offers no latent output: the MoVQ-decoded image in [0, 1]. It noises the init latents itself
    # (its own linear-beta table at t = int(num_train_timesteps * strength) - 2, an integer tensor of
    # scheduler.timesteps' dtype), then steps on scheduler.timesteps[t_start:].
    yield ZooCase(
        "kandinsky21_img2img",
        KandinskyImg2ImgPipeline,
        DISCRETE,
        True,
        (1, 3, SIZE, SIZE),
        _configured(DDIMScheduler, zoo_schedulers.kandinsky_ddim),
        kandinsky21,
        lambda generator: _kandinsky_img2img(generator, prompt=PROMPT, output_type="pt"),
    )
    yield from (
        ZooCase(
            name,
            CogVideoXPipeline,
            DISCRETE,
            True,
            _COGVIDEOX_LATENTS,
            scheduler,
            cogvideox,
            lambda generator: _text_to_image(
                generator,
                height=COGVIDEOX_SIZE,
                width=COGVIDEOX_SIZE,
                num_frames=COGVIDEOX_NUM_FRAMES,
                max_sequence_length=COGVIDEOX_TEXT_LENGTH,
            ),
        )
        for name, scheduler in (
            ("cogvideox", _configured(CogVideoXDDIMScheduler, zoo_schedulers.cogvideox_2b)),
            ("cogvideox_dpm", _configured(CogVideoXDPMScheduler, zoo_schedulers.cogvideox_5b)),
        )
    )
    # LTXConditionPipeline sets its own timesteps, steps on -noise_pred and passes per_token_timesteps: equal for every
    # token in text-to-video, 0 for the conditioning frame's tokens when an image conditions the first frame.
    for name, inputs in (
        ("ltx_condition", _ltx_inputs),
        ("ltx_condition_image", lambda generator: _ltx_inputs(generator, image=_random_image())),
    ):
        yield ZooCase(
            name,
            LTXConditionPipeline,
            FLOW,
            False,
            _LTX_LATENTS,
            _configured(FlowMatchEulerDiscreteScheduler, zoo_schedulers.ltx_video),
            ltx,
            inputs,
        )
    # Marigold denoises depth latents next to the image's; with return_dict=False and output_latent it returns
    # (prediction, uncertainty, latent): the latent, the last step's prev_sample (LCM's denoised estimate).
    yield ZooCase(
        "marigold_depth",
        MarigoldDepthPipeline,
        DISCRETE,
        True,
        _SD_LATENTS,
        _configured(LCMScheduler, zoo_schedulers.marigold_lcm),
        marigold_depth,
        lambda generator: {
            "image": _random_image(),
            "num_inference_steps": STEPS,
            "processing_resolution": SIZE,
            "generator": generator,
            "output_type": "pt",
            "output_latent": True,
            "return_dict": False,
        },
        output_index=2,
    )
    # x0 prediction; the pipeline calls step(noise_pred, timestep=t, sample=latents) and returns the latents.
    yield ZooCase(
        "shap_e",
        ShapEPipeline,
        DISCRETE,
        False,
        (1, SHAP_E_EMBEDDING_DIM, SHAP_E_EMBEDDING_DIM),
        _configured(HeunDiscreteScheduler, zoo_schedulers.shap_e),
        shap_e,
        lambda generator: {
            "prompt": PROMPT,
            "num_inference_steps": STEPS,
            "output_type": "latent",
            "generator": generator,
        },
    )
    # Sana Sprint scales the model input itself, steps on the transformer's TrigFlow output times sigma_data, takes
    # (prev_sample, denoised) from step and returns the last denoised / sigma_data.
    yield ZooCase(
        "sana_sprint",
        SanaSprintPipeline,
        TRIGFLOW,
        True,
        _SD_LATENTS,
        _configured(SCMScheduler, zoo_schedulers.sana_sprint),
        functools.partial(sana_sprint, sample_size=SIZE // 2),
        lambda generator: _text_to_image(
            generator,
            num_inference_steps=SANA_SPRINT_STEPS,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            use_resolution_binning=False,
        ),
    )
    # Helios generates chunks of num_latent_frames_per_chunk latent frames after zero history latents; per chunk it
    # passes num_inference_steps, its own sigmas (linspace(0.999, 0, steps + 1)[:-1]) and mu to set_timesteps, and
    # returns the generated latents. The text encoder's outputs are inputs (fixed from IMAGE_SEED): its prompt
    # cleaning calls ftfy unconditionally, which is not installed.
    yield ZooCase(
        "helios",
        HeliosPipeline,
        FLOW,
        True,
        (1, 16, HELIOS_LATENT_FRAMES, SIZE // 8, SIZE // 8),
        _configured(HeliosScheduler, zoo_schedulers.helios),
        helios,
        lambda generator: {
            **text_embeds(IMAGE_SEED, MAX_SEQUENCE_LENGTH),
            "height": SIZE,
            "width": SIZE,
            "num_frames": HELIOS_NUM_FRAMES,
            "num_latent_frames_per_chunk": HELIOS_LATENT_FRAMES,
            "num_inference_steps": STEPS,
            "output_type": "latent",
            "generator": generator,
        },
    )
    yield ZooCase(
        "sd3",
        StableDiffusion3Pipeline,
        FLOW,
        False,
        (1, 4, SIZE, SIZE),
        _sd3_scheduler,
        _sd3,
        _short_t5(_text_to_image),
    )
    yield ZooCase(
        "flux", FluxPipeline, FLOW, False, _FLUX_LATENTS, _flux_scheduler, _flux, _short_t5(_text_to_image)
    )
    yield ZooCase(
        "flux_img2img",
        FluxImg2ImgPipeline,
        FLOW,
        False,
        _FLUX_LATENTS,
        _flux_scheduler,
        _flux,
        _short_t5(lambda generator, **kw: _img2img(generator, height=SIZE, width=SIZE, **kw)),
    )
    yield ZooCase(
        "flux_inpaint", FluxInpaintPipeline, FLOW, False, _FLUX_LATENTS, _flux_scheduler, _flux, _short_t5(_inpaint)
    )
    yield ZooCase(
        "flux_fill", FluxFillPipeline, FLOW, False, _FLUX_LATENTS, _flux_scheduler, _flux_fill, _short_t5(_inpaint)
    )
    # Kontext rescales height x width to max_area (default 1024^2) and, with _auto_resize, the input image to a
    # trained resolution (at least 672 px): both are held at SIZE x SIZE.
    yield ZooCase(
        "flux_kontext",
        FluxKontextPipeline,
        FLOW,
        False,
        _FLUX_LATENTS,
        _flux_scheduler,
        _flux,
        _short_t5(
            lambda generator, **kw: _text_to_image(
                generator, image=_random_image(), max_area=SIZE * SIZE, _auto_resize=False, **kw
            )
        ),
    )
    yield ZooCase(
        "wan",
        WanPipeline,
        FLOW,
        False,
        (1, 16, 1 + (WAN_NUM_FRAMES - 1) // 4, SIZE // 8, SIZE // 8),
        _wan_scheduler,
        _wan,
        _short_t5(lambda generator, **kw: _text_to_image(generator, num_frames=WAN_NUM_FRAMES, **kw)),
    )


ZOO: dict[str, ZooCase] = {case.name: case for case in _cases()}

__all__ = ["DISCRETE", "EDM", "FLOW", "GEOMETRIES", "TRIGFLOW", "ZOO", "ZooCase"]
