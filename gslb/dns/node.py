"""A DNS node: loads zones and config, builds the Responder, serves, reloads, runs workers.

This is the composition root for `gslb dns`; it wires parts together and decides nothing
about answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..admin.settings import AdminSettings, parse_admin
from ..dnssec.settings import dnssec_section
from ..errors import ConfigError
from ..health.snapshot import HealthHolder
from ..zone import ZoneSet, load_zones
from ..zone.checks import services_under_delegations
from .acl import parse_acl
from .cookies import CookieJar, generate_secret, parse_cookies
from .counters import Counters
from .guards import Protection
from .responder import Responder
from .rrl import ResponseRateLimiter, parse_rrl
from .server import DnsServer, ResponderHolder, install_uvloop, make_socket
from .settings import DnsSettings, parse_dns, parse_hostport

log = logging.getLogger("gslb.dns")


@dataclass
class NodeOptions:
    zones_dir: str = "zones"
    config_path: str | None = None
    listen: list[str] = field(default_factory=list)  # empty: from config, else 127.0.0.1:5300
    geoip: str | None = None
    workers: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # DnsSettings fields from the CLI
    # Tests drive health through the HealthHolder themselves; production always monitors.
    health_monitor: bool = True
    geoip_poll_interval: float = 2.0  # seconds between checks of the GeoIP file's mtime
    admin_listen: str | None = None  # overrides admin.listen; "off" disables the admin API
    rrl_overrides: dict[str, Any] = field(default_factory=dict)  # RrlSettings fields from the CLI
    # The cookie secret when the config sets none: generated once per node (before workers fork)
    # so every worker, and every reload, validates the cookies the others made.
    cookie_secret: bytes | None = None
    dnssec_keys: str | None = None  # --dnssec-keys DIR: overrides dns.dnssec.key_dir
    signature_cache: Any = None  # DNSSEC signatures, kept across reloads (one per process)


@dataclass
class Loaded:
    """Everything one configuration generation consists of."""

    responder: Responder
    settings: DnsSettings
    config: Any  # gslb.config.model.Config, or None when serving zones only
    loaded_at: float
    locator: Any = None  # gslb.geo.locate.Locator, closed when the generation is retired
    admin: AdminSettings = field(default_factory=AdminSettings)
    key_event: float = float("inf")  # when a DNSSEC key changes state: rebuild then

    def close(self) -> None:
        if self.locator is not None:
            self.locator.close()


def load_generation(
    options: NodeOptions, health: HealthHolder, counters: Counters | None = None
) -> Loaded:
    """Read and validate zones and config; raises ConfigError with every reason found."""
    zones = load_zones(options.zones_dir)
    config = None
    steering = None
    raw_dns = None
    locator = None
    if options.config_path:
        from ..config.validate import load_config
        from ..steering.engine import SteeringEngine

        config = load_config(
            options.config_path, zone_origins=set(zones), geoip_override=options.geoip
        )
        raw_dns = config.extra.get("dns")
        if config.geoip_path:
            from ..geo.locate import Locator

            locator = Locator(config.geoip_path, cache_size=config.geoip_cache_size)
        steering = SteeringEngine(config, locator, health)
    settings, reasons = parse_dns(raw_dns)
    extra = config.extra if config is not None else {}
    dnssec, dnssec_reasons = dnssec_section(settings.dnssec, extra.get("dnssec"))
    reasons += dnssec_reasons
    settings = replace(settings, dnssec=dnssec)
    admin, admin_reasons = parse_admin(extra.get("admin"))
    reasons += admin_reasons
    protection, protection_reasons = build_protection(extra, options)
    reasons += protection_reasons
    if reasons:
        if locator is not None:
            locator.close()
        raise ConfigError(reasons)
    settings = replace(settings, **options.overrides)
    if options.listen:
        settings = replace(settings, listen=tuple(options.listen))
    if options.workers:
        settings = replace(settings, workers=options.workers)
    services = list(steering.services) if steering is not None else []
    key_dir = options.dnssec_keys or settings.dnssec.key_dir
    if key_dir:
        from ..dnssec import setup as dnssec_setup

        if not options.dnssec_keys:
            key_dir = dnssec_setup.resolve_key_dir(key_dir, options.config_path)
        try:
            keys = dnssec_setup.publish_zone_keys(zones, key_dir, settings.dnssec, time.time())
        except ConfigError:
            if locator is not None:
                locator.close()
            raise
    zoneset = ZoneSet(zones, services)
    if config is not None:
        delegated = services_under_delegations(zoneset, config.services)
        if delegated:
            if locator is not None:
                locator.close()
            raise ConfigError(delegated)
    signers = None
    key_event = float("inf")
    if key_dir:
        signers = dnssec_setup.make_signers(
            zoneset.zones, keys, settings.dnssec, services, cache=options.signature_cache
        )
        if signers is not None:
            options.signature_cache = signers.cache
        key_event = dnssec_setup.next_key_event(keys, time.time())
    log.info(
        "loaded %d zone(s) %s and %d service(s)%s",
        len(zones),
        ", ".join(sorted(zones)),
        len(services),
        f" from {options.config_path}" if options.config_path else "",
    )
    responder = Responder(
        zoneset, settings, steering, health, protection, counters, signers=signers
    )
    return Loaded(responder, settings, config, time.time(), locator, admin, key_event)


def build_protection(extra: Any, options: NodeOptions) -> tuple[Protection, list[Any]]:
    """Access list, rate limiter and cookie jar from the config sections and CLI overrides."""
    acl, reasons = parse_acl(extra.get("acl"))
    rrl_settings, rrl_reasons = parse_rrl(extra.get("rrl"))
    cookie_settings, cookie_reasons = parse_cookies(extra.get("cookies"))
    reasons += rrl_reasons + cookie_reasons
    rrl_settings = replace(rrl_settings, **options.rrl_overrides)
    jar = None
    if cookie_settings.enabled:
        if cookie_settings.secret is None and options.cookie_secret is None:
            options.cookie_secret = generate_secret()
        secret = cookie_settings.secret or options.cookie_secret
        jar = CookieJar(secret, previous_secret=cookie_settings.previous_secret)  # type: ignore[arg-type]
    limiter = ResponseRateLimiter(rrl_settings) if rrl_settings.enabled else None
    protection = Protection(acl, limiter, jar, cookie_settings.require_valid)
    return protection, reasons


class DnsNode:
    """One serving process: the server, the current generation, and reload."""

    def __init__(
        self, options: NodeOptions, reuse_port: bool = False, health: HealthHolder | None = None
    ) -> None:
        self.options = options
        self.health = health or HealthHolder()
        # One set of counters for every generation: totals survive reloads.
        self.counters = Counters()
        self.generation = load_generation(options, self.health, self.counters)
        self.holder = ResponderHolder(self.generation.responder)
        self.server = DnsServer(self.holder, self.generation.settings, reuse_port=reuse_port)
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error: str | None = None
        self.started_at = time.time()
        self.monitor: Any = None
        self._geoip_task: asyncio.Task[None] | None = None
        self.worker = os.environ.get("GSLB_WORKER", "0")
        self.on_reload: list[Any] = []  # callbacks (ok, errors) for status and events
        # The counters carry over reloads; this stays (0, 0) for readers that add it.
        self.retired_cache = (0, 0)

    def answer_counts(self) -> dict[tuple[int, int, str, str], int]:
        return self.holder.current.answer_counts()

    async def start(self) -> None:
        config = self.generation.config
        if config is not None and self.options.health_monitor:
            from ..health.monitor import HealthMonitor

            self.monitor = HealthMonitor(config, self.health)
            await self.monitor.start()
        await self.server.start()
        self._geoip_task = asyncio.create_task(self._watch_geoip())

    async def stop(self) -> None:
        if self._geoip_task is not None:
            self._geoip_task.cancel()
        await self.server.stop()
        if self.monitor is not None:
            await self.monitor.stop()

    def _geoip_stamp(self) -> tuple[float, int] | None:
        config = self.generation.config
        path = getattr(config, "geoip_path", None) if config is not None else None
        if not path:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    async def _watch_geoip(self) -> None:
        """Reload when the GeoIP database changes on disk (geoipupdate replaces it in place)."""
        stamp = self._geoip_stamp()
        while True:
            await asyncio.sleep(self.options.geoip_poll_interval)
            current = self._geoip_stamp()
            if current is not None and current != stamp:
                log.info("GeoIP database changed on disk; reloading")
                self.reload()
                stamp = self._geoip_stamp()
            elif time.time() >= self.generation.key_event:
                log.info("a DNSSEC key changes state now; reloading to publish/sign with it")
                self.reload()

    def reload(self) -> bool:
        """Re-read zones and config; on any error keep serving the previous generation."""
        try:
            generation = load_generation(self.options, self.health, self.counters)
        except ConfigError as exc:
            self.reload_failures += 1
            self.last_reload_error = str(exc)
            log.error("reload rejected, still serving the previous configuration:\n%s", exc)
            for callback in self.on_reload:
                callback(False, str(exc).splitlines())
            return False
        retired_generation, self.generation = self.generation, generation
        if self.monitor is not None and generation.config is not None:
            self.monitor.reload(generation.config)
        retired = self.holder.current
        self.holder.current = generation.responder
        retired.retire()
        retired_generation.close()
        self.last_reload_error = None
        self.reloads += 1
        log.info("reload complete")
        for callback in self.on_reload:
            callback(True, [])
        return True


async def start_node_admin(node: DnsNode) -> Any:
    """The node's admin API, or None when turned off. Worker N listens on the port + N."""
    settings = node.generation.admin
    listen = node.options.admin_listen or settings.listen
    if not listen or listen == "off":
        return None
    from ..admin.server import start_admin
    from ..health.admin import admin_routes
    from .status import NodeStatus

    host, _, port = listen.rpartition(":")
    listen = f"{host}:{int(port) + int(node.worker)}"
    routes = admin_routes(node.monitor) if node.monitor is not None else []
    status = NodeStatus(node, name=f"dns-{node.worker}")
    admin = await start_admin(
        listen, status, token=settings.token, allow=settings.allow_check(), extra_routes=routes
    )
    log.info("admin API on http://%s/", listen)
    return admin


