"""Seed modes: the same seed and batch give the noise that diffusers, ComfyUI or AUTOMATIC1111 / Forge draw.

``noise="diffusers"`` (default) is diffusers' own convention: the pipeline's ``generator`` draws everything. The two
other modes follow each program's rules, written here as small functions. Every rule below was read from the
programs' sources (facts only; no code was taken from either, both being copyleft); the docstrings name the file and
function each one follows. ComfyUI = comfyanonymous/ComfyUI, A1111 = AUTOMATIC1111/stable-diffusion-webui (Forge
keeps the same rules for the parts used here).

``"comfyui"`` (one seed for the whole batch):

- initial noise: one ``randn`` of the whole batch's latent shape, float32, from a CPU generator seeded with the seed
  (``comfy/sample.py`` ``prepare_noise``), scaled by ``sqrt(1 + sigma_0^2)`` when the schedule starts at the model's
  top sigma, else by ``sigma_0`` (eps/v models; ``comfy/model_sampling.py`` ``EPS.noise_scaling``,
  ``comfy/samplers.py`` ``Sampler.max_denoise``), by ``sigma_0`` for flow models (``CONST.noise_scaling``);
- per-step noise: one generator on the sampler's device for the whole batch, seeded with the seed, plus 1 on the CPU
  (``comfy/k_diffusion/sampling.py`` ``default_noise_sampler``; the +1 since ComfyUI PR 11528, which fixed the
  first step's noise repeating the initial noise on the CPU, ComfyUI issue 9819);
- Brownian samplers (``dpmpp_sde``, ``dpmpp_2m_sde``, ``dpmpp_2m_sde_heun``, ``dpmpp_3m_sde``): one tree for the
  whole batch seeded with the seed, built on the CPU and queried at float32 times; the ``*_gpu`` variants build it
  on the device (``BrownianTreeNoiseSampler(..., cpu=True / False)`` in the same file);
- timesteps: the nearest table entry in log sigma (``comfy/model_sampling.py`` ``ModelSamplingDiscrete.timestep``);
- schedule: for ``dpm_2``, ``dpm_2_ancestral``, ``uni_pc``, ``uni_pc_bh2`` the schedule is computed for
  ``steps + 1`` and its second-to-last sigma dropped (``comfy/samplers.py`` ``KSampler``,
  ``DISCARD_PENULTIMATE_SIGMA_SAMPLERS``).

``"a1111"`` (one seed per image):

- seeds: image ``i`` gets ``seed + i``, or ``seed`` for every image when a variation strength is set; variation
  seeds are ``subseed + i``; lists are taken as they are (``modules/processing.py`` ``process_images_inner``);
- initial noise: each image's own generator (``modules/rng.py`` ``ImageRNG.first``) on the RNG source: "gpu" a torch
  generator on the device, "cpu" a CPU generator, "nv" a CPU Philox4x32-10 + Box-Muller re-implementation of
  CUDA's normal draw (``modules/rng_philox.py``); with a variation strength, slerp towards the variation seed's
  noise (``modules/rng.py`` ``slerp``);
- per-step noise: each image's generator continues after its initial draw, or is re-seeded with
  ``seed + eta_noise_seed_delta`` when that is nonzero (``ImageRNG.first`` / ``ImageRNG.next``, reached through
  ``modules/sd_samplers_common.py`` ``TorchHijack.randn_like``);
- Brownian samplers: k-diffusion's tree per image seeded with the image's seed (``modules/sd_samplers_kdiffusion.py``
  ``create_noise_sampler``), whose Gaussian draws go through the RNG source (``sd_samplers_common.py``
  ``replace_torchsde_browinan`` -> ``rng.randn_local``);
- initial scale ``sigma_0`` (``KDiffusionSampler.sample``: ``x * sigmas[0]``), continuous timesteps (k-diffusion's
  log-sigma interpolation), and for ``dpm_2``, ``dpm_2_ancestral`` and ``dpmpp_3m_sde`` (A1111's "DPM2", "DPM2 a",
  "DPM++ 3M SDE") the schedule computed for ``steps + 1`` without its next-to-last sigma
  (``samplers_k_diffusion`` option ``discard_next_to_last_sigma``, ``KDiffusionSampler.get_sigmas``).

What each mode guarantees (tested in ``tests/test_seed_modes.py``): see :data:`GUARANTEES`.
"""

