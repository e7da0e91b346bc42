"""The gallery scripts (k_diffusing.gallery behind test_sdxl.py / test_flux.py), the README table, the SVG plot and
the adherence sweep, on small random-weight pipelines saved to disk (the embedded models are tested in
tests/test_embedded_models.py)."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from k_diffusing import gallery
from k_diffusing.embedded import evaluate, train_flux, train_sdxl
from k_diffusing.svgplot import line_plot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Random-weight SDXL and FLUX pipelines in diffusers' layout (as the trainers build them)."""
    root = tmp_path_factory.mktemp("gallery_models")
    train_sdxl.assemble(train_sdxl.build_components(seed=0)).save_pretrained(root / "sdxl")
    components = train_flux.build_components(seed=0, transformer_size=(1, 1, 2))
    components["tokenizer_2"].model_max_length = 48
    train_flux.assemble(components).save_pretrained(root / "flux")
    return root


def run(kind, model, out, *extra):
    return gallery.main(kind, ["--model", str(model), "--out", str(out), "--steps", "2", *extra])


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_gallery_writes_strips_grid_and_record(saved, tmp_path, kind):
    out = tmp_path / kind
    prompts = ["a large red circle on the left, blue background", "a small blue square at the top, red background"]
    assert run(kind, saved / kind, out, "--samplers", "euler", "DPM++ 2M Karras", "heun", "--prompt", *prompts) == 0
    record = json.loads((out / "gallery.json").read_text())
    assert list(record["samplers"]) == ["euler", "dpmpp_2m", "heun"]
    assert record["samplers"]["dpmpp_2m"]["schedule"] == "karras"
    # 2 steps: one call each for euler and dpmpp_2m; heun takes 2 calls on the first step and 1 on the step into 0.
    assert [e["model_calls"] for e in record["samplers"].values()] == [2, 2, 3]
    assert all(len(e["adherence"]) == 2 for e in record["samplers"].values())
    assert (record["height"], record["width"]) == (32, 32)
    if kind == "flux":
        assert record["max_sequence_length"] == 48
    from PIL import Image

    for name in record["samplers"]:
        assert Image.open(out / f"{name}.png").size == (64, 32)  # two 32x32 images side by side
    assert Image.open(out / "grid.png").size[1] == 3 * gallery.CELL
    assert not list(out.glob(".*.tmp"))
    # seconds vary from run to run: they go to timings.json (git ignores it in the goldens), not into gallery.json
    assert all("seconds" not in e for e in record["samplers"].values())
    timings = json.loads((out / "timings.json").read_text())["seconds"]
    assert list(timings) == ["euler", "dpmpp_2m", "heun"] and all(t > 0 for t in timings.values())


def test_gallery_is_reproducible_and_matches_a_direct_pipeline_call(saved, tmp_path):
    from k_diffusing import KSDXLPipeline

    prompt = "a large red circle on the left, blue background"
    for out in (tmp_path / "a", tmp_path / "b"):
        run("sdxl", saved / "sdxl", out, "--samplers", "dpmpp_2m_sde", "--prompt", prompt, "--seed", "5")
    assert (tmp_path / "a" / "dpmpp_2m_sde.png").read_bytes() == (tmp_path / "b" / "dpmpp_2m_sde.png").read_bytes()
    pipe = KSDXLPipeline.from_pretrained(saved / "sdxl")
    pipe.set_progress_bar_config(disable=True)
    direct = pipe(prompt, sampler="dpmpp_2m_sde", num_inference_steps=2, height=32, width=32, output_type="pt",
                  generator=[torch.Generator().manual_seed(5)]).images
    expected = gallery.strip(direct)
    import numpy as np
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "dpmpp_2m_sde.png")), np.asarray(expected))


