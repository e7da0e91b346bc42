"""The argument rules of the K pipelines, :class:`~k_diffusing.scheduler.KScheduler` and ``generate``: one table per
kind of argument (the parents' call arguments, the sampler options), checked before any network runs, each refusing
with one message style: ``<argument> must be <what is accepted>, got <value>``.

A rule only says what a value may be on its own (type, range, finiteness). What depends on the call (list lengths
against the batch, sizes against the VAE, schedules against the model) is checked by the pipelines with the same
message style (:mod:`k_diffusing.pipelines.common`).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..names import did_you_mean


@dataclass(frozen=True)
class Rule:
    """What one argument may be: ``accepts(value)`` with ``accepted`` saying it in words; a value of the wrong kind
    (``kind(value)`` false) is a TypeError, a value of the right kind out of range a ValueError."""

    accepted: str
    kind: Callable[[Any], bool]
    accepts: Callable[[Any], bool] = lambda value: True
    optional: bool = False

    def check(self, name: str, value) -> None:
        if value is None and self.optional:
            return
        if not self.kind(value):
            raise TypeError(f"{name} must be {self.accepted}, got {_shown(value)}")
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.accepted}, got {_shown(value)}")


def _shown(value) -> str:
    """The value as the message shows it: its repr, with the type where the repr does not say it."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    if value is None or isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return text
    return f"{text} ({type(value).__name__})"


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False, infinite_high: bool = False,
         optional: bool = False) -> Rule:
    """A real number (not a bool or a string), finite (``infinite_high``: +inf allowed), in ``[low, high]``
    (``low_open``: ``(low, high]``)."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    words = ("a finite number" if not infinite_high else "a number (inf allowed)") + (
        f" {' and '.join(bounds)}" if bounds else "")
    if optional:
        words += " or None"

    def accepts(value) -> bool:
        value = float(value)
        if math.isnan(value) or value == -math.inf or (value == math.inf and not infinite_high):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        return high is None or value <= high

    return Rule(words, _is_real, accepts, optional)


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Rule:
    """An int (not a bool) in ``[low, high]``."""
    bounds = [f">= {low}"] * (low is not None) + [f"<= {high}"] * (high is not None)
    words = "an int" + (f" {' and '.join(bounds)}" if bounds else "") + (" or None" if optional else "")

    def accepts(value) -> bool:
        value = operator.index(value)
        return (low is None or value >= low) and (high is None or value <= high)

    return Rule(words, _is_int, accepts, optional)


def flag(optional: bool = False) -> Rule:
    return Rule("True or False" + (" or None" if optional else ""), lambda value: isinstance(value, bool),
                optional=optional)


def function(what: str) -> Rule:
    """A callable or None (the sampler's own default)."""
    return Rule(f"a callable ({what}) or None", callable, optional=True)


def mapping(what: str) -> Rule:
    """A dict with string keys, or None."""
    return Rule(f"a dict of {what} or None", lambda value: isinstance(value, dict),
                lambda value: all(isinstance(k, str) for k in value), optional=True)


def one_of(*values) -> Rule:
    return Rule(f"one of {', '.join(map(repr, values))}", lambda value: isinstance(value, type(values[0])),
                lambda value: value in values)


def texts(what: str) -> Rule:
    """A prompt argument: a string or a non-empty list of strings, or None."""
    return Rule(f"a string or a non-empty list of strings ({what}) or None",
                lambda value: isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str)
                                                                                          for v in value)),
                lambda value: isinstance(value, str) or len(value) > 0, optional=True)


def _generators(value) -> bool:
    return isinstance(value, torch.Generator) or (
        isinstance(value, list) and len(value) > 0 and all(isinstance(g, torch.Generator) for g in value))


def _restart_intervals(value) -> bool:
    from ..samplers.restart import _check

    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return False
    try:
        for interval in value:
            _check(interval)
    except (TypeError, ValueError):
        return False
    return True


