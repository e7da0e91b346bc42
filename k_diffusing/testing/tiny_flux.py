"""Tiny offline FLUX pipelines and an analytic (exact) flow transformer, for tests, benchmarks and parity runs.

Everything here is built from configs and seeds; nothing touches the model hub. A tiny pipeline is diffusers' own
``FluxPipeline`` (or a subclass) with random, deterministic, fp32 CPU components: a 32x32 image takes a few
milliseconds per step. :class:`AnalyticFluxTransformer` replaces the transformer with the exact flow-matching
velocity for Gaussian latents, so the whole pipeline, text encoding to decoding, samples a known distribution.

Sizes (the constants below) follow diffusers' own tiny FLUX test pipeline: the VAE has one block
(``vae_scale_factor`` 1) and one latent channel, so an HxW image has 1xHxW latents, packed 2x2 into (H/2)(W/2)
tokens of 4 features (the transformer's ``in_channels``). H and W must be even; 32x32 gives 256 image tokens, which
is FLUX's ``base_image_seq_len``, so the dynamic shift there is ``mu = base_shift = 0.5``. CLIP's pooled output
(hidden size 32) is the transformer's ``pooled_projection_dim``; T5's ``d_model`` 32 is its ``joint_attention_dim``;
the rotary axes (4, 4, 8) add up to the head dimension 16.
"""

from __future__ import annotations

import contextlib
import pathlib

import torch
from diffusers import (
    AutoencoderKL,
    ConfigMixin,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    ModelMixin,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from .tiny import clip_text_config, seeded
from .tokenizers import clip_tokenizer, t5_tokenizer

LATENT_CHANNELS = 1
IN_CHANNELS = 4 * LATENT_CHANNELS  # packed 2x2 patches of the latent image
VAE_BLOCK_OUT_CHANNELS = (4,)  # one block: vae_scale_factor 1
VAE_SCALING_FACTOR = 0.3611  # FLUX.1's vae/config.json
VAE_SHIFT_FACTOR = 0.1159
T5_D_MODEL = 32  # = the transformer's joint_attention_dim
CLIP_HIDDEN_SIZE = 32  # CLIPTextModel's pooler_output width = the transformer's pooled_projection_dim
AXES_DIMS_ROPE = (4, 4, 8)  # sums to attention_head_dim
DEFAULT_IMAGE_SIZE = 32  # pixels (= latent side); 256 image tokens


# --- scheduler ---------------------------------------------------------------------------------------------------


def flux_scheduler_config(use_dynamic_shifting: bool = True, **overrides) -> dict:
    """FLUX.1-dev's ``scheduler_config.json`` (FlowMatchEulerDiscreteScheduler), with overrides.

    sigma = exp(mu) / (exp(mu) + 1 / t - 1) with mu from the image token count when ``use_dynamic_shifting``
    (``time_shift_type="exponential"``, mu interpolated between 0.5 at 256 tokens and 1.15 at 4096), else the static
    ``shift`` 3.0. FLUX.1-schnell's file differs only by ``shift=1.0, use_dynamic_shifting=False``.
    """
    config = {
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": use_dynamic_shifting,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "time_shift_type": "exponential",
    }
    config.update(overrides)
    return config


# --- tiny components ---------------------------------------------------------------------------------------------


def tiny_flux_transformer(
    guidance_embeds: bool = True,
    seed: int = 0,
    in_channels: int = IN_CHANNELS,
    num_layers: int = 1,
    num_single_layers: int = 1,
    num_attention_heads: int = 2,
):
    """A random ``FluxTransformer2DModel`` (by default 1 double + 1 single block, 2 heads of 16), in eval mode.

    ``guidance_embeds=True`` is FLUX.1-dev's shape (guidance distilled: the pipeline passes ``guidance_scale`` as
    an input), ``False`` is FLUX.1-schnell's (the pipeline passes ``guidance=None``).
    """
    with seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=in_channels,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=16,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=T5_D_MODEL,
            pooled_projection_dim=CLIP_HIDDEN_SIZE,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=AXES_DIMS_ROPE,
        )
    return transformer.eval()


def tiny_flux_vae(seed: int = 0):
    """A random one-block ``AutoencoderKL`` (vae_scale_factor 1, one latent channel, FLUX.1's scaling and shift
    factors, no quant convs as in FLUX.1's VAE)."""
    with seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
            up_block_types=("UpDecoderBlock2D",) * len(VAE_BLOCK_OUT_CHANNELS),
            block_out_channels=VAE_BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=1,
            sample_size=DEFAULT_IMAGE_SIZE,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=VAE_SCALING_FACTOR,
            shift_factor=VAE_SHIFT_FACTOR,
        )
    return vae.eval()


