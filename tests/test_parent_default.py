"""A K pipeline called without K options is exactly its parent (issue 23, items 8 and 9).

Without ``sampler=`` and the other K options the call is the parent's ``__call__`` with the user's scheduler object
untouched: a patched ``step`` or a subclass runs every step, schedulers with no k-equivalent (PNDM, TCD, DDIM with
``clip_sample``) run, and the output equals the parent's bit for bit (``torch.equal``). Any K option starts the K
machinery (a KScheduler for the call; the user's scheduler is not mutated). Sizes the parent accepts by design
(FluxPipeline rounds ``width=57`` down to 56) are accepted and give the parent's result.

Tiny offline pipelines (fp32 CPU), 3 steps, 32x32 images. The controls that make these checks able to fail: a
subclass that changes ``step`` (its output must differ from the base class's, so equality shows it ran), and the
recorded timesteps of the patched ``step`` (empty when the K machinery replaced the scheduler).
"""

import functools

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FluxPipeline,
    PNDMScheduler,
    StableDiffusionXLPipeline,
    TCDScheduler,
)

from k_diffusing import KFluxPipeline, KSDXLPipeline  # noqa: E402
from k_diffusing.scheduler import KScheduler  # noqa: E402
from k_diffusing.testing.state import same_snapshot, snapshot  # noqa: E402
from k_diffusing.testing.tiny import sdxl_scheduler_config, tiny_sdxl_components  # noqa: E402
from k_diffusing.testing.tiny_flux import flux_scheduler_config, tiny_flux_components  # noqa: E402

PROMPT = "a photo of a cat"
STEPS = 3
SIZE = 32
MAX_SEQ = 16  # KFluxPipeline's default T5 length is the tokenizer's (t5_length), FluxPipeline's 512: pass it

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_components()


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_components()


def _pipe(cls, comps, scheduler):
    extra = {"add_watermarker": False} if issubclass(cls, StableDiffusionXLPipeline) else {}
    pipe = cls(**{**comps, "scheduler": scheduler}, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, seed=0, output_type="latent", **kwargs):
    if "generator" not in kwargs and "seed" not in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    if isinstance(pipe, FluxPipeline):
        kwargs = {"height": SIZE, "width": SIZE, "max_sequence_length": MAX_SEQ, **kwargs}
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(PROMPT, output_type=output_type, **kwargs).images


def _both(parent, k_class, comps, scheduler, **kwargs):
    """(the parent's output, the K pipeline's) with the same scheduler object, the parent first."""
    return _run(_pipe(parent, comps, scheduler), **kwargs), _run(_pipe(k_class, comps, scheduler), **kwargs)


