"""Compute backends: exact int8 GEMM with the mining transcript fused in. Knows nothing of blocks.

`get_backend("auto" | "cpu" | "cuda" | "cuda:N")` returns a backend implementing `kernels.base.Backend`;
`parse_devices` reads a miner's device list ("cuda:0,cuda:1", "cuda:all").
Importing the package does not import torch (a validator reads only `kernels.base`'s fold constants).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

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


def parse_devices(spec: str, cuda_count: Callable[[], int] | None = None) -> list[str]:
    """A miner's `--device`: one device, a comma list ("cuda:0,cuda:1") or "cuda:all" (every visible CUDA
    device), as canonical specs ("cpu", "cuda:N") in the given order. Each entry is checked by `parse_device`;
    an empty entry, a device named twice, or cuda:all with anything else is a DeviceError.
    cuda_count (default torch.cuda.device_count) counts the devices cuda:all expands to."""
    parts = [p.strip().lower() for p in (spec or "auto").split(",")]
    if "cuda:all" in parts:
        if len(parts) != 1:
            raise DeviceError(f"bad device list {spec!r}: cuda:all stands alone")
        if cuda_count is None:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        else:
            count = cuda_count()
        if count == 0:
            raise DeviceError("device 'cuda:all' requested but CUDA is not available on this machine")
        return [f"cuda:{i}" for i in range(count)]
    out: list[str] = []
    for part in parts:
        if not part:
            raise DeviceError(f"bad device list {spec!r}: empty entry")
        dev = str(parse_device(part))
        if dev in out:
            raise DeviceError(f"bad device list {spec!r}: {dev} named twice")
        out.append(dev)
    return out


def get_backend(spec: str = "auto", **kwargs) -> Backend:
    dev = parse_device(spec)
    if dev.type == "cpu":
        from kernels.cpu import CpuBackend

        return CpuBackend(**kwargs)
    from kernels.cuda import CudaBackend

    return CudaBackend(dev, **kwargs)


__all__ = ["Backend", "DeviceError", "ShapeError", "get_backend", "parse_device", "parse_devices"]
