"""Wallet commands: key files (chain.keys format) and transfers through a node's HTTP API.

Amounts on the command line are in tokens (decimal, 1 token = 10**8 base units) unless `--units` is
given; fees are in base units. The passphrase comes from ``$POUW_WALLET_PASSPHRASE`` or a prompt;
``--no-passphrase`` writes an unencrypted key file (devnets only).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from decimal import Decimal, InvalidOperation

from chain.errors import KeyFileError
from chain.keys import PrivateKey, load_key, parse_address, save_key
from chain.tx import make_transfer
from node.client.worker import ApiError, NodeClient

UNIT = 10**8
DEFAULT_NODE = "http://127.0.0.1:8545"


def parse_amount(text: str, units: bool = False) -> int:
    try:
        v = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"bad amount {text!r}") from None
    base = v if units else v * UNIT
    if base != base.to_integral_value() or base <= 0:
        raise ValueError(f"amount {text!r} must be a positive whole number of base units")
    return int(base)


def fmt_amount(units: int) -> str:
    return f"{Decimal(units) / UNIT:f}"


def _passphrase(confirm: bool) -> str:
    """The passphrase from $POUW_WALLET_PASSPHRASE or a prompt; a new key file (`confirm`) refuses an empty one."""
    p = os.environ.get("POUW_WALLET_PASSPHRASE")
    if p is None:
        p = getpass.getpass("wallet passphrase: ")
        if confirm and getpass.getpass("repeat passphrase: ") != p:
            raise SystemExit("passphrases differ")
    if confirm and not p:
        raise SystemExit(
            "wallet: empty passphrase refused; use --no-passphrase for an unencrypted key file (devnets only)"
        )
    return p


def open_wallet(path: str) -> PrivateKey:
    try:
        return load_key(path)
    except KeyFileError as e:
        if "passphrase is required" not in str(e):
            raise
    return load_key(path, _passphrase(False))


def cmd_new(args: argparse.Namespace) -> int:
    if os.path.exists(args.wallet) and not args.force:
        print(f"{args.wallet} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    key = PrivateKey.generate()
    if args.no_passphrase:
        save_key(args.wallet, key, None, allow_unencrypted=True)
    else:
        save_key(args.wallet, key, _passphrase(True))
    print(json.dumps({"wallet": args.wallet, "address": key.address.hex()}))
    return 0


def _address(args: argparse.Namespace) -> bytes:
    if getattr(args, "address", None):
        return parse_address(args.address)
    return open_wallet(args.wallet).address


def cmd_balance(args: argparse.Namespace) -> int:
    a = _address(args)
    doc = NodeClient(args.node).call("GET", f"/api/v1/accounts/{a.hex()}")
    doc["balance_tokens"] = fmt_amount(doc["balance"])
    print(json.dumps(doc))
    return 0


def send(node_url: str, key: PrivateKey, to: bytes, amount: int, fee: int) -> dict:
    """Sign a transfer with the next pending nonce and submit it; returns the API answer."""
    c = NodeClient(node_url)
    net = c.call("GET", "/api/v1/network")
    acct = c.call("GET", f"/api/v1/accounts/{key.address.hex()}")
    tx = make_transfer(key, net["chain_id"], acct["pending_nonce"], to, amount, fee)
    return c.call("POST", "/api/v1/tx", {"tx": tx.encoded.hex()})


def cmd_send(args: argparse.Namespace) -> int:
    key = open_wallet(args.wallet)
    try:
        amount = parse_amount(args.amount, args.units)
        to = parse_address(args.to)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    try:
        res = send(args.node, key, to, amount, args.fee)
    except ApiError as e:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}))
        return 1
    print(json.dumps(res))
    if args.wait:
        c = NodeClient(args.node)
        deadline = time.time() + args.wait
        while time.time() < deadline:
            try:
                st = c.call("GET", f"/api/v1/tx/{res['txid']}")
                if st["status"] == "confirmed":
                    print(json.dumps({"txid": res["txid"], "status": "confirmed", "height": st["height"]}))
                    return 0
            except ApiError:
                pass
            time.sleep(0.5)
        print(json.dumps({"txid": res["txid"], "status": "pending"}))
        return 3
    return 0


def add_arguments(sub) -> None:
    w = sub.add_parser("wallet", help="wallet: new key file, balance, send")
    ws = w.add_subparsers(dest="wallet_cmd", required=True)
    n = ws.add_parser("new", help="create a key file")
    n.add_argument("--wallet", default="wallet.json", help="key file path")
    n.add_argument("--no-passphrase", action="store_true", help="store the key unencrypted (devnet only)")
    n.add_argument("--force", action="store_true")
    n.set_defaults(func=cmd_new)
    b = ws.add_parser("balance", help="balance and nonce of a wallet or address")
    b.add_argument("--wallet", default="wallet.json")
    b.add_argument("--address", default=None)
    b.add_argument("--node", default=DEFAULT_NODE)
    b.set_defaults(func=cmd_balance)
    s = ws.add_parser("send", help="sign and submit a transfer")
    s.add_argument("--wallet", default="wallet.json")
    s.add_argument("--to", required=True, help="recipient address (hex)")
    s.add_argument("--amount", required=True, help="amount in tokens (or base units with --units)")
    s.add_argument("--units", action="store_true", help="amount is in base units")
    s.add_argument("--fee", type=int, default=1000, help="fee in base units (default 1000)")
    s.add_argument("--node", default=DEFAULT_NODE)
    s.add_argument("--wait", type=float, default=0.0, help="wait up to this many seconds for a confirmation")
    s.set_defaults(func=cmd_send)
