"""`pouw job submit|status|list`: compute jobs from the command line (through node.client.Client).

Exit codes of `job submit`: 0 verified C written; 2 bad operands or arguments (nothing uploaded or paid);
1 the node refused something / unreachable; 3 the job failed (wrong result disputed, refunded, timeout).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _load(path: str, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{name}: cannot read {path} as a .npy array ({e})") from None


def cmd_submit(args: argparse.Namespace) -> int:
    from node.client import Client, ClientError, JobFailed, Submitted
    from pouw.errors import JobError
    try:
        a, b = _load(args.a, "A"), _load(args.b, "B")
    except ValueError as e:
        print(f"job submit: {e}", file=sys.stderr)
        return 2
    client = Client(args.node)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
    try:
        res = client.submit_job(args.wallet, a, b, args.max_fee, wait=args.wait, deadline_blocks=args.deadline,
                                tx_fee=args.tx_fee, timeout=args.timeout, progress=progress)
    except JobError as e:
        print(f"job submit: bad operands: {e} (nothing uploaded or paid)", file=sys.stderr)
        return 2
    except ClientError as e:
        print(f"job submit: node refused: {e}", file=sys.stderr)
        return 1
    except JobFailed as e:
        doc = {"job_id": e.job_id, "failed": e.reason, "message": e.message, "status": e.record.get("status")}
        if e.dispute_txid:
            doc["dispute_txid"] = e.dispute_txid
        print(json.dumps(doc))
        print(f"job submit: {e}", file=sys.stderr)
        return 3
    if isinstance(res, Submitted):
        print(json.dumps({"job_id": res.job_id, "max_fee": res.fee, "deadline": res.deadline,
                          "padded": list(res.padded)}))
        return 0
    if args.out:
        np.save(args.out, res.c, allow_pickle=False)
    print(json.dumps({"job_id": res.job_id, "status": res.status, "fee": res.fee, "miner": res.miner,
                      "h_c": res.h_c, "shape": list(res.c.shape), "out": args.out, "verified": True}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from node.client import Client, ClientError
    try:
        print(json.dumps(Client(args.node).job_status(args.job_id), indent=1))
    except ClientError as e:
        print(f"job status: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from node.client import Client, ClientError
    try:
        print(json.dumps(Client(args.node).jobs(args.status, args.limit), indent=1))
    except ClientError as e:
        print(f"job list: {e}", file=sys.stderr)
        return 1
    return 0


def add_arguments(sub) -> None:
    j = sub.add_parser("job", help="compute jobs: submit A·B and get the verified C; status")
    js = j.add_subparsers(dest="job_cmd", required=True)
    s = js.add_parser("submit", help="upload A, B, pay, wait, verify and save C")
    s.add_argument("--node", default="http://127.0.0.1:8545")
    s.add_argument("--wallet", default="wallet.json")
    s.add_argument("--a", required=True, help="A as .npy (int8, m x k, entries in [-64, 64])")
    s.add_argument("--b", required=True, help="B as .npy (int8, k x n)")
    s.add_argument("--max-fee", type=int, default=None, help="base units (default: the going rate)")
    s.add_argument("--tx-fee", type=int, default=1000, help="transaction fee in base units")
    s.add_argument("--deadline", type=int, default=None, help="blocks until the deadline (default 100 or the max)")
    s.add_argument("--wait", action="store_true", help="wait for the result, verify it, write --out")
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("--out", default=None, help="where to write C (.npy, int32)")
    s.set_defaults(func=cmd_submit)
    st = js.add_parser("status", help="a job's on-chain record")
    st.add_argument("job_id")
    st.add_argument("--node", default="http://127.0.0.1:8545")
    st.set_defaults(func=cmd_status)
    ls = js.add_parser("list", help="jobs by status (open = claimable now)")
    ls.add_argument("--status", default="open")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--node", default="http://127.0.0.1:8545")
    ls.set_defaults(func=cmd_list)
