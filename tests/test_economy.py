"""The compute-token economy through the real state transition (docs/economy.md): issuers, grants,
usage, period ends, vintages, the market, buyback and the one-hop rule. Conservation of tokens and of
each issuer's credits is asserted after every block (EconSim.end_block)."""

from __future__ import annotations

from types import SimpleNamespace


from chain import economy as E
from chain.config import load_config
from chain.econsim import EconSim, with_issuer
from chain.econtx import (
    ASK,
    BID,
    GTC,
    IOC,
    KIND_CREDIT_ISSUE,
    KIND_CREDIT_SPEND,
    KIND_GRANT,
    KIND_ISSUER_DEPOSIT,
    KIND_ISSUER_REGISTER,
    KIND_ISSUER_WITHDRAW,
    KIND_ORDER_CANCEL,
    KIND_ORDER_PLACE,
    SRC_FREE,
    SRC_SPEND_ONLY,
    CreditIssue,
    CreditSpend,
    Grant,
    IssuerDeposit,
    IssuerRegister,
    IssuerWithdraw,
    OrderCancel,
    OrderPlace,
)
from chain.keys import PrivateKey
from chain.jobs import required_bond
from chain.market import MAX_FILLS, value
from chain.tx import (
    KIND_JOB_CLAIM,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    KIND_TRANSFER,
    JobClaim,
    JobResult,
    JobSubmit,
    Transfer,
)

BASE = load_config("regtest")
ISS = PrivateKey.from_phrase(b"econ issuer")
ISS2 = PrivateKey.from_phrase(b"econ issuer 2")
SUB = PrivateKey.from_phrase(b"econ subscriber")
BUYER = PrivateKey.from_phrase(b"econ buyer")
ALT = PrivateKey.from_phrase(b"econ second account")
MINER = PrivateKey.from_phrase(b"econ miner")
DEPOSIT = 10**10
FUND = 10**9
SHAPE = (16, 512, 16)  # 131,072 MACs: price 14 base units at the regtest rate
ALLOC = 2_000_000  # MACs per period: reserves 200 base units


def cfg_with(mode="mint", fee_bps=30, buyback_bps=9000, vintage_periods=2):
    return with_issuer(BASE, ISS.address, DEPOSIT, mode, vintage_periods, fee_bps, buyback_bps)


def new_sim(mode="mint", **kw) -> EconSim:
    s = EconSim(cfg_with(mode, **kw), miner=MINER.address)
    from chain.keys import faucet_key

    fk = faucet_key()
    for k in (SUB, BUYER, ALT, ISS2, ISS):
        assert s.submit(fk, KIND_TRANSFER, Transfer(k.address, FUND)) is None
    s.end_block()
    return s


def job(m=16, k=512, n=16):
    return SimpleNamespace(h_a=b"a" * 32, h_b=b"b" * 32, m=m, k=k, n=n)


def submit_job(s: EconSim, key, max_fee: int, deadline: int | None = None):
    j = job(*SHAPE)
    p = JobSubmit(j.h_a, j.h_b, j.m, j.k, j.n, max_fee, deadline or s.next_height + 5, j.h_a, j.h_b)
    tx = s.make(key, KIND_JOB_SUBMIT, p)
    return tx, s.add(tx)


def issuer(s: EconSim, who=ISS) -> E.Issuer:
    return E.Issuer.decode(s.st.get_econ(E.k_issuer(who.address)))


def hold(s: EconSim, who) -> dict:
    return E.holdings(s.st, s.st.get(who.address).balance, who.address)


def credits(s: EconSim, who, iss=ISS) -> int:
    return E.credits_of(s.st, iss.address, who.address)


def grant(s: EconSim, sub=SUB, alloc=ALLOC, period=10, periods=1, trial=0):
    tx = s.make(ISS, KIND_GRANT, Grant(sub.address, alloc, period, periods, trial))
    assert s.add(tx) is None
    s.end_block()
    return tx.txid


