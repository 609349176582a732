"""By-hand check of `resnet-ode eval --init` and `resnet-ode export` against PyTorch (never CI).

Models: He et al.'s CIFAR ResNet-20 (akamaster's naming), torchvision's resnet18 and resnet50,
and PyTorch versions of the paper authors' models (iTinyResnet, Euler and Heun;
tied IResNetAuto2, untied ResNetMemoryCustom; written here after paper.md §3.2 and
../shared/data/authors-state-dicts.md, at a CPU-sized width).

For each model: build it in PyTorch with seeded random weights (batch-norm affine parameters and
running statistics drawn too, so nothing is left at its identity), save its state dict in the
formats a user meets (zip .pth; legacy .th wrapped as {'state_dict': ...} with DataParallel's
'module.' prefix; plain safetensors, written by hand), write a few random PNG images, run
`resnet-ode eval --init ... --json` on them and compare the logits with PyTorch's (eval mode,
f32, tolerance 1e-4 relative to the largest logit). Then `resnet-ode export` the .pth back to
safetensors, load it into a fresh PyTorch module with `load_state_dict(strict=True)` and compare
the logits again.

    pip install torch==2.9.0 torchvision        # a CPU wheel is enough
    cargo build --release
    python bench/pytorch/import_check.py        # from the repository root

Exit status 0 when every check passes.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RESNET_ODE_BIN", ROOT / "target" / "release" / "resnet-ode"))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TOL = 1e-4


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random weights, batch-norm affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1:  # batch-norm weight
                t.copy_(0.5 + 0.5 * torch.rand(t.shape, generator=g))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model.eval()


NORMALISE = {"imagenet": (MEAN, STD), "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))}


def write_images(folder: Path, count: int, size: int, seed: int, preset: str) -> torch.Tensor:
    """`count` random RGB PNGs in folder/0/; returns them normalised as the binary reads them."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    (folder / "0").mkdir(parents=True)
    for i, img in enumerate(pixels):
        Image.fromarray(img, "RGB").save(folder / "0" / f"img_{i:03d}.png")
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean, std = NORMALISE[preset]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def save_safetensors(sd: dict, path: Path) -> None:
    """A minimal safetensors writer (F32), so the `safetensors` package is not needed."""
    header, blobs, offset = {}, [], 0
    for k, v in sd.items():
        b = v.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for k, meta in header.items():
        if k == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        a, b = meta["data_offsets"]
        arr = np.frombuffer(data[base + a : base + b], dtype="<f4").reshape(meta["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


def checkpoint_files(model: torch.nn.Module, folder: Path) -> list[Path]:
    sd = {k: v for k, v in model.state_dict().items()}
    pth, th, st = folder / "model.pth", folder / "model.th", folder / "model.safetensors"
    torch.save(sd, pth)
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "best_prec1": 0.0}
    torch.save(wrapped, th, _use_new_zipfile_serialization=False)
    save_safetensors({k: v for k, v in sd.items() if v.is_floating_point()}, st)
    return [pth, th, st]


class HeBlock(torch.nn.Module):
    """akamaster's CIFAR BasicBlock: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut), option A."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        sc = x if self.pad is None else torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return torch.relu(out + sc)


class HeResNet(torch.nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2) as akamaster/pytorch_resnet_cifar10 names it."""

    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for k, c in enumerate((16, 32, 64)):
            blocks = [HeBlock(cin if j == 0 else c, c, 2 if (k > 0 and j == 0) else 1) for j in range(n)]
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
            cin = c
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TinyResidual(torch.nn.Module):
    """The authors' TinyResidual: bn2(conv2(relu(bn1(conv1 x)))), convolutions with biases."""

    def __init__(self, planes: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class TinyResnet(torch.nn.Module):
    """The authors' iTinyResnet (paper.md §3.4) in its backprop form, Euler or Heun (N − 1 steps)."""

    def __init__(self, n: int, planes: int, heun: bool, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, planes, 5, stride=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.residual_layers = nn.ModuleList([TinyResidual(planes) for _ in range(n)])
        self.linear = nn.Linear(4 * planes, num_classes)
        self.n, self.heun = n, heun

    def forward(self, x):
        out, f, n = torch.relu(self.bn1(self.conv1(x))), self.residual_layers, self.n
        if self.heun:
            for i in range(n - 1):
                fx = f[i](out)
                out = out + (f[i + 1](out + fx / n) + fx) / 2 / n
        else:
            for g in f:
                out = out + g(out) / n
        out = torch.nn.functional.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


class MBottleneck(torch.nn.Module):
    """The authors' pre-activation bottleneck bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(relu x)))))))."""

    def __init__(self, planes: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(4 * planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)

    def forward(self, x):
        relu = torch.relu
        h = self.bn1(self.conv1(relu(x)))
        h = self.bn2(self.conv2(relu(h)))
        return self.bn3(self.conv3(relu(h)))


class ImplicitNet(torch.nn.Module):
    """Tied stack (IResNetAuto2): one MBottleneck, child "1", applied n-1 times with step 1/(n-1)."""

    def __init__(self, planes: int, n: int):
        super().__init__()
        self.add_module("1", MBottleneck(planes))
        self.steps = n - 1

    def forward(self, x):
        f = getattr(self, "1")
        for _ in range(self.steps):
            x = x + f(x) / self.steps
        return x


class UntiedNet(torch.nn.Module):
    """Untied stack (ResNetMemoryCustom): `network.K`, K = 0..n-2, each adding f_K(x)/(n-1)."""

    def __init__(self, planes: int, n: int):
        super().__init__()
        self.network = torch.nn.ModuleList([MBottleneck(planes) for _ in range(n - 1)])

    def forward(self, x):
        for f in self.network:
            x = x + f(x) / len(self.network)
        return x


class AuthorsResNet(torch.nn.Module):
    """The paper authors' CIFAR model (paper.md §3.2) with a width multiplier `planes` (64 in
    the paper): conv3x3 stem, per stage a torchvision Bottleneck then the 1/N stack, ReLU."""

    def __init__(self, layers, planes: int, tied: bool, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        Bottleneck = torchvision.models.resnet.Bottleneck
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        cin = planes
        for k, n in enumerate(layers):
            width, stride = planes << k, 1 if k == 0 else 2
            down = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride=stride, bias=False), nn.BatchNorm2d(4 * width))
            stack = (ImplicitNet if tied else UntiedNet)(width, n)
            setattr(self, f"layer{k + 1}", nn.Sequential(Bottleneck(cin, width, stride, down), stack))
            cin = 4 * width
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for k in range(1, 5):
            x = torch.relu(getattr(self, f"layer{k}")(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def run(args: list[str]) -> str:
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"resnet-ode {' '.join(args)}:\n{out.stderr}")
    return out.stdout


def check(name: str, make, flags: list[str], size: int, seed: int) -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = randomise(make(), seed)
        preset = flags[flags.index("--normalize") + 1] if "--normalize" in flags else "imagenet"
        x = write_images(tmp / "images", 4, size, seed, preset)
        with torch.no_grad():
            ref = model(x)
        data = ["--data", f"images:{tmp / 'images'}", "--json"]
        for path in checkpoint_files(model, tmp):
            out = json.loads(run(["eval", "--init", str(path), *flags, *data]))
            ours = torch.tensor(out["scores"]["logits"], dtype=torch.float32)
            d = rel_diff(ours, ref)
            ok &= d < TOL
            print(f"{name:24} import {path.suffix:13} {out['loaded']:4} tensors  max rel |Δlogit| {d:.2e}  {'ok' if d < TOL else 'FAIL'}")
        exported = tmp / "export.safetensors"
        model_flags = [f for i, f in enumerate(flags) if "--normalize" not in flags[max(i - 1, 0) : i + 1]]
        run(["export", "--init", str(tmp / "model.pth"), *model_flags, "--out", str(exported)])
        fresh = make().eval()
        missing_unexpected = fresh.load_state_dict(load_safetensors(exported), strict=True)
        with torch.no_grad():
            back = fresh(x)
        d = rel_diff(back, ref)
        ok &= d < TOL
        print(f"{name:24} export → load_state_dict(strict=True) {missing_unexpected}  max rel |Δlogit| {d:.2e}  {'ok' if d < TOL else 'FAIL'}")
    return ok


MODELS = [
    ("He et al. resnet20", lambda: HeResNet(3), ["--model", "cifar-resnet20", "--original"], 32),
    ("torchvision resnet18", lambda: torchvision.models.resnet18(num_classes=10), ["--model", "torchvision-resnet18"], 64),
    ("torchvision resnet50", lambda: torchvision.models.resnet50(num_classes=10), ["--model", "torchvision-resnet50"], 64),
    ("authors TinyResnet N=6 P=8", lambda: TinyResnet(6, 8, heun=False),
     ["--model", "tiny", "--depth", "6", "--planes", "8", "--normalize", "cifar10"], 32),
    ("authors TinyResnet Heun N=6", lambda: TinyResnet(6, 8, heun=True),
     ["--model", "tiny", "--depth", "6", "--planes", "8", "--scheme", "heun", "--normalize", "cifar10"], 32),
    ("authors tied [3,2,5,2] w8", lambda: AuthorsResNet([3, 2, 5, 2], 8, tied=True),
     ["--model", "authors-resnet-3-2-5-2", "--planes", "8", "--tied"], 32),
    ("authors untied [3,2,5,2] w8", lambda: AuthorsResNet([3, 2, 5, 2], 8, tied=False),
     ["--model", "authors-resnet-3-2-5-2", "--planes", "8"], 32),
]


def main() -> int:
    if not BIN.exists():
        print(f"{BIN} is missing: run cargo build --release first")
        return 2
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, binary {BIN}")
    torch.manual_seed(0)
    results = [check(name, make, flags, size, seed) for seed, (name, make, flags, size) in enumerate(MODELS)]
    print("all checks passed" if all(results) else "SOME CHECKS FAILED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
