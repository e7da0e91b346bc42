"""Speed, memory and accuracy of k_diffusing against diffusers, in one run; writes benchmarks/RESULTS.md.

    python benchmarks/bench.py                   # CPU, the full run
    python benchmarks/bench.py --device cuda     # on a GPU: also no host sync in the loops, and torch.compile

1. Per-step sampler overhead with a zero-cost denoiser (it returns its input), ours against the matching diffusers
   scheduler's ``scale_model_input`` + ``step`` loop, at SDXL latent size (1x4x128x128) and FLUX packed size
   (1x4096x64); median of repeated runs; ratio ours / diffusers.
2. A full pipeline run on the embedded models, K pipeline against its diffusers parent with the same scheduler and
   model calls: wall time (fresh processes alternating runs of both; median of the per-pair ratios) and peak memory
   during the timed runs (one fresh process per side; CPU: peak resident set, reset before them; GPU:
   ``torch.cuda.max_memory_allocated``).
3. Accuracy per model call on the analytic Gaussian-mixture denoiser (exact solution by DOP853): max error of each
   sampler at 5, 10, 20, 40 calls, and of the matching diffusers scheduler driven as a k-sampler
   (:func:`k_diffusing.parity.scheduler_sampler`) on the same sigmas; a table and ``accuracy.svg``.
4. (GPU) ``torch.compile`` of the network under the bridge: latents against eager, time of a warm run.
5. KScheduler against the native scheduler it replaces (``KScheduler.from_scheduler(native)``, the equivalent
   k-sampler) per model call: ``scale_model_input`` (where the native loop calls it) + ``step`` around a zero-cost
   network, on SDXL's and FLUX's scheduler configs at both latent sizes, runs of both sides alternating (ratio: median
   of the per-run ratios, with quartiles); and ``set_timesteps`` (KScheduler's includes a dry run of the sampler).

    python benchmarks/bench.py --only scheduler --threads 1 --steady-heap   # one section; the others' results kept

6. Real-size networks: measured by ``benchmarks/real_size.py --write-results`` (its own run), kept in the RESULTS json
   under ``real_size`` and rendered here.
7. Brownian noise off the critical path: the Brownian-tree SDE samplers around a network that takes time but leaves
   the host free (it sleeps, as the host does while a GPU runs the network), at SDXL and FLUX latent sizes: wall time
   per step with the tree computed ahead (the default), with the same tree queried on the sampler's thread, with
   torchsde's tree on the sampler's thread (k-diffusion's noise before), and with ``brownian=False``; and the memory
   the tree holds at FLUX 1024x1024 over 50 steps.

    python benchmarks/bench.py --only sde
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SDXL_SHAPE, FLUX_SHAPE = (1, 4, 128, 128), (1, 4096, 64)
SDXL_TABLE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
FLOW_DPM = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}
# sampler: (diffusers scheduler, SDXL-table config, flow config or None (no flow variant: the VE scheduler is timed
# at the FLUX size too; its overhead does not depend on the geometry))
OVERHEAD_PAIRS = {
    "euler": ("EulerDiscreteScheduler", {}, ("FlowMatchEulerDiscreteScheduler", {})),
    "heun": ("HeunDiscreteScheduler", {}, ("FlowMatchHeunDiscreteScheduler", {})),
    "lms": ("LMSDiscreteScheduler", {}, None),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, ("DPMSolverMultistepScheduler", FLOW_DPM)),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                     ("DPMSolverMultistepScheduler", {**FLOW_DPM, "algorithm_type": "sde-dpmsolver++"})),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                     ("DPMSolverMultistepScheduler", {**FLOW_DPM, "algorithm_type": "sde-dpmsolver++",
                                                      "solver_order": 3})),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}, None),
    "uni_pc": ("UniPCMultistepScheduler", {"solver_type": "bh1"},
               ("UniPCMultistepScheduler", {**FLOW_DPM, "solver_type": "bh1"})),
}
# Sampler options timed as extra rows (the multistep SDE samplers' Gaussian noise, diffusers' kind of noise).
OVERHEAD_OPTIONS = {"dpmpp_2m_sde": [{"brownian": False}], "dpmpp_3m_sde": [{"brownian": False}],
                    "dpmpp_sde": [{"brownian": False}]}
# Sections, in the order of a full run (--only picks some): 1, 2, 3, 4 (GPU), 5, 7 (6 is benchmarks/real_size.py's).
SECTIONS = ("overhead", "pipeline", "accuracy", "compiled", "scheduler", "sde")
# Section 7: the Brownian samplers, and the seconds the emulated network takes per call at each latent size: about
# an H100's SDXL step at 1024x1024 with CFG, and a FLUX.1-dev step at 1024x1024 (assumed round figures, not measured
# here; the point is that any network slower than a tree query hides the query).
SDE_SAMPLERS = ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde")
NETWORK_SECONDS = {"SDXL": 0.07, "FLUX": 0.25}
FLUX_1024_SHAPE = (1, 16, 128, 128)  # FLUX's unpacked latents at 1024x1024 (4096 x 64 packed)


def results_name(device: str) -> str:
    """The results files' name (``.md`` / ``.json``) for ``device``: on a GPU not RESULTS_cuda, which is
    benchmarks/gpu_check.sh's report (it runs some of these sections into it)."""
    return "RESULTS_cuda_bench" if device.startswith("cuda") else "RESULTS"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def steady_heap() -> None:
    """glibc malloc: never trim the heap and serve blocks below 32 MiB (its largest mmap threshold) from it, so that a
    freed full-size temporary is reused rather than handed back to the OS and faulted in again at the next allocation.
    Without it, how often that happens depends on the process's allocation history: it moved the FLUX-size ratios of
    section 5 by up to 2x from one process to the next (0 to 440 page faults per call)."""
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (hasattr(libc, "mallopt") and libc.mallopt(m_trim_threshold, 1 << 30)
            and libc.mallopt(m_mmap_threshold, 32 << 20)):
        raise RuntimeError("--steady-heap needs glibc's mallopt")


