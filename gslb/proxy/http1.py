"""The HTTP/1.1 transport, plain and TLS: asyncio protocols and httptools (llhttp) on both sides.

It moves bytes and nothing else. llhttp parses (strict mode: conflicting or duplicate
Content-Length, CL with TE, obs-fold, bare LF and bad chunks are errors); framing.py judges
each parsed head; exchange.py takes every decision of the exchange. One request is proxied at a
time per client connection; pipelined requests wait in order, so each gets exactly one answer,
in order. A websocket upgrade accepted by the member (101) turns both connections into a byte
relay: the member itself answers Pings and Closes.

TLS listeners accept a plain TCP connection, count it against the connection limits and start
the handshake under `header_timeout`, so a client that never finishes it is cut like a slowloris.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from asyncio import sslproto
from collections import deque
from typing import Any

import httptools

from . import accesslog
from .cache import Entry
from .compress import Compressor
from .exchange import Exchange, Reply, RequestView, text_reply
from .framing import Refusal, request_framing, response_framing
from .load import LoadMeter
from .metrics import ProxyMetrics
from .pool import Member, Pool
from .protect import ConnectionGuard
from .rtt import RttTable
from .settings import ListenerSpec, ProxySettings, RouteSpec
from .tcpinfo import kernel_rtt, tcp_socket
from .upstream_tls import server_name

log = logging.getLogger("gslb.proxy.http")

REPLAY_LIMIT = 64 * 1024  # request bodies up to this size are kept so a retry can resend them
BUFFER_HIGH = 256 * 1024  # stop reading a side when this much waits for the other side
HARD_HEAD_LIMIT = 65536
UPSTREAM_HEAD_LIMIT = 256 * 1024  # a member's response head larger than this is a bad response
MAX_PIPELINE = 16
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
    b"Connection: close\r\n\r\ntoo many connections...\n"
)


class _Stop(Exception):
    """Raised in a parser callback: parsing stops after this request (its framing is bad)."""


class _Req:
    """One client request on its way through the proxy. Defaults live on the class, so making
    one per request sets only what differs."""

    url = b""
    headers: list[tuple[bytes, bytes]]
    view: RequestView | None = None
    reply: Reply | None = None  # answered by the proxy (refused framing)
    keep_alive = True
    chunked = False
    complete = False
    head_size = 0
    body: list[bytes]
    body_size = 0
    replay: list[bytes] | None
    too_large = False
    route: RouteSpec | None = None
    pool: Pool | None = None
    order: list[Member]
    attempt = 0
    sticky: Member | None = None
    upstream: UpstreamConn | None = None
    started = 0.0
    sent_any = False  # some of the body went to an upstream and cannot be resent
    head_sent = False  # the response head went to the client
    status = 0
    bytes_out = 0
    member = "-"
    retrying = False
    counted = False
    reject = 0
    websocket = False
    stale: Entry | None = None  # an expired cache entry being revalidated
    mode = "none"  # response framing towards the client
    compressor: Compressor | None = None
    store_ttl: float | None = None
    store_headers: Any = None
    kept: list[bytes] | None = None  # the response body kept for the cache
    store_size = 0
    waiting = False  # for a free connection slot of its member
    loaded = False  # counted in flight on the load meter, until _unload

    def __init__(self) -> None:
        self.headers = []
        self.body = []  # received, not yet written upstream
        self.replay = []  # everything received, while small enough
        self.order = []


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
        self.length: int | None = None
        self.chunked = False
        self.head_size = 0
        self.informational = False
        self.done = False
        self.keep_alive = True
        self.head_status = 0  # a HEAD response head, finished after the parser returns
        self.out_of_sync = False
        self.close_delimited = False  # the body ends when the member closes
        self.upgraded = False
        self.bad_upgrade = False
        self.tunnel: ClientConn | None = None
        self.closed = False
        self.counted = True  # holds one of the member's connection slots
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
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        client = self.client
        if self.req is None or client is None:
            # Bytes nobody asked for: the connection is out of sync, never reuse it.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.upgraded and self.req is not None:
                client.tunnel(self, data[exc.args[0] :])
            else:
                self.close()
                client.upstream_failed(self, "101 Switching Protocols to a plain request")
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
        self._release_slot()
        self.closed = True
        self.detach()
        self.member.conns.discard(self)
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.tunnel_closed()
            return
        client = self.client
        if self.req is not None and not self.done and client is not None:
            if self.close_delimited and self.req.head_sent:
                # A body without length or chunks ends with the connection (RFC 9112 6.3).
                self.done = True
                client.response_complete(self)
            else:
                client.upstream_failed(self, "upstream closed the connection")
            client.flush()

    def pause_writing(self) -> None:
        peer = self.tunnel or self.client
        if peer is not None and peer.transport is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.tunnel or self.client
        if peer is not None and peer.transport is not None:
            peer.transport.resume_reading()

    # -- httptools callbacks
    def on_status(self, text: bytes) -> None:
        self.reason += text

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value)
        if self.head_size > UPSTREAM_HEAD_LIMIT:
            raise ValueError("response head too large")  # -> bad response, 502
        lname = name.lower()
        if lname == b"content-length":
            self.length = int(value)  # llhttp checked it (digits, no conflicting duplicate)
        elif lname == b"transfer-encoding":
            self.chunked = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        req = self.req
        if status == 101:
            if req is not None and req.websocket:
                self.upgraded = True
                if self.client is not None:
                    self.client.response_upgrade(self)
            else:
                self.bad_upgrade = True  # nobody asked to switch: failed in data_received
            return
        if status < 200:  # 1xx interim answer (we never send Expect upstream): drop it
            self.informational = True
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.client is not None and req is not None:
            view = req.view
            bodyless = status in (204, 304) or (view is not None and view.method == b"HEAD")
            self.close_delimited = not bodyless and self.length is None and not self.chunked
            if self.close_delimited:
                self.keep_alive = False
            if view is not None and view.method == b"HEAD":
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
        if self.head_status or self.upgraded or self.bad_upgrade:
            return  # HEAD: finished in data_received; 101: the tunnel takes over
        if self.informational:
            self.informational = False
            self.headers = []
            self.reason = b""
            self.length = None
            self.chunked = False
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
        self.length = None
        self.chunked = False
        self.head_size = 0
        self.done = False
        self.informational = False
        self.out_of_sync = False
        self.close_delimited = False
        now = time.monotonic()
        self.sent_at = self.last_activity = now
        self.timeout = timeout
        self.active = client.listener.active
        self.active.add(self)
        assert self.transport is not None
        self.transport.writelines(data)

    def check_timeout(self, now: float) -> None:
        """Called by the listener's sweep: no byte either way for `timeout` -> 504."""
        if self.req is None or self.done or now - self.last_activity < self.timeout:
            return
        client = self.client
        self.close()
        if client is not None:
            client.upstream_failed(self, "timeout", timeout=True)
            client.flush()

    def detach(self) -> None:
        """Out of the listener's set of busy connections (no response timeout any more)."""
        if self.active is not None:
            self.active.discard(self)
            self.active = None

    def _release_slot(self) -> None:
        if self.counted:
            self.counted = False
            self.member.conns.closed()

    def release(self) -> None:
        """The exchange is over: back to the member's idle list, or closed."""
        self.detach()
        self.req = None
        self.client = None
        if self.closed or not self.keep_alive:
            self.close()
            return
        self.idle_since = time.monotonic()
        if self.transport is not None:
            # A slow client may have paused this connection's reads; idle ones must read
            # (to notice a close) and the next request must get its answer.
            self.transport.resume_reading()
        self.member.conns.park(self)

    def close(self) -> None:
        self.detach()
        self.req = None
        self.client = None
        if not self.closed:
            self.closed = True
            self.member.conns.discard(self)
            if self.transport is not None:
                self.transport.close()
            self._release_slot()


