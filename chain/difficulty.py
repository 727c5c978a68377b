"""Per-block ASERT difficulty (aserti3-2d, integer arithmetic only) and median-time-past.

Difficulty is counted in multiply-adds: ``block_work(target) = 2**256 // target`` is the expected
number of MACs a miner performs per block.

ASERT (absolutely scheduled exponentially rising targets), anchored at genesis (dated at the network's
launch, docs/chain.md): for every block, with ``parent`` its parent::

    exponent = ((parent.time - genesis.time - T * parent.height) * 2**16) / half_life  (truncating, as C++)
    shifts   = exponent >> 16                (floor);  frac = exponent - shifts * 2**16   in [0, 2**16)
    factor   = 2**16 + ((195766423245049*frac + 971821376*frac**2 + 5127*frac**3 + 2**47) >> 48)
    target   = (initial_target * factor) << shifts >> 16      clamped to [1, pow_limit]

Block 1 gets the initial target. No mined block's timestamp is an anchor, so a miner cannot move the
schedule's origin; with the future-drift rule, no timestamps make a block easier than the schedule allows
for the real time since launch plus ``max_future_drift``.
The cubic approximates 2**16 * 2**(frac / 2**16) (Bitcoin Cash, aserti3-2d). Each half-life of
schedule lag doubles (or halves) the target.
"""

from __future__ import annotations

RADIX = 1 << 16


def _div_trunc(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def asert_target(
    anchor_target: int, time_diff: int, height_diff: int, target_spacing: int, half_life: int, pow_limit: int
) -> int:
    """Target of the block after one that is `height_diff` blocks and `time_diff` seconds past the anchor."""
    exponent = _div_trunc((time_diff - target_spacing * height_diff) * RADIX, half_life)
    shifts = exponent >> 16
    frac = exponent - shifts * RADIX
    assert 0 <= frac < RADIX
    factor = ((195766423245049 * frac + 971821376 * frac * frac + 5127 * frac * frac * frac + (1 << 47)) >> 48) + RADIX
    t = anchor_target * factor
    t = t << shifts if shifts >= 0 else t >> -shifts
    t >>= 16
    if t <= 0:
        return 1
    return min(t, pow_limit)


def block_work(target: int) -> int:
    """Expected multiply-adds per block at this target (== pouw.verify.block_work)."""
    return (1 << 256) // target


def median_time_past(timestamps: list[int]) -> int:
    """Median of the given timestamps (the last `mtp_window` blocks, newest last)."""
    s = sorted(timestamps)
    return s[len(s) // 2]
