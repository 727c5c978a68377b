"""The running node: one asyncio process with these parts (each takes the node as the narrow interface named in
node.server.interfaces, never the whole Node; tests/test_node_imports.py checks it):

- peers: p2p (connections, handshake, gossip, bans), peers (address book, scores), messages (wire format),
  netguard (connection limits)
- sync: sync (headers-first download)
- mempool: mempool
- mining: miner (mining loop, block templates), paidjobs (the miner's paid-job path); the engine it runs is
  node.engine, shared with remote workers
- jobs: jobinfo (read-only job views, fee floor), paidjobs, blobgate (upload admission); blobs in node.blobs
- API: api (assembles the app, request checks) and one route module per area: status_api, chain_api, tx_api,
  mining_api, jobs_api, blobs_api, economy_api, explorer_api (explorer/static: the page); apiargs, apierror
- metrics, storagehealth, econstats
- node: Node, which builds the parts and routes every block and transaction (accept_block, add_tx)
"""
