"""Node subcommands of `pouw`: init, node, status, miner, wallet, devnet, job, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from chain.errors import ChainError
from node.logfmt import add_log_json


def cmd_init(args: argparse.Namespace) -> int:
    from chain.chainstate import ChainState
    from chain.config import load_config
    from node.server.node import load_or_create_node_key

    d = Path(args.datadir)
    d.mkdir(parents=True, exist_ok=True)
    try:
        with ChainState.open(d, load_config(args.network)) as cs:
            key = load_or_create_node_key(d)
            net = d / "network.toml"  # the (dated) config: other nodes join this network with --network FILE
            if not net.exists():
                net.write_text(cs.cfg.source)
            print(
                json.dumps(
                    {
                        "datadir": str(d),
                        "network": cs.cfg.name,
                        "network_file": str(net),
                        "chain_id": cs.cfg.chain_id,
                        "genesis": cs.genesis.hash.hex(),
                        "height": cs.height,
                        "node_id": key.pubkey.hex(),
                        "mining_address": key.address.hex(),
                    }
                )
            )
    except (ChainError, ValueError, OSError) as e:
        print(f"init failed: {e}", file=sys.stderr)
        return 1
    return 0


def _filler_shape(args: argparse.Namespace, what: str) -> tuple[int, int, int] | None:
    """--filler-shape MxKxN parsed (None when not given); SystemExit(2) with a message when malformed."""
    if not getattr(args, "filler_shape", None):
        return None
    from node.engine import parse_shape

    try:
        return parse_shape(args.filler_shape)
    except ValueError as e:
        print(f"{what}: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_node(args: argparse.Namespace) -> int:
    from chain.keys import parse_address
    from node.server.node import Node, NodeConfig
    from node.engine import check_filler_shape

    shape = _filler_shape(args, "node")
    conf = NodeConfig(
        datadir=Path(args.datadir),
        network=args.network,
        host=args.host,
        port=args.port,
        peers=list(args.peer or []),
        mine=args.mine,
        device=args.device,
        miner_address=parse_address(args.miner_address) if args.miner_address else None,
        mine_interval=args.mine_interval,
        filler_shape=shape,
        mempool_max_txs=args.mempool_max_txs,
        mempool_max_bytes=args.mempool_max_bytes,
        mempool_expiry_s=args.mempool_expiry,
        take_jobs=not args.no_jobs,
        job_bond=args.job_bond,
        min_job_fee_rate=args.min_job_fee_rate,
        blob_retention_blocks=args.blob_retention,
        blob_grace_s=args.blob_grace,
        blob_account_quota=args.blob_account_quota,
        blob_pending_max=args.blob_pending_max,
        blob_store_max=args.blob_store_max,
        min_free_bytes=args.min_free_mb << 20,
        api_host=args.api_host,
        api_port=args.api_port,
        api_token=args.api_token or os.environ.get("POUW_API_TOKEN") or None,
        api_allowed_hosts=list(args.api_allow_host or []),
        api_cors_origins=list(args.api_cors_origin or []),
        max_inbound=args.max_inbound,
        max_inbound_per_ip=args.max_inbound_per_ip,
        max_conns=args.max_conns,
        max_conns_per_ip=args.max_conns_per_ip,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        noban=list(args.noban) if args.noban is not None else ["127.0.0.1", "::1"],
    )
    if args.api_host and args.api_port is None:
        print("node: --api-host needs --api-port (a separate API listener)", file=sys.stderr)
        return 2
    if args.min_job_fee_rate is not None:
        from fractions import Fraction

        try:
            if Fraction(args.min_job_fee_rate) < 0:
                raise ValueError
        except (ValueError, ZeroDivisionError):
            print(
                f"node: --min-job-fee-rate {args.min_job_fee_rate!r} is not a rate >= 0 (e.g. 1/10000 or "
                "0.0001 base units per multiply-add)",
                file=sys.stderr,
            )
            return 2
    if args.mine and args.device != "cpu":
        from kernels import DeviceError, parse_device

        try:
            parse_device(args.device)
        except DeviceError as e:
            print(f"node: {e}", file=sys.stderr)
            return 2
    try:
        node = Node(conf)
    except (ChainError, ValueError, OSError) as e:
        print(f"node: cannot open {args.datadir}: {e}", file=sys.stderr)
        return 1
    if shape is not None:
        try:
            check_filler_shape(node.cfg, shape)
        except ValueError as e:
            node.chain.close()
            print(f"node: {e}", file=sys.stderr)
            return 2
    try:
        asyncio.run(node.run_forever())
    except OSError as e:
        print(f"node: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from node.client.worker import ApiError, NodeClient

    try:
        print(json.dumps(NodeClient(args.node).call("GET", "/api/v1/status"), indent=1))
    except (OSError, ApiError) as e:
        print(f"status: {args.node}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_miner(args: argparse.Namespace) -> int:
    from kernels import DeviceError, parse_devices
    from node.client.worker import run_remote_devices

    try:
        devices = parse_devices(args.device)
    except DeviceError as e:
        print(f"miner: {e}", file=sys.stderr)
        return 2
    shape = _filler_shape(args, "miner")
    found = run_remote_devices(
        args.node, devices, args.address or "", max_blocks=args.blocks, duration=args.duration, filler_shape=shape
    )
    print(json.dumps({"blocks_found": found}))
    return 0


def register(sub) -> None:
    have = set(sub.choices)

    def add(name: str, **kw):
        if name in have:  # another layer registered it first: keep theirs
            return None
        return sub.add_parser(name, **kw)

    p = add("init", help="create a data directory (chain database and node key)")
    if p:
        p.add_argument("--datadir", default="./data")
        p.add_argument("--network", default="devnet", help="config name (devnet, regtest) or .toml path")
        p.set_defaults(func=cmd_init)

    p = add("node", help="run a node: p2p, sync, mempool, HTTP API, optional mining")
    if p:
        p.add_argument("--datadir", default="./data")
        p.add_argument("--network", default=None, help="config name or .toml (default: stored, else devnet)")
        p.add_argument(
            "--p2p-host",
            "--host",
            dest="host",
            default="127.0.0.1",
            help="address of the peer listener (default 127.0.0.1; 0.0.0.0 to accept peers)",
        )
        p.add_argument(
            "--p2p-port",
            "--port",
            dest="port",
            type=int,
            default=8545,
            help="peer port, also the API's unless --api-port is given (0: any free port)",
        )
        p.add_argument(
            "--api-host",
            default=None,
            help="address of a separate API listener (default: 127.0.0.1 with --api-port, else --p2p-host)",
        )
        p.add_argument(
            "--api-port",
            type=int,
            default=None,
            help="serve the HTTP API on its own port; the peer port then serves only /p2p and blob reads",
        )
        p.add_argument(
            "--api-token",
            default=None,
            help="bearer token every write (POST/PUT) must carry (also $POUW_API_TOKEN); default: none "
            "on loopback, a random one in <datadir>/.cookie when the API is public",
        )
        p.add_argument(
            "--api-allow-host",
            action="append",
            metavar="NAME",
            help="Host header name accepted besides IP addresses and localhost (repeatable; * for any)",
        )
        p.add_argument(
            "--api-cors-origin",
            action="append",
            metavar="ORIGIN",
            help="browser Origin allowed to call the API (repeatable; default: none)",
        )
        p.add_argument("--max-inbound", type=int, default=32, help="authenticated inbound peers (default 32)")
        p.add_argument(
            "--max-inbound-per-ip", type=int, default=8, help="authenticated inbound peers from one IP (default 8)"
        )
        p.add_argument(
            "--max-conns",
            type=int,
            default=1000,
            help="open connections on all listeners; capped below the fd limit (default 1000)",
        )
        p.add_argument("--max-conns-per-ip", type=int, default=32, help="open connections from one IP (default 32)")
        p.add_argument(
            "--header-timeout",
            type=float,
            default=10.0,
            help="seconds a client has to send a request's head (default 10)",
        )
        p.add_argument(
            "--idle-timeout",
            type=float,
            default=30.0,
            help="seconds an idle keep-alive connection stays open (default 30)",
        )
        p.add_argument(
            "--blob-account-quota",
            type=int,
            default=2 << 30,
            help="bytes of uploaded blobs one paying account may have that no chain job names yet",
        )
        p.add_argument(
            "--blob-pending-max",
            type=int,
            default=8 << 30,
            help="bytes of such unreferenced uploads of all accounts together",
        )
        p.add_argument("--blob-store-max", type=int, default=64 << 30, help="bytes of blobs on disk")
        p.add_argument(
            "--blob-grace", type=float, default=600.0, help="seconds a blob no job names is kept (default 600)"
        )
        p.add_argument(
            "--min-free-mb",
            type=int,
            default=256,
            help="below this much free space in the datadir the node pauses mining and imports, "
            "and resumes when space returns (default 256)",
        )
        p.add_argument(
            "--noban",
            action="append",
            metavar="IP",
            help="IP never banned by address (only by node id) and exempt from per-IP peer limits "
            "(repeatable; default 127.0.0.1 and ::1)",
        )
        p.add_argument("--peer", action="append", help="peer address host:port (repeatable)")
        p.add_argument("--mine", action="store_true", help="mine inside the node")
        p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        p.add_argument("--miner-address", default=None, help="reward address (default: the node key's)")
        p.add_argument("--mine-interval", type=float, default=0.0, help="min seconds between own blocks")
        p.add_argument(
            "--filler-shape",
            default=None,
            metavar="MxKxN",
            help="filler job shape (default: the network's [pow] filler_m/k/n)",
        )
        p.add_argument("--mempool-max-txs", type=int, default=5000)
        p.add_argument("--mempool-max-bytes", type=int, default=5_000_000)
        p.add_argument("--mempool-expiry", type=float, default=3 * 3600.0, help="seconds")
        p.add_argument("--no-jobs", action="store_true", help="the miner does not claim paid jobs (filler only)")
        p.add_argument(
            "--job-bond",
            type=int,
            default=None,
            help="bond per claim, base units (default and floor: the chain's required bond)",
        )
        p.add_argument(
            "--min-job-fee-rate",
            default=None,
            metavar="RATE",
            help="fee floor: base units per multiply-add, e.g. 1/10000 (default: the chain's going rate)",
        )
        p.add_argument(
            "--blob-retention",
            type=int,
            default=1000,
            help="keep a settled job's blobs this many blocks (default 1000)",
        )
        add_log_json(p)
        p.set_defaults(func=cmd_node)

    p = add("status", help="print a node's /api/v1/status")
    if p:
        p.add_argument("--node", default="http://127.0.0.1:8545")
        p.set_defaults(func=cmd_status)

    p = add("miner", help="remote mining worker: takes work over a node's HTTP API")
    if p:
        p.add_argument("--node", default="http://127.0.0.1:8545")
        p.add_argument(
            "--device",
            default="auto",
            help="cpu, cuda, cuda:N, or several (cuda:0,cuda:1 or cuda:all): one worker per device",
        )
        p.add_argument("--address", default=None, help="reward address (default: the node's)")
        p.add_argument("--blocks", type=int, default=0, help="stop after N blocks (0: run until Ctrl-C)")
        p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: no limit)")
        p.add_argument(
            "--filler-shape",
            default=None,
            metavar="MxKxN",
            help="filler job shape (default: the one the node advertises)",
        )
        add_log_json(p)
        p.set_defaults(func=cmd_miner)

    if "wallet" not in have:
        from node.client import wallet

        wallet.add_arguments(sub)
    if "devnet" not in have:
        from node.cli import devnet

        devnet.add_arguments(sub)
    if "job" not in have:
        from node.client import jobcli

        jobcli.add_arguments(sub)
    if "market" not in have:  # the economy: issuer, subscription, market (node/client/econcli.py)
        from node.client import econcli

        econcli.add_arguments(sub)
    if "demo" not in have:
        from node.cli import inference_demo

        inference_demo.add_arguments(sub)
