#!/usr/bin/env python3
"""Side-by-side Markdown table of `resnet-ode bench train --json` (ours) and bench_train.py
(PyTorch) records.

    python compare.py out/ours.json out/pytorch.json [--out compare.md]

Rows are matched on (model, depth, scheme, mode); model names are normalised (tiny16 / tiny /
TinyResNet → tiny, resnet56 / cifar-resnet56 → cifar-resnet, a trailing number being the depth
when the record has none). Rows present on one side only are kept, with "–" on the other.
Columns: step time and images/s of each side, ours/PyTorch step-time ratio (> 1: we are
slower), memory of each side (ours: activation_peak_bytes; PyTorch: activation_peak_bytes on
CUDA, else the RSS growth peak_rss_bytes, marked "rss"), and the adjoint/backprop step-time and
memory ratios of our side (and PyTorch's step-time ratio).
Each file may hold a JSON list, an object with a "records" list, or JSON lines.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

ALIASES = {
    "tiny": "tiny", "tinyresnet": "tiny", "itinyresnet": "tiny",
    "resnet": "cifar-resnet", "cifarresnet": "cifar-resnet", "cifar": "cifar-resnet",
}


def load(path: str) -> list:
    with open(path) as f:
        text = f.read().strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        data = data.get("records", [data])
    return data


def key(rec: dict):
    name = str(rec.get("model", rec.get("workload", "?"))).lower()
    m = re.fullmatch(r"(.*?)[-_]?(\d+)", name)
    depth = rec.get("depth")
    if m and m.group(1):
        name = m.group(1)
        if depth is None:
            depth = int(m.group(2))
    base = ALIASES.get(name.replace("-", "").replace("_", ""), name)
    return (base, int(depth) if depth is not None else None,
            str(rec.get("scheme", "euler")).lower(), str(rec.get("mode", "?")).lower())


def index(records: list) -> dict:
    """One record per configuration: the fastest when a configuration ran several times
    (run.sh's ROUNDS; best of R, as timeit reports, on both sides alike)."""
    out = {}
    for r in records:
        k = key(r)
        if k not in out or r.get("step_ms", float("inf")) < out[k].get("step_ms", float("inf")):
            out[k] = r
    return out


def mib(b):
    return None if b is None else b / 2**20


def fmt(v, spec=".1f", suffix=""):
    return "–" if v is None else f"{v:{spec}}{suffix}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def torch_mem(r):
    if r is None:
        return None, ""
    if r.get("activation_peak_bytes") is not None:
        return r["activation_peak_bytes"], ""
    return r.get("peak_rss_bytes"), " rss"


def conv_gflop(model: str, depth, scheme: str, batch: int):
    """Convolution FLOPs (2 per multiply-add, in GFLOP) of one *backprop* training step: every
    convolution's forward, input gradient and weight gradient (3× its forward; the stem's input
    needs no gradient: 2×). TinyResNet: stem 5×5 stride 3, 3 → 16 channels, 32×32 → 10×10, then
    two 3×3 16 → 16 convolutions per residual evaluation at 10×10 (Euler: N evaluations; Heun: its
    N − 1 steps evaluate twice). CIFAR ResNet-L: stem 3×3, 3 → 16 at 32×32, then (L − 2)/6
    blocks of two 3×3 convolutions per stage (16, 32, 64 channels at 32, 16, 8 pixels), each
    stage's first convolution strided (half the input channels, a quarter of the pixels).
    None for other models."""
    def conv(cin, cout, k, pixels):
        return 2 * cin * cout * k * k * pixels * batch
    if model == "tiny" and depth:
        evals = depth if scheme == "euler" else 2 * (depth - 1)
        flops = 2 * conv(3, 16, 5, 100) + 3 * evals * 2 * conv(16, 16, 3, 100)
    elif model == "cifar-resnet" and scheme == "euler" and depth and (depth - 2) % 6 == 0:
        blocks = (depth - 2) // 6
        flops = 2 * conv(3, 16, 3, 1024)
        for i, (c, side) in enumerate([(16, 32), (32, 16), (64, 8)]):
            first = conv(c // 2 if i else c, c, 3, side * side)
            flops += 3 * (first + (2 * blocks - 1) * conv(c, c, 3, side * side))
    else:
        return None
    return flops / 1e9


def flop_table(ours: list, theirs: list, peak: float) -> str:
    """Achieved convolution FLOP rate of each backprop row, as a fraction of `peak` GFLOP/s.
    The step's whole time is the denominator (batch norm, ReLU, the loss and SGD included), so
    this is a lower bound of the convolution kernels' own rate."""
    o, t = index(ours), index(theirs)
    lines = [
        "| model | depth | scheme | conv GFLOP per step | ours GFLOP/s | ours % of peak | "
        "PyTorch GFLOP/s | PyTorch % of peak |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for k in sorted(set(o) | set(t)):
        if k[3] != "backprop":
            continue
        ro, rt = o.get(k), t.get(k)
        batch = (ro or rt).get("batch", 128)
        work = conv_gflop(k[0], k[1], k[2], batch)
        if work is None:
            continue
        rate = lambda r: None if r is None or not r.get("step_ms") else work / (r["step_ms"] / 1e3)  # noqa: E731
        pct = lambda v: None if v is None else 100 * v / peak  # noqa: E731
        lines.append("| " + " | ".join([
            k[0], fmt(k[1], "d"), k[2], fmt(work, ".2f"),
            fmt(rate(ro)), fmt(pct(rate(ro)), ".1f", "%"),
            fmt(rate(rt)), fmt(pct(rate(rt)), ".1f", "%"),
        ]) + " |")
    return "\n".join(lines)


def table(ours: list, theirs: list) -> str:
    o, t = index(ours), index(theirs)
    order = {"backprop": 0, "adjoint": 1}
    keys = sorted(set(o) | set(t), key=lambda k: (k[0], k[1] or 0, k[2], order.get(k[3], 2), k[3]))

    def devices(recs):
        return ", ".join(sorted({str(r.get("device", "?")) for r in recs})) or "–"

    lines = [
        f"ours: {devices(ours)}; PyTorch: {devices(theirs)}",
        "",
        "| model | depth | scheme | mode | batch | ours ms | PyTorch ms | ours/PyTorch | ours img/s | "
        "PyTorch img/s | ours act MiB | PyTorch MiB | ours adj/bp time | ours adj/bp mem | PyTorch adj/bp time |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in keys:
        ro, rt = o.get(k), t.get(k)
        bp = (k[0], k[1], k[2], "backprop")
        ro_bp, rt_bp = o.get(bp), t.get(bp)
        g = lambda r, f: None if r is None else r.get(f)  # noqa: E731
        adj = k[3] != "backprop"
        tm, tag = torch_mem(rt)
        batch = g(ro, "batch") or g(rt, "batch")
        lines.append("| " + " | ".join([
            k[0], fmt(k[1], "d"), k[2], k[3], fmt(batch, "d"),
            fmt(g(ro, "step_ms")), fmt(g(rt, "step_ms")),
            fmt(ratio(g(ro, "step_ms"), g(rt, "step_ms")), ".2f", "×"),
            fmt(g(ro, "images_per_sec")), fmt(g(rt, "images_per_sec")),
            fmt(mib(g(ro, "activation_peak_bytes"))), fmt(mib(tm), ".1f", tag),
            fmt(ratio(g(ro, "step_ms"), g(ro_bp, "step_ms")) if adj else None, ".2f", "×"),
            fmt(ratio(g(ro, "activation_peak_bytes"), g(ro_bp, "activation_peak_bytes")) if adj else None,
                ".3f", "×"),
            fmt(ratio(g(rt, "step_ms"), g(rt_bp, "step_ms")) if adj else None, ".2f", "×"),
        ]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours", help="JSON from `resnet-ode bench train --json`")
    ap.add_argument("pytorch", help="JSON from bench_train.py --json")
    ap.add_argument("--out", help="also write the table to FILE")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="the CPU's FMA peak in GFLOP/s; adds the convolutions' achieved FLOP rate "
                         "of every backprop row as a fraction of it")
    args = ap.parse_args()
    md = table(load(args.ours), load(args.pytorch))
    if args.peak_gflops:
        md += "\n\n" + flop_table(load(args.ours), load(args.pytorch), args.peak_gflops)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
