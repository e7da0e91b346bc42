"""The parity harness (k_diffusing.parity) on the embedded models: every pair of its table within tolerance at the
pipeline and sampler levels, the first divergent step found when a formula is broken, reports and exit codes."""

from __future__ import annotations

import json

import pytest
import torch

from k_diffusing.gallery import DEFAULT_PROMPTS, EMBEDDED, load_pipeline, pipeline_options
from k_diffusing.parity import PAIRS, compare, scheduler_sampler, scheduler_schedule, trace_sampler_level
from k_diffusing.parity.__main__ import main
from k_diffusing.parity.sampler_level import scheduler_for
from k_diffusing.parity.trace import trace_diffusers, trace_k

pytest.importorskip("diffusers")
STEPS = 6
PIPELINE_PAIRS = [p for p in PAIRS.values() if p.pipeline]


@pytest.fixture(scope="module")
def pipes():
    loaded = {kind: load_pipeline(kind, str(EMBEDDED[kind]), "cpu", torch.float32) for kind in ("sdxl", "flux")}
    for pipe in loaded.values():
        pipe.set_progress_bar_config(disable=True)
    return loaded


def _pipeline_comparison(pipes, pair, batch=1):
    pipe = pipes[pair.kind]
    options = {**pipeline_options(pair.kind, pipe, STEPS), "prompt": [DEFAULT_PROMPTS[0]] * batch}
    return compare(pair, trace_k(pipe, pair, options, 0), trace_diffusers(pipe, pair, options, 0))


@pytest.mark.filterwarnings("ignore:Should have")  # torchsde's interval-end rounding
@pytest.mark.parametrize("pair", PIPELINE_PAIRS, ids=lambda p: p.name)
def test_pipeline_pair_within_tolerance(pipes, pair):
    c = _pipeline_comparison(pipes, pair, batch=1 if pair.exact else 4)
    assert c.ours.sigmas == c.theirs.sigmas  # the same schedule, bit for bit
    assert len(c.step_diff) == STEPS and len(c.ours.call_timesteps) == len(c.theirs.call_timesteps)
    assert c.passed, (c.measured, c.first_divergent, c.step_diff)


@pytest.mark.filterwarnings("ignore:Should have")
@pytest.mark.parametrize("pair", list(PAIRS.values()), ids=lambda p: p.name)
def test_sampler_level_pair_within_tolerance(pair):
    c = compare(pair, *trace_sampler_level(pair, STEPS, 0))
    assert len(c.step_diff) == STEPS
    assert c.ours.call_timesteps == pytest.approx(c.theirs.call_timesteps, rel=1e-6)  # the same call sigmas
    assert c.passed, (c.measured, c.first_divergent, c.step_diff)


def test_broken_formula_is_caught_at_its_first_step(pipes, monkeypatch):
    """Negative control: Euler's derivative 1e-5 too large must fail the exact pair from step 0 at both levels."""
    from k_diffusing.samplers import euler

    monkeypatch.setattr(euler, "to_d", lambda x, sigma, denoised: (x - denoised) / sigma * (1 + 1e-5))
    pair = PAIRS["sdxl_euler_leading"]
    for c in (_pipeline_comparison(pipes, pair), compare(pair, *trace_sampler_level(pair, STEPS, 0))):
        assert not c.passed and c.first_divergent == 0


def test_lcm_last_step_is_caught(pipes, monkeypatch):
    """Negative control for the LCM pair: reading LCMScheduler's schedule as ending at its final_alpha_cumprod
    (sigma_min) instead of 0 leaves noise on the last step, which the harness must pin to that step."""
    from k_diffusing import scheduler as k_scheduler
    from k_diffusing.pipelines import schedulers

    original = schedulers.read_schedule

    def sigma_min_end(scheduler):
        own = original(scheduler)
        own.sigmas[-1] = float(((1 - scheduler.alphas_cumprod[0]) / scheduler.alphas_cumprod[0]) ** 0.5)
        return own

    monkeypatch.setattr(schedulers, "read_schedule", sigma_min_end)
    monkeypatch.setattr(k_scheduler, "read_schedule", sigma_min_end)  # KScheduler reads its base's schedule
    c = _pipeline_comparison(pipes, PAIRS["sdxl_lcm"])
    assert c.first_divergent == STEPS - 1, c.step_diff


def test_scheduler_sampler_refuses_other_sigmas():
    scheduler = scheduler_for(PAIRS["sdxl_lms"])
    sigmas, _ = scheduler_schedule(scheduler, 4)
    sample = scheduler_sampler(scheduler)
    with pytest.raises(ValueError, match="its own sigmas"):
        sample(lambda x, s: x, torch.zeros(1, 4), sigmas * 1.01)


def test_cli_report_and_exit_codes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "parity"
    assert main(["--pairs", "flux_lcm", "sdxl_deis", "--steps", "3", "--batch", "2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(p["pair"], p["level"]) for p in report["pairs"]] == [
        ("flux_lcm", "pipeline"), ("flux_lcm", "sampler"), ("sdxl_deis", "pipeline"), ("sdxl_deis", "sampler")]
    html = (out / "index.html").read_text()
    for name in ("ours.png", "theirs.png", "diff.png", "divergence.svg"):
        assert (out / "pipeline" / "flux_lcm" / name).exists() and f"pipeline/flux_lcm/{name}" in html
    assert "every exact pair within its tolerance" in (out / "report.md").read_text()

    from k_diffusing.samplers import euler

    monkeypatch.setattr(euler, "to_d", lambda x, sigma, denoised: (x - denoised) / sigma * (1 + 1e-5))
    assert main(["--pairs", "sdxl_euler_leading", "--levels", "sampler", "--steps", "3", "--out", str(out)]) == 1
    assert "FAIL at step 0" in (out / "report.md").read_text()

    capsys.readouterr()
    assert main(["--pairs", "sdxl_eular", "--out", str(out)]) == 2
    assert "sdxl_euler" in capsys.readouterr().err  # the suggestion
    assert main(["--pairs", "sdxl_lms", "--tolerance", "sdxl_lms=tight", "--out", str(out)]) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a report")
    assert main(["--pairs", "sdxl_lms", "--out", str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "keep.txt").exists()


@pytest.mark.parametrize("option, model", [
    ("--model-sdxl", "/nonexistent"),
    ("--model-flux", "/nonexistent"),
    ("--model-sdxl", str(EMBEDDED["flux"])),  # a folder of the other family
    ("--model-flux", "embedded:sd3"),
])
def test_cli_refuses_a_model_that_does_not_load(tmp_path, capsys, option, model):
    """Bad input: exit status 2, one line naming the option and the model, no traceback, nothing written, before
    any pair runs."""
    out = tmp_path / "never"
    kind = option.removeprefix("--model-")
    assert main(["--kinds", kind, option, model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("[transformers]")]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load {option} {model!r} as a {kind} pipeline: ")
    assert "Traceback" not in err and "parity pairs" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_model_error_exit_status_from_the_shell(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "k_diffusing.parity", "--model-sdxl", "/nonexistent", "--out",
                           str(tmp_path / "never")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: cannot load --model-sdxl '/nonexistent' as a sdxl pipeline" in done.stderr
    assert not (tmp_path / "never").exists()
