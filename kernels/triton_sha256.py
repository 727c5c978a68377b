"""Triton kernel: every tile's lottery ticket (`Backend.tile_tickets`) hashed on the device.

    ticket(ti, tj) = SHA-256(prefix || u32_le(ti) || u32_le(tj) || msgs[ti, tj, 0..15] as 16 u32 LE)

Hashing 262,144 tiles on the host costs ~0.2 s of Python; on the device it is a few microseconds of ALU work.
The reference is `kernels.base.tile_tickets_reference` (hashlib); results are bit-identical.

Layout of the message (L = len(prefix) + 72 bytes, padded per FIPS 180-4 to a multiple of 64 bytes):

  * The first F = len(prefix) // 64 blocks are prefix bytes only: the host compresses them once (pure Python,
    `_sha256_compress`) and the kernel starts from that midstate instead of the standard IV.
  * The remaining NB = ceil((len(prefix) % 64 + 72 + 9) / 64) blocks (2 or 3) are the "tail": the last
    R = len(prefix) % 64 prefix bytes, the 72 per-tile bytes, the 0x80 pad byte, zeros and the 64-bit big-endian
    bit length. The host packs every tile-independent byte of the tail into big-endian u32 words (zero where a
    per-tile byte goes); the kernel ORs each tile's bytes into them in registers.
  * Per-tile bytes: the 18 little-endian words (ti, tj, m0..m15) are byte-swapped into big-endian words B[q].
    Tile byte offset o of a tail word = 4 * (word index) - R. When R % 4 == 0 every tail word holds a whole B[q]
    (or none); otherwise a word straddles two of them, (B[q] << 8t) | (B[q + 1] >> (32 - 8t)) with t = o mod 4,
    with words outside [0, 18) treated as zero. All of this is resolved at compile time (R, NB are constexpr),
    so any prefix length works; the kernel is specialized per (R, NB) (in practice one length: 44 bytes).

The kernel: each program hashes BLOCK tiles as uint32 vectors (one lane per tile). It loads the tiles' words
as one (BLOCK, 16) block (64 contiguous bytes per tile) and splits it into 16 vectors in registers. Rounds are
unrolled 16 at a time with tl.static_range; the message schedule is 16 rolling vectors w0..w15 (w0 = W[i] at
round i), which are back in place after 16 rounds, so rounds 0..47 run as a runtime loop over three 16-round
groups and rounds 48..63 (no more schedule words needed) are unrolled once. Unrolling all 64 rounds of every
block made Triton's coalescing pass (superlinear in straight-line code) take ~80 s per compile on a slow CPU;
as written the whole compile takes ~3 s. The 64 round constants, the midstate and the tail's constant words sit
in one small int32 tensor (`_constants`). Digests go out as one (BLOCK, 8) store of byte-swapped u32 words into
the uint8 output viewed as int32, which gives the standard SHA-256 byte order on little-endian machines (every
CUDA device, and the x86/ARM hosts the interpreter runs on).

Importing this module imports triton; it raises `TritonUnavailableError` (an ImportError) only when triton is
not installed. Set TRITON_INTERPRET=1 before importing it to run the kernel on CPU tensors.
"""

from __future__ import annotations

import functools
import struct
import sys

import torch

from kernels.base import MSG_WORDS, upload
from kernels.triton_support import TritonUnavailableError, interpreting, tl, triton

__all__ = ["TritonUnavailableError", "default_block", "interpreting", "tail_layout", "tile_tickets_triton"]


_INTERPRET = interpreting()

TILE_BYTES = 8 + 4 * MSG_WORDS  # u32 ti, u32 tj, 16 message words
TILE_WORDS = TILE_BYTES // 4  # 18

