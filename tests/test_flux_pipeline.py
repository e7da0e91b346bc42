"""KFluxPipeline on tiny offline FLUX pipelines (fp32 CPU unless stated): parity with diffusers' own FluxPipeline and
FlowMatch schedulers, exactness on the analytic flow transformer inside the real pipeline, bf16, guidance, the
parent's features, loading and saving.

Tolerances are measured (diffusers 0.42.1, torch CPU) and written next to each check. The tiny random transformer
makes final latents of magnitude ~4.6 at 32x32 (float32 ulp there: 4.8e-7, bf16 ulp: 2^-5). Every numerical check
was seen to fail with a deliberately broken bridge or model (timesteps not paired, wrong shift, wrong data std,
unrounded bf16 timesteps); the cheap controls are kept as tests (``*_can_fail``).
"""

import inspect
import json
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FluxPipeline,
    UniPCMultistepScheduler,
)

import k_diffusing  # noqa: E402
from k_diffusing import KFluxPipeline, get_sampler, list_samplers  # noqa: E402
from k_diffusing.denoisers import FlowDenoiser  # noqa: E402
from k_diffusing import scheduler as k_scheduler  # noqa: E402
from k_diffusing.sampling import sample_euler, sample_heun  # noqa: E402
from k_diffusing.schedules import flow_sigma_table  # noqa: E402
from k_diffusing.testing.state import same_snapshot, snapshot
from k_diffusing.testing.tiny_flux import (  # noqa: E402
    analytic_flux_pipeline,
    flux_scheduler_config,
    tiny_flux_components,
)

PROMPT = "a photo of a cat"
STEPS = 8
SIZE = 32  # 256 image tokens: FLUX's base_image_seq_len, so the dynamic shift is mu = 0.5
MAX_SEQ = 16


# --- helpers -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comps():
    """One set of tiny random components (FLUX.1-dev shapes, FlowMatchEuler with dynamic shifting) for the module."""
    return tiny_flux_components()


def _build(cls, comps, scheduler=None, as_kscheduler=True):
    """``cls`` on the components, with ``scheduler`` in place of theirs. A K pipeline gets it as a loaded KScheduler
    (``KScheduler.from_scheduler``: its k-equivalent sampler), so that the checks below compare the K machinery with
    the parent; ``as_kscheduler=False`` loads the scheduler itself, with which a call without K options is the
    parent's own (tests/test_parent_default.py)."""
    scheduler = comps["scheduler"] if scheduler is None else scheduler
    if as_kscheduler and issubclass(cls, KFluxPipeline):
        scheduler = k_scheduler.KScheduler.from_scheduler(scheduler)
    pipe = cls(**{**comps, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, steps=STEPS, seed=0, output_type="latent", prompt=PROMPT, size=SIZE, **kwargs):
    generator = kwargs.pop("generator", None) or torch.Generator().manual_seed(seed)
    kwargs.setdefault("max_sequence_length", MAX_SEQ)
    return pipe(prompt, height=size, width=size, num_inference_steps=steps, generator=generator,
                output_type=output_type, **kwargs).images


def _diff(a, b) -> float:
    """max |a - b| (never sums: they hide sign errors)."""
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def _euler_scheduler(**overrides):
    return FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config(**overrides))


FLOW_DPM = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}


class _Recorder:
    """Records each transformer call's ``timestep`` (exactly as passed) and ``hidden_states`` through a pre-hook."""

    def __init__(self, transformer):
        self.timesteps, self.inputs = [], []
        self._handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.timesteps.append(kwargs["timestep"].detach().clone())
        self.inputs.append(kwargs["hidden_states"].detach().clone())

    @property
    def calls(self) -> int:
        return len(self.timesteps)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


# --- 1. parity with FluxPipeline and the FlowMatch schedulers ------------------------------------------------------

# Absolute tolerances at max |latent| ~4.6 (one float32 ulp = 4.8e-7). Measured on 8 steps, fp32 CPU:
EULER_TOL = 1.5e-6  # FlowMatchEuler: measured 4.8e-7 (one ulp: the same arithmetic), 7.2e-7 with karras sigmas
MULTISTEP_TOL = 5e-6  # DPM-Solver++ / UniPC in flow mode: measured <= 1.4e-6 (float64 sampler vs float32 scheduler)
# For scale: the bridge passing continuous timesteps instead of DPMSolverMultistep's int64 ones (831.3 instead of
# 831) moves the latents by 3.8e-3 (test_parity_check_can_fail).

PARITY_CASES = [
    # id, scheduler factory, tolerance
    ("euler_dynamic_shift", lambda: _euler_scheduler(), EULER_TOL),
    ("euler_static_shift", lambda: _euler_scheduler(use_dynamic_shifting=False, shift=3.0), EULER_TOL),
    ("euler_schnell", lambda: _euler_scheduler(use_dynamic_shifting=False, shift=1.0), EULER_TOL),
    # FlowMatchEuler's own sigma options act on the shifted sigmas; the pipeline reads them off a set-up copy
    ("euler_karras", lambda: _euler_scheduler(use_karras_sigmas=True), EULER_TOL),
    ("euler_exponential", lambda: _euler_scheduler(use_exponential_sigmas=True), EULER_TOL),
    ("euler_beta", lambda: _euler_scheduler(use_beta_sigmas=True), EULER_TOL),
    ("euler_shift_terminal", lambda: _euler_scheduler(shift_terminal=0.1), EULER_TOL),
    ("euler_linear_time_shift", lambda: _euler_scheduler(time_shift_type="linear"), EULER_TOL),
    # FluxPipeline always passes mu, which DPMSolverMultistep only accepts with use_dynamic_shifting (flow_shift then
    # becomes exp(mu)); see test_dpm_flow_without_dynamic_shifting_fails_as_in_the_parent.
    ("dpmpp_2m_flow", lambda: DPMSolverMultistepScheduler(**FLOW_DPM, use_dynamic_shifting=True), MULTISTEP_TOL),
    ("uni_pc_flow", lambda: UniPCMultistepScheduler(**FLOW_DPM), MULTISTEP_TOL),  # measured 1.2e-6
    ("uni_pc_flow_dynamic", lambda: UniPCMultistepScheduler(**FLOW_DPM, use_dynamic_shifting=True), MULTISTEP_TOL),
]


