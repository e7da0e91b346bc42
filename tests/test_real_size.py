"""benchmarks/real_size.py: its dry run (tiny networks of the same classes) makes every comparison with finite numbers
and writes no RESULTS file; section 6 replaces only its own text; bad command-line values are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def real_size(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import real_size

    return real_size


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


def test_dry_run_makes_every_comparison(real_size, tmp_path):
    from k_diffusing.registry import get_sampler

    written = {p.name: p.read_bytes() for p in BENCHMARKS.glob("RESULTS*")}
    out = tmp_path / "real.json"
    assert real_size.main(["--dry-run", "--json", str(out)]) == 0
    real = json.loads(out.read_text())
    rows = {(r["model"], r["case"], r["candidate"]) for r in real["comparisons"]}
    expected = set()
    for model, parent, k in (("sdxl", "StableDiffusionXLPipeline", "KSDXLPipeline"),
                             ("flux", "FluxPipeline", "KFluxPipeline")):
        native = "EulerDiscreteScheduler" if model == "sdxl" else "FlowMatchEulerDiscreteScheduler"
        for case in (f"{native} / euler (sampler=None)", "DPMSolverMultistepScheduler / dpmpp_2m"):
            expected |= {(model, case, k), (model, case, f"{parent} + KScheduler")}
    with_option = [s for s in real_size.SDE_SAMPLERS if "brownian" in get_sampler(s).options]
    expected |= {("sdxl", s, "Brownian tree (default)") for s in with_option}
    assert rows == expected
    assert {s["case"] for s in real["skipped"]} == set(real_size.SDE_SAMPLERS) - set(with_option)
    assert all(r["calls"] >= 2 for r in real["comparisons"])
    numbers = list(_numbers(real))
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert {p.name: p.read_bytes() for p in BENCHMARKS.glob("RESULTS*")} == written


def test_section_replaced_in_place(real_size):
    title = real_size.SECTION_TITLE
    head = "# Benchmarks\n\n## 1. a\n\n| x |\n"
    appended = real_size.replace_section(head, f"{title}\n\nfirst\n")
    assert appended == head + f"\n{title}\n\nfirst\n"
    assert real_size.replace_section(appended, f"{title}\n\nsecond\n") == head + f"\n{title}\n\nsecond\n"
    tail = "## 7. b\n\nmore\n"
    middle = real_size.replace_section(appended + "\n" + tail, f"{title}\n\nsecond\n")
    assert middle == head + f"\n{title}\n\nsecond\n\n" + tail


@pytest.mark.parametrize("argv", [["--flux-blocks", "0,0"], ["--flux-blocks", "2"], ["--resolution", "500"],
                                  ["--models", "sdxl,sd3"], ["--steps", "0"], ["--dtype", "float64"]])
def test_bad_values_refused(real_size, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        real_size.settings_from(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err