def _seconds(run, device: str, setup=None) -> float:
    """The time of one ``run()``, after an untimed ``setup()``."""
    if setup is not None:
        setup()
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def _median_seconds(run, device: str, repeats: int) -> float:
    run()  # warm-up (allocator, lazy imports, kernels)
    return statistics.median(_seconds(run, device) for _ in range(repeats))


def _alternating_seconds(sides: dict, device: str, repeats: int) -> dict[str, list[float]]:
    """``sides``: name -> (setup or None, run). The times of ``repeats`` runs of each side, the sides taking turns
    (order reversed every other round, so that drift and other processes' load fall on all alike), after a warm-up."""
    for setup, run in sides.values():
        _seconds(run, device, setup)
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(_seconds(sides[name][1], device, sides[name][0]))
    return times


def _scheduler(name: str, config: dict, base: dict | None = None):
    """diffusers scheduler ``name`` from ``base`` (default: the SDXL beta table; none for FlowMatch) and ``config``."""
    import diffusers

    if base is None:
        base = {} if name.startswith("FlowMatch") else SDXL_TABLE
    return getattr(diffusers, name).from_config({**base, **config})


def _scheduler_loop(scheduler, sample, output, scale_input: bool, **step_kwargs):
    """A pipeline's denoising loop around a zero-cost network whose output is always ``output``: per timestep (model
    call), ``scale_model_input`` (when ``scale_input``: the pipelines call it where the scheduler has it) and
    ``step(output, t, sample, **step_kwargs)``."""
    for t in scheduler.timesteps:
        if scale_input:
            scheduler.scale_model_input(sample, t)
        out = scheduler.step(output, t, sample, **step_kwargs)
        sample = out[0] if isinstance(out, tuple) else out.prev_sample
    return sample


def overhead(device: str, steps: int, repeats: int, no_sync: bool) -> list[dict]:
    """Section 1: seconds per step of each sampler loop around a zero-cost denoiser."""
    from k_diffusing.registry import get_sampler

    def zero_cost(x, sigma, **_):
        return x

    rows = []
    cases = [(sampler, options, pair) for sampler, pair in OVERHEAD_PAIRS.items()
             for options in [{}, *OVERHEAD_OPTIONS.get(sampler, [])]]
    for sampler, options, (name, config, flow) in cases:
        label = " ".join([sampler, *(f"{k}={v!r}" for k, v in options.items())])
        for size, shape, (sched_name, sched_config) in (("SDXL", SDXL_SHAPE, (name, config)),
                                                      ("FLUX", FLUX_SHAPE, flow or (name, config))):
            scheduler = _scheduler(sched_name, sched_config)
            scheduler.set_timesteps(steps, **_mu(scheduler))
            sigmas = torch.unique_consecutive(scheduler.sigmas).double()  # its own sigmas, for ours too
            x = torch.randn(shape, device=device)
            output = torch.zeros_like(x)
            spec = get_sampler(sampler)
            noise = "generator" in spec.options

            def ours():
                kwargs = {"generator": torch.Generator(device).manual_seed(0)} if noise else {}
                spec(zero_cost, x, sigmas, disable=True, **kwargs, **options)  # CPU sigmas, as the pipelines pass them

            def theirs():
                scheduler.set_timesteps(steps, device=device, **_mu(scheduler))
                _scheduler_loop(scheduler, x, output, hasattr(scheduler, "scale_model_input"))

            sync = None
            if no_sync:  # any host-device sync inside our loop raises
                torch.cuda.set_sync_debug_mode("error")
                try:
                    ours()
                    sync = "none"
                except RuntimeError as error:
                    sync = str(error).splitlines()[0]
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            t_ours, t_theirs = (_median_seconds(f, device, repeats) / steps for f in (ours, theirs))
            rows.append({"sampler": label, "size": size, "scheduler": f"{sched_name}({_short(sched_config)})",
                         "ours_us": 1e6 * t_ours, "diffusers_us": 1e6 * t_theirs, "ratio": t_ours / t_theirs,
                         "host_sync": sync})
            print(f"overhead {label:14s} {size}: ours {1e6 * t_ours:8.1f} us/step, diffusers "
                  f"{1e6 * t_theirs:8.1f} us/step, ratio {t_ours / t_theirs:.2f}", file=sys.stderr, flush=True)
    return rows


def _mu(scheduler) -> dict:
    """FLUX's dynamic shift needs ``mu``; 0 (no shift) keeps the benchmark independent of the image size."""
    return {"mu": 0.0} if scheduler.config.get("use_dynamic_shifting", False) else {}


def _short(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items() if k not in FLOW_DPM or k == "flow_shift")


# --- 7. Brownian noise off the critical path ------------------------------------------------------------------------

