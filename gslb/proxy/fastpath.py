"""The lean forwarding path: asyncio protocols and httptools (llhttp) on both sides.

aiohttp's per-request cost (request objects, header multidicts, tasks, client session) bounds a
proxy to a few thousand requests per second per core. Plain forwarding (the common case) runs
here instead, as callbacks without a task per request; the pure decisions are the same
(protect.py, balancers via Pool.choose, persistence, outlier reports, headers rules).

A request that needs the full feature set (status/metrics/purge endpoints, a route with cache or
compression, websocket or other upgrades, Expect: 100-continue) hands its connection to the
aiohttp server: the bytes received since the request began are replayed into an aiohttp
protocol, which then owns the connection.

Parsing is llhttp's strict mode: conflicting Content-Length/Transfer-Encoding, duplicate
Content-Length, obs-fold, bare LF and bad chunk framing are all rejected with 400; oversize
heads get 431.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools

from . import accesslog, metrics, waf
from .balancers import extract_key
from .headers import HOP_BY_HOP
from .protect import header_limits_status
from .upstream_tls import server_name

if TYPE_CHECKING:
    from .pool import Member, Pool
    from .server import ProxyServer, _Server
    from .settings import ListenerSpec, RouteSpec

log = logging.getLogger("gslb.proxy.fast")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
HOP = frozenset(h.encode() for h in HOP_BY_HOP)
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
REPLAY_LIMIT = 64 * 1024  # request bodies up to this size are kept so a retry can resend them
BUFFER_HIGH = 256 * 1024  # stop reading a side when this much waits for the other side
HARD_HEAD_LIMIT = 65536
MAX_PIPELINE = 16


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def short_reply(status: int, text: str, keep_alive: bool, extra: bytes = b"") -> bytes:
    body = (text + "\n").encode()
    conn = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _reason(status)),
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
            b"Connection: " + conn + b"\r\n",
            extra,
            b"\r\n",
            body,
        )
    )


class _Req:
    """One client request on its way through the fast path."""

    __slots__ = (
        "method", "url", "headers", "version", "keep_alive", "chunked", "length", "host",
        "connection", "upgrade", "expect", "cookie", "xff", "forwarded", "head_size",
        "body", "body_size", "replay", "complete", "too_large", "route", "pool", "order",
        "attempt", "sticky", "upstream", "started", "sent_any", "head_sent", "status",
        "bytes_out", "member", "retrying", "counted", "reject",
    )  # fmt: skip

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.chunked = False
        self.length: int | None = None
        self.host = b""
        self.connection = b""
        self.upgrade = False
        self.expect = False
        self.cookie = b""
        self.xff = b""
        self.forwarded = b""
        self.head_size = 0
        self.body: list[bytes] = []  # received, not yet written upstream
        self.body_size = 0
        self.replay: list[bytes] | None = []  # everything received, while small enough
        self.complete = False
        self.too_large = False
        self.route: RouteSpec | None = None
        self.pool: Pool | None = None
        self.order: list[Member] = []
        self.attempt = 0
        self.sticky: Member | None = None
        self.upstream: UpstreamConn | None = None
        self.started = 0.0
        self.sent_any = False  # some of the body went to an upstream and cannot be resent
        self.head_sent = False  # the response head went to the client
        self.status = 0
        self.bytes_out = 0
        self.member = "-"
        self.retrying = False
        self.counted = False
        self.reject = 0


class UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to a pool member; carries one request at a time."""

    def __init__(self, member: Member, pool: Pool) -> None:
        self.member = member
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConn | None = None
        self.req: _Req | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.informational = False
        self.framing = "raw"
        self.done = False
        self.keep_alive = True
        self.head_status = 0  # a HEAD response head, finished after the parser returns
        self.out_of_sync = False
        self.closed = False
        self.reused = False
        self.last_activity = 0.0
        self.idle_since = 0.0
        self.sent_at = 0.0
        self.timeout = 0.0
        self.active: set[UpstreamConn] | None = None  # the listener's set of busy connections

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        client = self.client
        if self.req is None or client is None:
            # Bytes nobody asked for: the connection is out of sync, never reuse it.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            client.upstream_failed(self, f"bad response: {exc}")
        if self.head_status:
            # llhttp cannot be told a response to HEAD has no body: its parser now waits for
            # one. A fresh parser reads the next response; bytes after the head mean the member
            # is out of sync, so the connection is then not reused.
            status = self.head_status
            self.head_status = 0
            self.parser = httptools.HttpResponseParser(self)
            if self.out_of_sync:
                self.keep_alive = False
            if self.req is not None and self.client is not None:
                self.client.response_head(self, status)
        client.flush()  # one write to the client per read from the upstream

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._inactive()
        idle = self.member.idle
        if self in idle:
            idle.remove(self)
        client = self.client
        if self.req is not None and not self.done and client is not None:
            client.upstream_failed(self, "upstream closed the connection")
            client.flush()

    def pause_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.resume_reading()

    # -- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx interim answer (we never send Expect upstream): drop it
            self.informational = True
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.client is not None and self.req is not None:
            if self.req.method == b"HEAD":
                self.head_status = status  # finished in data_received, see there
                return
            self.client.response_head(self, status)

    def on_body(self, body: bytes) -> None:
        if self.head_status:
            self.out_of_sync = True
            return
        if self.client is not None and self.req is not None and not self.informational:
            self.client.response_body(self, body)

    def on_message_complete(self) -> None:
        if self.head_status:
            return  # a HEAD response with Content-Length: 0; finished in data_received
        if self.informational:
            self.informational = False
            self.headers = []
            self.reason = b""
            return
        self.done = True
        if self.client is not None and self.req is not None:
            self.client.response_complete(self)

    # -- helpers
    def start(self, client: ClientConn, req: _Req, data: list[bytes], timeout: float) -> None:
        self.client = client
        self.req = req
        self.headers = []
        self.reason = b""
        self.done = False
        self.informational = False
        self.out_of_sync = False
        now = time.monotonic()
        self.sent_at = self.last_activity = now
        self.timeout = timeout
        self.active = client.fast.active
        self.active.add(self)
        assert self.transport is not None
        self.transport.writelines(data)

    def check_timeout(self, now: float) -> None:
        """Called by the listener's sweep: no byte from the member for `timeout` -> 504."""
        if self.req is None or self.done or now - self.last_activity < self.timeout:
            return
        client = self.client
        self.close()
        if client is not None:
            client.upstream_failed(self, "timeout", timeout=True)
            client.flush()

    def _inactive(self) -> None:
        if self.active is not None:
            self.active.discard(self)
            self.active = None

    def release(self) -> None:
        """The exchange is over: back to the member's idle list, or closed."""
        self._inactive()
        self.req = None
        self.client = None
        if self.closed or not self.keep_alive:
            self.close()
            return
        self.reused = True
        self.idle_since = time.monotonic()
        if self.transport is not None:
            # A slow client may have paused this connection's reads; idle ones must read
            # (to notice a close) and the next request must get its answer.
            self.transport.resume_reading()
        self.member.idle.append(self)

    def close(self) -> None:
        self._inactive()
        self.req = None
        self.client = None
        if not self.closed:
            self.closed = True
            if self in self.member.idle:
                self.member.idle.remove(self)
            if self.transport is not None:
                self.transport.close()


