"""Loader for the native CPU kernels (`kernels/native/*.c`, one library: `fused_gemm.c` the GEMM's ABI and dispatch,
`vnni_gemm.c`, `avx2_gemm.c`, `neon_gemm.c` and `portable_gemm.c` its kernels, `pool.c` the threads, `workspace.c` the cached
buffers, `aux.c` tickets and noise, `recover.c` the recovery).

The C sources are compiled on first use with the system C compiler (gcc unless $POUW_CC / $CC say otherwise), each
into an object, then linked:

    gcc -O3 -march=native -fPIC -pthread -std=gnu11 -Wall -Wextra -DPOUW_WITH_OPENSSL -c fused_gemm.c   (likewise
        every source in SOURCES; avx2_gemm.c on x86-64 with -mno-avx512f too, so it runs AVX2 code only, also on an
        AVX-512 machine)
    gcc -shared -pthread *.o -o <cache>/fused_gemm-<key>.so -lcrypto

(when that fails, e.g. without OpenSSL's headers or libcrypto, once more without -DPOUW_WITH_OPENSSL/-lcrypto: the
library then lacks the tile tickets, `has_tickets()` is False) into a cache directory ($POUW_CACHE, else
~/.cache/pouw/). The file name carries a hash of the sources, the compiler
(path and version), the flags and the machine (architecture, CPU model and CPU feature flags), so a different CPU
or compiler gets its own build. The library is written to a temporary file in the cache directory and renamed into
place, so processes building at the same time never see a partial file. A cached OpenSSL build is preferred to a
cached plain one; a cached plain build is used without retrying OpenSSL (a fresh cache, or new sources, retry it).

Everything here is lazy and never raises at import: `available()` is False (with the reason logged once) when
$POUW_NATIVE=0, no compiler is found, the build fails, or the library cannot be loaded.

`noisy_matmul(a, b, r, tile_h, tile_w)` implements `kernels.base.Backend.noisy_mm` bit-exactly with one of three
fused kernels, chosen at run time from the CPU's flags: "vnni" (AVX512-VNNI, vnni_gemm.c; r % 4 == 0, tile width
in {4, 8, 16}, tile height a power of two >= 4), "avx2" (AVX2 + FMA, avx2_gemm.c; tile height % 4 == 0, and
r % 4 == 0 or r <= 1024) or "neon" (aarch64, neon_gemm.c: SDOT where the CPU has dotprod, else vmull_s8; r % 4 == 0
and tile height % 4 == 0). $POUW_NATIVE picks: "auto" (default: vnni where the CPU has it, else avx2, else neon),
"vnni", "avx2" or "neon" (only that kernel; none when the CPU lacks it), "off" (no native library at all; also
0/false/no).
`gemm_kernel()` says which kernel the environment selects, `kernel_path()` which path a shape takes: parameters no
kernel takes run a plain C path that is exact but slow (tens of GOPS), which kernels.cpu avoids.

`tile_tickets(prefix, msgs)` (when `has_tickets()`) implements `kernels.base.Backend.tile_tickets` with OpenSSL's
SHA-256 block function (SHA-NI where the CPU has it); `add_noise(a, b, e_l, f_r, map_a, map_b)` the optional
fused A' = A + E_L·P, B' = B + Q·F_R (AVX512-VBMI byte permutes where available). Both are bit-exact and use the
same thread pool as the GEMM. `sub_correction(c, pairs)` (when `has_sub_correction()`: AVX512-VNNI, source in
`kernels/native/recover.c`) the optional one-pass c -= sum_i 128^i U_i·V_i of the recovery.

The kernel runs on its own small pthread pool (threads default to torch.get_num_threads()). torch's OpenMP
runtime (libgomp) keeps its workers spinning for a few milliseconds after every parallel torch op, which takes a
core away from this kernel when it runs right after one (benchmarks/RESULTS.md, "Measurements moved out of the
code"); start the process with OMP_WAIT_POLICY=passive (read when torch is imported) to avoid that.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kernels.base import MSG_WORDS, ShapeError, check_operands, digit_count
from kernels.logevent import event

if TYPE_CHECKING:  # numpy is imported where it is used: importing this module stays cheap
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

log = logging.getLogger("pouw." + __name__)  # pouw.kernels.*: the one logger hierarchy

NATIVE_DIR = Path(__file__).resolve().parent / "native"
# compiled into one library; fused_gemm.c holds the ABI and the dispatch, one file per GEMM instruction set
SOURCES = tuple(
    NATIVE_DIR / name
    for name in (
        "fused_gemm.c",
        "pool.c",
        "workspace.c",
        "portable_gemm.c",
        "vnni_gemm.c",
        "avx2_gemm.c",
        "neon_gemm.c",
        "aux.c",
        "recover.c",
    )
)
# included by the sources: hashed and copied, not compiled
HEADERS = tuple(NATIVE_DIR / name for name in ("pouw_native.h", "pool.h", "workspace.h", "vnni_pack.h"))
SOURCE = SOURCES[0]
# -Werror only in the test suite's check (tests/test_native_warnings.py): a user's newer compiler with a new
# warning must not cost the native kernels
CFLAGS = ("-O3", "-march=native", "-fPIC", "-pthread", "-std=gnu11", "-Wall", "-Wextra")
_X86 = platform.machine().lower() in ("x86_64", "amd64")
# per-source flags: the AVX2 kernel never uses AVX-512 instructions (or its 32 registers), even on a machine that
# has them, so that it runs here exactly what it runs on an AVX2-only CPU
FILE_FLAGS = {"avx2_gemm.c": ("-mno-avx512f",)} if _X86 else {}
KERNELS = ("vnni", "avx2", "neon")  # the fused kernels, best first
# build variants, tried in this order: (name, extra flags before the sources, libraries after them)
Variant = tuple[str, tuple[str, ...], tuple[str, ...]]  # (name, compiler flags, linker flags)
VARIANTS: tuple[Variant, ...] = (("ossl", ("-DPOUW_WITH_OPENSSL",), ("-lcrypto",)), ("plain", (), ()))
ABI_VERSION = 5
_FLAG_FORCE_PORTABLE = 1
_FLAG_NO_TRANSCRIPT = 2
_FLAG_KERNEL = {"avx2": 4, "vnni": 8, "neon": 128}
_FLAG_AVX2_LOOP = {"fp32": 16, "int": 32}
_FLAG_NEON_LOOP = {"dot": 256, "mull": 512}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_reason: str | None = None


def requested_kernel() -> str:
    """$POUW_NATIVE as one of "auto", "vnni", "avx2", "neon", "off" (anything unknown counts as "auto")."""
    v = os.environ.get("POUW_NATIVE", "auto").strip().lower()
    if v in ("0", "false", "no", "off"):
        return "off"
    return v if v in KERNELS else "auto"


def _disabled_by_env() -> bool:
    return requested_kernel() == "off"


def cache_dir() -> Path:
    env = os.environ.get("POUW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pouw"


def _compiler() -> str | None:
    for name in (os.environ.get("POUW_CC"), os.environ.get("CC"), "gcc", "cc"):
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def _machine_id() -> str:
    """Architecture + CPU model + feature flags: what -march=native depends on."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            seen = set()
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if (
                    key in ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
                    and key not in seen
                ):
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _build_key(cc: str, sources: list[bytes], variant: Variant = VARIANTS[-1]) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = "?"
    h = hashlib.sha256()
    items = [
        *sources,
        cc.encode(),
        version.encode(),
        " ".join(CFLAGS).encode(),
        repr(sorted(FILE_FLAGS.items())).encode(),
        _machine_id().encode(),
        str(ABI_VERSION).encode(),
        variant[0].encode(),
        " ".join((*variant[1], *variant[2])).encode(),
    ]
    for item in items:
        h.update(item)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _cache_dirs() -> list[Path]:
    # the cache directory, or (only when that one is not writable) a private temporary one
    return [cache_dir(), Path(tempfile.gettempdir()) / f"pouw-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"]


