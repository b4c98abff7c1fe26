"""Test helpers: a real gslb DNS node on 127.0.0.1 (ephemeral port) in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import dns.message
import dns.query

from gslb.dns.node import DnsNode, NodeOptions
from gslb.health.snapshot import HealthHolder

TEST_ZONE = """\
$ORIGIN example.test.
$TTL 300
@       3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@       3600 IN NS  ns1
@       3600 IN NS  ns2.example.net.
ns1          IN A   192.0.2.53
ns1          IN AAAA 2001:db8::53
@            IN MX  10 mail
mail         IN A   192.0.2.25
www          IN A   192.0.2.1
www          IN AAAA 2001:db8::1
www          IN TXT "web"
alias        IN CNAME alias2
alias2       IN CNAME www
dangling     IN CNAME nothere
outside      IN CNAME www.example.org.
*.wild       IN A   192.0.2.99
*.wild       IN TXT "wild"
real.wild    IN A   192.0.2.100
a.b.c        IN A   192.0.2.5
child        IN NS  ns.child
child        IN NS  ns.elsewhere.example.net.
ns.child     IN A   203.0.113.53
ns.child     IN AAAA 2001:db8:53::53
big          IN TXT "{big}"
big          IN TXT "{big2}"
big          IN TXT "{big3}"
big          IN TXT "{big4}"
big          IN TXT "{big5}"
big          IN TXT "{big6}"
"""

SHORT_SOA_ZONE = """\
$ORIGIN short.test.
@  30 IN SOA ns1 hostmaster 1 3600 600 1209600 600
@  30 IN NS  ns1
ns1   IN A   192.0.2.54
"""


TWO_DATACENTERS = """\
geoip: {geoip}
datacenters:
  eu-west: {{region: eu-west, latitude: 53.35, longitude: -6.26, ipv4: [192.0.2.21]}}
  ap-northeast: {{region: ap-northeast, latitude: 35.68, longitude: 139.65, ipv4: [198.51.100.31]}}
services:
  www.example.test:
    policy: geoproximity
    datacenters: [eu-west, ap-northeast]
    ttl: {ttl}
    on_all_down: fail_open
"""


def two_datacenter_config(geoip: Path | str, ttl: object = 30) -> str:
    """A small GSLB config: www.example.test over Dublin and Tokyo, no health checks."""
    return TWO_DATACENTERS.format(geoip=geoip, ttl=ttl)


def write_zones(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    chunks = {f"big{n}" if n > 1 else "big": chr(ord("a") + n) * 250 for n in range(1, 7)}
    (directory / "example.test.zone").write_text(TEST_ZONE.format(**chunks))
    (directory / "short.test.zone").write_text(SHORT_SOA_ZONE)
    return directory


class ServerThread:
    """A DnsNode running on its own event loop in a thread; stop() shuts it down."""

    def __init__(self, options: NodeOptions, health: HealthHolder | None = None) -> None:
        self.options = options
        self.health = health
        self.node: DnsNode | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.node = DnsNode(self.options, health=self.health)
            await self.node.start()
        except BaseException as exc:  # surfaced to the test in start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.node.stop()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn in the server's loop thread and return its result."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop)
        return future.result(10)

    @property
    def port(self) -> int:
        assert self.node is not None
        return self.node.server.addresses[0][1]

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def udp(server: ServerThread, query: dns.message.Message, **kw: Any) -> dns.message.Message:
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3, **kw)


def tcp(server: ServerThread, query: dns.message.Message, **kw: Any) -> dns.message.Message:
    return dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=3, **kw)


def raw_udp(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    """Send raw bytes; return the raw reply or None if nothing came back in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None
