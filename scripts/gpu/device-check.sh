#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (NVIDIA, CUDA 13 driver, PyTorch 2.11 in its
# python3, no Rust, no network). Run from the repository root with .gpu/ (scripts/gpu/build.sh)
# carried along. Its log goes to $OUT/device-check.log and every output file into
# $OUT/device-check.tar.gz (the device tool returns at most 8 files); default OUT: out/device-check.
#
#   scripts/gpu/device-check.sh            # bounded by DEADLINE seconds (default 450) in all
#
# Order: environment, correctness (gradcheck on cuda:0 and libtorch-cuda:0 against flex on the
# same machine; a short digits training), then memory (bench memory: one process per
# configuration, nothing else on the GPU, since NVML's reading is device-wide), then speed
# (bench train ours vs bench/pytorch/bench_train.py --device cuda; bench speed). Every step runs
# under `timeout`, cut to what is left of DEADLINE, so a slow first kernel compilation costs the
# later steps, not the whole call. Last, with whatever time is left: the wgpu devices, where
# .gpu/ holds their binaries (VULKAN=1 WGPU=1 scripts/gpu/build.sh) and the Vulkan loader is
# there or carried as .debs in .gl/ (the device README: libvulkan1 and friends, `carry .gl`).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-out/device-check}"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/device-check.XXXX)
DEADLINE="${DEADLINE:-450}"; T0=$(date +%s)
exec > >(tee -a "$OUT/device-check.log") 2>&1
say() { printf '\n== [%3ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
# run CAP NAME CMD...: CMD under timeout min(CAP, time left), output to $OUT/NAME.txt and here.
run() {
  local cap=$1 name=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  (( left > cap )) && left=$cap
  if (( left < 5 )); then say "SKIP $name (deadline)"; return 0; fi
  say "$name (timeout ${left}s): $*"
  timeout -k 5 "$left" "$@" > "$WORK/$name.txt" 2>&1; local rc=$?
  tail -n 25 "$WORK/$name.txt"; echo "-- rc=$rc"
}

say "unpack"
# unpack NAME: .gpu/resnet-ode-NAME.xz to /tmp/resnet-ode-NAME (python's lzma: no xz needed there).
unpack() {
  python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.gpu/resnet-ode-$1.xz'),open('/tmp/resnet-ode-$1','wb'))" \
    && chmod +x "/tmp/resnet-ode-$1"
}
BIN=/tmp/resnet-ode-cuda
unpack cuda
cat .gpu/commit 2>/dev/null
nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
TORCH_DIR=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")
python3 -c "import torch;print('torch',torch.__version__,torch.version.git_version,'cuda',torch.version.cuda,torch.cuda.is_available())"
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
export CUDA_PATH="${CUDA_PATH:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}"
ls "$CUDA_PATH"/nvvm/libdevice 2>&1 | head -2
echo "ldd misses:"; ldd "$BIN" | grep 'not found' || echo "  none"
grep -m1 'model name' /proc/cpuinfo; nproc

pids=()
say "correctness: gradcheck --depth 64 (mlp euler/heun, conv euler) on flex, cuda:0, libtorch-cuda:0, in parallel"
for dev in flex cuda:0 libtorch-cuda:0; do
  for cfg in "mlp euler" "mlp heun" "conv euler"; do
    set -- $cfg; tag="gradcheck-${dev%%:*}-$1-$2"
    run 120 "$tag" "$BIN" gradcheck --depth 64 --residual "$1" --scheme "$2" --device "$dev" --json "$WORK/$tag.json" &
    pids+=($!)
  done
done
# The Heun MLP in f64 on flex and cuda:0: in f32 CubeCL's Heun reconstruction was 5.6x flex's
# and its gradient error 3e-4 relative, TF32's rounding (session 5), while lavapipe's wgpu paths
# matched flex (session 12; Vulkan registers no TF32). Equal in f64 would put the gap on f32
# kernel choices, not on the algorithm.
for dev in flex cuda:0; do
  tag="gradcheck-${dev%%:*}-mlp-heun64"
  run 120 "$tag" "$BIN" gradcheck --depth 64 --residual mlp --scheme heun --dtype f64 --device "$dev" --json "$WORK/$tag.json" &
  pids+=($!)
done
# The same in f32 with CUBECL_CUDA_TF32=0 (scripts/gpu/patches/: TF32 left unregistered, so
# cubek's tensor-core kernels do not round f32 operands to TF32's 10-bit mantissa): flex's
# figures here put the gap on TF32 alone.
tag=gradcheck-cuda-mlp-heun-notf32
CUBECL_CUDA_TF32=0 run 120 "$tag" "$BIN" gradcheck --depth 64 --residual mlp --scheme heun --device cuda:0 --json "$WORK/$tag.json" &
pids+=($!)
for dev in cuda:0 libtorch-cuda:0; do
  run 120 "train-${dev%%:*}" "$BIN" train --device "$dev" --epochs 3 --out "/tmp/run-${dev%%:*}" &
  pids+=($!)
done
run 120 train-flex "$BIN" train --epochs 3 --out /tmp/run-flex &
pids+=($!)
# The jobs by pid: a bare `wait` would also wait for the log's `tee`, which never ends.
wait "${pids[@]}"
python3 - "$WORK" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
keys = ("max_rel_sq_error", "min_cosine", "reconstruction_error")
rows = []
for cfg in ("mlp-euler", "mlp-heun", "conv-euler", "mlp-heun64", "mlp-heun-notf32"):
    ref_path = f"{out}/gradcheck-flex-{cfg.removesuffix('-notf32')}.json"
    if not os.path.exists(ref_path):
        continue
    ref = json.load(open(ref_path))
    for dev in ("cuda", "libtorch-cuda"):
        if cfg in ("mlp-heun64", "mlp-heun-notf32") and dev != "cuda":
            continue
        p = f"{out}/gradcheck-{dev}-{cfg}.json"
        if not os.path.exists(p):
            rows.append(f"{cfg:15} {dev:14} missing"); continue
        r = json.load(open(p))
        cells = []
        for k in keys:
            a, b = ref.get(k), r.get(k)
            rel = abs(a - b) / max(abs(a), 1e-30) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else float("nan")
            cells.append(f"{k}={b:.6g} (flex {a:.6g}, rel diff {rel:.1e})" if isinstance(b, (int, float)) else f"{k}=?")
        rows.append(f"{cfg:15} {dev:14} " + "; ".join(cells))
print("\n".join(rows))
open(f"{out}/gradcheck-compare.txt", "w").write("\n".join(rows) + "\n")
PY

say "memory: bench memory (one process per configuration, first step read through NVML)"
# One call per workload so each writes its JSON; CubeCL's adjoint is slow per layer (7.7 ms on
# the H200 in session 5: 31 s a step at N = 4096), hence its larger cap.
for dev in cuda:0 libtorch-cuda:0; do
  cap=$([ "$dev" = cuda:0 ] && echo 120 || echo 60)
  run "$cap" "memory-mlp-${dev%%:*}" "$BIN" bench memory --device "$dev" --workloads mlp --depths 8,512,4096 \
    --schemes euler --modes backprop,adjoint --reps 1 --json "$WORK/memory-mlp-${dev%%:*}.json"
  run 60 "memory-conv16-${dev%%:*}" "$BIN" bench memory --device "$dev" --workloads conv16 --depths 8,512 \
    --schemes euler --modes backprop,adjoint --reps 1 --json "$WORK/memory-conv16-${dev%%:*}.json"
done

say "speed: bench train, ours vs PyTorch CUDA (TinyResNet 16/64, ResNet-56)"
for dev in cuda:0 libtorch-cuda:0; do
  run 100 "train-bench-${dev%%:*}" "$BIN" bench train --device "$dev" --models tiny,resnet56 --tiny-depths 16,64 \
    --steps 5 --json "$WORK/train-bench-${dev%%:*}.json"
done
run 100 train-bench-pytorch python3 bench/pytorch/bench_train.py --device cuda --models tiny,resnet56 --tiny-depths 16,64 \
  --steps 5 --json "$WORK/train-bench-pytorch.json"
# The paper's adjoint recomputes batch statistics: ours under the same policy (session 16, CPU:
# 0.94-0.95x its non-view ATen operations per step; the default, cached, 1.46-1.48x).
run 60 train-bench-libtorch-recompute "$BIN" bench train --device libtorch-cuda:0 --models tiny,resnet56 \
  --tiny-depths 16,64 --modes adjoint --bn recompute --steps 5 --json "$WORK/train-bench-libtorch-recompute.json"
say "profile: one step under PyTorch's profiler, ours on libtorch-cuda:0 vs PyTorch CUDA"
# CUDA kernels per step, their device time and the device's busy share (Chrome traces kept).
# On the CPU (session 16) a TinyResNet N = 16 backprop step of ours dispatched 285 ATen ops,
# 268 of them not views, PyTorch's 946 (806), ~530 of which its SGD, which on CUDA runs
# `foreach` kernels, as ours does.
run 60 trace-libtorch "$BIN" bench train --device libtorch-cuda:0 --models tiny,resnet56 --tiny-depths 16 \
  --steps 2 --trace "$WORK/trace-ours"
run 60 trace-pytorch python3 bench/pytorch/bench_train.py --device cuda --models tiny16,resnet56 --schemes euler \
  --steps 2 --trace "$WORK/trace-pytorch"
python3 scripts/trace-summary.py "$WORK/trace-ours" "$WORK/trace-pytorch" --ops 15 | tee "$WORK/trace-summary.txt"
for dev in cuda:0 libtorch-cuda:0; do
  run 60 "speed-${dev%%:*}" "$BIN" bench speed --device "$dev" --workloads mlp,conv16 --depths 8,64 --reps 5 \
    --json "$WORK/speed-${dev%%:*}.json"
done
say "profile: CubeCL's kernels in one backprop and one adjoint MLP run, and TinyResNet (CUBECL_DEBUG_LOG)"
# Every kernel's device time, the autotune choices and the compiled sources; the summary sums
# the times by kernel. Session 13 replaced the adjoint's inner product (a 1x1 output matmul that
# cubek runs on one unit or one cube: 7.7 ms per layer on the H200 in session 5) by a product
# and a device-wide sum; this shows what each adjoint step costs now.
for mode in backprop adjoint; do
  CUBECL_DEBUG_LOG="$WORK/cubecl-$mode.log" run 60 "profile-cuda-$mode" "$BIN" bench speed --device cuda:0 \
    --workloads mlp --depths 64 --schemes euler --modes "$mode" --reps 3 --in-process
  python3 scripts/gpu/kernel-times.py "$WORK/cubecl-$mode.log" | tee "$WORK/kernel-times-$mode.txt"
done
# A TinyResNet step (convolutions, batch norm, ReLU): kernel launches per step on lavapipe were
# 1354 (backprop) and 1721 (adjoint) at N = 16, batch 8, in session 14 (batch norm's composition).
CUBECL_DEBUG_LOG="$WORK/cubecl-tiny.log" run 60 profile-cuda-tiny "$BIN" bench train --device cuda:0 \
  --models tiny --tiny-depths 16 --modes backprop,adjoint --steps 3 --in-process
python3 scripts/gpu/kernel-times.py "$WORK/cubecl-tiny.log" | tee "$WORK/kernel-times-tiny.txt"

say "wgpu devices (vulkan: SPIR-V, wgpu: WGSL), with the time left"
if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES="${VK_DRIVER_FILES:-$icd}"
ldconfig -p | grep -q libvulkan.so.1 || echo "no libvulkan.so.1: carry .gl (see the header)"
for name in vulkan wgpu; do
  [ -f ".gpu/resnet-ode-$name.xz" ] || { echo "no .gpu/resnet-ode-$name.xz"; continue; }
  bin="/tmp/resnet-ode-$name"
  unpack "$name"
  for cfg in "mlp euler" "mlp heun" "conv euler"; do
    set -- $cfg; tag="gradcheck-$name-$1-$2"
    run 60 "$tag" "$bin" gradcheck --depth 64 --residual "$1" --scheme "$2" --device "$name" --json "$WORK/$tag.json"
  done
  run 60 "speed-$name" "$bin" bench speed --device "$name" --workloads mlp,conv16 --depths 8,64 --schemes euler --reps 5 \
    --json "$WORK/speed-$name.json"
  run 60 "train-bench-$name" "$bin" bench train --device "$name" --models tiny --tiny-depths 16 --steps 5 \
    --json "$WORK/train-bench-$name.json"
done
say "done"
tar czf "$OUT/device-check.tar.gz" -C "$WORK" . && ls -la "$OUT"
