"""Issue 10: every finding of the attacker's review, reproduced over a raw socket against a
running proxy with real backends. Each test asserts what the backend saw and what the client got.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import trustme

from gslb.proxy import waf
from gslb.proxy.exchange import normalise_target
from gslb.proxy.settings import (
    CertSpec,
    LimitsSpec,
    ListenerSpec,
    MemberSpec,
    PoolSpec,
    ProxySettings,
    RouteSpec,
)

from .rawnet import RawBackend, Seen, exchange, ok_response

Make = Callable[..., Awaitable[tuple[int, list[RawBackend]]]]


@pytest.fixture
async def raw(proxy) -> AsyncIterator[Make]:  # type: ignore[no-untyped-def]
    """Starts N raw backends and a proxy in front of them (pool "p", round robin)."""
    started: list[RawBackend] = []

    async def make(
        n: int = 1,
        routes: tuple[RouteSpec, ...] | None = None,
        handler: object = None,
        pools: dict[str, PoolSpec] | None = None,
        pool_kw: dict[str, object] | None = None,
        **kw: object,
    ) -> tuple[int, list[RawBackend]]:
        bs = [await RawBackend(handler=handler).start() for _ in range(n)]  # type: ignore[arg-type]
        started.extend(bs)
        members = tuple(MemberSpec("127.0.0.1", b.port) for b in bs)
        pool = PoolSpec("p", members, **(pool_kw or {}))  # type: ignore[arg-type]
        settings = ProxySettings(
            listeners=kw.pop("listeners", (ListenerSpec("127.0.0.1", 0),)),  # type: ignore
            routes=routes or (RouteSpec(pool="p"),),
            pools={"p": pool, **(pools or {})},
            **kw,  # type: ignore[arg-type]
        )
        p = await proxy(settings)
        return p.port, bs

    yield make
    for b in started:
        await b.stop()


GET = b"GET /%s HTTP/1.1\r\nHost: app.test\r\n\r\n"


# ---- Critical --------------------------------------------------------------------------------


@pytest.mark.parametrize("named", [b"content-length", b"host", b"Content-Length, close"])
async def test_connection_cannot_drop_framing_headers(raw: Make, named: bytes) -> None:
    port, (b,) = await raw()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    data = (
        b"POST /up HTTP/1.1\r\nHost: app.test\r\nConnection: " + named + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(smuggled)
    ) + smuggled
    got = await exchange(port, data, 1)
    assert [r.status for r in got.responses] == [200]
    assert b.targets() == ["/up"]  # the body stayed a body
    assert b.seen[0].body == smuggled
    assert b.seen[0].header("Host") == ["app.test"]
    # The next, unrelated client gets its own answer, not the smuggled request's.
    other = await exchange(port, GET % b"mine", 1)
    assert other.responses[0].json()["target"] == "/mine"
    assert "/smuggled" not in b.targets()


async def test_pipelined_health_then_post_in_order_once(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"GET /health HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    got = await exchange(port, data, 3)
    assert [r.status for r in got.responses] == [200, 200, 200]
    assert got.responses[0].header("Content-Type") == "application/json"
    assert "pools" in got.responses[0].json()
    assert [r.json()["target"] for r in got.responses[1:]] == ["/p", "/after"]
    assert b.targets() == ["/p", "/after"]  # the POST reached the backend once
    assert not got.closed


async def test_pipelined_expect_and_upgrade_stay_in_sync(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2\r\n\r\nhi"
        b"GET /three HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    got = await exchange(port, data, 3)
    assert [r.json()["target"] for r in got.responses] == ["/one", "/two", "/three"]
    assert b.targets() == ["/one", "/two", "/three"]
    assert b.seen[1].body == b"hi" and not b.seen[1].header("Expect")


def _cacheable_text(req: Seen) -> tuple[bytes, bool]:
    body = b"hello static world " * 100
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n"
        b'ETag: "v1"\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body),
        False,
    )


async def test_cache_and_compress_store_the_identity_body(raw: Make) -> None:
    route = RouteSpec(pool="p", path_prefix="/static/", cache=True, compress=True)
    port, (b,) = await raw(routes=(route,), handler=_cacheable_text)
    plain = b"hello static world " * 100
    gz = b"GET /static/a HTTP/1.1\r\nHost: app.test\r\nAccept-Encoding: gzip\r\n\r\n"
    ident = b"GET /static/a HTTP/1.1\r\nHost: app.test\r\n\r\n"
    first = (await exchange(port, gz, 1)).responses[0]
    assert first.header("Content-Encoding") == "gzip" and gzip.decompress(first.body) == plain
    for data, encoded in ((ident, False), (gz, True), (ident, False)):
        r = (await exchange(port, data, 1)).responses[0]
        assert r.header("X-Cache") == "HIT"
        if encoded:
            assert r.header("Content-Encoding") == "gzip" and gzip.decompress(r.body) == plain
        else:
            assert r.header("Content-Encoding") is None and r.body == plain
    assert len(b.seen) == 1


@pytest.mark.parametrize(
    "hosts",
    [
        b"Host: app.test\r\nHost: internal.test\r\n",
        b"Host: internal.test\r\nHost: app.test\r\n",
    ],
)
async def test_duplicate_host_is_400(raw: Make, hosts: bytes) -> None:
    port, (b,) = await raw()
    got = await exchange(port, b"GET / HTTP/1.1\r\n" + hosts + b"\r\n", 1)
    assert got.responses[0].status == 400 and got.closed
    assert b.seen == []


async def test_forwarded_host_is_quoted(raw: Make) -> None:
    port, (b,) = await raw()
    got = await exchange(port, b"GET / HTTP/1.1\r\nHost: a,for=6.6.6.6;proto=https\r\n\r\n", 1)
    assert got.responses[0].status == 200
    (fwd,) = b.seen[0].header("Forwarded")
    assert fwd == 'for=127.0.0.1;proto=http;host="a,for=6.6.6.6;proto=https"'
    assert b.seen[0].header("X-Forwarded-For") == ["127.0.0.1"]


# ---- Medium ----------------------------------------------------------------------------------


async def test_every_connection_line_counts(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: x-one\r\nConnection: x-two, keep-alive"
        b"\r\nX-One: 1\r\nX-Two: 2\r\nX-Three: 3\r\n\r\n"
    )
    await exchange(port, data, 1)
    names = {k.lower() for k, _ in b.seen[0].headers}
    assert "x-one" not in names and "x-two" not in names and "x-three" in names
    assert "connection" not in names


def _close_delimited(req: Seen) -> tuple[bytes, bool]:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of the body", True


async def test_close_delimited_upstream_response_is_rechunked(raw: Make) -> None:
    port, _ = await raw(handler=_close_delimited)
    got = await exchange(port, (GET % b"x") * 2, 2)
    assert [r.body for r in got.responses] == [b"all of the body"] * 2
    assert got.responses[0].header("Transfer-Encoding") == "chunked"
    assert got.raw.count(b"0\r\n\r\n") == 2
    old = await exchange(port, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", 1)
    # HTTP/1.0 without a length: the close ends the body (a parser cannot see that end).
    assert old.raw.endswith(b"\r\n\r\nall of the body") and old.closed
    assert b"Connection: close\r\n" in old.raw


def _nominates_length(req: Seen) -> tuple[bytes, bool]:
    return (
        b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        False,
    )


async def test_upstream_connection_cannot_unframe_a_response(raw: Make) -> None:
    port, _ = await raw(handler=_nominates_length)
    got = await exchange(port, (GET % b"a") + (GET % b"b"), 2)
    assert [r.body for r in got.responses] == [b"hello", b"hello"]
    assert got.responses[0].header("Content-Length") == "5"
    assert got.responses[0].header("X-Hop") is None


async def test_slow_upload_is_not_a_slow_response(raw: Make) -> None:
    port, (b,) = await raw(pool_kw={"response_timeout": 0.4})
    head = b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\n\r\n"
    got = await exchange(port, [head, b"ab", b"cd", b"ef"], 1, pause=0.3, timeout=8)
    assert got.responses[0].status == 200
    assert b.seen[0].body == b"abcdef"


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("app.test")
    d = tmp_path_factory.mktemp("tls")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "c.pem"))
    cert.private_key_pem.write_to_path(str(d / "k.pem"))
    return str(d / "c.pem"), str(d / "k.pem"), ca


async def test_tls_handshake_is_held_to_header_timeout_and_limits(
    raw: Make, tls_pair: tuple[str, str, trustme.CA]
) -> None:
    cert, key, ca = tls_pair
    listener = ListenerSpec(
        "127.0.0.1", 0, mode="https", certificates=(CertSpec(("app.test",), cert, key),)
    )
    limits = LimitsSpec(header_timeout=0.5, max_connections=1)
    port, (b,) = await raw(listeners=(listener,), limits=limits)
    loop = asyncio.get_running_loop()
    silent = socket.create_connection(("127.0.0.1", port))
    silent.setblocking(False)
    start = time.monotonic()
    # While it holds the only slot, a second connection is refused.
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r2.read(), 5) == b""
    w2.close()
    data = await asyncio.wait_for(loop.sock_recv(silent, 100), 5)
    assert data == b"" and time.monotonic() - start < 4
    silent.close()
    # The slot is free again and a real TLS client gets through.
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="app.test")
    w.write(b"GET /tls HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(r.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200 ") and b.targets() == ["/tls"]
    w.close()
    seen = b.seen[0]
    assert seen.header("X-Forwarded-Proto") == ["https"]


async def test_websocket_ping_gets_pong_from_the_member(backends, proxy) -> None:  # type: ignore
    from gslb.proxy.quick import quick_settings

    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{p.port}/ws", autoping=False) as ws:
            await ws.ping(b"are you there")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are you there"
            await ws.send_str("hi")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == "b0:hi"


async def test_absolute_form_target_is_normalised(raw: Make) -> None:
    port, (b,) = await raw()
    data = b"GET http://app.test:8080/x?y=1 HTTP/1.1\r\nHost: other.test\r\n\r\n"
    got = await exchange(port, data, 1)
    assert got.responses[0].status == 200
    assert b.seen[0].target == "/x?y=1"
    assert b.seen[0].header("Host") == ["app.test:8080"]


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"])
@pytest.mark.parametrize(
    "target,pool,upstream_target",
    [
        (b"/%61dmin/x", "admin", "/admin/x"),
        (b"/admin/../x", "p", "/x"),
        (b"/admin/%2e%2e/x", "p", "/x"),
        (b"/public/./../admin/y", "admin", "/admin/y"),
    ],
)
async def test_one_normalised_path_for_routes(
    raw: Make, expect: bytes, target: bytes, pool: str, upstream_target: str
) -> None:
    admin = await RawBackend().start()
    try:
        routes = (RouteSpec(pool="admin", path_prefix="/admin/"), RouteSpec(pool="p"))
        pools = {"admin": PoolSpec("admin", (MemberSpec("127.0.0.1", admin.port),))}
        port, (b,) = await raw(routes=routes, pools=pools)
        data = b"POST " + target + b" HTTP/1.1\r\nHost: app.test\r\n" + expect
        got = await exchange(port, data + b"Content-Length: 2\r\n\r\nok", 1)
        assert got.responses[0].status == 200
        backend = admin if pool == "admin" else b
        assert backend.targets() == [upstream_target]
    finally:
        await admin.stop()


# ---- Low -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost:\r\n", b"GET / HTTP/1.1\r\nHost: a b\r\n"],
)
async def test_missing_empty_or_bad_host_is_400(raw: Make, head: bytes) -> None:
    port, (b,) = await raw()
    got = await exchange(port, head + b"\r\n", 1)
    assert got.responses[0].status == 400 and b.seen == []


async def test_http10_chunked_closes(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    got = await exchange(port, data, 1, wait_close=2)
    assert got.responses[0].status == 200 and got.closed
    assert b.seen[0].body == b"abc"


async def test_no_100_continue_for_http10(raw: Make) -> None:
    port, (b,) = await raw()
    data = b"POST / HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
    got = await exchange(port, data, 1)
    assert got.interim == [] and b"100 Continue" not in got.raw
    head, body = data.replace(b"HTTP/1.0", b"HTTP/1.1")[:-2], b"ok"
    ok = await exchange(port, [head, body], 1, pause=0.3)
    assert ok.interim == [100] and ok.responses[0].status == 200
    assert [s.body for s in b.seen] == [b"ok", b"ok"]


@pytest.mark.parametrize(
    "te",
    [b"xchunked", b"chunked, gzip", b"gzip, chunked", b"chunked\r\nTransfer-Encoding: chunked"],
)
async def test_bad_transfer_encodings(raw: Make, te: bytes) -> None:
    port, (b,) = await raw()
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
        + te
        + b"\r\nContent-Length: 3\r\n\r\nabc"
    )
    got = await exchange(port, data, 1)
    assert got.responses[0].status in (400, 501) and got.closed
    assert b.seen == []


async def test_bad_chunk_after_head_forwarded_gets_400(raw: Make) -> None:
    port, (b,) = await raw()
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    got = await exchange(port, [head, b"zz\r\nnope\r\n"], 1, pause=0.3)
    assert got.responses[0].status == 400 and got.closed


async def test_own_replies_keep_pipelined_requests(raw: Make) -> None:
    routes = (RouteSpec(pool="p", hosts=("app.test",)),)
    port, (b,) = await raw(routes=routes)
    data = b"GET /a HTTP/1.1\r\nHost: nowhere.test\r\n\r\n" + GET % b"b"
    got = await exchange(port, data, 2)
    assert [r.status for r in got.responses] == [404, 200] and not got.closed
    assert b.targets() == ["/b"]


async def test_partial_pipelined_head_gets_header_timeout(raw: Make) -> None:
    port, _ = await raw(limits=LimitsSpec(header_timeout=0.5, idle_timeout=30))
    start = time.monotonic()
    got = await exchange(port, (GET % b"a") + b"GET /b HTTP/1.1\r\nHo", 1, wait_close=5)
    assert got.responses[0].status == 200 and got.closed
    assert time.monotonic() - start < 4


async def test_h2c_upgrade_does_not_swallow_the_next_request(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"GET /a HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    ) + GET % b"b"
    got = await exchange(port, data, 2)
    assert [r.json()["target"] for r in got.responses] == ["/a", "/b"]
    assert not b.seen[0].header("Upgrade") and not b.seen[0].header("HTTP2-Settings")


async def test_no_server_header_leaks(raw: Make) -> None:
    port, _ = await raw()
    for data in (b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", GET % b""):
        got = await exchange(port, data, 1)
        assert got.responses[0].header("Server") is None, got.raw


async def test_websocket_refused_by_member_closes_both(raw: Make) -> None:
    def refuse(req: Seen) -> tuple[bytes, bool]:
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", False

    port, (b,) = await raw(handler=refuse)
    data = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    got = await exchange(port, data, 1, wait_close=2)
    assert got.responses[0].status == 403 and got.closed
    assert b.seen[0].header("Upgrade") == ["websocket"]
    deadline = time.monotonic() + 5
    while b.open and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert b.open == 0


async def test_fresh_cache_entry_answers_conditionals_with_304(raw: Make) -> None:
    port, (b,) = await raw(routes=(RouteSpec(pool="p", cache=True),), handler=_cacheable_text)
    await exchange(port, GET % b"c", 1)
    got = await exchange(
        port, b'GET /c HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: "v1"\r\n\r\n', 1
    )
    r = got.responses[0]
    assert r.status == 304 and r.body == b"" and r.header("ETag") == '"v1"'
    other = await exchange(
        port, b'GET /c HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: "v0"\r\n\r\n', 1
    )
    assert other.responses[0].status == 200 and other.responses[0].header("X-Cache") == "HIT"
    assert len(b.seen) == 1


@pytest.mark.parametrize(
    "target",
    [
        "/a/..;/admin",
        "/?q=<svg ontoggle=alert(1)>",
        "/?q=<x onpointerover=alert(1)>",
        "/?u=java%09script:alert(1)",
        "/?id=1' OR 'a'='a",
        "/?id=1 UNION DISTINCT SELECT password FROM users",
    ],
)
def test_waf_signatures(target: str) -> None:
    assert waf.match(target) is not None


@pytest.mark.parametrize("target", ["/?q=one=1", "/onion?x=1", "/docs/union-station", "/a..b"])
def test_waf_no_false_positive(target: str) -> None:
    assert waf.match(target) is None


async def test_waf_sees_the_normalised_path(raw: Make) -> None:
    port, (b,) = await raw(routes=(RouteSpec(pool="p", waf=True),))
    got = await exchange(port, b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert got.responses[0].status in (403, 404) or b.targets() == ["/etc/passwd"]
    got = await exchange(port, b"GET /x/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert got.responses[0].status == 403 and b.seen == [] or "/x/..;/admin" not in b.targets()


def _switches(req: Seen) -> tuple[bytes, bool]:
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n", False


async def test_upstream_101_to_plain_request_is_502(
    raw: Make, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = await raw(handler=_switches)
    with caplog.at_level(logging.INFO):
        got = await exchange(port, GET % b"x", 1)
    assert got.responses[0].status == 502
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_normalise_target() -> None:
    assert normalise_target(b"/%61dmin/%2E/x/../y?a=%61") == (b"/admin/y?a=%61", b"/admin/y")
    assert normalise_target(b"/a%2fb/%zz") == (b"/a%2Fb/%25zz", b"/a%2Fb/%25zz")
    assert normalise_target(b"/../../x") == (b"/x", b"/x")


# ---- trusted_proxies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trusted,expect_xff", [((), "127.0.0.1"), (("127.0.0.0/8",), "6.6.6.6, 127.0.0.1")]
)
async def test_trusted_proxies(raw: Make, trusted: tuple[str, ...], expect_xff: str) -> None:
    port, (b,) = await raw(trusted_proxies=trusted)
    data = (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n"
    )
    await exchange(port, data, 1)
    assert b.seen[0].header("X-Forwarded-For") == [expect_xff]
    fwd = b.seen[0].header("Forwarded")[0]
    assert fwd.startswith("for=6.6.6.6, for=127.0.0.1") == bool(trusted)


async def test_max_connections_per_member_is_enforced(raw: Make) -> None:
    def slow(req: Seen) -> tuple[bytes, bool]:
        return ok_response(req, 0), False

    port, (b,) = await raw(handler=slow, pool_kw={"max_connections": 1})
    results = await asyncio.gather(*(exchange(port, GET % b"%d" % i, 1) for i in range(6)))
    assert all(r.responses[0].status == 200 for r in results)
    assert b.connections == 1


async def test_metrics_object_counts_own_requests(raw: Make) -> None:
    port, _ = await raw(metrics_path="/metrics")
    await exchange(port, GET % b"", 1)
    got = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    text = got.responses[0].body.decode()
    assert 'gslb_proxy_requests_total{code="2xx",pool="p"}' in text
    assert json.dumps  # keep import used
    assert dataclasses  # keep import used


async def test_overlong_target_is_414(raw: Make) -> None:
    port, (b,) = await raw(limits=LimitsSpec(max_header_bytes=1024))
    got = await exchange(port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 1)
    assert got.responses[0].status == 414 and b.seen == []


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2"])
async def test_other_versions_are_505(raw: Make, version: bytes) -> None:
    port, (b,) = await raw()
    got = await exchange(port, b"GET / " + version + b"\r\nHost: a\r\n\r\n", 1)
    assert got.responses[0].status in (400, 505) and b.seen == []


async def test_tls_listener_of_the_gslb_proxy_process(tls_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real `gslb proxy` process (uvloop): every concurrent TLS client gets through."""
    import sys

    from .test_proxy_forward import free_port

    cert, key, ca = tls_pair
    backend = await RawBackend().start()
    port = free_port()
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(
        "proxy:\n  regions:\n    r:\n      listeners:\n"
        f'        - {{listen: "127.0.0.1:{port}", mode: https, certificates: '
        f'[{{hosts: [app.test], cert: "{cert}", key: "{key}"}}]}}\n'
        "      routes: [{pool: p}]\n"
        f'      pools: {{p: {{members: ["127.0.0.1:{backend.port}"]}}}}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gslb.proxy.cli", "proxy", "--config", str(cfg), "--region", "r",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"listening on https://" in line, line
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)

        async def one(i: int) -> bytes:
            r, w = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="app.test"
            )
            w.write(b"GET /c%d HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n" % i)
            data = await asyncio.wait_for(r.read(), 20)
            w.close()
            return data

        answers = await asyncio.gather(*(one(i) for i in range(40)))
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
        assert sorted(backend.targets()) == sorted(f"/c{i}" for i in range(40))
    finally:
        proc.terminate()
        await proc.wait()
        await backend.stop()


