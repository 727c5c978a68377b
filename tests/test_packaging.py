"""What an installed node relies on: configs found by name wherever the process runs, importing `node` leaves the
process's settings alone, and `pouw bench` without the checkout's benchmarks/ says where they live.
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
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=path)


def test_importing_node_sets_no_process_setting():
    r = _run("import os, node, node.commands; print(os.environ.get('OMP_WAIT_POLICY'))", str(ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"
    r = _run("import os, node.cli; print(os.environ.get('OMP_WAIT_POLICY'))", str(ROOT))
    assert r.stdout.strip() == "PASSIVE", r.stderr  # the entry point sets it, before torch loads
    r = _run("import os; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; import node.cli; "
             "print(os.environ['OMP_WAIT_POLICY'])", str(ROOT))
    assert r.stdout.strip() == "ACTIVE", r.stderr  # an explicit setting wins


def test_bench_without_benchmarks_says_where_they_live():
    # as installed from the wheel: no benchmarks package (the editable install of a checkout would find one)
    hide = "import sys; sys.modules['benchmarks'] = None; import node.cli; "
    r = _run(hide + "sys.exit(node.cli.main(['bench', 'mining', '--size', '64']))", str(ROOT))
    assert r.returncode == 2, r.stderr
    assert "pouw bench mining: the benchmarks are not installed" in r.stderr
    assert "source checkout" in r.stderr
    r = _run(hide + "node.cli.main(['bench', '--help'])", str(ROOT))
    assert "import" in r.stdout and "mining" in r.stdout  # still listed; chain's import bench still works
