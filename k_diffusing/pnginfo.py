"""An image's settings read back from its PNG text chunks, as a ``generate`` job (``generate --from-png``).

Formats read (PNG ``tEXt``, ``zTXt`` and ``iTXt`` chunks, as PIL returns them):

- **AUTOMATIC1111 / Forge ``parameters``** ("infotext", written by A1111's ``processing.create_infotext`` and read
  back by its ``infotext_utils.parse_generation_parameters``): the prompt lines, then ``Negative prompt:`` and its
  lines when there is a negative prompt, then one last line of ``Key: value`` pairs separated by ``", "``; a value
  holding ``,``, ``:`` or a newline is written as a JSON string. A last line with fewer than three pairs is prompt
  text, not settings (A1111's own rule). :func:`parse_a1111`.
- **k-diffusing's own ``parameters``**: the same format with ``Version: k-diffusing X``
  (:func:`k_diffusing.generate.format_parameters`), read by its inverse :func:`k_diffusing.generate.parse_parameters`
  and checked by writing it again. :func:`parse_own`.
- **ComfyUI ``prompt``**: the API-format graph ComfyUI's ``SaveImage`` stores, ``{node id: {"class_type": ...,
  "inputs": {name: literal or [source node id, output index]}}}``. Read where it is the plain graph
  CheckpointLoaderSimple -> CLIPTextEncode (positive, negative) -> EmptyLatentImage -> KSampler -> VAEDecode ->
  SaveImage, with KSamplerAdvanced where it is equivalent, FLUX's split loaders and FluxGuidance. Input names as in
  ComfyUI's ``nodes.py`` and ``comfy_extras/nodes_flux.py``. :func:`parse_comfyui`.

Not read: JPEG and WebP files (A1111 keeps the same text in their EXIF UserComment), ComfyUI's ``workflow`` chunk (the
editor's graph; ``prompt`` is what ran), other programs' chunks (InvokeAI, NovelAI, ...). Such a file gets a one-line
:class:`PngInfoError`.

Every parser returns a :class:`Reading`: the job values in generate's job keys plus the seed mode the file implies
(``noise``: ``"a1111"`` with ``rng``, ``subseed``, ``subseed_strength``, ``eta_noise_seed_delta`` for A1111/Forge;
``"comfyui"`` for ComfyUI; the recorded mode, else ``"diffusers"``, for k-diffusing's own files), the settings it
could not honour (one short sentence each, naming the setting and its value), and notes that do not change what
runs (the file's model name: generate never loads the model a file names, it runs ``--model``).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PARAMETERS = "parameters"  # A1111 / Forge / k-diffusing
COMFY_PROMPT = "prompt"  # ComfyUI's API-format graph
SEED_MODE_KEYS = ("noise", "rng", "subseed", "subseed_strength", "eta_noise_seed_delta")


class PngInfoError(ValueError):
    """A file whose settings cannot be read: no metadata, bad metadata, or an unsupported graph (one line)."""


@dataclass
class Reading:
    """What a file says: ``values`` (job keys, seed-mode keys included), what cannot be honoured, notes."""

    source: str  # "A1111 v1.10.1", "Forge f2.0.1v1.10.1-...", "ComfyUI", "k-diffusing 0.1.0"
    values: dict
    not_honoured: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: str | None = None  # the model the file names (a checkpoint file name, a hub id, ...)
    model_hash: str | None = None


# --- the A1111 infotext -------------------------------------------------------------------------------------------

# One "Key: value" pair of the settings line: a key starts with a word character; a value is a JSON string or runs to
# the next comma.
_PAIR = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def split_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """``(prompt, negative prompt, settings)`` of an A1111 infotext, as A1111 reads it back: lines stripped, the
    negative prompt from the line starting ``Negative prompt:`` to the settings line, settings values unquoted.
    PngInfoError when the last line has fewer than three ``Key: value`` pairs (then the text has no settings)."""
    *head, last = text.strip().split("\n")
    found = _PAIR.findall(last)
    if len(found) < 3:
        raise PngInfoError(f"the 'parameters' text has no settings line (a last line of 'Key: value' pairs such as "
                           f"Steps, Sampler, Seed, Size); its last line is {last[:80]!r}")
    prompt, negative, in_negative = [], [], False
    for line in head:
        line = line.strip()
        if not in_negative and line.startswith(_NEGATIVE):
            in_negative, line = True, line[len(_NEGATIVE):].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative), {key.strip(): _unquote(value) for key, value in found}


def _int(pairs: dict, key: str) -> int:
    try:
        return int(pairs[key])
    except ValueError:
        raise PngInfoError(f"{key}: {pairs[key]!r} is not a whole number") from None


def _float(pairs: dict, key: str) -> float:
    try:
        value = float(pairs[key])
    except ValueError:
        raise PngInfoError(f"{key}: {pairs[key]!r} is not a number") from None
    if not math.isfinite(value):
        raise PngInfoError(f"{key}: {pairs[key]!r} is not a finite number")
    return value


def _size(pairs: dict) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", pairs["Size"])
    if match is None:
        raise PngInfoError(f"Size: {pairs['Size']!r} is not WIDTHxHEIGHT")
    return int(match[1]), int(match[2])


# A1111 keys that describe the run but not the recipe: recorded as notes.
_INFORMATIONAL = {"Model", "Model hash", "VAE", "VAE hash", "Version", "Styles array", "Batch size", "Batch pos",
                  "Template", "Negative Template", "User", "Diffusion in Low Bits"}
# A1111 keys with a known meaning generate cannot reproduce, and why.
_UNSUPPORTED = {
    "Seed resize from": "the noise is drawn at another size and resized (seed resize is not supported)",
    "Eta DDIM": "A1111's DDIM adds noise each step at this eta (on its grid that is euler_ancestral with this eta; "
                "generate runs euler, eta 0)",
    "Schedule max sigma": "a custom schedule range (generate uses the model's)",
    "Schedule min sigma": "a custom schedule range (generate uses the model's)",
    "Schedule rho": "a custom schedule rho (generate uses the schedule's default)",
    "Sigma churn": "Karras churn (generate runs the sampler's default)",
    "Sigma tmin": "Karras churn range (generate runs the sampler's default)",
    "Sigma tmax": "Karras churn range (generate runs the sampler's default)",
    "Sigma noise": "a noise multiplier (generate runs the sampler's default)",
    "SGM noise multiplier": "the initial noise is scaled as SGM does (not supported)",
    "Discard penultimate sigma": "A1111's forced discard of the penultimate sigma (not supported)",
    "Lora hashes": "LoRA networks (not loaded)",
    "TI hashes": "textual-inversion embeddings (not loaded)",
    "Hypernet": "a hypernetwork (not loaded)",
    "Face restoration": "a face-restoration pass after sampling (not run)",
    "Tiling": "seamless tiling (not supported)",
    "Token merging ratio": "token merging (not supported)",
    "Emphasis": "A1111's emphasis mode (generate encodes the text as written)",
    "Denoising strength": "img2img or inpainting: the init image is not in the file (--best-effort renders txt2img)",
    "Refiner": "a refiner model for the last steps (not run)",
    "Refiner switch at": "a refiner model for the last steps (not run)",
}
# A1111's timestep samplers (modules/sd_samplers_timesteps.py): DDIM, DDIM CFG++, PLMS and UniPC run on A1111's own
# timestep grid, not on a sigma schedule, and ignore its Schedule type. DDIM and PLMS: see k_diffusing.registry
# (A1111_DDIM, A1111_PLMS); DDIM CFG++ and UniPC: no catalogue sampler and schedule reproduces them.
_A1111_TIMESTEP_SAMPLERS = {"ddim", "ddim cfg++", "plms", "unipc"}
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # A1111's extra-network tags: <lora:name:weight>, <hypernet:...>


def _a1111_ddim_grid_finding(sampler_name: str, runs: str, steps: int) -> str:
    """The finding for A1111's DDIM or PLMS: what A1111 ran and what ``--best-effort`` runs (``runs`` on
    ddim_uniform)."""
    name = sampler_name.strip()
    if runs == "euler":
        what = ("A1111 stops at timestep 1 and leaves that noise (sigma 0.041 on SDXL) in the image; euler on "
                "ddim_uniform takes the same steps plus the step into 0")
    else:
        what = ("not in the catalogue: A1111 warms its multistep up with a Heun step and stops at timestep 1; ipndm "
                "on ddim_uniform is the same multistep warmed up by an Euler step, plus the step into 0")
    stride = 1000 // steps if 1 <= steps <= 1000 else 0
    if stride and 1000 % steps:  # A1111 keeps stepping by the stride up to the table's end
        count = len(range(0, 1000, stride))
        top = min(1 + (count - 1) * stride, 999)
        what += (f"; at {steps} steps A1111's grid also has {count} timesteps up to t = {top}, ddim_uniform {steps} "
                 f"up to t = {1 + (steps - 1) * stride}")
    return f"Sampler: {name} ({what}; --best-effort runs {runs} on ddim_uniform)"


def _a1111_prompt(text: str, which: str, not_honoured: list[str]) -> str:
    """``text`` without A1111's extra-network tags (A1111 removes them before encoding too); a finding for each tag
    and for A1111's prompt syntax that generate does not interpret."""
    for tag in _EXTRA_NETWORK.finditer(text):
        kind = {"lora": "LoRA", "lyco": "LyCORIS", "hypernet": "hypernetwork"}.get(tag[1].lower(), tag[1])
        not_honoured.append(f"{which}: {tag[0]} ({kind} not loaded)")
    text = _EXTRA_NETWORK.sub("", text)
    if re.search(r"[()\[\]]", text):
        not_honoured.append(f"{which}: A1111 emphasis / prompt-editing brackets ( ) [ ] (A1111 weights or schedules "
                            "those parts; generate encodes the text as written)")
    if re.search(r"\bBREAK\b", text):
        not_honoured.append(f"{which}: BREAK (A1111 starts a new 75-token chunk; generate encodes the text as written)")
    if re.search(r"\sAND\s", text):
        not_honoured.append(f"{which}: AND (A1111's composable prompts; generate encodes the text as written)")
    return text


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def _a1111_source(version: str | None) -> str:
    if version is None:
        return "A1111-format (no Version)"
    if re.match(r"f\d", version) or version.lower().startswith("neo"):
        return f"Forge {version}"
    return f"A1111 {version}"


