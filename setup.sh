#!/usr/bin/env bash
# Creates .venv beside this file with torch, the project (editable, with pipeline and test extras) and the
# k-diffusion test oracle. Safe to rerun.
#
# torch: installs torch==2.13.0 unless the venv already has a torch (then it is kept). Which build that is depends on
# the index: this project's machines serve a CPU build; public PyPI serves the CUDA build on Linux (it runs on CPU
# too, but is several GB). To choose, set TORCH_INDEX_URL (used for the torch install only) to PyTorch's CPU or
# CUDA wheel index, and TORCH_SPEC for another version, or install the torch you want into .venv first.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
fi
"${PIP[@]}" -e ".[test]"
# k-diffusion is only the parity oracle of the tests: its sampling.py is loaded without its package (whose
# dependencies include torchvision and clip), so neither it nor torchdiffeq may pull dependencies.
"${PIP[@]}" --no-deps "k-diffusion==0.1.1.post1" "torchdiffeq==0.2.5"
