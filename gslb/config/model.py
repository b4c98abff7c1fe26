"""Frozen configuration model shared by every part of gslb.

This file is the contract between the config validator, steering, health checking and the
DNS server. Extend it by adding fields with defaults; do not rename existing ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import ClassVar, Literal

from ..errors import Mark
from .schema import (
    At,
    Bool,
    Custom,
    Duration,
    Enum,
    FilePath,
    Float,
    Int,
    Invalid,
    IpAddress,
    ListOf,
    MapOf,
    Regex,
    Report,
    Scalar,
    Section,
    Str,
    required,
    setting,
)
from .service import Service
from .yaml_loader import mark_of

CheckType = Literal["http", "https", "tcp"]


def _headers(raw: object, at: At, report: Report) -> tuple[tuple[str, str], ...] | Invalid:
    parsed = MapOf(Scalar()).parse(raw, at, report)
    return parsed if isinstance(parsed, Invalid) else tuple(parsed.items())


def _timeout_below_interval(check: Check, report: Report, at: At, raw: object) -> Check | None:
    """gdnsd's rule: the timeout defaults to half the interval (at most 2 s), and a timeout
    that is not below the interval is an error."""
    if isinstance(raw, dict) and "timeout" not in raw:
        return replace(check, timeout=min(Check.timeout, check.interval / 2))
    if check.timeout >= check.interval:
        report.error(
            at.child(raw, "timeout"),
            f"timeout ({check.timeout:g}) must be less than interval ({check.interval:g})",
        )
        return None
    return None


@dataclass(frozen=True)
class Check:
    """An active health check of one target (a datacenter's entry point or a pool member).

    The one health-check model: `gslb dns`, the probe agents and octoDNS healthchecks all use
    it. The body is matched with `body_match` (a regular expression searched in the first
    64 KiB); the proxy's older spelling `expect_body` is reported as renamed.
    """

    type: CheckType = setting("http", Enum("http", "https", "tcp"))
    # address to connect to; default: the target's first address
    host: str | None = setting(None, Str())
    port: int | None = setting(None, Int(1, 65535))  # default: 80 for http, 443 for https
    path: str = setting("/", Str(pattern=r"^/", hint="must start with '/'"))
    host_header: str | None = setting(None, Str())  # Host header and, for https, SNI
    verify_tls: bool = setting(False, Bool())
    interval: float = setting(5.0, Duration(0.01, 3600))
    timeout: float = setting(2.0, Duration(0.001, 3600))
    # fraction of interval, spread so checks do not synchronise
    jitter: float = setting(0.1, Float(0, 0.99))
    rise: int = setting(2, Int(1, 100))  # consecutive successes to become up
    fall: int = setting(3, Int(1, 100))  # consecutive failures to become down
    expect_status: tuple[int, ...] = setting((200,), ListOf(Int(100, 599), min_len=1))
    body_match: str | None = setting(None, Regex())  # regular expression the body must match
    headers: tuple[tuple[str, str], ...] = setting((), Custom(_headers, "a mapping of headers"))
    mark: Mark | None = None

    __renamed__: ClassVar[Mapping[str, str]] = {"expect_body": "body_match"}
    __checks__: ClassVar[tuple[object, ...]] = (_timeout_below_interval,)


_FROM_OCTODNS = ("type", "host", "port", "path", "host_header")


def _octodns_check(check: Check, report: Report, at: At, raw: object) -> None:
    for key in _FROM_OCTODNS:
        if isinstance(raw, dict) and key in raw:
            report.error(at.child(raw, key), "comes from the record's octodns.healthcheck")


@dataclass(frozen=True)
class OctodnsCheck(Check):
    """octoDNS healthcheck values (protocol, host, path, port) plus what octoDNS leaves to the
    provider: interval, timeout, rise, fall, expected status, body, headers."""

    __checks__: ClassVar[tuple[object, ...]] = (_timeout_below_interval, _octodns_check)


@dataclass(frozen=True)
class OctodnsSettings:
    """The `octodns:` section: gslb-only settings for records read with --octodns-config."""

    check: Check = setting(Check(), Section(OctodnsCheck))


_CNAME_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _cname_target(raw: object, at: At, report: Report) -> str | Invalid:
    """`cname: cdn.example.net`: an absolute host name (the trailing dot is optional)."""
    if not isinstance(raw, str) or not raw.strip():
        return report.error(at, f"must be a host name, not {raw!r}")
    name = raw.strip().lower().rstrip(".") + "."
    labels = name[:-1].split(".")
    if len(name) > 254 or not all(_CNAME_LABEL.match(label) for label in labels):
        return report.error(at, f"not a host name: {raw!r}")
    return name


def _datacenter_checks(dc: Datacenter, report: Report, at: At, raw: object) -> Datacenter | None:
    if isinstance(raw, dict):
        addressed = "ipv4" in raw or "ipv6" in raw
        if "cname" in raw and addressed:
            report.error(at.child(raw, "cname"), "cname and ipv4/ipv6 are alternatives")
        elif not addressed and "cname" not in raw:
            report.error(at, "a datacenter needs at least one of ipv4, ipv6, cname")
    return replace(dc, region=dc.name) if not dc.region else None


@dataclass(frozen=True)
class Datacenter:
    name: str  # the mapping key
    region: str = setting("", Str())  # default: the name
    latitude: float = required(Float(-90, 90), placeholder=0.0)
    longitude: float = required(Float(-180, 180), placeholder=0.0)
    ipv4: tuple[str, ...] = setting((), ListOf(IpAddress(4), min_len=1, unique=True))
    ipv6: tuple[str, ...] = setting((), ListOf(IpAddress(6), min_len=1, unique=True))
    # Route 53 style: -99..99, grows (+) or shrinks (-) the catchment area
    bias: float = setting(0.0, Float(-99, 99))
    check: Check | None = setting(None, Section(Check))
    mark: Mark | None = None
    # seconds a recovered datacenter takes to reach its full share
    slow_start: float = setting(0.0, Duration(0, 7 * 86400))
    # requests/s it can take (0: undeclared); spillover uses headroom
    capacity: float = setting(0.0, Float(0, 1e12))
    # "manual": after going down, back only when an operator clears it
    failback: str = setting("auto", Enum("auto", "manual"))
    # a target that is a name (CDN): answered as a CNAME, no addresses
    cname: str | None = setting(None, Custom(_cname_target, "a host name"))

    __checks__: ClassVar[tuple[object, ...]] = (_datacenter_checks,)


def _agent_url(agent: ProbeAgent, report: Report, at: At, raw: object) -> ProbeAgent:
    return replace(agent, url=agent.url.rstrip("/"))


_URL_HINT = "must be an http:// or https:// URL"


@dataclass(frozen=True)
class ProbeAgent:
    region: str = required(Str())
    # base URL of `gslb probe`, e.g. http://127.0.0.1:8101
    url: str = required(
        Str(pattern=r"^https?://[^/\s]+", hint="must be an http:// or https:// URL")
    )
    mark: Mark | None = None

    __checks__: ClassVar[tuple[object, ...]] = (_agent_url,)


def _quorum(raw: object, at: At, report: Report) -> str | float | Invalid:
    if isinstance(raw, str) and raw in ("majority", "all", "any"):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 < raw <= 1:
        return float(raw)
    return report.error(at, f"must be majority, all, any or a fraction 0 < q <= 1, not {raw!r}")


def _unique_regions(
    health: HealthSettings, report: Report, at: At, raw: object
) -> HealthSettings | None:
    """One agent per region: a second one is reported and left out."""
    items = raw.get("agents") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        return None
    seen: set[str] = set()
    dropped: set[int] = set()
    for i, item in enumerate(items):
        region = item.get("region") if isinstance(item, dict) else None
        if not isinstance(region, str):
            continue
        if region in seen:
            where = At(mark_of(item, "region"), f"{at.path}.agents[{i}].region", at.base)
            report.error(where, f"duplicate agent region {region!r}")
            dropped.add(i)
        seen.add(region)
    if not dropped:
        return None
    kept: list[ProbeAgent] = []
    for agent in health.agents:
        if agent.region not in {a.region for a in kept}:
            kept.append(agent)
    return replace(health, agents=tuple(kept))


@dataclass(frozen=True)
class HealthSettings:
    agents: tuple[ProbeAgent, ...] = setting((), ListOf(Section(ProbeAgent)))
    # "majority", "all", "any", or a fraction 0 < q <= 1 ("more than q of fresh reports")
    quorum: str | float = setting("majority", Custom(_quorum, "majority, all, any or q"))
    stale_after: float = setting(10.0, Duration(0.01, 86400))
    # overrides and last known health (warm start); relative to the config file
    state_file: str | None = setting(None, FilePath())
    # region name used when gslb dns runs the checks itself
    local_region: str = setting("local", Str())
    # bearer token the probe agents require and the DNS nodes send
    token: str | None = setting(None, Str())

    __checks__: ClassVar[tuple[object, ...]] = (_unique_regions,)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. Sections owned by other modules hang off `extra`."""

    path: str
    datacenters: Mapping[str, Datacenter] = field(default_factory=lambda: MappingProxyType({}))
    # service FQDN (lowercase, trailing dot) -> Service
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    health: HealthSettings = field(default_factory=HealthSettings)
    geoip_path: str | None = None
    geoip_cache_size: int = 16384  # bounded LRU of client networks -> Location
    # Sections parsed by their owners (dns, rrl, cookies, acl, admin, proxy): still-marked YAML.
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    octodns: OctodnsSettings = field(default_factory=OctodnsSettings)
