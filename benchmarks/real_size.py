"""Real-size networks: what k-diffusing costs around SDXL's full UNet and FLUX's full-width transformer.

    python benchmarks/real_size.py                          # CPU, 512x512, SDXL and FLUX, section 6 printed
    python benchmarks/real_size.py --write-results          # ... and written to RESULTS.md / RESULTS.json
    python benchmarks/real_size.py --device cuda --dtype bfloat16 --steps 10 --repeats 5 --write-results
    python benchmarks/real_size.py --dry-run --json out.json  # tiny configs of the same classes, seconds

The pipeline ratios of ``bench.py`` come from tiny embedded networks, where the pipeline's own work is a large share
of a step. Here the networks have the published architectures with random weights (nothing is downloaded):

- SDXL: ``UNet2DConditionModel`` with SDXL base 1.0's ``unet/config.json`` (2,567,463,684 parameters).
- FLUX: ``FluxTransformer2DModel`` at FLUX.1-dev's width (``transformer/config.json``: 24 heads of 128, joint attention
  4096, pooled projection 768, guidance embedding, RoPE axes 16/56/56) with fewer blocks than its 19 double-stream +
  38 single-stream (``--flux-blocks``). The sampler's and scheduler's work per step scales with the latent, not with
  the depth; the blocks only add network time, so fewer blocks make the overhead a larger share (conservative).

No text encoders: the pipelines get ``prompt_embeds`` / ``pooled_prompt_embeds`` of the right shapes (random; SDXL 77
CLIP tokens, FLUX :data:`FLUX_TEXT_TOKENS` T5 tokens instead of the usual 512). The VAE is a tiny 4-block
``AutoencoderKL`` (so ``vae_scale_factor`` is 8, as the real ones) and the runs stop at the latents
(``output_type="latent"``): no decode on either side. SDXL runs at ``guidance_scale=1`` (no CFG, batch 1); FLUX.1-dev
embeds its guidance (one network call per step at any scale).

Comparisons, each on the same component objects with the same inputs and generator seed:

- K pipeline against its diffusers parent (``KSDXLPipeline`` / ``StableDiffusionXLPipeline``, ``KFluxPipeline`` /
  ``FluxPipeline``): (a) the default, the parent on SDXL base 1.0's EulerDiscreteScheduler config / FLUX.1-dev's
  FlowMatchEulerDiscreteScheduler config, the K pipeline with ``sampler=None`` (their k-equivalent, euler); (b) the
  parent on DPMSolverMultistepScheduler (FLUX: flow sigmas and flow prediction as in ``bench.py``), the K pipeline on
  the same scheduler with ``sampler="dpmpp_2m"``.
- The parent with ``pipe.scheduler = KScheduler.from_scheduler(native)`` (the equivalent k-sampler) against the parent
  with ``native``, for (a) and (b).
- SDXL only (``--no-sde`` skips them): the K pipeline with the SDE samplers' default Brownian-tree noise against
  ``sampler_kwargs={"brownian": False}`` (independent Gaussian draws), seeded by the call's generator.

Measurements: the sides of a comparison take turns (reference, candidates, then the reverse order, ...) after one
warm-up run of each at a tiny resolution (imports, plan caches) and one full-size warm-up call of the network per model
(which also reports its time per call and checks that random weights give finite latents; every timed run checks it
too). Per run: the wall time; the network's time, its forward calls timed with ``perf_counter`` between a forward
pre-hook and a forward hook (on CUDA with a device sync at both, so that the loop's GPU work cannot hide behind the
network's: a conservative overhead); the overhead ``wall - network`` per model call, which is everything the
pipeline and the scheduler or sampler do; and the peak memory (CPU: peak resident set, ``VmHWM`` reset through
``/proc/self/clear_refs`` before the run; CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``) with its
rise over the memory held before the run. Time ratio: the median of the per-round ratios (quartiles, min and max);
memory ratio: of the median peaks, and of the median rises set on one base (the memory held before a run drifts with
the allocator's history, and so with the order of the runs).
Because both sides make the same network calls on the same shapes, the network's own run-to-run noise (seconds on a
CPU) can be taken out: the low-noise ratio is ``(n + o_K) / (n + o_ref)`` per call, ``n`` the median network time per
call over both sides' runs and ``o`` each side's median overhead per call.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import bench
from bench import FLOW_DPM, machine

HERE = Path(__file__).resolve().parent
SECTION_TITLE = "## 6. Real-size networks"
MODELS = ("sdxl", "flux")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# SDXL base 1.0 unet/config.json (stabilityai/stable-diffusion-xl-base-1.0); the entries not listed are
# UNet2DConditionModel's defaults, as in that file. attention_head_dim is, as there, the number of heads per block.
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,  # 1280 (pooled CLIP-G) + 6 time ids x 256
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
}
# FLUX.1-dev transformer/config.json (black-forest-labs/FLUX.1-dev), depth (num_layers, num_single_layers) set apart.
FLUX_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels in 2x2 patches
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FLUX_DEPTH = (19, 38)
# --dry-run: the same classes with few channels.
TINY_SDXL_UNET = {**SDXL_UNET, "sample_size": 8, "block_out_channels": (32, 32, 64), "layers_per_block": 1,
                  "transformer_layers_per_block": (1, 1, 1), "attention_head_dim": (1, 2, 4), "norm_num_groups": 8,
                  "cross_attention_dim": 32, "addition_time_embed_dim": 8,
                  "projection_class_embeddings_input_dim": 32 + 6 * 8}
TINY_FLUX_TRANSFORMER = {**FLUX_TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 16,
                         "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": (4, 4, 8)}

SDXL_TEXT_TOKENS = 77  # CLIP's context, what SDXL's encode_prompt always returns
FLUX_TEXT_TOKENS = 64  # T5 tokens: FluxPipeline's default max_sequence_length is 512; 64 keeps CPU runs short
NUM_TIME_IDS = 6  # SDXL micro-conditioning: original size, crop top-left, target size
LATENT_CHANNELS = {"sdxl": 4, "flux": 16}
WARMUP_RESOLUTION = 32  # the smallest side both pipelines take (SDXL: latent divisible by 4; FLUX: by 16 pixels)
SDE_SAMPLERS = ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde")
# Done-when targets, as strings: a ratio meets one when, rounded to the target's digits, it is at most the target.
TIME_TARGET, MEMORY_TARGET, SDE_TIME_TARGET = "1.005", "1.00", "1.02"


# --- sizes and networks --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    device: str
    dtype: str
    resolution: int
    steps: int
    repeats: int
    models: tuple[str, ...]
    flux_blocks: tuple[int, int]
    sde: bool
    dry_run: bool


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def _seeded(device: str):
    """Seed 0 for the random weights, restoring the caller's RNG state afterwards (the device's own RNG on CUDA)."""
    cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        yield


def flux_config(settings: Settings) -> dict:
    base = TINY_FLUX_TRANSFORMER if settings.dry_run else FLUX_TRANSFORMER
    double, single = settings.flux_blocks
    return {**base, "num_layers": double, "num_single_layers": single}


def network_config(kind: str, settings: Settings) -> dict:
    if kind == "sdxl":
        return TINY_SDXL_UNET if settings.dry_run else SDXL_UNET
    return flux_config(settings)


def network_class(kind: str):
    import diffusers

    return diffusers.UNet2DConditionModel if kind == "sdxl" else diffusers.FluxTransformer2DModel


def parameter_count(kind: str, config: dict) -> int:
    """The parameters of ``network_class(kind)(**config)``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return sum(p.numel() for p in network_class(kind)(**config).parameters())