def _build() -> Path:
    """Compile (or find in the cache) the shared library; returns its path or raises RuntimeError."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (install gcc, or set POUW_CC)")
    sources = []
    for path in SOURCES + HEADERS:
        try:
            sources.append(path.read_bytes())
        except OSError as exc:
            raise RuntimeError(f"cannot read {path}: {exc}") from exc
    names = [f"fused_gemm-{_build_key(cc, sources, v)}.so" for v in VARIANTS]
    for name in names:  # any cached variant, best first
        for out_dir in _cache_dirs():
            if (out_dir / name).is_file():
                return out_dir / name
    errors = []
    for variant, name in zip(VARIANTS, names):
        try:
            return _compile(cc, sources, variant, name)
        except RuntimeError as exc:
            errors.append(str(exc))
            if variant is not VARIANTS[-1]:
                event(
                    log,
                    logging.INFO,
                    "native build variant failed; trying the next one",
                    variant=variant[0],
                    why=str(exc)[-400:],
                )
    raise RuntimeError(errors[-1])


def _compile(cc: str, sources: list[bytes], variant: Variant, name: str) -> Path:
    errors = []
    for out_dir in _cache_dirs():
        if (out_dir / name).is_file():
            return out_dir / name
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".fused_gemm-", suffix=".so.tmp", dir=out_dir)
            os.close(fd)
            break
        except OSError as exc:
            errors.append(f"{out_dir}: {exc}")
    else:
        raise RuntimeError("no writable cache directory: " + "; ".join(errors))
    target = out_dir / name
    try:
        # compile the exact bytes hashed above (the sources may change on disk while we build)
        with tempfile.TemporaryDirectory(prefix="pouw-build-") as tdir:
            copies = []
            for path, data in zip(SOURCES + HEADERS, sources):
                copy = Path(tdir) / path.name
                copy.write_bytes(data)
                if path in SOURCES:
                    copies.append(copy)
            cmds = _build_commands(cc, copies, variant, Path(tmp))
            for cmd in cmds:
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                except (OSError, subprocess.SubprocessError) as exc:
                    raise RuntimeError(f"running {cc} failed: {exc}") from exc
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"compiling the native kernels failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-4000:]}"
                    )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: a concurrent builder just replaces an identical file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    event(log, logging.INFO, "built native kernel", path=str(target))
    return target


def _build_commands(cc: str, sources: list[Path], variant: Variant, out: Path) -> list[list[str]]:
    """The compiler commands that build `sources` (copies of SOURCES) into the library `out`: one object per
    source, then the link."""
    _, defs, libs = variant
    cmds = [
        [cc, *CFLAGS, *defs, *FILE_FLAGS.get(src.name, ()), "-c", str(src), "-o", str(src) + ".o"] for src in sources
    ]
    cmds.append([cc, "-shared", "-pthread", *(str(src) + ".o" for src in sources), "-o", str(out), *libs])
    return cmds


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build()))
    if lib.pouw_abi_version() != ABI_VERSION:
        raise RuntimeError("native kernel ABI version mismatch")
    i64, i32, vp = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.pouw_noisy_gemm_ex.argtypes = [vp, vp, i64, i64, i64, i32, i32, i32, vp, vp, i32, i32]
    lib.pouw_noisy_gemm_ex.restype = i32
    lib.pouw_noisy_gemm.argtypes = [vp, vp, i64, i64, i64, i32, i32, i32, vp, vp, i32]
    lib.pouw_noisy_gemm.restype = i32
    lib.pouw_path.argtypes = [i64, i64, i64, i32, i32, i32, i32]
    lib.pouw_path.restype = i32
    lib.pouw_has_vnni.argtypes = []
    lib.pouw_has_vnni.restype = i32
    lib.pouw_add_noise.argtypes = [vp, vp, vp, vp, vp, vp, i64, i64, i64, i64, vp, vp, i32, i32]
    lib.pouw_has_avx2.argtypes = []
    lib.pouw_has_avx2.restype = i32
    lib.pouw_avx2_default_variant.argtypes = []
    lib.pouw_avx2_default_variant.restype = i32
    lib.pouw_avx2_sub_correction.argtypes = [vp, vp, vp, i64, i64, i64, i64, i32]
    lib.pouw_avx2_sub_correction.restype = i32
    lib.pouw_avx2_scatter_rows.argtypes = [vp, vp, i64, i64, i64, vp, i32]
    lib.pouw_avx2_scatter_rows.restype = i32
    lib.pouw_avx2_gather_cols.argtypes = [vp, vp, i64, i64, i64, vp, i32]
    lib.pouw_avx2_gather_cols.restype = i32
    lib.pouw_avx2_sub_i16.argtypes = [vp, vp, vp, i64, i64, i64, i32]
    lib.pouw_avx2_sub_i16.restype = i32
    lib.pouw_add_noise.restype = i32
    lib.pouw_has_neon.argtypes = []
    lib.pouw_has_neon.restype = i32
    lib.pouw_neon_default_variant.argtypes = []
    lib.pouw_neon_default_variant.restype = i32
    lib.pouw_neon_sub_correction.argtypes = [vp, vp, vp, i64, i64, i64, i64, i32]
    lib.pouw_neon_sub_correction.restype = i32
    lib.pouw_noise_path.argtypes = [i64, i32]
    lib.pouw_noise_path.restype = i32
    lib.pouw_has_tickets.argtypes = []
    lib.pouw_has_tickets.restype = i32
    if hasattr(lib, "pouw_sub_correction"):
        lib.pouw_has_sub_correction.argtypes = []
        lib.pouw_has_sub_correction.restype = i32
        lib.pouw_sub_correction.argtypes = [vp, i64, i64, i32, vp, vp, vp, i32]
        lib.pouw_sub_correction.restype = i32
    if hasattr(lib, "pouw_correction_operands"):
        lib.pouw_correction_operands.argtypes = [
            vp,
            vp,
            vp,
            vp,
            vp,
            vp,
            i64,
            i64,
            i64,
            i64,
            vp,
            vp,
            i64,
            ctypes.POINTER(i64),
            i32,
        ]
        lib.pouw_correction_operands.restype = i32
    if lib.pouw_has_tickets():
        lib.pouw_tile_tickets.argtypes = [ctypes.c_char_p, i64, vp, i64, i64, vp, i32]
        lib.pouw_tile_tickets.restype = i32
    return lib


def _get() -> ctypes.CDLL | None:
    global _lib, _tried, _reason
    if _disabled_by_env():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _load()
            except Exception as exc:  # noqa: BLE001 - any failure just disables the native path
                _lib = None
                _reason = str(exc)
                event(log, logging.WARNING, "native CPU kernel unavailable", why=_reason)
            _tried = True
    return _lib


def available() -> bool:
    """True when the native kernel is built and loaded (builds it on first call). Never raises."""
    return _get() is not None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True or has not been asked yet)."""
    if _disabled_by_env():
        return f"disabled by POUW_NATIVE={os.environ.get('POUW_NATIVE')}"
    _get()
    return _reason


