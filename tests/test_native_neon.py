"""The NEON kernel (kernels/native/neon_gemm.c) is bit-exact, tested on any Linux machine.

On x86-64 the native sources are cross-compiled for aarch64 (gcc-aarch64-linux-gnu, with -Wall -Wextra -Werror
like tests/test_native_warnings.py) into a static harness that runs cases written here and writes the kernel's
outputs back; qemu-aarch64 runs it as three CPUs: an ARMv8.0 build on `-cpu max` (dotprod: the SDOT loop) and on
`-cpu cortex-a72` (no dotprod: the vmull_s8 loop, and a forced SDOT loop falling back to the portable path), and
an ARMv8.2+dotprod build on `-cpu max`. On an aarch64 machine the harness is built with the native compiler
(-march=native) and run directly. Every output is compared bit for bit with a numpy model of the contract (itself
checked against kernels.reference on the small cases). scripts/setup.sh installs the cross tools where apt-get
is there; without them the test skips and says so. Performance cannot be measured this way: qemu's timings mean
nothing for real hardware (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels import native_loader as nl
from kernels import reference
from kernels.base import MSG_WORDS, ROT

NATIVE_AARCH64 = platform.machine().lower() in ("aarch64", "arm64")
CROSS_CC = os.environ.get("POUW_AARCH64_CC", "aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


def _toolchain() -> tuple[str | None, str | None]:
    """(compiler, why not): the aarch64 compiler to build the harness with, or the reason the test skips."""
    if NATIVE_AARCH64:
        cc = nl._compiler()
        return (cc, None) if cc else (None, "no C compiler (install gcc)")
    cc = shutil.which(CROSS_CC)
    if cc is None:
        return (
            None,
            f"no aarch64 cross compiler ({CROSS_CC}; apt-get install gcc-aarch64-linux-gnu, see scripts/setup.sh)",
        )
    if QEMU is None:
        return None, "no qemu-aarch64 user-mode emulator (apt-get install qemu-user, see scripts/setup.sh)"
    return cc, None


CC, WHY_NOT = _toolchain()
pytestmark = pytest.mark.skipif(CC is None, reason=f"NEON kernel not testable here: {WHY_NOT}")

# pouw_native.h
FLAG_NO_TRANSCRIPT = 2
FLAG_KERNEL_NEON = 128
LOOP = {"dot": 256, "mull": 512}
PATH_NEON, PATH_PORTABLE = 3, 0

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pouw_abi_version(void);
int pouw_has_neon(void);
int pouw_neon_default_variant(void);
int pouw_path(int64_t m, int64_t k, int64_t n, int r, int th, int tw, int flags);
int pouw_noisy_gemm_ex(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                       int32_t* c, uint32_t* msgs, int threads, int flags);
int pouw_neon_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads);

static void rd(void* p, size_t len, FILE* f) {
    if (len && fread(p, 1, len, f) != len) { fputs("short read\n", stderr); exit(2); }
}
static void wr(const void* p, size_t len, FILE* f) {
    if (len && fwrite(p, 1, len, f) != len) { fputs("short write\n", stderr); exit(3); }
}

/* input: cases of 9 int64 (op, m, k, n, r, th, tw, threads, flags), A (m x k), B (k x n), and for op 1 C (m x n
 * int32). output: 3 int64 (ABI, has_neon, SDOT by default), then per case 2 int64 (pouw_path, rc), C, and for
 * op 0 the messages. op 0: pouw_noisy_gemm_ex; op 1: pouw_neon_sub_correction with w = r, d = k / r. */
int main(int argc, char** argv) {
    if (argc != 3) return 1;
    FILE* in = fopen(argv[1], "rb");
    FILE* out = fopen(argv[2], "wb");
    if (!in || !out) return 1;
    const int64_t hdr[3] = {pouw_abi_version(), pouw_has_neon(), pouw_neon_default_variant()};
    wr(hdr, sizeof hdr, out);
    int64_t p[9];
    while (fread(p, sizeof p, 1, in) == 1) {
        const int64_t op = p[0], m = p[1], k = p[2], n = p[3], r = p[4], th = p[5], tw = p[6];
        const int threads = (int)p[7], flags = (int)p[8];
        int8_t* a = malloc((size_t)(m * k) + 1);
        int8_t* b = malloc((size_t)(k * n) + 1);
        int32_t* c = malloc(4 * (size_t)(m * n) + 4);
        const size_t nmsg = op == 0 ? (size_t)((m / th) * (n / tw) * 16) : 0;
        uint32_t* msgs = malloc(4 * nmsg + 4);
        if (!a || !b || !c || !msgs) return 4;
        rd(a, (size_t)(m * k), in);
        rd(b, (size_t)(k * n), in);
        int64_t res[2];
        if (op == 0) {
            memset(c, 0x5a, 4 * (size_t)(m * n)); /* anything left unwritten shows */
            memset(msgs, 0x5a, 4 * nmsg);
            res[0] = pouw_path(m, k, n, (int)r, (int)th, (int)tw, flags);
            res[1] = pouw_noisy_gemm_ex(a, b, m, k, n, (int)r, (int)th, (int)tw, c, msgs, threads, flags);
        } else {
            rd(c, 4 * (size_t)(m * n), in);
            res[0] = -1;
            res[1] = pouw_neon_sub_correction(c, a, b, m, n, k / r, r, threads);
        }
        wr(res, sizeof res, out);
        wr(c, 4 * (size_t)(m * n), out);
        wr(msgs, 4 * nmsg, out);
        free(a); free(b); free(c); free(msgs);
    }
    fclose(out);
    return 0;
}
"""


