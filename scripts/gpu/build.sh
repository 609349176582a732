#!/usr/bin/env bash
# Builds the GPU binary of resnet-ode offline-capable, from nothing but PyPI and crates.io:
#   one stripped binary with `--features tch,cuda` (CubeCL CUDA + LibTorch CUDA 2.11),
#   with VULKAN=1 one with `--features vulkan` (wgpu/SPIR-V), and with WGPU=1 one with
#   `--features wgpu` (wgpu/WGSL on Vulkan, Metal or DirectX 12),
# each compressed with xz into .gpu/ (ignored by git) for carrying to a GPU machine.
#
# Never run by CI; the default build and `cargo test` need none of this.
#
# Why the detours (see ../shared/gpu-build.md when it is there, and NOTES.md):
# - cubecl-cuda always links cubecl-llvm, whose build downloads Tracel's LLVM bundle unless
#   `<XDG_DATA_HOME>/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed` exists. PyPI's
#   mlc-llvm-static 23.1.1 (+ extra targets for NVPTX) is a relocatable static LLVM 23: we put
#   it there with the marker, and the bundler never reaches the network.
# - burn-tch must be compiled against the torch the GPU machine runs (2.11.0+cu130): a binary
#   built against 2.9.0 misses six symbols there. Only torch/include and torch/lib are needed.
# - CUDARC_CUDA_VERSION=13000 binds cudarc to the CUDA 13.0 driver (else it picks 13.4).
# - Two upstream crates get a patch each (scripts/gpu/patches/): cubecl-spirv 0.11.3, without
#   which every kernel with shared memory is invalid SPIR-V on drivers lacking explicit
#   workgroup layouts (Mesa's lavapipe segfaults on the first matmul), and cubecl-cuda 0.11.3,
#   which gains CUBECL_CUDA_TF32=0 to keep f32 matmuls and convolutions in f32.
#
# Usage: scripts/gpu/build.sh            (cache in ~/.cache/resnet-ode-gpu, or $GPU_CACHE)
#        VULKAN=1 scripts/gpu/build.sh   (also the vulkan binary)
#        WGPU=1 scripts/gpu/build.sh     (also the wgpu binary)
#        CUDA=0 VULKAN=1 scripts/gpu/build.sh   (only the vulkan binary: no LLVM, no torch)
#        JOBS=1 scripts/gpu/build.sh     (cargo -j; default: all cores, at nice 19)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${GPU_CACHE:-$HOME/.cache/resnet-ode-gpu}"
JOBS="${JOBS:-$(nproc)}"
PY="${PYTHON:-python3}"
LLVM_VERSION=23.1.1.post0
TORCH_VERSION=2.11.0
mkdir -p "$CACHE/wheels" "$ROOT/.gpu"
started=$(date +%s)
say() { printf '== [%4ds] %s\n' "$(( $(date +%s) - started ))" "$*"; }

