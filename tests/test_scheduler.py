"""KScheduler inside diffusers' own pipelines (tiny offline components, fp32, CPU).

Tolerances are relative: max |latent diff| / max |latent| (the tiny random networks make latents of magnitude
~1-70). The references are independent of KScheduler: diffusers' native schedulers, and the functional samplers run
directly on the bridge denoisers (:mod:`k_diffusing.denoisers`) over the same networks.
"""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("greenlet")

import diffusers
from diffusers import (
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from PIL import Image

from k_diffusing import FLOW, VE, KScheduler, list_samplers
from k_diffusing.denoisers import DiscreteDenoiser, FlowDenoiser
from k_diffusing.pipelines.schedulers import scheduler_sigmas
from k_diffusing.registry import get_sampler
from k_diffusing.testing.tiny import analytic_sdxl_pipeline, sdxl_scheduler_config, tiny_sdxl_components
from k_diffusing.testing.tiny_flux import tiny_flux_components

PROMPT = "a photo of a cat"
STEPS = 4
FLUX_SEQ = 16  # max_sequence_length for the tiny T5
ROUNDOFF = 1e-6  # the bound; measured values are written next to each use

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have"),  # torchsde's interval-end rounding
    pytest.mark.usefixtures("single_thread"),
]

# Every sampler a plain parent pipeline can run with KScheduler: not dpm_adaptive (data-dependent calls), not the
# CFG++ samplers (the parent's loop hands the scheduler no unconditional prediction: tests/test_cfg_pp_pipelines.py)
RUNNABLE = [s for s in list_samplers() if s.name != "dpm_adaptive" and not s.needs_uncond]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


