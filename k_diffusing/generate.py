"""Batch generation: a job file in, one PNG per job out, split over processes by ``accelerate``.

    python -m k_diffusing generate jobs.jsonl --out outputs/run                      # one process
    accelerate launch --num_processes 4 -m k_diffusing generate jobs.jsonl --out outputs/run
    torchrun --nproc_per_node 2 -m k_diffusing generate jobs.jsonl --out outputs/run  # or torchrun

Jobs: a ``.txt`` file (one prompt per line; blank lines and lines starting with ``#`` are skipped) or a ``.jsonl``
file (one JSON object per line with the keys of :data:`JOB_KEYS`; only ``prompt`` is required). What a job leaves
out comes from the command line, then from the pipeline (size: the VAE's ``sample_size``; guidance: the pipeline's
default). Job ``i`` (0-based, in file order) has seed ``--seed + i`` unless it sets one, and is run alone (a batch of
one) with a CPU ``torch.Generator`` seeded by it, so its image does not depend on how many processes run or which
one gets it (on the CPU, bit for bit when every process uses the same number of threads).

Outputs in ``--out``:

- ``{index:05d}-{seed}-{digest}.png``, ``digest`` naming the job's resolved parameters (a changed job gets a new
  name), with the parameters in a PNG text chunk ``parameters`` in AUTOMATIC1111's format (:func:`format_parameters`,
  read back by :func:`read_parameters`), which image viewers and web UIs show;
- ``manifest.jsonl``: one line per job in job order, with its file, parameters and the PNG's SHA-256, or the error
  of a job that failed (written by the first process once all have finished).

Safe to rerun: a job whose PNG exists is skipped (PNGs are written under a temporary name and renamed, so one that
exists is complete), and a rerun with nothing left to do loads no model weights (the default size comes from the
VAE's config); a job that fails while rendering is recorded and the others go on; the exit status is 1 when any job
failed, 2 on bad input: the job file and options are checked before any model is loaded, every job against the
loaded model (:meth:`~k_diffusing.pipelines.common.KPipelineMixin.validate`: sizes, the schedule's range, FLUX
negative prompts, every option) before the first render, and a model that does not load is refused; in all three
cases with a one-line message and nothing written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

MANIFEST = "manifest.jsonl"
# Keys a JSONL job may set, and their types. The seed mode (k_diffusing.seeding): noise "diffusers" (default),
# "comfyui" or "a1111", and A1111's rng / subseed / subseed_strength / eta_noise_seed_delta with "a1111".
JOB_KEYS = {"prompt": str, "negative_prompt": str, "seed": int, "sampler": str, "schedule": str, "steps": int,
            "width": int, "height": int, "guidance_scale": float, "noise": str, "rng": str, "subseed": int,
            "subseed_strength": float, "eta_noise_seed_delta": int}
# The seed-mode keys and their defaults: a job's parameters (and so its digest and file name) list them only when
# they differ, so jobs without a seed mode keep their names.
SEED_MODE_DEFAULTS = {"noise": "diffusers", "rng": "gpu", "subseed": None, "subseed_strength": 0.0,
                      "eta_noise_seed_delta": 0}
A1111_ONLY = ("rng", "subseed", "subseed_strength", "eta_noise_seed_delta")
KINDS = ("sdxl", "flux")
PARAMETERS_KEY = "parameters"  # the PNG text chunk AUTOMATIC1111 writes and reads


class JobError(ValueError):
    """A job file or option that cannot be run; the message names the line."""


@dataclass(frozen=True)
class Job:
    """One image's parameters; ``None`` where the pipeline's default applies (filled in by :func:`resolve`).

    The seed mode (``noise`` and, with "a1111", ``rng``, ``subseed``, ``subseed_strength``, ``eta_noise_seed_delta``)
    is checked as a whole here (``None`` means the default): the A1111 options need ``noise="a1111"``, a variation
    strength needs a variation seed."""

    index: int
    prompt: str
    negative_prompt: str
    seed: int
    sampler: str
    schedule: str | None
    steps: int
    width: int | None
    height: int | None
    guidance_scale: float | None
    model: str
    noise: str = "diffusers"
    rng: str = "gpu"
    subseed: int | None = None
    subseed_strength: float = 0.0
    eta_noise_seed_delta: int = 0

    def __post_init__(self):
        for key, default in SEED_MODE_DEFAULTS.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        where = f"job {self.index}"
        if self.noise != "a1111":
            set_ = [k for k in A1111_ONLY if getattr(self, k) != SEED_MODE_DEFAULTS[k]]
            if set_:
                raise JobError(f"{where}: {', '.join(map(repr, set_))} apply to noise 'a1111' (A1111's seed options), "
                               f"this job has noise {self.noise!r}")
        if self.subseed_strength and self.subseed is None:
            raise JobError(f"{where}: 'subseed_strength' needs a 'subseed' (A1111's variation seed)")

    def file_name(self) -> str:
        return f"{self.index:05d}-{self.seed}-{self.digest()}.png"

    def digest(self) -> str:
        """The first 10 hex digits of the SHA-256 of the job's parameters (canonical JSON, the index left out)."""
        return hashlib.sha256(json.dumps(self.parameters(), sort_keys=True).encode()).hexdigest()[:10]

    def parameters(self) -> dict:
        """The job's values without its index; the seed-mode keys only where they differ from their defaults."""
        return {k: v for k, v in asdict(self).items()
                if k != "index" and not (k in SEED_MODE_DEFAULTS and v == SEED_MODE_DEFAULTS[k])}

    def noise_arguments(self) -> dict:
        """The K pipelines' seed-mode arguments for this job (run alone): ``noise``, ``seed``, ``noise_options``;
        empty for "diffusers" (a CPU generator seeded with the job's seed)."""
        if self.noise == "diffusers":
            return {}
        options = {}
        if self.noise == "a1111":
            options = {"rng": self.rng, "eta_noise_seed_delta": self.eta_noise_seed_delta}
            if self.subseed is not None:
                options.update(subseed=self.subseed, subseed_strength=self.subseed_strength)
        return {"noise": self.noise, "seed": self.seed, "noise_options": options}


