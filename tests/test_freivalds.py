"""Freivalds check and single-entry fraud proofs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pouw.commit import commit_job, commit_result
from pouw.errors import PowError
from hypothesis import given, settings
from hypothesis import strategies as st

from pouw.freivalds import (
    P61,
    build_fraud_proof,
    challenge_vector,
    find_wrong_entry,
    freivalds,
    _matvec_mod_int64,
    matvec_mod,
    matvec_mod_many,
    verify_fraud_proof,
)


def ops(m=48, k=256, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-64, 65, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-64, 65, (k, n), dtype=torch.int8, generator=g)
    return a, b, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)


def test_matvec_mod_matches_python_ints():
    g = torch.Generator().manual_seed(3)
    mat = torch.randint(-(2**31) + 1, 2**31 - 1, (5, 7), dtype=torch.int64, generator=g).to(torch.int32)
    x = [P61 - 1 - i * 12345 for i in range(7)]
    want = [sum(int(mat[i, j]) * x[j] for j in range(7)) % P61 for i in range(5)]
    assert matvec_mod(mat, x) == want


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 70),
    st.sampled_from([8, 16, 24, 31]),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_matvec_mod_many_matches_python_ints_on_both_paths(rows, cols, bits, nvec, seed):
    """Entries up to 2^bits in magnitude (int8-like: the float64 path; int32 extremes: the int64 path, or
    float64 with narrow limbs) and vectors up to p - 1: every result equals the big-integer reference."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lim = (1 << bits) - 1
    mat = rng.integers(-lim, lim + 1, size=(rows, cols), dtype=np.int64)
    mat[0, 0] = -lim if seed % 2 else lim  # the extreme magnitude is present
    mat = mat.astype(np.int8 if bits < 8 else np.int32)
    xs = [[int(v) for v in rng.integers(0, P61, size=cols, dtype=np.uint64)] for _ in range(nvec)]
    xs[0][0] = P61 - 1
    want = [[sum(int(mat[i, j]) * x[j] for j in range(cols)) % P61 for i in range(rows)] for x in xs]
    assert matvec_mod_many(mat, xs) == want
    assert [matvec_mod(mat, x) for x in xs] == want
    assert [_matvec_mod_int64(mat, x) for x in xs] == want


def test_matvec_mod_float_path_at_the_largest_job_shape():
    """int8 operands at the chain's largest inner dimension (4096): the float64 path, exact."""
    import numpy as np
    from pouw.freivalds import _float_limb_bits

    assert _float_limb_bits(64, 4096) == 34 and _float_limb_bits(2**31 - 1, 4096) == 10
    assert _float_limb_bits(2**31 - 1, 2**16) is None  # the int64 path
    rng = np.random.default_rng(9)
    b = rng.integers(-64, 65, size=(5, 4096), dtype=np.int8)
    b[0] = 64
    x = [P61 - 1 - i for i in range(4096)]
    assert matvec_mod(b, x) == [sum(int(b[i, j]) * x[j] for j in range(4096)) % P61 for i in range(5)]


def test_correct_product_passes():
    a, b, c = ops()
    job = commit_job(a, b)
    assert freivalds(a, b, c, job, commit_result(c), rounds=2) == []


@pytest.mark.parametrize("delta", [1, -1, 2**20, -(2**30)])
def test_single_wrong_entry_is_caught(delta):
    a, b, c = ops(seed=1)
    bad = c.clone()
    bad[17, 9] = int(bad[17, 9]) + delta if abs(int(bad[17, 9]) + delta) < 2**31 else 0
    job = commit_job(a, b)
    assert freivalds(a, b, bad, job, commit_result(bad)) == [17]
    assert find_wrong_entry(a, b, bad, [17]) == (17, 9)


def test_fraud_proof_accepted_for_wrong_entry_rejected_for_right_one():
    a, b, c = ops(seed=2)
    job = commit_job(a, b)
    bad = c.clone()
    bad[3, 30] += 5
    h_bad = commit_result(bad)
    verify_fraud_proof(job, h_bad, build_fraud_proof(a, b, bad, 3, 30))  # accepted: no exception
    with pytest.raises(PowError) as ei:
        verify_fraud_proof(job, h_bad, build_fraud_proof(a, b, bad, 3, 31))  # entry (3, 31) is right
    assert ei.value.reason == "fraud-not-proven"
    with pytest.raises(PowError) as ei:
        verify_fraud_proof(job, commit_result(c), build_fraud_proof(a, b, c, 3, 30))
    assert ei.value.reason == "fraud-not-proven"


def test_fraud_proof_tampering_rejected():
    a, b, c = ops(seed=4)
    job = commit_job(a, b)
    bad = c.clone()
    bad[0, 0] += 1
    h = commit_result(bad)
    fp = build_fraud_proof(a, b, bad, 0, 0)
    cases = {
        "bad-fraud-merkle-a": dataclasses.replace(fp, a_row=bytes([1]) + fp.a_row[1:]),
        "bad-fraud-merkle-b": dataclasses.replace(fp, path_b=(bytes(32),) + fp.path_b[1:]),
        "bad-fraud-merkle-c": dataclasses.replace(
            fp,
            c_row=(int.from_bytes(fp.c_row[:4], "little", signed=True) - 1).to_bytes(4, "little", signed=True)
            + fp.c_row[4:],
        ),
        "bad-fraud-index": dataclasses.replace(fp, i=10**6),
        "bad-fraud-encoding": dataclasses.replace(fp, b_col=fp.b_col[:-1]),
    }
    for reason, proof in cases.items():
        with pytest.raises(PowError) as ei:
            verify_fraud_proof(job, h, proof)
        assert ei.value.reason == reason


def test_challenge_vector_binds_result():
    a, b, c = ops(seed=5)
    job = commit_job(a, b)
    x1 = challenge_vector(commit_result(c), job, 10)
    c2 = c.clone()
    c2[0, 0] += 1
    assert x1 != challenge_vector(commit_result(c2), job, 10)
    assert all(0 <= v < P61 for v in x1)