def _torchsde_noise(x: torch.Tensor, sigmas: torch.Tensor, seed: int):
    """k-diffusion's Brownian noise as it was: one ``torchsde.BrownianTree`` queried on the sampler's thread."""
    import torchsde

    positive = sigmas[sigmas > 0]
    tree = torchsde.BrownianTree(float(positive.min()), torch.zeros_like(x), float(positive.max()), entropy=seed)

    def noise(sigma, sigma_next):
        a, b = sorted((float(sigma), float(sigma_next)))
        return tree(a, b) / math.sqrt(b - a) * (1 if sigma < sigma_next else -1)

    return noise


def _on_callers_thread(x: torch.Tensor, sigmas: torch.Tensor, seed: int):
    """Our tree, queried on the sampler's thread: a noise sampler without ``plan``, so nothing is computed ahead."""
    from k_diffusing.noise import BrownianTreeNoiseSampler

    positive = sigmas[sigmas > 0]
    tree = BrownianTreeNoiseSampler(x, positive.min(), positive.max(), seed=seed)
    return lambda sigma, sigma_next: tree(sigma, sigma_next)


def sde_noise(steps: int, repeats: int) -> dict:
    """Section 7: seconds per step of each Brownian sampler around a network that sleeps ``NETWORK_SECONDS`` per call
    (its input returned), in four noise set-ups, runs alternating; and the tree's memory at FLUX 1024x1024."""
    from k_diffusing.registry import get_sampler

    rows = []
    for size, shape, (name, config) in (("SDXL", SDXL_SHAPE, ("EulerDiscreteScheduler", {})),
                                         ("FLUX", FLUX_SHAPE, ("FlowMatchEulerDiscreteScheduler", {}))):
        scheduler = _scheduler(name, config)
        scheduler.set_timesteps(steps, **_mu(scheduler))
        sigmas = torch.unique_consecutive(scheduler.sigmas).double()
        x = torch.randn(shape)
        seconds = NETWORK_SECONDS[size]

        def network(x, sigma, **_):
            time.sleep(seconds)
            return x

        for sampler in SDE_SAMPLERS:
            spec = get_sampler(sampler)
            setups = {
                "ahead": lambda: {"generator": torch.Generator().manual_seed(0)},
                "callers_thread": lambda: {"noise_sampler": _on_callers_thread(x, sigmas, 0)},
                "torchsde": lambda: {"noise_sampler": _torchsde_noise(x, sigmas, 0)},
                "gaussian": lambda: {"generator": torch.Generator().manual_seed(0), "brownian": False},
            }
            kwargs = {}
            sides = {label: ((lambda make=make: kwargs.update(options=make())),
                             lambda: spec(network, x, sigmas, disable=True, **kwargs["options"]))
                     for label, make in setups.items()}
            times = _alternating_seconds(sides, "cpu", repeats)
            per_step = {label: statistics.median(t) / steps for label, t in times.items()}
            rows.append({"sampler": sampler, "size": size, "network_s": seconds, "calls": spec.calls_per_step,
                         **{f"{label}_s": v for label, v in per_step.items()},
                         **{f"{label}_ratio": per_step[label] / per_step["gaussian"] for label in setups}})
            print(f"sde {sampler} {size}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in per_step.items()),
                  file=sys.stderr, flush=True)
    return {"steps": steps, "repeats": repeats, "rows": rows, "memory": _tree_memory()}


TREE_MEMORY_RUN = """
import json, math, sys, torch
import torchsde  # imported before the base reading, so that no side counts the module
from diffusers import FlowMatchEulerDiscreteScheduler
from k_diffusing.brownian import DyadicBrownianTree
from k_diffusing.registry import get_sampler
mode, steps, shape = sys.argv[1], int(sys.argv[2]), tuple(json.loads(sys.argv[3]))
def status(field):  # Linux: this process's memory, from /proc
    return int(next(l for l in open("/proc/self/status") if l.startswith(field + ":")).split()[1]) * 1024
scheduler = FlowMatchEulerDiscreteScheduler()
scheduler.set_timesteps(steps)
sigmas, x, held, own_w = scheduler.sigmas.double(), torch.randn(shape), [0], DyadicBrownianTree._w
def counting_w(tree, node):
    value = own_w(tree, node)
    held[0] = max(held[0], len({**tree.cache, **tree.used}))
    return value
DyadicBrownianTree._w = counting_w
options = {"generator": torch.Generator().manual_seed(0), **({"brownian": False} if mode == "gaussian" else {})}
if mode == "torchsde":  # k-diffusion's noise: torchsde's tree queried when the sampler asks
    tree = torchsde.BrownianTree(float(sigmas[-2]), torch.zeros(shape), float(sigmas[0]), entropy=0)
    options = {"noise_sampler": lambda s, t: tree(float(t), float(s)) / math.sqrt(float(s) - float(t))}
base = status("VmRSS")
get_sampler("dpmpp_2m_sde")(lambda x, sigma, **_: x, x, sigmas, disable=True, **options)
print(json.dumps({"rise": status("VmHWM") - base, "held": held[0]}))
"""


def _tree_memory(steps: int = 50) -> dict:
    """The Brownian tree's memory in a dpmpp_2m_sde run at FLUX 1024x1024 over ``steps`` steps (FlowMatchEuler's
    sigmas), around a zero-cost network, each side in a fresh process: the peak resident set's rise during the run
    with the tree and with ``brownian=False``, and the most increments the tree held at once (each one latent's
    size)."""
    runs = {mode: json.loads(_python(TREE_MEMORY_RUN, mode, steps, json.dumps(FLUX_1024_SHAPE)))
            for mode in ("tree", "torchsde", "gaussian")}
    mib = math.prod(FLUX_1024_SHAPE) * 4 / 2**20
    return {"steps": steps, "shape": list(FLUX_1024_SHAPE), "latent_mib": mib,
            "tree_rise_mib": runs["tree"]["rise"] / 2**20, "torchsde_rise_mib": runs["torchsde"]["rise"] / 2**20,
            "gaussian_rise_mib": runs["gaussian"]["rise"] / 2**20, "held_increments": runs["tree"]["held"]}


