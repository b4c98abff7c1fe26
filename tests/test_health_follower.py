"""The SSE follower against hand-written event servers: gaps, silence, bad status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gslb.config.model import ProbeAgent
from gslb.health.agent import sse
from gslb.health.follower import AgentFollower, parse_event
from tests.test_health_support import wait_for

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Coroutine[Any, Any, str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/v1/health/stream", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    yield start
    for r in runners:
        await r.cleanup()


def snap(seq: int, **states: str) -> dict[str, Any]:
    return {"seq": seq, "targets": {k: {"state": v} for k, v in states.items()}}


async def follow(
    url: str, **kw: Any
) -> tuple[AgentFollower, aiohttp.ClientSession, list[tuple[bool, str]]]:
    session = aiohttp.ClientSession()
    updates: list[tuple[bool, str]] = []
    f = AgentFollower(
        ProbeAgent("us", url),
        session,
        lambda f: updates.append((f.connected, f.last_error)),
        backoff_max=0.05,
        **kw,
    )
    f.start()
    return f, session, updates


async def test_sequence_gap_forces_resync(serve: Any) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if calls == 1:
            await resp.write(sse("snapshot", snap(5, dc1="up")))
            await resp.write(sse("change", {"seq": 7, "targets": {"dc1": {"state": "down"}}}))
        else:
            await resp.write(sse("snapshot", snap(7, dc1="down", dc2="up")))
        await asyncio.sleep(5)
        return resp

    url = await serve(handler)
    f, session, _ = await follow(url)
    try:
        await wait_for(lambda: f.seq == 7 and calls >= 2)
        assert f.states == {"dc1": "down", "dc2": "up"}  # from the resync snapshot
        assert f.connected
    finally:
        await f.stop()
        await session.close()


async def test_silent_stream_times_out_and_reconnects(serve: Any) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse("snapshot", snap(1, dc1="up")))
        await asyncio.sleep(5)  # then nothing: a hung agent
        return resp

    url = await serve(handler)
    f, session, updates = await follow(url, read_timeout=0.2)
    try:
        await wait_for(lambda: calls >= 2, timeout=3)
        assert (False, "no event within 0.2s") in updates
    finally:
        await f.stop()
        await session.close()


async def test_http_error_is_reported(serve: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    url = await serve(handler)
    f, session, updates = await follow(url)
    try:
        await wait_for(lambda: "HTTP 503" in f.last_error)
        assert not f.connected and f.last_event_at is None
        assert (False, "HTTP 503 from " + url + "/v1/health/stream") in updates
    finally:
        await f.stop()
        await session.close()


def test_parse_event() -> None:
    assert parse_event(b'event: change\ndata: {"seq": 2}') == ("change", {"seq": 2})
    assert parse_event(b": comment\r\nevent:heartbeat\r\ndata:{}") == ("heartbeat", {})
    with pytest.raises(ValueError):
        parse_event(b"event: x\ndata: [1]")