# FIPS 180-4 constants.
_K = (
    0x428A2F98,
    0x71374491,
    0xB5C0FBCF,
    0xE9B5DBA5,
    0x3956C25B,
    0x59F111F1,
    0x923F82A4,
    0xAB1C5ED5,
    0xD807AA98,
    0x12835B01,
    0x243185BE,
    0x550C7DC3,
    0x72BE5D74,
    0x80DEB1FE,
    0x9BDC06A7,
    0xC19BF174,
    0xE49B69C1,
    0xEFBE4786,
    0x0FC19DC6,
    0x240CA1CC,
    0x2DE92C6F,
    0x4A7484AA,
    0x5CB0A9DC,
    0x76F988DA,
    0x983E5152,
    0xA831C66D,
    0xB00327C8,
    0xBF597FC7,
    0xC6E00BF3,
    0xD5A79147,
    0x06CA6351,
    0x14292967,
    0x27B70A85,
    0x2E1B2138,
    0x4D2C6DFC,
    0x53380D13,
    0x650A7354,
    0x766A0ABB,
    0x81C2C92E,
    0x92722C85,
    0xA2BFE8A1,
    0xA81A664B,
    0xC24B8B70,
    0xC76C51A3,
    0xD192E819,
    0xD6990624,
    0xF40E3585,
    0x106AA070,
    0x19A4C116,
    0x1E376C08,
    0x2748774C,
    0x34B0BCB5,
    0x391C0CB3,
    0x4ED8AA4A,
    0x5B9CCA4F,
    0x682E6FF3,
    0x748F82EE,
    0x78A5636F,
    0x84C87814,
    0x8CC70208,
    0x90BEFFFA,
    0xA4506CEB,
    0xBEF9A3F7,
    0xC67178F2,
)
_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)

# Offsets into the constants tensor: [K (64) | midstate (8) | tail words (NB * 16)].
_K_OFF = tl.constexpr(0)
_H_OFF = tl.constexpr(64)
_C_OFF = tl.constexpr(72)


