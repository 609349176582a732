#!/usr/bin/env bash
# Training-step benchmark: resnet-ode (Rust) vs the same models in plain PyTorch.
#
# NOT run by CI (needs PyTorch and minutes to hours of compute). Requirements:
#     pip install torch==2.9.0            # into the Python named by $PYTHON
#
# Usage (from anywhere):
#     bench/pytorch/run.sh                                  # Rust flex (CPU) vs PyTorch CPU
#     DEVICE=libtorch bench/pytorch/run.sh                  # Rust on PyTorch's own CPU kernels
#     DEVICE=libtorch-cuda:0 bench/pytorch/run.sh           # both on the GPU
#     DEVICE=cuda:0 bench/pytorch/run.sh                    # Rust CubeCL CUDA vs PyTorch CUDA
#
# Environment:
#     DEVICE       resnet-ode device: flex (default) | libtorch | libtorch-cuda:N | cuda:N
#     PYTHON       python with torch 2.9.0 (default python3)
#     THREADS      CPU threads for PyTorch (default: nproc)
#     OUT          output folder (default bench/pytorch/out)
#     MODELS       configurations, space-separated (default "tiny16 tiny64 tiny256 resnet56 resnet110")
#     SCHEMES      TinyResNet's schemes, comma-separated (default euler; the CIFAR ResNets run Euler)
#     MODES        gradient modes, space-separated (default "backprop adjoint")
#     ROUNDS       sweeps over every configuration (default 1); compare.py keeps each side's
#                  fastest round of a configuration
#     OURS_ARGS    extra arguments for `resnet-ode bench train` (e.g. "--steps 3")
#     TORCH_ARGS   extra arguments for bench_train.py (e.g. "--steps 3")
#     CARGO_TARGET_DIR  where cargo builds (and this script finds) the binary, e.g. target/tch to
#                  keep a LibTorch build beside the default one
#
# The two sides alternate configuration by configuration (ours, then PyTorch, then the next
# configuration), each configuration in fresh processes, so that a slow spell of a shared
# machine lands on both sides of a ratio instead of on every row of one side.
#
# For the libtorch devices the Rust binary is built against the torch of $PYTHON:
#     LIBTORCH_USE_PYTORCH=1 cargo build --release --features tch
# and torch's lib dir must be on LD_LIBRARY_PATH at run time; this script does both:
#     python -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEVICE="${DEVICE:-flex}"
PYTHON="${PYTHON:-python3}"
THREADS="${THREADS:-$(nproc 2>/dev/null || echo 2)}"
OUT="${OUT:-$HERE/out}"
mkdir -p "$OUT"

FEATURES=()
TORCH_DEVICE=cpu
case "$DEVICE" in
  libtorch)
    FEATURES=(--features tch) ;;
  libtorch-cuda:*)
    FEATURES=(--features tch); TORCH_DEVICE="cuda:${DEVICE#libtorch-cuda:}" ;;
  cuda:*)
    FEATURES=(--features cuda); TORCH_DEVICE="$DEVICE" ;;
  flex|cpu) ;;
  *) echo "unknown DEVICE=$DEVICE" >&2; exit 2 ;;
esac

if [[ "$DEVICE" == libtorch* ]]; then
  export LIBTORCH_USE_PYTORCH=1
  TORCH_LIB="$("$PYTHON" -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")"
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # tch finds torch through the python on PATH: make it the one named by $PYTHON.
  export PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
fi

echo "== cargo build --release ${FEATURES[*]:-}"
(cd "$ROOT" && cargo build --release "${FEATURES[@]}")

MODELS="${MODELS:-tiny16 tiny64 tiny256 resnet56 resnet110}"
SCHEMES="${SCHEMES:-euler}"
MODES="${MODES:-backprop adjoint}"
ROUNDS="${ROUNDS:-1}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/resnet-ode"
: > "$OUT/ours.jsonl"
: > "$OUT/pytorch.jsonl"
PART="$OUT/part.json"
# Appends the records of the JSON array in $PART to $1 (one per line).
append() { "$PYTHON" -c 'import json, sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]' "$PART" >> "$1"; }

for round in $(seq 1 "$ROUNDS"); do
  for model in $MODELS; do
    case "$model" in
      tiny*) ours_model=(--models tiny --tiny-depths "${model#tiny}"); schemes="$SCHEMES" ;;
      *) ours_model=(--models "$model"); schemes=euler ;;
    esac
    for scheme in ${schemes//,/ }; do
      for mode in $MODES; do
        echo "== round $round: $model $scheme $mode (resnet-ode --device $DEVICE, then PyTorch $TORCH_DEVICE)"
        # shellcheck disable=SC2086
        "$BIN" bench train --device "$DEVICE" "${ours_model[@]}" --schemes "$scheme" --modes "$mode" \
          --json "$PART" ${OURS_ARGS:-}
        append "$OUT/ours.jsonl"
        # shellcheck disable=SC2086
        "$PYTHON" "$HERE/bench_train.py" --device "$TORCH_DEVICE" --threads "$THREADS" \
          --models "$model" --schemes "$scheme" --modes "$mode" --json "$PART" ${TORCH_ARGS:-}
        append "$OUT/pytorch.jsonl"
      done
    done
  done
done
rm -f "$PART"
mv "$OUT/ours.jsonl" "$OUT/ours.json"
mv "$OUT/pytorch.jsonl" "$OUT/pytorch.json"

echo "== comparison"
"$PYTHON" "$HERE/compare.py" "$OUT/ours.json" "$OUT/pytorch.json" --out "$OUT/compare.md"