class _CallCounter:
    """Counts forward calls of a module (a hook, so the module itself is untouched)."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.fixture(scope="module")
def sdxl_comps():
    return tiny_sdxl_components()


@pytest.fixture(scope="module")
def flux_comps():
    return tiny_flux_components()


def _pipe(cls, comps, scheduler=None):
    components = {**comps, "scheduler": scheduler if scheduler is not None else comps["scheduler"]}
    if "add_watermarker" in cls.__init__.__code__.co_varnames:
        components["add_watermarker"] = False
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sdxl(pipe, steps=STEPS, seed=0, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return pipe(PROMPT, num_inference_steps=steps, output_type="latent", **kwargs).images


def _flux(pipe, steps=STEPS, seed=0, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return pipe(PROMPT, num_inference_steps=steps, height=32, width=32, max_sequence_length=FLUX_SEQ,
                output_type="latent", **kwargs).images


# --- the functional references (no KScheduler) ---------------------------------------------------------------------


def _sdxl_functional(pipe, spec, steps, seed, guidance=5.0):
    """The sampler run directly on a DiscreteDenoiser over the pipeline's UNet (classifier-free guidance batched
    as the parent does), from the parent's initial noise on the scheduler's own sigmas."""
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                                                   do_classifier_free_guidance=True)
    time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    cond = {"text_embeds": torch.cat([negative_pooled, pooled]), "time_ids": torch.cat([time_ids, time_ids])}
    hidden = torch.cat([negative, embeds])

    def net(x_in, t):
        uncond, text = pipe.unet(torch.cat([x_in] * 2), torch.cat([t] * 2), encoder_hidden_states=hidden,
                                 added_cond_kwargs=cond, return_dict=False)[0].chunk(2)
        return uncond + guidance * (text - uncond)

    own = scheduler_sigmas(pipe.scheduler, steps)
    bridge = DiscreteDenoiser(net, pipe.scheduler.alphas_cumprod, pipe.scheduler.config.prediction_type, known=own.known)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 4, 16, 16), generator=generator) * own.init_noise_sigma
    kwargs = {"generator": generator} if "generator" in spec.options else {}
    with torch.no_grad():
        return spec(bridge, x, own.sigmas, disable=True, **kwargs)


def _flux_functional(pipe, spec, steps, seed):
    """The sampler run directly on a FlowDenoiser over the pipeline's transformer, from the parent's packed noise on
    its shifted sigmas."""
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=FLUX_SEQ)
    generator = torch.Generator().manual_seed(seed)
    latents, image_ids = pipe.prepare_latents(1, pipe.transformer.config.in_channels // 4, 32, 32, embeds.dtype,
                                              "cpu", generator)
    config = pipe.scheduler.config
    mu = calculate_shift(latents.shape[1], config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                         config.max_shift)
    own = scheduler_sigmas(pipe.scheduler, steps, None, np.linspace(1.0, 1 / steps, steps), mu)
    guidance = torch.full([1], 3.5) if pipe.transformer.config.guidance_embeds else None

    def net(x, t):
        return pipe.transformer(hidden_states=x, timestep=t / 1000, guidance=guidance, pooled_projections=pooled,
                                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids,
                                return_dict=False)[0]

    bridge = FlowDenoiser(net, config.num_train_timesteps, own.known)
    kwargs = {"generator": generator} if "generator" in spec.options else {}
    with torch.no_grad():
        return spec(bridge, latents, own.sigmas, disable=True, **kwargs)


def _call_bounds(spec, plan_steps: int) -> tuple[int, int]:
    """Model calls a run of ``plan_steps`` steps may make by the registry entry: at most ``calls_per_step`` per
    step, at least one (the last steps of multi-call samplers take fewer: heun's step into 0, Heun++'s last two), plus
    plms's one pseudo-Heun warm-up call (PNDM's n + 1 calls)."""
    return plan_steps, spec.calls_per_step * plan_steps + (spec.name == "plms")


# --- every sampler, both pipelines, both routes ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", RUNNABLE, ids=lambda s: s.name)
def test_every_sampler_runs_in_sdxl_and_matches_the_functional_sampler(sdxl_comps, spec):
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps)
    reference = _sdxl_functional(pipe, spec, STEPS, seed=0)
    pipe.scheduler = KScheduler.from_scheduler(sdxl_comps["scheduler"], sampler=spec.name)
    with _CallCounter(pipe.unet) as unet:
        out = _sdxl(pipe)
    assert torch.isfinite(out).all()
    assert unet.calls == len(pipe.scheduler.timesteps)
    low, high = _call_bounds(spec, STEPS)
    if spec.name == "restart":  # Xu et al.'s restart intervals add Heun calls beyond calls_per_step
        assert unet.calls > high
    else:
        assert low <= unet.calls <= high, (unet.calls, low, high)
    # measured: 0.0 for every sampler (the same arithmetic, the network fed the same timesteps)
    assert _rel(out, reference) <= ROUNDOFF


@pytest.mark.parametrize("spec", RUNNABLE, ids=lambda s: s.name)
def test_every_sampler_runs_in_flux_and_matches_the_functional_sampler(flux_comps, spec):
    pipe = _pipe(FluxPipeline, flux_comps)
    reference = _flux_functional(pipe, spec, STEPS, seed=0)
    pipe.scheduler = KScheduler.from_scheduler(flux_comps["scheduler"], sampler=spec.name)
    generator = torch.Generator().manual_seed(0)
    pipe.scheduler.set_generator(generator)  # FluxPipeline passes no generator to step
    with _CallCounter(pipe.transformer) as transformer:
        out = _flux(pipe, generator=generator)
    assert torch.isfinite(out).all()
    assert transformer.calls == len(pipe.scheduler.timesteps)
    assert _rel(out, reference) <= ROUNDOFF


@pytest.mark.parametrize("name", ["dpm_adaptive", "DPM adaptive", "function"])
def test_dpm_adaptive_is_refused(name):
    sampler = get_sampler("dpm_adaptive").function if name == "function" else name
    with pytest.raises(ValueError, match="number of model calls from the data"):
        KScheduler.from_config(sdxl_scheduler_config(), sampler=sampler)



@pytest.mark.parametrize("options, error, message", [
    ({"sampler": "euler_ancestral", "sampler_kwargs": {"eta": float("nan")}}, ValueError,
     r"sampler_kwargs\['eta'\] must be a finite number >= 0 and <= 100, got nan"),
    ({"sampler": "dpmpp_2m_sde", "sampler_kwargs": {"s_noise": -0.5}}, ValueError, r"sampler_kwargs\['s_noise'\]"),
    ({"sampler": "euler", "sampler_kwargs": ("s_churn", 1.0)}, TypeError, "sampler_kwargs must be a dict"),
    ({"sampler": "euler", "check_finite": "yes"}, TypeError, "check_finite must be True or False, got 'yes'"),
    ({"sampler": "euler", "quantize_timesteps": 0}, TypeError, "quantize_timesteps must be True or False or None"),
])
def test_bad_options_are_refused_when_the_scheduler_is_built(options, error, message):
    """The same argument rules as the K pipelines (k_diffusing/pipelines/arguments.py), at construction: a plain
    diffusers pipeline with a KScheduler never runs with them."""
    with pytest.raises(error, match=message):
        KScheduler.from_config(sdxl_scheduler_config(), **options)

# --- parity with the native schedulers -----------------------------------------------------------------------------

NATIVE = [
    ("EulerDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "final_sigmas_type": "zero"}),
    ("UniPCMultistepScheduler", {}),
]


@pytest.mark.parametrize("name,overrides", NATIVE, ids=lambda v: v if isinstance(v, str) else "")
def test_default_sampler_reproduces_the_native_scheduler_in_sdxl(sdxl_comps, name, overrides):
    native = getattr(diffusers, name).from_config(sdxl_scheduler_config(), **overrides)
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps, native)
    theirs = _sdxl(pipe, steps=6)
    pipe.scheduler = KScheduler.from_scheduler(native)
    ours = _sdxl(pipe, steps=6)
    assert len(pipe.scheduler.timesteps) == len(native.timesteps)
    assert torch.equal(pipe.scheduler.timesteps, native.timesteps.to(torch.float32))
    assert _rel(ours, theirs) <= ROUNDOFF  # measured <= 5.5e-7 (Euler, Heun: 0.0)


def test_config_class_name_picks_the_equivalent(tmp_path):
    diffusers.HeunDiscreteScheduler.from_config(sdxl_scheduler_config()).save_config(tmp_path)
    config = json.loads((tmp_path / "scheduler_config.json").read_text())
    scheduler = KScheduler.from_config(config)
    scheduler.set_timesteps(5)
    assert scheduler.config.base_scheduler == "HeunDiscreteScheduler"
    assert len(scheduler.timesteps) == 9 and scheduler.order == 2


def test_parity_check_can_fail(sdxl_comps):
    """Negative control: the wrong initial noise scale (sigma_0 instead of the native sqrt(sigma_0^2 + 1) of
    'leading' spacing) breaks the parity bound."""
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps)
    theirs = _sdxl(pipe)
    pipe.scheduler = KScheduler.from_scheduler(sdxl_comps["scheduler"], sigma_schedule="normal")
    assert _rel(_sdxl(pipe), theirs) > 100 * ROUNDOFF


# --- pipelines changing latents between calls ------------------------------------------------------------------------


# DPMSolverMultistep keeps VP latents, so the replaced state is converted to VE and back: measured 2.0e-6.
@pytest.mark.parametrize("name,tol", [("EulerDiscreteScheduler", ROUNDOFF), ("HeunDiscreteScheduler", ROUNDOFF),
                                      ("DPMSolverMultistepScheduler", 5e-6)])
def test_callback_replacing_latents_becomes_the_state_as_in_the_native_scheduler(sdxl_comps, name, tol):
    native = getattr(diffusers, name).from_config(sdxl_scheduler_config())

    def callback(pipe, i, t, kwargs):
        return {"latents": kwargs["latents"] * 0.5} if i in (1, 2) else {}

    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps, native)
    theirs = _sdxl(pipe, steps=5, callback_on_step_end=callback)
    pipe.scheduler = KScheduler.from_scheduler(native)
    ours = _sdxl(pipe, steps=5, callback_on_step_end=callback)
    assert _rel(ours, theirs) <= tol  # Euler, Heun: measured 0.0
    assert _rel(_sdxl(pipe, steps=5), ours) > 1e-2  # the callback mattered


# --- refiner split, custom schedules -------------------------------------------------------------------------------


def _timesteps_seen(pipe, run):
    seen = []

    def callback(p, i, t, kwargs):
        seen.append(float(t))
        return {}

    return run(callback), seen


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "HeunDiscreteScheduler"])
def test_base_and_refiner_split_runs_the_native_timesteps(sdxl_comps, name):
    """diffusers' documented split: the base to denoising_end, the img2img pipeline on from denoising_start."""
    native = getattr(diffusers, name).from_config(sdxl_scheduler_config())
    results = []
    for scheduler in (native, KScheduler.from_scheduler(native)):
        base = _pipe(StableDiffusionXLPipeline, sdxl_comps, scheduler)
        refiner = _pipe(StableDiffusionXLImg2ImgPipeline, sdxl_comps, scheduler)
        latents, seen_base = _timesteps_seen(base, lambda cb: _sdxl(base, steps=8, denoising_end=0.6,
                                                                      callback_on_step_end=cb))
        image, seen_refiner = _timesteps_seen(refiner, lambda cb: refiner(
            PROMPT, image=latents, num_inference_steps=8, denoising_start=0.6, output_type="latent",
            generator=torch.Generator().manual_seed(1), callback_on_step_end=cb).images)
        results.append((latents, image, seen_base, seen_refiner))
    (lat_n, img_n, base_n, ref_n), (lat_k, img_k, base_k, ref_k) = results
    assert base_k == base_n and ref_k == ref_n and len(base_n) > 0 and len(ref_n) > 0
    assert _rel(lat_k, lat_n) <= ROUNDOFF  # Heun stops mid-step on both sides; measured 0.0
    assert _rel(img_k, img_n) <= ROUNDOFF


