"""Parity reports: a Markdown summary, a static HTML page (side-by-side images, difference heat map, per-step
divergence plot and the two schedules side by side for every pair) and ``report.json``."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import torch

from ..gallery import strip
from ..regression import heat
from ..svgplot import line_plot
from .compare import Comparison

FLOOR = -10.0  # log10 of a zero difference, for the plots


def verdict(c: Comparison) -> str:
    if not c.schedules_match:
        return "FAIL (schedules differ in length)"
    if c.pair.exact:
        return "pass" if c.passed else f"FAIL at step {c.first_divergent}"
    return "within" if c.passed else "outside (not a failure: distribution-only)"


def _number(v: float) -> str:
    if math.isnan(v):
        return "–"
    if math.isinf(v) or v == 0:
        return "inf" if math.isinf(v) else "0"
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.2g}" if abs(v) >= 1e-2 else f"{v:.1e}"


def summary_rows(results: list[tuple[str, Comparison]]) -> list[list[str]]:
    rows = []
    for level, c in results:
        p = c.pair
        first = "–" if c.first_divergent is None else str(c.first_divergent)
        rows.append([p.name, level, c.ours.label, p.diffusers_side, "exact" if p.exact else "distribution-only",
                     p.tolerance.describe(), _number(c.measured), first, _number(c.final_max), _number(c.final_mean),
                     _number(c.psnr), verdict(c)])
    return rows


HEADER = ["pair", "level", "k-sampler", "diffusers scheduler", "kind", "tolerance", "measured", "first divergent step",
          "final max abs", "final mean abs", "image PSNR (dB)", "verdict"]


def markdown_table(results: list[tuple[str, Comparison]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.replace("|", "\\|") for r in row) + " |" for row in summary_rows(results)]
    return "\n".join(lines)


def compact_table(results: list[tuple[str, Comparison]]) -> str:
    """One row per pair, both levels side by side (the README's table)."""
    by_pair: dict[str, dict[str, Comparison]] = {}
    for level, c in results:
        by_pair.setdefault(c.pair.name, {})[level] = c
    lines = ["| pair | k-sampler | diffusers scheduler | kind, tolerance | pipeline: measured (image PSNR dB) "
             "| sampler level: measured | verdict |", "|---|---|---|---|---|---|---|"]
    for name, levels in by_pair.items():
        any_c = next(iter(levels.values()))
        p = any_c.pair
        pipe, samp = levels.get("pipeline"), levels.get("sampler")
        cells = [name, f"`{any_c.ours.label}`", f"`{p.diffusers_side}`",
                 f"{'exact' if p.exact else 'distribution-only'}, {p.tolerance.describe()}",
                 f"{_number(pipe.measured)} ({_number(pipe.psnr)})" if pipe else "–",
                 _number(samp.measured) if samp else "–", ", ".join(verdict(c) for c in levels.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def schedule_rows(c: Comparison) -> list[list[str]]:
    """Per step: sigma and first-call timestep of each side, and the latent difference after the step."""
    n = max(len(c.ours.sigmas), len(c.theirs.sigmas)) - 1
    rows = []
    for k in range(n):
        cells = []
        for values in (c.ours.sigmas, c.theirs.sigmas, c.ours.timesteps, c.theirs.timesteps):
            cells.append(f"{values[k]:.6g}" if k < len(values) else "–")
        cells.append(_number(c.step_diff[k]) if k < len(c.step_diff) else "–")
        rows.append([str(k)] + cells)
    return rows


def heat_map(a: torch.Tensor, b: torch.Tensor):
    """|a - b| averaged over channels as one strip in :func:`k_diffusing.regression.heat`'s colours, scaled so that
    the largest difference is white; returns ``(PIL image, largest difference)``."""
    from PIL import Image

    diff = (a.double() - b.double()).abs().mean(dim=1)  # (B, H, W)
    top = float(diff.max())
    levels = (diff / top * 765).round() if top > 0 else diff
    return Image.fromarray(heat(torch.cat(list(levels), dim=1).numpy(), gain=1)), top


def divergence_svg(c: Comparison) -> str:
    def log(v: float) -> float:
        return max(math.log10(v), FLOOR) if v > 0 else FLOOR

    series = {"difference": [(k, log(d)) for k, d in enumerate(c.step_diff)]}
    if c.pair.exact and c.step_diff:
        series["tolerance"] = [(0, log(c.pair.tolerance.value)), (len(c.step_diff) - 1, log(c.pair.tolerance.value))]
    values = [y for points in series.values() for _, y in points]
    lo = math.floor(min(values)) - 1
    hi = max(math.ceil(max(values)) + 1, lo + 2)
    label = "log10 max |Δ latent|" + (" / max |latent|" if c.pair.tolerance.relative else "")
    return line_plot([(c.pair.name, series)], "step (0 drawn at 1e-10)", label, (lo, hi), log_x=False,
                     panel_size=(420, 200))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #bbb;padding:3px 6px;text-align:left} img.px{image-rendering:pixelated;height:128px}
.fail{color:#b00;font-weight:bold} .pass{color:#070} section{margin:2em 0;border-top:2px solid #444}
figure{display:inline-block;margin:0 1em 0 0;vertical-align:top} figcaption{font-size:12px}"""


def _pair_section(level: str, c: Comparison, folder: Path, base: Path) -> str:
    """One pair's HTML: summary line, images and heat map (pipeline level), divergence plot, schedules."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "divergence.svg").write_text(divergence_svg(c))
    rel = folder.relative_to(base).as_posix()
    css = "pass" if c.passed or not c.pair.exact else "fail"
    parts = [f'<section id="{level}-{c.pair.name}"><h2>{html.escape(c.pair.name)} ({level})</h2>',
             f'<p>{html.escape(c.ours.label)} &harr; {html.escape(c.pair.diffusers_side)}. '
             f'<span class="{css}">{html.escape(verdict(c))}</span>; measured {_number(c.measured)} against '
             f'{html.escape(c.pair.tolerance.describe())}. {html.escape(c.pair.note)}</p>']
    if c.ours.images is not None:
        strip(c.ours.images).save(folder / "ours.png")
        strip(c.theirs.images).save(folder / "theirs.png")
        heat, top = heat_map(c.ours.images, c.theirs.images)
        heat.save(folder / "diff.png")
        parts.append("".join(
            f'<figure><img class="px" src="{rel}/{name}.png" alt="{name}"><figcaption>{caption}</figcaption></figure>'
            for name, caption in (("ours", "k_diffusing"), ("theirs", "diffusers"),
                                  ("diff", f"|difference|, white = {_number(top)} (PSNR {_number(c.psnr)} dB)"))))
    parts.append(f'<p><img src="{rel}/divergence.svg" alt="per-step divergence"></p>')
    called = "timestep" if c.ours.images is not None else "sigma of the first call"
    parts.append(_html_table(["step", "sigma (ours)", "sigma (diffusers)", f"{called} (ours)",
                              f"{called} (diffusers)", "max |Δ latent| after the step"], schedule_rows(c)))
    return "".join(parts) + "</section>"


def failures(results: list[tuple[str, Comparison]]) -> list[str]:
    """``pair (level)`` for every exact pair beyond its tolerance."""
    return [f"{c.pair.name} ({level})" for level, c in results if c.pair.exact and not c.passed]


def write_report(results: list[tuple[str, Comparison]], out: Path, settings: dict) -> None:
    """Write ``report.md``, ``index.html``, ``report.json`` and per-pair images and plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    failed = failures(results)
    status = f"{len(failed)} exact pair(s) beyond tolerance: {', '.join(failed)}" if failed else \
        "every exact pair within its tolerance"
    settings_md = ", ".join(f"{k} = {v}" for k, v in settings.items())
    (out / "report.md").write_text(f"# Parity report\n\n{settings_md}.\n\n**{status}.**\n\n{table}\n")
    sections = "".join(_pair_section(level, c, out / level / c.pair.name, out) for level, c in results)
    rows = summary_rows(results)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>k_diffusing parity report</title>"
            f"<style>{STYLE}</style></head><body><h1>Parity report</h1><p>{html.escape(settings_md)}</p>"
            f"<p class='{'fail' if failed else 'pass'}'>{html.escape(status)}</p>{_html_table(HEADER, rows)}"
            f"{sections}</body></html>")
    (out / "index.html").write_text(page)
    (out / "report.json").write_text(json.dumps({
        "settings": settings, "failed": failed,
        "pairs": [{"pair": c.pair.name, "level": level, "k_sampler": c.ours.label,
                   "diffusers": c.pair.diffusers_side, "exact": c.pair.exact,
                   "tolerance": c.pair.tolerance.value, "relative": c.pair.tolerance.relative,
                   "measured": c.measured, "first_divergent_step": c.first_divergent,
                   "final_max_abs": c.final_max, "final_mean_abs": c.final_mean,
                   "psnr_db": None if math.isnan(c.psnr) or math.isinf(c.psnr) else c.psnr,
                   "passed": c.passed, "step_diff": c.step_diff,
                   "sigmas": {"ours": c.ours.sigmas, "diffusers": c.theirs.sigmas},
                   "timesteps": {"ours": c.ours.timesteps, "diffusers": c.theirs.timesteps}}
                  for level, c in results]}, indent=1) + "\n")
