"""The low-rank attack on the lottery (consensus issue, hole 2), mined against the old and the new noise maps.

Attack: with A = 0 a chunk's noisy operand is A'_c = E_L · P_c. Factor the chunk's map through its rank,
P_c = X_c · Y_c with X_c = P_c's columns at a column basis (r x rho) and Y_c in {0, +-1} (rho x r, the reduced row
echelon form). Then A'_c = D_c · Y_c with D_c = A'_c's columns at that basis (free: they are entries of A'), and a
tile's chunk product is D_c[rows] · (Y_c · B'_c)[:, cols]: Y_c · B'_c needs additions only (once per job), the
tile pays h·rho·w multiply-adds instead of h·r·w. The prefix sums, the fold and the ticket are then exactly the
honest ones. Multiply-adds are counted exactly, nothing is timed.

  * Protocol version 1 (kept here only as the reference the attack beats): column l of P got +1 at p(l) and -1
    at q(l), so P_c is the incidence matrix of a random graph on r vertices with r edges, rank r minus its
    number of components: the attack saves about 20 %.
  * Version 2 (`pouw.noise.noise_map`): every P_c is a permutation matrix, rank r: the same attack saves nothing.
    More generally, any factorisation A'_c = D · Y has inner width >= rank(A'_c), and A'_c (B'_c) has rank r
    exactly for zero and low-rank operands, so every tile costs >= h·w·k multiply-adds in this attack model.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.base import MSG_WORDS, ROT
from pouw.hashing import xof
from pouw.job import JobCommitment
from pouw.noise import derive_seeds, left_factor_rows, noise_map, right_factor_cols
from pouw.ticket import ticket_hash
from pouw.transcript import tile_message

H = W = 8
PRIME = (1 << 31) - 1


def v1_map_matrix(seed: bytes, k: int, r: int) -> np.ndarray:
    """Protocol version 1's sparse map (r x k): raw = XOF("noise-map", seed, 4k), u16 pairs (x, y) per column,
    p = x mod r, q = (p + 1 + y mod (r - 1)) mod r, +1 at (p, l) and -1 at (q, l)."""
    raw = np.frombuffer(xof(b"noise-map", seed, length=4 * k), dtype="<u2").reshape(k, 2).astype(np.int64)
    p = raw[:, 0] % r
    q = (p + 1 + raw[:, 1] % (r - 1)) % r
    mat = np.zeros((r, k), dtype=np.int64)
    mat[p, np.arange(k)] += 1
    mat[q, np.arange(k)] -= 1
    return mat


def v2_map_matrix(seed: bytes, k: int, r: int) -> np.ndarray:
    mat = np.zeros((r, k), dtype=np.int64)
    mat[noise_map(seed, k, r), np.arange(k)] = 1
    return mat


def factor_through_rank(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(basis, Y): p == p[:, basis] @ Y exactly, Y the nonzero rows of p's reduced row echelon form (rho x r,
    rho = rank p). Gauss-Jordan in integers; the maps are totally unimodular, so every pivot is +-1 (asserted)
    and Y's entries stay in {0, +-1}."""
    m = p.copy()
    rows, cols = m.shape
    basis: list[int] = []
    i = 0
    for j in range(cols):
        nz = [t for t in range(i, rows) if m[t, j] != 0]
        if not nz:
            continue
        piv = nz[0]
        assert abs(m[piv, j]) == 1, "pivot not +-1: the map is not totally unimodular"
        m[[i, piv]] = m[[piv, i]]
        m[i] *= m[i, j]
        for t in range(rows):
            if t != i and m[t, j]:
                m[t] -= m[t, j] * m[i]
        basis.append(j)
        i += 1
        if i == rows:
            break
    y = m[:i]
    assert np.array_equal(p[:, basis] @ y, p) and set(np.unique(y).tolist()) <= {-1, 0, 1}
    return np.array(basis, dtype=np.int64), y


