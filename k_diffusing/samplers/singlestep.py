"""DPM-Solver and DPM-Solver++ singlestep on the schedule's own grid (Lu et al. 2022a, arXiv 2206.00927, Sec. 3.3;
Lu et al. 2022b, arXiv 2211.01095, Alg. 1), as diffusers' ``DPMSolverSinglestepScheduler`` runs them.

The schedule's steps are taken in groups of ``order`` (the last group shorter, :func:`singlestep_orders`). A group
starts at ``x_s`` (sigma_s) and its ``k``-th step (``k = 1, 2, 3``) goes from ``x_s`` to the grid point after it with
an order-``k`` singlestep update, using the model outputs at the group's first ``k`` grid points: the intermediate
points of DPM-Solver-2/3 are the schedule's own grid points, so ``r1, r2`` differ per group. The update is an
exponential integrator in the half log-SNR ``lambda`` (``h = lambda_t - lambda_s``, ``theta = (lambda - lambda_s) / h``
the group's nodes):

    data prediction (DPM-Solver++):  x_t = (sigma_t / sigma_s) x_s + alpha_t sum_j w_j(h) D_j
    noise prediction (DPM-Solver):   x_t = (alpha_t / alpha_s) x_s + sigma_t sum_j w_j(-h) eps_j

with the weights of :func:`singlestep_weights` (:func:`k_diffusing.samplers.exponential.exp_weights`: the exact
integral of an interpolating polynomial against the step's exponential kernel). Written with the model's geometry,
so one formula serves VE and flow models.
"""

from __future__ import annotations

import math

import torch

from ..geometry import Geometry
from .base import SamplerRun
from .dpmpp import final_denoise
from .exponential import combine, exp_weights, midpoint_weights

SOLVER_TYPES = ("midpoint", "heun")
ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")


def singlestep_orders(steps: int, order: int, lower_order_final: bool, ends_in_zero: bool) -> list[int]:
    """The order of each of ``steps`` steps: groups ``1, 2, .., order``, the last one cut short by the end of the
    schedule; with ``lower_order_final`` a last full group ends with a first-order step instead (``.., 1, 2, 1`` for
    order 3); the step into sigma = 0 is first order. This is diffusers' ``DPMSolverSinglestepScheduler
    .get_order_list`` (whose ``set_timesteps`` turns ``lower_order_final`` on wherever the steps do not fill whole
    groups or the schedule ends in 0, where it changes nothing)."""
    orders = [k % order + 1 for k in range(steps)]
    if orders and lower_order_final and steps % order == 0:
        orders[-1] = 1
    if orders and ends_in_zero:
        orders[-1] = 1
    return orders


def singlestep_weights(thetas: list[float], H: float, solver_type: str) -> list[float]:
    """One weight per group node ``thetas`` (``thetas[0] = 0``, ascending) for the step's integral, of
    ``int_0^1 H e^{-H (1 - theta)} F(theta) dtheta`` with ``F`` interpolated through the nodes:

    - ``heun``: the interpolating polynomial through all nodes, integrated exactly (Lu et al. 2022a, Eq. 3.8 /
      Alg. 2 with the exact phi-function coefficients; diffusers' ``heun``);
    - ``midpoint``, 2 nodes: the linear interpolant taken at ``theta = 1/2`` (DPM-Solver-2, Alg. 1:
      ``(1 - e^{-H}) F(1/2)``); 3 nodes: the linear interpolant through the first and last node, integrated exactly
      (DPM-Solver-3's last stage, Alg. 2 line 7), the middle node weighted 0.
    """
    if len(thetas) == 1 or solver_type == "heun":
        return exp_weights(thetas, H)
    if len(thetas) == 2:
        return midpoint_weights(thetas, H)
    first, last = exp_weights([thetas[0], thetas[2]], H)
    return [first, 0.0, last]


def _group_update(geo: Geometry, x_s: torch.Tensor, sigmas: list[float], sigma_t: float, values: list[torch.Tensor],
                  solver_type: str, noise_prediction: bool) -> torch.Tensor:
    """The update from the group's start ``x_s`` (at ``sigmas[0]``) to ``sigma_t`` with the model outputs
    ``values`` (``D`` or ``eps``) at ``sigmas``. A step of infinite length (data prediction from flow ``sigma = 1`` or
    into 0) is first order, the exact limit (DDIM: ``sigma_t x_s + alpha_t D`` / ``D``)."""
    lam_s = geo.half_log_snr(sigmas[0])
    h = geo.half_log_snr(sigma_t) - lam_s
    if not math.isfinite(h):
        sigmas, values = sigmas[:1], values[:1]
    thetas = [(geo.half_log_snr(s) - lam_s) / h if len(sigmas) > 1 else 0.0 for s in sigmas]
    if noise_prediction:
        weights = singlestep_weights(thetas, -h, solver_type)
        return (geo.alpha(sigma_t) / geo.alpha(sigmas[0])) * x_s + sigma_t * combine(weights, values)
    weights = singlestep_weights(thetas, h, solver_type)
    return (sigma_t / sigmas[0]) * x_s + geo.alpha(sigma_t) * combine(weights, values)


