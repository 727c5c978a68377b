"""GPU kernel exploration: one call that times the pieces of a CUDA mining pass on one shape.

Run on a machine with an NVIDIA GPU:  python -m benchmarks.gpu_explore --size 8192 --out results.jsonl
Prints one line per measurement (and appends it as JSON to --out):
  * torch._int_mm (row-major B and column-major B): the plain-GEMM baseline;
  * the fused Triton kernel with the transcript off (the engine's plain GEMM) and on, for several block configs,
    each checked bit for bit against torch._int_mm (C) and against the default config (messages);
  * the stages of a mining pass (noise, recovery operands, correction, tickets) timed alone.
Timing: CUDA events around each call, median of `--reps` after a warm-up; inputs are 64 MiB+ at 8192, past L2.
With DISABLE_MMA_V3=1 in the environment Triton builds the kernels with Ampere-style mma.sync instead of Hopper's
asynchronous wgmma; every record says which ("mma": "v2" | "v3"). On wgmma Triton waits for each MMA before the
fold reads the accumulator; mma.sync instructions interleave with the fold's ALU work across warps instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch


def median_ms(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "explore.jsonl"))
    ap.add_argument(
        "--configs",
        default="128,128,64,8,3,1;128,128,64,4,4,1;64,128,64,4,4,1;64,128,64,4,3,1;"
        "64,128,32,4,4,1;128,128,32,8,3,1;64,256,64,4,3,1",
        help="bm,bn,bk,warps,stages,fold_split;...",
    )
    ap.add_argument("--digits", type=int, default=3, help="recovery digits for the fused-epilogue variant")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds; stop starting new measurements after")
    args = ap.parse_args()
    t_start = time.time()
    dev = torch.device("cuda:0")
    out = open(args.out, "a")

    def emit(**rec) -> None:
        rec["t"] = round(time.time() - t_start, 1)
        line = json.dumps(rec)
        print(line, flush=True)
        out.write(line + "\n")
        out.flush()

    def late() -> bool:
        return time.time() - t_start > args.deadline

    import triton

    from kernels.triton_kernel import BlockConfig, noisy_matmul_triton

    mma = "v2" if os.environ.get("DISABLE_MMA_V3", "0") not in ("", "0") else "v3"
    emit(
        what="env",
        gpu=torch.cuda.get_device_name(dev),
        torch=torch.__version__,
        triton=triton.__version__,
        sms=torch.cuda.get_device_properties(dev).multi_processor_count,
        mma=mma,
    )
    s = args.size
    m = k = n = s
    ops = 2 * m * k * n
    g = torch.Generator(device=dev).manual_seed(1)
    a = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (k, n), device=dev, dtype=torch.int8, generator=g)
    bt = b.t().contiguous()
    ref = torch._int_mm(a, b)
    for name, fn in [("int_mm_rowB", lambda: torch._int_mm(a, b)), ("int_mm_colB", lambda: torch._int_mm(a, bt.t()))]:
        ms = median_ms(fn, args.reps)
        emit(what=name, size=s, ms=round(ms, 4), tops=round(ops / ms / 1e9, 1))
    emit(what="transpose_B", size=s, ms=round(median_ms(lambda: b.t().contiguous(), args.reps), 4))

    want_msgs = None
    r = 64
    g2 = torch.Generator(device=dev).manual_seed(2)
    u = torch.randint(-64, 64, (m, args.digits * 2 * r), device=dev, dtype=torch.int8, generator=g2)
    vt = torch.randint(-64, 64, (n, args.digits * 2 * r), device=dev, dtype=torch.int8, generator=g2)
    corr = (u, vt, args.digits)
    b_col = bt.t()  # B as the transposed view of a K-major buffer: the kernel needs no copy
    for spec in args.configs.split(";"):
        if late():
            emit(what="skipped", reason="deadline", config=spec)
            break
        bm, bn, bk, nw, ns, split = (int(x) for x in spec.split(","))
        cfg = BlockConfig(bm, bn, bk, group_m=8, num_warps=nw, num_stages=ns, fold_split=bool(split))
        for mode in ("plain", "transcript", "transcript+recover"):
            if mode == "plain" and split == 0:
                continue
            kw = dict(config=cfg, transcript=mode != "plain", correction=corr if mode.endswith("recover") else None)
            try:
                t0 = time.time()
                c, msgs = noisy_matmul_triton(a, b_col, r, 16, 16, **kw)
                torch.cuda.synchronize()
                compile_s = time.time() - t0
                exact = bool(torch.equal(c, ref)) if mode != "transcript+recover" else None
                same_msgs = None
                if mode != "plain":
                    if want_msgs is None:
                        want_msgs = msgs.clone()
                    same_msgs = bool(torch.equal(msgs, want_msgs))
                ms = median_ms(lambda: noisy_matmul_triton(a, b_col, r, 16, 16, **kw), args.reps)
                emit(
                    what="triton",
                    config=spec,
                    mode=mode,
                    mma=mma,
                    size=s,
                    ms=round(ms, 4),
                    tops=round(ops / ms / 1e9, 1),
                    exact_c=exact,
                    same_msgs=same_msgs,
                    compile_s=round(compile_s, 1),
                )
            except Exception as exc:  # keep going: one failing config must not hide the others
                emit(what="triton", config=spec, mode=mode, error=repr(exc)[:400], tb=traceback.format_exc()[-1500:])
    # The recovered C of the default config, checked once against C' - sum 128^i U_i V_i computed with _int_mm.
    try:
        c, _ = noisy_matmul_triton(a, b_col, r, 16, 16, correction=corr)
        want = ref.clone()
        for i in range(args.digits):
            ui = u[:, i * 2 * r : (i + 1) * 2 * r].contiguous()
            vi = vt[:, i * 2 * r : (i + 1) * 2 * r].contiguous().t()
            want -= torch._int_mm(ui, vi) * (128**i)
        emit(what="recover_check", exact=bool(torch.equal(c, want)))
    except Exception as exc:
        emit(what="recover_check", error=repr(exc)[:400], tb=traceback.format_exc()[-1500:])
    # The memory-bound stages of a mining pass, alone.
    try:
        from kernels.triton_noise import add_noise_triton
        import numpy as np

        e_l = torch.randint(-32, 32, (m, r), device=dev, dtype=torch.int8, generator=g2)
        f_r = torch.randint(-32, 32, (r, n), device=dev, dtype=torch.int8, generator=g2)
        rng = np.random.default_rng(3)
        p = np.concatenate([rng.permutation(r) for _ in range(-(-k // r))])[:k]  # per-chunk permutations
        a64 = torch.randint(-64, 65, (m, k), device=dev, dtype=torch.int8, generator=g2)
        b64 = torch.randint(-64, 65, (k, n), device=dev, dtype=torch.int8, generator=g2)
        ms = median_ms(lambda: add_noise_triton(a64, b64, e_l, f_r, p, p), args.reps)
        emit(what="add_noise", size=s, ms=round(ms, 4), gbps=round(4 * m * k / ms / 1e6, 1))
    except Exception as exc:
        emit(what="add_noise", error=repr(exc)[:400], tb=traceback.format_exc()[-1500:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