def parse_parameters_text(text: str, kind: str) -> Reading:
    """A ``parameters`` chunk: k-diffusing's own (``Version: k-diffusing ...``, :func:`parse_own`) or A1111/Forge's
    (:func:`parse_a1111`)."""
    _, _, pairs = split_parameters(text)
    if pairs.get("Version", "").startswith("k-diffusing"):
        return parse_own(text, kind)
    return parse_a1111(text, kind)


def parse_a1111(text: str, kind: str) -> Reading:
    """The job an AUTOMATIC1111 or Forge infotext describes, for a ``kind`` ("sdxl" or "flux") run.

    Honoured: prompt, ``Negative prompt``, ``Steps``, ``Sampler`` (A1111 names, with an implied schedule suffix as in
    "DPM++ 2M Karras"), ``Schedule type`` (absent or "Automatic": what A1111 ran then, the model's uniform timesteps,
    "Uniform"), ``CFG scale`` (SDXL) / ``Distilled CFG Scale`` (Forge FLUX), ``Seed``, ``Size``; the seed mode
    ``noise="a1111"`` with ``RNG`` (default "GPU"), ``Variation seed`` / ``Variation seed strength``, ``ENSD`` (or
    ``Eta noise seed delta``). Recorded: ``Model``, ``Model hash``, ``VAE``, ``Version``, Forge's ``Module N``. Every
    other setting is a finding: hires fix, LoRA tags and hashes, emphasis brackets, ``Clip skip`` above 1, ``Eta``
    other than 1, A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC; ``--best-effort`` runs DDIM as euler and
    PLMS as ipndm on ddim_uniform, A1111's grid, whatever the ``Schedule type``, which A1111 ignores for them), its
    Beta schedule (sigma-spaced, the catalogue's is ComfyUI's timestep-spaced one), ADetailer, refiner, custom sigma
    ranges, unknown keys ..."""
    from .registry import A1111_SCHEDULES, A1111_TIMESTEP_NEAREST, resolve_sampler

    prompt, negative, pairs = split_parameters(text)
    missing = [key for key in ("Steps", "Sampler", "Seed", "Size") if key not in pairs]
    if missing:
        raise PngInfoError(f"the parameters have no {', '.join(missing)}")
    if "CFG scale" not in pairs and "Distilled CFG Scale" not in pairs:
        raise PngInfoError("the parameters have no CFG scale")
    not_honoured: list[str] = []
    notes: list[str] = []
    used = {"Steps", "Sampler", "Seed", "Size", "CFG scale", "Distilled CFG Scale", "Schedule type", "RNG",
            "Variation seed", "Variation seed strength", "ENSD", "Eta noise seed delta"}
    width, height = _size(pairs)
    values = {"seed": _int(pairs, "Seed"), "steps": _int(pairs, "Steps"), "width": width, "height": height}

    # sampler and schedule
    sampler_name, implied = pairs["Sampler"], None
    try:
        spec, implied = resolve_sampler(sampler_name)
    except ValueError:
        spec = None
    timestep_sampler = " ".join(sampler_name.lower().split())
    if timestep_sampler in A1111_TIMESTEP_NEAREST:
        values["sampler"] = A1111_TIMESTEP_NEAREST[timestep_sampler]
        not_honoured.append(_a1111_ddim_grid_finding(sampler_name, values["sampler"], values["steps"]))
    elif timestep_sampler in _A1111_TIMESTEP_SAMPLERS:
        nearest = spec.name if spec is not None else "euler"
        not_honoured.append(f"Sampler: {sampler_name} (A1111 runs it on its own timestep grid, not on a sigma "
                            f"schedule; --best-effort runs {nearest})")
        values["sampler"], implied = nearest, None
    elif spec is None:
        not_honoured.append(f"Sampler: {sampler_name} (not in the catalogue; --best-effort runs euler)")
        values["sampler"] = "euler"
    else:
        from .gallery import pipeline_refusal

        if pipeline_refusal(spec.name) is not None:
            not_honoured.append(f"Sampler: {sampler_name} (adaptive step size: the pipelines cannot run it; "
                                "--best-effort runs euler)")
            values["sampler"] = "euler"
        else:
            values["sampler"] = spec.name
    uniform = A1111_SCHEDULES["uniform"]
    label = pairs.get("Schedule type")
    if timestep_sampler in A1111_TIMESTEP_NEAREST:  # A1111 runs its own grid whatever the Schedule type says
        values["schedule"] = "ddim_uniform"
        if label is not None and label.lower() != "automatic":
            notes.append(f"Schedule type: {label} (A1111's {sampler_name.strip()} ignores it)")
        label = None
    elif label is None or label.lower() == "automatic":
        values["schedule"] = implied or uniform
    elif label.lower() in A1111_SCHEDULES:
        values["schedule"] = A1111_SCHEDULES[label.lower()]
        if implied is not None and implied != values["schedule"]:
            not_honoured.append(f"Sampler: {sampler_name} implies schedule {implied}, but Schedule type: {label}")
    else:
        not_honoured.append(f"Schedule type: {label} (not in the catalogue; --best-effort runs "
                            f"{implied or uniform})")
        values["schedule"] = implied or uniform
    if label is not None and label.lower() == "beta":
        used |= {"Beta schedule alpha", "Beta schedule beta"}
        shape = ", ".join(f"{k}: {pairs[k]}" for k in ("Beta schedule alpha", "Beta schedule beta") if k in pairs)
        not_honoured.append("Schedule type: Beta (A1111 and Forge space the Beta quantiles in sigma, the catalogue's "
                            "beta, ComfyUI's, in timesteps" + (f"; {shape}" if shape else "") + ")")

    # guidance
    cfg = _float(pairs, "CFG scale") if "CFG scale" in pairs else None
    distilled = _float(pairs, "Distilled CFG Scale") if "Distilled CFG Scale" in pairs else None
    if kind == "flux":
        values["guidance_scale"] = distilled
        if distilled is None:
            not_honoured.append(f"CFG scale: {pairs['CFG scale']} without Distilled CFG Scale (not a FLUX file; "
                                "the FLUX run uses the pipeline's distilled guidance)")
        elif cfg not in (None, 1.0):
            not_honoured.append(f"CFG scale: {pairs['CFG scale']} (Forge runs true CFG with the negative prompt "
                                "above 1; generate's FLUX run uses the distilled guidance only)")
        if negative:
            if cfg in (None, 1.0):
                notes.append("the negative prompt is left out: at CFG scale 1 Forge does not use it either")
            negative = ""
    else:
        if cfg is None:
            raise PngInfoError("the parameters have no CFG scale (only Distilled CFG Scale: a FLUX file; run it "
                               "with --kind flux)")
        values["guidance_scale"] = cfg
        if distilled is not None:
            not_honoured.append(f"Distilled CFG Scale: {pairs['Distilled CFG Scale']} (a FLUX setting; this run is "
                                "--kind sdxl)")
        if cfg < 1:
            not_honoured.append(f"CFG scale: {pairs['CFG scale']} (below 1 the diffusers pipeline turns guidance "
                                "off)")
    values["prompt"] = _a1111_prompt(prompt, "prompt", not_honoured)
    values["negative_prompt"] = _a1111_prompt(negative, "negative prompt", not_honoured)

    # seed mode: A1111's rules (modules/rng.py): per-image seeds, RNG source, variation seed, eta noise seed delta
    rng = pairs.get("RNG", "GPU")
    if rng.lower() not in ("gpu", "cpu", "nv"):
        not_honoured.append(f"RNG: {rng} (A1111's sources are GPU, CPU and NV)")
        rng = "GPU"
    values.update(noise="a1111", rng=rng.lower())
    if "Variation seed" in pairs or "Variation seed strength" in pairs:
        strength = _float(pairs, "Variation seed strength") if "Variation seed strength" in pairs else 0.0
        if strength != 0:
            if "Variation seed" not in pairs:
                raise PngInfoError("Variation seed strength without a Variation seed")
            values.update(subseed=_int(pairs, "Variation seed"), subseed_strength=strength)
    ensd_key = next((k for k in ("ENSD", "Eta noise seed delta") if k in pairs), None)
    if ensd_key is not None:
        values["eta_noise_seed_delta"] = _int(pairs, ensd_key)

    # everything else
    hires = [k for k in pairs if k.startswith("Hires ") or k == "First pass size"]
    if hires:
        used |= {*hires, "Denoising strength"}
        shown = ", ".join(f"{k}: {_short(pairs[k])}" for k in [*hires, "Denoising strength"] if k in pairs)
        not_honoured.append(f"hires fix ({shown}): the second pass is not run; --best-effort renders the first "
                            f"pass at {width}x{height}")
    adetailer = [k for k in pairs if k.startswith("ADetailer")]
    if adetailer:
        used |= set(adetailer)
        model = pairs.get("ADetailer model", "?")
        not_honoured.append(f"ADetailer (ADetailer model: {model}, {len(adetailer)} settings): its inpainting pass "
                            "after the image is not run")
    for key, value in pairs.items():
        if key in used:
            continue
        if key in _INFORMATIONAL or re.fullmatch(r"Module \d+", key):
            continue
        if key == "Clip skip":
            if value.strip() != "1":
                not_honoured.append(f"Clip skip: {value} (generate runs the pipeline's own text-encoder layers; "
                                    "A1111 ignores Clip skip for SDXL unless its 'Clip skip SDXL' option was on, "
                                    "so --best-effort is then the same)")
        elif key == "Eta":
            if _float(pairs, key) != 1.0:
                not_honoured.append(f"Eta: {value} (generate runs the sampler's default eta, 1)")
        elif key in _UNSUPPORTED:
            not_honoured.append(f"{key}: {_short(value)} ({_UNSUPPORTED[key]})")
        else:
            not_honoured.append(f"{key}: {_short(value)} (a setting generate does not know)")
    for key in ("VAE", "Diffusion in Low Bits", *sorted(k for k in pairs if re.fullmatch(r"Module \d+", k))):
        if key in pairs:
            notes.append(f"{key}: {pairs[key]} (recorded; the run uses --model's components and --dtype)")
    return Reading(_a1111_source(pairs.get("Version")), values, not_honoured, notes, pairs.get("Model"),
                   pairs.get("Model hash"))