def tiny_vae(kind: str):
    """A 4-block ``AutoencoderKL`` with 8 channels per block: ``vae_scale_factor`` 8 as the real VAEs, the latent
    channels of the model (SDXL 4, FLUX 16) and its scaling (FLUX: also shift, no quant convs). Never run: the
    pipelines stop at the latents."""
    from diffusers import AutoencoderKL

    flux = kind == "flux"
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8,) * 4, layers_per_block=1, norm_num_groups=8, latent_channels=LATENT_CHANNELS[kind],
        scaling_factor=0.3611 if flux else 0.13025, shift_factor=0.1159 if flux else None,
        use_quant_conv=not flux, use_post_quant_conv=not flux,
    ).eval()


def build_components(kind: str, settings: Settings) -> dict:
    """The network (random weights, seed 0, built on the device) and the tiny VAE, in ``settings.dtype``; no text
    encoders or tokenizers."""
    dtype = DTYPES[settings.dtype]
    with _seeded(settings.device), torch.device(settings.device):
        network = network_class(kind)(**network_config(kind, settings)).eval()
        vae = tiny_vae(kind)
    if dtype != torch.float32:
        network, vae = network.to(dtype), vae.to(dtype)
    return {"unet" if kind == "sdxl" else "transformer": network, "vae": vae, "text_encoder": None,
            "text_encoder_2": None, "tokenizer": None, "tokenizer_2": None}


