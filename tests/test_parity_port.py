"""The parity harness checks a port written from scratch (issue 23, item 10): a diffusers-protocol scheduler that is
no subclass of a diffusers scheduler (k_diffusing/testing/ports.py), compared with the k-sampler its Pair names, at
the sampler level (analytic denoiser) and through the embedded SDXL pipeline; a planted bug is found at its step;
what the harness cannot compare is refused."""

from __future__ import annotations

import pytest
import torch

from k_diffusing.gallery import DEFAULT_PROMPTS, EMBEDDED, load_pipeline, pipeline_options
from k_diffusing.parity import PAIRS, Pair, compare, trace_sampler_level
from k_diffusing.parity.pairs import SDXL_ROUNDOFF
from k_diffusing.parity.trace import trace_diffusers, trace_k
from k_diffusing.testing.ports import HeunScheduler, PlantedBugResMultistepScheduler, ResMultistepScheduler

STEPS = 6
RES_PORT = Pair("res_port", "sdxl", "res_multistep", ResMultistepScheduler, tolerance=SDXL_ROUNDOFF)
HEUN_PORT = Pair("heun_port", "sdxl", "heun", HeunScheduler, tolerance=SDXL_ROUNDOFF)


def _bug_pair(bug_step: int) -> Pair:
    return Pair("res_port_bug", "sdxl", "res_multistep", PlantedBugResMultistepScheduler, {"bug_step": bug_step},
                SDXL_ROUNDOFF)


@pytest.fixture(scope="module")
def sdxl():
    pipe = load_pipeline("sdxl", str(EMBEDDED["sdxl"]), "cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_comparison(pipe, pair):
    options = {**pipeline_options("sdxl", pipe, STEPS), "prompt": [DEFAULT_PROMPTS[0]]}
    return compare(pair, trace_k(pipe, pair, options, 0), trace_diffusers(pipe, pair, options, 0))


@pytest.mark.parametrize("pair", [RES_PORT, HEUN_PORT], ids=lambda p: p.name)
def test_port_at_parity_at_the_sampler_level(pair):
    c = compare(pair, *trace_sampler_level(pair, STEPS, 0))
    assert c.ours.label == pair.sampler and c.theirs.label.startswith(pair.scheduler_name)
    assert c.ours.call_timesteps == pytest.approx(c.theirs.call_timesteps, rel=1e-6)  # the same call sigmas
    assert len(c.step_diff) == STEPS and c.passed, c.step_diff


@pytest.mark.parametrize("pair", [RES_PORT, HEUN_PORT], ids=lambda p: p.name)
def test_port_at_parity_through_the_pipeline(sdxl, pair):
    """The K pipeline running the Pair's k-sampler on the port's sigmas against StableDiffusionXLPipeline driving
    the port: the same schedule, the same network timesteps, every step within tolerance."""
    c = _pipeline_comparison(sdxl, pair)
    assert c.ours.sigmas == c.theirs.sigmas and c.ours.call_timesteps == c.theirs.call_timesteps
    assert len(c.step_diff) == STEPS and c.passed, c.step_diff


@pytest.mark.parametrize("bug_step", [1, 2, 4])  # the last step (into sigma = 0) returns D: no coefficient there
def test_planted_bug_found_at_its_step_at_the_sampler_level(bug_step):
    c = compare(_bug_pair(bug_step), *trace_sampler_level(_bug_pair(bug_step), STEPS, 0))
    assert not c.passed and c.first_divergent == bug_step, c.step_diff


def test_planted_bug_found_at_its_step_through_the_pipeline(sdxl):
    c = _pipeline_comparison(sdxl, _bug_pair(3))
    assert not c.passed and c.first_divergent == 3, c.step_diff
    assert c.ours.sigmas == c.theirs.sigmas  # the schedule agrees: the update is wrong


class _Undeclared(HeunScheduler):
    """The Heun port without ``state_in_first_order``: which call ends a step is not said."""

    def __getattribute__(self, name):
        if name == "state_in_first_order":
            raise AttributeError(name)
        return super().__getattribute__(name)


class _MainSigmasOnly(HeunScheduler):
    """The Heun port keeping only its main sigmas: its second calls' sigmas are not listed."""

    def set_timesteps(self, num_inference_steps, device=None):
        super().set_timesteps(num_inference_steps, device)
        self.sigmas = torch.unique_consecutive(self.sigmas)


def test_multi_stage_port_without_its_declarations_is_refused(sdxl):
    pair = Pair("undeclared", "sdxl", "heun", _Undeclared)
    for run in (lambda: trace_sampler_level(pair, STEPS, 0), lambda: _pipeline_comparison(sdxl, pair)):
        with pytest.raises(ValueError, match=r"_Undeclared makes 11 network calls for 6 steps.*state_in_first_order"):
            run()
    with pytest.raises(ValueError, match="_MainSigmasOnly is multi-stage .* 11 network calls but 7 sigmas"):
        trace_sampler_level(Pair("main_only", "sdxl", "heun", _MainSigmasOnly), STEPS, 0)


def test_pair_mistakes_are_refused():
    with pytest.raises(ValueError, match="'res_multistepp'"):
        trace_sampler_level(Pair("typo", "sdxl", "res_multistepp", ResMultistepScheduler), STEPS, 0)
    with pytest.raises(ValueError, match="'NoSuchScheduler' is neither a diffusers scheduler class name nor"):
        trace_sampler_level(Pair("unknown", "sdxl", "euler", "NoSuchScheduler"), STEPS, 0)
    with pytest.raises(ValueError, match="runs k-sampler 'euler', not 'res_multistep'"):
        trace_sampler_level(Pair("wrong", "sdxl", "res_multistep", "EulerDiscreteScheduler"), STEPS, 0)
    with pytest.raises(ValueError, match="has a k-equivalent, whose options come from its config"):
        trace_sampler_level(Pair("opts", "sdxl", "euler", "EulerDiscreteScheduler", sampler_kwargs={"s_churn": 1.0}),
                            STEPS, 0)


def test_a_diffusers_subclass_still_runs_its_base_classs_equivalent():
    """The README's first walkthrough: a subclass of a diffusers scheduler maps to its base's k-sampler."""
    import diffusers

    class Ported(diffusers.EulerDiscreteScheduler):
        pass

    pair = PAIRS["sdxl_euler_leading"]
    scheduler = Ported.from_config(diffusers.EulerDiscreteScheduler().config)
    assert compare(pair, *trace_sampler_level(pair, STEPS, 0, scheduler=scheduler)).passed
