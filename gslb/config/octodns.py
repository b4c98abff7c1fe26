"""octoDNS configurations served as they are.

The real `octodns` package reads and validates the main config (`providers`, `zones`) and every
zone YAML through its own Manager, YamlProvider, Zone and Record model: gslb accepts what
`octodns-validate` accepts, and rejects the rest with octoDNS's reasons, file and line.

What comes out (OctodnsData) is gslb's own vocabulary:
- static records of every type -> dnspython zones (SOA and NS made up when octoDNS has none);
- dynamic A/AAAA records -> Services: pools of values with weight and status, fallback chains,
  rules (subnets and geos, in order, catch-all last), and the record's own `values` as the
  final, never health-checked backup (octoDNS's "default pool");
- every health-checked value (status obey) -> a target (a Datacenter named after the address)
  whose Check comes from the record's `octodns.healthcheck` (host, path, port, protocol), probed
  by the probe agents like any datacenter. Values with status up/down are never probed.

Only zones whose sources are YAML providers are read; other providers (targets, remote
sources) are named in the warnings and never contacted.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.zone

from ..errors import ConfigError, Mark, Reason
from .model import Check, Datacenter
from .service import Pool, PoolValue, Rule, Service, Status

log = logging.getLogger("gslb.octodns")

DEFAULT_POOL = "values"  # the record's own values: octoDNS's backup/default pool
# octoDNS types that are not DNS record types: provider features gslb cannot serve.
NOT_DNS = ("URLFWD",)
_CONTEXT = re.compile(r"^(?P<file>.*?), line (?P<line>\d+), column (?P<col>\d+)$")
# octoDNS ends many messages with "<, or at> FILE, line N, column M".
_AT_CONTEXT = re.compile(r"(?:,| at) (?P<file>[^,]+), line (?P<line>\d+), column (?P<col>\d+)")


@dataclass(frozen=True)
class OctodnsData:
    """Zones, services and health targets read from one octoDNS main config."""

    path: str
    zones: Mapping[str, dns.zone.Zone] = field(default_factory=lambda: MappingProxyType({}))
    datacenters: Mapping[str, Datacenter] = field(default_factory=lambda: MappingProxyType({}))
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()


def load_octodns(path: str, check_defaults: Check | None = None) -> OctodnsData:
    """Read an octoDNS main config (and its zone YAMLs); raises ConfigError with octoDNS's
    reasons. check_defaults supplies what octoDNS does not say (interval, rise, fall ...)."""
    notes: list[str] = []
    # octoDNS narrates every step under its own logger names and logs a traceback before it
    # raises; gslb reports the exception itself (and says what it loaded).
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                zones = _populated_zones(path, notes)
            except ConfigError:
                raise
            except Exception as exc:  # octoDNS's own exception types: its reasons, file, line
                raise ConfigError(octodns_reasons(exc, path)) from None
    finally:
        logging.disable(logging.NOTSET)
    notes.extend(f"octoDNS: {w.message}" for w in caught)
    builder = _Builder(path, check_defaults or Check(), notes)
    for records in zones.values():
        for record in records:
            if record._type in ("A", "AAAA"):
                builder.addresses.setdefault(str(record.fqdn).lower(), []).append(record)
    for name, records in sorted(zones.items()):
        builder.zone(name, records)
    if builder.reasons:
        raise ConfigError(builder.reasons)
    return OctodnsData(
        path=path,
        zones=MappingProxyType(builder.zones),
        datacenters=MappingProxyType(builder.targets),
        services=MappingProxyType(builder.services),
        warnings=tuple(notes),
    )


def octodns_reasons(exc: BaseException, path: str) -> list[Reason]:
    """An octoDNS exception as gslb reasons, keeping octoDNS's words, file and line."""
    from octodns.record.exception import ValidationError

    if isinstance(exc, ValidationError):
        mark = _context_mark(exc.context) or Mark(path, 0)
        name = str(exc.fqdn)
        return [Reason(mark, name, str(r)) for r in exc.reasons] or [Reason(mark, name, str(exc))]
    problem_mark = getattr(exc, "problem_mark", None)  # YAML errors
    if problem_mark is not None:
        mark = Mark(str(problem_mark.name), problem_mark.line + 1, problem_mark.column + 1)
        problem = getattr(exc, "problem", None) or str(exc)
        return [Reason(mark, "", f"octoDNS: {problem}")]
    text = str(exc) or type(exc).__name__
    found = _AT_CONTEXT.search(text)
    if found:
        mark = Mark(found["file"], int(found["line"]), int(found["col"]))
        return [Reason(mark, "", f"octoDNS: {text[: found.start()]}{text[found.end() :]}")]
    context = getattr(exc, "context", None)
    mark = _context_mark(context) or Mark(path, 0)
    return [Reason(mark, "", f"octoDNS {type(exc).__name__}: {text}")]


