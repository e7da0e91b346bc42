#!/usr/bin/env bash
# Creates .venv beside this file with torch, the project (editable, with pipeline and test extras) and the
# k-diffusion test oracle. Safe to rerun.
#
# torch: installs torch==2.13.0 unless the venv already has a torch (then it is kept). Which build that is depends on
# the index: this project's machines serve a CPU build; public PyPI serves the CUDA build on Linux (it runs on CPU
# too, but is several GB). To choose, set TORCH_INDEX_URL (used for the torch install only) to PyTorch's CPU or
# CUDA wheel index, and TORCH_SPEC for another version, or install the torch you want into .venv first.
#
# VENV: the venv folder (default .venv, relative to this file's folder). DIFFUSERS_SPEC: a diffusers requirement
# installed together with the project, e.g. DIFFUSERS_SPEC='diffusers==0.40.0' for the oldest of the supported
# range (pyproject.toml's `pipelines` extra); unset, pip keeps an installed diffusers within that range or picks
# the newest. Several whitespace-separated requirements are allowed ('diffusers==0.40.0 transformers<5.25').
# CI builds a second venv this way: VENV=.venv-oldest DIFFUSERS_SPEC='diffusers==0.40.0' bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
read -r -a EXTRA_SPECS <<< "${DIFFUSERS_SPEC:-}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
fi
"${PIP[@]}" -e ".[test]" ${EXTRA_SPECS[@]+"${EXTRA_SPECS[@]}"}
# k-diffusion is only the parity oracle of the tests: its sampling.py is loaded without its package (whose
# dependencies include torchvision and clip), so neither it nor torchdiffeq may pull dependencies.
"${PIP[@]}" --no-deps "k-diffusion==0.1.1.post1" "torchdiffeq==0.2.5"