@pytest.mark.parametrize("make_scheduler,tol", [c[1:] for c in PARITY_CASES], ids=[c[0] for c in PARITY_CASES])
def test_default_sampler_matches_native_pipeline(comps, make_scheduler, tol):
    scheduler = make_scheduler()
    ours = _run(_build(KFluxPipeline, comps, scheduler))
    theirs = _run(_build(FluxPipeline, comps, scheduler))  # the same scheduler object, after ours ran
    assert ours.shape == theirs.shape == (1, 256, 4) and ours.dtype == theirs.dtype == torch.float32
    assert _diff(ours, theirs) <= tol, (_diff(ours, theirs), float(theirs.abs().max()))


def test_parity_check_can_fail(comps, monkeypatch):
    """Negative control: without the scheduler's (sigma, timestep) pairs KScheduler feeds DPMSolverMultistep's
    sigmas as continuous timesteps (its own are int64): measured 3.8e-3, far outside MULTISTEP_TOL."""
    paired = k_scheduler.KScheduler._timestep_map
    scheduler = DPMSolverMultistepScheduler(**FLOW_DPM, use_dynamic_shifting=True)
    theirs = _run(_build(FluxPipeline, comps, scheduler))
    monkeypatch.setattr(k_scheduler.KScheduler, "_timestep_map", lambda self, known: paired(self, None))
    broken = _run(_build(KFluxPipeline, comps, scheduler))
    assert _diff(broken, theirs) > 100 * MULTISTEP_TOL


def test_dpm_flow_without_dynamic_shifting_fails_as_in_the_parent(comps):
    """FluxPipeline passes ``mu`` to every scheduler; DPMSolverMultistep asserts use_dynamic_shifting then."""
    scheduler = DPMSolverMultistepScheduler(**FLOW_DPM)
    for cls in (FluxPipeline, KFluxPipeline):
        with pytest.raises(AssertionError):
            _run(_build(cls, comps, scheduler), steps=2)


def test_inverted_sigmas_are_refused_or_followed(comps):
    scheduler = _euler_scheduler(invert_sigmas=True)
    theirs = _run(_build(FluxPipeline, comps, scheduler))
    try:
        ours = _run(_build(KFluxPipeline, comps, scheduler))
    except ValueError:
        return  # refusing a schedule the samplers cannot run is fine
    assert torch.isfinite(ours).all() and _diff(ours, theirs) <= EULER_TOL


@pytest.mark.parametrize("kwargs", [
    {"prompt_2": "a watercolour"},
    {"max_sequence_length": 32},
    {"num_images_per_prompt": 2, "guidance_scale": 5.0},
], ids=["prompt_2", "max_sequence_length", "num_images_per_prompt"])
def test_parent_arguments_match_native(comps, kwargs):
    ours, theirs = (_run(_build(cls, comps), **kwargs) for cls in (KFluxPipeline, FluxPipeline))
    assert _diff(ours, theirs) <= EULER_TOL  # measured 4.8e-7
    assert _diff(ours[:1], _run(_build(KFluxPipeline, comps))) > 1e-3  # the argument did something (>= 0.012)


def test_prompt_embeds_with_true_cfg_match_native(comps):
    pipe = _build(KFluxPipeline, comps)
    embeds, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=MAX_SEQ)
    negative, negative_pooled, _ = pipe.encode_prompt("a dog", prompt_2=None, max_sequence_length=MAX_SEQ)
    kwargs = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "negative_prompt_embeds": negative,
              "negative_pooled_prompt_embeds": negative_pooled, "true_cfg_scale": 1.5, "height": SIZE, "width": SIZE,
              "num_inference_steps": STEPS, "output_type": "latent"}
    ours, theirs = (_build(cls, comps)(generator=torch.Generator().manual_seed(0), **kwargs).images
                    for cls in (KFluxPipeline, FluxPipeline))
    assert _diff(ours, theirs) <= EULER_TOL  # measured 4.8e-7
    assert _diff(ours, _run(pipe, negative_prompt="a dog", true_cfg_scale=1.5)) <= EULER_TOL  # same as from text


def test_true_cfg_with_embeddings_of_different_shapes_is_refused_as_in_the_parent(comps):
    pipe = _build(KFluxPipeline, comps)
    embeds, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=MAX_SEQ)
    negative, negative_pooled, _ = pipe.encode_prompt("a dog", prompt_2=None, max_sequence_length=MAX_SEQ // 2)
    kwargs = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "negative_prompt_embeds": negative,
              "negative_pooled_prompt_embeds": negative_pooled, "true_cfg_scale": 1.5, "height": SIZE, "width": SIZE,
              "num_inference_steps": 2, "output_type": "latent"}
    for cls in (KFluxPipeline, FluxPipeline):
        with pytest.raises(ValueError, match="must have the same shape when passed directly"):
            _build(cls, comps)(**kwargs)


def test_custom_sigmas_without_a_step_count_match_native(comps):
    """``sigmas=`` with ``num_inference_steps=None``: the sigmas give the count, as in the parent."""
    sigmas = [1.0, 0.8, 0.55, 0.3, 0.1]
    outs = [_run(_build(cls, comps), steps=None, sigmas=sigmas) for cls in (KFluxPipeline, FluxPipeline)]
    assert _diff(*outs) <= EULER_TOL  # measured 4.8e-7


def test_parity_custom_sigmas_and_batch(comps):
    """``sigmas=`` (shifted by mu as in the parent) and two prompts x two images per prompt."""
    sigmas = [1.0, 0.8, 0.55, 0.3, 0.1]
    outs = [_run(_build(cls, comps), sigmas=sigmas, prompt=[PROMPT, "a dog"], num_images_per_prompt=2)
            for cls in (KFluxPipeline, FluxPipeline)]
    assert outs[0].shape == (4, 256, 4)
    assert _diff(*outs) <= EULER_TOL  # measured 4.8e-7
    assert _diff(outs[0], _run(_build(KFluxPipeline, comps), steps=5, prompt=[PROMPT, "a dog"],
                               num_images_per_prompt=2)) > 1e-2  # the custom sigmas were used