async def test_via_and_date_are_added(raw: Make) -> None:
    port, (b,) = await raw()
    got = await exchange(port, GET % b"v", 1)
    r = got.responses[0]
    assert r.header("Via") == "1.1 gslb" and b.seen[0].header("Via") == ["1.1 gslb"]
    assert r.header("Date") is not None  # the raw backend sends none (RFC 9110 6.6.1)
    own = (await exchange(port, b"GET / HTTP/1.1\r\n\r\n", 1)).responses[0]
    assert own.status == 400 and own.header("Date") is not None


async def test_max_forwards_and_trace(raw: Make) -> None:
    port, (b,) = await raw()
    last = b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n"
    more = b"OPTIONS /x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n"
    trace = b"TRACE / HTTP/1.1\r\nHost: a\r\nCookie: secret=1\r\n\r\n"
    got = await exchange(port, last + more + trace, 3)
    assert [r.status for r in got.responses] == [200, 200, 405]
    assert got.responses[0].header("Allow") and b"secret" not in got.raw
    assert b.targets() == ["/x"] and b.seen[0].header("Max-Forwards") == ["2"]


async def test_thousands_of_pipelined_local_answers(raw: Make) -> None:
    port, (b,) = await raw()
    n = 3000
    got = await exchange(port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * n, n, timeout=30)
    assert len(got.responses) == n and all(r.status == 200 for r in got.responses)
    assert not got.closed


