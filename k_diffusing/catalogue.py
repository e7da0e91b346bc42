"""The catalogue report: every sampler with its metadata and what it measures on the analytic denoisers in VE and
flow geometry (``python -m k_diffusing catalogue``; ``--write README.md`` refreshes the README's table).

The numbers come from :mod:`k_diffusing.testing.measure`, the same runs ``tests/test_measured.py`` asserts on.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from .geometry import FLOW, VE
from .registry import list_samplers
from .testing.measure import format_moments, format_order, measure_moments, measure_order


HEADER = (
    "| name | A1111 name | order | measured order VE / flow | calls / step | stochastic "
    "| mean / std error VE | mean / std error flow | reference |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def catalogue_rows(progress=print) -> list[str]:
    """One Markdown row per sampler; measuring all of them takes about half a minute on 2 CPU cores."""
    rows = []
    for spec in list_samplers():
        progress(f"measuring {spec.name}")
        orders = [format_order(measure_order(spec, g)) for g in (VE, FLOW)]
        if spec.stochastic:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Should have t")
                moments = [format_moments(measure_moments(spec, g)) for g in (VE, FLOW)]
        else:
            moments = ["–", "–"]
        rows.append(
            f"| `{spec.name}` | {', '.join(spec.display_names) or '–'} | {spec.order or '–'} "
            f"| {orders[0]} / {orders[1]} | {spec.calls_per_step} | {'yes' if spec.stochastic else 'no'} "
            f"| {moments[0]} | {moments[1]} | {spec.reference} |"
        )
    return rows


def catalogue_table(progress=print) -> str:
    return "\n".join([HEADER, *catalogue_rows(progress)])


def write_into(path: Path, table: str, section: str = "catalogue") -> None:
    """Replace the text between the ``<!-- {section}:start -->`` and ``<!-- {section}:end -->`` markers of
    ``path`` with ``table``."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} markers to write the {section} between")
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{table}\n{end}", text, flags=re.S)
    path.write_text(new)
