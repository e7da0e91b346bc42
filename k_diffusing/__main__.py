"""``python -m k_diffusing``: the package's command line.

``gallery`` (the default): render every sampler with the embedded SDXL and FLUX models (:mod:`k_diffusing.gallery`,
the same as ``test_sdxl.py`` and ``test_flux.py``) into ``outputs/runs/`` (git ignores it), or with
``--update-goldens`` into the committed goldens in ``outputs/gallery/``; ``--write README.md`` (with
``--update-goldens``: the table shows the goldens) refreshes the README's gallery table; ``--samplers`` renders
only the named ones (not with ``--update-goldens``). Progress: one bar per family over its samplers (stderr); at the
end, one table (stdout) of every sampler's seconds, model calls and adherence in both families.

``generate``: one PNG per job of a job file, split over processes by ``accelerate`` (:mod:`k_diffusing.generate`).

``catalogue``: list every sampler with its order, model calls per step and the accuracy it measures
on the analytic Gaussian-mixture denoiser in VE and flow geometry; ``--write README.md`` refreshes the README table.

``schedulers``: every scheduler class diffusers exports and what KScheduler does with it (exact equivalent,
explicit samplers only, open, refused with the reason), with the counts; ``--write README.md`` refreshes the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generate"]:  # its own parser (python -m k_diffusing generate --help)
        from .generate import main as generate

        return generate(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m k_diffusing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("generate", help="one PNG per job of a job file, over accelerate's processes",
                        add_help=False)
    cat = commands.add_parser("catalogue", help="measure and print the sampler catalogue")
    cat.add_argument("--write", type=Path, metavar="README", help="write the table between the README's markers")
    sch = commands.add_parser("schedulers", help="every diffusers scheduler class and KScheduler's support of it")
    sch.add_argument("--write", type=Path, metavar="README", help="write the table between the README's markers")
    gallery = commands.add_parser("gallery", help="render every sampler with the embedded SDXL and FLUX models")
    gallery.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/runs, git ignores it)")
    gallery.add_argument("--update-goldens", action="store_true",
                         help="write into outputs/gallery, the committed goldens (README table, image regression)")
    gallery.add_argument("--steps", type=int, default=20, help="sampler steps")
    gallery.add_argument("--samplers", nargs="+", default=None,
                         help="catalogue or A1111 names (default: every sampler the gallery renders)")
    gallery.add_argument("--write", type=Path, metavar="README", help="write the table between the README's markers")
    args = parser.parse_args(argv)
    if args.command in (None, "gallery"):
        from .catalogue import write_into
        from .gallery import BadArguments, gallery_table, output_folder, summary_table
        from .gallery import main as render

        update, write = getattr(args, "update_goldens", False), getattr(args, "write", None)
        try:
            if write and not update:
                raise BadArguments("--write puts the gallery table into the README, which shows the committed goldens: "
                                   "add --update-goldens")
            out = output_folder(getattr(args, "out", None), update, samplers=getattr(args, "samplers", None))
        except BadArguments as error:
            print(f"error: {error}", file=sys.stderr)
            raise
        folders = {kind: out / kind for kind in ("sdxl", "flux")}
        samplers = getattr(args, "samplers", None)
        chosen = ["--samplers", *samplers] if samplers else []
        for kind, folder in folders.items():
            render(kind, ["--out", str(folder), "--steps", str(getattr(args, "steps", 20)), *chosen], summary=False)
        print(summary_table(folders, notes=samplers is None), flush=True)
        if write:
            write_into(args.write, gallery_table(folders, args.write.parent), section="gallery")
            print(f"wrote the gallery table into {args.write}", file=sys.stderr)
    elif args.command == "schedulers":
        from .catalogue import write_into
        from .pipelines.schedulers import support_markdown

        table = support_markdown()
        print(table)
        if args.write:
            write_into(args.write, table, section="schedulers")
            print(f"wrote the scheduler table into {args.write}", file=sys.stderr)
    elif args.command == "catalogue":
        from .catalogue import catalogue_table, write_into

        table = catalogue_table(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(table)
        if getattr(args, "write", None):
            write_into(args.write, table)
            print(f"wrote the catalogue into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
