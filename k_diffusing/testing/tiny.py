"""Tiny offline SDXL pipelines and an analytic (exact) UNet, for tests, benchmarks and parity runs.

Everything here is built from configs and seeds; nothing touches the model hub. A tiny pipeline is diffusers' own
``StableDiffusionXLPipeline`` (or a subclass) with random, deterministic, fp32 CPU components small enough that a
32x32 image takes milliseconds per step. :class:`AnalyticUNet` replaces the UNet with the exact noise (or v)
prediction for Gaussian latents, so the whole pipeline, text encoding to decoding, samples a known distribution.

Sizes (see the constants below): CLIP hidden size 32 for both text encoders, so prompt embeddings are 64 wide
(= the UNet's ``cross_attention_dim``); ``text_encoder_2`` projects the pooled output to 32, and the UNet's
``add_embedding`` takes 32 + 6 * 8 = 80 inputs (six micro-conditioning ids, 8 features each). The VAE has two blocks,
so ``vae_scale_factor`` is 2 and the UNet's ``sample_size`` 16 makes the default image 32x32 (latents 4x16x16).
"""

from __future__ import annotations

import contextlib
import inspect
import pathlib
from collections.abc import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    ConfigMixin,
    EulerDiscreteScheduler,
    ModelMixin,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .tokenizers import clip_tokenizer

TEXT_HIDDEN_SIZE = 32
PROJECTION_DIM = 32
ADDITION_TIME_EMBED_DIM = 8
NUM_TIME_IDS = 6  # original_size (2) + crops_coords_top_left (2) + target_size (2)
CROSS_ATTENTION_DIM = 2 * TEXT_HIDDEN_SIZE  # concatenated penultimate states of both text encoders
PROJECTION_CLASS_EMBEDDINGS_INPUT_DIM = PROJECTION_DIM + NUM_TIME_IDS * ADDITION_TIME_EMBED_DIM  # 80
LATENT_CHANNELS = 4
VAE_BLOCK_OUT_CHANNELS = (32, 64)  # two blocks: vae_scale_factor 2
UNET_BLOCK_OUT_CHANNELS = (16, 32)
UNET_SAMPLE_SIZE = 16  # latent side; default image side = 16 * 2 = 32


# --- scheduler ---------------------------------------------------------------------------------------------------


def sdxl_scheduler_config(prediction_type: str = "epsilon", **overrides) -> dict:
    """SDXL base 1.0's ``scheduler_config.json`` (EulerDiscreteScheduler), with ``prediction_type`` and overrides.

    It keeps the keys meant for DDIM/PNDM (``clip_sample``, ``set_alpha_to_one``, ``skip_prk_steps``,
    ``sample_max_value``) as the real file does: ``Cls.from_config(config)`` passes them to schedulers that use them
    and silently drops them for the others (they belong to compatible classes).
    """
    config = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "prediction_type": prediction_type,
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "clip_sample": False,
        "sample_max_value": 1.0,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
    }
    config.update(overrides)
    return config


def sdxl_alphas_cumprod() -> torch.Tensor:
    """SDXL's training table abar_t (t = 0..999) computed as diffusers does: float32 ``scaled_linear`` betas,
    ``cumprod(1 - beta)`` in float32 (so it equals ``EulerDiscreteScheduler(**sdxl_scheduler_config()).alphas_cumprod``
    bit for bit)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _default_scheduler(prediction_type: str):
    return EulerDiscreteScheduler.from_config(sdxl_scheduler_config(prediction_type))


# --- tiny components ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int):
    """Seed the global CPU RNG for a construction and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_sdxl_unet(seed: int = 0, time_cond_proj_dim: int | None = None):
    """A random ``UNet2DConditionModel`` with SDXL's structure (``addition_embed_type="text_time"``), in eval mode."""
    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=UNET_SAMPLE_SIZE,
            in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=UNET_BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            cross_attention_dim=CROSS_ATTENTION_DIM,
            addition_embed_type="text_time",
            addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=PROJECTION_CLASS_EMBEDDINGS_INPUT_DIM,
            time_cond_proj_dim=time_cond_proj_dim,
        )
    return unet.eval()


