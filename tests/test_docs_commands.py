"""Every command of docs/mining.md, docs/validating.md and docs/jobs-client.md runs, against a regtest node
(mining, taking paid jobs) standing in for the README's devnet; commands marked `# GPU` are checked for argument
parsing only (no device here). The Python blocks of docs/jobs-client.md (the five-minute example with its
quantized float layer, the SDK reference) run too, the reference's placeholders bound by a small preamble.
And docs/examples/verify_block.py, written from the docs alone, agrees with the node on real blocks
(transfers, a paid job) and rejects tampered ones with the node's reasons."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from chain.block import Block
from chain.config import load_config
from chain.errors import ValidationError
from chain.keys import PrivateKey, faucet_key
from chain.tx import make_transfer
from chain.validation import check_header_proof
from node.client.sdk import Client
from testkit.nodes import free_port, start_node, wait_for
from node.client.worker import ApiError, NodeClient
from pouw.proof import TileProof

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config("regtest")
DOCS = ("docs/mining.md", "docs/validating.md", "docs/jobs-client.md")
STAND_IN = ("bash scripts/run.sh",)  # the README's devnet: the regtest node and a funded wallet stand in


def code_blocks(path: Path, lang: str) -> list[str]:
    """The bodies of the ```<lang> blocks of a markdown file."""
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.M | re.S)


def bash_blocks(path: Path) -> list[list[str]]:
    """The ```bash blocks of a markdown file, as logical lines (continuations joined, blank lines dropped)."""
    out = []
    for body in code_blocks(path, "bash"):
        lines = [x.strip() for x in body.replace("\\\n", " ").splitlines()]
        out.append([x for x in lines if x and not x.startswith("#")])
    return out


def check_gpu_line(line: str) -> str:
    """A `# GPU` command: parse it as far as can be done without a device. Returns what was checked."""
    from node.cli import build_parser

    cmd = line.split("# GPU")[0].strip().replace('"$ADDR"', "00" * 20)
    if cmd.startswith(".venv/bin/pouw "):
        argv = shlex.split(cmd)[1:]
        args = build_parser().parse_args(argv)  # SystemExit(2) on a bad option
        assert callable(args.func), cmd
        return "parsed"
    if cmd.startswith("bash ") and cmd.endswith(".sh"):
        script = ROOT / cmd.split()[1]
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return "bash -n"
    if m := re.fullmatch(r'\.venv/bin/python -m pip install -e "\.\[(\w+)\]"', cmd):
        import tomllib

        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert m.group(1) in extras, f"no extra {m.group(1)!r} in pyproject.toml"
        return "extra exists"
    if cmd.startswith(("python3 -m venv", "bash scripts/setup.sh", ".venv/bin/python -c")):
        return "skipped: needs a CUDA build of torch and a GPU"
    raise AssertionError(f"no check for GPU command {cmd!r}")


@pytest.fixture(scope="module")
def regtest_node(tmp_path_factory):
    """A mining regtest node in its own process on a free port (the README's devnet node's stand-in)."""
    d = tmp_path_factory.mktemp("docnode")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = open(d / "node.log", "w")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "node",
            "--datadir",
            str(d / "data"),
            "--network",
            "regtest",
            "--port",
            str(port),
            "--mine",
            "--mine-interval",
            "0.3",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 60
    while True:
        try:
            if NodeClient(url, timeout=2).call("GET", "/api/v1/status")["height"] >= 2:
                break
        except (OSError, ApiError, ValueError):
            pass
        assert time.time() < end and p.poll() is None, (d / "node.log").read_text()[-3000:]
        time.sleep(0.2)
    yield port
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    log.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("doc", DOCS)
def test_every_command_in_the_doc_runs(doc, regtest_node, tmp_path):
    work = doc_workdir(tmp_path, regtest_node)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    blocks = bash_blocks(ROOT / doc)
    assert blocks, f"{doc} has no bash blocks"
    ran = checked = 0
    outputs = []
    for lines in blocks:
        script = []
        for line in lines:
            if re.search(r"#\s*GPU\s*$", line):
                check_gpu_line(line)
                checked += 1
            elif line.startswith(STAND_IN):
                check_stand_in(line)
                checked += 1
            else:
                script.append(line.replace("127.0.0.1:8545", f"127.0.0.1:{regtest_node}"))
        if not script:
            continue
        if any(x.startswith("curl ") for x in script) and not shutil_which("curl"):
            pytest.skip("curl is not installed")
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert r.returncode == 0, (
            f"{doc}:\n" + "\n".join(script) + f"\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
        )
        ran += len(script)
        if "verify_block.py" in r.stdout or "verify_block.py" in "\n".join(script):
            assert r.stdout.count('"valid": true') == sum("verify_block.py" in x for x in script), r.stdout
        outputs.append(r.stdout)
    assert ran > 0
    if doc == "docs/mining.md":
        assert checked >= 6  # the GPU lines were all checked
    if doc == "docs/jobs-client.md":  # the Cs the shell wrote are exact, the demo's logits identical
        assert checked == 1  # bash scripts/run.sh, stood in for
        ab = np.load(work / "A.npy").astype(np.int64) @ np.load(work / "B.npy")
        for name in ("C.npy", "C2.npy"):
            c = np.load(work / name)
            assert c.dtype == np.int32 and np.array_equal(c.astype(np.int64), ab), name
        assert "logits identical (local int8 vs jobs on" in outputs[-1] and ": True" in outputs[-1]


def doc_workdir(tmp_path: Path, port: int) -> Path:
    """A directory laid out like a checkout after the README's `bash scripts/run.sh`: .venv/bin/{python,pouw}
    (shims to this interpreter), docs/, benchmarks/, scripts/, and ./devnet-data/wallet, an unencrypted key
    funded from the faucet like the devnet's client wallet (node/cli/devnet.py)."""
    from chain.keys import save_key
    from node.cli.devnet import FUND_TOKENS
    from node.client.wallet import UNIT, send

    work = tmp_path / "w"
    (work / ".venv" / "bin").mkdir(parents=True)
    for d in ("docs", "benchmarks", "scripts"):
        (work / d).symlink_to(ROOT / d)
    for name, cmd in (("python", ""), ("pouw", " -m node.cli")):  # .venv/bin/* of the docs: this interpreter
        shim = work / ".venv" / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{cmd} "$@"\n')
        shim.chmod(0o755)
    key = PrivateKey.generate()
    (work / "devnet-data").mkdir()
    save_key(work / "devnet-data" / "wallet", key, None, allow_unencrypted=True)
    url = f"http://127.0.0.1:{port}"
    send(url, faucet_key(), key.address, FUND_TOKENS * UNIT, 10_000)
    end = time.time() + 60
    while NodeClient(url).call("GET", f"/api/v1/accounts/{key.address.hex()}")["balance"] == 0:
        assert time.time() < end, "the wallet's funding was not mined"
        time.sleep(0.2)
    return work


