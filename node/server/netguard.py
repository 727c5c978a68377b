"""Connection guard for the node's listeners (HTTP API and the p2p websocket): the limits that keep a
slow-loris or a connection flood from exhausting file descriptors, and rate-limited logging.

Every accepted TCP connection passes through a `Guarded` protocol wrapped around aiohttp's handler:

- **Global cap** (`max_conns`, kept below the process's file-descriptor limit by `fd_budget`): a
  connection over the cap first evicts the oldest connection that has not yet delivered a complete
  request head (a slow-loris victim slot); if there is none it is closed at once.
- **Per-address cap** (`max_per_ip`): an IP's connections beyond it are closed at once.
- **Header deadline** (`header_timeout`): a request's head (request line and headers) must be complete
  within this many seconds of its first byte, and the first request within this many seconds of the
  connect (a silent connection is closed).
- **Body deadline**: a body of L bytes must arrive within ``header_timeout + L / min_body_rate``
  seconds of its head (chunked bodies: with L = `max_body`).
- **Idle keep-alive** connections are closed by aiohttp after `idle_timeout` (its ``keepalive_timeout``);
  upgraded connections (websockets) leave the guard's deadlines and are timed by the p2p layer
  (handshake deadline, heartbeat).

The guard only reads the byte stream to find request boundaries; aiohttp still parses and enforces the
HTTP grammar and its own size limits. `RateLimitFilter` bounds repeated log lines (accept errors under
fd exhaustion, handler tracebacks) to a burst per message template, then one line per interval that
counts what it suppressed.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from node.logfmt import event

log = logging.getLogger("pouw.net")

FD_RESERVE = 512  # descriptors kept for one accept batch (BACKLOG), the database, blobs, outbound peers
BACKLOG = 128  # listen backlog; asyncio accepts up to this many sockets before any is closed
MIN_CONNS = 32  # the cap never falls below this, however low the fd limit
MAX_HEAD_BYTES = 128 * 1024
SWEEP_S = 0.25


@dataclass
class GuardLimits:
    max_conns: int = 1000  # open connections over all listeners (also capped by fd_budget())
    max_per_ip: int = 32  # open connections from one IP address
    header_timeout: float = 10.0  # seconds for a request head (and for the first request after connect)
    idle_timeout: float = 30.0  # seconds an idle keep-alive connection is kept (aiohttp keepalive_timeout)
    min_body_rate: int = 16 * 1024  # bytes/s a request body must average (after its head)
    max_body: int = 1 << 30  # the largest body any route accepts (chunked bodies' deadline)


def fd_budget(reserve: int = FD_RESERVE, raise_soft: bool = True) -> int:
    """Connections the process can hold: the soft RLIMIT_NOFILE (raised to the hard limit, as bitcoind
    does, when `raise_soft`) minus `reserve`, at least MIN_CONNS."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if raise_soft and hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
    except ImportError:  # not POSIX
        return 1000
    return max(MIN_CONNS, soft - reserve)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ban_key(ip: str) -> str:
    """The address a ban applies to: the IPv4 address, or the IPv6 /64 (a host gets a whole /64 for free)."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    a = getattr(a, "ipv4_mapped", None) or a
    if a.version == 6:
        return str(ipaddress.ip_network(f"{a}/64", strict=False))
    return str(a)


def netgroup(ip: str) -> str:
    """Coarse network group for eviction (Bitcoin Core style): IPv4 /16, IPv6 /32; the IP otherwise."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    a = getattr(a, "ipv4_mapped", None) or a
    bits = 16 if a.version == 4 else 32
    return str(ipaddress.ip_network(f"{a}/{bits}", strict=False))


HEAD, BODY, CHUNKED, OPEN = "head", "body", "chunked", "open"


