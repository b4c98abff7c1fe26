"""Pure policy steps: each is a function of (candidates, client location, health view).

No I/O, no clocks, no shared state. Randomness comes in as an argument. The engine chains
these steps; `gslb explain` narrates the same calls.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from ..config.model import Datacenter
from ..geo.locate import Location
from ..health.snapshot import HealthSnapshot
from .service import Pool, PoolValue, Rule, Service

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Candidate:
    """A datacenter being considered, with the weight and status its pool value gave it."""

    dc: Datacenter
    weight: float = 1  # a slow start or drain scales it by the datacenter's share
    status: str = "obey"

    @property
    def name(self) -> str:
        return self.dc.name


# -- health ---------------------------------------------------------------------------------


def is_up(value_status: str, state: str, unknown_is: str) -> bool:
    """A pool value's status wins over the observed state; `unknown` means what the service says."""
    if value_status == "up":
        return True
    if value_status == "down":
        return False
    if state == "unknown":
        return unknown_is == "up"
    return state == "up"


def health_filter(
    candidates: Sequence[Candidate], health: HealthSnapshot, unknown_is: str
) -> list[Candidate]:
    return [c for c in candidates if is_up(c.status, health.state(c.name), unknown_is)]


def fail_open(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Everything is down: ignore health checks, but keep values an operator forced down."""
    not_forced = [c for c in candidates if c.status != "down"]
    return not_forced or list(candidates)


# -- candidate selection ----------------------------------------------------------------------


def pool_candidates(pool: Pool, dcs: Mapping[str, Datacenter]) -> list[Candidate]:
    return [_cand(v, dcs) for v in pool.values]


def values_candidates(
    values: Sequence[PoolValue], dcs: Mapping[str, Datacenter]
) -> list[Candidate]:
    return [_cand(v, dcs) for v in values]


def _cand(v: PoolValue, dcs: Mapping[str, Datacenter]) -> Candidate:
    return Candidate(dcs[v.datacenter], v.weight, v.status)


def rule_chain(service: Service, rule: Rule) -> list[Pool]:
    """A rule's pools in failover order: its `pools` list, then the last one's fallbacks; or
    its `pool` and that pool's fallbacks."""
    if not rule.pools:
        return pool_chain(service, rule.pool)
    chain = [service.pools[name] for name in rule.pools[:-1]]
    seen = {p.name for p in chain}
    return chain + [p for p in pool_chain(service, rule.pools[-1]) if p.name not in seen]


def pool_chain(service: Service, first: str) -> list[Pool]:
    """The pool and its fallbacks in order (validation forbids loops; stop on one anyway)."""
    chain: list[Pool] = []
    seen: set[str] = set()
    name: str | None = first
    while name is not None and name not in seen:
        seen.add(name)
        pool = service.pools[name]
        chain.append(pool)
        name = pool.fallback
    return chain


def service_datacenter_names(service: Service) -> list[str]:
    names: list[str] = []
    values = list(service.datacenters)
    for tier in service.tiers:
        values.extend(tier)
    for pool in service.pools.values():
        values.extend(pool.values)
    for v in values:
        if v.datacenter not in names:
            names.append(v.datacenter)
    return names


def geo_keys(location: Location | None) -> list[str]:
    """octoDNS geo codes for a location, most specific first: NA-US-CA, NA-US, NA."""
    if location is None or location.continent is None:
        return []
    keys: list[str] = []
    if location.country:
        if location.subdivision:
            keys.append(f"{location.continent}-{location.country}-{location.subdivision}")
        keys.append(f"{location.continent}-{location.country}")
    keys.append(location.continent)
    return keys


@dataclass(frozen=True)
class RuleMatch:
    rule: Rule
    index: int
    why: str  # "subnet 10.0.0.0/8", "geo NA-US-CA", "catch-all"


def match_rules(
    rules: Sequence[Rule], location: Location | None, address: int, version: int, use_client: bool
) -> RuleMatch | None:
    """Subnet rules beat geo rules (longest prefix wins); geos: subdivision > country >
    continent; then the catch-all. `use_client` False (source prefix 0) skips subnets and geos."""
    if use_client:
        best: tuple[int, int] | None = None
        for i, rule in enumerate(rules):
            for net in rule.subnets:
                if net.version == version and _contains(net, address):
                    if best is None or net.prefixlen > best[0]:
                        best = (net.prefixlen, i)
                        best_net = net
        if best is not None:
            return RuleMatch(rules[best[1]], best[1], f"subnet {best_net}")
        for key in geo_keys(location):
            for i, rule in enumerate(rules):
                if key in rule.geos:
                    return RuleMatch(rule, i, f"geo {key}")
    for i, rule in enumerate(rules):
        if rule.catch_all:
            return RuleMatch(rule, i, "catch-all")
    return None


def _contains(net: object, address: int) -> bool:
    n = int(net.network_address)  # type: ignore[attr-defined]
    shift = net.max_prefixlen - net.prefixlen  # type: ignore[attr-defined]
    return bool((address >> shift) == (n >> shift))


def subnet_scope(rules: Sequence[Rule], address: int, version: int, prefix: int) -> int:
    """The prefix length a subnet-rule decision depends on.

    Inside a matching rule network: that network's length. For every other rule network, the
    scope must be long enough that the client's scope network does not overlap it, which may
    be longer than the source prefix (RFC 7871 section 7.2.1).
    """
    bits = 32 if version == 4 else 128
    need = 0
    for rule in rules:
        for net in rule.subnets:
            if net.version != version:
                continue
            if _contains(net, address):
                need = max(need, net.prefixlen)
            else:
                common = bits - (address ^ int(net.network_address)).bit_length()
                if common < net.prefixlen:
                    need = max(need, common + 1)
    return need


# -- ordering ---------------------------------------------------------------------------------


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    return _haversine(*_trig(lat1, lon1), *_trig(lat2, lon2))


@lru_cache(maxsize=4096)
def _trig(lat: float, lon: float) -> tuple[float, float, float]:
    rlat = math.radians(lat)
    return rlat, math.cos(rlat), math.radians(lon)


def _haversine(p1: float, c1: float, l1: float, p2: float, c2: float, l2: float) -> float:
    a = math.sin((p2 - p1) / 2) ** 2 + c1 * c2 * math.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def biased_distance(distance: float, bias: float) -> float:
    """Route 53 style: a positive bias shrinks the distance (grows the catchment area)."""
    return distance * (1.0 - bias / 100.0)


def geoproximity(
    candidates: Sequence[Candidate], location: Location | None
) -> tuple[list[Candidate], dict[str, float]]:
    """Nearest (biased) first; without client coordinates keep the configured order."""
    if location is None or location.latitude is None or location.longitude is None:
        return list(candidates), {}
    here = _trig(location.latitude, location.longitude)
    dist: dict[str, float] = {}
    scored = []
    for i, c in enumerate(candidates):
        dc = c.dc
        d = _haversine(*here, *_trig(dc.latitude, dc.longitude))
        dist[dc.name] = d
        scored.append((d * (1.0 - dc.bias / 100.0), i, c))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in scored], dist


