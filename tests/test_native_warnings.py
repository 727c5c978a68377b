"""The native kernels compile warning-free: every kernels/native/*.c with the loader's own flags and each build
variant's defines, plus -Wall -Wextra -Werror. This is CI's check; the loader itself builds without -Werror so that
a user's newer compiler with a new warning still gets the native kernels."""

import subprocess

import pytest

from kernels import native_loader as nl

CC = nl._compiler()
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")
WARNINGS = ("-Wall", "-Wextra", "-Werror")


def _cc(src, variant, extra, out) -> subprocess.CompletedProcess:
    _, defs, _ = variant
    cmd = [CC, *nl.CFLAGS, *defs, *nl.FILE_FLAGS.get(src.name, ()), *extra, "-c", str(src), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("variant", nl.VARIANTS, ids=lambda v: v[0])
@pytest.mark.parametrize("src", sorted(nl.NATIVE_DIR.glob("*.c")), ids=lambda p: p.name)
def test_native_source_compiles_without_warnings(src, variant, tmp_path):
    r = _cc(src, variant, WARNINGS, tmp_path / "w.o")
    if r.returncode != 0 and _cc(src, variant, (), tmp_path / "plain.o").returncode != 0:
        pytest.skip(f"the {variant[0]} variant does not build here (the loader falls back to the next)")
    assert r.returncode == 0, r.stderr[-4000:]
