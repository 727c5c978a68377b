"""A slow, obviously-correct reimplementation of the protocol's noise, transcript and tickets, written from
docs/protocol.md with plain Python integers and hashlib only. Tests compare the fast path against it."""

from __future__ import annotations

import hashlib


def H(tag: bytes, *parts: bytes) -> bytes:
    return hashlib.sha256(b"pouw/" + tag + b"\x00" + b"".join(parts)).digest()


def X(tag: bytes, *parts: bytes, length: int) -> bytes:
    return hashlib.shake_256(b"pouw/" + tag + b"\x00" + b"".join(parts)).digest(length)


def seeds(template: bytes, h_a: bytes, h_b: bytes) -> tuple[bytes, bytes, bytes]:
    jk = H(b"job-key", template)
    sb = H(b"seed-b", jk, h_b)
    sa = H(b"seed-a", sb, h_a)
    return jk, sa, sb


def noise_map(seed: bytes, k: int, r: int) -> list[int]:
    """docs/protocol.md §3: chunk c's permutation lists the positions i in ascending order of (w[c·r + i], i)."""
    raw = X(b"noise-perm", seed, length=4 * k)
    w = [int.from_bytes(raw[4 * l : 4 * l + 4], "little") for l in range(k)]
    out = []
    for c in range(k // r):
        out += [i for _, i in sorted((w[c * r + i], i) for i in range(r))]
    return out


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """RFC 7539 section 2.3, written out with Python integers."""

    def rotl(v: int, c: int) -> int:
        return ((v << c) | (v >> (32 - c))) & 0xFFFFFFFF

    def qr(s: list[int], a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)

    words = lambda b: [int.from_bytes(b[i : i + 4], "little") for i in range(0, len(b), 4)]  # noqa: E731
    init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + words(key) + [counter] + words(nonce)
    s = list(init)
    for _ in range(10):
        qr(s, 0, 4, 8, 12)
        qr(s, 1, 5, 9, 13)
        qr(s, 2, 6, 10, 14)
        qr(s, 3, 7, 11, 15)
        qr(s, 0, 5, 10, 15)
        qr(s, 1, 6, 11, 12)
        qr(s, 2, 7, 8, 13)
        qr(s, 3, 4, 9, 14)
    return b"".join(((x + y) & 0xFFFFFFFF).to_bytes(4, "little") for x, y in zip(s, init))


def stream_bytes(key: bytes, nonce: bytes, offset: int, length: int) -> bytes:
    out = b""
    block = offset // 64
    while len(out) < offset % 64 + length:
        out += chacha20_block(key, block, nonce)
        block += 1
    return out[offset % 64 : offset % 64 + length]


def factor(tag: bytes, seed: bytes, idx: int, r: int) -> list[int]:
    nonce = {b"noise-row": b"pouw-E_L", b"noise-col": b"pouw-F_R"}[tag] + bytes(4)
    return [(byte & 63) - 32 for byte in stream_bytes(seed, nonce, idx * r, r)]


def noisy(A: list[list[int]], B: list[list[int]], template: bytes, h_a: bytes, h_b: bytes, r: int):
    m, k, n = len(A), len(B), len(B[0])
    jk, sa, sb = seeds(template, h_a, h_b)
    pa, pb = noise_map(sa, k, r), noise_map(sb, k, r)
    A2 = []
    for u in range(m):
        el = factor(b"noise-row", sa, u, r)
        A2.append([A[u][l] + el[pa[l]] for l in range(k)])
    fr = [factor(b"noise-col", sb, v, r) for v in range(n)]
    B2 = [[B[l][v] + fr[v][pb[l]] for v in range(n)] for l in range(k)]
    return jk, A2, B2


def rotl(x: int) -> int:
    return ((x << 13) | (x >> 19)) & 0xFFFFFFFF


def tickets(jk: bytes, A2, B2, r: int, h: int, w: int) -> dict[tuple[int, int], bytes]:
    m, k, n = len(A2), len(B2), len(B2[0])
    out = {}
    for ti in range(m // h):
        for tj in range(n // w):
            msg = [0] * 16
            S = [[0] * w for _ in range(h)]
            for c in range(k // r):
                x = 0
                for du in range(h):
                    for dv in range(w):
                        S[du][dv] += sum(A2[ti * h + du][l] * B2[l][tj * w + dv] for l in range(c * r, (c + 1) * r))
                        x ^= S[du][dv] & 0xFFFFFFFF
                msg[c % 16] = rotl(msg[c % 16]) ^ x
            body = ti.to_bytes(4, "little") + tj.to_bytes(4, "little") + b"".join(v.to_bytes(4, "little") for v in msg)
            out[(ti, tj)] = hashlib.sha256(b"pouw/ticket\x00" + jk + body).digest()
    return out


def merkle_root(tag: bytes, leaves: list[bytes]) -> bytes:
    level = [hashlib.sha256(b"\x00" + x).digest() for x in leaves]
    size = 1
    while size < len(level):
        size *= 2
    level += [b"\x00" * 32] * (size - len(level))
    while len(level) > 1:
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return H(b"commit/" + tag, len(leaves).to_bytes(8, "little"), len(leaves[0]).to_bytes(8, "little"), level[0])