def order(s, key, side, price, qty, tif=GTC, expires=0, source=SRC_FREE, iss=ISS):
    tx = s.make(key, KIND_ORDER_PLACE, OrderPlace(iss.address, side, price, qty, tif, expires, source))
    return tx.txid, s.add(tx)


# --- issuers and grants --------------------------------------------------------------------------------
def test_genesis_issuer_and_registration():
    s = new_sim()
    assert issuer(s).deposit == DEPOSIT and s.st.supply.minted == BASE.genesis_alloc[0][1] + DEPOSIT + BASE.subsidy(1)
    assert s.submit(ISS, KIND_ISSUER_REGISTER, IssuerRegister(0, 1, 10, 9000)) == "bad-issuer-exists"
    assert s.submit(ISS2, KIND_ISSUER_REGISTER, IssuerRegister(3, 1, 10, 9000)) == "bad-issuer-mode"
    assert s.submit(ISS2, KIND_ISSUER_REGISTER, IssuerRegister(1, 1, 10_001, 9000)) == "bad-issuer-fee"
    assert s.submit(ISS2, KIND_ISSUER_DEPOSIT, IssuerDeposit(5)) == "bad-issuer-unknown"
    assert s.submit(ISS2, KIND_ISSUER_REGISTER, IssuerRegister(1, 1, 10, 9000)) is None
    assert s.submit(ISS2, KIND_ISSUER_DEPOSIT, IssuerDeposit(FUND + 1)) == "bad-txn-balance"
    assert s.submit(ISS2, KIND_ISSUER_DEPOSIT, IssuerDeposit(5000)) is None
    assert s.submit(ISS2, KIND_ISSUER_WITHDRAW, IssuerWithdraw(5001)) == "bad-issuer-deposit"
    assert s.submit(ISS2, KIND_ISSUER_WITHDRAW, IssuerWithdraw(1000)) is None
    s.end_block()
    assert issuer(s, ISS2).deposit == 4000 and s.st.get(ISS2.address).balance == FUND - 4000


def test_grant_reserves_and_refuses_beyond_deposit():
    s = new_sim()
    need = E.grant_reserve(s.cfg, ALLOC)
    assert need == 200
    gid = grant(s)
    assert issuer(s).deposit == DEPOSIT - need
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert g.remaining == need and g.end == s.height + 10 and g.status == E.ACTIVE
    before = dict(s.st.econ)
    huge = DEPOSIT * s.cfg.jobs.rate_den  # worth the whole deposit + 1 base unit
    assert s.submit(ISS, KIND_GRANT, Grant(SUB.address, huge, 10, 1, 0)) == "bad-grant-deposit"
    assert s.submit(ISS, KIND_GRANT, Grant(ISS.address, ALLOC, 10, 1, 0)) == "bad-grant-self"
    assert s.submit(SUB, KIND_GRANT, Grant(BUYER.address, ALLOC, 10, 1, 0)) == "bad-issuer-unknown"
    assert s.submit(ISS, KIND_GRANT, Grant(SUB.address, ALLOC, 0, 1, 0)) == "bad-grant-period"
    s.end_block()
    assert s.st.econ == before  # refused: nothing moved


# --- usage: allocation first, then tokens ----------------------------------------------------------------
def test_jobs_draw_allocation_first_then_tokens_and_refund_goes_back():
    s = new_sim()
    gid = grant(s)
    free0 = s.st.get(SUB.address).balance
    tx, err = submit_job(s, SUB, 150)
    assert err is None
    s.end_block()
    assert hold(s, SUB)["allocation_tokens"] == 50 and s.st.get(SUB.address).balance == free0
    tx2, err = submit_job(s, SUB, 80, deadline=s.next_height + 2)
    assert err is None
    s.end_block()
    assert hold(s, SUB)["allocation_tokens"] == 0 and s.st.get(SUB.address).balance == free0 - 30
    # job 2 expires unclaimed: its refund restores the allocation (50) first, then 30 free tokens
    s.run(2)
    assert s.st.get_job(tx2.txid).status_name == "refunded"
    assert hold(s, SUB)["allocation_tokens"] == 50 and s.st.get(SUB.address).balance == free0
    assert s.st.get_econ(E.k_fund(tx2.txid)) is None
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert g.used == 150


