"""CUDA backend: the `kernels.base.Backend` contract on an NVIDIA GPU.

`mm` is `torch._int_mm` (cuBLASLt int8 GEMM, B handed over column-major); `noisy_mm` runs the fused
Triton kernel of `kernels.triton_kernel`, or, with POUW_CUDA_KERNEL=cuda (opt-in until a device run has shown it
bit-exact and faster), the hand-written mma.sync kernel of `kernels.cuda_mma` for the shapes it supports
(`choose_kernel`); Triton stays the fallback. The optional stages of a mining pass all run on the device too:
`noise_factor` (ChaCha20 in Triton, kernels.triton_chacha), `add_noise` (one memory pass, B' written K-major,
kernels.triton_noise), `noisy_mm_recover` (the GEMM with the recovery as its epilogue) and `tile_tickets`
(SHA-256 in Triton). All of it is exact integer arithmetic, so results are bit-identical to `kernels.reference`
and every other backend. Inputs may live anywhere; every result stays on the device (`kernels.base.Backend`).

Importing this module does not import triton (it is imported on the first `noisy_mm`); CuPy is never needed.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

from kernels.base import Capabilities, ShapeError, check_operands, tile_tickets_reference
from kernels.cuda_mma import requested_kernel, unsupported_reason
from kernels.logevent import event

__all__ = ["ASYNC_ENV", "CudaBackend", "async_requested", "choose_kernel", "cuda_available"]

log = logging.getLogger("pouw." + __name__)  # pouw.kernels.*: the one logger hierarchy
_WARNED: set[str] = set()  # fallback reasons already logged (once per process)

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


# ---------------------------------------------------------------- the pipelined pass (opt-in: POUW_CUDA_ASYNC=1)

ASYNC_ENV = "POUW_CUDA_ASYNC"


def async_requested() -> bool:
    """$POUW_CUDA_ASYNC: "1" pipelines the mining passes (`Capabilities.async_pass`: the next attempt's inputs made
    on a second stream while the GEMM runs, winners found with one fixed-size copy); "0" or unset: off, the default
    until a device run (benchmarks/gpu_check.sh) has shown it bit-exact and faster."""
    v = os.environ.get(ASYNC_ENV, "0").strip() or "0"
    if v not in ("0", "1"):
        raise ValueError(f"{ASYNC_ENV}={v!r}: expected 0 or 1")
    return v == "1"


# ----------------------------------------------------------------


def choose_kernel(
    requested: str, r: int, tile_h: int, tile_w: int, capability: tuple[int, int] | None = None
) -> tuple[str, str | None]:
    """The fused GEMM kernel to run: ("cuda", None) when the mma.sync kernel was requested and handles the
    shape, ("wgmma", None) likewise for the sm_90a kernel on a device of compute `capability` 9.0, else
    ("triton", why the requested kernel does not run, or None when none was requested)."""
    if requested == "wgmma":
        from kernels import cuda_wgmma

        reason = cuda_wgmma.device_reason(capability) or cuda_wgmma.unsupported_reason(r, tile_h, tile_w)
        return ("triton", reason) if reason else ("wgmma", None)
    if requested != "cuda":
        return "triton", None
    reason = unsupported_reason(r, tile_h, tile_w)
    return ("triton", reason) if reason else ("cuda", None)


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

    async_pass = False  # pipelined passes (POUW_CUDA_ASYNC=1, `async_requested`)

    name = "cuda"
    kernel = "triton"  # the fused GEMM kernel asked for (POUW_CUDA_KERNEL): "triton" (default), "cuda", "wgmma"

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
        self.kernel = requested_kernel()
        self.async_pass = async_requested()

    def _fused(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        r: int,
        tile_h: int,
        tile_w: int,
        correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused GEMM (+ transcript, + recovery epilogue) with the chosen kernel, on this device."""
        requested = self.kernel
        cap = torch.cuda.get_device_capability(self.device) if requested == "wgmma" else None
        kernel, why = choose_kernel(requested, r, tile_h, tile_w, cap)
        if kernel in ("cuda", "wgmma"):
            try:
                if kernel == "wgmma":
                    from kernels.cuda_wgmma import noisy_matmul_wgmma

                    return noisy_matmul_wgmma(a, b, r, tile_h, tile_w, correction=correction)
                from kernels.cuda_mma import noisy_matmul_mma

                return noisy_matmul_mma(a, b, r, tile_h, tile_w, correction=correction)
            except ImportError as e:  # no CuPy (or NVRTC): say so once, then Triton for good
                why, self.kernel = str(e), "triton"
        if why and why not in _WARNED:
            _WARNED.add(why)
            event(
                log,
                logging.WARNING,
                "POUW_CUDA_KERNEL unavailable: running the Triton kernel instead",
                POUW_CUDA_KERNEL=requested,
                why=why,
            )
        from kernels.triton_kernel import noisy_matmul_triton

        return noisy_matmul_triton(a, b, r, tile_h, tile_w, correction=correction)

    @property
    def kernel_path(self) -> str:
        """The fused GEMM asked for ("triton" or "cuda"; `choose_kernel` may run Triton for some shapes)."""
        return self.kernel

    @property
    def caps(self) -> Capabilities:
        """Every optional stage runs on the device; out= buffers are not taken."""
        return Capabilities(
            add_noise=self.add_noise,
            noisy_mm_recover=self.noisy_mm_recover,
            noise_factor=self.noise_factor,
            async_pass=self.async_pass,
        )

    def __repr__(self) -> str:
        return f"CudaBackend({self.device})"

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact int8 x int8 -> int32 product via torch._int_mm, on this backend's device.

        Operands are zero-padded to _int_mm's shape constraints (m > 16, k and n multiples of 8) and the
        result cropped; zero padding leaves every entry of the product unchanged.
        """
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
            b_d = b.to(self.device, non_blocking=True)
            # cuBLASLt's fast int8 GEMM wants B column-major (K-major; a row-major B takes a far slower path:
            # benchmarks/RESULTS.md), so B goes in as the transposed view of a K-major copy unless it already is one.
            if b_d.shape == (kp, np_) and b_d.t().is_contiguous():
                b_col = b_d
            else:
                b_col = _pad2d(b_d.t(), np_, kp).t()
            c = torch._int_mm(a_d, b_col)
            return c[:m, :n] if (mp, np_) != (m, n) else c

    def noisy_mm(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        r: int,
        tile_h: int,
        tile_w: int,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C', messages) per `kernels.base`, via the fused kernel (`_fused`), on this backend's device."""
        if out is not None:
            raise ValueError("the CUDA backend allocates its results (caps.accepts_out is False)")
        check_operands(a, b, r, tile_h, tile_w)
        with torch.cuda.device(self.device):
            return self._fused(a.to(self.device), b.to(self.device), r, tile_h, tile_w)

    def noise_factor(self, key: bytes, nonce: bytes, first_row: int, rows: int, r: int) -> torch.Tensor:
        """Rows of a dense noise factor (`pouw.noise._factor`) generated on the device (Triton ChaCha20)."""
        from kernels.triton_chacha import noise_factor_triton

        with torch.cuda.device(self.device):
            return noise_factor_triton(key, nonce, first_row, rows, r, self.device)

    def add_noise(
        self, a: torch.Tensor, b: torch.Tensor, e_l: torch.Tensor, f_r: torch.Tensor, map_a, map_b
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', B') per the `kernels.base` contract, in one memory pass on the device (Triton). B' comes back as
        the transposed view of a K-major buffer, which is the layout the fused GEMM reads without a copy."""
        from kernels.triton_noise import add_noise_triton

        dev = self.device
        with torch.cuda.device(dev):
            return add_noise_triton(a.to(dev), b.to(dev), e_l.to(dev), f_r.to(dev), map_a, map_b)

    def noisy_mm_recover(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        r: int,
        tile_h: int,
        tile_w: int,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, messages): the messages of C' = A'B' and C = C' - sum_i 128^i U_i V_i, in one kernel (the recovery
        runs as the GEMM's epilogue, so C' never reaches memory). Results on this backend's device."""
        check_operands(a, b, r, tile_h, tile_w)
        from kernels.triton_kernel import pack_correction

        with torch.cuda.device(self.device):
            corr = pack_correction([(u.to(self.device), v.to(self.device)) for u, v in pairs])
            return self._fused(a.to(self.device), b.to(self.device), r, tile_h, tile_w, correction=corr)

    def tile_tickets(self, prefix: bytes, msgs: torch.Tensor) -> torch.Tensor:
        """Tile tickets on the GPU (Triton SHA-256) when available, else hashlib on the host."""
        try:
            from kernels.triton_sha256 import tile_tickets_triton
        except ImportError:
            return tile_tickets_reference(prefix, msgs).to(self.device)
        with torch.cuda.device(self.device):
            return tile_tickets_triton(prefix, msgs.to(self.device))
