"""node/ has no import cycles, and its parts meet only through their interfaces: every import of a node module by
another (module level, inside functions, under TYPE_CHECKING) is an edge of the graph walked here.

- No cycle anywhere in node/.
- A part (peers, sync, mining, paid jobs, metrics, storage, the blob gate, each API route module) imports from
  node/ only the shared modules: node/interfaces.py (typing.Protocol views of the node) and self-contained
  modules that import nothing of node/ but each other (encodings, the mempool, the mining engine, ...). No part
  imports another part or the node.
- The roots assemble the parts: node.node builds the node from them, node.api the HTTP app from the route modules.
- Every module of node/ is classified here, so a new one is placed deliberately."""
from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parent.parent / "node"

# which part owns what (README "Layout"): each takes the node as the interface named in its constructor/routes
PARTS = {
    "node.p2p",            # peers: connections, handshake, gossip, bans (PeerHost)
    "node.sync",           # headers-first sync from peers (PeerNet)
    "node.miner",          # the mining loop and block templates (MinerHost, TemplatesHost)
    "node.paidjobs",       # the miner's paid-job path: claim, compute, post C, answer challenges (PaidJobsHost)
    "node.metrics",        # Prometheus metrics (MetricsHost)
    "node.storagehealth",  # the storage watchdog (StorageHost)
    "node.blobgate",       # blob upload admission (NodeView)
    "node.status_api", "node.chain_api", "node.tx_api", "node.mining_api", "node.jobs_api", "node.blobs_api",
    "node.economy_api", "node.explorer_api",   # the HTTP API's route modules (StatusHost, NodeView, TxHost, ...)
}
# what any part may import: the interfaces and modules that import nothing of node/ but each other
SHARED = {
    "node.interfaces", "node.messages", "node.peers", "node.netguard", "node.logfmt", "node.blobs", "node.engine",
    "node.mempool", "node.apiargs", "node.apierror", "node.jobinfo", "node.econstats",
}
ROUTES = {m for m in PARTS if m.endswith("_api")}
ROOTS = {"node.node": PARTS | SHARED | {"node.api"}, "node.api": ROUTES | SHARED}
# the client side and the command line (they reach a node over HTTP or start one through node.node)
OUTSIDE = {"node", "node.cli", "node.commands", "node.devnet", "node.demo", "node.inference_demo", "node.client",
           "node.wallet", "node.worker", "node.jobcli", "node.econcli", "node.quant"}


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
                up = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
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
                return stack[stack.index(d):] + [d]
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
    assert "node.messages" in g["node.p2p"]                 # module level
    assert "node.paidjobs" in g["node.node"]                # inside a function
    assert "node.interfaces" in g["node.sync"]              # under TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set()}, "a") == {"a", "b", "c"}


def test_node_has_no_import_cycles():
    g = graph()
    cycle = find_cycle(g)
    assert cycle is None, "import cycle in node/: " + " -> ".join(cycle or [])


def test_every_module_is_classified():
    g = graph()
    classified = PARTS | SHARED | set(ROOTS) | OUTSIDE
    assert not set(g) - classified, f"new node modules: add them to PARTS, SHARED or OUTSIDE: {sorted(set(g) - classified)}"
    assert not classified - set(g), f"gone: {sorted(classified - set(g))}"
    assert not PARTS & SHARED


def test_parts_import_only_interfaces_and_shared_modules():
    g = graph()
    for m in sorted(PARTS):
        assert g[m] <= SHARED, f"{m} imports {sorted(g[m] - SHARED)}: a part meets the others through node.interfaces"
    for m in sorted(SHARED):
        assert g[m] <= SHARED, f"shared module {m} imports {sorted(g[m] - SHARED)}"
    for m, allowed in ROOTS.items():
        assert g[m] <= allowed, f"{m} imports {sorted(g[m] - allowed)}"


def test_import_rules_fail_on_a_violation():
    """The checks above can fail: a part importing the node, or another part, is caught."""
    g = graph()
    bad = dict(g, **{"node.miner": g["node.miner"] | {"node.node"}})
    assert find_cycle(bad) is not None
    assert not bad["node.miner"] <= SHARED
    assert not (g["node.api"] | {"node.miner"}) <= ROOTS["node.api"]
