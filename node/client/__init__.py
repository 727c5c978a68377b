"""The client side: what reaches a node over its HTTP API and never imports the server (node.server).

- sdk: the job client SDK (`from node.client.sdk import Client`: submit, wait, verify, dispute)
- quant: float matrices to int8 jobs and back, through the SDK
- wallet: keys, balances and transfers (`pouw wallet`)
- worker: the remote mining worker (`pouw miner --node URL`) and the small JSON client the CLI shares
- jobcli, econcli: the `pouw job` and economy commands
"""
