"""Shared helpers for the health tests: controllable backends on 127.0.0.1 (no tests here)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from aiohttp import web

from gslb.config.model import Check, Config, Datacenter, HealthSettings, ProbeAgent


class Backend:
    """An aiohttp app server whose answer the test controls; stop/restart keep the port."""

    def __init__(
        self,
        status: int = 200,
        body: str = "ok",
        delay: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.delay = delay
        self.ssl_context = ssl_context
        self.hits = 0
        self.last_headers: dict[str, str] = {}
        self.port = 0
        self.inflight = 0
        self.max_inflight = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.last_headers = dict(request.headers)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.inflight -= 1
        return web.Response(status=self.status, text=self.body)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def free_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused cases."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_check(port: int, **kw: Any) -> Check:
    base: dict[str, Any] = dict(
        type="http",
        port=port,
        path="/health",
        interval=0.05,
        timeout=0.5,
        jitter=0.1,
        rise=1,
        fall=1,
    )
    base.update(kw)
    return Check(**base)


def make_config(
    checks: dict[str, Check | None],
    agents: tuple[ProbeAgent, ...] = (),
    quorum: str | float = "majority",
    stale_after: float = 10.0,
    state_file: str | None = None,
) -> Config:
    dcs = {
        name: Datacenter(
            name=name, region="r", latitude=0.0, longitude=0.0, ipv4=("127.0.0.1",), check=check
        )
        for name, check in checks.items()
    }
    return Config(
        path="test.yaml",
        datacenters=MappingProxyType(dcs),
        health=HealthSettings(
            agents=agents, quorum=quorum, stale_after=stale_after, state_file=state_file
        ),
    )


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll until cond() is true; fail the test with a clear message otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