class ClientConn(asyncio.Protocol):
    """One client connection in the fast path."""

    def __init__(self, fast: FastListener) -> None:
        self.fast = fast
        self.proxy = fast.proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.ip = ""
        self.admitted = False
        self.req: _Req | None = None  # being parsed
        self.current: _Req | None = None  # being proxied
        self.pending: deque[_Req] = deque()
        self.raw: bytearray | None = bytearray()  # bytes since the connection was last idle
        self.raw_requests = 0
        self.switch_to: _Req | None = None
        # Relay mode: a pipelined request needed the aiohttp path after others went upstream
        # from here. Their bytes are gone, so this parser keeps parsing and feeds the aiohttp
        # protocol each message re-serialised, in order (see _start_relay).
        self.relay: Any = None
        self.upgraded: bytearray | None = None  # bytes after a pipelined upgrade request head
        self.closing = False
        self.write_paused = False
        self.head_bytes = 0  # bytes received while a request head is incomplete
        self.in_head = True
        self.deadline = 0.0  # checked by the listener's sweep; 0 = none
        self.deadline_kind = ""
        self.out: list[bytes] = []  # response bytes batched into one write per upstream read

    # -- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        if not self.proxy.guard.admit(self.ip):
            metrics.REJECTED.labels("connections").inc()
            from .server import REFUSED

            transport.write(REFUSED)
            transport.close()
            self.closing = True
            return
        self.admitted = True
        self.fast.clients.add(self)
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            self.relay.connection_lost(exc)
            return
        self._disarm()
        self.fast.clients.discard(self)
        self.closing = True
        if self.admitted:
            self.proxy.guard.release(self.ip)
            self.admitted = False
        for req in (self.current, *self.pending):
            if req is not None and req.upstream is not None:
                up = req.upstream
                req.upstream = None
                up.member.inflight -= 1
                up.close()  # the answer has nowhere to go
        if self.current is not None:
            self.current.status = self.current.status or 499  # client closed first
            self._finish_log(self.current)
        self.current = None
        self.pending.clear()

    def pause_writing(self) -> None:
        if self.relay is not None:
            return self.relay.pause_writing()  # type: ignore[no-any-return]
        self.write_paused = True
        req = self.current
        if req is not None and req.upstream is not None and req.upstream.transport is not None:
            req.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.relay is not None:
            return self.relay.resume_writing()  # type: ignore[no-any-return]
        self.write_paused = False
        req = self.current
        if req is not None and req.upstream is not None and req.upstream.transport is not None:
            req.upstream.transport.resume_reading()

    def _arm(self, kind: str) -> None:
        limits = self.proxy.settings.limits
        delay = limits.header_timeout if kind == "head" else limits.idle_timeout
        self.deadline_kind = kind
        self.deadline = time.monotonic() + delay if delay > 0 else 0.0

    def _disarm(self) -> None:
        self.deadline = 0.0

    def check_deadline(self, now: float) -> None:
        """Called by the listener's sweep: a head too slow (slowloris) or a client idle too long."""
        if self.deadline and now >= self.deadline and self.current is None:
            self.deadline = 0.0
            if self.deadline_kind == "head":
                metrics.REJECTED.labels("head_timeout").inc()
            self._close()

    def flush(self) -> None:
        if self.out:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.writelines(self.out)
            self.out.clear()

    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            return self._relay_data(data)
        if self.closing:
            return
        if self.upgraded is not None:
            self.upgraded += data  # after an upgrade head: not HTTP, kept for the aiohttp side
            return
        idle = self.current is None and not self.pending and self.req is None
        if idle:
            if self.deadline_kind == "idle" or not self.deadline:
                self._arm("head")
            self.raw = bytearray()
            self.raw_requests = 0
        if self.raw is not None:
            self.raw += data
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The upgrade request is switched to aiohttp below (first request: raw replay) or
            # once the requests before it are answered (relay mode, with these bytes).
            if self.switch_to is None and self.relay is None:
                self.upgraded = bytearray(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            if self.req is not None and self.req.reject:
                self._bad_request(431, "request header fields too large")
            else:
                self._bad_request(400, f"bad request: {exc}")
            return
        if self.in_head and self.head_bytes > HARD_HEAD_LIMIT:
            # A head still incomplete after this many bytes: refuse before buffering more.
            self._bad_request(431, "request header fields too large")
            return
        if self.switch_to is not None:
            self._switch()

    def _bad_request(self, status: int, text: str) -> None:
        metrics.REJECTED.labels("malformed" if status == 400 else "headers").inc()
        if self.current is None:
            self.out.append(short_reply(status, text, False))
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # -- httptools request callbacks
    def on_message_begin(self) -> None:
        self.req = _Req()
        self.raw_requests += 1

    def on_url(self, url: bytes) -> None:
        req = self.req
        assert req is not None
        req.url += url
        req.head_size += len(url)
        if req.head_size > HARD_HEAD_LIMIT:
            req.reject = 431
            raise ValueError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        assert req is not None
        req.headers.append((name, value))
        req.head_size += len(name) + len(value) + 4
        if req.head_size > HARD_HEAD_LIMIT:
            req.reject = 431
            raise ValueError("request head too large")
        lname = name.lower()
        if lname == b"host":
            req.host = value
        elif lname == b"content-length":
            req.length = int(value)
        elif lname == b"transfer-encoding":
            req.chunked = True
            if value.strip().lower() != b"chunked":
                req.reject = 501  # e.g. "gzip, chunked": a transfer coding we would not keep
        elif lname == b"connection":
            req.connection = value.lower()
        elif lname == b"upgrade":
            req.upgrade = True
        elif lname == b"expect":
            req.expect = True
        elif lname == b"cookie":
            req.cookie = req.cookie + b"; " + value if req.cookie else value
        elif lname == b"x-forwarded-for":
            req.xff = req.xff + b", " + value if req.xff else value
        elif lname == b"forwarded":
            req.forwarded = req.forwarded + b", " + value if req.forwarded else value

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        self.in_head = False
        self.head_bytes = 0
        req.method = self.parser.get_method()
        req.version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()
        req.started = time.monotonic()
        if self.relay is not None:
            self.relay.data_received(_serialise_head(req))
            return
        if self.current is None and not self.pending:
            self._start(req)
        else:
            self.pending.append(req)
            if len(self.pending) > MAX_PIPELINE and self.transport is not None:
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.req
        if self.relay is not None and req is not None:
            self.relay.data_received(b"%x\r\n%s\r\n" % (len(body), body) if req.chunked else body)
            return
        if req is None or req is self.switch_to:
            return
        req.body_size += len(body)
        limit = self.proxy.settings.limits.max_body_bytes
        if limit and req.body_size > limit:
            if not req.too_large:
                req.too_large = True
                self._body_too_large(req)
            return
        if req.replay is not None:
            if req.body_size <= REPLAY_LIMIT:
                req.replay.append(body)
            else:
                req.replay = None
        up = req.upstream
        if up is not None and up.transport is not None and not up.closed:
            req.sent_any = True
            if req.chunked:
                up.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                up.transport.write(body)
        else:
            req.body.append(body)
            if req.body_size > BUFFER_HIGH and self.transport is not None:
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        req = self.req
        self.req = None
        self.in_head = True
        if self.relay is not None:
            if req is not None and req.chunked:
                self.relay.data_received(b"0\r\n\r\n")
            return
        if req is None or req is self.switch_to:
            return
        req.complete = True
        up = req.upstream
        if req.chunked and up is not None and up.transport is not None and not up.closed:
            up.transport.write(b"0\r\n\r\n")

    # -- request handling
    def _start(self, req: _Req) -> None:
        self.current = req
        self._disarm()
        proxy = self.proxy
        settings = proxy.settings
        lim = settings.limits
        if not proxy.acl.permits(self.ip):
            metrics.REJECTED.labels("acl").inc()
            return self._reply(req, 403, "forbidden")
        if proxy.rate is not None:
            wait = proxy.rate.take(self.ip, proxy.clock.monotonic())
            if wait > 0:
                metrics.REJECTED.labels("rate").inc()
                retry = max(1, int(wait + 0.999))
                return self._reply(req, 429, "too many requests", b"Retry-After: %d\r\n" % retry)
        if req.reject == 501:
            return self._reply(req, 501, "transfer coding not implemented", close=True)
        if header_limits_status(req.headers, lim.max_header_bytes, lim.max_headers):
            metrics.REJECTED.labels("headers").inc()
            return self._reply(req, 431, "request header fields too large", close=True)
        if lim.max_body_bytes and req.length is not None and req.length > lim.max_body_bytes:
            metrics.REJECTED.labels("body").inc()
            return self._reply(req, 413, "request body too large", close=True)
        if self.fast.listener.redirect_https_port is not None or req.upgrade or req.expect:
            return self._hand_over(req)
        path = req.url.split(b"?", 1)[0]
        if path in self.fast.special_paths or req.method == b"PURGE":
            return self._hand_over(req)
        route = self.fast.only_route
        if route is None:
            from .server import match_route

            host = req.host.decode("latin-1")
            route = match_route(settings.routes, host, path.decode("latin-1"))
        if route is None:
            return self._reply(req, 404, "no route")
        if route.cache or route.compress:
            return self._hand_over(req)
        pool = proxy.pools[route.pool]
        req.route = route
        req.pool = pool
        if route.waf:
            found = waf.match_request(
                req.url.decode("latin-1"),
                ((n.decode("latin-1"), v.decode("latin-1")) for n, v in req.headers),
            )
            if found is not None:
                rule, where = found
                metrics.REJECTED.labels("waf").inc()
                log.warning(
                    "waf: rule %s blocked %s %s from %s (in %s)",
                    rule.id,
                    req.method.decode(),
                    req.url.decode("latin-1"),
                    self.ip,
                    where,
                )
                return self._reply(req, 403, f"forbidden by rule {rule.id}")
        self.raw = None  # this request stays on the fast path
        req.order, req.sticky = self._candidates(req, pool)
        if not req.order:
            return self._reply(req, 503, "no healthy upstream")
        pool.budget.active_requests += 1
        req.counted = True
        self._attempt(req)

    def _candidates(self, req: _Req, pool: Pool) -> tuple[list[Member], Member | None]:
        spec = pool.spec
        key = None
        cookies: dict[str, str] = {}
        if req.cookie and (spec.persistence == "cookie" or spec.hash_key.startswith("cookie:")):
            for part in req.cookie.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                cookies.setdefault(name, value)
        if spec.balance == "hash":
            headers = {}
            if spec.hash_key.startswith("header:"):
                wanted = spec.hash_key[7:].lower().encode()
                for name, value in req.headers:
                    if name.lower() == wanted:
                        headers[spec.hash_key[7:]] = value.decode("latin-1")
                        break
            key = extract_key(spec.hash_key, self.ip, headers, cookies, req.url.decode("latin-1"))
        order = pool.choose(key)
        sticky = None
        if spec.persistence == "cookie":
            name = self.proxy.cookies[pool.name].decode(cookies.get(spec.cookie_name))
            for i, m in enumerate(order):
                if m.name == name:
                    sticky = m
                    order.insert(0, order.pop(i))
                    break
        return order, sticky

    def _attempt(self, req: _Req) -> None:
        pool = req.pool
        assert pool is not None
        spec = pool.spec
        while True:
            if req.attempt >= min(len(req.order), 1 + spec.retries):
                return self._fail(req, req.status or 502)
            if req.attempt > 0:
                if not pool.budget.allows():
                    return self._fail(req, req.status or 502)
                metrics.RETRIES.labels(pool.name).inc()
                if not req.retrying:
                    req.retrying = True
                    pool.budget.active_retries += 1
            member = req.order[req.attempt]
            req.member = member.name
            idle = member.idle
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.transport is not None:
                    if not conn.transport.is_closing():
                        self._send(req, conn)
                        return
                conn.close()
            member.inflight += 1
            task = asyncio.ensure_future(self._connect(req, member, pool))
            self.fast.tasks.add(task)
            task.add_done_callback(self.fast.tasks.discard)
            return

    async def _connect(self, req: _Req, member: Member, pool: Pool) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(pool.spec.connect_timeout):
                if member.tls:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConn(member, pool),
                        member.host,
                        member.port,
                        ssl=pool.ssl,
                        server_hostname=server_name(pool.spec, member.host),
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConn(member, pool), member.host, member.port
                    )
        except (OSError, TimeoutError) as exc:
            member.inflight -= 1
            if self.current is not req:
                return
            self.proxy._record(pool, member, False, None, "connect_error")
            req.status = 504 if isinstance(exc, TimeoutError) else 502
            log.info("connect to %s failed: %s", member.name, exc or "timeout")
            # Nothing reached the member: any method may try the next one.
            req.attempt += 1
            self._attempt(req)
            self.flush()
            return
        member.inflight -= 1
        if self.current is not req or self.closing:
            conn.release()
            return
        self._send(req, conn)

    def _upstream_head(self, req: _Req, member: Member) -> bytes:
        settings = self.proxy.settings
        trust = settings.trust_forwarded
        drop = self.fast.request_drop
        if req.connection and req.connection not in (b"keep-alive", b"close"):
            drop = drop | {t.strip() for t in req.connection.split(b",")}
        parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
        host = req.host
        for name, value in req.headers:
            if name.lower() not in drop:
                parts += (name, b": ", value, b"\r\n")
        if not host or not settings.preserve_host:
            parts += (b"Host: ", member.name.encode(), b"\r\n")
        ip = self.ip.encode()
        proto = self.fast.proto
        xff = req.xff + b", " + ip if trust and req.xff else ip
        parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ", proto, b"\r\n")
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node + b";proto=" + proto
        if host:
            parts += (b"X-Forwarded-Host: ", host, b"\r\n")
            quoted = host if all(c not in host for c in (b'"', b":", b"[")) else None
            element += b";host=" + (quoted or b'"' + host.replace(b'"', b"") + b'"')
        fwd = req.forwarded + b", " + element if trust and req.forwarded else element
        parts += (b"Forwarded: ", fwd, b"\r\n")
        if req.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _send(self, req: _Req, conn: UpstreamConn) -> None:
        member = conn.member
        pool = conn.pool
        req.upstream = conn
        member.inflight += 1
        data = [self._upstream_head(req, member)]
        if req.replay is not None and req.attempt > 0:
            body = list(req.replay)
        else:
            body = req.body
        req.body = []
        if body:
            req.sent_any = req.sent_any or req.replay is None
            if req.chunked:
                for chunk in body:
                    data += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                data += body
        if req.chunked and req.complete:
            data.append(b"0\r\n\r\n")
        conn.start(self, req, data, pool.spec.response_timeout)
        if self.transport is not None and not req.complete:
            self.transport.resume_reading()

    def _retryable(self, req: _Req) -> bool:
        assert req.pool is not None
        spec = req.pool.spec
        replayable = req.replay is not None or (not req.sent_any and req.body_size == 0)
        return replayable and (req.method in IDEMPOTENT or spec.retry_non_idempotent)

    def upstream_failed(self, conn: UpstreamConn, why: str, timeout: bool = False) -> None:
        req = self.current
        if req is None or req.upstream is not conn:
            return
        req.upstream = None
        conn.member.inflight -= 1
        pool = conn.pool
        if req.head_sent:
            # The head is gone already: the only honest signal left is to cut the connection.
            log.info("response relay aborted: %s", why)
            if self.transport is not None:
                self.transport.abort()
            return
        self.proxy._record(pool, conn.member, False, None, "timeout" if timeout else "error")
        req.status = 504 if timeout else 502
        log.info("upstream %s failed for %s: %s", conn.member.name, req.url.decode("latin-1"), why)
        if self._retryable(req):
            req.attempt += 1
            self._attempt(req)
        else:
            self._fail(req, req.status)

    def response_head(self, conn: UpstreamConn, status: int) -> None:
        req = conn.req
        assert req is not None and req is self.current
        pool = conn.pool
        member = conn.member
        latency = time.monotonic() - conn.sent_at
        spec = pool.spec
        if (
            status in RETRYABLE_STATUS
            and self._retryable(req)
            and req.attempt + 1 < min(len(req.order), 1 + spec.retries)
            and pool.budget.allows()
        ):
            self.proxy._record(pool, member, False, latency, "5xx")
            req.upstream = None
            member.inflight -= 1
            conn.close()
            req.status = status
            req.attempt += 1
            self._attempt(req)
            return
        self.proxy._record(pool, member, status < 500, latency, f"{status // 100}xx")
        req.status = status
        drop = self.fast.response_drop  # hop-by-hop and hidden headers
        parts = [b"HTTP/1.1 %d " % status, conn.reason or _reason(status), b"\r\n"]
        has_length = False
        upstream_chunked = False
        nominated: list[bytes] = []
        for name, value in conn.headers:
            lname = name.lower()
            if lname in drop:
                if lname == b"transfer-encoding":
                    upstream_chunked = True
                elif lname == b"connection":
                    nominated += (t.strip().lower() for t in value.split(b","))
                continue
            if lname == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        if nominated:  # rare: headers the upstream named in Connection are hop-by-hop too
            extra = set(nominated) - {b"close", b"keep-alive"}
            if extra:
                kept = [
                    b"%s: %s\r\n" % (n, v)
                    for n, v in conn.headers
                    if n.lower() not in drop and n.lower() not in extra
                ]
                parts = parts[:3] + kept
        bodyless = req.method == b"HEAD" or status in (204, 304)
        keep = req.keep_alive and req.complete and not self.closing
        if bodyless or (has_length and not upstream_chunked):
            conn.framing = "raw"
        elif req.version == "1.1":
            conn.framing = "chunked"
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            conn.framing = "raw"
            keep = False  # HTTP/1.0 without a length: the end of the body is the close
        if spec.persistence == "cookie" and req.sticky is not member:
            token = self.proxy.cookies[pool.name].encode(member.name).encode()
            cookie = spec.cookie_name.encode() + b"=" + token
            parts += (b"Set-Cookie: ", cookie, b"; Path=/; HttpOnly; SameSite=Lax\r\n")
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        req.keep_alive = keep
        req.head_sent = True
        self.out.append(b"".join(parts))
        if req.method == b"HEAD":
            # The response is complete with its head (UpstreamConn swapped in a fresh parser).
            conn.done = True
            req.upstream = None
            member.inflight -= 1
            if req.complete:
                conn.release()
            else:
                conn.close()
            self._finish(req)

    def response_body(self, conn: UpstreamConn, body: bytes) -> None:
        req = conn.req
        if req is None or self.transport is None:
            return
        req.bytes_out += len(body)
        if conn.framing == "chunked":
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def response_complete(self, conn: UpstreamConn) -> None:
        req = conn.req
        if req is None:
            return
        if conn.framing == "chunked":
            self.out.append(b"0\r\n\r\n")
        req.upstream = None
        conn.member.inflight -= 1
        if req.complete:
            conn.release()
        else:
            conn.close()  # it answered before reading the whole request: not reusable
        self._finish(req)

    def _body_too_large(self, req: _Req) -> None:
        metrics.REJECTED.labels("body").inc()
        if req is not self.current:
            return
        up = req.upstream
        if up is not None:
            req.upstream = None
            up.member.inflight -= 1
            up.close()
        if req.head_sent:
            self._close()
            return
        req.keep_alive = False
        self._reply(req, 413, "request body too large", close=True)

    def _fail(self, req: _Req, status: int) -> None:
        text = {502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}
        self._reply(req, status, text.get(status, "bad gateway"))

    def _reply(
        self, req: _Req, status: int, text: str, extra: bytes = b"", close: bool = False
    ) -> None:
        keep = req.keep_alive and req.complete and not close and not self.closing
        req.status = status
        req.keep_alive = keep
        self.out.append(short_reply(status, text, keep, extra))
        self._finish(req)
        self.flush()

    def _finish_log(self, req: _Req) -> None:
        pool = req.pool
        if req.counted and pool is not None:
            req.counted = False
            pool.budget.active_requests -= 1
            if req.retrying:
                pool.budget.active_retries -= 1
        key = (pool.name if pool else "-", req.status // 100)
        counter = self.fast.counters.get(key)
        if counter is None:
            counter = metrics.REQUESTS.labels(key[0], f"{key[1]}xx")
            self.fast.counters[key] = counter
        counter.inc()
        fmt = self.proxy.settings.access_log
        if fmt != "off":
            agent = referer = ""
            for name, value in req.headers:
                lname = name.lower()
                if lname == b"user-agent":
                    agent = value.decode("latin-1")
                elif lname == b"referer":
                    referer = value.decode("latin-1")
            accesslog.write(
                fmt,
                self.ip or "-",
                req.method.decode(),
                req.url.decode("latin-1"),
                req.version,
                req.status,
                req.bytes_out,
                referer,
                agent,
                time.time(),
                time.monotonic() - req.started,
                req.member,
            )

    def _finish(self, req: _Req) -> None:
        self._finish_log(req)
        self.current = None
        if not req.keep_alive or self.closing or (self.upgraded is not None and not self.pending):
            self._close()  # (an upgrade request answered here: the stream after it is not HTTP)
            return
        if self.pending:
            nxt = self.pending.popleft()
            if self.transport is not None:
                self.transport.resume_reading()
            self._start(nxt)
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self._arm("idle")

    # -- hand-over to the aiohttp server (full feature path)
    def _hand_over(self, req: _Req) -> None:
        if self.raw is None or self.raw_requests != 1 or self.pending:
            # Pipelined behind other requests: its first bytes are gone. The answers before it
            # are complete (it is the current request), so the aiohttp protocol takes over now.
            return self._start_relay(req)
        self.switch_to = req
        self.current = None  # data_received finishes the switch once the parser returns

    def _start_relay(self, req: _Req) -> None:
        transport = self.transport
        assert transport is not None
        self.current = None
        self.flush()  # the answers to the requests before this one go first
        self._disarm()
        if self.admitted:
            self.proxy.guard.release(self.ip)  # the aiohttp protocol counts it again
            self.admitted = False
        self.fast.clients.discard(self)
        handler = self.fast.web_server()
        handler.connection_made(transport)
        self.relay = handler
        transport.resume_reading()  # aiohttp applies its own flow control from here
        backlog = [req, *self.pending]
        self.pending.clear()
        for r in backlog:
            if r.too_large:  # its body was cut short: it cannot be replayed faithfully
                transport.close()
                return
            handler.data_received(_serialise_head(r))
            for body in r.body:
                handler.data_received(b"%x\r\n%s\r\n" % (len(body), body) if r.chunked else body)
            r.body = []
            if r.complete and r.chunked:
                handler.data_received(b"0\r\n\r\n")
        if self.upgraded is not None:
            # Parsing stopped at an upgrade request: what follows is the upgraded protocol.
            rest = bytes(self.upgraded)
            self.upgraded = None
            self.relay = None
            self.closing = True
            transport.set_protocol(handler)
            if rest:
                handler.data_received(rest)

    def _relay_data(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            handler = self.relay
            assert handler is not None and self.transport is not None
            self.relay = None
            self.closing = True
            self.transport.set_protocol(handler)
            rest = data[exc.args[0] :]
            if rest:
                handler.data_received(rest)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def _switch(self) -> None:
        transport = self.transport
        raw = self.raw
        assert transport is not None and raw is not None
        self._disarm()
        if self.admitted:
            self.proxy.guard.release(self.ip)  # the aiohttp protocol counts it again
            self.admitted = False
        self.fast.clients.discard(self)
        self.closing = True
        handler = self.fast.web_server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(bytes(raw))
        self.raw = None


def _serialise_head(req: _Req) -> bytes:
    """A parsed request head as bytes again (relay mode); chunked bodies are re-framed."""
    parts = [req.method, b" ", req.url, b" HTTP/", req.version.encode(), b"\r\n"]
    for name, value in req.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class FastListener:
    """Protocol factory of one plain-HTTP listener."""

    def __init__(self, proxy: ProxyServer, listener: ListenerSpec, web_server: _Server) -> None:
        self.proxy = proxy
        self.listener = listener
        self.web_server = web_server
        self.proto = b"http"
        settings = proxy.settings
        self.special_paths = {
            p.encode() for p in (settings.status_path, settings.metrics_path) if p is not None
        }
        self.hide = frozenset(h.lower().encode() for h in settings.hide_headers)
        self.response_drop = HOP | self.hide
        self.request_drop = HOP | FORWARDED | {b"expect"}
        if not settings.preserve_host:
            self.request_drop |= {b"host"}
        self.counters: dict[tuple[str, int], Any] = {}
        routes = settings.routes
        # The common single catch-all route needs no matching at all.
        self.only_route = (
            routes[0]
            if len(routes) == 1 and not routes[0].hosts and routes[0].path_prefix == "/"
            else None
        )
        self.tasks: set[asyncio.Future[Any]] = set()
        self.clients: set[ClientConn] = set()
        self.active: set[UpstreamConn] = set()
        lim = settings.limits
        timeouts = [lim.header_timeout, lim.idle_timeout]
        timeouts += [p.response_timeout for p in settings.pools.values()]
        # Deadlines are checked by one sweep instead of a timer per request: far cheaper, and
        # a quarter of the shortest timeout is precise enough.
        self.interval = min(1.0, max(0.01, min(t for t in timeouts if t > 0) / 4))
        self.sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> ClientConn:
        if self.sweeper is None:
            self.sweeper = asyncio.ensure_future(self._sweep())
        return ClientConn(self)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for conn in list(self.active):
                conn.check_timeout(now)
            for client in list(self.clients):
                if client.deadline and now >= client.deadline:
                    client.check_deadline(now)

    async def aclose(self) -> None:
        """Close every client and busy upstream connection of this listener (server stop)."""
        for client in list(self.clients):
            client._close()
        for conn in list(self.active):
            conn.close()
        if self.sweeper is not None:
            self.tasks.add(self.sweeper)
            self.sweeper = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
