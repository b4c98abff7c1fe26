"""The regional reverse proxy: builds its parts and runs its listeners.

ProxyServer owns the pools (members, active checks, passive ejection), the connection guard,
the cache, the metrics object and the listeners: HTTP and HTTPS on the one transport
(http1.py, which calls the one exchange layer, exchange.py), and TCP relays (tcp.py). It
decides nothing about requests itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import ssl
import time
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..config.schema import parse_hostport
from .cache import Cache
from .exchange import Exchange, host_matches
from .http1 import HttpListener
from .load import LoadMeter, LoadSnapshot, merge_loads
from .metrics import ProxyMetrics
from .persistence import CookieCodec
from .pool import ActiveChecker, Pool
from .protect import ConnectionGuard
from .rtt import NetworkRtt, RttTable, merge_rtts, rtt_json
from .settings import ListenerSpec, ProxySettings
from .share import PUBLISH_INTERVAL, WorkerShare, encode
from .tcp import TcpRelay

log = logging.getLogger("gslb.proxy")


def make_ssl_context(listener: ListenerSpec) -> ssl.SSLContext:
    """Modern TLS (1.2+, AEAD ciphers), one certificate per host name chosen by SNI."""

    def base() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    by_host: list[tuple[tuple[str, ...], ssl.SSLContext]] = []
    for cert in listener.certificates:
        ctx = base()
        ctx.load_cert_chain(cert.cert, cert.key)
        by_host.append((cert.hosts, ctx))
    default = by_host[0][1]

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name:
            name = server_name.lower()
            for hosts, ctx in by_host:
                if host_matches(hosts, name):
                    sslobj.context = ctx
                    return

    default.sni_callback = pick
    return default


class ProxyServer:
    """One regional proxy: its listeners, pools, health checks and protections."""

    def __init__(
        self,
        settings: ProxySettings,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        reuse_port: bool = False,
        metrics: ProxyMetrics | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # One meter and one RTT table for every listener of this process; with --workers N,
        # `share` merges the other workers' into what /health reports.
        self.load = LoadMeter(settings.capacity, clock)
        self.rtt = RttTable(settings.rtt, clock)
        self.share = share
        self._publisher: asyncio.Task[None] | None = None
        self.reuse_port = reuse_port
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.metrics.load_source = self.load_report
        self.pools = {name: Pool(spec, clock, rng) for name, spec in settings.pools.items()}
        self.checker = ActiveChecker(list(self.pools.values()))
        lim = settings.limits
        self.guard = ConnectionGuard(lim.max_connections, lim.max_connections_per_client)
        self.cache = Cache(settings.cache.max_bytes, settings.cache.max_object_bytes, clock)
        secret = settings.cookie_secret.encode() or secrets.token_bytes(32)
        self.cookies = {
            name: CookieCodec(secret, name, [m.name for m in pool.members])
            for name, pool in self.pools.items()
        }
        self.exchange = Exchange(
            settings, self.pools, self.cache, self.metrics, clock, self.cookies, self.health
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._tcp: list[TcpRelay] = []
        self._http: list[HttpListener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.ports: list[int] = []

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports[0]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        lim = self.settings.limits
        for listener in self.settings.listeners:
            factory: Any
            if listener.mode == "tcp":
                assert listener.pool is not None
                relay = TcpRelay(
                    self.pools[listener.pool],
                    self.exchange.acl,
                    self.guard,
                    lim.idle_timeout,
                    load=self.load,
                    rtt=self.rtt,
                )
                self._tcp.append(relay)
                factory = relay.protocol_factory
            else:
                ctx = make_ssl_context(listener) if listener.mode == "https" else None
                factory = HttpListener(
                    listener,
                    self.settings,
                    self.exchange,
                    self.guard,
                    self.metrics,
                    ctx,
                    load=self.load,
                    rtt=self.rtt,
                )
                self._http.append(factory)
            server = await loop.create_server(
                factory,
                listener.host,
                listener.port,
                reuse_port=self.reuse_port or None,
                backlog=1024,
            )
            self._servers.append(server)
            sock = server.sockets[0]
            self.ports.append(sock.getsockname()[1])
        self.checker.start()
        self._sweeper = asyncio.create_task(self._sweep_idle())
        if self.share is not None:
            self._publisher = asyncio.create_task(self._publish())

    def _snapshot(self) -> bytes:
        now = self.clock.monotonic()
        return encode(now, self.load.snapshot(now), self.rtt.recent())

    async def _publish(self) -> None:
        """With --workers: this worker's load and RTT table, for the others to merge."""
        assert self.share is not None
        while True:
            self.share.publish(self._snapshot())
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def _sweep_idle(self) -> None:
        """Close upstream connections idle longer than their pool's keep-alive."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for pool in self.pools.values():
                limit = pool.spec.keepalive_timeout
                for member in pool.members:
                    for conn in [c for c in member.conns.idle if now - c.idle_since > limit]:
                        conn.close()

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for server in self._servers:
            server.close()
        for http in self._http:
            await http.aclose()
        for relay in self._tcp:
            await relay.close()
        for server in self._servers:
            await server.wait_closed()
        await self.checker.close()
        for pool in self.pools.values():
            for member in pool.members:
                for conn in list(member.conns.idle):
                    conn.close()
        self._servers.clear()

    # ---- health ----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        pools = [p.status() for p in self.pools.values()]
        for p in self.pools.values():
            self.metrics.up(p.name, p.healthy_count())
        ok = all(p["ok"] for p in pools)
        load, networks, now = self.load_report()
        return ok, {
            "status": "ok" if ok else "fail",
            "pools": pools,
            "load": load.to_json(),
            "rtt": rtt_json(networks, now),
        }

    def load_report(self) -> tuple[LoadSnapshot, list[NetworkRtt], float]:
        """The whole proxy's load and freshest networks: this process's, merged with the
        other workers' published snapshots under --workers."""
        now = self.clock.monotonic()
        own = self.load.snapshot(now)
        networks = self.rtt.recent()
        if self.share is None:
            return own, networks, now
        peers = self.share.peers(now)
        load = merge_loads([own, *(p.load for p in peers)], self.settings.capacity)
        merged = merge_rtts([networks, *(p.networks for p in peers)], now, self.settings.rtt)
        return load, merged, now


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8000', '[::1]:8000' or ':8000' (every IPv4 address) -> (host, port).

    The schema's one HOST:PORT parser (gslb.config.schema.parse_hostport) does the work."""
    text = text.strip()
    parsed = parse_hostport("0.0.0.0" + text if text.startswith(":") else text)
    if parsed is None:
        raise ValueError(f"listen address {text!r} needs HOST:PORT (IPv6 in brackets: [::1]:80)")
    return parsed.host, parsed.port


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")