def parse_own(text: str, kind: str) -> Reading:
    """The job of a k-diffusing ``generate`` PNG: :func:`k_diffusing.generate.parse_parameters`, checked by writing
    the parameters again for a ``kind`` run (:func:`k_diffusing.generate.format_parameters`): a setting of the text
    that the run would not write the same is not honoured (a FLUX file run with ``--kind sdxl``, ...). Seed mode: the
    recorded one, else ``"diffusers"`` (files made before seed modes)."""
    from . import __version__
    from .generate import format_parameters, parse_parameters

    try:
        parameters = parse_parameters(text)
    except (ValueError, KeyError, TypeError) as error:
        raise PngInfoError(f"bad k-diffusing parameters: {error}") from None
    prompt, negative, pairs = split_parameters(text)
    model = parameters.pop("model", None)
    values = {"noise": "diffusers", **parameters}
    not_honoured = []
    try:
        again = format_parameters({**parameters, "model": model}, kind)
    except (ValueError, KeyError, TypeError) as error:
        raise PngInfoError(f"bad k-diffusing parameters: {error}") from None
    prompt_again, negative_again, pairs_again = split_parameters(again)
    for key, value in pairs.items():
        if key in ("Version", "Model") or pairs_again.get(key) == value:
            continue
        written = f"writes {key}: {pairs_again[key]}" if key in pairs_again else f"writes no {key}"
        not_honoured.append(f"{key}: {value} (a --kind {kind} run {written})")
    if (prompt, negative) != (prompt_again, negative_again):
        not_honoured.append(f"the prompt does not read back the same (a --kind {kind} run)")
    version = pairs["Version"]
    notes = [] if version == f"k-diffusing {__version__}" else [
        f"made with {version}; this is k-diffusing {__version__} (samplers may have changed since)"]
    return Reading(version, values, not_honoured, notes, model)