def test_gallery_non_shapes_prompt_has_no_score(saved, tmp_path):
    run("sdxl", saved / "sdxl", tmp_path, "--samplers", "euler", "--prompt", "an astronaut riding a horse")
    assert json.loads((tmp_path / "gallery.json").read_text())["samplers"]["euler"]["adherence"] is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samplers", "eulr"], "Did you mean 'euler'"),
        (["--sigma-schedule", "karas"], "Did you mean 'karras'"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--height", "-8"], "--height must be positive, got -8"),
        (["--samplers", "DPM++ 2M Karras", "--sigma-schedule", "exponential"], "implies sigma schedule 'karras'"),
        (["--samplers", "euler", "dpm_adaptive"], "sampler 'dpm_adaptive' cannot run through the K pipelines: it "
                                                  "chooses its number of model calls from the data"),
        (["--samplers", "DPM adaptive"], "sampler 'DPM adaptive' (dpm_adaptive) cannot run through the K pipelines"),
    ],
)
def test_gallery_refuses_bad_arguments_before_loading(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as error:
        gallery.main("sdxl", ["--model", str(tmp_path / "missing"), "--out", str(out), *argv])
    assert message in str(error.value)
    assert error.value.code == 2  # as argparse's own errors
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_goldens_are_written_only_when_asked(tmp_path, capsys):
    # the README's commands must leave git clean: by default the gallery goes to outputs/runs/<kind> (ignored); the
    # committed goldens only with --update-goldens, never together with --out; the main job's --write (the README
    # table shows the goldens) needs --update-goldens, refused before anything renders
    from k_diffusing.__main__ import main as package_main

    def out(argv):
        args = gallery.parser("flux").parse_args(argv)
        gallery.validate(args)
        return args.out

    assert out([]) == Path("outputs") / "runs" / "flux"
    assert out(["--update-goldens"]) == Path("outputs") / "gallery" / "flux"
    assert out(["--out", str(tmp_path)]) == tmp_path
    with pytest.raises(gallery.BadArguments, match="--update-goldens both choose the output folder"):
        out(["--out", str(tmp_path), "--update-goldens"])
    with pytest.raises(SystemExit) as error:
        package_main(["gallery", "--write", str(tmp_path / "README.md")])
    assert error.value.code == 2 and "add --update-goldens" in capsys.readouterr().err
    ignored = subprocess.run(["git", "check-ignore", "outputs/runs/sdxl/euler.png", "outputs/gallery/flux/timings.json"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["outputs/runs/sdxl/euler.png", "outputs/gallery/flux/timings.json"]


def test_gallery_leaves_out_the_samplers_pipelines_cannot_run():
    """By default every catalogue sampler but dpm_adaptive (KScheduler refuses it: its model calls depend on the
    data) and the CFG++ samplers (they take other guidance settings)."""
    from k_diffusing.registry import list_samplers
    from k_diffusing.scheduler import UNPLANNABLE

    chosen = [name for name, _, _ in gallery.validate(gallery.parser("sdxl").parse_args([]))]
    assert chosen == [spec.name for spec in gallery.gallery_samplers()]
    cfg_pp = {spec.name for spec in list_samplers() if spec.needs_uncond}
    assert len(cfg_pp) == 7 and all(name.endswith("_cfg_pp") for name in cfg_pp)
    assert set(spec.name for spec in list_samplers()) - set(chosen) == UNPLANNABLE | cfg_pp
    assert UNPLANNABLE == {"dpm_adaptive"}
    with pytest.raises(gallery.BadArguments, match="CFG"):
        gallery.validate(gallery.parser("sdxl").parse_args(["--samplers", "euler_cfg_pp"]))
    assert gallery.pipeline_refusal("euler") is None
    assert "k_diffusing.sampling.sample_dpm_adaptive" in gallery.pipeline_refusal("dpm_adaptive")


def test_gallery_script_exits_2_on_bad_arguments(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "test_sdxl.py"), "--out", str(tmp_path / "never"),
                           "--samplers", "dpm_adaptive"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: --samplers: sampler 'dpm_adaptive' cannot run through the K pipelines" in done.stderr
    assert not (tmp_path / "never").exists()


def test_gallery_table_links_both_families(saved, tmp_path):
    folders = {"sdxl": tmp_path / "gallery" / "sdxl", "flux": tmp_path / "gallery" / "flux"}
    for kind, folder in folders.items():
        run(kind, saved / kind, folder, "--samplers", "euler", "lms")
    text = gallery.gallery_table(folders, tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`euler`", "`lms`"]
    assert '<img src="gallery/sdxl/euler.png"' in rows[0] and '<img src="gallery/flux/euler.png"' in rows[0]
    assert "SDXL (2 steps) | FLUX (2 steps)" in text


@pytest.mark.parametrize("script, kind", [("test_sdxl.py", "sdxl"), ("test_flux.py", "flux")])
def test_root_scripts_run_the_gallery(saved, tmp_path, script, kind):
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--model", str(saved / kind), "--out", str(tmp_path), "--steps", "1",
         "--samplers", "euler", "--prompt", "a large red circle on the left, blue background"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "euler.png").exists() and (tmp_path / "grid.png").exists()
    assert "sdxl samplers" in done.stderr or "flux samplers" in done.stderr  # the progress bar over samplers


def test_svg_plot_is_valid_and_draws_every_series():
    svg = line_plot(
        [("A", {"euler": [(2, 0.2), (4, 0.5)], "heun": [(2, 0.3), (4, 0.6)]}), ("B", {"euler": [(2, 0.1), (4, 0.9)]})],
        "steps", "score", (0.0, 1.0),
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 3
    assert len(root.findall(f"{ns}circle")) == 6
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "euler" in texts and "heun" in texts and "A" in texts and "B" in texts


def test_adherence_sweep_writes_json_plot_and_table(saved, tmp_path):
    out = tmp_path / "adh"
    assert evaluate.main(["--kinds", "sdxl", "--model-sdxl", str(saved / "sdxl"), "--prompts", "3", "--steps", "1",
                          "2", "--samplers", "euler", "heun", "--out", str(out)]) == 0
    record = json.loads((out / "adherence.json").read_text())
    assert record["prompts"] == evaluate.evaluation_prompts(3)
    assert set(record["results"]["sdxl"]) == {"euler", "heun"}
    assert record["results"]["sdxl"]["heun"]["2"]["model_calls"] == 3
    assert set(record["results"]["sdxl"]["euler"]["2"]["attributes"]) == {"shape", "colour", "position", "size",
                                                                          "background"}
    assert (out / "adherence.md").read_text().count("| SDXL |") == 2
    assert 0 <= record["results"]["sdxl"]["heun"]["1"]["clean"] <= 1
    ET.fromstring((out / "adherence.svg").read_text())
    ET.fromstring((out / "clean.svg").read_text())


def test_svg_plot_with_a_single_x_value():
    for log_x in (True, False):
        root = ET.fromstring(line_plot([("A", {"euler": [(20, 0.5)]})], "steps", "score", (0.0, 1.0), log_x=log_x))
        assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 1


def test_gallery_records_embedded_models_by_name(tmp_path, monkeypatch):
    for kind, folder in gallery.EMBEDDED.items():
        assert gallery.model_label(f"embedded:{kind}") == f"embedded:{kind}"
        assert gallery.model_label(str(folder)) == f"embedded:{kind}"
        monkeypatch.chdir(folder.parent)
        assert gallery.model_label(kind) == f"embedded:{kind}"  # a relative path to the same folder
        assert gallery.model_location(f"embedded:{kind}") == str(folder)
    monkeypatch.chdir(tmp_path)
    for other in ("stabilityai/stable-diffusion-xl-base-1.0", str(tmp_path / "my_model"), "sdxl"):
        assert gallery.model_label(other) == other and gallery.model_location(other) == other
    with pytest.raises(ValueError, match="unknown embedded model 'embedded:sd3'"):
        gallery.model_location("embedded:sd3")
    assert gallery.parser("flux").parse_args([]).model == "embedded:flux"


def test_summary_table_lists_seconds_calls_and_adherence_per_family(tmp_path):
    """The main job's closing table, from the files the gallery writes: one row per sampler (blank cells where a
    family lacks it), seconds from timings.json, the calls and adherence from gallery.json, a total row."""
    def folder(kind, samplers, seconds):
        path = tmp_path / kind
        path.mkdir()
        record = {"num_inference_steps": 3, "device": "cpu", "samplers": samplers}
        (path / "gallery.json").write_text(json.dumps(record))
        (path / "timings.json").write_text(json.dumps({"device": "cpu", "seconds": seconds}))
        return path

    folders = {
        "sdxl": folder("sdxl", {"euler": {"schedule": None, "model_calls": 3, "adherence": [1.0, 0.8, 1.0, 0.6]},
                                "dpmpp_2m": {"schedule": "karras", "model_calls": 3, "adherence": None}},
                       {"euler": 1.5, "dpmpp_2m": 2.25}),
        "flux": folder("flux", {"euler": {"schedule": None, "model_calls": 3, "adherence": [1.0, 1.0]}},
                       {"euler": 0.5}),
    }
    lines = gallery.summary_table(folders).splitlines()
    assert lines[0].split() == ["sampler", "sdxl", "s", "calls", "adherence", "flux", "s", "calls", "adherence"]
    rows = {line.split()[0]: line for line in lines[2:] if line[:1].isalpha()}
    assert rows["euler"].split() == ["euler", "1.50", "3", "0.85", "2/4", "0.50", "3", "1.00", "2/2"]
    assert rows["dpmpp_2m"].split() == ["dpmpp_2m", "+", "karras", "2.25", "3", "-"]  # no flux entry: blank cells
    assert rows["total"].split() == ["total", "3.75", "6", "0.85", "2/4", "0.50", "3", "1.00", "2/2"]
    assert all(len(line) <= max(80, len(lines[0])) for line in lines)
    noted = gallery.summary_table(folders, notes=True)
    assert "not rendered: dpm_adaptive" in noted and "CFG++" in noted


def test_main_job_prints_one_bar_per_family_and_a_summary(tmp_path, capsys):
    """python -m k_diffusing on two samplers and two steps: stderr holds one progress bar per family over its
    samplers (no pipeline bar over timesteps, no loading bars), stdout one table with both families' rows."""
    from k_diffusing.__main__ import main as package_main

    assert package_main(["gallery", "--out", str(tmp_path), "--steps", "2", "--samplers", "euler", "heun"]) == 0
    out, err = capsys.readouterr()
    assert "Loading" not in err and "model calls" not in err and "it/s" not in err  # diffusers' bars are off
    bars = [line for line in err.split("\n") if "samplers:" in line]
    assert [line.split("\r")[-1].split(":")[0] for line in bars] == ["sdxl samplers", "flux samplers"]
    assert bars[0].split("\r")[-1].count("2/2") == 1
    # a terminal line per bar (tqdm redraws it after '\r'), one per 'wrote ...', and two transformers warnings
    assert err.count("\n") <= 6, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["sampler", "sdxl", "s", "calls", "adherence"]
    rows = [line.split() for line in lines if line.split()[:1] in (["euler"], ["heun"], ["total"])]
    assert [row[0] for row in rows] == ["euler", "heun", "total"]
    # model calls per family: heun takes 2 on the first step and 1 on the step into 0
    assert [(row[2], row[6]) for row in rows] == [("2", "2"), ("3", "3"), ("5", "5")]
    assert all(json.loads((tmp_path / kind / "timings.json").read_text())["seconds"] for kind in ("sdxl", "flux"))
    assert len(lines) <= 10  # header, rule, 2 rows, rule, total, the footnote (wrapped at 80 columns)


def test_main_job_keeps_the_goldens_whole(capsys):
    from k_diffusing.__main__ import main as package_main

    with pytest.raises(SystemExit) as error:
        package_main(["gallery", "--update-goldens", "--samplers", "euler"])
    assert error.value.code == 2 and "--samplers with --update-goldens" in capsys.readouterr().err
    with pytest.raises(gallery.BadArguments, match="--samplers with --update-goldens"):
        gallery.validate(gallery.parser("sdxl").parse_args(["--update-goldens", "--samplers", "euler"]))


@pytest.mark.parametrize("option, kind", [("--model-sdxl", "sdxl"), ("--model-flux", "flux")])
def test_adherence_sweep_refuses_a_model_that_does_not_load(tmp_path, capsys, option, kind):
    out = tmp_path / "never"
    assert evaluate.main(["--kinds", "sdxl", "flux", option, str(tmp_path / "missing"), "--prompts", "1", "--steps",
                          "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot load {option} '{tmp_path / 'missing'}' as a {kind} pipeline: " in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--prompts", "0"], "--prompts and --steps must be positive"),
    (["--samplers", "eulr"], "Did you mean 'euler'"),
    (["--samplers", "dpm_adaptive"], "cannot run through the K pipelines"),
])
def test_adherence_sweep_refuses_bad_arguments(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert evaluate.main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("model", ["/nonexistent", str(gallery.EMBEDDED["flux"])])
def test_gallery_refuses_a_model_that_does_not_load(tmp_path, capsys, model):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as error:
        gallery.main("sdxl", ["--model", model, "--out", str(out), "--samplers", "euler"])
    assert error.value.code == 2 and not out.exists()
    assert f"error: cannot load --model {model!r} as a sdxl pipeline: " in capsys.readouterr().err