def _t5_config(tokenizer):
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=T5_D_MODEL,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def tiny_flux_components(guidance_embeds: bool = True, scheduler=None, seed: int = 0) -> dict:
    """The components of ``FluxPipeline``, tiny, random, deterministic from ``seed``, fp32, CPU, eval mode.

    Each model is built right after ``torch.manual_seed`` (transformer seed, VAE seed + 1, CLIP seed + 2, T5
    seed + 3) inside ``fork_rng``, so the caller's global RNG is untouched and ``guidance_embeds`` changes only
    the transformer. ``scheduler`` defaults to ``FlowMatchEulerDiscreteScheduler`` with
    :func:`flux_scheduler_config` (FLUX.1-dev's dynamic shifting, also for ``guidance_embeds=False``).
    """
    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    with seeded(seed + 2):
        text_encoder = CLIPTextModel(clip_text_config(tokenizer))
    with seeded(seed + 3):
        text_encoder_2 = T5EncoderModel(_t5_config(tokenizer_2))
    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config())
    return {
        "transformer": tiny_flux_transformer(guidance_embeds, seed),
        "vae": tiny_flux_vae(seed + 1),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
        "image_encoder": None,
        "feature_extractor": None,
    }


def _assemble(pipeline_cls, components: dict):
    pipeline_cls = FluxPipeline if pipeline_cls is None else pipeline_cls
    pipe = pipeline_cls(**components).to("cpu")
    # FluxPipeline hard-codes default_sample_size = 128 (x vae_scale_factor); the tiny default image is 32x32.
    pipe.default_sample_size = DEFAULT_IMAGE_SIZE // pipe.vae_scale_factor
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(pipeline_cls=None, **kwargs):
    """``pipeline_cls(**tiny_flux_components(**kwargs))`` on CPU with the progress bar off.

    ``pipeline_cls`` defaults to ``diffusers.FluxPipeline``; any subclass with the same components works.
    Height and width must be even (any even size works; 32x32 is the default set here, 2x2 the smallest). Pass a
    small ``max_sequence_length`` (e.g. 32): the T5 sequence defaults to 512 tokens.
    """
    return _assemble(pipeline_cls, tiny_flux_components(**kwargs))


def save_tiny_flux(path, pipeline_cls=None, **kwargs) -> pathlib.Path:
    """Build :func:`tiny_flux_pipeline` and ``save_pretrained`` it (safetensors) into ``path``; return the path.

    Reload offline with ``FluxPipeline.from_pretrained(path)`` (no hub access is attempted for a local folder).
    The reloaded pipeline has FluxPipeline's own ``default_sample_size`` (128): pass height and width.
    """
    path = pathlib.Path(path)
    tiny_flux_pipeline(pipeline_cls, **kwargs).save_pretrained(path, safe_serialization=True)
    return path


# --- analytic transformer ----------------------------------------------------------------------------------------