def tiny_sdxl_vae(seed: int = 0):
    """A random two-block ``AutoencoderKL`` (vae_scale_factor 2, 4 latent channels, SDXL's scaling factor)."""
    with seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
            up_block_types=("UpDecoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
            block_out_channels=VAE_BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=32,
            sample_size=2 * UNET_SAMPLE_SIZE,
            scaling_factor=0.13025,
        )
    return vae.eval()


def clip_text_config(tokenizer):
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=PROJECTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_sdxl_components(
    prediction_type: str = "epsilon",
    scheduler=None,
    seed: int = 0,
    time_cond_proj_dim: int | None = None,
) -> dict:
    """The components of ``StableDiffusionXLPipeline``, tiny, random, deterministic from ``seed``, fp32, CPU.

    Each model is built right after ``torch.manual_seed`` (seed, seed + 1, ...) inside ``fork_rng``, so the caller's
    global RNG is untouched and changing one component (``time_cond_proj_dim``) leaves the others identical. Every
    model is in eval mode. ``scheduler`` defaults to ``EulerDiscreteScheduler`` with :func:`sdxl_scheduler_config`
    (``prediction_type`` is ignored when a scheduler is given: configure it yourself).
    """
    tokenizer = clip_tokenizer()
    tokenizer_2 = clip_tokenizer()
    with seeded(seed + 2):
        text_encoder = CLIPTextModel(clip_text_config(tokenizer))
    with seeded(seed + 3):
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2))
    return {
        "unet": tiny_sdxl_unet(seed, time_cond_proj_dim),
        "vae": tiny_sdxl_vae(seed + 1),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler if scheduler is not None else _default_scheduler(prediction_type),
        "image_encoder": None,
        "feature_extractor": None,
    }


def _assemble(pipeline_cls, components: dict):
    pipeline_cls = StableDiffusionXLPipeline if pipeline_cls is None else pipeline_cls
    kwargs = dict(components)
    if "add_watermarker" in inspect.signature(pipeline_cls.__init__).parameters:
        kwargs["add_watermarker"] = False  # the real default depends on whether invisible-watermark is installed
    pipe = pipeline_cls(**kwargs).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(pipeline_cls=None, **kwargs):
    """``pipeline_cls(**tiny_sdxl_components(**kwargs))`` on CPU with the progress bar off and no watermarker.

    ``pipeline_cls`` defaults to ``diffusers.StableDiffusionXLPipeline``; any subclass with the same components works.
    Default image: 32x32 (latents 4x16x16).
    """
    return _assemble(pipeline_cls, tiny_sdxl_components(**kwargs))


def save_tiny_sdxl(path, pipeline_cls=None, **kwargs) -> pathlib.Path:
    """Build :func:`tiny_sdxl_pipeline` and ``save_pretrained`` it (safetensors) into ``path``; return the path.

    Reload offline with ``StableDiffusionXLPipeline.from_pretrained(path)`` (no hub access is attempted for a local
    folder). The weights reload bit for bit, yet outputs differ from the in-memory pipeline's (measured 5.7e-6 in
    latents after 2 steps, 7e-7 in pixels; it starts as 2.4e-7 in the pooled text projection, apparently from CPU
    kernels seeing differently aligned memory): compare reloaded with reloaded, which is bit-exact.
    """
    path = pathlib.Path(path)
    tiny_sdxl_pipeline(pipeline_cls, **kwargs).save_pretrained(path, safe_serialization=True)
    return path


# --- analytic UNet -----------------------------------------------------------------------------------------------


