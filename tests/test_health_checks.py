"""HTTP/HTTPS/TCP probes against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from gslb.config.model import Check, Datacenter
from gslb.health.checks import Checker, target_address, targets_from_config
from tests.test_health_support import Backend, free_port, make_config


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    async with Checker() as c:
        yield c


async def test_http_ok_sends_path_headers_and_host(checker: Checker) -> None:
    async with Backend(body="healthy") as b:
        check = Check(
            type="http",
            port=b.port,
            path="/healthz",
            host_header="www.example.test",
            headers=(("X-Probe", "gslb"),),
        )
        r = await checker.check(check, "127.0.0.1")
    assert r.ok, r.error
    assert r.detail == "HTTP 200" and r.latency is not None and r.latency >= 0
    assert b.hits == 1
    assert b.last_headers["Host"] == "www.example.test"
    assert b.last_headers["X-Probe"] == "gslb"


async def test_unexpected_status_fails_and_expected_list_is_honoured(checker: Checker) -> None:
    async with Backend(status=503) as b:
        r = await checker.check(Check(port=b.port), "127.0.0.1")
        assert not r.ok and "status 503 not in expected [200]" in r.error
        r = await checker.check(Check(port=b.port, expect_status=(200, 503)), "127.0.0.1")
        assert r.ok


async def test_body_match(checker: Checker) -> None:
    async with Backend(body='{"status": "ok", "pool": 3}') as b:
        r = await checker.check(Check(port=b.port, body_match=r'"status":\s*"ok"'), "127.0.0.1")
        assert r.ok, r.error
        b.body = '{"status": "degraded"}'
        r = await checker.check(Check(port=b.port, body_match=r'"status":\s*"ok"'), "127.0.0.1")
        assert not r.ok and "body does not match" in r.error


async def test_connection_refused(checker: Checker) -> None:
    r = await checker.check(Check(port=free_port()), "127.0.0.1")
    assert not r.ok and r.error == "connection refused"


async def test_timeout_is_a_failure_not_a_hang(checker: Checker) -> None:
    async with Backend(delay=2.0) as b:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await checker.check(Check(port=b.port, timeout=0.1), "127.0.0.1")
        assert loop.time() - t0 < 1.0
    assert not r.ok and r.error == "timeout after 0.1s"


async def test_backend_stopped_and_restarted(checker: Checker) -> None:
    b = Backend()
    await b.start()
    check = Check(port=b.port)
    assert (await checker.check(check, "127.0.0.1")).ok
    await b.stop()
    assert not (await checker.check(check, "127.0.0.1")).ok
    await b.start()  # same port
    try:
        assert (await checker.check(check, "127.0.0.1")).ok
    finally:
        await b.stop()


async def test_tcp_check() -> None:
    async with Checker() as c, Backend() as b:
        assert (await c.check(Check(type="tcp", port=b.port), "127.0.0.1")).ok
        assert b.hits == 0  # a TCP check sends no request
        r = await c.check(Check(type="tcp", port=free_port()), "127.0.0.1")
        assert not r.ok and r.error


# ---- HTTPS with trustme certificates ----------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_ctx(ca: trustme.CA, seen_sni: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("dc1.example.test").configure_cert(ctx)

    def record(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen_sni.append(name)

    ctx.sni_callback = record  # type: ignore[assignment]
    return ctx


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_https_verify_on_with_sni(ca: trustme.CA) -> None:
    sni: list[str | None] = []
    async with Backend(ssl_context=server_ctx(ca, sni)) as b:
        async with Checker(verify_context=client_ctx(ca)) as c:
            check = Check(
                type="https", port=b.port, host_header="dc1.example.test", verify_tls=True
            )
            r = await c.check(check, "127.0.0.1")
            assert r.ok, r.error
            assert sni[-1] == "dc1.example.test"
            assert b.last_headers["Host"] == "dc1.example.test"
            # the certificate does not cover this name: verification must fail
            wrong = Check(
                type="https", port=b.port, host_header="other.example.test", verify_tls=True
            )
            r = await c.check(wrong, "127.0.0.1")
            assert not r.ok and "TLS" in r.error


async def test_https_untrusted_ca_fails_with_verify_and_passes_without(ca: trustme.CA) -> None:
    other = trustme.CA()  # the checker trusts a different CA
    async with Backend(ssl_context=server_ctx(ca, [])) as b:
        async with Checker(verify_context=client_ctx(other)) as c:
            verify = Check(
                type="https", port=b.port, host_header="dc1.example.test", verify_tls=True
            )
            r = await c.check(verify, "127.0.0.1")
            assert not r.ok and "certificate" in r.error.lower()
            no_verify = Check(type="https", port=b.port, host_header="dc1.example.test")
            r = await c.check(no_verify, "127.0.0.1")
            assert r.ok, r.error


async def test_https_check_against_plain_http_fails(ca: trustme.CA) -> None:
    async with Backend() as b, Checker() as c:
        r = await c.check(Check(type="https", port=b.port), "127.0.0.1")
        assert not r.ok and r.error


def test_target_address_and_targets_from_config() -> None:
    dc = Datacenter("a", "r", 0, 0, ipv4=("192.0.2.1",), ipv6=("2001:db8::1",), check=Check())
    assert target_address(dc) == "192.0.2.1"
    only6 = Datacenter("b", "r", 0, 0, ipv6=("2001:db8::1",), check=Check())
    assert target_address(only6) == "2001:db8::1"
    explicit = Datacenter("c", "r", 0, 0, ipv4=("192.0.2.1",), check=Check(host="198.51.100.7"))
    assert target_address(explicit) == "198.51.100.7"
    cfg = make_config({"with": Check(), "without": None})
    assert set(targets_from_config(cfg)) == {"with"}


async def test_ipv6_literal_url(checker: Checker) -> None:
    # ::1 may be unavailable in some sandboxes; a refused or failed connect is still a result
    r = await checker.check(Check(port=free_port(), timeout=0.5), "::1")
    assert not r.ok and r.error


async def test_body_read_is_capped(checker: Checker) -> None:
    """A big body is never read past BODY_LIMIT: a match beyond it is not seen."""
    from gslb.health.checks import BODY_LIMIT

    async with Backend(body="x" * (BODY_LIMIT + 10) + "MARKER") as b:
        r = await checker.check(Check(port=b.port, body_match="MARKER"), "127.0.0.1")
        assert not r.ok and "body does not match" in r.error
        r = await checker.check(Check(port=b.port, body_match="^x+$"), "127.0.0.1")
        assert r.ok, r.error
