"""Admin HTTP API of a long-running gslb process: /metrics, /status, /v1/reload, /v1/events and
the live status page (GET /, assets under /static/).

The server only translates HTTP to calls on a StatusSource (the node) and back; it decides
nothing about DNS or health. Access: loopback by default, optional bearer token, optional client
allow list; state-changing requests from another web origin are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .metrics import (
    DnsCollector,
    DnsCounters,
    HealthCollector,
    HealthCounters,
    RegistryCollector,
    StatusCollector,
)

__all__ = [
    "AdminServer",
    "DnsCounters",
    "HealthCounters",
    "StatusSource",
    "parse_listen",
    "start_admin",
]

log = logging.getLogger("gslb.admin")

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "gslb_admin"
HEARTBEAT_SECONDS = 15.0
REPLAY = 200  # events kept for EventSource reconnects (Last-Event-ID)
CLIENT_QUEUE = 256

# The page uses only its own origin: no CDN, no fonts, no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


class StatusSource(Protocol):
    """What the admin server needs from a node. All methods are called on the event loop."""

    def status(self) -> dict[str, Any]: ...  # the /status document

    # ok, errors as "file:line: message"; or an awaitable of that (a node with workers waits
    # until every worker has the new generation)
    def reload(self) -> Any: ...

    # None when the process serves no DNS; a list of DnsCounters is accepted too (one per worker)
    def dns_counters(self) -> DnsCounters | Sequence[DnsCounters] | None: ...

    def health_counters(self) -> HealthCounters | None: ...

    # events (same shape as status["events"][i]); returns an unsubscribe function
    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...

    # `gslb explain --admin`: (HTTP status, the narrated decision this node gives now)
    def explain(self, name: str, client: str, subnet: str | None) -> tuple[int, dict[str, Any]]: ...


def parse_listen(listen: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'host:port', '[v6]:port', ':port' or 'port' -> (host, port). Empty host means loopback.
    The address itself goes through the one HOST:PORT parser."""
    from ..config.schema import parse_hostport

    text = listen.strip()
    if text.isdigit():
        text = f":{text}"
    if text.startswith(":"):
        host = f"[{default_host}]" if ":" in default_host else default_host
        text = host + text
    parsed = parse_hostport(text)
    if parsed is None:
        raise ValueError(f"admin listen {listen!r}: expected host:port with a port of 0-65535")
    return parsed.host, parsed.port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _session_value(token: str) -> str:
    # The cookie holds a digest, not the token itself.
    return hmac.new(token.encode(), b"gslb-admin-session", hashlib.sha256).hexdigest()