# --- the job file ------------------------------------------------------------------------------------------------


def _typed(key: str, value, where: str):
    kind = JOB_KEYS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise JobError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise JobError(f"{where}: {key!r} must be finite, got {value!r}")
    return value


def check_job_values(values: dict, where: str) -> dict:
    """``values`` with A1111 sampler names resolved (``"DPM++ 2M Karras"`` -> dpmpp_2m + karras, unless the job
    names another schedule: then that one, as the pipelines' ``sigma_schedule`` wins) and every value checked;
    JobError naming ``where`` otherwise (also for a sampler the pipelines cannot run: ``dpm_adaptive``)."""
    from .gallery import pipeline_refusal
    from .registry import resolve_sampler
    from .schedules import SCHEDULES

    unknown = sorted(set(values) - set(JOB_KEYS))
    if unknown:
        raise JobError(f"{where}: unknown key(s) {unknown}; a job may set {', '.join(JOB_KEYS)}")
    values = {k: _typed(k, v, where) for k, v in values.items() if v is not None}
    if "prompt" in values and not values["prompt"].strip():
        raise JobError(f"{where}: the prompt is empty")
    if "sampler" in values:
        try:
            spec, implied = resolve_sampler(values["sampler"])
        except ValueError as error:
            raise JobError(f"{where}: {error}") from None
        refusal = pipeline_refusal(spec.name, values["sampler"])
        if refusal is not None:
            raise JobError(f"{where}: {refusal}")
        values["sampler"] = spec.name
        if implied is not None:  # a schedule the job names wins over the name's suffix, as in the pipelines
            values.setdefault("schedule", implied)
    if values.get("schedule") is not None and values["schedule"] not in SCHEDULES:
        from .names import unknown_name

        raise JobError(f"{where}: {unknown_name('sigma schedule', values['schedule'], SCHEDULES)}")
    for key in ("steps", "width", "height"):
        if key in values and values[key] < 1:
            raise JobError(f"{where}: {key!r} must be >= 1, got {values[key]}")
    if "seed" in values and not 0 <= values["seed"] < 2**63:
        raise JobError(f"{where}: 'seed' must be in [0, 2**63), got {values['seed']}")
    _check_seed_mode(values, where)
    return values


