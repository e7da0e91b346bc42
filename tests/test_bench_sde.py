"""benchmarks/bench.py section 7 (Brownian noise off the critical path) runs end to end on a short schedule with a
fast emulated network, and renders; the measurement itself is `python benchmarks/bench.py --only sde`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench

    monkeypatch.setattr(bench, "NETWORK_SECONDS", {"SDXL": 0.001, "FLUX": 0.001})
    monkeypatch.setattr(bench, "SDXL_SHAPE", (1, 4, 16, 16))
    monkeypatch.setattr(bench, "FLUX_SHAPE", (1, 64, 64))
    monkeypatch.setattr(bench, "FLUX_1024_SHAPE", (1, 16, 16, 16))
    return bench


def test_sde_section_measures_every_sampler_and_the_memory(bench):
    result = bench.sde_noise(steps=3, repeats=1)
    assert [(r["sampler"], r["size"]) for r in result["rows"]] == [
        (s, size) for size in ("SDXL", "FLUX") for s in bench.SDE_SAMPLERS]
    for row in result["rows"]:
        for key in ("ahead", "callers_thread", "torchsde", "gaussian"):
            assert math.isfinite(row[f"{key}_s"]) and row[f"{key}_s"] > 0, (row, key)
        assert row["gaussian_ratio"] == 1
    memory = result["memory"]
    assert 0 < memory["held_increments"] <= 80 and memory["steps"] == 50, memory
    text = bench.markdown({"device": "cpu", "command": "test", "machine": "test", "sde": result})
    assert "## 7. Brownian noise off the critical path" in text and text.count("| dpmpp_sde |") == 2
