"""Restart sampling, Xu et al. 2023 (arXiv 2306.14878): a backward ODE interrupted by restarts, each of which adds
fresh forward-process noise from ``t_min`` up to ``t_max`` and integrates the ODE back down to ``t_min``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch

from .base import SamplerRun
from .euler import heun_step


class RestartInterval(NamedTuple):
    """One restart interval in VE noise levels (``sigma / alpha``, the EDM sigma of the paper).

    ``k`` restarts; each re-noises from ``t_min`` to ``t_max`` and takes ``n_steps`` Heun steps back, spaced as a
    Karras schedule (``rho = 7``) in VE sigma, as in the authors' code.
    """

    t_min: float
    t_max: float
    k: int
    n_steps: int


# The authors' Stable Diffusion setting (their pipeline, guidance weights 5 and 8): t_min = 0.1, t_max = 2, K = 2,
# N_restart = 10 time points, i.e. 9 steps.
DEFAULT_RESTART_LIST = (RestartInterval(0.1, 2.0, 2, 9),)

_RHO = 7.0


def _karras_ve(t_max: float, t_min: float, n: int) -> list[float]:
    """``n + 1`` VE noise levels from ``t_max`` to ``t_min``, uniform in ``sigma^(1/rho)`` (Karras et al. 2022,
    Eq. 5), with the end points exact."""
    hi, lo = t_max ** (1 / _RHO), t_min ** (1 / _RHO)
    inner = [(hi + j / n * (lo - hi)) ** _RHO for j in range(1, n)]
    return [t_max, *inner, t_min]


def _check(interval) -> RestartInterval:
    t_min, t_max, k, n_steps = interval
    if not (0 < t_min < t_max < math.inf) or int(k) != k or k < 0 or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(
            "each restart interval must be (t_min, t_max, K, n_steps) with 0 < t_min < t_max < inf (VE sigma), "
            f"integer K >= 0 and n_steps >= 1; got {tuple(interval)!r}"
        )
    return RestartInterval(float(t_min), float(t_max), int(k), int(n_steps))


def restart_plan(geometry, sigmas: Sequence[float], restart_list) -> dict[int, list[list[float]]]:
    """Where Restart goes back up, in the model's sigma: ``{j: descents}`` for each main index ``j`` that an
    interval's ``t_min`` snaps to, one descent ``[t_max, ..., t_min = sigmas[j]]`` per restart (``K`` per interval,
    in list order).

    ``t_min`` snaps to the nearest positive main sigma after the first (nearest in log VE sigma), so the main schedule
    is never changed; an interval whose snapped ``t_min`` is not below ``t_max``, or a schedule without such a
    sigma, runs no restarts.
    """
    intervals = [_check(r) for r in restart_list]
    candidates = [j for j in range(1, len(sigmas)) if sigmas[j] > 0]
    plan: dict[int, list[list[float]]] = {}
    for r in intervals:
        if not candidates or r.k == 0:
            continue
        j = min(candidates, key=lambda c: abs(math.log(geometry.to_ve(sigmas[c]) / r.t_min)))
        t_min_ve = geometry.to_ve(sigmas[j])
        if t_min_ve >= r.t_max:
            continue
        descent = [geometry.from_ve(s) for s in _karras_ve(r.t_max, t_min_ve, r.n_steps)[:-1]] + [sigmas[j]]
        plan.setdefault(j, []).extend([descent] * r.k)
    return plan


@torch.no_grad()
def sample_restart(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0,
                   restart_list=DEFAULT_RESTART_LIST, noise_sampler=None, *, generator=None):
    """Restart sampling, Xu et al. 2023 (arXiv 2306.14878), Alg. 1 with Heun's method as the ODE solver.

    Main backward ODE over ``sigmas`` with Heun steps (Euler into sigma = 0, as k-diffusion's ``sample_heun``).
    After the main step that lands on an interval's ``t_min``: ``K`` times, re-noise with the forward process from
    ``t_min`` to ``t_max`` (fresh noise, :meth:`Geometry.renoise`) and take ``n_steps`` Heun steps back to
    ``t_min`` on a Karras (``rho = 7``) schedule. See :func:`restart_plan` for how ``t_min`` snaps to the main
    schedule.

    Any geometry: intervals are given in VE noise levels (``sigma / alpha``, the paper's EDM sigma) and mapped with
    :meth:`Geometry.from_ve`, so one list works for VE and flow models. Order 2 as an ODE solver (K = 0 is
    ``sample_heun``); 2 calls per Heun step, 1 on the step into 0; total ``2 N - 1 + sum 2 K n_steps`` calls for a
    schedule of N steps ending in 0. Stochastic through the restarts only. The callback and the progress bar follow
    the main steps; the restarts run inside the main step that lands on ``t_min``. ``noise_sampler`` must return
    fresh noise at every call (a Brownian tree would repeat the same increment for repeated restarts of one
    interval).

    Args:
        s_noise: scale of the restart noise (the paper's ``S_noise``).
        restart_list: ``(t_min, t_max, K, n_steps)`` tuples in VE sigma. Default: the authors' Stable Diffusion
            setting ``[(0.1, 2.0, 2, 9)]`` (their N_restart = 10 points = 9 steps); ``[]`` disables restarts.
    """
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable, noise_sampler, generator)
    geo, x = run.geometry, run.x
    plan = restart_plan(geo, run.sigmas, restart_list)
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        x = heun_step(run, x, sigma, sigma_next, denoised)  # Alg. 1: main backward ODE
        for descent in plan.get(i + 1, []):  # Alg. 1: K restarts from t_min = sigma_next
            up = geo.renoise(sigma_next, descent[0])  # forward process from t_min to t_max, fresh noise
            x = up.x_scale * x + up.noise_std * s_noise * run.noise(sigma_next, descent[0])
            for s, s_next in pairwise(descent):  # backward ODE from t_max to t_min
                x = heun_step(run, x, s, s_next, run.denoise(x, s))
    return run.finish(x)
