"""`gslb check` and `gslb explain`: validate configuration, and narrate one steering decision.

Both build exactly the objects `gslb dns` builds (load_config, Locator, SteeringEngine), so
what they print is what the server would do.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
from types import MappingProxyType
from typing import Any, TextIO

from ..errors import ConfigError


def add_commands(subparsers: Any) -> None:
    """Register `check` and `explain` on an argparse subparsers object."""
    check = subparsers.add_parser(
        "check",
        help="validate the config file (and zones) without serving",
        description="Validate the GSLB config and zone files; exit 1 on any problem.",
    )
    check.add_argument("--config", help="gslb YAML config file")
    check.add_argument("--octodns-config", metavar="FILE", help="octoDNS main config (YAML)")
    check.add_argument("--zones", help="directory of zone files (services must lie inside them)")
    check.add_argument("--geoip", help="GeoIP database (overrides the config's geoip key)")
    check.set_defaults(func=run_check)

    explain = subparsers.add_parser(
        "explain",
        help="show how a GSLB name is answered for a client",
        description="Run the steering decision for NAME and client, narrating every step.",
    )
    explain.add_argument("name", metavar="NAME", help="GSLB service name, e.g. www.example.test")
    explain.add_argument("--config", help="gslb YAML config file")
    explain.add_argument("--octodns-config", metavar="FILE", help="octoDNS main config (YAML)")
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
    explain.add_argument(
        "--admin",
        metavar="URL",
        help="ask a running DNS node (its admin URL): its live health, loads and round-trip"
        " times, instead of simulating from --config",
    )
    explain.set_defaults(func=run_explain)


def _print_reasons(exc: ConfigError, out: TextIO) -> None:
    for reason in exc.reasons:
        print(f"error: {reason}", file=out)


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from ..check import run_check as check  # the composition of every loader

    return check(args, out)


def simulated_snapshot(config: Any, down: list[str], up: list[str]) -> Any:
    """The health `gslb explain` assumes: what the server's aggregation gives with no probe
    report yet (checked datacenters unknown, unchecked ones up: one rule for both), with
    --down/--up applied as the server applies operator overrides."""
    from ..health.aggregate import Override, aggregate
    from ..health.checks import targets_from_config, unchecked_targets
    from ..health.snapshot import HealthSnapshot

    overrides = {dc: Override("down", "simulated: --down") for dc in down}
    overrides.update({dc: Override("up", "simulated: --up") for dc in up})
    states = aggregate(
        {},
        0.0,
        1.0,
        "majority",
        overrides,
        {},
        targets=targets_from_config(config),
        unchecked=unchecked_targets(config),
    )
    return HealthSnapshot(1, MappingProxyType(states))


def explain_live(args: argparse.Namespace, out: TextIO) -> int:
    """`gslb explain --admin URL`: the running node narrates its own decision."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from .explain import format_text

    query = {"name": args.name, "client": args.client}
    if args.subnet:
        query["subnet"] = args.subnet
    url = f"{args.admin.rstrip('/')}/v1/explain?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            report = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            why = json.loads(raw).get("error", raw.decode(errors="replace"))
        except ValueError:
            why = raw.decode(errors="replace") or str(exc.reason)
        print(f"error: {why}", file=out)
        return 2 if exc.code in (400, 404) else 1
    except OSError as exc:
        print(f"error: cannot reach {args.admin}: {exc}", file=out)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_text(report), file=out)
    return 0


def run_explain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if getattr(args, "admin", None):
        if args.down or args.up or args.seed is not None:
            print("error: --down, --up and --seed simulate; a live node has real health", file=out)
            return 2
        return explain_live(args, out)
    return explain_offline(args, out)


def explain_offline(args: argparse.Namespace, out: TextIO) -> int:
    from ..config.sources import load_sources
    from ..config.validate import normalize_name
    from ..geo.locate import Locator
    from ..health.snapshot import HealthHolder
    from .engine import SteeringEngine
    from .explain import format_text

    try:
        config = load_sources(
            zones_dir=args.zones,
            config_path=args.config,
            octodns_path=args.octodns_config,
            geoip_override=args.geoip,
        ).config
        if config is None:
            print("error: give --config FILE, --octodns-config FILE or both", file=out)
            return 2
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
        snapshot = simulated_snapshot(config, args.down, args.up)
        rng = random.Random(args.seed) if args.seed is not None else None
        # The answer maps are built inline (the server builds them in a thread), so the
        # scope explain prints is the one the server gives once its maps are ready.
        engine = SteeringEngine(config, locator, HealthHolder(snapshot), rng=rng, scope_maps="sync")
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
