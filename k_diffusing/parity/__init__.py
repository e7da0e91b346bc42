"""Parity harness: k_diffusing against diffusers' schedulers, step by step (``python -m k_diffusing.parity``).

- :mod:`.pairs`: the table of pairs (k-sampler <-> diffusers scheduler and config, exact or distribution-only, with
  tolerances);
- :mod:`.trace`: both pipelines run on one pipeline folder with the same prompt, seed and noise, recording sigmas,
  timesteps and latents per step;
- :mod:`.sampler_level`: a diffusers scheduler wrapped as a functional k-sampler, against ours on the analytic
  denoiser;
- :mod:`.compare` and :mod:`.report`: per-step divergence, first divergent step, final differences, image PSNR;
  Markdown, HTML and JSON reports.
"""

from .compare import Comparison, compare
from .pairs import PAIRS, Pair, Tolerance, pairs_for
from .sampler_level import scheduler_sampler, scheduler_schedule, trace_sampler_level
from .trace import Trace, trace_diffusers, trace_k

__all__ = ["PAIRS", "Comparison", "Pair", "Tolerance", "Trace", "compare", "pairs_for", "scheduler_sampler",
           "scheduler_schedule", "trace_diffusers", "trace_k", "trace_sampler_level"]
