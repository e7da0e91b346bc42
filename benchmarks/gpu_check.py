"""The GPU check (issue 16): everything GPU-specific in one run that fits a short GPU lease; writes
RESULTS_cuda.md and RESULTS_cuda.json. Run it through ``benchmarks/gpu_check.sh``, whose header gives the command,
the time budget of each part and what it writes.

Parts (each in its own process, forked from this one after the heavy imports, under its own time limit; a part that
fails or runs out of time is recorded as such and the others still run):

- environment: GPU, driver, library versions.
- real_size: ``benchmarks/real_size.py`` at 1024x1024 on the GPU (real-size SDXL and FLUX networks).
- host_sync: every registered sampler through KSDXLPipeline / KFluxPipeline and through KScheduler in their diffusers
  parents, with ``torch.cuda.set_sync_debug_mode("error")`` from the end of the first model call to the end of the
  last (the network, guidance and ``step`` of calls 2..N; the first call's ``step`` starts the sampler, a set-up once
  per run): ok / synced (the first synchronizing op and where) / error.
- dtypes: the same routes in bfloat16 and float16: latents finite, their difference to the float32 run.
- offload: the same routes with ``enable_model_cpu_offload()`` against the pipeline on the GPU.
- bench_*: sections of ``benchmarks/bench.py --device cuda`` (overhead, scheduler, compiled).

``--dry-run`` runs every part on the CPU with tiny settings: the CUDA-only calls (the sync-debug mode, model CPU
offload) are logged no-ops, the outputs go to a temporary folder (never over the committed RESULTS_cuda files).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.util
import json
import multiprocessing
import os
import platform
import runpy
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = "RESULTS_cuda"
TOTAL_S = 460  # wall-clock limit of the parts together (gpu_check.sh stops everything 480 s after its start)
RESERVE_S = 5  # kept back from the last part for writing the results
MIN_PART_S = 10  # a part that would get less is skipped
LOG_TAIL = 40  # lines of each part's output kept in the json and shown for a failed part (all: gpu_check.log)
MODULES = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "greenlet", "torchsde", "scipy", "PIL")
KINDS = ("sdxl", "flux")
ROUTES = ("K pipeline", "KScheduler")  # the K pipeline; KScheduler in its diffusers parent
LOW_DTYPES = ("bfloat16", "float16")
CFG_PP_SCALE = 0.6  # the CFG++ scale the embedded-model tests use (tests/test_embedded_models.py)
OFFLOAD_TOLERANCE = 1e-4  # max |offloaded - on the GPU| relative to the largest latent; the same kernels run
SYNC_MESSAGE = "synchronizing CUDA operation"  # in the RuntimeError of set_sync_debug_mode("error")
PRELOAD = {  # module: the names to touch (lazy modules import them on first access)
    "diffusers": ("AutoencoderKL", "FluxPipeline", "FluxTransformer2DModel", "StableDiffusionXLPipeline",
                  "UNet2DConditionModel"),
    "transformers": ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "T5EncoderModel",
                     "T5TokenizerFast"),
    "k_diffusing.gallery": (), "k_diffusing.pipelines": ("KFluxPipeline", "KSDXLPipeline"), "k_diffusing.scheduler": (),
}


@dataclass(frozen=True)
class Settings:
    """What each part runs: the GPU run's and the dry run's."""

    device: str
    sync_steps: int  # steps of the host-sync runs
    sync_samplers: tuple[str, ...] | None  # None: every registered sampler
    check_steps: int  # steps of the dtype and offload runs
    check_samplers: tuple[str, ...]  # samplers of the dtype and offload runs
    real_size: tuple[str, ...]  # real_size.py's arguments (its --json is added)
    bench: dict[str, tuple[str, ...]] = field(default_factory=dict)  # bench.py section -> its extra arguments
    not_run: dict[str, str] = field(default_factory=dict)  # part -> why these settings leave it out


GPU = Settings(
    device="cuda", sync_steps=4, sync_samplers=None, check_steps=8, check_samplers=("euler", "dpmpp_2m_sde"),
    real_size=("--device", "cuda", "--dtype", "bfloat16", "--resolution", "1024", "--steps", "10", "--repeats", "5"),
    bench={"overhead": ("--steps", "30", "--repeats", "5"),
           "scheduler": ("--steps", "30", "--scheduler-repeats", "40"),
           "compiled": ("--pipeline-steps", "20")},
)
# The dry run: one sampler of each kind the host-sync part tells apart (deterministic, Brownian SDE, CFG++, and
# dpm_adaptive, which no pipeline can run); bench.py's two sections that need no fresh processes and no compiler.
DRY = Settings(
    device="cpu", sync_steps=2, sync_samplers=("euler", "dpmpp_2m_sde", "euler_cfg_pp", "dpm_adaptive"),
    check_steps=2, check_samplers=("dpmpp_2m_sde",), real_size=("--dry-run",),
    bench={"overhead": ("--steps", "2", "--repeats", "2"), "scheduler": ("--steps", "2", "--scheduler-repeats", "2")},
    not_run={"bench_compiled": "dry run: torch.compile on the CPU builds C++ kernels for minutes"},
)
BENCH_NOT_RUN = {
    "pipeline": "not run: it times the pipelines in 6 fresh processes (start-up about 10 s each) with enough runs "
                "for a stable ratio, more than this lease's budget holds (`python benchmarks/bench.py --device cuda "
                "--only pipeline` alone takes several minutes)",
    "accuracy": "not run: the analytic-mixture accuracy runs on the CPU whatever --device says (benchmarks/RESULTS.md)",
}


@dataclass(frozen=True)
class Context:
    """What a part's process gets: the settings, whether this is the dry run, and a scratch folder."""

    settings: Settings
    dry_run: bool
    work: Path