async def serve(options: NodeOptions, reuse_port: bool = False) -> int:
    """Run one node until SIGINT/SIGTERM; SIGHUP reloads."""
    node = DnsNode(options, reuse_port=reuse_port)
    await node.start()
    admin = await start_node_admin(node)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    await stop.wait()
    log.info("stopping")
    if admin is not None:
        await admin.close()
    await node.stop()
    return 0


def run(options: NodeOptions) -> int:
    """Entry point for `gslb dns`: one process, or a supervisor with N worker processes."""
    try:
        # Validate everything before binding a socket, and learn the worker count.
        probe = load_generation(options, HealthHolder())
        probe.close()
        settings = probe.settings
        if settings.workers <= 1:
            return _run_loop(serve(options))
    except ConfigError as exc:
        print(f"gslb dns: configuration error:\n{exc}", file=sys.stderr)
        return 2
    return _supervise(options, settings)


def _run_loop(coro: Any) -> int:
    factory = install_uvloop()
    if factory is not None:
        with asyncio.Runner(loop_factory=factory) as runner:
            return int(runner.run(coro))
    return int(asyncio.run(coro))


def _supervise(options: NodeOptions, settings: DnsSettings) -> int:
    """Fork N workers that each bind the same ports with SO_REUSEPORT; restart any that dies."""
    workers = settings.workers
    listen = list(settings.listen)
    # Bind once here so port 0 resolves to one port that every worker then shares.
    placeholders = []
    resolved = []
    for item in listen:
        host, port = parse_hostport(item)  # type: ignore[misc]
        sock = make_socket(host, port, socket.SOCK_STREAM, reuse_port=True)
        placeholders.append(sock)
        port = sock.getsockname()[1]
        resolved.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    worker_options = replace(options, listen=resolved, workers=1)
    children: dict[int, int] = {}

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            for sock in placeholders:
                sock.close()
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.environ["GSLB_WORKER"] = str(index)
            code = _run_loop(serve(worker_options, reuse_port=True))
            os._exit(code)
        children[pid] = index

    for index in range(workers):
        spawn(index)
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if signum in (signal.SIGINT, signal.SIGTERM):
            stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    time.sleep(0.5)
    for sock in placeholders:
        sock.close()
    log.info("supervising %d workers on %s", workers, ", ".join(resolved))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is not None and not stopping:
            log.error("worker %d exited with status %d; restarting it", index, status)
            time.sleep(0.5)
            spawn(index)
    return 0