# --- 2. full pipeline ----------------------------------------------------------------------------------------------

PIPELINE_RUN = """
import json, resource, sys, time, torch
from k_diffusing.gallery import load_pipeline, pipeline_options, DEFAULT_PROMPTS
kind, side, device, steps, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
pipe = load_pipeline(kind, "embedded:" + kind, device, torch.float32)
if side == "diffusers":
    from k_diffusing.pipelines.common import diffusers_parent
    pipe = diffusers_parent(type(pipe))(**pipe.components)
pipe.set_progress_bar_config(disable=True)
options = {**pipeline_options(kind, pipe, steps), "prompt": DEFAULT_PROMPTS[0], "output_type": "latent"}
def run():
    pipe(generator=torch.Generator(device).manual_seed(0), **options)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
def status_kib(field):  # Linux: this process's memory, from /proc
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
run()
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak resident set (VmHWM) to the current one
    base = status_kib("VmRSS")
times = []
for _ in range(repeats):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else status_kib("VmHWM")
print(json.dumps({"times": times, "peak": peak, "base": base}))
"""


PIPELINE_TIMING = """
import json, sys, time, torch
from k_diffusing.gallery import load_pipeline, pipeline_options, DEFAULT_PROMPTS
from k_diffusing.pipelines.common import diffusers_parent
kind, device, steps, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ours = load_pipeline(kind, "embedded:" + kind, device, torch.float32)
theirs = diffusers_parent(type(ours))(**ours.components)
options = {**pipeline_options(kind, ours, steps), "prompt": DEFAULT_PROMPTS[0], "output_type": "latent"}
def timed(pipe):
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    pipe(generator=torch.Generator(device).manual_seed(0), **options)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start
timed(ours), timed(theirs)
pairs = []
for i in range(repeats):  # alternate the order, so that drift (clocks, caches) falls on both sides alike
    if i % 2 == 0:
        a = timed(ours)
        b = timed(theirs)
    else:
        b = timed(theirs)
        a = timed(ours)
    pairs.append((a, b))
print(json.dumps(pairs))
"""


