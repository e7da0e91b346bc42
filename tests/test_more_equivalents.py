"""``sampler=None`` on the remaining scheduler classes (issue 23, item 2): MiniMaxH3Scheduler -> ``euler``,
LTXEulerAncestralRFScheduler (``eta = 0``) -> ``euler``, FlowMatchLCMScheduler -> ``lcm``, UnCLIPScheduler ->
``ddpm``, CMStochasticIterativeScheduler -> ``lcm`` (its ``sigma_min`` boundary), CosineDPMSolverMultistepScheduler
-> ``dpmpp_2m_sde`` (its Brownian tree), and the configs of those classes that no k-sampler represents, refused when
the KScheduler is built (IPNDMScheduler whole).

Each native scheduler runs in its own plain loop in float64 (``x = randn * init_noise_sigma``; for t in timesteps:
``out = net(scale_model_input(x, t), t)``; ``x = step(out, t, x, generator=g).prev_sample``), and
``KScheduler.from_scheduler(native)`` in the same loop from the same start with the same network and generator
seed. The networks are the analytic Gaussian-mixture denoiser written as each class's network: a flow velocity
``v = (x - D) / sigma`` (MiniMax-H3: the data-ward ``-v`` at ``t = 1 - sigma``), an eps-model on VP latents, or
the raw output ``F`` of an EDM-style parameterisation ``D = c_skip x + c_out F`` (consistency models, Stable
Audio's cosine DPM-Solver) that recovers sigma from its timestep.
Both loops must make the same network calls (the same timesteps) and end within 1e-6 relative (max |diff| over max
|x|). LTX's and FlowMatchLCM's steps round the sample to float32; MiniMax-H3 and UnCLIP compute in the loop's dtype.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from diffusers import (CMStochasticIterativeScheduler, CosineDPMSolverMultistepScheduler, FlowMatchLCMScheduler,
                       IPNDMScheduler, LTXEulerAncestralRFScheduler, MiniMaxH3Scheduler, UnCLIPScheduler)

from k_diffusing.geometry import FLOW
from k_diffusing.samplers.multistep import sample_ipndm
from k_diffusing.scheduler import KScheduler
from k_diffusing.testing.analytic import bimodal

# torchsde's range warnings from the native CosineDPMSolverMultistepScheduler's own Brownian interval (its float32
# sigma ends against float64 queries), not ours
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")

TOLERANCE = 1e-6  # the bound, relative


class FlowVelocity:
    """The analytic flow denoiser as a velocity network at ``t = sigma N`` (``v = eps - x0 = (x - D) / sigma``);
    ``data_ward``: MiniMax-H3's network, ``x0 - eps`` at ``t = 1 - sigma``."""

    def __init__(self, num_train_timesteps: float = 1000.0, data_ward: bool = False):
        self.denoiser, self.data_ward, self.n = bimodal(FLOW), data_ward, num_train_timesteps
        self.timesteps: list[float] = []

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        self.timesteps.append(float(t))
        sigma = 1.0 - float(t) if self.data_ward else float(t) / self.n
        v = (x - self.denoiser(x, torch.tensor(sigma, dtype=torch.float64))) / sigma
        return -v if self.data_ward else v


