#!/usr/bin/env python3
"""Sum CubeCL's per-kernel device times (CUBECL_DEBUG_LOG's profiling lines) by kernel.

    python3 scripts/gpu/kernel-times.py LOG [TOP]

A profiling line reads `| 722.799µs  | SharedSumKernel_f950160b`; a kernel's name is what
follows the time, without its hash. The first launch of each compiled kernel (name and hash)
includes its compilation: it goes to its own column. Prints, per kernel name, the later
launches' count, total and mean, and the first launches' total, largest total first (TOP
rows, default 20). Autotuning's trial launches count as launches: compare logs of equal runs.
"""
import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.*?)\s*$")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: kernel-times.py LOG [TOP]")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    count, total, first = defaultdict(int), defaultdict(float), defaultdict(float)
    seen = set()
    try:
        lines = open(sys.argv[1], encoding="utf-8", errors="replace")
    except OSError as e:
        sys.exit(f"kernel-times: cannot read {sys.argv[1]}: {e}")
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        kernel, ms = m.group(3), float(m.group(1)) * UNITS[m.group(2)]
        name = re.sub(r"_[0-9a-f]{8}$", "", kernel).split(" | ")[0]
        if kernel not in seen:
            seen.add(kernel)
            first[name] += ms
            continue
        count[name] += 1
        total[name] += ms
    rows = sorted(set(total) | set(first), key=lambda n: total[n], reverse=True)
    print(f"{'kernel':40} {'count':>7} {'total ms':>10} {'mean ms':>9} {'first ms':>10}")
    for name in rows[:top]:
        mean = total[name] / count[name] if count[name] else float("nan")
        print(f"{name[:40]:40} {count[name]:7} {total[name]:10.3f} {mean:9.4f} {first[name]:10.3f}")
    print(f"{'all':40} {sum(count.values()):7} {sum(total.values()):10.3f} {'':9} {sum(first.values()):10.3f}")


if __name__ == "__main__":
    main()
