"""The sm_90a (H100 / H200) mining GEMM (kernels/cuda_src/fused_wgmma.cu): a TMA producer warpgroup and two
consumer warpgroups issuing wgmma.mma_async in ping-pong, so one folds the transcript while the other's wgmmas
run; the fold is the mma.sync kernel's (mma_fold.h), the recovery an optional epilogue.

Status: opt-in and never run on a device yet. `POUW_CUDA_KERNEL=wgmma` makes `kernels.cuda.CudaBackend` use it on
compute capability 9.0 for the shapes it supports (`unsupported_reason` is None; elsewhere Triton runs and the
reason is logged once). `benchmarks/gpu_check.sh` checks it bit-exact against the CPU path and times it.

Build paths, all from the same text (`source()`: fused_wgmma.cu with wgmma_fold.h and mma_fold.h inlined):
  * at run time through NVRTC for sm_90a (libnvrtc through ctypes: CuPy's own compile picks sm_90, without the
    `a` that wgmma and setmaxnreg need), the cubin cached in <pouw cache>/wgmma/ keyed by the text and NVRTC's
    version, loaded with CuPy (`RawModule(path=...)`);
  * offline by nvcc for sm_90a (`nvcc_build`: the tests fail on a build error, a warning, a register spill or
    ptxas serialising the wgmmas);
  * on the host by g++ (`emulate`): emulate.cpp runs the kernel's descriptors, index maps, wait points and fold
    with TMA's swizzle, the descriptor decoding, the wgmma product and its fragment layout from the PTX ISA.

Operands reach the kernel as TMA tensor maps (`tensor_maps`, cuTensorMapEncodeTiled from libcuda through
ctypes), 128 bytes each, copied to device memory. Importing this module imports neither torch nor CuPy.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kernels.cuda_mma import KSTEP, SRC_DIR, _aligned, _check_correction, _emulator, nvrtc_program

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCH",
    "DEFAULT",
    "VARIANTS",
    "WgmmaConfig",
    "device_reason",
    "emulate",
    "kernel_names",
    "noisy_matmul_wgmma",
    "nvcc_build",
    "serialised",
    "source",
    "tensor_maps",
    "unsupported_reason",
]

ARCH = "sm_90a"
BM = 128  # rows of C per CTA (two consumer warpgroups x 64; wgmma_fold.h BM)
KBOX = 128  # k columns per stage (wgmma_fold.h KBOX)
TILE_H = 16  # the only protocol tile height: one warp's 16 accumulator rows
THREADS = 384  # producer + two consumer warpgroups
BNS = (128, 256)  # wgmma N instantiated (emulate.cpp instantiates these with tile widths 8 .. BN/2)


@dataclass(frozen=True)
class WgmmaConfig:
    """Launch geometry: a 128 x bn block of C per CTA, `stages` 128-column k stages in the shared-memory ring."""

    bn: int = 256
    stages: int = 4

    @property
    def smem_bytes(self) -> int:
        """Ring (stages x (128 + bn) x 128 bytes), 1024 bytes of alignment slack, 2 x stages mbarriers."""
        return self.stages * (BM + self.bn) * KBOX + 1024 + 16 * self.stages


DEFAULT = WgmmaConfig()
SMEM_LIMIT = 227 * 1024  # an sm_90 block's dynamic shared memory limit
VARIANTS = ((True, False), (True, True), (False, False))  # (transcript, recovery epilogue) instantiated


def unsupported_reason(r: int, tile_h: int, tile_w: int, cfg: WgmmaConfig = DEFAULT) -> str | None:
    """None when the kernel handles chunk width r and h x w tiles with `cfg`, else why not."""
    if cfg.bn not in BNS or not 2 <= cfg.stages or cfg.smem_bytes > SMEM_LIMIT:
        return f"config {cfg}: bn one of {BNS}, 2 or more stages within {SMEM_LIMIT} bytes of shared memory"
    if r % KSTEP:
        return f"r={r} is not a multiple of {KSTEP}"
    if tile_h != TILE_H:
        return f"tile height {tile_h}: the wgmma kernel folds 16-row tiles only (one warp's accumulator rows)"
    t = cfg.bn // tile_w if tile_w and cfg.bn % tile_w == 0 else 0
    if tile_w % 8 or not 2 <= t <= 32 or t & (t - 1):
        return f"tile width {tile_w}: needs 2 to 32 (a power of two) tiles in the {cfg.bn} columns of a block"
    return None


def device_reason(capability: tuple[int, int] | None) -> str | None:
    """None on compute capability 9.0 (sm_90a code runs there only), else why the kernel cannot run."""
    if capability != (9, 0):
        where = "no CUDA device" if capability is None else f"compute capability {capability[0]}.{capability[1]}"
        return f"the wgmma kernel is built for sm_90a (H100/H200) and this is {where}"
    return None


def kernel_names(tile_w: int, cfg: WgmmaConfig = DEFAULT) -> dict[tuple[bool, bool], str]:
    """(transcript, recovery epilogue) -> the template instance's name expression."""
    return {
        (tr, rc): f"pouw_fused_wgmma<{cfg.bn}, {cfg.stages}, {tile_w}, {str(tr).lower()}, {str(rc).lower()}>"
        for tr, rc in VARIANTS
    }


