"""A demo application server: answers with its datacenter and server name.

`fail()` closes its listening socket and open connections, so it stops answering the way a
crashed server does (connection refused); `recover()` listens again on the same port.
"""

from __future__ import annotations

import json
import socket

from aiohttp import web


class DemoBackend:
    def __init__(self, datacenter: str, name: str, host: str, port: int) -> None:
        self.datacenter = datacenter
        self.name = name
        self.host = host
        self.port = port
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def _hello(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = {
            "datacenter": self.datacenter,
            "server": self.name,
            "path": request.path_qs,
            "forwarded_for": request.headers.get("X-Forwarded-For", ""),
        }
        if "json" in request.headers.get("Accept", "") or request.path == "/whoami":
            return web.json_response(body)
        return web.Response(
            text=f"Hello from {self.name} in datacenter {self.datacenter}\n"
            + json.dumps(body)
            + "\n"
        )

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/{tail:.*}", self._hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, shutdown_timeout=0.1)
        await site.start()
        self._runner = runner

    async def fail(self) -> None:
        """Stop answering: the listening socket and every open connection close."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def recover(self) -> None:
        await self.start()