def rank_mod_prime(x: np.ndarray) -> int:
    """Rank of an integer matrix over GF(2^31 - 1). rank over GF(p) <= rank over Q, so a full rank here is a
    full rank over the rationals (exact, no floating point)."""
    m = np.mod(x.astype(np.int64), PRIME)
    rank = 0
    for j in range(m.shape[1]):
        nz = np.nonzero(m[rank:, j])[0]
        if nz.size == 0:
            continue
        piv = rank + nz[0]
        m[[rank, piv]] = m[[piv, rank]]
        m[rank] = m[rank] * pow(int(m[rank, j]), PRIME - 2, PRIME) % PRIME
        others = np.nonzero(m[:, j])[0]
        others = others[others != rank]
        m[others] = (m[others] - m[others, j : j + 1] * m[rank]) % PRIME
        rank += 1
        if rank == m.shape[0]:
            break
    return rank


def _fold(msg: list[int], x: int, c: int) -> None:
    v = msg[c % MSG_WORDS]
    msg[c % MSG_WORDS] = (((v << ROT) | (v >> (32 - ROT))) & 0xFFFFFFFF) ^ x


def honest_tickets(jk: bytes, a2: np.ndarray, b2: np.ndarray, r: int) -> dict[tuple[int, int], bytes]:
    """What a verifier replays (pouw.transcript.tile_message): h·w·k multiply-adds per tile."""
    out = {}
    for ti in range(a2.shape[0] // H):
        for tj in range(b2.shape[1] // W):
            msg = tile_message(
                a2[ti * H : (ti + 1) * H].astype(np.int16), b2[:, tj * W : (tj + 1) * W].T.astype(np.int16), r
            )
            out[(ti, tj)] = ticket_hash(jk, ti, tj, msg.astype("<u4").tobytes())
    return out


def attack_tickets(
    jk: bytes, a2: np.ndarray, b2: np.ndarray, pmat: np.ndarray, r: int
) -> tuple[dict[tuple[int, int], bytes], int]:
    """Every tile's ticket for A = 0 through the rank factorisation of each chunk's map; (tickets, MACs)."""
    m, k = a2.shape
    n = b2.shape[1]
    sums = np.zeros((m, n), dtype=np.int64)
    msgs = {(ti, tj): [0] * MSG_WORDS for ti in range(m // H) for tj in range(n // W)}
    macs = 0
    for c in range(k // r):
        chunk = slice(c * r, (c + 1) * r)
        basis, y = factor_through_rank(pmat[:, chunk])
        d = a2[:, chunk][:, basis]  # free: entries of A'
        assert np.array_equal(d @ y, a2[:, chunk])  # A'_c = D_c · Y_c (holds because A = 0)
        z = y @ b2[chunk]  # Y_c has entries in {0, +-1}: additions only
        rho = len(basis)
        for (ti, tj), msg in msgs.items():
            rows, cols = slice(ti * H, (ti + 1) * H), slice(tj * W, (tj + 1) * W)
            sums[rows, cols] += d[rows] @ z[:, cols]
            macs += H * rho * W
            x = np.bitwise_xor.reduce((sums[rows, cols] & 0xFFFFFFFF).reshape(-1))
            _fold(msg, int(x), c)
    tickets = {t: ticket_hash(jk, t[0], t[1], np.array(msg, dtype="<u4").tobytes()) for t, msg in msgs.items()}
    return tickets, macs


def _job(r: int, m: int = 64, n: int = 64):
    k = 16 * r
    seeds = derive_seeds(b"attack template %d" % r, JobCommitment(b"\x0a" * 32, b"\x0b" * 32, m, k, n))
    e_l = left_factor_rows(seeds.seed_a, range(m), r).astype(np.int64)
    f_r = right_factor_cols(seeds.seed_b, range(n), r).T.astype(np.int64)
    rng = np.random.default_rng(r)
    b = rng.integers(-64, 65, (k, n))
    return seeds, e_l, f_r, b, m, k, n


@pytest.mark.parametrize("r", [32, 64])
def test_v1_maps_let_a_zero_operand_mine_about_20_percent_cheaper(r):
    seeds, e_l, f_r, b, m, k, n = _job(r)
    p1, q1 = v1_map_matrix(seeds.seed_a, k, r), v1_map_matrix(seeds.seed_b, k, r).T
    a2 = e_l @ p1  # A = 0
    b2 = b + q1 @ f_r
    honest = honest_tickets(seeds.job_key, a2, b2, r)
    tickets, macs = attack_tickets(seeds.job_key, a2, b2, p1, r)
    assert tickets == honest  # bit-identical tickets
    ratio = macs / (len(honest) * H * W * k)
    assert 0.7 < ratio < 0.9, ratio  # here 0.81 (r = 32) and 0.83 (r = 64)


@pytest.mark.parametrize("r", [32, 64])
def test_v2_maps_leave_the_attack_nothing(r):
    seeds, e_l, f_r, b, m, k, n = _job(r)
    pmat, qmat = v2_map_matrix(seeds.seed_a, k, r), v2_map_matrix(seeds.seed_b, k, r).T
    for c in range(k // r):  # every chunk's map is a permutation matrix: rank r
        block = pmat[:, c * r : (c + 1) * r]
        assert np.array_equal(block.sum(0), np.ones(r)) and np.array_equal(block.sum(1), np.ones(r))
        assert rank_mod_prime(block) == r and rank_mod_prime(qmat[c * r : (c + 1) * r]) == r
    a2 = e_l @ pmat  # A = 0
    b2 = b + qmat @ f_r
    honest = honest_tickets(seeds.job_key, a2, b2, r)
    tickets, macs = attack_tickets(seeds.job_key, a2, b2, pmat, r)
    assert tickets == honest
    assert macs == len(honest) * H * W * k  # the attack pays the honest h·w·k per tile


@pytest.mark.parametrize("r", [32, 64])
def test_v2_noisy_operands_have_full_rank_for_zero_and_low_rank_operands(r):
    """Lower bound for every factorisation A'_c = D·Y (B'_c = Y·D): inner width >= rank = r in every chunk, so a
    tile costs >= h·w·k multiply-adds (>= 0.98 of honest, as the issue asks) whatever the operands are."""
    seeds, e_l, f_r, _, m, k, n = _job(r)
    pmat, qmat = v2_map_matrix(seeds.seed_a, k, r), v2_map_matrix(seeds.seed_b, k, r).T
    rng = np.random.default_rng(7)
    zero_a, zero_b = np.zeros((m, k), dtype=np.int64), np.zeros((k, n), dtype=np.int64)
    rank1_a = np.outer(rng.integers(-8, 9, m), rng.integers(-8, 9, k))
    rank1_b = np.outer(rng.integers(-8, 9, k), rng.integers(-8, 9, n))
    rank2_a = rank1_a // 2 + np.outer(rng.integers(-5, 6, m), rng.integers(-5, 6, k))
    for a in (zero_a, rank1_a, rank2_a):
        a2 = a + e_l @ pmat
        assert np.abs(a2).max() <= 96
        ranks = [rank_mod_prime(a2[:, c * r : (c + 1) * r]) for c in range(k // r)]
        assert ranks == [r] * (k // r)
        assert sum(H * W * x for x in ranks) / (H * W * k) >= 0.98
    for b in (zero_b, rank1_b):
        b2 = b + qmat @ f_r
        ranks = [rank_mod_prime(b2[c * r : (c + 1) * r].T) for c in range(k // r)]
        assert ranks == [r] * (k // r)


def test_v1_reference_really_is_rank_deficient():
    """The v1 reference above is the map the audit measured: a chunk's rank is r minus its graph's components."""
    seeds, *_ = _job(32)
    p1 = v1_map_matrix(seeds.seed_a, 32 * 16, 32)
    for c in range(16):
        block = p1[:, c * 32 : (c + 1) * 32]
        parent = list(range(32))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for l in range(32):
            p, q = np.nonzero(block[:, l] == 1)[0][0], np.nonzero(block[:, l] == -1)[0][0]
            parent[find(p)] = find(q)
        components = len({find(x) for x in range(32)})
        assert rank_mod_prime(block) == 32 - components == len(factor_through_rank(block)[0])
