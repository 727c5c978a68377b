"""`pouw demo inference`: a real int8 MLP whose linear layers run as paid jobs on a (dev)net.

Trains pouw.inference's quantized MLP on scikit-learn's bundled digits (nothing downloaded), then runs
the test split through it twice: locally (pouw.inference.local_matmul) and with every int8 product
submitted as a job through the SDK (node.client.sdk.Client.submit_job: upload, pay, wait, verify C by H_C
and Freivalds). Exact products mean the logits must be bit-identical; both accuracies are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def run_inference_jobs(
    client, wallet, *, samples: int = 0, hidden: int = 64, epochs: int = 60, timeout: float = 600.0, progress=None
) -> dict:
    import torch
    from pouw.inference import accuracy, train_digits_mlp

    t0 = time.time()
    model, data = train_digits_mlp(hidden=hidden, epochs=epochs)
    x, y = data["x_test"], data["y_test"]
    if samples:
        x, y = x[:samples], y[:samples]
    jobs: list[dict] = []

    def job_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        res = client.submit_job(wallet, a.numpy(), b.numpy(), wait=True, timeout=timeout, progress=progress)
        jobs.append(
            {"job_id": res.job_id, "shape": [a.shape[0], a.shape[1], b.shape[1]], "fee": res.fee, "miner": res.miner}
        )
        return torch.from_numpy(res.c)

    t1 = time.time()
    local = model.forward(x)
    remote = model.forward(x, matmul=job_matmul)
    identical = bool(torch.equal(local, remote))
    return {
        "samples": int(x.shape[0]),
        "layers": len(model.layers),
        "jobs": jobs,
        "logits_identical": identical,
        "max_abs_logit_diff": float((local - remote).abs().max()),
        "accuracy_local_int8": accuracy(local, y),
        "accuracy_jobs": accuracy(remote, y),
        "accuracy_float": data["float_accuracy"],
        "train_s": round(t1 - t0, 2),
        "jobs_s": round(time.time() - t1, 2),
        "total_fees": sum(j["fee"] for j in jobs),
        "logits_local": local,
        "logits_jobs": remote,
    }


def cmd_inference(args: argparse.Namespace) -> int:
    from node.client.sdk import Client, ClientError, JobFailed
    from pouw.errors import JobError

    client = Client(args.node)

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    try:
        out = run_inference_jobs(client, args.wallet, samples=args.samples, timeout=args.timeout, progress=progress)
    except (JobError, ClientError, JobFailed, OSError) as e:
        print(f"demo inference: {e}", file=sys.stderr)
        return 1
    local, remote = out.pop("logits_local"), out.pop("logits_jobs")
    print(f"logits identical (local int8 vs jobs on {args.node}): {out['logits_identical']}")
    print(
        f"accuracy: local int8 {out['accuracy_local_int8']:.4f}  jobs {out['accuracy_jobs']:.4f}  "
        f"(float {out['accuracy_float']:.4f}) on {out['samples']} test digits"
    )
    print("first logits, local:", np.array2string(local[0].numpy(), precision=3))
    print("first logits, jobs: ", np.array2string(remote[0].numpy(), precision=3))
    print(json.dumps(out))
    return 0 if out["logits_identical"] else 1


def add_arguments(sub) -> None:
    d = sub.add_parser("demo", help="demos that use a running node")
    ds = d.add_subparsers(dest="demo_cmd", required=True)
    p = ds.add_parser("inference", help="digits MLP with its int8 layers run as paid jobs; compare with local")
    p.add_argument("--node", default="http://127.0.0.1:8545")
    p.add_argument("--wallet", default="wallet.json")
    p.add_argument("--samples", type=int, default=0, help="use the first N test digits (0: all)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each job")
    p.set_defaults(func=cmd_inference)
