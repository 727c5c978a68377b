"""Compute backends: exact int8 GEMM with the mining transcript fused in. Knows nothing of blocks.

`get_backend("auto" | "cpu" | "cuda" | "cuda:N")` returns a backend implementing `kernels.base.Backend`.
Importing the package does not import torch (a validator reads only `kernels.base`'s fold constants).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kernels.base import Backend, ShapeError

if TYPE_CHECKING:
    import torch


class DeviceError(RuntimeError):
    """The requested device does not exist or cannot run the kernels."""


def parse_device(spec: str) -> torch.device:
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        idx = 0
        if ":" in spec:
            try:
                idx = int(spec.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"bad device {spec!r}: expected cuda:N") from None
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine")
        if idx >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(f"cuda:{idx}")
    raise DeviceError(f"unknown device {spec!r}: use cpu, cuda or cuda:N")


def get_backend(spec: str = "auto", **kwargs) -> Backend:
    dev = parse_device(spec)
    if dev.type == "cpu":
        from kernels.cpu import CpuBackend
        return CpuBackend(**kwargs)
    from kernels.cuda import CudaBackend
    return CudaBackend(dev, **kwargs)


__all__ = ["Backend", "DeviceError", "ShapeError", "get_backend", "parse_device"]