@pytest.mark.parametrize("custom", [{"timesteps": [999, 749, 499, 249, 49]},
                                    {"sigmas": [14.6, 6.0, 2.0, 0.6, 0.1, 0.0]}], ids=["timesteps", "sigmas"])
def test_custom_timesteps_or_sigmas_without_num_inference_steps(sdxl_comps, custom):
    native = EulerDiscreteScheduler.from_config(sdxl_scheduler_config())
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps, native)
    theirs = _sdxl(pipe, steps=None, **custom)
    pipe.scheduler = KScheduler.from_scheduler(native)
    ours = _sdxl(pipe, steps=None, **custom)
    assert torch.equal(pipe.scheduler.timesteps, native.timesteps)
    assert _rel(ours, theirs) <= ROUNDOFF  # measured 0.0


# --- inpainting and img2img ----------------------------------------------------------------------------------------


def _image(seed: int) -> Image.Image:
    pixels = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(seed))
    return Image.fromarray((pixels.numpy() * 255).astype(np.uint8))


MASK = Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), 8))  # inpaint the centre 16x16 pixels


@pytest.mark.parametrize("spec", RUNNABLE, ids=lambda s: s.name)
def test_inpainting_keeps_the_unmasked_region(sdxl_comps, spec):
    def run(scheduler):
        pipe = _pipe(StableDiffusionXLInpaintPipeline, sdxl_comps, scheduler)
        return pipe(PROMPT, image=_image(0), mask_image=MASK, height=32, width=32, num_inference_steps=STEPS,
                    strength=1.0, output_type="latent", generator=torch.Generator().manual_seed(0)).images

    native = run(sdxl_comps["scheduler"])
    ours = run(KScheduler.from_scheduler(sdxl_comps["scheduler"], sampler=spec.name))
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[4:12, 4:12] = False
    assert torch.isfinite(ours).all()
    assert torch.equal(ours[..., keep], native[..., keep])  # both are the original's latents there
    assert not torch.equal(ours[..., ~keep], native[..., ~keep]) or spec.name == "euler"


