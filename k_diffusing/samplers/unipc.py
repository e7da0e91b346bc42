"""UniPC, Zhao et al. 2023 (arXiv 2302.04867): a multistep predictor (UniP) and a corrector (UniC) that reuses the
model output of the next step, in data prediction, written with ``alpha`` and the half log-SNR
``lambda = log(alpha / sigma)`` of the model's geometry so that one formula is exact for VE and flow models.

Notation (data prediction, "UniPC with B(h)"): a step from ``s`` to ``t`` with ``h = lambda_t - lambda_s``,
``m_0 = D(x_s)``, earlier outputs ``m_k`` at ``lambda_k`` with ``r_k = (lambda_k - lambda_s) / h`` and differences
``D1_k = (m_k - m_0) / r_k``:

    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m_0 - alpha_t B(h) sum_k rho_k D1_k,

with ``rho`` solving ``sum_k rho_k r_k^(i-1) = i! psi_{i+1}(-h) / B(h)``, ``psi_{k+1}(z) = (e^z - sum_{j<=k} z^j/j!)
/ z^k`` (the paper's order conditions, Sec. 3), and ``B = -h`` ('bh1', the paper's ``B(h) = h``) or
``B = e^{-h} - 1`` ('bh2', ``B(h) = e^h - 1``): the paper's ``B`` at ``-h``, as in the authors' data-prediction
code. UniP-p uses the ``p - 1`` previous outputs. UniC-p repeats the step it corrects with the new output ``m_t``
as one more point (``r = 1``) and no extra model call; the next step starts from the corrected sample while ``m_t``
(taken at the uncorrected one) enters the history. With a single point
``rho = 1/2`` (the authors' and diffusers' simplification for UniP-2 and UniC-1; it satisfies the condition to the
order needed).
"""

from __future__ import annotations

import math

import torch

from .base import SamplerRun
from .dpmpp import final_denoise

