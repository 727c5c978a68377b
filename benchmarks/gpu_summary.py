"""summary.md of a `benchmarks/gpu_check.sh` run: device, TOPS of every kernel and mining pass, ratios, commands.

    python -m benchmarks.gpu_summary RESULTS_DIR      (prints markdown; gpu_check.sh tees it to summary.md)

Reads what the run left in RESULTS_DIR: gpu.txt, preflight.txt, command.txt, pytest.txt, kernels.md (written by
benchmarks/bench_cuda_kernel.py) and mining.jsonl (benchmarks/bench_mining.py --json lines, each carrying
"fused_kernel": the kernel that actually ran). Missing pieces are reported as missing, never guessed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def mining_rows(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def summary(res: Path) -> str:
    out = [f"# GPU check: {res.name}", ""]
    gpu = _read(res / "gpu.txt")
    out.append(f"Device: {gpu.strip() if gpu else 'MISSING (gpu.txt)'}")
    pre = _read(res / "preflight.txt")
    if pre:
        out += ["", "```", *[ln for ln in pre.splitlines() if not ln.startswith("==")], "```"]
    cmd = _read(res / "command.txt")
    out += ["", "Commands:", "", *(f"- `{ln}`" for ln in (cmd or "MISSING").splitlines())]
    tests = _read(res / "pytest.txt")
    last = [ln for ln in (tests or "").splitlines() if ln.strip() and not ln.startswith("==")][-1:] or ["MISSING"]
    out += ["", f"GPU tests: {last[0]}", ""]
    kern = _read(res / "kernels.md")
    out += ["## Kernels alone", "", kern.split("\n", 1)[1].strip() if kern else "MISSING (kernels.md)", ""]
    rows = mining_rows(_read(res / "mining.jsonl") or "")
    out += ["## Whole mining pass (ratio = best plain GEMM / pass)", ""]
    if not rows:
        out.append("MISSING (mining.jsonl)")
    else:
        out += [
            "| size | fused kernel | plain GEMM ms | pass ms | pass TOPS | ratio | gemm stage ms | verify ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: (r.get("size", 0), str(r.get("fused_kernel")), bool(r.get("async_pass")))):
            plain = min(r.get("int_mm_ms", float("inf")), r.get("engine_gemm_ms", float("inf")))
            kernel = f"{r.get('fused_kernel')}{' + pipelined' if r.get('async_pass') else ''}"
            out.append(
                f"| {r.get('size')} | {kernel} | {plain} | {r.get('pouw_ms')} | "
                f"{r.get('pouw_tops')} | {r.get('ratio')} | {r.get('breakdown_ms', {}).get('gemm')} | "
                f"{r.get('verify_ms')} |"
            )
        by = {(r.get("size"), r.get("fused_kernel")): r for r in rows if not r.get("async_pass")}
        piped = {(r.get("size"), r.get("fused_kernel")): r for r in rows if r.get("async_pass")}
        for size in sorted({r.get("size") for r in rows}):
            t, c = by.get((size, "triton")), by.get((size, "cuda"))
            if t and c:
                out.append(
                    f"\n{size}³: pass with the CUDA kernel / with Triton = "
                    f"{t['pouw_ms'] / c['pouw_ms']:.3f}× faster (ratios {c['ratio']} vs {t['ratio']})"
                )
            p = piped.get((size, "triton"))
            if t and p:  # POUW_CUDA_ASYNC=1 becomes the default only if this is > 1 and the GPU tests pass
                out.append(
                    f"\n{size}³: pipelined pass (POUW_CUDA_ASYNC=1) / default = "
                    f"{t['pouw_ms'] / p['pouw_ms']:.3f}× faster (ratios {p['ratio']} vs {t['ratio']})"
                )
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.gpu_summary RESULTS_DIR", file=sys.stderr)
        return 2
    print(summary(Path(argv[0])), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