def _check_seed_mode(values: dict, where: str) -> None:
    """The seed-mode values of a job line (the whole mode is checked again on the merged :class:`Job`)."""
    from .names import unknown_name
    from .seeding import NOISE_MODES, RNG_SOURCES

    if "noise" in values and values["noise"] not in NOISE_MODES:
        raise JobError(f"{where}: {unknown_name('noise mode', values['noise'], NOISE_MODES)}")
    if "rng" in values:
        values["rng"] = values["rng"].lower()  # A1111 writes "GPU", "CPU", "NV"
        if values["rng"] not in RNG_SOURCES:
            raise JobError(f"{where}: 'rng' must be one of {', '.join(RNG_SOURCES)} (A1111's RNG sources), got "
                           f"{values['rng']!r}")
    if "subseed" in values and not 0 <= values["subseed"] < 2**63:
        raise JobError(f"{where}: 'subseed' must be in [0, 2**63), got {values['subseed']}")
    if "subseed_strength" in values and not 0.0 <= values["subseed_strength"] <= 1.0:
        raise JobError(f"{where}: 'subseed_strength' must be in [0, 1], got {values['subseed_strength']}")
    if "eta_noise_seed_delta" in values and not abs(values["eta_noise_seed_delta"]) < 2**63:
        raise JobError(f"{where}: 'eta_noise_seed_delta' must be in (-2**63, 2**63), got "
                       f"{values['eta_noise_seed_delta']}")
    a1111_only = [k for k in A1111_ONLY if k in values]
    if a1111_only and values.get("noise", "a1111") != "a1111":
        raise JobError(f"{where}: {', '.join(map(repr, a1111_only))} apply to noise 'a1111' (A1111's seed options), "
                       f"the job sets noise {values['noise']!r}")


