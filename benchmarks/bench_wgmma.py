"""The sm_90a wgmma kernel on an H100/H200: bit-exactness first, then its speed against mma.sync, Triton and
torch._int_mm, in one short run.

    python -m benchmarks.bench_wgmma --sizes 4096,8192 --out DIR

1. Checks, before timing anything: C' and messages of the wgmma kernel (default config and bn = 128) against the
   CPU path (kernels.cpu) on random shapes with tails in m and n, several tile widths, chunk widths that split,
   fill or straddle a 128-column stage, with and without the recovery epilogue (against the transcript-off C'
   minus the correction in int64), and its plain C against torch._int_mm.
2. Times at each size m = k = n (r = 64, 16 x 16 tiles, 3 recovery digits of width 2r, as a mining pass), CUDA
   events, median of --reps: torch._int_mm; Triton, mma.sync ("cuda") and wgmma each plain, with the transcript,
   and with transcript + recovery (a mining pass's GEMM); wgmma also with bn = 128.
A kernel that is not bit-exact (at the check or against Triton at that size) is reported so and gets no ratio.
Writes one JSON line per result to DIR/wgmma.jsonl and a table to DIR/wgmma.md (device, TOPS, ratio against the
best exact plain GEMM, speed-up over Triton and mma.sync, this command). Exits 2 without a compute capability 9.0
device, 3 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

import torch

R, TILE, DIGITS = 64, 16, 3
# (m, k, n, r, tile_w, bn, recover): tails in m and n, r splitting / filling / straddling a 128-column stage
CHECKS = (
    (128, 32 * 17, 256, 32, 16, 256, False),
    (200, 64 * 6, 328, 64, 8, 256, False),
    (336, 96 * 4, 264, 96, 8, 128, False),
    (1040, 256 * 4, 1000, 256, 8, 256, False),
    (144, 64 * 3, 176, 64, 16, 128, True),
    (1000, 64 * 16, 1040, 64, 16, 256, True),
    (64, 128 * 2, 384, 128, 32, 256, True),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4096,8192")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args(argv)
    command = "python -m benchmarks.bench_wgmma " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(command, flush=True)
    if not torch.cuda.is_available():
        print("bench_wgmma: needs a CUDA device, and torch sees none; nothing measured", file=sys.stderr)
        return 2
    from kernels import cuda_wgmma

    dev = torch.device("cuda:0")
    cap = torch.cuda.get_device_capability(dev)
    why = cuda_wgmma.device_reason(cap)
    if why:
        print(f"bench_wgmma: {why}; nothing measured", file=sys.stderr)
        return 2
    from benchmarks.gpu_explore import median_ms
    from kernels import cuda_mma
    from kernels.cpu import CpuBackend
    from kernels.triton_kernel import noisy_matmul_triton, plain_config

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = open(out_dir / "wgmma.jsonl", "a")
    name = torch.cuda.get_device_name(dev)
    t0 = time.time()
    rows: list[dict] = []
    failed = False

    def emit(**rec) -> dict:
        rec.update(device_name=name, arch="sm_{}{}".format(*cap), t=round(time.time() - t0, 1))
        print(json.dumps(rec), flush=True)
        jsonl.write(json.dumps(rec) + "\n")
        jsonl.flush()
        rows.append(rec)
        return rec

    # 1. bit-exactness against the CPU path
    cpu = CpuBackend()
    for i, (m, k, n, r, tw, bn, rec) in enumerate(CHECKS):
        cfg = cuda_wgmma.WgmmaConfig(bn, 4 if bn == 256 else 6)
        shape = dict(m=m, k=k, n=n, r=r, tile=f"16x{tw}", bn=bn, recover=rec)
        try:
            g = torch.Generator().manual_seed(i)
            a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
            b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
            u = torch.randint(-64, 64, (m, DIGITS * 2 * r), dtype=torch.int8, generator=g)
            vt = torch.randint(-64, 64, (n, DIGITS * 2 * r), dtype=torch.int8, generator=g)
            t_call = time.perf_counter()
            got = cuda_wgmma.noisy_matmul_wgmma(
                a.to(dev), b.to(dev), r, 16, tw, config=cfg, correction=(u.to(dev), vt.to(dev), DIGITS) if rec else None
            )
            torch.cuda.synchronize()
            t_call = time.perf_counter() - t_call
            want_c, want_m = cpu.noisy_mm(a, b, r, 16, tw)
            want_c = want_c.to(torch.int64)
            if rec:
                cw = 2 * r
                for d in range(DIGITS):
                    want_c -= (128**d) * (
                        u[:, d * cw : (d + 1) * cw].to(torch.int64) @ vt[:, d * cw : (d + 1) * cw].to(torch.int64).t()
                    )
            want_c = ((want_c + 2**31) % 2**32 - 2**31).to(torch.int32)
            exact = torch.equal(got[0].cpu(), want_c) and torch.equal(got[1].cpu(), want_m.cpu())
            emit(what="check", against="cpu backend", **shape, exact=exact, call_s=round(t_call, 2))
            failed |= not exact
        except Exception as e:  # an NVRTC or launch error: say what, keep going
            traceback.print_exc()
            emit(what="check", against="cpu backend", **shape, error=f"{type(e).__name__}: {e}")
            failed = True

    # 2. timing
    small = cuda_wgmma.WgmmaConfig(128, 6)

    def one_size(size: int) -> bool:
        """Check the wgmma kernels against Triton / _int_mm at m = k = n = size, then time every kernel; False
        when a wgmma check fails."""
        ops = 2 * size**3
        g = torch.Generator(device=dev).manual_seed(size)
        a = torch.randint(-96, 96, (size, size), dtype=torch.int8, device=dev, generator=g)
        b = torch.randint(-96, 96, (size, size), dtype=torch.int8, device=dev, generator=g).t()  # K-major B'
        corr = (
            torch.randint(-64, 64, (size, DIGITS * 2 * R), dtype=torch.int8, device=dev, generator=g),
            torch.randint(-64, 64, (size, DIGITS * 2 * R), dtype=torch.int8, device=dev, generator=g),
            DIGITS,
        )
        kernels = {"int_mm": lambda: torch._int_mm(a, b)}
        fused = {
            "triton": lambda tr, c: noisy_matmul_triton(
                a, b, R, TILE, TILE, transcript=tr, correction=c, **({} if tr else {"config": plain_config()})
            ),
            "cuda": lambda tr, c: cuda_mma.noisy_matmul_mma(a, b, R, TILE, TILE, transcript=tr, correction=c),
            "wgmma": lambda tr, c: cuda_wgmma.noisy_matmul_wgmma(a, b, R, TILE, TILE, transcript=tr, correction=c),
            "wgmma bn128": lambda tr, c: cuda_wgmma.noisy_matmul_wgmma(
                a, b, R, TILE, TILE, transcript=tr, correction=c, config=small
            ),
        }
        for kname, fn in fused.items():
            kernels[f"{kname} plain"] = lambda fn=fn: fn(False, None)
            kernels[f"{kname} transcript"] = lambda fn=fn: fn(True, None)
            kernels[f"{kname} transcript+recover"] = lambda fn=fn: fn(True, corr)
        exact: dict[str, bool] = {}
        try:  # plain C against _int_mm; fused outputs against Triton's (itself checked by the GPU tests)
            ref = torch._int_mm(a, b)
            want = {v: kernels[f"triton {v}"]() for v in ("transcript", "transcript+recover")}
            for kname in kernels:
                if kname.startswith(("cuda", "wgmma")):
                    try:
                        got = kernels[kname]()
                        v = kname.split()[-1]
                        exact[kname] = (
                            torch.equal(got[0], ref)
                            if v == "plain"
                            else torch.equal(got[0], want[v][0]) and torch.equal(got[1], want[v][1])
                        )
                    except Exception as e:
                        traceback.print_exc()
                        emit(what="check", kernel=kname, size=size, error=f"{type(e).__name__}: {e}")
                        exact[kname] = False
            del ref, want
        except Exception as e:
            traceback.print_exc()
            emit(what="check", size=size, error=f"{type(e).__name__}: {e}")
        for kname, fn in kernels.items():
            if exact.get(kname) is False and kname.startswith("wgmma"):
                emit(what="time", kernel=kname, size=size, exact=False, error="not bit-exact: not timed")
                continue
            try:
                ms = median_ms(fn, args.reps)
                emit(
                    what="time",
                    kernel=kname,
                    size=size,
                    ms=round(ms, 4),
                    tops=round(ops / ms / 1e9, 1),
                    exact=exact.get(kname),
                )
            except Exception as e:
                traceback.print_exc()
                emit(what="time", kernel=kname, size=size, error=f"{type(e).__name__}: {e}")
        checked = [v for k, v in exact.items() if k.startswith("wgmma")]
        return len(checked) == 6 and all(checked)  # 2 configs x (plain, transcript, transcript+recover)

    for size in (int(x) for x in args.sizes.split(",")):
        failed |= not one_size(size)
        torch.cuda.empty_cache()

    write_summary(out_dir / "wgmma.md", rows, name, "sm_{}{}".format(*cap), command)
    print(f"bench_wgmma: {'CHECK FAILED' if failed else 'all checks exact'}; summary in {out_dir / 'wgmma.md'}")
    return 3 if failed else 0


def write_summary(path: Path, rows: list[dict], name: str, cap: str, command: str) -> None:
    """The checks, then per size every kernel's ms, TOPS, bit-exactness, ratio against the best exact plain GEMM,
    and the wgmma kernels' speed-up over Triton and mma.sync with the same outputs."""
    lines = [
        f"# wgmma kernel on {name} ({cap})",
        "",
        f"Command: `{command}`",
        "",
        "r = 64, 16x16 tiles, 3 recovery digits; ms = median of CUDA-event-timed calls; ratio = best exact "
        "plain GEMM (int_mm, Triton / mma.sync / wgmma plain) / kernel.",
        "",
    ]
    for r in rows:
        if r["what"] == "check":
            what = {k: r[k] for k in ("m", "k", "n", "r", "tile", "bn", "recover", "kernel", "size") if k in r}
            lines.append(f"- check {what}: {r.get('exact', r.get('error'))}")
    lines += [
        "",
        "| size | kernel | ms | TOPS | bit-exact | ratio vs best plain | / Triton | / mma.sync |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sorted({r["size"] for r in rows if r["what"] == "time"}):
        t = {r["kernel"]: r for r in rows if r["what"] == "time" and r["size"] == size and "ms" in r}
        plain = min(
            (r["ms"] for k, r in t.items() if (k == "int_mm" or k.endswith(" plain")) and r.get("exact") is not False),
            default=None,
        )
        for kname, r in t.items():
            ok = r.get("exact") is not False
            ratio = f"{plain / r['ms']:.3f}" if plain and ok else "–"
            variant = kname.split()[-1]
            speed = ["", ""]
            if kname.startswith("wgmma") and ok:
                for i, other in enumerate((f"triton {variant}", f"cuda {variant}")):
                    if other in t and t[other].get("exact") is not False:
                        speed[i] = f"{t[other]['ms'] / r['ms']:.3f}"
            ex = "" if r.get("exact") is None else r["exact"]
            lines.append(f"| {size} | {kname} | {r['ms']} | {r['tops']} | {ex} | {ratio} | {speed[0]} | {speed[1]} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
