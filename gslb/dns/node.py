"""A DNS node: loads one generation (zones and config), builds the Responder, serves, reloads.

A DnsNode plays one of three roles: "single" (one process, both planes), "control" (the
supervisor of worker processes: health, overrides, reload, GeoIP watch; it serves no queries)
or "worker" (serves only; generations and health snapshots arrive from the control plane).
Process wiring lives in control.py and workers.py; this module decides nothing about answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..admin.settings import AdminSettings, parse_admin
from ..cluster.generation import GenerationSource, read_source, relabel, zones_directory
from ..config.model import Config
from ..dnssec.settings import dnssec_section
from ..errors import ConfigError, Reason
from ..health.snapshot import HealthHolder
from ..zone import ZoneSet
from ..zone.checks import services_under_delegations
from .acl import parse_acl
from .cookies import CookieJar, generate_secret, parse_cookies
from .counters import Counters
from .extension import Extension
from .guards import Protection
from .notify import Notifier
from .protocol_extension import ExtensionStats, ProtocolExtension, parse_protocol
from .responder import Responder
from .rrl import ResponseRateLimiter, parse_rrl
from .server import DnsServer, ResponderHolder
from .settings import DnsSettings, parse_cluster, parse_dns
from .transfer import (
    Journal,
    Transfers,
    TransferSettings,
    ZoneVersion,
    service_fallbacks,
    zone_versions,
)
from .tsig import Keyring

Role = Literal["single", "control", "worker"]

if TYPE_CHECKING:
    import dns.name

    from ..geo.locate import Locator
    from .render import Signer

log = logging.getLogger("gslb.dns")


@dataclass
class NodeOptions:
    zones_dir: str | None = "zones"
    config_path: str | None = None
    octodns_path: str | None = None  # an octoDNS main config (--octodns-config)
    listen: list[str] = field(default_factory=list)  # empty: from config, else 127.0.0.1:5300
    geoip: str | None = None
    workers: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # DnsSettings fields from the CLI
    # Tests drive health through the HealthHolder themselves; production always monitors.
    health_monitor: bool = True
    geoip_poll_interval: float = 2.0  # seconds between checks of the GeoIP file's mtime
    admin_listen: str | None = None  # overrides admin.listen; "off" disables the admin API
    rrl_overrides: dict[str, Any] = field(default_factory=dict)  # RrlSettings fields from the CLI
    # The cookie secret when the config sets none: generated once per node (before workers start)
    # so every worker, and every reload, validates the cookies the others made.
    cookie_secret: bytes | None = None
    # Cluster mode: etcd endpoints (empty: files only) and the key prefix of this fleet.
    etcd: list[str] = field(default_factory=list)
    etcd_prefix: str = "/gslb/"
    # This node's own state file (overrides, last known health, last good generation); wins over
    # health.state_file, which a published generation shares with every node.
    state_file: str | None = None
    name: str | None = None  # how /status and /metrics name this node (default dns-1)
    dnssec_keys: str | None = None  # --dnssec-keys DIR: overrides dns.dnssec.key_dir
    signature_cache: Any = None  # DNSSEC signatures, kept across reloads (one per process)


@dataclass
class Loaded:
    """Everything one configuration generation consists of."""

    responder: Responder
    settings: DnsSettings
    config: Config | None  # None when serving zones only
    loaded_at: float
    locator: Locator | None = None  # closed when the generation is retired
    admin: AdminSettings = field(default_factory=AdminSettings)
    source: GenerationSource | None = None
    transfer: TransferSettings = field(default_factory=TransferSettings)
    keyring: Keyring = field(default_factory=Keyring)
    changed: list[ZoneVersion] = field(default_factory=list)  # zones to NOTIFY secondaries of
    key_event: float = float("inf")  # when a DNSSEC key changes state: rebuild then

    def close(self) -> None:
        if self.locator is not None:
            self.locator.close()


def load_generation(
    options: NodeOptions,
    health: HealthHolder,
    source: GenerationSource | None = None,
    counters: Counters | None = None,
    *,
    journal: Journal | None = None,
    extension_stats: ExtensionStats | None = None,
) -> Loaded:
    """Read and validate one generation; raises ConfigError with every reason found.

    Without `source` the files named by the options are read. Every path that loads a
    generation (start, reload, publish, workers, cluster watch) comes through here, and reads
    its inputs through the one way in, `gslb.config.sources.load_sources`. `journal` (the
    node's, kept across reloads) receives this generation's zone versions for IXFR once
    everything validated.
    """
    from ..config.sources import load_sources

    if source is None:
        source = read_source(options.config_path, options.zones_dir)
    # Files read from the operator's own directory keep their names in error messages.
    original = options.zones_dir if source.number == 0 else None
    without_zone_files = options.zones_dir is None and source.number == 0
    with zones_directory(source, original) as directory:
        try:
            sources = load_sources(
                zones_dir=None if without_zone_files else directory,
                config_path=source.config_path,
                config_text=source.config_text,
                octodns_path=options.octodns_path,
                geoip_override=options.geoip,
            )
        except ConfigError as exc:
            if directory == original:
                raise
            raise relabel(exc, directory, f"generation {source.label}") from None
    zones = dict(sources.zones)
    config = sources.config
    steering = None
    raw_dns = None
    locator = None
    if config is not None:
        from ..steering.engine import SteeringEngine

        if options.state_file:
            config = replace(config, health=replace(config.health, state_file=options.state_file))
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
    reasons += parse_cluster(extra.get("cluster"))[1]
    keyring, transfer, transfer_reasons = parse_protocol(extra)
    reasons += transfer_reasons
    if reasons:
        if locator is not None:
            locator.close()
        raise ConfigError(reasons)
    settings = replace(settings, **options.overrides)
    if options.listen:
        settings = replace(settings, listen=tuple(options.listen))
    if options.workers:
        settings = replace(settings, workers=options.workers)
    services = (
        {name: svc.types for name, svc in steering.services.items()} if steering is not None else {}
    )
    key_dir = options.dnssec_keys or settings.dnssec.key_dir
    if key_dir:
        from ..dnssec import setup as dnssec_setup

        if not options.dnssec_keys:
            key_dir = dnssec_setup.resolve_key_dir(key_dir, source.config_path)
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
            zoneset.zones, keys, settings.dnssec, list(services), cache=options.signature_cache
        )
        if signers is not None:
            options.signature_cache = signers.cache
        key_event = dnssec_setup.next_key_event(keys, time.time())
    log.info(
        "loaded %d zone(s) %s and %d service(s), generation %s",
        len(zones),
        ", ".join(sorted(zones)),
        len(services),
        source.label,
    )
    if journal is None:
        journal = Journal(transfer.ixfr_history)
    journal.history = transfer.ixfr_history
    changed: list[ZoneVersion] = []
    if transfer.enabled or transfer.notify:
        fallbacks = service_fallbacks(config, transfer)
        changed = journal.publish(zone_versions(zoneset, transfer, fallbacks))
    extension = ProtocolExtension(
        keyring,
        Transfers(transfer, journal),
        zoneset.zones,
        stats=extension_stats,
        edns_payload=settings.edns_payload,
    )
    responder = build_responder(
        zoneset, settings, steering, health, protection, counters, extension, signers
    )
    return Loaded(
        responder,
        settings,
        config,
        time.time(),
        locator,
        admin,
        source,
        transfer,
        keyring,
        changed,
        key_event,
    )


def build_responder(
    zoneset: ZoneSet,
    settings: DnsSettings,
    steering: Any,
    health: HealthHolder,
    protection: Protection,
    counters: Counters | None = None,
    extension: Extension | None = None,
    signers: Mapping[dns.name.Name, Signer] | None = None,
) -> Responder:
    """The one place a Responder is constructed."""
    return Responder(
        zoneset,
        settings,
        steering,
        health,
        protection,
        counters,
        extension=extension,
        signers=signers,
    )


def build_protection(
    extra: Mapping[str, object], options: NodeOptions
) -> tuple[Protection, list[Reason]]:
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
    """One process's share of a node: the current generation, and (by role) the server, the
    health monitor and the GeoIP watch."""

    def __init__(
        self,
        options: NodeOptions,
        reuse_port: bool = False,
        health: HealthHolder | None = None,
        *,
        source: GenerationSource | None = None,
        role: Role = "single",
    ) -> None:
        self.options = options
        self.role = role
        self.health = health or HealthHolder()
        # One set of counters for every generation: totals survive reloads.
        self.counters = Counters()
        self.journal = Journal()  # zone versions across reloads, for IXFR
        self.extension_stats = ExtensionStats()  # TSIG/transfer counters survive reloads
        self.generation = self._load(source)
        self.notifier: Notifier | None = None
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
        # Called with each applied generation (the control plane forwards it to its workers).
        self.on_generation: list[Callable[[GenerationSource], None]] = []
        # The counters carry over reloads; this stays (0, 0) for readers that add it.
        self.retired_cache = (0, 0)
        # Where the next reload reads from: the files (default), or the cluster's generation.
        self.reload_source: Callable[[], GenerationSource] | None = None

    @property
    def source(self) -> GenerationSource:
        assert self.generation.source is not None
        return self.generation.source

    def answer_counts(self) -> dict[tuple[int, int, str, str], int]:
        return self.holder.current.answer_counts()

    def protocol_counts(self) -> dict[str, int]:
        """TSIG, transfer and NOTIFY events since start (gslb_dns_protocol_events_total)."""
        counts = dict(self.extension_stats.events)
        if self.notifier is not None:
            counts["notify_sent"] = self.notifier.sent
            counts["notify_acknowledged"] = self.notifier.acknowledged
            counts["notify_failed"] = self.notifier.failed
        return counts

    async def start(self) -> None:
        config = self.generation.config
        if self.role != "worker":
            if config is not None and self.options.health_monitor:
                from ..health.monitor import HealthMonitor

                self.monitor = HealthMonitor(config, self.health)
                await self.monitor.start()
            self._geoip_task = asyncio.create_task(self._watch_geoip())
            # The control plane (or the single process) notifies secondaries; workers do not.
            self.notifier = Notifier(self.generation.keyring)
        if self.role != "control":
            await self.server.start()

    async def stop(self) -> None:
        if self._geoip_task is not None:
            self._geoip_task.cancel()
        await self.server.stop()
        if self.notifier is not None:
            await self.notifier.close()
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
        """Re-read the generation (files, or the cluster's current one) and apply it."""
        try:
            source = self.reload_source() if self.reload_source is not None else None
            if source is None:
                source = read_source(self.options.config_path, self.options.zones_dir)
        except ConfigError as exc:
            return self._rejected(exc)
        return self.apply(source)

    def apply(self, source: GenerationSource) -> bool:
        """Validate and swap in a generation; on any error keep serving the previous one."""
        try:
            generation = self._load(source)
        except ConfigError as exc:
            return self._rejected(exc)
        retired_generation, self.generation = self.generation, generation
        if self.monitor is not None and generation.config is not None:
            self.monitor.reload(generation.config)
        retired = self.holder.current
        self.holder.current = generation.responder
        retired.retire()
        retired_generation.close()
        self.last_reload_error = None
        self.reloads += 1
        log.info("reload complete: generation %s", source.label)
        self._notify_secondaries(generation)
        for forward in self.on_generation:
            forward(source)
        for callback in self.on_reload:
            callback(True, [])
        return True

    def _rejected(self, exc: ConfigError) -> bool:
        self.reload_failures += 1
        self.last_reload_error = str(exc)
        log.error("reload rejected, still serving the previous configuration:\n%s", exc)
        for callback in self.on_reload:
            callback(False, str(exc).splitlines())
        return False

    def _load(self, source: GenerationSource | None) -> Loaded:
        return load_generation(
            self.options,
            self.health,
            source,
            self.counters,
            journal=self.journal,
            extension_stats=self.extension_stats,
        )

    def _notify_secondaries(self, generation: Loaded) -> None:
        """NOTIFY the configured secondaries of zones whose serial changed. Only the node's
        control plane (or its single process) has a notifier, so N workers send one NOTIFY."""
        transfer = generation.transfer
        if not generation.changed or not transfer.notify or self.notifier is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # reload() called outside the event loop (a test without a server)
        self.notifier.keyring = generation.keyring
        for version in generation.changed:
            log.info(
                "zone %s serial %d: notifying %d secondaries",
                version.origin,
                version.serial,
                len(transfer.notify),
            )
            self.notifier.notify(
                version, transfer.notify, transfer.notify_retries, transfer.notify_timeout
            )
