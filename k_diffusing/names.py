"""Helpful errors for names users type: list what is valid and suggest the closest (difflib)."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name, valid: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest valid name, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name, valid: Iterable[str]) -> ValueError:
    """``ValueError("unknown <kind> 'name'. Did you mean ...? Valid <kind>s: a, b, c")``."""
    valid = sorted(valid)
    return ValueError(f"unknown {kind} {name!r}.{did_you_mean(name, valid)} Valid {kind}s: {', '.join(valid)}")
