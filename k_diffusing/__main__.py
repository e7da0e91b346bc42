"""``python -m k_diffusing``: the package's command line.

``catalogue`` (the default): list every sampler with its order, model calls per step and the accuracy it measures
on the analytic Gaussian-mixture denoiser in VE and flow geometry; ``--write README.md`` refreshes the README table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k_diffusing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    cat = commands.add_parser("catalogue", help="measure and print the sampler catalogue")
    cat.add_argument("--write", type=Path, metavar="README", help="write the table between the README's markers")
    args = parser.parse_args(argv)
    if args.command in (None, "catalogue"):
        from .catalogue import catalogue_table, write_into

        table = catalogue_table(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(table)
        if getattr(args, "write", None):
            write_into(args.write, table)
            print(f"wrote the catalogue into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
