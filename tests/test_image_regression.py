"""Image-diff regression (k_diffusing.regression): every catalogue sampler the K pipelines can run (all but
dpm_adaptive, which has no golden) on both embedded models, re-rendered with the settings of
outputs/gallery/<kind>/gallery.json, against the committed strips, within regression.Tolerance().

A failing sampler writes outputs/regression/<kind>/report.md (+ report.json, the candidate strip under candidates/
and <sampler>.diff.png: golden, candidate, amplified difference) and names the report in the assertion. Refresh the
goldens on purpose with `python -m k_diffusing` (or `python test_sdxl.py` / `python test_flux.py`).

Also: the comparison numbers on a hand-computed case, and the command line's exit statuses on synthetic images.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

from PIL import Image

from k_diffusing import regression
from k_diffusing.regression import Difference, Result, Tolerance, difference

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "outputs" / "gallery"
REPORTS = ROOT / "outputs" / "regression"
KINDS = ("sdxl", "flux")


def cases():
    """(kind, sampler) for every golden strip and every catalogue sampler the gallery renders (one without a
    golden fails; a golden of one the pipelines cannot run fails too)."""
    from k_diffusing.gallery import gallery_samplers

    catalogue = [spec.name for spec in gallery_samplers()]
    params = []
    for kind in KINDS:
        golden = list(json.loads((GOLDEN / kind / "gallery.json").read_text())["samplers"])
        for name in golden + [name for name in catalogue if name not in golden]:
            params.append(pytest.param(kind, name, id=f"{kind}-{name}"))
    return params


@pytest.fixture(scope="module")
def goldens():
    """``goldens(kind) -> (Renderer, Report)``: the pipeline of ``gallery.json``, loaded once per kind, and the
    kind's report so far; stale reports are removed first, and the complete report of a failing kind is written
    again at the end."""
    state = {}

    def get(kind):
        if kind not in state:
            regression.clear_report(REPORTS / kind)
            renderer = regression.Renderer(regression.load_record(GOLDEN / kind))
            state[kind] = (renderer, regression.Report(GOLDEN / kind, REPORTS / kind / "candidates", Tolerance()))
        return state[kind]

    yield get
    for kind, (_, report) in state.items():
        if not report.passed:
            regression.write_report(report, REPORTS / kind)


@pytest.mark.parametrize("kind, name", cases())
def test_sampler_matches_golden(goldens, kind, name):
    renderer, report = goldens(kind)
    folder, golden = REPORTS / kind, GOLDEN / kind / f"{name}.png"
    if name not in renderer.record["samplers"]:
        report.results.append(Result(name, "extra", None, None))
        path = regression.write_report(report, folder)
        pytest.fail(f"{kind} sampler {name} has no golden {golden.relative_to(ROOT)}: render the goldens on purpose "
                    f"with `python -m k_diffusing` (or `python test_{kind}.py`). Report: {path}", pytrace=False)
    from k_diffusing.gallery import pipeline_refusal
    from k_diffusing.registry import list_samplers

    if name not in {spec.name for spec in list_samplers()}:
        report.results.append(Result(name, "missing", golden, None))
        path = regression.write_report(report, folder)
        pytest.fail(f"{kind} golden {golden.relative_to(ROOT)} is for {name!r}, which is not in the catalogue. "
                    f"Report: {path}", pytrace=False)
    if pipeline_refusal(name) is not None:
        report.results.append(Result(name, "missing", golden, None))
        path = regression.write_report(report, folder)
        pytest.fail(f"{kind} golden {golden.relative_to(ROOT)}: {pipeline_refusal(name)}. Remove it from the "
                    f"goldens. Report: {path}", pytrace=False)
    candidate = renderer.strip(name)
    result = regression.compare_arrays(name, regression.read_png(golden), candidate, report.tolerance, golden)
    report.results.append(result)
    if not result.ok:
        result.candidate = folder / "candidates" / f"{name}.png"
        result.candidate.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(candidate).save(result.candidate)
        path = regression.write_report(report, folder)
        pytest.fail(f"{kind} sampler {result.describe(report.tolerance)}\n"
                    f"report: {path}\ndifference image: {folder / f'{name}.diff.png'}", pytrace=False)


@pytest.mark.parametrize("kind", KINDS)
def test_goldens_leave_out_only_the_samplers_pipelines_cannot_run(kind):
    """The committed goldens cover every catalogue sampler but dpm_adaptive (the pipelines refuse it: its model
    calls depend on the data) and the CFG++ samplers (not rendered: other guidance settings), and hold no strip
    without an entry in gallery.json."""
    from k_diffusing.registry import list_samplers

    folder = GOLDEN / kind
    golden = set(json.loads((folder / "gallery.json").read_text())["samplers"])
    cfg_pp = {spec.name for spec in list_samplers() if spec.needs_uncond}
    assert {spec.name for spec in list_samplers()} - golden == {"dpm_adaptive"} | cfg_pp
    assert {path.stem for path in folder.glob("*.png")} - {"grid"} == golden


def test_render_mode_refuses_a_golden_of_a_sampler_pipelines_cannot_run(tmp_path, capsys):
    golden = write_gallery(tmp_path / "golden", {"euler": strips(1)["s0"], "dpm_adaptive": strips(1)["s0"]})
    assert regression.main(["--golden", str(golden), "--report", str(tmp_path / "r")]) == 2
    assert "lists dpm_adaptive, which cannot be rendered: sampler 'dpm_adaptive' cannot run through the K " \
           "pipelines" in capsys.readouterr().err


# --- the comparison ----------------------------------------------------------------------------------------------


def test_one_changed_value_gives_the_hand_computed_numbers():
    golden = np.zeros((10, 10, 3), np.uint8)
    candidate = golden.copy()
    candidate[3, 4, 1] = 10
    found = difference(golden, candidate)
    assert found.max_diff == 10
    assert found.mean_diff == pytest.approx(10 / 300)
    # MSE = 10^2 / 300 = 1/3, so PSNR = 10 log10(255^2 * 3) = 10 log10(195075) = 52.9020 dB.
    assert found.psnr == pytest.approx(52.9020, abs=1e-4)
    assert (found.changed, found.pixels) == (1, 100)
    assert Tolerance(10, 52.9).accepts(found)
    assert not Tolerance(9, 0).accepts(found)
    assert not Tolerance(255, 53).accepts(found)


def test_identical_images_have_infinite_psnr():
    image = np.random.default_rng(0).integers(0, 256, (8, 24, 3), dtype=np.uint8)
    assert difference(image, image.copy()) == Difference(0, 0.0, float("inf"), 0, 8 * 24)


def test_heat_map_and_difference_image():
    assert regression.heat(np.array([[0, 1, 32, 64, 96]])).tolist() == [[
        [0, 0, 0], [8, 0, 0], [255, 1, 0], [255, 255, 2], [255, 255, 255]]]
    golden = np.zeros((32, 128, 3), np.uint8)
    picture = regression.diff_image(golden, golden + 5, scale=3)
    assert picture.width == 3 * 128 and picture.height == 3 * (3 * 32 + 18)


@pytest.mark.parametrize("max_diff, min_psnr, message", [(256, 40, "max_diff must be within 0..255, got 256"),
                                                         (8, float("inf"), "min_psnr must be a finite")])
def test_tolerance_refuses_bad_values(max_diff, min_psnr, message):
    with pytest.raises(regression.BadInput, match=message):
        Tolerance(max_diff, min_psnr)


# --- the command line on synthetic galleries ---------------------------------------------------------------------


def strips(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {f"s{i}": rng.integers(0, 256, (8, 16, 3), dtype=np.uint8) for i in range(n)}


def write_gallery(folder: Path, images: dict, record=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    if record:
        settings = {"model": "embedded:sdxl", "kind": "sdxl", "prompts": ["p"], "seed": 0, "num_inference_steps": 2,
                    "height": 8, "width": 8, "samplers": {name: {"schedule": None} for name in images}}
        (folder / "gallery.json").write_text(json.dumps(settings))
    return folder


def cli(tmp_path, golden, candidate, *extra):
    code = regression.main(["--golden", str(golden), "--candidate", str(candidate), "--report",
                            str(tmp_path / "report"), *extra])
    return code, json.loads((tmp_path / "report" / "report.json").read_text()) if code in (0, 1) else None


def test_cli_passes_identical_and_tolerated_images(tmp_path):
    images = strips()
    golden = write_gallery(tmp_path / "golden", images)
    nudged = {name: image.copy() for name, image in images.items()}
    nudged["s1"][0, 0, 0] ^= 1  # one level on one value
    code, report = cli(tmp_path, golden, write_gallery(tmp_path / "cand", nudged, record=False))
    assert code == 0 and report["passed"] and report["failures"] == []
    assert "PASSED" in (tmp_path / "report" / "report.md").read_text()
    assert not list((tmp_path / "report").glob("*.diff.png"))


def test_cli_fails_naming_the_sampler_and_its_numbers(tmp_path, capsys):
    images = strips()
    golden = write_gallery(tmp_path / "golden", images)
    changed = {name: image.copy() for name, image in images.items()}
    changed["s2"] = np.where(changed["s2"] < 128, changed["s2"] + 100, changed["s2"] - 100).astype(np.uint8)
    code, report = cli(tmp_path, golden, write_gallery(tmp_path / "cand", changed, record=False))
    assert code == 1
    assert report["failures"] == ["s2"]
    entry = next(r for r in report["results"] if r["name"] == "s2")
    assert entry["max_diff"] == 100 and entry["psnr"] == pytest.approx(20 * np.log10(255 / 100))
    text = (tmp_path / "report" / "report.md").read_text()
    assert "FAILED: 1 of 3 samplers" in text and "s2: max |diff| 100" in text and "s2.diff.png" in text
    assert (tmp_path / "report" / "s2.diff.png").exists()
    assert "FAIL s2: max |diff| 100" in capsys.readouterr().err


def test_cli_reports_missing_and_extra_samplers(tmp_path):
    images = strips()
    golden = write_gallery(tmp_path / "golden", images)
    candidate = {"s0": images["s0"], "s1": images["s1"], "new": images["s2"]}
    code, report = cli(tmp_path, golden, write_gallery(tmp_path / "cand", candidate, record=False))
    assert code == 1
    assert {r["name"]: r["status"] for r in report["results"]} == {"s0": "pass", "s1": "pass", "s2": "missing",
                                                                   "new": "extra"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "s2: no candidate image" in text and "new: no golden image" in text


def test_cli_refuses_bad_input_with_exit_2(tmp_path, capsys):
    images = strips()
    golden = write_gallery(tmp_path / "golden", images)
    candidate = write_gallery(tmp_path / "cand", images, record=False)
    assert regression.main(["--golden", str(golden), "--candidate", str(candidate), "--report",
                            str(tmp_path / "r"), "--max-diff", "300"]) == 2
    assert "max_diff must be within 0..255, got 300" in capsys.readouterr().err
    assert regression.main(["--golden", str(tmp_path / "nowhere"), "--candidate", str(candidate), "--report",
                            str(tmp_path / "r")]) == 2
    assert f"golden folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 20, 3), np.uint8)).save(candidate / "s1.png")
    assert cli(tmp_path, golden, candidate)[0] == 2
    assert "s1: image sizes differ: golden 16x8 with 3 channels, candidate 20x8 with 3 channels" in capsys.readouterr().err
    (golden / "s0.png").unlink()
    assert cli(tmp_path, golden, candidate)[0] == 2
    assert f"missing golden file {golden / 's0.png'}" in capsys.readouterr().err


def test_module_command_exit_status(tmp_path):
    images = strips()
    golden = write_gallery(tmp_path / "golden", images)
    changed = dict(images, s0=255 - images["s0"])
    candidate = write_gallery(tmp_path / "cand", changed, record=False)
    done = subprocess.run([sys.executable, "-m", "k_diffusing.regression", "--golden", str(golden), "--candidate",
                           str(candidate), "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "FAIL s0" in done.stderr and str(tmp_path / "r" / "report.md") in done.stderr


def test_cli_renders_candidates_from_gallery_json(tmp_path, capsys):
    from k_diffusing import gallery

    golden = tmp_path / "golden" / "sdxl"
    assert gallery.main("sdxl", ["--out", str(golden), "--samplers", "euler", "--steps", "2", "--prompt",
                                 "a small blue circle on the right, white background"]) == 0
    assert json.loads((golden / "gallery.json").read_text())["model"] == "embedded:sdxl"
    report = tmp_path / "report"
    assert regression.main(["--golden", str(tmp_path / "golden"), "--report", str(report)]) == 0
    assert "PASS" in capsys.readouterr().err
    record = json.loads((report / "sdxl" / "report.json").read_text())
    assert [(r["name"], r["max_diff"]) for r in record["results"]] == [("euler", 0)]
    assert "catalogue samplers without a golden (not compared): euler_ancestral" in record["notes"][0]
    assert "dpm_adaptive" not in record["notes"][0]  # the pipelines cannot run it: it never has a golden
    assert (report / "sdxl" / "candidates" / "euler.png").exists()
    image = np.asarray(Image.open(golden / "euler.png")).copy()
    image[:, :8] = 255 - image[:, :8]
    Image.fromarray(image).save(golden / "euler.png")
    assert regression.main(["--golden", str(golden), "--report", str(report)]) == 1
    assert (report / "euler.diff.png").exists()


def test_cli_render_mode_refuses_a_model_it_cannot_load(tmp_path, capsys):
    golden = write_gallery(tmp_path / "golden", strips(1))
    record = json.loads((golden / "gallery.json").read_text())
    (golden / "gallery.json").write_text(json.dumps(dict(record, model="embedded:sd3")))
    assert regression.main(["--golden", str(golden), "--report", str(tmp_path / "r")]) == 2
    assert "cannot load the sdxl model 'embedded:sd3': unknown embedded model" in capsys.readouterr().err
    assert regression.main(["--golden", str(golden), "--report", str(tmp_path / "r"), "--model",
                            str(tmp_path / "no_such_model")]) == 2
    assert f"cannot load the sdxl model '{tmp_path / 'no_such_model'}'" in capsys.readouterr().err
