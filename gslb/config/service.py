"""Frozen model of a GSLB service, declared with the schema framework (built from gslb's YAML by
gslb.config.validate and from octoDNS records by gslb.config.octodns, read by the steering
engine).

The vocabulary follows octoDNS dynamic records where it fits: pools of values (a value names
a datacenter) with weight and status, pool fallback chains, and rules matching geos/subnets.
The declarations check each key's shape; the checks at the end of this file check what a
service means on its own (pool references, fallback loops, rule order, policy against candidate
source). What needs the rest of the file (are the datacenters defined?) is checked by
gslb.config.validate.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import ClassVar, Literal

from ..errors import Mark
from .schema import (
    INVALID,
    At,
    Cidr,
    Custom,
    Duration,
    Enum,
    Int,
    Invalid,
    ListOf,
    MapOf,
    Optional,
    Report,
    Section,
    Str,
    parse_into,
    required,
    setting,
    type_name,
)
from .yaml_loader import mark_of

Status = Literal["up", "down", "obey"]
OnAllDown = Literal["fail_open", "fallback", "nodata", "servfail"]
UnknownIs = Literal["up", "down"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Steps that order the candidates; at most one of these per service.
ORDERING_STEPS = ("geoproximity", "weighted", "sticky", "geolocation", "latency")
POLICY_STEPS = ("failover", *ORDERING_STEPS)
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
_GEO_RE = re.compile(r"^([A-Z]{2})(-([A-Z]{2})(-([A-Z0-9]{1,3}))?)?$")


@dataclass(frozen=True)
class PoolValue:
    """One candidate: a datacenter with a weight (1-100) and a forced or observed status.
    Written as a datacenter name, or {value: name, weight: N, status: up|down|obey}."""

    datacenter: str = required(Str(), key="value", placeholder="")
    weight: int = setting(1, Int(1, 100))
    status: Status = setting("obey", Enum("up", "down", "obey"))
    mark: Mark | None = None


def _value(raw: object, at: At, report: Report) -> PoolValue | Invalid:
    if isinstance(raw, str):
        if not raw.strip():
            return report.error(at, "must not be empty")
        return PoolValue(raw, 1, "obey", at.mark)
    value = parse_into(PoolValue, raw, at, report)
    if isinstance(value, Invalid):
        return value
    return replace(value, mark=mark_of(raw, "value") or at.mark)


class _ValueKind(Custom[PoolValue]):
    indexed = True  # values[1], values[0].weight


VALUE = _ValueKind(_value, "a datacenter name or {value, weight, status}")
VALUES = ListOf(VALUE, min_len=1, single=False)


def _tiers(raw: object, at: At, report: Report) -> tuple[tuple[PoolValue, ...], ...] | Invalid:
    """A list of tiers; a tier is a list of values (or one value)."""
    if not isinstance(raw, list) or not raw:
        return report.error(at, "must be a non-empty list of lists of datacenters")
    tiers: list[tuple[PoolValue, ...]] = []
    for i, tier in enumerate(raw):
        where = at.child(raw, i)
        if isinstance(tier, list) and not tier:
            report.error(where, "a tier must not be empty")
            continue
        items = tier if isinstance(tier, list) else [tier]
        values = []
        for j, item in enumerate(items):
            item_at = At(mark_of(items, j) if items is tier else where.mark, f"{where.path}[{j}]")
            value = _value(item, item_at, report)
            if not isinstance(value, Invalid):
                values.append(value)
        if values:
            tiers.append(tuple(values))
    return tuple(tiers)


@dataclass(frozen=True)
class Pool:
    name: str = ""  # the mapping key
    values: tuple[PoolValue, ...] = required(VALUES, placeholder=())
    fallback: str | None = setting(None, Str())  # pool used when every value here is down
    mark: Mark | None = None
    # answers from this pool use this TTL instead of the service's
    ttl: int | None = setting(None, Int(0, 604800))


def _geo(raw: object, at: At, report: Report) -> str | Invalid:
    code = raw.strip().upper() if isinstance(raw, str) else ""
    m = _GEO_RE.match(code)
    if not m or m.group(1) not in CONTINENTS:
        return report.error(
            at,
            f"invalid geo {raw!r} (continent like EU, continent-country like NA-US, or NA-US-CA)",
        )
    return code


@dataclass(frozen=True)
class Rule:
    """Send matching clients to `pool`. No geos and no subnets: the catch-all."""

    pool: str = setting("", Str())  # `pool` or `pools` (checked below)
    # octoDNS style: "EU", "NA-US", "NA-US-CA"
    geos: tuple[str, ...] = setting((), ListOf(Custom(_geo, "a geo code"), min_len=1))
    subnets: tuple[Network, ...] = setting((), ListOf(Cidr(strict=True), min_len=1))
    mark: Mark | None = None
    # `pools: [uk, fra, iad]`: a failover chain over shared pools (then `pool` is the first).
    pools: tuple[str, ...] = setting((), ListOf(Str(), min_len=1, single=False, unique=True))

    __checks__: ClassVar[tuple[object, ...]] = ()  # filled below

    @property
    def catch_all(self) -> bool:
        return not self.geos and not self.subnets


def _rule_pool(rule: Rule, report: Report, at: At, raw: object) -> Rule | Invalid | None:
    """Exactly one of `pool` and `pools`; with a chain, `pool` is its first pool."""
    d = raw if isinstance(raw, dict) else {}
    if "pool" in d and "pools" in d:
        return report.error(at.child(d, "pools"), "pool and pools are alternatives")
    if "pool" not in d and "pools" not in d:
        return report.error(at, "a rule needs pool (or pools, a failover chain)")
    if rule.pools:
        return replace(rule, pool=rule.pools[0])
    return None if rule.pool else INVALID


Rule.__checks__ = (_rule_pool,)


@dataclass(frozen=True)
class Sticky:
    ipv4_prefix: int = setting(24, Int(0, 32))
    ipv6_prefix: int = setting(56, Int(0, 128))


def _types(raw: object, at: At, report: Report) -> tuple[str, ...] | Invalid:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        return report.error(at, "must not be empty")
    out: list[str] = []
    for i, item in enumerate(items):
        where = At(mark_of(raw, i) if items is raw else at.mark, at.path)
        up = item.upper() if isinstance(item, str) else ""
        if up not in ("A", "AAAA"):
            report.error(where, f"record type must be A or AAAA, not {item!r}")
        elif up in out:
            report.error(where, f"duplicate record type {up}")
        else:
            out.append(up)
    return tuple(out) or ("A", "AAAA")


def _policy(raw: object, at: At, report: Report) -> tuple[str, ...] | Invalid:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        return report.error(at, "must not be empty")
    out: list[str] = []
    ok = True
    for i, step in enumerate(items):
        where = At(mark_of(raw, i) if items is raw else at.mark, at.path)
        if not isinstance(step, str):
            report.error(where, f"must be a string, not {type_name(step)} {step!r}")
            ok = False
        elif step not in POLICY_STEPS:
            choices = ", ".join(POLICY_STEPS)
            report.error(where, f"unknown policy step {step!r} (expected: {choices})")
            ok = False
        elif step in out:
            report.error(where, f"duplicate policy step {step!r}")
            ok = False
        else:
            out.append(step)
    ordering = [s for s in out if s in ORDERING_STEPS]
    if len(ordering) > 1:
        report.error(at, f"at most one of {', '.join(ORDERING_STEPS)} (got {', '.join(ordering)})")
        ok = False
    if "failover" in out and out[0] != "failover":
        report.error(at, "failover must be the first step")
        ok = False
    return tuple(out) if ok else INVALID


_POLICY_HINT = f"one or more of: {', '.join(POLICY_STEPS)}"


@dataclass(frozen=True)
class LatencySettings:
    """`latency: {max_age: 2m}` for the latency policy: older measurements are ignored."""

    max_age: float = setting(120.0, Duration(1, 86400))


@dataclass(frozen=True)
class Service:
    """A GSLB name: how candidates are chosen, ordered and answered."""

    name: str = ""  # lowercase FQDN with trailing dot (the mapping key)
    on_all_down: OnAllDown = required(
        Enum("fail_open", "fallback", "nodata", "servfail"), placeholder="fail_open"
    )
    # Ordered policy steps between the health filter and count (see POLICY_STEPS).
    policy: tuple[str, ...] = required(Custom(_policy, _POLICY_HINT), placeholder=("geoproximity",))
    types: tuple[str, ...] = setting(("A", "AAAA"), Custom(_types, "A, AAAA or both"))
    ttl: int = setting(30, Int(0, 604800))
    count: int = setting(1, Int(1, 64))
    unknown_is: UnknownIs = setting("up", Enum("up", "down"))
    # Exactly one candidate source: `datacenters`, `tiers` (failover) or `rules` over `pools`.
    datacenters: tuple[PoolValue, ...] = setting((), VALUES)
    tiers: tuple[tuple[PoolValue, ...], ...] = setting((), Custom(_tiers, "a list of tiers"))
    rules: tuple[Rule, ...] = setting((), ListOf(Section(Rule), min_len=1, single=False))
    pools: Mapping[str, Pool] = setting(
        MappingProxyType({}), MapOf(Section(Pool, name_field="name"))
    )
    fallback_pool: str | None = setting(None, Str())  # served when on_all_down == "fallback"
    sticky: Sticky = setting(Sticky(), Section(Sticky))
    mark: Mark | None = None
    # seconds; overrides each datacenter's slow_start
    slow_start: float | None = setting(None, Optional(Duration(0, 7 * 86400)))
    # Clients of a down or draining nearest datacenter spread over the k nearest healthy
    # ones by headroom (0: all go to the next nearest).
    spillover: int = setting(0, Int(0, 16))
    latency: LatencySettings = setting(LatencySettings(), Section(LatencySettings))

    @property
    def ordering(self) -> str | None:
        for step in self.policy:
            if step in ORDERING_STEPS:
                return step
        return None

    @property
    def failover(self) -> bool:
        return "failover" in self.policy

    @property
    def latency_max_age(self) -> float:
        return self.latency.max_age

    @property
    def sticky_ipv4_prefix(self) -> int:
        return self.sticky.ipv4_prefix

    @property
    def sticky_ipv6_prefix(self) -> int:
        return self.sticky.ipv6_prefix

    # A service with any problem is left out whole (it must not half-work).
    __all_or_nothing__: ClassVar[bool] = True
    __checks__: ClassVar[tuple[object, ...]] = ()  # filled below


# -- what a service means on its own ------------------------------------------------------------


def _sources(svc: Service, report: Report, at: At, raw: object) -> None:
    d = raw if isinstance(raw, dict) else {}
    sources = [k for k in ("datacenters", "tiers", "rules") if k in d]
    if not sources:
        report.error(at, "a service needs one of: datacenters, tiers, rules")
    elif len(sources) > 1:
        report.error(at.child(d, sources[1]), f"{' and '.join(sources)} are alternatives; use one")
    if svc.on_all_down == "fallback" and "fallback_pool" not in d and "on_all_down" in d:
        report.error(
            at.child(d, "on_all_down"), "on_all_down: fallback needs fallback_pool (a pool name)"
        )
    if svc.fallback_pool is not None:
        if "on_all_down" in d and svc.on_all_down != "fallback":
            report.error(
                at.child(d, "fallback_pool"),
                "fallback_pool is only used with on_all_down: fallback",
            )
        if svc.fallback_pool not in svc.pools:
            report.error(at.child(d, "fallback_pool"), f"undefined pool {svc.fallback_pool!r}")
    if "policy" in d and not isinstance(_policy(d["policy"], at, Report()), Invalid):
        policy = svc.policy
        if "failover" in policy and "tiers" not in d:
            report.error(at.child(d, "policy"), "failover needs tiers")
        if "tiers" in d and "failover" not in policy:
            report.error(at.child(d, "tiers"), "tiers are only used by the failover policy")
        if "geolocation" in policy and "rules" not in d:
            report.error(at.child(d, "policy"), "geolocation needs rules")
        if "sticky" in d and "sticky" not in policy:
            report.error(at.child(d, "sticky"), "sticky settings need the sticky policy")
        if "latency" in d and "latency" not in policy:
            report.error(at.child(d, "latency"), "needs the latency policy")
        if svc.spillover and "geoproximity" not in policy:
            report.error(at.child(d, "spillover"), "spillover needs geoproximity")


def _fallbacks(svc: Service, report: Report, at: At, raw: object) -> None:
    """Fallback references exist, and no chain loops."""
    pools_raw = raw.get("pools") if isinstance(raw, dict) else None
    pools_at = at.child(raw, "pools")
    pools = svc.pools

    def fallback_at(name: str) -> At:
        body = pools_raw.get(name) if isinstance(pools_raw, dict) else None
        return pools_at.child(pools_raw, name).child(body, "fallback")

    for name, pool in pools.items():
        if pool.fallback is not None and pool.fallback not in pools:
            report.error(fallback_at(name), f"undefined pool {pool.fallback!r}")
    reported: set[frozenset[str]] = set()
    for name in pools:
        chain = [name]
        nxt = pools[name].fallback
        while nxt is not None and nxt in pools and nxt not in chain:
            chain.append(nxt)
            nxt = pools[nxt].fallback
        if nxt is not None and nxt in chain:
            loop = chain[chain.index(nxt) :]
            if frozenset(loop) not in reported:
                reported.add(frozenset(loop))
                last = loop[-1]
                report.error(fallback_at(last), f"fallback loop: {' -> '.join([*loop, nxt])}")


_KINDS = ("subnets only", "subnets and geos", "geos only", "catch-all")


def _rules(svc: Service, report: Report, at: At, raw: object) -> None:
    """Rule pools exist; a geo or subnet is used once; subnets > subnets+geos > geos >
    catch-all; exactly one catch-all, at the end."""
    d = raw if isinstance(raw, dict) else {}
    rules_raw = d.get("rules")
    if "rules" not in d or not isinstance(rules_raw, list):
        return
    rules_at = at.child(d, "rules")
    if "pools" not in d:
        report.error(rules_at, "rules need pools")
    seen: dict[object, int] = {}
    by_mark = {rule.mark: rule for rule in svc.rules}
    last_kind = -1
    catch_alls = 0
    for i, item in enumerate(rules_raw):
        if not isinstance(item, dict):
            continue
        rule_at = rules_at.child(rules_raw, i)
        pool = item.get("pool")
        if isinstance(pool, str) and "pools" in d and pool not in svc.pools:
            report.error(rule_at.child(item, "pool"), f"undefined pool {pool!r}")
        chain = item.get("pools")
        for j, name in enumerate(chain if isinstance(chain, list) else []):
            if isinstance(name, str) and name not in svc.pools:
                where = At(mark_of(chain, j) or rule_at.mark, f"{rule_at.path}.pools")
                report.error(where, f"undefined pool {name!r}")
        rule = by_mark.get(rule_at.mark)
        for key, what in (("geos", "geo"), ("subnets", "subnet")):
            values: tuple[object, ...] = getattr(rule, key) if rule is not None else ()
            items = item.get(key)
            for j, value in enumerate(values):
                where = At(mark_of(items, j) or rule_at.mark, f"{rule_at.path}.{key}")
                if value in seen:
                    report.error(where, f"{what} {value} already used by rule #{seen[value]}")
                else:
                    seen[value] = i
        has_geo, has_sub = "geos" in item, "subnets" in item
        kind = 0 if has_sub and not has_geo else 1 if has_sub else 2 if has_geo else 3
        if kind == 3:
            catch_alls += 1
            if catch_alls > 1:
                report.error(rule_at, "only one catch-all rule (no geos, no subnets) allowed")
        if kind < last_kind:
            report.error(
                rule_at,
                f"rule order: a rule with {_KINDS[kind]} must come before rules with "
                f"{_KINDS[last_kind]} (subnets > subnets+geos > geos > catch-all)",
            )
        last_kind = max(last_kind, kind)
    if catch_alls == 0:
        report.error(rules_at, "rules must end with a catch-all rule (one with only `pool`)")


def _pool_usage(svc: Service, report: Report, at: At, raw: object) -> None:
    used: set[str] = set()
    todo = [p for r in svc.rules for p in (r.pools or (r.pool,))]
    if svc.fallback_pool:
        todo.append(svc.fallback_pool)
    while todo:
        name = todo.pop()
        if name in used or name not in svc.pools:
            continue
        used.add(name)
        fallback = svc.pools[name].fallback
        if fallback:
            todo.append(fallback)
    pools_raw = raw.get("pools") if isinstance(raw, dict) else None
    for name in svc.pools:
        if name not in used:
            report.error(
                at.child(raw, "pools").child(pools_raw, name),
                "unused pool (no rule, fallback or fallback_pool refers to it)",
            )


Service.__checks__ = (_sources, _fallbacks, _rules, _pool_usage)


def service_values(svc: Service) -> list[tuple[str, PoolValue]]:
    """Every value of a service with the key path it was written at."""
    out: list[tuple[str, PoolValue]] = []
    out.extend((f"datacenters[{i}]", v) for i, v in enumerate(svc.datacenters))
    for i, tier in enumerate(svc.tiers):
        out.extend((f"tiers[{i}][{j}]", v) for j, v in enumerate(tier))
    for name, pool in svc.pools.items():
        out.extend((f"pools.{name}.values[{j}]", v) for j, v in enumerate(pool.values))
    return out