def _python(script: str, *args) -> str:
    """Run ``script`` in a fresh interpreter; its last line of output."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {args} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def _pipeline_side(kind: str, side: str, device: str, steps: int, repeats: int) -> dict:
    """One side in a fresh interpreter (after a warm-up run): its run times, the peak memory during the timed runs
    (CPU: peak resident set, VmHWM reset before the runs; GPU: max_memory_allocated) and the memory before them."""
    return json.loads(_python(PIPELINE_RUN, kind, side, device, steps, repeats))


def pipeline(device: str, steps: int, repeats: int, rounds: int) -> list[dict]:
    """Section 2: time from ``rounds`` fresh processes that each alternate ``repeats`` runs of the K pipeline and of
    its parent on the same components (ratio: median of the per-pair ratios, spread: their quartiles); peak memory
    from one fresh process per side."""
    rows = []
    for kind in ("sdxl", "flux"):
        pairs = [p for _ in range(rounds) for p in json.loads(_python(PIPELINE_TIMING, kind, device, steps, repeats))]
        ratios = sorted(a / b for a, b in pairs)
        quartiles = statistics.quantiles(ratios, n=4)
        peaks = {}
        for side, key in (("k", "ours"), ("diffusers", "diffusers")):
            result = _pipeline_side(kind, side, device, steps, 2)
            peaks[key] = (result["peak"], result["peak"] - result["base"])
        m = {k: v[0] for k, v in peaks.items()}
        extra = {k: v[1] for k, v in peaks.items()}
        rows.append({"kind": kind, "steps": steps, "ours_s": statistics.median(a for a, _ in pairs),
                     "diffusers_s": statistics.median(b for _, b in pairs), "time_ratio": statistics.median(ratios),
                     "ratio_quartiles": [quartiles[0], quartiles[2]], "ours_peak_mb": m["ours"] / 2**20,
                     "diffusers_peak_mb": m["diffusers"] / 2**20, "memory_ratio": m["ours"] / m["diffusers"],
                     "ours_extra_mb": extra["ours"] / 2**20, "diffusers_extra_mb": extra["diffusers"] / 2**20})
        print(f"pipeline {kind}: time ratio {rows[-1]['time_ratio']:.3f}, memory ratio {rows[-1]['memory_ratio']:.3f}",
              file=sys.stderr, flush=True)
    return rows


# --- 3. accuracy per model call ------------------------------------------------------------------------------------

ACCURACY_PAIRS = {  # sampler: (scheduler, config)
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}
CALLS = (5, 10, 20, 40)


def accuracy(calls=CALLS) -> list[dict]:
    """Section 3: max |x - exact| at a budget of model calls, both sides on the scheduler's own sigmas (float32
    state, 'trailing' spacing so that every run starts at sigma_max), from the same exact-marginal noise."""
    from k_diffusing.parity import scheduler_sampler, scheduler_schedule
    from k_diffusing.pipelines.schedulers import equivalent
    from k_diffusing.registry import get_sampler
    from k_diffusing.testing import analytic
    from k_diffusing.testing.convergence import initial_noise

    model = analytic.bimodal()
    rows = []
    for sampler, (name, config) in ACCURACY_PAIRS.items():
        spec = get_sampler(sampler)
        for budget in calls:
            steps = max(1, (budget + spec.calls_per_step - 1) // spec.calls_per_step)
            scheduler = _scheduler(name, {**config, "timestep_spacing": "trailing"})
            sigmas, _ = scheduler_schedule(scheduler, steps)
            x = initial_noise(model, float(sigmas[0]), (1, 256), torch.Generator().manual_seed(0))
            # The mixture oracle stops at a positive sigma; below 1e-5 the ODE (|dx/dsigma| ~ 1) moves < 1e-5.
            exact = model.exact_flow(x, float(sigmas[0]), max(float(sigmas[-1]), 1e-5))
            kwargs = dict(equivalent(scheduler).kwargs)
            ours = spec(model, x.float(), sigmas, disable=True, **kwargs).double()
            theirs = scheduler_sampler(scheduler)(model, x.float(), sigmas).double()
            used = {"ours": _calls(spec, model, x, sigmas, **kwargs),
                    "diffusers": _calls(scheduler_sampler(scheduler), model, x, sigmas)}
            rows.append({"sampler": sampler, "scheduler": name, "budget": budget, "steps": steps,
                         "calls": used["ours"], "diffusers_calls": used["diffusers"],
                         "ours_error": float((ours - exact).abs().max()),
                         "diffusers_error": float((theirs - exact).abs().max())})
    return rows


def _calls(sampler, model, x, sigmas, **kwargs) -> int:
    """How many times ``sampler`` calls the model over ``sigmas``."""
    count = []

    def counted(x_, sigma, **kw):
        count.append(1)
        return model(x_, sigma, **kw)

    counted.geometry = model.geometry
    sampler(counted, x.float(), sigmas, disable=True, **kwargs)
    return len(count)


# --- 4. (GPU) torch.compile of the network under the bridge -------------------------------------------------------

def compiled(device: str, steps: int) -> list[dict]:
    """Section 4: the embedded pipelines with ``torch.compile``d networks, against eager: same latents within
    float32 kernel differences, and the time of a warm run."""
    from k_diffusing.gallery import DEFAULT_PROMPTS, load_pipeline, pipeline_options

    rows = []
    for kind in ("sdxl", "flux"):
        pipe = load_pipeline(kind, f"embedded:{kind}", device, torch.float32)
        pipe.set_progress_bar_config(disable=True)
        options = {**pipeline_options(kind, pipe, steps), "prompt": DEFAULT_PROMPTS[0], "output_type": "latent"}

        def run():
            return pipe(generator=torch.Generator(device).manual_seed(0), **options).images

        eager = run()
        t_eager = _median_seconds(run, device, 5)
        name = "unet" if kind == "sdxl" else "transformer"
        setattr(pipe, name, torch.compile(getattr(pipe, name)))
        out = run()  # compiles
        t_compiled = _median_seconds(run, device, 5)
        rows.append({"kind": kind, "max_abs_diff": float((out - eager).abs().max()), "eager_s": t_eager,
                     "compiled_s": t_compiled})
        print(f"compile {kind}: max diff {rows[-1]['max_abs_diff']:.2e}, eager {t_eager:.3f} s, compiled "
              f"{t_compiled:.3f} s", file=sys.stderr, flush=True)
    return rows


# --- 5. KScheduler against the native schedulers -----------------------------------------------------------------

# The native schedulers KScheduler.from_scheduler(native) runs as their k-sampler equivalent: the discrete ones on SDXL
# base 1.0's scheduler config, FlowMatchEuler on FLUX.1-dev's.
SCHEDULER_PAIRS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                   "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")


def _pipeline_scheduler(name: str, steps: int, device: str) -> tuple:
    """Native scheduler ``name`` on its model's config, and the ``set_timesteps`` keywords its pipeline passes: SDXL
    ``(steps, device)``; FLUX ``sigmas=linspace(1, 1/steps, steps)`` and the dynamic shift ``mu`` of the FLUX packed
    size (FluxPipeline's ``calculate_shift`` of 4096 tokens: 1.15)."""
    import numpy as np

    from k_diffusing.testing.tiny import sdxl_scheduler_config
    from k_diffusing.testing.tiny_flux import flux_scheduler_config

    if not name.startswith("FlowMatch"):
        return _scheduler(name, {}, sdxl_scheduler_config()), {"num_inference_steps": steps, "device": device}
    config = flux_scheduler_config()
    slope = (config["max_shift"] - config["base_shift"]) / (config["max_image_seq_len"] - config["base_image_seq_len"])
    mu = config["base_shift"] + slope * (FLUX_SHAPE[1] - config["base_image_seq_len"])
    return _scheduler(name, {}, config), {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu, "device": device}


def _spread(values) -> dict:
    """Median and quartiles."""
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "quartiles": [q1, q3]}


def _versus(times: dict[str, list[float]], per: int) -> dict:
    """Alternating runs' times (seconds) as microseconds per ``per`` on each side, and the per-round ratios k/native."""
    return {"native_us": _spread([1e6 * t / per for t in times["native"]]),
            "k_us": _spread([1e6 * t / per for t in times["k"]]),
            "ratio": _spread([k / n for k, n in zip(times["k"], times["native"])])}


