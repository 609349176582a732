#!/usr/bin/env python3
"""PyTorch reference for `resnet-ode bench train`: time full SGD training steps.

For each model × scheme × gradient mode: batch of random 3×32×32 inputs (fixed seed) with
random labels, cross-entropy, SGD(lr 0.1, momentum 0.9, weight decay 5e-4). Two warm-up steps,
then --steps timed steps; reports the median step time, images/s and peak memory.

Memory: on CPU, ``peak_rss_bytes`` = process max RSS (getrusage) at the end minus the current
RSS just before the first step (model, data, torch already resident). It includes the
optimizer's momentum buffers and the gradients, and allocator slack. Each configuration runs in
its own subprocess by default (--no-isolate to disable) because max RSS never goes down. On
CUDA, ``activation_peak_bytes`` = torch.cuda.max_memory_allocated over the timed steps minus the
allocated bytes before them (parameters + optimizer state) minus the gradient bytes held after
the step, i.e. the same quantity the Rust side reports as activation peak.

    python bench_train.py --check                     # adjoint vs backprop gradient self-check
    python bench_train.py --models tiny16,resnet56 --steps 3 --json out/pytorch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import TinyResNet, build_model, parse_model_name  # noqa: E402

DEFAULT_MODELS = "tiny16,tiny64,tiny256,resnet56,resnet110"  # or: tiny,resnet56 --tiny-depths 16


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss_bytes()


def max_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# One configuration
# ---------------------------------------------------------------------------------------------


def run_one(cfg: dict) -> dict:
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg["model"], cfg["depth"], cfg["scheme"], cfg["mode"],
                        planes=cfg["planes"], shortcut=cfg["shortcut"]).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    x = torch.randn(cfg["batch"], 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (cfg["batch"],), generator=gen).to(device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # .item() also synchronises

    rss_before = current_rss_bytes()
    for _ in range(cfg["warmup"]):
        step()
    act_peak = None
    if device.type == "cuda":
        opt.zero_grad(set_to_none=True)
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(cfg["steps"]):
        sync(device)
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        act_peak = torch.cuda.max_memory_allocated(device) - base - grad_bytes
    peak_rss = max(max_rss_bytes() - rss_before, 0)
    if cfg.get("trace"):
        trace_step(step, device, cfg)
    med = statistics.median(times)
    return {
        "impl": "pytorch",
        # Named as the Rust records: "tiny" (depth = N) or "resnetL" (depth = L).
        "model": "tiny" if cfg["model"] == "tiny" else f"resnet{cfg['depth']}",
        "depth": cfg["depth"],
        "scheme": cfg["scheme"],
        "mode": cfg["mode"],
        "batch": cfg["batch"],
        "step_ms": med * 1e3,
        "step_ms_all": [t * 1e3 for t in times],
        "images_per_sec": cfg["batch"] / med,
        "peak_rss_bytes": peak_rss,
        "activation_peak_bytes": act_peak,
        "parameter_bytes": param_bytes,
        "final_loss": loss,
        "device": str(device),
        "threads": cfg["threads"],
        "torch": torch.__version__,
        "host": platform.node(),
    }


def trace_step(step, device: torch.device, cfg: dict) -> None:
    """One more step, untimed, under torch.profiler (Kineto), saved as a Chrome trace named as
    `resnet-ode bench train --trace` names its own (TRACE/tiny16-euler-adjoint.json), so that
    scripts/trace-summary.py reads both with the same instrument."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    name = f"tiny{cfg['depth']}" if cfg["model"] == "tiny" else f"resnet{cfg['depth']}"
    path = os.path.join(cfg["trace"], f"{name}-{cfg['scheme']}-{cfg['mode']}.json")
    os.makedirs(cfg["trace"], exist_ok=True)
    with profile(activities=activities) as prof:
        step()
        sync(device)
    tmp = path + ".tmp"
    prof.export_chrome_trace(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Gradient self-check
# ---------------------------------------------------------------------------------------------


def _tiny_pair(depth: int, scheme: str, zero_init: bool):
    """A float64 TinyResNet in backprop mode and an identical copy in adjoint mode."""
    ref = TinyResNet(depth, scheme=scheme, mode="backprop", zero_init=zero_init).double()
    if not zero_init:  # piecewise constant in depth, 8 distinct functions (the authors' init)
        base = TinyResNet(8, scheme=scheme, zero_init=False).double()
        for i, f in enumerate(ref.stack.functions):
            f.load_state_dict(base.stack.functions[i * 8 // depth].state_dict())
    adj = TinyResNet(depth, scheme=scheme, mode="adjoint", zero_init=zero_init).double()
    adj.load_state_dict(ref.state_dict())
    return ref, adj


def _use_true_activations(stack) -> None:
    """Oracle: make the adjoint's reverse step return the stored forward activations, so only
    the VJP/accumulation machinery is tested (it must then equal backprop to round-off)."""
    acts = []

    def forward_plain(x):
        acts.clear()
        acts.append(x)
        for i in range(stack.num_steps):
            x = stack.step(i, x)
            acts.append(x)
        return x

    stack.forward_plain = forward_plain
    stack.reverse_step = lambda i, y: acts[i]


def _grads(nets, x, y):
    out = []
    for net in nets:
        net.train()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        out.append({k: p.grad.detach().clone() for k, p in net.named_parameters()})
    return out


def grad_check(depth: int = 16, batch: int = 16, seed: int = 0) -> bool:
    """Adjoint vs backprop gradients of a TinyResNet, float64, BN in train mode.

    1. Chained reconstruction (the real adjoint) vs backprop: asserts cosine > 0.99 over all
       parameters. The last BN of each residual is NOT zero-initialised (with the default zero
       init every residual is 0, the reversal is exact and the check would be vacuous); the
       functions are piecewise constant in depth. Per non-bias tensor it prints the worst cosine
       and the squared relative error mean((g_b-g_a)^2)/mean(g_b^2) of compare_gradients.py;
       these are reconstruction errors (O(1/N)), not asserted.
    2. The same with an oracle reversal (true activations): must match backprop to 1e-9
       relative, for Euler and Heun (tests the VJPs and the summing of Heun's double uses).
    3. Zero-init (exact reversal): must match backprop to 1e-10.
    """
    torch.manual_seed(seed)
    ok = True
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,))
    for scheme in ("euler", "heun"):
        ref, adj = _tiny_pair(depth, scheme, zero_init=False)
        gb, ga = _grads((ref, adj), x, y)
        total = F.cosine_similarity(torch.cat([g.flatten() for g in gb.values()]),
                                    torch.cat([g.flatten() for g in ga.values()]), dim=0).item()
        worst_cos, worst_name, rel = 1.0, "", []
        for k, g in gb.items():
            if "bias" in k or g.norm() == 0:
                continue
            a = ga[k]
            c = F.cosine_similarity(g.flatten(), a.flatten(), dim=0).item()
            rel.append(((g - a) ** 2).mean().item() / (g ** 2).mean().item())
            if c < worst_cos:
                worst_cos, worst_name = c, k
        passed = total > 0.99
        ok &= passed
        print(f"check tiny N={depth} {scheme:5s} f64 adjoint vs backprop: cosine(all params) = {total:.6f} "
              f"-> {'PASS' if passed else 'FAIL'} (> 0.99); per non-bias tensor: worst cosine "
              f"{worst_cos:.4f} ({worst_name}), sq. rel. error median {statistics.median(rel):.1e} "
              f"max {max(rel):.1e}")

        _use_true_activations(adj.stack)
        gb, ga = _grads((ref, adj), x, y)
        err = max(((gb[k] - ga[k]).norm() / gb[k].norm().clamp_min(1e-300)).item() for k in gb)
        exact = err < 1e-9
        ok &= exact
        print(f"check tiny N={depth} {scheme:5s} f64 oracle reversal (true activations): "
              f"max_tensor |g_b-g_a|/|g_b| = {err:.1e} -> {'PASS' if exact else 'FAIL'} (< 1e-9)")

    ref, adj = _tiny_pair(depth, "euler", zero_init=True)
    gb, ga = _grads((ref, adj), x, y)
    err = max((gb[k] - ga[k]).abs().max().item() for k in gb)
    exact = err < 1e-10
    ok &= exact
    print(f"check tiny N={depth} euler f64 zero-init (exact reversal): max |g_b-g_a| = {err:.1e} "
          f"-> {'PASS' if exact else 'FAIL'} (< 1e-10)")
    print("check:", "PASS" if ok else "FAIL")
    return ok


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def configs(args) -> list:
    out = []
    names = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name.lower() in ("tiny", "tinyresnet"):  # Rust style: --models tiny --tiny-depths ...
            names += [f"tiny{d}" for d in args.tiny_depths.split(",") if d]
        else:
            names.append(name)
    for name in names:
        model, depth = parse_model_name(name)
        schemes = args.schemes.split(",") if args.schemes else (
            ["euler", "heun"] if model == "tiny" else ["euler"])
        for scheme in schemes:
            for mode in [m for m in args.modes.split(",") if m]:
                out.append(dict(model=model, depth=depth, scheme=scheme, mode=mode,
                                batch=args.batch, steps=args.steps, warmup=args.warmup,
                                device=args.device, threads=args.threads, seed=args.seed,
                                planes=args.planes, shortcut=args.shortcut, trace=args.trace))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    ap.add_argument("--tiny-depths", default="16,64,256",
                    help="depths for a bare `tiny` in --models (as the Rust CLI); tinyN names one depth")
    ap.add_argument("--modes", default="backprop,adjoint")
    ap.add_argument("--schemes", default=None,
                    help="comma-separated; default euler,heun for tiny and euler for resnet")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planes", type=int, default=16, help="TinyResNet width P")
    ap.add_argument("--shortcut", choices=("A", "B"), default="A",
                    help="CIFAR ResNet downsampling shortcut: A = subsample + zero-pad (as the Rust "
                         "model), B = 1x1 conv + BN")
    ap.add_argument("--json", default=None, help="write the records (a JSON list) to FILE")
    ap.add_argument("--trace", default=None, metavar="DIR",
                    help="after the timed steps, profile one more (torch.profiler) into "
                         "DIR/MODEL-SCHEME-MODE.json, as `resnet-ode bench train --trace`")
    ap.add_argument("--no-isolate", action="store_true",
                    help="run all configurations in this process (max RSS is then cumulative)")
    ap.add_argument("--check", action="store_true", help="adjoint-vs-backprop gradient self-check, then exit")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one config as JSON
    args = ap.parse_args()

    if args.one is not None:
        print("RECORD " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    torch.set_num_threads(args.threads)
    if args.check:
        return 0 if grad_check() else 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    mem_col = "act MiB" if args.device.startswith("cuda") else "RSS+ MiB"
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    print(f"{'model':<13} {'depth':>5} {'scheme':<6} {'mode':<9} {'step ms':>9} {'img/s':>8} {mem_col:>9}")
    records = []
    for cfg in configs(args):
        if args.no_isolate:
            rec = run_one(cfg)
        else:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", json.dumps(cfg)],
                                  capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RECORD ")]
            if proc.returncode != 0 or not lines:
                sys.stderr.write(proc.stderr)
                print(f"error: {cfg['model']}{cfg['depth']} {cfg['scheme']} {cfg['mode']} failed", file=sys.stderr)
                return 1
            rec = json.loads(lines[-1][len("RECORD "):])
        mem = rec["activation_peak_bytes"] if rec["activation_peak_bytes"] is not None else rec["peak_rss_bytes"]
        print(f"{rec['model']:<13} {rec['depth']:>5} {rec['scheme']:<6} {rec['mode']:<9} "
              f"{rec['step_ms']:>9.1f} {rec['images_per_sec']:>8.1f} {mem / 2**20:>9.1f}", flush=True)
        records.append(rec)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
