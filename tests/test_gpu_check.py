"""benchmarks/gpu_check.sh, the GPU check a session lent a GPU runs (issue 16), checked here without one.

The dry run (``--dry-run``) runs every part's code on the CPU with tiny settings, the CUDA-only calls logged as
no-ops: exit 0, RESULTS_cuda.md / .json written to the given folder with every part, the committed
benchmarks/RESULTS_cuda.* untouched. The part runner's time limit, error recording and the markdown of earlier and
failed parts are checked on stand-in parts; the budgets that gpu_check.sh's header documents are the ones the code
enforces.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
COMMITTED = [ROOT / "benchmarks" / f"RESULTS_cuda.{suffix}" for suffix in ("md", "json")]
DRY_RUN_LIMIT_S = 120  # measured 32 to 51 s on 2 shared cores (load 1.5 to 3); room for a busier machine


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


gpu_check = _load_gpu_check()


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    before = {path: _digest(path) for path in COMMITTED}
    start = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=DRY_RUN_LIMIT_S)
    return {"out": out, "done": done, "before": before, "seconds": time.monotonic() - start}


def test_dry_run_writes_every_part(dry_run):
    done, out = dry_run["done"], dry_run["out"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "RESULTS_cuda.json").read_text())
    assert record["dry_run"] is True and record["command"].startswith("bash benchmarks/gpu_check.sh --dry-run")
    assert list(record["parts"]) == [part.name for part in gpu_check.PARTS]
    statuses = {name: part["status"] for name, part in record["parts"].items()}
    assert statuses == {name: "not run" if name in gpu_check.DRY.not_run else "ok" for name in statuses}
    md = (out / "RESULTS_cuda.md").read_text()
    assert md.startswith("# GPU check: DRY RUN")
    for title in [gpu_check.BY_NAME[name].title for name, _ in gpu_check.SECTIONS[:-1]] + ["bench.py"]:
        assert title in md
    for part in gpu_check.PARTS:
        assert f"| {part.name} | {statuses[part.name]}" in md
    assert "===== host_sync: ok" in (out / "gpu_check.log").read_text()


def test_dry_run_results_hold_each_parts_rows(dry_run):
    parts = json.loads((dry_run["out"] / "RESULTS_cuda.json").read_text())["parts"]
    rows = parts["host_sync"]["result"]["rows"]
    assert set(rows) == set(gpu_check.DRY.sync_samplers)
    assert rows["euler"] == {f"{kind} {route}": {"status": "ran"} for kind in gpu_check.KINDS
                             for route in gpu_check.ROUTES}
    assert rows["euler_cfg_pp"]["sdxl KScheduler"]["status"] == "skipped"
    assert {cell["status"] for cell in rows["dpm_adaptive"].values()} == {"skipped"}
    dtypes = parts["dtypes"]["result"]["rows"]
    assert len(dtypes) == len(gpu_check.KINDS) * len(gpu_check.ROUTES) * len(gpu_check.LOW_DTYPES)
    assert all(r["finite"] and 0 < r["max_abs"] < r["scale"] for r in dtypes)  # low precision differs, not wildly
    assert all(r["equal"] for r in parts["offload"]["result"]["rows"])
    assert parts["real_size"]["result"]["dry_run"] is True
    assert parts["bench_overhead"]["result"]["overhead"] and parts["bench_scheduler"]["result"]["scheduler"]


def test_dry_run_leaves_the_committed_results_alone(dry_run):
    assert {path: _digest(path) for path in COMMITTED} == dry_run["before"]


def test_dry_run_refuses_to_write_into_benchmarks():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", "benchmarks"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "would write over the committed" in done.stderr


def test_without_cuda_the_gpu_run_stops_at_once_saying_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU run would start")
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3 and "no CUDA device here" in done.stderr and "--dry-run" in done.stderr
    assert not any(tmp_path.iterdir())


def test_documented_budgets_are_the_enforced_ones():
    header = SCRIPT.read_text()
    documented = {m[1]: int(m[2]) for m in re.finditer(r"^#   (\w+)\s+(\d+)   ", header, re.MULTILINE)}
    assert documented == {**{part.name: part.budget_s for part in gpu_check.PARTS}, "total": gpu_check.TOTAL_S}
    wall = int(re.search(r"^WALL_S=(\d+) ", header, re.MULTILINE)[1])
    assert wall <= 480 and gpu_check.TOTAL_S + 20 <= wall  # room for the preflight, the wheels and the imports
    assert sum(part.budget_s for part in gpu_check.PARTS) <= gpu_check.TOTAL_S - gpu_check.RESERVE_S
    assert "real_size.py " + " ".join(gpu_check.GPU.real_size) in header


# --- the part runner, on stand-in parts ----------------------------------------------------------------------------

def _sleeper(ctx):
    """Starts a child process that would outlive a plain kill of the part, then sleeps."""
    child = subprocess.Popen(["sleep", "60"])
    (ctx.work / "grandchild").write_text(str(child.pid))
    time.sleep(60)


def _broken(ctx):
    raise ValueError("a broken part")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _context(tmp_path):
    return gpu_check.Context(gpu_check.DRY, dry_run=True, work=tmp_path)


def test_a_part_past_its_limit_is_killed_with_what_it_started(tmp_path):
    part = gpu_check.Part("sleeper", "Sleeper", 1, _sleeper)
    record = gpu_check.run_part(part, _context(tmp_path), timeout=2, log=tmp_path / "log")
    assert record["status"] == "timed out" and record["seconds"] < 10
    grandchild = int((tmp_path / "grandchild").read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
    assert "===== sleeper: timed out" in (tmp_path / "log").read_text()


def test_errors_and_failed_checks_fail_a_part(tmp_path):
    broken = gpu_check.run_part(gpu_check.Part("broken", "Broken", 30, _broken), _context(tmp_path), 30,
                                tmp_path / "log")
    assert broken["status"] == "failed" and "ValueError: a broken part" in broken["error"]
    assert any("ValueError" in line for line in broken["log_tail"])
    checked = gpu_check.Part("checked", "Checked", 30, lambda ctx: {"rows": []}, lambda result: ["a problem"])
    record = gpu_check.run_part(checked, _context(tmp_path), 30, tmp_path / "log")
    assert record["status"] == "failed" and record["problems"] == ["a problem"] and record["result"] == {"rows": []}


def _synchronizing_run(*args, **kwargs):
    try:
        raise RuntimeError("CUDA error: called a synchronizing CUDA operation")
    finally:
        raise ValueError("cleanup that failed while the mode was still on")


def _failing_run(*args, **kwargs):
    raise KeyError("not a sync")


def test_a_sync_is_told_from_other_errors(monkeypatch, tmp_path):
    ctx = _context(tmp_path)
    monkeypatch.setattr(gpu_check, "run_route", _synchronizing_run)
    synced = gpu_check._sync_run(ctx, None, "sdxl", "K pipeline", "euler")
    assert synced["status"] == "synced" and "synchronizing CUDA operation" in synced["message"]
    assert "test_gpu_check.py:" in synced["where"] and "raise RuntimeError" in synced["where"]  # not the cleanup
    monkeypatch.setattr(gpu_check, "run_route", _failing_run)
    assert gpu_check._sync_run(ctx, None, "sdxl", "K pipeline", "euler")["status"] == "error"


SYNC_RESULT = {"steps": 4, "control": "raised, as it should", "dry_run": False, "window": "end of the first call",
               "rows": {"euler": {"sdxl K pipeline": {"status": "ok"},
                                  "sdxl KScheduler": {"status": "synced", "message": "RuntimeError: sync",
                                                      "where": "k_diffusing/noise.py:1 `x.item()`"},
                                  "flux K pipeline": {"status": "error", "message": "KeyError: 'x'",
                                                      "where": "k_diffusing/scheduler.py:2 `d['x']`"},
                                  "flux KScheduler": {"status": "skipped", "reason": "a reason"}}}}


def test_markdown_marks_earlier_failed_and_timed_out_parts():
    problems = gpu_check.sync_problems(SYNC_RESULT)
    assert problems == ["euler (flux K pipeline): KeyError: 'x' at k_diffusing/scheduler.py:2 `d['x']`"]
    record = {"command": "bash benchmarks/gpu_check.sh --only dtypes", "date": "now", "dry_run": False,
              "budget_s": gpu_check.TOTAL_S, "seconds": 12.0, "parts": {
                  "environment": {"status": "ok", "result": {"gpu": "NVIDIA H200", "torch": "2.11.0"}, "date": "now"},
                  "real_size": {"status": "timed out", "error": "stopped at its limit of 120 s", "seconds": 120,
                                "log_tail": ["last line of its output"], "date": "now"},
                  "host_sync": {"status": "failed", "problems": problems, "result": SYNC_RESULT, "date": "now"},
                  "dtypes": {"status": "failed", "problems": ["sdxl K pipeline euler float16: latents not finite"],
                             "result": {"steps": 8, "rows": []}, "date": "now"},
                  "offload": {"status": "ok", "date": "before", "command": "bash benchmarks/gpu_check.sh",
                              "result": {"steps": 8, "tolerance": 1e-4, "rows": [], "dry_run": False}},
              }}
    md = gpu_check.markdown(record)
    assert md.startswith("# GPU check\n") and "gpu NVIDIA H200" in md
    assert "| real_size | timed out |" in md and "last line of its output" in md
    assert "| euler | ok | **sync** (1) | **error** (2) | – (a) |" in md
    assert "1. euler, sdxl KScheduler: RuntimeError: sync at k_diffusing/noise.py:1 `x.item()`" in md
    assert "- (a) a reason" in md and "latents not finite" in md and md.count("**Failed checks:**") == 2
    assert "| offload | ok | – | – | earlier: before, `bash benchmarks/gpu_check.sh` |" in md
    assert "bench.py section pipeline: not run" in md
    assert gpu_check.failed(record) == ["real_size", "host_sync", "dtypes"]