# Sampler options (``sampler_kwargs``), by name, whichever sampler takes them. The structural ones a sampler checks
# itself when it runs (order, solver_type, deis_mode, max_stage, ...) are refused by the pipelines' dry run of the
# schedule, also before any network call. eta and s_noise: [0, 100], ComfyUI's bounds for them on its sampler nodes.
SAMPLER_OPTIONS: dict[str, Rule] = {
    "eta": real(0, 100),
    "s_noise": real(0, 100),
    "s_churn": real(0),
    "s_tmin": real(0),
    "s_tmax": real(0, infinite_high=True),
    "r": real(0, 1, low_open=True),
    "r_1": real(0, 1, low_open=True),
    "r_2": real(0, 1, low_open=True),
    "ge_gamma": real(),
    "rtol": real(0, low_open=True),
    "atol": real(0, low_open=True),
    "h_init": real(0, low_open=True),
    "accept_safety": real(0, 1, low_open=True),
    "pcoeff": real(),
    "icoeff": real(),
    "dcoeff": real(),
    "n": integer(1, optional=True),
    "order": integer(1),
    "max_order": integer(1),
    "predictor_order": integer(1),
    "corrector_order": integer(0),
    "max_stage": integer(1, 3),
    "brownian": flag(),
    "use_corrector": flag(),
    "use_pece": flag(),
    "lower_order_final": flag(),
    "final_call": flag(),
    "gamma": real(0, 1),
    "sigma_min": real(0),
    "lower_order_to_end": flag(),
    "noise_sampler": function("noise_sampler(sigma, sigma_next) -> unit Gaussian noise like x"),
    "tau_func": function("tau_func(sigma_next) -> the step's stochasticity in [0, 1]"),
    "noise_scaler": function("noise_scaler(sigma) -> ER-SDE's phi"),
    "restart_list": Rule("a list of restart intervals (t_min, t_max, K, n_steps) with 0 < t_min < t_max (VE sigma), "
                         "integer K >= 0 and n_steps >= 1", _restart_intervals),
}


def check_sampler_options(options: dict) -> None:
    """Refuse a sampler option whose value its rule does not accept (``sampler_kwargs['eta'] must be ...``); names
    without a rule (a custom sampler function's own options) pass."""
    for name, value in options.items():
        rule = SAMPLER_OPTIONS.get(name)
        if rule is not None:
            rule.check(f"sampler_kwargs[{name!r}]", value)


# The parents' call arguments, by name (each applies where the parent's signature has it). Sizes, list lengths and
# latents depend on the call or the model and are checked by the pipelines.
CALL_ARGUMENTS: dict[str, Rule] = {
    "prompt": texts("one prompt per image batch entry"),
    "prompt_2": texts("the second text encoder's prompts"),
    "negative_prompt": texts("one per prompt, or one for all"),
    "negative_prompt_2": texts("one per prompt, or one for all"),
    "num_images_per_prompt": integer(1),
    "guidance_scale": real(0),
    "true_cfg_scale": real(0),
    "guidance_rescale": real(0, 1),
    "denoising_end": real(0, 1, low_open=True, optional=True),
    "denoising_start": real(0, 1, low_open=True, optional=True),
    "generator": Rule("a torch.Generator or a non-empty list of them (one per image) or None; for a seed, pass "
                      "torch.Generator().manual_seed(seed)", _generators, optional=True),
    "callback_on_step_end": function("callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict"),
    "output_type": one_of("pil", "np", "pt", "latent"),
    "return_dict": flag(),
    "max_sequence_length": integer(1, 512),
    "clip_skip": integer(0, optional=True),
    "cross_attention_kwargs": mapping("attention processor arguments"),
    "joint_attention_kwargs": mapping("attention processor arguments"),
    "sampler_kwargs": mapping("sampler options"),
    "quantize_timesteps": flag(optional=True),
    "check_finite": flag(),
}


def check_call_arguments(call: dict) -> None:
    """Check each argument of ``call`` that has a rule; ``sampler_kwargs``' entries by :data:`SAMPLER_OPTIONS`."""
    for name, value in call.items():
        rule = CALL_ARGUMENTS.get(name)
        if rule is not None:
            rule.check(name, value)
    check_sampler_options(call.get("sampler_kwargs") or {})


def check_known(names, accepted, what: str) -> None:
    """Refuse keyword arguments that nothing takes (the parents' ``**kwargs`` would drop them silently)."""
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        raise TypeError(f"{what} got unexpected keyword argument(s) {unknown}.{did_you_mean(unknown[0], accepted)} "
                        f"It takes: {', '.join(sorted(accepted))}")
