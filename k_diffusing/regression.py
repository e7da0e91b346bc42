"""Image-diff regression: rendered sampler strips against committed golden strips.

The goldens are gallery folders written by :mod:`k_diffusing.gallery` (``outputs/gallery/sdxl``,
``outputs/gallery/flux``): one ``<sampler>.png`` per sampler (the prompts' images side by side) and ``gallery.json``
with the settings that made them. A candidate is a PNG of the same name. Each pair is compared on the 0-255 scale,
over every pixel and channel:

- ``max_diff``: the largest ``|golden - candidate|``;
- ``mean_diff``: the mean of ``|golden - candidate|``;
- ``psnr``: ``10 log10(255^2 / MSE)`` in dB, infinite when the images are identical.

A strip passes when ``max_diff <= Tolerance.max_diff`` and ``psnr >= Tolerance.min_psnr``. A sampler with a golden
and no candidate is ``missing``, one with a candidate and no golden ``extra``; both fail. :func:`write_report`
writes ``report.md``, ``report.json`` and, per failing strip, ``<sampler>.diff.png`` (golden, candidate and the
amplified difference as a heat map, one above the other).

Command line (exit status 0: every strip within tolerance; 1: a regression, report written; 2: input that cannot
be compared, with a message naming it)::

    python -m k_diffusing.regression --golden outputs/gallery/sdxl --candidate DIR --report DIR
    python -m k_diffusing.regression --golden outputs/gallery --report outputs/regression

Without ``--candidate`` the candidates are rendered here from each golden folder's ``gallery.json`` (model, prompts,
seed, steps, size, guidance, device, dtype, samplers and their schedules) into ``<report>/candidates/``. A
``--golden`` folder without ``gallery.json`` whose subfolders have one (``outputs/gallery``) is checked subfolder
by subfolder, each into ``<report>/<subfolder>/``. Samplers the K pipelines cannot run (``dpm_adaptive``, see
:func:`k_diffusing.gallery.pipeline_refusal`) have no goldens; a ``gallery.json`` that lists one cannot be rendered
(exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GRID = "grid.png"  # gallery.py's labelled overview, made from the strips: not compared
DIFF_GAIN = 8  # heat-map brightness per unit of |diff|: a difference of 32 levels saturates


class BadInput(ValueError):
    """Golden or candidate input that cannot be compared (command-line exit status 2)."""


@dataclass(frozen=True)
class Tolerance:
    """How far a candidate strip may be from its golden: ``max_diff`` levels (0-255) on any pixel and channel,
    and a PSNR of at least ``min_psnr`` dB over the strip.

    The defaults are set from measurements on the embedded models' galleries (README, "Image-diff regression"). On
    the CPU, float reordering (1, 2 or 16 threads; AVX-512, AVX2 or no vector kernels; an AMD EPYC and an Intel Xeon;
    torch 2.13 and 2.11) changed strips by at most 1 level, PSNR 78.2 dB or more; the same settings repeat bit for
    bit. Doubling dpmpp_2m's second-order correction gives max |diff| 106 / PSNR 32.9 dB (SDXL) and 29 / 42.8 dB
    (FLUX); scaling it by 1.01 (SDXL) or 1.05 (FLUX) still falls below 70 dB. GPU renders are not covered: the
    Brownian-tree SDE samplers draw other noise there."""

    max_diff: int = 2
    min_psnr: float = 70.0

    def __post_init__(self):
        if not 0 <= self.max_diff <= 255:
            raise BadInput(f"max_diff must be within 0..255, got {self.max_diff}")
        if not (self.min_psnr >= 0 and math.isfinite(self.min_psnr)):
            raise BadInput(f"min_psnr must be a finite number of dB >= 0, got {self.min_psnr}")

    def accepts(self, difference: Difference) -> bool:
        return difference.max_diff <= self.max_diff and difference.psnr >= self.min_psnr

    def describe(self) -> str:
        return f"max |diff| <= {self.max_diff} (0-255), PSNR >= {self.min_psnr:g} dB"


@dataclass(frozen=True)
class Difference:
    """The difference of two images of one size on the 0-255 scale; ``changed`` counts the pixels with any
    channel different, out of ``pixels``."""

    max_diff: int
    mean_diff: float
    psnr: float
    changed: int
    pixels: int

    def describe(self) -> str:
        return (f"max |diff| {self.max_diff}, mean |diff| {self.mean_diff:.4f}, PSNR {format_psnr(self.psnr)}, "
                f"{self.changed} of {self.pixels} pixels changed")


@dataclass
class Result:
    """One sampler: ``status`` is ``pass``, ``fail``, ``missing`` (golden, no candidate) or ``extra`` (candidate,
    no golden); ``difference`` is None unless both images exist."""

    name: str
    status: str
    golden: Path | None
    candidate: Path | None
    difference: Difference | None = None

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def describe(self, tolerance: Tolerance) -> str:
        if self.status == "missing":
            return f"{self.name}: no candidate image (golden {self.golden})"
        if self.status == "extra":
            return f"{self.name}: no golden image" + (f" for candidate {self.candidate}" if self.candidate else "")
        verdict = "within" if self.ok else "outside"
        return f"{self.name}: {self.difference.describe()}; {verdict} tolerance ({tolerance.describe()})"


@dataclass
class Report:
    """Every sampler's :class:`Result` for one golden folder; ``notes`` are reported without failing."""

    golden: Path
    candidate: Path
    tolerance: Tolerance
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [result for result in self.results if not result.ok]

    @property
    def passed(self) -> bool:
        return not self.failures