def check_stand_in(line: str) -> None:
    """`bash scripts/run.sh`, replaced by the regtest node: the script parses and its `pouw devnet` line
    parses with the CLI."""
    from node.cli import build_parser

    script = ROOT / "scripts/run.sh"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    devnet = next(x for x in script.read_text().splitlines() if x.startswith("exec .venv/bin/pouw devnet"))
    argv = shlex.split(devnet.split(".venv/bin/pouw", 1)[1].replace('"$@"', ""))
    assert callable(build_parser().parse_args(argv).func), devnet


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def test_jobs_client_cli_synopsis_names_real_options():
    """The `pouw job` synopsis of docs/jobs-client.md (a usage summary, not run): every subcommand and option
    it names exists in the CLI's parser (the commands themselves run in the bash blocks above)."""
    import argparse
    from node.cli import build_parser

    def sub(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        acts = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        assert acts and name in acts[0].choices, name
        return acts[0].choices[name]

    job = sub(build_parser(), "job")
    lines = [x for x in (ROOT / "docs/jobs-client.md").read_text().splitlines() if x.startswith("pouw job ")]
    assert len(lines) >= 9, lines
    for line in lines:
        usage = re.split(r"\s{3,}", line)[0]  # drop the right-hand description
        prev = ""
        for part in usage[len("pouw job ") :].split(" | "):
            first = part.split()[0]
            name = prev if first.startswith("--") else first  # `list ... | --mine ...`: more options of `list`
            assert name, line
            opts = {o for a in sub(job, name)._actions for o in a.option_strings}
            named = set(re.findall(r"--[a-z][a-z-]*", part))
            assert named <= opts, (line, named - opts)
            prev = name


# --- the Python of docs/jobs-client.md against the node ---------------------------------------------------------
# The SDK reference's placeholders, bound to real values: a job with a mined result (`job_id`), its padded
# operands and C, a blob the node stores (the job's A), fees for a batch.
SDK_PREAMBLE = """
import numpy as np
from node.client.sdk import Client
from node.blobs import decode_array
wallet = "devnet-data/wallet"
_c = Client(URL)
rng = np.random.default_rng(7)
m, k, n = 20, 70, 12
a = rng.integers(-64, 65, size=(m, k), dtype=np.int8)
b = rng.integers(-64, 65, size=(k, n), dtype=np.int8)
a1, a2 = a, rng.integers(-64, 65, size=(9, k), dtype=np.int8)
pairs = [(a1, b), (a2, b)]
f1 = f2 = _c.quote(*_c.job_shape(m, k, n))["suggested_max_fee"]
_done = _c.submit_job(wallet, a, b)
_done.confirm()
job_id = _done.job_id
_rec = _c.job_status(job_id)
h = _rec["blob_a"]
data = _c.get_blob(h)
address = _c.job_status(job_id)["client"]
a_padded = decode_array(data, "int8", (_rec["m"], _rec["k"]))
b_padded = decode_array(_c.get_blob(_rec["blob_b"]), "int8", (_rec["k"], _rec["n"]))
c_full = decode_array(_c.get_blob(_rec["blob_c"]), "int32", (_rec["m"], _rec["n"]))
"""
# Reference lines run on that finished, correct job must be refused with their documented codes.
SDK_REFUSED = {
    "c.cancel_job(wallet, job_id)": ("bad-job-state",),
    "c.dispute(wallet, job_id, a_padded, b_padded, c_full)": ("fraud-not-proven",),
    # within its 4-block window a challenge is accepted (a txid), after it the node refuses it
    "c.challenge_job(wallet, job_id)": (None, "bad-job-state", "bad-job-window"),
}


def run_statements(src: str, ns: dict, refused: dict[str, tuple]) -> list[str]:
    """Execute `src` statement by statement in `ns`; a statement named in `refused` must raise ClientError
    with one of its codes (None: it may also succeed). Returns the statements run."""
    from node.client.sdk import ClientError

    ran = []
    tree = ast.parse(src)
    for stmt in tree.body:
        seg = ast.get_source_segment(src, stmt)
        code = compile(ast.Module([stmt], type_ignores=[]), "<doc>", "exec")
        if seg in refused:
            try:
                exec(code, ns)
                assert None in refused[seg], f"{seg} was not refused"
            except ClientError as e:
                assert e.code in refused[seg], (seg, e.code, str(e))
        else:
            exec(code, ns)
        ran.append(seg)
    return ran


@pytest.mark.timeout(240)
def test_python_of_jobs_client_runs(regtest_node, tmp_path, monkeypatch):
    from node.client.sdk import JobResult, Settlement
    from node.client.quant import dequantize

    work = doc_workdir(tmp_path, regtest_node)
    monkeypatch.chdir(work)
    url = f"http://127.0.0.1:{regtest_node}"
    blocks = [b.replace("http://127.0.0.1:8545", url) for b in code_blocks(ROOT / "docs/jobs-client.md", "python")]
    assert len(blocks) == 2, "the five-minute example and the SDK reference"

    # the five-minute example, as written: exact C, confirmed with a receipt, a quantized float layer
    ns: dict = {}
    exec(compile(blocks[0], "jobs-client.md:five-minutes", "exec"), ns)
    res = ns["res"]
    assert isinstance(res, JobResult) and res.confirmed and res.receipt["result"]["txid"]
    assert res.receipt["submit"]["txid"] == res.job_id
    x, w, sx, sw, y = ns["x"], ns["w"], ns["sx"], ns["sw"], ns["y"]
    assert y.shape == (64, 256) and y.dtype == np.float32
    # the documented bound on the quantization error, entry-wise
    sx64, sw64 = np.asarray(sx, np.float64).reshape(-1, 1), np.asarray(sw, np.float64).reshape(1, -1)
    bound = (np.abs(x) @ np.ones_like(w) * sw64 + sx64 * (np.ones_like(x) @ np.abs(w))) / 2 + x.shape[
        1
    ] * sx64 * sw64 / 4
    err = np.abs(y.astype(np.float64) - x.astype(np.float64) @ w.astype(np.float64))
    assert (err <= bound * (1 + 1e-5) + 1e-4).all() and err.max() > 0
    assert np.array_equal(dequantize(ns["qx"].astype(np.int32) @ ns["qw"].astype(np.int32), sx, sw), y)

    # the SDK reference, line by line, with its placeholders bound
    ns = {"URL": url}
    exec(SDK_PREAMBLE, ns)
    ran = run_statements(blocks[1], ns, SDK_REFUSED)
    assert set(SDK_REFUSED) <= set(ran) and len(ran) >= 20, ran
    assert isinstance(ns["st"], Settlement) and ns["st"].outcome == "released"
    assert ns["res"].receipt is not None and ns["res"].confirmed
    outs = ns["outs"]
    assert len(outs) == 2 and all(isinstance(o, JobResult) for o in outs)
    for o, (ai, bi) in zip(outs, ns["pairs"]):
        assert np.array_equal(o.c.astype(np.int64), ai.astype(np.int64) @ bi)


# --- the by-hand verifier against the node ----------------------------------------------------------------------
def load_verifier():
    spec = importlib.util.spec_from_file_location("verify_block", ROOT / "docs/examples/verify_block.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_verifier_imports_nothing_of_the_project():
    src = (ROOT / "docs/examples/verify_block.py").read_text()
    imported = set(re.findall(r"^(?:import|from) ([A-Za-z_]+)", src, re.M))
    assert imported <= {
        "__future__",
        "argparse",
        "hashlib",
        "json",
        "struct",
        "sys",
        "tomllib",
        "urllib",
        "msgpack",
        "numpy",
        "cryptography",
    }, imported


@pytest.mark.timeout(240)
def test_verifier_agrees_with_the_node_and_rejects_tampering(tmp_path):
    vb = load_verifier()

    async def main():
        n = await start_node(tmp_path / "n", mine=True, interval=0.2, filler_shape=(64, 512, 32))
        try:
            client_key = PrivateKey.from_phrase(b"verify client")
            f = faucet_key()
            nonce = n.mempool.pending_nonce(f.address)
            for i in range(3):  # a block with several transactions (an odd count: the carried-up node)
                n.add_tx(make_transfer(f, CFG.chain_id, nonce + i, client_key.address, 10**12, 1000 + i))
            await wait_for(lambda: n.chain.get_account(client_key.address).balance == 3 * 10**12, 30, what="funding")
            rng = np.random.default_rng(9)
            a = rng.integers(-64, 65, size=(20, 70), dtype=np.int8)
            b = rng.integers(-64, 65, size=(70, 12), dtype=np.int8)
            res = await asyncio.to_thread(Client(n.url).submit_job, client_key, a, b, None, True, timeout=90)
            # C comes before the paid pass's block, which the throttled miner holds until its interval ends
            await wait_for(lambda: n.chain.get_job(bytes.fromhex(res.job_id)) is not None, 30, what="paid block")
            top = n.chain.height
            results = [await asyncio.to_thread(vb.verify, n.url, str(h)) for h in range(top + 1)]  # raise if not
            blocks = [n.chain.get_block(n.chain.block_hash_at(h)) for h in range(top + 1)]
            return results, blocks
        finally:
            await n.stop()

    results, blocks = asyncio.run(main())
    assert results[0]["genesis"] is True
    jobs = {tuple(r["job"]) for r in results[1:]}
    assert (64, 512, 32) in jobs and len(jobs) >= 2  # filler and the paid job's shape
    assert max(r["txs"] for r in results) >= 2
    for r, blk in zip(results, blocks):
        assert r["hash"] == blk.hash.hex() and r["height"] == blk.height and r["txs"] == len(blk.txs)
        if blk.height:
            check_header_proof(blk.header, CFG)  # the node accepts it too
            pr = TileProof.decode(blk.header.proof)
            assert (bytes.fromhex(r["ticket"]), r["tile"]) == (pr.ticket, [pr.ti, pr.tj])
    # tampering: the verifier says what the node says
    params = CFG.pow
    blk = next(b for b in blocks[1:] if len(b.txs) >= 2)
    header, txs = msgpack.unpackb(blk.encoded)
    assert vb.tx_root(txs) == header[6] and vb.tx_root(txs[:1]) != header[6] and vb.tx_root([]) != header[6]

    def reason(mutate) -> tuple[str, str]:
        h = [list(x) if isinstance(x, list) else x for x in header]
        mutate(h)
        try:
            vb.check_proof(h, params.rank, params.tile_h, params.tile_w)
            mine = "accepted"
        except vb.Reject as e:
            mine = e.args[0]
        try:
            check_header_proof(Block.decode(msgpack.packb([h, []])).header, CFG)
            node = "accepted"
        except ValidationError as e:
            node = e.reason
        return mine, node

    proof = header[11]
    head = vb.PROOF_HEAD.size
    k = header[9][3]
    flip = lambda data, i: data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]  # noqa: E731

    def in_range(start: int) -> int:  # an operand byte that stays in [-64, 64] with its low bit flipped
        return next(i for i in range(start, start + k) if -64 <= ((proof[i] ^ 1) + 128) % 256 - 128 <= 64)

    cases = {
        "nonce": (lambda h: h.__setitem__(10, h[10] ^ 1), "bad-pow-template"),
        "timestamp": (lambda h: h.__setitem__(4, h[4] + 1), "bad-pow-template"),
        "a row": (lambda h: h.__setitem__(11, flip(proof, in_range(head))), "bad-pow-merkle-a"),
        "b column": (lambda h: h.__setitem__(11, flip(proof, in_range(head + params.tile_h * k))), "bad-pow-merkle-b"),
        "path": (lambda h: h.__setitem__(11, flip(proof, len(proof) - 1)), "bad-pow-merkle-b"),
        "ticket": (lambda h: h.__setitem__(11, flip(proof, head - 1)), "bad-pow-ticket"),
        "truncated": (lambda h: h.__setitem__(11, proof[:-1]), "bad-pow-encoding"),
        "h_a": (lambda h: h[9].__setitem__(0, flip(h[9][0], 0)), "bad-pow-template"),
    }
    for name, (mutate, want) in cases.items():
        assert reason(mutate) == (want, want), name
    # an A entry out of range, with the opening otherwise intact, is caught before the Merkle check
    big = proof[:head] + bytes([100]) + proof[head + 1 :]
    assert reason(lambda h: h.__setitem__(11, big)) == ("bad-pow-range", "bad-pow-range")