def _context_mark(context: object) -> Mark | None:
    if not isinstance(context, str):
        return None
    m = _CONTEXT.match(context)
    return Mark(m["file"], int(m["line"]), int(m["col"])) if m else None


# -- reading through octoDNS ----------------------------------------------------------------------


def _populated_zones(path: str, notes: list[str]) -> dict[str, list[Any]]:
    """zone name -> octoDNS records, read exactly as `octodns-validate` reads them."""
    from octodns.provider.yaml import YamlProvider

    if not Path(path).is_file():
        raise ConfigError(Reason(Mark(path, 0), "", "octoDNS config not found"))
    manager = _serving_manager()(path)
    for provider_id, provider in manager.providers.items():
        if isinstance(provider, YamlProvider):
            provider.directory = _yaml_directory(provider.directory, path)
        elif isinstance(provider, _Unread):
            notes.append(
                f"octoDNS provider {provider_id} ({provider.class_name}) is not a YAML provider:"
                " gslb neither builds nor contacts it"
            )
    manager.validate_configs()  # octodns-validate's checks, every zone (raises on the first)
    zones: dict[str, Any] = {}
    zone_configs: Mapping[str, Any] = manager.config["zones"]
    for name, config in zone_configs.items():
        if config.get("alias"):
            continue
        zone = manager.get_zone(name)
        lenient = bool(config.get("lenient", False))
        sources = [manager.providers[s] for s in config.get("sources") or []]
        yaml_sources = [s for s in sources if isinstance(s, YamlProvider)]
        for source in sources:
            if not isinstance(source, YamlProvider):
                notes.append(f"zone {name}: source {source.id} is not a YAML provider: skipped")
        if not yaml_sources:
            notes.append(f"zone {name}: no YAML provider among its sources: not served")
            continue
        for source in yaml_sources:
            source.populate(zone, lenient=lenient)
        names = [
            *manager.global_processors,
            *(config.get("processors") or []),
            *manager.global_post_processors,
        ]
        for processor_name in names:
            processor = manager.processors[processor_name]
            try:
                zone = processor.process_source_zone(zone, sources=yaml_sources, lenient=lenient)
            except TypeError as exc:  # processors older than octoDNS's `lenient` argument
                if "lenient" not in str(exc):
                    raise
                zone = processor.process_source_zone(zone, sources=yaml_sources)
        zone.validate(lenient=lenient)
        zones[name] = zone
    for name, config in zone_configs.items():
        target = config.get("alias")
        if target and target in zones:  # an alias zone serves a copy of its target's records
            zone = manager.get_zone(name)
            for record in zones[target].records:
                zone.add_record(record.copy(zone=zone), lenient=True)
            zones[name] = zone
    if not zones:
        raise ConfigError(
            Reason(Mark(path, 0), "zones", "no zone has a YAML provider among its sources")
        )
    return {name: sorted(z.records, key=lambda r: (r.fqdn, r._type)) for name, z in zones.items()}


