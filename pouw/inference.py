"""An int8-quantized MLP whose linear layers are exact int8 matmul jobs.

Quantisation is symmetric, per tensor, into the protocol's operand range [-64, 64]: a layer computes
acc = X_q · W_q exactly (int32) with any `matmul` (local, or a job settled on chain), then
y = acc * (s_x * s_w) + b in float32, ReLU, requantise. Because acc is exact whatever computed it, logits are
bit-identical between local int8 inference and the same layers run as jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from pouw.params import OPERAND_MAX

MatMul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # int8 (m,k) x int8 (k,n) -> int32 (m,n)


def quantize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.clamp(torch.round(x / scale), -OPERAND_MAX, OPERAND_MAX).to(torch.int8)


def scale_for(x: torch.Tensor) -> float:
    m = float(x.abs().max())
    return m / OPERAND_MAX if m > 0 else 1.0


def local_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)


@dataclass
class QuantLayer:
    w_q: torch.Tensor  # (in, out) int8 in [-64, 64]
    w_scale: float
    bias: torch.Tensor  # (out,) float32
    x_scale: float  # calibrated scale of this layer's input activations


@dataclass
class QuantMLP:
    layers: list[QuantLayer]

    def forward(self, x: torch.Tensor, matmul: MatMul = local_matmul) -> torch.Tensor:
        """Float32 logits; every product goes through `matmul` on int8 operands."""
        h = x.to(torch.float32)
        for i, layer in enumerate(self.layers):
            xq = quantize(h, layer.x_scale)
            acc = matmul(xq.contiguous(), layer.w_q)
            if acc.dtype != torch.int32 or acc.shape != (xq.shape[0], layer.w_q.shape[1]):
                raise ValueError("matmul returned a wrong dtype or shape")
            scale = float(np.float32(layer.x_scale * layer.w_scale))  # s_x * s_w rounded to float32, as a float
            h = acc.to(torch.float32) * scale + layer.bias
            if i + 1 < len(self.layers):
                h = torch.relu(h)
        return h


class DigitsTest(TypedDict):
    """The held-out split of `train_digits_mlp` and the float model's accuracy on it."""

    x_test: torch.Tensor
    y_test: torch.Tensor
    float_accuracy: float


def train_digits_mlp(hidden: int = 64, epochs: int = 60, seed: int = 0) -> tuple[QuantMLP, DigitsTest]:
    """Train a 64-hidden-64... MLP on scikit-learn's bundled digits set (nothing downloaded), quantize it.

    Returns the quantized model and a dict with the test split (x_test, y_test) and float accuracy.
    """
    from sklearn.datasets import load_digits  # optional dependency (extra "demo")

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    split = int(0.8 * len(x))
    tr, te = perm[:split], perm[split:]
    torch.manual_seed(seed)
    lin1, lin2 = torch.nn.Linear(64, hidden), torch.nn.Linear(hidden, 10)
    net = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.split(tr[torch.randperm(len(tr), generator=g)], 128):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            torch.autograd.backward(loss)
            opt.step()
    with torch.no_grad():
        float_acc = float((net(x[te]).argmax(1) == y[te]).float().mean())
        layers = []
        h = x[tr]
        for lin in (lin1, lin2):
            w = lin.weight.detach().t().contiguous()
            ws = scale_for(w)
            xs = scale_for(h)
            layers.append(QuantLayer(quantize(w, ws), ws, lin.bias.detach().clone(), xs))
            h = torch.relu(lin(h))
    return QuantMLP(layers), {"x_test": x[te], "y_test": y[te], "float_accuracy": float_acc}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())