# --- comparison --------------------------------------------------------------------------------------------------


def format_psnr(psnr: float) -> str:
    return "inf dB (identical)" if math.isinf(psnr) else f"{psnr:.2f} dB"


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / mse)`` in dB; infinite for ``mse == 0``."""
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def difference(golden: np.ndarray, candidate: np.ndarray) -> Difference:
    """Compare two ``(H, W, C)`` uint8 images; :class:`BadInput` if their shapes differ."""
    if golden.shape != candidate.shape:
        raise BadInput(f"image sizes differ: golden {describe_shape(golden)}, candidate {describe_shape(candidate)}")
    delta = np.abs(golden.astype(np.int64) - candidate.astype(np.int64))
    return Difference(
        max_diff=int(delta.max(initial=0)),
        mean_diff=float(delta.mean()),
        psnr=psnr_from_mse(float((delta**2).mean())),
        changed=int(delta.reshape(delta.shape[0], delta.shape[1], -1).any(axis=2).sum()),
        pixels=golden.shape[0] * golden.shape[1],
    )


def describe_shape(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]} with {image.shape[2]} channels"


def read_png(path: Path) -> np.ndarray:
    """``path`` as an ``(H, W, 3)`` uint8 array; :class:`BadInput` naming the file if it is absent or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise BadInput(f"missing image file {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise BadInput(f"cannot read image file {path}: {error}") from None


def compare_arrays(name: str, golden: np.ndarray, candidate: np.ndarray, tolerance: Tolerance,
                   golden_path: Path | None = None, candidate_path: Path | None = None) -> Result:
    """One sampler's :class:`Result` from its two images."""
    try:
        found = difference(golden, candidate)
    except BadInput as error:
        raise BadInput(f"{name}: {error} ({golden_path} against {candidate_path})") from None
    return Result(name, "pass" if tolerance.accepts(found) else "fail", golden_path, candidate_path, found)


def compare_folders(golden: Path, candidate: Path, tolerance: Tolerance = Tolerance(), names=None) -> Report:
    """Compare every golden strip with the candidate of the same name.

    ``names``: the golden samplers (default: :func:`golden_samplers`). Candidate PNGs other than ``grid.png`` with
    no golden are ``extra``; goldens with no candidate ``missing``."""
    golden, candidate = Path(golden), Path(candidate)
    if not candidate.is_dir():
        raise BadInput(f"candidate folder {candidate} does not exist")
    names = list(golden_samplers(golden) if names is None else names)
    report = Report(golden, candidate, tolerance)
    for name in names:
        golden_path, candidate_path = golden / f"{name}.png", candidate / f"{name}.png"
        golden_image = read_png(golden_path)
        if not candidate_path.exists():
            report.results.append(Result(name, "missing", golden_path, None))
            continue
        report.results.append(compare_arrays(name, golden_image, read_png(candidate_path), tolerance, golden_path,
                                             candidate_path))
    for path in sorted(candidate.glob("*.png")):
        if path.name != GRID and path.stem not in names:
            report.results.append(Result(path.stem, "extra", None, path))
    return report


# --- golden folders ----------------------------------------------------------------------------------------------


def load_record(folder: Path) -> dict:
    """A golden folder's ``gallery.json`` (:func:`k_diffusing.gallery.main`), checked for the keys rendering needs."""
    path = Path(folder) / "gallery.json"
    if not Path(folder).is_dir():
        raise BadInput(f"golden folder {folder} does not exist")
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"golden folder {folder} has no gallery.json") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path} is not valid JSON: {error}") from None
    needed = ("model", "kind", "prompts", "seed", "num_inference_steps", "height", "width", "samplers")
    absent = [key for key in needed if key not in record]
    if absent:
        raise BadInput(f"{path} lacks {', '.join(absent)}")
    if record["kind"] not in ("sdxl", "flux"):
        raise BadInput(f"{path}: kind must be 'sdxl' or 'flux', got {record['kind']!r}")
    return record


