"""Loader for the native fused CPU kernel (`kernels/native/fused_gemm.c`).

The C source is compiled on first use with the system C compiler (gcc unless $POUW_CC / $CC say otherwise):

    gcc -O3 -march=native -fPIC -shared -pthread fused_gemm.c -o <cache>/fused_gemm-<key>.so

into a cache directory ($POUW_CACHE, else ~/.cache/pouw/). The file name carries a hash of the source, the compiler
(path and version), the flags and the machine (architecture, CPU model and CPU feature flags), so a different CPU
or compiler gets its own build. The library is written to a temporary file in the cache directory and renamed into
place, so processes building at the same time never see a partial file.

Everything here is lazy and never raises at import: `available()` is False (with the reason logged once) when
$POUW_NATIVE=0, no compiler is found, the build fails, or the library cannot be loaded.

`noisy_matmul(a, b, r, tile_h, tile_w)` implements `kernels.base.Backend.noisy_matmul` bit-exactly. On CPUs with
AVX512-VNNI (`has_vnni()`) it runs the fused register-blocked kernel (about as fast as torch._int_mm for the plain
product at 2048^3 on 2 cores); elsewhere, or for parameters that kernel does not take (r % 4 != 0, tile width not in
{4, 8, 16}, tile height not a power of two >= 4), a plain C path that is exact but much slower (tens of GOPS):
without VNNI a caller may prefer a torch._int_mm-based implementation (`kernel_path()` says which one would run).
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
from pathlib import Path

import torch

from kernels.base import MSG_WORDS, ShapeError, check_operands

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "native" / "fused_gemm.c"
CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-std=gnu11")
ABI_VERSION = 1
_FLAG_FORCE_PORTABLE = 1

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_reason: str | None = None


def _disabled_by_env() -> bool:
    return os.environ.get("POUW_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


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
                if key in ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part") \
                        and key not in seen:
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _build_key(cc: str, source: bytes) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = "?"
    h = hashlib.sha256()
    for item in (source, cc.encode(), version.encode(), " ".join(CFLAGS).encode(), _machine_id().encode(),
                 str(ABI_VERSION).encode()):
        h.update(item)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _build() -> Path:
    """Compile (or find in the cache) the shared library; returns its path or raises RuntimeError."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (install gcc, or set POUW_CC)")
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read {SOURCE}: {exc}") from exc
    name = f"fused_gemm-{_build_key(cc, source)}.so"
    # the cache directory, or (only when that one is not writable) a private temporary one
    dirs = [cache_dir(), Path(tempfile.gettempdir()) / f"pouw-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"]
    errors = []
    for out_dir in dirs:
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
        # compile the exact bytes hashed above (the source may change on disk while we build)
        with tempfile.TemporaryDirectory(prefix="pouw-build-") as tdir:
            src_copy = Path(tdir) / "fused_gemm.c"
            src_copy.write_bytes(source)
            cmd = [cc, *CFLAGS, str(src_copy), "-o", tmp]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as exc:
                raise RuntimeError(f"running {cc} failed: {exc}") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: a concurrent builder just replaces an identical file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built native kernel %s", target)
    return target


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
                log.warning("native CPU kernel unavailable: %s", _reason)
            _tried = True
    return _lib


def available() -> bool:
    """True when the native kernel is built and loaded (builds it on first call). Never raises."""
    return _get() is not None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True or has not been asked yet)."""
    if _disabled_by_env():
        return "disabled by POUW_NATIVE=0"
    _get()
    return _reason


def has_vnni() -> bool:
    """True when the AVX512-VNNI path runs on this CPU (False when the library is unavailable)."""
    lib = _get()
    return bool(lib is not None and lib.pouw_has_vnni())


def kernel_path(m: int, k: int, n: int, r: int, tile_h: int, tile_w: int) -> str:
    """'vnni' or 'portable': which code path noisy_matmul takes for this shape."""
    lib = _get()
    if lib is None:
        raise RuntimeError(f"native CPU kernel unavailable: {unavailable_reason()}")
    rc = lib.pouw_path(m, k, n, r, tile_h, tile_w, 0)
    if rc < 0:
        raise ShapeError(f"shape m={m} k={k} n={n} r={r} tile={tile_h}x{tile_w} rejected by the native kernel")
    return "vnni" if rc == 1 else "portable"


def noisy_matmul(a: torch.Tensor, b: torch.Tensor, r: int, tile_h: int, tile_w: int, *,
                 threads: int | None = None, force_portable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', messages) per `kernels.base`, computed by the native kernel on CPU int8 tensors.

    threads: worker threads (default torch.get_num_threads()). force_portable: use the plain C path (tests).
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
    c = torch.empty((m, n), dtype=torch.int32)
    msgs = torch.empty((m // tile_h, n // tile_w, MSG_WORDS), dtype=torch.int32)
    if m == 0 or n == 0 or k == 0:
        c.zero_()
        msgs.zero_()
        return c, msgs
    if threads is None:
        threads = torch.get_num_threads()
    flags = _FLAG_FORCE_PORTABLE if force_portable else 0
    rc = lib.pouw_noisy_gemm_ex(a.data_ptr(), b.data_ptr(), m, k, n, int(r), int(tile_h), int(tile_w),
                                c.data_ptr(), msgs.data_ptr(), max(1, int(threads)), flags)
    if rc == -1:
        raise ShapeError(f"shape m={m} k={k} n={n} r={r} tile={tile_h}x{tile_w} rejected by the native kernel")
    if rc != 0:
        raise RuntimeError(f"native kernel failed with code {rc}")
    return c, msgs


__all__ = ["available", "cache_dir", "has_vnni", "kernel_path", "noisy_matmul", "unavailable_reason"]
