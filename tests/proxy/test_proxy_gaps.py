"""Closed gaps: HEAD keep-alive upstream, pipelined special requests, upstream TLS, cache
revalidation, WAF on header values."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from gslb.clock import FakeClock
from gslb.proxy.quick import quick_settings
from gslb.proxy.settings import RouteSpec

from .test_proxy_http1 import exchange


class CountingUpstream:
    """A raw HTTP/1.1 keep-alive upstream that counts accepted connections and requests."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0]
                self.requests.append(line)
                method, target, _ = line.split(b" ", 2)
                lower = head.lower()
                if b"transfer-encoding: chunked" in lower:
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                elif b"content-length:" in lower:
                    value = lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
                    await reader.readexactly(int(value))
                if target.startswith(b"/status/"):
                    code = int(target.rsplit(b"/", 1)[1])
                    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % code)
                elif method == b"HEAD":
                    # A HEAD answer carries the length of the body it does not send.
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
                else:
                    body = b"hello " + target
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()


@pytest.fixture
async def counting() -> AsyncIterator[CountingUpstream]:
    up = CountingUpstream()
    await up.start()
    yield up
    await up.stop()


async def test_head_204_304_reuse_one_upstream_connection(counting, proxy) -> None:  # type: ignore[no-untyped-def]
    p = await proxy(quick_settings("127.0.0.1:0", [counting.address]))
    for i in range(5):
        got = await exchange(
            p.port, b"HEAD /h%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i
        )
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 5000" in head
        assert body == b""
    for code in (204, 304):
        got = await exchange(
            p.port, b"GET /status/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % code
        )
        assert got.startswith(b"HTTP/1.1 %d" % code)
    # Then a request with a body still works on the same connection (the parser is in sync).
    got = await exchange(p.port, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello /after")
    assert len(counting.requests) == 8
    assert counting.connections == 1


async def test_head_then_get_pipelined_on_one_client_connection(counting, proxy) -> None:  # type: ignore[no-untyped-def]
    p = await proxy(quick_settings("127.0.0.1:0", [counting.address]))
    data = b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
    data += b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got = await exchange(p.port, data)
    assert got.count(b"HTTP/1.1 200") == 3 and got.endswith(b"hello /c")
    assert counting.connections == 1


def with_routes(settings, *routes):  # type: ignore[no-untyped-def]
    return dataclasses.replace(settings, routes=routes)


def responses(got: bytes) -> list[bytes]:
    """Split a stream of Content-Length framed responses into their bodies."""
    out = []
    while got:
        head, _, rest = got.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        assert b"chunked" not in head.lower()
        out.append(head.split(b"\r\n", 1)[0] + b" " + rest[:length])
        got = rest[length:]
    return out


async def test_pipelined_status_endpoint_behind_plain_request(counting, proxy) -> None:  # type: ignore[no-untyped-def]
    p = await proxy(quick_settings("127.0.0.1:0", [counting.address]))
    data = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    data += b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got = responses(await exchange(p.port, data))
    assert len(got) == 2
    assert got[0] == b"HTTP/1.1 200 OK hello /first"
    assert got[1].startswith(b"HTTP/1.1 200 OK") and b'"status": "ok"' in got[1]
    assert counting.requests == [b"GET /first HTTP/1.1"]  # nothing lost, nothing duplicated


async def test_pipelined_cached_route_then_more_requests(counting, proxy) -> None:  # type: ignore[no-untyped-def]
    s = with_routes(
        quick_settings("127.0.0.1:0", [counting.address]),
        RouteSpec(pool="default", path_prefix="/c", cache=True),
        RouteSpec(pool="default"),
    )
    p = await proxy(s)
    body = b"x" * 3000
    data = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
    data += b"GET /c/two HTTP/1.1\r\nHost: x\r\n\r\n"
    # A chunked POST pipelined behind them is forwarded re-framed.
    data += b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    data += b"GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        # Split mid-head of the third request: the relay parses across reads.
        writer.write(data[:90])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[90:])
        got = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
        await writer.wait_closed()
    bodies = responses(got)
    assert bodies == [
        b"HTTP/1.1 200 OK hello /one",
        b"HTTP/1.1 200 OK hello /c/two",
        b"HTTP/1.1 200 OK hello /three",
        b"HTTP/1.1 200 OK hello /four",
    ]
    assert [r.split(b" ")[1] for r in counting.requests] == [
        b"/one",
        b"/c/two",
        b"/three",
        b"/four",
    ]


