"""Raw YAML -> validated Config, every problem reported at once.

The shapes are declared where the model is (model.py, service.py, and each owner's section);
this module reads the top level and checks what needs the whole file: datacenter names (and
names differing only in case), service names (valid DNS names inside a served zone, not
repeated), and that every value names a defined datacenter. Each problem is a Reason with the
file:line:column of the offending key and a dotted key path
(services[www.example.test].pools.eu.fallback); load_config raises one ConfigError at the end.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError, Mark, Reason
from .model import Config, Datacenter, HealthSettings, OctodnsSettings
from .schema import (
    At,
    Custom,
    Int,
    Invalid,
    MapOf,
    Report,
    Section,
    parse_into,
    setting,
    type_name,
)
from .service import Service, service_values
from .yaml_loader import MarkedDict, load_yaml_file, load_yaml_text, mark_of

# Top-level sections owned by other parts of gslb: accepted and passed through in Config.extra
# (still marked), parsed by their owners with the same framework.
PASS_THROUGH = (
    "dns",
    "rrl",
    "cookies",
    "acl",
    "admin",
    "proxy",
    "cluster",
    "tsig_keys",
    "transfer",
    "dnssec",
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _geoip(raw: object, at: At, report: Report) -> str | Invalid:
    if not isinstance(raw, str) or not raw.strip():
        return report.error(at, f"must be a file path, not {raw!r}")
    path = Path(raw).expanduser()
    resolved = str(path if path.is_absolute() else (at.base or Path.cwd()) / path)
    if not Path(resolved).is_file():
        return report.error(at, f"GeoIP database not found: {resolved}")
    return resolved


def _passed(raw: object, at: At, report: Report) -> object:
    return raw


_RAW = Custom(_passed, "a mapping")


@dataclass(frozen=True)
class TopLevel:
    """The file's top level as written. datacenters and services are read by name below."""

    geoip: str | None = setting(None, Custom(_geoip, "a GeoIP database path"))
    geoip_cache_size: int = setting(16384, Int(1, 10_000_000))
    datacenters: object = setting(None, _RAW)
    services: Mapping[str, object] = setting(MappingProxyType({}), MapOf(_RAW))
    health: HealthSettings = setting(HealthSettings(), Section(HealthSettings))
    octodns: OctodnsSettings = setting(OctodnsSettings(), Section(OctodnsSettings))
    dns: object = setting(None, _RAW)
    rrl: object = setting(None, _RAW)
    cookies: object = setting(None, _RAW)
    acl: object = setting(None, _RAW)
    admin: object = setting(None, _RAW)
    proxy: object = setting(None, _RAW)
    cluster: object = setting(None, _RAW)
    tsig_keys: object = setting(None, _RAW)
    transfer: object = setting(None, _RAW)
    dnssec: object = setting(None, _RAW)


def load_config(
    path: str,
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
    datacenters_required: bool = True,
) -> Config:
    """Load and validate a gslb config file; raises ConfigError carrying ALL reasons.

    zone_origins: lowercase FQDNs with trailing dot; when given, every service name must lie
    inside one of them. geoip_override (--geoip) replaces the file's `geoip:` key.
    datacenters_required False: the datacenters come from elsewhere (an octoDNS config).
    """
    raw = load_yaml_file(path)
    return validate_config(raw, path, zone_origins, geoip_override, datacenters_required)


def load_config_text(
    text: str,
    path: str = "<string>",
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
    datacenters_required: bool = True,
) -> Config:
    """Like load_config, from text (relative paths resolve against dirname(path))."""
    return validate_config(
        load_yaml_text(text, path), path, zone_origins, geoip_override, datacenters_required
    )


def validate_config(
    raw: object,
    path: str,
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
    datacenters_required: bool = True,
) -> Config:
    report = Report(path)
    config = _config(raw, path, report, zone_origins, geoip_override, datacenters_required)
    report.raise_if_any()
    return config