# --- the ComfyUI graph --------------------------------------------------------------------------------------------

_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
_CHECKPOINTS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name", "UNETLoader": "unet_name"}
_CLIP_LOADERS = {"DualCLIPLoader", "CLIPLoader", "TripleCLIPLoader"}
_EMPTY_LATENTS = {"EmptyLatentImage", "EmptySD3LatentImage"}


def _is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


class _Graph:
    """Walks an API-format graph backwards from the sampler, collecting what it finds and what it cannot honour."""

    def __init__(self, graph: dict):
        self.graph = graph
        self.findings: dict[str, str] = {}  # node id -> finding (one per node)
        self.notes: dict[str, str] = {}  # node id -> note (one per node)
        self.model: str | None = None

    def label(self, node_id: str) -> str:
        return f"node {node_id} ({self.graph[node_id]['class_type']})"

    def follow(self, link, what: str) -> tuple[str, dict, int]:
        node_id = str(link[0])
        if node_id not in self.graph:
            raise PngInfoError(f"bad ComfyUI graph: the {what} link points to node {node_id}, which is not in it")
        return node_id, self.graph[node_id], link[1]

    def literal(self, node_id: str, name: str):
        inputs = self.graph[node_id]["inputs"]
        if name not in inputs:
            raise PngInfoError(f"bad ComfyUI graph: {self.label(node_id)} has no {name!r} input")
        value = inputs[name]
        if _is_link(value):
            source = self.graph.get(str(value[0]), {}).get("class_type", "?")
            raise PngInfoError(f"unsupported ComfyUI graph: {name!r} of {self.label(node_id)} comes from node "
                               f"{value[0]} ({source}); only values written in the node are read")
        return value

    def link(self, node_id: str, name: str, required: bool = False):
        value = self.graph[node_id]["inputs"].get(name)
        if _is_link(value):
            return value
        if required:
            raise PngInfoError(f"bad ComfyUI graph: {self.label(node_id)} has no {name!r} link")
        return None

    def flag(self, node_id: str, why: str) -> None:
        self.findings.setdefault(node_id, f"{self.label(node_id)}: {why}")

    def settings(self, node_id: str) -> str:
        shown = [f"{k} {v}" for k, v in self.graph[node_id]["inputs"].items() if not _is_link(v)]
        return ", ".join(shown)[:120]

    def _lora(self, node_id: str) -> None:
        inputs = self.graph[node_id]["inputs"]
        self.flag(node_id, f"LoRA {inputs.get('lora_name')!r} at strength {inputs.get('strength_model')} "
                           "(not loaded)")

    def walk_model(self, link) -> None:
        for _ in range(len(self.graph)):
            node_id, node, _ = self.follow(link, "model")
            kind = node["class_type"]
            if kind in _CHECKPOINTS:
                self.model = self.literal(node_id, _CHECKPOINTS[kind])
                return
            if kind in ("LoraLoader", "LoraLoaderModelOnly"):
                self._lora(node_id)
            elif kind.startswith("ModelSampling"):
                self.flag(node_id, f"changes the model's sigmas ({self.settings(node_id)})")
            else:
                self.flag(node_id, f"changes or loads the model ({self.settings(node_id)}); not run")
            link = self.link(node_id, "model")
            if link is None:
                return
        raise PngInfoError("bad ComfyUI graph: the model links form a cycle")

    def walk_clip(self, link) -> None:
        for _ in range(len(self.graph)):
            node_id, node, _ = self.follow(link, "clip")
            kind = node["class_type"]
            if kind in _CHECKPOINTS:
                return
            if kind in _CLIP_LOADERS:
                names = [str(v) for k, v in sorted(node["inputs"].items()) if k.startswith("clip_name")]
                self.notes.setdefault(node_id, f"text encoders {', '.join(names)} (recorded; the run uses "
                                               "--model's)")
                return
            if kind == "CLIPSetLastLayer":
                layer = self.literal(node_id, "stop_at_clip_layer")
                if layer != -1:
                    self.flag(node_id, f"stop_at_clip_layer {layer} (clip skip; generate runs the pipeline's own "
                                       "text-encoder layers)")
            elif kind == "LoraLoader":
                self._lora(node_id)
            else:
                self.flag(node_id, f"changes the text encoder ({self.settings(node_id)}); not run")
            link = self.link(node_id, "clip")
            if link is None:
                return
        raise PngInfoError("bad ComfyUI graph: the clip links form a cycle")

    def walk_conditioning(self, link, role: str) -> dict:
        """``{"text", "guidance", "zero", "sdxl"}`` of the conditioning reaching the sampler's ``role`` input."""
        found = {"text": "", "guidance": None, "zero": False, "sdxl": None}
        for _ in range(len(self.graph)):
            node_id, node, output = self.follow(link, role)
            kind = node["class_type"]
            if kind == "CLIPTextEncode":
                found["text"] = self.literal(node_id, "text")
            elif kind == "CLIPTextEncodeSDXL":
                text_g, text_l = self.literal(node_id, "text_g"), self.literal(node_id, "text_l")
                if text_g != text_l:
                    self.flag(node_id, "text_g and text_l differ (generate gives both encoders the same prompt)")
                found["text"] = text_g
                found["sdxl"] = (node_id, {k: self.literal(node_id, k) for k in (
                    "width", "height", "crop_w", "crop_h", "target_width", "target_height")})
            elif kind == "CLIPTextEncodeFlux":
                clip_l, t5 = self.literal(node_id, "clip_l"), self.literal(node_id, "t5xxl")
                if clip_l != t5:
                    self.flag(node_id, "clip_l and t5xxl texts differ (generate gives both encoders the same prompt)")
                found["text"] = t5
                if found["guidance"] is None:
                    found["guidance"] = self.literal(node_id, "guidance")
            elif kind == "ConditioningZeroOut":
                found["zero"] = True
                return found
            else:
                if kind == "FluxGuidance":
                    if found["guidance"] is None:  # the one nearest the sampler is the one applied
                        found["guidance"] = self.literal(node_id, "guidance")
                    link = self.link(node_id, "conditioning")
                elif kind in ("ControlNetApplyAdvanced", "ControlNetApplySD3"):
                    self.flag(node_id, f"ControlNet ({self.settings(node_id)}); not run")
                    link = self.link(node_id, "positive" if output == 0 else "negative")
                else:
                    link = self.link(node_id, "conditioning")
                    why = "ControlNet" if "ControlNet" in kind else "changes the conditioning"
                    if link is not None:
                        self.flag(node_id, f"{why} ({self.settings(node_id)}); not run")
                if link is None:
                    raise PngInfoError(f"unsupported ComfyUI graph: the {role} conditioning comes from "
                                       f"{self.label(node_id)}; only CLIPTextEncode (with FluxGuidance, ControlNet "
                                       "or other single-input nodes around it) is read")
                continue
            self.walk_clip(self.link(node_id, "clip", required=True))
            return found
        raise PngInfoError(f"bad ComfyUI graph: the {role} links form a cycle")

    def walk_output(self, sampler_id: str, output_id: str) -> None:
        """The path from a saving node back to the sampler: VAEDecode, and anything else (flagged)."""
        link = self.link(output_id, "images", required=True)
        for _ in range(len(self.graph)):
            node_id, node, _ = self.follow(link, "image")
            if node_id == sampler_id:
                return
            if node["class_type"] == "VAEDecode":
                vae = self.link(node_id, "vae")
                if vae is not None:
                    vae_id, vae_node, _ = self.follow(vae, "vae")
                    if vae_node["class_type"] == "VAELoader":
                        self.notes.setdefault(vae_id, f"VAE {vae_node['inputs'].get('vae_name')!r} (recorded; the "
                                                      "run uses --model's)")
                    elif vae_node["class_type"] not in _CHECKPOINTS:
                        self.flag(vae_id, f"provides the VAE ({self.settings(vae_id)}); not run")
                link = self.link(node_id, "samples")
            else:
                self.flag(node_id, f"changes the image after sampling ({self.settings(node_id)}); not run")
                link = next((self.link(node_id, name) for name in ("image", "images", "samples", "pixels")
                             if self.link(node_id, name) is not None), None)
            if link is None:
                return
        raise PngInfoError("bad ComfyUI graph: the image links form a cycle")