@pytest.fixture(scope="module")
def heun_case(comps):
    """FlowMatchHeun (shift 3, FLUX's static config) driven by hand on the tiny transformer, as its docs show:
    ``for t in timesteps: x = step(v(x, t / 1000), t, x)``; and the same scheduler loaded in KFluxPipeline."""
    steps = 8
    heun = FlowMatchHeunDiscreteScheduler(shift=3.0)
    pipe = _build(KFluxPipeline, comps, heun)
    scheduler = FlowMatchHeunDiscreteScheduler.from_config(heun.config)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=MAX_SEQ)
    image_ids = pipe._prepare_latent_image_ids(1, SIZE // 2, SIZE // 2, "cpu", torch.float32)
    guidance = torch.full([1], 3.5)  # the pipeline's default guidance_scale (dev transformer)

    def velocity(x, t):  # t: one timestep per item (t = 1000 sigma), passed as FluxPipeline passes it
        return pipe.transformer(hidden_states=x, timestep=t / 1000, guidance=guidance, pooled_projections=pooled,
                                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids,
                                return_dict=False)[0]

    z = torch.randn(1, 256, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), _Recorder(pipe.transformer) as loop_calls:
        x = z.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(velocity(x, t.expand(1)), t, x).prev_sample
        main_sigmas = torch.unique_consecutive(scheduler.sigmas)
        ours = sample_heun(FlowDenoiser(velocity), z.clone(), main_sigmas, disable=True)
    with _Recorder(pipe.transformer) as pipe_calls:
        piped = _run(pipe, steps=steps, latents=z)
    return {"steps": steps, "scheduler": scheduler, "loop": x, "sample_heun": ours, "pipeline": piped,
            "main_sigmas": main_sigmas, "loop_calls": loop_calls, "pipe_calls": pipe_calls, "pipe": pipe}


def test_heun_matches_flowmatch_heun_loop(heun_case):
    """sample_heun on FlowMatchHeun's main sigmas is its loop: measured bit for bit (0.0) at 8 steps, |x| <= 3.5."""
    case = heun_case
    n = case["steps"]
    assert len(case["scheduler"].timesteps) == 2 * n - 1  # Heun steps, the last one (into 0) Euler
    assert len(case["main_sigmas"]) == n + 1 and case["main_sigmas"][0] == 1 and case["main_sigmas"][-1] == 0
    assert _diff(case["sample_heun"], case["loop"]) <= EULER_TOL
    assert case["loop_calls"].calls == 2 * (2 * n - 1)  # the loop, then sample_heun: 2n - 1 calls each
    for a, b in zip(case["loop_calls"].timesteps[: 2 * n - 1], case["loop_calls"].timesteps[2 * n - 1 :]):
        assert torch.equal(a, b)


def test_kflux_with_flowmatch_heun_scheduler_uses_its_own_sigmas(heun_case, comps):
    """KFluxPipeline with a FlowMatchHeun scheduler (which FluxPipeline cannot drive: no ``sigmas``/``mu`` in its
    set_timesteps) runs heun on that scheduler's own sigmas: its static shift, no dynamic shift (FlowMatchHeun has
    none), and its endpoint shifted twice as the scheduler does (last sigma 0.00893 = shift(shift(0.001)) at shift 3).
    The transformer sees exactly the loop's timesteps; latents match the loop to 2.3e-6 (measured; the pipeline's
    sampler works in float64 sigmas, the scheduler in float32)."""
    case = heun_case
    n = case["steps"]
    with pytest.raises(ValueError, match="sigmas"):
        _run(_build(FluxPipeline, comps, case["scheduler"]), steps=n)
    assert case["pipe_calls"].calls == 2 * n - 1
    for ours, theirs in zip(case["pipe_calls"].timesteps, case["loop_calls"].timesteps):
        assert torch.equal(ours, theirs)
    assert _diff(case["pipeline"], case["loop"]) <= MULTISTEP_TOL
    last = float(case["main_sigmas"][-2])
    once = 3 * 0.001 / (1 + 2 * 0.001)
    assert last == pytest.approx(3 * once / (1 + 2 * once), rel=1e-5)


def test_batch_of_generators_euler_ancestral(comps):
    """Image i of a batch made with a list of generators equals the image made alone with generator i (a batch of
    one with that generator, or a list of one): Euler a draws the initial and the step noise per item. Measured
    4.8e-7 (the tiny transformer's batched arithmetic; with the elementwise analytic transformer: bit for bit)."""
    pipe = _build(KFluxPipeline, comps)
    prompts = [PROMPT, "a dog"]
    seeds = (11, 12)
    batch = _run(pipe, prompt=prompts, sampler="euler_ancestral",
                 generator=[torch.Generator().manual_seed(s) for s in seeds])
    for i, seed in enumerate(seeds):
        alone = _run(pipe, prompt=prompts[i], sampler="euler_ancestral", generator=torch.Generator().manual_seed(seed))
        listed = _run(pipe, prompt=[prompts[i]], sampler="euler_ancestral",
                      generator=[torch.Generator().manual_seed(seed)])
        assert torch.equal(alone, listed)
        assert _diff(batch[i], alone[0]) <= EULER_TOL
    swapped = _run(pipe, prompt=prompts[0], sampler="euler_ancestral", generator=torch.Generator().manual_seed(12))
    assert _diff(batch[0], swapped[0]) > 1.0  # the generator matters (measured 5.2)

    analytic = analytic_flux_pipeline(pipeline_cls=KFluxPipeline)
    batch = _run(analytic, num_images_per_prompt=2, sampler="euler_ancestral",
                 generator=[torch.Generator().manual_seed(s) for s in seeds])
    for i, seed in enumerate(seeds):
        alone = _run(analytic, sampler="euler_ancestral", generator=torch.Generator().manual_seed(seed))
        assert torch.equal(batch[i : i + 1], alone)


def test_stochastic_flowmatch_euler_default_matches_native():
    scheduler = _euler_scheduler(stochastic_sampling=True)
    pipe = analytic_flux_pipeline(mean=0.5, std=1.5, scheduler=scheduler, pipeline_cls=KFluxPipeline)
    parent = _build(FluxPipeline, pipe.components)
    z = torch.randn(1, 256, 4, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)  # FluxPipeline gives the scheduler's step no generator: its noise is the global RNG's
    theirs = _run(parent, latents=z)
    assert _diff(_run(pipe, latents=z, sampler="lcm"), theirs) == 0.0  # the equivalent sampler, seed for seed
    assert _diff(_run(_build(KFluxPipeline, pipe.components), latents=z), theirs) <= EULER_TOL  # its k-equivalent


# --- 2. analytic transformer in the real pipeline: exact flow and data moments -------------------------------------

DATA_MEAN, DATA_STD = 0.5, 1.5


@pytest.fixture(scope="module")
def analytic():
    """KFluxPipeline whose transformer is the exact flow velocity for N(0.5, 1.5^2) latents (FLUX.1-dev scheduler)."""
    return analytic_flux_pipeline(mean=DATA_MEAN, std=DATA_STD, pipeline_cls=KFluxPipeline)


def _analytic_run(pipe, latents, steps, size, **kwargs):
    if isinstance(kwargs.get("sampler"), str) and get_sampler(kwargs["sampler"]).needs_uncond:
        # CFG++ runs FLUX's true-CFG branch on a negative prompt; the analytic transformer ignores the text, so the
        # unconditional estimate equals the conditional one and the CFG++ sampler must behave as its base
        kwargs.setdefault("negative_prompt", "")
    return pipe(PROMPT, height=size, width=size, num_images_per_prompt=latents.shape[0], latents=latents,
                num_inference_steps=steps, output_type="latent", max_sequence_length=MAX_SEQ, **kwargs).images.double()


def _exact_flow_endpoint(z: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE from x(1) = z to sigma = 0. Its invariant u = (x - alpha m) / sqrt(alpha^2 s^2 +
    sigma^2), alpha = 1 - sigma, is z at sigma = 1, so x(0) = m + s z."""
    return DATA_MEAN + DATA_STD * z.double()


ODE_NOISE = torch.randn(2, 256, 4, generator=torch.Generator().manual_seed(1))  # packed unit noise, 2 images 32x32

# Max |x - exact| over 2048 latents (max |exact - mean| = 5.0) on the parent's own shifted sigmas (mu = 0.5) ending in
# 0. Measured at 160 steps: heun 2.8e-4, dpm_2 1.1e-4, lms 9.8e-5, dpm_fast 1.8e-4, dpmpp_2m 6.6e-4, ipndm 2.9e-4,
# ipndm_v 2.4e-4, deis 4.9e-4, res_multistep 1.1e-3, uni_pc 6.0e-5, uni_pc_bh2 9.8e-5, exp_heun_2_x0 8.0e-4.
# Order 1 at 640 steps: euler 1.19e-2, gradient_estimation 1.19e-2, heunpp2 1.6e-3 (Euler halves its error per
# doubling: 0.095 at 80, 0.048 at 160). dpm_adaptive is refused by the pipelines (its model calls depend on the data;
# test_pipeline_refuses_dpm_adaptive); its accuracy is checked in the functional API (tests/test_samplers_dpmpp.py).
ODE_TOL = 2.5e-3
ODE_TOL_ORDER_1 = 0.02


def _ode_setting(spec):
    """(sampler_kwargs, steps, tolerance) for a deterministic sampler. dpmpp_singlestep takes 320 steps: its last
    group steps into 0 from two grid intervals up (2.5e-3 at 160 steps, just over ODE_TOL; 6.7e-4 at 320)."""
    if spec.order == 1:
        return {}, 640, ODE_TOL_ORDER_1
    return {}, 320 if spec.name == "dpmpp_singlestep" else 160, ODE_TOL


ODE_SPECS = [s for s in list_samplers() if not s.stochastic and s.name not in k_scheduler.UNPLANNABLE]
MOMENT_SPECS = [s for s in list_samplers() if s.stochastic and s.name not in ("lcm", "tcd")]  # see test_measured


def test_every_sampler_is_checked_on_the_analytic_pipeline():
    """Every sampler but lcm (no deterministic variant, no moments to match) and dpm_adaptive (refused, below)."""
    covered = {s.name for s in ODE_SPECS} | {s.name for s in MOMENT_SPECS}
    assert covered.isdisjoint(k_scheduler.UNPLANNABLE) and k_scheduler.UNPLANNABLE == {"dpm_adaptive"}
    assert covered | {"lcm", "tcd"} | k_scheduler.UNPLANNABLE == {s.name for s in list_samplers()}
    assert len(ODE_SPECS) >= 10 and len(MOMENT_SPECS) >= 10


def test_pipeline_refuses_dpm_adaptive(comps):
    """dpm_adaptive chooses its model calls from the data, so KScheduler cannot give the parent's loop its
    timesteps: the call is refused naming it, before the transformer runs."""
    pipe = _build(KFluxPipeline, comps)
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match="dpm_adaptive.*number of model calls"):
            _run(pipe, steps=3, sampler="dpm_adaptive")
    finally:
        hook.remove()
    assert calls == []


@pytest.mark.parametrize("spec", ODE_SPECS, ids=lambda s: s.name)
def test_deterministic_samplers_land_on_the_exact_flow_solution(analytic, spec):
    kwargs, steps, tol = _ode_setting(spec)
    out = _analytic_run(analytic, ODE_NOISE, steps, SIZE, sampler=spec.name, sampler_kwargs=kwargs)
    error = _diff(out, _exact_flow_endpoint(ODE_NOISE))
    assert error <= tol, error


def test_ode_check_can_fail():
    """Negative control: a transformer for data std 1% off integrates the wrong flow: error 0.059, 24x ODE_TOL."""
    pipe = analytic_flux_pipeline(mean=DATA_MEAN, std=DATA_STD * 1.01, pipeline_cls=KFluxPipeline)
    out = _analytic_run(pipe, ODE_NOISE, 160, SIZE, sampler="uni_pc")
    assert _diff(out, _exact_flow_endpoint(ODE_NOISE)) > 10 * ODE_TOL


# Moments: 8 images of 64x64 (1024 tokens, mu = 0.63; 32 768 elements) from packed unit noise at sigma = 1, which is
# the exact marginal there for any data, on the parent's shifted sigmas to 0. Standard errors: mean
# 1.5 / sqrt(32768) = 0.0083, relative std 1 / sqrt(2 * 32768) = 0.39%.
MEAN_TOL = 0.035  # absolute (4 standard errors); measured |mean error| <= 0.014 over three noise/generator seeds
STD_TOL = 0.02  # relative (5 standard errors); measured |std error| <= 1.1% over three noise/generator seeds
# Measured relative std errors (seed 2 noise, generator seed 0) at 80 steps: dpm_2_ancestral -0.04%,
# dpmpp_2s_ancestral -0.28%, dpmpp_sde -0.36%, dpmpp_2m_sde +0.06%, dpmpp_2m_sde_heun +0.24%, dpmpp_3m_sde -0.21%,
# res_multistep_ancestral +0.40%, er_sde -0.11%, seeds_2 -0.14%, seeds_3 +0.77%, sa_solver -0.36%,
# sa_solver_pece -0.33%, exp_heun_2_x0_sde -0.37%, restart -0.75%. At 20 steps res_multistep_ancestral is +6.5% and
# dpmpp_2m_sde_heun +5.8%. euler_ancestral and ddpm (with eta = 1 the same step: DDPM's posterior is Euler a's split)
# are first order: -20% at 10 steps, -11% at 20, -3.4% at 80, -1.7% at 160, -0.18% at 500 (bias ~-0.5% plus noise).
MOMENT_NOISE = torch.randn(8, 1024, 4, generator=torch.Generator().manual_seed(2))


def _moment_steps(spec):
    return 500 if spec.order in (None, 1) else 80


def _moments(pipe, spec_name, steps, seed=0):
    out = _analytic_run(pipe, MOMENT_NOISE, steps, 64, sampler=spec_name,
                        generator=torch.Generator().manual_seed(seed))
    return float(out.mean()) - DATA_MEAN, float(out.std()) / DATA_STD - 1


@pytest.mark.filterwarnings("ignore:Should have")  # torchsde's interval-end rounding (see test_sdxl_pipeline.py)
@pytest.mark.parametrize("spec", MOMENT_SPECS, ids=lambda s: s.name)
def test_stochastic_samplers_reproduce_the_data_moments(analytic, spec):
    mean_error, std_error = _moments(analytic, spec.name, _moment_steps(spec))
    assert abs(mean_error) <= MEAN_TOL and abs(std_error) <= STD_TOL, (mean_error, std_error)


def test_moment_check_can_fail():
    """Negative control: a transformer for data std 3% too large breaks the 2% std tolerance (measured +2.9%)."""
    pipe = analytic_flux_pipeline(mean=DATA_MEAN, std=DATA_STD * 1.03, pipeline_cls=KFluxPipeline)
    _, std_error = _moments(pipe, "dpm_2_ancestral", 80)
    assert abs(std_error) > STD_TOL


def test_lcm_follows_its_own_recursion(analytic):
    """lcm is excluded from the moment test (it under-disperses by design): on flow it is x <- (1 - s') D + s' n,
    i.e. FlowMatchEuler's stochastic_sampling step; measured std error -34% at 20 steps (-29% at 500)."""
    _, std_error = _moments(analytic, "lcm", 20)
    assert -0.4 < std_error < -0.2


# --- 3. bf16 -------------------------------------------------------------------------------------------------------

# FluxPipeline's loop holds bf16 latents; FlowMatchEuler steps in bf16, our sampler keeps a float32 state inside the
# KScheduler and hands the loop its bf16 rounding. Measured at 8 steps: max diff 0.0625 = 2 bf16 ulps at max |latent|
# 4.6 (0.125, 4 ulps, at 28 steps). For scale, either bf16 run is ~0.07 (2 ulps) from the fp32 run, and guidance 3.0
# instead of 3.5 moves it by 0.1: at the latent level bf16 parity is loose, so the sharp checks are the timesteps the
# transformer sees and the sampler's state against a hand-written loop doing what it should (float32 Euler state,
# bf16 input, bf16(t) / 1000 timesteps): every latent the loop holds is that loop's state rounded to bf16, exactly.
BF16_ULPS = 4


def _bf16_ulp(x: torch.Tensor) -> float:
    """Spacing of bf16 numbers (8 significant bits) at max |x|."""
    return 2.0 ** (math.floor(math.log2(float(x.abs().max()))) - 7)


@pytest.fixture(scope="module")
def bf16_pipes():
    ours = _build(KFluxPipeline, tiny_flux_components()).to(torch.bfloat16)  # own components: .to() casts in place
    theirs = _build(FluxPipeline, ours.components, _euler_scheduler())  # the scheduler ours wraps
    return ours, theirs


class _Shifted(FlowDenoiser):
    """A broken timestep rule for KScheduler: t half a bf16 ulp too large, which the loop's bf16 rounding of t does
    not hide."""

    def host_t(self, sigma: float) -> float:
        return super().host_t(sigma) * (1 + 2**-8)


def _bf16_run(pipe):
    """(output, recorder of transformer calls, the latents after each step as the callback sees them)."""
    states = []
    with _Recorder(pipe.transformer) as calls:
        out = _run(pipe, callback_on_step_end=lambda p, i, t, kw: states.append(kw["latents"].clone()) or {})
    return out, calls, states


def _bf16_emulated_states(pipe) -> list[torch.Tensor]:
    """FlowMatchEuler's sigmas (mu = 0.5), float32 state x += (s' - s) v, v from the bf16 transformer on x in bf16 at
    timestep bf16(t) / 1000 as FluxPipeline passes it; the pipeline's own seed-0 noise."""
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=MAX_SEQ)
        z, image_ids = pipe.prepare_latents(1, 1, SIZE, SIZE, embeds.dtype, "cpu", torch.Generator().manual_seed(0))
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=0.5)
        x, states = z.float(), []
        for i, t in enumerate(scheduler.timesteps):
            v = pipe.transformer(hidden_states=x.to(torch.bfloat16), timestep=t.expand(1).to(torch.bfloat16) / 1000,
                                 guidance=torch.full([1], 3.5), pooled_projections=pooled,
                                 encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids,
                                 return_dict=False)[0]
            x = x + (scheduler.sigmas[i + 1] - scheduler.sigmas[i]) * v.float()
            states.append(x)
    return states


@pytest.mark.filterwarnings("ignore:There are modules")
def test_bf16_matches_native_within_ulps_and_same_timesteps(bf16_pipes):
    ours, theirs = bf16_pipes
    (a, seen_ours, _), (b, seen_theirs, _) = _bf16_run(ours), _bf16_run(theirs)
    assert a.dtype == b.dtype == torch.bfloat16 and a.shape == (1, 256, 4)
    assert _diff(a, b) <= BF16_ULPS * _bf16_ulp(b), (_diff(a, b), _bf16_ulp(b))
    # The transformer gets the parent's very timesteps: bf16(t) / 1000 in bf16 (988.41 -> 988 -> 0.98828).
    assert seen_ours.calls == seen_theirs.calls == STEPS
    for t_ours, t_theirs in zip(seen_ours.timesteps, seen_theirs.timesteps):
        assert t_ours.dtype == t_theirs.dtype == torch.bfloat16 and torch.equal(t_ours, t_theirs)
    assert torch.equal(seen_ours.inputs[0], seen_theirs.inputs[0])  # the same bf16 noise goes in first


@pytest.mark.filterwarnings("ignore:There are modules")
def test_bf16_float32_state_follows_the_emulated_loop(bf16_pipes):
    ours, _ = bf16_pipes
    out, _, states = _bf16_run(ours)
    expected = _bf16_emulated_states(ours)
    assert len(states) == STEPS and all(s.dtype == torch.bfloat16 for s in states)  # the parent's loop dtype
    for state, emulated in zip(states, expected):
        assert torch.equal(state, emulated.to(torch.bfloat16))  # the float32 state, rounded once
    assert torch.equal(out, expected[-1].to(torch.bfloat16))


@pytest.mark.filterwarnings("ignore:There are modules")
def test_bf16_timestep_check_can_fail(bf16_pipes, monkeypatch):
    """Negative control: KScheduler's timesteps half a bf16 ulp too large feed different timesteps at 6 of 8 calls,
    and the latents leave the emulated loop's (measured 1.5e-2 at the end)."""
    ours, theirs = bf16_pipes
    _, seen_theirs, _ = _bf16_run(theirs)
    monkeypatch.setattr(k_scheduler, "FlowDenoiser", _Shifted)
    _, seen_broken, states = _bf16_run(ours)
    different = sum(not torch.equal(a.to(b.dtype), b) for a, b in zip(seen_broken.timesteps, seen_theirs.timesteps))
    assert different >= 2
    assert not torch.equal(states[-1], _bf16_emulated_states(ours)[-1].to(torch.bfloat16))


# --- 4. guidance: dev (guidance embeds), schnell (none), true CFG ---------------------------------------------------


@pytest.mark.parametrize("guidance_embeds", [True, False], ids=["dev", "schnell"])
def test_guidance_embeds_and_schnell_match_native(comps, guidance_embeds):
    if guidance_embeds:
        components, scheduler = comps, None
    else:  # FLUX.1-schnell: no guidance embedding, static shift 1
        components = tiny_flux_components(guidance_embeds=False)
        scheduler = _euler_scheduler(use_dynamic_shifting=False, shift=1.0)
    ours, theirs = _build(KFluxPipeline, components, scheduler), _build(FluxPipeline, components, scheduler)
    for scale in (3.5, 7.0):
        a, b = _run(ours, guidance_scale=scale), _run(theirs, guidance_scale=scale)
        assert _diff(a, b) <= EULER_TOL  # measured 4.8e-7
    # dev feeds guidance_scale to the network (passed as a tensor); schnell gets guidance=None and ignores the scale
    assert (_diff(_run(ours, guidance_scale=3.5), _run(ours, guidance_scale=7.0)) > 1e-3) == guidance_embeds
    seen = []
    hook = ours.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["guidance"]), with_kwargs=True)
    try:
        _run(ours, steps=2, guidance_scale=5.0)
    finally:
        hook.remove()
    if guidance_embeds:
        assert all(torch.equal(g, torch.tensor([5.0])) for g in seen)
    else:
        assert seen == [None, None]