def _sha256_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression (pure Python) of a 64-byte block: the host-side midstate."""
    m = 0xFFFFFFFF

    def rotr(x: int, n: int) -> int:
        return ((x >> n) | (x << (32 - n))) & m

    w = list(struct.unpack(">16I", block))
    for i in range(16, 64):
        s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
        s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & m)
    a, b, c, d, e, f, g, h = state
    for i in range(64):
        t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[i] + w[i]) & m
        t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & m
        a, b, c, d, e, f, g, h = (t1 + t2) & m, a, b, c, (d + t1) & m, e, f, g
    return tuple((x + y) & m for x, y in zip(state, (a, b, c, d, e, f, g, h)))


@functools.lru_cache(maxsize=64)
def tail_layout(prefix: bytes) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    """Tile-independent part of the hash: (R, NB, midstate, tail words).

    R = len(prefix) % 64 prefix bytes lead the tail; NB = number of tail blocks (2 or 3); midstate = the
    state after the len(prefix) // 64 whole prefix blocks; tail words = NB * 16 big-endian u32 words holding the
    constant bytes of the tail (prefix remainder, 0x80, zeros, bit length), zero where per-tile bytes go.
    """
    full = len(prefix) // 64 * 64
    state: tuple[int, ...] = _IV
    for off in range(0, full, 64):
        state = _sha256_compress(state, prefix[off : off + 64])
    r = len(prefix) - full
    nb = -(-(r + TILE_BYTES + 9) // 64)
    tail = bytearray(prefix[full:]) + bytes(TILE_BYTES) + b"\x80"
    tail += bytes(nb * 64 - 8 - len(tail)) + struct.pack(">Q", 8 * (len(prefix) + TILE_BYTES))
    assert len(tail) == nb * 64
    return r, nb, state, struct.unpack(f">{nb * 16}I", bytes(tail))


def _constants(prefix: bytes, device: torch.device) -> tuple[int, int, torch.Tensor]:
    r, nb, state, words = tail_layout(prefix)
    u32 = torch.tensor(_K + state + words, dtype=torch.int64)
    i32 = torch.where(u32 >= 2**31, u32 - 2**32, u32).to(torch.int32)
    return r, nb, upload(i32, device)  # no wait for the kernels already queued on the device


def default_block(interpret: bool | None = None) -> int:
    """Tiles per program: 256 on a GPU (one tile per thread at 8 warps); 64 in the interpreter."""
    if interpret is None:
        interpret = _INTERPRET
    return 64 if interpret else 256


# ----------------------------------------------------------------------------------------------------------------
# Device code


@triton.jit
def _rotr(x, n: tl.constexpr):
    return (x >> n) | (x << (32 - n))


@triton.jit
def _bswap(x):
    return ((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24)


@triton.jit
def _columns16(m, BLOCK: tl.constexpr):
    """The 16 columns of m (BLOCK, 16), as 16 vectors (BLOCK,), by four rounds of tl.split on the index bits."""
    x = tl.reshape(m, (BLOCK, 2, 2, 2, 2))  # dims: bits 3, 2, 1, 0 of the column index
    x0, x1 = tl.split(x)  # bit 0
    x00, x10 = tl.split(x0)  # bit 1 (names: bit0 bit1)
    x01, x11 = tl.split(x1)
    x000, x100 = tl.split(x00)  # bit 2
    x010, x110 = tl.split(x10)
    x001, x101 = tl.split(x01)
    x011, x111 = tl.split(x11)
    c0, c8 = tl.split(x000)  # bit 3
    c4, c12 = tl.split(x100)
    c2, c10 = tl.split(x010)
    c6, c14 = tl.split(x110)
    c1, c9 = tl.split(x001)
    c5, c13 = tl.split(x101)
    c3, c11 = tl.split(x011)
    c7, c15 = tl.split(x111)
    return c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15


@triton.jit
def _rows8(h0, h1, h2, h3, h4, h5, h6, h7, BLOCK: tl.constexpr):
    """The inverse for 8 vectors: (BLOCK, 8) with column k = hk (the last join picks bit 0 of k)."""
    x = tl.join(tl.join(tl.join(h0, h4), tl.join(h2, h6)), tl.join(tl.join(h1, h5), tl.join(h3, h7)))
    return tl.reshape(x, (BLOCK, 8))


@triton.jit
def _tail_word(k: tl.constexpr, R: tl.constexpr, TILE_W: tl.constexpr, const_ptr, zero, words):
    """Word k (big-endian, as SHA-256 reads it) of the tail blocks: constant bytes | this tile's bytes.

    words: the TILE_W per-tile words, already byte-swapped to big-endian (ti, tj, m0..m15).
    """
    w = zero | tl.load(const_ptr + (_C_OFF + k)).to(tl.uint32, bitcast=True)
    O: tl.constexpr = 4 * k - R  # offset of the word's first byte within the 72 per-tile bytes
    if O > -4:
        if O < 4 * TILE_W:
            Q: tl.constexpr = (O + 4) // 4 - 1  # floor(O / 4) without relying on negative floor division
            T: tl.constexpr = O - 4 * Q  # 0..3
            if T == 0:
                w = w | words[Q]
            else:
                if Q >= 0:
                    w = w | (words[Q] << (8 * T))
                if Q + 1 < TILE_W:
                    w = w | (words[Q + 1] >> (32 - 8 * T))
    return w


@triton.jit
def _rounds16(
    a,
    b,
    c,
    d,
    e,
    f,
    g,
    h,
    w0,
    w1,
    w2,
    w3,
    w4,
    w5,
    w6,
    w7,
    w8,
    w9,
    w10,
    w11,
    w12,
    w13,
    w14,
    w15,
    const_ptr,
    base,
    SCHEDULE: tl.constexpr,
):
    """Rounds base .. base + 15 (w0..w15 = W[base .. base + 15]); with SCHEDULE, also W[base + 16 .. base + 31].

    The schedule rolls: after round j, w0..w14 = w1..w15 and w15 = W[base + j + 16]; after 16 rounds the 16
    vectors are back in place, so a runtime loop over groups carries them without moves.
    """
    for i in tl.static_range(16):
        kk = tl.load(const_ptr + (_K_OFF + base + i)).to(tl.uint32, bitcast=True)
        s1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        ch = g ^ (e & (f ^ g))
        t1 = h + s1 + ch + kk + w0
        s0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        maj = (a & b) | (c & (a | b))
        t2 = s0 + maj
        h = g
        g = f
        f = e
        e = d + t1
        d = c
        c = b
        b = a
        a = t1 + t2
        # W[j + 16] = s1(W[j + 14]) + W[j + 9] + s0(W[j + 1]) + W[j]
        nw = w0
        if SCHEDULE:
            nw = nw + (_rotr(w14, 17) ^ _rotr(w14, 19) ^ (w14 >> 10)) + w9 + (_rotr(w1, 7) ^ _rotr(w1, 18) ^ (w1 >> 3))
        w0, w1, w2, w3, w4, w5, w6, w7 = w1, w2, w3, w4, w5, w6, w7, w8
        w8, w9, w10, w11, w12, w13, w14, w15 = w9, w10, w11, w12, w13, w14, w15, nw
    return a, b, c, d, e, f, g, h, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15


@triton.jit
def _compress(
    h0, h1, h2, h3, h4, h5, h6, h7, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15, const_ptr
):
    """One SHA-256 compression of the block w0..w15 into state h0..h7 (uint32 vectors).

    Rounds 0..47 run as a runtime loop over three unrolled 16-round groups (keeping the IR small: Triton's
    coalescing pass is superlinear in straight-line code, ~80 s of compile time with all 64 rounds of every
    block unrolled); rounds 48..63 need no more schedule words and are unrolled once without it.
    """
    a = h0
    b = h1
    c = h2
    d = h3
    e = h4
    f = h5
    g = h6
    h = h7
    for base in range(0, 48, 16):
        a, b, c, d, e, f, g, h, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15 = _rounds16(
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            w0,
            w1,
            w2,
            w3,
            w4,
            w5,
            w6,
            w7,
            w8,
            w9,
            w10,
            w11,
            w12,
            w13,
            w14,
            w15,
            const_ptr,
            base,
            True,
        )
    a, b, c, d, e, f, g, h, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15 = _rounds16(
        a,
        b,
        c,
        d,
        e,
        f,
        g,
        h,
        w0,
        w1,
        w2,
        w3,
        w4,
        w5,
        w6,
        w7,
        w8,
        w9,
        w10,
        w11,
        w12,
        w13,
        w14,
        w15,
        const_ptr,
        48,
        False,
    )
    return h0 + a, h1 + b, h2 + c, h3 + d, h4 + e, h5 + f, h6 + g, h7 + h


@triton.jit
def _tile_tickets_kernel(
    msg_ptr,
    const_ptr,
    out_ptr,
    n_tiles,
    tiles_j,
    R: tl.constexpr,
    NB: tl.constexpr,
    TILE_W: tl.constexpr,
    WORDS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Digests of tiles [pid * BLOCK, (pid + 1) * BLOCK): msgs (n_tiles, WORDS) int32 -> out (n_tiles, 8) int32."""
    pid = tl.program_id(0)
    t = pid * BLOCK + tl.arange(0, BLOCK)
    mask = t < n_tiles
    ti = (t // tiles_j).to(tl.uint32, bitcast=True)
    tj = (t % tiles_j).to(tl.uint32, bitcast=True)
    t64 = t.to(tl.int64)
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    # One (BLOCK, 16) load (64 contiguous bytes per tile), split into 16 vectors in registers.
    cols = tl.arange(0, WORDS)
    m = tl.load(msg_ptr + t64[:, None] * WORDS + cols[None, :], mask=mask[:, None], other=0)
    m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = _columns16(
        m.to(tl.uint32, bitcast=True), BLOCK
    )
    words = (
        _bswap(ti),
        _bswap(tj),
        _bswap(m0),
        _bswap(m1),
        _bswap(m2),
        _bswap(m3),
        _bswap(m4),
        _bswap(m5),
        _bswap(m6),
        _bswap(m7),
        _bswap(m8),
        _bswap(m9),
        _bswap(m10),
        _bswap(m11),
        _bswap(m12),
        _bswap(m13),
        _bswap(m14),
        _bswap(m15),
    )

    h0 = zero | tl.load(const_ptr + (_H_OFF + 0)).to(tl.uint32, bitcast=True)
    h1 = zero | tl.load(const_ptr + (_H_OFF + 1)).to(tl.uint32, bitcast=True)
    h2 = zero | tl.load(const_ptr + (_H_OFF + 2)).to(tl.uint32, bitcast=True)
    h3 = zero | tl.load(const_ptr + (_H_OFF + 3)).to(tl.uint32, bitcast=True)
    h4 = zero | tl.load(const_ptr + (_H_OFF + 4)).to(tl.uint32, bitcast=True)
    h5 = zero | tl.load(const_ptr + (_H_OFF + 5)).to(tl.uint32, bitcast=True)
    h6 = zero | tl.load(const_ptr + (_H_OFF + 6)).to(tl.uint32, bitcast=True)
    h7 = zero | tl.load(const_ptr + (_H_OFF + 7)).to(tl.uint32, bitcast=True)

    for blk in tl.static_range(NB):
        h0, h1, h2, h3, h4, h5, h6, h7 = _compress(
            h0,
            h1,
            h2,
            h3,
            h4,
            h5,
            h6,
            h7,
            _tail_word(blk * 16 + 0, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 1, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 2, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 3, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 4, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 5, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 6, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 7, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 8, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 9, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 10, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 11, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 12, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 13, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 14, R, TILE_W, const_ptr, zero, words),
            _tail_word(blk * 16 + 15, R, TILE_W, const_ptr, zero, words),
            const_ptr,
        )

    # Big-endian digest words, byte-swapped so the little-endian int32 store lays the bytes out in digest order;
    # one (BLOCK, 8) store, 32 contiguous bytes per tile.
    digest = _rows8(
        _bswap(h0), _bswap(h1), _bswap(h2), _bswap(h3), _bswap(h4), _bswap(h5), _bswap(h6), _bswap(h7), BLOCK
    )
    rows = tl.arange(0, 8)
    tl.store(out_ptr + t64[:, None] * 8 + rows[None, :], digest.to(tl.int32, bitcast=True), mask=mask[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Host entry point


def tile_tickets_triton(
    prefix: bytes, msgs: torch.Tensor, *, block: int | None = None, num_warps: int | None = None
) -> torch.Tensor:
    """SHA-256(prefix || u32_le(ti) || u32_le(tj) || msgs[ti, tj] as 16 u32 LE) for every tile, on msgs' device.

    msgs: int32 (TI, TJ, 16) holding uint32 bit patterns, on CUDA (or the CPU under TRITON_INTERPRET=1).
    Returns uint8 (TI, TJ, 32) digests on the same device, bit-identical to `kernels.base.tile_tickets_reference`.
    Any prefix length works. block (a power of two) and num_warps override the launch defaults.
    """
    if not isinstance(prefix, (bytes, bytearray, memoryview)):
        raise TypeError(f"prefix must be bytes, got {type(prefix).__name__}")
    prefix = bytes(prefix)
    if not isinstance(msgs, torch.Tensor):
        raise TypeError("msgs must be a torch tensor")
    if msgs.dtype != torch.int32:
        raise ValueError(f"msgs must be int32 (uint32 bit patterns), got {msgs.dtype}")
    if msgs.dim() != 3 or msgs.shape[2] != MSG_WORDS:
        raise ValueError(f"msgs must have shape (TI, TJ, {MSG_WORDS}), got {tuple(msgs.shape)}")
    if msgs.device.type != "cuda" and not _INTERPRET:
        raise ValueError(f"tensors on {msgs.device} need TRITON_INTERPRET=1 (set before importing this module)")
    if sys.byteorder != "little":  # pragma: no cover - the int32 digest store assumes little-endian memory
        raise RuntimeError("tile_tickets_triton assumes a little-endian host")
    block = block or default_block()
    if block <= 0 or block & (block - 1):
        raise ValueError(f"block={block} must be a power of two")
    ti_n, tj_n, _ = msgs.shape
    if ti_n >= 2**32 or tj_n >= 2**32:
        raise ValueError("tile indices must fit in u32")

    out = torch.empty((ti_n, tj_n, 32), dtype=torch.uint8, device=msgs.device)
    n_tiles = ti_n * tj_n
    if n_tiles == 0:
        return out
    if n_tiles >= 2**31 - block:
        raise ValueError(f"{n_tiles} tiles exceed the kernel's int32 tile index")
    r, nb, consts = _constants(prefix, msgs.device)
    msgs = msgs.contiguous()
    if num_warps is None:
        num_warps = 1 if _INTERPRET else max(1, min(8, block // 32))
    grid = (triton.cdiv(n_tiles, block),)
    _tile_tickets_kernel[grid](
        msgs,
        consts,
        out.view(torch.int32),
        n_tiles,
        tj_n,
        R=r,
        NB=nb,
        TILE_W=TILE_WORDS,
        WORDS=MSG_WORDS,
        BLOCK=block,
        num_warps=num_warps,
    )
    return out
