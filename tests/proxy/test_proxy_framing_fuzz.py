"""Randomised framing test: pipelined requests mixing Content-Length, Transfer-Encoding,
Connection, Host, Expect, Upgrade and HTTP versions, sent over a raw socket to a running proxy.

Whatever the proxy decides to forward: each client request reaches the backend at most once,
with unambiguous framing (the backend's strict parser never fails, one Host, never CL with TE),
nothing hidden in a body ever becomes a request, and the client gets exactly one response per
request, in order, until the proxy closes the connection.
"""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.proxy.server import ProxyServer
from gslb.proxy.settings import (
    LimitsSpec,
    ListenerSpec,
    MemberSpec,
    PoolSpec,
    ProxySettings,
    RouteSpec,
)

from .rawnet import RawBackend, exchange

EVIL = b"GET /evil HTTP/1.1\r\nHost: app.test\r\n\r\n"

FRAMINGS = [
    "none",
    "cl",
    "cl-short",  # Content-Length smaller than the bytes that follow: the rest is parsed anew
    "cl-dup-same",
    "cl-dup-diff",
    "cl-plus",
    "te",
    "te-upper",
    "te-space",
    "te-x",
    "te-list",
    "te-dup",
    "te-cl",
    "te-bad-chunk",
]
CONNECTIONS = [
    None,
    b"close",
    b"keep-alive",
    b"content-length",
    b"host",
    b"transfer-encoding",
    b"x-drop",
    b"upgrade",
    [b"x-drop", b"content-length"],
]
HOSTS = ["one", "none", "two", "empty", "space", "comma", "absolute"]
EXPECTS = [None, b"100-continue", b"nonsense"]
VERSIONS = [b"1.1", b"1.0"]


@st.composite
def request_specs(draw: st.DrawFn) -> dict[str, object]:
    return {
        "method": draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS"])),
        "framing": draw(st.sampled_from(FRAMINGS)),
        "connection": draw(st.sampled_from(CONNECTIONS)),
        "host": draw(st.sampled_from(HOSTS)),
        "expect": draw(st.sampled_from(EXPECTS)),
        "version": draw(st.sampled_from(VERSIONS)),
        "body": draw(st.sampled_from([b"", b"abc", EVIL])),
        "upgrade": draw(st.sampled_from([None, b"h2c", b"websocket"])),
    }


def build(i: int, spec: dict[str, object]) -> bytes:
    target = b"/r%d" % i
    if spec["host"] == "absolute":
        target = b"http://app.test" + target
    head = [spec["method"] + b" " + target + b" HTTP/" + spec["version"]]  # type: ignore[operator]
    host = spec["host"]
    if host in ("one", "absolute"):
        head.append(b"Host: app.test")
    elif host == "two":
        head += [b"Host: app.test", b"Host: other.test"]
    elif host == "empty":
        head.append(b"Host:")
    elif host == "space":
        head.append(b"Host: app test")
    elif host == "comma":
        head.append(b"Host: a,for=6.6.6.6")
    conn = spec["connection"]
    for line in conn if isinstance(conn, list) else [conn] if conn else []:
        head.append(b"Connection: " + line)
    if spec["expect"]:
        head.append(b"Expect: " + spec["expect"])  # type: ignore[operator]
    if spec["upgrade"]:
        head.append(b"Upgrade: " + spec["upgrade"])  # type: ignore[operator]
    head.append(b"X-Drop: 1")
    body: bytes = spec["body"]  # type: ignore[assignment]
    framing = spec["framing"]
    payload = b""
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    if framing == "cl":
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "cl-short":
        head.append(b"Content-Length: %d" % (len(body) // 2))
        payload = body
    elif framing == "cl-dup-same":
        head += [b"Content-Length: %d" % len(body)] * 2
        payload = body
    elif framing == "cl-dup-diff":
        head += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
        payload = body
    elif framing == "cl-plus":
        head.append(b"Content-Length: +%d" % len(body))
        payload = body
    elif framing == "te":
        head.append(b"Transfer-Encoding: chunked")
        payload = chunked
    elif framing == "te-upper":
        head.append(b"Transfer-Encoding: CHUNKED")
        payload = chunked
    elif framing == "te-space":
        head.append(b"Transfer-Encoding : chunked")
        payload = chunked
    elif framing == "te-x":
        head.append(b"Transfer-Encoding: xchunked")
        payload = chunked
    elif framing == "te-list":
        head.append(b"Transfer-Encoding: gzip, chunked")
        payload = chunked
    elif framing == "te-dup":
        head += [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"]
        payload = chunked
    elif framing == "te-cl":
        head += [b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(chunked)]
        payload = chunked
    elif framing == "te-bad-chunk":
        head.append(b"Transfer-Encoding: chunked")
        payload = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


async def run_case(specs: list[dict[str, object]]) -> None:
    backend = await RawBackend().start()
    pool = PoolSpec("p", (MemberSpec("127.0.0.1", backend.port),), response_timeout=2.0)
    proxy = ProxyServer(
        ProxySettings(
            listeners=(ListenerSpec("127.0.0.1", 0),),
            routes=(RouteSpec(pool="p"),),
            pools={"p": pool},
            limits=LimitsSpec(header_timeout=1.0, idle_timeout=5.0),
        )
    )
    await proxy.start()
    # A short Content-Length leaves bytes that are the client's next (broken) request: the
    # case ends there, and the proxy may answer those bytes too (with an error).
    short = [i for i, s in enumerate(specs) if s["framing"] == "cl-short" and s["body"]]
    extra = 0
    if short:
        specs = specs[: short[0] + 1]
        extra = 1
    try:
        data = b"".join(build(i, s) for i, s in enumerate(specs))
        got = await exchange(proxy.port, data, len(specs), timeout=6.0, wait_close=0.2)
    finally:
        await proxy.close()
        await backend.stop()
    n = len(got.responses)
    if extra and n == len(specs) + 1:
        assert got.responses[-1].status >= 400  # the leftover bytes are no request
        n -= 1
    # Exactly one response per request, in order, until the proxy closes.
    assert n <= len(specs)
    assert got.closed or n == len(specs) or extra, (n, len(specs), got.raw[-300:])
    for k, resp in enumerate(got.responses[:n]):
        if resp.status == 200:
            assert json.loads(resp.body)["target"] == f"/r{k}", (k, resp.body)
    if got.closed and n < len(specs) and n:
        assert got.responses[-1].header("Connection") == "close" or got.responses[-1].status >= 400
    # At most once, with unambiguous framing, nothing smuggled.
    targets = backend.targets()
    assert "/evil" not in targets
    assert len(targets) == len(set(targets)), targets
    for t in targets:
        assert int(t[2:]) < n, (t, n)  # its client got an answer
    assert backend.errors == []
    for seen in backend.seen:
        assert len(seen.header("Host")) == 1
        assert not (seen.header("Content-Length") and seen.header("Transfer-Encoding"))
        assert len(seen.header("Content-Length")) <= 1
        assert not seen.header("Expect")
        conn = specs[int(seen.target[2:])]["connection"]
        if conn == b"x-drop" or (isinstance(conn, list) and b"x-drop" in conn):
            assert not seen.header("X-Drop")  # every Connection line is honoured


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(st.lists(request_specs(), min_size=1, max_size=4))
def test_pipelined_framing_invariants(specs: list[dict[str, object]]) -> None:
    asyncio.run(run_case(specs))