def golden_samplers(folder: Path) -> list[str]:
    """The samplers of a golden folder: those ``gallery.json`` lists (each must have its PNG), or without a
    ``gallery.json`` every PNG but ``grid.png``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"golden folder {folder} does not exist")
    if (folder / "gallery.json").exists():
        names = list(load_record(folder)["samplers"])
        for name in names:
            if not (folder / f"{name}.png").exists():
                raise BadInput(f"missing golden file {folder / f'{name}.png'} (listed in {folder / 'gallery.json'})")
    else:
        names = [path.stem for path in sorted(folder.glob("*.png")) if path.name != GRID]
    if not names:
        raise BadInput(f"golden folder {folder} has no sampler images")
    return names


def golden_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a gallery folder, else its subfolders that are (``outputs/gallery`` ->
    ``sdxl``, ``flux``)."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"golden folder {path} does not exist")
    if (path / "gallery.json").exists() or any(p.name != GRID for p in path.glob("*.png")):
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "gallery.json").exists())
    if not found:
        raise BadInput(f"{path} holds no gallery.json, neither itself nor in a subfolder")
    return found


# --- rendering candidates ----------------------------------------------------------------------------------------


class Renderer:
    """The pipeline and call options of a golden folder's ``gallery.json``, loaded once; :meth:`strip` renders
    one sampler's strip as :func:`k_diffusing.gallery.main` did (same prompts, per-image seeds, options)."""

    def __init__(self, record: dict, model: str | None = None):
        import torch

        from .gallery import DTYPES, load_pipeline, pipeline_options

        self.record = record
        device = record.get("device", "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BadInput(f"the goldens were rendered on {device!r} and no CUDA device is available here")
        dtype = record.get("dtype", "float32")
        if dtype not in DTYPES:
            raise BadInput(f"unknown dtype {dtype!r} in gallery.json: expected one of {', '.join(DTYPES)}")
        model = model or record["model"]
        try:
            self.pipe = load_pipeline(record["kind"], model, device, DTYPES[dtype])
        except (OSError, ValueError) as error:
            raise BadInput(f"cannot load the {record['kind']} model {model!r}: {error}") from None
        self.pipe.set_progress_bar_config(disable=True)
        self.options = pipeline_options(record["kind"], self.pipe, record["num_inference_steps"], record["height"],
                                        record["width"], record.get("guidance_scale"))
        if "max_sequence_length" in record:
            self.options["max_sequence_length"] = record["max_sequence_length"]

    def strip(self, name: str) -> np.ndarray:
        """Sampler ``name``'s strip as an ``(H, W, 3)`` uint8 array, with the schedule ``gallery.json`` gives it."""
        from .gallery import render, strip

        schedule = self.record["samplers"].get(name, {}).get("schedule")
        images, _ = render(self.pipe, self.record["prompts"], name, schedule, self.record["seed"], self.options)
        return np.asarray(strip(images))


def render_candidates(golden: Path, out: Path, model: str | None = None, progress=None) -> list[str]:
    """Render every sampler of golden folder ``golden`` into ``out/<sampler>.png``; returns the names.
    :class:`BadInput` before loading the model if a sampler is one the K pipelines cannot run."""
    from PIL import Image

    from .gallery import pipeline_refusal, save_atomic

    record = load_record(golden)
    names = golden_samplers(golden)
    for name in names:
        refusal = pipeline_refusal(name)
        if refusal is not None:
            raise BadInput(f"{Path(golden) / 'gallery.json'} lists {name}, which cannot be rendered: {refusal}")
    renderer = Renderer(record, model)
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if progress:
            progress(f"{record['kind']}: rendering {name} ({i + 1}/{len(names)})")
        save_atomic(Image.fromarray(renderer.strip(name)), out / f"{name}.png")
    return names


def catalogue_note(names) -> str | None:
    """A note naming catalogue samplers that have no golden (reported, not failed: a golden folder may hold a
    chosen subset); samplers the K pipelines cannot run are not named (they never have one)."""
    from .gallery import gallery_samplers

    absent = [spec.name for spec in gallery_samplers() if spec.name not in set(names)]
    if not absent:
        return None
    return f"catalogue samplers without a golden (not compared): {', '.join(absent)}"


# --- report ------------------------------------------------------------------------------------------------------


def heat(delta: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """``(H, W)`` absolute differences as an RGB heat map: black (0), through red and yellow, to white (from
    ``765 / gain`` levels up)."""
    level = np.clip(delta.astype(np.int64) * gain, 0, 765)
    return np.stack([np.clip(level, 0, 255), np.clip(level - 255, 0, 255), np.clip(level - 510, 0, 255)],
                    axis=-1).astype(np.uint8)


def diff_image(golden: np.ndarray, candidate: np.ndarray, gain: int = DIFF_GAIN, scale: int = 3):
    """Golden, candidate and the heat map of the per-pixel max-over-channels ``|diff|`` (x ``gain``), one above
    the other, scaled ``scale`` times (nearest neighbour), each with a label: a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    delta = np.abs(golden.astype(np.int64) - candidate.astype(np.int64)).max(axis=2)
    panels = [("golden", golden), ("candidate", candidate), (f"|diff| x{gain}, max {int(delta.max())}", heat(delta))]
    height, width = golden.shape[0] * scale, golden.shape[1] * scale
    label = 18
    canvas = Image.new("RGB", (width, len(panels) * (height + label)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for i, (text, array) in enumerate(panels):
        top = i * (height + label)
        draw.text((4, top + 2), text, fill="black", font=font)
        canvas.paste(Image.fromarray(array).resize((width, height), Image.NEAREST), (0, top + label))
    return canvas


def clear_report(folder: Path) -> None:
    """Remove what :func:`write_report` and :func:`render_candidates` wrote into ``folder`` before (and nothing
    else), so that no stale difference image outlives a fixed regression."""
    folder = Path(folder)
    for pattern in ("report.md", "report.json", "*.diff.png", "candidates/*.png"):
        for path in folder.glob(pattern):
            path.unlink()


def report_json(report: Report) -> dict:
    """The report as JSON-ready data; a PSNR of identical images is ``null``."""
    results = []
    for result in report.results:
        entry = {"name": result.name, "status": result.status,
                 "golden": str(result.golden) if result.golden else None,
                 "candidate": str(result.candidate) if result.candidate else None}
        if result.difference is not None:
            entry.update(asdict(result.difference))
            entry["psnr"] = None if math.isinf(entry["psnr"]) else entry["psnr"]
        results.append(entry)
    return {"passed": report.passed, "golden": str(report.golden), "candidate": str(report.candidate),
            "tolerance": asdict(report.tolerance), "failures": [r.name for r in report.failures], "notes": report.notes,
            "results": results}


def report_markdown(report: Report, diff_images: dict[str, str]) -> str:
    """``report.md``: the verdict, failing samplers first with their numbers, then every sampler's row."""
    failures = report.failures
    verdict = "PASSED" if report.passed else f"FAILED: {len(failures)} of {len(report.results)} samplers"
    lines = [f"# Image regression {verdict}", "",
             f"- golden: `{report.golden}`", f"- candidate: `{report.candidate}`",
             f"- tolerance: {report.tolerance.describe()}", ""]
    if failures:
        lines += ["## Failing samplers", ""]
        lines += [f"- **{r.describe(report.tolerance)}**" + (f" — see `{diff_images[r.name]}`" if r.name in diff_images
                                                              else "") for r in failures]
        lines += ["", "If the change is intended, refresh the goldens on purpose: `python -m k_diffusing` (both "
                  "embedded models) or `python test_sdxl.py` / `python test_flux.py` with the settings in "
                  "gallery.json, and commit the new PNGs.", ""]
    for note in report.notes:
        lines += [f"Note: {note}", ""]
    lines += ["## Every sampler", "", "| sampler | status | max abs diff | mean abs diff | PSNR | changed pixels |",
              "|---|---|---|---|---|---|"]
    for r in report.results:
        d = r.difference
        numbers = (f"{d.max_diff} | {d.mean_diff:.4f} | {format_psnr(d.psnr)} | {d.changed} of {d.pixels}" if d
                   else "- | - | - | -")
        lines.append(f"| `{r.name}` | {r.status} | {numbers} |")
    return "\n".join(lines) + "\n"


def write_report(report: Report, folder: Path) -> Path:
    """Write ``report.md``, ``report.json`` and a ``<sampler>.diff.png`` per failing pair of images into
    ``folder``; returns the path of ``report.md``."""
    from .gallery import save_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    diff_images = {}
    for result in report.failures:
        if result.golden is not None and result.candidate is not None:
            path = folder / f"{result.name}.diff.png"
            save_atomic(diff_image(read_png(result.golden), read_png(result.candidate)), path)
            diff_images[result.name] = str(path)
    save_atomic(json.dumps(report_json(report), indent=1), folder / "report.json")
    save_atomic(report_markdown(report, diff_images), folder / "report.md")
    return folder / "report.md"


# --- command line ------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    default = Tolerance()
    p = argparse.ArgumentParser(prog="python -m k_diffusing.regression",
                                description="Compare sampler strips with golden strips; exit 1 on a regression.")
    p.add_argument("--golden", type=Path, required=True,
                   help="gallery folder (with gallery.json), or a folder of them such as outputs/gallery")
    p.add_argument("--candidate", type=Path, default=None,
                   help="folder of candidate PNGs (default: render them from each golden's gallery.json)")
    p.add_argument("--report", type=Path, default=Path("outputs") / "regression", help="report folder")
    p.add_argument("--max-diff", type=int, default=default.max_diff, help="largest |pixel diff| allowed (0-255)")
    p.add_argument("--min-psnr", type=float, default=default.min_psnr, help="smallest PSNR allowed (dB)")
    p.add_argument("--model", default=None, help="render with this model instead of gallery.json's (one golden folder)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        tolerance = Tolerance(args.max_diff, args.min_psnr)
        folders = golden_folders(args.golden)
        if args.model is not None and len(folders) > 1:
            raise BadInput(f"--model needs a single golden folder; {args.golden} holds {len(folders)}")
        nested = folders != [args.golden]
        reports = []
        for golden in folders:
            report_dir = args.report / golden.name if nested else args.report
            clear_report(report_dir)
            names = golden_samplers(golden)
            if args.candidate is None:
                candidate = report_dir / "candidates"
                render_candidates(golden, candidate, args.model, progress=log)
            else:
                candidate = args.candidate / golden.name if nested else args.candidate
            report = compare_folders(golden, candidate, tolerance, names)
            if args.candidate is None:
                note = catalogue_note(names)
                report.notes += [note] if note else []
            reports.append((report, write_report(report, report_dir)))
    except BadInput as error:
        log(f"error: {error}")
        return 2
    for report, path in reports:
        worst = [r.difference for r in report.results if r.difference is not None]
        summary = (f"max |diff| {max(d.max_diff for d in worst)}, min PSNR {format_psnr(min(d.psnr for d in worst))}"
                   if worst else "nothing compared")
        log(f"{'PASS' if report.passed else 'FAIL'} {report.golden}: {len(report.results)} samplers, {summary}; "
            f"report {path}")
        for result in report.failures:
            log(f"  FAIL {result.describe(report.tolerance)}")
    return 0 if all(report.passed for report, _ in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
