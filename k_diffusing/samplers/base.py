"""What every sampler shares and is not its algorithm: defaults, dtype, sigmas on the host, the model call, the
callback, noise and the progress bar. A sampler body builds one :class:`SamplerRun` and then shows only its math.

Host syncs: ``sigmas`` are copied to a Python list once, before the loop (one copy if they live on an
accelerator); after that every coefficient is a Python float, and the loop never reads a tensor that lives with ``x``.

Zero-length steps: a schedule may repeat a sigma (diffusers' DDIM with ``set_alpha_to_one=False`` ends
``[..., 0.0292, 0.0292]``; DPM-Solver/UniPC with ``final_sigmas_type="sigma_min"`` end on a repeated sigma). A step
between two equal sigmas leaves ``x`` unchanged: it makes no model call, draws no noise, and multistep histories do
not see it. :class:`SamplerRun` removes such steps once, when it reads the schedule (:func:`distinct_sigmas`), so every
sampler runs on the schedule without them and a run on ``[..., s, s, ...]`` equals, bit for bit, the run on the same
schedule with the repeat removed.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from ..geometry import Geometry, geometry_of
from ..noise import GeneratorArg, NoiseSampler, brownian_noise_sampler, default_noise_sampler

Model = Callable[..., torch.Tensor]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sampler arithmetic runs in float32 at least (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def sigmas_to_list(sigmas) -> list[float]:
    """The sigmas as Python floats (one host copy); checked to be a 1-D sequence with at least two entries."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1:
            raise ValueError(f"sigmas must be a 1-D sequence, got a tensor of shape {tuple(sigmas.shape)}")
        values = sigmas.detach().to("cpu", torch.float64).tolist()
    else:
        values = [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError(f"sigmas must hold at least 2 values (a start and an end), got {values}")
    return values


def distinct_sigmas(values: list[float]) -> list[float]:
    """``values`` without zero-length steps: each run of equal consecutive sigmas kept once (``[s, s]`` -> ``[s]``,
    no step at all). Exact float equality: two sigmas that differ at all make a (short) step."""
    return values[:1] + [b for a, b in zip(values, values[1:]) if b != a]


# Relative slack on a geometry's largest sigma (a shifted flow table's 1 may round to 1 + 2e-16).
SIGMA_MAX_SLACK = 1e-6


def check_schedule(values: list[float], geometry: Geometry, descending: bool = True) -> None:
    """Refuse a schedule the sampler cannot walk: NaN/inf, a negative sigma, a sigma above the geometry's largest
    (flow: 1), or (with ``descending``) a rise. Runs on the host list, so it costs no device sync."""
    if not all(math.isfinite(s) for s in values):
        raise ValueError(f"sigmas must be finite (no NaN/inf), got {values}")
    if min(values) < 0:
        raise ValueError(f"sigmas must be >= 0, got {values}")
    if max(values) > geometry.sigma_max * (1 + SIGMA_MAX_SLACK):
        raise ValueError(
            f"sigmas must lie in [0, {geometry.sigma_max:g}] for a model in {geometry.name} geometry, got "
            f"{max(values)!r} in {values}"
        )
    if descending and any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f"sigmas must descend (non-increasing, ending at or above 0), got {values}")