def gaussian_flow_velocity(x: torch.Tensor, sigma, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    r"""E[eps - x0 | x] for x = (1 - sigma) x0 + sigma eps, x0 ~ N(mean, std^2) and eps ~ N(0, 1) i.i.d.

    (x0, eps, x) are jointly Gaussian, so the velocity v = eps - x0 regresses linearly on x:
    ``E[v | x] = E[v] + Cov(v, x) / Var(x) (x - E[x])`` with E[v] = -mean, E[x] = (1 - sigma) mean,
    Cov(v, x) = sigma - (1 - sigma) std^2 and Var(x) = D = (1 - sigma)^2 std^2 + sigma^2. This equals
    ``(x - E[x0 | x]) / sigma`` for sigma > 0 with no division by sigma, so it holds on all of [0, 1]:
    v = x - mean at sigma = 1, v = -x at sigma = 0 (std > 0). Computed in ``x``'s dtype; ``sigma`` is a float or
    a tensor broadcastable against ``x``.
    """
    var = std**2
    one_minus = 1.0 - sigma
    d = one_minus**2 * var + sigma**2
    return (sigma - one_minus * var) / d * (x - one_minus * mean) - mean


class AnalyticFluxTransformer(ModelMixin, ConfigMixin):
    r"""Exact flow-matching velocity for packed latents whose elements are i.i.d. ``N(mean, std^2)``: a drop-in
    ``transformer`` for ``FluxPipeline``.

    Conventions (FLUX.1, rectified flow, as called by ``FluxPipeline``):

    * ``hidden_states`` are packed latents x = (1 - sigma) x0 + sigma eps, shape (B, tokens, in_channels); the
      elements are i.i.d., so packing does not matter.
    * ``timestep`` is sigma = t / 1000 in [0, 1], a scalar or one per batch row. As in ``FluxTransformer2DModel``
      it is first cast to ``hidden_states``' dtype (in bf16, 0.98841 becomes 0.98828): the velocity is exact for
      the sigma the network is told, after that rounding.
    * Output: v = E[eps - x0 | x] (:func:`gaussian_flow_velocity`), i.e. ``(x - E[x0 | x]) / sigma`` with
      ``E[x0 | x] = mean + (1 - sigma) std^2 / ((1 - sigma)^2 std^2 + sigma^2) (x - (1 - sigma) mean)``,
      ``x - mean`` at sigma = 1. FlowMatchEuler's step x + (sigma_next - sigma) v then follows the probability-flow
      ODE, whose exact solution from x(1) = eps is ``x(sigma) = (1 - sigma) mean + sqrt(D(sigma)) eps``.

    The conditioning (``encoder_hidden_states``, ``pooled_projections``, ids, ``guidance``,
    ``joint_attention_kwargs``) is accepted and ignored, so true CFG and the guidance embedding are no-ops.
    Arithmetic is float64; the output has ``hidden_states``' dtype. ``calls`` counts forward calls and
    ``sigmas_seen`` keeps the float64 sigmas of each call (after the dtype rounding), for bridge checks.

    Config mirrors ``FluxTransformer2DModel``'s fields (``in_channels``, ``guidance_embeds``, ``patch_size``,
    ``joint_attention_dim``, ...) so code reading them works; ``cache_context`` is a no-op context manager (the
    pipeline enters it around every call). ``x_embedder`` is a zero ``Linear`` that is never applied: it gives the
    model a dtype and device. A pipeline holding this model saves with ``save_pretrained`` and reloads with
    ``FluxPipeline.from_pretrained`` (the class is recorded by its module path).
    """

    def __init__(
        self,
        mean: float = 0.0,
        std: float = 1.0,
        in_channels: int = IN_CHANNELS,
        out_channels: int | None = None,
        guidance_embeds: bool = True,
        patch_size: int = 1,
        num_layers: int = 0,
        num_single_layers: int = 0,
        attention_head_dim: int = 16,
        num_attention_heads: int = 2,
        joint_attention_dim: int = T5_D_MODEL,
        pooled_projection_dim: int = CLIP_HIDDEN_SIZE,
        axes_dims_rope: tuple[int, int, int] = AXES_DIMS_ROPE,
    ):
        super().__init__()
        if std < 0:
            raise ValueError("std must be >= 0")
        self.register_to_config(
            mean=float(mean),
            std=float(std),
            in_channels=in_channels,
            out_channels=out_channels,
            guidance_embeds=guidance_embeds,
            patch_size=patch_size,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            axes_dims_rope=list(axes_dims_rope),
        )
        self.out_channels = out_channels or in_channels
        self.x_embedder = torch.nn.utils.skip_init(torch.nn.Linear, in_channels, 1, bias=False)
        torch.nn.init.zeros_(self.x_embedder.weight)
        self.calls = 0
        self.sigmas_seen: list[torch.Tensor] = []

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs):
        """No-op stand-in for ``CacheMixin.cache_context`` (FluxPipeline wraps each call in "cond" / "uncond")."""
        yield

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep=None,
        guidance: torch.Tensor | None = None,
        pooled_projections: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        txt_ids: torch.Tensor | None = None,
        img_ids: torch.Tensor | None = None,
        joint_attention_kwargs: dict | None = None,
        return_dict: bool = True,
        controlnet_block_samples=None,
        controlnet_single_block_samples=None,
        controlnet_blocks_repeat: bool = False,
    ):
        """v(x, sigma) for ``hidden_states`` x and ``timestep`` sigma (a float, or a tensor with one value or one
        per batch row). Takes ``FluxTransformer2DModel.forward``'s keywords; positionally it is ``(x, sigma)``."""
        if timestep is None:
            raise ValueError("timestep (sigma = t / 1000) is required")
        self.calls += 1
        # As FluxTransformer2DModel: timestep.to(hidden_states.dtype) before use.
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.tensor(timestep, dtype=torch.float64)
        sigma = timestep.to(hidden_states.dtype).to(hidden_states.device, torch.float64)
        self.sigmas_seen.append(sigma.detach().cpu())
        if sigma.ndim:
            sigma = sigma.reshape(-1)
            if sigma.numel() == 1:
                sigma = sigma[0]
            elif sigma.numel() != hidden_states.shape[0]:
                raise ValueError(f"{sigma.numel()} timesteps for a batch of {hidden_states.shape[0]}")
            else:
                sigma = sigma.reshape((-1,) + (1,) * (hidden_states.ndim - 1))
        out = gaussian_flow_velocity(hidden_states.to(torch.float64), sigma, self.config.mean, self.config.std)
        out = out.to(hidden_states.dtype)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)


def analytic_flux_pipeline(
    mean: float = 0.0,
    std: float = 1.0,
    scheduler=None,
    guidance_embeds: bool = True,
    pipeline_cls=None,
    seed: int = 0,
):
    """A tiny FLUX pipeline whose transformer is :class:`AnalyticFluxTransformer` for ``N(mean, std^2)`` latents.

    Tiny VAE and text encoders as in :func:`tiny_flux_components`; ``guidance_embeds`` only decides whether the
    pipeline passes a guidance tensor (dev) or None (schnell). The default scheduler is FLUX.1-dev's FlowMatchEuler.
    """
    components = tiny_flux_components(guidance_embeds=guidance_embeds, scheduler=scheduler, seed=seed)
    components["transformer"] = AnalyticFluxTransformer(mean=mean, std=std, guidance_embeds=guidance_embeds).eval()
    return _assemble(pipeline_cls, components)


__all__ = [
    "AnalyticFluxTransformer",
    "analytic_flux_pipeline",
    "flux_scheduler_config",
    "gaussian_flow_velocity",
    "save_tiny_flux",
    "tiny_flux_components",
    "tiny_flux_pipeline",
    "tiny_flux_transformer",
    "tiny_flux_vae",
]
