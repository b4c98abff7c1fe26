"""`gslb check`: validate exactly what `gslb dns` and `gslb proxy` would load, every section.

It builds the DNS node's generation with the node's own loader (zones, gslb's file, an octoDNS
config, the dns/rrl/cookies/acl/admin sections, the GeoIP database) and runs the proxy's own
parser on the `proxy:` section of every region, so a file that `check` passes is a file the
servers accept. It binds no socket and starts no probe.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .errors import ConfigError, Reason


def check_reasons(
    zones_dir: str | None,
    config_path: str | None,
    octodns_path: str | None,
    geoip: str | None,
) -> tuple[list[Reason], list[str], str]:
    """(problems, warnings, summary) of everything the servers would load."""
    from .config.sources import load_sources
    from .dns.node import NodeOptions, load_generation
    from .health.snapshot import HealthHolder

    reasons: list[Reason] = []
    warnings: list[str] = []
    summary = ""
    options = NodeOptions(
        zones_dir=zones_dir, config_path=config_path, octodns_path=octodns_path, geoip=geoip
    )
    try:
        generation = load_generation(options, HealthHolder())
    except ConfigError as exc:
        reasons.extend(exc.reasons)
    else:
        generation.close()
        sources = load_sources(
            zones_dir=zones_dir,
            config_path=config_path,
            octodns_path=octodns_path,
            geoip_override=geoip,
        )
        warnings.extend(sources.warnings)
        origins = sorted(sources.zones)
        config = sources.config
        parts = []
        if config is not None:
            parts.append(f"{len(config.datacenters)} datacenter(s)")
            parts.append(f"{len(config.services)} service(s)")
        if zones_dir is not None or octodns_path is not None:
            parts.append(f"{len(origins)} zone(s): {', '.join(origins)}")
        summary = ", ".join(parts)
    if config_path is not None:
        reasons.extend(proxy_reasons(config_path))
    return reasons, warnings, summary


def proxy_reasons(config_path: str) -> list[Reason]:
    """What `gslb proxy --config FILE --region R` would say, for every region R."""
    from .config.yaml_loader import load_yaml_file
    from .proxy.config import settings_from_data

    try:
        raw = load_yaml_file(config_path)
    except ConfigError:
        return []  # already reported by the DNS side's loader
    if not isinstance(raw, dict) or "proxy" not in raw:
        return []
    proxy = raw["proxy"]
    regions = proxy.get("regions") if isinstance(proxy, dict) else None
    names = list(regions) if isinstance(regions, dict) and regions else [""]
    reasons: list[Reason] = []
    for region in names:
        try:
            settings_from_data(raw, str(region))
        except ConfigError as exc:
            for reason in exc.reasons:
                if reason not in reasons and not (region == "" and reason.key == "proxy.regions"):
                    reasons.append(reason)
    return reasons


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config_path = getattr(args, "config", None)
    octodns_path = getattr(args, "octodns_config", None)
    if config_path is None and octodns_path is None:
        print("error: give --config FILE, --octodns-config FILE or both", file=out)
        return 2
    reasons, warnings, summary = check_reasons(args.zones, config_path, octodns_path, args.geoip)
    if reasons:
        for r in reasons:
            print(f"error: {r}", file=out)
        print(f"{len(reasons)} problem(s) found", file=out)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=out)
    files = ", ".join(p for p in (config_path, octodns_path) if p)
    print(f"ok: {files}: {summary}", file=out)
    return 0
