"""Backends declare their optional stages in `kernels.base.Capabilities`, and the miner runs what they declare.

A backend whose record declares nothing gets the generic paths; each declared hook is the one `mine_job` calls;
both give the same C, tickets and proofs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kernels.base import Capabilities
from kernels.cpu import CpuBackend
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams

P = PowParams(rank=32, tile_h=8, tile_w=8)
SHAPE = (32, 32 * 16, 24)


class Declared:
    """A CPU backend (portable path) whose capabilities record is `caps`."""

    name = "cpu"
    kernel_path = "portable:test"

    def __init__(self, caps: Capabilities) -> None:
        self._inner = CpuBackend(native=False)
        self.device = self._inner.device
        self.caps = caps
        self.mm = self._inner.mm
        self.noisy_mm = self._inner.noisy_mm
        self.tile_tickets = self._inner.tile_tickets


def _mine(backend):
    a, b = filler_operands(b"caps", SHAPE)
    prep = prepare_job(a, b, P)
    target = (1 << 256) // (P.tile_work(SHAPE[1]) * 4)
    return mine_job(b"caps-template" + prep.job.h_a + prep.job.h_b, prep.job, a, b, target, P, backend, prepared=prep)


def _same(x, y) -> None:
    assert torch.equal(x.c, y.c)
    assert np.array_equal(np.asarray(x.tickets), np.asarray(y.tickets))
    assert [p.encode() for p in x.proofs] == [p.encode() for p in y.proofs]


def test_capabilities_record_is_frozen_and_empty_by_default() -> None:
    caps = Capabilities()
    assert all(getattr(caps, f.name) in (None, False) for f in dataclasses.fields(caps))
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.add_noise = print  # type: ignore[misc]
    # the portable path declares its own stages (kernels.cpu: noise by gathers, the recovery in its row blocks)
    caps = CpuBackend(native=False).caps
    assert caps.add_noise is not None and caps.noisy_mm_recover is not None and caps.accepts_out
    assert caps.sub_correction is None and caps.correction_operands is None and caps.plain_mm is None


def test_miner_calls_the_declared_hooks_and_only_those() -> None:
    """mine_job runs the hooks a backend declares (here add_noise and sub_correction, written from their
    contracts in kernels.base) and the generic paths for the rest: results equal the all-generic run's."""
    want = _mine(Declared(Capabilities()))
    calls: list[str] = []
    mm = CpuBackend(native=False).mm

    def add_noise(a, b, e_l, f_r, map_a, map_b):
        calls.append("add_noise")
        a2 = a.to(torch.int32) + e_l.to(torch.int32)[:, torch.as_tensor(np.asarray(map_a), dtype=torch.long)]
        b2 = b.to(torch.int32) + f_r.to(torch.int32)[torch.as_tensor(np.asarray(map_b), dtype=torch.long)]
        return a2.to(torch.int8), b2.to(torch.int8)

    def sub_correction(c, pairs):
        calls.append("sub_correction")
        for i, (u, v) in enumerate(pairs):
            c.sub_(mm(u, v) * (128**i))
        return c

    got = _mine(Declared(Capabilities(add_noise=add_noise, sub_correction=sub_correction)))
    assert calls == ["add_noise", "sub_correction"]
    _same(got, want)


def test_cuda_backend_declares_its_device_stages() -> None:
    """The CUDA backend (built without a device: only the declaration is read) runs noise, fused noise and the
    recovery epilogue on the device and takes no out= buffers."""
    from kernels.cuda import CudaBackend

    be = object.__new__(CudaBackend)
    caps = be.caps
    assert caps.noise_factor == be.noise_factor and caps.add_noise == be.add_noise
    assert caps.noisy_mm_recover == be.noisy_mm_recover
    assert caps.sub_correction is None and caps.correction_operands is None and not caps.accepts_out
    assert be.kernel_path in ("triton", "cuda")
