"""The regional reverse proxy: aiohttp low-level server in front, one keep-alive ClientSession per
pool behind, bodies streamed both ways.

The request path: connection guard (limits, slowloris) -> ACL, rate, header/body limits ->
status/metrics/purge endpoints -> route -> WAF -> websocket or cache -> member choice
(persistence, balancer) -> forward with retries -> response (compression, cache store).
Every decision is taken by a pure helper module; this file moves bytes and keeps counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict
from yarl import URL

from ..admin.auth import bearer_matches
from ..clock import SYSTEM_CLOCK, Clock
from . import accesslog, metrics, waf
from .balancers import extract_key
from .cache import Cache, Entry, freshness
from .compress import Compressor, choose_encoding
from .fastpath import FastListener
from .headers import request_headers, response_headers
from .persistence import CookieCodec
from .pool import ActiveChecker, Member, Pool
from .protect import IpAcl, RateLimiter, header_limits_status, parse_networks
from .settings import ListenerSpec, ProxySettings, RouteSpec
from .upstream_tls import server_name

log = logging.getLogger("gslb.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
REPLAY_BUFFER = 64 * 1024  # bodies up to this size are buffered so they can be retried
HARD_HEADER_LIMIT = 65536  # aiohttp parser bound; the configured (smaller) limit answers 431
CHUNK = 64 * 1024


SERVER_NAME = "gslb"  # replaces aiohttp's default Server header, which names its version


def short_response(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=text + "\n", headers={"Server": SERVER_NAME, **(headers or {})}
    )


class BodyTooLarge(Exception):
    pass


class _Body:
    """The client's request body as something aiohttp can send, possibly more than once."""

    def __init__(self, request: web.BaseRequest, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.started = False
        self.too_large = False
        self.buffered: bytes | None = None

    @property
    def replayable(self) -> bool:
        return self.buffered is not None or not self.started

    async def buffer_if_small(self) -> None:
        length = self.request.content_length
        if not self.request.body_exists:
            self.buffered = b""
        elif length is not None and length <= REPLAY_BUFFER:
            self.buffered = await self.request.read()

    async def _stream(self) -> AsyncIterator[bytes]:
        self.started = True
        seen = 0
        async for chunk in self.request.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if self.limit and seen > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            yield chunk

    def data(self) -> bytes | AsyncIterator[bytes] | None:
        if self.buffered is not None:
            return self.buffered or None
        return self._stream()


@dataclass
class _Attempt:
    member: Member | None = None
    status: int = 502
    error: str = ""


class ConnectionGuard:
    """Total and per-client connection counts (the pure part of connection limiting)."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self.per_client: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        if self.max_total and self.total >= self.max_total:
            return False
        if self.max_per_client and self.per_client.get(ip, 0) >= self.max_per_client:
            return False
        self.total += 1
        self.per_client[ip] = self.per_client.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_client.get(ip, 1) - 1
        if left <= 0:
            self.per_client.pop(ip, None)
        else:
            self.per_client[ip] = left


REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
    b"Connection: close\r\n\r\ntoo many connections...\n"
)


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol plus connection limits and a request-head deadline (slowloris)."""

    guard: ConnectionGuard
    head_timeout: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.gslb_ip = str(peer[0]) if peer else ""
        self.gslb_admitted = self.guard.admit(self.gslb_ip)
        self.gslb_busy = False
        self.gslb_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if not self.gslb_admitted:
            metrics.REJECTED.labels("connections").inc()
            transport.write(REFUSED)
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        if self.head_timeout > 0 and self.gslb_timer is None:
            loop = asyncio.get_running_loop()
            self.gslb_timer = loop.call_later(self.head_timeout, self._head_timeout)

    def disarm(self) -> None:
        if self.gslb_timer is not None:
            self.gslb_timer.cancel()
            self.gslb_timer = None

    def _head_timeout(self) -> None:
        self.gslb_timer = None
        transport = self.transport
        if not self.gslb_busy and transport is not None:
            metrics.REJECTED.labels("head_timeout").inc()
            self.force_close()
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.gslb_busy:
            self._arm()
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # An oversize request line or header is 431 (RFC 6585), not aiohttp's generic 400.
        if isinstance(exc, LineTooLong) or "Too many headers" in str(exc or ""):
            status = 431
        return super().handle_error(request, status, exc, message)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disarm()
        if self.gslb_admitted:
            self.guard.release(self.gslb_ip)
            self.gslb_admitted = False
        super().connection_lost(exc)


class _Server(web.Server):
    def __init__(self, guard: ConnectionGuard, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard
        self._head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler.guard = self._guard
        handler.head_timeout = self._head_timeout
        return handler


def _conditional(request: web.BaseRequest) -> bool:
    """The client sent its own validators: its request goes upstream as it is."""
    return any(
        h in request.headers
        for h in ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
    )


def _host_matches(patterns: tuple[str, ...], host: str) -> bool:
    if not patterns:
        return True
    for p in patterns:
        if p == host or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


def match_route(routes: tuple[RouteSpec, ...], host: str, path: str) -> RouteSpec | None:
    """The route with the longest matching path prefix among those whose host matches;
    routes naming the host win over catch-all routes."""
    host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host.lower()
    best: tuple[int, int, int] | None = None
    found = None
    for i, r in enumerate(routes):
        if not _host_matches(r.hosts, host) or not path.startswith(r.path_prefix):
            continue
        rank = (1 if r.hosts else 0, len(r.path_prefix), -i)
        if best is None or rank > best:
            best, found = rank, r
    return found


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
                if _host_matches(hosts, name):
                    sslobj.context = ctx
                    return

    default.sni_callback = pick  # type: ignore[assignment]
    return default


class ProxyServer:
    """One regional proxy: its listeners, pools, health checks and protections."""

    def __init__(
        self,
        settings: ProxySettings,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.reuse_port = reuse_port
        self.pools = {name: Pool(spec, clock, rng) for name, spec in settings.pools.items()}
        self.checker = ActiveChecker(list(self.pools.values()))
        lim = settings.limits
        self.acl = IpAcl(lim.allow, lim.deny)
        self.rate = RateLimiter(lim.rate, lim.burst) if lim.rate > 0 else None
        self.guard = ConnectionGuard(lim.max_connections, lim.max_connections_per_client)
        self.cache = Cache(settings.cache.max_bytes, settings.cache.max_object_bytes, clock)
        self.purge_allow = parse_networks(settings.cache.purge_allow)
        secret = settings.cookie_secret.encode() or secrets.token_bytes(32)
        self.cookies = {
            name: CookieCodec(secret, name, [m.name for m in pool.members])
            for name, pool in self.pools.items()
        }
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._tcp: list[Any] = []
        self._web_servers: list[_Server] = []
        self._fast: list[FastListener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.ports: list[int] = []

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports[0]

    def _session(self, pool: Pool) -> aiohttp.ClientSession:
        session = self._sessions.get(pool.name)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=pool.spec.max_connections,
                keepalive_timeout=pool.spec.keepalive_timeout,
                use_dns_cache=True,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                read_bufsize=CHUNK,
            )
            self._sessions[pool.name] = session
        return session

    async def start(self) -> None:
        from .tcp import TcpRelay

        loop = asyncio.get_running_loop()
        lim = self.settings.limits
        for listener in self.settings.listeners:
            if listener.mode == "tcp":
                assert listener.pool is not None
                relay = TcpRelay(self.pools[listener.pool], self.acl, self.guard, lim.idle_timeout)
                server = await loop.create_server(
                    relay.protocol_factory,
                    listener.host,
                    listener.port,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
                self._tcp.append(relay)
            else:
                proto = "https" if listener.mode == "https" else "http"

                async def handler(
                    request: web.BaseRequest, _l: ListenerSpec = listener, _p: str = proto
                ) -> web.StreamResponse:
                    return await self.handle(request, _l, _p)

                web_server = _Server(
                    self.guard,
                    lim.header_timeout,
                    handler=handler,
                    keepalive_timeout=lim.idle_timeout,
                    max_field_size=HARD_HEADER_LIMIT,
                    max_line_size=HARD_HEADER_LIMIT,
                    max_headers=max(lim.max_headers * 2, 256),
                    auto_decompress=False,
                    access_log=None,
                    read_bufsize=CHUNK,
                )
                self._web_servers.append(web_server)
                ctx = make_ssl_context(listener) if listener.mode == "https" else None
                factory: Any = web_server
                if ctx is None and self.settings.fast_path:
                    factory = FastListener(self, listener, web_server)
                    self._fast.append(factory)
                server = await loop.create_server(
                    factory,
                    listener.host,
                    listener.port,
                    ssl=ctx,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
            self._servers.append(server)
            sock = server.sockets[0]
            self.ports.append(sock.getsockname()[1])
        self.checker.start()
        if self._fast:
            self._sweeper = asyncio.create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        """Close fast-path upstream connections idle longer than their pool's keep-alive."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for pool in self.pools.values():
                limit = pool.spec.keepalive_timeout
                for member in pool.members:
                    for conn in [c for c in member.idle if now - c.idle_since > limit]:
                        conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for server in self._servers:
            server.close()
        for fast in self._fast:
            await fast.aclose()
        for web_server in self._web_servers:
            web_server.pre_shutdown()  # wakes idle keep-alive connections so they close now
        for web_server in self._web_servers:
            await web_server.shutdown(1.0)
        for relay in self._tcp:
            await relay.close()
        for server in self._servers:
            await server.wait_closed()
        await self.checker.close()
        for pool in self.pools.values():
            for member in pool.members:
                for conn in list(member.idle):
                    conn.close()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        self._servers.clear()

    # ---- health ----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        pools = [p.status() for p in self.pools.values()]
        for p in self.pools.values():
            metrics.MEMBERS_UP.labels(p.name).set(p.healthy_count())
        ok = all(p["ok"] for p in pools)
        return ok, {"status": "ok" if ok else "fail", "pools": pools}

    # ---- request path ----------------------------------------------------------------------

    async def handle(
        self, request: web.BaseRequest, listener: ListenerSpec, proto: str
    ) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _GuardedHandler):
            protocol.gslb_busy = True
            protocol.disarm()
        start = time.monotonic()
        info: dict[str, Any] = {"member": "-", "pool": "-"}
        response: web.StreamResponse | None = None
        try:
            response = await self._handle(request, listener, proto, info)
            return response
        finally:
            if isinstance(protocol, _GuardedHandler):
                protocol.gslb_busy = False
            status = response.status if response is not None else 499
            metrics.REQUESTS.labels(info["pool"], f"{status // 100}xx").inc()
            if self.settings.access_log != "off":
                accesslog.write(
                    self.settings.access_log,
                    request.remote or "-",
                    request.method,
                    request.raw_path,
                    f"{request.version.major}.{request.version.minor}",
                    status,
                    response.body_length if response is not None else 0,
                    request.headers.get("Referer", ""),
                    request.headers.get("User-Agent", ""),
                    time.time(),
                    time.monotonic() - start,
                    info["member"],
                )

    async def _handle(
        self, request: web.BaseRequest, listener: ListenerSpec, proto: str, info: dict[str, Any]
    ) -> web.StreamResponse:
        client_ip = request.remote or ""
        lim = self.settings.limits
        if not self.acl.permits(client_ip):
            metrics.REJECTED.labels("acl").inc()
            return short_response(403, "forbidden")
        if self.rate is not None:
            wait = self.rate.take(client_ip, self.clock.monotonic())
            if wait > 0:
                metrics.REJECTED.labels("rate").inc()
                retry = str(max(1, int(wait + 0.999)))
                return short_response(429, "too many requests", {"Retry-After": retry})
        te = request.headers.get("Transfer-Encoding")
        if te is not None and te.strip().lower() != "chunked":
            # e.g. "gzip, chunked": a transfer coding the proxy would not keep intact
            return short_response(501, "transfer coding not implemented")
        if header_limits_status(request.raw_headers, lim.max_header_bytes, lim.max_headers):
            metrics.REJECTED.labels("headers").inc()
            return short_response(431, "request header fields too large")
        length = request.content_length
        if lim.max_body_bytes and length is not None and length > lim.max_body_bytes:
            metrics.REJECTED.labels("body").inc()
            return short_response(413, "request body too large")
        if listener.redirect_https_port is not None:
            host = (
                request.host.rsplit(":", 1)[0]
                if not request.host.startswith("[")
                else (request.host.rsplit("]", 1)[0] + "]")
            )
            port = listener.redirect_https_port
            where = f"https://{host}{'' if port == 443 else f':{port}'}{request.raw_path}"
            return short_response(308, "moved to https", {"Location": where})

        path = request.path
        if request.method in ("GET", "HEAD"):
            if self.settings.status_path is not None and path == self.settings.status_path:
                ok, detail = self.health()
                return web.Response(
                    status=200 if ok else 503,
                    text=json.dumps(detail, indent=1) + "\n",
                    content_type="application/json",
                    headers={"Cache-Control": "no-store"},
                )
            if self.settings.metrics_path is not None and path == self.settings.metrics_path:
                if not self._admin_allowed(request):
                    return short_response(401, "bearer token required")
                return web.Response(body=metrics.metrics_text(), content_type="text/plain")
        if request.method == "PURGE":
            if not self._admin_allowed(request):
                return short_response(401, "bearer token required")
            return self._purge(request, client_ip)

        route = match_route(self.settings.routes, request.host, path)
        if route is None:
            return short_response(404, "no route")
        pool = self.pools[route.pool]
        info["pool"] = pool.name
        if route.waf:
            found = waf.match_request(request.raw_path, request.headers.items())
            if found is not None:
                rule, where = found
                metrics.REJECTED.labels("waf").inc()
                log.warning(
                    "waf: rule %s blocked %s %s from %s (in %s)",
                    rule.id,
                    request.method,
                    request.raw_path,
                    client_ip,
                    where,
                )
                return short_response(403, f"forbidden by rule {rule.id}")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            from .websocket import relay_websocket

            return await relay_websocket(self, request, pool, proto, info)
        cacheable = route.cache and request.method in ("GET", "HEAD")
        stale = None
        if cacheable:
            entry = self.cache.lookup(request.host, request.raw_path, request.headers)
            if entry is None and request.method == "GET" and not _conditional(request):
                # Expired but with a validator: ask the upstream whether it is still good.
                stale = self.cache.stale(request.host, request.raw_path, request.headers)
            if entry is not None:
                metrics.CACHE.labels("hit").inc()
                headers = CIMultiDict(entry.headers)
                headers["Age"] = str(int(entry.age(self.clock.time())))
                headers["X-Cache"] = "HIT"
                return await self._send(
                    request, route, entry.status, entry.reason, headers, None, entry.body
                )
            metrics.CACHE.labels("miss").inc()
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await self._forward(request, route, pool, proto, info, cacheable, stale)

    def _admin_allowed(self, request: web.BaseRequest) -> bool:
        token = self.settings.admin_token
        return token is None or bearer_matches(request, token)

    def _purge(self, request: web.BaseRequest, client_ip: str) -> web.StreamResponse:
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return short_response(403, "forbidden")
        if not any(addr in net for net in self.purge_allow):
            return short_response(403, "forbidden")
        target = request.headers.get("X-Purge-Target", request.raw_path)
        count = self.cache.purge(request.host, target)
        return web.json_response({"purged": count})

    def _candidates(
        self, request: web.BaseRequest, pool: Pool
    ) -> tuple[list[Member], Member | None]:
        """Members to try in order, and the member named by a valid persistence cookie."""
        spec = pool.spec
        key = None
        if spec.balance == "hash":
            key = extract_key(
                spec.hash_key,
                request.remote or "",
                request.headers,
                request.cookies,
                request.raw_path,
            )
        order = pool.choose(key)
        sticky = None
        if spec.persistence == "cookie":
            name = self.cookies[pool.name].decode(request.cookies.get(spec.cookie_name))
            for i, m in enumerate(order):
                if m.name == name:
                    sticky = m
                    order.insert(0, order.pop(i))
                    break
        return order, sticky

    async def _forward(
        self,
        request: web.BaseRequest,
        route: RouteSpec,
        pool: Pool,
        proto: str,
        info: dict[str, Any],
        cacheable: bool,
        stale: Entry | None = None,
    ) -> web.StreamResponse:
        spec = pool.spec
        order, sticky = self._candidates(request, pool)
        if not order:
            return short_response(503, "no healthy upstream")
        body = _Body(request, self.settings.limits.max_body_bytes)
        await body.buffer_if_small()
        idempotent = request.method in IDEMPOTENT or spec.retry_non_idempotent
        session = self._session(pool)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=spec.connect_timeout, sock_read=spec.response_timeout
        )
        attempt = _Attempt()
        pool.budget.active_requests += 1
        retrying = False
        try:
            for n, member in enumerate(order[: 1 + spec.retries]):
                if n > 0:
                    if not pool.budget.allows():
                        break
                    metrics.RETRIES.labels(pool.name).inc()
                    if not retrying:
                        pool.budget.active_retries += 1
                        retrying = True
                attempt.member = member
                info["member"] = member.name
                headers = request_headers(
                    request.headers,
                    request.remote or "",
                    proto,
                    member.name,
                    self.settings.preserve_host,
                    self.settings.trust_forwarded,
                )
                headers.popall("Expect", None)
                if stale is not None:
                    headers.update(stale.validators)
                if body.buffered is not None and body.buffered:
                    headers["Content-Length"] = str(len(body.buffered))
                url = URL(f"{member.scheme}://{member.name}{request.raw_path}", encoded=True)
                tls: dict[str, Any] = {}
                if member.tls:
                    tls = {"ssl": pool.ssl, "server_hostname": server_name(spec, member.host)}
                member.inflight += 1
                sent = time.monotonic()
                try:
                    upstream = await session.request(
                        request.method,
                        url,
                        headers=headers,
                        data=body.data(),
                        allow_redirects=False,
                        timeout=timeout,
                        compress=None,
                        **tls,
                    )
                except aiohttp.ClientConnectorError as exc:
                    # Never connected: nothing was sent, so any method may go elsewhere.
                    member.inflight -= 1
                    self._record(pool, member, False, None, "connect_error")
                    attempt.status, attempt.error = 502, str(exc)
                    if body.replayable:
                        continue
                    break
                except BodyTooLarge:
                    member.inflight -= 1
                    return short_response(413, "request body too large")
                except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                    member.inflight -= 1
                    self._record(pool, member, False, None, "timeout")
                    attempt.status, attempt.error = 504, str(exc) or "timeout"
                    if idempotent and body.replayable:
                        continue
                    break
                except (aiohttp.ClientError, OSError) as exc:
                    member.inflight -= 1
                    if body.too_large:
                        return short_response(413, "request body too large")
                    self._record(pool, member, False, None, "error")
                    attempt.status, attempt.error = 502, str(exc) or type(exc).__name__
                    if idempotent and body.replayable:
                        continue
                    break
                latency = time.monotonic() - sent
                status = upstream.status
                ok = status < 500
                self._record(pool, member, ok, latency, str(status // 100) + "xx")
                last = n == min(len(order), 1 + spec.retries) - 1
                if (
                    status in RETRYABLE_STATUS
                    and idempotent
                    and body.replayable
                    and not last
                    and pool.budget.allows()
                ):
                    upstream.release()
                    member.inflight -= 1
                    attempt.status = status
                    continue
                try:
                    if stale is not None and status == 304:
                        return await self._revalidated(request, route, stale, upstream)
                    return await self._relay(
                        request, route, pool, member, sticky, upstream, cacheable
                    )
                finally:
                    member.inflight -= 1
                    upstream.release()
        finally:
            pool.budget.active_requests -= 1
            if retrying:
                pool.budget.active_retries -= 1
        log.info("upstream failure for %s %s: %s", request.method, request.raw_path, attempt.error)
        text = {502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}
        return short_response(attempt.status, text.get(attempt.status, "bad gateway"))

    def _record(
        self, pool: Pool, member: Member, ok: bool, latency: float | None, outcome: str
    ) -> None:
        before = member.outlier.ejections
        pool.report(member, ok, latency)
        # Labelled children are cached on the member: labels() is a locked dict lookup.
        counters = member.metrics
        counter = counters.get(outcome)
        if counter is None:
            counter = counters[outcome] = metrics.UPSTREAM_REQUESTS.labels(
                pool.name, member.name, outcome
            )
        counter.inc()
        if latency is not None:
            histogram = counters.get("latency")
            if histogram is None:
                histogram = counters["latency"] = metrics.UPSTREAM_LATENCY.labels(
                    pool.name, member.name
                )
            histogram.observe(latency)
        if member.outlier.ejections > before:
            metrics.EJECTIONS.labels(pool.name, member.name).inc()

    async def _revalidated(
        self,
        request: web.BaseRequest,
        route: RouteSpec,
        entry: Entry,
        upstream: aiohttp.ClientResponse,
    ) -> web.StreamResponse:
        """The upstream confirmed a stale entry (304): refresh it and serve its body."""
        await upstream.read()
        metrics.CACHE.labels("revalidated").inc()
        refreshed = response_headers(upstream.headers, self.settings.hide_headers)
        self.cache.refresh(request.host, request.raw_path, request.headers, entry, refreshed)
        headers = CIMultiDict(entry.headers)
        headers["Age"] = str(int(entry.age(self.clock.time())))
        headers["X-Cache"] = "REVALIDATED"
        return await self._send(
            request, route, entry.status, entry.reason, headers, None, entry.body
        )

    async def _relay(
        self,
        request: web.BaseRequest,
        route: RouteSpec,
        pool: Pool,
        member: Member,
        sticky: Member | None,
        upstream: aiohttp.ClientResponse,
        cacheable: bool,
    ) -> web.StreamResponse:
        headers = response_headers(upstream.headers, self.settings.hide_headers)
        spec = pool.spec
        if spec.persistence == "cookie" and sticky is not member:
            value = self.cookies[pool.name].encode(member.name)
            headers.add("Set-Cookie", f"{spec.cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax")
        ttl = None
        if cacheable and request.method == "GET":
            ttl = freshness(request.headers, upstream.status, upstream.headers, self.clock.time())
            headers["X-Cache"] = "MISS"
        chunks = upstream.content.iter_any()
        if ttl is None:
            return await self._send(
                request, route, upstream.status, upstream.reason or "", headers, chunks, None
            )
        # Keep a copy while streaming so the response can be stored, up to the object limit.
        kept: list[bytes] = []
        size = 0
        limit = self.settings.cache.max_object_bytes
        complete = True

        async def tee() -> AsyncIterator[bytes]:
            nonlocal size, complete
            async for chunk in chunks:
                if complete:
                    size += len(chunk)
                    if size > limit:
                        complete = False
                        kept.clear()
                    else:
                        kept.append(chunk)
                yield chunk

        resp = await self._send(
            request, route, upstream.status, upstream.reason or "", headers, tee(), None
        )
        if complete:
            stored = CIMultiDict(headers)
            stored.popall("X-Cache", None)
            stored.popall("Set-Cookie", None)
            self.cache.store(
                request.host,
                request.raw_path,
                request.headers,
                upstream.status,
                upstream.reason or "",
                stored,
                b"".join(kept),
                ttl,
            )
        return resp

    async def _send(
        self,
        request: web.BaseRequest,
        route: RouteSpec,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        chunks: AsyncIterator[bytes] | None,
        body: bytes | None,
    ) -> web.StreamResponse:
        encoding = None
        if route.compress:
            encoding = choose_encoding(
                request.method, status, request.headers, headers, self.settings.compress_min_bytes
            )
        compressor = None
        if encoding is not None:
            compressor = Compressor(encoding)
            headers.popall("Content-Length", None)
            headers["Content-Encoding"] = encoding
            vary = headers.get("Vary")
            if not vary:
                headers["Vary"] = "Accept-Encoding"
            elif "accept-encoding" not in vary.lower():
                headers["Vary"] = vary + ", Accept-Encoding"
            etag = headers.get("ETag")
            if etag and not etag.startswith("W/"):
                headers["ETag"] = "W/" + etag
        elif body is not None and request.method != "HEAD":
            headers["Content-Length"] = str(len(body))
        if "Server" not in headers:
            headers["Server"] = SERVER_NAME
        resp = web.StreamResponse(status=status, reason=reason or None, headers=headers)
        if "Content-Length" not in headers and request.version >= aiohttp.HttpVersion11:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.method == "HEAD" or status in (204, 304):
            await resp.write_eof()
            return resp
        try:
            if body is not None:
                await resp.write(compressor.feed(body) if compressor else body)
            elif chunks is not None:
                async for chunk in chunks:
                    if compressor is not None:
                        chunk = compressor.feed(chunk)
                        if not chunk:
                            continue
                    await resp.write(chunk)
            if compressor is not None:
                await resp.write(compressor.finish())
            await resp.write_eof()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # The head is gone already: the only honest signal left is to cut the connection.
            log.info("response relay aborted: %s", exc or type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
        return resp


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8000', '[::1]:8000' or ':8000' -> (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"listen address {text!r} needs host:port")
    return host or "0.0.0.0", int(port)


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")
