"""Triton kernel: ChaCha20 keystream blocks (RFC 7539 block function) generated on the device.

The dense noise factors E_L and F_R (`pouw.noise`) are ChaCha20 keystream bytes mapped to [-32, 31]; generating
them on the host costs a pass of `cryptography` plus a host-to-device copy of m*r + n*r bytes. On the device the
keystream is pure ALU work. The reference is `pouw.noise.keystream` (the `cryptography` package's ChaCha20);
results are bit-identical.

Block function (RFC 7539 section 2.3): the state is 16 u32 words,

    words 0..3    "expand 32-byte k" (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
    words 4..11   the 32-byte key as 8 little-endian words
    word  12      the 32-bit block counter
    words 13..15  the 12-byte nonce as 3 little-endian words

20 rounds (10 double rounds: four column quarter-rounds, then four diagonal ones); the block's keystream is the
state after the rounds plus the initial state, serialized as 16 little-endian words (64 bytes). `cryptography`'s
16-byte "nonce" argument is u32_le(initial counter) || 12-byte nonce, i.e. this same layout; the counter must not
pass 2^32 - 1 (the 32-bit counter does not carry into the nonce here; `keystream` refuses such ranges too).

The kernel: each program computes BLOCK consecutive blocks as 16 uint32 vectors (one lane per block). The initial
state is one 16-word int32 tensor (`_initial_state`) holding block first_block's state; lane i adds i to word 12.
The 10 double rounds run as a runtime loop with the 8 quarter-rounds of one double round written out (the same
trade-off as kernels/triton_sha256.py: straight-line code is slow to compile, a loop body of 8 quarter-rounds is
not). The result goes out as one (BLOCK, 16) int32 store into the uint8 output viewed as int32, so each block's
64 bytes land in keystream order on little-endian memory (every CUDA device, and the hosts the interpreter runs
on). With SMALL, every byte b is mapped to (b & 63) - 32 (as int8) in registers before the store, four bytes per
word at once: ((w & 0x3F3F3F3F) + 0x60606060) ^ 0x80808080 (no byte carries: 0x3F + 0x60 < 0x100).

Importing this module imports triton; it raises `TritonUnavailableError` (an ImportError) only when triton is
not installed. Set TRITON_INTERPRET=1 before importing it to run the kernel on CPU tensors.
"""

from __future__ import annotations

import struct
import sys

import torch

from kernels.base import upload
from kernels.triton_support import TritonUnavailableError, interpreting, tl, triton

__all__ = [
    "TritonUnavailableError",
    "chacha20_keystream_triton",
    "default_block",
    "interpreting",
    "noise_factor_triton",
]


_INTERPRET = interpreting()

BLOCK_BYTES = 64
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k" as LE words
_COUNTER_LIMIT = 1 << 32


def _initial_state(key: bytes, nonce: bytes, counter: int, device: torch.device) -> torch.Tensor:
    """The 16 state words of block `counter` as an int32 tensor (uint32 bit patterns) on device."""
    words = _SIGMA + struct.unpack("<8I", key) + (counter,) + struct.unpack("<3I", nonce)
    state = torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words], dtype=torch.int32)
    return upload(state, device)  # no wait for the kernels already queued on the device


def default_block(interpret: bool | None = None) -> int:
    """ChaCha blocks per program: 128 on a GPU (one block per thread at 4 warps); 64 in the interpreter."""
    if interpret is None:
        interpret = _INTERPRET
    return 64 if interpret else 128


# ----------------------------------------------------------------------------------------------------------------
# Device code


@triton.jit
def _rotl(x, n: tl.constexpr):
    return (x << n) | (x >> (32 - n))


@triton.jit
def _quarter(a, b, c, d):
    """RFC 7539 section 2.1 quarter round on uint32 vectors."""
    a = a + b
    d = _rotl(d ^ a, 16)
    c = c + d
    b = _rotl(b ^ c, 12)
    a = a + b
    d = _rotl(d ^ a, 8)
    c = c + d
    b = _rotl(b ^ c, 7)
    return a, b, c, d


@triton.jit
def _rows16(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, BLOCK: tl.constexpr):
    """16 vectors (BLOCK,) -> (BLOCK, 16) with column k = ck.

    Each tl.join adds a trailing dimension of size 2; the first joins pair k with k + 8 (bit 3 of the column
    index), the last one picks bit 0, so the (BLOCK, 2, 2, 2, 2) result reshapes to column order 0..15.
    """
    a0 = tl.join(c0, c8)
    a1 = tl.join(c1, c9)
    a2 = tl.join(c2, c10)
    a3 = tl.join(c3, c11)
    a4 = tl.join(c4, c12)
    a5 = tl.join(c5, c13)
    a6 = tl.join(c6, c14)
    a7 = tl.join(c7, c15)
    b0 = tl.join(a0, a4)  # bit 2
    b1 = tl.join(a1, a5)
    b2 = tl.join(a2, a6)
    b3 = tl.join(a3, a7)
    d0 = tl.join(b0, b2)  # bit 1
    d1 = tl.join(b1, b3)
    x = tl.join(d0, d1)  # bit 0
    return tl.reshape(x, (BLOCK, 16))