@pytest.fixture
async def tls_upstream(tmp_path) -> AsyncIterator[tuple[CountingUpstream, str, list[str]]]:  # type: ignore[no-untyped-def]
    """A TLS upstream with a certificate for backend.test and 127.0.0.1; yields it, the CA
    file and the SNI names it saw."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("backend.test", "127.0.0.1").configure_cert(ctx)
    seen: list[str] = []
    ctx.sni_callback = lambda _obj, name, _ctx: seen.append(name or "")  # type: ignore[assignment,misc,func-returns-value]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    up = CountingUpstream(ctx)
    await up.start()
    yield up, str(ca_file), seen
    await up.stop()


def tls_pool(settings, **kw):  # type: ignore[no-untyped-def]
    pool = dataclasses.replace(settings.pools["default"], **kw)
    return dataclasses.replace(settings, pools={"default": pool})


GET = b"GET /secure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_tls_upstream_verified_with_ca_and_sni(tls_upstream, proxy) -> None:  # type: ignore[no-untyped-def]
    up, ca_file, seen = tls_upstream
    s = quick_settings("127.0.0.1:0", [f"https://{up.address}"])
    p = await proxy(tls_pool(s, ca_file=ca_file, server_name="backend.test"))
    for _ in range(2):
        got = await exchange(p.port, GET)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello /secure")
    assert seen and set(seen) == {"backend.test"}
    assert up.connections == 1  # TLS connections are kept alive too


async def test_tls_pool_option_verify_off(tls_upstream, proxy) -> None:  # type: ignore[no-untyped-def]
    up, _, seen = tls_upstream
    s = quick_settings("127.0.0.1:0", [up.address])
    p = await proxy(tls_pool(s, tls=True, verify=False))
    got = await exchange(p.port, GET)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello /secure")


async def test_tls_upstream_wrong_ca_is_502(tls_upstream, proxy, tmp_path) -> None:  # type: ignore[no-untyped-def]
    up, _, _ = tls_upstream
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    s = quick_settings("127.0.0.1:0", [f"https://{up.address}"])
    p = await proxy(tls_pool(s, ca_file=str(other)))
    got = await exchange(p.port, GET)
    assert got.startswith(b"HTTP/1.1 502")
    assert up.requests == []  # nothing was sent over an unverified connection


TLS_CONFIG = """\
proxy:
  regions:
    r1:
      listeners: [{listen: "127.0.0.1:0"}]
      routes: [{pool: web}, {pool: plain, path_prefix: /p}, {pool: bad, path_prefix: /b}]
      pools:
        web:
          members: ["https://127.0.0.1:9443", {address: "http://127.0.0.1:9080"}]
          ca_file: CA
          server_name: backend.test
        plain:
          tls: true
          verify: false
          members: ["127.0.0.1:9444"]
        bad:
          members: ["ftp://127.0.0.1:21"]
          ca_file: /nonexistent/ca.pem
          verify: "yes"