def test_true_cfg_matches_native_with_two_calls_per_step(comps):
    outs, calls = [], []
    for cls in (KFluxPipeline, FluxPipeline):
        pipe = _build(cls, comps)
        with _Recorder(pipe.transformer) as seen:
            outs.append(_run(pipe, negative_prompt="a blurry dog", true_cfg_scale=2.0))
        calls.append(seen.calls)
    assert calls == [2 * STEPS, 2 * STEPS]
    assert _diff(*outs) <= EULER_TOL  # measured 4.8e-7
    assert _diff(outs[0], _run(_build(KFluxPipeline, comps))) > 1e-2  # CFG changed the result
    # a negative prompt without true_cfg_scale > 1, which FluxPipeline ignores without a word, is refused
    with _Recorder(comps["transformer"]) as seen, pytest.raises(ValueError, match="negative_prompt is used only with "
                                                                                 "true_cfg_scale > 1"):
        _run(_build(KFluxPipeline, comps), negative_prompt="a blurry dog")
    assert seen.calls == 0


# --- 5. the parent's interface and features ------------------------------------------------------------------------


def test_call_accepts_every_parent_parameter_with_the_same_default():
    parent = inspect.signature(FluxPipeline.__call__).parameters
    ours = inspect.signature(KFluxPipeline.__call__).parameters
    for name, param in parent.items():
        assert name in ours, name
        assert ours[name].kind == param.kind, name
        assert ours[name].default == param.default, name
    assert [n for n in ours if n in parent] == list(parent)  # same order: positional calls mean the same
    assert [n for n in ours if n not in parent] == ["sampler", "sigma_schedule", "sampler_kwargs", "check_finite",
                                                     "noise", "seed", "noise_options"]
    assert all(ours[n].default is None for n in ("sampler", "sigma_schedule", "sampler_kwargs"))
    assert k_diffusing.KFluxPipeline is KFluxPipeline and issubclass(KFluxPipeline, FluxPipeline)