DATA_MEAN, DATA_STD = 0.5, 1.5
ODE_TOL = 2.5e-3  # tests/test_sdxl_pipeline.py's txt2img bound (its derivation is there)
IMG2IMG_ODE = [("heun", {}, 160), ("dpmpp_2m", {}, 160), ("uni_pc", {}, 160), ("lms", {}, 160),
               ("dpmpp_2m_sde", {"eta": 0.0}, 160), ("euler", {}, (100, 200))]


@pytest.mark.parametrize("name,kwargs,steps", IMG2IMG_ODE, ids=[c[0] for c in IMG2IMG_ODE])
def test_img2img_lands_on_the_exact_ode_solution(name, kwargs, steps):
    """The analytic UNet for N(0.5, 1.5^2) inside StableDiffusionXLImg2ImgPipeline: from the img2img start point
    x_s (captured from add_noise) at sigma_s, x(0) = m + (x_s - m) s / sqrt(s^2 + sigma_s^2)."""
    pipe = analytic_sdxl_pipeline("epsilon", StableDiffusionXLImg2ImgPipeline, mean=DATA_MEAN, std=DATA_STD)

    def run(n):
        scheduler = KScheduler.from_scheduler(pipe.scheduler, sampler=name, sigma_schedule="karras",
                                              sampler_kwargs=kwargs)
        starts = []
        add_noise = scheduler.add_noise
        scheduler.add_noise = lambda *args: starts.append(add_noise(*args)) or starts[-1]
        pipe.scheduler = scheduler
        out = pipe(PROMPT, image=_image(2), strength=0.5, num_inference_steps=n, guidance_scale=1.0,
                   output_type="latent", generator=torch.Generator().manual_seed(0)).images.double()
        sigma_s = float(scheduler.sigmas[scheduler.begin_index])
        exact = DATA_MEAN + (starts[0].double() - DATA_MEAN) * DATA_STD / math.sqrt(DATA_STD**2 + sigma_s**2)
        return out, exact

    if isinstance(steps, tuple):  # order 1: Richardson extrapolation of the error, 2 e(2n) - e(n); the start
        # sigma differs a little between n and 2n (Karras sigmas cut at half the steps)
        (coarse, exact_c), (fine, exact_f) = run(steps[0]), run(steps[1])
        error = 2 * (fine - exact_f) - (coarse - exact_c)
    else:
        out, exact = run(steps)
        error = out - exact
    assert float(error.abs().max()) <= ODE_TOL


