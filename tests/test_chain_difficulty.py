"""The difficulty anchor (docs/chain.md "Difficulty"): ASERT is anchored at a genesis dated at the network's
launch, so no choice of timestamps makes a block easier than the schedule allows for the time that really
passed since launch (plus the future-drift allowance). Includes the back-dated-block-1 attack of issue 15."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.chainstate import ChainState
from chain.config import launch, load_config, parse_config
from chain.difficulty import asert_target, median_time_past
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder
from chain.validation import ParentInfo, expected_target

REGTEST = load_config("regtest")
# a network template (dated at launch) with regtest's tiny proofs and the devnet's 600 s half-life
TEMPLATE = parse_config(
    REGTEST.source.replace(f"genesis_timestamp = {REGTEST.genesis_timestamp}", "genesis_timestamp = 0").replace(
        "asert_half_life = 3600", "asert_half_life = 600"
    )
)
CFG = launch(TEMPLATE, REGTEST.genesis_timestamp)
ATTACKER = PrivateKey.from_phrase(b"attacker").address


def schedule_bound(cfg, real_now: int, parent_height: int) -> int:
    """The easiest target the block after `parent_height` may have when mined at real time `real_now`: the
    schedule's target for all the time since launch, plus the future-drift allowance."""
    return asert_target(
        cfg.initial_target,
        real_now + cfg.max_future_drift - cfg.genesis_timestamp,
        parent_height,
        cfg.target_block_time,
        cfg.asert_half_life,
        cfg.pow_limit,
    )


def mine_attack(cfg, first_block_at: int, block1_ts: int, n: int) -> tuple[ChainBuilder, list, list[int]]:
    """A fast miner: block 1 dated `block1_ts` though mined at real time `first_block_at`, then one block per
    real second, each dated as late as the node accepts (now + max_future_drift)."""
    b = ChainBuilder(cfg)
    parent, blocks, real = b.genesis.hash, [], []
    for i in range(n):
        now = first_block_at + i
        ts = block1_ts if i == 0 else now + cfg.max_future_drift
        blk = b.mine(parent, ATTACKER, timestamp=ts)
        blocks.append(blk)
        real.append(now)
        parent = blk.hash
    return b, blocks, real


def test_backdated_block_one_does_not_collapse_difficulty(tmp_path):
    """Issue 15 hole 1, mined. The attack dated block 1 one second after genesis; with block 1 as the anchor
    (the removed rule) the months between the devnet's fixed genesis and the real first block counted as
    lag, and from block 3 on the target sat at the pow limit. Now a network template is dated when its
    first datadir is created and ASERT is anchored there: block 1 "at genesis + 1 s" is one second after
    the launch, back-dating it only makes block 2 harder, and every block the node accepts (here each dated
    as late as the future-drift rule allows) stays within the schedule's bound for the real time since
    launch."""
    launched = 1_800_000_000
    clock = [launched]
    with ChainState.open(tmp_path, TEMPLATE, clock=lambda: clock[0]) as cs:
        cfg = cs.cfg
        assert cfg.genesis_timestamp == launched
        _, blocks, real = mine_attack(cfg, launched + 30, launched + 1, 40)
        for blk, now in zip(blocks, real):
            clock[0] = now
            assert cs.submit_block(blk).status == "active"  # all valid: the attack is in the timestamps only
    targets = [x.header.target for x in blocks]
    assert targets[0] == cfg.initial_target
    for h, (t, now) in enumerate(zip(targets, real)):
        assert t <= schedule_bound(cfg, now, h)  # h = the parent's height
    # (30 s of real lag + 60 s of drift) / 600 s half-life: never more than 2^0.15 easier than the start
    assert max(targets) <= cfg.initial_target * 1110 // 1000 < cfg.pow_limit
    # the same miner dating block 1 honestly: block 2 is easier, and from block 3 on (same timestamps) the
    # targets are identical, so block 1's timestamp cannot move the schedule (under the block-1 anchor every
    # attack target from block 3 on was easier than the honest one)
    _, honest, _ = mine_attack(cfg, launched + 30, launched + 30, 40)
    assert targets[1] < honest[1].header.target
    assert targets[2:] == [x.header.target for x in honest[2:]]


