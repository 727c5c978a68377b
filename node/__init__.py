"""The node, in three roles (README "Layout" says which module owns what):

- `node.server`: the running node: peers, sync, mempool, mining, paid jobs, the HTTP API, metrics, storage.
  Its parts meet only through `node.server.interfaces`; `node.server.node` assembles them.
- `node.client`: what talks to a node over HTTP: the job SDK (`node.client.sdk`), the wallet, the remote mining
  worker, the job and economy commands. It imports nothing of the server.
- `node.cli`: the `pouw` command line (`python -m node.cli`).

Shared by both sides: the blob format and store (`node.blobs`), the mining engine (`node.engine`), structured
logging (`node.logfmt`). Importing any of it changes no process-wide setting: the `pouw` entry point
(`node.cli.main`) sets those as the process starts."""
