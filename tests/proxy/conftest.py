"""Real upstream servers on loopback for the proxy tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gslb.proxy.server import ProxyServer
from gslb.proxy.settings import ProxySettings


class Backend:
    """A small upstream app server: names itself, echoes, fails, streams and caches on request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: Counter[str] = Counter()  # "METHOD path" -> count
        self.health_status = 200
        self.fail_status: int | None = None  # answer every proxied request with this status
        self.delay = 0.0
        self.port = 0
        self.last_headers: dict[str, str] = {}
        self.last_raw_headers: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/upload", self.upload)
        app.router.add_get("/big", self.big)
        app.router.add_get("/cache", self.cache)
        app.router.add_get("/text", self.text)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_route("*", "/{tail:.*}", self.default)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _note(self, request: web.Request) -> None:
        self.hits[f"{request.method} {request.path}"] += 1
        self.last_headers = dict(request.headers)
        self.last_raw_headers = [(k.decode(), v.decode()) for k, v in request.raw_headers]

    async def health(self, request: web.Request) -> web.Response:
        self.hits["health"] += 1
        return web.Response(
            status=self.health_status, text="ok" if self.health_status == 200 else "bad"
        )

    async def default(self, request: web.Request) -> web.Response:
        self._note(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text=f"{self.name} failing")
        body = await request.read()
        status = int(request.query.get("status", "200"))
        return web.json_response(
            {
                "backend": self.name,
                "method": request.method,
                "path": request.raw_path,
                "body": body.decode(errors="replace"),
                "headers": dict(request.headers),
            },
            status=status,
            headers={"Server": "secret-backend/1.0", "X-Powered-By": "php", "X-Backend": self.name},
        )

    async def upload(self, request: web.Request) -> web.Response:
        self._note(request)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def big(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * 65536
        left = size if request.method != "HEAD" else 0
        while left > 0:
            n = min(left, len(block))
            await resp.write(block[:n])
            left -= n
        await resp.write_eof()
        return resp

    async def cache(self, request: web.Request) -> web.Response:
        self._note(request)
        headers = {"X-Backend": self.name}
        for key in ("Cache-Control", "Expires", "Vary", "Age"):
            if key.lower() in request.query:
                headers[key] = request.query[key.lower()]
        lang = request.headers.get("Accept-Language", "-")
        n = self.hits[f"GET {request.path}"]
        return web.Response(text=f"{self.name} {lang} #{n}", headers=headers)

    async def text(self, request: web.Request) -> web.Response:
        self._note(request)
        ctype = request.query.get("type", "text/plain")
        size = int(request.query.get("size", "5000"))
        headers = {}
        if "encoding" in request.query:
            headers["Content-Encoding"] = request.query["encoding"]
        return web.Response(body=b"hello gslb " * (size // 11), content_type=ctype, headers=headers)

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        resp = web.StreamResponse(headers={"X-Backend": self.name})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self._note(request)
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}:{msg.data}")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[int], Awaitable[list[Backend]]]]:
    started: list[Backend] = []

    async def make(n: int) -> list[Backend]:
        out = []
        for _ in range(n):
            b = Backend(f"b{len(started)}")
            await b.start()
            started.append(b)
            out.append(b)
        return out

    yield make
    for b in started:
        await b.stop()


@pytest.fixture
async def proxy() -> AsyncIterator[Callable[..., Awaitable[ProxyServer]]]:
    """Starts proxies (one transport: http1.py over the exchange layer)."""
    started: list[ProxyServer] = []

    async def make(settings: ProxySettings, **kwargs: object) -> ProxyServer:
        server = ProxyServer(settings, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        await server.start()
        return server

    yield make
    for s in started:
        await s.close()
    # Every request that started must have been accounted as finished, whatever its fate.
    for s in started:
        leaks = {m.name: m.inflight for p in s.pools.values() for m in p.members if m.inflight}
        assert not leaks, f"in-flight counters leaked: {leaks}"
        budgets = [p.budget.active_requests for p in s.pools.values() if p.budget.active_requests]
        assert not budgets, f"retry budget leaked: {budgets}"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get_json(session: aiohttp.ClientSession, url: str, **kw: object) -> dict[str, object]:
    async with session.get(url, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.text())


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """The proxy runs on uvloop in production (`gslb proxy`): its tests do too."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