def has_vnni() -> bool:
    """True when the AVX512-VNNI path runs on this CPU (False when the library is unavailable)."""
    lib = _get()
    return bool(lib is not None and lib.pouw_has_vnni())


def has_avx2() -> bool:
    """True when the AVX2 path runs on this CPU (False when the library is unavailable)."""
    lib = _get()
    return bool(lib is not None and lib.pouw_has_avx2())


def has_neon() -> bool:
    """True when the NEON path runs on this CPU (any aarch64; False when the library is unavailable)."""
    lib = _get()
    return bool(lib is not None and lib.pouw_has_neon())


def supported_kernels() -> list[str]:
    """The fused kernels the loaded library runs on this CPU, best first (empty when it is unavailable)."""
    return [name for name, ok in (("vnni", has_vnni()), ("avx2", has_avx2()), ("neon", has_neon())) if ok]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo ("flags" on x86, "Features" on aarch64), read independently of
    the library; empty where there is no such file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernels_for_flags(flags: set[str], machine: str | None = None) -> list[str]:
    """The fused kernels a CPU with these /proc/cpuinfo flags runs, best first (machine: platform.machine(),
    default this one's)."""
    machine = (machine or platform.machine()).lower()
    out = []
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags:
        out.append("vnni")
    if {"avx2", "fma"} <= flags:
        out.append("avx2")
    if machine in ("aarch64", "arm64") and "asimd" in flags:
        out.append("neon")
    return out


def cpu_kernels() -> list[str]:
    """The fused kernels this CPU's flags (/proc/cpuinfo, read independently of the library) say it can run,
    best first: what tests hold the build to (a kernel missing from `supported_kernels()` is a failure)."""
    if not os.path.exists("/proc/cpuinfo"):
        return supported_kernels()
    return kernels_for_flags(cpu_flags())


_warned_kernel = False


def gemm_kernel() -> str | None:
    """The fused kernel $POUW_NATIVE selects on this CPU ("vnni", "avx2" or "neon"), or None (off, library unavailable, or
    the forced kernel unsupported here: logged once)."""
    global _warned_kernel
    req = requested_kernel()
    supported = supported_kernels()
    if req == "auto":
        return supported[0] if supported else None
    if req in supported:
        return req
    if req != "off" and not _warned_kernel:
        _warned_kernel = True
        event(
            log,
            logging.WARNING,
            "POUW_NATIVE asks for a kernel this CPU (or the native build) does not run",
            POUW_NATIVE=req,
            why=unavailable_reason() or "CPU flags",
        )
    return None


def avx2_loop() -> str:
    """The AVX2 kernel's default inner loop: "int" (vpmaddubsw) or "fp32" (FMA): whichever measured faster."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    return "fp32" if lib.pouw_avx2_default_variant() else "int"


def neon_loop() -> str:
    """The NEON kernel's inner loop on this CPU: "dot" (SDOT, ARMv8.2 dotprod: "asimddp" in /proc/cpuinfo) or
    "mull" (vmull_s8, any aarch64)."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    return "dot" if lib.pouw_neon_default_variant() else "mull"


def _kernel_flags(kernel: str | None) -> int:
    """pouw_noisy_gemm_ex flags for kernel None (what $POUW_NATIVE selects), "vnni", "avx2", "neon" or
    "portable"."""
    if kernel is None:
        req = requested_kernel()
        return _FLAG_KERNEL.get(req, 0)
    if kernel == "portable":
        return _FLAG_FORCE_PORTABLE
    if kernel not in _FLAG_KERNEL:
        raise ValueError(f"unknown kernel {kernel!r}: use vnni, avx2, neon or portable")
    return _FLAG_KERNEL[kernel]


