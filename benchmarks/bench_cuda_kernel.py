"""The fused mining GEMM alone on a CUDA device: the Triton default against the hand-written mma.sync kernel.

    python -m benchmarks.bench_cuda_kernel --sizes 4096,8192,16384 --out DIR

For each size m = k = n (r = 64, 16 x 16 tiles, 3 recovery digits of width 2r as in a mining pass) it times, with
CUDA events (median of --reps after a warm-up):
  * the plain baselines: torch._int_mm with B column-major, the Triton kernel with the transcript off, the CUDA
    kernel with the transcript off;
  * each fused kernel with the transcript, and with transcript + recovery epilogue (a mining pass's GEMM), the
    CUDA kernel also in the other block/warp configs of --cuda-configs (its default: POUW_CUDA_CONFIG or
    kernels.cuda_mma.DEFAULT);
and checks, before timing anything: the CUDA kernel's C' and messages against the CPU backend (kernels.cpu) at
--exact-size, its plain C against torch._int_mm, and its C' / C and messages against Triton's at every size.
A kernel that is not bit-exact is reported as such and gets no ratio. Writes one JSON line per measurement to
DIR/kernels.jsonl and a table to DIR/kernels.md (device, TOPS of every kernel, ratios, this command). Exits 2
with a message when there is no CUDA device, 3 when a check fails.
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

from benchmarks.gpu_explore import median_ms

R, TILE, DIGITS = 64, 16, 3


def operands(size: int, dev: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A' (m x k), B' as the transposed view of a K-major buffer (the mining pass's layout), and (U, V^T, D)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    a = torch.randint(-96, 96, (size, size), dtype=torch.int8, device=dev, generator=g)
    bt = torch.randint(-96, 96, (size, size), dtype=torch.int8, device=dev, generator=g)
    u = torch.randint(-64, 64, (size, DIGITS * 2 * R), dtype=torch.int8, device=dev, generator=g)
    vt = torch.randint(-64, 64, (size, DIGITS * 2 * R), dtype=torch.int8, device=dev, generator=g)
    return a, bt.t(), (u, vt, DIGITS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4096,8192,16384")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--exact-size", type=int, default=1024, help="m = k = n of the check against the CPU path")
    ap.add_argument(
        "--cuda-configs",
        default="128,128,64,32,4,2;128,128,32,64,4;64,128,32,64,4;64,128,32,64,4,2;128,128,64,32,3",
        help="other CUDA kernel configs bm,bn,wm,wn,stages[,recover];... timed with "
        "transcript + recovery (recover 2: C' stored, correction subtracted in place)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args(argv)
    command = "python -m benchmarks.bench_cuda_kernel " + shlex.join(argv if argv is not None else sys.argv[1:])
    if not torch.cuda.is_available():
        print(
            "bench_cuda_kernel: needs a CUDA device, and torch sees none (torch.cuda.is_available() is False); "
            "nothing measured",
            file=sys.stderr,
        )
        return 2
    from kernels import cuda_mma
    from kernels.triton_kernel import default_config, noisy_matmul_triton, plain_config

    dev = torch.device("cuda:0")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = open(out_dir / "kernels.jsonl", "a")
    name = torch.cuda.get_device_name(dev)
    cap = "sm_{}{}".format(*torch.cuda.get_device_capability(dev))
    t0 = time.time()
    rows: list[dict] = []
    failed = False

    def emit(**rec) -> dict:
        rec.update(device_name=name, arch=cap, t=round(time.time() - t0, 1))
        print(json.dumps(rec), flush=True)
        jsonl.write(json.dumps(rec) + "\n")
        jsonl.flush()
        rows.append(rec)
        return rec

    # 1. bit-exactness against the CPU path, and the first-use NVRTC build time
    try:
        t_build = time.perf_counter()
        from kernels.cpu import CpuBackend

        s = args.exact_size
        a, b, _ = operands(s, dev, 1)
        got = cuda_mma.noisy_matmul_mma(a, b, R, TILE, TILE)
        torch.cuda.synchronize()
        t_build = time.perf_counter() - t_build
        want = CpuBackend().noisy_mm(a.cpu(), b.cpu(), R, TILE, TILE)
        exact = torch.equal(got[0].cpu(), want[0].cpu()) and torch.equal(got[1].cpu(), want[1].cpu())
        emit(what="check", kernel="cuda", against="cpu backend", size=s, exact=exact, first_call_s=round(t_build, 2))
        failed |= not exact
    except Exception as e:  # no CuPy, an NVRTC error, ...: say what, keep timing Triton
        traceback.print_exc()
        emit(what="check", kernel="cuda", against="cpu backend", error=f"{type(e).__name__}: {e}")
        failed = True

    def one_size(size: int) -> bool:
        """Check and time every kernel at m = k = n = size; False when a check fails."""
        ops = 2 * size**3
        a, b, corr = operands(size, dev, size)
        kernels = {
            "int_mm": lambda: torch._int_mm(a, b),
            "triton plain": lambda: noisy_matmul_triton(a, b, R, TILE, TILE, config=plain_config(), transcript=False),
            "triton transcript": lambda: noisy_matmul_triton(a, b, R, TILE, TILE),
            "triton transcript+recover": lambda: noisy_matmul_triton(a, b, R, TILE, TILE, correction=corr),
            "cuda plain": lambda: cuda_mma.noisy_matmul_mma(a, b, R, TILE, TILE, transcript=False),
            "cuda transcript": lambda: cuda_mma.noisy_matmul_mma(a, b, R, TILE, TILE),
            "cuda transcript+recover": lambda: cuda_mma.noisy_matmul_mma(a, b, R, TILE, TILE, correction=corr),
        }
        for spec in filter(None, args.cuda_configs.split(";")):
            cfg = cuda_mma.parse_config(spec, "--cuda-configs")
            kernels[f"cuda transcript+recover [{spec}]"] = lambda cfg=cfg: cuda_mma.noisy_matmul_mma(
                a, b, R, TILE, TILE, correction=corr, config=cfg
            )
        exact: dict[str, bool] = {}
        try:  # bit-exactness at this size: plain C against _int_mm, fused outputs against Triton's
            ref = torch._int_mm(a, b)
            exact["cuda plain"] = torch.equal(kernels["cuda plain"]()[0], ref)
            del ref
            for kname in kernels:
                if kname.startswith("cuda transcript"):
                    want = kernels["triton " + kname[5:].split(" [")[0]]()
                    got = kernels[kname]()
                    exact[kname] = torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
                    del want, got
        except Exception as e:
            traceback.print_exc()
            emit(what="check", size=size, error=f"{type(e).__name__}: {e}")
        ok = all(exact.values()) and len(exact) == sum(k.startswith("cuda") for k in kernels)
        for kname, fn in kernels.items():
            try:
                ms = median_ms(fn, args.reps if size < 16384 else max(3, args.reps // 2))
                emit(
                    what="time",
                    kernel=kname,
                    size=size,
                    ms=round(ms, 4),
                    tops=round(ops / ms / 1e9, 1),
                    exact=exact.get(kname),
                    config=(
                        repr(default_config(R, TILE, TILE))
                        if kname.startswith("triton t")
                        else repr(cuda_mma.config_from_env())
                        if kname.startswith("cuda") and "[" not in kname
                        else None
                    ),
                )
            except Exception as e:
                traceback.print_exc()
                emit(what="time", kernel=kname, size=size, error=f"{type(e).__name__}: {e}")
        return ok

    for size in (int(x) for x in args.sizes.split(",")):
        failed |= not one_size(size)
        torch.cuda.empty_cache()

    write_summary(out_dir / "kernels.md", rows, name, cap, command)
    print(f"bench_cuda_kernel: {'CHECK FAILED' if failed else 'all checks exact'}; summary in {out_dir / 'kernels.md'}")
    return 3 if failed else 0


def write_summary(path: Path, rows: list[dict], name: str, cap: str, command: str) -> None:
    lines = [
        f"# Fused mining GEMM kernels on {name} ({cap})",
        "",
        f"Command: `{command}`",
        "",
        "r = 64, 16x16 tiles, 3 recovery digits; ms = median of CUDA-event-timed calls; "
        "ratio = best plain GEMM (int_mm, Triton plain, CUDA plain) / kernel.",
        "",
    ]
    for r in rows:
        if r["what"] == "check":
            lines.append(
                f"- check {r.get('against', '')} size {r.get('size', '')}: "
                f"{r.get('exact', r.get('error'))}"
                + (f" (first call, NVRTC build included: {r['first_call_s']} s)" if "first_call_s" in r else "")
            )
    lines += [
        "",
        "| size | kernel | ms | TOPS | bit-exact | ratio vs best plain | CUDA / Triton speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    sizes = sorted({r["size"] for r in rows if r["what"] == "time"})
    for size in sizes:
        t = {r["kernel"]: r for r in rows if r["what"] == "time" and r["size"] == size and "ms" in r}
        plain = min(
            (t[k]["ms"] for k in ("int_mm", "triton plain", "cuda plain") if k in t and t[k].get("exact") is not False),
            default=None,
        )
        for kname, r in t.items():
            ratio = f"{plain / r['ms']:.3f}" if plain and r.get("exact") is not False else "–"
            speed = ""
            twin = "triton " + kname[5:].split(" [")[0]
            if kname.startswith("cuda ") and twin in t and r.get("exact") is not False:
                speed = f"{t[twin]['ms'] / r['ms']:.3f}"
            ex = "" if r.get("exact") is None else r["exact"]
            lines.append(f"| {size} | {kname} | {r['ms']} | {r['tops']} | {ex} | {ratio} | {speed} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