class SamplerRun:
    """One call of a sampler: ``run.denoise(x, sigma)``, ``run.noise(sigma, sigma_next)``, ``run.report(...)``.

    Args:
        model: denoiser ``model(x, sigma_batch, **extra_args) -> denoised``; its ``geometry`` attribute (default VE).
        x: initial sample; the state is kept in ``state_dtype(x.dtype)`` and the result cast back to ``x.dtype``
            (an integer ``x``: the state dtype, float32).
        sigmas: descending noise levels (tensor or sequence), usually ending in 0. Zero-length steps (equal
            consecutive sigmas) are removed (:func:`distinct_sigmas`): ``self.sigmas``, :meth:`steps`, the step
            index ``i`` of the callback and of ``model.on_step_end(i, x)``, the progress bar and the Brownian tree all
            go by the schedule without them. A schedule of one repeated value makes no step and returns ``x``.
        noise_sampler: explicit noise source ``(sigma, sigma_next) -> N(0, I)``; overrides ``generator``.
        generator: one ``torch.Generator`` or one per batch item, for the default noise.
        brownian: default noise is a Brownian tree over the sigmas' positive range (k-diffusion's SDE samplers)
            instead of independent Gaussian draws. The tree is built on first use, so deterministic runs never pay.
        descending: refuse sigmas that rise (off only for dpm_fast / dpm_adaptive, which integrate either way).
        replay: the sampler function with its options bound (``functools.partial``), for Brownian noise computed
            ahead: with ``brownian`` and no noise sampler (or one that has a ``plan`` method, as the trees of
            :mod:`k_diffusing.noise` and :mod:`k_diffusing.seeding`), a :func:`dry_run` records the noise queries the
            run will make and the tree computes them on a worker thread while the network runs.
    """

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        sigmas,
        extra_args: dict[str, Any] | None = None,
        callback: Callable[[dict], Any] | None = None,
        disable: bool | None = None,
        noise_sampler: NoiseSampler | None = None,
        generator: GeneratorArg = None,
        brownian: bool = False,
        descending: bool = True,
        replay: Callable | None = None,
    ):
        self.model = model
        self.geometry: Geometry = geometry_of(model)
        values = sigmas_to_list(sigmas)
        check_schedule(values, self.geometry, descending)
        self.sigmas = distinct_sigmas(values)
        self.extra_args = {} if extra_args is None else extra_args
        self.callback = callback
        self.disable = disable
        # an integer x comes back as floating point, as k-diffusion's arithmetic promotes it
        self.out_dtype = x.dtype if x.is_floating_point() else state_dtype(x.dtype)
        self.x = x.to(state_dtype(x.dtype))
        self._noise_sampler = noise_sampler
        self._generator = generator
        self._brownian = brownian
        self.calls = 0
        # Optional step-end protocol of a denoiser (pipelines use it for callback_on_step_end and interrupt):
        # model.on_step_end(i, x) is called with the state after step i, before the next step's first model call and
        # after the last step; a tensor it returns replaces the state (in place, so the sampler's own variable sees
        # it).
        self._on_step_end = getattr(model, "on_step_end", None)
        # Optional host-sigma protocol: a denoiser whose ``takes_host_sigma`` is true also gets the call's sigma as a
        # Python float (``sigma_host=``), so it can derive per-call values (the network's timestep) on the host
        # instead of with a dozen small device ops per call (the bridge denoisers of k_diffusing.denoisers).
        self._host_sigma = bool(getattr(model, "takes_host_sigma", False))
        self._step = 0
        self._ended = -1
        if brownian and replay is not None:
            self._plan_noise(replay)

    def _plan_noise(self, replay: Callable) -> None:
        """Hand the noise queries of a dry run of the sampler to the tree, which computes them ahead; no tree is
        built when the run makes no query (``eta = 0``)."""
        sampler = self._noise_sampler
        if (sampler is not None and not hasattr(sampler, "plan")) or len(self.sigmas) < 2:
            return
        queries = dry_run(replay, self.geometry, self.sigmas).noise_queries
        if not queries:
            return
        if sampler is None:
            sampler = self._noise_sampler = brownian_noise_sampler(self.x, self.sigmas, self._generator)
        sampler.plan(queries)

    def steps(self) -> Iterator[tuple[int, float, float]]:
        """``(i, sigma_i, sigma_{i+1})`` for every step, with a progress bar over steps."""
        for i in tqdm(range(len(self.sigmas) - 1), disable=self.disable):
            self._step = i
            yield i, self.sigmas[i], self.sigmas[i + 1]

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``D(x, sigma)`` in the state dtype; ``sigma`` is a Python float broadcast over the batch."""
        return self._call(self.model, x, sigma).to(x.dtype)

    def denoise_with_uncond(self, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D, D_uncond)``: the guided estimate and the unconditional one at the same call, for the CFG++ samplers.
        The model must offer ``model.denoise_with_uncond(x, sigma, **extra) -> (denoised, uncond_denoised)``, as
        :class:`k_diffusing.CFGDenoiser` and the pipelines' schedulers do."""
        pair = getattr(self.model, "denoise_with_uncond", None)
        if pair is None:
            raise TypeError(
                f"this sampler needs the unconditional estimate next to the guided one (CFG++), but the model "
                f"{type(self.model).__name__} has no denoise_with_uncond method; combine a conditional and an "
                "unconditional denoiser with k_diffusing.CFGDenoiser(cond, uncond, guidance_scale)"
            )
        denoised, uncond = self._call(pair, x, sigma)
        return denoised.to(x.dtype), uncond.to(x.dtype)

    def _call(self, function, x: torch.Tensor, sigma: float):
        """One model call: the step-end protocol first, then ``function(x, sigma_batch, **extra_args)``."""
        if self._on_step_end is not None and self._ended < self._step - 1:
            self._end_step(self._step - 1, x)
        sigma_batch = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        self.calls += 1
        extra = {**self.extra_args, "sigma_host": sigma} if self._host_sigma else self.extra_args
        return function(x, sigma_batch, **extra)

    def noise(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """Unit Gaussian noise for the step ``sigma -> sigma_next``, shaped like the state."""
        if self._noise_sampler is None:
            if self._brownian:
                self._noise_sampler = brownian_noise_sampler(self.x, self.sigmas, self._generator)
            else:
                self._noise_sampler = default_noise_sampler(self.x, self._generator)
        return self._noise_sampler(sigma, sigma_next).to(self.x.dtype)

    def report(self, i: int, x: torch.Tensor, sigma: float, sigma_hat: float, denoised: torch.Tensor, **more) -> None:
        """k-diffusion's callback dict; sigmas are CPU 0-d float64 tensors (no device traffic)."""
        if self.callback is not None:
            self.callback(
                {
                    "x": x,
                    "i": i,
                    "sigma": torch.tensor(sigma, dtype=torch.float64),
                    "sigma_hat": torch.tensor(sigma_hat, dtype=torch.float64),
                    "denoised": denoised,
                    **more,
                }
            )

    def _end_step(self, i: int, x: torch.Tensor) -> None:
        self._ended = i
        replaced = self._on_step_end(i, x)
        if replaced is not None and replaced is not x:
            x.copy_(replaced)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        if self._on_step_end is not None and len(self.sigmas) > 1:
            self._end_step(len(self.sigmas) - 2, x)
        return x.to(self.out_dtype)



class DryRun:
    """Dry-run denoiser and noise sampler: ``D = 0`` and zero noise on a 1x1 state. Records the sigma of each model
    call, where each step starts (step-end protocol), whether the sampler asks for the unconditional estimate
    (CFG++), and each noise query ``(sigma, sigma_next)``."""

    takes_host_sigma = True

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        self.sigmas: list[float] = []
        self.step_starts: list[int] = [0]
        self.needs_uncond = False
        self.noise_queries: list[tuple[float, float]] = []

    def __call__(self, x, sigma, sigma_host=None, **_):
        self.sigmas.append(float(sigma[0]) if sigma_host is None else sigma_host)
        return torch.zeros_like(x)

    def denoise_with_uncond(self, x, sigma, sigma_host=None, **_):
        self.needs_uncond = True
        zero = self(x, sigma, sigma_host)
        return zero, zero

    def on_step_end(self, i, x):
        self.step_starts.append(len(self.sigmas))

    def noise(self, sigma, sigma_next) -> torch.Tensor:
        self.noise_queries.append((float(sigma), float(sigma_next)))
        return torch.zeros(1, 1)


def parameters(function: Callable) -> frozenset:
    """The names of a sampler function's parameters, read once per function: a registry spec's or a
    ``functools.partial``'s (SamplerRun's ``replay``, a new one every run) are those of the function they wrap, so
    the cache holds one entry per sampler function."""
    while True:
        if isinstance(function, functools.partial):
            function = function.func
        elif callable(getattr(function, "function", None)):  # a registry SamplerSpec
            function = function.function
        else:
            return _signature_names(function)


@functools.lru_cache(maxsize=None)
def _signature_names(function: Callable) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


def dry_run(function: Callable, geometry: Geometry, sigmas: list[float], **options) -> DryRun:
    """Run the sampler ``function`` (with ``options``) on a zero 1x1 state with a zero denoiser and zero noise,
    leaving torch's global RNG as it was, and return what it asked for (:class:`DryRun`). Valid for every sampler
    whose calls and noise queries depend only on the schedule and its options, not on the data (all but
    dpm_adaptive)."""
    recorder = DryRun(geometry)
    if "noise_sampler" in parameters(function):
        options["noise_sampler"] = recorder.noise
    with torch.random.fork_rng(devices=[]):
        function(recorder, torch.zeros(1, 1), torch.tensor(sigmas, dtype=torch.float64), disable=True, **options)
    return recorder


def uses_uncond(function: Callable) -> Callable:
    """Mark a sampler function that calls ``run.denoise_with_uncond`` (the CFG++ samplers), so that pipelines know
    before running it that they must provide the unconditional estimate (:func:`needs_uncond`)."""
    function.needs_uncond = True
    return function


def needs_uncond(function: Callable) -> bool:
    """Whether a sampler function is marked by :func:`uses_uncond`."""
    return bool(getattr(function, "needs_uncond", False))


def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """Probability-flow ODE derivative ``dx/dsigma = (x - D) / sigma`` (Karras et al. 2022, arXiv 2206.00364, Eq. 3
    with ``s = 1``). Valid in VE and in flow geometry alike (see :mod:`k_diffusing.geometry`). ``sigma`` is a float
    or a tensor holding one sigma per batch item (k-diffusion's signature)."""
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        sigma = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))
        return (x - denoised) / sigma  # may promote (a float64 sigma per item), as k-diffusion's
    return (x - denoised).div_(sigma)  # one full-size allocation, the same values


def churn(run: SamplerRun, x: torch.Tensor, sigma: float, s_churn: float, s_tmin: float, s_tmax: float,
          s_noise: float) -> tuple[torch.Tensor, float]:
    """Stochastic churn, Karras et al. 2022 Alg. 2 lines 4-6: raise the noise level to
    ``sigma_hat = (1 + gamma) sigma`` (in VE units) with ``gamma = min(s_churn / N, sqrt(2) - 1)`` inside
    ``[s_tmin, s_tmax]``. Returns ``(x_hat, sigma_hat)``; draws noise only when ``gamma > 0``."""
    gamma = min(s_churn / (len(run.sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = run.geometry.churn(sigma, gamma)
    up = run.geometry.renoise(sigma, sigma_hat)
    return up.x_scale * x + up.noise_std * s_noise * run.noise(sigma, sigma_hat), sigma_hat
