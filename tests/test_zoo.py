"""The tiny pipeline zoo (k_diffusing.testing.zoo): every case builds, runs with its default scheduler, gives finite
latents of its declared shape, repeats bit for bit (same pipeline, and a rebuilt one) and changes with the seed,
and passes ``generator`` to ``scheduler.step`` exactly when its ``step_gets_generator`` says so.

Each case's pipeline and first run are made once (a module-scoped fixture) and shared by the tests of that case.
The module runs torch single-threaded: the models are too small to gain from intra-op threads, and on a shared
2-core machine the threads' spin-waits made a 4-step SDXL run take 0.5 to 13 s instead of 0.07 s (measured).
"""

import inspect

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from k_diffusing.testing.zoo import GEOMETRIES, ZOO

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    # diffusers' Helios code path under NumPy 2 (not ours), as in test_scheduler_pipelines.py
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

SEED = 0


@pytest.fixture(scope="module", params=list(ZOO))
def first_run(request):
    case = ZOO[request.param]
    pipe = case.build()
    return case, pipe, case.run(pipe, seed=SEED)


def test_zoo_covers_the_families():
    assert {case.pipeline_cls.__name__ for case in ZOO.values()} >= {
        "StableDiffusionPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
        "StableDiffusionXLControlNetPipeline",
        "StableDiffusion3Pipeline",
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "WanPipeline",
        "StableDiffusionControlNetPipeline",
        "LatentConsistencyModelPipeline",
        "PixArtAlphaPipeline",
        "KandinskyV22Img2ImgPipeline",
        "KandinskyImg2ImgPipeline",
        "MarigoldDepthPipeline",
        "HeliosPipeline",
        "CogVideoXPipeline",
        "LTXConditionPipeline",
        "ShapEPipeline",
        "SanaSprintPipeline",
    }
    assert {type(case.default_scheduler()).__name__ for case in ZOO.values()} >= {
        "EulerDiscreteScheduler",
        "FlowMatchEulerDiscreteScheduler",
        "UniPCMultistepScheduler",
        "PNDMScheduler",
        "DDIMScheduler",
        "LCMScheduler",
        "TCDScheduler",
        "EDMDPMSolverMultistepScheduler",
        "EDMEulerScheduler",
        "DPMSolverMultistepScheduler",
        "CogVideoXDDIMScheduler",
        "CogVideoXDPMScheduler",
        "HeunDiscreteScheduler",
        "SCMScheduler",
        "HeliosScheduler",
    }
    assert all(case.geometry in GEOMETRIES for case in ZOO.values())
    refiner = ZOO["sdxl_refiner"].build()
    assert refiner.text_encoder is None and refiner.tokenizer is None and refiner.config.requires_aesthetics_score
    assert ZOO["sd15_v"].default_scheduler().config.prediction_type == "v_prediction"
    assert ZOO["sd15_pndm"].default_scheduler().config.skip_prk_steps
    ddim = ZOO["sd15_controlnet_ddim"].default_scheduler().config
    assert ddim.steps_offset == 0 and not ddim.set_alpha_to_one and not ddim.clip_sample
    assert ZOO["sd15_lcm"].build().unet.config.time_cond_proj_dim is not None
    assert ZOO["shap_e"].default_scheduler().config.prediction_type == "sample"
    assert ZOO["marigold_depth"].default_scheduler().config.prediction_type == "v_prediction"


def test_runs_finite_with_declared_shape_and_rebuilds_bit_identically(first_run):
    case, pipe, latents = first_run
    assert tuple(latents.shape) == case.latent_shape
    assert latents.dtype == torch.float32
    assert torch.isfinite(latents).all()
    assert latents.std() > 0
    assert torch.equal(case.run(case.build(), seed=SEED), latents)
    assert not torch.equal(case.run(pipe, seed=SEED + 1), latents)  # the generator does drive the run


def test_repeats_bit_identically_and_step_gets_generator_as_declared(first_run):
    """The same call again with a fresh generator of the same seed, through a spy on ``scheduler.step`` that
    declares a ``generator`` parameter (the SD/SDXL pipelines look for one) and forwards it when the real
    ``step`` takes it, so that the call is unchanged."""
    case, pipe, latents = first_run
    step = pipe.scheduler.step
    forwards = "generator" in inspect.signature(step).parameters
    passed = []

    def spy(*args, generator=None, **kwargs):
        passed.append(generator is not None)
        if forwards:
            kwargs["generator"] = generator
        return step(*args, **kwargs)

    pipe.scheduler.step = spy
    try:
        again = case.run(pipe, seed=SEED)
    finally:
        del pipe.scheduler.step
    assert torch.equal(again, latents)
    assert passed and set(passed) == {case.step_gets_generator}