def test_img2img_check_can_fail():
    """Negative control: an analytic UNet for data std 1% off lands far from the exact solution."""
    pipe = analytic_sdxl_pipeline("epsilon", StableDiffusionXLImg2ImgPipeline, mean=DATA_MEAN, std=DATA_STD * 1.01)
    scheduler = KScheduler.from_scheduler(pipe.scheduler, sampler="dpmpp_2m", sigma_schedule="karras")
    starts = []
    add_noise = scheduler.add_noise
    scheduler.add_noise = lambda *args: starts.append(add_noise(*args)) or starts[-1]
    pipe.scheduler = scheduler
    out = pipe(PROMPT, image=_image(2), strength=0.5, num_inference_steps=160, guidance_scale=1.0,
               output_type="latent", generator=torch.Generator().manual_seed(0)).images.double()
    sigma_s = float(scheduler.sigmas[scheduler.begin_index])
    exact = DATA_MEAN + (starts[0].double() - DATA_MEAN) * DATA_STD / math.sqrt(DATA_STD**2 + sigma_s**2)
    assert float((out - exact).abs().max()) > 3 * ODE_TOL  # measured 1.2e-2 (from sigma_s = 1.1, not 14.6)


# --- noise ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "sa_solver"])
def test_stochastic_samplers_are_batch_invariant_with_per_image_generators(sdxl_comps, sampler):
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps,
                 KScheduler.from_scheduler(sdxl_comps["scheduler"], sampler=sampler))
    batch = _sdxl(pipe, num_images_per_prompt=2,
                  generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
    alone = [_sdxl(pipe, generator=[torch.Generator().manual_seed(s)]) for s in (3, 4)]
    # batched CPU kernels round differently: measured <= 2e-6 relative; another seed differs by ~1
    for i in range(2):
        assert _rel(batch[i : i + 1], alone[i]) <= 1e-5
    assert _rel(alone[0], alone[1]) > 1e-2


# --- configuration and round trip ----------------------------------------------------------------------------------


def test_protocol_signature_is_what_retrieve_timesteps_inspects():
    import inspect

    params = inspect.signature(KScheduler.set_timesteps).parameters
    assert {"num_inference_steps", "device", "timesteps", "sigmas", "mu"} <= set(params)
    assert "generator" in inspect.signature(KScheduler.step).parameters


def test_save_pretrained_round_trips_the_sampler_and_options(sdxl_comps, tmp_path):
    scheduler = KScheduler.from_scheduler(sdxl_comps["scheduler"], sampler="dpmpp_2m_sde", sigma_schedule="karras",
                                          sampler_kwargs={"eta": 0.5, "s_noise": 1.01})
    pipe = _pipe(StableDiffusionXLPipeline, sdxl_comps, scheduler)
    before = _sdxl(pipe)
    pipe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "KScheduler" and saved["sampler"] == "dpmpp_2m_sde"
    assert saved["sampler_kwargs"] == {"eta": 0.5, "s_noise": 1.01} and saved["sigma_schedule"] == "karras"
    loaded = StableDiffusionXLPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, KScheduler)
    assert loaded.scheduler.config.base_scheduler == "EulerDiscreteScheduler"
    assert _rel(_sdxl(loaded), before) <= 1e-5  # reloaded models differ by ~6e-7 (tests/test_sdxl_pipeline.py)


