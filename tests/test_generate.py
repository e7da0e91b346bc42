"""`python -m k_diffusing generate` (k_diffusing.generate): job files, A1111 parameters chunks, the manifest, resume,
and the same bytes from 1 process and from 2 processes under torchrun (accelerate's own launcher needs MPI for several
CPU processes on one machine; on GPUs `accelerate launch --multi_gpu` runs torchrun's launcher)."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from diffusers import AutoencoderKL  # noqa: F401  diffusers binds its log handler to the stderr of its first
# import: here, the session's, not a test's captured one (closed after that test: 'Logging error' in the next)

from k_diffusing import gallery, generate
from k_diffusing.generate import (
    JobError,
    format_parameters,
    main,
    parse_parameters,
    read_jobs,
    read_parameters,
)
from k_diffusing.registry import A1111_SCHEDULES, list_samplers

REPO = Path(__file__).resolve().parents[1]
# Every process of a comparison uses one thread: the CPU kernels' reductions depend on the thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
JOBS = [
    {"prompt": "a large red circle on the left, blue background", "sampler": "DPM++ 2M Karras", "seed": 42,
     "negative_prompt": "blurry, dark: low quality"},
    {"prompt": "a small yellow square at the top, black background", "sampler": "dpmpp_2m_sde", "schedule": "beta",
     "guidance_scale": 3},
    {"prompt": "a small blue circle", "height": 16},
    {"prompt": "a large white triangle in the center, green background", "steps": 3},
    {"prompt": "a small blue circle on the right, white background", "sampler": "Euler a"},
]


def _job_file(folder: Path, jobs=JOBS) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def _run(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "k_diffusing", "generate", *map(str, args)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- the parameters chunk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_parameters_round_trip_every_sampler_and_schedule(kind):
    schedules = [None, *sorted({s for s in A1111_SCHEDULES.values() if s}), "vp", "linear_quadratic"]
    for i, spec in enumerate(list_samplers()):
        p = {"prompt": 'a "cat", on: a mat\nsecond line', "negative_prompt": "" if i % 2 else "bad, ugly: hands",
             "seed": 2**40 + i, "sampler": spec.name, "schedule": schedules[i % len(schedules)], "steps": i + 1,
             "width": 64 + 8 * i, "height": 48, "guidance_scale": 3.5 + i / 4, "model": "embedded:" + kind}
        text = format_parameters(p, kind)
        assert parse_parameters(text) == p, text


def test_parameters_text_is_a1111s_format():
    p = {"prompt": "a cat", "negative_prompt": "blurry", "seed": 7, "sampler": "dpmpp_2m", "schedule": "karras",
         "steps": 20, "width": 1024, "height": 768, "guidance_scale": 5.0, "model": "/models/sdxl, v2"}
    assert format_parameters(p, "sdxl") == (
        "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, "
        'Seed: 7, Size: 1024x768, Model: "/models/sdxl, v2", Version: k-diffusing 0.1.0')
    flux = format_parameters({**p, "negative_prompt": "", "schedule": None}, "flux")
    assert flux.endswith("Schedule type: Automatic, CFG scale: 1, Distilled CFG Scale: 5.0, Seed: 7, "
                         'Size: 1024x768, Model: "/models/sdxl, v2", Version: k-diffusing 0.1.0')
    with pytest.raises(ValueError, match="not an AUTOMATIC1111 parameters text"):
        parse_parameters("just a prompt")


# --- job files -----------------------------------------------------------------------------------------------------

BAD_JOBS = [
    ("jobs.csv", "a cat\n", r"jobs\.csv: a job file is \.txt .* or \.jsonl"),
    ("jobs.txt", "# only a comment\n\n", "no jobs"),
    ("jobs.jsonl", '{"prompt": "a"}\n{"prompt": \n', r"line 2: not valid JSON"),
    ("jobs.jsonl", '["a cat"]\n', r"line 1: a job is a JSON object, got list"),
    ("jobs.jsonl", '{"negative_prompt": "x"}\n', r"line 1: the job has no 'prompt'"),
    ("jobs.jsonl", '{"prompt": "a", "cfg": 7}\n', r"line 1: unknown key\(s\) \['cfg'\]; a job may set prompt, "),
    ("jobs.jsonl", '{"prompt": "a", "sampler": "dpmpp_9m"}\n', r"line 1: unknown sampler 'dpmpp_9m'"),
    ("jobs.jsonl", '{"prompt": "a"}\n{"prompt": "b", "sampler": "dpm_adaptive"}\n',
     r"line 2: sampler 'dpm_adaptive' cannot run through the K pipelines: it chooses its number of model calls from "
     r"the data .*k_diffusing\.sampling\.sample_dpm_adaptive"),
    ("jobs.jsonl", '{"prompt": "a", "sampler": "DPM adaptive"}\n',
     r"line 1: sampler 'DPM adaptive' \(dpm_adaptive\) cannot run through the K pipelines"),
    ("jobs.jsonl", '{"prompt": "a", "schedule": "karas"}\n', r"line 1: unknown sigma schedule 'karas'.*karras"),
    ("jobs.jsonl", '{"prompt": "a", "steps": 0}\n', r"line 1: 'steps' must be >= 1, got 0"),
    ("jobs.jsonl", '{"prompt": "a", "steps": 2.5}\n', r"line 1: 'steps' must be a int, got 2.5"),
    ("jobs.jsonl", '{"prompt": "a", "seed": -1}\n', r"line 1: 'seed' must be in \[0, 2\*\*63\), got -1"),
    ("jobs.jsonl", '{"prompt": "   "}\n', "line 1: the prompt is empty"),
    ("jobs.jsonl", '{"prompt": "a", "guidance_scale": true}\n', r"'guidance_scale' must be a float, got True"),
]


@pytest.mark.parametrize("name, text, message", BAD_JOBS, ids=[m[:30] for _, _, m in BAD_JOBS])
def test_bad_job_files_are_refused_naming_the_line(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(JobError, match=message):
        read_jobs(path, {}, "embedded:sdxl")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2  # before any model is loaded: nothing written
    assert not (tmp_path / "out").exists()
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["/nonexistent/model", "embedded:flux"], ids=["missing", "other-family"])
def test_a_model_that_does_not_load_is_exit_2_and_writes_nothing(tmp_path, capsys, model):
    # a missing folder, or a folder of the other family (the FLUX model as --kind sdxl): one line, exit 2 (bad input,
    # as the job-file checks), and no --out folder left behind
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a cat\n")
    assert main([str(jobs), "--model", model, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot load --model {model!r} as a sdxl pipeline:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_command_line_defaults_are_checked_and_jobs_override_them(tmp_path):
    path = tmp_path / "jobs.txt"
    path.write_text("a cat\n# skipped\n\na dog\n")
    jobs = read_jobs(path, {"sampler": "Euler a", "steps": 7, "seed": 100}, "m")
    assert [(j.prompt, j.seed, j.sampler, j.steps) for j in jobs] == [("a cat", 100, "euler_ancestral", 7),
                                                                      ("a dog", 101, "euler_ancestral", 7)]
    jsonl = _job_file(tmp_path, [{"prompt": "a", "seed": 5, "sampler": "DPM++ 2M Karras"}, {"prompt": "b"}])
    first, second = read_jobs(jsonl, {"schedule": "exponential", "seed": 9}, "m")
    assert (first.seed, first.sampler, first.schedule) == (5, "dpmpp_2m", "karras")
    assert (second.seed, second.sampler, second.schedule) == (10, "euler", "exponential")
    # a schedule the job names wins over an A1111 name's suffix, as sigma_schedule does in the pipelines
    (named,) = read_jobs(_job_file(tmp_path, [{"prompt": "a", "sampler": "DPM++ 2M Karras", "schedule": "beta"}]), {},
                         "m")
    assert (named.sampler, named.schedule) == ("dpmpp_2m", "beta")
    with pytest.raises(JobError, match="command line: 'steps' must be >= 1"):
        read_jobs(path, {"steps": 0}, "m")
    with pytest.raises(JobError, match="command line: sampler 'dpm_adaptive' cannot run through the K pipelines"):
        read_jobs(path, {"sampler": "dpm_adaptive"}, "m")


# --- running -------------------------------------------------------------------------------------------------------


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_run_writes_pngs_with_parameters_and_a_manifest_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(_job_file(tmp_path)), "--out", str(out), "--steps", "4"]) == 0
    records = _manifest(out)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["ok"] for r in records)
    for record in records:
        png = out / record["file"]
        assert hashlib.sha256(png.read_bytes()).hexdigest() == record["sha256"]
        assert read_parameters(png) == record["parameters"]  # the chunk parses back to the parameters used
    first = records[0]["parameters"]
    assert (first["sampler"], first["schedule"], first["seed"], first["steps"]) == ("dpmpp_2m", "karras", 42, 4)
    assert (first["width"], first["height"], first["guidance_scale"]) == (32, 32, 5.0)  # the pipeline's defaults
    assert records[3]["parameters"]["steps"] == 3 and records[3]["parameters"]["seed"] == 3
    assert records[2]["parameters"]["height"] == 16
    assert "5 jobs: 5 rendered, 0 already there, 0 failed" in capsys.readouterr().err

    # rerun: nothing redone, the same files; a deleted PNG is made again, byte for byte
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.png")}
    victim = out / records[4]["file"]
    victim.unlink()
    assert main([str(_job_file(tmp_path)), "--out", str(out), "--steps", "4"]) == 0
    assert "5 jobs: 1 rendered, 4 already there, 0 failed" in capsys.readouterr().err
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.png")}
    assert after.keys() == before.keys()
    for name, (mtime, data) in before.items():
        assert after[name][1] == data
        assert (after[name][0] == mtime) == (name != victim.name)
    assert _manifest(out) == records
    assert not list(out.glob(".*"))  # no temporary files left


def test_flux_jobs(tmp_path, capsys):
    out = tmp_path / "out"
    jobs = _job_file(tmp_path, [{"prompt": "a large red circle on the left, blue background", "guidance_scale": 2}])
    assert main([str(jobs), "--out", str(out), "--kind", "flux", "--steps", "3", "--sampler", "dpmpp_2m"]) == 0
    (ok,) = _manifest(out)
    assert read_parameters(out / ok["file"]) == ok["parameters"]
    assert ok["parameters"]["guidance_scale"] == 2.0 and ok["parameters"]["model"] == "embedded:flux"
    # a negative prompt: refused before the model loads (FluxPipeline would ignore it), nothing written
    negative = _job_file(tmp_path, [{"prompt": "a cat"}, {"prompt": "a cat", "negative_prompt": "a dog"}])
    assert main([str(negative), "--out", str(tmp_path / "neg"), "--kind", "flux"]) == 2
    assert "error: job 1: FLUX jobs take no negative prompt" in capsys.readouterr().err
    assert not (tmp_path / "neg").exists()


@pytest.mark.parametrize("job, message", [
    ({"prompt": "a", "width": 30}, r"error: job 1: width must be a positive multiple of 8 \(pixels\) or None, got 30"),
    ({"prompt": "a", "sampler": "uni_pc", "schedule": "vp"},
     r"error: job 1: sigma_schedule='vp' starts at sigma 15\d\.\d+, above 14\.6\d*, the largest noise level"),
    ({"prompt": "a", "guidance_scale": -3}, r"error: job 1: guidance_scale must be a finite number >= 0, got -3.0"),
], ids=["size", "schedule", "guidance"])
def test_jobs_the_model_refuses_stop_the_run_before_the_first_render(tmp_path, capsys, monkeypatch, job, message):
    """Checked against the loaded model (its VAE, its sigma table) before anything renders: exit 2, nothing written."""
    renders = []
    monkeypatch.setattr(generate, "render_png", lambda *args: renders.append(args))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(job) + "\n")
    assert main([str(jobs), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not renders and not (tmp_path / "out").exists()


def test_a_job_that_fails_while_rendering_is_recorded_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    render = generate.render_png

    def fail_job_1(pipe, kind, job):
        if job.index == 1:
            raise RuntimeError("out of memory (simulated)")
        return render(pipe, kind, job)

    monkeypatch.setattr(generate, "render_png", fail_job_1)
    out = tmp_path / "out"
    jobs = _job_file(tmp_path, [{"prompt": "a cat", "steps": 2}, {"prompt": "a dog", "steps": 2}])
    assert main([str(jobs), "--out", str(out)]) == 1
    ok, failed = _manifest(out)
    assert ok["ok"] and not failed["ok"] and "file" not in failed
    assert failed["error"] == "RuntimeError: out of memory (simulated)"
    assert "2 jobs: 1 rendered, 0 already there, 1 failed" in capsys.readouterr().err


def test_a_rerun_with_nothing_to_do_loads_no_model(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    jobs = _job_file(tmp_path, [{"prompt": "a cat", "steps": 2}])
    assert main([str(jobs), "--out", str(out)]) == 0
    first = (out / "manifest.jsonl").read_text()

    def no_loading(*args, **kwargs):
        raise AssertionError("the pipeline was loaded with nothing to render")

    monkeypatch.setattr(gallery, "load_pipeline", no_loading)
    assert main([str(jobs), "--out", str(out)]) == 0
    assert "1 jobs: 0 rendered, 1 already there, 0 failed" in capsys.readouterr().err
    assert (out / "manifest.jsonl").read_text() == first


def test_one_and_two_processes_give_the_same_bytes(tmp_path):
    jobs = _job_file(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run([jobs, "--out", one, "--steps", "4"])
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    double = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "k_diffusing",
                             "generate", str(jobs), "--out", str(two), "--steps", "4"],
                            env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "5 jobs: 5 rendered, 0 already there, 0 failed" in double.stderr, double.stderr[-3000:]
    assert "process 1" in double.stderr  # two workers did the work
    assert _files(one) == _files(two)  # every PNG and the manifest, byte for byte
    assert len(_files(one)) == 6  # 5 PNGs and the manifest


def test_a_killed_run_completes_on_rerun_without_redoing_finished_images(tmp_path):
    jobs = _job_file(tmp_path, [{"prompt": f"a small blue circle, job {i}"} for i in range(8)])
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "k_diffusing", "generate", str(jobs), "--out", str(out),
                                "--steps", "30"], env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.png")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 1 <= len(finished) < 8, finished  # killed midway
    assert not (out / "manifest.jsonl").exists()
    rerun = _run([jobs, "--out", out, "--steps", "30"])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"8 jobs: {8 - len(finished)} rendered, {len(finished)} already there, 0 failed" in rerun.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished  # not redone
    assert len(list(out.glob("*.png"))) == 8 and len(_manifest(out)) == 8
    assert not list(out.glob(".*"))
