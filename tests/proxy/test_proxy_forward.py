"""Forwarding through a real proxy to real upstreams on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import tracemalloc
from collections import Counter

import aiohttp
from yarl import URL

from gslb.proxy.exchange import match_route
from gslb.proxy.quick import quick_settings, serve_quick
from gslb.proxy.server import ProxyServer, parse_listen
from gslb.proxy.settings import PoolSpec, RouteSpec

from .conftest import get_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_round_robin_spreads_over_members(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(3)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address for b in bs]))
    seen = Counter()
    for _ in range(9):
        seen[(await get_json(client, f"http://127.0.0.1:{p.port}/x"))["backend"]] += 1
    assert seen == {"b0": 3, "b1": 3, "b2": 3}


async def test_weighted_round_robin_through_proxy(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    ups = [f"{bs[0].address}=3", bs[1].address]
    p = await proxy(quick_settings("127.0.0.1:0", ups, "weighted_round_robin"))
    seen = Counter()
    for _ in range(8):
        seen[(await get_json(client, f"http://127.0.0.1:{p.port}/"))["backend"]] += 1
    assert seen == {"b0": 6, "b1": 2}


async def test_hash_on_header_is_sticky(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(3)
    s = quick_settings("127.0.0.1:0", [b.address for b in bs], "hash", hash_key="header:X-User")
    p = await proxy(s)
    url = f"http://127.0.0.1:{p.port}/"
    for user in ("alice", "bob", "carol"):
        got = {(await get_json(client, url, headers={"X-User": user}))["backend"] for _ in range(4)}
        assert len(got) == 1


async def test_headers_rewritten(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    headers = {
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "198.51.100.66",  # spoofed: not trusted by default
        "Host": "app.example.test",
        "X-Kept": "yes",
    }
    url = URL(f"http://127.0.0.1:{p.port}/h?a=%2F&b=%20", encoded=True)
    async with client.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers.get("Server", "gslb") == "gslb"  # neither the backend nor aiohttp
        assert "X-Powered-By" not in resp.headers
        assert resp.headers["X-Backend"] == "b0"
        data = json.loads(await resp.text())
    up = {k.lower(): v for k, v in data["headers"].items()}
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in up
    assert up["x-kept"] == "yes"
    assert up["x-forwarded-for"] == "127.0.0.1"
    assert up["x-forwarded-proto"] == "http"
    assert up["x-forwarded-host"] == "app.example.test"
    assert up["forwarded"] == "for=127.0.0.1;proto=http;host=app.example.test"
    assert up["host"] == "app.example.test"
    assert data["path"] == "/h?a=%2F&b=%20"  # target passed through unchanged


async def test_502_when_no_member_listens(proxy, client) -> None:  # type: ignore[no-untyped-def]
    p = await proxy(quick_settings("127.0.0.1:0", [f"127.0.0.1:{free_port()}"]))
    async with client.get(f"http://127.0.0.1:{p.port}/") as resp:
        assert resp.status == 502
        assert await resp.text() == "bad gateway\n"


async def test_503_when_every_member_is_down(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    for m in p.pools["default"].members:
        m.health.force("down", "test")
    async with client.get(f"http://127.0.0.1:{p.port}/") as resp:
        assert resp.status == 503
        assert await resp.text() == "no healthy upstream\n"


async def test_504_on_slow_upstream(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    b.delay = 2.0
    s = quick_settings("127.0.0.1:0", [b.address])
    pool = s.pools["default"]
    s.pools["default"] = PoolSpec(**{**pool.__dict__, "response_timeout": 0.2, "retries": 0})
    p = await proxy(s)
    async with client.get(f"http://127.0.0.1:{p.port}/") as resp:
        assert resp.status == 504
        assert await resp.text() == "gateway timeout\n"


async def test_chunked_upload_streamed(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))

    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(50):
            yield b"y" * 10000

    async with client.post(f"http://127.0.0.1:{p.port}/upload", data=gen()) as resp:
        assert resp.status == 200
        assert (await resp.json())["size"] == 500000
    assert b.last_headers.get("Transfer-Encoding") == "chunked"


async def test_large_bodies_stream_with_bounded_memory(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    size = 48 * 1024 * 1024
    tracemalloc.start()
    try:
        got = 0
        async with client.get(f"http://127.0.0.1:{p.port}/big?size={size}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(size)
            async for chunk in resp.content.iter_chunked(1 << 20):
                got += len(chunk)
        assert got == size

        async def gen():  # type: ignore[no-untyped-def]
            block = b"z" * (1 << 20)
            for _ in range(size >> 20):
                yield block

        async with client.put(f"http://127.0.0.1:{p.port}/upload", data=gen()) as resp:
            assert (await resp.json())["size"] == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Client, proxy and upstream share this process: far less than the body held at once.
    assert peak < 16 * 1024 * 1024, peak


async def test_keepalive_to_client_and_upstream(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(5):
            async with session.get(f"http://127.0.0.1:{p.port}/") as resp:
                assert resp.status == 200
                await resp.read()
    assert len(p.pools["default"].members[0].conns.idle) == 1
    # One pooled upstream connection served all five requests.
    assert len(b._runner.server.connections) == 1  # type: ignore[union-attr]


async def test_serve_quick_health_goes_503_when_backends_stop(backends, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    p = await serve_quick(
        "127.0.0.1:0",
        [b.address for b in bs],
        health_path="/health",
        min_healthy=2,
        check_interval=0.05,
    )
    try:
        url = f"http://127.0.0.1:{p.port}/health"
        async with client.get(url) as resp:
            assert resp.status == 200
            detail = await resp.json()
            assert detail["pools"][0]["healthy"] == 2
        bs[1].health_status = 500
        for _ in range(100):
            async with client.get(url) as resp:
                if resp.status == 503:
                    detail = await resp.json()
                    break
            await asyncio.sleep(0.02)
        assert resp.status == 503
        assert detail["status"] == "fail"
        states = {m["member"]: m["active"] for m in detail["pools"][0]["members"]}
        assert states[bs[1].address] == "down"
    finally:
        await p.close()


def test_route_matching() -> None:
    routes = (
        RouteSpec(pool="any"),
        RouteSpec(pool="api", path_prefix="/api/"),
        RouteSpec(pool="site", hosts=("www.example.test",)),
        RouteSpec(pool="wild", hosts=("*.example.test",), path_prefix="/w"),
    )
    assert match_route(routes, "other.test", "/x").pool == "any"  # type: ignore[union-attr]
    assert match_route(routes, "other.test", "/api/v1").pool == "api"  # type: ignore[union-attr]
    assert match_route(routes, "WWW.example.test:80", "/api/").pool == "site"  # type: ignore[union-attr]
    assert match_route(routes, "a.example.test", "/w1").pool == "wild"  # type: ignore[union-attr]
    assert match_route(routes[1:2], "x", "/") is None
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen(":80") == ("0.0.0.0", 80)


async def test_programmatic_close_is_clean(backends) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await serve_quick("127.0.0.1:0", [b.address], health_path=None)
    assert isinstance(p, ProxyServer) and p.port > 0
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await p.close()  # open keep-alive clients are closed too, promptly
        await asyncio.wait_for(reader.read(), 2)
        assert reader.at_eof()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_slow_client_download_is_flow_controlled(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    size = 32 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port, limit=65536)
    tracemalloc.start()
    try:
        writer.write(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size)
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)  # the client stalls; the proxy must stop reading upstream
        assert p.pools["default"].members[0].inflight == 1
        got = 0
        while chunk := await reader.read(1 << 20):
            got += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        assert got == size
        # Client, proxy and upstream share this process; a stall must not buffer the body.
        assert peak < 8 * 1024 * 1024, peak
    finally:
        tracemalloc.stop()
        writer.close()
        await writer.wait_closed()


async def test_hash_on_cookie_and_uri(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(3)
    for key in ("cookie:sid", "uri"):
        s = quick_settings("127.0.0.1:0", [b.address for b in bs], "hash", hash_key=key)
        p = await proxy(s)
        spread = set()
        for i in range(12):
            url = f"http://127.0.0.1:{p.port}/item/{i}"
            headers = {"Cookie": f"theme=dark; sid=user{i}"}
            got = {(await get_json(client, url, headers=headers))["backend"] for _ in range(3)}
            assert len(got) == 1  # same key, same member
            spread |= got
        assert len(spread) > 1  # different keys spread over members


async def test_access_log_json_and_combined(backends, proxy, client, caplog) -> None:  # type: ignore[no-untyped-def]
    import dataclasses
    import logging

    (b,) = await backends(1)
    caplog.set_level(logging.INFO, logger="gslb.proxy.access")
    s = dataclasses.replace(quick_settings("127.0.0.1:0", [b.address]), access_log="json")
    p = await proxy(s)
    await get_json(client, f"http://127.0.0.1:{p.port}/logged?x=1", headers={"User-Agent": "t/1"})
    line = json.loads(caplog.records[-1].getMessage())
    assert line["target"] == "/logged?x=1" and line["status"] == 200 and line["agent"] == "t/1"
    assert line["member"] == b.address and line["bytes"] > 0
    s = dataclasses.replace(s, access_log="combined")
    p = await proxy(s)
    await get_json(client, f"http://127.0.0.1:{p.port}/c", headers={"Referer": "http://r.test/"})
    text = caplog.records[-1].getMessage()
    assert text.startswith("127.0.0.1 - - [") and '"GET /c HTTP/1.1" 200 ' in text
    assert '"http://r.test/"' in text


async def test_idle_client_connection_closed(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from gslb.proxy.settings import LimitsSpec

    (b,) = await backends(1)
    s = quick_settings("127.0.0.1:0", [b.address])
    p = await proxy(dataclasses.replace(s, limits=LimitsSpec(idle_timeout=0.2)))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        start = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the proxy
        assert asyncio.get_running_loop().time() - start < 2.0
    finally:
        writer.close()
        await writer.wait_closed()
