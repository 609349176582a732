#!/usr/bin/env python3
"""Summarise PyTorch-profiler traces of one training step each: ours (`resnet-ode bench train
--trace DIR` on a LibTorch device) beside PyTorch's (`bench/pytorch/bench_train.py --trace DIR`).

    scripts/trace-summary.py OURS_DIR [PYTORCH_DIR] [--ops N]

Per configuration (file name, e.g. tiny16-euler-adjoint.json), per side:
- ops: ATen operations called from outside ATen (by our Rust code, or by PyTorch's Python and
  autograd engine; `aten::conv2d` → … → `aten::mkldnn_convolution` counts once), each one
  dispatch on the host, and on CUDA usually one or more kernel launches;
- views: those of them that only make a view (VIEWS below: no kernel on any device, host
  work only), so ops − views is what launches kernels on a GPU;
- in optimizer: of the ops that are not views, those inside PyTorch's `Optimizer.step`
  annotation (its SGD: per parameter on the CPU, a few `foreach` kernels on CUDA; ours carries
  no such annotation: `-`);
- host ms: their summed duration; span ms: first event to last;
- on CUDA traces: kernels launched, their summed device time, memcpy/memset count, and the
  device's busy share of the span.
With --ops N, the N ops whose counts differ most between the two sides.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

# Operations that make a view or read metadata: no kernel on any device (host work only).
VIEWS = {
    "aten::reshape", "aten::view", "aten::_unsafe_view", "aten::slice", "aten::select",
    "aten::as_strided", "aten::t", "aten::transpose", "aten::permute", "aten::expand",
    "aten::squeeze", "aten::unsqueeze", "aten::detach", "aten::alias", "aten::split",
    "aten::split_with_sizes", "aten::flatten", "aten::view_as", "aten::narrow", "aten::unbind",
}

def outermost(ops: list) -> list:
    """The events of `ops` that no other contains, on each thread (the profiler nests an op's
    callees inside it in time, on its thread)."""
    top = []
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        end = -1.0
        for e in evs:
            if e["ts"] >= end:
                top.append(e)
                end = e["ts"] + e["dur"]
    return top


def summary(path: str) -> dict:
    with open(path) as f:
        events = json.load(f).get("traceEvents", [])
    timed = [e for e in events if "ts" in e and "dur" in e]
    span = (max(e["ts"] + e["dur"] for e in timed) - min(e["ts"] for e in timed)) if timed else 0
    ops = [e for e in events if e.get("cat") == "cpu_op" and e.get("name", "").startswith("aten::")
           and "dur" in e]
    top = outermost(ops)
    steps = [e for e in events if e.get("name", "").startswith("Optimizer.step") and "dur" in e]
    in_step = [e for e in top if e["name"] not in VIEWS
               and any(o["ts"] <= e["ts"] < o["ts"] + o["dur"] for o in steps)]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    copies = [e for e in events if e.get("cat") in ("gpu_memcpy", "gpu_memset")]
    busy = sum(e["dur"] for e in kernels + copies)
    return {
        "ops": len(top),
        "views": sum(e["name"] in VIEWS for e in top),
        "optimizer": len(in_step) if steps else None,
        "host_ms": sum(e["dur"] for e in top) / 1e3,
        "span_ms": span / 1e3,
        "kernels": len(kernels),
        "kernel_ms": sum(e["dur"] for e in kernels) / 1e3,
        "copies": len(copies),
        "busy": busy / span if span else 0.0,
        "counts": collections.Counter(e["name"] for e in top),
    }


def row(name: str, side: str, s: dict) -> str:
    gpu = (f" {s['kernels']:>8} {s['kernel_ms']:>10.2f} {s['copies']:>7} {100 * s['busy']:>6.1f}%"
           if s["kernels"] else "")
    opt = "-" if s["optimizer"] is None else s["optimizer"]
    return (f"{name:<28} {side:<8} {s['ops']:>6} {s['views']:>6} {opt:>6} {s['host_ms']:>8.2f} "
            f"{s['span_ms']:>8.2f}{gpu}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours")
    ap.add_argument("pytorch", nargs="?")
    ap.add_argument("--ops", type=int, default=0, help="list the N ops whose counts differ most")
    args = ap.parse_args()
    sides = [("ours", args.ours)] + ([("pytorch", args.pytorch)] if args.pytorch else [])
    for _, d in sides:
        if not os.path.isdir(d):
            print(f"error: {d}: not a folder of traces", file=sys.stderr)
            return 2
    names = sorted(n for n in os.listdir(args.ours) if n.endswith(".json"))
    if not names:
        print(f"error: {args.ours}: no .json traces", file=sys.stderr)
        return 2
    print(f"{'configuration':<28} {'side':<8} {'ops':>6} {'views':>6} {'optim':>6} {'host ms':>8} "
          f"{'span ms':>8} {'kernels':>8} {'kernel ms':>10} {'copies':>7} {'busy':>7}")
    for name in names:
        stats = {}
        for side, d in sides:
            path = os.path.join(d, name)
            if os.path.exists(path):
                stats[side] = summary(path)
                print(row(name[:-5], side, stats[side]))
        if args.ops and len(stats) == 2:
            a, b = stats["ours"]["counts"], stats["pytorch"]["counts"]
            diff = sorted(set(a) | set(b), key=lambda k: -abs(a[k] - b[k]))[: args.ops]
            for k in diff:
                print(f"    {k:<48} ours {a[k]:>5}  pytorch {b[k]:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
