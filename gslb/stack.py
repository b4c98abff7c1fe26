"""`gslb run`: the shipped example as a whole deployment on loopback.

One process holds the authoritative DNS node, its admin API and the demo backends (so the demo
controls are plain function calls); every regional probe agent and every datacenter's proxy is
its own `gslb` process, as it would be in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .config.model import Config, ProbeAgent
from .demo.backend import DemoBackend
from .dns.node import DnsNode, NodeOptions
from .dns.settings import parse_hostport

log = logging.getLogger("gslb.stack")


@dataclass
class StackOptions:
    config_path: str = "zones/example.yaml"
    zones_dir: str = "zones"
    dns_listen: str = "127.0.0.1:5300"
    admin_listen: str = "127.0.0.1:8053"
    backend_base_port: int = 9100
    backends_per_datacenter: int = 2
    proxy_check_interval: float = 0.25
    log_level: str = "WARNING"  # for the child processes


@dataclass
class Datacenter:
    name: str
    proxy_listen: str
    backends: list[DemoBackend]
    proxy: asyncio.subprocess.Process | None = None


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.node: DnsNode | None = None
        self.admin: Any = None
        self.datacenters: dict[str, Datacenter] = {}
        self.probes: dict[str, asyncio.subprocess.Process] = {}

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        node = DnsNode(
            NodeOptions(
                zones_dir=options.zones_dir,
                config_path=options.config_path,
                listen=[options.dns_listen],
            )
        )
        config = node.generation.config
        assert config is not None  # the stack always runs with its config file
        self._check_ports_free(config)
        self.node = node
        for index, (name, dc) in enumerate(config.datacenters.items()):
            if dc.check is None or dc.check.port is None:
                raise SystemExit(f"datacenter {name} needs check.host/port for its proxy")
            backends = [
                DemoBackend(
                    name,
                    f"{name}-{number + 1}",
                    "127.0.0.1",
                    options.backend_base_port + index * 10 + number,
                )
                for number in range(options.backends_per_datacenter)
            ]
            self.datacenters[name] = Datacenter(
                name, f"{dc.check.host or '127.0.0.1'}:{dc.check.port}", backends
            )
        for datacenter in self.datacenters.values():
            for backend in datacenter.backends:
                await backend.start()
            datacenter.proxy = await self._spawn(
                "proxy",
                "--listen",
                datacenter.proxy_listen,
                *[arg for b in datacenter.backends for arg in ("--upstream", f"{b.host}:{b.port}")],
                "--health-path",
                "/health",
                "--check-interval",
                str(options.proxy_check_interval),
                "--min-healthy",
                "1",
            )
        for agent in config.health.agents:
            self.probes[agent.region] = await self._spawn(
                "probe",
                "--config",
                options.config_path,
                "--region",
                agent.region,
                "--listen",
                agent_listen(agent),
            )
        await node.start()
        await self._start_admin()
        await self._wait_listening(config)

    async def _wait_listening(self, config: Config, timeout: float = 20.0) -> None:
        """Return once every proxy and probe agent accepts connections (or time runs out)."""
        addresses = [dc.proxy_listen for dc in self.datacenters.values()]
        addresses += [agent_listen(agent) for agent in config.health.agents]
        deadline = asyncio.get_running_loop().time() + timeout
        for address in addresses:
            host, port = parse_hostport(address) or ("127.0.0.1", 0)
            while asyncio.get_running_loop().time() < deadline:
                try:
                    _, writer = await asyncio.open_connection(host, port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                await writer.wait_closed()
                break

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gslb.cli",
            "--log-level",
            self.options.log_level,
            *args,
            start_new_session=True,
        )

    async def _start_admin(self) -> None:
        from .admin.server import start_admin
        from .dns.status import NodeStatus
        from .health.admin import admin_routes

        assert self.node is not None
        status = NodeStatus(self.node, name="dns-1", demo=True)
        routes = [
            web.post("/v1/demo/fail/{dc}", self._demo_route(self.fail)),
            web.post("/v1/demo/recover/{dc}", self._demo_route(self.recover)),
        ]
        if self.node.monitor is not None:
            routes += admin_routes(self.node.monitor)
        self.admin = await start_admin(self.options.admin_listen, status, extra_routes=routes)

    def _demo_route(self, action: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["dc"]
            if name not in self.datacenters:
                return web.json_response({"error": f"no datacenter {name}"}, status=404)
            await action(name)
            return web.json_response({"ok": True, "datacenter": name})

        return handler

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.close()
        if self.node is not None:
            await self.node.stop()
        children = [p for p in self.probes.values()] + [
            dc.proxy for dc in self.datacenters.values() if dc.proxy is not None
        ]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        for datacenter in self.datacenters.values():
            for backend in datacenter.backends:
                await backend.fail()

    def _check_ports_free(self, config: Config) -> None:
        wanted = [self.options.dns_listen, self.options.admin_listen]
        wanted += [
            f"{dc.check.host or '127.0.0.1'}:{dc.check.port}"
            for dc in config.datacenters.values()
            if dc.check and dc.check.port
        ]
        wanted += [agent_listen(agent) for agent in config.health.agents]
        busy = []
        for item in wanted:
            host, port = parse_hostport(item) or ("127.0.0.1", 0)
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                # As the servers do: connections in TIME_WAIT from a previous run do not count.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    busy.append(item)
        if busy:
            raise SystemExit(
                f"gslb run: address already in use: {', '.join(busy)} "
                "(is another `gslb run` going?)"
            )

    # -- demo controls -----------------------------------------------------------------------

    async def fail(self, name: str) -> None:
        log.warning("demo: datacenter %s fails (its backends stop answering)", name)
        for backend in self.datacenters[name].backends:
            await backend.fail()

    async def recover(self, name: str) -> None:
        log.warning("demo: datacenter %s recovers", name)
        for backend in self.datacenters[name].backends:
            await backend.recover()

    def banner(self) -> str:
        host, port = parse_hostport(self.options.dns_listen) or ("127.0.0.1", 5300)
        admin = self.options.admin_listen
        dcs = ", ".join(self.datacenters)
        first = next(iter(self.datacenters), "eu-west")
        at = f"@{host} -p {port}"
        gslb = gslb_command()
        lines = [
            "",
            "gslb example stack is up.",
            f"  DNS            {host}:{port} (UDP and TCP), zone example.test",
            f"  status page    http://{admin}/",
            f"  metrics        http://{admin}/metrics   status JSON http://{admin}/status",
            f"  datacenters    {dcs}",
            f"  probe agents   {', '.join(self.probes) or '(checks run in the DNS node)'}",
            "",
            "Try:",
            f"  dig {at} example.test SOA",
            f"  dig {at} www.example.test +subnet=127.2.0.0/24     # a client in Germany",
            f"  dig {at} www.example.test +subnet=127.3.0.0/24     # a client in Japan",
            f"  dig {at} www.example.test +subnet=127.1.0.0/24     # a client in California",
            f"  {gslb} explain --config {self.options.config_path} --zones "
            f"{self.options.zones_dir} www.example.test --client 127.2.0.1",
            f"  {gslb} demo fail {first}      # break a datacenter, then dig again",
            f"  {gslb} demo recover {first}",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


async def run_stack(options: StackOptions) -> int:
    stack = Stack(options)
    try:
        await stack.start()
    except BaseException:
        await stack.stop()
        raise
    print(stack.banner(), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stack.node is not None:
        loop.add_signal_handler(signal.SIGHUP, stack.node.reload)
    await stop.wait()
    print("\nstopping the stack...", flush=True)
    await stack.stop()
    return 0


def agent_listen(agent: ProbeAgent) -> str:
    """The HOST:PORT a probe agent listens on, from its URL in the config."""
    parts = urlsplit(agent.url)
    return f"{parts.hostname}:{parts.port}"


def gslb_command() -> str:
    """How to type `gslb` from the current directory (the venv is usually not on PATH)."""
    script = Path(sys.executable).parent / "gslb"
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return str(script) if script.exists() else "gslb"
    return str(relative)


def venv_bin_on_path() -> None:
    """Child `gslb` processes and the printed commands use this interpreter's environment."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
