"""`gslb check` and `gslb explain`: validate configuration, and narrate one steering decision.

Both build exactly the objects `gslb dns` builds (load_config, Locator, SteeringEngine), so
what they print is what the server would do.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import random
import sys
from types import MappingProxyType
from typing import Any, TextIO

from ..errors import ConfigError, Reason


def add_commands(subparsers: Any) -> None:
    """Register `check` and `explain` on an argparse subparsers object."""
    check = subparsers.add_parser(
        "check",
        help="validate the config file (and zones) without serving",
        description="Validate the GSLB config and zone files; exit 1 on any problem.",
    )
    check.add_argument("--config", required=True, help="gslb YAML config file")
    check.add_argument("--zones", help="directory of zone files (services must lie inside them)")
    check.add_argument("--geoip", help="GeoIP database (overrides the config's geoip key)")
    check.set_defaults(func=run_check)

    explain = subparsers.add_parser(
        "explain",
        help="show how a GSLB name is answered for a client",
        description="Run the steering decision for NAME and client, narrating every step.",
    )
    explain.add_argument("name", metavar="NAME", help="GSLB service name, e.g. www.example.test")
    explain.add_argument("--config", required=True, help="gslb YAML config file")
    explain.add_argument("--zones", help="directory of zone files")
    explain.add_argument("--geoip", help="GeoIP database (overrides the config's geoip key)")
    explain.add_argument("--client", required=True, help="client (or resolver) IP address")
    explain.add_argument("--subnet", help="EDNS Client Subnet, e.g. 198.51.100.0/24 (wins)")
    explain.add_argument(
        "--down", action="append", default=[], metavar="DC", help="simulate a failed datacenter"
    )
    explain.add_argument(
        "--up", action="append", default=[], metavar="DC", help="simulate a healthy datacenter"
    )
    explain.add_argument("--seed", type=int, help="seed the random picks (weighted policy)")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(func=run_explain)


def _print_reasons(exc: ConfigError, out: TextIO) -> None:
    for reason in exc.reasons:
        print(f"error: {reason}", file=out)


def _zone_origins(zones_dir: str) -> list[str]:
    from ..zone.loader import load_zones  # the DNS side owns zone loading

    zones = load_zones(zones_dir)
    origins = []
    for origin in zones:
        text = str(origin).lower()
        origins.append(text if text.endswith(".") else text + ".")
    return origins


def _delegated_services(zones_dir: str, services: Any) -> list[Reason]:
    from ..zone import ZoneSet, load_zones
    from ..zone.checks import services_under_delegations

    return services_under_delegations(ZoneSet(load_zones(zones_dir), list(services)), services)


# Sections validated by their owners: (module, function returning (settings, [Reason])).
SECTION_PARSERS = {
    "dns": ("gslb.dns.settings", "parse_dns"),
    "rrl": ("gslb.dns.rrl", "parse_rrl"),
    "cookies": ("gslb.dns.cookies", "parse_cookies"),
    "acl": ("gslb.dns.acl", "parse_acl"),
    "dnssec": ("gslb.dnssec.settings", "parse_top_level"),
}


def _section_reasons(extra: Any) -> list[Reason]:
    """Ask each owner to validate its pass-through section, so `check` sees everything."""
    reasons: list[Reason] = []
    for section, (module_name, func_name) in SECTION_PARSERS.items():
        if section not in extra:
            continue
        try:
            parse = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError):
            continue  # that component is not part of this build
        _, found = parse(extra[section])
        reasons.extend(found)
    return reasons


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..config.validate import config_warnings, load_config
    from ..geo.locate import Locator

    out = out or sys.stdout
    reasons: list[Reason] = []
    origins: list[str] | None = None
    if args.zones:
        try:
            origins = _zone_origins(args.zones)
        except ConfigError as exc:
            reasons.extend(exc.reasons)
    config = None
    try:
        config = load_config(args.config, origins, args.geoip)
    except ConfigError as exc:
        reasons.extend(exc.reasons)
    if config is not None:
        reasons.extend(_section_reasons(config.extra))
    if config is not None and args.zones and origins is not None:
        reasons.extend(_delegated_services(args.zones, config.services))
    if config is not None and config.geoip_path:
        try:
            Locator(config.geoip_path, 1).close()
        except ConfigError as exc:
            reasons.extend(exc.reasons)
    if reasons:
        for r in reasons:
            print(f"error: {r}", file=out)
        print(f"{len(reasons)} problem(s) found", file=out)
        return 1
    assert config is not None
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=out)
    zones = f", {len(origins)} zone(s): {', '.join(origins)}" if origins is not None else ""
    print(
        f"ok: {args.config}: {len(config.datacenters)} datacenter(s), "
        f"{len(config.services)} service(s){zones}",
        file=out,
    )
    return 0


def run_explain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..config.validate import load_config, normalize_name
    from ..geo.locate import Locator
    from ..health.snapshot import HealthHolder, HealthSnapshot, TargetHealth
    from .engine import SteeringEngine
    from .explain import format_text

    out = out or sys.stdout
    try:
        origins = _zone_origins(args.zones) if args.zones else None
        config = load_config(args.config, origins, args.geoip)
        locator = Locator(config.geoip_path, 1024) if config.geoip_path else None
    except ConfigError as exc:
        _print_reasons(exc, out)
        return 1
    try:
        name = normalize_name(args.name)
        service = config.services.get(name)
        if service is None:
            known = ", ".join(config.services) or "none"
            print(f"error: {name} is not a GSLB service (services: {known})", file=out)
            return 2
        try:
            if args.subnet:
                net = ipaddress.ip_network(args.subnet, strict=False)
            else:
                net = ipaddress.ip_network(args.client)
            ipaddress.ip_address(args.client)
        except ValueError as exc:
            print(f"error: {exc}", file=out)
            return 2
        for dc in (*args.down, *args.up):
            if dc not in config.datacenters:
                print(f"error: unknown datacenter {dc!r}", file=out)
                return 2
        states = {dc: TargetHealth("down", "simulated: --down") for dc in args.down}
        states.update({dc: TargetHealth("up", "simulated: --up") for dc in args.up})
        snapshot = HealthSnapshot(1 if states else 0, MappingProxyType(states))
        rng = random.Random(args.seed) if args.seed is not None else None
        engine = SteeringEngine(config, locator, HealthHolder(snapshot), rng=rng)
        report = engine.explain(service, net.network_address.packed, net.prefixlen)
        report["client"]["source"] = args.client
        if args.json:
            print(json.dumps(report, indent=2), file=out)
        else:
            print(format_text(report), file=out)
        return 0
    finally:
        if locator is not None:
            locator.close()
