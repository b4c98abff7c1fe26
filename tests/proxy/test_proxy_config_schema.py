"""The proxy: section on the schema framework: the uniform messages, body_match (and the old
expect_body reported as renamed), defaults and limits layered, and the capped body read of the
active check over a real socket."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import aiohttp
import pytest

from gslb.clock import SYSTEM_CLOCK
from gslb.errors import ConfigError
from gslb.health.checks import BODY_LIMIT
from gslb.proxy.config import load_settings, settings_from_data
from gslb.proxy.pool import Member, check_member
from gslb.proxy.settings import CheckSpec, MemberSpec, PoolSpec


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gslb.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def region(pools: str, extra: str = "") -> str:
    return (
        "proxy:\n" + extra + "  regions:\n    r1:\n"
        '      listeners: [{listen: "127.0.0.1:0"}]\n'
        "      routes: [{pool: p}]\n"
        "      pools:\n" + pools
    )


def test_expect_body_is_reported_as_renamed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        region(
            '        p:\n          members: ["127.0.0.1:1"]\n          check: {expect_body: ok}\n'
        ),
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, "r1")
    assert [str(r) for r in info.value.reasons] == [
        f"{path}:9:19: proxy.regions.r1.pools.p.check.expect_body: "
        "renamed: write body_match instead"
    ]


def test_body_match_and_durations_sizes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        region(
            "        p:\n"
            '          members: ["127.0.0.1:1", "[::1]:2"]\n'
            "          check: {body_match: '^ok', interval: 1m, timeout: 250ms}\n",
            "  defaults: {retries: 0, keepalive_timeout: 1h}\n"
            "  limits: {max_body_bytes: 1m, rate: 10}\n"
            "  compress_min_bytes: 1k\n",
        ),
    )
    s = load_settings(path, "r1")
    p = s.pools["p"]
    assert p.check == CheckSpec(interval=60.0, timeout=0.25, body_match="^ok")
    assert [m.name for m in p.members] == ["127.0.0.1:1", "[::1]:2"]
    assert (p.retries, p.keepalive_timeout, p.connect_timeout) == (0, 3600.0, 2.0)
    assert (s.limits.max_body_bytes, s.limits.rate, s.compress_min_bytes) == (1 << 20, 10, 1024)


def test_listen_port_only_means_every_ipv4_address() -> None:
    data = {
        "proxy": {
            "regions": {
                "r": {
                    "listeners": [{"listen": ":8080"}, {"listen": "[::1]:8081"}],
                    "routes": [{"pool": "p"}],
                    "pools": {"p": {"members": ["127.0.0.1:1"]}},
                }
            }
        }
    }
    s = settings_from_data(data, "r")
    assert [(lst.host, lst.port) for lst in s.listeners] == [("0.0.0.0", 8080), ("::1", 8081)]


def test_every_problem_in_the_framework_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        region(
            "        p:\n"
            '          members: ["127.0.0.1:1"]\n'
            "          balnce: hash\n"
            "          slow_start: soon\n"
            "          outlier: {base_ejection: 10s, max_ejection: 1s}\n",
            "  limits: {allow: [10.0.0.0/33], max_body_bytes: lots}\n",
        ),
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, "r1")
    text = [str(r) for r in info.value.reasons]
    assert text == [
        f"{path}:2:20: proxy.limits.allow: not a network: '10.0.0.0/33' "
        "('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network)",
        f"{path}:2:34: proxy.limits.max_body_bytes: must be a size (bytes, or 64k/1m/1g), "
        "not 'lots'",
        f"{path}:10:11: proxy.regions.r1.pools.p.balnce: unknown key (expected one of: "
        + text[2].split("expected one of: ")[1],
        f"{path}:11:11: proxy.regions.r1.pools.p.slow_start: must be a duration "
        "(seconds, or 250ms/10s/5m/1h), not 'soon'",
        f"{path}:12:41: proxy.regions.r1.pools.p.outlier.max_ejection: must be >= base_ejection",
    ]
    assert text[2].endswith("did you mean balance?")


# -- the active check reads at most BODY_LIMIT bytes ------------------------------------------


class HugeBody:
    """A raw HTTP server on loopback whose body never ends (100 MiB announced); counts what the
    client actually took off the socket."""

    def __init__(self, head: bytes = b"ok") -> None:
        self.head = head
        self.sent = 0
        self.port = 0
        self.done = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> HugeBody:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        total = 100 * 1024 * 1024
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {total}\r\n\r\n".encode()
            + self.head
        )
        chunk = b"x" * 65536
        try:
            while self.sent < total:
                writer.write(chunk)
                await writer.drain()
                self.sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.done.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def probe(server: HugeBody, pattern: str) -> tuple[bool, str]:
    spec = MemberSpec("127.0.0.1", server.port)
    check = CheckSpec(path="/", timeout=5.0, interval=10.0, body_match=pattern)
    member = Member(spec, PoolSpec("p", (spec,), check=check), SYSTEM_CLOCK)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        result = await check_member(session, member, check)
    await asyncio.wait_for(server.done.wait(), 5)  # the check hung up; the server saw it
    return result.ok, result.error


async def test_active_check_reads_at_most_body_limit() -> None:
    server = await HugeBody().start()
    try:
        ok, error = await probe(server, "^ok")
        assert ok, error
        # The connection was dropped long before the 100 MiB: only socket buffers were filled.
        assert server.sent < 32 * 1024 * 1024
    finally:
        await server.close()


async def test_body_match_beyond_the_limit_is_not_seen() -> None:
    server = await HugeBody(head=b"x" * BODY_LIMIT + b"ok").start()
    try:
        ok, error = await probe(server, "ok")
        assert (ok, error) == (False, "body did not match")
        assert server.sent < 32 * 1024 * 1024
    finally:
        await server.close()


def test_gslb_check_reports_proxy_problems_of_every_region(tmp_path: Path) -> None:
    import argparse
    import io

    from gslb.steering.cli import add_commands

    path = write(
        tmp_path,
        """\
        datacenters:
          dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}
        proxy:
          regions:
            r1:
              listeners: [{listen: "127.0.0.1:0"}]
              routes: [{pool: p}]
              pools:
                p: {members: ["127.0.0.1:1"], check: {expect_body: ok}}
            r2:
              listeners: [{listen: "localhost"}]
              routes: [{pool: q}]
              pools:
                q: {members: ["127.0.0.1:1"]}
        """,
    )
    parser = argparse.ArgumentParser(prog="gslb")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["check", "--config", path])
    out = io.StringIO()
    assert args.func(args, out) == 1
    text = out.getvalue()
    assert f"{path}:9:47: proxy.regions.r1.pools.p.check.expect_body: renamed" in text
    assert f"{path}:11:20: proxy.regions.r2.listeners[0].listen: must be HOST:PORT" in text
    assert "2 problem(s) found" in text  # each once, though every region re-validates all