@triton.jit
def _small_bytes(w):
    """Each byte b of w -> ((b & 63) - 32) as a two's-complement byte, without carries between bytes."""
    return ((w & 0x3F3F3F3F) + 0x60606060) ^ 0x80808080


@triton.jit
def _chacha20_kernel(state_ptr, out_ptr, n_blocks, BLOCK: tl.constexpr, SMALL: tl.constexpr):
    """Keystream blocks [pid * BLOCK, (pid + 1) * BLOCK) relative to state_ptr's counter -> out (n_blocks, 16) int32."""
    pid = tl.program_id(0)
    t = pid * BLOCK + tl.arange(0, BLOCK)
    mask = t < n_blocks
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    s0 = tl.load(state_ptr + 0).to(tl.uint32, bitcast=True)
    s1 = tl.load(state_ptr + 1).to(tl.uint32, bitcast=True)
    s2 = tl.load(state_ptr + 2).to(tl.uint32, bitcast=True)
    s3 = tl.load(state_ptr + 3).to(tl.uint32, bitcast=True)
    s4 = tl.load(state_ptr + 4).to(tl.uint32, bitcast=True)
    s5 = tl.load(state_ptr + 5).to(tl.uint32, bitcast=True)
    s6 = tl.load(state_ptr + 6).to(tl.uint32, bitcast=True)
    s7 = tl.load(state_ptr + 7).to(tl.uint32, bitcast=True)
    s8 = tl.load(state_ptr + 8).to(tl.uint32, bitcast=True)
    s9 = tl.load(state_ptr + 9).to(tl.uint32, bitcast=True)
    s10 = tl.load(state_ptr + 10).to(tl.uint32, bitcast=True)
    s11 = tl.load(state_ptr + 11).to(tl.uint32, bitcast=True)
    s13 = tl.load(state_ptr + 13).to(tl.uint32, bitcast=True)
    s14 = tl.load(state_ptr + 14).to(tl.uint32, bitcast=True)
    s15 = tl.load(state_ptr + 15).to(tl.uint32, bitcast=True)
    # Block counter of each lane; the host guarantees first counter + n_blocks <= 2^32 (no wrap for live lanes).
    s12 = tl.load(state_ptr + 12).to(tl.uint32, bitcast=True) + t.to(tl.uint32, bitcast=True)

    x0 = zero | s0
    x1 = zero | s1
    x2 = zero | s2
    x3 = zero | s3
    x4 = zero | s4
    x5 = zero | s5
    x6 = zero | s6
    x7 = zero | s7
    x8 = zero | s8
    x9 = zero | s9
    x10 = zero | s10
    x11 = zero | s11
    x12 = s12
    x13 = zero | s13
    x14 = zero | s14
    x15 = zero | s15
    for _ in range(10):  # double rounds: a runtime loop keeps the IR (and compile time) small
        x0, x4, x8, x12 = _quarter(x0, x4, x8, x12)  # columns
        x1, x5, x9, x13 = _quarter(x1, x5, x9, x13)
        x2, x6, x10, x14 = _quarter(x2, x6, x10, x14)
        x3, x7, x11, x15 = _quarter(x3, x7, x11, x15)
        x0, x5, x10, x15 = _quarter(x0, x5, x10, x15)  # diagonals
        x1, x6, x11, x12 = _quarter(x1, x6, x11, x12)
        x2, x7, x8, x13 = _quarter(x2, x7, x8, x13)
        x3, x4, x9, x14 = _quarter(x3, x4, x9, x14)
    x0 = x0 + s0
    x1 = x1 + s1
    x2 = x2 + s2
    x3 = x3 + s3
    x4 = x4 + s4
    x5 = x5 + s5
    x6 = x6 + s6
    x7 = x7 + s7
    x8 = x8 + s8
    x9 = x9 + s9
    x10 = x10 + s10
    x11 = x11 + s11
    x12 = x12 + s12
    x13 = x13 + s13
    x14 = x14 + s14
    x15 = x15 + s15
    if SMALL:
        x0 = _small_bytes(x0)
        x1 = _small_bytes(x1)
        x2 = _small_bytes(x2)
        x3 = _small_bytes(x3)
        x4 = _small_bytes(x4)
        x5 = _small_bytes(x5)
        x6 = _small_bytes(x6)
        x7 = _small_bytes(x7)
        x8 = _small_bytes(x8)
        x9 = _small_bytes(x9)
        x10 = _small_bytes(x10)
        x11 = _small_bytes(x11)
        x12 = _small_bytes(x12)
        x13 = _small_bytes(x13)
        x14 = _small_bytes(x14)
        x15 = _small_bytes(x15)
    words = _rows16(x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, BLOCK)
    t64 = t.to(tl.int64)
    cols = tl.arange(0, 16)
    tl.store(out_ptr + t64[:, None] * 16 + cols[None, :], words.to(tl.int32, bitcast=True), mask=mask[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Host entry points


def _check_key_nonce(key: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    for name, value, size in (("key", key, 32), ("nonce", nonce, 12)):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(key), bytes(nonce)


def _blocks(
    key: bytes,
    nonce: bytes,
    first_block: int,
    n_blocks: int,
    device: torch.device | str,
    small: bool,
    block: int | None,
    num_warps: int | None,
) -> torch.Tensor:
    """uint8 (n_blocks * 64,) keystream of blocks [first_block, first_block + n_blocks), optionally mapped."""
    key, nonce = _check_key_nonce(key, nonce)
    first_block, n_blocks = int(first_block), int(n_blocks)
    if first_block < 0 or n_blocks < 0:
        raise ValueError(f"first_block={first_block} and n_blocks={n_blocks} must be non-negative")
    if first_block + n_blocks > _COUNTER_LIMIT:
        raise ValueError("keystream range exceeds the 32-bit block counter")
    device = torch.device(device)
    if device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"tensors on {device} need TRITON_INTERPRET=1 (set before importing this module)")
    if sys.byteorder != "little":  # pragma: no cover - the int32 store assumes little-endian memory
        raise RuntimeError("the ChaCha20 kernel assumes a little-endian host")
    block = block or default_block()
    if block <= 0 or block & (block - 1):
        raise ValueError(f"block={block} must be a power of two")
    if n_blocks >= 2**31 - block:
        raise ValueError(f"{n_blocks} blocks exceed the kernel's int32 block index")
    out = torch.empty(n_blocks * BLOCK_BYTES, dtype=torch.uint8, device=device)
    if n_blocks == 0:
        return out
    state = _initial_state(key, nonce, first_block, device)
    if num_warps is None:
        num_warps = 1 if _INTERPRET else max(1, min(8, block // 32))
    grid = (triton.cdiv(n_blocks, block),)
    _chacha20_kernel[grid](state, out.view(torch.int32), n_blocks, BLOCK=block, SMALL=small, num_warps=num_warps)
    return out


def chacha20_keystream_triton(
    key: bytes,
    nonce: bytes,
    first_block: int,
    n_blocks: int,
    device: torch.device | str,
    *,
    block: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """ChaCha20 keystream blocks [first_block, first_block + n_blocks) as uint8 (n_blocks * 64,) on device.

    key: 32 bytes; nonce: 12 bytes (RFC 7539 layout: block counter in word 12, nonce in words 13..15). Equal to
    `pouw.noise.keystream(key, nonce, 64 * first_block, 64 * n_blocks)`. Raises ValueError when a block counter
    would reach 2^32. device: CUDA, or the CPU under TRITON_INTERPRET=1. block (a power of two: ChaCha blocks per
    program) and num_warps override the launch defaults.
    """
    return _blocks(key, nonce, first_block, n_blocks, device, False, block, num_warps)


def noise_factor_triton(
    key: bytes,
    nonce: bytes,
    first_row: int,
    rows: int,
    r: int,
    device: torch.device | str,
    *,
    block: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Rows [first_row, first_row + rows) of a dense noise factor as int8 (rows, r) on device.

    Equal to `pouw.noise._factor(key, nonce, range(first_row, first_row + rows), r)` (as int8): keystream bytes
    [first_row * r, (first_row + rows) * r) mapped by (byte & 63) - 32 into [-32, 31]. The covering ChaCha blocks
    are generated (mapped in the kernel) and sliced, so any r and first_row work.
    """
    first_row, rows, r = int(first_row), int(rows), int(r)
    if r <= 0 or first_row < 0 or rows < 0:
        raise ValueError(f"need r > 0 and first_row, rows >= 0 (got r={r}, first_row={first_row}, rows={rows})")
    start = first_row * r
    length = rows * r
    first_block, skip = divmod(start, BLOCK_BYTES)
    n_blocks = -(-(skip + length) // BLOCK_BYTES) if length else 0  # no rows: nothing to generate or check
    buf = _blocks(key, nonce, first_block, n_blocks, device, True, block, num_warps)
    return buf[skip : skip + length].view(torch.int8).view(rows, r)
