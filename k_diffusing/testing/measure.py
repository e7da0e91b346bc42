"""How each catalogue sampler is measured on the analytic denoisers: one table shared by ``tests/test_measured.py``
and the catalogue report (``python -m k_diffusing``), so the README's numbers and the tests' assertions come from the
same runs.

- Order: the deterministic part of the sampler (``kwargs`` switch its noise off) on
  :func:`convergence.empirical_order` (bimodal data, float64, log-uniform sigmas from VE 20 to 0.05), step counts
  ``ns`` chosen from measured error curves so that the fit is in the asymptotic range. The registry's ``order`` must
  be within :data:`ORDER_TOLERANCE` of the measured slope in both geometries.
- Moments: the stochastic sampler at its defaults from the exact marginal at the first sigma (flow: 1) of
  :func:`moment_sigmas` down to 0, on Gaussian data N(0.5, 1.5^2), 20 000 samples: mean and standard deviation
  against the data's, within :data:`MEAN_TOLERANCE` / :data:`STD_TOLERANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..geometry import FLOW, Geometry
from ..guidance import CFGDenoiser
from ..registry import SamplerSpec, list_samplers
from .analytic import bimodal, gaussian
from .convergence import empirical_order, log_uniform_sigmas, sample_moments

ORDER_TOLERANCE = 0.35  # |measured slope - declared order|
MEAN_TOLERANCE = 0.04  # absolute, data mean 0.5 (4 standard errors of the mean with 20 000 samples)
STD_TOLERANCE = 0.03  # relative, data std 1.5 (6 standard errors of the std, plus discretisation bias)
MOMENT_SHAPE = (4, 5000)


@dataclass(frozen=True)
class Measure:
    ns: tuple[int, ...] | None = (10, 20, 40, 80)  # None: no order (not an ODE solver, or not step-based)
    ode_kwargs: dict = field(default_factory=dict)  # knobs that make the sampler deterministic
    moment_steps: int = 80


# Why some entries have no order measurement.
NO_ORDER = {
    "ddpm": "a posterior-sampling chain with no deterministic variant",
    "lcm": "not an ODE solver (returns the posterior mean at the last nonzero sigma)",
    "dpm_adaptive": "adaptive step size: its accuracy is set by rtol/atol, not by a step count",
}

_ZERO_TAU = {"tau_func": lambda sigma: 0.0}

MEASURES: dict[str, Measure] = {
    "euler": Measure((20, 40, 80, 160)),
    "euler_ancestral": Measure((20, 40, 80, 160), {"eta": 0.0}, moment_steps=1000),
    "heun": Measure(),
    "heunpp2": Measure((20, 40, 80, 160)),
    "dpm_2": Measure(),
    "dpm_2_ancestral": Measure(ode_kwargs={"eta": 0.0}),
    # lms / ipndm_v: nominal order 4, but their lower-order warm-up steps make them order 2 asymptotically (local
    # slopes 2.9 -> 3.6 -> 2.8 in VE, 3.9 -> 2.1 in flow over 10 .. 640 steps); over the 10 .. 80 steps people
    # use they behave as order 3.
    "lms": Measure(),
    "dpm_fast": Measure((8, 20, 41, 80)),  # n = 2 mod 3: all DPM-Solver-3 steps but the last (Lu et al. 2022a)
    "dpm_adaptive": Measure(None),
    "dpmpp_2s_ancestral": Measure(ode_kwargs={"eta": 0.0}),
    "dpmpp_sde": Measure(ode_kwargs={"eta": 0.0}),
    "dpmpp_2m": Measure(),
    "dpmpp_singlestep": Measure(),
    "dpmpp_2m_sde": Measure(ode_kwargs={"eta": 0.0}),
    "dpmpp_2m_sde_heun": Measure(ode_kwargs={"eta": 0.0}),
    "dpmpp_3m_sde": Measure((40, 80, 160, 320), {"eta": 0.0}),
    "ddpm": Measure(None, moment_steps=1000),
    "lcm": Measure(None),
    "tcd": Measure((20, 40, 80, 160), {"gamma": 0.0}),  # gamma = 0: DDIM (euler)
    "ipndm": Measure((40, 80, 160, 320)),
    "plms": Measure((40, 80, 160, 320)),
    "ipndm_v": Measure(),
    "deis": Measure((40, 80, 160, 320)),
    "res_multistep": Measure(),
    "res_multistep_ancestral": Measure(ode_kwargs={"eta": 0.0}),
    "gradient_estimation": Measure((80, 160, 320, 640)),
    "er_sde": Measure(ode_kwargs={"eta": 0.0}),
    "seeds_2": Measure(ode_kwargs={"eta": 0.0}),
    "seeds_3": Measure((20, 40, 80, 160), {"eta": 0.0}),
    "sa_solver": Measure((20, 40, 80, 160), _ZERO_TAU),
    "sa_solver_pece": Measure((20, 40, 80, 160), _ZERO_TAU),
    "sa_solver_diffusers": Measure(ode_kwargs=_ZERO_TAU),
    "uni_pc": Measure((20, 40, 80, 160), {"lower_order_final": False}),
    "uni_pc_bh2": Measure((20, 40, 80, 160), {"lower_order_final": False}),
    "exp_heun_2_x0": Measure(),
    "exp_heun_2_x0_sde": Measure(ode_kwargs={"eta": 0.0}),
    "restart": Measure(ode_kwargs={"restart_list": []}, moment_steps=20),
}


# The CFG++ samplers (``<base>_cfg_pp``) are measured like their base, with the unconditional estimate equal to the
# conditional one (CFGDenoiser(D, D, 1)), where each equals its base: one analytic denoiser has no unconditional
# counterpart. tests/test_cfg_pp.py checks their guided updates against the paper's formulas.
MEASURES.update({spec.name: MEASURES[spec.name.removesuffix("_cfg_pp")] for spec in list_samplers()
                 if spec.needs_uncond})


def runnable(spec: SamplerSpec) -> Callable:
    """``spec`` as a sampler of one denoiser: CFG++ samplers get it as both branches."""
    if not spec.needs_uncond:
        return spec
    return lambda model, x, sigmas, **kwargs: spec(CFGDenoiser(model, model, 1.0), x, sigmas, **kwargs)


def measure_order(spec: SamplerSpec, geometry: Geometry) -> tuple[float, list[float]] | None:
    """``(slope, errors)`` of the spec's deterministic part on bimodal data in ``geometry``; None if not measured."""
    m = MEASURES[spec.name]
    if m.ns is None:
        return None
    return empirical_order(runnable(spec), bimodal(geometry), ns=m.ns, **m.ode_kwargs)


def moment_sigmas(geometry: Geometry, n: int) -> torch.Tensor:
    """``n`` steps from VE sigma 80 (flow: from 1) down to VE 0.002 (SD/SDXL-like range), log-uniform, then 0."""
    sigmas = torch.cat([log_uniform_sigmas(geometry, n - 1, 80.0, 0.002), torch.zeros(1, dtype=torch.float64)])
    if geometry is FLOW:
        sigmas[0] = 1.0
    return sigmas


def measure_moments(spec: SamplerSpec, geometry: Geometry) -> tuple[float, float]:
    """``(mean error, relative std error)`` of the spec at its defaults against the Gaussian data's."""
    model = gaussian(geometry=geometry)
    sigmas = moment_sigmas(geometry, MEASURES[spec.name].moment_steps)
    mean, std = sample_moments(runnable(spec), model, sigmas, shape=MOMENT_SHAPE)
    return mean - model.data_mean, std / model.data_std - 1.0


def format_order(result) -> str:
    return "–" if result is None else f"{result[0]:.2f}"


def format_moments(result) -> str:
    mean_err, std_err = result
    return f"{mean_err:+.3f} / {100 * std_err:+.1f}%"