"""


def test_tls_config_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gslb.errors import ConfigError
    from gslb.proxy.config import load_settings

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    good = TLS_CONFIG.split("        bad:")[0].replace("CA", str(ca))
    good = good.replace(", {pool: bad, path_prefix: /b}", "")
    path = tmp_path / "good.yaml"
    path.write_text(good)
    s = load_settings(str(path), "r1")
    web = s.pools["web"]
    assert [m.tls for m in web.members] == [True, False]
    assert (web.ca_file, web.server_name, web.verify, web.tls) == (
        str(ca),
        "backend.test",
        True,
        False,
    )
    assert s.pools["plain"].tls and not s.pools["plain"].verify
    path = tmp_path / "bad.yaml"
    path.write_text(TLS_CONFIG.replace("CA", str(ca)))
    with pytest.raises(ConfigError) as info:
        load_settings(str(path), "r1")
    text = str(info.value)
    assert "scheme must be http or https" in text
    assert "cannot read '/nonexistent/ca.pem'" in text
    assert "must be true or false" in text
    assert "bad.yaml:18:" in text  # positions point into the file (verify: on line 18)


class Versioned:
    """An upstream document with an ETag or a Last-Modified that answers conditionals."""

    def __init__(self) -> None:
        self.version = 1
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/etag", self.etag)
        app.router.add_get("/modified", self.modified)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def etag(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        tag = f'"v{self.version}"'
        cc = {"Cache-Control": "max-age=10", "ETag": tag}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={**cc, "X-Checked": "yes"})
        return web.Response(text=f"version {self.version}", headers=cc)

    async def modified(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        stamp = "Tue, 01 Sep 2026 10:00:00 GMT"
        cc = {"Cache-Control": "max-age=10", "Last-Modified": stamp}
        if request.headers.get("If-Modified-Since") == stamp:
            return web.Response(status=304, headers=cc)
        return web.Response(text="dated body", headers=cc)


@pytest.fixture
async def versioned() -> AsyncIterator[Versioned]:
    v = Versioned()
    await v.start()
    yield v
    assert v.runner is not None
    await v.runner.cleanup()


async def test_stale_entry_revalidated(versioned, proxy, client) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(1_800_000_000.0)
    s = with_routes(
        quick_settings("127.0.0.1:0", [f"127.0.0.1:{versioned.port}"]),
        RouteSpec(pool="default", cache=True),
    )
    p = await proxy(s, clock=clock)
    base = f"http://127.0.0.1:{p.port}"
    async with client.get(f"{base}/etag") as resp:
        assert resp.headers["X-Cache"] == "MISS" and await resp.text() == "version 1"
    clock.advance(15)  # stale now
    async with client.get(f"{base}/etag") as resp:
        assert resp.status == 200 and resp.headers["X-Cache"] == "REVALIDATED"
        assert resp.headers["Age"] == "0" and await resp.text() == "version 1"
        assert resp.headers["X-Checked"] == "yes"  # headers of the 304 were taken
    assert versioned.seen[-1]["If-None-Match"] == '"v1"'
    clock.advance(4)
    async with client.get(f"{base}/etag") as resp:  # freshness restarted at the 304
        assert resp.headers["X-Cache"] == "HIT" and resp.headers["Age"] == "4"
        assert await resp.text() == "version 1"
    assert len(versioned.seen) == 2
    # The document changed: the revalidation gets a 200, which replaces the entry.
    versioned.version = 2
    clock.advance(20)
    async with client.get(f"{base}/etag") as resp:
        assert resp.headers["X-Cache"] == "MISS" and await resp.text() == "version 2"
    async with client.get(f"{base}/etag") as resp:
        assert resp.headers["X-Cache"] == "HIT" and await resp.text() == "version 2"
    # Last-Modified only.
    async with client.get(f"{base}/modified") as resp:
        assert resp.headers["X-Cache"] == "MISS"
    clock.advance(11)
    async with client.get(f"{base}/modified") as resp:
        assert resp.headers["X-Cache"] == "REVALIDATED" and await resp.text() == "dated body"
    assert versioned.seen[-1]["If-Modified-Since"] == "Tue, 01 Sep 2026 10:00:00 GMT"
    # A client with its own validators is passed through: it gets the upstream's 304.
    clock.advance(11)
    async with client.get(f"{base}/etag", headers={"If-None-Match": '"v2"'}) as resp:
        assert resp.status == 304


async def test_waf_checks_header_values(counting, proxy) -> None:  # type: ignore[no-untyped-def]
    s = with_routes(
        quick_settings("127.0.0.1:0", [counting.address]),
        RouteSpec(pool="default", path_prefix="/open"),
        RouteSpec(pool="default", waf=True),
    )
    p = await proxy(s)
    bad = (
        b"User-Agent: <script>alert(1)</script>",
        b"Referer: http://example.test/?q=1%27%20UNION%20SELECT%20password",
        b"Cookie: session=abc; pref=' or '1'='1",
    )
    for header in bad:
        req = b"GET /app HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n" % header
        got = await exchange(p.port, req)
        assert got.startswith(b"HTTP/1.1 403"), (header, got)
        # The same request on a route without the WAF goes through.
        got = await exchange(p.port, req.replace(b"/app", b"/open"))
        assert got.startswith(b"HTTP/1.1 200"), header
    # Ordinary values of checked headers, and payload-like values in unchecked ones, pass.
    fine = (
        b"GET /app HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Referer: http://example.test/a?b=c\r\nCookie: a=1; b=2\r\n"
        b"X-Note: <script>\r\nConnection: close\r\n\r\n"
    )
    got = await exchange(p.port, fine)
    assert got.startswith(b"HTTP/1.1 200")
    assert [r.split(b" ")[1] for r in counting.requests] == [b"/open"] * 3 + [b"/app"]


async def test_pipelined_websocket_upgrade_behind_plain_request(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    data = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    data += (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        assert b'"/first"' in await reader.readexactly(length)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 101")
        mask = b"\x01\x02\x03\x04"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(b"hi"))
        writer.write(b"\x81\x82" + mask + payload)  # a masked text frame "hi"
        frame = await asyncio.wait_for(reader.readexactly(2 + len(b"b0:hi")), 3)
        assert frame == b"\x81\x05b0:hi"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
