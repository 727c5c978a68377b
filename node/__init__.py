"""The node: gossip and sync, mempool, miner, HTTP API, command line, wallet and client SDK.

Importing it changes no process-wide setting: the `pouw` entry point (node/cli.py) sets those before torch
loads."""
