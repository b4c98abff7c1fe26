"""`gslb publish` and `gslb health override --etcd`: write the fleet's intent to etcd.

Publish validates exactly as a node loads (`gslb.dns.node.load_generation`, the same checks as
`gslb check`) and writes nothing when any file is bad.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ..errors import ConfigError
from ..health.aggregate import Override
from ..health.snapshot import HealthHolder
from .etcd import EtcdClient, EtcdUnavailable, parse_endpoints
from .generation import GenerationSource, read_source
from .store import ClusterStore


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish",
        help="validate config and zones, then publish them to every node as one generation",
        description="Validate like `gslb check`, then write one new generation (config and "
        "zones) to etcd in a single transaction. Nodes started with --etcd apply it within a "
        "second. A bad file is refused with file:line and nothing is written.",
    )
    p.add_argument("--config", required=True, help="gslb YAML config file")
    p.add_argument("--zones", required=True, help="directory of <origin>.zone files")
    p.add_argument("--etcd", required=True, metavar="URL[,URL...]", help="etcd endpoints")
    p.add_argument("--etcd-prefix", default="/gslb/", help="key prefix (default /gslb/)")
    p.add_argument("--geoip", help="GeoIP database to validate against (overrides the config)")
    p.set_defaults(func=cmd_publish)


def validate(args: argparse.Namespace) -> GenerationSource:
    """Raises ConfigError with every reason (file:line) found."""
    from ..dns.node import NodeOptions, load_generation

    source = read_source(args.config, args.zones, absolute=True)
    options = NodeOptions(zones_dir=args.zones, config_path=args.config, geoip=args.geoip)
    load_generation(options, HealthHolder(), source).close()
    return source


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        source = validate(args)
    except ConfigError as exc:
        for reason in exc.reasons:
            print(f"error: {reason}", file=sys.stderr)
        print(
            f"gslb publish: {len(exc.reasons)} problem(s) found; nothing published",
            file=sys.stderr,
        )
        return 1
    try:
        endpoints = parse_endpoints(args.etcd)
    except ValueError as exc:
        print(f"gslb publish: --etcd: {exc}", file=sys.stderr)
        return 2

    async def publish() -> GenerationSource:
        client = EtcdClient(endpoints)
        try:
            return await ClusterStore(client, args.etcd_prefix).publish(source)
        finally:
            await client.close()

    try:
        published = asyncio.run(publish())
    except EtcdUnavailable as exc:
        print(f"gslb publish: etcd unavailable, nothing published: {exc}", file=sys.stderr)
        return 1
    print(f"published generation {published.number} ({published.digest}) to {args.etcd}")
    return 0


def override_in_etcd(args: argparse.Namespace) -> int:
    """`gslb health override TARGET --down|--up|--clear --etcd URLS`."""
    try:
        endpoints = parse_endpoints(args.etcd)
    except ValueError as exc:
        print(f"gslb health override: --etcd: {exc}", file=sys.stderr)
        return 2
    from ..steering.ramp import parse_duration

    try:
        if getattr(args, "drain", None):
            parse_duration(args.drain)
    except ValueError as exc:
        print(f"gslb health override: --drain: {exc}", file=sys.stderr)
        return 2

    async def store() -> str | None:
        client = EtcdClient(endpoints)
        try:
            cluster = ClusterStore(client, args.etcd_prefix)
            view = await cluster.view()
            known = await _datacenters(cluster, view.number)
            if known is not None and args.target not in known:
                return f"unknown target {args.target!r} (datacenters: {', '.join(sorted(known))})"
            override = None
            drain = parse_duration(args.drain) if getattr(args, "drain", None) else 0.0
            if drain:
                override = Override("down", args.reason.strip(), time.time(), drain)
            elif args.mode != "none":
                override = Override(args.mode, args.reason.strip(), time.time())
            await cluster.set_override(args.target, override)
            return None
        finally:
            await client.close()

    try:
        error = asyncio.run(store())
    except EtcdUnavailable as exc:
        print(f"gslb health override: etcd unavailable, nothing changed: {exc}", file=sys.stderr)
        return 1
    if error is not None:
        print(f"gslb health override: {error}", file=sys.stderr)
        return 1
    what = "cleared" if args.mode == "none" else args.mode
    print(f"{args.target}: override {what} in etcd; every node applies it within a second")
    return 0


async def _datacenters(cluster: ClusterStore, number: int) -> set[str] | None:
    if not number:
        return None
    source = await cluster.generation(number)
    if source is None or source.config_text is None:
        return None
    from ..config.yaml_loader import load_yaml_text

    try:
        raw = load_yaml_text(source.config_text, source.config_path or "<config>")
    except ConfigError:
        return None
    datacenters = raw.get("datacenters") if isinstance(raw, dict) else None
    return set(datacenters) if isinstance(datacenters, dict) else None