def _compile(src: Path, march: str, out: Path) -> None:
    cmd = [
        CC,
        "-O3",
        f"-march={march}",
        "-pthread",
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-c",
        str(src),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """march -> static harness linking every native source (plain variant: no OpenSSL in the cross sysroot)."""
    marches = ["native"] if NATIVE_AARCH64 else ["armv8-a", "armv8.2-a+dotprod"]
    root = tmp_path_factory.mktemp("neon")
    (root / "harness.c").write_text(HARNESS)
    jobs = []
    for march in marches:
        d = root / march.replace("+", "_")
        d.mkdir()
        for src in (*nl.SOURCES, root / "harness.c"):
            jobs.append((src, march, d / (src.name + ".o")))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for fut in [ex.submit(_compile, *job) for job in jobs]:
            fut.result()
    out = {}
    for march in marches:
        d = root / march.replace("+", "_")
        exe = d / "harness"
        link = [CC, "-pthread", *(str(o) for o in sorted(d.glob("*.o"))), "-o", str(exe)]
        if not NATIVE_AARCH64:
            link.insert(1, "-static")
        proc = subprocess.run(link, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[march] = exe
    return out


# ---- the contract, in numpy ------------------------------------------------------------------------------------


def model(a: np.ndarray, b: np.ndarray, r: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(C int32, messages uint32) of the contract: chunk products in float64 (exact: |sums| < 2^53), running sums
    in int64, XOR of each tile of S_c folded into slot c % 16."""
    m, k = a.shape
    n = b.shape[1]
    af, bf = a.astype(np.float64), b.astype(np.float64)
    s = np.zeros((m, n), dtype=np.int64)
    msgs = np.zeros((m // h, n // w, MSG_WORDS), dtype=np.uint32)
    for c in range(k // r):
        s += (af[:, c * r : (c + 1) * r] @ bf[c * r : (c + 1) * r]).astype(np.int64)
        su = (s & 0xFFFFFFFF).astype(np.uint32)
        x = np.bitwise_xor.reduce(np.bitwise_xor.reduce(su.reshape(m // h, h, n // w, w), axis=3), axis=1)
        cur = msgs[:, :, c % MSG_WORDS]
        msgs[:, :, c % MSG_WORDS] = ((cur << np.uint32(ROT)) | (cur >> np.uint32(32 - ROT))) ^ x
    return (s & 0xFFFFFFFF).astype(np.uint32).view(np.int32), msgs


def operands(rng: np.random.Generator, m: int, k: int, n: int, values: str) -> tuple[np.ndarray, np.ndarray]:
    if values == "extreme":  # +-127 only: the largest |sums| within the contract
        return (
            (rng.integers(0, 2, (m, k)) * 254 - 127).astype(np.int8),
            (rng.integers(0, 2, (k, n)) * 254 - 127).astype(np.int8),
        )
    if values == "m128":  # the whole int8 range, a row and a column of -128 (outside the contract, still exact)
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        a[0], b[:, 0] = -128, -128
        return a, b
    return rng.integers(-127, 128, (m, k)).astype(np.int8), rng.integers(-127, 128, (k, n)).astype(np.int8)


# (m, k, n, r, h, w): chunk counts above and below 16, n not a multiple of the 16-column panel or of 4, r not a
# multiple of 16 (the quad tail of the SDOT loop), tile widths 1..24 and heights 4..32
SHAPES = [
    (16, 576, 16, 32, 16, 16),  # 18 chunks: slots wrap
    (12, 96, 20, 32, 4, 4),  # 20 columns: a panel + 4
    (20, 544, 52, 32, 4, 4),  # 17 chunks, 3 panels + 4 columns
    (8, 60, 30, 12, 4, 6),  # r = 12 (quads only), tile width 6, 30 columns
    (8, 120, 10, 20, 8, 5),  # r = 20 (16 + a quad), tile width 5
    (4, 32, 3, 32, 4, 3),  # n = 3: less than one vector
    (8, 96, 72, 96, 8, 24),  # one chunk, tile width 24 (straddles panels)
    (32, 192, 40, 64, 32, 8),  # tile height 32
    (12, 64, 34, 4, 12, 2),  # r = 4: 16 chunks of one quad, tile width 2
    (8, 40, 9, 8, 4, 1),  # 5 chunks: 11 slots never written read as zero; tile width 1
    (64, 2048, 64, 64, 16, 16),  # the protocol's parameters, 32 chunks
    (36, 1000, 100, 8, 4, 4),  # tails everywhere
    (100, 4104, 20, 8, 4, 4),  # 513 chunks
]
TINY = {(12, 96, 20, 32, 4, 4), (8, 60, 30, 12, 4, 6), (4, 32, 3, 32, 4, 3), (8, 40, 9, 8, 4, 1)}


def _cases(loops: list[str]) -> list[dict]:
    rng = np.random.default_rng(20261201)
    cases = []
    for i, (m, k, n, r, h, w) in enumerate(SHAPES):
        for values in ("random", "extreme", "m128"):
            a, b = operands(rng, m, k, n, values)
            for loop in loops:
                threads = (1, 2, 3)[(i + len(cases)) % 3]
                cases.append(
                    dict(
                        op=0,
                        shape=(m, k, n, r, h, w),
                        a=a,
                        b=b,
                        threads=threads,
                        flags=FLAG_KERNEL_NEON | LOOP[loop],
                        want_path=PATH_NEON,
                        what=f"{loop} {values}",
                    )
                )
    # the largest k the engine takes, all -128: |S| = 2^30 (int32 accumulators exact)
    a = np.full((4, 65536), -128, dtype=np.int8)
    b = np.full((65536, 20), -128, dtype=np.int8)
    for loop in loops:
        cases.append(
            dict(
                op=0,
                shape=(4, 65536, 20, 128, 4, 4),
                a=a,
                b=b,
                threads=2,
                flags=FLAG_KERNEL_NEON | LOOP[loop],
                want_path=PATH_NEON,
                what=f"{loop} k=65536",
            )
        )
    # flags 0: picked automatically; parameters the kernel does not take (r % 4, h % 4): the portable path
    a, b = operands(rng, 24, 120, 36, "random")
    cases.append(
        dict(op=0, shape=(24, 120, 36, 24, 8, 4), a=a, b=b, threads=2, flags=0, want_path=PATH_NEON, what="auto")
    )
    cases.append(
        dict(
            op=0,
            shape=(24, 120, 36, 5, 8, 4),
            a=a,
            b=b,
            threads=2,
            flags=FLAG_KERNEL_NEON,
            want_path=PATH_PORTABLE,
            what="r=5",
        )
    )
    cases.append(
        dict(
            op=0,
            shape=(24, 120, 36, 24, 6, 4),
            a=a,
            b=b,
            threads=2,
            flags=FLAG_KERNEL_NEON,
            want_path=PATH_PORTABLE,
            what="h=6",
        )
    )
    # the plain GEMM (no transcript; short wide products split their panels between threads)
    for loop in loops:
        a, b = operands(rng, 36, 2048, 70, "m128")
        cases.append(
            dict(
                op=0,
                shape=(36, 2048, 70, 2048, 4, 1),
                a=a,
                b=b,
                threads=3,
                flags=FLAG_KERNEL_NEON | LOOP[loop] | FLAG_NO_TRANSCRIPT,
                want_path=PATH_NEON,
                what=f"{loop} plain",
            )
        )
    # the recovery's pass: c -= sum_i 128^i U_i V_i, digits highest first, m not a multiple of 4
    for d, w in ((3, 24), (5, 8)):
        m, n = 13, 37
        u = rng.integers(-64, 64, (m, d * w)).astype(np.int8)
        v = rng.integers(-64, 64, (d * w, n)).astype(np.int8)
        c0 = rng.integers(-(2**31), 2**31, (m, n)).astype(np.int32)
        cases.append(
            dict(
                op=1,
                shape=(m, d * w, n, w, 1, 1),
                a=u,
                b=v,
                c0=c0,
                threads=2,
                flags=0,
                want_path=-1,
                what=f"sub_correction d={d} w={w}",
            )
        )
    return cases


def _run(exe: Path, cpu: str | None, cases: list[dict], tmp: Path) -> tuple[tuple[int, ...], list[tuple]]:
    """Runs the harness on `cases` (under qemu -cpu `cpu` unless native); (header, per case (path, rc, C, msgs))."""
    inp, outp = tmp / "in.bin", tmp / "out.bin"
    with open(inp, "wb") as fh:
        for cs in cases:
            m, k, n, r, h, w = cs["shape"]
            fh.write(struct.pack("<9q", cs["op"], m, k, n, r, h, w, cs["threads"], cs["flags"]))
            fh.write(np.ascontiguousarray(cs["a"]).tobytes())
            fh.write(np.ascontiguousarray(cs["b"]).tobytes())
            if cs["op"] == 1:
                fh.write(np.ascontiguousarray(cs["c0"]).astype("<i4").tobytes())
    cmd = [str(exe), str(inp), str(outp)] if cpu is None else [QEMU, "-cpu", cpu, str(exe), str(inp), str(outp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    data = outp.read_bytes()
    header = struct.unpack_from("<3q", data, 0)
    pos, results = 24, []
    for cs in cases:
        m, k, n, r, h, w = cs["shape"]
        path, rc = struct.unpack_from("<2q", data, pos)
        pos += 16
        c = np.frombuffer(data, dtype="<i4", count=m * n, offset=pos).reshape(m, n)
        pos += 4 * m * n
        nmsg = (m // h) * (n // w) * MSG_WORDS if cs["op"] == 0 else 0
        msgs = np.frombuffer(data, dtype="<u4", count=nmsg, offset=pos)
        pos += 4 * nmsg
        results.append((path, rc, c, msgs.reshape(m // h, n // w, MSG_WORDS) if nmsg else None))
    assert pos == len(data), "harness output longer than the cases"
    return header, results


def _check(cases: list[dict], results: list[tuple]) -> None:
    models: dict[tuple, tuple] = {}
    for cs, (path, rc, c, msgs) in zip(cases, results):
        m, k, n, r, h, w = cs["shape"]
        what = f"{cs['what']} {cs['shape']} threads={cs['threads']}"
        assert rc == 0, f"{what}: rc {rc}"
        if cs["op"] == 1:
            d = k // r
            acc = np.zeros((m, n), dtype=np.int64)
            for i in range(d):  # digit i (highest first in the operands) has weight 128^(d-1-i)
                prod = cs["a"][:, i * r : (i + 1) * r].astype(np.int64) @ cs["b"][i * r : (i + 1) * r].astype(np.int64)
                acc = acc * 128 + prod
            want = ((cs["c0"].astype(np.int64) - acc) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
            assert np.array_equal(c, want), f"{what}: C differs"
            continue
        assert path == cs["want_path"], f"{what}: path {path}, want {cs['want_path']}"
        key = (id(cs["a"]), id(cs["b"]), cs["shape"])  # the cases keep their arrays alive
        if key not in models:
            models[key] = model(cs["a"], cs["b"], r, h, w)
        c_m, m_m = models[key]
        assert np.array_equal(c, c_m), f"{what}: C differs at {np.argwhere(c != c_m)[:3].tolist()}"
        if not cs["flags"] & FLAG_NO_TRANSCRIPT:
            assert np.array_equal(msgs, m_m), f"{what}: messages differ at {np.argwhere(msgs != m_m)[:3].tolist()}"


def test_model_matches_reference():
    """The numpy model used below is the contract: it equals kernels.reference on the small shapes."""
    rng = np.random.default_rng(1)
    for m, k, n, r, h, w in sorted(TINY):
        for values in ("random", "m128"):
            a, b = operands(rng, m, k, n, values)
            c_r, m_r = reference.noisy_matmul(torch.from_numpy(a), torch.from_numpy(b), r, h, w)
            c_m, m_m = model(a, b, r, h, w)
            assert np.array_equal(c_r.numpy(), c_m) and np.array_equal(m_r.numpy().view(np.uint32), m_m)


def _runs() -> list:
    if NATIVE_AARCH64:
        return [pytest.param("native", None, id="native")]
    return [
        pytest.param("armv8-a", "max", id="armv8.0-build-cpu-max"),
        pytest.param("armv8-a", "cortex-a72", id="armv8.0-build-cortex-a72"),
        pytest.param("armv8.2-a+dotprod", "max", id="dotprod-build-cpu-max"),
    ]


@pytest.mark.parametrize("march,cpu", _runs())
def test_neon_kernel_bit_exact(builds, march, cpu, tmp_path):
    """Every case, on both inner loops where the CPU has them, equals the model bit for bit; the CPU's dotprod
    decides the default loop; the SDOT loop forced onto a CPU without dotprod runs the portable path, exactly."""
    exe = builds[march]
    header, _ = _run(exe, cpu, [], tmp_path)
    abi, has_neon, dot = header
    assert abi == nl.ABI_VERSION and has_neon == 1
    if cpu is not None:
        assert dot == (cpu == "max"), f"-cpu {cpu}: SDOT by default = {dot}"
    loops = ["dot", "mull"] if dot else ["mull"]
    cases = _cases(loops)
    if not dot:  # forced SDOT without dotprod: the dispatch still names NEON, the kernel hands over, results exact
        a, b = operands(np.random.default_rng(9), 16, 256, 40, "random")
        cases.append(
            dict(
                op=0,
                shape=(16, 256, 40, 64, 16, 8),
                a=a,
                b=b,
                threads=2,
                flags=FLAG_KERNEL_NEON | LOOP["dot"],
                want_path=PATH_NEON,
                what="dot forced, no dotprod",
            )
        )
    _, results = _run(exe, cpu, cases, tmp_path)
    _check(cases, results)


def test_loader_picks_neon_from_aarch64_flags():
    """The loader's CPU-flag rule: aarch64 (asimd) names the NEON kernel, so a build without it fails the 'a
    kernel the flags name is missing' check of tests/test_cpu_kernels.py there; x86 flags never name it."""
    graviton2 = {
        "fp",
        "asimd",
        "evtstrm",
        "aes",
        "pmull",
        "sha1",
        "sha2",
        "crc32",
        "atomics",
        "fphp",
        "asimdhp",
        "cpuid",
        "asimdrdm",
        "lrcpc",
        "dcpop",
        "asimddp",
        "ssbs",
    }
    cortex_a72 = {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
    assert nl.kernels_for_flags(graviton2, "aarch64") == ["neon"]
    assert nl.kernels_for_flags(cortex_a72, "aarch64") == ["neon"]
    assert nl.kernels_for_flags({"avx2", "fma", "asimd"}, "x86_64") == ["avx2"]
    assert "neon" in nl.KERNELS and nl._FLAG_KERNEL["neon"] == FLAG_KERNEL_NEON
    assert nl._PATHS[PATH_NEON] == "neon"
    if nl.available():
        assert nl.has_neon() == NATIVE_AARCH64
        assert ("neon" in nl.supported_kernels()) == NATIVE_AARCH64


def test_digits_side_by_side_is_the_horner_operand():
    """The loader's NEON sub_correction glue: the digit pairs side by side, highest first, padded to the widest,
    are what pouw_neon_sub_correction's Horner GEMM (checked above under qemu) turns into sum_i 128^i U_i V_i."""
    gen = torch.Generator().manual_seed(4)
    m, n = 7, 11
    widths = [12, 8, 4]
    us = [torch.randint(-64, 64, (m, w), generator=gen, dtype=torch.int8) for w in widths]
    vs = [torch.randint(-64, 64, (w, n), generator=gen, dtype=torch.int8) for w in widths]
    u_cat, v_cat, w = nl.digits_side_by_side(us, vs)
    assert w == 12 and u_cat.shape == (m, 36) and v_cat.shape == (36, n)
    acc = torch.zeros((m, n), dtype=torch.int64)
    for i in range(len(us)):  # the kernel's chunks, in order: S = 128 S + chunk product
        acc = acc * 128 + u_cat[:, i * w : (i + 1) * w].to(torch.int64) @ v_cat[i * w : (i + 1) * w].to(torch.int64)
    want = sum((128**i) * (u.to(torch.int64) @ v.to(torch.int64)) for i, (u, v) in enumerate(zip(us, vs)))
    assert torch.equal(acc, want)
