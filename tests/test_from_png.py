"""`generate --from-png` (k_diffusing.pnginfo): our own PNGs reproduced byte for byte, A1111 / Forge infotexts and
ComfyUI API graphs (samples written here from their documented formats) read into jobs with every setting that
cannot be honoured listed, and bad or foreign files refused one by one with nothing half-written."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from k_diffusing.generate import JOB_KEYS, format_parameters, main
from k_diffusing.pnginfo import PngInfoError, parse_a1111, parse_comfyui, read_png, split_parameters

# --- samples in the documented formats -----------------------------------------------------------------------------

A1111_TXT2IMG = (  # A1111 before 1.9 wrote the schedule into the sampler name
    "a photo of a cat on a windowsill, golden hour\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 832x1216, Model hash: 31e35c80fc, "
    "Model: sd_xl_base_1.0, Version: v1.10.1")
A1111_SPLIT = (  # A1111 1.9+: "Schedule type" on its own
    "a photo of a cat\nsecond prompt line\n"
    "Negative prompt: blurry,\nlowres\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, Size: 832x1216, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Clip skip: 1, Eta: 1, Version: v1.10.1")
A1111_VARIATION = (
    "a red fox in the snow\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 1024x1024, Model hash: 31e35c80fc, "
    "Model: sd_xl_base_1.0, Variation seed: 99, Variation seed strength: 0.3, ENSD: 31337, RNG: CPU, "
    "Version: v1.10.1")
A1111_LORA_HIRES = (
    "a castle on a hill <lora:x:0.8>, masterpiece\n"
    "Negative prompt: ugly\n"
    "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 32x32, Model hash: 0123abcd, "
    'Model: my_model, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, '
    'Lora hashes: "x: 89abcdef0123", Version: v1.10.1')
FORGE_FLUX = (
    "a cat wearing a tiny hat\n"
    "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 7, "
    "Size: 896x1152, Model hash: bea01d51bd, Model: flux1-dev-bnb-nf4-v2, "
    "Version: f2.0.1v1.10.1-previous-313-g8a042934, Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16")


def comfy_graph(sampler=None, lora=False, second_sampler=False, size=(1024, 768), steps=20):
    """ComfyUI's default text-to-image graph in API format (node id -> class_type, inputs; links as [id, output])."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size[0], "height": size[1], "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk, oil painting",
                                                         "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 156680208700286, "steps": steps, "cfg": 8.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    if sampler is not None:
        graph["3"] = sampler
    if lora:
        graph["10"] = {"class_type": "LoraLoader", "inputs": {
            "lora_name": "detail.safetensors", "strength_model": 0.8, "strength_clip": 0.8, "model": ["4", 0],
            "clip": ["4", 1]}}
        graph["3"]["inputs"]["model"] = ["10", 0]
        graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["10", 1]
    if second_sampler:  # a hires-fix pass: a second KSampler on the upscaled latent
        graph["11"] = {"class_type": "LatentUpscaleBy", "inputs": {"upscale_method": "nearest-exact",
                                                                   "scale_by": 1.5, "samples": ["3", 0]}}
        graph["12"] = {"class_type": "KSampler", "inputs": {**graph["3"]["inputs"], "denoise": 0.5,
                                                            "latent_image": ["11", 0]}}
        graph["8"]["inputs"]["samples"] = ["12", 0]
    return graph


def advanced(**changes):
    inputs = {"add_noise": "enable", "noise_seed": 156680208700286, "steps": 20, "cfg": 8.0,
              "sampler_name": "dpmpp_2m", "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000,
              "return_with_leftover_noise": "disable", "model": ["4", 0], "positive": ["6", 0],
              "negative": ["7", 0], "latent_image": ["5", 0]}
    return {"class_type": "KSamplerAdvanced", "inputs": {**inputs, **changes}}


