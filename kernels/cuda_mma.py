"""The hand-written CUDA kernel of the mining GEMM (kernels/cuda_src/fused_mma.cu): mma.sync m16n8k32 int8
tensor-core MMAs with the transcript's fold overlapping them, and the recovery as an optional epilogue.

Status: opt-in. `POUW_CUDA_KERNEL=cuda` makes `kernels.cuda.CudaBackend` use it for the shapes it supports
(`unsupported_reason` is None); Triton (`kernels.triton_kernel`) stays the default and the fallback until a device
run (`benchmarks/gpu_check.sh`) has shown it bit-exact and faster.

Build paths, all from the same source text (`source()`: fused_mma.cu with mma_fold.h inlined):
  * at run time through NVRTC (CuPy `RawModule`), at first use per (config, tile), cached on disk by CuPy in
    $CUPY_CACHE_DIR, which defaults here to <pouw cache>/cupy (the native CPU kernels' cache, $POUW_CACHE);
  * offline by nvcc for sm_80/86/89/90 (`nvcc_build`, the tests: a build error or a register spill fails);
  * on the host by g++ (`emulate`): kernels/cuda_src/emulate.cpp runs the kernel's index maps and fold lane by
    lane with the hardware parts (cp.async, mma.sync fragments, shuffles) written from the PTX ISA, so the tests
    compare its C' and messages with `kernels.reference` without a GPU.

Importing this module imports neither torch nor CuPy.
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
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCHS",
    "CUPY_MAJORS",
    "DEFAULT",
    "GEOMETRIES",
    "MmaConfig",
    "VARIANTS",
    "config_from_env",
    "cupy_wheel",
    "import_cupy",
    "installed_cupy",
    "parse_config",
    "PtxasInfo",
    "emulate",
    "kernel_names",
    "noisy_matmul_mma",
    "nvcc_build",
    "parse_ptxas",
    "requested_kernel",
    "source",
    "unsupported_reason",
]

SRC_DIR = Path(__file__).resolve().parent / "cuda_src"
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
KSTEP = 32  # k columns per mma.sync and per pipeline stage (mma_fold.h KSTEP)
LDS = 48  # shared-memory bytes per tile row of a stage (mma_fold.h LDS)
KERNEL_ENV = "POUW_CUDA_KERNEL"
KERNELS = ("triton", "cuda", "wgmma")  # wgmma: kernels/cuda_wgmma.py, sm_90 only


@dataclass(frozen=True)
class MmaConfig:
    """Launch geometry: a block_m x block_n block per CTA, warps of warp_m x warp_n, `stages` k steps in flight;
    recover: how the recovery epilogue runs (1: a second accumulator, C' never stored; 2: C' stored, the
    correction computed in the same registers and subtracted from C in place)."""

    block_m: int = 128
    block_n: int = 128
    warp_m: int = 64
    warp_n: int = 32
    stages: int = 4
    recover: int = 1

    @property
    def threads(self) -> int:
        return (self.block_m // self.warp_m) * (self.block_n // self.warp_n) * 32

    @property
    def smem_bytes(self) -> int:
        return self.stages * (self.block_m + self.block_n) * LDS


DEFAULT = MmaConfig()
# (block_m, block_n, warp_m, warp_n) instantiated by emulate.cpp and built by the tests; all spill-free with the
# recovery epilogue (64 x 64 warp tiles, or 16 warps a block, spill it)
GEOMETRIES = ((128, 128, 64, 32), (128, 128, 32, 64), (64, 128, 32, 64))
CONFIG_ENV = "POUW_CUDA_CONFIG"


def config_from_env() -> MmaConfig:
    """$POUW_CUDA_CONFIG="bm,bn,wm,wn,stages[,recover]" (an operator's or the benchmark's choice), else DEFAULT."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    return parse_config(env, CONFIG_ENV) if env else DEFAULT


def parse_config(text: str, what: str = "config") -> MmaConfig:
    """ "bm,bn,wm,wn,stages[,recover]" -> MmaConfig, checked against GEOMETRIES (ValueError naming `what`)."""
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (5, 6):
        raise ValueError(f"{what}={text!r}: expected integers bm,bn,wm,wn,stages[,recover]")
    cfg = MmaConfig(*vals)
    if tuple(vals[:4]) not in GEOMETRIES or not 2 <= cfg.stages <= 6 or cfg.recover not in (1, 2):
        raise ValueError(
            f"{what}={text!r}: block/warp geometry must be one of {GEOMETRIES}, stages 2..6, recover 1 or 2"
        )
    return cfg