# --- the CUDA-only calls (logged no-ops in the dry run) ----------------------------------------------------------

def sync_debug_mode(ctx: Context, mode: str) -> None:
    """``torch.cuda.set_sync_debug_mode(mode)``; the dry run only logs it (the mode needs CUDA)."""
    import torch

    if ctx.dry_run:
        _log_once(f"dry run: torch.cuda.set_sync_debug_mode({mode!r}) not called (needs CUDA); the host-sync part only "
                  "checks that the pipelines run")
        return
    torch.cuda.set_sync_debug_mode(mode)


def place(ctx: Context, pipe, offload: bool):
    """The pipeline on the device, or (``offload``) with ``enable_model_cpu_offload()`` onto it; the dry run logs the
    offload and moves the pipeline instead (offload needs an accelerator)."""
    if not offload:
        return pipe.to(ctx.settings.device)
    if ctx.dry_run:
        _log_once("dry run: enable_model_cpu_offload() not called (needs CUDA); the offloaded runs are plain runs")
        return pipe.to(ctx.settings.device)
    pipe.enable_model_cpu_offload(device=ctx.settings.device)
    return pipe


def device_facts(ctx: Context) -> dict:
    """The GPU: name, memory, compute capability, CUDA and driver versions; the dry run: none."""
    import torch

    if ctx.dry_run:
        return {"gpu": "none (dry run on the CPU)"}
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device (see `gpu_check.py --preflight`)")
    props = torch.cuda.get_device_properties(0)
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))), "cuda": torch.version.cuda,
            "driver": driver}


@functools.cache
def _log_once(message: str) -> None:
    print(message, flush=True)


# --- parts -------------------------------------------------------------------------------------------------------

def environment(ctx: Context) -> dict:
    """Versions and the device."""
    import importlib.metadata

    import torch

    versions = {name: importlib.metadata.version(name) for name in ("diffusers", "transformers", "accelerate")}
    return {"torch": torch.__version__, **versions, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), **device_facts(ctx)}


def real_size(ctx: Context) -> dict:
    """``benchmarks/real_size.py`` with the settings' arguments; its results json."""
    path = ctx.work / "real_size.json"
    run_script(HERE / "real_size.py", [*ctx.settings.real_size, "--json", str(path)])
    return json.loads(path.read_text())


def host_sync(ctx: Context) -> dict:
    """Every sampler through both routes on both embedded models, the loop under the sync-debug mode."""
    from k_diffusing.registry import get_sampler, list_samplers

    names = ctx.settings.sync_samplers
    specs = list_samplers() if names is None else [get_sampler(name) for name in names]
    control = _sync_control(ctx)
    rows = {spec.name: {} for spec in specs}
    for kind in KINDS:
        for route, pipe in _route_pipelines(ctx, kind, "float32", offload=False).items():
            for spec in specs:
                reason = skip_reason(spec, route)
                rows[spec.name][f"{kind} {route}"] = ({"status": "skipped", "reason": reason} if reason else
                                                      _sync_run(ctx, pipe, kind, route, spec.name))
            print(f"host_sync {kind} {route}: done", flush=True)
    return {"steps": ctx.settings.sync_steps, "control": control, "rows": rows, "dry_run": ctx.dry_run,
            "window": "end of the first model call to the end of the last"}


def dtypes(ctx: Context) -> dict:
    """Latents of each route and sampler in bfloat16 and float16 against float32: finite, max / mean |diff|."""
    rows = []
    for kind in KINDS:
        reference = _check_runs(ctx, kind, "float32", offload=False)
        for dtype in LOW_DTYPES:
            for key, latents in _check_runs(ctx, kind, dtype, offload=False).items():
                rows.append({"kind": kind, "route": key[0], "sampler": key[1], "dtype": dtype,
                             **_difference(latents, reference[key])})
    return {"steps": ctx.settings.check_steps, "rows": rows}