def normalize_name(name: str) -> str:
    """DNS name as the engine keys it: lowercase, trailing dot."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _config(
    raw: object,
    path: str,
    report: Report,
    zone_origins: Collection[str] | None,
    geoip_override: str | None,
    datacenters_required: bool,
) -> Config:
    base = Path(path).resolve().parent if not path.startswith("<") else Path.cwd()
    if raw is None:
        report.error(At(Mark(path, 1), ""), "config file is empty")
        return Config(path=path)
    if isinstance(raw, dict) and "providers" in raw and "zones" in raw:
        report.error(
            At(mark_of(raw), ""),
            "this is an octoDNS main config (providers, zones); give it with --octodns-config,"
            " and gslb's own settings (if any) with --config",
        )
        return Config(path=path)
    if isinstance(raw, dict) and _looks_like_octodns_zone(raw):
        report.error(
            At(mark_of(raw), ""),
            "this looks like an octoDNS zone file (records with `type:`); gslb reads octoDNS"
            " through its main config: gslb dns --octodns-config <octodns.yaml>",
        )
        return Config(path=path)
    if geoip_override and isinstance(raw, MarkedDict) and "geoip" in raw:
        raw = _without(raw, "geoip")  # --geoip wins: the file's key is not read
    top = parse_into(TopLevel, raw, At(mark_of(raw), "", base), report)
    if isinstance(top, Invalid):
        return Config(path=path)
    geoip_path = top.geoip
    if geoip_override:
        geoip_path = str(Path(geoip_override).expanduser().resolve())
        if not Path(geoip_path).is_file():
            report.reasons.append(
                Reason(None, "--geoip", f"GeoIP database not found: {geoip_path}")
            )
    assert isinstance(raw, dict)
    if "datacenters" not in raw and datacenters_required:
        report.error(At(mark_of(raw, "datacenters"), "datacenters"), "required key is missing")
    datacenters = _datacenters(raw, base, report)
    services = _services(raw, base, report, datacenters, zone_origins)
    extra = {k: raw[k] for k in PASS_THROUGH if k in raw}
    return Config(
        path=path,
        datacenters=MappingProxyType(datacenters),
        services=MappingProxyType(services),
        health=top.health,
        geoip_path=geoip_path,
        geoip_cache_size=top.geoip_cache_size,
        extra=MappingProxyType(extra),
        octodns=top.octodns,
    )


def _without(raw: MarkedDict, key: str) -> MarkedDict:
    copy = MarkedDict({k: v for k, v in raw.items() if k != key})
    copy.mark, copy.key_marks = raw.mark, raw.key_marks
    return copy


def _datacenters(raw: dict[str, object], base: Path, report: Report) -> dict[str, Datacenter]:
    """Each datacenter by name; names are unique ignoring case."""
    dcs = raw.get("datacenters")
    at = At(mark_of(raw, "datacenters"), "datacenters", base)
    if "datacenters" not in raw:
        return {}
    if not isinstance(dcs, dict):
        report.error(at, f"must be a mapping, not {type_name(dcs)}")
        return {}
    if not dcs:
        report.error(at, "must not be empty")
    out: dict[str, Datacenter] = {}
    lowered: dict[str, str] = {}
    for name, body in dcs.items():
        where = at.child(dcs, name)
        if not _NAME_RE.match(name):
            report.error(where, "datacenter names use letters, digits, '_', '.', '-'")
        if name.lower() in lowered:
            report.error(where, f"duplicate datacenter name (same as {lowered[name.lower()]!r})")
            continue
        lowered[name.lower()] = name
        dc = parse_into(Datacenter, body, where, report, name_field="name")
        if not isinstance(dc, Invalid):
            out[name] = dc
    return out


def _services(
    raw: dict[str, object],
    base: Path,
    report: Report,
    datacenters: Mapping[str, Datacenter],
    zone_origins: Collection[str] | None,
) -> dict[str, Service]:
    svcs = raw.get("services")
    if not isinstance(svcs, dict):
        return {}  # absent, or already reported by TopLevel
    # Names as written, so a service naming a broken datacenter reports only the datacenter's
    # own problem, not an extra "undefined datacenter".
    dcs = raw.get("datacenters")
    declared = set(dcs) if isinstance(dcs, dict) else set(datacenters)
    origins = [normalize_name(o) for o in zone_origins] if zone_origins is not None else None
    out: dict[str, Service] = {}
    for name, body in svcs.items():
        where = At(mark_of(svcs, name), f"services[{name}]", base)
        fqdn = _service_name(name, where, origins, report)
        if fqdn is None:
            continue
        if fqdn in out:
            first = out[fqdn].mark
            report.error(
                where,
                f"duplicate service name ({fqdn} is already defined"
                f" at line {first.line if first else '?'})",
            )
            continue
        before = len(report.reasons)
        named = At(where.mark, where.path, base, fqdn)
        svc = parse_into(Service, body, named, report, name_field="name")
        if not isinstance(svc, Invalid):
            _datacenter_refs(svc, where.path, declared, report)
            if len(report.reasons) == before:
                out[fqdn] = svc
    return out


def _service_name(name: str, at: At, origins: list[str] | None, report: Report) -> str | None:
    fqdn = normalize_name(name)
    labels = fqdn[:-1].split(".")
    if fqdn == "." or len(fqdn) > 254 or not all(_LABEL_RE.match(x) for x in labels):
        report.error(at, f"not a valid DNS name: {name!r}")
        return None
    if origins is not None and not any(fqdn == o or fqdn.endswith("." + o) for o in origins):
        zones = ", ".join(sorted(origins)) or "none loaded"
        report.error(at, f"service {fqdn} is outside every served zone ({zones})")
        return None
    return fqdn


def _datacenter_refs(svc: Service, path: str, declared: set[str], report: Report) -> None:
    """Every value names a defined datacenter, once per list, once across tiers."""
    seen_lists: dict[str, set[str]] = {}
    for rel, value in service_values(svc):
        where = At(value.mark, f"{path}.{rel}")
        if value.datacenter not in declared:
            report.error(where, f"undefined datacenter {value.datacenter!r}")
            continue
        names = seen_lists.setdefault(rel.rpartition("[")[0], set())
        if value.datacenter in names:
            report.error(where, f"duplicate datacenter {value.datacenter!r}")
        names.add(value.datacenter)
    earlier: set[str] = set()
    for i, tier in enumerate(svc.tiers):
        for value in tier:
            if value.datacenter in earlier:
                report.error(
                    At(value.mark, f"{path}.tiers[{i}]"),
                    f"datacenter {value.datacenter!r} is already in an earlier tier",
                )
        earlier.update(v.datacenter for v in tier)


def _looks_like_octodns_zone(top: dict[str, object]) -> bool:
    """Every top-level key is not gslb's, and some look like octoDNS records."""
    known = {"geoip", "geoip_cache_size", "datacenters", "services", "health", "octodns"}
    if any(k in known or k in PASS_THROUGH for k in top):
        return False
    for body in top.values():
        items = body if isinstance(body, list) else [body]
        if any(isinstance(i, dict) and "type" in i for i in items):
            return True
    return False


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but probably not meant (printed by `gslb check`, never fatal)."""
    warnings: list[str] = []
    used: set[str] = set()
    for name, svc in config.services.items():
        used.update(v.datacenter for _, v in service_values(svc))
        geo = any(r.geos for r in svc.rules) or svc.ordering == "geoproximity"
        if geo and not config.geoip_path:
            warnings.append(
                f"{name}: uses client location but no geoip database is configured"
                " (geo rules never match; geoproximity keeps the configured order)"
            )
    from ..health.checks import unchecked_targets  # the server's rule for unchecked targets

    unchecked = unchecked_targets(config)
    for name in config.datacenters:
        if name not in used:
            warnings.append(f"datacenter {name} is not used by any service")
        if name in unchecked:
            warnings.append(f"datacenter {name} has no check: it counts as up")
    return warnings


__all__ = [
    "ConfigError",
    "PASS_THROUGH",
    "TopLevel",
    "config_warnings",
    "load_config",
    "load_config_text",
    "normalize_name",
    "validate_config",
]