async def test_waiting_for_a_full_member_times_out_to_503(raw: Make) -> None:
    held: list[Seen] = []

    def never(req: Seen) -> tuple[bytes, bool]:
        held.append(req)
        return b"", False  # keeps its one connection busy

    port, (b,) = await raw(handler=never, pool_kw={"max_connections": 1, "connect_timeout": 0.3})
    first = asyncio.ensure_future(exchange(port, GET % b"busy", 1, timeout=3))
    deadline = time.monotonic() + 5
    while not held and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    start = time.monotonic()
    got = await exchange(port, GET % b"next", 1, timeout=5)
    assert got.responses[0].status == 503 and time.monotonic() - start < 3
    assert b.targets() == ["/busy"] and b.connections == 1
    first.cancel()


async def test_cache_hit_keeps_one_date(raw: Make) -> None:
    def dated(req: Seen) -> tuple[bytes, bool]:
        return (
            b"HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\nContent-Length: 2\r\n"
            b"Cache-Control: max-age=60\r\n\r\nok",
            False,
        )

    port, (b,) = await raw(routes=(RouteSpec(pool="p", cache=True),), handler=dated)
    for how in ("MISS", "HIT"):
        r = (await exchange(port, GET % b"d", 1)).responses[0]
        assert r.header("X-Cache") == how
        assert r.all("Date") == ["Mon, 30 Nov 2026 10:00:00 GMT"]


async def test_upgrade_with_a_body_is_refused(raw: Make) -> None:
    port, (b,) = await raw()
    data = (
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    ) + GET % b"b"
    got = await exchange(port, data, 2)
    assert [r.status for r in got.responses] == [400] and got.closed
    assert b.seen == []