class VPEps:
    """The analytic VE denoiser as an eps-prediction network on VP latents at integer timestep ``t``."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.denoiser, self.alphas_cumprod = bimodal(), alphas_cumprod
        self.timesteps: list[float] = []

    def __call__(self, x_vp: torch.Tensor, t) -> torch.Tensor:
        self.timesteps.append(float(t))
        abar = float(self.alphas_cumprod[int(t)])
        sigma = math.sqrt((1 - abar) / abar)
        x_ve = x_vp * math.sqrt(sigma**2 + 1)
        return (x_ve - self.denoiser(x_ve, torch.tensor(sigma, dtype=torch.float64))) / sigma


class Preconditioned:
    """The analytic VE denoiser as the raw network ``F`` of ``D = c_skip x + c_out F`` with input ``c_in x``:
    consistency models (``sigma = exp(t / 250)``, Song et al.'s boundary scalings with ``epsilon = sigma_min``) or
    the cosine schedule (``sigma = tan(t pi / 2)``, EDM's scalings; v-prediction: ``-F``)."""

    def __init__(self, scheduler):
        self.denoiser, self.config = bimodal(), scheduler.config
        self.consistency = isinstance(scheduler, CMStochasticIterativeScheduler)
        self.timesteps: list[float] = []

    def __call__(self, x_in: torch.Tensor, t) -> torch.Tensor:
        self.timesteps.append(float(t))
        sd = self.config.sigma_data
        sigma = math.exp(float(t) / 250.0) if self.consistency else math.tan(float(t) * math.pi / 2)
        x = x_in * math.sqrt(sigma**2 + sd**2)
        epsilon = self.config.sigma_min if self.consistency else 0.0
        c_skip = sd**2 / ((sigma - epsilon) ** 2 + sd**2)
        c_out = (sigma - epsilon) * sd / math.sqrt(sigma**2 + sd**2)
        out = (self.denoiser(x, torch.tensor(sigma, dtype=torch.float64)) - c_skip * x) / c_out
        return -out if self.config.get("prediction_type") == "v_prediction" else out


def run_loop(scheduler, net, steps: int | list, seed: int = 7, prev_timestep: bool = False) -> torch.Tensor:
    """The plain diffusers loop in float64 from a fixed start (``steps``: a count, or custom timesteps);
    ``prev_timestep``: pass the next timestep (None at the last) as UnCLIP's pipelines do."""
    scheduler.set_timesteps(timesteps=steps) if isinstance(steps, list) else scheduler.set_timesteps(steps)
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x * float(getattr(scheduler, "init_noise_sigma", 1.0))
    generator = torch.Generator().manual_seed(seed)
    timesteps = scheduler.timesteps
    scale = getattr(scheduler, "scale_model_input", lambda sample, t: sample)
    for i, t in enumerate(timesteps):
        extra = {"prev_timestep": timesteps[i + 1] if i + 1 < len(timesteps) else None} if prev_timestep else {}
        if "generator" in inspect.signature(scheduler.step).parameters:  # MiniMax-H3's step has none
            extra["generator"] = generator
        x = scheduler.step(net(scale(x, t), t), t, x, **extra).prev_sample
    return x


def assert_equivalent(make_scheduler, make_net, steps: int, sampler: str, **loop) -> float:
    """Native and ``KScheduler.from_scheduler(native)`` (whose equivalent must be ``sampler``) in the same loop:
    the same calls, final states within :data:`TOLERANCE` relative; returns that relative difference."""
    native_net, k_net = make_net(), make_net()
    want = run_loop(make_scheduler(), native_net, steps, **loop)
    k_scheduler = KScheduler.from_scheduler(make_scheduler())
    assert k_scheduler._equivalent.sampler == sampler
    got = run_loop(k_scheduler, k_net, steps, **loop)
    assert k_net.timesteps == native_net.timesteps  # one call per native timestep, the same values
    relative = ((got - want).abs().max() / want.abs().max()).item()
    assert relative <= TOLERANCE, relative
    return relative


@pytest.mark.parametrize("shift", [12.0, 3.0], ids=["video", "audio"])
@pytest.mark.parametrize("steps", [5, 20])
def test_minimax_h3_is_euler(steps, shift):
    """MiniMax-H3 (data-ward velocity, ``t = 1 - sigma``, ``linspace(1, 0, n)`` shifted): ``euler`` on its own
    sigmas, D by its own ``x0 = x + (1 - t) v``."""
    assert_equivalent(lambda: MiniMaxH3Scheduler(shift=shift), lambda: FlowVelocity(data_ward=True), steps, "euler")


def test_minimax_h3_scale_noise_takes_its_timestep_at_face_value():
    """MiniMax-H3 noises its conditioning anchors at a ``t`` outside its schedule (``x_t = t x0 + (1 - t) noise``)."""
    k_scheduler = KScheduler.from_scheduler(MiniMaxH3Scheduler())
    x0, noise = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    assert torch.equal(k_scheduler.scale_noise(x0, 0.75, noise), torch.full((2, 3), 1.25))


@pytest.mark.parametrize("config", [{"eta": 0.0}, {"eta": 0.0, "shift": 3.0}], ids=["eta0", "shift3"])
@pytest.mark.parametrize("steps", [4, 12])
def test_ltx_euler_ancestral_rf_without_noise_is_euler(steps, config):
    assert_equivalent(lambda: LTXEulerAncestralRFScheduler.from_config(config), FlowVelocity, steps, "euler")


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_flow_match_lcm_is_lcm(steps):
    """Stochastic: the same generator draws the same noise (``x = (1 - s') D + s' z``); the draw on the step into 0
    (multiplied by 0 there) is skipped by ``lcm``."""
    assert_equivalent(lambda: FlowMatchLCMScheduler(shift=3.0), FlowVelocity, steps, "lcm")


def _unclip(**config) -> UnCLIPScheduler:
    """UnCLIPScheduler with its table cast to float64 (the same float32 values)."""
    scheduler = UnCLIPScheduler(**config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    return scheduler


@pytest.mark.parametrize("config", [{}, {"clip_sample": False}, {"prediction_type": "sample"}],
                         ids=["karlo", "no_clip", "x0"])
@pytest.mark.parametrize("steps", [5, 10])
def test_unclip_is_ddpm(steps, config):
    """UnCLIP (Karlo's squaredcos table, ``fixed_small_log``, ``clip_sample`` by default: the clip acts on D) with
    ``prev_timestep`` passed as its pipelines pass it; the same generator draws the same posterior noise."""
    if config.get("prediction_type") == "sample":
        class X0(VPEps):  # the x0-prediction network: D itself
            def __call__(self, x_vp, t):
                eps = super().__call__(x_vp, t)
                abar = float(self.alphas_cumprod[int(t)])
                return (x_vp - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        net = X0
    else:
        net = VPEps
    table = _unclip().alphas_cumprod
    assert_equivalent(lambda: _unclip(**config), lambda: net(table), steps, "ddpm", prev_timestep=True)


def test_unclip_step_without_prev_timestep_is_refused():
    """Without ``prev_timestep`` UnCLIPScheduler steps from t to t - 1 (one training step), not through the
    schedule the sampler runs."""
    k_scheduler = KScheduler.from_scheduler(_unclip())
    k_scheduler.set_timesteps(5)
    x, t = torch.zeros(1, 4, dtype=torch.float64), k_scheduler.timesteps[0]
    with pytest.raises(ValueError, match=r"prev_timestep=None\) at call 0 .* next \(749"):
        k_scheduler.step(torch.zeros_like(x), t, x)


@pytest.mark.parametrize("cls, config, match", [
    (LTXEulerAncestralRFScheduler, {}, r"eta=1.0, s_noise=1.0\) splits each step at sigma_down"),
    (LTXEulerAncestralRFScheduler, {"s_noise": 0.0}, r"eta=1.0, s_noise=0.0\) splits each step at sigma_down"),
    (FlowMatchLCMScheduler, {"scale_factors": [1.5, 2.0], "upscale_mode": "bicubic"}, "upsamples the denoised"),
    (FlowMatchLCMScheduler, {"invert_sigmas": True}, "runs sigma upwards"),
    (UnCLIPScheduler, {"variance_type": "learned_range"}, "variance other than DDPM's posterior"),
    (CosineDPMSolverMultistepScheduler, {"final_sigmas_type": "sigma_min"}, "diffusers itself fails there"),
    (CosineDPMSolverMultistepScheduler, {"solver_order": 3}, "order 1 and 2 only"),
])
def test_configs_without_an_equivalent_are_refused(cls, config, match):
    with pytest.raises(ValueError, match=match):
        KScheduler.from_scheduler(cls.from_config(config))
    if not config.get("invert_sigmas"):  # explicit samplers run on its own (descending) schedule
        KScheduler.from_scheduler(cls.from_config(config), sampler="euler").set_timesteps(4)


@pytest.mark.parametrize("config", [{}, {"clip_denoised": False}, {"s_noise": 1.005}],
                         ids=["default", "no_clip", "s_noise"])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 40, [22, 0], [39, 25, 10, 2]],
                         ids=["1", "2", "5", "10", "40", "t22_0", "t39_25_10_2"])
def test_consistency_models_are_lcm(steps, config):
    """CMStochasticIterativeScheduler (its 40-level Karras grid, ``clip_denoised`` to [-1, 1] by default): ``lcm``
    re-noising from ``sigma_min`` (``sqrt(sigma'^2 - sigma_min^2)``), D by its boundary scalings, timesteps its
    ``250 log sigma`` (float64, as it keeps them); one step draws no noise; a run reaching ``sigma_min`` (40 steps,
    custom timesteps with 39: the ConsistencyModelPipeline's ``timesteps=``) makes its call there. The same generator
    draws the same noise."""
    assert_equivalent(lambda: CMStochasticIterativeScheduler(**config), lambda: Preconditioned(
        CMStochasticIterativeScheduler()), steps, "lcm")


@pytest.mark.parametrize("config", [{}, {"solver_type": "heun"}, {"solver_order": 1},
                                    {"sigma_schedule": "karras", "prediction_type": "epsilon"}],
                         ids=["stable_audio", "heun", "order1", "karras_eps"])
@pytest.mark.parametrize("steps", [1, 5, 12])
def test_cosine_dpm_solver_is_dpmpp_2m_sde(steps, config):
    """CosineDPMSolverMultistepScheduler (Stable Audio: v-prediction, exponential sigmas in [0.3, 500], EDM
    preconditioning with ``c_noise = atan(sigma) 2 / pi``): SDE-DPM-Solver++ 2M (order 1: the DDPM draw) with its
    own Brownian tree over ``[sigma_min, sigma_max]`` seeded by the step's generator."""
    make = lambda: CosineDPMSolverMultistepScheduler(**config)  # noqa: E731
    sampler = {"heun": "dpmpp_2m_sde_heun", 1: "ddpm"}.get(config.get("solver_type", config.get("solver_order")),
                                                             "dpmpp_2m_sde")
    assert_equivalent(make, lambda: Preconditioned(make()), steps, sampler)


def test_ipndm_is_refused_and_catalogue_ipndm_is_another_method():
    """IPNDMScheduler is refused; the reason measured: on its levels (carried in flow units, s = sigma / (alpha +
    sigma)) the catalogue's ipndm ends far from it (> 1e-2 relative at 5 steps) on an analytic v-model."""
    with pytest.raises(ValueError, match="cannot run IPNDMScheduler: IPNDMScheduler is iPNDM in its own form"):
        KScheduler.from_scheduler(IPNDMScheduler())
    denoiser, scheduler = bimodal(), IPNDMScheduler()
    scheduler.set_timesteps(5)

    def v_net(x_vp, t):  # v = alpha eps - sigma x0 at angle t pi / 2; at zero SNR D is the data mean
        alpha, sigma = math.cos(float(t) * math.pi / 2), math.sin(float(t) * math.pi / 2)
        mean = 0.3 * -1.5 + 0.7 * 1.0
        d = (torch.full_like(x_vp, mean) if alpha < 1e-12
             else denoiser(x_vp / alpha, torch.tensor(sigma / alpha, dtype=torch.float64)))
        return alpha * (x_vp - alpha * d) / sigma - sigma * d

    class FlowModel:  # the same network seen in flow units: x_flow = x_vp r, r = sqrt(s^2 + (1 - s)^2)
        geometry = FLOW

        def __call__(self, x, sigma, **_):
            s = float(sigma[0])
            r = math.hypot(s, 1.0 - s)
            alpha, sigma_vp = (1.0 - s) / r, s / r
            v = v_net(x / r, math.atan2(sigma_vp, alpha) * 2 / math.pi)
            return alpha * x / r - sigma_vp * v

    x0 = torch.randn(3, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x0.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(v_net(x, t), t, x).prev_sample
    betas, alphas = scheduler.betas.double(), scheduler.alphas.double()
    other = sample_ipndm(FlowModel(), x0.clone(), betas / (alphas + betas), disable=True)
    assert ((other - x).abs().max() / x.abs().max()).item() > 1e-2


@pytest.mark.parametrize("steps", [{"num_inference_steps": 1}, {"num_inference_steps": 4}, {"timesteps": [22, 0]}],
                         ids=["onestep", "4", "t22_0"])
def test_consistency_model_pipeline(steps):
    """diffusers' ConsistencyModelPipeline (a tiny class-conditional UNet2DModel in float64) with its scheduler and
    with ``KScheduler.from_scheduler`` of it, same latents and generator: the images within 1e-6 relative. The
    pipeline scales its latents by ``init_noise_sigma`` before it sets the timesteps (the base's own value then)."""
    from diffusers import ConsistencyModelPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=10).double()
    images = []
    for scheduler in (CMStochasticIterativeScheduler(), KScheduler.from_scheduler(CMStochasticIterativeScheduler())):
        pipe = ConsistencyModelPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        latents = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        images.append(pipe(class_labels=3, latents=latents, generator=torch.Generator().manual_seed(5),
                           output_type="pt", **steps).images)
    native, k = images
    assert ((k - native).abs().max() / native.abs().max()).item() <= TOLERANCE
