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
"""

from __future__ import annotations

import argparse
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
    "uni_pc": ("UniPCMultistepScheduler", {"solver_type": "bh1"},
               ("UniPCMultistepScheduler", {**FLOW_DPM, "solver_type": "bh1"})),
}
# Sampler options timed as extra rows (the multistep SDE samplers' Gaussian noise, diffusers' kind of noise).
OVERHEAD_OPTIONS = {"dpmpp_2m_sde": [{"brownian": False}], "dpmpp_3m_sde": [{"brownian": False}]}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_seconds(run, device: str, repeats: int) -> float:
    run()  # warm-up (allocator, lazy imports, kernels)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scheduler(name: str, config: dict):
    import diffusers

    return getattr(diffusers, name)(**({**SDXL_TABLE, **config} if not name.startswith("FlowMatch") else config))


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
                sample = x
                for t in scheduler.timesteps:
                    if hasattr(scheduler, "scale_model_input"):
                        scheduler.scale_model_input(sample, t)
                    sample = scheduler.step(output, t, sample).prev_sample

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


def markdown(results: dict) -> str:
    lines = [f"# Benchmarks ({results['device']})", "", f"`{results['command']}` on {results['machine']}.", ""]
    lines += ["## 1. Sampler overhead per step (zero-cost denoiser)", "",
              f"{results['steps']} steps, median of {results['repeats']} runs.", "",
              "| sampler | size | diffusers scheduler | ours (us/step) | diffusers (us/step) | ratio |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['size']} | `{r['scheduler']}` | {r['ours_us']:.0f} | {r['diffusers_us']:.0f} | "
              f"{r['ratio']:.2f} |" for r in results["overhead"]]
    if results.get("pipeline"):
        lines += ["", "## 2. Full pipeline on the embedded models (K pipeline / diffusers parent)", "",
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
    lines += ["", "## 3. Accuracy per model call (analytic Gaussian mixture, exact solution)", "",
              "Max |x - exact| over 256 values, float32 state, both sides on the scheduler's own 'trailing' sigmas.",
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
        lines += ["", "## 4. torch.compile of the network (K pipelines)", "",
                  "| model | max abs latent difference to eager | eager (s) | compiled (s) |", "|---|---|---|---|"]
        lines += [f"| {r['kind']} | {r['max_abs_diff']:.1e} | {r['eager_s']:.3f} | {r['compiled_s']:.3f} |"
                  for r in results["compiled"]]
    if results["device"].startswith("cuda"):
        synced = [f"{r['sampler']} ({r['size']}): {r['host_sync']}" for r in results["overhead"]
                  if r["host_sync"] != "none"]
        lines += ["", "Section 1 ran every sampler loop of ours once under `torch.cuda.set_sync_debug_mode(\"error\")`: "
                  + ("no host-device sync." if not synced else "syncs in " + "; ".join(synced))]
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
    p.add_argument("--steps", type=int, default=30, help="steps of the overhead loops")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="fresh processes timing the pipelines")
    p.add_argument("--pipeline-repeats", type=int, default=50, help="alternating runs of both pipelines per process")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    results = {"device": args.device, "command": "python benchmarks/bench.py " + " ".join(argv or sys.argv[1:]),
               "machine": machine(args.device), "steps": args.steps, "repeats": args.repeats, "rounds": args.rounds,
               "pipeline_repeats": args.pipeline_repeats}
    results["overhead"] = overhead(args.device, args.steps, args.repeats, no_sync=cuda)
    if not args.skip_pipeline:
        results["pipeline"] = pipeline(args.device, args.pipeline_steps, args.pipeline_repeats, args.rounds)
    results["accuracy"] = accuracy()
    if cuda:
        results["compiled"] = compiled(args.device, args.pipeline_steps)
    name = "RESULTS" if not cuda else "RESULTS_cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    (args.out / f"accuracy{'_cuda' if cuda else ''}.svg").write_text(accuracy_svg(results["accuracy"]))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
