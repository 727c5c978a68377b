#!/usr/bin/env bash
# The wheel as a user gets it: build it, check it ships every data file of the packages (configs, C and CUDA
# sources, static files), install it into a fresh venv (no checkout on the path, torch==2.13.0 from the local
# wheel as scripts/setup.sh does), then run `pouw devnet --duration 20` from that venv and check that the nodes
# served the API and mined blocks. Exit 0 when all holds; otherwise the failing step and its log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pouw-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "check_wheel: $*"; }
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }

# build from a copy of the files git sees (tracked and new, not ignored: no stale build/ of an earlier build), with
# the checkout's venv (setuptools is there; no isolated build env to download)
BUILD_PY=$ROOT/.venv/bin/python; [ -x "$BUILD_PY" ] || BUILD_PY=$PY
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null \
  | tar -xf - -C "$WORK/src"
(cd "$WORK/src" && "$BUILD_PY" -m pip wheel . --no-deps --no-build-isolation -q -w "$WORK/dist") \
  >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "wheel build"; }
WHL=$(ls "$WORK"/dist/*.whl)
say "built $(basename "$WHL")"

# every tracked file of a shipped package that is not Python must be in the wheel (package-data in
# pyproject.toml): configs/ installs as chain/configs/
"$BUILD_PY" - "$WHL" <<'EOF' || fail "wheel contents"
import subprocess, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
not_shipped = {"benchmarks", "tests", "testkit"}
if tops & not_shipped:
    sys.exit(f"the wheel ships {sorted(tops & not_shipped)}: not installed packages")
helpers = sorted(names & {"chain/testing.py", "chain/crashtest.py", "node/testing.py"})
if helpers:
    sys.exit(f"the wheel ships test helpers {helpers}: they live in testkit/")
tracked = subprocess.run(["git", "ls-files", "--", *sorted(tops), "configs"], capture_output=True, text=True,
                         check=True).stdout.split()
want = {("chain/" + t) if t.startswith("configs/") else t for t in tracked if not t.endswith(".py")}
missing = sorted(want - names)
if missing:
    sys.exit(f"the wheel lacks {missing}: add them to [tool.setuptools.package-data] in pyproject.toml")
print(f"check_wheel: {len(want)} data files shipped ({', '.join(sorted(tops))})")
EOF

"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q --no-compile "torch==2.13.0" >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fail "install torch"; }
"$VPY" -m pip install -q --no-compile "$WHL" >>"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fail "install the wheel"; }
say "installed into a fresh venv"

cd "$WORK"  # nothing of the checkout importable from here
"$VPY" - "$ROOT" <<'EOF' || fail "installed packages"
import sys
import chain, kernels, node, pouw
from chain.config import load_config
root = sys.argv[1]
for m in (chain, kernels, node, pouw):
    assert not m.__file__.startswith(root), f"{m.__name__} imported from the checkout: {m.__file__}"
try:
    import benchmarks  # noqa: F401
    sys.exit("benchmarks is importable from the installed wheel")
except ImportError:
    pass
for name in ("devnet", "regtest"):
    load_config(name)
EOF
"$WORK/venv/bin/pouw" bench mining >"$WORK/bench.out" 2>&1 && fail "pouw bench mining succeeded without benchmarks/"
grep -q "source checkout" "$WORK/bench.out" || { cat "$WORK/bench.out"; fail "pouw bench mining: no clear message"; }
"$WORK/venv/bin/pouw" bench import --blocks 3 --txs 2 --json >"$WORK/bench.out" 2>&1 \
  || { cat "$WORK/bench.out"; fail "pouw bench import (chain/synthetic.py's chain) from the wheel"; }
say "pouw bench import runs from the wheel"

PORT=$("$VPY" -c 'import random, socket
for _ in range(100):
    p = random.randrange(20000, 60000, 2)
    try:
        for q in (p, p + 1):
            socket.create_server(("127.0.0.1", q)).close()
        print(p); break
    except OSError:
        pass')
LOG=$WORK/devnet.log
timeout 240 "$WORK/venv/bin/pouw" devnet --nodes 2 --base-port "$PORT" --datadir "$WORK/devnet" --duration 20 \
  --status-every 5 >"$LOG" 2>&1 &
DEVNET=$!
# the devnet prints "N node(s) up" once the client wallet's funding is mined; then ask node 0's API ourselves
for _ in $(seq 1 200); do
  grep -q "node(s) up" "$LOG" && break
  kill -0 "$DEVNET" 2>/dev/null || break
  sleep 1
done
grep -q "node(s) up" "$LOG" || { cat "$LOG"; tail -n 30 "$WORK"/devnet/node0/node.log; fail "devnet did not come up"; }
"$VPY" - "http://127.0.0.1:$PORT" <<'EOF' || { cat "$LOG"; fail "API"; }
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/status", timeout=10))
assert status["height"] >= 1, status
print(f"check_wheel: node 0 API answers: height {status['height']}, peers {status['peers']}")
EOF
wait "$DEVNET" || { cat "$LOG"; fail "pouw devnet exited non-zero"; }
grep -q "funding is still pending" "$LOG" && { cat "$LOG"; fail "no block mined the funding transaction"; }
grep -q "stopped 2 node(s)" "$LOG" || { cat "$LOG"; fail "devnet did not stop its nodes"; }
say "OK: pouw devnet from the wheel mined blocks and served the API ($(grep -c '^devnet: node0 h=' "$LOG") status lines)"
