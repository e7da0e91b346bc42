"""Sampler gallery: one image strip per catalogue sampler and a labelled grid, for an SDXL or a FLUX pipeline.

``test_sdxl.py`` and ``test_flux.py`` at the repository root are this module's command line for each model family;
``python -m k_diffusing gallery`` runs both on the embedded models and can write the README's gallery table.

Samplers the K pipelines cannot run (:data:`k_diffusing.scheduler.UNPLANNABLE`: ``dpm_adaptive``, whose number of
model calls depends on the data, so no timesteps can be given to a pipeline upfront) are left out, and refused when
named with ``--samplers``; they stay available through :mod:`k_diffusing.sampling`. Bad arguments exit with status
2, before any model is loaded; so does a ``--model`` that does not load (one line), before any file is written.

Every sampler gets the same prompts, seeds (one CPU generator per image, ``seed + i``) and number of steps, on the
pipeline's own sigmas unless ``--sigma-schedule`` names one. Outputs: ``<sampler>.png`` (the prompts' images side
by side), ``grid.png`` (one labelled row per sampler), ``gallery.json`` (the settings, and per sampler the model
calls and, when every prompt is a caption of :mod:`k_diffusing.embedded.shapes`, the adherence score of each image
from :mod:`k_diffusing.embedded.score`) and ``timings.json`` (seconds per sampler: they vary from run to run, so
they stay out of ``gallery.json``, and out of git). Files are written under a temporary name and renamed, so an
interrupted run leaves only complete files.

Where: ``--out DIR``; by default :data:`RUNS` ``/<kind>``, which git ignores. The committed goldens in
:data:`GOLDENS` (the README's gallery table, the image-diff regression) are written only with ``--update-goldens``.

The default model is the embedded one of the family (:data:`EMBEDDED`, trained by
:mod:`k_diffusing.embedded.train_sdxl` / :mod:`k_diffusing.embedded.train_flux`), named ``embedded:sdxl`` /
``embedded:flux``; ``--model`` takes any diffusers folder or hub id of the family, for example real SDXL or FLUX
weights on a GPU. ``gallery.json`` records the embedded models by that name, so the record does not depend on where
the checkout lies, and any other model as given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent
EMBEDDED = {
    "sdxl": PACKAGE / "embedded" / "models" / "sdxl",
    "flux": PACKAGE / "embedded" / "models" / "flux",
}
DEFAULT_PROMPTS = (
    "a large red circle on the left, blue background",
    "a small yellow square at the top, black background",
    "a large white triangle in the center, green background",
    "a small blue circle on the right, white background",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GOLDENS = Path("outputs") / "gallery"  # committed: the README's gallery table and the image-diff regression's goldens
RUNS = Path("outputs") / "runs"  # the default output folder (git ignores it)
CELL = 96  # pixels per image in grid.png (small images are scaled up, nearest neighbour)


# --- arguments ---------------------------------------------------------------------------------------------------


class BadArguments(SystemExit):
    """Command-line input the gallery cannot run: exit status 2 (as argparse's own errors and ``generate``);
    ``str()`` is the message, which :func:`main` prints."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2


def pipeline_refusal(name: str, given: str | None = None) -> str | None:
    """Why the K pipelines cannot run catalogue sampler ``name`` (``given``: the name the user wrote, when
    another), or None when they can. The samplers are :data:`k_diffusing.scheduler.UNPLANNABLE`."""
    from . import sampling
    from .scheduler import UNPLANNABLE

    if name not in UNPLANNABLE:
        return None
    named = repr(name) if given in (None, name) else f"{given!r} ({name})"
    functional = "k_diffusing.sampling" + (f".sample_{name}" if hasattr(sampling, f"sample_{name}") else "")
    return (f"sampler {named} cannot run through the K pipelines: it chooses its number of model calls from the "
            "data (adaptive step size), so no timesteps can be given to a pipeline upfront. It is available through "
            f"the functional API ({functional}); for a pipeline pick a fixed-step sampler (dpm_fast, dpmpp_2m, "
            "uni_pc, ...)")


def pipeline_samplers() -> list:
    """The catalogue's specs the K pipelines can run (every one but :func:`pipeline_refusal`'s)."""
    from .registry import list_samplers

    return [spec for spec in list_samplers() if pipeline_refusal(spec.name) is None]


CFG_PP_NOT_RENDERED = ("the CFG++ samplers (*_cfg_pp) take a guidance scale of about 0 to 1 and, on FLUX, a negative "
                       "prompt, unlike every other sampler, so a strip at the gallery's common settings would say "
                       "nothing about them; run them through the K pipelines (tests/test_cfg_pp_pipelines.py)")


def gallery_samplers() -> list:
    """The specs the gallery renders by default: :func:`pipeline_samplers` but the CFG++ ones
    (:data:`CFG_PP_NOT_RENDERED`)."""
    return [spec for spec in pipeline_samplers() if not spec.needs_uncond]


def parser(kind: str) -> argparse.ArgumentParser:
    family = {"sdxl": "SDXL", "flux": "FLUX"}[kind]
    p = argparse.ArgumentParser(
        description=f"Render one image strip per k-sampler with a {family} pipeline, plus a labelled grid.",
    )
    p.add_argument("--model", default=f"embedded:{kind}",
                   help=f"diffusers {family} folder or hub id (default: embedded:{kind}, the embedded model)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default: {RUNS / kind}, which git ignores)")
    p.add_argument("--update-goldens", action="store_true",
                   help=f"write into {GOLDENS / kind}, the committed goldens (README gallery, image regression)")
    p.add_argument("--prompt", nargs="+", default=list(DEFAULT_PROMPTS), help="one or more prompts (one image each)")
    p.add_argument("--samplers", nargs="+", default=None, help="catalogue names or A1111 names (default: all)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (num_inference_steps)")
    p.add_argument("--sigma-schedule", default=None, help="catalogue schedule (default: the pipeline scheduler's own)")
    p.add_argument("--seed", type=int, default=0, help="image i uses torch.Generator().manual_seed(seed + i)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--height", type=int, default=None, help="default: the VAE's sample_size")
    p.add_argument("--width", type=int, default=None, help="default: the VAE's sample_size")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: float32 on cpu, bfloat16 otherwise")
    p.set_defaults(kind=kind)
    return p


def validate(args) -> list:
    """Check the cheap arguments before any model is loaded; returns the ``(name, spec, schedule)`` to run
    (default: every sampler of :func:`gallery_samplers`). :class:`BadArguments` otherwise."""
    from .names import unknown_name
    from .registry import resolve_sampler
    from .schedules import SCHEDULES

    if args.steps < 1:
        raise BadArguments(f"--steps must be at least 1, got {args.steps}")
    args.out = output_folder(args.out, args.update_goldens, args.kind, args.samplers)
    if args.sigma_schedule is not None and args.sigma_schedule not in SCHEDULES:
        raise BadArguments(str(unknown_name("sigma schedule", args.sigma_schedule, SCHEDULES)))
    for side in ("height", "width"):
        value = getattr(args, side)
        if value is not None and value < 1:
            raise BadArguments(f"--{side} must be positive, got {value}")
    if args.samplers is None:
        return [(spec.name, spec, args.sigma_schedule) for spec in gallery_samplers()]
    chosen = []
    for name in args.samplers:
        try:
            spec, schedule = resolve_sampler(name)
        except ValueError as error:
            raise BadArguments(str(error)) from None
        refusal = pipeline_refusal(spec.name, name)
        if refusal is not None:
            raise BadArguments(f"--samplers: {refusal}")
        if spec.needs_uncond:
            raise BadArguments(f"--samplers: {name!r}: {CFG_PP_NOT_RENDERED}")
        if schedule is not None and args.sigma_schedule is not None and schedule != args.sigma_schedule:
            raise BadArguments(f"{name!r} implies sigma schedule {schedule!r} but --sigma-schedule is "
                               f"{args.sigma_schedule!r}")
        chosen.append((spec.name, spec, schedule or args.sigma_schedule))
    return chosen


def output_folder(out: Path | None, update_goldens: bool, kind: str | None = None, samplers=None) -> Path:
    """``out``, or the goldens' folder with ``update_goldens``, else the runs folder (``kind``: the family's
    subfolder; ``None``: the folder of both families). The goldens are written whole: ``samplers`` (``--samplers``)
    with ``update_goldens`` is refused."""
    if out is not None and update_goldens:
        raise BadArguments(f"--out {out} and --update-goldens both choose the output folder; give one")
    if update_goldens and samplers:
        raise BadArguments("--samplers with --update-goldens would rewrite the goldens' gallery.json with only those "
                           "samplers (the image regression checks every one): drop one of them")
    base = GOLDENS if update_goldens else RUNS
    return out if out is not None else (base / kind if kind else base)


# --- rendering ---------------------------------------------------------------------------------------------------


def model_location(model: str) -> str:
    """The folder or hub id to load: ``embedded:<kind>`` names an embedded model's folder; anything else is
    returned as given."""
    if model.startswith("embedded:"):
        name = model.removeprefix("embedded:")
        if name not in EMBEDDED:
            raise ValueError(f"unknown embedded model {model!r}: expected one of "
                             + ", ".join(f"'embedded:{k}'" for k in EMBEDDED))
        return str(EMBEDDED[name])
    return model


def model_label(model: str) -> str:
    """What ``gallery.json`` records for ``model``: ``embedded:<kind>`` for an embedded model, also when given as
    its folder (a checkout-independent name); any other folder or hub id as given."""
    for name, folder in EMBEDDED.items():
        if model == f"embedded:{name}" or Path(model).resolve() == folder:
            return f"embedded:{name}"
    return model


def load_pipeline(kind: str, model: str, device: str | torch.device, dtype: torch.dtype):
    """``model``: a diffusers folder, a hub id or ``embedded:<kind>`` (:func:`model_location`)."""
    from .pipelines import KFluxPipeline, KSDXLPipeline

    cls = {"sdxl": KSDXLPipeline, "flux": KFluxPipeline}[kind]
    return cls.from_pretrained(model_location(model), dtype=dtype).to(device)


LOAD_ERRORS = (OSError, ValueError, KeyError)  # a missing folder or hub id, another family's folder, no _class_name


def load_or_refuse(kind: str, model: str, device, dtype: torch.dtype, option: str = "--model"):
    """:func:`load_pipeline` for a command line: a model that does not load (:data:`LOAD_ERRORS`) is
    :class:`BadArguments` (exit status 2) with one line naming ``option``, the model and the loader's first line.
    The loading progress bars are off (:func:`quiet_loading`)."""
    try:
        with quiet_loading():
            return load_pipeline(kind, model, device, dtype)
    except LOAD_ERRORS as error:
        raise load_refusal(kind, model, option, error) from None


def load_refusal(kind: str, model: str, option: str, error: Exception) -> BadArguments:
    """The one-line refusal of a model that does not load: ``option``, the model and the loader's first line."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return BadArguments(f"cannot load {option} {model!r} as a {kind} pipeline: {first}")


def pipeline_options(kind: str, pipe, steps: int, height=None, width=None, guidance_scale=None) -> dict:
    """The call options every sampler shares: steps, size (default: the VAE's ``sample_size``), guidance (default:
    the pipeline's), and FLUX's T5 length (the tokenizer's own limit, at most the pipeline's 512)."""
    side = pipe.vae.config.sample_size
    side = side[0] if isinstance(side, (list, tuple)) else side
    options = {"height": height or side, "width": width or side, "num_inference_steps": steps}
    if guidance_scale is not None:
        options["guidance_scale"] = guidance_scale
    if kind == "flux":
        from .pipelines.flux import t5_length

        options["max_sequence_length"] = t5_length(pipe)
    return options


def render(pipe, prompts, sampler: str, schedule: str | None, seed: int, options: dict, *,
           on_call=None) -> tuple[torch.Tensor, int]:
    """``(images (B, 3, H, W) in [0, 1] on the CPU, model calls)`` for one sampler; a model call is one forward
    of the UNet or transformer (both halves of classifier-free guidance go in one batch). ``on_call(n)``, when
    given, runs after the n-th model call (the gallery's progress bar)."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    calls = []
    network = pipe.unet if hasattr(pipe, "unet") else pipe.transformer

    def count(*_):
        calls.append(1)
        if on_call is not None:
            on_call(len(calls))

    hook = network.register_forward_hook(count)
    try:
        images = pipe(
            list(prompts), sampler=sampler, sigma_schedule=schedule, generator=generators, output_type="pt", **options
        ).images
    finally:
        hook.remove()
    return images.float().cpu(), len(calls)


def strip(images: torch.Tensor):
    """The images side by side as one PIL image."""
    from PIL import Image

    row = torch.cat(list(images), dim=2)  # (3, H, B * W)
    array = (row.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def labelled_grid(rows: list[tuple[str, object]], cell: int = CELL, label_width: int = 230):
    """One row per ``(label, strip)``; strips are scaled to ``cell`` pixels high (nearest neighbour)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    scaled = [image.resize((image.width * cell // image.height, cell), Image.NEAREST) for _, image in rows]
    width = label_width + max(image.width for image in scaled)
    grid = Image.new("RGB", (width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for i, ((label, _), image) in enumerate(zip(rows, scaled)):
        grid.paste(image, (label_width, i * cell))
        draw.multiline_text((6, i * cell + 6), label, fill="black", font=font, spacing=3)
    return grid


def save_atomic(image, path: Path) -> None:
    """Write ``image`` (PIL, saved as PNG; or str, UTF-8 text; or bytes) to ``path`` through a temporary name and a
    rename, so that ``path`` is either absent or complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(image, str):
            tmp.write_text(image, encoding="utf-8")
        elif isinstance(image, bytes):
            tmp.write_bytes(image)
        else:
            image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def adherence_scores(images: torch.Tensor, prompts) -> list[float] | None:
    """Per-image adherence when every prompt is a shapes caption, else None."""
    from .embedded.score import adherence_batch
    from .embedded.shapes import parse_caption

    try:
        for prompt in prompts:
            parse_caption(prompt)
    except ValueError:
        return None
    return adherence_batch(images, prompts, value_range=(0, 1))


@contextlib.contextmanager
def quiet_loading():
    """diffusers' and transformers' loading progress bars ("Loading pipeline components", "Loading weights") off
    for the block, restored after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    restore = []
    for library in (diffusers_logging, transformers_logging):
        if library.is_progress_bar_enabled():
            library.disable_progress_bar()
            restore.append(library.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()


def main(kind: str, argv=None, *, summary: bool = True) -> int:
    """Render the gallery of ``kind``; ``summary``: print :func:`summary_table` to stdout at the end (the main job
    prints one table for both families instead).

    Progress: one bar per run over the samplers (stderr), whose postfix names the current sampler and its model
    calls so far; the pipeline's own bar over its timesteps and the loading bars are off."""
    from tqdm.auto import tqdm

    args = parser(kind).parse_args(argv)
    try:
        chosen = validate(args)
    except BadArguments as error:  # exit status 2 with the message, as argparse's own errors
        print(f"error: {error}", file=sys.stderr)
        raise
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype or ("float32" if device == "cpu" else "bfloat16")]
    try:
        pipe = load_or_refuse(kind, args.model, device, dtype)
    except BadArguments as error:
        print(f"error: {error}", file=sys.stderr)
        raise
    pipe.set_progress_bar_config(disable=True)
    options = pipeline_options(kind, pipe, args.steps, args.height, args.width, args.guidance_scale)
    args.out.mkdir(parents=True, exist_ok=True)

    record = {
        "model": model_label(args.model), "kind": kind, "prompts": list(args.prompt), "seed": args.seed, "device": device,
        "dtype": str(dtype).removeprefix("torch."), **{k: v for k, v in options.items()}, "samplers": {},
    }
    rows, timings = [], {}
    bar = tqdm(chosen, desc=f"{kind} samplers", unit="sampler", file=sys.stderr)
    shown = [0.0]  # when the postfix was last redrawn (time.monotonic())

    def progress(name, calls=None):
        now = time.monotonic()
        if calls is None or now - shown[0] >= 0.5:  # a new sampler at once; its calls at most twice a second
            shown[0] = now
            bar.set_postfix_str(name if calls is None else f"{name}: {calls} calls")

    try:
        for name, spec, schedule in bar:
            progress(name)
            started = time.perf_counter()
            images, calls = render(pipe, args.prompt, name, schedule, args.seed, options,
                                   on_call=lambda n, name=name: progress(name, n))
            seconds = time.perf_counter() - started
            bar.set_postfix_str(f"{name}: {calls} calls", refresh=False)  # the count shown with the next redraw
            scores = adherence_scores(images, args.prompt)
            save_atomic(strip(images), args.out / f"{spec.name}.png")
            label = f"{spec.name}" + (f" + {schedule}" if schedule else "")
            label += f"\n{calls} calls"
            if scores is not None:
                label += f", adherence {sum(scores) / len(scores):.2f}"
            rows.append((label, strip(images)))
            record["samplers"][spec.name] = {"schedule": schedule, "model_calls": calls, "adherence": scores}
            timings[spec.name] = round(seconds, 3)
    finally:
        bar.close()
    save_atomic(labelled_grid(rows), args.out / "grid.png")
    save_atomic(json.dumps(record, indent=1), args.out / "gallery.json")
    save_atomic(json.dumps({"device": device, "seconds": timings}, indent=1), args.out / "timings.json")
    print(f"wrote {len(rows)} sampler strips, grid.png, gallery.json and timings.json to {args.out}", file=sys.stderr)
    if summary:
        print(summary_table({kind: args.out}, notes=args.samplers is None))
    return 0


def not_rendered_notes() -> list[str]:
    """One line per group of catalogue samplers the gallery leaves out by default, and why."""
    from .registry import list_samplers

    skipped = [spec.name for spec in list_samplers() if pipeline_refusal(spec.name) is not None]
    notes = [f"not rendered: {', '.join(skipped)} (adaptive step size, which the K pipelines cannot plan; "
             "functional API only)"] if skipped else []
    return notes + [f"not rendered: {CFG_PP_NOT_RENDERED}"]


def summary_table(folders: dict[str, Path], notes: bool = False) -> str:
    """The closing summary of :func:`main` and of the main job: one row per sampler and, per family (``folders``:
    family -> output folder of :func:`main`), its seconds (``timings.json``), model calls and adherence
    (``gallery.json``: the mean fraction of the prompted attributes the images show, and how many images show all
    of them), then a total row. ``notes``: add :func:`not_rendered_notes` (runs over the default samplers)."""
    records, seconds = {}, {}
    for kind, folder in folders.items():
        records[kind] = json.loads((folder / "gallery.json").read_text())
        seconds[kind] = json.loads((folder / "timings.json").read_text())["seconds"]
    names = list(dict.fromkeys(name for record in records.values() for name in record["samplers"]))
    labels = {}
    for name in names:
        schedules = {r["samplers"][name]["schedule"] for r in records.values() if name in r["samplers"]} - {None}
        labels[name] = name + "".join(f" + {schedule}" for schedule in sorted(schedules))
    width = max([len("sampler"), len("total"), *map(len, labels.values())])

    def adherence(scores: list) -> str:
        if not scores:
            return "-"
        full = sum(score >= 1 - 1e-9 for score in scores)
        return f"{sum(scores) / len(scores):.2f} {full}/{len(scores)}"

    def cells(kind_seconds, calls, scores) -> str:
        return f"{kind_seconds:>9.2f} {calls:>6} {adherence(scores):>12}"

    blank = f"{'':>9} {'':>6} {'':>12}"
    head = f"{'sampler':<{width}}" + "".join(f"  {kind + ' s':>9} {'calls':>6} {'adherence':>12}" for kind in records)
    lines = [head, "-" * len(head)]
    totals = {kind: [0.0, 0, []] for kind in records}
    for name in names:
        row = f"{labels[name]:<{width}}"
        for kind, record in records.items():
            entry = record["samplers"].get(name)
            if entry is None:
                row += "  " + blank
                continue
            scores = entry["adherence"] or []
            row += "  " + cells(seconds[kind].get(name, float("nan")), entry["model_calls"], scores)
            totals[kind][0] += seconds[kind].get(name, 0.0)
            totals[kind][1] += entry["model_calls"]
            totals[kind][2] += scores
        lines.append(row)
    lines.append("-" * len(head))
    lines.append(f"{'total':<{width}}" + "".join("  " + cells(*totals[kind]) for kind in records))
    steps = ", ".join(f"{kind} {record['num_inference_steps']} steps on {record['device']}"
                      for kind, record in records.items())
    footer = [f"{len(names)} samplers ({steps}). adherence: the mean fraction of the prompted attributes the images "
              "show, and how many images show all of them ('-': the prompts are not shapes captions)."]
    if notes:
        footer += not_rendered_notes()
    for note in footer:
        lines += textwrap.wrap(note, width=max(len(head), 80), subsequent_indent="  ")
    return "\n".join(lines)


def gallery_table(folders: dict[str, Path], base: Path) -> str:
    """The README's gallery: one row per sampler, one column of strips per family (``folders``: family -> output
    folder of :func:`main`), with the model calls and mean adherence; image paths relative to ``base``."""
    records = {kind: json.loads((folder / "gallery.json").read_text()) for kind, folder in folders.items()}
    first = next(iter(records.values()))
    names = list(dict.fromkeys(name for record in records.values() for name in record["samplers"]))
    header = " | ".join(f"{kind.upper()} ({records[kind]['num_inference_steps']} steps)" for kind in records)
    lines = [
        f"Prompts, left to right: {'; '.join(repr(p) for p in first['prompts'])}. Seeds {first['seed']}.."
        f"{first['seed'] + len(first['prompts']) - 1}; the pipeline's own sigmas. Each cell: model calls, mean "
        "adherence (fraction of the prompted attributes the image shows).",
        *_unrendered_note(),
        "",
        f"| sampler | {header} |",
        "|---|" + "---|" * len(records),
    ]
    for name in names:
        cells = []
        for kind, record in records.items():
            entry = record["samplers"].get(name)
            if entry is None:
                cells.append("")
                continue
            image = os.path.relpath(folders[kind] / f"{name}.png", base)
            scores = entry["adherence"]
            score = f", adherence {sum(scores) / len(scores):.2f}" if scores else ""
            cells.append(f'<img src="{image}" height="64"><br>{entry["model_calls"]} calls{score}')
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _unrendered_note() -> list[str]:
    """The gallery table's line on the catalogue samplers the K pipelines cannot run (none: no line)."""
    from .registry import list_samplers

    names = [spec.name for spec in list_samplers() if pipeline_refusal(spec.name) is not None]
    if not names:
        return []
    listed = ", ".join(f"`{name}`" for name in names)
    return ["", f"Not rendered: {listed}, whose number of model calls depends on the data (adaptive step size): no "
            "timesteps can be given to a pipeline upfront, so the K pipelines refuse it. It runs through the "
            "functional API (`k_diffusing.sampling`).", "", f"Not rendered either: {CFG_PP_NOT_RENDERED}."]
