"""Snapshots of an object's attributes, to check that a call did not mutate it (e.g. a pipeline's scheduler)."""

from __future__ import annotations

import copy

import torch


def snapshot(obj) -> dict:
    """A deep copy of ``vars(obj)`` (tensors cloned)."""
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in vars(obj).items()}


def _same_value(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, list) and any(isinstance(v, torch.Tensor) for v in x):
        return len(x) == len(y) and all(
            (u is None and v is None) or (u is not None and v is not None and torch.equal(u, v)) for u, v in zip(x, y)
        )
    return x == y


def same_snapshot(a: dict, b: dict) -> bool:
    """Whether two snapshots hold the same attributes with equal values (tensors compared exactly)."""
    return a.keys() == b.keys() and all(_same_value(x, b[k]) for k, x in a.items())
