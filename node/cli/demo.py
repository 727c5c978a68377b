"""A local mining demo: mines filler jobs on a device, checks every proof, and reports rates."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from kernels import get_backend
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams
from pouw.verify import verify_proof
from node.logfmt import event

log = logging.getLogger("pouw.demo")


def run(args: argparse.Namespace) -> int:
    params = PowParams()
    size = params.min_k if args.size is None else args.size
    err = params.square_size_error(size)
    if err is not None:
        print(f"pouw mine-demo: {err} (use --size {params.min_k} or more)", file=sys.stderr)
        return 2
    backend = get_backend(args.device)
    shape = (size, size, size)
    target = (1 << 256) // (params.tile_work(size) * 256)
    event(
        log,
        logging.INFO,
        "mining filler jobs",
        m=shape[0],
        k=shape[1],
        n=shape[2],
        device=backend.device,
        rank=params.rank,
        tile_h=params.tile_h,
        tile_w=params.tile_w,
    )
    done = found = 0
    macs = 0
    start = time.perf_counter()
    while not args.jobs or done < args.jobs:
        a, b = filler_operands(done.to_bytes(8, "little"), shape)
        prep = prepare_job(a, b, params)
        template = b"demo-template" + done.to_bytes(8, "little")
        res = mine_job(template, prep.job, a, b, target, params, backend, prepared=prep)
        done += 1
        macs += prep.job.macs
        for p in res.proofs[:1]:
            verify_proof(template, prep.job, p, target, params)
            found += 1
        el = time.perf_counter() - start
        event(
            log,
            logging.INFO,
            "filler job done",
            job=done,
            winning_tiles=res.winners,
            best_ticket=res.proofs[0].ticket.hex()[:12] if res.proofs else None,
            gmacs_per_s=round(macs / el / 1e9, 1),
            blocks_found=found,
        )
    return 0