def scheduler_overhead(device: str, steps: int, repeats: int) -> dict:
    """Section 5: each native scheduler and ``KScheduler.from_scheduler`` of it in a pipeline's loop around a
    zero-cost network (its output a fixed zero tensor), runs of both alternating: microseconds per model call of
    ``scale_model_input`` (where the native scheduler has it: not FlowMatchEuler, whose pipelines never call it) and
    ``step(..., return_dict=False)``, after an untimed ``set_timesteps``; and microseconds per ``set_timesteps``
    (KScheduler's: the base scheduler's schedule on a copy, then a dry run of the sampler for its call plan).
    ``step`` gets the generator where the SDXL pipeline passes one (steps that take it), none for FlowMatch (FLUX)."""
    from k_diffusing import KScheduler
    from k_diffusing.pipelines.schedulers import equivalent

    calls_rows, plan_rows = [], []
    for name in SCHEDULER_PAIRS:
        native, schedule = _pipeline_scheduler(name, steps, device)
        sides = {"native": native, "k": KScheduler.from_scheduler(native)}
        equal = equivalent(native)
        sampler = {"sampler": equal.sampler, "sampler_kwargs": equal.kwargs}
        generator = torch.Generator(device)
        scale_input = hasattr(native, "scale_model_input")
        step_kwargs = {}
        for side, s in sides.items():  # the SDXL pipeline passes its generator to a step that takes one, FLUX's none
            takes = not name.startswith("FlowMatch") and "generator" in inspect.signature(s.step).parameters
            step_kwargs[side] = {"return_dict": False, **({"generator": generator} if takes else {})}

        def set_up(scheduler, schedule=schedule, generator=generator):
            scheduler.set_timesteps(**schedule)
            generator.manual_seed(0)

        for s in sides.values():
            s.set_timesteps(**schedule)
        calls = {side: len(s.timesteps) for side, s in sides.items()}
        if calls["native"] != calls["k"]:
            raise RuntimeError(f"{name}: {calls['native']} native model calls, {calls['k']} KScheduler calls")
        times = _alternating_seconds({side: (None, functools.partial(s.set_timesteps, **schedule))
                                      for side, s in sides.items()}, device, repeats)
        plan_rows.append({"scheduler": name, **sampler, "steps": steps, "calls": calls["k"],
                          **_versus(times, 1)})
        for size, shape in (("SDXL", SDXL_SHAPE), ("FLUX", FLUX_SHAPE)):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
            output = torch.zeros_like(x)
            times = _alternating_seconds(
                {side: (functools.partial(set_up, s),
                        functools.partial(_scheduler_loop, s, x, output, scale_input, **step_kwargs[side]))
                 for side, s in sides.items()}, device, repeats)
            calls_rows.append({"scheduler": name, **sampler, "size": size, "calls": calls["k"],
                               **_versus(times, calls["k"])})
            r = calls_rows[-1]
            print(f"scheduler {name:32s} {size}: native {r['native_us']['median']:8.1f} us/call, K "
                  f"{r['k_us']['median']:8.1f} us/call, ratio {r['ratio']['median']:.2f}", file=sys.stderr, flush=True)
        r = plan_rows[-1]
        print(f"set_timesteps {name:28s}: native {r['native_us']['median']:8.1f} us, K {r['k_us']['median']:8.1f} us, "
              f"ratio {r['ratio']['median']:.2f}", file=sys.stderr, flush=True)
    return {"steps": steps, "repeats": repeats, "calls": calls_rows, "set_timesteps": plan_rows}


# --- report --------------------------------------------------------------------------------------------------------

def machine(device: str) -> str:
    import diffusers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "none used"
    return (f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"diffusers {diffusers.__version__}, Python {platform.python_version()}, GPU {gpu}")


def _run_note(results: dict, section: str) -> list[str]:
    """A section's own run: its command and machine where they are not the header's (``--only``), and the load
    average before and after it."""
    run = results.get("runs", {}).get(section)
    if run is None:
        return []
    same = run["command"] == results["command"] and run["machine"] == results["machine"]
    before, after = (" ".join(f"{v:.2f}" for v in load) for load in run["load"])
    heap = (" glibc heap held steady (`--steady-heap`: no trimming, no mmap below 32 MiB), so that freed temporaries "
            "are reused instead of faulted in again." if run.get("steady_heap") else "")
    return [("" if same else f"`{run['command']}` on {run['machine']}. ")
            + f"Load average (1, 5, 15 min; `uptime`): {before} before, {after} after.{heap}", ""]


def _spread_cell(spread: dict, digits: int) -> str:
    return f"{spread['median']:.{digits}f} ({spread['quartiles'][0]:.{digits}f} to {spread['quartiles'][1]:.{digits}f})"