def failover_tier(
    tiers: Sequence[Sequence[Candidate]], health: HealthSnapshot, unknown_is: str
) -> tuple[int, list[Candidate]] | None:
    """The first tier that has a healthy member, and those members."""
    for i, tier in enumerate(tiers):
        healthy = health_filter(tier, health, unknown_is)
        if healthy:
            return i, healthy
    return None


def weighted_order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """Weighted random order without replacement (each draw proportional to weight)."""
    pool = list(candidates)
    out: list[Candidate] = []
    while len(pool) > 1:
        total = sum(c.weight for c in pool)
        x = rng.random() * total
        acc = 0.0
        for i, c in enumerate(pool):
            acc += c.weight
            if x < acc:
                out.append(pool.pop(i))
                break
        else:  # float edge: x == total
            out.append(pool.pop())
    out.extend(pool)
    return out


def sticky_order(candidates: Sequence[Candidate], client_key: bytes) -> list[Candidate]:
    """Weighted rendezvous hashing: each client network ranks the datacenters by its own hash,
    so removing one datacenter moves only the clients that ranked it first."""

    def score(c: Candidate) -> float:
        h = hashlib.blake2b(client_key + b"\x00" + c.name.encode(), digest_size=8).digest()
        u = (int.from_bytes(h, "big") + 0.5) / 2.0**64
        return c.weight / -math.log(u)

    return sorted(candidates, key=score, reverse=True)


