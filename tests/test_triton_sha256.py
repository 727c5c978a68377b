"""The Triton tile-ticket kernel (kernels/triton_sha256.py) against kernels.base.tile_tickets_reference, bit for bit.

Interpreter checks run in ONE child process with TRITON_INTERPRET=1 (the variable must be set before triton is
imported and must not leak into the rest of the pytest process). The parent builds the messages, the child only
runs the kernel, and the parent compares with the hashlib reference. The interpreter costs ~0.4 s per program and
SHA-256 block, so the shapes are small and the block sizes chosen to give one program per case except where
several programs (and a ragged last one) are the point.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from triton_child import child_env

from kernels.base import MSG_WORDS, tile_tickets_reference

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (pip install triton)")

TICKET_PREFIX = b"pouw/ticket\x00" + bytes(range(0xA0, 0xC0))  # the production layout: 12 + 32 bytes
assert len(TICKET_PREFIX) == 44

EXTREMES = (0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x00000001, 0x80808080, 0xFF00FF00, 0x01020304)


def _i32(u32: torch.Tensor) -> torch.Tensor:
    """uint32 values held in an int64 tensor -> int32 bit patterns."""
    u32 = u32 & 0xFFFFFFFF
    return torch.where(u32 >= 2**31, u32 - 2**32, u32).to(torch.int32)


def _prefix(n: int) -> bytes:
    """n bytes with every bit position exercised (and no zero bytes that could hide a misplaced OR)."""
    return bytes((0x9D * i + 0x5B) % 256 or 0xFF for i in range(n))


def make_msgs(shape: tuple[int, int], fill: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ti, tj = shape
    if fill == "random":
        return torch.randint(-(2**31), 2**31, (ti, tj, MSG_WORDS), generator=g, dtype=torch.int32)
    if fill == "extreme":  # every word drawn from EXTREMES; whole tiles of 0 / 0xFFFFFFFF / top bit included
        idx = torch.randint(0, len(EXTREMES), (ti, tj, MSG_WORDS), generator=g)
        u = torch.tensor(EXTREMES, dtype=torch.int64)[idx]
        flat = u.view(-1, MSG_WORDS)
        for t, v in enumerate((0, 0xFFFFFFFF, 0x80000000)):
            if t < flat.shape[0]:
                flat[t] = v
        return _i32(u)
    if fill == "top-bit":  # random words with the top bit forced on
        u = torch.randint(0, 2**31, (ti, tj, MSG_WORDS), generator=g, dtype=torch.int64) | 0x80000000
        return _i32(u)
    raise ValueError(fill)


@dataclass(frozen=True)
class Case:
    id: str
    prefix_len: int
    shape: tuple[int, int]
    fill: str = "random"
    block: int = 16
    prefix: bytes | None = None  # default: _prefix(prefix_len)
    transposed: bool = False  # hand the kernel a non-contiguous view

    def inputs(self, seed: int) -> tuple[bytes, torch.Tensor]:
        prefix = self.prefix if self.prefix is not None else _prefix(self.prefix_len)
        assert len(prefix) == self.prefix_len
        msgs = make_msgs(self.shape, self.fill, seed)
        if self.transposed:
            msgs = msgs.transpose(0, 1).contiguous().transpose(0, 1)
            assert not msgs.is_contiguous()
        return prefix, msgs


# prefix lengths: 0 (no prefix); 1, 2, 3 (per-tile words straddle SHA words); 44 (production); 47 / 48 (the
# last length with 2 tail blocks / the first with 3); 63 (3 tail blocks, unaligned); 64, 100, 127, 200 (host
# midstate after 1 or 3 whole prefix blocks, aligned and not).
CASES = [
    Case("empty-1x1", 0, (1, 1)),
    Case("p1-2x3", 1, (2, 3)),
    Case("p2-3x2", 2, (3, 2)),
    Case("p3-3x5", 3, (3, 5)),
    Case("ticket44-1x1", 44, (1, 1), prefix=TICKET_PREFIX),
    Case("ticket44-3x5", 44, (3, 5), prefix=TICKET_PREFIX),
    Case("ticket44-16x16-2-programs", 44, (16, 16), block=128, prefix=TICKET_PREFIX),
    Case("ticket44-7x9-ragged-4-programs", 44, (7, 9), block=16, prefix=TICKET_PREFIX),
    Case("ticket44-extreme", 44, (4, 4), fill="extreme", prefix=TICKET_PREFIX),
    Case("ticket44-top-bit", 44, (2, 5), fill="top-bit", prefix=TICKET_PREFIX),
    Case("ticket44-wide-indices", 44, (2, 300), block=1024, prefix=TICKET_PREFIX),
    Case("ticket44-tall-indices", 44, (300, 2), block=1024, prefix=TICKET_PREFIX),
    Case("ticket44-non-contiguous", 44, (3, 4), prefix=TICKET_PREFIX, transposed=True),
    Case("p3-extreme", 3, (4, 4), fill="extreme"),
    Case("p47-2x3", 47, (2, 3)),
    Case("p48-2x3", 48, (2, 3)),
    Case("p63-2x3-extreme", 63, (2, 3), fill="extreme"),
    Case("p64-3x5", 64, (3, 5)),
    Case("p100-3x5", 100, (3, 5)),
    Case("p127-2x3", 127, (2, 3)),
    Case("p200-3x5", 200, (3, 5)),
]

_CHILD = """
import sys
import torch
from kernels.triton_sha256 import interpreting, tile_tickets_triton
assert interpreting(), "TRITON_INTERPRET did not take effect"
cases = torch.load(sys.argv[1])  # prefixes travel as uint8 tensors (torch.load is weights_only)
out = [tile_tickets_triton(bytes(c["prefix"].tolist()), c["msgs"], block=c["block"]) for c in cases]
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def interpreter_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[bytes, torch.Tensor, torch.Tensor]]:
    """Runs every Case through the interpreter in one child process; maps case id -> (prefix, msgs, tickets)."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    tmp = tmp_path_factory.mktemp("triton_sha256")
    inputs = [c.inputs(seed=2000 + i) for i, c in enumerate(CASES)]
    torch.save(
        [
            {"prefix": torch.tensor(list(p), dtype=torch.uint8), "msgs": m, "block": c.block}
            for c, (p, m) in zip(CASES, inputs)
        ],
        tmp / "in.pt",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp / "in.pt"), str(tmp / "out.pt")],
        env=child_env(TRITON_INTERPRET="1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"interpreter child failed:\n{proc.stdout}\n{proc.stderr}"
    outs = torch.load(tmp / "out.pt")
    return {c.id: (p, m, o) for c, (p, m), o in zip(CASES, inputs, outs)}


def assert_same_tickets(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.uint8 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    bad = (got != want).any(dim=-1).nonzero()
    assert bad.numel() == 0, f"{bad.shape[0]} tickets differ, first at tiles {bad[:5].tolist()}"


@requires_triton
class TestInterpreter:
    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_bit_identical_to_reference(self, case: Case, interpreter_results) -> None:
        prefix, msgs, got = interpreter_results[case.id]
        assert got.device.type == "cpu"
        assert got.shape == (*case.shape, 32)
        assert_same_tickets(got, tile_tickets_reference(prefix, msgs))

    def test_spot_check_with_hashlib(self, interpreter_results) -> None:
        """One ticket recomputed from scratch, independently of tile_tickets_reference."""
        prefix, msgs, got = interpreter_results["ticket44-7x9-ragged-4-programs"]
        ti, tj = 6, 8  # the last tile: in the ragged last program
        words = [w & 0xFFFFFFFF for w in msgs[ti, tj].tolist()]
        want = hashlib.sha256(prefix + struct.pack("<II16I", ti, tj, *words)).digest()
        assert bytes(got[ti, tj].tolist()) == want

    def test_extreme_messages_present(self, interpreter_results) -> None:
        _, msgs, _ = interpreter_results["ticket44-extreme"]
        flat = msgs.view(-1, MSG_WORDS)
        assert (flat[0] == 0).all() and (flat[1] == -1).all() and (flat[2] == -(2**31)).all()
        _, msgs, _ = interpreter_results["ticket44-top-bit"]
        assert (msgs < 0).all()


@requires_triton
def test_host_layout_matches_hashlib() -> None:
    """The host-side precomputation (midstate, tail words) plus the per-tile bytes hashes like hashlib, for every
    prefix length 0..200, with the tail assembled the way the kernel does (constant words OR per-tile bytes)."""
    from kernels.triton_sha256 import TILE_BYTES, _sha256_compress, tail_layout

    g = torch.Generator().manual_seed(11)
    for n in range(0, 201):
        prefix = bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())
        tile = bytes(torch.randint(0, 256, (TILE_BYTES,), generator=g, dtype=torch.uint8).tolist())
        r, nb, state, words = tail_layout(prefix)
        assert r == n % 64 and nb == -(-(r + TILE_BYTES + 9) // 64) and nb in (2, 3) and len(words) == 16 * nb
        tile_stream = bytes(r) + tile + bytes(64 * nb - r - TILE_BYTES)
        tile_words = struct.unpack(f">{16 * nb}I", tile_stream)
        assert all(c & t == 0 for c, t in zip(words, tile_words)), "constant and per-tile bytes overlap"
        for b in range(nb):
            block = struct.pack(">16I", *(c | t for c, t in zip(words[16 * b : 16 * b + 16], tile_words[16 * b :])))
            state = _sha256_compress(state, block)
        assert struct.pack(">8I", *state) == hashlib.sha256(prefix + tile).digest(), n


@requires_triton
def test_input_validation() -> None:
    from kernels.triton_sha256 import tile_tickets_triton

    msgs = torch.zeros((2, 2, MSG_WORDS), dtype=torch.int32)
    with pytest.raises(ValueError, match="int32"):
        tile_tickets_triton(b"x", msgs.to(torch.int64))
    with pytest.raises(ValueError, match="shape"):
        tile_tickets_triton(b"x", torch.zeros((2, 2, 8), dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        tile_tickets_triton(b"x", torch.zeros((4, MSG_WORDS), dtype=torch.int32))
    with pytest.raises(TypeError, match="bytes"):
        tile_tickets_triton("not bytes", msgs)  # type: ignore[arg-type]
    if not torch.cuda.is_available():  # this process does not interpret: CPU tensors are refused
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            tile_tickets_triton(b"x", msgs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
class TestCuda:
    @pytest.fixture(scope="class")
    def tile_tickets_triton(self):
        if not HAVE_TRITON:
            pytest.skip("triton is not installed (pip install triton)")
        from kernels.triton_sha256 import tile_tickets_triton

        return tile_tickets_triton

    def test_256x256_production_prefix(self, tile_tickets_triton) -> None:
        msgs = make_msgs((256, 256), "random", seed=5)
        got = tile_tickets_triton(TICKET_PREFIX, msgs.to("cuda"))
        assert got.device.type == "cuda" and got.dtype == torch.uint8 and got.shape == (256, 256, 32)
        assert_same_tickets(got.cpu(), tile_tickets_reference(TICKET_PREFIX, msgs))

    @pytest.mark.parametrize("n", [0, 3, 47, 48, 64, 127, 200])
    @pytest.mark.parametrize("block", [None, 128, 1024])
    def test_other_prefixes_and_blocks(self, tile_tickets_triton, n: int, block: int | None) -> None:
        msgs = make_msgs((37, 29), "extreme" if n % 2 else "random", seed=n)
        got = tile_tickets_triton(_prefix(n), msgs.to("cuda"), block=block)
        assert_same_tickets(got.cpu(), tile_tickets_reference(_prefix(n), msgs))

    def test_cuda_backend_uses_kernel(self, tile_tickets_triton) -> None:
        from kernels.cuda import CudaBackend

        backend = CudaBackend("cuda:0")
        msgs = make_msgs((40, 24), "top-bit", seed=9)
        got = backend.tile_tickets(TICKET_PREFIX, msgs)
        assert got.device.type == "cuda"
        assert_same_tickets(got.cpu(), tile_tickets_reference(TICKET_PREFIX, msgs))
