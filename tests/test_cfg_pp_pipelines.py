"""CFG++ samplers in the K pipelines, on the tiny offline zoo.

The K pipeline captures the network's unconditional prediction and hands ``(D, D_u)`` to the sampler. At the first
call every run starts from the same latents, so the estimates of runs at different CFG++ scales must satisfy
``D_lambda = D_u + lambda (D_c - D_u)`` with one ``D_u`` and one ``D_c``: scale 0 gives ``D_u`` (the parent's own
unconditional branch), and the recorded ``D_u`` must equal it. Taking the wrong half of the batch, or the wrong one of
FLUX's two calls, breaks that.
"""

from __future__ import annotations

import pytest
import torch

from k_diffusing import KScheduler
from k_diffusing.pipelines.variants import BY_ZOO_CASE
from k_diffusing.pipelines import KFluxPipeline, KSDXLPipeline
from k_diffusing.samplers.base import uses_uncond
from k_diffusing.samplers.cfg_pp import sample_euler_cfg_pp
from k_diffusing.testing.zoo import ZOO

pytestmark = pytest.mark.usefixtures("single_thread")

K_CLASSES = {"sdxl": KSDXLPipeline, "flux": KFluxPipeline, **BY_ZOO_CASE}
CASES = ["sd15", "sdxl", "sdxl_img2img", "sd3", "flux", "flux_img2img"]


def _k_pipe(name):
    case = ZOO[name]
    pipe = K_CLASSES[name](**case.components(case.default_scheduler())).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


NEGATIVE = "a blurry picture"


def _scale_kwargs(name, scale):
    if name.startswith("flux"):
        return {"true_cfg_scale": scale, "negative_prompt": NEGATIVE}
    return {"guidance_scale": scale, "negative_prompt": NEGATIVE}


def _first_call(pipe, name, scale, prompt=None):
    """``(D, D_u)`` of the first model call of a CFG++ Euler run at ``scale`` (``prompt`` replaces the zoo's)."""
    records = []

    @uses_uncond
    def sampler(model, x, sigmas, **kwargs):
        record = lambda d: records.append((d["denoised"], d["uncond_denoised"])) if d["x"].numel() > 1 else None  # noqa: E731
        return sample_euler_cfg_pp(model, x, sigmas, callback=record, **kwargs)

    inputs = ZOO[name].inputs(torch.Generator().manual_seed(0))
    if prompt is not None:
        inputs["prompt"] = prompt
    pipe(**inputs, sampler=sampler, **_scale_kwargs(name, scale))
    return records[0]


@pytest.mark.parametrize("name", CASES)
def test_first_call_estimates_are_the_guidance_line(name):
    pipe = _k_pipe(name)
    d0, u0 = _first_call(pipe, name, 0.0)
    d_half, u_half = _first_call(pipe, name, 0.5)
    d_two, u_two = _first_call(pipe, name, 2.0)
    scale = d0.abs().max().item()
    assert (d0 - u0).abs().max().item() <= 1e-6 * scale  # scale 0: the guided estimate is the unconditional one
    assert (u_half - u0).abs().max().item() <= 1e-6 * scale and (u_two - u0).abs().max().item() <= 1e-6 * scale
    cond_minus_uncond = (d_two - u0) / 2.0
    assert cond_minus_uncond.abs().max().item() > 1e-3 * scale  # the prompts differ, so the branches do
    assert (d_half - (u0 + 0.5 * cond_minus_uncond)).abs().max().item() <= 1e-5 * scale
    # which branch is which: D_u is the conditional estimate of a run whose prompt is the negative prompt
    d_negative, _ = _first_call(pipe, name, 1.0, prompt=NEGATIVE)
    assert (u0 - d_negative).abs().max().item() <= 1e-5 * scale


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_equals_base_sampler_when_the_negative_prompt_is_the_prompt(name):
    """Identical branches: CFG++ Euler is Euler (any scale), through the pipeline."""
    pipe = _k_pipe(name)
    inputs = ZOO[name].inputs(torch.Generator().manual_seed(0))
    same = {"negative_prompt": inputs["prompt"]}
    scale = {"true_cfg_scale": 0.7} if name == "flux" else {"guidance_scale": 0.7}
    out = pipe(**inputs, sampler="euler_cfg_pp", **same, **scale)[0]
    inputs = ZOO[name].inputs(torch.Generator().manual_seed(0))
    # D = D_c at any scale: the branches are equal (FLUX without true CFG runs the prompt only; a negative prompt
    # there would be unused, which is refused)
    base = pipe(**inputs, sampler="euler", **(same if name == "sdxl" else {}))[0]
    assert (out - base).abs().max().item() <= 1e-5 * base.abs().max().item()


def test_flux_needs_a_negative_prompt_and_fill_is_refused():
    pipe = _k_pipe("flux")
    with pytest.raises(ValueError, match="negative_prompt"):
        pipe(**ZOO["flux"].inputs(torch.Generator().manual_seed(0)), sampler="euler_cfg_pp")
    fill = _k_pipe("flux_fill")
    with pytest.raises(ValueError, match="does not compute"):
        fill(**ZOO["flux_fill"].inputs(torch.Generator().manual_seed(0)), sampler="dpmpp_2m_cfg_pp")


def test_plain_pipeline_with_kscheduler_refuses_before_the_network_runs():
    case = ZOO["sdxl"]
    pipe = case.build()
    pipe.scheduler = KScheduler.from_scheduler(pipe.scheduler, sampler="euler_cfg_pp")
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="CFG\\+\\+"):
        case.run(pipe)
    assert calls == []
