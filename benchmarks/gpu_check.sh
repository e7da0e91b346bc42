#!/usr/bin/env bash
# The GPU check (issue 16): one command, at most 8 minutes, that checks everything GPU-specific and writes
# RESULTS_cuda.md and RESULTS_cuda.json. The logic is benchmarks/gpu_check.py; this wrapper picks the interpreter,
# makes carried wheels importable, checks for CUDA torch before the heavy imports and puts a hard stop on the run.
#
# On a lent GPU machine (one H100/H200, 16 cores, NO network: do not run setup.sh there, pip cannot reach an index;
# its image's python3 has CUDA torch, transformers and accelerate, but not diffusers, greenlet or torchsde):
#
#   1. here, where pip reaches an index (wheels of this checkout's .venv versions, for the image's CPython 3.12):
#        bash benchmarks/gpu_check.sh --fetch-wheels build/gpu-wheels
#   2. the one command on the GPU machine (device tool: carry ["build/gpu-wheels"], timeout_s 540):
#        bash benchmarks/gpu_check.sh --wheels build/gpu-wheels --out $OUT
#   3. here: copy RESULTS_cuda.md and RESULTS_cuda.json from the returned files into benchmarks/ (gpu_check.log, also
#      returned, holds every part's output).
#
# Elsewhere with a CUDA torch in .venv (README, Install: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bash
# setup.sh): bash benchmarks/gpu_check.sh  (writes benchmarks/RESULTS_cuda.*).
# Without a GPU, the same code on the CPU with tiny settings, CUDA-only calls logged as no-ops, results in a new
# temporary folder (never over the committed files; 30 to 50 s on 2 shared cores):
#        bash benchmarks/gpu_check.sh --dry-run [--out DIR]
#
# Options (the others go to gpu_check.py: --out DIR, --log FILE, --only PART..., --dry-run; see its --help):
#   --fetch-wheels DIR   download the wheels the GPU image lacks into DIR, then stop (needs a package index)
#   --wheels DIR         unpack DIR's wheels (offline, --no-index) into /tmp/gpu_check_site and put it on PYTHONPATH
#   PYTHON=...           the interpreter (default: .venv/bin/python if there, else python3)
#
# Time budget (seconds; each part runs in its own process and is stopped at its limit, recorded as timed out, and the
# run goes on; a part is skipped when less than 10 s of the total is left):
#   environment       20   GPU, driver, versions
#   real_size        120   real_size.py --device cuda --dtype bfloat16 --resolution 1024 --steps 10 --repeats 5
#   host_sync         90   every registered sampler through KSDXL/KFlux pipelines and KScheduler in their parents,
#                          the loop under torch.cuda.set_sync_debug_mode("error"): ok / synced (op and place) / error
#   dtypes            30   the same routes in bfloat16 and float16: finite, max / mean |diff| to float32
#   offload           30   the same routes with enable_model_cpu_offload(): equal to the pipeline on the GPU
#   bench_overhead    30   bench.py --device cuda --only overhead (per-step overhead, host-sync check of the loops)
#   bench_scheduler   30   bench.py --device cuda --only scheduler (KScheduler per model call)
#   bench_compiled    90   bench.py --device cuda --only compiled (torch.compile of the networks)
#   total            460   of the parts together (gpu_check.py's TOTAL_S, from the end of its imports); this script
#                          stops everything 480 s after it started (the preflight and the wheels included)
# Not run: bench.py's pipeline section (6 fresh processes, several minutes) and its accuracy section (CPU only).
#
# Writes OUT/RESULTS_cuda.md and OUT/RESULTS_cuda.json (after every part, so a stopped run leaves what it had) and
# OUT/gpu_check.log; OUT defaults to benchmarks/. Exit status: 0 every part ok; 1 a part failed, timed out or was
# skipped; 3 missing modules or no CUDA (said why, before any part ran); 124/137 the hard stop.
set -euo pipefail
cd "$(dirname "$0")/.."
WALL_S=480  # the whole script's limit: the hard stop below
GPU_PYTHON_VERSION=3.12  # the GPU image's CPython (/work/.library/device/KINDS.md)
CARRIED=(diffusers greenlet torchsde trampoline)  # what the GPU image lacks (trampoline: torchsde's dependency)

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh $*"
ARGS=()
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --fetch-wheels)
            mkdir -p "${2:?--fetch-wheels needs a folder}"
            read -r -a SPECS <<< "$("$PY" -c 'import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${CARRIED[@]}")"
            "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
                --python-version "$GPU_PYTHON_VERSION" --implementation cp --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
                --platform manylinux1_x86_64 -d "$2" "${SPECS[@]}"
            echo "gpu_check: wheels for the GPU machine in $2: ${SPECS[*]}"
            exit 0 ;;
        --wheels)
            : "${2:?--wheels needs a folder}"
            SITE=/tmp/gpu_check_site
            echo "gpu_check: unpacking the carried wheels of $2 into $SITE (offline, no index)"
            "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$SITE" "$2"/*.whl
            export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
            shift 2 ;;
        --dry-run) DRY_RUN=1; ARGS+=("$1"); shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY_RUN" = 0 ]; then
    "$PY" benchmarks/gpu_check.py --preflight  # exit 3 with what to do when CUDA torch or a module is missing
fi
exec timeout -k 5 "$((WALL_S - 5 - SECONDS))" "$PY" benchmarks/gpu_check.py ${ARGS[@]+"${ARGS[@]}"}
