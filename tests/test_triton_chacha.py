"""The Triton ChaCha20 kernel (kernels/triton_chacha.py) against pouw.noise (the `cryptography` package), bit for bit.

Interpreter checks run in ONE child process with TRITON_INTERPRET=1 (the variable must be set before triton is
imported and must not leak into the rest of the pytest process). The parent picks the cases, the child only runs
the kernel (recording a ValueError's message where one is expected), and the parent compares with
`pouw.noise.keystream` / `left_factor_rows` / `right_factor_cols`. The interpreter costs ~0.25 s per program,
so sizes are small and a few cases use small blocks to get several programs and a ragged (masked) last one.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from triton_child import child_env
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pouw.noise import NONCE_E, NONCE_F, keystream, left_factor_rows, right_factor_cols

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (pip install triton)")

TOP = 1 << 32  # the 32-bit block counter's limit

# RFC 7539 section 2.4.2: key 00..1f, nonce 00:00:00:00:00:00:00:4a:00:00:00:00, initial counter 1; the 114 bytes
# of keystream that encrypt "Ladies and Gentlemen of the class of '99: ..." (ciphertext XOR plaintext).
RFC_KEY = bytes(range(32))
RFC_NONCE = bytes.fromhex("000000000000004a00000000")
RFC_KEYSTREAM = bytes.fromhex(
    "224f51f3401bd9e12fde276fb8631ded8c131f823d2c06e27e4fcaec9ef3cf78"
    "8a3b0aa372600a92b57974cded2b9334794cba40c63e34cdea212c4cf07d41b7"
    "69a6749f3f630f4122cafe28ec4dc47e26d4346d70b98c73f3e9c53ac40c5945"
    "398b6eda1a832c89c167eacd901d7e2bf363"
)
assert len(RFC_KEYSTREAM) == 114


def _seed(i: int) -> bytes:
    return bytes((17 * i + 31 * j + 5) & 0xFF for j in range(32))


@dataclass(frozen=True)
class Stream:
    """chacha20_keystream_triton(key, nonce, first, n) in the interpreter."""

    id: str
    key: bytes
    nonce: bytes
    first: int
    n: int
    block: int | None = None
    fails: bool = False  # expected to raise ValueError


@dataclass(frozen=True)
class Factor:
    """noise_factor_triton(key, nonce, first_row, rows, r) in the interpreter."""

    id: str
    key: bytes
    nonce: bytes
    first_row: int
    rows: int
    r: int
    block: int | None = None
    fails: bool = False


STREAMS = [
    Stream("rfc7539-2.4.2", RFC_KEY, RFC_NONCE, 1, 2),
    Stream("one-block-counter-0", _seed(1), NONCE_E, 0, 1),
    Stream("ragged-3-programs", _seed(2), NONCE_F, 7, 37, block=16),
    Stream("counter-top-minus-3", _seed(3), NONCE_E, TOP - 3, 3),  # counters 2^32 - 3 .. 2^32 - 1
    Stream("counter-top-ragged", _seed(4), bytes(range(12)), TOP - 21, 21, block=8),
    Stream("counter-top-bit", _seed(5), b"\xff" * 12, 2**31 - 5, 10, block=8),  # crosses 2^31 (sign bit)
    Stream("zero-blocks", _seed(6), NONCE_E, 5, 0),
    Stream("past-top", _seed(3), NONCE_E, TOP - 2, 3, fails=True),
    Stream("start-at-top", _seed(3), NONCE_E, TOP, 1, fails=True),
]

FACTORS = [
    Factor("E-r16-row5", _seed(7), NONCE_E, 5, 7, 16),  # bytes 80..192: starts mid-block
    Factor("F-r16-row3-ragged", _seed(8), NONCE_F, 3, 70, 16, block=4),
    Factor("E-r64-row3", _seed(9), NONCE_E, 3, 4, 64),  # block-aligned
    Factor("F-r64-row11", _seed(10), NONCE_F, 11, 5, 64),
    Factor("E-r100-row13", _seed(11), NONCE_E, 13, 9, 100),  # offset 1300 = 20 blocks + 20 bytes
    Factor("F-r100-row1", _seed(12), NONCE_F, 1, 6, 100),
    Factor("E-r3-row21", _seed(13), NONCE_E, 21, 50, 3),  # rows smaller than a word
    Factor("E-r64-top", _seed(14), NONCE_E, TOP - 2, 2, 64),  # the last two blocks of the counter space
    Factor("E-no-rows-past-top", _seed(15), NONCE_E, TOP, 0, 64),  # no rows: nothing generated, nothing checked
    Factor("E-r64-past-top", _seed(14), NONCE_E, TOP - 2, 3, 64, fails=True),
]

_CHILD = """
import sys
import torch
from kernels.triton_chacha import chacha20_keystream_triton, interpreting, noise_factor_triton
assert interpreting(), "TRITON_INTERPRET did not take effect"
jobs = torch.load(sys.argv[1])  # keys and nonces travel as uint8 tensors (torch.load is weights_only)
out = []
for j in jobs:
    key, nonce = bytes(j["key"].tolist()), bytes(j["nonce"].tolist())
    try:
        if j["kind"] == "stream":
            got = chacha20_keystream_triton(key, nonce, j["first"], j["n"], "cpu", block=j["block"])
        else:
            got = noise_factor_triton(key, nonce, j["first_row"], j["rows"], j["r"], "cpu", block=j["block"])
        out.append(got)
    except ValueError as exc:
        out.append(str(exc))
