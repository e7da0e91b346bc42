"""Per-pipeline maxima of KScheduler(sampler=None) against the native scheduler on the tiny zoo, float64 and float32
(the table "Pipelines covered" in README; tests/test_scheduler_pipelines.py asserts the bounds on the same runs).

    .venv/bin/python benchmarks/zoo_parity.py
"""

import collections
import sys
from pathlib import Path

import diffusers
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_scheduler_pipelines as cases  # noqa: E402  (the pairs and the relative difference the test uses)

from k_diffusing import KScheduler  # noqa: E402
from k_diffusing.testing.zoo import ZOO  # noqa: E402


def main():
    torch.set_num_threads(1)
    worst = collections.defaultdict(lambda: [0.0, 0.0])
    for case_name, pair in cases._pairs():
        case = ZOO[case_name]
        default = case.default_scheduler()
        native = default if pair is None else getattr(diffusers, pair).from_config(default.config)
        for j, dtype in enumerate((torch.float64, torch.float32)):
            theirs = case.run(case.build(native).to(dtype))
            ours = case.run(case.build(KScheduler.from_scheduler(native)).to(dtype))
            worst[case_name][j] = max(worst[case_name][j], cases._rel(ours, theirs))
    print("| zoo case | float64 | float32 |\n|---|---|---|")
    for name, (f64, f32) in worst.items():
        print(f"| {name} | {f64:.1e} | {f32:.1e} |")


if __name__ == "__main__":
    main()