# --- period end per mode ---------------------------------------------------------------------------------
def _after_period(mode, trial=0, periods=1, use=60):
    s = new_sim(mode)
    gid = grant(s, period=6, periods=periods, trial=trial)
    start_dep = issuer(s).deposit
    _, err = submit_job(s, SUB, use, deadline=s.next_height + 30)
    assert err is None
    s.end_block()
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    while s.height < g.end - 1:
        s.end_block()
    return s, gid, start_dep


def test_period_end_mint_makes_a_vintage_that_expires_to_the_issuer():
    s, gid, dep = _after_period("mint")
    h = hold(s, SUB)
    assert h["vintage_total"] == 140 and h["vintages"][0]["issuer"] == ISS.address.hex()
    expiry = h["vintages"][0]["expiry"]
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert expiry == g.end + 2 * 6 and g.status == E.CLOSED and g.minted == 140
    assert issuer(s).deposit == dep
    while s.height < expiry - 1:
        s.end_block()
    assert hold(s, SUB)["vintage_total"] == 0 and issuer(s).deposit == dep + 140


def test_period_end_breakage_and_trial_return_to_issuer():
    for mode, trial in (("breakage", 0), ("mint", 1)):
        s, gid, dep = _after_period(mode, trial=trial)
        assert hold(s, SUB)["vintage_total"] == 0
        assert issuer(s).deposit == dep + 140  # the unused allocation returns; a trial never mints


def test_period_end_rollover_carries_into_next_period():
    s, gid, dep = _after_period("rollover", periods=2)
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert g.status == E.ACTIVE and g.remaining == 200 + 140 and g.periods_left == 0
    assert issuer(s).deposit == dep - 200
    while s.height < g.end - 1:
        s.end_block()
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert g.status == E.CLOSED and issuer(s).deposit == dep - 200 + 340


def test_renewal_lapses_when_deposit_short():
    s = new_sim("mint")
    assert s.submit(ISS, KIND_ISSUER_WITHDRAW, IssuerWithdraw(DEPOSIT - 300)) is None
    s.end_block()
    gid = grant(s, period=4, periods=3)  # reserves 200, leaves 100 < 200 for the renewal
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    while s.height < g.end - 1:
        s.end_block()
    g = E.GrantRec.decode(s.st.get_econ(E.k_grant(gid)))
    assert g.status == E.CLOSED and g.periods_left == 2 and hold(s, SUB)["vintage_total"] == 200
    assert "lapsed" in [e for _, e in s.events]


def test_schedule_work_per_block_is_bounded():
    s = new_sim("breakage")
    subs = [PrivateKey.from_phrase(b"many %d" % i) for i in range(E.DUE_PER_BLOCK + 10)]
    for k in subs:
        assert s.submit(ISS, KIND_GRANT, Grant(k.address, ALLOC, 3, 1, 0)) is None
    s.end_block()
    s.end_block()
    s.end_block()  # all grants end here (usable below height + 3)
    assert len([e for e in s.events if e[1] == "closed"]) == E.DUE_PER_BLOCK
    s.end_block()
    assert len([e for e in s.events if e[1] == "closed"]) == 10
    assert issuer(s).deposit == DEPOSIT


# --- the market -----------------------------------------------------------------------------------------
def _credits(s, who, n):
    assert s.submit(ISS, KIND_CREDIT_ISSUE, CreditIssue(who.address, n)) is None