def call_inputs(kind: str, network, settings: Settings, resolution: int) -> dict:
    """The keyword arguments of every call: random prompt embeddings of the network's widths, the size, the latents
    as output."""
    config = network.config
    generator = torch.Generator().manual_seed(1)
    dtype = DTYPES[settings.dtype]

    def randn(*shape):
        return torch.randn(shape, generator=generator).to(settings.device, dtype)

    size = {"height": resolution, "width": resolution, "output_type": "latent"}
    if kind == "sdxl":
        pooled = config.projection_class_embeddings_input_dim - NUM_TIME_IDS * config.addition_time_embed_dim
        return {**size, "prompt_embeds": randn(1, SDXL_TEXT_TOKENS, config.cross_attention_dim),
                "pooled_prompt_embeds": randn(1, pooled), "guidance_scale": 1.0}
    return {**size, "prompt_embeds": randn(1, FLUX_TEXT_TOKENS, config.joint_attention_dim),
            "pooled_prompt_embeds": randn(1, config.pooled_projection_dim)}


# --- the sides of each comparison ----------------------------------------------------------------------------------

@dataclass
class Side:
    label: str
    pipe: object
    options: dict = field(default_factory=dict)  # extra call keywords: sampler, sampler_kwargs


@dataclass
class Group:
    """Sides run in turn; each candidate is compared with the reference."""
    model: str
    case: str
    reference: Side
    candidates: list[Side]
    time_target: str
    memory_target: str | None


def native_schedulers(kind: str) -> dict:
    """Case name -> (native scheduler, the k-sampler the K pipeline runs: None = the scheduler's equivalent)."""
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    from k_diffusing.testing.tiny import sdxl_scheduler_config
    from k_diffusing.testing.tiny_flux import flux_scheduler_config

    if kind == "sdxl":
        return {"default": (EulerDiscreteScheduler.from_config(sdxl_scheduler_config()), None),
                "dpmpp_2m": (DPMSolverMultistepScheduler.from_config(sdxl_scheduler_config()), "dpmpp_2m")}
    dpm = {**FLOW_DPM, "use_dynamic_shifting": True}  # FluxPipeline passes mu; as k_diffusing.parity's flux_dpmpp_2m
    return {"default": (FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config()), None),
            "dpmpp_2m": (DPMSolverMultistepScheduler.from_config(flux_scheduler_config(), **dpm), "dpmpp_2m")}


def pipeline_classes(kind: str) -> tuple[type, type]:
    from diffusers import FluxPipeline, StableDiffusionXLPipeline

    from k_diffusing import KFluxPipeline, KSDXLPipeline

    return (StableDiffusionXLPipeline, KSDXLPipeline) if kind == "sdxl" else (FluxPipeline, KFluxPipeline)