def test_launch_dates_a_network_template(tmp_path):
    """`genesis_timestamp = 0` is a template: a new datadir dates its genesis with the node's clock, the
    stored config carries the date, and reopening with the template finds the same network."""
    dev = load_config("devnet")
    assert not dev.dated and REGTEST.dated
    with ChainState.open(tmp_path / "a", dev, clock=lambda: 1_800_000_000) as cs:
        assert cs.cfg.genesis_timestamp == 1_800_000_000 == cs.genesis.header.timestamp
        assert "genesis_timestamp = 1800000000" in cs.cfg.source
        g = cs.genesis.hash
    with ChainState.open(tmp_path / "a", dev, clock=lambda: 1_900_000_000) as cs:  # later: same genesis
        assert cs.genesis.hash == g and cs.cfg.genesis_timestamp == 1_800_000_000
    with ChainState.open(tmp_path / "a", None) as cs:
        assert cs.genesis.hash == g
    with ChainState.open(tmp_path / "b", launch(dev, 1_800_000_000)) as cs:  # a node joining with the file
        assert cs.genesis.hash == g
    with ChainState.open(tmp_path / "c", dev, clock=lambda: 1_800_000_001) as cs:  # another launch: another chain
        assert cs.genesis.hash != g
    import pytest

    with pytest.raises(ValueError, match="already dated"):
        launch(REGTEST, 5)


def test_devnet_network_file_is_shared(tmp_path):
    from node.cli.devnet import network_file

    assert network_file(tmp_path, "regtest", 100) == "regtest"  # dated networks are used as named
    p = network_file(tmp_path, "devnet", 1_800_000_000)
    assert load_config(p).genesis_timestamp == 1_800_000_000
    assert network_file(tmp_path, "devnet", 1_900_000_000) == p  # a restart keeps the launch date
    assert load_config(p).genesis_timestamp == 1_800_000_000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(-(10**6), 10**6)), min_size=1, max_size=60))
def test_no_accepted_timestamps_beat_the_schedule(steps):
    """Any timestamps the context rules accept (above the median of the last 11, at most max_future_drift
    ahead of a node's clock when the block arrives) give targets within the schedule's bound for the real
    time since launch; real time advances by the first number each block, the second is the miner's wish."""
    cfg = CFG
    stamps = [cfg.genesis_timestamp]
    now = cfg.genesis_timestamp
    for advance, wish in steps:
        now += advance
        parent = ParentInfo(b"", len(stamps) - 1, stamps[-1], tuple(stamps[-cfg.mtp_window :]))
        target = expected_target(cfg, parent)
        assert target <= schedule_bound(cfg, now, parent.height)
        lo = median_time_past(list(parent.recent_timestamps)) + 1
        now = max(now, lo - cfg.max_future_drift)  # no acceptable timestamp before then: the block waits
        stamps.append(min(max(now + wish, lo), now + cfg.max_future_drift))


def test_devnet_launch_calibrates_the_initial_difficulty(tmp_path):
    """A new devnet starts at the work this machine mines in one block time (so its first blocks are not
    many times faster than the config's block time while ASERT catches up); a restart keeps what was written."""
    from node.cli.devnet import calibrated_block_work, network_file

    devnet = load_config("devnet")
    work = calibrated_block_work(devnet, "cpu", seconds=0.2)
    assert isinstance(work, int) and work >= devnet.min_block_work
    p = network_file(tmp_path, "devnet", 1_800_000_000, work)
    cfg = load_config(p)
    assert cfg.initial_block_work == work and cfg.genesis_timestamp == 1_800_000_000
    assert cfg.initial_target == min(cfg.pow_limit, (1 << 256) // work)
    assert network_file(tmp_path, "devnet", 1_900_000_000, work * 2) == p  # launched once
    assert load_config(p).initial_block_work == work