def offload(ctx: Context) -> dict:
    """Latents of each route and sampler with model CPU offload against the pipeline on the device."""
    rows = []
    for kind in KINDS:
        reference = _check_runs(ctx, kind, "float32", offload=False)
        for key, latents in _check_runs(ctx, kind, "float32", offload=True).items():
            diff = _difference(latents, reference[key])
            diff["equal"] = diff["max_abs"] <= OFFLOAD_TOLERANCE * max(diff["scale"], 1e-12)
            rows.append({"kind": kind, "route": key[0], "sampler": key[1], **diff})
    return {"steps": ctx.settings.check_steps, "tolerance": OFFLOAD_TOLERANCE, "rows": rows, "dry_run": ctx.dry_run}


def bench(ctx: Context, section: str) -> dict:
    """One section of ``benchmarks/bench.py`` in its own output folder; its results json."""
    out = ctx.work / f"bench_{section}"
    argv = ["--device", ctx.settings.device, "--only", section, *ctx.settings.bench[section], "--out", str(out)]
    run_script(HERE / "bench.py", argv)
    (saved,) = out.glob("*.json")
    return json.loads(saved.read_text())


def run_script(path: Path, argv: list[str]) -> None:
    """Run a script as its command line would (``python path *argv``), in this process: it shares the imports
    already made. A nonzero exit raises."""
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(ROOT)} is not there")
    _importable()
    saved = sys.argv
    sys.argv = [str(path), *argv]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise RuntimeError(f"{path.name} exited with status {done.code}") from None
    finally:
        sys.argv = saved


# --- pipeline runs -----------------------------------------------------------------------------------------------

def skip_reason(spec, route: str) -> str | None:
    """Why ``spec`` cannot run in ``route``, or None."""
    from k_diffusing.scheduler import UNPLANNABLE

    if spec.name in UNPLANNABLE:
        return (f"{spec.name} chooses its model calls from the data (adaptive step size): no pipeline can be given its "
                "timesteps upfront, KScheduler and the K pipelines refuse it (functional API only)")
    if spec.needs_uncond and route == "KScheduler":
        return "CFG++ needs the unconditional prediction, which only the K pipelines hand to the scheduler"
    return None