def markdown(results: dict) -> str:
    lines = [f"# Benchmarks ({results['device']})", "", f"`{results['command']}` on {results['machine']}.", ""]
    if results.get("overhead"):
        lines += ["## 1. Sampler overhead per step (zero-cost denoiser)", "", *_run_note(results, "overhead"),
                  f"{results['steps']} steps, median of {results['repeats']} runs.", "",
                  "| sampler | size | diffusers scheduler | ours (us/step) | diffusers (us/step) | ratio |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['sampler']} | {r['size']} | `{r['scheduler']}` | {r['ours_us']:.0f} | {r['diffusers_us']:.0f} "
                  f"| {r['ratio']:.2f} |" for r in results["overhead"]]
    if results.get("pipeline"):
        lines += ["", "## 2. Full pipeline on the embedded models (K pipeline / diffusers parent)", "",
                  *_run_note(results, "pipeline"),
                  f"Time: {results['rounds']} fresh processes, each alternating {results['pipeline_repeats']} runs of both "
                  "pipelines on the same components; time ratio = median of the per-pair ratios (quartiles in brackets). "
                  "Memory: one fresh process per side, peak during the timed runs and its rise over the memory held "
                  "before them.", "",
                  "| model | steps | ours (s) | diffusers (s) | time ratio | ours peak (MiB) | diffusers peak (MiB) | "
                  "memory ratio | rise ours / diffusers (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['kind']} | {r['steps']} | {r['ours_s']:.3f} | {r['diffusers_s']:.3f} | {r['time_ratio']:.3f} "
                  f"({r['ratio_quartiles'][0]:.3f} to {r['ratio_quartiles'][1]:.3f}) | "
                  f"{r['ours_peak_mb']:.1f} | {r['diffusers_peak_mb']:.1f} | {r['memory_ratio']:.3f} | "
                  f"{r['ours_extra_mb']:.1f} / {r['diffusers_extra_mb']:.1f} |" for r in results["pipeline"]]
    if results.get("accuracy"):
        lines += ["", "## 3. Accuracy per model call (analytic Gaussian mixture, exact solution)", "",
                  *_run_note(results, "accuracy"),
                  "Max |x - exact| over 256 values, float32 state, both sides on the scheduler's own 'trailing' "
                  "sigmas.",
                  "", "| sampler | diffusers scheduler | " + " | ".join(f"{c} calls" for c in CALLS) + " |",
                  "|---|---|" + "---|" * len(CALLS)]
        by = {}
        for r in results["accuracy"]:
            by.setdefault((r["sampler"], r["scheduler"]), {})[r["budget"]] = r
        for (sampler, name), cells in by.items():
            lines.append(f"| {sampler} | {name} | " + " | ".join(
                f"{cells[c]['ours_error']:.1e} / {cells[c]['diffusers_error']:.1e}" for c in CALLS) + " |")
        plot = "accuracy_cuda.svg" if results["device"].startswith("cuda") else "accuracy.svg"
        lines += ["", f"Each cell: ours / diffusers. ![accuracy]({plot})"]
    if results.get("compiled"):
        lines += ["", "## 4. torch.compile of the network (K pipelines)", "", *_run_note(results, "compiled"),
                  "| model | max abs latent difference to eager | eager (s) | compiled (s) |", "|---|---|---|---|"]
        lines += [f"| {r['kind']} | {r['max_abs_diff']:.1e} | {r['eager_s']:.3f} | {r['compiled_s']:.3f} |"
                  for r in results["compiled"]]
    if results["device"].startswith("cuda") and results.get("overhead"):
        synced = [f"{r['sampler']} ({r['size']}): {r['host_sync']}" for r in results["overhead"]
                  if r["host_sync"] != "none"]
        lines += ["", "Section 1 ran every sampler loop of ours once under `torch.cuda.set_sync_debug_mode(\"error\")`: "
                  + ("no host-device sync." if not synced else "syncs in " + "; ".join(synced))]
    if results.get("scheduler"):
        sched = results["scheduler"]
        lines += ["", "## 5. KScheduler per model call against the native scheduler (zero-cost network)", "",
                  *_run_note(results, "scheduler"),
                  f"`KScheduler.from_scheduler(native)` (the equivalent k-sampler) against `native`, {sched['steps']} "
                  "steps; discrete schedulers on SDXL base 1.0's scheduler config, FlowMatchEuler on FLUX.1-dev's "
                  "(`sigmas=linspace(1, 1/n, n)`, `mu` of 4096 tokens), set up as their pipelines do. Per model call: "
                  "`scale_model_input` (not for FlowMatchEuler: FLUX pipelines never call it) and "
                  "`step(zeros, t, sample, return_dict=False)`, after an untimed `set_timesteps`. "
                  f"{sched['repeats']} runs of each side, alternating; median (quartiles in brackets); ratio = "
                  "median of the per-run ratios KScheduler / native.", "",
                  "| native scheduler | k-sampler | size | calls | native (us/call) | KScheduler (us/call) | ratio |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['scheduler']} | {r['sampler']} | {r['size']} | {r['calls']} | "
                  f"{_spread_cell(r['native_us'], 0)} | {_spread_cell(r['k_us'], 0)} | {_spread_cell(r['ratio'], 2)} |"
                  for r in sched["calls"]]
        lines += ["", f"`set_timesteps` ({sched['steps']} steps; KScheduler's includes the dry run of the sampler that "
                  "plans its calls), us per call; the last column spreads KScheduler's extra time over the run's model "
                  "calls.", "",
                  "| native scheduler | k-sampler | native (us) | KScheduler (us) | ratio | "
                  "extra per model call (us) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['scheduler']} | {r['sampler']} | {_spread_cell(r['native_us'], 0)} | "
                  f"{_spread_cell(r['k_us'], 0)} | {_spread_cell(r['ratio'], 2)} | "
                  f"{(r['k_us']['median'] - r['native_us']['median']) / r['calls']:.0f} |"
                  for r in sched["set_timesteps"]]
    if results.get("real_size"):
        from real_size import section_lines  # section 6, measured by benchmarks/real_size.py

        lines += ["", *section_lines(results["real_size"])]
    if results.get("sde"):
        sde, memory = results["sde"], results["sde"]["memory"]
        lines += ["", "## 7. Brownian noise off the critical path", "", *_run_note(results, "sde"),
                  f"The Brownian-tree samplers, {sde['steps']} steps on the sigmas of section 1, around a network that "
                  "sleeps per call and returns its input (the host is free while it runs, as while a GPU runs the "
                  f"network: {NETWORK_SECONDS['SDXL'] * 1e3:.0f} ms at the SDXL size, "
                  f"{NETWORK_SECONDS['FLUX'] * 1e3:.0f} ms at the FLUX size). Milliseconds per step, median of "
                  f"{sde['repeats']} alternating runs; in brackets the ratio to `brownian=False` (Gaussian draws). "
                  "Ahead: the default (the tree computes the sampler's planned queries on a worker thread); "
                  "caller's thread: the same tree queried when the sampler asks; torchsde: torchsde's "
                  "`BrownianTree` queried when the sampler asks (k-diffusion's noise, and ours before this change). "
                  "All three give the same noise, bit for bit.", "",
                  "| sampler | size | network calls per step | ahead | caller's thread | torchsde | brownian=False |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['sampler']} | {r['size']} | {r['calls']} | "
                  + " | ".join(f"{r[k + '_s'] * 1e3:.0f} ({r[k + '_ratio']:.3f})"
                               for k in ("ahead", "callers_thread", "torchsde"))
                  + f" | {r['gaussian_s'] * 1e3:.0f} |" for r in sde["rows"]]
        lines += ["", f"Memory at FLUX 1024x1024 (latents {tuple(memory['shape'])}, {memory['latent_mib']:.0f} MiB), "
                  f"dpmpp_2m_sde, {memory['steps']} steps, zero-cost network, each in a fresh process: the peak "
                  f"resident set rose {memory['tree_rise_mib']:.0f} MiB during the run with the tree (torchsde's tree, "
                  f"queried when the sampler asks: {memory['torchsde_rise_mib']:.0f} MiB), "
                  f"{memory['gaussian_rise_mib']:.0f} MiB with `brownian=False`; the tree held at most {memory['held_increments']} increments at once, "
                  "plus at most 3 computed ahead (2 waiting, 1 in progress)."]
    return "\n".join(lines) + "\n"


