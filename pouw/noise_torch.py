"""The miner's side of the noise: all noise of one job as torch tensors, and A' = A + E, B' = B + F.

The protocol's definitions (seeds, maps, factors) are in `pouw.noise` (numpy only); everything here is built from
them and equals them entry for entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from typing import Any

import numpy as np
import torch

from kernels.base import upload
from pouw.noise import NONCE_E, NONCE_F, Seeds, left_factor_rows, noise_map, right_factor_cols


def map_matrix(mp: np.ndarray | torch.Tensor, r: int) -> torch.Tensor:
    """The map as a dense r x k int8 matrix, entry [j][l] = [map(l) == j] (one 1 per column; per chunk a
    permutation matrix), built where the map lives (numpy array: the CPU; index tensor: its device)."""
    mp = torch.as_tensor(mp)
    k = mp.shape[0]
    mat = torch.zeros((r, k), dtype=torch.int8, device=mp.device)
    # scatter_ with a scalar: unlike `mat[mp, arange] = 1` no value tensor is copied host -> device (a wait there)
    return mat.scatter_(0, mp.to(torch.int64).view(1, k), 1)


@dataclass
class Noise:
    """All noise of one job, as factors and maps: E = E_L · P (m x k), F = Q · F_R (k x n).

    The dense map matrices P and Q are built on first use, on the factors' device: a backend with its own noise
    and recovery kernels (native CPU) never needs them."""

    e_l: torch.Tensor  # m x r int8, entries in [-32, 31]
    f_r: torch.Tensor  # r x n int8, entries in [-32, 31]
    maps: tuple[
        Any, Any
    ]  # (map_A, map_B) int64 indices in [0, r): numpy arrays, or tensors on the device (full_noise_on)

    @cached_property
    def p_mat(self) -> torch.Tensor:
        """r x k int8: P, 1 at (map_A(l), l)."""
        return map_matrix(self.maps[0], self.e_l.shape[1]).to(self.e_l.device)

    @cached_property
    def q_mat(self) -> torch.Tensor:
        """k x r int8: Q, 1 at (l, map_B(l)); a column-major view (the B-operand layout _int_mm and cuBLASLt run
        fastest on)."""
        return map_matrix(self.maps[1], self.e_l.shape[1]).to(self.e_l.device).t()

    def to(self, device: torch.device) -> "Noise":
        return Noise(self.e_l.to(device), self.f_r.to(device), self.maps)


# (key, nonce, first_row, rows, r) -> rows x r int8 factor rows on a device, equal to `pouw.noise._factor` (e.g.
# the Triton ChaCha20 kernel of kernels.triton_chacha, which a backend offers as `noise_factor`).
FactorFn = Callable[[bytes, bytes, int, int, int], torch.Tensor]


def full_noise(seeds: Seeds, m: int, k: int, n: int, r: int) -> Noise:
    maps = (noise_map(seeds.seed_a, k, r), noise_map(seeds.seed_b, k, r))
    e_l = torch.from_numpy(left_factor_rows(seeds.seed_a, range(m), r))
    f_r = torch.from_numpy(right_factor_cols(seeds.seed_b, range(n), r).T.copy())
    return Noise(e_l, f_r, maps)


def full_noise_on(seeds: Seeds, m: int, k: int, n: int, r: int, device: torch.device, factor: FactorFn) -> Noise:
    """`full_noise` built on `device`: the factors from `factor`, the maps uploaded once (one 2 x k copy; the map
    matrices, when used, are scattered there). `maps` holds the index tensors on the device. Same values as
    full_noise."""
    idx = upload(torch.from_numpy(np.stack([noise_map(seeds.seed_a, k, r), noise_map(seeds.seed_b, k, r)])), device)
    e_l = factor(seeds.seed_a, NONCE_E, 0, m, r)
    f_r = factor(seeds.seed_b, NONCE_F, 0, n, r).t().contiguous()
    return Noise(e_l, f_r, (idx[0], idx[1]))


MatMul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noisy_operands(a: torch.Tensor, b: torch.Tensor, nz: Noise, mm: MatMul) -> tuple[torch.Tensor, torch.Tensor]:
    """A' = A + E_L·P and B' = B + Q·F_R (int8; entries stay within [-96, 95]), on the operands' device.

    The map products run as exact int8 GEMMs of inner width r (`mm`: int8 x int8 -> int32 on the same device):
    on a CPU an order of magnitude faster than gathering columns; exact since |E|, |F| <= 32.
    """
    a2 = mm(nz.e_l, nz.p_mat).add_(a).to(torch.int8)
    b2 = mm(nz.q_mat, nz.f_r).add_(b).to(torch.int8)
    return a2, b2
