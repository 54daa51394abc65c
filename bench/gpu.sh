#!/usr/bin/env bash
# The GPU benchmarks in one go (`make bench-gpu`): the GPU suite for every model and runner available,
# the MNIST speed run, bf16 vs fp32, and 16 vmapped models vs one; then each goal with its measured
# value and PASS/FAIL. Writes bench/results/gpu-DATE-*.
#
#   bash bench/gpu.sh [--dry-run] [--out DIR]
#
# --dry-run (or DRY_RUN=1): the same plan on the CPU with tiny sizes (a few batches, a few hundred
# examples, fewer runners), written as dryrun-DATE-* into a new temporary folder unless --out is given;
# it checks the plumbing, its figures mean nothing. Planned for one H100/H200 in under 8 minutes.
# Environment: PYTHON (default .venv/bin/python, else python3), FUNCDL_DATA_DIR (folder holding mnist/;
# default ../shared/data or data, as the Makefile), RUNNERS (space-separated runner names, default all).
set -uo pipefail

DRY_RUN=${DRY_RUN:-0}
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        --out=*) OUT=${1#--out=} ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown option $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${FUNCDL_DATA_DIR:-$( [ -d ../shared/data/mnist ] && echo ../shared/data || echo data )}
if [ ! -d "$DATA/mnist" ]; then
    echo "bench/gpu.sh: MNIST not found in $DATA/mnist; run \`make data\` or set FUNCDL_DATA_DIR" >&2
    exit 1
fi
DATE=$(date -u +%Y-%m-%d)
ALL_RUNNERS="funcdl funcdl-eager jax-handwritten torch-eager torch-compile torch-cudagraph keras-tf keras-tf-xla tf-function keras-jax"

if [ "$DRY_RUN" = 1 ]; then
    PREFIX=dryrun
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/funcdl-gpu-dryrun.XXXXXX")}
    SUITE=(--suite cpu --matmul-size 128 --timeout 300)
    MLP=(--models mlp --batches 2 --epochs 1)
    MODELS=(--models lstm --batches 1 --epochs 1)
    RUNNERS=${RUNNERS:-funcdl torch-eager torch-cudagraph}
    SPEEDRUN=(--quick --limit 256 --seeds 0)
    TRAIN=(--limit 256 --epochs 1)
    SWEEP=(--limit 256 --epochs 2)
    export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
else
    PREFIX=gpu
    OUT=${OUT:-bench/results}
    # Full MNIST epochs for the MLP (its goals); 100 batches an epoch (extrapolated), one process per
    # framework for the other models, so that the whole script fits in 8 minutes. 4 host threads per
    # framework: the GPU does the work, the host only launches it.
    SUITE=(--suite gpu --threads 4 --timeout 150)
    MLP=(--models mlp --epochs 3)
    MODELS=(--models cnn lstm gru resnet --batches 100 --epochs 2 --shared-processes)
    RUNNERS=${RUNNERS:-$ALL_RUNNERS}
    SPEEDRUN=(--seeds 0,1,2)
    TRAIN=(--epochs 2)
    SWEEP=(--epochs 3)
fi
if ! BACKEND=$("$PYTHON" -c "import funcdl, jax; print(jax.default_backend())" 2>/dev/null); then
    echo "bench/gpu.sh: $PYTHON cannot import funcdl and jax; run \`make setup\` or set PYTHON" >&2
    exit 1
fi
if [ "$DRY_RUN" != 1 ] && [ "$BACKEND" != gpu ]; then
    echo "bench/gpu.sh: jax sees no GPU (backend $BACKEND); on a CPU machine use --dry-run" >&2
    exit 1
fi
mkdir -p "$OUT"
STEM="$OUT/$PREFIX-$DATE"
FAILED=()
START=$(date +%s)

step() {  # step NAME COMMAND...: run one stage, time it, note a failure and go on
    local name=$1 began
    shift
    began=$(date +%s)
    echo "== $name" >&2
    if ! "$@" >&2; then  # the stages' tables go to stderr; stdout keeps the goals
        FAILED+=("$name")
        echo "== $name FAILED" >&2
    fi
    echo "== $name: $(( $(date +%s) - began )) s" >&2
}

last_line_to() {  # last_line_to FILE COMMAND...: run COMMAND, keep its last stdout line (the JSON) in FILE
    local file=$1 out
    shift
    out=$("$@") || return 1
    printf '%s\n' "$out" | tail -n 1 > "$file"
}

# shellcheck disable=SC2086  # RUNNERS is a list of words
step "suite: mlp" "$PYTHON" -m funcdl.cli bench "${SUITE[@]}" "${MLP[@]}" --runners $RUNNERS \
    --data-dir "$DATA" --out "$OUT" --stem "$PREFIX-$DATE-mlp"
# shellcheck disable=SC2086
step "suite: other models" "$PYTHON" -m funcdl.cli bench "${SUITE[@]}" "${MODELS[@]}" --runners $RUNNERS \
    --data-dir "$DATA" --out "$OUT" --stem "$PREFIX-$DATE-models"
step "mnist speedrun" last_line_to "$STEM-speedrun.json" \
    "$PYTHON" examples/mnist_speedrun.py "${SPEEDRUN[@]}" --data-dir "$DATA" --json
for precision in fp32 bf16; do
    step "cnn $precision" last_line_to "$STEM-$precision.json" \
        "$PYTHON" -m funcdl.cli train --model cnn --dataset mnist --data-dir "$DATA" "${TRAIN[@]}" \
        --batch-size 64 --optimizer adam --lr 1e-3 --seed 0 --precision "$precision" --quiet --json
done
step "sweep: 1 model" "$PYTHON" -m funcdl.cli sweep --model mlp --dataset mnist --data-dir "$DATA" "${SWEEP[@]}" \
    --lr 1e-3 --seeds 0 --out "$STEM-sweep-1" --quiet
step "sweep: 16 models" "$PYTHON" -m funcdl.cli sweep --model mlp --dataset mnist --data-dir "$DATA" "${SWEEP[@]}" \
    --lr 1e-4,3e-4,1e-3,3e-3 --seeds 0,1,2,3 --out "$STEM-sweep-16" --quiet

DRY_FLAG=()
[ "$DRY_RUN" = 1 ] && DRY_FLAG=(--dry-run)
"$PYTHON" -m bench.gpu_goals --stem "$STEM" --seconds $(( $(date +%s) - START )) \
    --failed "$(IFS=,; echo "${FAILED[*]:-}")" "${DRY_FLAG[@]}" || FAILED+=("goals")
echo "results in $OUT ($PREFIX-$DATE-*)" >&2
[ ${#FAILED[@]} -eq 0 ] || { echo "bench/gpu.sh: failed: ${FAILED[*]}" >&2; exit 1; }