torch.save(out, sys.argv[2])
"""


def _job(case: Stream | Factor) -> dict:
    job = {
        "key": torch.tensor(list(case.key), dtype=torch.uint8),
        "nonce": torch.tensor(list(case.nonce), dtype=torch.uint8),
        "block": case.block,
    }
    if isinstance(case, Stream):
        return {**job, "kind": "stream", "first": case.first, "n": case.n}
    return {**job, "kind": "factor", "first_row": case.first_row, "rows": case.rows, "r": case.r}


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor | str]:
    """Runs every case through the interpreter in one child process; maps case id -> output (or error text)."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    tmp = tmp_path_factory.mktemp("triton_chacha")
    cases = STREAMS + FACTORS
    torch.save([_job(c) for c in cases], tmp / "in.pt")
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
    return {c.id: o for c, o in zip(cases, outs)}


def _factor_reference(case: Factor) -> torch.Tensor:
    rows = range(case.first_row, case.first_row + case.rows)
    ref = (left_factor_rows if case.nonce == NONCE_E else right_factor_cols)(case.key, rows, case.r)
    return torch.from_numpy(ref.astype(np.int8))


def assert_same_bytes(got: torch.Tensor, want: bytes) -> None:
    assert got.dtype == torch.uint8 and got.shape == (len(want),), (got.dtype, got.shape, len(want))
    w = torch.frombuffer(bytearray(want), dtype=torch.uint8) if want else torch.empty(0, dtype=torch.uint8)
    bad = (got.cpu() != w).nonzero()
    first = bad[:5].flatten().tolist()
    assert not first, f"{bad.numel()} bytes differ, first at {first} (block {first[0] // 64 if first else None})"


@requires_triton
class TestInterpreter:
    @pytest.mark.parametrize("case", [c for c in STREAMS if not c.fails], ids=lambda c: c.id)
    def test_keystream_matches_cryptography(self, case: Stream, interpreter_results) -> None:
        got = interpreter_results[case.id]
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
        assert_same_bytes(got, keystream(case.key, case.nonce, 64 * case.first, 64 * case.n))

    def test_rfc7539_vector(self, interpreter_results) -> None:
        got = interpreter_results["rfc7539-2.4.2"]
        assert bytes(got[:114].tolist()) == RFC_KEYSTREAM

    @pytest.mark.parametrize("case", [c for c in STREAMS + FACTORS if c.fails], ids=lambda c: c.id)
    def test_counter_overflow_refused(self, case: Stream | Factor, interpreter_results) -> None:
        got = interpreter_results[case.id]
        assert isinstance(got, str) and "32-bit block counter" in got, got
        with pytest.raises(ValueError, match="32-bit block counter"):  # the reference refuses the same range
            if isinstance(case, Stream):
                keystream(case.key, case.nonce, 64 * case.first, 64 * case.n)
            else:
                _factor_reference(case)

    @pytest.mark.parametrize("case", [c for c in FACTORS if not c.fails], ids=lambda c: c.id)
    def test_noise_factor_matches_pouw_noise(self, case: Factor, interpreter_results) -> None:
        got = interpreter_results[case.id]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.int8 and got.shape == (case.rows, case.r)
        want = _factor_reference(case)
        assert ((got >= -32) & (got <= 31)).all()
        bad = (got != want).nonzero()
        assert bad.numel() == 0, f"{bad.shape[0]} entries differ, first at {bad[:5].tolist()}"


