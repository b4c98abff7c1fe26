"""Wiring for a DNS node's generation: read the keys once, publish DNSKEY/CDS/CDNSKEY in the
loaded zones, and build the signers once the zones are indexed."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from pathlib import Path

import dns.name
import dns.zone

from ..clock import SYSTEM_CLOCK, Clock
from .cache import SignatureCache
from .keys import DnssecKey, load_key_dir
from .settings import DnssecSettings
from .signer import Signers, ZoneData, build_signers, key_records, publish_keys

log = logging.getLogger("gslb.dnssec")


def resolve_key_dir(key_dir: str, config_path: str | None) -> str:
    """A relative key_dir from the config file is relative to that file's directory."""
    path = Path(key_dir).expanduser()
    if not path.is_absolute() and config_path:
        path = Path(config_path).resolve().parent / path
    return str(path)


def publish_zone_keys(
    zones: Mapping[str, dns.zone.Zone], key_dir: str, settings: DnssecSettings, now: float
) -> dict[dns.name.Name, list[DnssecKey]]:
    """Read every key in key_dir (raises ConfigError) and put the key records of each zone
    we serve into its apex. Keys for zones we do not serve are ignored."""
    keys = load_key_dir(key_dir)
    served: dict[dns.name.Name, list[DnssecKey]] = {}
    for zone in zones.values():
        origin = zone.origin
        assert origin is not None  # loaded zones always have one
        zone_keys = keys.get(origin)
        if not zone_keys:
            continue
        records = key_records(origin, zone_keys, now, settings)
        if records:
            publish_keys(zone, records)
        served[origin] = zone_keys
        log.info(
            "zone %s: DNSSEC keys %s",
            origin.to_text(),
            ", ".join(f"{k.tag}/{k.algorithm}/{k.role}/{k.state(now).value}" for k in zone_keys),
        )
    return served


def make_signers(
    zones: Mapping[dns.name.Name, ZoneData],
    keys: Mapping[dns.name.Name, Collection[DnssecKey]],
    settings: DnssecSettings,
    services: Collection[str],
    clock: Clock = SYSTEM_CLOCK,
    now: float | None = None,
    cache: SignatureCache | None = None,
) -> Signers | None:
    signers = build_signers(zones, keys, settings, clock, services, now, cache)
    return signers if signers else None


def next_key_event(keys: Mapping[dns.name.Name, Collection[DnssecKey]], now: float) -> float:
    """When a key's state changes next (the generation must be rebuilt then); inf if never."""
    times = [t for zone_keys in keys.values() for k in zone_keys if (t := k.next_change(now))]
    return min(times, default=math.inf)
