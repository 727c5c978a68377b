"""The quantized MLP: layers run through the useful-work engine give bit-identical logits."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn", reason="scikit-learn (extra 'demo') not installed")

from pouw.inference import accuracy, local_matmul, train_digits_mlp  # noqa: E402
from pouw.miner import mine_job, prepare_job  # noqa: E402
from pouw.padding import crop, pad_operands  # noqa: E402
from pouw.params import PowParams  # noqa: E402

P = PowParams(rank=32, tile_h=8, tile_w=8)


def engine_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ap, bp, shape = pad_operands(a, b, P)
    prep = prepare_job(ap, bp, P)
    res = mine_job(b"inference", prep.job, ap, bp, 1, P, prepared=prep)
    return crop(res.c, shape)


def test_mlp_logits_identical_through_engine():
    model, data = train_digits_mlp(hidden=32, epochs=15)
    x, y = data["x_test"][:120], data["y_test"][:120]
    local = model.forward(x, local_matmul)
    mined = model.forward(x, engine_matmul)
    assert torch.equal(local, mined)
    assert accuracy(local, y) > 0.85
