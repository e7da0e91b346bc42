"""The parity table: which k-sampler each diffusers scheduler configuration is, and how close the two must be.

A pair is *exact* when both sides compute the same schedule, feed the network the same inputs and draw the same
noise, so that only float32 rounding separates them: its tolerance is on the max |latent difference| after every
step, and exceeding it fails the harness. A pair is *distribution-only* when the two sides draw their noise
differently (a Brownian tree against per-step Gaussians): only the statistics of the result can agree, and its
tolerance is on the mean and standard deviation of the final latents.

Tolerances and the measurements behind them: ``tests/test_sdxl_pipeline.py`` and ``tests/test_flux_pipeline.py``
run every pipeline pair on tiny random-weight pipelines, and ``python -m k_diffusing.parity`` on the embedded
models (README, "Parity harness").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tolerance:
    """``value`` bounds max |ours - theirs| of the latents, divided by max |theirs| when ``relative``."""

    value: float
    relative: bool

    def describe(self) -> str:
        return f"{self.value:.1e} {'relative' if self.relative else 'absolute'}"


# SDXL latents reach |x| ~ 40-65 in VE units at the first sigmas, where float32 rounding is largest, and end near
# |x| ~ 2 (embedded model): SDXL tolerances are relative to the largest |latent| on the trajectory.
SDXL_EXACT = Tolerance(1e-7, True)  # the same arithmetic: below one float32 ulp of the largest latent (measured 0)
# An equivalent formula in other units (VP vs VE, log-SNR vs sigma): about 40 float32 ulps of the largest latent.
# Measured <= 2.4e-6 on the embedded model; for scale, DEIS's different quadrature gives 4e-3 and LCM's last step
# taken to sigma_min instead of 0 gave 3e-3.
SDXL_ROUNDOFF = Tolerance(5e-6, True)
# KDPM2's second call: diffusers computes the interpolated sigma in float32 (log, lerp, exp), we in float64, so the
# timestep fed to the UNet can differ by one float32 ulp (3e-5 at t ~ 600); the trained UNet amplifies that to
# ~1e-3 absolute after a few steps (measured up to 2.4e-5 relative at 6 steps, 1.1e-6 at 10).
SDXL_MIDPOINT = Tolerance(1e-4, True)
# DPMSolverSDEScheduler queries its Brownian tree at float32 midpoint sigmas, we at float64 ones: the path moves by
# ~sqrt(float32 spacing) ~ 1e-3 between neighbouring floats at sigma ~ 14, ~2e-4 of the largest latent after
# scaling. Measured 4.2e-4 at the first step, 1.8e-6 at the last.
SDXL_BROWNIAN = Tolerance(1e-3, True)
# FLUX latents are ~N(0, 1) packed (|x| < 5); one float32 ulp at 4.6 is 4.8e-7:
FLUX_EULER = Tolerance(1.5e-6, False)  # FlowMatchEuler: measured 4.8e-7 to 7.2e-7
FLUX_MULTISTEP = Tolerance(5e-6, False)  # DPM-Solver++ / UniPC in flow mode, float64 sampler: measured <= 1.4e-6
# Distribution-only: |mean difference| / std and |std ratio - 1| of the final latents of a batch of images.
DISTRIBUTION = Tolerance(0.05, True)


@dataclass(frozen=True)
class Pair:
    """One row of the parity table.

    ``scheduler`` is a diffusers scheduler class name, or a scheduler class itself (a port written from scratch,
    ``SchedulerMixin`` + ``ConfigMixin``), built with ``from_config(pipeline's scheduler config, **config)``. The k
    side is ``KSDXLPipeline`` / ``KFluxPipeline`` with a ``KScheduler`` around that scheduler, on its own sigmas: for
    a scheduler with a k-equivalent (:mod:`k_diffusing.pipelines.schedulers`), the equivalent (which must be
    ``sampler``) with the options read from the scheduler's config; for one without, ``sampler`` with
    ``sampler_kwargs``. ``exact=False`` marks a distribution-only pair.
    """

    name: str
    kind: str  # "sdxl" or "flux": the pipeline family
    sampler: str
    scheduler: str | type
    config: dict = field(default_factory=dict)
    tolerance: Tolerance = SDXL_EXACT
    exact: bool = True
    note: str = ""
    global_noise: bool = False  # the parent gives scheduler.step no generator: its step noise is torch's global RNG
    pipeline: bool = True  # False: the parent pipeline cannot drive this scheduler; sampler level only
    sampler_kwargs: dict = field(default_factory=dict)  # the k side's options, for a scheduler without an equivalent

    @property
    def scheduler_name(self) -> str:
        return self.scheduler if isinstance(self.scheduler, str) else self.scheduler.__name__

    def scheduler_class(self) -> type:
        """The scheduler class: the one given, or diffusers' class of that name (ValueError when there is none)."""
        import diffusers

        cls = getattr(diffusers, self.scheduler, None) if isinstance(self.scheduler, str) else self.scheduler
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            raise ValueError(f"pair {self.name!r}: {self.scheduler!r} is neither a diffusers scheduler class name nor "
                             "a scheduler class (SchedulerMixin + ConfigMixin)")
        return cls

    @property
    def diffusers_side(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.scheduler_name}({options})"


def _sdxl(name, sampler, scheduler, tolerance, exact=True, note="", **config) -> Pair:
    return Pair(name, "sdxl", sampler, scheduler, config, tolerance, exact, note=note)


def _flux(name, sampler, scheduler, tolerance, exact=True, note="", global_noise=False, pipeline=True,
          **config) -> Pair:
    return Pair(name, "flux", sampler, scheduler, config, tolerance, exact, note, global_noise, pipeline)


_FLOW_DPM = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}