def _graph(text: str) -> dict:
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as error:
        raise PngInfoError(f"the ComfyUI 'prompt' chunk is not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(graph, dict) or not graph:
        raise PngInfoError("the ComfyUI 'prompt' chunk is not a graph (a JSON object of nodes)")
    for node_id, node in graph.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                and isinstance(node.get("inputs"), dict)):
            raise PngInfoError(f"bad ComfyUI graph: node {node_id} has no class_type and inputs (the 'prompt' "
                               "chunk holds the API-format graph)")
    return {str(k): v for k, v in graph.items()}


def parse_comfyui(text: str, kind: str) -> Reading:
    """The job a ComfyUI API-format graph (the ``prompt`` PNG chunk) describes, for a ``kind`` run.

    Read: exactly one KSampler (``seed``, ``steps``, ``cfg``, ``sampler_name``, ``scheduler``, ``denoise``) or
    KSamplerAdvanced (``noise_seed`` ...; equivalent only with ``add_noise`` "enable", ``start_at_step`` 0,
    ``end_at_step`` >= ``steps``, ``return_with_leftover_noise`` "disable"); its model from CheckpointLoaderSimple or
    UNETLoader (the name recorded); positive and negative CLIPTextEncode texts (also CLIPTextEncodeSDXL with one text
    and the image's own sizes, CLIPTextEncodeFlux with one text, ConditioningZeroOut); FluxGuidance (FLUX's distilled
    guidance; ComfyUI's default 3.5 without one); EmptyLatentImage / EmptySD3LatentImage (size, ``batch_size``);
    VAEDecode to SaveImage / PreviewImage. Seed mode ``noise="comfyui"``. Anything else in these paths (LoRA loaders,
    ControlNet, ModelSampling*, CLIP skip, upscales, an encoded image, ``denoise`` < 1) is a finding; a graph with no
    or several sampler nodes, SamplerCustom, or a prompt that is not plain text is refused (PngInfoError)."""
    from .registry import resolve_sampler
    from .schedules import SCHEDULES

    g = _Graph(_graph(text))
    nodes = g.graph
    samplers = sorted(i for i, n in nodes.items() if n["class_type"] in _SAMPLERS)
    if not samplers:
        others = sorted({n["class_type"] for n in nodes.values() if "sampler" in n["class_type"].lower()})
        raise PngInfoError("unsupported ComfyUI graph: no KSampler or KSamplerAdvanced node"
                           + (f" (it samples with {', '.join(others)})" if others else ""))
    if len(samplers) > 1:
        raise PngInfoError(f"unsupported ComfyUI graph: {len(samplers)} sampler nodes "
                           f"({', '.join(g.label(i) for i in samplers)}); only a graph with one sampler is read "
                           "(a second one is a hires fix, a refiner or another image)")
    sampler_id = samplers[0]
    sampler = nodes[sampler_id]
    if sampler["class_type"].startswith("SamplerCustom"):
        raise PngInfoError(f"unsupported ComfyUI graph: {g.label(sampler_id)} (only KSampler and KSamplerAdvanced "
                           "are read)")
    advanced = sampler["class_type"] == "KSamplerAdvanced"
    steps = g.literal(sampler_id, "steps")
    seed = g.literal(sampler_id, "noise_seed" if advanced else "seed")
    cfg = g.literal(sampler_id, "cfg")
    sampler_name = g.literal(sampler_id, "sampler_name")
    scheduler = g.literal(sampler_id, "scheduler")
    for name, value, types in (("steps", steps, int), ("seed", seed, int), ("cfg", cfg, (int, float)),
                               ("sampler_name", sampler_name, str), ("scheduler", scheduler, str)):
        if not isinstance(value, types) or isinstance(value, bool):
            raise PngInfoError(f"bad ComfyUI graph: {name} of {g.label(sampler_id)} is {value!r}")
    cfg = float(cfg)
    here = g.label(sampler_id)
    not_honoured: list[str] = []
    if advanced:
        inputs = sampler["inputs"]
        if inputs.get("add_noise", "enable") != "enable":
            not_honoured.append(f"{here}: add_noise {inputs['add_noise']} (generate always starts from noise)")
        if inputs.get("start_at_step", 0) != 0:
            not_honoured.append(f"{here}: start_at_step {inputs['start_at_step']} (generate runs from the first "
                                "step)")
        end = inputs.get("end_at_step", 10000)
        if not isinstance(end, int) or end < steps:
            not_honoured.append(f"{here}: end_at_step {end} < steps {steps} (generate runs every step)")
        if inputs.get("return_with_leftover_noise", "disable") != "disable":
            not_honoured.append(f"{here}: return_with_leftover_noise {inputs['return_with_leftover_noise']}")
    else:
        denoise = sampler["inputs"].get("denoise", 1.0)
        if denoise != 1.0:
            not_honoured.append(f"{here}: denoise {denoise} (a partial schedule from an input latent; generate "
                                "runs txt2img from full noise)")
    values = {"seed": seed, "steps": steps, "noise": "comfyui"}
    try:
        values["sampler"] = resolve_sampler(sampler_name).spec.name
    except ValueError:
        not_honoured.append(f"{here}: sampler_name {sampler_name} (not in the catalogue; --best-effort runs euler)")
        values["sampler"] = "euler"
    if scheduler in SCHEDULES:
        values["schedule"] = scheduler
    else:
        not_honoured.append(f"{here}: scheduler {scheduler} (not in the catalogue; --best-effort runs normal)")
        values["schedule"] = "normal"

    g.walk_model(g.link(sampler_id, "model", required=True))
    positive = g.walk_conditioning(g.link(sampler_id, "positive", required=True), "positive")
    negative = g.walk_conditioning(g.link(sampler_id, "negative", required=True), "negative")
    latent_id, latent, _ = g.follow(g.link(sampler_id, "latent_image", required=True), "latent_image")
    size = None
    if latent["class_type"] in _EMPTY_LATENTS:
        width, height, batch = (g.literal(latent_id, k) for k in ("width", "height", "batch_size"))
        size = (width, height)
        if batch != 1:
            not_honoured.append(f"{g.label(latent_id)}: batch_size {batch} (the file does not say which image of "
                                "the batch it is; generate renders the first)")
    else:
        not_honoured.append(f"{here}: starts from {g.label(latent_id)}, not an empty latent (img2img or a "
                            "second pass); --best-effort renders txt2img at the image's own size")
    values["width"], values["height"] = size or (None, None)
    for role, found in (("positive", positive), ("negative", negative)):
        if found["sdxl"] is not None and size is not None:
            node_id, sizes = found["sdxl"]
            width, height = size
            if (sizes["width"], sizes["height"], sizes["target_width"], sizes["target_height"],
                    sizes["crop_w"], sizes["crop_h"]) != (width, height, width, height, 0, 0):
                g.flag(node_id, f"SDXL size conditioning ({g.settings(node_id)}) other than the image's size "
                                 "(generate conditions on the image size, no crop)")
        if re.search(r"[()]", found["text"]):
            not_honoured.append(f"{role} prompt: ComfyUI weights ( ) parts (generate encodes the text as written)")
        if "embedding:" in found["text"]:
            not_honoured.append(f"{role} prompt: embedding: (textual inversion, not loaded)")

    notes: list[str] = []
    if kind == "flux":
        values["guidance_scale"] = 3.5 if positive["guidance"] is None else float(positive["guidance"])
        if cfg != 1.0:
            not_honoured.append(f"{here}: cfg {cfg:g} (ComfyUI runs true CFG with the negative above 1; generate's "
                                "FLUX run uses the distilled guidance only)")
        values["prompt"], values["negative_prompt"] = positive["text"], ""
        if positive["guidance"] is None:
            notes.append("no FluxGuidance: ComfyUI's FLUX default guidance 3.5")
    else:
        values["guidance_scale"] = cfg
        if positive["guidance"] is not None:
            not_honoured.append(f"FluxGuidance {positive['guidance']} (a FLUX setting; this run is --kind sdxl)")
        if cfg < 1:
            not_honoured.append(f"{here}: cfg {cfg:g} (below 1 the diffusers pipeline turns guidance off)")
        values["prompt"], values["negative_prompt"] = positive["text"], negative["text"]
        if positive["zero"]:
            not_honoured.append("positive conditioning: ConditioningZeroOut (generate encodes the prompt)")
        if cfg > 1 and not negative["zero"] and not negative["text"]:
            not_honoured.append("negative prompt: an empty CLIPTextEncode (ComfyUI encodes the empty text; SDXL "
                                "pipelines with force_zeros_for_empty_prompt, SDXL's default, use zeros)")

    outputs = sorted(i for i, n in nodes.items() if n["class_type"] in ("SaveImage", "PreviewImage")
                     or ("Save" in n["class_type"] and g.link(i, "images") is not None))
    if not outputs:
        not_honoured.append("no SaveImage node: what the file holds is not known")
    for output_id in outputs:
        g.walk_output(sampler_id, output_id)
    not_honoured += list(g.findings.values())
    return Reading("ComfyUI", values, not_honoured, notes + list(g.notes.values()), g.model)