def test_rfc_vector_is_cryptographys() -> None:
    """The constant above is what `cryptography` (the reference) produces: the test data itself is right."""
    enc = Cipher(algorithms.ChaCha20(RFC_KEY, (1).to_bytes(4, "little") + RFC_NONCE), mode=None).encryptor()
    assert enc.update(bytes(114)) == RFC_KEYSTREAM
    assert keystream(RFC_KEY, RFC_NONCE, 64, 114) == RFC_KEYSTREAM


@requires_triton
def test_input_validation() -> None:
    """Argument checks run before any launch, so they need neither a GPU nor the interpreter."""
    from kernels.triton_chacha import chacha20_keystream_triton, noise_factor_triton

    key, nonce = bytes(32), bytes(12)
    with pytest.raises(ValueError, match="32-bit block counter"):
        chacha20_keystream_triton(key, nonce, TOP - 1, 2, "cpu")
    with pytest.raises(ValueError, match="32-bit block counter"):
        noise_factor_triton(key, nonce, TOP // 2, 2, 128, "cpu")
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        chacha20_keystream_triton(bytes(16), nonce, 0, 1, "cpu")
    with pytest.raises(ValueError, match="nonce must be 12 bytes"):
        chacha20_keystream_triton(key, bytes(16), 0, 1, "cpu")
    with pytest.raises(TypeError, match="bytes"):
        chacha20_keystream_triton("k" * 32, nonce, 0, 1, "cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        chacha20_keystream_triton(key, nonce, -1, 1, "cpu")
    with pytest.raises(ValueError, match="r > 0"):
        noise_factor_triton(key, nonce, 0, 1, 0, "cpu")
    if not torch.cuda.is_available():  # this process does not interpret: CPU tensors are refused
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            chacha20_keystream_triton(key, nonce, 0, 1, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
class TestCuda:
    @pytest.fixture(scope="class")
    def chacha(self):
        if not HAVE_TRITON:
            pytest.skip("triton is not installed (pip install triton)")
        import kernels.triton_chacha as chacha

        return chacha

    def test_rfc7539_vector(self, chacha) -> None:
        got = chacha.chacha20_keystream_triton(RFC_KEY, RFC_NONCE, 1, 2, "cuda")
        assert got.device.type == "cuda"
        assert bytes(got[:114].cpu().tolist()) == RFC_KEYSTREAM

    @pytest.mark.parametrize("first,n", [(0, 8192), (12345, 100_003), (TOP - 70_001, 70_001), (2**31 - 999, 2000)])
    @pytest.mark.parametrize("block", [None, 64, 512])
    def test_keystream(self, chacha, first: int, n: int, block: int | None) -> None:
        key = _seed(first % 251)
        got = chacha.chacha20_keystream_triton(key, NONCE_F, first, n, "cuda", block=block)
        assert_same_bytes(got, keystream(key, NONCE_F, 64 * first, 64 * n))

    @pytest.mark.parametrize("r", [16, 64, 100])
    @pytest.mark.parametrize("nonce", [NONCE_E, NONCE_F], ids=["E_L", "F_R"])
    def test_noise_factor_8192_rows(self, chacha, r: int, nonce: bytes) -> None:
        case = Factor("cuda", _seed(r), nonce, 77, 8192, r)
        got = chacha.noise_factor_triton(case.key, nonce, case.first_row, case.rows, r, "cuda")
        assert got.device.type == "cuda" and got.dtype == torch.int8 and got.shape == (8192, r)
        assert torch.equal(got.cpu(), _factor_reference(case))

    def test_counter_overflow(self, chacha) -> None:
        with pytest.raises(ValueError, match="32-bit block counter"):
            chacha.chacha20_keystream_triton(bytes(32), bytes(12), TOP - 5, 6, "cuda")