class _Unread:
    """Stands in for a provider gslb does not read (a target, a remote or plugin source): it is
    never built, so neither its package nor its secrets are needed to serve the zones."""

    SUPPORTS: frozenset[str] = frozenset()

    def __init__(self, provider_id: str, class_name: str) -> None:
        self.id = provider_id
        self.class_name = class_name

    def list_zones(self) -> list[str]:
        return []

    def populate(self, zone: object, target: bool = False, lenient: bool = False) -> bool:
        return False


def _serving_manager() -> Any:
    """octoDNS's Manager, building only its YAML providers; everything else about the config
    (zones, processors, validation of every record) is octoDNS's own."""
    from importlib import import_module

    from octodns.manager import Manager
    from octodns.provider.yaml import YamlProvider

    def is_yaml(class_name: object) -> bool:
        if not isinstance(class_name, str) or "." not in class_name:
            return False
        module_name, _, attr = class_name.rpartition(".")
        try:
            cls = getattr(import_module(module_name), attr, None)
        except Exception:  # a plugin that is not installed, or fails to import
            return False
        return isinstance(cls, type) and issubclass(cls, YamlProvider)

    class ServingManager(Manager):  # type: ignore[misc]
        def _config_providers(self, providers_config: Any) -> Any:
            # Without a class, octoDNS's own error says so.
            read = {
                n: c
                for n, c in providers_config.items()
                if "class" not in c or is_yaml(c.get("class"))
            }
            providers = super()._config_providers(read)
            for name, config in providers_config.items():
                if name not in read:
                    providers[name] = _Unread(name, str(config.get("class")))
            return providers

    return ServingManager


def _yaml_directory(directory: str, config_path: str) -> str:
    """octoDNS resolves `directory` against the working directory (where octodns-sync runs,
    usually the repository root). Also try beside the config file and its parent, so gslb can
    be pointed at a repository from anywhere."""
    if os.path.isabs(directory) or os.path.isdir(directory):
        return directory
    here = Path(config_path).resolve().parent
    for base in (here, here.parent):
        candidate = base / directory
        if candidate.is_dir():
            return str(candidate)
    return directory


# -- octoDNS records -> gslb zones, services and targets ------------------------------------------