def test_a_sampler_function_cannot_be_saved(tmp_path):
    scheduler = KScheduler.from_config(sdxl_scheduler_config(), sampler=get_sampler("euler").function)
    with pytest.raises(ValueError, match="cannot save sampler"):
        scheduler.save_config(tmp_path)


def test_begin_index_inside_a_step_is_refused():
    scheduler = KScheduler.from_config(sdxl_scheduler_config(), sampler="heun")
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="begin index 3 is not the first model call"):
        scheduler.set_begin_index(3)
    scheduler.set_begin_index(2)
    assert scheduler.begin_index == 2



def test_samplers_that_cannot_start_mid_schedule_say_so():
    """dpm_fast plans its whole run as one step (its call budget is split over the range); sa_solver_pece's tail from
    a later step makes other calls; restart starts from most steps, but not where a restart interval would move
    (20 steps: step 18)."""
    def scheduler(name, steps):
        s = KScheduler.from_config(sdxl_scheduler_config(), sampler=name)
        s.set_timesteps(steps)
        return s

    with pytest.raises(ValueError, match="begin index 1 is not the first model call of a step of sampler 'dpm_fast'"):
        scheduler("dpm_fast", 8).set_begin_index(1)
    pece = scheduler("sa_solver_pece", 8)
    for start in pece._plan.step_starts[1:]:
        with pytest.raises(ValueError, match="sampler 'sa_solver_pece' started at step .* cannot start mid-schedule"):
            pece.set_begin_index(start)
    restart = scheduler("restart", 20)
    starts = restart._plan.step_starts
    restart.set_begin_index(starts[10])
    with pytest.raises(ValueError, match="sampler 'restart' started at step 18 makes other model calls"):
        restart.set_begin_index(starts[18])