from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .names import unknown_name
from .noise import TORCHSDE_LOCK, BatchedBrownianTree, Prefetching

NOISE_MODES = ("diffusers", "comfyui", "a1111")
RNG_SOURCES = ("gpu", "cpu", "nv")
# The noise_options each mode accepts.
MODE_OPTIONS = {"diffusers": (), "comfyui": (), "a1111": ("rng", "subseed", "subseed_strength", "eta_noise_seed_delta")}
SEED_LIMIT = 2**64  # torch generators, torchsde's entropy and Philox keys all take seeds in [0, 2**64)

# Samplers whose noise is a Brownian tree in both programs (ComfyUI: comfy/k_diffusion/sampling.py; A1111:
# samplers_k_diffusion's "brownian_noise" option).
BROWNIAN_SAMPLERS = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde")
# Samplers whose schedule is computed for steps + 1 with the second-to-last sigma dropped.
DISCARD_PENULTIMATE = {
    "comfyui": ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"),  # comfy/samplers.py
    "a1111": ("dpm_2", "dpm_2_ancestral", "dpmpp_3m_sde"),  # modules/sd_samplers_kdiffusion.py
}

GUARANTEES = {
    "diffusers": "diffusers' own convention: with a list of generators, image i equals the image made alone with "
                 "generator i.",
    "comfyui": "The initial noise, per-step noise and Brownian noise equal ComfyUI's for the same seed, batch and "
               "sigmas, bit for bit on the CPU in float32. The initial noise and the Brownian trees (built on the "
               "CPU) are the same on every device; the per-step noise is drawn on the device (seed + 1 on the CPU, "
               "seed on an accelerator), so it differs between devices, as in ComfyUI (the *_gpu samplers' trees "
               "too). Batch size: image 0's initial noise is unchanged on the CPU when the per-image latent size "
               "C*H*W is a multiple of 16 (torch's CPU normal sampler fills blocks of 16 and redraws a partial last "
               "block), its first per-step draw likewise, but not the later ones (one generator draws the whole "
               "batch); nothing is batch-invariant on an accelerator.",
    "a1111": "Image i has its own seed, generators and Brownian tree, so it does not depend on the batch size or on "
             "the other images, on every device and RNG source (with an int seed, image i's seed is seed + i: the "
             "same image needs the same position, or a list of seeds). The 'cpu' and 'nv' sources give the same "
             "numbers on every device; 'gpu' follows the device's generator, as in A1111.",
}


# --- the options ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedMode:
    """A checked seed mode: ``name`` in :data:`NOISE_MODES` and, for "a1111", its options."""

    name: str = "diffusers"
    rng: str = "gpu"
    subseed: int | tuple[int, ...] | None = None
    subseed_strength: float = 0.0
    eta_noise_seed_delta: int = 0
    options: dict = field(default_factory=dict, compare=False)  # what the user passed, for configs

    @property
    def seeded(self) -> bool:
        """Whether the mode follows a program (ComfyUI, A1111) rather than diffusers' generators."""
        return self.name != "diffusers"

    @property
    def draws_own_initial_noise(self) -> bool:
        """Whether the initial noise needs this module (NV source, variation seeds): a pipeline's ``randn_tensor``
        with torch generators cannot draw it."""
        return self.name == "a1111" and (self.rng == "nv" or self.subseed_strength != 0)


def _seed_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {value!r} ({type(value).__name__})") from None
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{what} must be in [0, 2**64), got {value}")
    return value


def check_seeds(seed, what: str = "seed") -> int | tuple[int, ...]:
    """An int seed, or a tuple of them from a list, each in [0, 2**64)."""
    if isinstance(seed, (list, tuple)):
        if not seed:
            raise ValueError(f"{what} is an empty list")
        return tuple(_seed_int(s, f"{what}[{i}]") for i, s in enumerate(seed))
    return _seed_int(seed, what)