def _record_steps(scheduler) -> list[float]:
    """Patch the scheduler object's ``step`` to record the timestep of every call (as diffusers'
    ``test_stable_diffusion_two_xl_mixture_of_denoiser_fast`` does); ``functools.wraps`` keeps its signature, which
    the parents read (``prepare_extra_step_kwargs``)."""
    seen, step = [], scheduler.step

    @functools.wraps(step)
    def recording(model_output, timestep, sample, *args, **kwargs):
        seen.append(float(timestep))
        return step(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = recording
    return seen


def half_step(base: type) -> type:
    """A user's subclass of the scheduler class ``base`` that changes the step (the model output halved: half of the
    base's way), so its output differs from the base's."""

    def step(self, model_output, timestep, sample, *args, **kwargs):
        return base.step(self, 0.5 * model_output, timestep, sample, *args, **kwargs)

    return type(f"HalfStep{base.__name__}", (base,), {"step": step})


HalfStepEuler = half_step(EulerDiscreteScheduler)
HalfStepFlowEuler = half_step(FlowMatchEulerDiscreteScheduler)


# --- item 8: the user's scheduler object runs as in the parent -------------------------------------------------------


@pytest.mark.parametrize("scheduler_class", [EulerDiscreteScheduler, HalfStepEuler], ids=lambda c: c.__name__)
def test_patched_step_runs_every_step_and_the_output_is_the_parents(sdxl, scheduler_class):
    scheduler = scheduler_class.from_config(sdxl_scheduler_config())
    seen = _record_steps(scheduler)
    parent = _run(_pipe(StableDiffusionXLPipeline, sdxl, scheduler))
    parent_steps = list(seen)
    pipe = _pipe(KSDXLPipeline, sdxl, scheduler)
    ours = _run(pipe)
    assert seen[len(parent_steps):] == parent_steps == scheduler.timesteps.tolist() and len(parent_steps) == STEPS
    assert torch.equal(ours, parent)
    assert pipe.scheduler is scheduler and pipe.k_sigmas is None


def test_the_subclass_step_changed_the_output(sdxl):
    """Control for the test above: the subclass's step changes the result, so equality shows that it ran."""
    plain = _run(_pipe(KSDXLPipeline, sdxl, EulerDiscreteScheduler.from_config(sdxl_scheduler_config())))
    halved = _run(_pipe(KSDXLPipeline, sdxl, HalfStepEuler.from_config(sdxl_scheduler_config())))
    assert float((plain - halved).abs().max()) > 1e-2


@pytest.mark.filterwarnings("ignore:The config attributes")  # SDXL's config holds keys TCD does not take
@pytest.mark.parametrize("make,kwargs", [
    (lambda: PNDMScheduler.from_config(sdxl_scheduler_config()), {}),  # PLMS (skip_prk_steps), the SD 1.x default
    (lambda: PNDMScheduler.from_config(sdxl_scheduler_config(skip_prk_steps=False)),  # Runge-Kutta warm-up
     {"num_inference_steps": 4}),  # (its own minimum)
    (lambda: TCDScheduler.from_config(sdxl_scheduler_config()), {}),  # stochastic: gamma, the generator
    (lambda: DDIMScheduler.from_config(sdxl_scheduler_config(clip_sample=True, clip_sample_range=0.5)), {}),
    (lambda: DDIMScheduler.from_config(sdxl_scheduler_config()), {"eta": 0.7}),  # the parent's eta reaches DDIM
], ids=["pndm_plms", "pndm_prk", "tcd", "ddim_clip_sample", "ddim_eta"])
def test_schedulers_without_a_k_equivalent_run_as_in_the_parent(sdxl, make, kwargs):
    scheduler = make()
    seen = _record_steps(scheduler)
    parent, ours = _both(StableDiffusionXLPipeline, KSDXLPipeline, sdxl, scheduler, **kwargs)
    assert torch.equal(ours, parent)
    assert len(seen) == 2 * len(scheduler.timesteps) > 0  # both runs stepped the user's scheduler


def test_flux_subclass_with_patched_step_is_the_parent(flux):
    scheduler = HalfStepFlowEuler.from_config(flux_scheduler_config())
    seen = _record_steps(scheduler)
    parent, ours = _both(FluxPipeline, KFluxPipeline, flux, scheduler)
    assert seen[:STEPS] == seen[STEPS:] == scheduler.timesteps.tolist()
    assert torch.equal(ours, parent)
    plain = _run(_pipe(KFluxPipeline, flux, FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config())))
    assert float((plain - ours).abs().max()) > 1e-2  # control: the subclass's step is what made the output


@pytest.mark.parametrize("which", ["sdxl", "flux"])
def test_a_sampler_starts_the_k_machinery_and_leaves_the_scheduler_as_it_was(sdxl, flux, which):
    parent, k_class, comps = {"sdxl": (StableDiffusionXLPipeline, KSDXLPipeline, sdxl),
                              "flux": (FluxPipeline, KFluxPipeline, flux)}[which]
    scheduler = copy_of_default(comps)
    _run(_pipe(parent, comps, scheduler))  # give it some state (timesteps, step_index)
    seen = _record_steps(scheduler)
    state, config = snapshot(scheduler), dict(scheduler.config)
    used = []
    pipe = _pipe(k_class, comps, scheduler)
    out = _run(pipe, sampler="euler", callback_on_step_end=lambda p, i, t, kw: used.append(p.scheduler) or {})
    assert len(used) == STEPS and all(isinstance(s, KScheduler) for s in used) and seen == []
    assert pipe.scheduler is scheduler and dict(scheduler.config) == config
    assert same_snapshot(snapshot(scheduler), state)
    assert torch.isfinite(out).all() and pipe.k_sigmas is not None


