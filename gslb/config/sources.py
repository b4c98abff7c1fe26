"""Everything one generation is read from: zone files, gslb's own file, an octoDNS config.

`load_sources` is the one way in for `gslb dns`, `gslb check`, `gslb explain` and the probe
agents, so they all see the same zones, services and health targets. Every problem from every
source is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

import dns.zone

from ..errors import ConfigError, Mark, Reason
from .model import Check, Config, Datacenter
from .octodns import OctodnsData, load_octodns
from .service import Service
from .validate import config_warnings, load_config, load_config_text


@dataclass(frozen=True)
class Sources:
    """The validated inputs of one generation. `config` is None when only zones are served."""

    zones: Mapping[str, dns.zone.Zone]
    config: Config | None
    warnings: tuple[str, ...] = ()
    octodns_targets: frozenset[str] = field(default_factory=frozenset)


def load_sources(
    *,
    zones_dir: str | None,
    config_path: str | None = None,
    config_text: str | None = None,
    octodns_path: str | None = None,
    geoip_override: str | None = None,
) -> Sources:
    """Read and validate every source; raises ConfigError with every reason found.

    config_text: gslb's file as already read (a published generation); config_path then only
    names it in messages and anchors its relative paths."""
    from ..zone.loader import load_zones

    reasons: list[Reason] = []
    zones: dict[str, dns.zone.Zone] = {}
    if zones_dir is not None:
        try:
            zones.update(load_zones(zones_dir))
        except ConfigError as exc:
            reasons.extend(exc.reasons)
    octo: OctodnsData | None = None
    if octodns_path is not None:
        try:
            octo = load_octodns(octodns_path)
        except ConfigError as exc:
            reasons.extend(exc.reasons)
        if octo is not None:
            for origin, zone in octo.zones.items():
                if origin in zones:
                    reasons.append(
                        Reason(Mark(octodns_path, 0), origin, "zone also loaded from a zone file")
                    )
                zones[origin] = zone
    config: Config | None = None
    if config_path is not None or config_text is not None:
        # Services must lie in a served zone, when zones are given and loaded.
        given = zones_dir is not None or octodns_path is not None
        origins = set(zones) if given and not reasons else None
        try:
            if config_text is not None:
                config = load_config_text(
                    config_text,
                    config_path or "<config>",
                    zone_origins=origins,
                    geoip_override=geoip_override,
                    datacenters_required=octodns_path is None,
                )
            else:
                assert config_path is not None
                config = load_config(
                    config_path,
                    zone_origins=origins,
                    geoip_override=geoip_override,
                    datacenters_required=octodns_path is None,
                )
        except ConfigError as exc:
            reasons.extend(exc.reasons)
    geoip_path: str | None = None
    if config is None and geoip_override is not None:  # --geoip without gslb's own file
        geoip_path = str(Path(geoip_override).expanduser().resolve())
        if not Path(geoip_path).is_file():
            reasons.append(Reason(None, "--geoip", f"GeoIP database not found: {geoip_path}"))
    if reasons:
        raise ConfigError(reasons)
    if octo is None:
        notes = tuple(config_warnings(config)) if config is not None else ()
        return Sources(MappingProxyType(zones), config, notes)
    config = _merge(config, octo, geoip_path)
    targets = frozenset(octo.datacenters)
    notes = (
        *octo.warnings,
        *(w for w in config_warnings(config) if not any(f" {t} " in w for t in targets)),
    )
    return Sources(MappingProxyType(zones), config, notes, targets)


def _merge(config: Config | None, octo: OctodnsData, geoip_path: str | None) -> Config:
    """gslb's own settings (health, protections, geoip ...) over octoDNS's records."""
    if config is None:
        return Config(
            path=octo.path,
            datacenters=octo.datacenters,
            services=octo.services,
            geoip_path=geoip_path,
        )
    reasons: list[Reason] = []
    datacenters: dict[str, Datacenter] = dict(config.datacenters)
    for name, dc in octo.datacenters.items():
        if name in datacenters:
            reasons.append(
                Reason(datacenters[name].mark, f"datacenters.{name}", "also an octoDNS value")
            )
        datacenters[name] = replace(dc, check=_with_defaults(dc.check, config.octodns.check))
    services: dict[str, Service] = dict(config.services)
    for name, svc in octo.services.items():
        if name in services:
            reasons.append(
                Reason(
                    services[name].mark,
                    f"services[{name}]",
                    f"also a dynamic record in {octo.path}",
                )
            )
        services[name] = svc
    if reasons:
        raise ConfigError(reasons)
    return replace(
        config,
        datacenters=MappingProxyType(datacenters),
        services=MappingProxyType(services),
    )


def _with_defaults(check: Check | None, defaults: Check) -> Check | None:
    """The octoDNS healthcheck (protocol, port, path, host) with gslb's probe settings."""
    if check is None:
        return None
    base = Check(**{f.name: getattr(defaults, f.name) for f in fields(Check)})
    return replace(
        base,
        type=check.type,
        host=check.host,
        port=check.port,
        path=check.path,
        host_header=check.host_header,
        mark=check.mark,
    )
