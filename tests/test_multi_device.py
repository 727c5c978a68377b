"""Several devices in one miner (`pouw miner --device cuda:0,cuda:1` / `cuda:all`): the device list, and one worker
per device against a real node, where a faulty device is dropped alone and the others keep mining (CPU devices
and a backend that faults stand in for GPUs)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch

import kernels
from chain.config import load_config
from chain.keys import PrivateKey
from kernels import DeviceError, parse_devices
from kernels.base import Capabilities
from node.cli import main as cli_main
from testkit.nodes import start_node
from node.client.worker import run_remote_devices

CFG = load_config("regtest")


def test_parse_devices_single_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_devices("cpu") == ["cpu"]
    assert parse_devices("cuda:all", cuda_count=lambda: 3) == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_devices(" CUDA:1, cuda:0 ") == ["cuda:1", "cuda:0"]  # the operator's order
    assert parse_devices("cpu,cuda:1") == ["cpu", "cuda:1"]
    assert parse_devices("cuda:all") == ["cuda:0", "cuda:1"]


@pytest.mark.parametrize(
    "spec,why",
    [
        ("cpu,cpu", "cpu named twice"),
        ("cpu,,cuda:0", "empty entry"),
        ("cuda:all,cpu", "cuda:all stands alone"),
        ("cuda:0,cuda:2", "only 2 CUDA device(s) exist"),
        ("cuda:0,gpu:1", "unknown device 'gpu:1'"),
    ],
)
def test_parse_devices_rejects(monkeypatch: pytest.MonkeyPatch, spec: str, why: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError) as e:
        parse_devices(spec)
    assert why in str(e.value)


def test_cuda_all_without_cuda() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        parse_devices("cuda:all", cuda_count=lambda: 0)


def test_miner_cli_refuses_a_bad_device_list(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["miner", "--device", "cpu,cpu", "--node", "http://127.0.0.1:9"]) == 2
    assert "cpu named twice" in capsys.readouterr().err


class _FaultyBackend:
    """A device that fails every kernel call (e.g. a GPU that lost its context)."""

    name = "cuda"
    device = torch.device("cpu")
    caps = Capabilities()  # declares no optional hooks: every pass goes through the failing methods
    kernel_path = "faulty"

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def fail(*args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        return fail


@pytest.mark.timeout(120)
def test_one_worker_per_device_and_a_fault_drops_only_its_device(tmp_path, monkeypatch, caplog) -> None:
    real = kernels.get_backend
    opened: list[str] = []

    def get_backend(spec: str = "auto", **kw):
        opened.append(spec)
        return _FaultyBackend() if spec == "cuda:1" else real(spec, **kw)

    monkeypatch.setattr(kernels, "get_backend", get_backend)
    caplog.set_level(logging.INFO, logger="pouw.worker")

    async def main() -> None:
        n = await start_node(tmp_path / "n")
        try:
            h0 = n.chain.height
            addr = PrivateKey.from_phrase(b"multi").address
            found = await asyncio.to_thread(
                run_remote_devices, n.url, ["cpu", "cuda:1"], addr.hex(), max_blocks=2, duration=90, max_failures=1
            )
            assert found == 2 and n.chain.height == h0 + 2
            assert n.chain.get_account(addr).balance == 2 * CFG.subsidy(1)
            devices = sorted(w["device"] for w in n.workers.values())
            assert devices == ["cpu", "cuda:1"]  # one worker (own id and rate) per device
        finally:
            await n.stop()

    asyncio.run(main())
    assert {"cpu", "cuda:1"} <= set(opened)
    events = [(r.getMessage(), getattr(r, "pouw_fields", {})) for r in caplog.records]
    dropped = [f for m, f in events if m == "device dropped after consecutive faults"]
    assert [(f["device"], f["faults"]) for f in dropped] == [("cuda:1", 1)] and "illegal memory access" in dropped[0][
        "last"
    ]
    assert ("workers done", {"blocks": 2, "per_device": "cpu=2,cuda:1=0"}) in events