def requested_kernel() -> str:
    """The GEMM kernel the operator asked for: $POUW_CUDA_KERNEL, "triton" (default), "cuda" (mma.sync) or
    "wgmma" (sm_90 only, kernels.cuda_wgmma)."""
    v = os.environ.get(KERNEL_ENV, "triton").strip().lower() or "triton"
    if v not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={v!r}: expected one of {', '.join(KERNELS)}")
    return v


def unsupported_reason(r: int, tile_h: int, tile_w: int, cfg: MmaConfig = DEFAULT) -> str | None:
    """None when the kernel handles chunk width r and h x w tiles with `cfg`, else why not (Triton then runs)."""
    if r % KSTEP:
        return f"r={r} is not a multiple of {KSTEP}"
    if tile_h % 16 or tile_w % 8 or cfg.warp_m % tile_h or cfg.warp_n % tile_w:
        return f"tile {tile_h}x{tile_w} does not tile the {cfg.warp_m}x{cfg.warp_n} warp tile in 16x8 mma tiles"
    t = (cfg.warp_m // tile_h) * (cfg.warp_n // tile_w)
    if not 2 <= t <= 32:
        return f"tile {tile_h}x{tile_w}: {t} tiles per warp, the fold needs 2..32"
    return None


VARIANTS = ((True, 0), (True, 1), (True, 2), (False, 0))  # (transcript, recover mode) instantiated


def kernel_names(tile_h: int, tile_w: int, cfg: MmaConfig = DEFAULT) -> dict[tuple[bool, int], str]:
    """(transcript, recover mode: 0 none, 1, 2 as MmaConfig.recover) -> the template instance's name expression."""
    return {
        (tr, rc): (
            f"pouw_fused_mma<{cfg.block_m}, {cfg.block_n}, {cfg.warp_m}, {cfg.warp_n}, {cfg.stages}, "
            f"{tile_h}, {tile_w}, {str(tr).lower()}, {rc}>"
        )
        for tr, rc in VARIANTS
    }


def source() -> str:
    """fused_mma.cu with mma_fold.h inlined (one self-contained text: NVRTC needs no include path and CuPy's
    cache key, the text, covers both files)."""
    header = (SRC_DIR / "mma_fold.h").read_text().replace("#pragma once\n", "", 1)
    return (SRC_DIR / "fused_mma.cu").read_text().replace('#include "mma_fold.h"', header, 1)


# ---------------------------------------------------------------- offline build (nvcc) and its ptxas report


@dataclass(frozen=True)
class PtxasInfo:
    """ptxas -v figures of one kernel for one architecture."""

    function: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int


_SPILL_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(log: str) -> list[PtxasInfo]:
    """Every entry function's registers, spills and stack from `ptxas -v` output (nvcc -Xptxas -v)."""
    out: list[PtxasInfo] = []
    func = arch = None
    spill: tuple[int, int, int] | None = None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line):
            func, arch, spill = m.group(1), m.group(2), None
        elif m := _SPILL_RE.search(line):
            spill = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        elif (m := re.search(r"Used (\d+) registers", line)) and func and spill is not None:
            out.append(PtxasInfo(func, arch or "?", int(m.group(1)), spill[1], spill[2], spill[0]))
            func = None
    return out


def instantiation_unit(
    tiles: tuple[tuple[int, int], ...], cfg: MmaConfig = DEFAULT, variants: tuple[tuple[bool, int], ...] | None = None
) -> str:
    """source() plus explicit instantiations of the (transcript, recover mode) `variants` (default: all of
    VARIANTS) for `tiles`."""
    sig = (
        "(const signed char*, const signed char*, int*, int*, const signed char*, const signed char*, "
        "int, int, int, int, int, int)"
    )
    lines = [
        f"template __global__ void {name}{sig};"
        for th, tw in tiles
        for v, name in kernel_names(th, tw, cfg).items()
        if variants is None or v in variants
    ]
    return source() + "\n" + "\n".join(lines) + "\n"