class AnalyticUNet(ModelMixin, ConfigMixin):
    r"""Exact eps or v prediction for latents whose elements are i.i.d. ``N(mean, std^2)``: a drop-in ``unet``.

    Conventions (diffusers' discrete VP models, as called by SDXL pipelines):

    * ``sample`` is the scaled model input ``x_vp = x_ve / sqrt(sigma^2 + 1)``, i.e.
      ``x_vp = a x0 + s eps`` with ``a = sqrt(abar) = 1 / sqrt(1 + sigma^2)`` and ``s = sqrt(1 - abar) = sigma a``.
    * ``timestep`` t (int or float; a scalar, or one per batch row) indexes the training table
      ``sigma_t = sqrt((1 - abar_t) / abar_t)``, t = 0 .. len(alphas_cumprod) - 1.
    * Gaussian conditioning: ``x0_hat = E[x0 | x_vp] = mean + a std^2 / (a^2 std^2 + s^2) (x_vp - a mean)``,
      ``eps_hat = (x_vp - a x0_hat) / s = s (x_vp - a mean) / (a^2 std^2 + s^2)``, and for
      ``prediction_type="v_prediction"`` ``v_hat = a eps_hat - s x0_hat`` (diffusers' ``v = alpha_t eps -
      sigma_t x0`` with VP alpha_t, sigma_t). In VE terms the implied denoiser is exactly
      ``D(x_ve, sigma) = mean + std^2 / (std^2 + sigma^2) (x_ve - mean)``.

    Which sigma: the prediction is exact for the sigma the network is told, sigma(t). For integer t that is the
    table value, which is what EulerDiscrete (and the other discrete schedulers) use with 'leading' or
    'trailing' spacing: exact. For fractional t, sigma(t) is interpolated between neighbouring table entries,
    by default linearly in log sigma (``interpolation="log"``): that inverts diffusers' ``_sigma_to_t`` (Karras,
    exponential and beta sigmas) and k-diffusion's ``sigma_to_t``, so a bridge that converts sigma -> t that
    way gets the exact prediction back. diffusers' EulerDiscrete with 'linspace' spacing instead interpolates
    sigma linearly in t (``np.interp``), so its fractional timesteps need ``interpolation="linear"`` for
    exactness. Measured on SDXL's table: the two rules differ by 2e-6 relative in sigma at a typical half-integer
    t, 1.5% at t = 0.5; EulerDiscrete 'linspace' (25 steps) is matched to 8e-8 by "linear" and 2e-5 by "log",
    Karras sigmas to 2e-7 by "log" and 4e-4 by "linear" (float32 timesteps). ``timestep_type="continuous"``
    (t = log(sigma) / 4) and zero-terminal-SNR tables (abar = 0, sigma = inf) are not supported.

    The conditioning (``encoder_hidden_states``, ``added_cond_kwargs``, ``timestep_cond``, ControlNet residuals,
    ...) is accepted and ignored, so classifier-free guidance is a no-op (uncond = cond). Arithmetic is float64;
    the output has ``sample``'s dtype. ``calls`` counts forward calls (CFG batches count once).

    Config mirrors what SDXL pipelines read from a UNet: ``in_channels``, ``sample_size``,
    ``time_cond_proj_dim``, ``addition_time_embed_dim`` and ``add_embedding.linear_1.in_features`` (a zero
    ``Linear`` that is never applied; it also gives the model a dtype and device). The sigma table is a float64
    CPU attribute, not a buffer, so ``.to(torch.float16)`` leaves it alone; the timestep is read on the CPU (a host
    sync on GPU, acceptable in a test model). A pipeline holding it saves and reloads with ``save_pretrained`` /
    ``StableDiffusionXLPipeline.from_pretrained`` (diffusers logs that it expected a ``UNet2DConditionModel``).
    """

    def __init__(
        self,
        prediction_type: str = "epsilon",
        mean: float = 0.0,
        std: float = 1.0,
        alphas_cumprod: Sequence[float] | torch.Tensor | None = None,
        interpolation: str = "log",
        in_channels: int = LATENT_CHANNELS,
        out_channels: int = LATENT_CHANNELS,
        sample_size: int = UNET_SAMPLE_SIZE,
        time_cond_proj_dim: int | None = None,
        addition_embed_type: str = "text_time",
        addition_time_embed_dim: int = ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim: int = PROJECTION_CLASS_EMBEDDINGS_INPUT_DIM,
        cross_attention_dim: int = CROSS_ATTENTION_DIM,
    ):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        if interpolation not in ("log", "linear"):
            raise ValueError(f"interpolation must be 'log' or 'linear', got {interpolation!r}")
        if std < 0:
            raise ValueError("std must be >= 0")
        table = sdxl_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod)
        table = table.detach().to("cpu", torch.float64)
        if table.ndim != 1 or len(table) < 2 or not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D table of at least 2 values in (0, 1)")
        self.register_to_config(
            prediction_type=prediction_type,
            mean=float(mean),
            std=float(std),
            alphas_cumprod=None if alphas_cumprod is None else table.tolist(),
            interpolation=interpolation,
            in_channels=in_channels,
            out_channels=out_channels,
            sample_size=sample_size,
            time_cond_proj_dim=time_cond_proj_dim,
            addition_embed_type=addition_embed_type,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            cross_attention_dim=cross_attention_dim,
        )
        # Plain attribute, not a buffer: pipe.to(torch.float16) must not round the table.
        self._sigmas = ((1.0 - table) / table).sqrt()
        self.add_embedding = torch.nn.Module()
        self.add_embedding.linear_1 = torch.nn.utils.skip_init(
            torch.nn.Linear, projection_class_embeddings_input_dim, 1, bias=False
        )
        torch.nn.init.zeros_(self.add_embedding.linear_1.weight)
        self.calls = 0

    def sigma_at(self, timestep) -> torch.Tensor:
        """sigma(t) in float64 (CPU): table values at integer t, interpolated as ``config.interpolation`` says
        between them, clamped to the table's range."""
        t = torch.as_tensor(timestep).detach().to("cpu", torch.float64)
        t = t.clamp(0, len(self._sigmas) - 1)
        low = t.floor().clamp(max=len(self._sigmas) - 2)
        w = t - low
        low = low.long()
        lo, hi = self._sigmas[low], self._sigmas[low + 1]
        if self.config.interpolation == "log":
            return torch.exp((1 - w) * lo.log() + w * hi.log())
        return (1 - w) * lo + w * hi

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels=None,
        timestep_cond=None,
        attention_mask=None,
        cross_attention_kwargs=None,
        added_cond_kwargs=None,
        down_block_additional_residuals=None,
        mid_block_additional_residual=None,
        down_intrablock_additional_residuals=None,
        encoder_attention_mask=None,
        return_dict: bool = True,
    ):
        self.calls += 1
        sigma = self.sigma_at(timestep).to(sample.device)
        if sigma.ndim:
            sigma = sigma.reshape(-1)
            if sigma.numel() == 1:
                sigma = sigma[0]
            elif sigma.numel() != sample.shape[0]:
                raise ValueError(f"{sigma.numel()} timesteps for a batch of {sample.shape[0]}")
            else:
                sigma = sigma.reshape((-1,) + (1,) * (sample.ndim - 1))
        a = 1.0 / torch.sqrt(1.0 + sigma**2)  # sqrt(abar)
        s = sigma * a  # sqrt(1 - abar)
        mean, var = self.config.mean, self.config.std**2
        centred = sample.to(torch.float64) - a * mean
        eps = s * centred / (a * a * var + s * s)
        if self.config.prediction_type == "epsilon":
            out = eps
        else:
            x0 = mean + a * var / (a * a * var + s * s) * centred
            out = a * eps - s * x0
        out = out.to(sample.dtype)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


