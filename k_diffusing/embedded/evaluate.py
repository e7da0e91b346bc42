"""Prompt adherence of the embedded models against sampler steps (the README's plot) and for one reference setting.

Usage: ``python -m k_diffusing.embedded.evaluate [--kinds sdxl flux] [--prompts 64] [--steps 2 4 8 16 32]
[--samplers ...] [--out outputs/adherence]``; ``--model-sdxl`` / ``--model-flux`` evaluate other folders (for
example a retrained model, to check that training reproduces the committed weights' quality). Bad input (a
model that does not load, an unknown sampler, non-positive counts) is one line on stderr and exit status 2, before
any sampling and with nothing written.

The prompts are the captions of ``shapes.sample_specs(n, EVAL_SEED)`` (a fixed draw, independent of the training
set's seed), image i is made with ``torch.Generator().manual_seed(i)``, on the pipeline's own sigmas, default
guidance. The score of an image is :func:`k_diffusing.embedded.score.adherence` (the fraction of the prompt's five
attributes it shows); a sampler's score at a step count is the mean over the prompts. Adherence saturates once the
colours and the layout are right, which takes few steps; the mean :func:`k_diffusing.embedded.score.clean_fraction`
(pixels within 0.25 of the prompt's two colours) tells converged images from blurred, under-resolved ones. Writes
``adherence.json`` (every number, plus per-attribute accuracies at the largest step count), ``adherence.svg`` and
``clean.svg`` (each against steps, one panel per model) and ``adherence.md`` (the table, adherence / clean).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from k_diffusing.embedded.score import adherence_batch, attribute_accuracy, clean_fraction
from k_diffusing.embedded.shapes import sample_specs
from k_diffusing.gallery import (EMBEDDED, BadArguments, load_or_refuse, pipeline_options, pipeline_refusal, render,
                                 save_atomic)
from k_diffusing.registry import resolve_sampler
from k_diffusing.svgplot import line_plot

EVAL_SEED = 2026
MAIN_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "uni_pc")
FAMILY = {"sdxl": "SDXL", "flux": "FLUX"}


def evaluation_prompts(n: int) -> list[str]:
    return [spec.caption() for spec in sample_specs(n, EVAL_SEED)]


def sweep(pipe, kind: str, prompts, samplers, steps_list, progress=None) -> dict:
    """``{sampler: {steps: {"adherence", "model_calls", ["attributes"]}}}``; attributes at the largest step count."""
    results = {}
    for sampler in samplers:
        results[sampler] = {}
        for steps in steps_list:
            images, calls = render(pipe, prompts, sampler, None, 0, pipeline_options(kind, pipe, steps))
            scores = adherence_batch(images, prompts, value_range=(0, 1))
            clean = [clean_fraction(image, prompt, value_range=(0, 1)) for image, prompt in zip(images, prompts)]
            entry = {"adherence": sum(scores) / len(scores), "clean": sum(clean) / len(clean), "model_calls": calls}
            if steps == max(steps_list):
                entry["attributes"] = attribute_accuracy(images, prompts, value_range=(0, 1))
            results[sampler][steps] = entry
            if progress:
                progress(
                    f"{kind} {sampler} {steps} steps: adherence {entry['adherence']:.3f}, clean pixels "
                    f"{entry['clean']:.3f} ({calls} calls)"
                )
    return results


def table(results: dict, steps_list) -> str:
    """Markdown: one row per (model, sampler), mean adherence / clean-pixel fraction per step count."""
    lines = ["| model | sampler | " + " | ".join(f"{s} steps" for s in steps_list) + " |"]
    lines.append("|---|---|" + "---|" * len(steps_list))
    for kind, per_sampler in results.items():
        for sampler, per_steps in per_sampler.items():
            cells = " | ".join(f"{per_steps[s]['adherence']:.2f} / {per_steps[s]['clean']:.2f}" for s in steps_list)
            lines.append(f"| {FAMILY[kind]} | `{sampler}` | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", choices=sorted(FAMILY), default=["sdxl", "flux"])
    p.add_argument("--model-sdxl", default=str(EMBEDDED["sdxl"]))
    p.add_argument("--model-flux", default=str(EMBEDDED["flux"]))
    p.add_argument("--prompts", type=int, default=64, help="number of evaluation prompts")
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--samplers", nargs="+", default=list(MAIN_SAMPLERS))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("outputs") / "adherence")
    a = p.parse_args(argv)
    models = {"sdxl": a.model_sdxl, "flux": a.model_flux}
    try:  # bad input: one line and exit status 2, before any work and before anything is written
        if a.prompts < 1 or min(a.steps) < 1:
            raise BadArguments(f"--prompts and --steps must be positive, got {a.prompts} and {a.steps}")
        for sampler in a.samplers:
            refusal = pipeline_refusal(resolve_sampler(sampler)[0].name, sampler)
            if refusal is not None:
                raise BadArguments(f"--samplers: {refusal}")
        if a.threads:
            torch.set_num_threads(a.threads)
        pipes = {kind: load_or_refuse(kind, models[kind], "cpu", torch.float32, option=f"--model-{kind}")
                 for kind in a.kinds}
    except (BadArguments, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    steps_list = sorted(set(a.steps))
    prompts = evaluation_prompts(a.prompts)
    results = {}
    for kind, pipe in pipes.items():
        pipe.set_progress_bar_config(disable=True)
        results[kind] = sweep(pipe, kind, prompts, a.samplers, steps_list, lambda m: print(m, file=sys.stderr))
    a.out.mkdir(parents=True, exist_ok=True)
    record = {"models": {k: models[k] for k in a.kinds}, "prompts": prompts, "results": results}
    save_atomic(json.dumps(record, indent=1), a.out / "adherence.json")
    for metric, label, y_range in (("adherence", "mean adherence", (0.0, 1.0)), ("clean", "clean-pixel fraction", (0.5, 1.0))):
        panels = [
            (f"{FAMILY[kind]} (embedded)", {s: [(n, e[metric]) for n, e in r.items()] for s, r in results[kind].items()})
            for kind in a.kinds
        ]
        save_atomic(line_plot(panels, "sampler steps", label, y_range), a.out / f"{metric}.svg")
    markdown = table(results, steps_list)
    save_atomic(markdown + "\n", a.out / "adherence.md")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
