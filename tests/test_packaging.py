"""What an installed node relies on: configs found by name wherever the process runs, importing `node` leaves the
process's settings alone, `pouw bench` without the checkout's benchmarks/ says where they live, and the test
helpers (testkit/) are neither shipped nor needed by a shipped command.
(scripts/check_wheel.sh checks the built wheel itself end to end.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chain.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_config_by_name_ignores_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "devnet").mkdir()  # e.g. a data directory called devnet in the current folder
    monkeypatch.chdir(tmp_path)
    assert load_config("devnet").name == load_config(ROOT / "configs" / "devnet.toml").name
    (tmp_path / "mine.toml").write_text((ROOT / "configs" / "regtest.toml").read_text())
    assert load_config("mine.toml").name == load_config("regtest").name
    with pytest.raises(FileNotFoundError):
        load_config("nosuchnet")


def _run(code: str, path: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(PYTHONPATH=path, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=path)


def test_importing_node_sets_no_process_setting():
    r = _run(
        "import os, node, node.cli, node.cli.commands, node.server.node, node.client.sdk; "
        "print(os.environ.get('OMP_WAIT_POLICY'))",
        str(ROOT),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"
    run_main = "import os, node.cli\ntry: node.cli.main(['--help'])\nexcept SystemExit: pass\n"
    r = _run(run_main + "print(os.environ.get('OMP_WAIT_POLICY'))", str(ROOT))
    assert r.stdout.strip().endswith("PASSIVE"), r.stderr  # the entry point sets it as the process starts
    r = _run("import sys, node.cli; print('torch' in sys.modules)", str(ROOT))
    assert r.stdout.strip() == "False", r.stderr  # so main's first line runs before torch loads
    r = _run(
        "import os; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\nimport node.cli\ntry: node.cli.main(['--help'])\n"
        "except SystemExit: pass\nprint(os.environ['OMP_WAIT_POLICY'])",
        str(ROOT),
    )
    assert r.stdout.strip().endswith("ACTIVE"), r.stderr  # an explicit setting wins


def test_python_m_node_cli_runs_the_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 0, r.stderr
    assert "usage: pouw" in r.stdout and "devnet" in r.stdout


def test_bench_without_benchmarks_says_where_they_live():
    # as installed from the wheel: no benchmarks package (the editable install of a checkout would find one)
    hide = "import sys; sys.modules['benchmarks'] = None; import node.cli; "
    r = _run(hide + "sys.exit(node.cli.main(['bench', 'mining', '--size', '64']))", str(ROOT))
    assert r.returncode == 2, r.stderr
    assert "pouw bench mining: the benchmarks are not installed" in r.stderr
    assert "source checkout" in r.stderr
    r = _run(hide + "node.cli.main(['bench', '--help'])", str(ROOT))
    assert "import" in r.stdout and "mining" in r.stdout  # still listed; chain's import bench still works


# --- test helpers stay out of the shipped packages -------------------------------------------------------------


def _shipped_packages() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_shipped_packages_import_no_test_helpers():
    """No module of an installed package imports testkit/ (or tests/): a node never carries the test helpers."""
    import ast

    assert "testkit" not in _shipped_packages()
    offenders = []
    for pkg in {p.split(".")[0] for p in _shipped_packages()}:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                offenders += [
                    f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("testkit", "tests")
                ]
    assert offenders == []
    for gone in ("chain/testing.py", "chain/crashtest.py", "node/testing.py"):
        assert not (ROOT / gone).exists(), f"{gone}: test helpers belong in testkit/"


def _bench_import_json(path: str) -> dict:
    """`pouw bench import` on a 3-block chain with the packages found first on `path`, testkit and benchmarks
    made unimportable (as in an installed wheel)."""
    import json

    code = (
        "import sys; sys.modules['testkit'] = None; sys.modules['benchmarks'] = None; import chain, node.cli; "
        "print(chain.__file__); sys.exit(node.cli.main(['bench', 'import', '--blocks', '3', '--txs', '2', '--json']))"
    )
    r = _run(code, path)
    assert r.returncode == 0, r.stderr
    where, out = r.stdout.strip().splitlines()[-2:]
    assert where.startswith(path), where
    return json.loads(out)


def test_bench_import_needs_no_test_helpers():
    rep = _bench_import_json(str(ROOT))
    assert rep["blocks"] == 3 and rep["transactions"] > 0 and rep["blocks_per_s"] > 0


@pytest.mark.slow
def test_wheel_ships_no_test_helpers_and_bench_import_runs_from_it(tmp_path):
    """Build the wheel from the files git sees (as scripts/check_wheel.sh does): it holds chain/synthetic.py, which
    `pouw bench import` mines with, and none of the test helpers; unpacked, it runs `pouw bench import`."""
    import tarfile
    import zipfile

    src = tmp_path / "src"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    with tarfile.open(tmp_path / "src.tar", "w") as tar:
        for f in files:
            if f and (ROOT / f).is_file():
                tar.add(ROOT / f, arcname=f)
    with tarfile.open(tmp_path / "src.tar") as tar:
        tar.extractall(src, filter="data")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    assert "chain/synthetic.py" in names and "chain/commands.py" in names
    shipped_helpers = sorted(
        n
        for n in names
        if n.split("/")[0] in ("testkit", "tests", "benchmarks")
        or n in ("chain/testing.py", "chain/crashtest.py", "node/testing.py")
    )
    assert shipped_helpers == []
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    rep = _bench_import_json(str(site))
    assert rep["blocks"] == 3 and rep["transactions"] > 0


def test_gpu_extras_name_the_cupy_wheel_for_each_cuda_major():
    """pyproject's GPU extras: cuda12 / cuda13 bring the CuPy wheel built for that CUDA major (what
    kernels.cuda_mma.cupy_wheel names for a torch of that CUDA version) and triton; `cuda` stays cuda12."""
    import tomllib

    from kernels.cuda_mma import CUPY_MAJORS, cupy_wheel

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for major in CUPY_MAJORS:
        wheel, extra = cupy_wheel(f"{major}.0")
        assert (wheel, extra) == (f"cupy-cuda{major}x", f"cuda{major}")
        names = [req.split(">")[0].split("=")[0].strip() for req in extras[extra]]
        assert names == [wheel, "triton"], extras[extra]
    assert extras["cuda"] == extras["cuda12"]
    assert cupy_wheel("13.2") == ("cupy-cuda13x", "cuda13") and cupy_wheel("12.4") == ("cupy-cuda12x", "cuda12")
    for bad in (None, "11.8", "x"):
        with pytest.raises(ValueError, match="no CuPy wheel"):
            cupy_wheel(bad)


def test_import_cupy_names_the_wheel_torch_needs(monkeypatch):
    """Missing CuPy, or only the other major's wheel: ImportError naming the wheel and extra for torch's CUDA (the
    backend then runs Triton); a CPU build of torch (cuda None) gets an ImportError too, never a crash."""
    import kernels.cuda_mma as mma

    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails
    monkeypatch.setattr(mma, "installed_cupy", lambda: [])
    with pytest.raises(ImportError, match=r"pip install cupy-cuda13x \(pouw-node\[cuda13\]\)"):
        mma.import_cupy("13.0")
    monkeypatch.setattr(mma, "installed_cupy", lambda: ["cupy-cuda12x"])
    with pytest.raises(ImportError, match=r"cupy-cuda12x, but torch runs CUDA 13.0: .*pip install cupy-cuda13x"):
        mma.import_cupy("13.0")
    with pytest.raises(ImportError, match="needs CuPy for CUDA 12.8: pip install cupy-cuda12x"):
        mma.import_cupy("12.8")  # the right wheel's metadata, but no module
    with pytest.raises(ImportError, match="no CuPy wheel"):
        mma.import_cupy(None)
    fake = type(sys)("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(mma, "installed_cupy", lambda: ["cupy-cuda12x", "cupy-cuda13x"])
    assert mma.import_cupy("13.0") is fake  # the right one is there too: used


def test_nothing_imports_cupy_without_cuda():
    """On a machine without CUDA nothing asks for CuPy: the node's CLI, every kernel module and a whole CPU mining
    pass run with `import cupy` made to fail, and none of them tried it."""
    code = r"""
import sys
tried = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "cupy" or name.startswith("cupy."):
            tried.append(name)
            raise ImportError("cupy blocked")
sys.meta_path.insert(0, Block())
import node.cli, kernels, kernels.cuda, kernels.cuda_mma, pouw.miner
from kernels import get_backend
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams
P = PowParams(rank=8, tile_h=4, tile_w=4)
a, b = filler_operands(b"nocupy", (8, 128, 8))
prep = prepare_job(a, b, P)
res = mine_job(b"tpl", prep.job, a, b, 1 << 250, P, get_backend("cpu"), prepared=prep)
assert res.c is not None and not kernels.cuda.cuda_available()
print("tried", tried, "loaded", "cupy" in sys.modules)
"""
    r = _run(code, str(ROOT), {"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "tried [] loaded False", r.stdout