def read_job_lines(path: Path) -> list[tuple[str, dict]]:
    """``(where, values)`` per job of a ``.txt`` or ``.jsonl`` file, checked (:func:`check_job_values`)."""
    if path.suffix not in (".txt", ".jsonl"):
        raise JobError(f"{path}: a job file is .txt (one prompt per line) or .jsonl (one JSON object per line), "
                       f"got {path.suffix or 'no extension'!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise JobError(f"cannot read the job file: {error}") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        where = f"{path.name}, line {number}"
        if not line.strip() or (path.suffix == ".txt" and line.lstrip().startswith("#")):
            continue
        if path.suffix == ".txt":
            values = {"prompt": line.strip()}
        else:
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                raise JobError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(values, dict):
                raise JobError(f"{where}: a job is a JSON object, got {type(values).__name__}")
            if "prompt" not in values:
                raise JobError(f"{where}: the job has no 'prompt'")
        jobs.append((where, check_job_values(values, where)))
    if not jobs:
        raise JobError(f"{path}: no jobs (every line is blank or a comment)")
    return jobs


def read_jobs(path: Path, defaults: dict, model: str) -> list[Job]:
    """The jobs of ``path``; where a job is silent, ``defaults`` (command-line values, checked the same way), then
    euler on the scheduler's own sigmas at 20 steps. Job ``i`` gets seed ``defaults['seed'] + i`` unless it sets
    one."""
    defaults = check_job_values(defaults, "command line")
    base_seed = defaults.pop("seed", 0)
    builtin = {"negative_prompt": "", "sampler": "euler", "schedule": None, "steps": 20, "width": None,
               "height": None, "guidance_scale": None}
    return [Job(index=index, model=model, **{"seed": base_seed + index, **builtin, **defaults, **values})
            for index, (_, values) in enumerate(read_job_lines(path))]


# --- AUTOMATIC1111's parameters text -------------------------------------------------------------------------------

# One "Key: value" pair of the last line; a value is a JSON string when it holds a comma, colon or newline.
_PAIR = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
NEGATIVE = "Negative prompt: "


def _quote(value) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


def _unquote(text: str) -> str:
    return json.loads(text) if len(text) >= 2 and text[0] == text[-1] == '"' else text


def sampler_display_name(name: str) -> str:
    """A1111's name of a catalogue sampler (``dpmpp_2m`` -> "DPM++ 2M"); the catalogue name where A1111 has none."""
    from .registry import get_sampler

    spec = get_sampler(name)
    return spec.display_names[0] if spec.display_names else spec.name


def schedule_display_name(schedule: str | None) -> str:
    """A1111's "Schedule type" of a catalogue schedule (None, the scheduler's own: "Automatic"); the catalogue name
    where A1111 has none."""
    from .registry import A1111_SCHEDULE_NAMES

    return next((label for label, name in A1111_SCHEDULE_NAMES.items() if name == schedule), schedule)


# The seed mode's keys, as A1111 writes its own (modules/processing.py create_infotext: "Variation seed" and
# "Variation seed strength" when the strength is nonzero, "ENSD", "RNG" when the source is not "GPU"), and ours,
# "Seed mode", for a mode other than "diffusers".
SEED_MODE_LABELS = {"subseed": "Variation seed", "subseed_strength": "Variation seed strength",
                    "eta_noise_seed_delta": "ENSD", "rng": "RNG", "noise": "Seed mode"}


def _seed_mode_pairs(p: dict) -> dict:
    noise = p.get("noise", "diffusers")
    if noise == "diffusers":
        return {}
    pairs = {}
    if noise == "a1111":
        if p.get("subseed") is not None:  # A1111 writes both only with a nonzero strength
            pairs["Variation seed"] = p["subseed"]
        if p.get("subseed_strength"):
            pairs["Variation seed strength"] = p["subseed_strength"]
        if p.get("eta_noise_seed_delta"):  # A1111 writes it only for the samplers that use it; we always do
            pairs["ENSD"] = p["eta_noise_seed_delta"]
        if p.get("rng", "gpu") != "gpu":
            pairs["RNG"] = p["rng"].upper()
    pairs["Seed mode"] = noise
    return pairs


def format_parameters(p: dict, kind: str) -> str:
    """AUTOMATIC1111's ``parameters`` text for the job parameters ``p`` (:meth:`Job.parameters`, resolved): the
    prompt, a ``Negative prompt:`` line when there is one, then ``Key: value`` pairs. FLUX's guidance is its distilled
    guidance, written as Forge writes it (``CFG scale: 1, Distilled CFG Scale: g``). A seed mode adds A1111's
    ``Variation seed``, ``Variation seed strength``, ``ENSD`` and ``RNG`` as A1111 writes them, and ``Seed mode``
    (:data:`SEED_MODE_LABELS`); "diffusers" adds nothing."""
    from . import __version__

    guidance = {"CFG scale": p["guidance_scale"]} if kind == "sdxl" else {
        "CFG scale": 1, "Distilled CFG Scale": p["guidance_scale"]}
    pairs = {"Steps": p["steps"], "Sampler": sampler_display_name(p["sampler"]),
             "Schedule type": schedule_display_name(p["schedule"]), **guidance, "Seed": p["seed"],
             "Size": f"{p['width']}x{p['height']}", "Model": p["model"], **_seed_mode_pairs(p),
             "Version": f"k-diffusing {__version__}"}
    lines = [p["prompt"]]
    if p["negative_prompt"]:
        lines.append(NEGATIVE + p["negative_prompt"])
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """The job parameters in an AUTOMATIC1111 ``parameters`` text (the inverse of :func:`format_parameters`; A1111
    names map back to catalogue names, unknown keys are left out). The seed-mode keys appear only when the text has
    them; A1111's ``RNG`` / ``Variation seed`` / ``ENSD`` without our ``Seed mode`` imply ``noise="a1111"``."""
    from .registry import A1111_SCHEDULES, resolve_sampler

    *head, last = text.split("\n")
    pairs = {key.strip(): _unquote(value.strip()) for key, value in _PAIR.findall(last)}
    if not {"Steps", "Sampler", "Seed", "Size"} <= set(pairs):
        raise ValueError(f"not an AUTOMATIC1111 parameters text (its last line has no Steps/Sampler/Seed/Size): "
                         f"{last!r}")
    negative_at = next((i for i, line in enumerate(head) if line.startswith(NEGATIVE)), len(head))
    negative = "\n".join(head[negative_at:])[len(NEGATIVE):]
    width, height = (int(v) for v in pairs["Size"].split("x"))
    schedule_label = pairs.get("Schedule type", "Automatic")
    return {
        "prompt": "\n".join(head[:negative_at]),
        "negative_prompt": negative,
        "seed": int(pairs["Seed"]),
        "sampler": resolve_sampler(pairs["Sampler"]).spec.name,
        "schedule": A1111_SCHEDULES.get(schedule_label.lower(), schedule_label),
        "steps": int(pairs["Steps"]),
        "width": width,
        "height": height,
        "guidance_scale": float(pairs.get("Distilled CFG Scale", pairs.get("CFG scale"))),
        "model": pairs.get("Model"),
        **_parse_seed_mode(pairs),
    }


def _parse_seed_mode(pairs: dict) -> dict:
    kinds = {"subseed": int, "subseed_strength": float, "eta_noise_seed_delta": int, "rng": str.lower, "noise": str}
    values = {key: kinds[key](pairs[label]) for key, label in SEED_MODE_LABELS.items() if label in pairs}
    if values and "noise" not in values:
        values["noise"] = "a1111"
    return values


def read_parameters(path: Path) -> dict:
    """The job parameters stored in a PNG's ``parameters`` chunk (:func:`parse_parameters`)."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text.get(PARAMETERS_KEY)
    if text is None:
        raise ValueError(f"{path} has no {PARAMETERS_KEY!r} text chunk")
    return parse_parameters(text)


# --- running -------------------------------------------------------------------------------------------------------


def check_kind(jobs: list[Job], kind: str) -> None:
    """What the job file can know of the pipeline family: FLUX jobs take no negative prompt (FluxPipeline uses one
    only with true CFG, ``true_cfg_scale > 1``, which this command does not set)."""
    if kind == "flux":
        negative = [job.index for job in jobs if job.negative_prompt.strip()]
        if negative:
            raise JobError(f"job {negative[0]}: FLUX jobs take no negative prompt (FluxPipeline uses one only with "
                           "true_cfg_scale > 1, which this command does not set)")


def trained_side(kind: str, model: str) -> int:
    """The image side the model was trained at (its VAE's ``sample_size``), read from the VAE's config alone, so a
    rerun with nothing to do loads no weights. :class:`~k_diffusing.gallery.BadArguments` where there is no such
    model (the loader's one-line refusal)."""
    from diffusers import AutoencoderKL

    from .gallery import LOAD_ERRORS, load_refusal, model_location

    try:
        side = AutoencoderKL.load_config(model_location(model), subfolder="vae")["sample_size"]
    except LOAD_ERRORS as error:
        raise load_refusal(kind, model, "--model", error) from None
    return side[0] if isinstance(side, (list, tuple)) else side


def resolve(job: Job, kind: str, side: int) -> Job:
    """``job`` with the pipeline's defaults filled in (size: ``side``, the VAE's ``sample_size``; guidance: the
    pipeline call's default), so that its parameters, file name and PNG chunk say what was run."""
    import inspect

    from .pipelines import KFluxPipeline, KSDXLPipeline

    guidance = job.guidance_scale
    if guidance is None:
        cls = {"sdxl": KSDXLPipeline, "flux": KFluxPipeline}[kind]
        guidance = float(inspect.signature(cls.__call__).parameters["guidance_scale"].default)
    return replace(job, width=job.width or side, height=job.height or side, guidance_scale=guidance)


def job_call(pipe, kind: str, job: Job) -> dict:
    """The pipeline call of a resolved job: the job alone, from a CPU generator seeded by it, or in its seed mode
    (``noise``, ``seed``, ``noise_options``: :meth:`Job.noise_arguments`)."""
    import torch

    from .gallery import pipeline_options

    options = pipeline_options(kind, pipe, job.steps, job.height, job.width, job.guidance_scale)
    negative = {"negative_prompt": job.negative_prompt} if job.negative_prompt else {}
    seeded = job.noise_arguments() or {"generator": torch.Generator("cpu").manual_seed(job.seed)}
    return dict(prompt=job.prompt, sampler=job.sampler, sigma_schedule=job.schedule, output_type="pil", **seeded,
                **negative, **options)


def check_against_model(pipe, kind: str, jobs: list[Job]) -> None:
    """Each job's call checked by the pipeline (:meth:`~k_diffusing.pipelines.common.KPipelineMixin.validate`:
    sizes against the VAE, the schedule against the model's sigma range, every option), before the first render;
    JobError naming the first job the model refuses."""
    for job in jobs:
        try:
            pipe.validate(**job_call(pipe, kind, job))
        except (TypeError, ValueError) as error:
            raise JobError(f"job {job.index}: {error}") from None


def render_png(pipe, kind: str, job: Job) -> bytes:
    """The PNG of a resolved job (:func:`job_call`), with its ``parameters`` chunk."""
    from PIL.PngImagePlugin import PngInfo

    image = pipe(**job_call(pipe, kind, job)).images[0]
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(job.parameters(), kind))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_jobs(pipe, kind: str, jobs: list[Job], out: Path, rank: int = 0, world: int = 1, progress=None) -> list[dict]:
    """Run this process's share of the resolved ``jobs`` (job ``i`` goes to process ``i mod world``) into ``out``;
    one manifest record per job: done (rendered now), skipped (its PNG was there) or failed (with the error).
    ``pipe`` may be None when every PNG is there."""
    from .gallery import save_atomic

    records = []
    for job in jobs[rank::world]:
        record = {"index": job.index}
        try:
            path = out / job.file_name()
            if path.exists():
                record["status"] = "skipped"
            else:
                save_atomic(render_png(pipe, kind, job), path)
                record["status"] = "done"
            record.update(file=path.name, sha256=sha256_file(path), parameters=job.parameters())
        except Exception as error:  # a failing job is recorded and the others go on
            record.update(status="failed", parameters=job.parameters(), error=f"{type(error).__name__}: {error}")
        records.append(record)
        if progress is not None:
            progress.update()
    return records


def manifest_lines(records: list[dict]) -> str:
    """The manifest: one JSON line per job in job order, without the run-dependent status (done or skipped), so
    that a rerun or another process count gives the same file."""
    lines = []
    for record in sorted(records, key=lambda r: r["index"]):
        entry = {k: v for k, v in record.items() if k != "status"}
        entry["ok"] = record["status"] != "failed"
        lines.append(json.dumps(entry, sort_keys=True, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m k_diffusing generate", description=__doc__.splitlines()[0],
                                epilog="Per-job values in the job file override these options.")
    p.add_argument("jobs", type=Path, nargs="?",
                   help=".txt (one prompt per line) or .jsonl (one job object per line); or give --from-png")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; rerun into it to resume)")
    p.add_argument("--from-png", type=Path, nargs="+", metavar="PNG",
                   help="instead of a job file: reproduce images from their metadata (A1111/Forge, ComfyUI or our "
                        "own PNGs; a folder: its *.png files, sorted); see k_diffusing.pnginfo")
    p.add_argument("--best-effort", action="store_true",
                   help="with --from-png: also render files with settings that cannot be honoured (reported)")
    p.add_argument("--kind", choices=KINDS, default="sdxl", help="the pipeline family (default: sdxl)")
    p.add_argument("--model", default=None,
                   help="diffusers folder or hub id (default: embedded:<kind>, the embedded tiny model)")
    p.add_argument("--sampler", default=None, help="catalogue or A1111 name (default: euler)")
    p.add_argument("--schedule", default=None, help="catalogue schedule (default: the scheduler's own)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: 20)")
    p.add_argument("--seed", type=int, default=None, help="job i's seed is seed + i unless it sets one (default 0)")
    p.add_argument("--noise", default=None,
                   help="seed mode: diffusers (default), comfyui or a1111: the noise those programs draw for the seed "
                        "(k_diffusing.seeding); a1111 options are job keys (rng, subseed, subseed_strength, "
                        "eta_noise_seed_delta)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--width", type=int, default=None, help="default: the VAE's sample_size")
    p.add_argument("--height", type=int, default=None, help="default: the VAE's sample_size")
    p.add_argument("--device", default=None, help="default: accelerate's device for this process")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="default: float32 on cpu, bfloat16 otherwise")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .gallery import DTYPES, model_label

    model = args.model or f"embedded:{args.kind}"
    defaults = {"negative_prompt": args.negative_prompt, "seed": args.seed, "sampler": args.sampler,
                "schedule": args.schedule, "steps": args.steps, "width": args.width, "height": args.height,
                "guidance_scale": args.guidance_scale, "noise": args.noise}
    from_png = None  # --from-png: its jobs and per-file outcome (k_diffusing.pnginfo)
    try:
        if args.from_png is not None:
            from .pnginfo import check_from_png_options, from_png_jobs

            check_from_png_options(args, defaults)
            from_png = from_png_jobs(args.from_png, args.kind, model_label(model), args.best_effort)
            if not from_png.jobs:
                raise JobError("none of the --from-png files can be rendered (see above); nothing was written")
            jobs = from_png.jobs
        else:
            if args.jobs is None or args.best_effort:
                raise JobError("give a job file (or --from-png FILE|DIR ...)" if args.jobs is None else
                               "--best-effort applies to --from-png only")
            jobs = read_jobs(args.jobs, {k: v for k, v in defaults.items() if v is not None}, model_label(model))
        check_kind(jobs, args.kind)
    except JobError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .gallery import BadArguments, load_or_refuse

    # On a machine without an accelerator, accelerate treats torchrun's processes as distributed only when told cpu
    state = PartialState(cpu=args.device == "cpu" or not _has_accelerator())
    device = torch.device(args.device) if args.device else state.device
    if device.type == "cpu":  # accelerate says cpu:0 under torchrun; diffusers' SDXL then gives other bits than on cpu
        device = torch.device("cpu")
    dtype = DTYPES[args.dtype or ("float32" if device.type == "cpu" else "bfloat16")]
    try:  # a missing folder, an unreachable hub id, a folder of another family: one line, exit 2
        side = trained_side(args.kind, model)
        jobs = [resolve(job, args.kind, side) for job in jobs]
        pending = [job for job in jobs if not (args.out / job.file_name()).exists()]
        pipe = load_or_refuse(args.kind, model, device, dtype) if pending else None
    except BadArguments as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if pipe is not None:
        try:
            check_against_model(pipe, args.kind, pending)
        except JobError as error:
            print(f"error: {error}; nothing was rendered", file=sys.stderr)
            return 2
        pipe.set_progress_bar_config(disable=True)
    args.out.mkdir(parents=True, exist_ok=True)
    mine = len(jobs[state.process_index::state.num_processes])
    with torch.inference_mode(), tqdm(total=mine, desc=f"process {state.process_index}",
                                      position=state.process_index) as progress:
        records = run_jobs(pipe, args.kind, jobs, args.out, state.process_index, state.num_processes, progress)
    records = gather_object(records)
    if from_png is not None:
        records = from_png.annotate(records)
    failed = [r for r in records if r["status"] == "failed"]
    if state.is_main_process:
        from .gallery import save_atomic

        save_atomic(manifest_lines(records), args.out / MANIFEST)
        counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
        print(f"{len(records)} jobs: {counts['done']} rendered, {counts['skipped']} already there, "
              f"{counts['failed']} failed; manifest: {args.out / MANIFEST}", file=sys.stderr)
        for record in failed:
            print(f"job {record['index']} failed: {record['error']}", file=sys.stderr)
        if from_png is not None and from_png.refused:
            print(f"{from_png.refused} --from-png file(s) or argument(s) refused (see above)", file=sys.stderr)
    state.wait_for_everyone()
    return 2 if from_png is not None and from_png.refused else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