def copy_of_default(comps):
    """A fresh scheduler of the components' class and config."""
    return type(comps["scheduler"]).from_config(comps["scheduler"].config)


@pytest.mark.parametrize("options", [
    {"sigma_schedule": "karras"}, {"sampler_kwargs": {}}, {"quantize_timesteps": False}, {"check_finite": True},
    {"noise": "comfyui", "seed": 3}, {"noise": "a1111", "seed": 3, "noise_options": {"rng": "cpu"}},
], ids=lambda options: "+".join(options))
def test_every_k_option_starts_the_k_machinery(sdxl, options):
    """Each K option needs a KScheduler (without ``sampler=``: the loaded scheduler's k-equivalent), so giving it
    alone starts the K machinery."""
    scheduler = copy_of_default(sdxl)
    seen, used = _record_steps(scheduler), []
    generator = {} if "seed" in options else {"generator": torch.Generator().manual_seed(0)}
    _pipe(KSDXLPipeline, sdxl, scheduler)(PROMPT, num_inference_steps=STEPS, output_type="latent", **generator,
                                          callback_on_step_end=lambda p, i, t, kw: used.append(p.scheduler) or {},
                                          **options)
    assert seen == [] and len(used) == STEPS and all(isinstance(s, KScheduler) for s in used)


def test_a_loaded_kscheduler_runs_as_it_is(sdxl):
    loaded = KScheduler.from_config(sdxl_scheduler_config(), sampler="dpmpp_2m", sigma_schedule="karras")
    used = []
    ours = _run(_pipe(KSDXLPipeline, sdxl, loaded), callback_on_step_end=lambda p, i, t, kw: used.append(p.scheduler)
                or {})
    assert used == [loaded] * STEPS
    assert torch.equal(ours, _run(_pipe(StableDiffusionXLPipeline, sdxl, loaded)))


def test_a_scheduler_the_parent_cannot_drive_is_refused_before_the_prompt_is_encoded(flux):
    """FluxPipeline passes sigmas to every scheduler's set_timesteps and FlowMatchHeun takes none: the parent fails
    after encoding the prompt, the K pipeline without a sampler before any network; with a sampler the K machinery
    runs on FlowMatchHeun's own sigmas."""
    heun = FlowMatchHeunDiscreteScheduler(shift=3.0)
    with pytest.raises(ValueError, match="does not support custom sigmas"):
        _run(_pipe(FluxPipeline, flux, heun))
    pipe = _pipe(KFluxPipeline, flux, heun)
    encoded = []
    hook = pipe.text_encoder.register_forward_pre_hook(lambda *_: encoded.append(1))
    try:
        with pytest.raises(ValueError, match="FluxPipeline passes sigmas to its scheduler's set_timesteps, which "
                                             "FlowMatchHeunDiscreteScheduler does not take"):
            _run(pipe)
        assert encoded == []
    finally:
        hook.remove()
    assert torch.isfinite(_run(pipe, sampler="heun")).all()


# --- item 9: sizes the parent accepts by design ----------------------------------------------------------------------


def test_flux_width_57_is_rounded_down_as_in_the_parent(flux, caplog):
    """diffusers' ``test_flux_image_output_shape``: FluxPipeline warns and renders ``width - width % (2
    vae_scale_factor)``; KFluxPipeline does the same, bit for bit without a sampler."""
    scheduler = copy_of_default(flux)
    height, width = 72, 57
    parent = _pipe(FluxPipeline, flux, scheduler)
    multiple = 2 * parent.vae_scale_factor
    expected = (1, 3, height - height % multiple, width - width % multiple)
    assert expected[3] < width  # the case rounds
    theirs = _run(parent, output_type="pt", height=height, width=width)
    pipe = _pipe(KFluxPipeline, flux, scheduler)
    with caplog.at_level("WARNING"):
        ours = _run(pipe, output_type="pt", height=height, width=width)
    assert "Dimensions will be resized accordingly" in caplog.text  # the parent's own warning
    assert theirs.shape == ours.shape == expected and torch.equal(ours, theirs)
    sampled = _run(pipe, output_type="pt", height=height, width=width, sampler="euler")
    assert sampled.shape == expected and torch.isfinite(sampled).all()