def seed_mode(noise: str = "diffusers", noise_options: dict | None = None) -> SeedMode:
    """Check ``noise`` and ``noise_options`` and return the :class:`SeedMode`. An option the mode does not take is
    refused with a message naming it and what the mode accepts."""
    if isinstance(noise, SeedMode):
        return noise
    if not isinstance(noise, str) or noise not in NOISE_MODES:
        raise unknown_name("noise mode", noise, NOISE_MODES)
    if noise_options is None:
        noise_options = {}
    if not isinstance(noise_options, dict):
        raise TypeError(f"noise_options must be a dict, got {type(noise_options).__name__}")
    accepted = MODE_OPTIONS[noise]
    unknown = sorted(set(noise_options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"noise={noise!r} does not take option(s) {unknown}: {takes}")
    options = dict(noise_options)
    if noise != "a1111":
        return SeedMode(noise, options=options)
    rng = options.get("rng", "gpu")
    if not isinstance(rng, str) or rng.lower() not in RNG_SOURCES:
        raise ValueError(f"noise_options rng={rng!r} is not an A1111 RNG source; accepted: {', '.join(RNG_SOURCES)} "
                         "(A1111's 'GPU', 'CPU', 'NV')")
    strength = options.get("subseed_strength", 0.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"noise_options subseed_strength must be a number in [0, 1], got {strength!r}")
    subseed = options.get("subseed")
    subseed = None if subseed is None else check_seeds(subseed, "noise_options subseed")
    if strength and subseed is None:
        raise ValueError("noise_options subseed_strength > 0 needs a subseed (A1111's variation seed)")
    delta = options.get("eta_noise_seed_delta", 0)
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError(f"noise_options eta_noise_seed_delta must be an int, got {delta!r}")
    return SeedMode("a1111", rng.lower(), subseed, float(strength), delta, options=options)


# --- seeds ---------------------------------------------------------------------------------------------------------


def a1111_seeds(seed, batch: int, subseed_strength: float = 0.0) -> list[int]:
    """Each image's seed, A1111's ``p.all_seeds`` (``modules/processing.py``, ``process_images_inner``): a list as
    given (one per image); an int gives ``seed + i``, or ``seed`` for every image when ``subseed_strength`` is
    nonzero (the variation seeds then differ)."""
    seed = check_seeds(seed)
    if isinstance(seed, tuple):
        if len(seed) != batch:
            raise ValueError(f"got {len(seed)} seeds for a batch of {batch} images; pass one per image, or an int")
        return list(seed)
    return [seed + (i if subseed_strength == 0 else 0) for i in range(batch)]


def a1111_subseeds(subseed, batch: int) -> list[int]:
    """Each image's variation seed, A1111's ``p.all_subseeds``: a list as given, an int gives ``subseed + i``.
    (``ImageRNG.first`` uses 0 for images past the end of a short list.)"""
    subseed = check_seeds(subseed, "subseed")
    if isinstance(subseed, tuple):
        return [subseed[i] if i < len(subseed) else 0 for i in range(batch)]
    return [subseed + i for i in range(batch)]


def batch_seeds(mode: SeedMode, seed, batch: int):
    """The seed(s) a mode uses for a batch: ComfyUI one int, A1111 one per image (:func:`a1111_seeds`)."""
    if mode.name == "comfyui":
        seed = check_seeds(seed)
        if isinstance(seed, tuple):
            raise ValueError("noise='comfyui' takes one int seed for the whole batch (ComfyUI draws the batch from "
                             f"one seed), got a list of {len(seed)}")
        return seed
    return a1111_seeds(seed, batch, mode.subseed_strength)


# --- Philox4x32-10 and A1111's "NV" source -------------------------------------------------------------------------

# Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3" (SC'11), Philox-4x32: round multipliers and the
# Weyl key increments (the golden ratio and sqrt(3) - 1 in 32-bit fixed point).
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-R (Salmon et al. 2011, Sec. 4) on arrays of 32-bit words: ``counter`` (4, N), ``key`` (2, N) ->
    (4, N) uint32. Each round multiplies words 0 and 2 by the two multipliers (64-bit products split high/low),
    permutes, and XORs the high halves with the other words and the round key; the key gets the Weyl increments
    before every round but the first. Checked against Random123's known-answer vectors in the tests."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK32 for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) & _MASK32 for k in key)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    w0, w1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + w0) & _MASK32, (k1 + w1) & _MASK32
        p0, p1 = c0 * m0, c2 * m1  # < 2**64: exact in uint64
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK32
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


# A1111's Box-Muller constants (modules/rng_philox.py): 2**-32 and 2**-32 * 2 pi, each rounded to float32 as written
# there; the arithmetic itself runs in float64 (uint32 words times float32 arrays promote to float64 in NumPy).
_UNIT = float(np.float32(2.3283064e-10))
_ANGLE = float(np.float32(2.3283064e-10 * 6.2831855))


def nv_box_muller(w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """A1111's normal from two uniform words: ``u = w0 2^-32 + 2^-33``, ``v = (w1 2^-32 + 2^-33) 2 pi``,
    ``sqrt(-2 ln u) sin v`` in float64, returned as float32 (only the first of Box-Muller's pair)."""
    u = w0.astype(np.float64) * _UNIT + _UNIT / 2
    v = w1.astype(np.float64) * _ANGLE + _ANGLE / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A1111's "NV" RNG source (``modules/rng_philox.py`` ``Generator``), the CPU stand-in for CUDA's normal draw.

    Call ``k`` of :meth:`randn` (k = 0, 1, ...) gives element ``i`` from Philox4x32-10 with counter ``(k, 0, i, 0)``
    and key ``(seed mod 2^32, seed div 2^32)``, through :func:`nv_box_muller` on output words 0 and 1.
    """

    def __init__(self, seed: int):
        self.seed = _seed_int(seed, "seed")
        self.offset = 0

    def randn(self, shape) -> np.ndarray:
        n = math.prod(shape)
        if n > 2**32:
            raise ValueError(f"the NV source draws at most 2**32 numbers per call, asked for {n}")
        index = np.arange(n, dtype=np.uint64)
        zeros = np.zeros(n, dtype=np.uint64)
        counter = (np.full(n, self.offset, dtype=np.uint64), zeros, index, zeros)
        key = (np.full(n, self.seed & 0xFFFFFFFF, dtype=np.uint64), np.full(n, self.seed >> 32, dtype=np.uint64))
        self.offset += 1
        words = philox4x32(counter, key)
        return nv_box_muller(words[0], words[1]).reshape(tuple(shape))


class ImageGenerator:
    """One image's generator on an A1111 RNG source (``modules/rng.py`` ``create_generator``): ``randn(shape)`` gives
    float32 noise on ``device``. "gpu": a torch generator on ``device``; "cpu": a CPU generator, moved; "nv":
    :class:`PhiloxGenerator`, moved."""

    def __init__(self, seed: int, rng: str = "gpu", device="cpu"):
        self.device = torch.device(device)
        self.rng = rng
        if rng == "nv":
            self._philox = PhiloxGenerator(seed)
        else:
            where = torch.device("cpu") if rng == "cpu" else self.device
            self._generator = torch.Generator(where).manual_seed(int(seed))

    def randn(self, shape) -> torch.Tensor:
        if self.rng == "nv":
            return torch.from_numpy(self._philox.randn(shape)).to(self.device)
        return torch.randn(tuple(shape), generator=self._generator, device=self._generator.device,
                           dtype=torch.float32).to(self.device)


def a1111_slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend of one image's noise ``low`` (C, H, W) towards ``high`` (``modules/rng.py``
    ``slerp``, as called by ``ImageRNG.first``): both are normalised along dim 1 (H), the cosines summed over it give
    an angle per (C, W) column, and ``sin((1 - s) w) / sin w * low + sin(s w) / sin w * high``. When the mean cosine
    exceeds 0.9995 it blends linearly instead, with the weights the other way round (``low s + high (1 - s)``), as
    A1111 does."""
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    cosine = (low_unit * high_unit).sum(1)
    if cosine.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    return (torch.sin((1.0 - strength) * angle) / sine).unsqueeze(1) * low + \
        (torch.sin(strength * angle) / sine).unsqueeze(1) * high


# --- initial noise -------------------------------------------------------------------------------------------------


def comfyui_initial_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """ComfyUI's initial noise (``comfy/sample.py`` ``prepare_noise``): one float32 ``randn`` of the whole batch's
    ``shape`` on the CPU from a generator seeded with ``seed``."""
    generator = torch.Generator("cpu").manual_seed(_seed_int(seed, "seed"))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def a1111_initial_noise(shape: Sequence[int], seeds: Sequence[int], rng: str = "gpu", device="cpu",
                        subseeds: Sequence[int] | None = None, subseed_strength: float = 0.0) -> torch.Tensor:
    """A1111's initial noise (``modules/rng.py`` ``ImageRNG.first``): image ``i`` is the first draw of shape
    ``shape`` (C, H, W) from its own generator seeded ``seeds[i]`` on the RNG source, blended with
    :func:`a1111_slerp` towards the first draw of a fresh generator seeded ``subseeds[i]`` when ``subseed_strength``
    is nonzero. Returns (B, C, H, W) float32 on ``device``."""
    images = []
    for i, seed in enumerate(seeds):
        noise = ImageGenerator(seed, rng, device).randn(shape)
        if subseeds is not None and subseed_strength != 0:
            sub = subseeds[i] if i < len(subseeds) else 0
            noise = a1111_slerp(subseed_strength, noise, ImageGenerator(sub, rng, device).randn(shape))
        images.append(noise)
    return torch.stack(images)


def initial_noise(mode: SeedMode, seed, shape: Sequence[int], device="cpu") -> torch.Tensor:
    """Unit initial noise of the batch ``shape`` (B, C, H, W; for FLUX the unpacked latent shape) for ``seed`` by
    ``mode``'s rules, float32: ComfyUI's on the CPU (:func:`comfyui_initial_noise`), A1111's on ``device``
    (:func:`a1111_initial_noise`, with the mode's source and variation seed)."""
    mode = seed_mode(mode)
    batch = shape[0]
    if mode.name == "comfyui":
        return comfyui_initial_noise(batch_seeds(mode, seed, batch), shape)
    if mode.name == "a1111":
        subseeds = None if mode.subseed is None else a1111_subseeds(mode.subseed, batch)
        return a1111_initial_noise(shape[1:], a1111_seeds(seed, batch, mode.subseed_strength), mode.rng, device,
                                   subseeds, mode.subseed_strength)
    raise ValueError("noise='diffusers' draws its initial noise from the pipeline's generator")


# --- the initial scale and the schedule ----------------------------------------------------------------------------


def float32(value: float) -> float:
    """``value`` rounded to float32 (the programs keep their sigmas in float32 tensors)."""
    return float(np.float32(value))


def initial_scale(mode: SeedMode, sigma_0: float, sigma_max: float | None, flow: bool = False) -> float:
    """What unit initial noise is multiplied by (VE units): ComfyUI's ``noise_scaling`` (eps/v: ``sqrt(1 +
    sigma_0^2)`` in float32 when ``sigma_0`` is within 1e-5 of the model's top sigma ``sigma_max`` or above it
    (``Sampler.max_denoise``), else ``sigma_0``; flow: ``sigma_0``), A1111's ``sigmas[0]``. Exact float32 values,
    so a float32 tensor times this Python float is the programs' float32 product."""
    sigma_0 = float32(sigma_0)
    if mode.name == "comfyui" and not flow and sigma_max is not None:
        top = float32(sigma_max)
        if math.isclose(top, sigma_0, rel_tol=1e-5) or sigma_0 > top:
            s = torch.tensor(sigma_0, dtype=torch.float32)
            return float(torch.sqrt(1.0 + s**2.0))
    return sigma_0


def discards_penultimate(mode: SeedMode, sampler_name: str | None) -> bool:
    """Whether the mode computes the schedule for ``steps + 1`` and drops its second-to-last sigma for this sampler
    (:data:`DISCARD_PENULTIMATE`)."""
    return sampler_name is not None and sampler_name in DISCARD_PENULTIMATE.get(mode.name, ())


def drop_penultimate(sigmas: torch.Tensor) -> torch.Tensor:
    """The schedule without its second-to-last value (``torch.cat([sigmas[:-2], sigmas[-1:]])`` in both programs)."""
    return torch.cat([sigmas[:-2], sigmas[-1:]])


# --- per-step noise ------------------------------------------------------------------------------------------------


def _identity(noise: torch.Tensor) -> torch.Tensor:
    return noise


class ComfyUINoiseSampler:
    """ComfyUI's per-step noise (``comfy/k_diffusion/sampling.py`` ``default_noise_sampler``): one generator on
    ``device`` for the whole batch, seeded with ``seed`` (``seed + 1`` on the CPU), one float32 ``randn`` of the
    batch ``shape`` per call. ``pack`` maps the draw to the sampler's layout (FLUX: the pipeline's packing)."""

    def __init__(self, seed: int, shape: Sequence[int], device="cpu", pack: Callable | None = None):
        device = torch.device(device)
        seed = _seed_int(seed, "seed")
        self.generator = torch.Generator(device).manual_seed(seed + 1 if device.type == "cpu" else seed)
        self.shape, self.device, self.pack = tuple(shape), device, pack or _identity

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return self.pack(torch.randn(self.shape, generator=self.generator, device=self.device, dtype=torch.float32))


class A1111NoiseSampler:
    """A1111's per-step noise (``modules/rng.py`` ``ImageRNG.next``): each image's generator continues after its
    initial draw of ``shape[1:]``, or, with ``eta_noise_seed_delta`` nonzero, starts afresh from ``seed + delta``
    (``ImageRNG.first``); every call stacks one draw per image."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], rng: str = "gpu", device="cpu",
                 eta_noise_seed_delta: int = 0, pack: Callable | None = None):
        self.image_shape = tuple(shape[1:])
        if len(seeds) != shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {shape[0]} images")
        if eta_noise_seed_delta:
            self.generators = [ImageGenerator(s + eta_noise_seed_delta, rng, device) for s in seeds]
        else:
            self.generators = [ImageGenerator(s, rng, device) for s in seeds]
            for g in self.generators:
                g.randn(self.image_shape)  # the initial noise's draw
        self.pack = pack or _identity

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return self.pack(torch.stack([g.randn(self.image_shape) for g in self.generators]))


# torchsde draws a Brownian tree's Gaussians with its module function brownian_interval._randn(size, dtype, device,
# seed); A1111 replaces it for good (sd_samplers_common.replace_torchsde_browinan). Here it is replaced only while one
# of our trees is built or queried, under the lock every tree query holds (noise.TORCHSDE_LOCK).
@contextmanager
def torchsde_randn(randn: Callable | None):
    """Run torchsde with ``randn(size, dtype, device, seed)`` as its Gaussian source (``None``: its own)."""
    if randn is None:
        yield
        return
    from torchsde._brownian import brownian_interval

    with TORCHSDE_LOCK:
        own = brownian_interval._randn
        brownian_interval._randn = randn
        try:
            yield
        finally:
            brownian_interval._randn = own


def a1111_tree_randn(rng: str, device) -> Callable:
    """A1111's torchsde Gaussian source (``rng.randn_local``): a fresh generator per seed on the RNG source
    (float32), cast to the tree's dtype and device."""
    def randn(size, dtype, tree_device, seed):
        return ImageGenerator(int(seed), rng, device).randn(tuple(size)).to(device=tree_device, dtype=dtype)

    return randn


class BrownianNoise(Prefetching):
    """Brownian-tree noise as both programs query it: times rounded to float32, the increment ``W(t1) - W(t0)`` over
    ``sqrt(|t1 - t0|)`` computed in float32 (``BrownianTreeNoiseSampler.__call__``). ``plan(queries)`` computes
    planned queries ahead (:class:`k_diffusing.noise.Prefetching`).

    Args:
        shape: the noise shape the programs' tree has (the unpacked latent batch).
        sigmas: the schedule whose positive range the tree spans (``sigmas[sigmas > 0].min()``, ``sigmas.max()``).
        seed: an int (one tree for the batch, ComfyUI) or a list (one tree per image, A1111).
        device: where the noise goes; ``tree_device``: where the trees live and draw (ComfyUI's CPU trees).
        randn: torchsde's Gaussian source while this tree runs (:func:`a1111_tree_randn`), ``None`` for its own.
    """

    def __init__(self, shape, sigmas, seed, device="cpu", tree_device=None, randn=None, pack=None):
        positive = [s for s in (float(v) for v in sigmas) if s > 0]
        self.t_min, self.t_max = float32(min(positive)), float32(max(positive))
        self.device = torch.device(device)
        tree_device = self.device if tree_device is None else torch.device(tree_device)
        self.randn, self.pack = randn, pack or _identity
        like = torch.zeros(tuple(shape), dtype=torch.float32, device=tree_device)
        seed = list(seed) if isinstance(seed, (list, tuple)) else seed
        with torchsde_randn(randn):
            self.tree = BatchedBrownianTree(like, self.t_min, self.t_max, seed)

    def compute(self, sigma, sigma_next) -> torch.Tensor:
        t0 = torch.tensor(float(sigma), dtype=torch.float32)
        t1 = torch.tensor(float(sigma_next), dtype=torch.float32)
        with torchsde_randn(self.randn):
            w = self.tree(float(t0), float(t1))
        w = w.to(device=self.device, dtype=torch.float32)
        return self.pack(w / (t1 - t0).abs().sqrt().to(self.device))


def comfyui_brownian(seed: int, shape, sigmas, device="cpu", on_device: bool = False, pack=None) -> BrownianNoise:
    """ComfyUI's Brownian noise: one tree for the batch seeded with ``seed``, on the CPU (``on_device``: the
    ``*_gpu`` samplers' tree on ``device``)."""
    return BrownianNoise(shape, sigmas, _seed_int(seed, "seed"), device, None if on_device else "cpu", pack=pack)


def a1111_brownian(seeds: Sequence[int], shape, sigmas, rng: str = "gpu", device="cpu", pack=None) -> BrownianNoise:
    """A1111's Brownian noise: one tree per image seeded with its seed, on the device, drawing through the RNG
    source."""
    return BrownianNoise(shape, sigmas, list(seeds), device, randn=a1111_tree_randn(rng, device), pack=pack)


def noise_sampler(mode: SeedMode, seeds, shape, device="cpu", sigmas=None, brownian: bool = False,
                  on_device_tree: bool = False, pack: Callable | None = None, full_sigmas=None):
    """The per-step noise sampler ``(sigma, sigma_next) -> N(0, I)`` of ``mode`` for a run over ``sigmas``.

    Args:
        seeds: ComfyUI's int seed, or A1111's per-image seeds.
        shape: the noise shape the program draws in (the batch's latent shape; FLUX: unpacked), ``pack`` maps it to
            the sampler's layout.
        brownian: the sampler is one of :data:`BROWNIAN_SAMPLERS` (with its Brownian noise on).
        on_device_tree: ComfyUI's ``*_gpu`` samplers.
        full_sigmas: A1111 spans its trees over the whole schedule, also when a run starts part-way (img2img); ComfyUI
            over the run's ``sigmas``.
    """
    mode = seed_mode(mode)
    if mode.name == "comfyui":
        if brownian:
            return comfyui_brownian(seeds, shape, sigmas, device, on_device_tree, pack)
        return ComfyUINoiseSampler(seeds, shape, device, pack)
    if mode.name == "a1111":
        if brownian:
            return a1111_brownian(seeds, shape, sigmas if full_sigmas is None else full_sigmas, mode.rng, device,
                                  pack)
        return A1111NoiseSampler(seeds, shape, mode.rng, device, mode.eta_noise_seed_delta, pack)
    raise ValueError("noise='diffusers' draws its noise from the pipeline's generator")