# --- files --------------------------------------------------------------------------------------------------------


def read_text_chunks(path: Path) -> tuple[dict[str, str], tuple[int, int]]:
    """The text chunks of a PNG and its size; PngInfoError for anything else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise PngInfoError(f"a {image.format} file, not a PNG (A1111's EXIF UserComment in JPEG and WebP "
                                   "files is not read)")
            return {str(k): str(v) for k, v in image.text.items()}, image.size
    except UnidentifiedImageError:
        raise PngInfoError("not a PNG (not an image PIL can open)") from None
    except OSError as error:
        raise PngInfoError(f"cannot read it: {error}") from None


def read_png(path: Path, kind: str) -> Reading:
    """The :class:`Reading` of a PNG: ComfyUI's ``prompt`` graph when it has one (the graph is what ran), else the
    ``parameters`` chunk."""
    chunks, size = read_text_chunks(path)
    if COMFY_PROMPT in chunks:
        reading = parse_comfyui(chunks[COMFY_PROMPT], kind)
        if reading.values["width"] is None:  # not an empty latent (a finding): the image's own size
            reading.values["width"], reading.values["height"] = size
        return reading
    if PARAMETERS in chunks:
        return parse_parameters_text(chunks[PARAMETERS], kind)
    found = f" (its text chunks: {', '.join(sorted(chunks))})" if chunks else " (it has no text chunks)"
    raise PngInfoError(f"no metadata to reproduce: no 'parameters' (A1111/Forge/k-diffusing) or 'prompt' (ComfyUI) "
                       f"text chunk{found}")


# --- generate --from-png ------------------------------------------------------------------------------------------


def expand_paths(arguments: list[Path]) -> tuple[list[Path], list[str]]:
    """The files of ``--from-png``: each file as given, each folder's ``*.png`` files sorted by name; and an error
    line per argument that is neither."""
    files, errors = [], []
    for argument in arguments:
        if argument.is_dir():
            found = sorted(p for p in argument.iterdir() if p.is_file() and p.suffix.lower() == ".png")
            if not found:
                errors.append(f"{argument}: no .png files in this folder")
            files += found
        elif argument.exists():
            files.append(argument)
        else:
            errors.append(f"{argument}: no such file or folder")
    return files, errors


def check_from_png_options(args, defaults: dict) -> None:
    """JobError where ``--from-png`` meets a job file or an option that sets a job value (the files set them all)."""
    from .generate import JobError

    if args.jobs is not None:
        raise JobError("give a job file or --from-png, not both")
    given = [f"--{key.replace('_', '-')}" for key, value in defaults.items() if value is not None]
    if given:
        raise JobError(f"--from-png takes every setting from the files; it cannot be combined with "
                       f"{', '.join(given)}")


def _describe(job) -> str:
    schedule = f" + {job.schedule}" if job.schedule else " on the scheduler's own sigmas"
    guidance = "the pipeline's guidance" if job.guidance_scale is None else f"guidance {job.guidance_scale:g}"
    size = "the default size" if job.width is None else f"{job.width}x{job.height}"
    noise = getattr(job, "noise", None)
    if noise == "a1111":
        extra = [f"rng {getattr(job, 'rng', None)}"]
        if getattr(job, "subseed_strength", None):
            extra.append(f"variation seed {job.subseed} at {job.subseed_strength:g}")
        if getattr(job, "eta_noise_seed_delta", None):
            extra.append(f"ENSD {job.eta_noise_seed_delta}")
        noise = f"a1111 ({', '.join(extra)})"
    return (f"{job.sampler}{schedule}, {job.steps} steps, {guidance}, seed {job.seed}, {size}"
            + (f", noise {noise}" if noise else ""))


@dataclass
class FromPng:
    """``generate --from-png``: the jobs to run, what to add to their manifest records, the files refused."""

    jobs: list = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # job index -> manifest fields
    refused: int = 0

    def annotate(self, records: list[dict]) -> list[dict]:
        return [{**record, **self.extras.get(record["index"], {})} for record in records]


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once under torchrun / accelerate
        print(message, file=sys.stderr, flush=True)


def from_png_jobs(arguments: list[Path], kind: str, model: str, best_effort: bool) -> FromPng:
    """One job per readable file of ``arguments`` (:func:`expand_paths`), index = its place in that list, for
    generate's usual run. Prints a line per file (what will run, every setting not honoured, notes); a file with a
    setting not honoured is refused unless ``best_effort``; unreadable files are refused with a one-line error."""
    from .generate import JOB_KEYS, Job, JobError, check_job_values

    files, errors = expand_paths(arguments)
    plan = FromPng(refused=len(errors))
    for error in errors:
        _say(f"error: {error}")
    for index, path in enumerate(files):
        try:
            reading = read_png(path, kind)
        except PngInfoError as error:
            _say(f"error: {path}: {error}")
            plan.refused += 1
            continue
        values = dict(reading.values)
        not_honoured, notes = list(reading.not_honoured), list(reading.notes)
        mode = {k: values.pop(k) for k in SEED_MODE_KEYS if k in values and k not in JOB_KEYS}
        if mode and mode.get("noise", "diffusers") != "diffusers":
            shown = ", ".join(f"{k} {v}" for k, v in mode.items())
            not_honoured.append(f"seed mode ({shown}): this generate has no seed modes yet, its noise is diffusers'")
        if reading.model is not None and reading.model != model:
            hashed = f" (hash {reading.model_hash})" if reading.model_hash else ""
            notes.append(f"made with model {reading.model!r}{hashed}; this run uses {model!r} (the file's model is "
                         "not loaded)")
        try:
            checked = check_job_values(values, str(path))
            job = Job(index=index, model=model, **{**{k: None for k in JOB_KEYS}, **checked})
        except JobError as error:
            _say(f"error: {error}" if str(path) in str(error) else f"error: {path}: {error}")
            plan.refused += 1
            continue
        _say(f"{path}: {reading.source} -> {_describe(job)}")
        for finding in not_honoured:
            _say(f"  not honoured: {finding}")
        for note in notes:
            _say(f"  note: {note}")
        if not_honoured and not best_effort:
            _say(f"  not rendered: {len(not_honoured)} setting(s) not honoured (--best-effort renders it anyway)")
            plan.refused += 1
            continue
        plan.jobs.append(job)
        extra = {"from_png": str(path), "source": reading.source}
        if not_honoured:
            extra["not_honoured"] = not_honoured
        if notes:
            extra["notes"] = notes
        plan.extras[index] = extra
    return plan
