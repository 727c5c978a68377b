"""CUDA backend: the `kernels.base.Backend` contract on an NVIDIA GPU.

`matmul` is `torch._int_mm` (cuBLASLt int8 GEMM); `noisy_matmul` runs the fused Triton kernel of
`kernels.triton_kernel`. Both are exact integer arithmetic, so results are bit-identical to `kernels.reference`
and every other backend. Inputs may live anywhere; results come back on the CPU.

Importing this module does not import triton (it is imported on the first `noisy_matmul`); CuPy is never needed.
"""
from __future__ import annotations

import importlib.util

import torch

from kernels.base import ShapeError, check_operands, tile_tickets_reference

__all__ = ["CudaBackend", "cuda_available"]

# torch._int_mm on CUDA needs m > 16 and k, n multiples of 8.
_INT_MM_MIN_M = 17
_INT_MM_ALIGN = 8


def cuda_available() -> bool:
    """True when a CUDA device is visible to torch and triton is installed, i.e. `CudaBackend` can run."""
    try:
        if not torch.cuda.is_available():
            return False
    except Exception:  # broken driver installs raise instead of returning False
        return False
    return importlib.util.find_spec("triton") is not None


def _round_up(v: int, q: int) -> int:
    return -(-v // q) * q


def _pad2d(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """x zero-padded to rows x cols (x itself when no padding is needed)."""
    if x.shape == (rows, cols):
        return x.contiguous()
    out = torch.zeros((rows, cols), dtype=x.dtype, device=x.device)
    out[: x.shape[0], : x.shape[1]] = x
    return out


class CudaBackend:
    """Exact int8 GEMM (+ fused mining transcript) on one CUDA device."""

    name = "cuda"

    def __init__(self, device: torch.device | str | int | None = None) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CudaBackend needs a CUDA device, and torch sees none")
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif isinstance(device, int):
            device = torch.device("cuda", device)
        else:
            device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CudaBackend needs a cuda device, got {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"no such CUDA device: {device} ({torch.cuda.device_count()} visible)")
        self.device: torch.device = device

    def __repr__(self) -> str:
        return f"CudaBackend({self.device})"

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact int8 x int8 -> int32 product via torch._int_mm, returned on the CPU.

        Operands are zero-padded to _int_mm's shape constraints (m > 16, k and n multiples of 8) and the
        result cropped; zero padding leaves every entry of the product unchanged.
        """
        if a.dtype != torch.int8 or b.dtype != torch.int8:
            raise ShapeError(f"operands must be int8, got {a.dtype} and {b.dtype}")
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise ShapeError(f"cannot multiply {tuple(a.shape)} by {tuple(b.shape)}")
        return self.mm(a, b).cpu()

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """As `matmul`, but the result stays on this backend's device."""
        if a.dtype != torch.int8 or b.dtype != torch.int8:
            raise ShapeError(f"operands must be int8, got {a.dtype} and {b.dtype}")
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise ShapeError(f"cannot multiply {tuple(a.shape)} by {tuple(b.shape)}")
        m, k = a.shape
        n = b.shape[1]
        if m == 0 or n == 0 or k == 0:
            return torch.zeros((m, n), dtype=torch.int32, device=self.device)
        mp = max(m, _INT_MM_MIN_M)
        kp = _round_up(k, _INT_MM_ALIGN)
        np_ = _round_up(n, _INT_MM_ALIGN)
        with torch.cuda.device(self.device):
            a_d = _pad2d(a.to(self.device, non_blocking=True), mp, kp)
            b_d = _pad2d(b.to(self.device, non_blocking=True), kp, np_)
            c = torch._int_mm(a_d, b_d)
            return c[:m, :n] if (mp, np_) != (m, n) else c

    def noisy_matmul(
        self, a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', messages) per `kernels.base`, via the fused Triton kernel; results on the CPU."""
        c, msgs = self.noisy_mm(a, b, r, tile_h, tile_w)
        return c.cpu(), msgs.cpu()

    def noisy_mm(
        self, a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', messages) on this backend's device."""
        check_operands(a, b, r, tile_h, tile_w)
        from kernels.triton_kernel import noisy_matmul_triton

        with torch.cuda.device(self.device):
            return noisy_matmul_triton(a.to(self.device), b.to(self.device), r, tile_h, tile_w)

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        """Tile tickets on the GPU (Triton SHA-256) when available, else hashlib on the host."""
        try:
            from kernels.triton_sha256 import tile_tickets_triton
        except ImportError:
            return tile_tickets_reference(prefix, msgs).to(self.device)
        with torch.cuda.device(self.device):
            return tile_tickets_triton(prefix, msgs.to(self.device))