def accuracy_svg(rows: list[dict]) -> str:
    from k_diffusing.svgplot import line_plot

    series: dict[str, dict[str, list]] = {"ours": {}, "diffusers": {}}
    for r in rows:
        series["ours"].setdefault(r["sampler"], []).append((r["calls"], math.log10(r["ours_error"])))
        series["diffusers"].setdefault(r["sampler"], []).append((r["diffusers_calls"],
                                                                  math.log10(r["diffusers_error"])))
    values = [y for s in series.values() for pts in s.values() for _, y in pts]
    return line_plot([("k_diffusing", series["ours"]), ("diffusers schedulers", series["diffusers"])],
                     "model calls", "log10 max error", (math.floor(min(values)), math.ceil(max(values))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30, help="steps of the loops of sections 1 and 5")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes timing the pipelines")
    p.add_argument("--pipeline-repeats", type=int, default=50, help="alternating runs of both pipelines per process")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--scheduler-repeats", type=int, default=100, help="alternating runs of each side in section 5")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(SECTIONS)}); the others' results are kept from the "
                        "existing RESULTS json and the markdown is regenerated from it")
    p.add_argument("--sde-steps", type=int, default=10, help="steps of section 7's runs (CPU only)")
    p.add_argument("--sde-repeats", type=int, default=3, help="alternating runs of each noise set-up in section 7")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--steady-heap", action="store_true",
                   help="glibc: no heap trimming, no mmap below 32 MiB (steadier CPU timings; see steady_heap)")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steady_heap:
        steady_heap()
    cuda = args.device.startswith("cuda")
    name = results_name(args.device)
    command = "python benchmarks/bench.py " + " ".join(argv or sys.argv[1:])
    sections = args.only or [s for s in SECTIONS if not (s == "pipeline" and args.skip_pipeline)
                             and (s != "compiled" or cuda) and (s != "sde" or not cuda)]
    saved = args.out / f"{name}.json"
    saved_results = json.loads(saved.read_text()) if saved.exists() else {}
    results = saved_results if args.only else {}
    if not results:
        results = {"device": args.device, "command": command, "machine": machine(args.device)}
    if "real_size" in saved_results:  # section 6, written by real_size.py --write-results: kept by a full run too
        results["real_size"] = saved_results["real_size"]
    for section in sections:
        load = os.getloadavg()
        if section == "overhead":
            results.update(steps=args.steps, repeats=args.repeats,
                           overhead=overhead(args.device, args.steps, args.repeats, no_sync=cuda))
        elif section == "pipeline":
            results.update(rounds=args.rounds, pipeline_repeats=args.pipeline_repeats,
                           pipeline=pipeline(args.device, args.pipeline_steps, args.pipeline_repeats, args.rounds))
        elif section == "accuracy":
            results["accuracy"] = accuracy()
        elif section == "compiled":
            results["compiled"] = compiled(args.device, args.pipeline_steps)
        elif section == "scheduler":
            results["scheduler"] = scheduler_overhead(args.device, args.steps, args.scheduler_repeats)
        elif section == "sde":
            results["sde"] = sde_noise(args.sde_steps, args.sde_repeats)
        results.setdefault("runs", {})[section] = {"command": command, "machine": machine(args.device),
                                                   "load": [list(load), list(os.getloadavg())],
                                                   "steady_heap": args.steady_heap}
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    if "accuracy" in sections:
        (args.out / f"accuracy{'_cuda' if cuda else ''}.svg").write_text(accuracy_svg(results["accuracy"]))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
