"""Plain-PyTorch reference models for the resnet-ode benchmark.

The same models as the Rust side (src/models/tiny.rs, src/models/cifar.rs), with two gradient
modes per residual stack:

* ``backprop``: ordinary autograd through every step (activation memory O(N)).
* ``adjoint``: the memory-free discrete adjoint of Sander, Ablin & Peyré (NeurIPS 2022), the
  algorithm of ``resnet_ode/resnet_memory.py::ResNetTransformMemory`` (paper.md §1.2, §1.4):
  the forward keeps only x_N; the backward walks n = N-1..0, reconstructs x_n from x_{n+1} by a
  reverse-time step of the same scheme (chained: errors accumulate across depth), recomputes the
  step with autograd at the reconstructed x_n and takes its vector-Jacobian product.

Unlike the authors' code, parameter gradients are SUMMED over every step that uses a
parameter (Heun uses f_{i+1} in steps i and i+1; tied weights are used N times). The authors'
flattening keeps only the first contribution (paper.md §1.4, §5.9); we do not copy that bug.

BatchNorm stays in train mode throughout (batch statistics in the forward, the reconstruction
and the recomputation), as in the authors' CIFAR code (paper.md §5.3). A consequence: in adjoint
mode every BN's running statistics are updated three times per step (forward, reconstruction,
recomputation; more for Heun, whose functions appear in two steps), whereas in backprop mode
they are updated once. The Rust side updates them once in both modes; the running stats do not
affect training-mode outputs or gradients, only later eval-mode inference.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMES = ("euler", "heun")
MODES = ("backprop", "adjoint")


# ---------------------------------------------------------------------------------------------
# Residual function
# ---------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """``conv3×3 → BN → ReLU → conv3×3 → BN`` (both convs with bias), channels kept.

    TinyResNet's ``TinyResidual`` (paper.md §3.4) and the residual of the CIFAR ResNets' scaled
    stacks (the Rust ``ConvBlock``). ``zero_init`` zeroes the last BN's weight and bias, so the
    block is exactly 0 at init (TinyResNet's default; off for the CIFAR ResNets, as in Rust).
    """

    def __init__(self, channels: int, zero_init: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.bn2.weight)
            nn.init.zeros_(self.bn2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(h))


# ---------------------------------------------------------------------------------------------
# Residual stack: steps, reverse steps, and the memory-free adjoint
# ---------------------------------------------------------------------------------------------


def _unique(params: Iterable[torch.Tensor]) -> List[torch.Tensor]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class ResidualStack(nn.Module):
    """N residual functions integrated on [0, 1] with step 1/N (paper.md §1.1, §1.3).

    * Euler: N steps ``x ← x + f_n(x)/N``.
    * Heun: N−1 steps of size 1/N (the authors' HeunNet):
      ``x ← x + (f_i(x) + f_{i+1}(x + f_i(x)/N)) / (2N)``.
    """

    def __init__(self, functions: Sequence[nn.Module], scheme: str = "euler", mode: str = "backprop"):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.functions = nn.ModuleList(functions)
        self.scheme = scheme
        self.mode = mode

    @property
    def n(self) -> int:
        return len(self.functions)

    @property
    def num_steps(self) -> int:
        return self.n if self.scheme == "euler" else max(self.n - 1, 0)

    # -- one step and its reversal ----------------------------------------------------------

    def step(self, i: int, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        if self.scheme == "euler":
            return x + self.functions[i](x) / n
        u = self.functions[i](x)
        v = self.functions[i + 1](x + u / n)
        return x + (u + v) / (2 * n)

    def reverse_step(self, i: int, y: torch.Tensor) -> torch.Tensor:
        """Approximate inverse of :meth:`step` (paper.md §1.2 Euler, §1.4 Heun)."""
        n = self.n
        if self.scheme == "euler":
            return y - self.functions[i](y) / n
        v = self.functions[i + 1](y)
        u = self.functions[i](y - v / n)
        return y - (v + u) / (2 * n)

    def step_params(self, i: int) -> List[torch.Tensor]:
        mods = [self.functions[i]] if self.scheme == "euler" else [self.functions[i], self.functions[i + 1]]
        return _unique(p for m in mods for p in m.parameters() if p.requires_grad)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_steps):
            x = self.step(i, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_steps == 0:
            return x
        if self.mode == "backprop" or not torch.is_grad_enabled():
            return self.forward_plain(x)
        params = _unique(p for p in self.parameters() if p.requires_grad)
        return _StackAdjoint.apply(x, self, *params)


class _StackAdjoint(torch.autograd.Function):
    """Memory-free discrete adjoint over a whole :class:`ResidualStack`.

    Forward: the plain recursion under no_grad; only x_N is saved.
    Backward (``ResNetTransformMemory.backward``, chained reconstruction): g = dL/dx_N, then for
    n = N−1..0
      1. x̃_n = reverse_step(n, x̃_{n+1})                  (no_grad)
      2. out = step(n, x̃_n) with autograd at x̃_n        (enable_grad)
      3. (g, dθ_n) = VJP of out at g; dθ accumulated (summed) over all uses
    """

    @staticmethod
    def forward(ctx, x, stack, *params):  # grad mode is off inside Function.forward
        ctx.stack = stack
        y = stack.forward_plain(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved_tensors
        stack: ResidualStack = ctx.stack
        all_params = _unique(p for p in stack.parameters() if p.requires_grad)
        index = {id(p): k for k, p in enumerate(all_params)}
        grads: List[torch.Tensor | None] = [None] * len(all_params)

        g = grad_out
        x_next = y.detach()
        for i in reversed(range(stack.num_steps)):
            with torch.no_grad():
                x_i = stack.reverse_step(i, x_next)
            x_i = x_i.detach().requires_grad_()
            params_i = stack.step_params(i)
            with torch.enable_grad():
                out = stack.step(i, x_i)
                res = torch.autograd.grad(out, [x_i] + params_i, grad_outputs=g, allow_unused=True)
            del out
            g = res[0]
            for p, dp in zip(params_i, res[1:]):
                if dp is None:
                    continue
                k = index[id(p)]
                grads[k] = dp if grads[k] is None else grads[k] + dp
            x_next = x_i.detach()
        param_grads = [
            torch.zeros_like(p) if dp is None else dp for p, dp in zip(all_params, grads)
        ]
        return (g, None, *param_grads)


# ---------------------------------------------------------------------------------------------
# TinyResNet (paper.md §3.4)
# ---------------------------------------------------------------------------------------------


class TinyResNet(nn.Module):
    """``iTinyResnet``: conv5×5/3 stem (32×32 → 10×10), N residual ConvBlocks (zero-init last
    BN), ``avg_pool2d(4)`` (10×10 → 2×2) → flatten → Linear(4P, classes)."""

    def __init__(self, depth: int, planes: int = 16, scheme: str = "euler", mode: str = "backprop",
                 classes: int = 10, in_channels: int = 3, zero_init: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 5, stride=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.stack = ResidualStack([ConvBlock(planes, zero_init) for _ in range(depth)], scheme, mode)
        self.linear = nn.Linear(4 * planes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stack(x)
        x = F.avg_pool2d(x, 4)
        return self.linear(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet-(6n+2) of He et al., depth-scaled (paper.md §3.2 structure, src/models/cifar.rs)
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """He et al.'s ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``, convs without bias.

    Shortcut when the shape changes: ``"A"`` = subsample and zero-pad the new channels (He et
    al.'s CIFAR option A, what the Rust ``BasicBlock`` does), ``"B"`` = 1×1 conv (stride s) + BN.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.cin, self.cout = stride, cin, cout
        self.kind = shortcut
        self.proj = None
        if (stride != 1 or cin != cout) and shortcut == "B":
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.cin == self.cout:
            return x
        if self.proj is not None:
            return self.proj(x)
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.cout - self.cin
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: conv3×3 16 → BN → ReLU; three stages (16/32/64 channels) of a
    first BasicBlock (stride 2 in stages 2 and 3) followed by a 1/N-scaled residual stack of the
    stage's other N = n−1 blocks ``x ← x + f(x)/N`` (f = ConvBlock, no ReLU after the additions
    inside the stack) and a ReLU after the stack (the stage-final ``relu2``, as in the Rust
    model); global average pool → Linear(64, classes)."""

    def __init__(self, layers: int = 56, scheme: str = "euler", mode: str = "backprop",
                 classes: int = 10, in_channels: int = 3, shortcut: str = "A"):
        super().__init__()
        if layers < 14 or (layers - 2) % 6:
            raise ValueError(f"layers must be 6n+2 with n >= 2, got {layers}")
        n = (layers - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        firsts, stacks = [], []
        cin = 16
        for i, c in enumerate((16, 32, 64)):
            firsts.append(BasicBlock(cin, c, 1 if i == 0 else 2, shortcut))
            stacks.append(ResidualStack([ConvBlock(c, zero_init=False) for _ in range(n - 1)], scheme, mode))
            cin = c
        self.firsts = nn.ModuleList(firsts)
        self.stacks = nn.ModuleList(stacks)
        self.linear = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for first, stack in zip(self.firsts, self.stacks):
            x = F.relu(stack(first(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.linear(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def parse_model_name(name: str):
    """``tiny16`` → ("tiny", 16); ``resnet56`` / ``cifar-resnet56`` → ("cifar-resnet", 56)."""
    s = name.strip().lower()
    m = re.fullmatch(r"(tiny|tinyresnet|tiny-resnet)[-_]?(\d+)", s)
    if m:
        return "tiny", int(m.group(2))
    m = re.fullmatch(r"(resnet|cifar-resnet|cifar_resnet|cifarresnet)[-_]?(\d+)", s)
    if m:
        return "cifar-resnet", int(m.group(2))
    raise ValueError(f"unknown model {name!r} (expected tinyN or resnetL, e.g. tiny16, resnet56)")


def build_model(model: str, depth: int, scheme: str, mode: str, planes: int = 16,
                shortcut: str = "A") -> nn.Module:
    if model == "tiny":
        return TinyResNet(depth, planes=planes, scheme=scheme, mode=mode)
    if model == "cifar-resnet":
        return CifarResNet(depth, scheme=scheme, mode=mode, shortcut=shortcut)
    raise ValueError(f"unknown model {model!r}")
