"""The node: gossip and sync, mempool, miner, HTTP API, command line, wallet and client SDK."""
import os

# libgomp's default keeps torch's OpenMP workers spinning for milliseconds after every parallel op, on the
# cores the native kernels' own threads need next (5-10 ms lost per 2048^3 mining pass here). Effective only
# when set before torch is first imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
