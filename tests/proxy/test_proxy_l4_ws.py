"""Websocket pass-through and L4 (tcp mode) relaying, including TLS passthrough."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme

from gslb.proxy.settings import (
    CheckSpec,
    LimitsSpec,
    ListenerSpec,
    MemberSpec,
    PoolSpec,
    ProxySettings,
)

from .test_proxy_accel import settings_for
from .test_proxy_forward import free_port


async def test_websocket_passthrough(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    p = await proxy(settings_for(bs))
    async with aiohttp.ClientSession() as session:
        for expected in ("b0", "b1"):
            async with session.ws_connect(
                f"http://127.0.0.1:{p.port}/ws", protocols=("chat",)
            ) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=2) == f"{expected}:hello"
                await ws.send_bytes(b"abc")
                assert await ws.receive_bytes(timeout=2) == b"cba"
    assert bs[0].last_headers["X-Forwarded-For"] == "127.0.0.1"


async def test_websocket_upstream_down(proxy) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for([])
    dead = PoolSpec("p", (MemberSpec("127.0.0.1", free_port()),))
    import dataclasses

    p = await proxy(dataclasses.replace(settings, pools={"p": dead}))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"http://127.0.0.1:{p.port}/ws")
        assert info.value.status == 502


class NamedServer:
    """A TCP server that greets with its name then echoes, optionally over TLS."""

    def __init__(self, name: str, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.connections = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(f"{self.name}\n".encode())
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def tcp_servers() -> AsyncIterator[list[NamedServer]]:
    servers: list[NamedServer] = []
    yield servers
    for s in servers:
        await s.stop()


def tcp_settings(ports: list[int], check: CheckSpec | None = None) -> ProxySettings:
    pool = PoolSpec("db", tuple(MemberSpec("127.0.0.1", p) for p in ports), check=check)
    return ProxySettings(
        listeners=(ListenerSpec("127.0.0.1", 0, "tcp", pool="db"),), routes=(), pools={"db": pool}
    )


async def talk(port: int, payload: bytes, **kw: object) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **kw)  # type: ignore[arg-type]
    try:
        name = (await asyncio.wait_for(reader.readline(), 2)).decode().strip()
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
        return name, echoed
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_tcp_mode_balances_and_relays(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    for name in ("t0", "t1"):
        s = NamedServer(name)
        await s.start()
        tcp_servers.append(s)
    dead = free_port()
    p = await proxy(tcp_settings([s.port for s in tcp_servers] + [dead]))
    seen = Counter()
    big = bytes(range(256)) * 4096  # 1 MiB both ways
    for _ in range(6):
        name, echoed = await talk(p.port, big)
        assert echoed == big
        seen[name] += 1
    # The dead member is skipped (connection refused -> next member); nothing is lost.
    assert sum(seen.values()) == 6
    assert set(seen) == {"t0", "t1"}
    dead_member = p.pools["db"].by_name[f"127.0.0.1:{dead}"]
    assert dead_member.failures >= 1


async def test_tcp_mode_active_checks_mark_member_down(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    s = NamedServer("t0")
    await s.start()
    tcp_servers.append(s)
    dead = free_port()
    check = CheckSpec(path=None, interval=0.05, timeout=0.04, rise=1, fall=1)
    p = await proxy(tcp_settings([s.port, dead], check))
    pool = p.pools["db"]
    for _ in range(100):
        if pool.healthy_count() == 1:
            break
        await asyncio.sleep(0.02)
    assert pool.by_name[f"127.0.0.1:{dead}"].health.state == "down"
    assert pool.by_name[f"127.0.0.1:{s.port}"].health.state == "up"
    for _ in range(3):
        assert (await talk(p.port, b"x"))[0] == "t0"


async def test_tcp_mode_tls_passthrough(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("db.example.test").configure_cert(server_ctx)
    s = NamedServer("tls0", server_ctx)
    await s.start()
    tcp_servers.append(s)
    p = await proxy(tcp_settings([s.port]))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    name, echoed = await talk(p.port, b"secret", ssl=client_ctx, server_hostname="db.example.test")
    assert (name, echoed) == ("tls0", b"secret")


async def test_tcp_mode_no_member_closes(proxy) -> None:  # type: ignore[no-untyped-def]
    p = await proxy(tcp_settings([free_port()]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_mode_half_close(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    s = NamedServer("t0")
    await s.start()
    tcp_servers.append(s)
    p = await proxy(tcp_settings([s.port]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"request then FIN")
        writer.write_eof()  # like `nc -N`: the answer must still come back
        got = await asyncio.wait_for(reader.read(), 3)
        assert got == b"t0\nrequest then FIN"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_mode_closes_idle_relays(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    s = NamedServer("t0")
    await s.start()
    tcp_servers.append(s)
    settings = dataclasses.replace(tcp_settings([s.port]), limits=LimitsSpec(idle_timeout=0.3))
    p = await proxy(settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 2)).strip() == b"t0"
        # Traffic keeps the relay open past the idle timeout...
        for _ in range(3):
            writer.write(b"ping")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(4), 2) == b"ping"
            await asyncio.sleep(0.15)
        # ...silence closes it.
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_relays_count_as_load_and_give_rtt_samples(proxy, tcp_servers) -> None:  # type: ignore[no-untyped-def]
    s = NamedServer("t0")
    await s.start()
    tcp_servers.append(s)
    p = await proxy(tcp_settings([s.port]))
    for _ in range(3):
        assert (await talk(p.port, b"ping"))[1] == b"ping"
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    assert (await asyncio.wait_for(reader.readline(), 2)).strip() == b"t0"
    load, networks, _now = p.load_report()
    assert load.in_flight == 1  # the open relay
    assert {n.network: n.samples for n in networks} == {"127.0.0.0/24": 4}
    assert 0 < networks[0].rtt_ms < 50
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    for _ in range(100):
        load, _, _ = p.load_report()
        if load.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert load.in_flight == 0 and load.requests_per_second == pytest.approx(4 / 10)