class Guarded(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's protocol and tracks the request deadlines."""

    def __init__(self, guard: "ConnectionGuard", factory: Callable[[], Any]):
        self.guard = guard
        self.factory = factory
        self.inner: Any = None  # aiohttp's protocol, made only for an admitted connection
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.started = time.monotonic()
        self.state = HEAD
        self.deadline: float | None = None
        self.head = bytearray()
        self.remaining = 0
        self.requests = 0  # complete request heads seen
        self.active = False  # registered (counted) with the guard

    # --- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        if not self.guard.admit(self):
            self.transport.abort()  # type: ignore[union-attr]  # set just above: a stream transport
            return
        self.deadline = self.started + self.guard.limits.header_timeout
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            return
        self._scan(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.active:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active:
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.active:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.active:
            self.inner.resume_writing()

    # --- request boundaries ------------------------------------------------------------------------------
    def _scan(self, data: bytes) -> None:
        lim = self.guard.limits
        view = memoryview(data)
        while len(view) and self.state != OPEN:
            now = time.monotonic()
            if self.state == HEAD:
                if self.deadline is None:
                    self.deadline = now + lim.header_timeout
                start = max(0, len(self.head) - 3)
                self.head += view
                idx = self.head.find(b"\r\n\r\n", start)
                if idx < 0:
                    if len(self.head) > MAX_HEAD_BYTES:  # aiohttp answers 400 and closes
                        self.state, self.deadline = OPEN, None
                    return
                consumed = idx + 4 - (len(self.head) - len(view))
                self._on_head(bytes(self.head[:idx]), now)
                self.head.clear()
                view = view[consumed:]
            elif self.state == BODY:
                take = min(self.remaining, len(view))
                self.remaining -= take
                view = view[take:]
                if self.remaining == 0:
                    self.state, self.deadline = HEAD, None
            elif self.state == CHUNKED:
                start = max(0, len(self.head) - 6)
                self.head += view
                idx = self.head.find(b"\r\n0\r\n\r\n", start)
                if idx < 0:
                    del self.head[:-6]
                    return
                consumed = idx + 7 - (len(self.head) - len(view))
                self.head.clear()
                view = view[consumed:]
                self.state, self.deadline = HEAD, None

    def _on_head(self, head: bytes, now: float) -> None:
        self.requests += 1
        lim = self.guard.limits
        length, chunked, upgrade = 0, False, False
        for line in head.lower().split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"upgrade":
                upgrade = True
        if upgrade:
            self.state, self.deadline = OPEN, None
        elif chunked:
            self.state = CHUNKED
            self.head = bytearray(b"\r\n")  # so an empty body's "0\r\n\r\n" matches too
            self.deadline = now + lim.header_timeout + lim.max_body / lim.min_body_rate
            return
        elif length > 0:
            self.state, self.remaining = BODY, length
            self.deadline = now + lim.header_timeout + length / lim.min_body_rate
        else:
            self.state, self.deadline = HEAD, None

    def expire(self, now: float) -> bool:
        """Close the connection if it missed its deadline; True when it did."""
        if self.deadline is not None and now > self.deadline and self.transport is not None:
            self.transport.abort()
            return True
        return False


class ConnectionGuard:
    """Counts and limits the connections of every listener it wraps (module docstring)."""

    def __init__(self, limits: GuardLimits):
        self.limits = limits
        self.conns: dict[Guarded, None] = {}  # insertion order = connect order
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._sweeper: asyncio.Task | None = None
        self._last_report = 0.0
        self._reported = (0, 0, 0)

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], Guarded]:
        """A protocol factory for loop.create_server around aiohttp's `runner.server`."""
        return lambda: Guarded(self, factory)

    def admit(self, c: Guarded) -> bool:
        lim = self.limits
        if self.per_ip[c.ip] >= lim.max_per_ip:
            self.refused += 1
            return False
        if len(self.conns) >= lim.max_conns:
            victim = next((o for o in self.conns if o.state == HEAD and o.deadline is not None), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.release(victim)
            if victim.transport is not None:
                victim.transport.abort()
        c.active = True
        self.conns[c] = None
        self.per_ip[c.ip] += 1
        return True

    def release(self, c: Guarded) -> None:
        if c in self.conns:
            del self.conns[c]
            self.per_ip[c.ip] -= 1
            if self.per_ip[c.ip] <= 0:
                del self.per_ip[c.ip]

    def count(self, ip: str | None = None) -> int:
        return len(self.conns) if ip is None else self.per_ip.get(ip, 0)

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except (asyncio.CancelledError, Exception):
                pass
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for c in list(self.conns):
                if c.expire(now):
                    self.timed_out += 1
                    self.release(c)
            self._report()

    def _report(self) -> None:
        now = time.monotonic()
        cur = (self.refused, self.evicted, self.timed_out)
        if cur != self._reported and now - self._last_report >= 10.0:
            d = [a - b for a, b in zip(cur, self._reported)]
            event(
                log,
                logging.WARNING,
                "connection limits hit since the last report",
                refused=d[0],
                cap=self.limits.max_conns,
                per_ip=self.limits.max_per_ip,
                evicted=d[1],
                timed_out=d[2],
                open=len(self.conns),
            )
            self._reported, self._last_report = cur, now


class RateLimitFilter(logging.Filter):
    """Per message template: `burst` records pass (only the first with its traceback), then one per
    `interval` seconds, which carries the count of records suppressed since."""

    def __init__(self, burst: int = 5, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.state: dict[tuple[str, str], list] = {}  # key -> [count in window, window start, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = self.clock()
        st = self.state.get(key)
        if st is None or now - st[1] >= self.interval:
            suppressed = st[2] if st else 0
            if len(self.state) > 1000:
                self.state.clear()
            self.state[key] = [1, now, 0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar message(s) suppressed]"
            return True
        st[0] += 1
        if st[0] <= self.burst:
            record.exc_info = record.exc_text = None
            return True
        st[2] += 1
        return False


_FILTERED = (
    "asyncio",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "aiohttp.access",
    "pouw.api",
    "pouw.p2p",
    "pouw.net",
)
_filter = RateLimitFilter()


def install_log_limits() -> None:
    """Attach the shared rate limiter to the loggers an attacker can make noisy (idempotent)."""
    for name in _FILTERED:
        lg = logging.getLogger(name)
        if _filter not in lg.filters:
            lg.addFilter(_filter)


class GuardedSite(web.BaseSite):
    """An aiohttp site on host:port whose connections pass through a ConnectionGuard."""

    def __init__(self, runner, host: str, port: int, guard: ConnectionGuard, backlog: int = BACKLOG):
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._guard = host, port, guard

    @property
    def port(self) -> int:
        socks = getattr(self._server, "sockets", None)  # asyncio.Server's, not AbstractServer's
        if socks:
            return int(socks[0].getsockname()[1])
        return self._port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._guard.wrap(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class GuardCollector:
    """Prometheus collector: the guard's connection counts, peer slot evictions and event-loop lag."""

    def __init__(self, node: Any):
        self.node = node

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        g, p2p = self.node.guard, self.node.p2p
        yield GaugeMetricFamily("pouw_connections_open", "Open connections on the node's listeners", len(g.conns))
        yield GaugeMetricFamily("pouw_connections_max", "Connection cap (below the fd limit)", g.limits.max_conns)
        yield CounterMetricFamily(
            "pouw_connections_refused", "Connections closed at once (global or per-IP cap)", g.refused
        )
        yield CounterMetricFamily(
            "pouw_connections_evicted", "Connections with an incomplete request evicted at the cap", g.evicted
        )
        yield CounterMetricFamily(
            "pouw_connections_timed_out", "Connections closed at a header or body deadline", g.timed_out
        )
        yield CounterMetricFamily("pouw_peers_evicted", "Inbound peers evicted for a new one", p2p.evicted_count)
        yield GaugeMetricFamily(
            "pouw_peers_pending",
            "Inbound connections still in the p2p handshake",
            sum(1 for x in p2p.peers if x.inbound and not x.ready),
        )
        yield GaugeMetricFamily(
            "pouw_event_loop_lag_seconds", "How late the node's 0.5 s tick last ran", self.node.loop_lag
        )
        st = self.node.storage
        yield GaugeMetricFamily(
            "pouw_storage_fault",
            "1 while the node cannot write its data directory (mining paused, no imports)",
            0 if st.ok else 1,
        )
        yield GaugeMetricFamily(
            "pouw_datadir_free_bytes", "Free bytes in the data directory's file system (last measured)", st.free
        )