class _Builder:
    def __init__(self, path: str, check_defaults: Check, notes: list[str]) -> None:
        self.path = path
        self.check_defaults = check_defaults
        self.notes = notes
        self.reasons: list[Reason] = []
        self.zones: dict[str, dns.zone.Zone] = {}
        self.services: dict[str, Service] = {}
        self.targets: dict[str, Datacenter] = {}
        self._target_keys: dict[tuple[str, Check | None], str] = {}
        # A/AAAA records of every served zone by owner name (ALIAS targets)
        self.addresses: dict[str, list[Any]] = {}

    def zone(self, name: str, records: list[Any]) -> None:
        origin = dns.name.from_text(name)
        zone = dns.zone.Zone(origin, relativize=False)
        dynamic: dict[str, list[Any]] = {}
        aliases: list[Any] = []
        for record in records:
            rtype = str(record._type)
            if getattr(record, "ignored", False):
                continue
            if rtype in NOT_DNS:
                self.notes.append(f"{record.fqdn} {rtype}: not a DNS record type, not served")
                continue
            if rtype == "ALIAS":
                aliases.append(record)
                continue
            if getattr(record, "dynamic", None) and rtype in ("A", "AAAA"):
                dynamic.setdefault(str(record.fqdn).lower(), []).append(record)
                continue
            if getattr(record, "dynamic", None):
                self.notes.append(
                    f"{record.fqdn} {rtype}: dynamic {rtype} is not steered; its values are served"
                )
            self._add_static(zone, record)
        for fqdn, recs in dynamic.items():
            steered, *rest = sorted(recs, key=lambda r: r._type)
            self.services[fqdn] = self._service(steered)
            for record in rest:  # one steered family per name: the other is served as written
                self.notes.append(
                    f"{record.fqdn} {record._type}: gslb steers one address family per name"
                    f" ({steered._type}); the {record._type} values are served as static data"
                )
                self._add_static(zone, record)
        for record in aliases:
            self._flatten_alias(zone, record)
        self._ensure_soa_ns(zone, origin)
        self.zones[name.lower()] = zone

    def _add_static(self, zone: dns.zone.Zone, record: Any) -> None:
        ttl, rdatas = _presentation(record)
        try:
            rdtype = dns.rdatatype.from_text(str(record._type))
            owner = dns.name.from_text(str(record.fqdn))
            node = zone.find_node(owner, create=True)
            rdataset = node.find_rdataset(dns.rdataclass.IN, rdtype, create=True)
            for text in rdatas:
                rdata = dns.rdata.from_text(
                    dns.rdataclass.IN, rdtype, text, origin=zone.origin, relativize=False
                )
                rdataset.add(rdata, ttl)
        except (dns.exception.DNSException, ValueError) as exc:
            self.reasons.append(
                Reason(
                    _record_mark(record, self.path),
                    str(record.fqdn),
                    f"{record._type} cannot be served: {exc}",
                )
            )

    def _flatten_alias(self, zone: dns.zone.Zone, record: Any) -> None:
        """ALIAS: the target's static A/AAAA served at the name, when gslb serves the target."""
        target = str(record.value).lower()
        found = [r for r in self.addresses.get(target, []) if not getattr(r, "dynamic", None)]
        for other in found:
            self._add_static(zone, _Renamed(other, str(record.fqdn), int(record.ttl)))
        if not found:
            self.notes.append(
                f"{record.fqdn} ALIAS {target}: the target has no static A/AAAA in a served"
                " zone; not served"
            )

    def _ensure_soa_ns(self, zone: dns.zone.Zone, origin: dns.name.Name) -> None:
        """octoDNS does not manage SOA; make one (and NS, when the zone has none)."""
        apex = zone.find_node(origin, create=True)
        ns = apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS)
        if ns is None:
            ns = apex.find_rdataset(dns.rdataclass.IN, dns.rdatatype.NS, create=True)
            ns.add(dns.rdata.from_text("IN", "NS", f"ns1.{origin}"), 3600)
            self.notes.append(f"zone {origin}: no root NS record; serving NS ns1.{origin}")
        if apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA) is None:
            mname = next(iter(ns)).target
            serial = int(time.time()) & 0xFFFFFFFF
            soa = dns.rdata.from_text(
                "IN", "SOA", f"{mname} hostmaster.{origin} {serial} 3600 600 604800 300"
            )
            apex.find_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA, create=True).add(soa, 3600)

    def _target(self, record: Any, address: str, check: Check | None) -> str:
        """The health target for one value: shared by every use with the same check."""
        key = (address, check)
        name = self._target_keys.get(key)
        if name is not None:
            return name
        name = address
        n = 1
        while name in self.targets:
            n += 1
            name = f"{address}~{n}"  # URL-safe: names appear in admin API paths
        self._target_keys[key] = name
        v6 = ":" in address
        self.targets[name] = Datacenter(
            name=name,
            region=str(record.fqdn).rstrip(".") or name,
            latitude=0.0,
            longitude=0.0,
            ipv4=() if v6 else (address,),
            ipv6=(address,) if v6 else (),
            check=check,
            mark=_record_mark(record, self.path),
        )
        return name

    def _check(self, record: Any, address: str) -> Check:
        protocol = str(record.healthcheck_protocol).lower()
        base = self.check_defaults
        return Check(
            type="tcp" if protocol == "tcp" else "https" if protocol == "https" else "http",
            host=None,  # the value itself
            port=int(record.healthcheck_port),
            path=str(record.healthcheck_path or "/"),
            host_header=record.healthcheck_host(value=address),
            verify_tls=base.verify_tls,
            interval=base.interval,
            timeout=base.timeout,
            jitter=base.jitter,
            rise=base.rise,
            fall=base.fall,
            expect_status=base.expect_status,
            body_match=base.body_match,
            headers=base.headers,
            mark=_record_mark(record, self.path),
        )

    def _service(self, record: Any) -> Service:
        fqdn = str(record.fqdn).lower()
        mark = _record_mark(record, self.path)
        raw_pools = sorted(record.dynamic.pools.items())
        # Health-checked values first, so values whose health is never used (forced status,
        # the backup values) share their address's target instead of adding one.
        for _, pool in raw_pools:
            for value in pool.data["values"]:
                if str(value.get("status") or "obey") == "obey":
                    address = _address(value["value"])
                    self._target(record, address, self._check(record, address))

        def unprobed(address: str) -> str:
            for (known, _), name in self._target_keys.items():
                if known == address:
                    return name
            return self._target(record, address, None)

        pools: dict[str, Pool] = {}
        for pool_name, pool in raw_pools:
            values = []
            for value in pool.data["values"]:
                address = _address(value["value"])
                status = _status(str(value.get("status") or "obey"))
                if status == "obey":
                    target = self._target(record, address, self._check(record, address))
                else:
                    target = unprobed(address)
                values.append(PoolValue(target, int(value.get("weight") or 1), status, mark))
            pools[pool_name] = Pool(pool_name, tuple(values), pool.data.get("fallback"), mark)
        default = DEFAULT_POOL
        while default in pools:
            default += "-default"
        backup = [PoolValue(unprobed(_address(v)), 1, "obey", mark) for v in _values(record)]
        pools[default] = Pool(default, tuple(backup), None, mark)
        rules = tuple(
            Rule(
                pool=str(rule.data["pool"]),
                geos=tuple(str(g) for g in rule.data.get("geos") or ()),
                subnets=tuple(_network(s) for s in rule.data.get("subnets") or ()),
                mark=mark,
            )
            for rule in record.dynamic.rules
        )
        return Service(
            name=fqdn,
            on_all_down="fallback",
            policy=("weighted",),
            types=(str(record._type),),
            ttl=int(record.ttl),
            count=1,
            unknown_is="up",
            rules=rules,
            pools=MappingProxyType(pools),
            fallback_pool=default,
            mark=mark,
        )