def sticky_key(address: bytes, prefix: int, sticky_prefix: int) -> tuple[bytes, int]:
    """The client network used for hashing: the address masked to min(prefix, sticky_prefix)."""
    plen = min(prefix, sticky_prefix)
    bits = len(address) * 8
    value = int.from_bytes(address, "big")
    value = value >> (bits - plen) << (bits - plen) if plen else 0
    return value.to_bytes(len(address), "big") + bytes([plen]), plen


def latency_order(ordered: Sequence[Candidate], rtts: Mapping[str, float]) -> list[Candidate]:
    """Measured datacenters first, lowest round-trip time first; then the rest as they were."""
    measured = sorted((c for c in ordered if c.name in rtts), key=lambda c: rtts[c.name])
    return measured + [c for c in ordered if c.name not in rtts]


def spill(
    ordered: Sequence[Candidate], k: int, headroom: Mapping[str, float], client_key: bytes
) -> list[Candidate]:
    """Clients whose nearest datacenter is down or draining: spread over the k nearest
    healthy ones in proportion to their headroom, by weighted rendezvous hashing of the
    client network, so a client keeps its datacenter while headroom holds."""
    near = list(ordered[:k])
    if len(near) < 2:
        return list(ordered)
    weights = [max(0.0, headroom.get(c.name, 1.0)) for c in near]
    if not any(weights):
        weights = [1.0] * len(near)
    scaled = [replace(c, weight=w) for c, w in zip(near, weights, strict=True) if w > 0]
    pick = sticky_order(scaled, client_key)[0]
    return [c for c in ordered if c.name == pick.name] + [c for c in ordered if c.name != pick.name]


# -- count ------------------------------------------------------------------------------------


def rotations_needed(ordered: Sequence[Candidate], count: int, types: Sequence[str]) -> int:
    """How many distinct rotations of the datacenters' address lists an answer of `count`
    can show: 1 when every address fits, else the longest list truncated (at most 16)."""
    used, _, _ = take_count(ordered, count, types)
    longest = 1
    for c in ordered:
        if c.name not in used:
            continue
        for family, want in ((c.dc.ipv4, "A" in types), (c.dc.ipv6, "AAAA" in types)):
            if want and len(family) > count:
                longest = max(longest, len(family))
    return min(longest, 16)


def _rotated(addresses: tuple[str, ...], rotation: int) -> tuple[str, ...]:
    if rotation == 0 or len(addresses) < 2:
        return addresses
    k = rotation % len(addresses)
    return addresses[k:] + addresses[:k]


def take_count(
    ordered: Sequence[Candidate], count: int, types: Sequence[str], rotation: int = 0
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Up to `count` addresses per family, walking the ordered datacenters; a datacenter
    without an address of a family is skipped for that family only. `rotation` starts each
    datacenter's address list further on, so all its addresses take turns."""
    v4: list[str] = []
    v6: list[str] = []
    used: list[str] = []
    want4 = "A" in types
    want6 = "AAAA" in types
    for c in ordered:
        took = False
        if want4 and len(v4) < count and c.dc.ipv4:
            v4.extend(_rotated(c.dc.ipv4, rotation)[: count - len(v4)])
            took = True
        if want6 and len(v6) < count and c.dc.ipv6:
            v6.extend(_rotated(c.dc.ipv6, rotation)[: count - len(v6)])
            took = True
        if took:
            used.append(c.name)
    return tuple(used), tuple(v4), tuple(v6)