def flux_graph():
    """ComfyUI's FLUX dev graph: split loaders, FluxGuidance on the positive, cfg 1."""
    return {
        "10": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                      "weight_dtype": "default"}},
        "11": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp16.safetensors",
                                                          "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "12": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat wearing a tiny hat", "clip": ["11", 0]}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 2.5, "conditioning": ["6", 0]}},
        "33": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["11", 0]}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
            "model": ["10", 0], "positive": ["26", 0], "negative": ["33", 0], "latent_image": ["27", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["12", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def write_png(path: Path, size=(8, 8), **chunks) -> Path:
    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text if isinstance(text, str) else json.dumps(text))
    Image.new("RGB", size, (40, 80, 120)).save(path, format="PNG", pnginfo=info)
    return path


def has(findings, *words) -> bool:
    """Whether one finding mentions every word."""
    return any(all(w in f for w in words) for f in findings)


# --- A1111 / Forge ---------------------------------------------------------------------------------------------------


def test_split_follows_a1111s_layout():
    prompt, negative, pairs = split_parameters(
        'a "cat", on: a mat\n  two  \nNegative prompt: bad\nworse\n'
        'Steps: 3, Sampler: Euler, Size: 8x8, Model: "a, b: c", Lora hashes: "x: 1, y: 2"')
    assert (prompt, negative) == ('a "cat", on: a mat\ntwo', "bad\nworse")
    assert pairs == {"Steps": "3", "Sampler": "Euler", "Size": "8x8", "Model": "a, b: c",
                     "Lora hashes": "x: 1, y: 2"}
    with pytest.raises(PngInfoError, match="no settings line"):  # fewer than 3 pairs: prompt text (A1111's rule)
        split_parameters("a cat\nSteps: 20, Seed: 1")


@pytest.mark.parametrize("text", [A1111_TXT2IMG, A1111_SPLIT], ids=["combined name", "schedule type"])
def test_a1111_txt2img(tmp_path, text):
    reading = read_png(write_png(tmp_path / "a.png", parameters=text), "sdxl")
    prompt = "a photo of a cat on a windowsill, golden hour" if text is A1111_TXT2IMG else \
        "a photo of a cat\nsecond prompt line"
    negative = "blurry, lowres" if text is A1111_TXT2IMG else "blurry,\nlowres"
    assert reading.values == {"prompt": prompt, "negative_prompt": negative, "steps": 25, "sampler": "dpmpp_2m",
                              "schedule": "karras", "guidance_scale": 6.5, "seed": 1234567, "width": 832,
                              "height": 1216, "noise": "a1111", "rng": "gpu"}
    assert reading.not_honoured == [] and reading.source == "A1111 v1.10.1"
    assert (reading.model, reading.model_hash) == ("sd_xl_base_1.0", "31e35c80fc")


def test_a1111_variation_seed_ensd_and_rng(tmp_path):
    reading = read_png(write_png(tmp_path / "v.png", parameters=A1111_VARIATION), "sdxl")
    v = reading.values
    assert (v["sampler"], v["schedule"]) == ("euler_ancestral", "normal")  # no Schedule type: A1111's Uniform
    assert (v["noise"], v["rng"], v["subseed"], v["subseed_strength"], v["eta_noise_seed_delta"]) == (
        "a1111", "cpu", 99, 0.3, 31337)
    assert reading.not_honoured == []


def test_a1111_lora_and_hires_fix_are_listed(tmp_path):
    reading = read_png(write_png(tmp_path / "l.png", parameters=A1111_LORA_HIRES), "sdxl")
    found = reading.not_honoured
    assert has(found, "<lora:x:0.8>", "LoRA")
    assert has(found, "hires fix", "Hires upscale: 2", "Hires steps: 10", "Hires upscaler: Latent",
               "Denoising strength: 0.5")
    assert has(found, "Lora hashes")
    assert len(found) == 3, found
    assert reading.values["prompt"] == "a castle on a hill , masterpiece"  # A1111 drops the tag before encoding


def test_a1111_settings_that_are_not_honoured():
    base = "a cat\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 64x64{extra}, Version: v1.10.1"
    cases = [
        ("Euler", ", Clip skip: 2", ["Clip skip: 2"]),
        ("Euler a", ", Eta: 0.5", ["Eta: 0.5"]),
        ("PLMS", "", ["Sampler: PLMS", "Heun", "--best-effort runs ipndm on ddim_uniform"]),
        ("UniPC", "", ["Sampler: UniPC", "timestep grid", "uni_pc"]),  # A1111's UniPC is not ComfyUI's
        ("DDIM", "", ["Sampler: DDIM", "stops at timestep 1", "--best-effort runs euler on ddim_uniform"]),
        ("Heun++", "", ["Sampler: Heun++", "not in the catalogue"]),
        ("DPM adaptive", "", ["Sampler: DPM adaptive"]),
        ("Euler", ", Schedule type: Karras Exponential", ["Schedule type: Karras Exponential"]),
        ("Euler", ", Schedule type: Beta, Beta schedule alpha: 0.6, Beta schedule beta: 0.6", ["Beta", "sigma"]),
        ("Euler", ", Seed resize from: 512x512", ["Seed resize from: 512x512"]),
        ("Euler", ", Schedule rho: 5", ["Schedule rho: 5"]),
        ("Euler", ", ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3", ["ADetailer", "face_yolov8n"]),
        ("Euler", ", Frobnication: 3", ["Frobnication: 3", "does not know"]),
        ("Euler", ", Distilled CFG Scale: 3.5", ["Distilled CFG Scale: 3.5", "--kind sdxl"]),
        ("Euler", ", Denoising strength: 0.75", ["Denoising strength: 0.75", "img2img"]),
    ]
    for sampler, extra, words in cases:
        reading = parse_a1111(base.format(sampler=sampler, extra=extra), "sdxl")
        assert len(reading.not_honoured) == 1 and has(reading.not_honoured, *words), (extra, reading.not_honoured)
    emphasis = parse_a1111("a (cat:1.2) BREAK [dog]\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8",
                           "sdxl")
    assert has(emphasis.not_honoured, "emphasis") and has(emphasis.not_honoured, "BREAK")
    assert emphasis.source == "A1111-format (no Version)"


@pytest.mark.parametrize("sampler, runs", [("DDIM", "euler"), ("PLMS", "ipndm")])
def test_a1111_ddim_and_plms_run_on_the_ddim_grid(sampler, runs):
    """A1111's DDIM and PLMS run on its DDIM timestep grid whatever the Schedule type (it ignores it for them, and
    writes it all the same): --best-effort runs euler / ipndm on ddim_uniform (k_diffusing.registry's A1111_DDIM and
    A1111_PLMS, measured in tests/test_catalogue.py), the finding says what differs."""
    base = "a cat\nSteps: {steps}, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 64x64{extra}, Version: v1.10.1"
    for extra in ("", ", Schedule type: Automatic", ", Schedule type: Karras", ", Schedule type: Beta"):
        reading = parse_a1111(base.format(steps=20, sampler=sampler, extra=extra), "sdxl")
        assert (reading.values["sampler"], reading.values["schedule"]) == (runs, "ddim_uniform")
        assert len(reading.not_honoured) == 1 and has(reading.not_honoured, f"Sampler: {sampler}", "timestep 1")
        label = extra.removeprefix(", Schedule type: ")
        assert reading.notes == ([f"Schedule type: {label} (A1111's {sampler} ignores it)"]
                                 if label not in ("", "Automatic") else [])
    # 20 steps divide 1000: the same grid; 30 do not: A1111's grid has 31 timesteps up to t = 991
    assert not has(parse_a1111(base.format(steps=20, sampler=sampler, extra=""), "sdxl").not_honoured, "grid")
    thirty = parse_a1111(base.format(steps=30, sampler=sampler, extra=""), "sdxl").not_honoured
    assert has(thirty, "31 timesteps up to t = 991", "ddim_uniform 30 up to t = 958")


def test_a1111_ddim_eta_is_a_finding_that_names_euler_ancestral():
    text = "a cat\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 64x64, Eta DDIM: 0.3, Version: v1.10.1"
    found = parse_a1111(text, "sdxl").not_honoured
    assert len(found) == 2 and has(found, "Eta DDIM: 0.3", "euler_ancestral with this eta", "generate runs euler")


def test_forge_flux(tmp_path):
    reading = read_png(write_png(tmp_path / "f.png", parameters=FORGE_FLUX), "flux")
    assert reading.values == {"prompt": "a cat wearing a tiny hat", "negative_prompt": "", "steps": 20,
                              "sampler": "euler", "schedule": "simple", "guidance_scale": 3.5, "seed": 7,
                              "width": 896, "height": 1152, "noise": "a1111", "rng": "gpu"}
    assert reading.not_honoured == []
    assert reading.source.startswith("Forge f2.0.1") and reading.model == "flux1-dev-bnb-nf4-v2"
    assert has(reading.notes, "Module 3: t5xxl_fp16")
    as_sdxl = read_png(tmp_path / "f.png", "sdxl")  # the same file on an SDXL run: its FLUX guidance is not honoured
    assert as_sdxl.values["guidance_scale"] == 1.0 and has(as_sdxl.not_honoured, "Distilled CFG Scale: 3.5")
    true_cfg = parse_a1111(FORGE_FLUX.replace("CFG scale: 1,", "CFG scale: 3,"), "flux")
    assert has(true_cfg.not_honoured, "CFG scale: 3", "true CFG")


# --- ComfyUI ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", [None, advanced()], ids=["KSampler", "KSamplerAdvanced"])
def test_comfyui_plain_graph(tmp_path, sampler):
    path = write_png(tmp_path / "c.png", prompt=comfy_graph(sampler), workflow={"nodes": []})
    reading = read_png(path, "sdxl")
    assert reading.values == {"prompt": "a lighthouse at dusk, oil painting", "negative_prompt": "text, watermark",
                              "seed": 156680208700286, "steps": 20, "guidance_scale": 8.0, "sampler": "dpmpp_2m",
                              "schedule": "karras", "width": 1024, "height": 768, "noise": "comfyui"}
    assert reading.not_honoured == [] and reading.source == "ComfyUI"
    assert reading.model == "sd_xl_base_1.0.safetensors"


def test_comfyui_settings_that_are_not_honoured():
    cases = [
        (comfy_graph(lora=True), ["LoraLoader", "detail.safetensors"]),
        (comfy_graph(advanced(end_at_step=12)), ["end_at_step 12"]),
        (comfy_graph(advanced(return_with_leftover_noise="enable")), ["return_with_leftover_noise enable"]),
        (comfy_graph(advanced(start_at_step=3)), ["start_at_step 3"]),
        (comfy_graph(advanced(sampler_name="ddim_typo")), ["sampler_name ddim_typo"]),
    ]
    denoise = comfy_graph()
    denoise["3"]["inputs"]["denoise"] = 0.6
    cases.append((denoise, ["denoise 0.6"]))
    img2img = comfy_graph()
    img2img["20"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}}
    img2img["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}}
    img2img["3"]["inputs"]["latent_image"] = ["21", 0]
    cases.append((img2img, ["VAEEncode", "not an empty latent"]))
    upscaled = comfy_graph()
    upscaled["30"] = {"class_type": "ImageScaleBy", "inputs": {"upscale_method": "lanczos", "scale_by": 2.0,
                                                               "image": ["8", 0]}}
    upscaled["9"]["inputs"]["images"] = ["30", 0]
    cases.append((upscaled, ["ImageScaleBy", "after sampling"]))
    control = comfy_graph()
    control["40"] = {"class_type": "ControlNetApply", "inputs": {"strength": 0.7, "conditioning": ["6", 0],
                                                                 "control_net": ["41", 0], "image": ["42", 0]}}
    control["3"]["inputs"]["positive"] = ["40", 0]
    cases.append((control, ["ControlNetApply", "ControlNet"]))
    for graph, words in cases:
        reading = parse_comfyui(json.dumps(graph), "sdxl")
        # one finding per node (a LoraLoader sits on the model and on the text encoder: once)
        assert len(reading.not_honoured) == 1 and has(reading.not_honoured, *words), (words, reading.not_honoured)


def test_comfyui_flux_graph():
    reading = parse_comfyui(json.dumps(flux_graph()), "flux")
    assert reading.values == {"prompt": "a cat wearing a tiny hat", "negative_prompt": "", "seed": 7, "steps": 20,
                              "guidance_scale": 2.5, "sampler": "euler", "schedule": "simple", "width": 1024,
                              "height": 1024, "noise": "comfyui"}
    assert reading.not_honoured == [] and reading.model == "flux1-dev.safetensors"
    assert len(reading.notes) == 2 and has(reading.notes, "t5xxl_fp16") and has(reading.notes, "ae.safetensors")
    default = flux_graph()
    default["3"]["inputs"]["positive"] = ["6", 0]  # no FluxGuidance: ComfyUI's FLUX default guidance
    assert parse_comfyui(json.dumps(default), "flux").values["guidance_scale"] == 3.5
    as_sdxl = parse_comfyui(json.dumps(flux_graph()), "sdxl")
    assert has(as_sdxl.not_honoured, "FluxGuidance 2.5")


# --- our own files ---------------------------------------------------------------------------------------------------


def test_our_own_parameters_read_back_and_a_kind_mismatch_is_reported():
    p = {"prompt": 'a "cat" (x) <lora:y:1>', "negative_prompt": "", "seed": 9, "sampler": "dpmpp_2m",
         "schedule": "karras", "steps": 4, "width": 32, "height": 32, "guidance_scale": 3.0, "model": "embedded:flux"}
    from k_diffusing.pnginfo import parse_parameters_text

    reading = parse_parameters_text(format_parameters(p, "flux"), "flux")
    assert reading.not_honoured == [] and reading.source.startswith("k-diffusing")
    assert reading.values["prompt"] == p["prompt"]  # taken as written: it was run as written
    assert reading.values["noise"] == "diffusers" and reading.model == "embedded:flux"
    wrong_kind = parse_parameters_text(format_parameters(p, "flux"), "sdxl")
    assert has(wrong_kind.not_honoured, "Distilled CFG Scale: 3.0", "--kind sdxl")


# --- bad and foreign files -------------------------------------------------------------------------------------------


def bad_files(folder: Path) -> dict[str, str]:
    """name -> the error each file gets."""
    (folder / "notes.png").write_text("not an image at all")
    Image.new("RGB", (8, 8)).save(folder / "photo.png", format="JPEG")  # a JPEG named .png
    write_png(folder / "bare.png")
    write_png(folder / "malformed.png", parameters="a cat\nSteps: many, Sampler: Euler, Seed: 1, Size: 8x8, "
                                                   "CFG scale: 7")
    write_png(folder / "prompt-only.png", parameters="just a prompt, no settings")
    write_png(folder / "two-samplers.png", prompt=comfy_graph(second_sampler=True))
    write_png(folder / "not-json.png", prompt="{'3': nope")
    write_png(folder / "invoke.png", invokeai_metadata="{}")
    huge_seed = comfy_graph(size=(32, 32), steps=2)
    huge_seed["3"]["inputs"]["seed"] = 2**64 - 1  # ComfyUI's largest
    write_png(folder / "huge-seed.png", prompt=huge_seed)
    return {"notes.png": "not a PNG", "photo.png": "a JPEG file, not a PNG", "bare.png": "it has no text chunks",
            "malformed.png": "Steps: 'many' is not a whole number", "prompt-only.png": "no settings line",
            "two-samplers.png": "2 sampler nodes", "not-json.png": "not JSON",
            "invoke.png": "its text chunks: invokeai_metadata", "huge-seed.png": "'seed' must be in [0, 2**63)"}


def test_bad_and_foreign_files_get_a_clear_error(tmp_path):
    for name, message in bad_files(tmp_path).items():
        if name == "huge-seed.png":  # read, then refused by generate's job check (see the command-line test)
            continue
        with pytest.raises(PngInfoError, match=re.escape(message)):
            read_png(tmp_path / name, "sdxl")


# --- the command line ------------------------------------------------------------------------------------------------

JOBS = [
    {"prompt": 'a large red circle, "quoted", on: blue\nsecond line (not emphasis) <lora:z:1>',
     "sampler": "DPM++ 2M Karras", "seed": 42, "negative_prompt": "blurry, dark: low quality"},
    {"prompt": "a small yellow square at the top, black background", "sampler": "dpmpp_2m_sde", "schedule": "beta",
     "guidance_scale": 3},
    {"prompt": "a large white triangle in the center, green background", "sampler": "Euler a", "steps": 2},
]


# Our own files keep the seed mode they were made with (once generate has seed modes).
SEED_MODE_JOBS = [
    {"prompt": "a red circle", "seed": 3, "sampler": "Euler a", "noise": "a1111", "rng": "cpu", "subseed": 7,
     "subseed_strength": 0.25, "eta_noise_seed_delta": 31337},
    {"prompt": "a blue square", "sampler": "dpmpp_2m", "schedule": "karras", "noise": "comfyui"},
] if "noise" in JOB_KEYS else []


def _generate(tmp_path: Path, out: Path, *options) -> int:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(j) + "\n" for j in JOBS))
    return main([str(jobs), "--out", str(out), "--steps", "3", *options])


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_round_trip_of_our_own_output_is_byte_identical(tmp_path, capsys, kind):
    first, again = tmp_path / "first", tmp_path / "again"
    jobs = JOBS + SEED_MODE_JOBS if kind == "sdxl" else [{**j, "negative_prompt": ""} for j in JOBS]
    n = len(jobs)
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    assert main([str(tmp_path / "jobs.jsonl"), "--out", str(first), "--steps", "3", "--kind", kind]) == 0
    capsys.readouterr()
    assert main(["--from-png", str(first), "--out", str(again), "--kind", kind]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "not honoured" not in err and f"{n} jobs: {n} rendered" in err
    assert _pngs(again) == _pngs(first) and len(_pngs(first)) == n  # same names, same bytes
    records = _manifest(again)
    assert [r["parameters"] for r in records] == [r["parameters"] for r in _manifest(first)]
    assert all(r["from_png"].endswith(r["file"]) and "not_honoured" not in r for r in records)
    # resume: a rerun renders nothing
    assert main(["--from-png", str(first), "--out", str(again), "--kind", kind]) == 0
    assert f"{n} jobs: 0 rendered, {n} already there" in capsys.readouterr().err


def test_bad_files_are_refused_one_by_one_and_the_rest_is_rendered(tmp_path, capsys):
    first, again, inputs = tmp_path / "first", tmp_path / "again", tmp_path / "inputs"
    inputs.mkdir()
    assert _generate(tmp_path, first) == 0
    good = sorted(first.glob("*.png"))[0]
    (inputs / good.name).write_bytes(good.read_bytes())
    errors = bad_files(inputs)
    capsys.readouterr()
    assert main(["--from-png", str(inputs), str(tmp_path / "missing.png"), "--out", str(again)]) == 2
    err = capsys.readouterr().err
    for name, message in errors.items():
        assert sum(line.startswith("error: ") and name in line for line in err.splitlines()) == 1, name
        assert message in err
    assert "missing.png: no such file or folder" in err
    assert _pngs(again) == {good.name: good.read_bytes()}  # the good file, byte for byte; nothing else
    assert [r["file"] for r in _manifest(again)] == [good.name]
    assert sorted(p.name for p in again.iterdir()) == [good.name, "manifest.jsonl"]  # no temporary files

    only_bad = tmp_path / "only-bad"
    assert main(["--from-png", *(str(inputs / n) for n in errors), "--out", str(only_bad)]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert not only_bad.exists()  # nothing ran: no empty folder


def test_settings_not_honoured_refuse_the_file_unless_best_effort(tmp_path, capsys):
    lora = write_png(tmp_path / "lora-hires.png", parameters=A1111_LORA_HIRES)
    comfy = write_png(tmp_path / "comfy-lora.png", prompt=comfy_graph(lora=True, size=(32, 32), steps=2))
    out = tmp_path / "out"
    assert main(["--from-png", str(lora), str(comfy), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not honoured: prompt: <lora:x:0.8>" in err and "not honoured: hires fix" in err
    assert "LoraLoader" in err and err.count("not rendered:") == 2
    assert "note: made with model 'my_model' (hash 0123abcd); this run uses 'embedded:sdxl'" in err
    assert not out.exists()

    assert main(["--from-png", str(lora), "--out", str(out), "--best-effort"]) == 0
    err = capsys.readouterr().err
    assert "not honoured: hires fix" in err and "1 jobs: 1 rendered" in err
    (record,) = _manifest(out)
    assert record["ok"] and record["source"] == "A1111 v1.10.1"
    assert has(record["not_honoured"], "<lora:x:0.8>") and has(record["not_honoured"], "hires fix")
    p = record["parameters"]
    assert (p["prompt"], p["sampler"], p["schedule"], p["steps"], p["width"], p["seed"]) == (
        "a castle on a hill , masterpiece", "dpmpp_2m", "karras", 2, 32, 5)
    if "noise" in JOB_KEYS:
        assert p["noise"] == "a1111"


@pytest.mark.parametrize("args, message", [
    (["jobs.jsonl", "--from-png", "x.png"], "not both"),
    (["--from-png", "x.png", "--steps", "4"], "cannot be combined with --steps"),
    (["jobs.jsonl", "--best-effort"], "--best-effort applies to --from-png only"),
    ([], "give a job file"),
])
def test_bad_option_combinations(tmp_path, capsys, args, message):
    (tmp_path / "jobs.jsonl").write_text('{"prompt": "a"}\n')
    args = [str(tmp_path / a) if a.endswith((".jsonl", ".png")) else a for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