def test_callback_once_per_step_with_latents_matching_native(comps):
    recorded = []
    for cls in (KFluxPipeline, FluxPipeline):
        seen = []

        def callback(p, i, t, kwargs, seen=seen):
            seen.append((i, float(t), kwargs["latents"].clone(), kwargs["prompt_embeds"].shape))
            return {}

        out = _run(_build(cls, comps), steps=5, callback_on_step_end=callback,
                   callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
        recorded.append((seen, out))
    (ours, out_ours), (theirs, _) = recorded
    assert [(i, t) for i, t, _, _ in ours] == [(i, t) for i, t, _, _ in theirs]
    assert [i for i, *_ in ours] == [0, 1, 2, 3, 4] and ours[0][1] == 1000.0  # t: the scheduler's timestep
    for (_, _, a, shape), (_, _, b, _) in zip(ours, theirs):
        assert shape == (1, MAX_SEQ, 32) and _diff(a, b) <= EULER_TOL
    assert torch.equal(ours[-1][2], out_ours)  # the last call sees the final state


def test_callback_once_per_model_call_for_two_call_samplers(comps):
    pipe = _build(KFluxPipeline, comps)
    steps_seen = []
    with _Recorder(pipe.transformer) as calls:
        _run(pipe, steps=4, sampler="heun", callback_on_step_end=lambda p, i, t, kw: steps_seen.append(i) or {})
    assert steps_seen == list(range(7)) and calls.calls == 7  # 2 per step, the step into 0 one; the parent's loop


def test_callback_replacing_latents_and_prompt_embeds_matches_native(comps):
    def callback(p, i, t, kwargs):
        if i == 2:
            return {"latents": kwargs["latents"] * 0.5, "prompt_embeds": kwargs["prompt_embeds"] * 0.5}
        return {}

    ours, theirs = (_run(_build(cls, comps), steps=6, callback_on_step_end=callback,
                         callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
                    for cls in (KFluxPipeline, FluxPipeline))
    assert _diff(ours, theirs) <= EULER_TOL  # measured 2.4e-7
    assert _diff(_run(_build(KFluxPipeline, comps), steps=6), ours) > 1e-2


def test_interrupt_stops_after_the_step_and_matches_native(comps):
    outs, counts = [], []
    for cls in (KFluxPipeline, FluxPipeline):
        pipe = _build(cls, comps)
        steps_seen = []

        def callback(p, i, t, kwargs, steps_seen=steps_seen):
            steps_seen.append(i)
            if i == 2:
                p._interrupt = True
            return {}

        with _Recorder(pipe.transformer) as calls:
            outs.append(_run(pipe, callback_on_step_end=callback))
        counts.append((calls.calls, steps_seen))
    assert counts[0] == (3, [0, 1, 2]) == counts[1]
    assert _diff(*outs) <= EULER_TOL
    assert _diff(outs[0], _run(_build(KFluxPipeline, comps))) > 0.1  # stopped at sigma ~0.7: still noisy


def test_output_types_and_return_dict(comps):
    ours, theirs = _build(KFluxPipeline, comps), _build(FluxPipeline, comps)
    pil_o, pil_t = _run(ours, steps=2, output_type="pil"), _run(theirs, steps=2, output_type="pil")
    assert len(pil_o) == 1 and pil_o[0].size == pil_t[0].size == (SIZE, SIZE) and type(pil_o[0]) is type(pil_t[0])
    assert np.abs(np.asarray(pil_o[0], dtype=int) - np.asarray(pil_t[0], dtype=int)).max() <= 1
    np_o, np_t = _run(ours, steps=2, output_type="np"), _run(theirs, steps=2, output_type="np")
    assert isinstance(np_o, np.ndarray) and np_o.shape == np_t.shape == (1, SIZE, SIZE, 3) and np_o.dtype == np_t.dtype
    assert np.abs(np_o - np_t).max() <= 1e-6
    pt_o, pt_t = _run(ours, steps=2, output_type="pt"), _run(theirs, steps=2, output_type="pt")
    assert isinstance(pt_o, torch.Tensor) and pt_o.shape == pt_t.shape == (1, 3, SIZE, SIZE)
    assert _diff(pt_o, pt_t) <= 1e-6
    latent = _run(ours, steps=2)
    assert isinstance(latent, torch.Tensor) and latent.shape == (1, 256, 4)
    result = ours(PROMPT, height=SIZE, width=SIZE, num_inference_steps=2, max_sequence_length=MAX_SEQ,
                  generator=torch.Generator().manual_seed(0), output_type="latent", return_dict=False)
    assert isinstance(result, tuple) and len(result) == 1 and torch.equal(result[0], latent)


def test_sampler_names(comps):
    pipe = _build(KFluxPipeline, comps)
    default = _run(pipe)
    assert torch.equal(_run(pipe, sampler="euler"), default) and torch.equal(_run(pipe, sampler="Euler"), default)
    ancestral = _run(pipe, sampler="euler_ancestral")
    assert torch.equal(_run(pipe, sampler="Euler a"), ancestral) and _diff(ancestral, default) > 1e-2
    assert torch.equal(_run(pipe, sampler="DPM++ 2M Karras"), _run(pipe, sampler="dpmpp_2m", sigma_schedule="karras"))
    assert _diff(_run(pipe, sampler="DPM++ 2M Karras"), _run(pipe, sampler="dpmpp_2m")) > 1e-3
    assert torch.equal(_run(pipe, steps=4, sampler=sample_heun), _run(pipe, steps=4, sampler="heun"))


def test_bad_sampler_options_raise(comps):
    pipe = _build(KFluxPipeline, comps)
    with pytest.raises(ValueError, match="etaa") as err:
        _run(pipe, sampler="euler_ancestral", sampler_kwargs={"etaa": 0.5})
    assert "'eta'" in str(err.value)  # the suggestion
    with pytest.raises(ValueError, match="generator"):
        _run(pipe, sampler="euler_ancestral", sampler_kwargs={"generator": torch.Generator()})
    with pytest.raises(ValueError, match="eta"):  # the default path's sampler (euler) has no eta
        _run(pipe, sampler_kwargs={"eta": 0.5})
    with pytest.raises(ValueError, match="Did you mean 'dpmpp_2m'"):
        _run(pipe, sampler="dpmpp_2n")
    with pytest.raises(ValueError):
        _run(pipe, sampler="euler", sigma_schedule="karas")


@pytest.mark.parametrize("make_scheduler", [
    lambda: _euler_scheduler(),
    lambda: DPMSolverMultistepScheduler(**FLOW_DPM, use_dynamic_shifting=True),  # the parent sets config.flow_shift
    lambda: FlowMatchHeunDiscreteScheduler(shift=3.0),
], ids=["flowmatch_euler", "dpm_flow", "flowmatch_heun"])
def test_scheduler_is_not_mutated(comps, make_scheduler):
    scheduler = make_scheduler()
    accepts_mu = "mu" in inspect.signature(scheduler.set_timesteps).parameters
    scheduler.set_timesteps(3, **({"mu": 0.5} if accepts_mu else {}))  # give it some state
    config, state = dict(scheduler.config), snapshot(scheduler)
    pipe = _build(KFluxPipeline, comps, scheduler, as_kscheduler=False)
    _run(pipe, steps=5, size=64, check_finite=True)  # 1024 tokens: mu = 0.63, exp(mu) = 1.88 != flow_shift 3
    _run(pipe, steps=4, sampler="DPM++ 2M Karras")
    assert pipe.scheduler is scheduler and dict(scheduler.config) == config
    assert same_snapshot(snapshot(scheduler), state)


def test_save_pretrained_loads_in_plain_diffusers(comps, tmp_path):
    _build(KFluxPipeline, comps, as_kscheduler=False).save_pretrained(tmp_path, safe_serialization=True)
    assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    ours = KFluxPipeline.from_pretrained(tmp_path)
    plain = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(ours) is KFluxPipeline and type(plain) is FluxPipeline
    for pipe in (ours, plain):
        pipe.set_progress_bar_config(disable=True)
    # reloaded vs reloaded; height and width given (a loaded pipeline defaults to 128x128)
    assert _diff(_run(ours, steps=3), _run(plain, steps=3)) <= EULER_TOL
    assert np.abs(_run(ours, steps=3, output_type="np") - _run(plain, steps=3, output_type="np")).max() <= 1e-6


def test_from_pipe_both_ways_shares_modules(comps):
    parent = _build(FluxPipeline, comps)
    ours = KFluxPipeline.from_pipe(parent)
    back = FluxPipeline.from_pipe(ours)
    assert type(ours) is KFluxPipeline and type(back) is FluxPipeline
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert getattr(ours, name) is getattr(parent, name) is getattr(back, name), name
    for pipe in (ours, back):
        pipe.set_progress_bar_config(disable=True)
    assert _diff(_run(ours, steps=3), _run(back, steps=3)) <= EULER_TOL


# --- 6. sigma schedules --------------------------------------------------------------------------------------------


def _sigmas_of(pipe, **kwargs) -> torch.Tensor:
    """The sigmas the pipeline hands its sampler, recorded by a sampler function that runs Euler on them."""
    seen = []

    def recording_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        seen.append(sigmas.detach().clone())
        return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)

    _run(pipe, sampler=recording_euler, **kwargs)
    return seen[0].double()


@pytest.mark.parametrize("steps", [8, 20, 50])
def test_simple_schedule_equals_the_default_sigmas(steps):
    """ComfyUI's "simple" over the shifted flow table equals the parent's shifted linspace when n divides 1000, up to
    float32 rounding (the parent's sigmas are float32, the table float64). Measured at 8 / 20 / 50 steps: sampler
    sigmas <= 7.2e-8 apart, sigmas told to the transformer (analytic transformer's record) 6e-8 / 6e-8 / 1.2e-7
    (1-2 float32 ulps), latents 6e-7 / 9.5e-7 / 1.2e-6 (max |latent| ~4)."""
    pipe = analytic_flux_pipeline(pipeline_cls=KFluxPipeline)
    default = _run(pipe, steps=steps)
    told_default = torch.cat(pipe.transformer.sigmas_seen)
    pipe.transformer.sigmas_seen.clear()
    simple = _run(pipe, steps=steps, sigma_schedule="simple")
    told_simple = torch.cat(pipe.transformer.sigmas_seen)
    assert len(told_default) == len(told_simple) == steps and told_default[0] == 1.0
    assert _diff(told_simple, told_default) <= 2.5e-7
    assert _diff(simple, default) <= MULTISTEP_TOL
    # the sampler's own sigma lists agree too (float64 here)
    assert _diff(_sigmas_of(pipe, steps=steps, sigma_schedule="simple"), _sigmas_of(pipe, steps=steps)) <= 2.5e-7
    other = _sigmas_of(pipe, steps=steps, sigma_schedule="sgm_uniform")  # negative control: a different spacing
    assert _diff(other, _sigmas_of(pipe, steps=steps)) > 1e-3


@pytest.mark.parametrize("schedule", ["karras", "beta", "kl_optimal", "exponential", "sgm_uniform"])
@pytest.mark.parametrize("size", [SIZE, 64])
def test_catalogue_schedule_runs_from_one_to_zero(schedule, size):
    """Catalogue schedules over the model's shifted flow table (shift exp(mu), mu = 0.5 at 32x32 and 0.63 at 64x64)
    start at sigma_max = 1 (pure noise, the parent's start) and end at 0; the range schedules (karras, kl_optimal,
    exponential) through the table's smallest sigma, the timestep-spaced ones (beta, sgm_uniform: ComfyUI's
    definitions) from above it."""
    pipe = analytic_flux_pipeline(pipeline_cls=KFluxPipeline)
    steps = 10
    sigmas = _sigmas_of(pipe, steps=steps, sigma_schedule=schedule, size=size)
    assert sigmas[0] == pytest.approx(1.0, abs=1e-9) and sigmas[-1] == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert len(sigmas) == steps + 1 or schedule == "beta"  # beta may drop repeated entries
    tokens = (size // 2) ** 2
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
    table = flow_sigma_table(math.exp(mu), 1000)
    if schedule in ("beta", "sgm_uniform"):
        assert float(sigmas[-2]) > float(table[0])
    else:
        assert float(sigmas[-2]) == pytest.approx(float(table[0]), rel=1e-6)
    told = pipe.transformer.sigmas_seen[-1]
    assert float(told.reshape(-1)[0]) == pytest.approx(float(sigmas[-2]), rel=1e-6)  # the last call: smallest sigma