SOLVER_TYPES = ("bh1", "bh2")


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve a small dense linear system (Gaussian elimination with partial pivoting, Python floats)."""
    n = len(rhs)
    a = [row[:] + [v] for row, v in zip(matrix, rhs)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            f = a[r][col] / a[col][col]
            a[r] = [u - f * v for u, v in zip(a[r], a[col])]
    out = [0.0] * n
    for r in reversed(range(n)):
        out[r] = (a[r][n] - sum(a[r][c] * out[c] for c in range(r + 1, n))) / a[r][r]
    return out


def _rhos(h: float, rks: list[float], solver_type: str) -> tuple[float, list[float]]:
    """``B(h)`` and the weights ``rho_k`` of the differences at ratios ``rks`` (the paper's order conditions).

    At ``h = inf`` (a step from flow ``sigma = 1``) only UniC-1 occurs (``rks = [1]``, ``rho = 1/2``); bh1's
    ``B = -h`` has no finite limit there, so both variants use bh2's ``B = e^{-h} - 1 = -1``: the correction
    ``alpha_t (m_t - m_0) / 2`` then matches the exact solution to leading order in ``1 / sigma_ve(t)``.
    """
    z = -h
    b_h = z if solver_type == "bh1" and math.isfinite(z) else math.expm1(z)
    if len(rks) == 1:
        return b_h, [0.5]
    rhs, psi, factorial = [], math.expm1(z) / z - 1, 1.0  # psi_2(z)
    for i in range(1, len(rks) + 1):
        rhs.append(psi * factorial / b_h)  # i! psi_{i+1}(z) / B(h)
        factorial *= i + 1
        psi = psi / z - 1 / factorial  # psi_{i+2}(z)
    return b_h, _solve([[r**i for r in rks] for i in range(len(rks))], rhs)


def _uni_step(geo, x, sigma, sigma_next, m0, points, solver_type, m_next=None):
    """One UniP-p or, given ``m_next = D`` at ``sigma_next``, UniC-p update from ``sigma`` to
    ``sigma_next > 0``.

    ``points``: earlier outputs ``(lambda_k, m_k)`` besides the base output ``m0`` (all with finite ``lambda``).
    Without points or ``m_next`` this is the first-order (DDIM) step.
    """
    lam = geo.half_log_snr(sigma)
    h = geo.half_log_snr(sigma_next) - lam
    alpha_next = geo.alpha(sigma_next)
    x_next = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * m0
    rks = [(lam_k - lam) / h for lam_k, _ in points]
    outputs = [m_k for _, m_k in points]
    if m_next is not None:  # the new output sits at r = 1 exactly (also when h = inf)
        rks.append(1.0)
        outputs.append(m_next)
    if rks:
        b_h, rhos = _rhos(h, rks, solver_type)
        correction = sum((rho / r) * (m_k - m0) for rho, r, m_k in zip(rhos, rks, outputs))
        x_next = x_next - alpha_next * b_h * correction
    return x_next


def _corrected(geo, x, sigma, denoised, pending, solver_type):
    """UniC-p on the step just taken into ``sigma``, with ``m_t = D`` at the predicted sample ``x``; ``pending``
    ``(x, sigma, D, points)`` of that step's UniP, or None (no corrector): ``x`` as it is."""
    if pending is None:
        return x
    x_prev, sigma_prev, m_prev, points = pending
    return _uni_step(geo, x_prev, sigma_prev, sigma, m_prev, points, solver_type, m_next=denoised)


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, solver_type="bh1",
                  use_corrector=True, lower_order_final=True, final_call=False):
    """UniPC, Zhao et al. 2023 (arXiv 2302.04867), Alg. 1-3 (multistep UniP-p + UniC-p, data prediction).

    Any geometry (exponential integrator in ``lambda``, exact for VE and flow). 1 model call per step,
    deterministic. ``order`` (1-3) is the predictor order p; with the corrector the method is of order p + 1
    (paper, Sec. 3), except that the warm-up steps run at orders 1, 2, ... and, with ``lower_order_final``, the last
    steps at orders ..., 2, 1 (both as in the authors' code and diffusers). The corrector is never applied after the
    last step (there is no further model output) unless ``final_call``. Flow ``sigma = 1`` (``lambda = -inf``,
    ``h = inf``) is handled by exact limits: the first step is the DDIM step ``x = sigma_t x + alpha_t D``, its
    UniC-1 correction adds ``alpha_t (D_t - D) / 2`` (bh2's limit, used by bh1 too), and the output at ``sigma = 1``
    never enters later differences (``r = -inf`` makes them vanish), so the next step runs at order 1. The step into
    sigma = 0 is first order and returns ``D`` (diffusers' bh1 gives NaN there).

    Defaults are ComfyUI's ``uni_pc`` (bh1, order 3, corrector on, lower order at the end; ComfyUI replaces a final 0
    by 0.001 and returns the sample there, which differs from ``D`` by ``~0.001 / sigma_last``). diffusers'
    ``UniPCMultistepScheduler`` defaults are ``solver_type='bh2', order=2`` (see :func:`sample_uni_pc_bh2`).

    Args:
        order: predictor order p (1, 2 or 3).
        solver_type: ``'bh1'`` (``B(h) = h``, recommended by the authors for few steps) or ``'bh2'``
            (``B(h) = e^h - 1``).
        use_corrector: apply UniC after every step but the last (diffusers: ``disable_corrector=[]``).
        lower_order_final: use order ``min(order, steps left)`` (diffusers' and ComfyUI's default).
        final_call: on a schedule ending above 0, call the model once more at the last sigma and correct the last
            step with UniC (when ``use_corrector``), counting that call as one more step for ``lower_order_final``:
            diffusers' ``UniPCMultistepScheduler`` on a schedule ending on a repeated sigma
            (``final_sigmas_type='sigma_min'`` with Karras, exponential, beta or flow sigmas), whose zero-length last
            step costs a call, applies the corrector and leaves the sample unchanged (:func:`.dpmpp.final_denoise`).
            No effect on a schedule ending at 0.
    """
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    run = SamplerRun(model, x, sigmas, extra_args, callback, disable)
    geo, x = run.geometry, run.x
    final = final_call and run.sigmas[-1] > 0
    n_steps = len(run.sigmas) - 1 + final  # diffusers counts its zero-length last step
    history = []  # (lambda, D) of earlier steps with finite lambda, most recent last
    pending = None  # (x, sigma, D, points) of the last UniP step, for UniC
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, sigma, denoised)
        lam = geo.half_log_snr(sigma)
        x = _corrected(geo, x, sigma, denoised, pending, solver_type)
        if sigma_next == 0:  # the exact first-order step into 0; no higher-order limit exists
            x, pending = denoised, None
            continue
        p = min(order, len(history) + 1, n_steps - i if lower_order_final else order)
        points = history[len(history) - (p - 1):] if p > 1 else []
        pending = (x, sigma, denoised, points) if use_corrector else None
        x = _uni_step(geo, x, sigma, sigma_next, denoised, points, solver_type)  # UniP-p
        if math.isfinite(lam):
            history = (history + [(lam, denoised)])[-(order - 1):] if order > 1 else []
    if final:
        x = _corrected(geo, x, run.sigmas[-1], final_denoise(run, x), pending, solver_type)
    return run.finish(x)


@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, use_corrector=True,
                      lower_order_final=True, final_call=False):
    """UniPC with ``B(h) = e^h - 1``, Zhao et al. 2023 (arXiv 2302.04867), Alg. 1-3: :func:`sample_uni_pc` with
    ``solver_type='bh2'`` (ComfyUI's ``uni_pc_bh2``; with ``order=2`` it is diffusers' default
    ``UniPCMultistepScheduler``). Any geometry, order ``order + 1`` with the corrector, 1 call per step,
    deterministic; the step into sigma = 0 returns ``D``. ``final_call``: diffusers' call at a repeated final
    sigma, as in :func:`sample_uni_pc`."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, order=order, solver_type="bh2",
                         use_corrector=use_corrector, lower_order_final=lower_order_final, final_call=final_call)