def analytic_sdxl_pipeline(
    prediction_type: str = "epsilon",
    pipeline_cls=None,
    mean: float = 0.0,
    std: float = 1.0,
    scheduler=None,
    seed: int = 0,
    interpolation: str = "log",
):
    """A tiny SDXL pipeline whose UNet is :class:`AnalyticUNet` for ``N(mean, std^2)`` latents.

    Tiny VAE and text encoders as in :func:`tiny_sdxl_components`. The analytic UNet uses the scheduler's
    ``alphas_cumprod`` (SDXL's by default) and predicts ``prediction_type``; the default scheduler is SDXL's Euler
    with the same ``prediction_type``. A given ``scheduler`` must be configured for that prediction type.
    """
    components = tiny_sdxl_components(prediction_type=prediction_type, scheduler=scheduler, seed=seed)
    table = getattr(components["scheduler"], "alphas_cumprod", None)
    if table is not None and torch.equal(torch.as_tensor(table, dtype=torch.float32), sdxl_alphas_cumprod()):
        table = None
    components["unet"] = AnalyticUNet(
        prediction_type=prediction_type, mean=mean, std=std, alphas_cumprod=table, interpolation=interpolation
    ).eval()
    return _assemble(pipeline_cls, components)


__all__ = [
    "AnalyticUNet",
    "analytic_sdxl_pipeline",
    "save_tiny_sdxl",
    "sdxl_alphas_cumprod",
    "sdxl_scheduler_config",
    "tiny_sdxl_components",
    "tiny_sdxl_pipeline",
    "tiny_sdxl_unet",
    "tiny_sdxl_vae",
]
