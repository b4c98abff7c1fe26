"""Frozen configuration model shared by every part of gslb.

This file is the contract between the config validator, steering, health checking and the
DNS server. Extend it by adding fields with defaults; do not rename existing ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ..errors import Mark

CheckType = Literal["http", "https", "tcp"]


@dataclass(frozen=True)
class Check:
    """An active health check of one target (a datacenter's entry point or a pool member)."""

    type: CheckType = "http"
    host: str | None = None  # address to connect to; default: the target's first address
    port: int | None = None  # default: 80 for http, 443 for https
    path: str = "/"
    host_header: str | None = None  # Host header and, for https, SNI
    verify_tls: bool = False
    interval: float = 5.0
    timeout: float = 2.0
    jitter: float = 0.1  # fraction of interval, spread so checks do not synchronise
    rise: int = 2  # consecutive successes to become up
    fall: int = 3  # consecutive failures to become down
    expect_status: tuple[int, ...] = (200,)
    body_match: str | None = None  # regular expression the body must match
    headers: tuple[tuple[str, str], ...] = ()
    mark: Mark | None = None


@dataclass(frozen=True)
class Datacenter:
    name: str
    region: str
    latitude: float
    longitude: float
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    bias: float = 0.0  # Route 53 style: -99..99, grows (+) or shrinks (-) the catchment area
    check: Check | None = None
    mark: Mark | None = None
    slow_start: float = 0.0  # seconds a recovered datacenter takes to reach its full share
    capacity: float = 0.0  # requests/s it can take (0: undeclared); spillover uses headroom
    failback: str = "auto"  # "manual": after going down, back only when an operator clears it
    cname: str | None = None  # a target that is a name (CDN): answered as a CNAME, no addresses


@dataclass(frozen=True)
class ProbeAgent:
    region: str
    url: str  # base URL of `gslb probe`, e.g. http://127.0.0.1:8101
    mark: Mark | None = None


@dataclass(frozen=True)
class HealthSettings:
    agents: tuple[ProbeAgent, ...] = ()
    # "majority", "all", "any", or a fraction 0 < q <= 1 ("more than q of fresh reports")
    quorum: str | float = "majority"
    stale_after: float = 10.0
    state_file: str | None = None  # overrides and last known health (warm start)
    local_region: str = "local"  # region name used when gslb dns runs the checks itself
    token: str | None = None  # bearer token the probe agents require and the DNS nodes send


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. Sections owned by other modules hang off `extra`."""

    path: str
    datacenters: Mapping[str, Datacenter] = field(default_factory=lambda: MappingProxyType({}))
    # service FQDN (lowercase, trailing dot) -> Service object from gslb.steering
    services: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    health: HealthSettings = field(default_factory=HealthSettings)
    geoip_path: str | None = None
    geoip_cache_size: int = 16384  # bounded LRU of client networks -> Location
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