class ClientConn(asyncio.Protocol):
    """One client connection."""

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.exchange = listener.exchange
        self.metrics = listener.metrics
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.ip = ""
        self.admitted = False
        self.req: _Req | None = None  # being parsed
        self.last: _Req | None = None  # the last request parsed completely
        self.current: _Req | None = None  # being proxied
        self.pending: deque[_Req] = deque()
        self.stopped = False  # parsing ended (bad framing): answer what is queued, then close
        self.starting = False  # _next is running
        self.tunnel_buf: bytearray | None = None  # bytes after a websocket upgrade request
        self.tunnel_to: UpstreamConn | None = None
        self.handshaking = False
        self.closing = False
        self.head_bytes = 0  # bytes received while a request head is incomplete
        self.in_head = True
        self.deadline = 0.0  # checked by the listener's sweep; 0 = none
        self.deadline_kind = ""
        self.out: list[bytes] = []  # response bytes batched into one write per upstream read
        self.sock: Any = None  # the TCP socket, for its kernel RTT (None: not TCP)
        self.rtt_key: str | None = None  # the client network its RTT samples go to

    # -- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.handshaking:
            # Called again by the TLS layer once its handshake is done: its transport carries
            # the plain bytes from here.
            self.handshaking = False
            self.transport = transport  # type: ignore[assignment]
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        self.sock = tcp_socket(transport)
        if self.sock is not None:
            self.rtt_key = self.listener.rtt.key(self.ip)
        if not self.listener.guard.admit(self.ip):
            self.metrics.rejected("connections")
            if self.listener.ssl is None:
                transport.write(REFUSED)  # type: ignore[attr-defined]
            transport.close()
            self.closing = True
            return
        self.admitted = True
        self.listener.clients.add(self)
        self._arm("head")
        ctx = self.listener.ssl
        if ctx is not None:
            # TLS is layered here, on an accepted and counted connection, so the handshake is
            # under the connection limits and `header_timeout`. It is put in place before this
            # call returns: the event loop may read the ClientHello right after it.
            self.handshaking = True
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            timeout = self.listener.settings.limits.header_timeout or None
            layer = sslproto.SSLProtocol(
                loop,
                self,
                ctx,
                waiter,
                server_side=True,
                ssl_handshake_timeout=timeout,  # type: ignore[arg-type]  # a float works
            )
            transport.set_protocol(layer)
            layer.connection_made(transport)
            task = asyncio.ensure_future(self._handshake(waiter, transport))
            self.listener.tasks.add(task)
            task.add_done_callback(self.listener.tasks.discard)

    async def _handshake(self, waiter: asyncio.Future[None], raw: asyncio.BaseTransport) -> None:
        try:
            await waiter
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError, RuntimeError) as exc:
            log.debug("tls handshake from %s failed: %s", self.ip, exc)
            raw.close()
            self._gone()

    def _gone(self) -> None:
        """Forget this connection (idempotent): limits, sweeps, upstream connections."""
        self._disarm()
        self.listener.clients.discard(self)
        self.closing = True
        if self.admitted:
            self.listener.guard.release(self.ip)
            self.admitted = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        if self.tunnel_to is not None:
            up, self.tunnel_to = self.tunnel_to, None
            up.tunnel = None
            up.close()
        for req in (self.current, *self.pending):
            if req is not None and req.upstream is not None:
                up = req.upstream
                req.upstream = None
                up.member.inflight -= 1
                up.close()  # the answer has nowhere to go
        if self.current is not None:
            self.current.status = self.current.status or 499  # client closed first
            self._finish_log(self.current)
        for req in self.pending:
            self._unload(req)  # queued behind the one being answered: never answered
        self.current = None
        self.pending.clear()

    def pause_writing(self) -> None:
        up = self.tunnel_to
        if up is None and self.current is not None:
            up = self.current.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.tunnel_to
        if up is None and self.current is not None:
            up = self.current.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def _arm(self, kind: str) -> None:
        limits = self.listener.settings.limits
        delay = limits.header_timeout if kind == "head" else limits.idle_timeout
        self.deadline_kind = kind
        self.deadline = time.monotonic() + delay if delay > 0 else 0.0

    def _disarm(self) -> None:
        self.deadline = 0.0

    def check_deadline(self, now: float) -> None:
        """Called by the listener's sweep: a head (or TLS handshake) too slow, or idle too long."""
        if self.deadline and now >= self.deadline and self.current is None:
            self.deadline = 0.0
            if self.deadline_kind == "head":
                self.metrics.rejected("head_timeout")
            self.close_now()

    def flush(self) -> None:
        if self.out:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.writelines(self.out)
            self.out.clear()

    def data_received(self, data: bytes) -> None:
        if self.tunnel_to is not None:
            if self.tunnel_to.transport is not None:
                self.tunnel_to.transport.write(data)
            return
        if self.closing or self.stopped:
            return
        if self.tunnel_buf is not None:
            self.tunnel_buf += data  # after a websocket upgrade head: not HTTP
            if len(self.tunnel_buf) > BUFFER_HIGH and self.transport is not None:
                self.transport.pause_reading()
            return
        if self.current is None and not self.pending and self.req is None:
            if self.deadline_kind == "idle" or not self.deadline:
                self._arm("head")
        if self.in_head:
            self.head_bytes += len(data)
        self._feed(data)
        if self.in_head and self.head_bytes > HARD_HEAD_LIMIT and not self.stopped:
            # A head still incomplete after this many bytes: refuse before buffering more.
            self._refuse(431, "request header fields too large")
        self._next()
        self.flush()

    def _feed(self, data: bytes) -> None:
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                rest = data[exc.args[0] :]
                last = self.last
                if last is not None and last.websocket:
                    self.tunnel_buf = bytearray(rest)
                    return
                # Another protocol (h2c...): not taken up; what follows is the next request.
                self.parser = httptools.HttpRequestParser(self)
                self.in_head = True
                self.head_bytes = len(rest)
                data = rest
                if not data:
                    return
            except httptools.HttpParserError as exc:
                if self.stopped:
                    return  # a callback refused the request (_Stop) and queued its answer
                req = self.req
                if req is not None and req.reject:
                    self._refuse(431, "request header fields too large")
                else:
                    self._refuse(400, f"bad request: {exc}")
                return

    def _refuse(self, status: int, text: str) -> None:
        """Parsing cannot go on: answer the request being parsed (after those before it) and
        close. A request already forwarded whose body broke is cut off upstream."""
        self.stopped = True
        self.metrics.rejected("malformed" if status == 400 else "headers")
        reply = text_reply(status, text, close=True)
        req = self.req
        if req is not None and req is self.current:
            up = req.upstream
            if up is not None:
                req.upstream = None
                up.member.inflight -= 1
                up.close()
            if req.head_sent:
                self.close_now()
            else:
                req.keep_alive = False
                self._reply(req, reply)
            return
        if req is None or req not in self.pending:
            req = _Req()
            self.pending.append(req)
        req.reply = reply
        req.keep_alive = False
        req.complete = True

    def close_now(self) -> None:
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # -- httptools request callbacks
    def on_message_begin(self) -> None:
        self.req = _Req()

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

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        self.in_head = False
        self.head_bytes = 0
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        req.started = time.monotonic()
        if self.rtt_key is not None:
            rtt = kernel_rtt(self.sock)  # the handshake has given the kernel a sample by now
            if rtt is not None:
                self.listener.rtt.add_sample(self.rtt_key, rtt)
        verdict = request_framing(method, version, req.url, req.headers, parser.should_keep_alive())
        if isinstance(verdict, Refusal):
            self._load(req)
            self.stopped = True
            self.metrics.rejected("malformed")
            req.reply = text_reply(verdict.status, verdict.text, close=True)
            req.keep_alive = False
            req.complete = True
            self.pending.append(req)
            raise _Stop(verdict.text)  # the framing after this head cannot be trusted
        view = self.exchange.view(
            method, version, verdict, req.headers, self.ip, self.listener.proto
        )
        req.view = view
        if view.path != self.exchange.status_path:
            # The probe reading the load is not load: /health would never show 0 in flight.
            self._load(req)
        req.keep_alive = verdict.keep_alive
        req.chunked = verdict.chunked
        req.complete = not verdict.chunked and not verdict.length
        req.websocket = verdict.websocket
        if req.websocket:
            req.keep_alive = False  # after it: a tunnel, or the end of the connection
        self.pending.append(req)
        if len(self.pending) > MAX_PIPELINE and self.transport is not None:
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is None or req.reply is not None:
            return
        req.body_size += len(body)
        limit = self.listener.settings.limits.max_body_bytes
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
            up.last_activity = time.monotonic()  # a slow upload is not a slow response
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
        self.last = req
        if req is None or req.reply is not None:
            return
        req.complete = True
        up = req.upstream
        if req.chunked and up is not None and up.transport is not None and not up.closed:
            up.transport.write(b"0\r\n\r\n")

    # -- request handling
    def _next(self) -> None:
        # One loop, never recursion: thousands of pipelined requests answered by the proxy
        # itself would otherwise nest _start -> _finish -> _next that deep.
        if self.starting:
            return
        self.starting = True
        try:
            while self.current is None and self.pending and not self.closing:
                req = self.pending.popleft()
                if self.transport is not None and len(self.pending) <= MAX_PIPELINE:
                    self.transport.resume_reading()
                self._start(req)
        finally:
            self.starting = False

    def _start(self, req: _Req) -> None:
        self.current = req
        self._disarm()
        if req.reply is not None:
            return self._reply(req, req.reply)
        view = req.view
        assert view is not None
        ex = self.exchange
        reply = ex.admit(view) or ex.local(view, self.listener.spec.redirect_https_port)
        if reply is not None:
            return self._reply(req, reply)
        route = ex.route(view)
        if isinstance(route, Reply):
            return self._reply(req, route)
        reply = ex.waf(view, route)
        if reply is not None:
            return self._reply(req, reply)
        pool = ex.pools[route.pool]
        req.route = route
        req.pool = pool
        found = None if req.websocket else ex.cache_lookup(view, route)
        if isinstance(found, Reply):
            return self._reply(req, found)
        req.stale = found
        req.order, req.sticky = ex.candidates(view, pool)
        if not req.order:
            return self._reply(req, text_reply(503, "no healthy upstream"))
        if view.framing.expect_continue and req.body_size == 0 and not req.complete:
            self.out.append(CONTINUE)
        pool.budget.active_requests += 1
        req.counted = True
        self._attempt(req)

    def _attempt(self, req: _Req) -> None:
        pool = req.pool
        assert pool is not None
        spec = pool.spec
        if req.attempt >= min(len(req.order), 1 + spec.retries):
            return self._fail(req, req.status or 502)
        if req.attempt > 0:
            if not pool.budget.allows():
                return self._fail(req, req.status or 502)
            self.metrics.retry(pool.name)
            if not req.retrying:
                req.retrying = True
                pool.budget.active_retries += 1
        member = req.order[req.attempt]
        req.member = member.name
        conns = member.conns
        while conns.idle:
            conn = conns.idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                self._send(req, conn)
                return
            conn.close()
        if not conns.may_open():
            req.waiting = True  # max_connections: wait for a connection of this member
            conns.wait(lambda: self._resume(req, member))
            loop = asyncio.get_running_loop()
            loop.call_later(pool.spec.connect_timeout, self._wait_expired, req, member)
            return
        conns.opened()
        member.inflight += 1
        task = asyncio.ensure_future(self._connect(req, member, pool))
        self.listener.tasks.add(task)
        task.add_done_callback(self.listener.tasks.discard)

    def _wait_expired(self, req: _Req, member: Member) -> None:
        """No connection of `member` came free in time: the next member, or 503."""
        if self.current is not req or not req.waiting or self.closing:
            return
        req.waiting = False  # its entry in the member's waiters passes the slot on
        log.info("no free connection to %s within the connect timeout", member.name)
        req.status = 503
        req.attempt += 1
        self._attempt(req)
        self.flush()

    def _resume(self, req: _Req, member: Member) -> None:
        if self.current is not req or not req.waiting or self.closing:
            member.conns.wake()  # not wanted any more: the slot goes to the next waiter
            return
        req.waiting = False
        self._attempt(req)
        self.flush()

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
            member.conns.closed()
            if self.current is not req:
                return
            self.exchange.record(pool, member, False, None, "connect_error")
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
        self.flush()

    def _send(self, req: _Req, conn: UpstreamConn) -> None:
        member = conn.member
        pool = conn.pool
        view = req.view
        assert view is not None
        req.upstream = conn
        member.inflight += 1
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if req.stale is not None:
            extra = tuple(
                (k.encode(), v.encode("latin-1")) for k, v in req.stale.validators.items()
            )
        data = [self.exchange.upstream_head(view, member, extra, upgrade=req.websocket)]
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

    def _replayable(self, req: _Req) -> bool:
        return req.replay is not None or (not req.sent_any and req.body_size == 0)

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
        self.exchange.record(pool, conn.member, False, None, "timeout" if timeout else "error")
        req.status = 504 if timeout else 502
        url = req.url.decode("latin-1")
        log.info("upstream %s failed for %s: %s", conn.member.name, url, why)
        assert req.view is not None
        if self.exchange.may_retry(req.view.method, pool, self._replayable(req)):
            req.attempt += 1
            self._attempt(req)
        else:
            self._fail(req, req.status)

    def response_upgrade(self, conn: UpstreamConn) -> None:
        """The member accepted a websocket upgrade: pass its 101 on."""
        req = conn.req
        assert req is not None
        self.exchange.record(conn.pool, conn.member, True, time.monotonic() - conn.sent_at, "1xx")
        req.status = 101
        req.head_sent = True
        self.out.append(self.exchange.upgrade_head(conn.reason, conn.headers))

    def tunnel(self, conn: UpstreamConn, rest: bytes) -> None:
        """After a 101: both connections become one byte relay."""
        req = self.current
        if req is None or req.upstream is not conn or self.transport is None:
            conn.close()
            return
        conn.detach()
        req.upstream = None
        conn.member.inflight -= 1
        conn.req = None
        conn.client = None
        conn.tunnel = self
        self.tunnel_to = conn
        self._finish_log(req)
        for queued in self.pending:
            self._unload(queued)
        self.current = None
        self.pending.clear()
        self.flush()
        if rest:
            self.transport.write(rest)
        if self.tunnel_buf and conn.transport is not None:
            conn.transport.write(bytes(self.tunnel_buf))
        self.tunnel_buf = None
        self.transport.resume_reading()

    def tunnel_closed(self) -> None:
        self.tunnel_to = None
        self.close_now()

    def response_head(self, conn: UpstreamConn, status: int) -> None:
        req = conn.req
        assert req is not None and req is self.current and req.view is not None
        view = req.view
        pool = conn.pool
        member = conn.member
        ex = self.exchange
        latency = time.monotonic() - conn.sent_at
        if ex.retry_on_status(
            status, view.method, pool, self._replayable(req), req.attempt, len(req.order)
        ):
            ex.record(pool, member, False, latency, "5xx")
            req.upstream = None
            member.inflight -= 1
            conn.close()
            req.status = status
            req.attempt += 1
            self._attempt(req)
            return
        ex.record(pool, member, status < 500, latency, f"{status // 100}xx")
        req.status = status
        if req.stale is not None and status == 304 and req.route is not None:
            reply = ex.revalidated(view, req.route, req.stale, conn.headers)
            req.stale = None
            req.mode = "replied"
            keep = req.keep_alive and req.complete and not self.closing
            req.keep_alive = keep
            req.head_sent = True
            date = self.exchange.date_line()
            self.out.append(reply.render(keep, view.method == b"HEAD", date))
            if view.method == b"HEAD":
                self._response_done(conn, req)
            return
        plan = ex.response_plan(
            view,
            req.route,
            pool,
            member,
            req.sticky,
            status,
            conn.reason,
            conn.headers,
            None if conn.chunked else conn.length,
        )
        keep = req.keep_alive and req.complete and not self.closing
        framing = response_framing(
            view.method, view.version, status, plan.upstream_length, plan.compress is not None, keep
        )
        parts = [plan.head]
        if framing.mode == "length" or (view.method == b"HEAD" and plan.upstream_length):
            parts.append(b"Content-Length: %d\r\n" % (conn.length or 0))
        elif framing.mode == "chunked":
            parts.append(b"Transfer-Encoding: chunked\r\n")
        keep = framing.keep_alive
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif view.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        req.mode = framing.mode
        req.keep_alive = keep
        req.head_sent = True
        if plan.compress is not None:
            req.compressor = Compressor(plan.compress)
        if plan.store_ttl is not None:
            req.store_ttl = plan.store_ttl
            req.store_headers = plan.store_headers
            req.kept = []
        self.out.append(b"".join(parts))
        if view.method == b"HEAD":
            # The response is complete with its head (UpstreamConn swapped in a fresh parser).
            conn.done = True
            self._response_done(conn, req)

    def response_body(self, conn: UpstreamConn, body: bytes) -> None:
        req = conn.req
        if req is None or self.transport is None or req.mode in ("none", "replied"):
            return
        kept = req.kept
        if kept is not None:
            kept.append(body)
            req.store_size += len(body)
            if req.store_size > self.listener.settings.cache.max_object_bytes:
                req.kept = None  # too large to store: streamed only
        if req.compressor is not None:
            body = req.compressor.feed(body)
            if not body:
                return
        req.bytes_out += len(body)
        if req.mode == "chunked":
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def response_complete(self, conn: UpstreamConn) -> None:
        req = conn.req
        if req is None:
            return
        if req.compressor is not None:
            tail = req.compressor.finish()
            if tail:
                req.bytes_out += len(tail)
                self.out += (
                    (b"%x\r\n" % len(tail), tail, b"\r\n") if req.mode == "chunked" else (tail,)
                )
        if req.mode == "chunked":
            self.out.append(b"0\r\n\r\n")
        if req.kept is not None and req.store_ttl is not None and req.view is not None:
            self.exchange.store(
                req.view, req.status, conn.reason, req.store_headers, b"".join(req.kept),
                req.store_ttl,
            )  # fmt: skip
        self._response_done(conn, req)

    def _response_done(self, conn: UpstreamConn, req: _Req) -> None:
        req.upstream = None
        conn.member.inflight -= 1
        if req.complete and not req.websocket:
            conn.release()
        else:
            conn.close()  # it answered before reading the whole request: not reusable
        self._finish(req)

    def _body_too_large(self, req: _Req) -> None:
        self.metrics.rejected("body")
        if req is not self.current:
            req.reply = text_reply(413, "request body too large", close=True)
            req.keep_alive = False
            self.stopped = True
            return
        up = req.upstream
        if up is not None:
            req.upstream = None
            up.member.inflight -= 1
            up.close()
        if req.head_sent:
            self.close_now()
            return
        req.keep_alive = False
        self.stopped = True
        self._reply(req, text_reply(413, "request body too large", close=True))

    def _fail(self, req: _Req, status: int) -> None:
        text = {502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}
        self._reply(req, text_reply(status, text.get(status, "bad gateway")))

    def _reply(self, req: _Req, reply: Reply) -> None:
        keep = req.keep_alive and req.complete and not reply.close and not self.closing
        req.status = reply.status
        req.keep_alive = keep
        req.bytes_out = len(reply.body)
        head = req.view is not None and req.view.method == b"HEAD"
        self.out.append(reply.render(keep, head, self.exchange.date_line()))
        self._finish(req)
        self.flush()

    def _load(self, req: _Req) -> None:
        """A request head is complete: in flight until _unload, which runs exactly once
        whatever its fate (reply, error, client gone, dropped from the pipeline)."""
        req.loaded = True
        self.listener.load.begin()

    def _unload(self, req: _Req) -> None:
        """The request is over (answered, failed or abandoned): off the load meter, once."""
        if req.loaded:
            req.loaded = False
            self.listener.load.end()

    def _finish_log(self, req: _Req) -> None:
        self._unload(req)
        pool = req.pool
        if req.counted and pool is not None:
            req.counted = False
            pool.budget.active_requests -= 1
            if req.retrying:
                pool.budget.active_retries -= 1
        self.metrics.request(pool.name if pool else "-", req.status)
        fmt = self.listener.settings.access_log
        if fmt != "off":
            agent = referer = ""
            for name, value in req.headers:
                lname = name.lower()
                if lname == b"user-agent":
                    agent = value.decode("latin-1")
                elif lname == b"referer":
                    referer = value.decode("latin-1")
            view = req.view
            accesslog.write(
                fmt,
                self.ip or "-",
                view.method.decode("latin-1") if view else "-",
                req.url.decode("latin-1"),
                view.version if view else "1.1",
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
        if not req.keep_alive or self.closing:
            self.close_now()
            return
        if self.transport is not None:
            self.transport.resume_reading()
        if self.pending:
            self._next()
            return
        # A partial pipelined head keeps the head deadline (slowloris), not the idle one.
        self._arm("head" if self.req is not None else "idle")


class HttpListener:
    """Protocol factory of one http or https listener."""

    def __init__(
        self,
        spec: ListenerSpec,
        settings: ProxySettings,
        exchange: Exchange,
        guard: ConnectionGuard,
        metrics: ProxyMetrics,
        ssl_context: ssl.SSLContext | None,
        load: LoadMeter,
        rtt: RttTable,
    ) -> None:
        self.spec = spec
        # The proxy's one meter and one table, shared by every listener (server.py).
        self.load = load
        self.rtt = rtt
        self.settings = settings
        self.exchange = exchange
        self.guard = guard
        self.metrics = metrics
        self.ssl = ssl_context
        self.proto = b"https" if ssl_context is not None else b"http"
        self.tasks: set[asyncio.Future[Any]] = set()
        self.clients: set[ClientConn] = set()
        self.active: set[UpstreamConn] = set()
        lim = settings.limits
        timeouts = [lim.header_timeout, lim.idle_timeout]
        timeouts += [p.response_timeout for p in settings.pools.values()]
        # Deadlines are checked by one sweep instead of a timer per request: far cheaper, and
        # a quarter of the shortest timeout is precise enough.
        self.interval = min(1.0, max(0.01, min((t for t in timeouts if t > 0), default=1) / 4))
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
            client.close_now()
            if client.tunnel_to is not None:
                client.tunnel_to.close()
        for conn in list(self.active):
            conn.close()
        if self.sweeper is not None:
            self.tasks.add(self.sweeper)
            self.sweeper = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["REFUSED", "ClientConn", "HttpListener", "UpstreamConn"]
