"""Protections: ACL, rate limit, connection limits, header/body limits, slowloris, WAF, and
strict rejection of malformed or smuggled requests."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from gslb.clock import FakeClock
from gslb.proxy import waf
from gslb.proxy.protect import IpAcl, RateLimiter, header_limits_status
from gslb.proxy.settings import LimitsSpec, RouteSpec

from .test_proxy_accel import settings_for


def test_acl() -> None:
    acl = IpAcl(allow=("192.0.2.0/24", "2001:db8::/32"), deny=("192.0.2.128/25",))
    assert acl.permits("192.0.2.1") and acl.permits("2001:db8::5")
    assert not acl.permits("192.0.2.200") and not acl.permits("198.51.100.1")
    assert acl.permits("::ffff:192.0.2.2")
    assert IpAcl(deny=("203.0.113.0/24",)).permits("198.51.100.7")
    assert not IpAcl(allow=("192.0.2.0/24",)).permits("not-an-ip")


def test_token_bucket() -> None:
    rl = RateLimiter(rate=2, burst=3)
    assert [rl.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    assert rl.take("a", 0.0) == pytest.approx(0.5)
    assert rl.take("b", 0.0) == 0  # per client
    assert rl.take("a", 0.5) == 0  # one token refilled
    limited = RateLimiter(rate=1, max_clients=2)
    for ip in ("x", "y", "z"):
        limited.take(ip, 0.0)
    assert len(limited._buckets) == 2


def test_header_limits() -> None:
    hs = [(b"A", b"x" * 10)] * 3
    assert header_limits_status(hs, 100, 3) is None
    assert header_limits_status(hs, 100, 2) == 431
    assert header_limits_status(hs, 30, 10) == 431


def test_waf_rules() -> None:
    blocked = {
        "/../../etc/passwd": "traversal-dotdot",
        "/a/%2e%2e/%2e%2e/b": "traversal-dotdot",
        "/a/%252e%252e/b": "traversal-dotdot",
        "/q?id=1%20UNION%20SELECT%20pw": "sqli-union",
        "/q?id=1'%20OR%20'1'='1": "sqli-tautology",
        "/q?name=admin'--": "sqli-comment",
        "/q?x=%3Cscript%3Ealert(1)%3C/script%3E": "xss-script",
        "/q?x=<img src=x onerror=alert(1)>": "xss-handler",
        "/q?u=javascript:alert(1)": "xss-js-uri",
    }
    for target, rule_id in blocked.items():
        rule = waf.match(target)
        assert rule is not None and rule.id == rule_id, target
    for ok in ("/", "/products?id=42&sort=price", "/a..b/c", "/search?q=union+station"):
        assert waf.match(ok) is None, ok


async def test_acl_and_waf_through_proxy(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    s = settings_for([b], RouteSpec(pool="p", waf=True), limits=LimitsSpec(deny=("127.0.0.0/8",)))
    p = await proxy(s)
    async with client.get(f"http://127.0.0.1:{p.port}/") as resp:
        assert resp.status == 403
    p2 = await proxy(settings_for([b], RouteSpec(pool="p", waf=True)))
    async with client.get(f"http://127.0.0.1:{p2.port}/q?id=1%20union%20select%201") as resp:
        assert resp.status == 403
        assert "sqli-union" in await resp.text()
    async with client.get(f"http://127.0.0.1:{p2.port}/fine") as resp:
        assert resp.status == 200
    assert b.hits["GET /q"] == 0


async def test_rate_limit_429(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    clock = FakeClock()
    p = await proxy(settings_for([b], limits=LimitsSpec(rate=1, burst=2)), clock=clock)
    url = f"http://127.0.0.1:{p.port}/"
    codes = []
    for _ in range(3):
        async with client.get(url) as resp:
            codes.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
    assert codes == [200, 200, 429] and retry_after == "1"
    clock.advance(1)
    async with client.get(url) as resp:
        assert resp.status == 200


async def test_header_and_body_limits(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    limits = LimitsSpec(max_header_bytes=2000, max_headers=20, max_body_bytes=1000)
    p = await proxy(settings_for([b], limits=limits))
    url = f"http://127.0.0.1:{p.port}/upload"
    async with client.get(url, headers={"X-Big": "a" * 3000}) as resp:
        assert resp.status == 431
    many = {f"X-H{i}": "1" for i in range(25)}
    async with client.get(url, headers=many) as resp:
        assert resp.status == 431
    async with client.post(url, data=b"x" * 1001) as resp:
        assert resp.status == 413
    async with client.post(url, data=b"x" * 1000) as resp:
        assert resp.status == 200

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"y" * 100

    async with client.post(url, data=chunks()) as resp:
        assert resp.status == 413


async def raw_exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_connection_limits(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b], limits=LimitsSpec(max_connections_per_client=2)))
    conns = [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(2)]
    try:
        reply = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503")
    finally:
        for _, w in conns:
            w.close()
            await w.wait_closed()
    await asyncio.sleep(0.05)
    reply = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")
    p2 = await proxy(settings_for([b], limits=LimitsSpec(max_connections=1)))
    _, hold = await asyncio.open_connection("127.0.0.1", p2.port)
    try:
        assert (await raw_exchange(p2.port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503")
    finally:
        hold.close()
        await hold.wait_closed()


async def test_slowloris_head_timeout(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b], limits=LimitsSpec(header_timeout=0.2)))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        start = asyncio.get_running_loop().time()
        for _ in range(3):  # keeps trickling: the deadline is for the whole head, not idleness
            await asyncio.sleep(0.05)
            writer.write(b"a")
        got = await asyncio.wait_for(reader.read(), 2)
        assert b"200" not in got  # closed before the head completed
        assert asyncio.get_running_loop().time() - start < 1.0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    # A normal slow upload (head complete, body trickling) is not cut by the head timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))
        got = await asyncio.wait_for(reader.read(4096), 2)
        assert got.startswith(b"HTTP/1.1 200") and b'"size": 4' in got
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ],
    ids=["cl-and-te", "two-cl", "obs-fold", "bare-lf", "te-not-chunked-last"],
)
async def test_malformed_and_smuggled_requests_rejected(backends, proxy, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b]))
    reply = await raw_exchange(p.port, raw)
    status = reply.split(b"\r\n", 1)[0]
    assert status in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request"), reply[:100]
    assert sum(b.hits.values()) == 0


async def test_unknown_transfer_coding_is_501(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b]))
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    reply = await raw_exchange(p.port, raw)
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 501 Not Implemented", reply[:80]
    assert sum(b.hits.values()) == 0


async def test_oversize_head_is_431_even_beyond_the_parser_bound(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b]))
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 70000 + b"\r\n\r\n"
    reply = await raw_exchange(p.port, raw)
    assert b" 431 " in reply.split(b"\r\n", 1)[0]
    long_line = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert b" 431 " in (await raw_exchange(p.port, long_line)).split(b"\r\n", 1)[0]
    assert sum(b.hits.values()) == 0


async def test_metrics_exposed(backends, proxy) -> None:  # type: ignore[no-untyped-def]

    (b,) = await backends(1)
    p = await proxy(settings_for([b], metrics_path="/metrics"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{p.port}/m") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{p.port}/metrics") as resp:
            text = await resp.text()
    assert "gslb_proxy_requests_total" in text and "gslb_proxy_upstream_seconds_bucket" in text
    assert b"gslb_proxy_upstream_requests_total" in p.metrics.text()


async def test_admin_token_guards_metrics_and_purge(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    token = "s3cret-admin-token-0123"
    p = await proxy(settings_for([b], metrics_path="/metrics", admin_token=token))
    base = f"http://127.0.0.1:{p.port}"
    good = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 401
        async with session.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with session.get(f"{base}/metrics", headers=good) as resp:
            assert resp.status == 200 and "gslb_proxy_requests_total" in await resp.text()
        async with session.request("PURGE", f"{base}/x") as resp:
            assert resp.status == 401
        async with session.request("PURGE", f"{base}/x", headers=good) as resp:
            assert resp.status == 200
        async with session.get(f"{base}/health") as resp:
            assert resp.status == 200  # the GSLB's checks need no token
