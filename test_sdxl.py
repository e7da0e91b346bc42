"""Sampler gallery for SDXL pipelines: ``python test_sdxl.py [--model DIR_OR_HUB_ID] [--steps N] ...``.

Renders one image strip per k-sampler of the catalogue with :class:`k_diffusing.KSDXLPipeline` (default: the
embedded tiny SDXL model) into ``outputs/runs/sdxl/`` (``--update-goldens``: the committed goldens in
``outputs/gallery/sdxl/``), plus a labelled ``grid.png``. ``--help`` lists the options.
A script, not a pytest module: pytest collects only ``tests/``.
"""

import sys

from k_diffusing.gallery import main

if __name__ == "__main__":
    sys.exit(main("sdxl"))
