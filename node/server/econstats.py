"""The economy's read-only statistics that both the API (node.server.economy_api) and the metrics (node.server.metrics) report:
token supply by height and market velocity per window, read from the chain state (docs/economy.md)."""

from __future__ import annotations

from chain import economy as E
from chain.encoding import as_int, as_list, decode


def supply_at(cfg, height: int, genesis_minted: int) -> int:
    """Tokens in existence after block `height` (genesis plus subsidies; nothing is burned today)."""
    return genesis_minted + sum(cfg.subsidy(h) for h in range(1, height + 1))


def genesis_minted(cfg) -> int:
    return sum(v for _, v in cfg.genesis_alloc) + sum(i.deposit for i in cfg.genesis_issuers)


def velocity(cs, windows: int = 10) -> list[dict]:
    """Per velocity window (VELOCITY_WINDOW blocks), newest first: token volume, trades, fees, the
    average token supply over the window's blocks so far, and velocity = volume / average supply. At most
    the VOLUME_WINDOWS_KEPT windows the state keeps (older ones are pruned, docs/economy.md)."""
    W = E.VELOCITY_WINDOW
    windows = min(windows, E.VOLUME_WINDOWS_KEPT)
    cur = cs.height // W
    g = genesis_minted(cs.cfg)
    out = []
    for w in range(cur, max(-1, cur - windows), -1):
        v = cs.get_econ(E.k_volume(w))
        vol = [as_int(x) for x in as_list(decode(v), 4)] if v is not None else [0, 0, 0, 0]
        lo, hi = max(1, w * W), min(cs.height, (w + 1) * W - 1)
        n = max(0, hi - lo + 1)
        base = supply_at(cs.cfg, lo - 1, g)
        total, s = 0, base
        for h in range(lo, hi + 1):
            s += cs.cfg.subsidy(h)
            total += s
        avg = total / n if n else float(base)
        out.append(
            {
                "window": w,
                "from_height": w * W,
                "to_height": (w + 1) * W - 1,
                "blocks": n,
                "volume": vol[0],
                "credit_volume": vol[1],
                "trades": vol[2],
                "fees": vol[3],
                "average_supply": avg,
                "velocity": vol[0] / avg if avg else 0.0,
            }
        )
    return out
