"""Frozen model of a GSLB service (built by gslb.config.validate, read by the engine).

The vocabulary follows octoDNS dynamic records where it fits: pools of values (a value names
a datacenter) with weight and status, pool fallback chains, and rules matching geos/subnets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ..errors import Mark

Status = Literal["up", "down", "obey"]
OnAllDown = Literal["fail_open", "fallback", "nodata", "servfail"]
UnknownIs = Literal["up", "down"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Steps that order the candidates; at most one of these per service.
ORDERING_STEPS = ("geoproximity", "weighted", "sticky", "geolocation", "latency")
POLICY_STEPS = ("failover", *ORDERING_STEPS)


@dataclass(frozen=True)
class PoolValue:
    """One candidate: a datacenter with a weight (1-100) and a forced or observed status."""

    datacenter: str
    weight: int = 1
    status: Status = "obey"
    mark: Mark | None = None


@dataclass(frozen=True)
class Pool:
    name: str
    values: tuple[PoolValue, ...]
    fallback: str | None = None  # pool used when every value here is down
    mark: Mark | None = None
    ttl: int | None = None  # answers from this pool use this TTL instead of the service's


@dataclass(frozen=True)
class Rule:
    """Send matching clients to `pool`. No geos and no subnets: the catch-all."""

    pool: str
    geos: tuple[str, ...] = ()  # octoDNS style: "EU", "NA-US", "NA-US-CA"
    subnets: tuple[Network, ...] = ()
    mark: Mark | None = None
    # `pools: [uk, fra, iad]`: a failover chain over shared pools (then `pool` is the first).
    pools: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        return not self.geos and not self.subnets


@dataclass(frozen=True)
class Service:
    """A GSLB name: how candidates are chosen, ordered and answered."""

    name: str  # lowercase FQDN with trailing dot
    on_all_down: OnAllDown
    # Ordered policy steps between the health filter and count (see POLICY_STEPS).
    policy: tuple[str, ...] = ("geoproximity",)
    types: tuple[str, ...] = ("A", "AAAA")
    ttl: int = 30
    count: int = 1
    unknown_is: UnknownIs = "up"
    # Exactly one candidate source: `datacenters`, `tiers` (failover) or `rules` over `pools`.
    datacenters: tuple[PoolValue, ...] = ()
    tiers: tuple[tuple[PoolValue, ...], ...] = ()
    rules: tuple[Rule, ...] = ()
    pools: Mapping[str, Pool] = field(default_factory=lambda: MappingProxyType({}))
    fallback_pool: str | None = None  # served when on_all_down == "fallback"
    sticky_ipv4_prefix: int = 24
    sticky_ipv6_prefix: int = 56
    mark: Mark | None = None
    slow_start: float | None = None  # seconds; overrides each datacenter's slow_start
    # Clients of a down or draining nearest datacenter spread over the k nearest healthy
    # ones by headroom (0: all go to the next nearest).
    spillover: int = 0
    # policy latency: measurements older than this are ignored (seconds)
    latency_max_age: float = 120.0

    @property
    def ordering(self) -> str | None:
        for step in self.policy:
            if step in ORDERING_STEPS:
                return step
        return None

    @property
    def failover(self) -> bool:
        return "failover" in self.policy
