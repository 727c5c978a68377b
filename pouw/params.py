"""Protocol parameters of the useful-work lottery (per network; see docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

from pouw.errors import JobError

OPERAND_MAX = 64  # client operands live in [-64, 64]
NOISE_MAX = 32  # noise entries live in [-32, 31], so A + E stays in [-96, 95]
MAX_K = 1 << 16  # |C'| <= 96^2 * k < 2^30 and every recovery intermediate fits int32
MAX_DIM = 1 << 16  # m, n upper bound


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class PowParams:
    """rank r = noise rank = chunk (fold) width; tile_h x tile_w = lottery tile; min_k = 16 r."""

    rank: int = 64
    tile_h: int = 16
    tile_w: int = 16

    def __post_init__(self) -> None:
        if not _pow2(self.rank) or not 8 <= self.rank <= 256:
            raise ValueError(f"rank must be a power of two in [8, 256], got {self.rank}")
        for name, t in (("tile_h", self.tile_h), ("tile_w", self.tile_w)):
            if not _pow2(t) or not 1 <= t <= 64:
                raise ValueError(f"{name} must be a power of two in [1, 64], got {t}")

    @property
    def min_k(self) -> int:
        return 16 * self.rank

    def tile_work(self, k: int) -> int:
        """Multiply-adds one tile's ticket stands for: h * w * k."""
        return self.tile_h * self.tile_w * k

    def check_shape(self, m: int, k: int, n: int) -> None:
        """Raise JobError unless (m, k, n) is a minable shape under these parameters."""
        if not (isinstance(m, int) and isinstance(k, int) and isinstance(n, int)):
            raise JobError("shape must be integers")
        if k < self.min_k:
            raise JobError(f"k={k} is below the minimum 16*r={self.min_k}")
        if k > MAX_K:
            raise JobError(f"k={k} exceeds the maximum {MAX_K}")
        if k % self.rank:
            raise JobError(f"k={k} is not a multiple of r={self.rank}")
        if m <= 0 or n <= 0 or m > MAX_DIM or n > MAX_DIM:
            raise JobError(f"m={m}, n={n} must be in [1, {MAX_DIM}]")
        if m % self.tile_h or n % self.tile_w:
            raise JobError(f"shape {m}x{n} is not a multiple of the tile {self.tile_h}x{self.tile_w}")

    def square_size_error(self, size: int) -> str | None:
        """Why an m = k = n = `size` job cannot be mined under these parameters (one line naming the rule and
        the smallest allowed size), or None when it can."""
        if size < self.min_k:
            return f"size {size} is below the minimum k = 16*r = {self.min_k} for rank r={self.rank}"
        try:
            self.check_shape(size, size, size)
        except JobError as e:
            return f"size {size}: {e}"
        return None

    def to_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "tile_h": self.tile_h, "tile_w": self.tile_w}


def largest_rank(k: int) -> int | None:
    """The largest allowed rank r (a power of two in [8, 256]) with 16*r <= k, or None when k < 128."""
    r = 256
    while r >= 8 and 16 * r > k:
        r //= 2
    return r if r >= 8 else None
