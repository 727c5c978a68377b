"""`pouw devnet`: N mining nodes on 127.0.0.1 as child processes, a funded client wallet, clean stop.

Node i serves its API and p2p on port P+i with data in D/node<i> (its log in D/node<i>/node.log) and
knows every other node's address. The client wallet D/wallet (unencrypted: devnet only) is funded from
the devnet faucet (configs/devnet.toml) through node 0's API. SIGINT/SIGTERM stop all nodes (SIGTERM,
then SIGKILL after a timeout); each node saves its mempool and closes its database.

Faults an operator meets get a clear answer: the nodes die with the devnet, even when it is killed with
SIGKILL (``PR_SET_PDEATHSIG``: SIGTERM, so they still stop cleanly); a second devnet on the same data
directory (``D/devnet.lock``, an flock) or a port already answering exits at once saying so, and a node
that answers with another node id than its own key is reported. The ready lines are printed only when
the client wallet's funding transaction is mined (or say that it is still pending after a while).

A network template (a config with ``genesis_timestamp = 0``, such as ``devnet``) is launched once: the
first run writes D/network.toml with the genesis dated then, and every node of this devnet (and every
later run on D) is started with that file, so all share one genesis.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from chain.keys import PrivateKey, faucet_key, load_key, save_key
from node.logfmt import add_log_json
from node.client.wallet import UNIT, fmt_amount, send
from node.client.worker import ApiError, NodeClient

FUND_TOKENS = 1_000_000
FUND_WAIT_S = 120.0
LOCK_FILE = "devnet.lock"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the devnet process dies, however it dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the devnet died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _lock(base: Path):
    """Hold D/devnet.lock for the devnet's life; None (after saying why) when another devnet holds it."""
    import fcntl

    f = open(base / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        other = f.read().strip() or "?"
        f.close()
        print(f"devnet: {base} is in use by another devnet (pid {other}); stop it first", file=sys.stderr)
        return None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _port_in_use(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def add_arguments(sub) -> None:
    d = sub.add_parser("devnet", help="run N local mining nodes with a funded client wallet")
    d.add_argument("--nodes", type=int, default=2)
    d.add_argument("--base-port", type=int, default=8545)
    d.add_argument("--datadir", default="./devnet-data")
    d.add_argument("--network", default="devnet", help="config name or path (default devnet)")
    d.add_argument("--device", default="cpu")
    d.add_argument(
        "--block-interval",
        type=float,
        default=0.0,
        help="minimum seconds between blocks of one node (0 = mine flat out)",
    )
    d.add_argument("--no-mine", action="store_true")
    d.add_argument(
        "--no-calibrate",
        action="store_true",
        help="keep the config's initial_block_work for a new devnet instead of measuring this machine",
    )
    d.add_argument("--status-every", type=float, default=10.0, help="print a status line every S seconds (0: never)")
    d.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C/SIGTERM)")
    add_log_json(d)
    d.set_defaults(func=run)


def _wait_ready(url: str, timeout: float, cancelled=lambda: False) -> dict | None:
    c = NodeClient(url, timeout=2.0)
    end = time.time() + timeout
    while time.time() < end and not cancelled():
        try:
            return c.call("GET", "/api/v1/status")
        except (OSError, ApiError, ValueError):
            time.sleep(0.3)
    return None


def _fund(url: str, wallet: PrivateKey) -> None:
    c = NodeClient(url)
    acct = c.call("GET", f"/api/v1/accounts/{wallet.address.hex()}")
    if acct["balance"] > 0 or acct["pending_txs"] > 0:
        return
    fk = faucet_key()
    if c.call("GET", f"/api/v1/accounts/{fk.address.hex()}")["balance"] < FUND_TOKENS * UNIT:
        print("devnet: faucet has too little to fund the wallet", file=sys.stderr)
        return
    res = send(url, fk, wallet.address, FUND_TOKENS * UNIT, 10_000)
    print(
        f"devnet: funding {wallet.address.hex()} with {FUND_TOKENS} tokens (tx {res['txid'][:16]}…); "
        "waiting for it to be mined"
    )
    sys.stdout.flush()


def _wait_funded(url: str, wallet: PrivateKey, timeout: float, cancelled=lambda: False) -> bool:
    """True once the wallet has a confirmed balance (the funding transaction is mined)."""
    c = NodeClient(url, timeout=2.0)
    end = time.time() + timeout
    while time.time() < end and not cancelled():
        try:
            if c.call("GET", f"/api/v1/accounts/{wallet.address.hex()}")["balance"] > 0:
                return True
        except (OSError, ApiError, ValueError):
            pass
        time.sleep(0.3)
    return False


def calibrated_block_work(cfg, device: str, seconds: float = 1.5) -> int:
    """Multiply-adds this machine mines in one target block time: filler attempts with reused operands (as
    the node's miner makes them) timed for `seconds`, times `target_block_time`; at least min_block_work.
    A new devnet starts at this difficulty, so its first blocks come at the block time the config names
    instead of many times faster (or slower) until ASERT catches up over several half-lives."""
    from chain.block import NULL_JOB, Header
    from kernels import get_backend
    from node.engine import FillerMiner

    backend = get_backend(device)
    fm = FillerMiner(cfg, cfg.pow.params())
    h = Header(
        cfg.version,
        cfg.chain_id,
        1,
        bytes(32),
        cfg.genesis_timestamp,
        1,
        bytes(32),
        bytes(32),
        bytes(20),
        NULL_JOB,
        0,
        b"",
    )
    fm.attempt(backend, h, 0)  # builds the operands (once per height) and warms up
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fm.attempt(backend, h, 1 + n)
        n += 1
    rate = n * fm.macs / (time.perf_counter() - t0)
    return max(cfg.min_block_work, int(rate * cfg.target_block_time))


def network_file(base: Path, network: str, now: int, block_work: int | None = None) -> str:
    """The --network value every node of the devnet in `base` uses: `network` itself when its genesis is
    dated, else base/network.toml, written (launched at `now`, with `initial_block_work = block_work` when
    given) on the first run and reused after."""
    import re

    from chain.config import launch, load_config, parse_config

    cfg = load_config(network)
    if cfg.dated:
        return network
    path = base / "network.toml"
    if not path.exists():
        text = launch(cfg, now).source
        if block_work is not None:
            text, n = re.subn(
                r"(?m)^initial_block_work\s*=\s*\d+[^\n]*",
                f"initial_block_work = {block_work}   # calibrated on this machine at launch",
                text,
            )
            if n != 1:
                raise ValueError(f"{network}: no initial_block_work line to calibrate")
            parse_config(text)  # still a valid network
        path.write_text(text)
    elif load_config(path).name != cfg.name:
        raise ValueError(f"{path} holds network {load_config(path).name!r}, not {cfg.name!r}")
    return str(path)


def _launch_block_work(base: Path, args: argparse.Namespace) -> int | None:
    """The calibrated initial difficulty for a devnet launched now (None: already launched, a dated
    network, --no-calibrate, or not mining)."""
    from chain.config import load_config

    cfg = load_config(args.network)
    if cfg.dated or (base / "network.toml").exists() or args.no_calibrate or args.no_mine:
        return None
    work = calibrated_block_work(cfg, args.device)
    print(
        f"devnet: calibrated initial difficulty: {work / 1e9:.1f} G multiply-adds per block "
        f"({work / cfg.target_block_time / 1e9:.1f} GMAC/s on {args.device}, {cfg.target_block_time} s blocks)",
        flush=True,
    )
    return work


def _issuer_wallet(base: Path, network: str) -> Path | None:
    """The devnet's genesis issuer key (chain.econsim.issuer_key) written beside the client's wallet,
    when the network's genesis names that issuer."""
    from chain.config import load_config
    from chain.econsim import issuer_key

    ik = issuer_key()
    try:
        cfg = load_config(network)
    except (OSError, ValueError):
        return None
    if not any(i.address == ik.address for i in cfg.genesis_issuers):
        return None
    p = base / "issuer-wallet"
    if not p.exists():
        save_key(p, ik, None, allow_unencrypted=True)
    return p


def run(args: argparse.Namespace) -> int:
    base = Path(args.datadir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    lock = _lock(base)
    if lock is None:
        return 1
    busy = [args.base_port + i for i in range(args.nodes) if _port_in_use(args.base_port + i)]
    if busy:
        print(
            f"devnet: port(s) {busy} already answer on 127.0.0.1 (nodes left from an earlier run? another "
            "program?); stop them or choose --base-port",
            file=sys.stderr,
        )
        return 1
    try:
        network = network_file(base, args.network, int(time.time()), _launch_block_work(base, args))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"devnet: {e}", file=sys.stderr)
        return 1
    wallet_path = base / "wallet"
    if wallet_path.exists():
        wallet = load_key(wallet_path)
    else:
        wallet = PrivateKey.generate()
        save_key(wallet_path, wallet, None, allow_unencrypted=True)
    issuer_path = _issuer_wallet(base, network)
    ports = [args.base_port + i for i in range(args.nodes)]
    procs: list[subprocess.Popen] = []
    stopping = False

    def stop_all(*_a) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    for i, port in enumerate(ports):
        d = base / f"node{i}"
        d.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "node.cli",
            "node",
            "--datadir",
            str(d),
            "--network",
            network,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            args.device,
            "--mine-interval",
            str(args.block_interval),
        ]
        if not args.no_mine:
            cmd.append("--mine")
        if getattr(args, "log_json", False):
            cmd.append("--log-json")  # the nodes' logs (D/node<i>/node.log) as JSON lines too
        for j, p in enumerate(ports):
            if j != i:
                cmd += ["--peer", f"127.0.0.1:{p}"]
        log = open(d / "node.log", "ab")
        env = dict(os.environ)
        # share the cores between the nodes instead of oversubscribing them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nodes)))
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(Path(__file__).resolve().parents[2]),
                env=env,
                preexec_fn=_die_with_parent,
            )
        )
        log.close()
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    rc = 0
    try:
        for i, u in enumerate(urls):
            if stopping:
                break
            st = _wait_ready(u, 60.0, lambda: stopping or procs[i].poll() is not None)
            if st is None and not stopping:
                print(f"devnet: node{i} did not start; see {base / f'node{i}' / 'node.log'}", file=sys.stderr)
                rc = 1
                stopping = True
                break
            try:
                own = load_key(base / f"node{i}" / "node_key.json").pubkey.hex()
            except Exception:
                own = None
            if st is not None and own is not None and st.get("node_id") != own:
                print(
                    f"devnet: {u} answers as node {st.get('node_id', '?')[:16]}, not node{i} "
                    f"({own[:16]}); another node holds the port",
                    file=sys.stderr,
                )
                rc = 1
                stopping = True
                break
        if not stopping:
            try:
                _fund(urls[0], wallet)
            except (OSError, ApiError) as e:
                print(f"devnet: could not fund the wallet: {e}", file=sys.stderr)
            if not _wait_funded(urls[0], wallet, 0 if args.no_mine else FUND_WAIT_S, lambda: stopping):
                print(
                    "devnet: the wallet's funding is still pending (not mined yet); balances show it once "
                    "a block includes it"
                )
            print(
                json.dumps(
                    {
                        "nodes": urls,
                        "datadirs": [str(base / f"node{i}") for i in range(args.nodes)],
                        "wallet": str(wallet_path),
                        "address": wallet.address.hex(),
                        "issuer_wallet": str(issuer_path) if issuer_path else None,
                    }
                )
            )
            print(f"devnet: {args.nodes} node(s) up: {' '.join(urls)}")
            print(f"devnet: explorer at {urls[0]}/ (open it in a browser)")
            print(f"devnet: client wallet {wallet_path} (address {wallet.address.hex()})")
            if issuer_path is not None:
                print(
                    f"devnet: issuer wallet {issuer_path} (address {load_key(issuer_path).address.hex()}); "
                    f"try `pouw issuer show --wallet {issuer_path} --node {urls[0]}`"
                )
            print(f"devnet: try `pouw wallet balance --wallet {wallet_path} --node {urls[0]}`; Ctrl-C stops")
            sys.stdout.flush()
        t0 = last = time.time()
        while not stopping:
            time.sleep(0.2)
            if args.duration and time.time() - t0 >= args.duration:
                break
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                print(f"devnet: node(s) {dead} exited; stopping", file=sys.stderr)
                rc = 1
                break
            if args.status_every and time.time() - last >= args.status_every:
                last = time.time()
                parts = []
                for i, u in enumerate(urls):
                    try:
                        s = NodeClient(u, timeout=2.0).call("GET", "/api/v1/status")
                        parts.append(
                            f"node{i} h={s['height']} tip={s['tip'][:10]} peers={s['peers']} "
                            f"mempool={s['mempool']['size']} work_rate={s['work_rate'] / 1e9:.3f} GMAC/s"
                        )
                    except (OSError, ApiError, ValueError):
                        parts.append(f"node{i} (no answer)")
                try:
                    bal = NodeClient(urls[0], timeout=2.0).call("GET", f"/api/v1/accounts/{wallet.address.hex()}")[
                        "balance"
                    ]
                    parts.append(f"wallet={fmt_amount(bal)}")
                except (OSError, ApiError, ValueError):
                    pass
                print("devnet: " + " | ".join(parts))
                sys.stdout.flush()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.time() + 20
        for p in procs:
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        print(f"devnet: stopped {len(procs)} node(s)")
    return rc