def _pipe(cls, components: dict, scheduler):
    pipe = cls(**components, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scheduler_groups(kind: str, components: dict) -> list[Group]:
    """(a) and (b): the parent with its native scheduler against the K pipeline and against the parent with
    ``KScheduler.from_scheduler(native)``."""
    from k_diffusing import KScheduler
    from k_diffusing.pipelines.schedulers import equivalent

    parent, k_pipeline = pipeline_classes(kind)
    groups = []
    for native, sampler in native_schedulers(kind).values():
        k_sampler = equivalent(native).sampler
        if sampler is not None and k_sampler != sampler:
            raise RuntimeError(f"{type(native).__name__} runs k-sampler {k_sampler!r}, not {sampler!r}")
        name = f"{type(native).__name__} / {k_sampler}" + (" (sampler=None)" if sampler is None else "")
        groups.append(Group(
            kind, name, Side(parent.__name__, _pipe(parent, components, native)),
            [Side(k_pipeline.__name__, _pipe(k_pipeline, components, native), {"sampler": sampler}),
             Side(f"{parent.__name__} + KScheduler", _pipe(parent, components, KScheduler.from_scheduler(native)))],
            TIME_TARGET, MEMORY_TARGET))
    return groups


def sde_groups(components: dict) -> tuple[list[Group], list[dict]]:
    """The SDE samplers in KSDXLPipeline: Brownian tree (default) against ``brownian=False``; a row skipped, with the
    reason, for a sampler that has no ``brownian`` option."""
    from k_diffusing.registry import get_sampler

    _, k_pipeline = pipeline_classes("sdxl")
    native, _ = native_schedulers("sdxl")["default"]
    pipe = _pipe(k_pipeline, components, native)
    groups, skipped = [], []
    for sampler in SDE_SAMPLERS:
        if "brownian" not in get_sampler(sampler).options:
            skipped.append({"model": "sdxl", "case": sampler, "reason": f"{sampler} has no brownian option"})
            continue
        groups.append(Group(
            "sdxl", sampler, Side("brownian=False", pipe, {"sampler": sampler, "sampler_kwargs": {"brownian": False}}),
            [Side("Brownian tree (default)", pipe, {"sampler": sampler})], SDE_TIME_TARGET, None))
    return groups, skipped


# --- measurement ---------------------------------------------------------------------------------------------------

class NetworkClock:
    """Seconds spent in the network's forward calls, and their count, from a forward pre-hook and a forward hook."""

    def __init__(self, network, device: str):
        self.device, self.seconds, self.calls, self._start = device, 0.0, 0, 0.0
        self._handles = [network.register_forward_pre_hook(self._enter), network.register_forward_hook(self._leave)]

    def _enter(self, module, args):
        _sync(self.device)
        self._start = time.perf_counter()

    def _leave(self, module, args, output):
        _sync(self.device)
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _status_bytes(field_name: str) -> int:
    """A memory field of /proc/self/status (Linux), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field_name + ":"))
    return int(line.split()[1]) * 1024


def reset_peak_memory(device: str) -> int:
    """Reset the peak-memory counter; returns the memory held now (CUDA: allocated; CPU: resident set)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM (peak resident set) to the current resident set
    return _status_bytes("VmRSS")


def peak_memory(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else _status_bytes("VmHWM")


def run_side(side: Side, inputs: dict, steps: int, clock: NetworkClock, device: str) -> dict:
    """One call of ``side`` (generator seed 0): wall and network seconds, network calls, peak and base memory. The
    garbage collector runs before it, so that no full collection falls inside."""
    gc.collect()
    clock.reset()
    base = reset_peak_memory(device)
    generator = torch.Generator(device).manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    latents = side.pipe(**inputs, **side.options, num_inference_steps=steps, generator=generator).images
    _sync(device)
    wall = time.perf_counter() - start
    peak = peak_memory(device)
    if not torch.isfinite(latents).all():
        raise FloatingPointError(f"{side.label}: non-finite latents from the random-weight network")
    return {"wall_s": wall, "network_s": clock.seconds, "calls": clock.calls, "peak_bytes": peak, "base_bytes": base}


def measure(group: Group, inputs: dict, warm_inputs: dict, settings: Settings, clock: NetworkClock) -> dict:
    """The group's sides in turn, ``settings.repeats`` rounds (order reversed every other round), after a warm-up run
    of each at ``warm_inputs``; label -> its runs."""
    sides = [group.reference, *group.candidates]
    for side in sides:
        run_side(side, warm_inputs, settings.steps, clock, settings.device)
    runs = {side.label: [] for side in sides}
    for i in range(settings.repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            runs[side.label].append(run_side(side, inputs, settings.steps, clock, settings.device))
            r = runs[side.label][-1]
            print(f"  {group.model} {group.case}: {side.label:38s} wall {r['wall_s']:8.3f} s, network "
                  f"{r['network_s']:8.3f} s, {r['calls']} calls", file=sys.stderr, flush=True)
    calls = {r["calls"] for rs in runs.values() for r in rs}
    if len(calls) != 1:
        raise RuntimeError(f"{group.model} {group.case}: the sides made different numbers of network calls {calls}")
    return runs


def spread(values: list[float]) -> dict:
    """Median, quartiles, min and max (one value: all equal to it)."""
    values = sorted(values)
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "quartiles": [quartiles[0], quartiles[2]],
            "min": values[0], "max": values[-1]}


def meets(value: float, target: str) -> bool:
    """``value`` rounded to the digits ``target`` is written with is at most ``target``."""
    digits = len(target.split(".")[1])
    return round(value, digits) <= float(target)


def compare(candidate: list[dict], reference: list[dict], group: Group) -> dict:
    """One candidate against the reference from their runs (round ``i`` of both paired)."""
    calls = candidate[0]["calls"]
    network = statistics.median(r["network_s"] / calls for r in candidate + reference)

    def overhead(runs):
        return statistics.median((r["wall_s"] - r["network_s"]) / calls for r in runs)

    def mib(runs, value):
        return statistics.median(value(r) for r in runs) / 2**20

    def peak(r):
        return r["peak_bytes"]

    def rise(r):
        return r["peak_bytes"] - r["base_bytes"]

    o_cand, o_ref = overhead(candidate), overhead(reference)
    ratio = spread([c["wall_s"] / r["wall_s"] for c, r in zip(candidate, reference)])
    model_ratio = (network + o_cand) / (network + o_ref)
    row = {
        "calls": calls,
        "wall_s": {"candidate": spread([r["wall_s"] for r in candidate]),
                   "reference": spread([r["wall_s"] for r in reference])},
        "time_ratio": ratio,
        "network_ms_per_call": 1e3 * network,
        "overhead_ms_per_call": {"candidate": 1e3 * o_cand, "reference": 1e3 * o_ref},
        "overhead_diff_ms_per_call": 1e3 * (o_cand - o_ref),
        "overhead_fraction": (o_cand - o_ref) / network,
        "model_ratio": model_ratio,
        "peak_mib": {"candidate": mib(candidate, peak), "reference": mib(reference, peak)},
        "rise_mib": {"candidate": mib(candidate, rise), "reference": mib(reference, rise)},
        "time_target": group.time_target,
        "memory_target": group.memory_target,
    }
    base = mib(candidate + reference, lambda r: r["base_bytes"])
    row["memory_ratio"] = row["peak_mib"]["candidate"] / row["peak_mib"]["reference"]
    row["memory_base_mib"] = base
    row["memory_rise_ratio"] = (base + row["rise_mib"]["candidate"]) / (base + row["rise_mib"]["reference"])
    row["meets"] = {"time_ratio": meets(ratio["median"], group.time_target),
                    "model_ratio": meets(model_ratio, group.time_target)}
    if group.memory_target is not None:
        row["meets"].update(memory_ratio=meets(row["memory_ratio"], group.memory_target),
                            memory_rise_ratio=meets(row["memory_rise_ratio"], group.memory_target))
    return row


def model_section(kind: str, settings: Settings) -> tuple[dict, list[dict], list[dict]]:
    """Build ``kind``'s network once, run its comparisons; (model facts, comparison rows, skipped rows)."""
    start = time.perf_counter()
    components = build_components(kind, settings)
    build_s = time.perf_counter() - start
    network = components["unet" if kind == "sdxl" else "transformer"]
    config = network_config(kind, settings)
    facts = {"network": type(network).__name__, "parameters": sum(p.numel() for p in network.parameters()),
             "build_s": build_s}
    if kind == "flux":
        full = {**config, "num_layers": FLUX_DEPTH[0], "num_single_layers": FLUX_DEPTH[1]}
        facts.update(blocks=list(settings.flux_blocks), full_depth_blocks=list(FLUX_DEPTH),
                     full_depth_parameters=parameter_count(kind, full))
    groups = scheduler_groups(kind, components)
    skipped = []
    if kind == "sdxl" and settings.sde:
        sde, skipped = sde_groups(components)
        groups += sde
    inputs = call_inputs(kind, network, settings, settings.resolution)
    warm_inputs = call_inputs(kind, network, settings, WARMUP_RESOLUTION)
    clock = NetworkClock(network, settings.device)
    gc.freeze()  # the objects alive now (modules, pipelines, imports) out of the collector's scans: fast collections
    try:
        first = run_side(groups[0].reference, inputs, 1, clock, settings.device)
        facts.update(text_tokens=inputs["prompt_embeds"].shape[1], first_call_network_s=first["network_s"],
                     first_call_peak_mib=first["peak_bytes"] / 2**20)
        print(f"{kind}: {facts['parameters']:,} parameters, built in {build_s:.1f} s; one call "
              f"{first['network_s']:.3f} s, peak {first['peak_bytes'] / 2**30:.2f} GiB", file=sys.stderr, flush=True)
        rows = []
        for group in groups:
            runs = measure(group, inputs, warm_inputs, settings, clock)
            for side in group.candidates:
                rows.append({"model": kind, "case": group.case, "candidate": side.label,
                             "reference": group.reference.label,
                             **compare(runs[side.label], runs[group.reference.label], group)})
                r = rows[-1]
                print(f"{kind} {group.case}: {side.label} / {group.reference.label}: time ratio "
                      f"{r['time_ratio']['median']:.4f}, low-noise {r['model_ratio']:.4f}, overhead "
                      f"{r['overhead_diff_ms_per_call']:+.2f} ms/call ({100 * r['overhead_fraction']:+.3f} % of the "
                      f"network), memory ratio {r['memory_ratio']:.4f} (rises {r['memory_rise_ratio']:.4f})",
                      file=sys.stderr, flush=True)
    finally:
        clock.remove()
        gc.unfreeze()
    return facts, rows, skipped


def run(settings: Settings, command: str) -> dict:
    import diffusers

    load = os.getloadavg()
    results = {"command": command, "machine": machine(settings.device), "device": settings.device,
               "dtype": settings.dtype, "torch": torch.__version__, "diffusers": diffusers.__version__,
               "dry_run": settings.dry_run, "resolution": settings.resolution, "steps": settings.steps,
               "repeats": settings.repeats, "warmup_resolution": WARMUP_RESOLUTION, "models": {},
               "comparisons": [], "skipped": []}
    for kind in settings.models:
        facts, rows, skipped = model_section(kind, settings)
        results["models"][kind] = facts
        results["comparisons"] += rows
        results["skipped"] += skipped
        gc.collect()  # the network is freed before the next one is built
    results["load"] = [list(load), list(os.getloadavg())]
    return results


# --- report --------------------------------------------------------------------------------------------------------

def _cell(s: dict, digits: int) -> str:
    return (f"{s['median']:.{digits}f} ({s['quartiles'][0]:.{digits}f} to {s['quartiles'][1]:.{digits}f}; "
            f"{s['min']:.{digits}f} to {s['max']:.{digits}f})")


def _mark(row: dict, key: str) -> str:
    met = row["meets"].get(key)
    return "" if met is None else (" yes" if met else " **no**")


def _model_lines(real: dict) -> list[str]:
    lines = []
    for kind, facts in real["models"].items():
        if kind == "sdxl":
            what = ("`UNet2DConditionModel`, SDXL base 1.0's `unet/config.json`" if not real["dry_run"]
                    else "`UNet2DConditionModel`, tiny (dry run)")
            latent = f"1x4x{real['resolution'] // 8}x{real['resolution'] // 8}"
            lines.append(f"- SDXL: {what}, {facts['parameters']:,} parameters, random weights; latents {latent}, "
                         f"{facts['text_tokens']} text tokens, `guidance_scale=1` (no CFG, batch 1). Schedulers: SDXL "
                         "base 1.0's `scheduler_config.json` (EulerDiscreteScheduler: scaled_linear betas 0.00085 to "
                         "0.012, leading spacing, steps_offset 1) and DPMSolverMultistepScheduler from it.")
        else:
            double, single = facts["blocks"]
            what = ("`FluxTransformer2DModel` at FLUX.1-dev's width (`transformer/config.json`)" if not real["dry_run"]
                    else "`FluxTransformer2DModel`, tiny (dry run)")
            tokens = (real["resolution"] // 16) ** 2
            lines.append(f"- FLUX: {what} with {double} double-stream + {single} single-stream blocks (FLUX.1-dev: "
                         f"{facts['full_depth_blocks'][0]} + {facts['full_depth_blocks'][1]}), {facts['parameters']:,} "
                         f"parameters ({facts['full_depth_parameters']:,} at full depth), random weights; packed "
                         f"latents 1x{tokens}x64, {facts['text_tokens']} T5 tokens, embedded guidance 3.5. "
                         "Schedulers: FLUX.1-dev's `scheduler_config.json` (FlowMatchEulerDiscreteScheduler: shift 3, "
                         "dynamic shift mu from 0.5 at 256 to 1.15 at 4096 image tokens) and "
                         "DPMSolverMultistepScheduler from it with flow sigmas, flow prediction, flow_shift 3 and "
                         "dynamic shifting.")
    return lines


def section_lines(real: dict) -> list[str]:
    """Section 6 of RESULTS.md from the ``real_size`` results (``bench.markdown`` renders it too)."""
    before, after = (" ".join(f"{v:.2f}" for v in load) for load in real["load"])
    flux = real["models"].get("flux")
    depth_note = []
    if flux:
        share = flux["parameters"] / flux["full_depth_parameters"]
        depth_note = [
            "", "FLUX depth: the sampler's and scheduler's work per step is a function of the latent (its size and "
            "the schedule), not of the network's depth, and the pipeline's own work does not see it either; the "
            "blocks only add network time. With fewer blocks the overhead is a larger share of a step than at full "
            f"depth: at full depth, with network time roughly proportional to the parameters, the overhead "
            f"fractions of the FLUX rows would be about {share:.2f} times as large."]
    lines = [
        SECTION_TITLE, "",
        f"`{real['command']}` on {real['machine']}. Load average (1, 5, 15 min): {before} before, {after} after."
        + (" **Dry run: tiny networks, not a measurement.**" if real["dry_run"] else ""), "",
        f"{real['resolution']}x{real['resolution']}, {real['steps']} steps, rounds: {real['repeats']} (each side once "
        f"per round, order reversed every other round), {real['dtype']} on {real['device']}; before them one run of "
        f"each side at {real['warmup_resolution']}x{real['warmup_resolution']} and one full-size network call per "
        "model. No text encoders (random prompt embeddings of the right shapes); a tiny 4-block VAE "
        "(`vae_scale_factor` 8) and `output_type=\"latent\"`: no decode on either side. Every run's latents are "
        "finite.", "",
        *_model_lines(real), *depth_note, "",
        "Wall time: median of the rounds' ratios candidate / reference (quartiles; min to max). Network time: the "
        "network's forward calls timed between a forward pre-hook and a forward hook (CUDA: synced at both). "
        "Overhead = wall - network time per model call: everything the pipeline and its scheduler or sampler do. "
        "Both sides make the same network calls on the same shapes, so the network's run-to-run noise can be taken "
        "out: low-noise ratio = (n + o_candidate) / (n + o_reference), n the median network time per call over both "
        "sides' runs. Targets: time ratio at most 1.005 against the parent (SDE rows: Brownian tree within 1.02 of "
        "`brownian=False`), peak memory ratio at most 1.00; met when the ratio, rounded to the target's digits, is at "
        "most the target.", "",
        "| network | case | candidate / reference | calls | wall (s) candidate / reference | time ratio | "
        "overhead (ms/call) candidate / reference | difference (ms/call) | share of the network's call | "
        "low-noise ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in real["comparisons"]:
        lines.append(
            f"| {r['model']} | {r['case']} | {r['candidate']} / {r['reference']} | {r['calls']} | "
            f"{r['wall_s']['candidate']['median']:.3f} / {r['wall_s']['reference']['median']:.3f} | "
            f"{_cell(r['time_ratio'], 4)}{_mark(r, 'time_ratio')} | {r['overhead_ms_per_call']['candidate']:.2f} / "
            f"{r['overhead_ms_per_call']['reference']:.2f} | {r['overhead_diff_ms_per_call']:+.2f} | "
            f"{100 * r['overhead_fraction']:+.3f} % of {r['network_ms_per_call']:.0f} ms | "
            f"{r['model_ratio']:.4f}{_mark(r, 'model_ratio')} |")
    lines += ["", "Peak memory during a run and its rise over the memory held before the run (medians over the side's "
              "runs). The memory held before a run drifts from run to run (the allocator keeps what earlier runs "
              "freed), which moves the peak ratio by the order of the runs; the rise ratio sets both rises on one "
              "base, b the median memory before the runs of both sides: (b + rise_candidate) / (b + "
              "rise_reference).", "",
              "| network | case | candidate / reference | peak (MiB) candidate / reference | peak ratio | "
              "rise (MiB) candidate / reference | rise ratio |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['case']} | {r['candidate']} / {r['reference']} | "
              f"{r['peak_mib']['candidate']:.0f} / {r['peak_mib']['reference']:.0f} | "
              f"{r['memory_ratio']:.4f}{_mark(r, 'memory_ratio')} | {r['rise_mib']['candidate']:.1f} / "
              f"{r['rise_mib']['reference']:.1f} | {r['memory_rise_ratio']:.4f}{_mark(r, 'memory_rise_ratio')} |"
              for r in real["comparisons"]]
    if real["skipped"]:
        lines += ["", "Not measured: " + "; ".join(f"{s['model']} {s['case']} ({s['reason']})"
                                                   for s in real["skipped"]) + "."]
    return lines


def replace_section(markdown: str, section: str) -> str:
    """``markdown`` with its section 6 (from its heading to the next ``## `` heading or the end) replaced by
    ``section``, or ``section`` appended after a blank line; every other byte kept."""
    start = markdown.find("\n" + SECTION_TITLE + "\n")
    if start < 0:
        return markdown + "\n" + section if markdown else section
    end = markdown.find("\n## ", start + 1)
    return markdown[:start + 1] + section + ("\n" + markdown[end + 1:] if end >= 0 else "")


def write_results(real: dict, out: Path) -> None:
    """The ``real_size`` key of RESULTS.json (on CUDA bench.py's RESULTS_cuda_bench.json) and section 6 of the
    matching markdown."""
    name = bench.results_name(real["device"])
    saved = out / f"{name}.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    results["real_size"] = real
    saved.write_text(json.dumps(results, indent=1) + "\n")
    md = out / f"{name}.md"
    md.write_text(replace_section(md.read_text() if md.exists() else "", "\n".join(section_lines(real)) + "\n"))


# --- command line --------------------------------------------------------------------------------------------------

def _pair(text: str) -> tuple[int, int]:
    try:
        double, single = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected D,S (two integers: double and single blocks), got {text!r}")
    if double < 0 or single < 0 or double + single == 0:
        raise argparse.ArgumentTypeError(f"blocks must be >= 0 and not both 0, got {text!r}")
    return double, single


def _models(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(","))
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(MODELS)}, got {text!r}")
    return tuple(n for n in MODELS if n in names)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def settings_from(argv) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--resolution", type=_positive, help="image side in pixels, a multiple of 32 (default 512; "
                                                        "dry run 64)")
    p.add_argument("--steps", type=_positive, default=2, help="sampler steps per run (default 2)")
    p.add_argument("--repeats", type=_positive, default=1, help="rounds of alternating runs (default 1)")
    p.add_argument("--models", type=_models, default=MODELS, help="comma-separated: sdxl,flux (default both)")
    p.add_argument("--flux-blocks", type=_pair, default=(1, 2), metavar="D,S",
                   help="FLUX double-stream and single-stream blocks (default 1,2; FLUX.1-dev has 19,38)")
    p.add_argument("--no-sde", action="store_true", help="skip the SDXL SDE rows (Brownian tree vs brownian=False)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument("--write-results", action="store_true",
                   help="write section 6 of benchmarks/RESULTS.md (RESULTS_cuda_bench.md on CUDA) and its json key")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny networks of the same classes at 64x64: checks the code path in seconds")
    args = p.parse_args(argv)
    resolution = args.resolution or (64 if args.dry_run else 512)
    if resolution % 32:
        p.error(f"--resolution must be a multiple of 32 (SDXL latents divisible by 4, FLUX by 2), got {resolution}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    settings = Settings(args.device, args.dtype, resolution, args.steps, args.repeats, args.models, args.flux_blocks,
                        not args.no_sde, args.dry_run)
    return settings, args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    settings, args = settings_from(argv)
    real = run(settings, " ".join(["python benchmarks/real_size.py", *argv]))
    if args.json:
        args.json.write_text(json.dumps(real, indent=1) + "\n")
    if args.write_results:
        write_results(real, HERE)
    print("\n".join(section_lines(real)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
