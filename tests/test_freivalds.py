"""Freivalds check and single-entry fraud proofs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pouw.commit import commit_job, commit_result
from pouw.errors import PowError
from pouw.freivalds import (P61, build_fraud_proof, challenge_vector, find_wrong_entry, freivalds,
                            matvec_mod, verify_fraud_proof)


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
    verify_fraud_proof(job, h_bad, build_fraud_proof(a, b, bad, 3, 30))      # accepted: no exception
    with pytest.raises(PowError) as ei:
        verify_fraud_proof(job, h_bad, build_fraud_proof(a, b, bad, 3, 31))   # entry (3, 31) is right
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
        "bad-fraud-merkle-c": dataclasses.replace(fp, c_row=(int.from_bytes(fp.c_row[:4], "little", signed=True) - 1)
                                                  .to_bytes(4, "little", signed=True) + fp.c_row[4:]),
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