def source() -> str:
    """fused_wgmma.cu with wgmma_fold.h and mma_fold.h inlined (one self-contained text for NVRTC)."""
    fold = (SRC_DIR / "mma_fold.h").read_text().replace("#pragma once\n", "", 1)
    wg = (
        (SRC_DIR / "wgmma_fold.h")
        .read_text()
        .replace("#pragma once\n", "", 1)
        .replace('#include "mma_fold.h"', fold, 1)
    )
    return (SRC_DIR / "fused_wgmma.cu").read_text().replace('#include "wgmma_fold.h"', wg, 1)


def instantiation_unit(tile_ws: tuple[int, ...], cfgs: tuple[WgmmaConfig, ...] = (DEFAULT,)) -> str:
    """source() plus explicit instantiations of every variant for each tile width and config."""
    sig = "(const void*, int*, int*, int, int, int, int, int, int)"
    lines = [
        f"template __global__ void {name}{sig};"
        for cfg in cfgs
        for tw in tile_ws
        for name in kernel_names(tw, cfg).values()
    ]
    return source() + "\n" + "\n".join(lines) + "\n"


def nvcc_build(
    tile_ws: tuple[int, ...] = (16,),
    cfgs: tuple[WgmmaConfig, ...] = (DEFAULT,),
    nvcc: str | None = None,
    timeout: float = 300,
) -> tuple[int, str]:
    """Compile the kernels for sm_90a to a cubin with nvcc -Werror all-warnings -Xptxas -v; (return code,
    compiler output)."""
    nvcc = nvcc or shutil.which("nvcc")
    if not nvcc:
        raise FileNotFoundError("nvcc not found on PATH")
    with tempfile.TemporaryDirectory(prefix="pouw-nvcc-") as tmp:
        src = os.path.join(tmp, "fused_wgmma_inst.cu")
        with open(src, "w") as f:
            f.write(instantiation_unit(tile_ws, cfgs))
        cmd = [
            nvcc,
            "-std=c++17",
            f"-arch={ARCH}",
            "-cubin",
            "-Werror",
            "all-warnings",
            "-Xptxas",
            "-v",
            "-o",
            os.path.join(tmp, "k.cubin"),
            src,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return p.returncode, p.stdout + p.stderr


def serialised(log: str) -> list[str]:
    """Functions ptxas reports as running their wgmmas serialised (warning C7514: the overlap would be lost)."""
    return re.findall(r"C7514\).*?in the function '(\S+)'", log)


# ---------------------------------------------------------------- host emulator (g++)


def emulate(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    transcript: bool = True,
    correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    config: WgmmaConfig = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C' or C, messages) as the wgmma kernel computes them with `config`, emulated on the host (CPU tensors)."""
    import torch

    from kernels.base import MSG_WORDS, check_operands

    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    reason = unsupported_reason(r, tile_h, tile_w, config)
    if reason:
        raise ValueError(reason)
    a = a.contiguous()
    bt = b.t().contiguous()
    c = torch.zeros((m, n), dtype=torch.int32)
    msgs = torch.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=torch.int32)
    if correction is not None:
        u, vt, digits, cw = _check_correction(correction, m, n, a.device)
    else:
        u, vt, digits, cw = a, bt, 0, KSTEP
    rc = _emulator().pouw_wgmma_emulate(
        a.data_ptr(),
        bt.data_ptr(),
        c.data_ptr(),
        msgs.data_ptr(),
        u.data_ptr(),
        vt.data_ptr(),
        m,
        n,
        k,
        r,
        digits,
        cw,
        tile_w,
        int(transcript),
        config.bn,
        config.stages,
        int(correction is not None),
    )
    if rc:
        why = {
            -1: "tile not instantiated",
            -2: "shape",
            -3: "the block order repeats or misses a block",
            -4: "a consumer reads a released stage or releases stages wrongly",
            -5: "a descriptor is not a 128-byte-swizzle descriptor with base offset 0",
        }
        raise ValueError(f"emulator refused the launch: {why.get(rc, rc)}")
    return c, msgs


# ---------------------------------------------------------------- run time (NVRTC cubin, CuPy, libcuda)

_lock = threading.Lock()
_cuda: ctypes.CDLL | None = None
_maps: dict[tuple, object] = {}  # (device, operands' pointers and shapes, bn) -> device tensor of 4 maps
_modules: dict[tuple, tuple] = {}  # (tile_w, config, device) -> (RawModule, name expression -> lowered name)


def _encode(t: torch.Tensor, rows_box: int) -> bytes:
    """A 2-D TMA tensor map (uint8, K-contiguous rows) of `t`: box 128 columns x rows_box rows, 128-byte swizzle,
    zero fill out of bounds (CUDA driver API, cuTensorMapEncodeTiled)."""
    global _cuda
    if _cuda is None:
        _cuda = ctypes.CDLL("libcuda.so.1")
    rows, cols = t.shape
    u64, u32 = ctypes.c_uint64, ctypes.c_uint32
    buf = ctypes.create_string_buffer(128 + 64)  # a CUtensorMap: 128 bytes, 64-byte aligned
    addr = -(-ctypes.addressof(buf) // 64) * 64
    dims, strides = (u64 * 2)(cols, rows), (u64 * 1)(t.stride(0))
    box, elem = (u32 * 2)(KBOX, rows_box), (u32 * 2)(1, 1)
    # UINT8 = 0, INTERLEAVE_NONE = 0, SWIZZLE_128B = 3, L2_PROMOTION_L2_128B = 2, FLOAT_OOB_FILL_NONE = 0 (zeros)
    rc = _cuda.cuTensorMapEncodeTiled(
        ctypes.c_void_p(addr), 0, 2, ctypes.c_void_p(t.data_ptr()), dims, strides, box, elem, 0, 3, 2, 0
    )
    if rc:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed (CUresult {rc}) for a {rows} x {cols} operand")
    return ctypes.string_at(addr, 128)


def tensor_maps(a, bt, u, vt, bn: int):
    """The kernel's 4 tensor maps (A, B^T, U, V^T) in one 512-byte device tensor; cached by the operands'
    addresses, shapes and strides (what a map encodes), so a repeated launch costs no host work."""
    import torch

    key = (a.device.index, bn) + tuple((x.data_ptr(), tuple(x.shape), x.stride(0)) for x in (a, bt, u, vt))
    with _lock:
        dev = _maps.get(key)
        if dev is None:
            raw = b"".join(_encode(x, rows) for x, rows in ((a, BM), (bt, bn), (u, BM), (vt, bn)))
            dev = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(a.device)
            if len(_maps) > 64:
                _maps.clear()
            _maps[key] = dev
        return dev


def _module(tile_w: int, cfg: WgmmaConfig, device_index: int):
    """(RawModule, lowered names) for (tile_w, cfg) on a device; the cubin cached on disk by text and NVRTC."""
    key = (tile_w, cfg, device_index)
    with _lock:
        hit = _modules.get(key)
        if hit is not None:
            return hit
        import torch

        from kernels.cuda_mma import find_nvrtc, import_cupy
        from kernels.native_loader import cache_dir

        cupy = import_cupy(torch.version.cuda)  # ImportError naming the wheel when missing or mismatched
        lib = find_nvrtc()
        if lib is None:
            raise ImportError("the wgmma kernel needs libnvrtc (POUW_NVRTC=path, or pip install nvidia-cuda-nvrtc)")
        text = source()
        names = list(kernel_names(tile_w, cfg).values())
        digest = hashlib.sha256("\0".join([text, *names, os.path.realpath(lib)]).encode()).hexdigest()[:24]
        path = cache_dir() / "wgmma" / f"fused_wgmma-{digest}.cubin"
        lowered_path = path.with_suffix(".names")
        if not (path.exists() and lowered_path.exists()):
            ok, log, lowered, cubin = nvrtc_program(text, "fused_wgmma.cu", names, ARCH, lib)
            if not ok or not cubin or set(lowered) != set(names):
                raise RuntimeError(f"NVRTC could not build the wgmma kernel for {ARCH}:\n{log[-3000:]}")
            path.parent.mkdir(parents=True, exist_ok=True)
            for dst, data in ((path, cubin), (lowered_path, "\n".join(f"{n}\t{lowered[n]}" for n in names).encode())):
                tmp = dst.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dst)
        lowered = dict(line.split("\t") for line in lowered_path.read_text().splitlines())
        with cupy.cuda.Device(device_index):
            mod = cupy.RawModule(path=str(path))
        _modules[key] = (mod, lowered)
        return mod, lowered


def noisy_matmul_wgmma(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    transcript: bool = True,
    correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    config: WgmmaConfig = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base` (or C with `correction`, as `noisy_matmul_triton`) on a's CUDA device,
    which must be of compute capability 9.0.

    Raises ValueError for shapes or devices the kernel does not handle and ImportError without CuPy / NVRTC.
    """
    import numpy as np
    import torch

    from kernels.base import MSG_WORDS, check_operands

    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    if a.device.type != "cuda" or b.device != a.device:
        raise ValueError(f"the wgmma kernel needs both operands on one CUDA device, got {a.device}, {b.device}")
    reason = unsupported_reason(r, tile_h, tile_w, config) or device_reason(torch.cuda.get_device_capability(a.device))
    if reason:
        raise ValueError(reason)
    c = torch.empty((m, n), dtype=torch.int32, device=a.device)
    msgs = torch.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=torch.int32, device=a.device)
    if m == 0 or n == 0:
        return c, msgs
    if k == 0:
        if correction is not None:
            raise ValueError("a correction needs k > 0")
        return c.zero_(), msgs
    a = _aligned(a)
    bt = _aligned(b.t())
    if correction is not None:
        u, vt, digits, cw = _check_correction(correction, m, n, a.device)
        u, vt = _aligned(u), _aligned(vt)
        if not transcript:
            raise ValueError("the wgmma kernel has no recovery epilogue without the transcript")
    else:
        u, vt, digits, cw = a, bt, 0, KSTEP
    idx = a.device.index or 0
    mod, lowered = _module(tile_w, config, idx)
    maps = tensor_maps(a, bt, u, vt, config.bn)
    import cupy

    fn = mod.get_function(lowered[kernel_names(tile_w, config)[(transcript, correction is not None)]])
    fn.max_dynamic_shared_size_bytes = config.smem_bytes
    grid = (-(-m // BM)) * (-(-n // config.bn))
    with cupy.cuda.Device(idx):
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(a.device).cuda_stream):
            fn(
                (grid,),
                (THREADS,),
                (
                    np.uint64(maps.data_ptr()),
                    np.uint64(c.data_ptr()),
                    np.uint64(msgs.data_ptr()),
                    np.int32(m),
                    np.int32(n),
                    np.int32(k),
                    np.int32(r),
                    np.int32(digits),
                    np.int32(cw),
                ),
                shared_mem=config.smem_bytes,
            )
    return c, msgs
