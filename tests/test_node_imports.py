"""The layout of node/ shows its roles, and its parts meet only through their interfaces. Every import of a node
module by another (module level, inside functions, under TYPE_CHECKING) is an edge of the graph walked here.

- No cycle anywhere in node/.
- Roles: node.server (the running node), node.client (reaches a node over HTTP), node.cli (the command line),
  and the few top-level modules both sides share (COMMON). A client module imports nothing of the server, not
  even indirectly; the server imports nothing of the client or the CLI; the common modules import only each other.
- Inside the server, a part (peers, sync, mining, paid jobs, metrics, storage, the blob gate, each API route
  module) imports only SHARED modules: node/server/interfaces.py (typing.Protocol views of the node) and
  self-contained modules that import nothing of node/ but each other (wire format, the mempool, API arguments,
  ...). No part imports another part or the node.
- The roots assemble the parts: node.server.node builds the node from them, node.server.api the HTTP app from the
  route modules.
- Every server module is classified here, so a new one is placed deliberately."""

from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parent.parent / "node"
S = "node.server."

# which part owns what (README "Layout"): each takes the node as the interface named in its constructor/routes
PARTS = {
    S + m
    for m in (
        "p2p",  # peers: connections, handshake, gossip, bans (PeerHost)
        "sync",  # headers-first sync from peers (PeerNet)
        "miner",  # the mining loop and block templates (MinerHost, TemplatesHost)
        "paidjobs",  # the miner's paid-job path: claim, compute, post C, answer challenges (PaidJobsHost)
        "metrics",  # Prometheus metrics (MetricsHost)
        "storagehealth",  # the storage watchdog (StorageHost)
        "blobgate",  # blob upload admission (NodeView)
        # the HTTP API's route modules (StatusHost, NodeView, TxHost, MiningHost, JobsHost, BlobsHost)
        "status_api",
        "chain_api",
        "tx_api",
        "mining_api",
        "jobs_api",
        "blobs_api",
        "economy_api",
        "explorer_api",
    )
}
# top-level modules both sides use: they import nothing of node/ but each other
COMMON = {"node.logfmt", "node.blobs", "node.engine"}
# what any server part may import: the interfaces and modules that import nothing of node/ but each other
SHARED = COMMON | {
    S + m
    for m in ("interfaces", "messages", "peers", "netguard", "mempool", "apiargs", "apierror", "jobinfo", "econstats")
}
ROUTES = {m for m in PARTS if m.endswith("_api")}
ROOTS = {S + "node": PARTS | SHARED | {S + "api"}, S + "api": ROUTES | SHARED}


def module_name(path: Path) -> str:
    parts = path.relative_to(NODE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The node modules `path` imports anywhere in its body."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                base = ".".join(up + ([n.module] if n.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in n.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import node.x.y` depends on the deepest module known
                name = name.rpartition(".")[0]
            if name and name != me and name != "node":
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = sorted(NODE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := visit(d)) is not None:
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)) is not None:
            return c
    return None


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for d in g.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_graph_sees_every_kind_of_import():
    g = graph()
    assert S + "messages" in g[S + "p2p"]  # module level
    assert S + "paidjobs" in g[S + "node"]  # inside a function
    assert S + "interfaces" in g[S + "sync"]  # under TYPE_CHECKING
    assert S + "jobinfo" in g[S + "jobs_api"]  # `from node.server import jobinfo`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set()}, "a") == {"a", "b", "c"}


def test_node_has_no_import_cycles():
    g = graph()
    cycle = find_cycle(g)
    assert cycle is None, "import cycle in node/: " + " -> ".join(cycle or [])


def role(m: str) -> str:
    if m in COMMON:
        return "common"
    for r in ("server", "client", "cli"):
        if m == f"node.{r}" or m.startswith(f"node.{r}."):
            return r
    return "other"  # node (the package)


def test_every_module_is_classified():
    g = graph()
    server = {m for m in g if role(m) == "server"}
    classified = PARTS | SHARED | set(ROOTS) | {"node.server"}
    assert not server - classified, f"new server modules: add them to PARTS or SHARED: {sorted(server - classified)}"
    assert not classified - set(g), f"gone: {sorted(classified - set(g))}"
    assert not PARTS & SHARED
    assert {m for m in g if role(m) == "other"} == {"node"}  # everything else has a role
    assert {m for m in g if role(m) == "client"} >= {"node.client.sdk", "node.client.wallet", "node.client.worker"}


def test_parts_import_only_interfaces_and_shared_modules():
    g = graph()
    for m in sorted(PARTS):
        assert g[m] <= SHARED, (
            f"{m} imports {sorted(g[m] - SHARED)}: a part meets the others through node.server.interfaces"
        )
    for m in sorted(SHARED):
        assert g[m] <= SHARED, f"shared module {m} imports {sorted(g[m] - SHARED)}"
    for m, allowed in ROOTS.items():
        assert g[m] <= allowed, f"{m} imports {sorted(g[m] - allowed)}"


def test_roles_client_never_reaches_the_server():
    g = graph()
    for m in sorted(g):
        deps = {role(d) for d in g[m]}
        if role(m) == "client":
            reached = {d for d in reachable(g, m) if role(d) == "server"}
            assert not reached, f"client module {m} reaches the server: {sorted(reached)}"
            assert "cli" not in deps, f"client module {m} imports the CLI: {sorted(g[m])}"
        if role(m) == "server":
            assert deps <= {"server", "common"}, f"server module {m} imports {sorted(g[m])}"
        if role(m) == "common":
            assert g[m] <= COMMON, f"common module {m} imports {sorted(g[m] - COMMON)}"


def test_import_rules_fail_on_a_violation():
    """The checks above can fail: a part importing the node, or another part, or a client the server, is caught."""
    g = graph()
    bad = dict(g, **{S + "miner": g[S + "miner"] | {S + "node"}})
    assert find_cycle(bad) is not None
    assert not bad[S + "miner"] <= SHARED
    assert not (g[S + "api"] | {S + "miner"}) <= ROOTS[S + "api"]
    leaky = dict(g, **{"node.blobs": g["node.blobs"] | {S + "messages"}})
    assert S + "messages" in reachable(leaky, "node.client.sdk")  # sdk -> blobs -> server: would fail above