class _Renamed:
    """A record seen under another owner name (ALIAS flattening)."""

    def __init__(self, record: Any, fqdn: str, ttl: int) -> None:
        self._record = record
        self.fqdn = fqdn
        self.ttl = ttl
        self._type = record._type

    def to_rrset(self) -> Any:
        return _RenamedRrset(self.ttl, _presentation(self._record)[1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._record, name)


def _status(text: str) -> Status:
    return "up" if text == "up" else "down" if text == "down" else "obey"


@dataclass(frozen=True)
class _RenamedRrset:
    ttl: int
    rdatas: list[str]


def _presentation(record: Any) -> tuple[int, list[str]]:
    """(TTL, RDATA in presentation format) of a record, as octoDNS renders it."""
    to_rrset = getattr(record, "to_rrset", None)
    if to_rrset is not None:
        rrset = to_rrset()
        return int(rrset.ttl), [str(text) for text in rrset.rdatas]
    _, ttl, _, rdatas = record.rrs  # octoDNS before Record.to_rrset
    return int(ttl), [str(text) for text in rdatas]


def _values(record: Any) -> Iterable[Any]:
    values = getattr(record, "values", None)
    if values is not None:
        return list(values)
    return [record.value]


def _address(value: Any) -> str:
    import ipaddress

    return str(ipaddress.ip_address(str(value)))


def _network(text: Any) -> Any:
    import ipaddress

    return ipaddress.ip_network(str(text), strict=False)


def _record_mark(record: Any, path: str) -> Mark:
    return _context_mark(getattr(record, "context", None)) or Mark(path, 0)
