"""`pouw job submit|wait|fetch|status|progress|receipt|list|cancel|price`: compute jobs from the command line
(through node.client.sdk.Client).

Exit codes (every `pouw job` command): 0 done (a verified C written, ...); 1 the node refused something or
is unreachable (the message names the URL); 2 bad operands or arguments (nothing uploaded or paid);
3 a job failed (wrong result disputed, refunded, slashed, cancelled, timeout, no result yet).
No traceback reaches the user: an unexpected error prints one line and exits 1.

A journal `<wallet>.jobs.jsonl` (one JSON line per submitted job: id, the client's shape, the padded shape,
the node) lets `job wait|fetch ID` crop C to the shape submitted without `--shape`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np

DEFAULT_NODE = "http://127.0.0.1:8545"


USAGE_CODES = frozenset({"bad-job-id", "bad-url", "bad-wallet"})  # ClientErrors that are the user's input


class UsageError(ValueError):
    """Bad arguments or input files (exit 2)."""


def _err(cmd: str, msg: str) -> None:
    print(f"pouw job {cmd}: {msg}", file=sys.stderr, flush=True)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load(path: str, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{name}: cannot read {path} as a .npy array ({e})") from None


def _shape(text: str | None, n: int) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--shape {text!r}: expected {n} comma-separated integers") from None
    if len(dims) not in ((n,) if n == 3 else (2, 3)) or min(dims) <= 0:
        raise UsageError(f"--shape {text!r}: expected {'m,k,n' if n == 3 else 'm,n or m,k,n'} (positive integers)")
    return dims


# --- the journal ------------------------------------------------------------------------------------------
def journal_path(wallet: str | None) -> str | None:
    return f"{wallet}.jobs.jsonl" if wallet else None


def journal_add(wallet: str | None, sub, node: str) -> None:
    p = journal_path(wallet)
    if p is None:
        return
    try:
        with open(p, "a") as f:
            f.write(
                json.dumps(
                    {
                        "job_id": sub.job_id,
                        "shape": list(sub.shape),
                        "padded": list(sub.padded),
                        "node": node,
                        "time": int(time.time()),
                    }
                )
                + "\n"
            )
    except OSError as e:
        _progress(f"note: could not write the job journal {p}: {e}")


def journal_shape(wallet: str | None, job_id: str) -> tuple[int, ...] | None:
    p = journal_path(wallet)
    if p is None or not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if d.get("job_id") == job_id.lower():
                    return tuple(d["shape"])
    except OSError:
        return None
    return None


# --- output -----------------------------------------------------------------------------------------------
def _result_doc(res, out: str | None, settlement=None) -> dict:
    return {
        "job_id": res.job_id,
        "status": res.status,
        "fee": res.fee,
        "miner": res.miner,
        "h_c": res.h_c,
        "shape": list(res.c.shape),
        "out": out,
        "verified": True,
        "latency_s": round(res.latency_s, 3) if res.latency_s is not None else None,
        "c_at_height": res.height,
        "confirmed": res.confirmed,
        "settlement": settlement.to_json() if settlement is not None else None,
        "receipt": res.receipt,
    }


def _failed_doc(e) -> dict:
    doc = {"job_id": e.job_id, "failed": e.reason, "message": e.message, "status": e.record.get("status")}
    if e.dispute_txid:
        doc["dispute_txid"] = e.dispute_txid
    return doc


def _write(path: str | None, c: np.ndarray) -> None:
    if path:
        try:
            np.save(path, c, allow_pickle=False)
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e}") from None


def _report(outs: list, paths: list[str | None], cmd: str, settle: bool = False, timeout: float = 600.0) -> int:
    """Write each verified C at once (it may come from a pending result, before the result is mined), then
    wait for the results to be mined (`settle`: for the jobs to settle), then print one JSON line (a
    single object for one job, {"jobs": [...]} for several); the exit code."""
    from node.client.sdk import JobFailed

    for o, p in zip(outs, paths):
        if not isinstance(o, JobFailed):
            _write(p, o.c)
            if p:
                _progress(
                    f"job {o.job_id[:16]}… C written to {p}"
                    + (
                        ""
                        if o.confirmed
                        else "; waiting for the result to be mined" + (" and settled" if settle else "")
                    )
                )
    end = time.monotonic() + timeout
    docs = []
    unsettled = 0
    for o, p in zip(outs, paths):
        if isinstance(o, JobFailed):
            docs.append(_failed_doc(o))
            _err(cmd, str(o))
        else:
            left = max(1.0, end - time.monotonic())
            st = o.settle(left) if settle else o.confirm(left)
            if settle and st.outcome in ("timeout", "confirmed"):
                unsettled += 1
                _err(cmd, f"job {o.job_id[:16]}…: C verified, but not settled: {st.message}")
            docs.append(_result_doc(o, p, st))
    failed = sum(1 for o in outs if isinstance(o, JobFailed))
    if len(docs) == 1:
        print(json.dumps(docs[0]))
    else:
        print(json.dumps({"jobs": docs, "verified": len(docs) - failed, "failed": failed}))
    return 3 if failed or unsettled else 0


def _outs(args, count: int) -> list[str | None]:
    outs = list(args.out or [])
    if getattr(args, "out_dir", None):
        if outs:
            raise UsageError("give --out or --out-dir, not both")
        os.makedirs(args.out_dir, exist_ok=True)
        return [os.path.join(args.out_dir, f"c{i}.npy") for i in range(count)]
    if outs and len(outs) != count:
        raise UsageError(f"{len(outs)} --out paths for {count} jobs (give one per job, or --out-dir)")
    return outs or [None] * count


# --- commands ---------------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    from node.client.sdk import Client

    a_paths, b_paths = args.a or [], args.b or []
    if not a_paths or not b_paths:
        raise UsageError("give --a and --b (repeat them for a batch)")
    if len(b_paths) == 1 and len(a_paths) > 1:
        b_paths = b_paths * len(a_paths)  # micro-batches against one B: uploaded once
    if len(a_paths) != len(b_paths):
        raise UsageError(f"{len(a_paths)} --a for {len(b_paths)} --b (give one B for all, or one per A)")
    outs = _outs(args, len(a_paths))
    cache: dict[str, np.ndarray] = {}
    pairs = []
    for pa, pb in zip(a_paths, b_paths):
        pairs.append((cache.setdefault(pa, _load(pa, "A")), cache.setdefault(pb, _load(pb, "B"))))
    client = Client(args.node)
    subs = client.submit_jobs(
        args.wallet,
        pairs,
        args.max_fee,
        wait=False,
        deadline_blocks=args.deadline,
        tx_fee=args.tx_fee,
        progress=_progress,
    )
    for s in subs:
        journal_add(args.wallet, s, args.node)
    if not args.wait:
        docs = [
            {
                "job_id": s.job_id,
                "max_fee": s.fee,
                "deadline": s.deadline,
                "shape": list(s.shape),
                "padded": list(s.padded),
            }
            for s in subs
        ]
        print(json.dumps(docs[0] if len(docs) == 1 else {"jobs": docs}))
        return 0
    res = client.wait_jobs(subs, args.wallet, timeout=args.timeout, progress=_progress)
    return _report(res, outs, "submit", args.settle, args.timeout)


def _wallet_for_dispute(args) -> str | None:
    """The wallet that disputes a wrong C: --wallet if given, else ./wallet.json if it exists."""
    if args.wallet:
        return args.wallet
    return "wallet.json" if os.path.exists("wallet.json") else None


def _wait_or_fetch(args: argparse.Namespace, fetch: bool) -> int:
    from node.client.sdk import Client, JobFailed, _hexid

    ids = [_hexid(j) for j in args.job_id]
    outs = _outs(args, len(ids))
    wallet = _wallet_for_dispute(args)
    given = _shape(args.shape, 2)
    if given is not None and len(ids) > 1:
        raise UsageError("--shape applies to one job at a time")
    client = Client(args.node)
    results: list = []
    for jid in ids:
        shape = given or journal_shape(wallet, jid)
        if shape is None:
            _progress(
                f"job {jid[:16]}…: shape unknown (no --shape, not in the wallet's journal): "
                "C keeps the padded on-chain shape"
            )
        try:
            if fetch:
                results.append(client.fetch_job(jid, wallet, shape=shape, progress=_progress))
            else:
                results.append(client.wait_job(jid, wallet, timeout=args.timeout, shape=shape, progress=_progress))
        except JobFailed as e:
            results.append(e)
    return _report(results, outs, "fetch" if fetch else "wait", args.settle, args.timeout)


def cmd_wait(args: argparse.Namespace) -> int:
    return _wait_or_fetch(args, fetch=False)


def cmd_fetch(args: argparse.Namespace) -> int:
    return _wait_or_fetch(args, fetch=True)


def cmd_status(args: argparse.Namespace) -> int:
    from node.client.sdk import Client, ClientError, _hexid

    c = Client(args.node)
    jid = _hexid(args.job_id)
    doc = c.job_status(jid)
    try:
        doc["progress"] = c.job_progress(jid)
    except ClientError:
        doc["progress"] = None
    print(json.dumps(doc, indent=1))
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    from node.client.sdk import Client, _hexid

    print(json.dumps(Client(args.node).job_progress(_hexid(args.job_id)), indent=1))
    return 0


def cmd_receipt(args: argparse.Namespace) -> int:
    from node.client.sdk import Client, _hexid

    print(json.dumps(Client(args.node).receipt(_hexid(args.job_id)), indent=1))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from chain.keys import parse_address
    from node.client.sdk import Client, _load_key

    c = Client(args.node)
    if args.mine or args.client:
        if args.client:
            try:
                addr = parse_address(args.client)
            except ValueError as e:
                raise UsageError(f"--client: {e}") from None
        else:
            addr = _load_key(args.wallet or "wallet.json").address
        jobs = c.jobs_of(addr, args.status or "all", args.limit)
    else:
        jobs = c.jobs(args.status or "open", args.limit)
    print(json.dumps(jobs, indent=1))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from node.client.sdk import Client, _hexid

    c = Client(args.node)
    jid = _hexid(args.job_id)
    txid = c.cancel_job(args.wallet, jid, tx_fee=args.tx_fee)
    doc = {"job_id": jid, "cancel_txid": txid}
    if args.wait:
        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            rec = c.job_status(jid)
            if rec["status"] != "open":
                break
            time.sleep(0.25)
        doc["status"] = rec["status"]
        if rec["status"] != "cancelled":
            print(json.dumps(doc))
            _err("cancel", f"job {jid[:16]}… is {rec['status']}, not cancelled (a claim may have come first)")
            return 3
        doc["refunded"] = rec["fee"]
    print(json.dumps(doc))
    return 0


def cmd_price(args: argparse.Namespace) -> int:
    from node.client.sdk import Client

    shape = _shape(args.shape, 3)
    c = Client(args.node)
    pm, pk, pn = c.job_shape(*shape)  # type: ignore[misc]
    q = c.quote(pm, pk, pn)
    q = {"shape": list(shape), "padded": [pm, pk, pn], **q}  # type: ignore[arg-type]
    print(json.dumps(q, indent=1))
    return 0


def guarded(name: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a `pouw job` command with every failure mapped to one stderr line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        from node.client.sdk import ClientError, JobFailed
        from pouw.errors import JobError

        try:
            return fn(args)
        except UsageError as e:
            _err(name, str(e))
            return 2
        except JobError as e:
            _err(name, f"bad operands or shape: {e} (nothing uploaded or paid)")
            return 2
        except ClientError as e:
            if e.code in USAGE_CODES:
                _err(name, str(e))
                return 2
            _err(name, ("node refused: " if e.code != "node-unreachable" else "") + str(e))
            return 1
        except JobFailed as e:
            print(json.dumps(_failed_doc(e)))
            _err(name, str(e))
            return 3
        except KeyboardInterrupt:
            _err(name, "interrupted")
            return 130
        except Exception as e:  # noqa: BLE001 - last resort: one line, no traceback
            _err(name, f"unexpected error: {type(e).__name__}: {e}")
            return 1

    return run


def add_arguments(sub) -> None:
    j = sub.add_parser("job", help="compute jobs: submit A·B and get the verified C; wait, fetch, list, cancel, price")
    js = j.add_subparsers(dest="job_cmd", required=True)

    def node_arg(p):
        p.add_argument("--node", default=DEFAULT_NODE, help=f"node API URL (default {DEFAULT_NODE})")

    s = js.add_parser("submit", help="upload A, B, pay (default: the suggested fee), optionally wait, verify, save C")
    node_arg(s)
    s.add_argument("--wallet", default="wallet.json")
    s.add_argument("--a", action="append", help="A as .npy (int8, m x k, entries in [-64, 64]); repeat for a batch")
    s.add_argument("--b", action="append", help="B as .npy (int8, k x n); one per --a, or one for all")
    s.add_argument("--max-fee", type=int, default=None, help="base units per job (default: `job price`'s suggestion)")
    s.add_argument("--tx-fee", type=int, default=1000, help="transaction fee in base units")
    s.add_argument("--deadline", type=int, default=None, help="blocks until the deadline (default 100 or the max)")
    s.add_argument("--wait", action="store_true", help="wait for the results, verify them, write --out")
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("--out", action="append", help="where to write C (.npy, int32); one per job")
    s.add_argument("--out-dir", default=None, help="write C of job i to DIR/c<i>.npy")
    s.add_argument(
        "--settle",
        action="store_true",
        help="with --wait: after C is written, wait until the "
        "job settles on chain (the challenge window closes), not only until its result is mined",
    )
    s.set_defaults(func=guarded("submit", cmd_submit))

    for name, helptext, fn in (
        ("wait", "wait for a job's result, verify it (Freivalds) and save C", cmd_wait),
        ("fetch", "download and verify the C of a job that has a result now", cmd_fetch),
    ):
        w = js.add_parser(name, help=helptext)
        w.add_argument("job_id", nargs="+")
        node_arg(w)
        w.add_argument(
            "--wallet",
            default=None,
            help="disputes a wrong C; its journal gives the shape (default ./wallet.json if present)",
        )
        w.add_argument("--shape", default=None, help="m,n of the client's C (crop); default: the journal")
        w.add_argument("--out", action="append", help="where to write C (.npy, int32); one per job")
        w.add_argument("--out-dir", default=None)
        w.add_argument("--timeout", type=float, default=600.0)
        w.add_argument(
            "--settle",
            action="store_true",
            help="after C is written, wait until the job settles "
            "on chain (the challenge window closes), not only until its result is mined",
        )
        w.set_defaults(func=guarded(name, fn))

    for name, helptext, fn in (
        ("status", "a job's on-chain record and progress", cmd_status),
        ("progress", "status, queue position and estimate", cmd_progress),
        ("receipt", "submit / claim / result txids and heights", cmd_receipt),
    ):
        st = js.add_parser(name, help=helptext)
        st.add_argument("job_id")
        node_arg(st)
        st.set_defaults(func=guarded(name, fn))

    ls = js.add_parser("list", help="jobs by status (open = claimable now), or a wallet's jobs (--mine)")
    ls.add_argument("--status", default=None, help="open (default), live, all, pending, or a status name")
    ls.add_argument("--mine", action="store_true", help="the jobs of --wallet (default status: all)")
    ls.add_argument("--client", default=None, help="the jobs of this address")
    ls.add_argument("--wallet", default=None)
    ls.add_argument("--limit", type=int, default=100)
    node_arg(ls)
    ls.set_defaults(func=guarded("list", cmd_list))

    c = js.add_parser("cancel", help="cancel an open (unclaimed) job: the escrow comes back")
    c.add_argument("job_id")
    node_arg(c)
    c.add_argument("--wallet", default="wallet.json")
    c.add_argument("--tx-fee", type=int, default=1000)
    c.add_argument("--wait", action="store_true", help="wait until the cancel is mined")
    c.add_argument("--timeout", type=float, default=60.0)
    c.set_defaults(func=guarded("cancel", cmd_cancel))

    p = js.add_parser("price", help="the going rate and the fees that recently cleared for a shape")
    p.add_argument("--shape", required=True, help="m,k,n of the client's product")
    node_arg(p)
    p.set_defaults(func=guarded("price", cmd_price))
