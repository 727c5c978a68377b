#!/usr/bin/env bash
# Set up .venv and run a local 2-node devnet: both nodes mine on the CPU and serve the HTTP API
# (node0 http://127.0.0.1:8545, node1 http://127.0.0.1:8546), data in ./devnet-data, a funded client
# wallet in ./devnet-data/wallet. Status lines (height, peers, work rate) every 10 s; Ctrl-C stops cleanly.
# Extra arguments go to `pouw devnet` (e.g. --nodes 3, --duration 60, --block-interval 0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pouw devnet --nodes 2 --base-port 8545 --datadir ./devnet-data --device cpu "$@"
