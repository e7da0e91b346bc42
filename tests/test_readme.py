"""README.md is run, not read (issue 17): every fenced code block of the README is one test, named by its heading
and its index under that heading (``usage-...-1``), so a failure names the block.

**Python blocks** run as written, each alone in a fresh namespace (a newcomer copies one block), in a temporary
working directory, on torch's CPU, and fail on any warning (diffusers' FutureWarnings included) but those
pyproject.toml filters for the whole suite (NumPy 2 deprecations raised inside diffusers' schedulers). Tracebacks name
README.md and its line numbers. The test edits the source it runs, and only there, so that it runs offline on a CPU:

- hub ids become the embedded tiny models (``HUB_IDS``: an explicit mapping). Any other ``owner/name`` string, and a
  ``from_pretrained`` argument that is neither ``embedded:...`` nor a folder of this repository, fails the test, so a
  new snippet with a new hub id cannot slip through unmapped;
- ``"cuda"`` becomes ``"cpu"``, and ``torch.float16`` becomes ``torch.float32``: diffusers cannot run float16 on the
  CPU (it logs so, and SDXL's float16 VAE path raises diffusers' own ``upcast_vae`` FutureWarning). bfloat16 runs on
  the CPU and is kept. Any other string naming cuda fails the test.

A Python block followed by a plain block introduced by the word "prints" must print that text: the words exactly,
the numbers to 10 % (or 5e-7, float32 rounding noise of another CPU).

**bash blocks** (and the ``run:`` commands of yaml blocks) are split into commands (``\\`` continuations joined,
comments and leading ``VAR=value`` assignments dropped, ``&&`` splitting a line), the same mapping applied to
``--model`` and ``--device``, and each command is matched by its program:

- run for real: ``python -m k_diffusing generate`` on the job file it names, written here with one job (the
  embedded model, 32x32, 2 s); in this process (``generate.main(argv)``), which spares a second interpreter's 10 s
  of imports;
- parsed only, where running would take minutes, a GPU, several processes or the network, or would write into the
  checkout: the program must exist and its own argparse parser must accept the exact arguments (the command runs up
  to its ``parse_args`` call, which is stopped there): ``python -m k_diffusing`` (the main job, minutes),
  ``python -m k_diffusing gallery`` / ``catalogue`` (a minute / 30 s), ``test_sdxl.py`` / ``test_flux.py`` (a
  gallery render; the real-weights one needs the hub and a GPU), ``python -m k_diffusing.regression`` (renders
  both galleries, 88 s), ``accelerate launch`` and ``torchrun`` (their own launcher parsers, then the command they
  launch, parsed the same way; 4 GPUs / 2 processes); ``bash setup.sh`` (``bash -n``: it installs into .venv) and
  ``python -m pytest`` (the full suite, 15 minutes: pytest must be importable); ``python -m pip install`` in the CI
  yaml (the network): the torch pin must be setup.sh's and the extras must exist in pyproject.toml.

A command with any other program fails the test, until it is given a handler here. In today's README that makes:
every Python block run; "Set-up" (setup.sh, the main job, the suite), the gallery scripts, "Image-diff regression"
(gallery + regression) and the CI yaml parsed only; "Batch generation": the one-process line run, the
``accelerate launch`` and ``torchrun`` lines parsed.

**Plain blocks**: an output sample ("prints") is checked with its Python block (above). The sample of a failing
image-regression test (``FAILED tests/...``) must name test ids that exist, and lines that the regression module
formats the same way from the same numbers, outside the default tolerance, with the golden strip's pixel count
(the numbers come from a deliberately broken sampler and are not recomputed). The ``Layout`` tree's paths must
exist. Any other plain block fails the test until it is given a check here.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import math
import re
import shlex
import subprocess
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# The test's only edits to the README's code: hub ids -> the embedded tiny models, which load offline.
HUB_IDS = {
    "stabilityai/stable-diffusion-xl-base-1.0": "embedded:sdxl",
    "black-forest-labs/FLUX.1-dev": "embedded:flux",
}
DEVICES = {"cuda": "cpu"}
PYTHON_EDITS = {"torch.float16": "torch.float32"}  # diffusers cannot run float16 on the CPU (see the docstring)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Block:
    heading: str
    lang: str
    line: int  # README line of the block's first code line
    text: str
    intro: str  # the prose between the previous fence (or heading) and this block
    index: int = 0
    output: Block | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9 -]", "", self.heading.lower()).strip().replace(" ", "-")
        return f"{slug}-{self.index}"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block with its heading; a plain block introduced by "prints" is attached to the Python block
    before it as its ``output`` and not listed on its own."""
    lines = text.split("\n")
    blocks, heading, prose, i = [], "README", [], 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```\s*([\w+-]*)\s*$", line)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            if end == len(lines):
                raise ValueError(f"README.md:{i + 1}: unclosed code fence")
            blocks.append(Block(heading, fence.group(1), i + 2, "\n".join(lines[i + 1:end]), " ".join(prose).strip()))
            prose, i = [], end + 1
            continue
        if line.startswith("#"):
            heading, prose = line.lstrip("#").strip(), []
        elif line.strip():
            prose.append(line.strip())
        i += 1
    kept, counts = [], {}
    for block in blocks:
        if block.lang == "" and block.intro == "prints" and kept and kept[-1].lang == "python":
            kept[-1].output = block
            continue
        counts[block.heading] = block.index = counts.get(block.heading, 0) + 1
        kept.append(block)
    return kept


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_has_the_blocks_this_file_knows():
    """The parse found the README's blocks (a broken fence or a renamed language would hide blocks silently)."""
    langs = [block.lang for block in BLOCKS]
    assert langs.count("python") >= 8 and langs.count("bash") >= 4 and "yaml" in langs, langs
    assert len({block.id for block in BLOCKS}) == len(BLOCKS)


# --- offline edits -------------------------------------------------------------------------------------------------


def offline_model(name: str) -> str:
    """A ``--model`` / ``from_pretrained`` name as the test loads it; an unmapped hub id fails the test."""
    name = HUB_IDS.get(name, name)
    if name.startswith("embedded:") or (ROOT / name).exists() or not HUB_ID.match(name):
        return name
    pytest.fail(f"hub id {name!r} has no offline stand-in: add it to HUB_IDS in tests/test_readme.py", pytrace=False)


def offline_python(source: str) -> str:
    """The block's source with the offline edits; refuses an unmapped hub id or cuda device left in it."""
    for old, new in [*((f'"{k}"', f'"{v}"') for k, v in {**HUB_IDS, **DEVICES}.items()), *PYTHON_EDITS.items()]:
        source = source.replace(old, new)
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "cuda" in node.value:
                pytest.fail(f"device {node.value!r} has no CPU stand-in: add it to DEVICES in tests/test_readme.py",
                            pytrace=False)
            offline_model(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and not first.value.startswith("embedded:"):
                if not (ROOT / first.value).exists():
                    pytest.fail(f"from_pretrained({first.value!r}) needs the network: map it in HUB_IDS",
                                pytrace=False)
    return source


def test_an_unmapped_hub_id_or_device_is_refused():
    """The guard itself: a snippet with a hub id or device the mapping lacks fails instead of running."""
    with pytest.raises(pytest.fail.Exception, match="HUB_IDS"):
        offline_python('KSDXLPipeline.from_pretrained("stabilityai/sdxl-turbo")')
    with pytest.raises(pytest.fail.Exception, match="HUB_IDS"):
        offline_python('model = "black-forest-labs/FLUX.1-schnell"')
    with pytest.raises(pytest.fail.Exception, match="DEVICES"):
        offline_python('pipe.to("cuda:1")')
    with pytest.raises(pytest.fail.Exception, match="HUB_IDS"):
        offline_model("stabilityai/sdxl-turbo")
    assert offline_python('P.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0").to("cuda")') == \
        'P.from_pretrained("embedded:sdxl").to("cpu")'


# --- Python blocks -------------------------------------------------------------------------------------------------


def same_output(printed: str, expected: str) -> bool:
    got, want = printed.split(), expected.split()
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        try:
            x, y = float(a), float(b)
        except ValueError:
            if a != b:
                return False
            continue
        if not (math.isfinite(x) and abs(x - y) <= max(0.1 * max(abs(x), abs(y)), 5e-7)):
            return False
    return True


def run_python(block: Block, tmp_path, monkeypatch):
    source = offline_python(block.text)
    code = compile("\n" * (block.line - 1) + source, str(README), "exec")  # tracebacks give README's lines
    monkeypatch.chdir(tmp_path)
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.filterwarnings("always", append=True)  # after pyproject.toml's filters, which still apply
        exec(code, {"__name__": "__readme__"})
    assert not caught, "the block warns:\n" + "\n".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: "
                                                         f"{w.message}" for w in caught)
    if block.output is not None:
        assert same_output(stdout.getvalue(), block.output.text), (
            f"README.md:{block.output.line} says the block prints\n{block.output.text}\nbut it printed\n"
            f"{stdout.getvalue()}")


# --- commands ------------------------------------------------------------------------------------------------------


class Parsed(BaseException):
    """Raised by the patched ``parse_args`` once a program's own parser has accepted its arguments."""

    def __init__(self, namespace):
        super().__init__(namespace)
        self.namespace = namespace


def parse_only(monkeypatch, run):
    """Run ``run()`` up to the program's first ``parse_args``, which must accept the arguments."""
    import argparse

    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", stop)
        try:
            run()
        except SystemExit as exit:
            pytest.fail(f"the parser refused the arguments (exit status {exit.code})", pytrace=False)
        except Parsed as parsed:
            return parsed.namespace
    pytest.fail("the program returned without parsing its arguments", pytrace=False)


def commands(text: str) -> list[list[str]]:
    """Shell text -> argument lists: continuations joined, comments and leading assignments dropped, ``&&``
    splitting commands."""
    result = []
    for line in text.replace("\\\n", " ").split("\n"):
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            command, words = words[:cut], words[cut + 1:]
            while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                command = command[1:]
            if command:
                result.append(command)
    return result


def offline_args(args: list[str]) -> list[str]:
    args = list(args)
    for i, word in enumerate(args[:-1]):
        if word == "--model":
            args[i + 1] = offline_model(args[i + 1])
        elif word == "--device":
            args[i + 1] = DEVICES.get(args[i + 1], args[i + 1])
    return args


def python_module(module: str, args: list[str], monkeypatch, tmp_path, launched: bool = False) -> str:
    """``python -m module args``: returns "run" or "parsed"."""
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"python -m {module}: no such module", pytrace=False)
    if module == "pytest":  # the full suite (15 minutes): what the README's set-up runs
        assert args == [], f"python -m pytest {args}: only the plain suite command is expected here"
        return "parsed"
    if module == "k_diffusing" and args[:1] == ["generate"] and not launched:
        return run_generate(args[1:], monkeypatch, tmp_path)
    if module == "k_diffusing":
        from k_diffusing.__main__ import main
    elif module == "k_diffusing.regression":
        from k_diffusing.regression import main
    elif module == "k_diffusing.generate":
        from k_diffusing.generate import main
    else:
        pytest.fail(f"python -m {module}: no handler in tests/test_readme.py", pytrace=False)
    parse_only(monkeypatch, lambda: main(args))
    return "parsed"


def run_generate(args: list[str], monkeypatch, tmp_path) -> str:
    """``python -m k_diffusing generate JOBS --out DIR`` for real, on a one-job file of the kind it names."""
    from k_diffusing.generate import main, parser

    options = parser().parse_args(args)
    monkeypatch.chdir(tmp_path)
    jobs = Path(options.jobs)
    jobs.parent.mkdir(parents=True, exist_ok=True)
    if jobs.suffix == ".jsonl":
        jobs.write_text(json.dumps({"prompt": "a large red circle on the left, blue background", "seed": 3}) + "\n")
    else:
        jobs.write_text("a large red circle on the left, blue background\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)
        status = main(args)
    assert not caught, [str(w.message) for w in caught]
    assert status == 0
    assert len(list(Path(options.out).glob("*.png"))) == 1
    assert len((Path(options.out) / "manifest.jsonl").read_text().splitlines()) == 1
    return "run"


def check_pip_install(args: list[str]) -> str:
    """``python -m pip install ...`` in the CI yaml (needs the network): the torch pin is setup.sh's, a local
    package's extras exist in pyproject.toml."""
    from packaging.requirements import Requirement

    assert args[:1] == ["install"], args
    words, i = args[1:], 0
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    while i < len(words):
        if words[i] == "--index-url":
            assert words[i + 1].startswith("https://"), words[i + 1]
            i += 2
            continue
        assert not words[i].startswith("-"), f"pip option {words[i]} has no check here"
        local = re.match(r"^\./[\w.-]+(\[[\w,-]+\])?$", words[i])
        requirement = Requirement("k-diffusing" + (local.group(1) or "") if local else words[i])
        if requirement.name == "torch":
            pin = re.search(r"torch==[\w.+]+", (ROOT / "setup.sh").read_text()).group(0)
            assert str(requirement) == pin, f"the yaml installs {requirement}, setup.sh {pin}"
        else:
            assert requirement.name == "k-diffusing", requirement
            assert requirement.extras <= set(extras), (requirement.extras, sorted(extras))
        i += 1
    return "parsed"


def check_command(words: list[str], monkeypatch, tmp_path) -> str:
    """One command, run or parsed by its program (module docstring); returns "run" or "parsed"."""
    program, args = words[0], offline_args(words[1:])
    if program == "bash":
        script = ROOT / args[0]
        assert script.is_file(), f"bash {args[0]}: no such script"
        subprocess.run(["bash", "-n", str(script)], check=True)  # syntax only: it installs into .venv
        return "parsed"
    if program in ("python", ".venv/bin/python", "python3"):
        if args[:1] == ["-m"]:
            if args[1:3] == ["pip", "install"]:
                return check_pip_install(args[2:])
            return python_module(args[1], args[2:], monkeypatch, tmp_path)
        script = ROOT / args[0]
        assert script.is_file(), f"python {args[0]}: no such script"
        family = {"test_sdxl.py": "sdxl", "test_flux.py": "flux"}.get(args[0])
        assert family, f"python {args[0]}: no handler in tests/test_readme.py"
        from k_diffusing.gallery import main

        parse_only(monkeypatch, lambda: main(family, args[1:]))
        return "parsed"
    if program in ("accelerate", "torchrun"):
        if program == "accelerate":
            assert args[:1] == ["launch"], f"accelerate {args[:1]}: no handler"
            from accelerate.commands.launch import launch_command_parser

            launched = launch_command_parser().parse_args(args[1:])
        else:
            from torch.distributed.run import get_args_parser

            launched = get_args_parser().parse_args(args)
        assert launched.module, f"{program} launches a module here (-m)"
        python_module(launched.training_script, launched.training_script_args, monkeypatch, tmp_path, launched=True)
        return "parsed"
    pytest.fail(f"no handler for the command {shlex.join(words)!r}: add one to tests/test_readme.py", pytrace=False)


def run_shell(block: Block, monkeypatch, tmp_path):
    found = commands(block.text)
    assert found, "a shell block without commands"
    for words in found:
        check_command(words, monkeypatch, tmp_path)


def yaml_commands(block: Block) -> str:
    """The ``run:`` scripts of a GitHub Actions yaml block."""
    import yaml

    document, scripts = yaml.safe_load(block.text), []
    for job in document["jobs"].values():
        scripts += [step["run"] for step in job["steps"] if "run" in step]
    assert scripts, "a CI yaml block without run: steps"
    return "\n".join(scripts)


# --- plain blocks --------------------------------------------------------------------------------------------------


def check_layout(block: Block):
    """The Layout tree: top-level entries, and two-space-indented ones under the folder above; every path exists."""
    parent, missing = "", []
    for line in block.text.split("\n"):
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 2:
            continue  # a description's continuation line
        names = line.strip().split("  ")[0]
        if indent == 0:
            parent = ""
        for name in (n.strip() for n in names.split(",")):
            path = parent + name
            if not (ROOT / path).exists():
                missing.append(path)
            if indent == 0 and name.endswith("/"):
                parent = name
    assert not missing, f"the Layout names paths that do not exist: {missing}"


def check_failed_regression_sample(block: Block):
    """A sample of ``tests/test_image_regression.py`` failing: its test ids exist, and each message line is what the
    regression module writes for those numbers with the default tolerance."""
    from k_diffusing import regression

    source = ROOT / "tests" / "test_image_regression.py"
    spec = importlib.util.spec_from_file_location("readme_image_regression", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = {param.id for param in module.cases()}
    message = re.compile(r"^(\w+) sampler (\w+): max \|diff\| (\d+), mean \|diff\| ([\d.]+), PSNR ([\d.]+) dB, "
                         r"(\d+) of (\d+) pixels changed; outside tolerance")
    checked = 0
    for line in block.text.split("\n"):
        if line.startswith("FAILED "):
            path, _, test = line.removeprefix("FAILED ").partition("::")
            name, _, param = test.partition("[")
            assert path == "tests/test_image_regression.py" and name == "test_sampler_matches_golden", line
            assert param.rstrip("]") in ids, f"{line}: no such test id"
            kind, sampler = param.rstrip("]").split("-", 1)
        elif match := message.match(line):
            assert match.group(1, 2) == (kind, sampler), line
            numbers = [float(v) for v in match.groups()[2:]]
            difference = regression.Difference(int(numbers[0]), numbers[1], numbers[2], int(numbers[3]),
                                               int(numbers[4]))
            result = regression.Result(sampler, "fail", None, None, difference)
            assert line == f"{kind} sampler {result.describe(regression.Tolerance())}"
            assert not regression.Tolerance().accepts(difference), f"{line}: within the default tolerance"
            width, height = regression.read_png(ROOT / "outputs" / "gallery" / kind / f"{sampler}.png").shape[1::-1]
            assert difference.pixels == width * height >= difference.changed, f"{line}: the golden is {width}x{height}"
            checked += 1
        elif line.startswith("report: "):
            assert line == f"report: outputs/regression/{kind}/report.md", line
        elif line.startswith("difference image: "):
            assert line == f"difference image: outputs/regression/{kind}/{sampler}.diff.png", line
        else:
            pytest.fail(f"unexpected line in the sample: {line!r}", pytrace=False)
    assert checked, "no failure message in the sample"
    assert (module.REPORTS.relative_to(ROOT)).as_posix() == "outputs/regression"


# --- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block(block, tmp_path, monkeypatch):
    if block.lang == "python":
        run_python(block, tmp_path, monkeypatch)
    elif block.lang in ("bash", "sh", "shell"):
        run_shell(block, monkeypatch, tmp_path)
    elif block.lang == "yaml":
        run_shell(Block(block.heading, "bash", block.line, yaml_commands(block), ""), monkeypatch, tmp_path)
    elif block.lang == "" and block.text.startswith("FAILED tests/"):
        check_failed_regression_sample(block)
    elif block.lang == "" and block.heading == "Layout":
        check_layout(block)
    else:
        pytest.fail(f"README.md:{block.line}: no check for this {block.lang or 'plain'} block: add one to "
                    "tests/test_readme.py", pytrace=False)
