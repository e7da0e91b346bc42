"""``python -m k_diffusing.parity`` (console script ``k-diffusing-parity``): run parity pairs, write reports.

Each pair runs at the pipeline level (the K pipeline against its diffusers parent on one pipeline folder, default:
the embedded models) and at the sampler level (the diffusers scheduler wrapped as a k-sampler against ours on the
analytic denoiser). Writes ``report.md``, ``index.html`` and ``report.json`` with per-pair images, heat maps and
divergence plots. Exit status: 0 when every exact pair is within its tolerance, 1 when one is not, 2 on bad input
(one line on stderr, nothing written), including a ``--model-sdxl`` / ``--model-flux`` that does not load.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from .pairs import PAIRS, Tolerance, pairs_for

LEVELS = ("pipeline", "sampler")


def parser() -> argparse.ArgumentParser:
    from ..gallery import DEFAULT_PROMPTS

    p = argparse.ArgumentParser(prog="python -m k_diffusing.parity", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", metavar="PAIR", help="pairs to run (default: all of --kinds); see --list")
    p.add_argument("--kinds", nargs="+", choices=("sdxl", "flux"), default=["sdxl", "flux"])
    p.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    p.add_argument("--model-sdxl", default="embedded:sdxl", help="SDXL pipeline folder or hub id "
                   "(default: embedded:sdxl, the embedded model)")
    p.add_argument("--model-flux", default="embedded:flux", help="FLUX pipeline folder or hub id "
                   "(default: embedded:flux)")
    p.add_argument("--steps", type=int, default=10, help="sampler steps (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", default=DEFAULT_PROMPTS[0])
    p.add_argument("--batch", type=int, default=4, help="images per distribution-only pair (default 4)")
    p.add_argument("--tolerance", nargs="+", default=[], metavar="PAIR=VALUE", help="override pair tolerances")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("outputs") / "parity", help="report folder (replaced)")
    p.add_argument("--write", type=Path, metavar="README", help="also write the summary table between the "
                   "README's <!-- parity:start/end --> markers")
    p.add_argument("--list", action="store_true", help="print the pair table and exit")
    return p


def overridden(pairs, overrides: list[str]):
    """The pairs with ``PAIR=VALUE`` tolerance overrides applied (same relative/absolute kind)."""
    values = {}
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: expected PAIR=NUMBER, e.g. sdxl_lms=1e-5") from None
        if name not in PAIRS:
            pairs_for([name])  # raises with the valid names
    return [dataclasses.replace(p, tolerance=Tolerance(values[p.name], p.tolerance.relative))
            if p.name in values else p for p in pairs]


def load_pipelines(pairs, args) -> dict:
    """``{kind: pipeline}`` for the kinds whose pairs run at the pipeline level, loaded once each; a model that does
    not load is :class:`k_diffusing.gallery.BadArguments` naming its option (``--model-sdxl`` / ``--model-flux``)."""
    import torch

    from ..gallery import load_or_refuse

    pipes = {}
    if "pipeline" not in args.levels:
        return pipes
    for kind in dict.fromkeys(pair.kind for pair in pairs if pair.pipeline):
        model = args.model_sdxl if kind == "sdxl" else args.model_flux
        pipes[kind] = load_or_refuse(kind, model, args.device, torch.float32, option=f"--model-{kind}")
        pipes[kind].set_progress_bar_config(disable=True)
    return pipes


def run(pairs, args, progress=None, pipes=None) -> list:
    """``[(level, Comparison)]`` for every pair and level; ``pipes``: :func:`load_pipelines`'s (default: loaded
    here)."""
    from ..gallery import pipeline_options
    from .compare import compare
    from .sampler_level import trace_sampler_level
    from .trace import trace_diffusers, trace_k

    pipes = load_pipelines(pairs, args) if pipes is None else pipes
    results = []
    for pair in pairs:
        if "pipeline" in args.levels and pair.pipeline:
            pipe = pipes[pair.kind]
            batch = 1 if pair.exact or pair.global_noise else args.batch
            options = {**pipeline_options(pair.kind, pipe, args.steps), "prompt": [args.prompt] * batch}
            ours, theirs = trace_k(pipe, pair, options, args.seed), trace_diffusers(pipe, pair, options, args.seed)
            results.append(("pipeline", compare(pair, ours, theirs)))
        if "sampler" in args.levels:
            results.append(("sampler", compare(pair, *trace_sampler_level(pair, args.steps, args.seed))))
        if progress is not None:
            progress(pair.name, results[-1][1] if results else None)
    return results


def _refuse_foreign_folder(out: Path) -> None:
    """ValueError when ``out`` holds files but no previous parity report (which alone may be replaced)."""
    if out.exists() and not (out / "report.json").exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not a parity report folder; choose an empty or new one")


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished report into ``out`` (a previous report there is replaced; anything else is refused)."""
    _refuse_foreign_folder(out)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp), str(out))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.steps < 1 or args.batch < 1:
            raise ValueError(f"--steps {args.steps} and --batch {args.batch} must be at least 1")
        pairs = overridden(pairs_for(args.pairs, tuple(args.kinds)), args.tolerance)
        _refuse_foreign_folder(args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        for p in pairs:
            kind = "exact" if p.exact else "distribution-only"
            print(f"{p.name:28s} {p.sampler:16s} <-> {p.diffusers_side}  [{kind}, {p.tolerance.describe()}]")
        return 0

    from tqdm.auto import tqdm

    from ..gallery import BadArguments
    from .report import compact_table, failures, markdown_table, write_report

    try:  # before any work, and before anything is written
        pipes = load_pipelines(pairs, args)
    except BadArguments as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tqdm(total=len(pairs), desc="parity pairs") as bar:
        results = run(pairs, args, progress=lambda name, c: (bar.set_postfix_str(name), bar.update()), pipes=pipes)
    from ..gallery import model_label

    settings = {"steps": args.steps, "seed": args.seed, "prompt": repr(args.prompt), "batch (distribution-only)":
                args.batch, "SDXL model": model_label(args.model_sdxl), "FLUX model": model_label(args.model_flux),
                "device": args.device}
    with tempfile.TemporaryDirectory(dir=args.out.parent if args.out.parent.exists() else None) as tmp:
        report = Path(tmp) / "report"
        write_report(results, report, settings)
        _replace_folder(report, args.out)
    table = markdown_table(results)
    print(table)
    if args.write:
        from ..catalogue import write_into

        write_into(args.write, compact_table(results), section="parity")
    failed = failures(results)
    print(f"report: {args.out / 'index.html'}; " + (f"FAILED: {', '.join(failed)}" if failed else "all exact pairs "
          "within tolerance"), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