def _load(kind: str, dtype: str):
    """The embedded K pipeline in ``dtype``, on the CPU."""
    import torch

    from k_diffusing.gallery import load_pipeline

    pipe = load_pipeline(kind, f"embedded:{kind}", "cpu", getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _route_pipelines(ctx: Context, kind: str, dtype: str, offload: bool) -> dict:
    """Route -> its pipeline on the device (or offloaded to it): the K pipeline, and its diffusers parent with the
    loaded native scheduler (:func:`run_route` swaps in a KScheduler per run). Without offload the parent shares the
    K pipeline's components; with it, it gets its own (offload hooks belong to one pipeline)."""
    from k_diffusing.pipelines.common import diffusers_parent

    k_pipe = _load(kind, dtype)
    parent = diffusers_parent(type(k_pipe))(**(_load(kind, dtype) if offload else k_pipe).components)
    parent.set_progress_bar_config(disable=True)
    return {"K pipeline": place(ctx, k_pipe, offload), "KScheduler": place(ctx, parent, offload)}


def _options(kind: str, pipe, sampler: str, steps: int) -> dict:
    """The call's arguments; CFG++ samplers get a CFG++ scale (FLUX: true CFG with an empty negative prompt)."""
    from k_diffusing.gallery import DEFAULT_PROMPTS, pipeline_options
    from k_diffusing.registry import get_sampler

    options = {**pipeline_options(kind, pipe, steps), "prompt": DEFAULT_PROMPTS[0], "output_type": "latent"}
    if get_sampler(sampler).needs_uncond:
        options.update({"guidance_scale": CFG_PP_SCALE} if kind == "sdxl" else
                       {"true_cfg_scale": CFG_PP_SCALE, "negative_prompt": ""})
    return options


def run_route(pipe, kind: str, route: str, sampler: str, steps: int, **extra):
    """Latents of one run from the same seed: the K pipeline with ``sampler=``, or the parent with a KScheduler for
    ``sampler`` made from its native scheduler for this run (the generator handed to it too: FluxPipeline passes none
    to ``step``)."""
    import torch

    from k_diffusing import KScheduler

    generator = torch.Generator(pipe._execution_device).manual_seed(0)
    options = {**_options(kind, pipe, sampler, steps), **extra}
    if route == "K pipeline":
        return pipe(generator=generator, sampler=sampler, **options).images
    native = pipe.scheduler
    pipe.scheduler = KScheduler.from_scheduler(native, sampler=sampler)
    pipe.scheduler.set_generator(generator)
    try:
        return pipe(generator=generator, **options).images
    finally:
        pipe.scheduler = native


def _sync_run(ctx: Context, pipe, kind: str, route: str, sampler: str) -> dict:
    """One run with the sync-debug mode on from the first ``callback_on_step_end`` to the last."""
    def window(pipeline, i, t, callback_kwargs):
        sync_debug_mode(ctx, "error" if i < pipeline.num_timesteps - 1 else "default")
        return {}

    try:
        run_route(pipe, kind, route, sampler, ctx.settings.sync_steps, callback_on_step_end=window)
    except Exception as raised:  # a sync, or any other failure: recorded, the other runs go on
        error = _origin(raised)
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f"{_short_path(frame.filename)}:{frame.lineno} `{frame.line}`"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        status = "synced" if SYNC_MESSAGE in str(error) else "error"
        return {"status": status, "message": f"{type(error).__name__}: {message}", "where": where}
    finally:
        sync_debug_mode(ctx, "default")
    return {"status": "ran" if ctx.dry_run else "ok"}


def _origin(error: BaseException) -> BaseException:
    """The sync that started a chain of exceptions (cleanup code that ran while the mode was still on can raise
    again), else ``error``."""
    first = error
    while first.__context__ is not None:
        first = first.__context__
    return first if SYNC_MESSAGE in str(first) else error


def _sync_control(ctx: Context) -> str:
    """That the mode catches a sync at all: ``.item()`` of a device tensor must raise under it."""
    import torch

    if ctx.dry_run:
        return "not run (dry run)"
    value = torch.ones(1, device=ctx.settings.device)
    sync_debug_mode(ctx, "error")
    try:
        value.item()
    except RuntimeError as error:
        if SYNC_MESSAGE in str(error):
            return "raised, as it should: " + str(error).splitlines()[0]
        raise
    finally:
        sync_debug_mode(ctx, "default")
    raise RuntimeError("set_sync_debug_mode('error') let .item() through: the host-sync results would mean nothing")


def _check_runs(ctx: Context, kind: str, dtype: str, offload: bool) -> dict:
    """``{(route, sampler): latents on the CPU}`` of the check samplers through both routes."""
    results = {}
    for route, pipe in _route_pipelines(ctx, kind, dtype, offload).items():
        for sampler in ctx.settings.check_samplers:
            latents = run_route(pipe, kind, route, sampler, ctx.settings.check_steps)
            results[route, sampler] = latents.float().cpu()
    return results


def _difference(latents, reference) -> dict:
    """Finite, max and mean |latents - reference|, and the reference's largest |value| (the scale)."""
    import torch

    diff = (latents - reference).abs()
    return {"finite": bool(torch.isfinite(latents).all()), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "scale": float(reference.abs().max())}


def _short_path(filename: str) -> str:
    """A traceback file name relative to the ``sys.path`` entry it was imported from (``k_diffusing/...``,
    ``diffusers/...``)."""
    for entry in sorted(filter(None, [*sys.path, str(ROOT)]), key=len, reverse=True):
        if filename.startswith(entry.rstrip("/") + "/"):
            return filename[len(entry.rstrip("/")) + 1:]
    return filename


# --- checks: what makes a part that ran fail -------------------------------------------------------------------

def _no_problems(result: dict) -> list[str]:
    return []


def sync_problems(result: dict) -> list[str]:
    """Runs that failed for another reason than a sync (a sync is a finding, reported, not a failure)."""
    return [f"{sampler} ({route}): {cell['message']} at {cell['where']}" for sampler, cells in result["rows"].items()
            for route, cell in cells.items() if cell["status"] == "error"]


def dtype_problems(result: dict) -> list[str]:
    return [f"{r['kind']} {r['route']} {r['sampler']} {r['dtype']}: latents not finite" for r in result["rows"]
            if not r["finite"]]


def offload_problems(result: dict) -> list[str]:
    return [f"{r['kind']} {r['route']} {r['sampler']}: max |diff| {r['max_abs']:.3g} (scale {r['scale']:.3g})"
            for r in result["rows"] if not (r["finite"] and r["equal"])]


# --- the run -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """A part: its name, its title in RESULTS_cuda.md, its time budget, what it runs and what fails it."""

    name: str
    title: str
    budget_s: int
    run: Callable[[Context], dict]
    problems: Callable[[dict], list[str]] = _no_problems


PARTS = (
    Part("environment", "Environment", 20, environment),
    Part("real_size", "Real-size SDXL and FLUX networks (benchmarks/real_size.py)", 120, real_size),
    Part("host_sync", "Host syncs in the sampling loop", 90, host_sync, sync_problems),
    Part("dtypes", "bfloat16 and float16 against float32", 30, dtypes, dtype_problems),
    Part("offload", "enable_model_cpu_offload() against the pipeline on the device", 30, offload, offload_problems),
    Part("bench_overhead", "bench.py section 1", 30, functools.partial(bench, section="overhead")),
    Part("bench_scheduler", "bench.py section 5", 30, functools.partial(bench, section="scheduler")),
    Part("bench_compiled", "bench.py section 4", 90, functools.partial(bench, section="compiled")),
)
BY_NAME = {part.name: part for part in PARTS}


def preflight(dry_run: bool) -> int:
    """Before the run, in a process of its own (a CUDA call here would keep the parts' forked processes from using
    CUDA): the modules are there and, unless a dry run, torch sees a CUDA device. 0, or 3 with what to do."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu_check: {sys.executable} lacks {', '.join(missing)}. Here: `bash setup.sh`. On a GPU machine "
              "without network (its python3 has CUDA torch, transformers and accelerate): carry wheels, see the header "
              "of benchmarks/gpu_check.sh (--fetch-wheels here, --wheels there).", file=sys.stderr)
        return 3
    if dry_run:
        return 0
    import torch

    if torch.cuda.is_available():
        return 0
    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if _on_path("nvidia-smi") else None
    build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    if smi is not None and smi.returncode == 0:
        print(f"gpu_check: nvidia-smi sees {smi.stdout.strip()}, but {sys.executable}'s torch {torch.__version__} "
              f"({build}) has no CUDA device. Use an interpreter with CUDA torch (PYTHON=python3 on the lent GPU "
              "machine: its image has one) or, with network, install one: TORCH_INDEX_URL="
              "https://download.pytorch.org/whl/cu128 bash setup.sh in a fresh .venv (README, Install).",
              file=sys.stderr)
    else:
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, {build}; no nvidia-smi GPU). To check the "
              "script itself on the CPU: bash benchmarks/gpu_check.sh --dry-run", file=sys.stderr)
    return 3


def _on_path(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def preload() -> None:
    """Import what the parts use, before they fork, so that each starts with the imports made (diffusers and
    transformers import on attribute access). No CUDA call here."""
    for module, names in PRELOAD.items():
        loaded = importlib.import_module(module)
        for name in names:
            getattr(loaded, name)
    importlib.import_module("diffusers").utils.logging.disable_progress_bar()
    importlib.import_module("transformers").utils.logging.disable_progress_bar()


def _child(part: Part, ctx: Context, result_path: Path, log_path: Path) -> None:
    """A part's process: its own process group (a timeout kills what it started too), its output to its log, its
    result (or the error) to ``result_path``."""
    os.setpgrp()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for fd in (1, 2):  # what subprocesses and C code write
        os.dup2(log, fd)
    # Python's streams on them, line-buffered: a kill at the time limit loses no finished line
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
    if ctx.dry_run:
        import torch

        torch.set_num_threads(1)  # the tiny models gain nothing from threads on a small shared machine
    try:
        outcome = {"result": part.run(ctx)}
    except BaseException:  # recorded; the parent decides what it means
        traceback.print_exc()
        outcome = {"error": traceback.format_exc(limit=-8)}
    result_path.write_text(json.dumps(outcome, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_part(part: Part, ctx: Context, timeout: float, log: Path) -> dict:
    """Run ``part`` in a forked process for at most ``timeout`` seconds; its record (status ok / failed / timed out,
    seconds, the result or error, the checks' problems, the end of its output). Its output is appended to ``log``."""
    result_path, part_log = ctx.work / f"{part.name}.json", ctx.work / f"{part.name}.log"
    process = multiprocessing.get_context("fork").Process(target=_child, args=(part, ctx, result_path, part_log),
                                                          name=f"gpu_check {part.name}")
    start = time.monotonic()
    process.start()
    try:
        process.join(timeout)
        timed_out = process.is_alive()
    finally:
        if process.is_alive():
            _kill(process)
    record = {"budget_s": part.budget_s, "timeout_s": round(timeout), "seconds": round(time.monotonic() - start, 1)}
    if timed_out:
        record.update(status="timed out", error=f"stopped at its limit of {timeout:.0f} s")
    elif not result_path.exists():
        record.update(status="failed", error=f"its process died (exit status {process.exitcode})")
    else:
        outcome = json.loads(result_path.read_text())
        found = part.problems(outcome["result"]) if "result" in outcome else []
        record.update(outcome, status="failed" if "error" in outcome or found else "ok", problems=found)
    output = part_log.read_text(errors="replace") if part_log.exists() else ""
    with log.open("a") as combined:
        combined.write(f"===== {part.name}: {record['status']} in {record['seconds']} s =====\n{output}\n")
    record["log_tail"] = output.splitlines()[-LOG_TAIL:]
    return record


def _kill(process) -> None:
    """Kill a part's process group (the part and anything it started)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.join()


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args, out: Path, log: Path) -> dict:
    """All parts (``args.only``: those, the environment and the earlier run's other parts), within TOTAL_S; the
    record is written after each part."""
    settings = DRY if args.dry_run else GPU
    start = time.monotonic()
    record = _earlier(out, args.dry_run) if args.only else {}
    record.update(command=os.environ.get("GPU_CHECK_COMMAND") or _command("gpu_check.py", args.argv),
                  date=_now(), dry_run=args.dry_run, device=settings.device, budget_s=TOTAL_S)
    parts = record.setdefault("parts", {})
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        ctx = Context(settings, args.dry_run, Path(work))
        for part in PARTS:
            if args.only and part.name not in args.only and part.name != "environment":
                continue
            left = start + TOTAL_S - RESERVE_S - time.monotonic()
            stopped = None
            entry = _not_running(part, settings, parts, left)
            if entry is None:
                print(f"gpu_check: {part.name} (at most {min(part.budget_s, left):.0f} s) ...", flush=True)
                try:
                    entry = run_part(part, ctx, min(part.budget_s, left), log)
                except KeyboardInterrupt as stop:  # SIGTERM (the hard stop) or ^C: record, write, stop
                    entry, stopped = {"status": "failed", "error": f"gpu_check was stopped ({stop})"}, stop
            parts[part.name] = {**entry, "date": record["date"], "command": record["command"]}
            print(f"gpu_check: {part.name}: {entry['status']}"
                  + (f" in {entry['seconds']} s" if "seconds" in entry else f" ({entry.get('reason', '')})"),
                  flush=True)
            record["seconds"] = round(time.monotonic() - start, 1)
            write_results(out, record)
            if stopped is not None:
                raise stopped
    return record


def _not_running(part: Part, settings: Settings, parts: dict, left: float) -> dict | None:
    """The record of a part that does not run now (the settings leave it out, the environment part failed, less than
    MIN_PART_S of the total is ``left``), or None."""
    if part.name in settings.not_run:
        return {"status": "not run", "reason": settings.not_run[part.name]}
    if part.name != "environment" and parts["environment"]["status"] != "ok":
        return {"status": "skipped", "reason": "the environment part failed (its error says why)"}
    if left < MIN_PART_S:
        return {"status": "skipped", "reason": f"the total budget ({TOTAL_S} s) was spent"}
    return None


def failed(record: dict) -> list[str]:
    """The parts that failed, timed out or were skipped."""
    return [name for name, part in record["parts"].items() if part["status"] not in ("ok", "not run")]


def _earlier(out: Path, dry_run: bool) -> dict:
    """The record of the last run in ``out`` if it was of the same kind (dry or not), else none (``--only`` keeps
    its other parts)."""
    path = out / f"{RESULTS}.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    return record if record.get("dry_run") == dry_run else {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _command(script: str, argv) -> str:
    """The command line of a benchmarks/ script, as a shell would take it."""
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, argv)])


def _module(name: str):
    """``benchmarks/<name>.py`` imported as the scripts import each other."""
    _importable()
    return importlib.import_module(name)


def _importable() -> None:
    """``benchmarks/`` on ``sys.path``, as for a script run from there (real_size.py imports bench)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


# --- RESULTS_cuda.md / .json ---------------------------------------------------------------------------------------

def write_results(out: Path, record: dict) -> None:
    """``RESULTS_cuda.json`` and ``RESULTS_cuda.md`` in ``out`` (each written whole, then renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("json", json.dumps(record, indent=1) + "\n"), ("md", markdown(record))):
        path = out / f"{RESULTS}.{suffix}"
        temporary = path.with_suffix(f".{suffix}.tmp")
        temporary.write_text(text)
        temporary.replace(path)


def markdown(record: dict) -> str:
    parts = record["parts"]
    env = parts.get("environment", {}).get("result", {})
    title = "GPU check: DRY RUN on the CPU (tiny settings; no GPU results)" if record["dry_run"] else "GPU check"
    machine = ", ".join(f"{key} {env[key]}" for key in ("gpu", "gpu_memory_gib", "capability", "cuda", "driver",
                                                          "torch", "diffusers", "transformers", "accelerate", "python")
                        if key in env)
    lines = [f"# {title}", "", f"`{record['command']}`, {record['date']}; {machine or 'environment unknown'}.", "",
             f"Written by `benchmarks/gpu_check.py` (see `benchmarks/gpu_check.sh`): {record.get('seconds', 0):.0f} s "
             f"of its {record['budget_s']} s budget; every part ran in its own process under its own time limit.", "",
             "| part | status | seconds | limit (s) | run |", "|---|---|---|---|---|"]
    for part in PARTS:
        entry = parts.get(part.name)
        if entry is None:
            continue
        when = ("this run" if entry.get("date") == record["date"] else
                f"earlier: {entry.get('date')}, `{entry.get('command')}`")
        status = entry["status"] + (f" ({entry['reason']})" if "reason" in entry else "")
        lines.append(f"| {part.name} | {status} | {entry.get('seconds', '–')} | {entry.get('timeout_s', '–')} | "
                     f"{when} |")
    for number, (name, render) in enumerate(SECTIONS, 1):
        lines += ["", f"## {number}. {BY_NAME[name].title if name in BY_NAME else name}", ""]
        try:
            lines += render(parts)
        except Exception as error:  # a results format this code does not know: the json still holds them
            lines.append(f"Not rendered ({type(error).__name__}: {error}); {RESULTS}.json holds the results.")
    return "\n".join(lines) + "\n"


def _status(entry: dict | None) -> list[str]:
    """What a part's record says beside its result: why it did not run, its failed checks, its error and output."""
    if entry is None:
        return ["Not run in this record."]
    if entry["status"] in ("not run", "skipped"):
        return [f"{entry['status'].capitalize()}: {entry['reason']}.", ""]
    lines = []
    if entry.get("problems"):
        lines += ["**Failed checks:**", "", *(f"- {problem}" for problem in entry["problems"]), ""]
    if "error" in entry:
        lines += [f"**{entry['status']}** after {entry.get('seconds')} s:", "", "```", entry["error"].rstrip(), "```",
                  "", "Its output ended with:", "", "```", *entry.get("log_tail", []), "```", ""]
    return lines


def _section(parts: dict, name: str, render: Callable[[dict], list[str]]) -> list[str]:
    """A part's status lines, then its result rendered."""
    entry = parts.get(name)
    return _status(entry) + (render(entry["result"]) if entry is not None and "result" in entry else [])


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def md_real_size(parts: dict) -> list[str]:
    def render(result):
        body = _module("real_size").section_lines(result)[1:]  # its own title dropped
        return ["#" + line if line.startswith("#") else line for line in body]

    return _section(parts, "real_size", render)


SYNC_CELLS = {"ok": "ok", "ran": "ran", "synced": "**sync** ({})", "error": "**error** ({})", "skipped": "– ({})"}
DRY_RUN_NOTE = "**Dry run: {} was not called (it needs CUDA){}.**"


def md_host_sync(parts: dict) -> list[str]:
    def render(result):
        routes = [f"{kind} {route}" for kind in KINDS for route in ROUTES]
        notes, reasons, counts = [], {}, {}
        lines = [
            f"Every catalogue sampler (aliases are the same functions), {result['steps']} steps, the embedded models "
            "in float32 on the device, generators on the device. `torch.cuda.set_sync_debug_mode(\"error\")` from "
            f"the {result['window']}: the network, guidance and `step` of calls 2..N (the first call's `step` starts "
            "the sampler, a set-up once per run). K pipeline: KSDXLPipeline / KFluxPipeline; KScheduler: "
            "`KScheduler.from_scheduler(native, sampler=...)` in StableDiffusionXLPipeline / FluxPipeline. CFG++ "
            f"samplers at scale {CFG_PP_SCALE} (FLUX: true CFG, empty negative prompt). Control, `.item()` under the "
            f"mode: {result['control']}.", ""]
        if result["dry_run"]:
            lines += [DRY_RUN_NOTE.format("torch.cuda.set_sync_debug_mode", ": 'ran' says only that the run ran"), ""]
        lines += ["| sampler | " + " | ".join(routes) + " |", "|---|" + "---|" * len(routes)]
        for sampler, cells in result["rows"].items():
            row = []
            for route in routes:
                cell = cells[route]
                counts[cell["status"]] = counts.get(cell["status"], 0) + 1
                if cell["status"] in ("synced", "error"):
                    notes.append(f"{sampler}, {route}: {cell['message']} at {cell['where']}")
                    label = len(notes)
                else:
                    label = reasons.setdefault(cell["reason"], chr(ord("a") + len(reasons))) if "reason" in cell else ""
                row.append(SYNC_CELLS[cell["status"]].format(label))
            lines.append(f"| {sampler} | " + " | ".join(row) + " |")
        lines += ["", "Runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + "."]
        lines += ["", *(f"{i}. {note}" for i, note in enumerate(notes, 1))] if notes else []
        lines += ["", *(f"- ({label}) {reason}" for reason, label in reasons.items())] if reasons else []
        return lines

    return _section(parts, "host_sync", render)


def md_dtypes(parts: dict) -> list[str]:
    def render(result):
        return [f"Latents (`output_type=\"latent\"`) after {result['steps']} steps, each run against the same route "
                "and sampler in float32 (same seed, generators on the device); the pipelines loaded in the dtype "
                "(`from_pretrained(..., dtype=...)`).", "",
                "| model | route | sampler | dtype | finite | max abs diff | mean abs diff | float32 max abs |",
                "|---|---|---|---|---|---|---|---|",
                *(f"| {r['kind']} | {r['route']} | {r['sampler']} | {r['dtype']} | {_yes(r['finite'])} | "
                  f"{r['max_abs']:.2e} | {r['mean_abs']:.2e} | {r['scale']:.2f} |" for r in result["rows"])]

    return _section(parts, "dtypes", render)


def md_offload(parts: dict) -> list[str]:
    def render(result):
        return [f"Latents after {result['steps']} steps (float32) with `enable_model_cpu_offload()` on a pipeline "
                "loaded on the CPU, against the same pipeline moved to the device; equal: max |diff| at most "
                f"{result['tolerance']:g} of the largest latent.", "",
                *([DRY_RUN_NOTE.format("enable_model_cpu_offload()", ": both sides are the same plain run"), ""]
                  if result["dry_run"] else []),
                "| model | route | sampler | finite | max abs diff | equal |", "|---|---|---|---|---|---|",
                *(f"| {r['kind']} | {r['route']} | {r['sampler']} | {_yes(r['finite'])} | {r['max_abs']:.2e} | "
                  f"{_yes(r['equal'])} |" for r in result["rows"])]

    return _section(parts, "offload", render)


def md_bench(parts: dict) -> list[str]:
    """The status of each bench part, then bench.py's own markdown of the sections that ran (their results merged;
    its title dropped, its headings one level down)."""
    merged, lines, details = {"runs": {}}, [], []
    for part in PARTS:
        entry = parts.get(part.name)
        if not part.name.startswith("bench_") or entry is None:
            continue
        lines.append(f"- {part.title} ({part.name}): {entry['status']}"
                     + (f": {entry['reason']}" if "reason" in entry else ""))
        if entry["status"] not in ("ok", "not run", "skipped"):
            details += [f"{part.name}:", "", *_status(entry)]
        result = entry.get("result", {})
        merged.update({key: value for key, value in result.items()
                       if key != "runs" and not (key in ("device", "command", "machine") and key in merged)})
        merged["runs"].update(result.get("runs", {}))
    lines += [f"- bench.py section {section}: {reason}" for section, reason in BENCH_NOT_RUN.items()]
    lines += ["", *details] if details else []
    if "device" in merged:
        body = _module("bench").markdown(merged).splitlines()[1:]
        lines += ["", *("#" + line if line.startswith("#") else line for line in body)]
    return lines


SECTIONS = (("real_size", md_real_size), ("host_sync", md_host_sync), ("dtypes", md_dtypes), ("offload", md_offload),
            ("bench.py --device cuda (sections that fit the budget)", md_bench))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny settings, CUDA-only calls "
                   "logged as no-ops; results to a temporary folder unless --out")
    p.add_argument("--out", type=Path, help=f"folder for {RESULTS}.md/.json (default: benchmarks/; dry run: a new "
                   "temporary folder; never benchmarks/ in a dry run)")
    p.add_argument("--log", type=Path, help="every part's output, one file (default: OUT/gpu_check.log)")
    p.add_argument("--only", nargs="+", choices=[part.name for part in PARTS[1:]], metavar="PART",
                   help="run only these parts (and environment); the other parts' results are kept from OUT's "
                        f"{RESULTS}.json, marked as earlier")
    p.add_argument("--preflight", action="store_true", help="only check the modules and CUDA (exit 3 if missing)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.preflight:
        return preflight(args.dry_run)
    if preflight(dry_run=True):
        return 3
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) if args.dry_run else HERE)
    if args.dry_run and out.resolve() == HERE:
        p.error(f"--dry-run would write over the committed benchmarks/{RESULTS}.*: give another --out")
    log = args.log or out / "gpu_check.log"
    out.mkdir(parents=True, exist_ok=True)
    # A torch.cuda.is_available() during the imports would, without NVML, keep the forked parts from using CUDA.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    preload()
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        record = run(args, out, log)
    except KeyboardInterrupt:
        print(f"gpu_check: stopped; partial results in {out}", file=sys.stderr)
        return 130
    bad = failed(record)
    print(f"gpu_check: {record['seconds']:.0f} s; {out / RESULTS}.md and .json, log {log}; "
          + (f"FAILED: {', '.join(bad)}" if bad else "every part ok"), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
