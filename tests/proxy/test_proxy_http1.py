"""Wire-level behaviour of the HTTP/1.1 transport (http1.py)."""

from __future__ import annotations

import asyncio
import contextlib

from gslb.proxy.quick import quick_settings

from .test_proxy_forward import free_port


async def exchange(port: int, data: bytes, until: bytes | None = None, wait: float = 3.0) -> bytes:
    """Send raw bytes; read until EOF (or until `until` has been seen)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
                if until is not None and got.count(until) >= 1 and got.endswith(b"\r\n\r\n"):
                    break
                if until is not None and until in got:
                    break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return got


async def test_pipelined_requests_answered_in_order(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    reqs = b"".join(
        b"GET /p%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (i, b"Connection: close\r\n" if i == 3 else b"")
        for i in range(1, 4)
    )
    got = await exchange(p.port, reqs)
    assert got.count(b"HTTP/1.1 200") == 3
    assert got.index(b'"/p1"') < got.index(b'"/p2"') < got.index(b'"/p3"')


async def test_http10_client_and_chunked_upstream(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    got = await exchange(p.port, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\n\r\n") and b"three" in body
    got = await exchange(p.port, b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == b"one,two,three"  # close-delimited for HTTP/1.0


async def test_head_request(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    data = b"HEAD /big?size=5000 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n"
    data += b"Connection: close\r\n\r\n"
    got = await exchange(p.port, data)
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 5000" in first
    assert rest.startswith(b"HTTP/1.1 200") and b'"/after"' in rest


async def test_expect_100_continue(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"hello")
        rest = await asyncio.wait_for(reader.read(), 3)
        assert rest.startswith(b"HTTP/1.1 200") and b'"size": 5' in rest
    finally:
        writer.close()
        await writer.wait_closed()


async def test_garbage_from_upstream_is_502(proxy) -> None:  # type: ignore[no-untyped-def]
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(bad, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = quick_settings("127.0.0.1:0", [f"127.0.0.1:{port}"])
        p = await proxy(s)
        got = await exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 502")
    finally:
        server.close()
        await server.wait_closed()


async def test_upstream_dies_mid_body_cuts_client(proxy) -> None:  # type: ignore[no-untyped-def]
    async def dying(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(dying, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = await proxy(quick_settings("127.0.0.1:0", [f"127.0.0.1:{port}"]))
        got = await exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b"partial"  # then EOF: truncated
    finally:
        server.close()
        await server.wait_closed()


async def test_connect_failure_then_success_and_idle_timeout(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(quick_settings("127.0.0.1:0", [f"127.0.0.1:{free_port()}", b.address]))
    for _ in range(2):
        got = await exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200")


async def test_response_hop_by_hop_and_nominated_headers_removed(proxy) -> None:  # type: ignore[no-untyped-def]
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: secret\r\n"
            b"Keep-Alive: timeout=5\r\nServer: backend/1\r\nX-App: yes\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = await proxy(quick_settings("127.0.0.1:0", [f"127.0.0.1:{port}"]))
        got = await exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        lower = head.lower()
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        assert b"x-app: yes" in lower
        for gone in (b"x-internal", b"keep-alive", b"backend/1"):
            assert gone not in lower
    finally:
        server.close()
        await server.wait_closed()