class _Events:
    """Fans node events out to SSE clients; keeps a short history for reconnects."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next_id = 1
        self.history: deque[tuple[int, dict[str, Any]]] = deque(maxlen=REPLAY)
        self.clients: set[asyncio.Queue[tuple[int, dict[str, Any]] | None]] = set()
        self.closed = False

    def callback(self, event: dict[str, Any]) -> None:
        # May be called from any thread; hop onto the loop.
        if not self.closed:
            self._loop.call_soon_threadsafe(self._publish, dict(event))

    def _publish(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        item = (self._next_id, event)
        self._next_id += 1
        self.history.append(item)
        for q in list(self.clients):
            try:
                q.put_nowait(item)
            except asyncio.QueueFull:
                # A reader this slow reconnects (EventSource does) and refetches /status.
                self.clients.discard(q)
                _drain_and_end(q)

    def add(self) -> asyncio.Queue[tuple[int, dict[str, Any]] | None]:
        q: asyncio.Queue[tuple[int, dict[str, Any]] | None] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(q)
        return q

    def close(self) -> None:
        self.closed = True
        for q in list(self.clients):
            _drain_and_end(q)
        self.clients.clear()


def _drain_and_end(q: asyncio.Queue[Any]) -> None:
    while not q.empty():
        q.get_nowait()
    q.put_nowait(None)


@dataclass
class _Config:
    source: StatusSource
    token: str | None
    allow: Callable[[str], bool] | None
    registry: CollectorRegistry
    events: _Events
    heartbeat: float


CONFIG = web.AppKey("gslb_admin_config", _Config)


class AdminServer:
    """A running admin server. `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        events: _Events,
        unsubscribe: Callable[[], None],
    ) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._events = events
        self._unsubscribe = unsubscribe
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._unsubscribe()
        self._events.close()  # ends open event streams so shutdown does not wait on them
        await self._runner.cleanup()


async def start_admin(
    listen: str,
    source: StatusSource,
    token: str | None = None,
    allow: Callable[[str], bool] | None = None,
    extra_routes: Sequence[web.RouteDef] = (),
    extra_collectors: Sequence[Collector] = (),
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> AdminServer:
    """Start serving on `listen` ("127.0.0.1:8053"; "" host means loopback).

    token: required as `Authorization: Bearer <token>` on every route when set (the page gets a
    session cookie by opening `/?access_token=<token>` once). allow: client IP -> allowed.
    extra_routes: mounted as is (overrides, demo controls). extra_collectors: joined to /metrics.
    """
    host, port = parse_listen(listen)
    if token == "":
        raise ValueError("admin token must not be empty (use None for no token)")
    if not _is_loopback(host) and token is None and allow is None:
        log.warning("admin API on %s:%d has neither a token nor an allow list", host, port)

    loop = asyncio.get_running_loop()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(source.status))
    registry.register(DnsCollector(source.dns_counters))
    registry.register(HealthCollector(source.health_counters))
    for c in extra_collectors:
        registry.register(RegistryCollector(c))

    events = _Events(loop)
    app = web.Application(middlewares=[_headers_middleware, _access_middleware])
    app[CONFIG] = _Config(source, token, allow, registry, events, heartbeat)
    app.add_routes(
        [
            web.get("/", _index),
            web.get("/static/{name}", _static),
            web.get("/metrics", _metrics),
            web.get("/status", _status),
            web.post("/v1/reload", _reload),
            web.get("/v1/events", _events_stream),
            web.get("/v1/explain", _explain),
            *extra_routes,
        ]
    )
    unsubscribe = source.subscribe(events.callback)
    # No access log: the status page polls every second and would drown real log lines.
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        unsubscribe()
        events.close()
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return AdminServer(runner, host, bound, events, unsubscribe)


# --- middleware -------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        resp = exc
    if not resp.prepared:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cache-Control", "no-store")
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


@web.middleware
async def _access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    if cfg.allow is not None:
        ip = request.remote or ""
        if not ip or not cfg.allow(ip):
            return _error(403, f"client {ip or '?'} is not allowed")
    if cfg.token is not None:
        got = _presented_token(request)
        if got is None and request.method == "GET" and request.path == "/":
            # Browser entry: /?access_token=T sets a session cookie and drops T from the URL.
            offered = request.query.get("access_token")
            if offered is not None and hmac.compare_digest(offered.encode(), cfg.token.encode()):
                redirect = web.HTTPSeeOther("/")
                redirect.set_cookie(
                    COOKIE,
                    _session_value(cfg.token),
                    httponly=True,
                    samesite="Strict",
                    path="/",
                )
                raise redirect
        if got is None or not _token_ok(got, cfg.token):
            resp = _error(401, "a bearer token is required")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="gslb-admin"'
            return resp
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
        # A page on another site must not be able to fail over our datacenters.
        return _error(403, "cross-origin request refused")
    return await handler(request)


def _presented_token(request: web.Request) -> tuple[str, str] | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return ("bearer", value.strip())
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return ("cookie", cookie)
    return None


def _token_ok(got: tuple[str, str], token: str) -> bool:
    kind, value = got
    expected = token if kind == "bearer" else _session_value(token)
    return hmac.compare_digest(value.encode(), expected.encode())


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # curl, scripts, the lead's CLI: no browser, no ambient credentials at risk
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


# --- handlers ---------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


async def _index(request: web.Request) -> web.StreamResponse:
    return _file_response("index.html")


async def _static(request: web.Request) -> web.StreamResponse:
    return _file_response(request.match_info["name"])


def _file_response(name: str) -> web.StreamResponse:
    path = STATIC_DIR / name
    ctype = CONTENT_TYPES.get(path.suffix)
    # Only flat, known asset files; no path tricks.
    if "/" in name or "\\" in name or name.startswith(".") or ctype is None or not path.is_file():
        raise web.HTTPNotFound()
    resp = web.Response(body=path.read_bytes(), headers={"Content-Type": ctype})
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-cache"
    return resp


async def _metrics(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(cfg.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def _status(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    return web.json_response(cfg.source.status(), dumps=_dumps)


async def _explain(request: web.Request) -> web.Response:
    """?name=&client=[&subnet=]: the node narrates the decision it gives now (live health)."""
    cfg = request.app[CONFIG]
    query = request.query
    if not query.get("name") or not query.get("client"):
        return _error(400, "give name and client")
    code, body = cfg.source.explain(query["name"], query["client"], query.get("subnet"))
    return web.json_response(body, status=code, dumps=_dumps)


async def _reload(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    try:
        result = cfg.source.reload()
        if inspect.isawaitable(result):
            result = await result
        ok, errors = result
    except Exception as exc:  # a bug in reload must not take the admin API down
        log.exception("reload failed")
        return web.json_response({"ok": False, "errors": [f"reload crashed: {exc}"]}, status=500)
    if ok:
        return web.json_response({"ok": True}, dumps=_dumps)
    return web.json_response({"ok": False, "errors": list(errors)}, status=409, dumps=_dumps)


async def _events_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `data:` JSON line per node event, heartbeats as comments."""
    cfg = request.app[CONFIG]
    events = cfg.events
    if events.closed:
        raise web.HTTPServiceUnavailable()
    queue = events.add()
    try:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n: connected\n\n")
        last = request.headers.get("Last-Event-ID", "")
        if last.isdigit():
            for past in [i for i in events.history if i[0] > int(last)]:
                await resp.write(_sse(past))
        item: tuple[int, dict[str, Any]] | tuple[()] | None
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), cfg.heartbeat)
            except TimeoutError:
                item = ()
            if item is None:
                break
            try:
                await resp.write(_sse(item) if item else b": keepalive\n\n")
            except ConnectionError:
                break  # the browser went away (tab closed, page reloaded): a normal end
        return resp
    finally:
        events.clients.discard(queue)


def _sse(item: tuple[int, dict[str, Any]]) -> bytes:
    event_id, event = item
    return f"id: {event_id}\ndata: {_dumps(event)}\n\n".encode()