_PATHS = {0: "portable", 1: "vnni", 2: "avx2", 3: "neon"}


def kernel_path(m: int, k: int, n: int, r: int, tile_h: int, tile_w: int, kernel: str | None = None) -> str:
    """'vnni', 'avx2', 'neon' or 'portable': which code path noisy_matmul(..., kernel=kernel) takes for this shape."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    rc = lib.pouw_path(m, k, n, r, tile_h, tile_w, _kernel_flags(kernel))
    if rc < 0:
        raise ShapeError(f"shape m={m} k={k} n={n} r={r} tile={tile_h}x{tile_w} rejected by the native kernel")
    return _PATHS[rc]


def _out_buffer(t: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> torch.Tensor:
    """`t` when it is a contiguous CPU tensor of exactly this shape and dtype (a caller's reused buffer), a new
    tensor when it is None; anything else is an error."""
    if t is None:
        return torch.empty(shape, dtype=dtype)
    if (
        not isinstance(t, torch.Tensor)
        or t.dtype != dtype
        or tuple(t.shape) != shape
        or t.device.type != "cpu"
        or not t.is_contiguous()
    ):
        raise ShapeError(f"out buffer {name} must be a contiguous CPU {dtype} tensor of shape {shape}")
    return t


def noisy_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    r: int,
    tile_h: int,
    tile_w: int,
    *,
    threads: int | None = None,
    force_portable: bool = False,
    out: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    transcript: bool = True,
    kernel: str | None = None,
    loop: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base`, computed by the native kernel on CPU int8 tensors.

    threads: worker threads (default torch.get_num_threads()). kernel: "vnni", "avx2" or "neon" (that kernel where
    the shape fits it, else the plain C path), "portable" (the plain C path; force_portable=True says the same),
    None (what $POUW_NATIVE selects). loop: the AVX2 kernel's inner loop, "int" or "fp32" (default `avx2_loop()`),
    or the NEON kernel's, "dot" or "mull" (default `neon_loop()`; "dot" on a CPU without dotprod runs the plain C
    path).
    out: (C', messages) buffers to write into instead of new tensors (a None entry: a new tensor; a miner reusing
    them across passes saves the page faults of fresh allocations: ~4,000 per pass at 2048^3). transcript=False:
    C' only, the messages are left unspecified (the VNNI and AVX2 paths skip them; see `plain_matmul`).
    """
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    m, k, n = check_operands(a, b, r, tile_h, tile_w)
    if a.device.type != "cpu" or b.device.type != "cpu":
        raise ShapeError("the native kernel takes CPU tensors")
    if k > 65536:
        raise ShapeError(f"k={k} exceeds 65536: int32 accumulation would no longer be exact")
    a = a.contiguous()
    b = b.contiguous()
    c = _out_buffer(out[0] if out else None, (m, n), torch.int32, "c")
    msgs = _out_buffer(out[1] if out else None, (m // tile_h, n // tile_w, MSG_WORDS), torch.int32, "msgs")
    if m == 0 or n == 0 or k == 0:
        c.zero_()
        msgs.zero_()
        return c, msgs
    if threads is None:
        threads = torch.get_num_threads()
    flags = _FLAG_FORCE_PORTABLE if force_portable else _kernel_flags(kernel)
    if loop is not None:
        loops = _FLAG_AVX2_LOOP | _FLAG_NEON_LOOP
        if loop not in loops:
            raise ValueError(f"unknown inner loop {loop!r}: use int or fp32 (AVX2), dot or mull (NEON)")
        flags |= loops[loop]
    if not transcript:
        flags |= _FLAG_NO_TRANSCRIPT
    rc = lib.pouw_noisy_gemm_ex(
        a.data_ptr(),
        b.data_ptr(),
        m,
        k,
        n,
        int(r),
        int(tile_h),
        int(tile_w),
        c.data_ptr(),
        msgs.data_ptr(),
        max(1, int(threads)),
        flags,
    )
    if rc == -1:
        raise ShapeError(f"shape m={m} k={k} n={n} r={r} tile={tile_h}x{tile_w} rejected by the native kernel")
    if rc != 0:
        raise RuntimeError(f"native kernel failed with code {rc}")
    return c, msgs


def plain_chunk(k: int, threads: int) -> int | None:
    """The chunk width `plain_matmul` runs with: the widest divisor of k (a multiple of 4) that still gives every
    thread a chunk of B to pack; None when k has none."""
    chunks = 1
    while chunks < 2 * max(1, threads) and k % (8 * chunks) == 0:
        chunks *= 2
    return k // chunks if k % (4 * chunks) == 0 else None


def _plain_chunk_avx2(k: int) -> int:
    """The AVX2 plain GEMM's chunk: the widest divisor of k up to 1024 (a multiple of 4 where k is one), which
    both inner loops take (the fp32 loop runs where an operand holds -128)."""
    step = 4 if k % 4 == 0 else 1
    return next(d for d in range(min(k, 1024) // step * step, 0, -step) if k % d == 0)


def plain_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    threads: int | None = None,
    out: torch.Tensor | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """Exact int8 A @ B -> int32 on the engine's own kernel with the transcript switched off (no messages, a few
    wide chunks): what the mining benchmark's "engine plain GEMM" times on a CPU. kernel: "vnni", "avx2", "neon" or
    None (`gemm_kernel()`); RuntimeError when that kernel does not run here. VNNI needs k and m multiples of 4 and n
    of 16; AVX2 m a multiple of 4; NEON m and k multiples of 4 (one chunk: int32 is exact to k = 65536)
    (ShapeError otherwise)."""
    kernel = kernel or gemm_kernel()
    if kernel not in supported_kernels():
        raise RuntimeError(
            f"the native plain GEMM needs a fused kernel (asked: {kernel}, this CPU runs: {supported_kernels()})"
        )
    m, k = a.shape
    n = b.shape[1]
    if threads is None:
        threads = torch.get_num_threads()
    if kernel == "vnni":
        r = plain_chunk(k, threads)
        if r is None or m % 4 or n % 16:
            raise ShapeError(f"shape {m}x{k}x{n} does not fit the native plain GEMM")
        th, tw = (8 if m % 8 == 0 else 4), 16
    elif kernel == "neon":
        if m % 4 or k % 4 or k == 0:
            raise ShapeError(f"shape {m}x{k}x{n} does not fit the native plain GEMM")
        r, th, tw = k, 4, 1
    else:
        if m % 4 or k == 0:
            raise ShapeError(f"shape {m}x{k}x{n} does not fit the native plain GEMM")
        r = _plain_chunk_avx2(k)
        th, tw = 4, next(w for w in (16, 8, 4, 2, 1) if n % w == 0)
    msgs = torch.empty((m // th, n // tw, MSG_WORDS), dtype=torch.int32)  # required by the ABI, never written
    c, _ = noisy_matmul(a, b, r, th, tw, threads=threads, out=(out, msgs), transcript=False, kernel=kernel)
    return c


def has_tickets() -> bool:
    """True when `tile_tickets` works (the library was built with OpenSSL's libcrypto). Never raises."""
    lib = _get()
    return bool(lib is not None and lib.pouw_has_tickets())


def tile_tickets(prefix: bytes, msgs: torch.Tensor, *, threads: int | None = None) -> torch.Tensor:
    """`kernels.base.Backend.tile_tickets` in C: (TI, TJ, 16) int32 messages -> (TI, TJ, 32) uint8 CPU tensor of
    SHA-256(prefix || u32le ti || u32le tj || 16 words u32le). Raises RuntimeError unless `has_tickets()`."""
    lib = _get()
    if lib is None or not lib.pouw_has_tickets():
        why = unavailable_reason() if lib is None else "library built without OpenSSL (libcrypto)"
        raise RuntimeError(f"native tile tickets unavailable: {why}")
    prefix = bytes(prefix)
    if not isinstance(msgs, torch.Tensor) or msgs.dim() != 3 or msgs.shape[2] != MSG_WORDS:
        raise ShapeError(f"messages must be a (ti, tj, {MSG_WORDS}) tensor")
    if msgs.dtype not in (torch.int32, getattr(torch, "uint32", torch.int32)):
        raise ShapeError(f"messages must be int32 words, got {msgs.dtype}")
    msgs = msgs.detach().cpu().contiguous()
    ti_n, tj_n, _ = msgs.shape
    out = torch.empty((ti_n, tj_n, 32), dtype=torch.uint8)
    if ti_n == 0 or tj_n == 0:
        return out
    if threads is None:
        threads = torch.get_num_threads()
    rc = lib.pouw_tile_tickets(prefix, len(prefix), msgs.data_ptr(), ti_n, tj_n, out.data_ptr(), max(1, int(threads)))
    if rc != 0:
        raise RuntimeError(f"native tile tickets failed with code {rc}")
    return out


def noise_path(r: int) -> str:
    """'vbmi' or 'portable': how `add_noise` gathers A' for rank r."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    return "vbmi" if lib.pouw_noise_path(int(r), 0) == 1 else "portable"


def _index_array(x: ArrayLike, k: int, name: str) -> NDArray[np.int32]:
    import numpy as np

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.shape != (k,) or arr.dtype.kind not in "iu":
        raise ShapeError(f"{name} must be {k} integer indices, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < -(1 << 31) or int(arr.max()) >= (1 << 31)):
        raise ShapeError(f"{name} holds indices out of range")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _noise_shapes(
    a: torch.Tensor, b: torch.Tensor, e_l: torch.Tensor, f_r: torch.Tensor, b_name: str
) -> tuple[int, int, int, int]:
    """(m, k, n, r) of 2-D int8 CPU tensors a (m x k), b (k x n), e_l (m x r), f_r (r x n), r >= 1; else ShapeError."""
    for name, t in (("a", a), (b_name, b), ("e_l", e_l), ("f_r", f_r)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8 or t.dim() != 2:
            raise ShapeError(f"{name} must be a 2-D int8 tensor")
        if t.device.type != "cpu":
            raise ShapeError("the native kernel takes CPU tensors")
    m, k = a.shape
    k2, n = b.shape
    r = e_l.shape[1]
    if k2 != k or e_l.shape[0] != m or tuple(f_r.shape) != (r, n) or r < 1:
        raise ShapeError(
            f"shapes disagree: a {tuple(a.shape)}, {b_name} {tuple(b.shape)}, e_l {tuple(e_l.shape)}, "
            f"f_r {tuple(f_r.shape)}"
        )
    return m, k, n, r


def add_noise(
    a: torch.Tensor,
    b: torch.Tensor,
    e_l: torch.Tensor,
    f_r: torch.Tensor,
    map_a: ArrayLike,
    map_b: ArrayLike,
    *,
    threads: int | None = None,
    force_portable: bool = False,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') with A'[u][l] = a[u][l] + e_l[u][map_a[l]] and B'[l][v] = b[l][v] + f_r[map_b[l]][v], new int8
    CPU tensors (the optional `Backend.add_noise` of kernels/base.py). Arithmetic wraps mod 256, i.e. equals the
    exact sum converted to int8 (exact within the contract, whose sums stay in [-96, 95]). map_a, map_b: k indices
    in [0, r) (numpy or torch integer arrays). force_portable: plain C gathers instead of AVX512-VBMI (tests). out: (A', B') buffers
    to write into (contiguous, not the inputs) instead of new tensors."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    m, k, n, r = _noise_shapes(a, b, e_l, f_r, "b")
    idx = [_index_array(x, k, name) for name, x in (("map_a", map_a), ("map_b", map_b))]
    a, b, e_l, f_r = a.contiguous(), b.contiguous(), e_l.contiguous(), f_r.contiguous()
    a_out = _out_buffer(out[0] if out else None, (m, k), torch.int8, "a")
    b_out = _out_buffer(out[1] if out else None, (k, n), torch.int8, "b")
    if threads is None:
        threads = torch.get_num_threads()
    rc = lib.pouw_add_noise(
        a.data_ptr(),
        b.data_ptr(),
        e_l.data_ptr(),
        f_r.data_ptr(),
        *(x.ctypes.data for x in idx),
        m,
        k,
        n,
        r,
        a_out.data_ptr(),
        b_out.data_ptr(),
        max(1, int(threads)),
        _FLAG_FORCE_PORTABLE if force_portable else 0,
    )
    if rc == -1:
        raise ShapeError(f"add_noise rejected its arguments (an index outside [0, {r})?)")
    if rc != 0:
        raise RuntimeError(f"native add_noise failed with code {rc}")
    return a_out, b_out


SUB_CORRECTION_MAX_PAIRS = 8


def _vnni_sub_correction(lib: ctypes.CDLL | None) -> bool:
    return bool(lib is not None and hasattr(lib, "pouw_sub_correction") and lib.pouw_has_sub_correction())


def has_sub_correction() -> bool:
    """True when `sub_correction` runs natively: library loaded, and a CPU with AVX512-VNNI ($POUW_NATIVE "auto" or
    "vnni": "avx2" stands in for an AVX2-only CPU, "neon" runs no x86 kernel) or an aarch64 CPU (the NEON kernel's
    GEMM). Never raises."""
    lib = _get()
    req = requested_kernel()
    return bool(req in ("auto", "vnni") and _vnni_sub_correction(lib)) or bool(req in ("auto", "neon") and has_neon())


def sub_correction(
    c: torch.Tensor, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], *, threads: int | None = None
) -> torch.Tensor:
    """The optional `Backend.sub_correction` of kernels/base.py: c -= sum_i 128^i * U_i @ V_i in place (int32,
    wrapping mod 2^32) in one pass over c. c: m x n int32 contiguous CPU tensor; pairs: [(U_i, V_i)] with U_i
    m x w_i and V_i w_i x n int8 CPU tensors (made contiguous; w_i not a multiple of 4 is zero-padded).
    Returns c. Raises RuntimeError unless `has_sub_correction()`. On aarch64 the NEON kernel runs it as one GEMM
    over the digits side by side (Horner at each digit boundary)."""
    lib = _get()
    neon = not _vnni_sub_correction(lib) and has_neon()
    if lib is None or not (_vnni_sub_correction(lib) or neon):
        why = unavailable_reason() if lib is None else "CPU without AVX512-VNNI or NEON"
        raise RuntimeError(f"native sub_correction unavailable: {why}")
    if not isinstance(c, torch.Tensor) or c.dtype != torch.int32 or c.dim() != 2:
        raise ShapeError("c must be a 2-D int32 tensor")
    if c.device.type != "cpu":
        raise ShapeError("the native kernel takes CPU tensors")
    if not c.is_contiguous():
        raise ShapeError("c must be contiguous (it is updated in place)")
    m, n = c.shape
    pairs = list(pairs)
    us, vs, ws = [], [], []
    for i, pair in enumerate(pairs):
        try:
            u, v = pair
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"pair {i} is not a (U, V) pair") from exc
        for name, t in (("U", u), ("V", v)):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.int8 or t.dim() != 2:
                raise ShapeError(f"pair {i}: {name} must be a 2-D int8 tensor")
            if t.device.type != "cpu":
                raise ShapeError("the native kernel takes CPU tensors")
        w = u.shape[1]
        if u.shape[0] != m or tuple(v.shape) != (w, n):
            raise ShapeError(f"pair {i}: shapes U {tuple(u.shape)}, V {tuple(v.shape)} do not fit c {m}x{n}")
        if w % 4:
            pad = 4 - w % 4
            u = torch.nn.functional.pad(u, (0, pad))
            v = torch.nn.functional.pad(v, (0, 0, 0, pad))
            w += pad
        us.append(u.contiguous())
        vs.append(v.contiguous())
        ws.append(w)
    # 128^i = 2^(7i) vanishes mod 2^32 for i >= 5: later pairs (checked above) change nothing
    us, vs, ws = us[:SUB_CORRECTION_MAX_PAIRS], vs[:SUB_CORRECTION_MAX_PAIRS], ws[:SUB_CORRECTION_MAX_PAIRS]
    if m == 0 or n == 0 or not us:
        return c
    if threads is None:
        threads = torch.get_num_threads()
    if neon:
        return _neon_sub_correction(lib, c, us, vs, threads)
    k = len(us)
    u_ptrs = (ctypes.c_void_p * k)(*(t.data_ptr() for t in us))
    v_ptrs = (ctypes.c_void_p * k)(*(t.data_ptr() for t in vs))
    w_arr = (ctypes.c_int64 * k)(*ws)
    rc = lib.pouw_sub_correction(c.data_ptr(), m, n, k, u_ptrs, v_ptrs, w_arr, max(1, int(threads)))
    if rc == -1:
        raise ShapeError("sub_correction rejected its arguments")
    if rc != 0:
        raise RuntimeError(f"native sub_correction failed with code {rc}")
    return c


def digits_side_by_side(us: list[torch.Tensor], vs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(U, V, w) for a GEMM whose chunks of width w are the digits, highest first: U = [U_{d-1} | .. | U_0] and
    V = [V_{d-1} ; .. ; V_0], each pair zero-padded to the widest w (a multiple of 4 when every w_i is one). With
    S = 128 S + U_i V_i at each chunk boundary (Horner) the GEMM gives sum_i 128^i U_i V_i."""
    w = max(u.shape[1] for u in us)
    u_cat = torch.cat([torch.nn.functional.pad(u, (0, w - u.shape[1])) for u in reversed(us)], dim=1).contiguous()
    v_cat = torch.cat([torch.nn.functional.pad(v, (0, 0, 0, w - v.shape[0])) for v in reversed(vs)], dim=0).contiguous()
    return u_cat, v_cat, w


def _neon_sub_correction(
    lib: ctypes.CDLL, c: torch.Tensor, us: list[torch.Tensor], vs: list[torch.Tensor], threads: int
) -> torch.Tensor:
    """sub_correction's checked, 4-padded pairs on the NEON kernel: one GEMM over `digits_side_by_side` (int32
    stays exact while d * w <= 65536; wider ones, far beyond the protocol's ranks, run Horner in torch)."""
    m, n = c.shape
    u_cat, v_cat, w = digits_side_by_side(us, vs)
    if len(us) * w > 65536:
        acc = torch.zeros_like(c)
        for u, v in zip(reversed(us), reversed(vs)):
            acc = acc * 128 + u.to(torch.int32) @ v.to(torch.int32)
        return c.sub_(acc)
    rc = lib.pouw_neon_sub_correction(
        c.data_ptr(), u_cat.data_ptr(), v_cat.data_ptr(), m, n, len(us), w, max(1, int(threads))
    )
    if rc == -1:
        raise ShapeError("sub_correction rejected its arguments")
    if rc != 0:
        raise RuntimeError(f"native neon_sub_correction failed with code {rc}")
    return c


def _avx2_lib(what: str) -> ctypes.CDLL:
    """The native library when it has the AVX2 kernels; RuntimeError naming `what` and the reason otherwise."""
    lib = _get()
    if lib is None or not lib.pouw_has_avx2():
        raise RuntimeError(f"native AVX2 {what} unavailable: {unavailable_reason() or 'CPU without AVX2'}")
    return lib


def avx2_sub_correction(
    c: torch.Tensor, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], *, threads: int | None = None
) -> torch.Tensor:
    """`Backend.sub_correction` on the AVX2 kernel: c -= sum_i 128^i U_i @ V_i in place (int32, wrapping), one
    GEMM over the digits side by side (highest first, S = 128 S + U_i V_i at each digit boundary) that subtracts
    from c as it stores. c: m x n int32 contiguous, m % 4 == 0 (ShapeError otherwise); U_i m x w_i, V_i w_i x n
    int8 (narrower pairs are zero-padded to the widest). RuntimeError unless `has_avx2()`."""
    lib = _avx2_lib("sub_correction")
    if not isinstance(c, torch.Tensor) or c.dtype != torch.int32 or c.dim() != 2 or c.device.type != "cpu":
        raise ShapeError("c must be a 2-D int32 CPU tensor")
    if not c.is_contiguous():
        raise ShapeError("c must be contiguous (it is updated in place)")
    m, n = c.shape
    plist = [tuple(p) for p in pairs][:SUB_CORRECTION_MAX_PAIRS]  # 128^i vanishes mod 2^32 for i >= 5
    if m == 0 or n == 0 or not plist:
        return c
    if m % 4:
        raise ShapeError(f"m={m} is not a multiple of 4")
    for i, (u, v) in enumerate(plist):
        if (
            u.dtype != torch.int8
            or v.dtype != torch.int8
            or u.dim() != 2
            or v.dim() != 2
            or u.shape[0] != m
            or v.shape[1] != n
            or u.shape[1] != v.shape[0]
        ):
            raise ShapeError(f"pair {i}: shapes U {tuple(u.shape)}, V {tuple(v.shape)} do not fit c {m}x{n}")
    w = max(u.shape[1] for u, _ in plist)
    w += -w % 4
    us = [torch.nn.functional.pad(u, (0, w - u.shape[1])) for u, _ in reversed(plist)]
    vs = [torch.nn.functional.pad(v, (0, 0, 0, w - v.shape[0])) for _, v in reversed(plist)]
    u_cat = torch.cat(us, dim=1).contiguous()
    v_cat = torch.cat(vs, dim=0).contiguous()
    if threads is None:
        threads = torch.get_num_threads()
    rc = lib.pouw_avx2_sub_correction(
        c.data_ptr(), u_cat.data_ptr(), v_cat.data_ptr(), m, n, len(plist), w, max(1, int(threads))
    )
    if rc == -1:
        raise ShapeError("avx2_sub_correction rejected its arguments")
    if rc != 0:
        raise RuntimeError(f"native avx2_sub_correction failed with code {rc}")
    return c


def avx2_sub_i16(c: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, threads: int | None = None) -> torch.Tensor:
    """c -= u @ v in place (int32, wrapping) for int16 u (m x k) and v (k x n) on the AVX2 kernel (vpmaddwd):
    the recovery with A·Q and P·B' whole instead of in base-128 digits. m % 4 == 0 (ShapeError otherwise); an odd
    k is zero-padded. RuntimeError unless `has_avx2()`."""
    lib = _avx2_lib("sub_i16")
    if (
        not isinstance(c, torch.Tensor)
        or c.dtype != torch.int32
        or c.dim() != 2
        or c.device.type != "cpu"
        or not c.is_contiguous()
    ):
        raise ShapeError("c must be a contiguous 2-D int32 CPU tensor")
    m, n = c.shape
    if (
        u.dtype != torch.int16
        or v.dtype != torch.int16
        or u.dim() != 2
        or v.dim() != 2
        or u.shape[0] != m
        or v.shape[1] != n
        or u.shape[1] != v.shape[0]
    ):
        raise ShapeError(f"shapes U {tuple(u.shape)}, V {tuple(v.shape)} do not fit c {m}x{n} (int16)")
    if m % 4:
        raise ShapeError(f"m={m} is not a multiple of 4")
    k = u.shape[1]
    if m == 0 or n == 0 or k == 0:
        return c
    if k % 2:
        u = torch.nn.functional.pad(u, (0, 1))
        v = torch.nn.functional.pad(v, (0, 0, 0, 1))
        k += 1
    u, v = u.contiguous(), v.contiguous()
    if threads is None:
        threads = torch.get_num_threads()
    rc = lib.pouw_avx2_sub_i16(c.data_ptr(), u.data_ptr(), v.data_ptr(), m, k, n, max(1, int(threads)))
    if rc != 0:
        raise RuntimeError(f"native avx2_sub_i16 failed with code {rc}")
    return c


def avx2_scatter_rows(b: torch.Tensor, idx: ArrayLike, r: int, *, threads: int | None = None) -> torch.Tensor:
    """P·B without a GEMM: the r x n int32 sums out[j] = sum of the rows l of b (k x n int8) with idx[l] == j
    (idx: k integers in [0, r)). AVX2; RuntimeError unless `has_avx2()`, ShapeError for bad arguments."""
    lib = _avx2_lib("scatter")
    if not isinstance(b, torch.Tensor) or b.dtype != torch.int8 or b.dim() != 2 or b.device.type != "cpu":
        raise ShapeError("b must be a 2-D int8 CPU tensor")
    k, n = b.shape
    ix = _index_array(idx, k, "idx")
    out = torch.empty((r, n), dtype=torch.int32)
    if n == 0:
        return out
    if k == 0:
        return out.zero_()
    if threads is None:
        threads = torch.get_num_threads()
    b = b.contiguous()
    rc = lib.pouw_avx2_scatter_rows(b.data_ptr(), ix.ctypes.data, k, n, r, out.data_ptr(), max(1, int(threads)))
    if rc == -1:
        raise ShapeError(f"avx2_scatter_rows rejected its arguments (an index outside [0, {r})?)")
    if rc != 0:
        raise RuntimeError(f"native avx2_scatter_rows failed with code {rc}")
    return out


def avx2_gather_cols(a: torch.Tensor, idx: ArrayLike, r: int, *, threads: int | None = None) -> torch.Tensor:
    """A·Q without a GEMM: the m x r int32 sums out[:, j] = sum of the columns l of a (m x k int8) with
    idx[l] == j (idx: k integers in [0, r)). RuntimeError unless `has_avx2()`, ShapeError for bad arguments."""
    lib = _avx2_lib("gather")
    if not isinstance(a, torch.Tensor) or a.dtype != torch.int8 or a.dim() != 2 or a.device.type != "cpu":
        raise ShapeError("a must be a 2-D int8 CPU tensor")
    m, k = a.shape
    ix = _index_array(idx, k, "idx")
    out = torch.empty((m, r), dtype=torch.int32)
    if m == 0:
        return out
    if threads is None:
        threads = torch.get_num_threads()
    a = a.contiguous()
    rc = lib.pouw_avx2_gather_cols(a.data_ptr(), ix.ctypes.data, m, k, r, out.data_ptr(), max(1, int(threads)))
    if rc == -1:
        raise ShapeError(f"avx2_gather_cols rejected its arguments (an index outside [0, {r})?)")
    if rc != 0:
        raise RuntimeError(f"native avx2_gather_cols failed with code {rc}")
    return out


def has_correction_operands() -> bool:
    """True when `correction_operands` runs natively (library loaded, CPU with AVX512-VNNI, $POUW_NATIVE "auto" or
    "vnni"). Never raises."""
    lib = _get()
    return bool(
        requested_kernel() in ("auto", "vnni")
        and lib is not None
        and hasattr(lib, "pouw_correction_operands")
        and lib.pouw_has_sub_correction()
    )


def correction_operands(
    a: torch.Tensor,
    b_noisy: torch.Tensor,
    e_l: torch.Tensor,
    f_r: torch.Tensor,
    map_a: ArrayLike,
    map_b: ArrayLike,
    *,
    threads: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The optional `Backend.correction_operands` of kernels/base.py: [(U_i, V_i)] with U_i = [AQ_i | e_l]
    (m x 2r) and V_i = [f_r ; PB_i] (2r x n), AQ_i and PB_i the signed base-128 digits of A·Q and P·B' for the maps
    map_a of P (P[j][l] = [map_a[l] == j]) and map_b of Q (Q[l][j] = [map_b[l] == j]); bit for bit
    `pouw.recover.correction_operands`, computed natively (no torch GEMM, so no OpenMP workers left spinning while
    the next native kernel runs). k must be a multiple of 4.
    Raises RuntimeError unless `has_correction_operands()`."""
    lib = _get()
    if lib is None or not has_correction_operands():  # has_correction_operands() is False when lib is None
        why = unavailable_reason() if lib is None else "CPU without AVX512-VNNI"
        raise RuntimeError(f"native correction_operands unavailable: {why}")
    m, k, n, r = _noise_shapes(a, b_noisy, e_l, f_r, "b_noisy")
    if m < 1 or n < 1:
        raise ShapeError(f"shapes disagree: a {tuple(a.shape)}, b_noisy {tuple(b_noisy.shape)} (empty)")
    if k % 4:
        raise ShapeError(f"k={k} is not a multiple of 4")
    idx = [_index_array(x, k, name) for name, x in (("map_a", map_a), ("map_b", map_b))]
    a, b_noisy, e_l, f_r = a.contiguous(), b_noisy.contiguous(), e_l.contiguous(), f_r.contiguous()
    dmax = digit_count(-128 * k, 128 * k)  # |A·Q|, |P·B'| <= 128 k for any int8 operands
    u = torch.empty((dmax, m, 2 * r), dtype=torch.int8)
    v = torch.empty((dmax, 2 * r, n), dtype=torch.int8)
    if threads is None:
        threads = torch.get_num_threads()
    digits = ctypes.c_int64(0)
    rc = lib.pouw_correction_operands(
        a.data_ptr(),
        b_noisy.data_ptr(),
        e_l.data_ptr(),
        f_r.data_ptr(),
        *(x.ctypes.data for x in idx),
        m,
        k,
        n,
        r,
        u.data_ptr(),
        v.data_ptr(),
        dmax,
        ctypes.byref(digits),
        max(1, int(threads)),
    )
    if rc == -1:
        raise ShapeError(f"correction_operands rejected its arguments (an index outside [0, {r})?)")
    if rc != 0:
        raise RuntimeError(f"native correction_operands failed with code {rc}")
    return [(u[i], v[i]) for i in range(digits.value)]


__all__ = [
    "KERNELS",
    "add_noise",
    "available",
    "avx2_gather_cols",
    "avx2_loop",
    "avx2_scatter_rows",
    "avx2_sub_i16",
    "avx2_sub_correction",
    "cache_dir",
    "correction_operands",
    "cpu_flags",
    "cpu_kernels",
    "digit_count",
    "digits_side_by_side",
    "gemm_kernel",
    "has_avx2",
    "has_correction_operands",
    "has_neon",
    "has_sub_correction",
    "has_tickets",
    "has_vnni",
    "kernel_path",
    "kernels_for_flags",
    "neon_loop",
    "noise_path",
    "noisy_matmul",
    "plain_chunk",
    "plain_matmul",
    "requested_kernel",
    "sub_correction",
    "supported_kernels",
    "tile_tickets",
    "unavailable_reason",
]