build() { # build FEATURES NAME [CARGO ARGS...]
  local features=$1 name=$2 target="$ROOT/target/gpu-$2"; shift 2
  say "cargo build --release --features $features $* (target $target, -j $JOBS, nice 19)"
  (cd "$ROOT" && env -u LIBTORCH_USE_PYTORCH \
     CUDARC_CUDA_VERSION=13000 LIBTORCH="${TORCH_DIR:-}/torch" LIBTORCH_BYPASS_VERSION_CHECK=1 \
     CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$target" \
     nice -n 19 cargo build --release -j "$JOBS" --features "$features" --bin resnet-ode "$@")
  local bin="$target/release/resnet-ode"
  say "$name: $(stat -c %s "$bin") bytes stripped; NEEDED: $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
  xz -T0 -9 -c "$bin" > "$ROOT/.gpu/resnet-ode-$name.xz.tmp"
  mv "$ROOT/.gpu/resnet-ode-$name.xz.tmp" "$ROOT/.gpu/resnet-ode-$name.xz"
  say "$name: .gpu/resnet-ode-$name.xz $(stat -c %s "$ROOT/.gpu/resnet-ode-$name.xz") bytes"
}

# patched CRATE VERSION: a copy of the registry's CRATE-VERSION in the cache with every
# scripts/gpu/patches/CRATE-VERSION-*.patch applied (redone when the patches change); prints
# cargo's `--config` value that builds against it. Such a patch makes cargo rewrite Cargo.lock's
# entry: the lock is put back when this script exits.
patched() {
  local crate=$1 version=$2 dir="$CACHE/$1-$2-patched" src p stamp
  local patches=("$ROOT"/scripts/gpu/patches/"$crate-$version"-*.patch)
  stamp=$(cat "${patches[@]}" | sha256sum | cut -c1-16)
  if [ "$(cat "$dir/.patched" 2>/dev/null)" != "$stamp" ]; then
    say "$crate $version + ${patches[*]##*/}" >&2
    (cd "$ROOT" && cargo fetch -q)
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate-$version" | head -n 1)
    rm -rf "$dir"; cp -r "$src" "$dir"
    for p in "${patches[@]}"; do patch -s -d "$dir" -p1 < "$p"; done
    echo "$stamp" > "$dir/.patched"
  fi
  printf 'patch.crates-io.%s.path="%s"' "$crate" "$dir"
}
SAVED_LOCK=$(mktemp); cp "$ROOT/Cargo.lock" "$SAVED_LOCK"
trap 'cp "$SAVED_LOCK" "$ROOT/Cargo.lock"; rm -f "$SAVED_LOCK"' EXIT

if [ "${CUDA:-1}" = 1 ]; then
# 1. Wheels (about 620 MB), downloaded once.
pipdl() { "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 -d "$CACHE/wheels" "$@"; }
if ! ls "$CACHE"/wheels/mlc_llvm_static-"$LLVM_VERSION"-*.whl >/dev/null 2>&1 \
   || ! ls "$CACHE"/wheels/mlc_llvm_static_extra_targets-"$LLVM_VERSION"-*.whl >/dev/null 2>&1; then
  say "downloading mlc-llvm-static $LLVM_VERSION"
  pipdl --python-version 3.11 "mlc-llvm-static==$LLVM_VERSION" "mlc-llvm-static-extra-targets==$LLVM_VERSION"
fi
if ! ls "$CACHE"/wheels/torch-"$TORCH_VERSION"-cp312-*.whl >/dev/null 2>&1; then
  say "downloading torch $TORCH_VERSION (cp312, cu130)"
  pipdl --python-version 3.12 --implementation cp "torch==$TORCH_VERSION"
fi

# 2. LLVM where tracel-llvm-bundler looks, with its "installed" marker.
LLVM_DIR="$CACHE/mlc-llvm"
if [ ! -x "$LLVM_DIR/mlc_llvm_static/static/bin/llvm-config" ]; then
  say "unpacking LLVM"
  rm -rf "$LLVM_DIR"
  "$PY" -m pip install -q --no-deps --no-compile --target "$LLVM_DIR" \
    "$CACHE"/wheels/mlc_llvm_static-"$LLVM_VERSION"-*.whl \
    "$CACHE"/wheels/mlc_llvm_static_extra_targets-"$LLVM_VERSION"-*.whl
fi
export XDG_DATA_HOME="$CACHE/xdg"
mkdir -p "$XDG_DATA_HOME/tracel"
ln -sfn "$LLVM_DIR/mlc_llvm_static/static" "$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4"
# Created once: the bundler's build script reruns (and cubecl and burn rebuild) whenever the
# marker's modification time changes.
marker="$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed"
[ -e "$marker" ] || touch "$marker"
"$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/bin/llvm-config" --targets-built | grep -q NVPTX \
  || { echo "the unpacked LLVM lacks the NVPTX target" >&2; exit 1; }

# 3. LibTorch 2.11 headers and libraries (no Python install).
TORCH_DIR="$CACHE/torch$TORCH_VERSION"
if [ ! -f "$TORCH_DIR/torch/lib/libtorch_cuda.so" ]; then
  say "unpacking torch/include and torch/lib"
  rm -rf "$TORCH_DIR"; mkdir -p "$TORCH_DIR"
  "$PY" - "$TORCH_DIR" "$CACHE"/wheels/torch-"$TORCH_VERSION"-cp312-*.whl <<'PYEOF'
import sys, zipfile
wanted = ("torch/include/", "torch/lib/", "torch/share/", "torch/version.py")
with zipfile.ZipFile(sys.argv[2]) as z:
    z.extractall(sys.argv[1], [n for n in z.namelist() if n.startswith(wanted)])
PYEOF
fi
grep -h "__version__\|git_version" "$TORCH_DIR/torch/version.py"

cfg=$(patched cubecl-cuda 0.11.3)
build tch,cuda cuda --config "$cfg"
fi
if [ "${VULKAN:-0}" = 1 ]; then cfg=$(patched cubecl-spirv 0.11.3); build vulkan vulkan --config "$cfg"; fi
if [ "${WGPU:-0}" = 1 ]; then build wgpu wgpu; fi
git -C "$ROOT" rev-parse HEAD > "$ROOT/.gpu/commit"
say "done; carry .gpu to the GPU machine and run scripts/gpu/device-check.sh there"