def nvcc_build(
    arch: str,
    tiles: tuple[tuple[int, int], ...] = ((16, 16),),
    cfg: MmaConfig = DEFAULT,
    nvcc: str | None = None,
    timeout: float = 120,
    more: tuple[MmaConfig, ...] = (),
) -> tuple[int, str]:
    """Compile the kernels of `cfg` (and the transcript + recovery kernels of the configs in `more`) for `arch` to
    a cubin with nvcc -Xptxas -v; (return code, compiler output)."""
    nvcc = nvcc or shutil.which("nvcc")
    if not nvcc:
        raise FileNotFoundError("nvcc not found on PATH")
    with tempfile.TemporaryDirectory(prefix="pouw-nvcc-") as tmp:
        src = Path(tmp) / "fused_mma_inst.cu"
        src.write_text(
            instantiation_unit(tiles, cfg)
            + "".join(instantiation_unit(tiles, c, ((True, 1), (True, 2))).removeprefix(source()) for c in more)
        )
        cmd = [
            nvcc,
            "-std=c++17",
            f"-arch={arch}",
            "-cubin",
            "-Xptxas",
            "-v",
            "-o",
            str(Path(tmp) / "k.cubin"),
            str(src),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return p.returncode, p.stdout + p.stderr


def find_nvrtc() -> str | None:
    """Path of libnvrtc: $POUW_NVRTC, the CUDA toolkit's, or the one pip's nvidia-cuda-nvrtc wheel (a torch
    dependency on CUDA machines) installs under site-packages/nvidia/; None when there is none."""
    import ctypes.util
    import glob
    import sys

    env = os.environ.get("POUW_NVRTC")
    if env:
        return env
    for d in sys.path:
        for pat in ("nvidia/cu*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
            hits = sorted(p for p in glob.glob(os.path.join(d, pat)) if "builtins" not in p)
            if hits:
                return hits[-1]
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
        hits = sorted(glob.glob(os.path.join(d, "libnvrtc.so*")))
        if hits:
            return hits[0]
    return ctypes.util.find_library("nvrtc")


def nvrtc_compile(
    arch: str, tiles: tuple[tuple[int, int], ...] = ((16, 16),), cfg: MmaConfig = DEFAULT, lib: str | None = None
) -> tuple[bool, str, dict[str, str]]:
    """Compile `source()` with NVRTC for `arch` (to a cubin, ptxas -v on) as CuPy does at run time, without a
    GPU: (success, program log, name expression -> lowered name). Raises FileNotFoundError without libnvrtc."""
    names = [n for th, tw in tiles for n in kernel_names(th, tw, cfg).values()]
    ok, log, lowered, _ = nvrtc_program(source(), "fused_mma.cu", names, arch, lib)
    return ok, log, lowered


def nvrtc_program(
    text: str, filename: str, names: list[str], arch: str, lib: str | None = None
) -> tuple[bool, str, dict[str, str], bytes]:
    """Compile `text` with NVRTC for `arch` to a cubin (ptxas -v on): (success, program log, name expression ->
    lowered name, the cubin). Raises FileNotFoundError without libnvrtc."""
    path = lib or find_nvrtc()
    if not path:
        raise FileNotFoundError("libnvrtc not found (set POUW_NVRTC, or pip install nvidia-cuda-nvrtc)")
    nv = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    if nv.nvrtcCreateProgram(ctypes.byref(prog), text.encode(), filename.encode(), 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    try:
        for n in names:
            nv.nvrtcAddNameExpression(prog, n.encode())
        opts = [b"-std=c++17", f"--gpu-architecture={arch}".encode(), b"--ptxas-options=-v"]
        rc = nv.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        nv.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        lowered: dict[str, str] = {}
        cubin = b""
        if rc == 0:
            for n in names:
                out = ctypes.c_char_p()
                if nv.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)) == 0 and out.value:
                    lowered[n] = out.value.decode()
            if nv.nvrtcGetCUBINSize(prog, ctypes.byref(size)) == 0:
                bin_buf = ctypes.create_string_buffer(size.value)
                if nv.nvrtcGetCUBIN(prog, bin_buf) == 0:
                    cubin = bin_buf.raw
        return rc == 0, log, lowered, cubin
    finally:
        nv.nvrtcDestroyProgram(ctypes.byref(prog))


# ---------------------------------------------------------------- host emulator (g++)

_emu_lock = threading.Lock()
_emu: ctypes.CDLL | None = None


def _emulator() -> ctypes.CDLL:
    """Build (or find in the pouw cache) and load emulate.cpp; raises RuntimeError without a C++ compiler."""
    global _emu
    with _emu_lock:
        if _emu is not None:
            return _emu
        from kernels.native_loader import cache_dir

        cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
        if not cxx:
            raise RuntimeError("no C++ compiler (g++) for the CUDA kernel's host emulator")
        files = [SRC_DIR / "mma_fold.h", SRC_DIR / "wgmma_fold.h", SRC_DIR / "emulate.cpp"]
        key = hashlib.sha256(b"\0".join(f.read_bytes() for f in files) + cxx.encode()).hexdigest()[:20]
        out = cache_dir() / f"mma_emulate-{key}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            cmd = [
                cxx,
                "-std=c++17",
                "-O2",
                "-shared",
                "-fPIC",
                "-Wno-unknown-pragmas",
                f"-I{SRC_DIR}",
                str(SRC_DIR / "emulate.cpp"),
                "-o",
                str(tmp),
            ]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if p.returncode:
                raise RuntimeError(f"building the emulator failed:\n{p.stderr[-2000:]}")
            os.replace(tmp, out)
        lib = ctypes.CDLL(str(out))
        vp, i = ctypes.c_void_p, ctypes.c_int
        lib.pouw_mma_emulate.argtypes = [vp, vp, vp, vp, vp, vp, i, i, i, i, i, i, i, i, i, i, i]
        lib.pouw_mma_emulate.restype = i
        lib.pouw_wgmma_emulate.argtypes = [vp, vp, vp, vp, vp, vp, i, i, i, i, i, i, i, i, i, i, i]
        lib.pouw_wgmma_emulate.restype = i
        lib.pouw_wgmma_maps.argtypes = [i, vp, vp]
        lib.pouw_wgmma_maps.restype = i
        _emu = lib
        return lib


