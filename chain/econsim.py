"""Drive the real state transition in memory, block by block (tests of the economy, `pouw bench market`).

`EconSim` keeps a MemoryState; `submit` checks a transaction against the block being built (the same
StateOverlay a miner's template uses) and keeps it only if it applies; `end_block` runs
``apply_block`` over the kept transactions, applies the diff and asserts conservation.
"""

from __future__ import annotations

from chain.config import ChainConfig, parse_config
from chain.encoding import Obj
from chain.errors import TxError
from chain.hashing import tagged_hash
from chain.keys import PrivateKey
from chain.state import BlockDiff, MemoryState, StateOverlay, apply_block, genesis_econ, genesis_state
from chain.tx import Transaction, check_tx

ISSUER_PHRASE = b"pouw devnet issuer"


def issuer_key() -> PrivateKey:
    """The devnet's genesis issuer (seed = sha256(b"pouw devnet issuer")); configs/devnet.toml names it."""
    return PrivateKey.from_phrase(ISSUER_PHRASE)


def with_issuer(
    cfg: ChainConfig,
    address: bytes,
    deposit: int,
    mode: str = "mint",
    vintage_periods: int = 3,
    fee_bps: int = 30,
    buyback_bps: int = 9000,
) -> ChainConfig:
    """`cfg` with one more genesis issuer, written into its TOML source (so a datadir reopens with it)."""
    text = cfg.source + (
        f'\n[genesis.issuers."{address.hex()}"]\ndeposit = {deposit}\nmode = "{mode}"\n'
        f"vintage_periods = {vintage_periods}\nfee_bps = {fee_bps}\nbuyback_bps = {buyback_bps}\n"
    )
    return parse_config(text)


class EconSim:
    def __init__(self, cfg: ChainConfig, miner: bytes = b"\x00" * 19 + b"\x01", *, check: bool = True):
        self.cfg = cfg
        self.miner = miner
        self.check = check
        accts, supply = genesis_state(cfg.genesis_alloc, cfg.genesis_issuers)
        self.st = MemoryState(accts, supply, econ=genesis_econ(cfg.genesis_issuers), hashes=[self.block_id(0)])
        self.height = 0
        self.ov: StateOverlay | None = None
        self.txs: list[Transaction] = []
        self.events: list[tuple[bytes, str]] = []
        self.verify_sigs = False  # end_block checks every signature too (as a block import does)
        self.transition_s = 0.0  # seconds spent in end_block (sigs if verify_sigs, apply_block, apply)
        self.tx_count = 0
        self.record = False  # keep every block's transactions in `blocks` (to mine and import them)
        self.blocks: list[list[Transaction]] = []
        self.trade_log: dict[bytes, bytes] | None = None  # when a dict: every trade record (R) any block wrote,
        #                                                    kept here although the state prunes them

    @staticmethod
    def block_id(height: int) -> bytes:
        """The simulated chain's block "hash" at a height (challenges and work certificates read them)."""
        return tagged_hash(b"econsim-block", height.to_bytes(8, "big"))

    @property
    def next_height(self) -> int:
        return self.height + 1

    def _overlay(self) -> StateOverlay:
        if self.ov is None:
            self.ov = StateOverlay(self.st.get, self.st, self.cfg, self.next_height)
        return self.ov

    def make(self, key: PrivateKey, kind: int, payload: Obj, fee: int = 0) -> Transaction:
        nonce = self._overlay().get(key.address).nonce
        return Transaction(kind, self.cfg.chain_id, nonce, key.pubkey, fee, payload).signed(key)

    def submit(self, key: PrivateKey, kind: int, payload: Obj, fee: int = 0, *, sig: bool = False) -> str | None:
        """Sign and add a transaction to the block being built; returns None, or the reject reason
        (nothing changed then)."""
        tx = self.make(key, kind, payload, fee)
        return self.add(tx, sig=sig)

    def add(self, tx: Transaction, *, sig: bool = False) -> str | None:
        try:
            check_tx(tx, self.cfg.chain_id, self.cfg.max_tx_bytes, check_sig=sig)
            self._overlay().apply_tx(tx)
        except TxError as e:
            return e.reason
        self.txs.append(tx)
        return None

    def end_block(self) -> BlockDiff:
        import time

        h = self.next_height
        t0 = time.perf_counter()
        if self.verify_sigs:
            for tx in self.txs:
                check_tx(tx, self.cfg.chain_id, self.cfg.max_tx_bytes)
        diff = apply_block(
            self.st.get, self.st.supply, self.txs, self.miner, self.cfg.subsidy(h), height=h, cfg=self.cfg, jobs=self.st
        )
        self.st.apply(diff)
        self.st.hashes.append(self.block_id(h))
        if self.trade_log is not None:
            self.trade_log.update((k, v) for k, v in diff.econ_after.items() if k[:1] == b"R" and v is not None)
        self.transition_s += time.perf_counter() - t0
        self.tx_count += len(self.txs)
        if self.record:
            self.blocks.append(list(self.txs))
        self.height = h
        self.ov = None
        self.txs = []
        self.events = list(diff.events)
        if self.check:
            self.st.check_conservation()
        return diff

    def run(self, n: int) -> None:
        for _ in range(n):
            self.end_block()
