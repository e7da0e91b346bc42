"""Sampler gallery for FLUX pipelines: ``python test_flux.py [--model DIR_OR_HUB_ID] [--steps N] ...``.

Renders one image strip per k-sampler of the catalogue with :class:`k_diffusing.KFluxPipeline` (default: the
embedded tiny FLUX model) into ``outputs/runs/flux/`` (``--update-goldens``: the committed goldens in
``outputs/gallery/flux/``), plus a labelled ``grid.png``. ``--help`` lists the options.
A script, not a pytest module: pytest collects only ``tests/``.
"""

import sys

from k_diffusing.gallery import main

if __name__ == "__main__":
    sys.exit(main("flux"))