def test_price_time_priority_partial_fills_and_taker_fee_rounded_up():
    s = new_sim(fee_bps=30, buyback_bps=0)
    _credits(s, BUYER, 10**6)
    a1, e1 = order(s, SUB, ASK, 9500, 1000)  # first at 0.95
    a2, e2 = order(s, ALT, ASK, 9500, 1000)  # same price, later
    a3, e3 = order(s, ISS2, ASK, 9000, 300)  # better price
    assert (e1, e2, e3) == (None, None, None)
    s.end_block()
    free_sub = s.st.get(SUB.address).balance
    b, e = order(s, BUYER, BID, 9600, 1500, tif=IOC)
    assert e is None
    s.end_block()
    # fills: 300 @ 0.90 from ISS2, 1000 @ 0.95 from SUB, 200 @ 0.95 from ALT
    assert hold(s, BUYER)["spend_only"] == 1500
    pays = [value(300, 9000), value(1000, 9500), value(1000, 9500) - value(800, 9500)]
    fees = [-(-p * 30 // 10_000) for p in pays]
    assert credits(s, ISS2) == pays[0] and credits(s, SUB) == pays[1] and credits(s, ALT) == pays[2]
    assert credits(s, BUYER) == 10**6 - sum(pays) - sum(fees)
    assert credits(s, ISS) == sum(fees) and all(f >= 1 for f in fees)
    o = s.st.get_econ(b"O" + a2)
    from chain.market import Order

    assert Order.decode(o).remaining == 800 and s.st.get_econ(b"O" + a1) is None
    assert s.st.get(SUB.address).balance == free_sub  # the sold tokens were locked at placement


def test_gtc_rests_cancel_unlocks_once_and_expiry():
    s = new_sim(buyback_bps=0)
    _credits(s, BUYER, 10**6)
    s.end_block()
    b, e = order(s, BUYER, BID, 8000, 5000)
    assert e is None
    s.end_block()
    assert credits(s, BUYER) == 10**6 - value(5000, 8000)
    assert s.submit(SUB, KIND_ORDER_CANCEL, OrderCancel(b)) == "bad-order-owner"
    assert s.submit(BUYER, KIND_ORDER_CANCEL, OrderCancel(b)) is None
    assert s.submit(BUYER, KIND_ORDER_CANCEL, OrderCancel(b)) == "bad-order-unknown"
    s.end_block()
    assert credits(s, BUYER) == 10**6
    # expiry: usable below `expires`, unlocked at the end of block expires - 1
    a, e = order(s, SUB, ASK, 9000, 700, expires=s.next_height + 3)
    assert e is None
    s.end_block()
    free = s.st.get(SUB.address).balance
    s.end_block()
    assert s.st.get_econ(b"O" + a) is not None
    s.end_block()
    assert s.st.get_econ(b"O" + a) is None and s.st.get(SUB.address).balance == free + 700
    assert order(s, SUB, ASK, 9000, 700, expires=s.height)[1] == "bad-order-expired"


def test_bad_orders_move_nothing():
    s = new_sim()
    _credits(s, BUYER, 100)
    s.end_block()
    snap = (dict(s.st.econ), dict(s.st.accounts))
    assert order(s, BUYER, BID, 0, 10)[1] == "bad-order-price"
    assert order(s, BUYER, BID, 10_000, 101)[1] == "bad-order-funds"
    assert order(s, SUB, ASK, 9000, FUND + 1)[1] == "bad-order-funds"
    assert order(s, SUB, ASK, 9000, 5, source=SRC_SPEND_ONLY)[1] == "bad-order-one-hop"
    assert order(s, SUB, ASK, 9000, 5, iss=ISS2)[1] == "bad-order-issuer"
    assert order(s, SUB, ASK, 9000, 5, tif=IOC, expires=s.next_height + 4)[1] == "bad-order-expiry"
    assert order(s, BUYER, BID, 9000, 5, source=7)[1] == "bad-order-source"
    assert s.submit(BUYER, KIND_CREDIT_SPEND, CreditSpend(ISS.address, 101)) == "bad-credit-balance"
    s.txs and s.end_block()
    s.ov = None
    assert (dict(s.st.econ), dict(s.st.accounts)) == snap


def test_self_trade_cancels_the_resting_order():
    s = new_sim(buyback_bps=0)
    _credits(s, SUB, 10**6)
    a, _ = order(s, SUB, ASK, 9000, 1000)
    s.end_block()
    free = s.st.get(SUB.address).balance
    b, e = order(s, SUB, BID, 9500, 1000, tif=IOC)
    assert e is None
    s.end_block()
    assert s.st.get_econ(b"O" + a) is None  # the maker was cancelled, not filled
    assert hold(s, SUB)["spend_only"] == 0 and s.st.get(SUB.address).balance == free + 1000
    assert credits(s, SUB) == 10**6 and credits(s, ISS) == 0  # no trade, no fee


def test_fill_bound_per_transaction():
    s = new_sim(buyback_bps=0)
    _credits(s, BUYER, 10**7)
    sellers = [PrivateKey.from_phrase(b"seller %d" % i) for i in range(MAX_FILLS + 5)]
    from chain.keys import faucet_key

    for k in sellers:
        assert s.submit(faucet_key(), KIND_TRANSFER, Transfer(k.address, 1000)) is None
    s.end_block()
    for k in sellers:
        assert order(s, k, ASK, 9000, 10, source=SRC_FREE)[1] is None
    s.end_block()
    b, e = order(s, BUYER, BID, 9000, 10 * len(sellers))  # GTC: the remainder does not rest after the bound
    assert e is None
    s.end_block()
    assert hold(s, BUYER)["spend_only"] == 10 * MAX_FILLS
    assert s.st.get_econ(b"O" + b) is None
    assert len(list(s.st.scan_econ(b"B" + ISS.address + bytes([ASK])))) == 5


def test_buyback_standing_bid():
    s2, gid, dep = _after_period("mint")
    h = hold(s2, SUB)
    expiry = h["vintages"][0]["expiry"]
    t, e = order(s2, SUB, ASK, 8500, 100, tif=IOC, source=expiry)
    assert e is None
    s2.end_block()
    pay = value(100, 9000)
    fee = -(-pay * 30 // 10_000)
    assert credits(s2, SUB) == pay - fee and hold(s2, SUB)["vintage_total"] == 40
    assert issuer(s2).deposit == dep + 100
    # a limit above the buyback does not trade with it
    t, e = order(s2, SUB, ASK, 9100, 40, tif=IOC, source=expiry)
    assert e is None
    s2.end_block()
    assert hold(s2, SUB)["vintage_total"] == 40
    # the issuer cannot sell into its own buyback (it is not a taker of itself)
    assert order(s2, ISS, ASK, 5000, 10, tif=IOC)[1] is None
    s2.end_block()
    assert s2.st.get(ISS.address).balance == FUND


def test_vintage_order_expires_with_the_vintage():
    s, gid, dep = _after_period("mint")
    expiry = hold(s, SUB)["vintages"][0]["expiry"]
    o, e = order(s, SUB, ASK, 9900, 100, source=expiry, iss=ISS)
    assert e is None
    s.end_block()
    from chain.market import Order

    assert Order.decode(s.st.get_econ(b"O" + o)).expires == expiry
    while s.height < expiry - 1:
        s.end_block()
    assert s.st.get_econ(b"O" + o) is None and hold(s, SUB)["vintage_total"] == 0
    assert issuer(s).deposit == dep + 140  # nothing stranded in the order


# --- the one-hop rule ---------------------------------------------------------------------------------------
def _bought(s):
    _credits(s, BUYER, 10**6)
    order(s, SUB, ASK, 9000, 1000)
    s.end_block()
    order(s, BUYER, BID, 9000, 1000, tif=IOC)
    s.end_block()
    assert hold(s, BUYER)["spend_only"] == 1000


def test_one_hop_bought_tokens_cannot_move_or_be_resold():
    s = new_sim(buyback_bps=0)
    assert s.submit(BUYER, KIND_TRANSFER, Transfer(ALT.address, FUND)) is None  # no free tokens left
    s.end_block()
    _bought(s)
    assert s.st.get(BUYER.address).balance == 0
    assert s.submit(BUYER, KIND_TRANSFER, Transfer(ALT.address, 1)) == "bad-txn-balance"  # transfer
    assert order(s, BUYER, ASK, 9000, 1000, source=SRC_SPEND_ONLY)[1] == "bad-order-one-hop"  # re-listing
    assert order(s, BUYER, ASK, 9000, 1000, source=SRC_FREE)[1] == "bad-order-funds"
    assert s.submit(BUYER, KIND_ISSUER_REGISTER, IssuerRegister(0, 1, 0, 0)) is None
    assert s.submit(BUYER, KIND_ISSUER_DEPOSIT, IssuerDeposit(1)) == "bad-txn-balance"  # via a deposit
    s.end_block()
    assert hold(s, ALT)["spend_only"] == 0 and hold(s, BUYER)["spend_only"] == 1000  # second account


def test_one_hop_job_refund_returns_spend_only():
    s = new_sim(buyback_bps=0)
    _bought(s)
    free = s.st.get(BUYER.address).balance
    tx, err = submit_job(s, BUYER, 500, deadline=s.next_height + 2)
    assert err is None
    s.run(3)
    assert s.st.get_job(tx.txid).status_name == "refunded"
    assert hold(s, BUYER)["spend_only"] == 1000 and s.st.get(BUYER.address).balance == free


def test_one_hop_self_mined_job_without_work_stays_spend_only():
    """The self-mining path: pay a job with bought tokens and take it as its miner, posting a result it never
    computed. Without a work certificate (tests/test_workcert.py: a share of the job's work) the release
    pays the bought part as spend-only tokens: nothing became transferable, and the claim locked a bond
    through the windows."""
    s = new_sim(buyback_bps=0)
    _bought(s)
    tx, err = submit_job(s, BUYER, 1000, deadline=s.next_height + 20)
    assert err is None
    s.end_block()
    jc = s.cfg.jobs
    bond = required_bond(s.cfg, 1000)
    assert s.submit(ALT, KIND_JOB_CLAIM, JobClaim(tx.txid, bond - 1)) == "bad-job-bond"
    assert s.submit(ALT, KIND_JOB_CLAIM, JobClaim(tx.txid, bond)) is None
    s.end_block()
    assert s.st.get(ALT.address).balance == FUND - bond
    assert s.submit(ALT, KIND_JOB_RESULT, JobResult(tx.txid, b"c" * 32, b"c" * 32)) is None
    s.end_block()
    s.run(jc.challenge_window)
    assert s.st.get_job(tx.txid).status_name == "released"
    assert s.st.get(ALT.address).balance == FUND and hold(s, ALT)["spend_only"] == 1000
    assert hold(s, BUYER)["spend_only"] == 0
    assert s.submit(ALT, KIND_TRANSFER, Transfer(BUYER.address, FUND + 1)) == "bad-txn-balance"


def test_credits_spend_burns():
    s = new_sim()
    _credits(s, SUB, 500)
    assert s.submit(SUB, KIND_CREDIT_SPEND, CreditSpend(ISS.address, 200)) is None
    s.end_block()
    assert credits(s, SUB) == 300
    assert s.st.get_econ(E.k_csupply(ISS.address)) is not None


def test_vintage_expiring_under_a_job_escrow_goes_to_the_issuer():
    """A job paid from a vintage that expires before the job is refunded: the refund finds the vintage gone
    and returns to the issuer's deposit (nothing stranded in the escrow or a dead vintage record)."""
    s, gid, dep = _after_period("mint")
    h = hold(s, SUB)
    expiry = h["vintages"][0]["expiry"]
    free = s.st.get(SUB.address).balance
    while s.height < expiry - 4:
        s.end_block()
    tx, err = submit_job(s, SUB, 100, deadline=expiry + 3)  # 100 of the 140 vintage tokens in escrow
    assert err is None
    s.end_block()
    assert hold(s, SUB)["vintage_total"] == 40 and s.st.get_econ(E.k_fund(tx.txid)) is not None
    while s.height < expiry + 3:
        s.end_block()
    assert s.st.get_job(tx.txid).status_name == "refunded"
    assert hold(s, SUB)["vintage_total"] == 0 and s.st.get(SUB.address).balance == free
    assert issuer(s).deposit == dep + 140 and s.st.get_econ(E.k_fund(tx.txid)) is None
    assert not list(s.st.scan_econ(b"V" + SUB.address))