def _check_correction(correction, m: int, n: int, device) -> tuple:
    u, vt, digits = correction
    import torch

    if u.dtype != torch.int8 or vt.dtype != torch.int8 or u.device != device or vt.device != device:
        raise ValueError("correction operands must be int8 tensors on the operands' device")
    if u.shape[0] != m or vt.shape[0] != n or u.shape[1] != vt.shape[1] or digits <= 0 or u.shape[1] % digits:
        raise ValueError(
            f"correction operands {tuple(u.shape)}, {tuple(vt.shape)} with {digits} digits "
            f"do not fit a {m} x {n} product"
        )
    cw = u.shape[1] // digits
    if cw % KSTEP:
        raise ValueError(f"correction width {cw} is not a multiple of {KSTEP}")
    return u.contiguous(), vt.contiguous(), digits, cw


def emulate(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    transcript: bool = True,
    correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    config: MmaConfig = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C' or C, messages) as the CUDA kernel computes them with `config` (one of GEOMETRIES; the pipeline depth
    changes no bits), emulated on the host (CPU tensors)."""
    import torch

    from kernels.base import MSG_WORDS, check_operands

    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    reason = unsupported_reason(r, tile_h, tile_w, config)
    if reason:
        raise ValueError(reason)
    geometry = (config.block_m, config.block_n, config.warp_m, config.warp_n)
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry {geometry} is not emulated (one of {GEOMETRIES})")
    a = a.contiguous()
    bt = b.t().contiguous()
    c = torch.zeros((m, n), dtype=torch.int32)
    msgs = torch.zeros((m // tile_h, n // tile_w, MSG_WORDS), dtype=torch.int32)
    if correction is not None:
        u, vt, digits, cw = _check_correction(correction, m, n, a.device)
    else:
        u, vt, digits, cw = a, bt, 0, KSTEP
    rc = _emulator().pouw_mma_emulate(
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
        tile_h,
        tile_w,
        int(transcript),
        GEOMETRIES.index(geometry),
        config.recover,
    )
    if rc:
        why = {-1: "tile not instantiated", -2: "shape", -3: "the block order repeats or misses a block"}
        raise ValueError(f"emulator refused the launch: {why.get(rc, rc)}")
    return c, msgs


# ---------------------------------------------------------------- run time (NVRTC through CuPy)

CUPY_MAJORS = (12, 13)  # CUDA major versions with a CuPy wheel and a pouw-node extra (pyproject.toml: cuda12, cuda13)


def cupy_wheel(cuda_version: str | None) -> tuple[str, str]:
    """(CuPy wheel, pouw-node extra) for torch's CUDA version (`torch.version.cuda`): "13.0" -> ("cupy-cuda13x",
    "cuda13"). ValueError for None (a CPU build of torch) or a major version without a wheel."""
    try:
        major = int(str(cuda_version).split(".")[0])
    except ValueError:
        major = None
    if cuda_version is None or major not in CUPY_MAJORS:
        raise ValueError(
            f"no CuPy wheel for torch's CUDA version {cuda_version!r} "
            f"(wheels exist for CUDA {', '.join(map(str, CUPY_MAJORS))})"
        )
    return f"cupy-cuda{major}x", f"cuda{major}"


def installed_cupy() -> list[str]:
    """The installed distributions that provide the `cupy` module (e.g. ["cupy-cuda13x"]), read from package
    metadata: nothing is imported and no CUDA library is loaded."""
    from importlib.metadata import packages_distributions

    return sorted(set(packages_distributions().get("cupy", [])))


def import_cupy(cuda_version: str | None):
    """CuPy, once it is known to be the wheel for torch's CUDA major (`cupy_wheel`). Raises ImportError, naming
    the wheel and the extra to install, when CuPy is missing or only a wheel for another CUDA major is installed
    (its NVRTC and runtime libraries are not the ones torch's CUDA brings); the caller then runs Triton."""
    try:
        wheel, extra = cupy_wheel(cuda_version)
    except ValueError as e:
        raise ImportError(f"the CUDA kernel cannot use CuPy: {e}") from e
    have = installed_cupy()
    others = [d for d in have if d.startswith("cupy-cuda") and d != wheel]
    if others and wheel not in have:
        raise ImportError(
            f"CuPy is installed as {', '.join(others)}, but torch runs CUDA {cuda_version}: "
            f"pip uninstall {' '.join(others)}; pip install {wheel} (pouw-node[{extra}])"
        )
    try:
        import cupy
    except ImportError as e:
        raise ImportError(
            f"the CUDA kernel needs CuPy for CUDA {cuda_version}: pip install {wheel} (pouw-node[{extra}])"
        ) from e
    return cupy


_mod_lock = threading.Lock()
_modules: dict[tuple, object] = {}


def _module(tile_h: int, tile_w: int, cfg: MmaConfig, device_index: int):
    """The compiled RawModule for (cfg, tile) on a device (its architecture); CuPy caches the binary on disk."""
    key = (tile_h, tile_w, cfg, device_index)
    with _mod_lock:
        mod = _modules.get(key)
        if mod is None:
            if "CUPY_CACHE_DIR" not in os.environ:
                from kernels.native_loader import cache_dir

                os.environ["CUPY_CACHE_DIR"] = str(cache_dir() / "cupy")
            import torch

            cupy = import_cupy(torch.version.cuda)
            with cupy.cuda.Device(device_index):
                mod = cupy.RawModule(
                    code=source(),
                    options=("-std=c++17",),
                    backend="nvrtc",
                    name_expressions=list(kernel_names(tile_h, tile_w, cfg).values()),
                )
                mod.compile()
            _modules[key] = mod
        return mod


def _aligned(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def noisy_matmul_mma(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    transcript: bool = True,
    correction: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    config: MmaConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base` (or C with `correction`, as `noisy_matmul_triton`), on a's CUDA device,
    with `config` (default: `config_from_env()`).

    Raises ValueError for shapes the kernel does not handle (`unsupported_reason`) and ImportError without CuPy.
    """
    import numpy as np
    import torch

    from kernels.base import MSG_WORDS, check_operands

    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    config = config or config_from_env()
    if a.device.type != "cuda" or b.device != a.device:
        raise ValueError(f"the CUDA kernel needs both operands on one CUDA device, got {a.device}, {b.device}")
    reason = unsupported_reason(r, tile_h, tile_w, config)
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
    else:
        u, vt, digits, cw = a, bt, 0, KSTEP
    mod = _module(tile_h, tile_w, config, a.device.index or 0)
    import cupy

    variant = (transcript, config.recover if correction is not None else 0)
    if variant not in VARIANTS:
        raise ValueError("the CUDA kernel has no recovery epilogue without the transcript")
    fn = mod.get_function(kernel_names(tile_h, tile_w, config)[variant])
    if config.smem_bytes > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = config.smem_bytes
    grid = (-(-m // config.block_m)) * (-(-n // config.block_n))
    with cupy.cuda.Device(a.device.index or 0):
        # torch's current stream, so the launch is ordered with the torch work around it; pointers by value
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(a.device).cuda_stream):
            fn(
                (grid,),
                (config.threads,),
                (
                    *(np.uint64(t.data_ptr()) for t in (a, bt, c, msgs, u, vt)),
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