PAIRS: dict[str, Pair] = {p.name: p for p in (
    _sdxl("sdxl_euler_leading", "euler", "EulerDiscreteScheduler", SDXL_EXACT, note="SDXL's own scheduler"),
    _sdxl("sdxl_euler_linspace", "euler", "EulerDiscreteScheduler", SDXL_EXACT, timestep_spacing="linspace"),
    _sdxl("sdxl_euler_karras", "euler", "EulerDiscreteScheduler", SDXL_EXACT, use_karras_sigmas=True),
    _sdxl("sdxl_euler_ancestral", "euler_ancestral", "EulerAncestralDiscreteScheduler", SDXL_ROUNDOFF,
          note="the same generator draws the step noise"),
    _sdxl("sdxl_heun", "heun", "HeunDiscreteScheduler", SDXL_EXACT),
    _sdxl("sdxl_dpm_2", "dpm_2", "KDPM2DiscreteScheduler", SDXL_MIDPOINT),
    _sdxl("sdxl_lms", "lms", "LMSDiscreteScheduler", SDXL_ROUNDOFF),
    _sdxl("sdxl_dpmpp_2m", "dpmpp_2m", "DPMSolverMultistepScheduler", SDXL_ROUNDOFF),
    _sdxl("sdxl_dpmpp_2m_karras", "dpmpp_2m", "DPMSolverMultistepScheduler", SDXL_ROUNDOFF,
          use_karras_sigmas=True, final_sigmas_type="zero"),
    _sdxl("sdxl_uni_pc_bh2", "uni_pc_bh2", "UniPCMultistepScheduler", SDXL_ROUNDOFF),
    _sdxl("sdxl_ddim", "euler", "DDIMScheduler", SDXL_ROUNDOFF, note="DDIM with eta = 0 is Euler in VE units"),
    _sdxl("sdxl_dpm_2_ancestral", "dpm_2_ancestral", "KDPM2AncestralDiscreteScheduler", SDXL_MIDPOINT),
    _sdxl("sdxl_ddpm", "ddpm", "DDPMScheduler", SDXL_ROUNDOFF),
    _sdxl("sdxl_lcm", "lcm", "LCMScheduler", SDXL_ROUNDOFF, note="its last step returns the denoised sample"),
    _sdxl("sdxl_dpmpp_sde", "dpmpp_sde", "DPMSolverSDEScheduler", SDXL_BROWNIAN, noise_sampler_seed=3,
          note="its Brownian tree, rebuilt from noise_sampler_seed"),
    _sdxl("sdxl_dpmpp_2m_sde", "dpmpp_2m_sde", "DPMSolverMultistepScheduler", DISTRIBUTION, exact=False,
          algorithm_type="sde-dpmsolver++", note="diffusers draws Gaussian step noise, k-diffusion a Brownian tree"),
    _sdxl("sdxl_deis", "deis", "DEISMultistepScheduler", DISTRIBUTION, exact=False,
          note="diffusers' log-rho DEIS and k-diffusion's DEIS are different quadratures of the same order"),
    _flux("flux_euler_dynamic_shift", "euler", "FlowMatchEulerDiscreteScheduler", FLUX_EULER,
          note="FLUX.1-dev's own scheduler"),
    _flux("flux_euler_static_shift", "euler", "FlowMatchEulerDiscreteScheduler", FLUX_EULER,
          use_dynamic_shifting=False, shift=3.0),
    _flux("flux_euler_schnell", "euler", "FlowMatchEulerDiscreteScheduler", FLUX_EULER,
          use_dynamic_shifting=False, shift=1.0),
    _flux("flux_euler_karras", "euler", "FlowMatchEulerDiscreteScheduler", FLUX_EULER, use_karras_sigmas=True),
    _flux("flux_euler_shift_terminal", "euler", "FlowMatchEulerDiscreteScheduler", FLUX_EULER, shift_terminal=0.1),
    _flux("flux_lcm", "lcm", "FlowMatchEulerDiscreteScheduler", FLUX_EULER, stochastic_sampling=True,
          global_noise=True, note="FluxPipeline's step draws from the global RNG; seeded alike, same noise"),
    _flux("flux_heun", "heun", "FlowMatchHeunDiscreteScheduler", FLUX_EULER, pipeline=False,
          note="its set_timesteps takes neither the sigmas nor the mu FluxPipeline passes: sampler level only"),
    _flux("flux_dpmpp_2m", "dpmpp_2m", "DPMSolverMultistepScheduler", FLUX_MULTISTEP, **_FLOW_DPM,
          use_dynamic_shifting=True),
    _flux("flux_uni_pc_bh2", "uni_pc_bh2", "UniPCMultistepScheduler", FLUX_MULTISTEP, **_FLOW_DPM),
    _flux("flux_uni_pc_bh2_dynamic", "uni_pc_bh2", "UniPCMultistepScheduler", FLUX_MULTISTEP, **_FLOW_DPM,
          use_dynamic_shifting=True),
    _flux("flux_dpmpp_2m_sde", "dpmpp_2m_sde", "DPMSolverMultistepScheduler", DISTRIBUTION, exact=False,
          **_FLOW_DPM, use_dynamic_shifting=True, algorithm_type="sde-dpmsolver++",
          note="diffusers draws Gaussian step noise, k-diffusion a Brownian tree"),
)}


def pairs_for(names: list[str] | None = None, kinds: tuple[str, ...] = ("sdxl", "flux")) -> list[Pair]:
    """The named pairs (all of ``kinds`` when ``names`` is None); ValueError naming unknown ones."""
    if names is None:
        return [p for p in PAIRS.values() if p.kind in kinds]
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        from ..names import did_you_mean

        raise ValueError(f"unknown parity pair(s) {unknown}.{did_you_mean(unknown[0], list(PAIRS))} "
                         f"Pairs: {', '.join(PAIRS)}")
    return [PAIRS[n] for n in names]
