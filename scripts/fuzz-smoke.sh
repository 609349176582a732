#!/usr/bin/env bash
# Runs every fuzz target briefly (default 20 s each) from fuzz/seeds (make_seeds.py), replay/ and corpus/; exits non-zero
# on the first crash, leaving the input in fuzz/artifacts/TARGET/. .ci/run calls it with 15 s
# after the tests (the instrumented build: 7 min cold on 2 cores in session 10). libFuzzer's
# seed is fixed (FUZZ_SEED, default 1), so a run that fails replays the same inputs.
# Usage: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(idx idx_gz cifar image_folder safetensors checkpoint run_json cli)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# -s none: no sanitizer, so no -Z flag reaches rustc and the stable toolchain builds it.
cargo fuzz build -s none
work="$(mktemp -d)"
trap 'rm -rf "$work" /dev/shm/resnet-ode-fuzz-* /tmp/resnet-ode-fuzz-*' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  echo "== $t (${secs} s)"
  # New inputs go to a scratch folder; seeds and corpus are only read. RSS may reach 4 GB
  # (burn-autodiff keeps ~17 KB per weights file loaded: the safetensors target), one
  # allocation 2 GB.
  # Seeds: python3 fuzz/make_seeds.py (run first); corpus/ if a minimised one is present.
  mkdir -p "corpus/$t" "seeds/$t" "replay/$t"
  cargo fuzz run -s none "$t" "$work/$t" "corpus/$t" "seeds/$t" "replay/$t" -- -max_total_time="$secs" -seed="${FUZZ_SEED:-1}" -timeout=10 \
    -rss_limit_mb=4096 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|Done|==[0-9]+==|SUMMARY)|panicked' || true
  # A crash makes libFuzzer exit non-zero and write crash-*/oom-*/timeout-* here.
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t failed: $(ls "artifacts/$t")" >&2
    exit 1
  fi
done
echo "all ${#targets[@]} fuzz targets ran ${secs} s each without a crash"
