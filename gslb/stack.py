"""`gslb run`: the shipped example as a whole deployment on loopback.

One process holds the authoritative DNS node, its admin API and the demo backends (so the demo
controls are plain function calls); every regional probe agent and every datacenter's proxy is
its own `gslb` process, as it would be in production.

With `--cluster` the example runs as a fleet: three etcd members, the configuration published
to them as generation 1, and two DNS nodes following it (this process's node and a second
`gslb dns --etcd` process). Drains on either node's admin API reach both. State files (and the
etcd data) live in a state directory outside the source tree.
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


def default_state_dir() -> str:
    """Per-user state, never the checkout: $XDG_STATE_HOME/gslb or ~/.local/state/gslb."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "gslb")


@dataclass
class StackOptions:
    config_path: str = "zones/example.yaml"
    zones_dir: str = "zones"
    dns_listen: str = "127.0.0.1:5300"
    admin_listen: str = "127.0.0.1:8053"
    backend_base_port: int = 9100
    backends_per_datacenter: int = 2
    proxy_check_interval: float = 0.25
    proxy_capacity: float = 50.0  # requests/s each example proxy declares
    log_level: str = "WARNING"  # for the child processes
    state_dir: str | None = None  # None: default_state_dir()
    cluster: bool = False  # 3 etcd members + 2 DNS nodes
    etcd_base_port: int = 23790  # members use base..base+5 (client, peer) pairs


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
        self.status: Any = None
        self.datacenters: dict[str, Datacenter] = {}
        self.probes: dict[str, asyncio.subprocess.Process] = {}
        self.state_dir = Path(options.state_dir or default_state_dir())
        self.etcd: list[asyncio.subprocess.Process] = []
        self.etcd_urls: list[str] = []
        self.peers: list[tuple[str, str, asyncio.subprocess.Process]] = []  # name, admin, proc
        self.follower: Any = None
        self._peer_task: asyncio.Task[None] | None = None

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        self.state_dir.mkdir(parents=True, exist_ok=True)
        node_options = NodeOptions(
            zones_dir=options.zones_dir,
            config_path=options.config_path,
            listen=[options.dns_listen],
            state_file=str(self.state_dir / "dns-1.json"),
            name="dns-1",
        )
        node = DnsNode(node_options)  # validates everything before anything starts
        config = node.generation.config
        assert config is not None  # the stack always runs with its config file
        self._check_ports_free(config)
        source = None
        if options.cluster:
            source = await self._start_cluster()
            node.generation.close()
            node = DnsNode(node_options, source=source)
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
                # Reported with its health: spillover weighs capacity minus load.
                "--capacity",
                str(options.proxy_capacity),
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
        if options.cluster:
            await self._follow_cluster(node)
        await self._start_admin()
        await self._wait_listening(config)
        if options.cluster:
            await self._start_peer()

    # -- cluster mode ------------------------------------------------------------------------

    def _etcd_ports(self) -> list[tuple[int, int]]:
        base = self.options.etcd_base_port
        return [(base + 2 * i, base + 2 * i + 1) for i in range(3)]

    async def _start_cluster(self) -> Any:
        """Start three etcd members, publish the example as a generation; return it."""
        from .cluster.etcd import EtcdClient, retrying
        from .cluster.generation import read_source
        from .cluster.store import ClusterStore

        members = [
            f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(self._etcd_ports())
        ]
        for i, (client_port, peer) in enumerate(self._etcd_ports()):
            url = f"http://127.0.0.1:{client_port}"
            self.etcd_urls.append(url)
            data = self.state_dir / "etcd" / f"m{i}"
            self.etcd.append(
                await asyncio.create_subprocess_exec(
                    "etcd",
                    "--name", f"m{i}",
                    "--data-dir", str(data),
                    "--listen-client-urls", url,
                    "--advertise-client-urls", url,
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", ",".join(members),
                    "--initial-cluster-state", "existing" if data.exists() else "new",
                    "--initial-cluster-token", "gslb-run",
                    "--heartbeat-interval", "100",
                    "--election-timeout", "1000",
                    "--log-level", "error",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            )  # fmt: skip
        source = read_source(self.options.config_path, self.options.zones_dir, absolute=True)
        client = EtcdClient(self.etcd_urls)
        try:
            store = ClusterStore(client)
            published = await retrying("publish", lambda: store.publish(source), 30.0)
        finally:
            await client.close()
        log.warning("published generation %s to etcd %s", published.label, ",".join(self.etcd_urls))
        return published

    async def _follow_cluster(self, node: DnsNode) -> None:
        from .cluster.etcd import EtcdClient
        from .cluster.store import ClusterStore
        from .cluster.watch import ClusterFollower, cache_path

        store = ClusterStore(EtcdClient(self.etcd_urls))
        self.follower = ClusterFollower(store, node, cache_file=cache_path(node.options.state_file))
        node.reload_source = lambda: node.source
        await self.follower.sync()
        await self.follower.start()

    async def _start_peer(self) -> None:
        """The second DNS node: its own process, following the same etcd."""
        host, port = parse_hostport(self.options.dns_listen) or ("127.0.0.1", 5300)
        admin_host, admin_port = parse_hostport(self.options.admin_listen) or ("127.0.0.1", 8053)
        admin = f"{admin_host}:{admin_port + 1}"
        process = await self._spawn(
            "dns",
            "--etcd", ",".join(self.etcd_urls),
            "--listen", f"{host}:{port + 1}",
            "--admin", admin,
            "--state-file", str(self.state_dir / "dns-2.json"),
            "--name", "dns-2",
        )  # fmt: skip
        self.peers.append(("dns-2", f"http://{admin}", process))
        self._peer_task = asyncio.create_task(self._poll_peers())

    async def _poll_peers(self) -> None:
        """The status page shows a line per node: the peers' generations, read from their
        own /status once a second."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                lines = []
                for name, url, _process in self.peers:
                    line: dict[str, Any] = {"name": name, "admin": url}
                    try:
                        async with session.get(
                            f"{url}/status", timeout=aiohttp.ClientTimeout(total=1)
                        ) as resp:
                            doc = await resp.json()
                        line["generation"] = (doc.get("node") or {}).get("generation")
                        line["stale"] = (doc.get("cluster") or {}).get("stale")
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        line["error"] = str(exc) or type(exc).__name__
                    lines.append(line)
                if self.status is not None:
                    self.status.peers = lines
                await asyncio.sleep(1.0)

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
        from .cluster.watch import ClusterUnavailable
        from .dns.control import override_setter
        from .dns.status import NodeStatus
        from .health.admin import admin_routes

        assert self.node is not None
        status = NodeStatus(self.node, name="dns-1", demo=True, cluster=self.follower)
        self.status = status
        routes = [
            web.post("/v1/demo/fail/{dc}", self._demo_route(self.fail)),
            web.post("/v1/demo/recover/{dc}", self._demo_route(self.recover)),
        ]
        if self.node.monitor is not None:
            routes += admin_routes(
                self.node.monitor,
                setter=override_setter(self.node, self.follower),
                unavailable=(ClusterUnavailable,),
            )
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
        if self._peer_task is not None:
            self._peer_task.cancel()
            await asyncio.gather(self._peer_task, return_exceptions=True)
        if self.admin is not None:
            await self.admin.close()
        if self.follower is not None:
            await self.follower.stop()
        if self.node is not None:
            await self.node.stop()
        children = [p for p in self.probes.values()] + [
            dc.proxy for dc in self.datacenters.values() if dc.proxy is not None
        ]
        children += [process for _, _, process in self.peers]
        children += self.etcd
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
        if self.options.cluster:
            host, port = parse_hostport(self.options.dns_listen) or ("127.0.0.1", 5300)
            admin_host, admin_port = parse_hostport(self.options.admin_listen) or ("", 8053)
            wanted += [f"{host}:{port + 1}", f"{admin_host}:{admin_port + 1}"]
            wanted += [f"127.0.0.1:{p}" for pair in self._etcd_ports() for p in pair]
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

    def _cluster_banner(self) -> list[str]:
        if not self.options.cluster:
            return [f"  state          {self.state_dir}"]
        host, port = parse_hostport(self.options.dns_listen) or ("127.0.0.1", 5300)
        peer_admin = self.peers[0][1] if self.peers else "?"
        return [
            f"  cluster        etcd {','.join(self.etcd_urls)}",
            f"  second node    DNS {host}:{port + 1}, admin {peer_admin}",
            f"  state          {self.state_dir}",
            f"  publish        {gslb_command()} publish --config {self.options.config_path} "
            f"--zones {self.options.zones_dir} --etcd {','.join(self.etcd_urls)}",
        ]

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
            *self._cluster_banner(),
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