def given_orders(orders, steps: int) -> list[int]:
    """The caller's order of each step (diffusers' ``order_list`` from the run's first step on), each 1, 2 or 3.
    A run whose first orders exceed 1 (started mid-schedule, img2img) takes its start as the group's start: step
    ``k`` then has order ``min(order, k + 1)``, as diffusers' ``step`` lowers an order whose earlier outputs it
    lacks."""
    values = [int(o) for o in orders]
    if len(values) != steps or any(o not in (1, 2, 3) for o in values):
        raise ValueError(f"orders must hold one order (1, 2 or 3) per step ({steps}, the final call's step "
                         f"included), got {values}")
    return values


def _check_options(order, solver_type, algorithm_type) -> None:
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
    if algorithm_type not in ALGORITHM_TYPES:
        raise ValueError(f"algorithm_type must be one of {ALGORITHM_TYPES}, got {algorithm_type!r}")


def _check_noise_prediction(geo: Geometry, grid: list[float]) -> None:
    """DPM-Solver in noise prediction divides by ``alpha_s`` and multiplies ``e^h`` by ``sigma_t``: every sigma of
    the schedule needs a finite half log-SNR (no 0, no flow 1), as diffusers requires ``final_sigmas_type='sigma_min'``
    for it."""
    bad = [s for s in grid if not math.isfinite(geo.half_log_snr(s))]
    if bad:
        raise ValueError(f"algorithm_type='dpmsolver' (noise prediction) needs every sigma strictly inside the "
                         f"geometry's range (no 0, no flow 1), got {bad[0]!r} in {grid}; end the schedule above 0 "
                         "(diffusers: final_sigmas_type='sigma_min') or use algorithm_type='dpmsolver++'")


@torch.no_grad()
def sample_dpmpp_singlestep(model, x, sigmas, extra_args=None, callback=None, disable=None, order=2, *,
                            solver_type="midpoint", algorithm_type="dpmsolver++", lower_order_final=False,
                            final_call=False, orders=None):
    """DPM-Solver++(2S/3S) singlestep on the schedule's grid, Lu et al. 2022b (arXiv 2211.01095), Alg. 1; with
    ``algorithm_type='dpmsolver'`` DPM-Solver-2/3 in noise prediction, Lu et al. 2022a (arXiv 2206.00927), Algs. 1-2.
    diffusers' ``DPMSolverSinglestepScheduler`` step for step (see the module docstring).

    Any geometry (noise prediction: no sigma 0 or flow 1 in the schedule). Order ``order`` (1, 2 or 3), 1 call per
    grid point, deterministic. Orders of the steps: :func:`singlestep_orders`; the step into sigma = 0 is first
    order and returns ``D``. ``solver_type``: ``midpoint`` or ``heun`` (:func:`singlestep_weights`).

    ``final_call`` (diffusers' ``final_sigmas_type='sigma_min'`` on Karras, exponential or beta sigmas, whose
    schedule ends on a repeated sigma): on a schedule ending above 0, one more grid point equal to the last, so the
    model is called there once more and the group's last step, of zero length, is completed with that output (a
    first-order step leaves the sample as it is, a higher-order one redoes the group's step with it). The repeat is
    counted as a step by :func:`singlestep_orders`.

    ``orders`` (one per step) replaces :func:`singlestep_orders` (:func:`given_orders`): the order list of a
    diffusers scheduler whose run starts mid-schedule, where its groups keep their places on the whole schedule.
    """
    _check_options(order, solver_type, algorithm_type)
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    final = bool(final_call) and run.sigmas[-1] > 0
    grid = run.sigmas + run.sigmas[-1:] * final
    noise_prediction = algorithm_type == "dpmsolver"
    if noise_prediction:
        _check_noise_prediction(geo, grid)
    if orders is None:
        orders = singlestep_orders(len(grid) - 1, order, lower_order_final, grid[-1] == 0)
    else:
        orders = given_orders(orders, len(grid) - 1)
    x_s, start, values = x, 0, []

    def advance(k: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        nonlocal x_s, start, values
        if orders[k] == 1:  # a new group starts at x (diffusers keeps it as `self.sample`)
            x_s, start, values = x, k, []
        sigma = grid[k]
        values.append((x - geo.alpha(sigma) * denoised) / sigma if noise_prediction else denoised)
        return _group_update(geo, x_s, grid[start: k + 1], grid[k + 1], values, solver_type, noise_prediction)

    for i, sigma, _ in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        x = advance(i, x, denoised)
    if final:
        x = advance(len(grid) - 2, x, final_denoise(run, x))
    return run.finish(x)
