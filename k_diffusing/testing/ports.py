"""Example ports: k-samplers written from scratch as diffusers schedulers, for the parity harness's tests
(``tests/test_parity_port.py``) and its porting walkthrough (README, "Parity harness").

:class:`ResMultistepScheduler` is RES multistep (Zhang et al. 2023, arXiv 2308.02157), the catalogue's
``res_multistep``, which no diffusers scheduler implements: ``SchedulerMixin`` + ``ConfigMixin`` and the protocol
diffusers' pipelines drive (``set_timesteps``, ``timesteps``, ``sigmas``, ``init_noise_sigma``,
``scale_model_input``, ``step``), written from the paper, not a subclass of a diffusers scheduler.
:class:`PlantedBugResMultistepScheduler` is the same port with one wrong coefficient from a chosen step on, which
the harness must find at that step.
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerOutput


class _VEPort(SchedulerMixin, ConfigMixin):
    """What the example ports share: an epsilon-prediction model trained on ``scaled_linear`` betas, VE latents
    ``x = x0 + sigma eps`` (``init_noise_sigma = sigma_0``), the network's input ``x / sqrt(sigma^2 + 1)`` at
    integer timesteps with ``sigma_t = sqrt((1 - abar_t) / abar_t)``, "trailing" spacing (``t = T - 1`` first),
    ``D = x - sigma eps``, and the step index of diffusers' schedulers (``sigmas[step_index]`` is the sigma of the
    next network call)."""

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 prediction_type: str = "epsilon"):
        if prediction_type != "epsilon":
            raise ValueError(f"prediction_type {prediction_type!r}: the example ports take 'epsilon' only")
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.sigma_table = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.init_noise_sigma = float(self.sigma_table[-1])
        self.timesteps = self.sigmas = self.num_inference_steps = None
        self._step_index = self._begin_index = None

    def trailing(self, steps: int) -> torch.Tensor:
        """``steps`` integer timesteps from ``T - 1`` down, evenly spaced ("trailing")."""
        total = self.config.num_train_timesteps
        if not 1 <= steps <= total:
            raise ValueError(f"num_inference_steps {steps}: expected 1 to {total}")
        return (torch.arange(total, 0, -total / steps, dtype=torch.float64).round() - 1).long()

    def _set(self, timesteps: torch.Tensor, sigmas: torch.Tensor, steps: int, device) -> None:
        self.timesteps, self.sigmas, self.num_inference_steps = timesteps.to(device), sigmas, steps
        self.init_noise_sigma = float(sigmas[0])
        self._step_index = self._begin_index = None

    @property
    def step_index(self) -> int | None:
        """The index of the next network call into ``timesteps`` (None before the first)."""
        return self._step_index

    def set_begin_index(self, begin_index: int = 0):
        """Start at call ``begin_index`` (diffusers' pipelines call this before their loop)."""
        self._begin_index = begin_index

    def _start(self, timestep) -> int:
        """The step index, set at the first call from ``timestep`` (or the begin index)."""
        if self._step_index is None:
            found = (self.timesteps == torch.as_tensor(timestep, device=self.timesteps.device)).nonzero()
            self._step_index = int(found[0]) if self._begin_index is None else self._begin_index
        return self._step_index

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        return sample / (float(self.sigmas[self._start(timestep)]) ** 2 + 1) ** 0.5

    def _output(self, prev_sample: torch.Tensor, return_dict: bool):
        self._step_index += 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class ResMultistepScheduler(_VEPort):
    """RES multistep, Zhang et al. 2023 (arXiv 2308.02157), the exponential Adams-Bashforth step of order 2 in data
    prediction (the catalogue's ``res_multistep``), on :class:`_VEPort`'s model and schedule.

    With ``lambda = -log sigma`` and ``h = lambda' - lambda``, a step is ``x' = e^{-h} x + w_1 D_i + w_2 D_{i-1}``,
    the exact integral of the line through ``D_{i-1}`` (at ``theta = c = -h_{i-1} / h``) and ``D_i`` (at 0):
    ``w_1 = h (phi_1(-h) - phi_2(-h) / c)``, ``w_2 = h phi_2(-h) / c``. One network call per step, deterministic;
    first order (DDIM) on the first step, and the step into sigma = 0 returns ``D``.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        timesteps = self.trailing(num_inference_steps)
        self._set(timesteps, torch.cat([self.sigma_table[timesteps], torch.zeros(1)]), num_inference_steps, device)
        self._history = None

    def multistep_weights(self, h: float, h_previous: float) -> tuple[float, float]:
        """``(w_1, w_2)``, the weights of ``D_i`` and ``D_{i-1}`` (the class docstring)."""
        phi_1 = -math.expm1(-h) / h
        phi_2 = (1 - phi_1) / h
        c = -h_previous / h
        return h * (phi_1 - phi_2 / c), h * phi_2 / c

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        i = self._start(timestep)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        denoised = sample - sigma * model_output
        if sigma_next == 0:
            return self._output(denoised, return_dict)
        h = math.log(sigma / sigma_next)
        if self._history is None:
            prev_sample = math.exp(-h) * sample - math.expm1(-h) * denoised
        else:
            w_1, w_2 = self.multistep_weights(h, self._history[1])
            prev_sample = math.exp(-h) * sample + w_1 * denoised + w_2 * self._history[0]
        self._history = (denoised, h)
        return self._output(prev_sample, return_dict)


class HeunScheduler(_VEPort):
    """Heun's method, Karras et al. 2022 (arXiv 2206.00364), Alg. 1 without churn (the catalogue's ``heun``), on
    :class:`_VEPort`'s model and schedule: a two-stage port, with the declarations the parity harness reads.

    An Euler step ``x_e = x + (sigma' - sigma) d``, ``d = (x - D) / sigma`` (lines 5-6), then the trapezoidal
    correction ``x' = x + (sigma' - sigma) (d + d') / 2`` with ``d'`` at ``(x_e, sigma')`` (line 8). Two network
    calls per step, one on the step into sigma = 0 (Euler); order 2, deterministic. Every call is listed:
    ``timesteps`` ``[t_0, t_1, t_1, ..., t_n-1, t_n-1]`` and ``sigmas`` ``[s_0, s_1, s_1, ..., s_n-1, s_n-1, 0]``
    (``sigmas[step_index]`` is each call's sigma), and ``state_in_first_order`` is False while a step waits for
    its second call.
    """

    order = 2

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        timesteps = self.trailing(num_inference_steps)
        main = torch.cat([self.sigma_table[timesteps], torch.zeros(1)])
        self._set(torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)]),
                  torch.cat([main[:1], main[1:-1].repeat_interleave(2), main[-1:]]), num_inference_steps, device)
        self._first_stage = None

    @property
    def state_in_first_order(self) -> bool:
        return self._first_stage is None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        i = self._start(timestep)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        d = model_output  # (x - D) / sigma = eps
        if self._first_stage is None:
            if sigma_next > 0:
                self._first_stage = (sample, d, sigma)
            return self._output(sample + (sigma_next - sigma) * d, return_dict)
        x, d_first, sigma_first = self._first_stage
        self._first_stage = None
        return self._output(x + (sigma - sigma_first) * (d_first + d) / 2, return_dict)


class PlantedBugResMultistepScheduler(ResMultistepScheduler):
    """:class:`ResMultistepScheduler` with one planted bug, the negative control of the harness's tests: from step
    ``bug_step`` on, the ratio ``c`` loses its sign (``c = h_{i-1} / h``), so ``D`` is extrapolated the wrong way.
    Steps before ``bug_step`` are the correct port's."""

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 prediction_type: str = "epsilon", bug_step: int = 3):
        super().__init__(num_train_timesteps, beta_start, beta_end, prediction_type)

    def multistep_weights(self, h: float, h_previous: float) -> tuple[float, float]:
        if self._step_index < self.config.bug_step:
            return super().multistep_weights(h, h_previous)
        return super().multistep_weights(h, -h_previous)