def test_a_config_without_class_name_is_euler_or_flowmatch_euler():
    """A plain dict (no ``_class_name``): EulerDiscrete, or FlowMatchEuler when it has flow keys and no betas."""
    discrete = KScheduler.from_config({k: v for k, v in sdxl_scheduler_config().items() if k != "_class_name"})
    assert type(discrete.base) is EulerDiscreteScheduler and discrete.geometry is VE
    flow = KScheduler.from_config({"num_train_timesteps": 1000, "shift": 3.0})
    assert type(flow.base) is FlowMatchEulerDiscreteScheduler and flow.geometry is FLOW


def test_keywords_the_base_does_not_take_raise():
    """A typo in KScheduler's own keywords, and keywords its base's set_timesteps / step do not take, raise naming
    what is accepted (diffusers would only log "config attributes ... will be ignored"); keys inside a config dict
    the base does not know stay accepted (SDXL's config carries PNDM's)."""
    with pytest.raises(TypeError, match=r"\['sigma_shedule'\]. Did you mean 'sigma_schedule'\?"):
        KScheduler.from_config(sdxl_scheduler_config(), sampler="dpmpp_2m", sigma_shedule="karras")
    scheduler = KScheduler.from_config({**sdxl_scheduler_config(), "skip_prk_steps": True}, sampler="euler")
    with pytest.raises(TypeError, match=r"EulerDiscreteScheduler.set_timesteps got unexpected keyword.*num_steps"):
        scheduler.set_timesteps(4, num_steps=4)
    scheduler.set_timesteps(4)
    x = torch.zeros(1, 4, 4, 4)
    with pytest.raises(TypeError, match=r"EulerDiscreteScheduler.step got unexpected keyword.*use_clipped"):
        scheduler.step(x, scheduler.timesteps[0], x, use_clipped_model_output=True)


@pytest.mark.parametrize("cls", ["HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"])
def test_a_config_built_in_code_of_another_class_is_refused(cls):
    """A scheduler built in code keeps no ``_class_name`` in its config; taking it as EulerDiscrete would run the
    wrong sampler silently, so a config whose keys are exactly another class's is refused, naming that class."""
    import diffusers

    with pytest.raises(ValueError, match=f"exactly .*{cls}'s.*from_scheduler"):
        KScheduler.from_config(getattr(diffusers, cls)().config)


def test_noise_from_the_global_rng_is_logged():
    """A stochastic sampler stepped without a generator (FluxPipeline, SD3 and Wan pass none) draws from torch's global
    RNG, as diffusers' own schedulers do, and says so once per run in the log."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("k_diffusing.scheduler")
    logger.addHandler(handler)
    try:
        for name in ("euler", "euler_ancestral"):
            scheduler = KScheduler.from_config(sdxl_scheduler_config(), sampler=name)
            scheduler.set_timesteps(2)
            sample = torch.zeros(1, 4, 2, 2)
            for t in scheduler.timesteps:
                sample = scheduler.step(torch.zeros_like(sample), t, sample).prev_sample
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert messages == ["KScheduler: sampler 'euler_ancestral' draws its noise from torch's global RNG (the pipeline "
                        "passed no generator to step); call scheduler.set_generator(g) for reproducible noise"]

def test_churn_before_the_first_call_is_refused_also_mid_schedule():
    """s_churn noises the state before a step's first call, which no pipeline loop can serve at its start."""
    config = sdxl_scheduler_config()
    with pytest.raises(ValueError, match="adds noise before that call"):
        KScheduler.from_config(config, sampler="euler", sampler_kwargs={"s_churn": 1.0}).set_timesteps(6)
    scheduler = KScheduler.from_config(config, sampler="euler", sampler_kwargs={"s_churn": 1.0, "s_tmax": 5.0})
    scheduler.set_timesteps(6)  # no churn above sigma 5: the txt2img start is fine
    with pytest.raises(ValueError, match="adds noise before that call|other model calls"):
        scheduler.set_begin_index(3)  # sigma_3 < 5: churn at the img2img start
