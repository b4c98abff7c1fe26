"""SteeringEngine: (service, client network, health snapshot) -> Decision, cached.

The decision itself is built from the pure steps in policies.py. This module adds the two
things the DNS hot path needs: a bounded cache of deterministic decisions keyed by service and
client network (dropped whenever the health epoch changes), and cheap per-query weighted picks
from cached candidate weights. `explain()` runs the same steps with a narration attached.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any, Literal

from ..clock import SYSTEM_CLOCK, Clock
from ..config.model import Config, Datacenter
from ..geo.locate import Location, Locator
from ..health.snapshot import HealthHolder, HealthSnapshot
from . import policies as P
from .latency import LatencyIndex
from .policies import Candidate
from .ramp import (
    Transition,
    client_point,
    keeps,
    ramps_in_force,
    recoveries,
    transition_ttl,
)
from .scopemap import AnswerMap, ServiceRanges, scope_network
from .service import Service

Outcome = Literal["answer", "nodata", "servfail"]
# How the per-(service, health snapshot) answer maps (widest ECS scope) are built: in a thread
# off the hot path (the server), inline on a health change (explain, tests), or not at all.
ScopeMaps = Literal["background", "sync", "off"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    datacenters: tuple[str, ...]
    ipv4: tuple[str, ...]  # addresses in answer order (already limited by count)
    ipv6: tuple[str, ...]
    ttl: int
    # ECS scope: the client bits the answer depends on; 0 when it is client-independent, and
    # longer than the source prefix when the source network spans several answers.
    scope_prefix: int
    key: Hashable  # same key => same A/AAAA records
    # False when the same query may get a different response next time, so it must not be
    # cached per client: drawn at random (weighted policy), or a provisional scope while the
    # answer maps for this health snapshot are still being built.
    deterministic: bool = True
    # A datacenter whose target is a name (a CDN): the answer is this CNAME, no addresses.
    cname: str | None = None


def make_decision(
    outcome: Outcome,
    datacenters: tuple[str, ...],
    ipv4: tuple[str, ...],
    ipv6: tuple[str, ...],
    ttl: int,
    scope: int,
    deterministic: bool = True,
    cname: str | None = None,
) -> Decision:
    key = (outcome, ipv4, ipv6, ttl, cname)
    return Decision(outcome, datacenters, ipv4, ipv6, ttl, scope, key, deterministic, cname)


class _Weighted:
    """A cached weighted plan: healthy candidates and weights; one random pick per query."""

    __slots__ = ("cands", "service", "scope", "ttl", "cum", "total", "firsts", "memo")

    def __init__(
        self, cands: list[Candidate], service: Service, scope: int, ttl: int | None = None
    ) -> None:
        self.cands = cands
        self.service = service
        self.scope = scope
        self.ttl = service.ttl if ttl is None else ttl
        self.cum = list(accumulate(c.weight for c in cands))
        self.total = float(self.cum[-1])
        self.memo: dict[tuple[str, ...], Decision] = {}
        # When the first pick alone fixes the answer (the usual count=1 case), precompute one
        # decision per first pick so a query costs one rng call and a bisect.
        self.firsts: list[Decision] | None = None
        if _first_pick_decides(cands, service):
            self.firsts = [self._build([c, *[o for o in cands if o is not c]]) for c in cands]

    def _build(self, ordered: Sequence[Candidate]) -> Decision:
        used, v4, v6 = P.take_count(ordered, self.service.count, self.service.types)
        return make_decision("answer", used, v4, v6, self.ttl, self.scope, False)

    def pick(self, rng: random.Random) -> Decision:
        firsts = self.firsts
        if firsts is not None:
            i = bisect_right(self.cum, rng.random() * self.total)
            return firsts[i if i < len(firsts) else -1]
        ordered = P.weighted_order(self.cands, rng)
        k = tuple(c.name for c in ordered)
        d = self.memo.get(k)
        if d is None:
            d = self._build(ordered)
            if len(self.memo) < 4096:
                self.memo[k] = d
        return d


def _first_pick_decides(cands: Sequence[Candidate], service: Service) -> bool:
    for family, want in (("ipv4", "A" in service.types), ("ipv6", "AAAA" in service.types)):
        if not want:
            continue
        sizes = [len(getattr(c.dc, family)) for c in cands]
        if any(sizes) and min(sizes) < service.count:
            return False
    return True


class _Rotating:
    """A datacenter has more addresses than `count` shows: each query draws one rotation,
    so every address takes its turn (the same per-query draw as the weighted policy)."""

    __slots__ = ("decisions",)

    def __init__(self, decisions: list[Decision]) -> None:
        self.decisions = decisions

    def pick(self, rng: random.Random) -> Decision:
        return self.decisions[int(rng.random() * len(self.decisions)) % len(self.decisions)]


Entry = Decision | _Weighted | _Rotating


@dataclass(frozen=True)
class _Compiled:
    service: Service
    uses_client: bool  # subnet rules or sticky hashing: decision depends on the client network
    uses_location: bool  # geo rules or geoproximity: decision depends on the GeoIP location
    has_subnets: bool
    has_geos: bool
    # The answer depends on the client through its GeoIP place only: an answer map gives the
    # widest scope (subnet rules and sticky hashing keep the per-network path).
    scope_map: bool
    dc_cands: tuple[Candidate, ...]
    tier_cands: tuple[tuple[Candidate, ...], ...]


def compile_service(service: Service, dcs: Mapping[str, Datacenter]) -> _Compiled:
    has_subnets = any(r.subnets for r in service.rules)
    has_geos = any(r.geos for r in service.rules)
    ordering = service.ordering
    uses_client = has_subnets or ordering in ("sticky", "latency")
    uses_location = has_geos or ordering in ("geoproximity", "latency")
    return _Compiled(
        service=service,
        uses_client=uses_client,
        uses_location=uses_location,
        scope_map=uses_location and not uses_client,
        has_subnets=has_subnets,
        has_geos=has_geos,
        dc_cands=tuple(P.values_candidates(service.datacenters, dcs)),
        tier_cands=tuple(tuple(P.values_candidates(t, dcs)) for t in service.tiers),
    )


class SteeringEngine:
    """Decides answers for GSLB services. Cheap on a cache hit; never awaits."""

    def __init__(
        self,
        config: Config,
        locator: Locator | None,
        health: HealthHolder,
        rng: random.Random | None = None,
        cache_size: int = 16384,
        scope_maps: ScopeMaps = "background",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.services: Mapping[str, Service] = config.services
        self.datacenters: Mapping[str, Datacenter] = config.datacenters
        self.locator = locator
        self.health = health
        self._rng = rng if rng is not None else random.Random()
        self._compiled: dict[str, _Compiled] = {
            name: compile_service(svc, config.datacenters) for name, svc in config.services.items()
        }
        self._cache: OrderedDict[Hashable, Entry] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._snap: HealthSnapshot | None = None  # the first decide() starts from scratch
        self.hits = 0
        self.misses = 0
        # Widest-scope answer maps: ranges per service (health-independent, built once) and
        # the maps for one snapshot, published as one tuple so readers never see a mix.
        self._scope_mode: ScopeMaps = scope_maps if locator is not None else "off"
        if not any(c.scope_map for c in self._compiled.values()):
            self._scope_mode = "off"
        self._ranges: dict[str, ServiceRanges] | None = None
        self._maps: tuple[HealthSnapshot, dict[str, AnswerMap]] | None = None
        self._maps_seen: tuple[HealthSnapshot, dict[str, AnswerMap]] | None = None
        self._scoped: dict[tuple[str, int, int], Entry] = {}
        self._build_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        # Slow start and timed drains (ramp.py): when each datacenter last recovered, the
        # transitions in force per service at the last tick, and when shares next change.
        self.clock = clock
        self._recovered: dict[str, float] = {}
        self._ramps: dict[str, dict[str, Transition]] = {}
        self._drained: frozenset[str] = frozenset()  # drain window over, still "up" in snap
        self._ramp_gen = 0  # bumped when the set of ramping services changes
        self._tick_now = 0.0
        self._next_tick: float | None = None
        self._latency_indexes: dict[float, tuple[HealthSnapshot, float, LatencyIndex]] = {}

    # -- hot path -------------------------------------------------------------------------------

    def decide(self, service: Service, address: bytes, prefix: int) -> Decision:
        """The answer for `service` to a client network (ECS or source address, packed and
        masked to `prefix`). prefix 0 means: do not use the client's location."""
        snap = self.health.current
        if self._next_tick is not None and self.clock.time() >= self._next_tick:
            self._tick()
        if snap is not self._snap or self._maps is not self._maps_seen:
            # A new snapshot (new epoch): every cached decision may be wrong now. New answer
            # maps: cached decisions are right but may have narrower scopes than the maps give.
            self._new_snapshot(snap)
        comp = self._compiled.get(service.name)
        if comp is None or comp.service is not service:
            comp = self._compiled[service.name] = compile_service(service, self.datacenters)
        if comp.uses_client or comp.uses_location:
            key: Hashable = (service.name, address, prefix)
        else:
            key = service.name
        entry = self._cache.get(key)
        if entry is None:
            self.misses += 1
            entry = self._miss(comp, key, address, prefix)
        else:
            self.hits += 1
        if entry.__class__ is Decision:
            return entry
        return entry.pick(self._rng)  # type: ignore[union-attr]

    def _new_snapshot(self, snap: HealthSnapshot) -> None:
        self._cache.clear()
        self._scoped.clear()
        if snap is not self._snap:
            self._recovered = recoveries(self._snap, snap, self._recovered, self.clock.time())
            self._snap = snap
            self._compute_ramps()
        if self._scope_mode != "off" and (self._maps is None or self._maps[0] is not snap):
            if self._scope_mode == "sync":
                self.build_scope_maps()
            else:
                self._kick_builder()
        self._maps_seen = self._maps

    def _miss(self, comp: _Compiled, key: Hashable, address: bytes, prefix: int) -> Entry:
        snap = self.health.current
        provisional = False
        if comp.scope_map and prefix > 0:
            mapped = self._mapped(comp.service, snap, address)
            if mapped is not None:
                self._store(key, mapped)
                return mapped
            maps = self._maps
            provisional = (
                self._scope_mode != "off"
                and comp.service.name not in self._ramps
                and (maps is None or maps[0] is not snap)
            )
        location = self._locate(comp, address, prefix)
        entry: Entry | None = None
        net_key: Hashable | None = None
        # In a ramp or a spillover the client network matters too, not just its place.
        ramping = comp.service.name in self._ramps or comp.service.spillover > 1
        if comp.uses_location and not comp.uses_client and location is not None and not ramping:
            # The decision depends only on what the database says about the client and on
            # how long its network is (the ECS scope): every GeoIP network with the same
            # place shares one decision, so a new health epoch costs one plan per place.
            net_key = (
                comp.service.name,
                location.continent,
                location.country,
                location.subdivision,
                location.latitude,
                location.longitude,
                location.prefix_len,
            )
            entry = self._cache.get(net_key)
        if entry is None:
            entry = self._plan(comp, location, address, prefix, snap, None)
            if provisional and isinstance(entry, Decision):
                # Right, but its scope is the GeoIP network's until the map is ready.
                entry = replace(entry, deterministic=False)
            if net_key is not None:
                self._store(net_key, entry)
        self._store(key, entry)
        return entry

    # -- slow start and timed drains --------------------------------------------------------

    def _compute_ramps(self) -> None:
        """The transitions in force now, per service; the time answers next change."""
        now = self.clock.time()
        snap = self._snap
        comps = list(self._compiled.values())
        view = ramps_in_force(
            [c.service for c in comps], self.datacenters, snap, self._recovered, now
        )
        next_tick = view.next_change
        if snap is not None:
            for comp in comps:
                if comp.service.ordering != "latency":
                    continue
                # A measurement expiring changes answers without a new snapshot.
                expiry = self._latency_index(snap, comp.service.latency_max_age, now).expires
                if expiry is not None and expiry > now:
                    next_tick = expiry if next_tick is None else min(next_tick, expiry)
        ramps = {name: dict(found) for name, found in view.ramps.items()}
        ended = set(self._ramps) - set(ramps)
        if set(ramps) != set(self._ramps) or view.drained != self._drained:
            self._ramp_gen += 1  # a map being built now left out the wrong services
        self._ramps = ramps
        self._drained = view.drained
        self._tick_now = now
        self._next_tick = next_tick
        if ended and self._maps is not None:
            self._maps = None  # maps left out the ramping services: build them again

    def _latency_index(self, snap: HealthSnapshot, max_age: float, now: float) -> LatencyIndex:
        """The measurements fresh at `now`, indexed; one per (snapshot, max_age, tick)."""
        held = self._latency_indexes.get(max_age)
        if held is not None and held[0] is snap and held[1] == now:
            return held[2]
        index = LatencyIndex(snap.latency, now, max_age)
        self._latency_indexes[max_age] = (snap, now, index)
        return index

    def _tick(self) -> None:
        """A share moved a step (or a window ended): cached answers are stale."""
        self._compute_ramps()
        self._cache.clear()
        self._scoped.clear()
        if self._maps is None and self._scope_mode != "off":
            self._maps_seen = None
            self._new_snapshot(self.health.current)

    def transitions(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Ramps in force (for explain and the status page): service -> datacenter -> view."""
        now = self.clock.time()
        return {
            svc: {
                dc: {
                    "kind": t.kind,
                    "share": t.share(now),
                    "start": t.start,
                    "end": t.end,
                    "progress": round(t.fraction(now), 3),
                }
                for dc, t in found.items()
            }
            for svc, found in self._ramps.items()
        }

    @staticmethod
    def _headroom(dc: Datacenter, snap: HealthSnapshot) -> float:
        """capacity - reported load; capacity alone without a report; 1 when neither the
        datacenter nor its proxy declares a capacity. The datacenter's `capacity` wins over
        the one its proxy reports."""
        th = snap.targets.get(dc.name)
        capacity = dc.capacity
        if capacity <= 0 and th is not None and th.capacity:
            capacity = th.capacity
        if capacity <= 0:
            return 1.0
        load = th.load if th is not None and th.load is not None else 0.0
        return max(0.0, capacity - load)

    def _admit(
        self, cands: list[Candidate], ramps: Mapping[str, Transition] | None
    ) -> list[Candidate]:
        """Candidates whose share is above zero (a datacenter drained out, or at the very
        start of its slow start, takes no clients)."""
        drained = self._drained
        if drained:
            cands = [c for c in cands if c.name not in drained]
        if not ramps:
            return cands
        now = self._tick_now
        return [c for c in cands if c.name not in ramps or ramps[c.name].share(now) > 0]

    # -- answer maps (widest ECS scope) ------------------------------------------------------

    def _mapped(self, service: Service, snap: HealthSnapshot, address: bytes) -> Entry | None:
        """The answer map's entry for a client, with the widest scope; None without a map for
        this very snapshot (then the per-network path answers, with the database network)."""
        maps = self._maps
        if maps is None or maps[0] is not snap:
            return None
        amap = maps[1].get(service.name)
        if amap is None or amap.service is not service or service.name in self._ramps:
            return None
        found = amap.find(int.from_bytes(address, "big"), 4 if len(address) == 4 else 6)
        if found is None:
            return None
        aid, scope = found
        memo_key = (service.name, aid, scope)
        entry = self._scoped.get(memo_key)
        if entry is None:
            entry = _with_scope(amap.entries[aid], scope)  # type: ignore[arg-type]
            self._scoped[memo_key] = entry
        return entry

    def build_scope_maps(self) -> None:
        """Build the answer maps for the current snapshot (blocking; the server runs it in a
        thread). The database walk happens once per database file, the service ranges once
        per configuration; per snapshot only each class is planned again."""
        if self.locator is None:
            return
        from ..geo.index import shared_index

        with self._build_lock:
            snap = self.health.current
            gen = self._ramp_gen
            if self._maps is not None and self._maps[0] is snap:
                return
            # Services in a ramp answer per client network until it ends (then a rebuild).
            comps = [
                c
                for c in self._compiled.values()
                if c.scope_map and c.service.name not in self._ramps
            ]
            if self._ranges is None:
                index = shared_index(self.locator.path)
                self._ranges = {
                    c.service.name: ServiceRanges(index, c.service, self.datacenters) for c in comps
                }
            maps: dict[str, AnswerMap] = {}
            for comp in comps:
                ranges = self._ranges.get(comp.service.name)
                if ranges is None:
                    continue

                def plan(loc: Location, comp: _Compiled = comp) -> object | None:
                    entry = self._plan(comp, loc, bytes(4), 32, snap, None)
                    # A place whose answer hashes the client network (spillover) has no
                    # one answer: the per-network path answers it.
                    return None if _entry_scope(entry) > 0 else entry

                maps[comp.service.name] = AnswerMap(ranges, plan, _answer_key)
            if gen == self._ramp_gen:  # else a ramp started or ended meanwhile: build again
                self._maps = (snap, maps)

    def _kick_builder(self) -> None:
        builder = self._builder
        if builder is not None and builder.is_alive():
            return  # it loops until its maps match the current snapshot
        self._builder = threading.Thread(
            target=self._build_loop, name="gslb-scope-maps", daemon=True
        )
        self._builder.start()

    def _build_loop(self) -> None:
        import logging

        log = logging.getLogger("gslb.steering")
        try:
            for _ in range(100):  # health changing faster than maps build: give up for now
                started = self.clock.monotonic()
                self.build_scope_maps()
                maps = self._maps
                if maps is not None and maps[0] is self.health.current:
                    log.info(
                        "ECS scope maps ready for %d service(s), health epoch %d, in %.1f s",
                        len(maps[1]),
                        maps[0].epoch,
                        self.clock.monotonic() - started,
                    )
                    return
        except Exception:  # noqa: BLE001 - a failed build must never touch answering
            log.exception("building ECS scope maps failed")
            self._scope_mode = "off"

    def scope_maps_ready(self) -> bool:
        """True when the answer maps match the current health snapshot."""
        maps = self._maps
        return maps is not None and maps[0] is self.health.current

    def scope_map_state(self, service: str) -> str:
        """For the status page: off (per-network scopes), ramp (per-network while a slow
        start or drain runs), building, ready."""
        comp = self._compiled.get(service)
        if self._scope_mode == "off" or comp is None or not comp.scope_map:
            return "off"
        if service in self._ramps:
            return "ramp"
        maps = self._maps
        if maps is None or maps[0] is not self.health.current or service not in maps[1]:
            return "building"
        return "ready"

    def scope_reason(self, service: Service, address: bytes, prefix: int) -> str:
        """Why the scope is what it is (for explain)."""
        comp = self._compiled.get(service.name)
        if comp is None or not (comp.uses_client or comp.uses_location) or prefix <= 0:
            return "the answer does not depend on the client"
        maps = self._maps
        amap = maps[1].get(service.name) if maps is not None else None
        if comp.scope_map and amap is not None and maps is not None:
            bits = 8 * len(address)
            value = int.from_bytes(address, "big")
            found = amap.find(value, 4 if bits == 32 else 6)
            if found is not None:
                first, scope = scope_network(value, found[1], bits)
                net = ipaddress.ip_address(first.to_bytes(len(address), "big"))
                fresh = "" if maps[0] is self.health.current else " (map of an older snapshot)"
                return (
                    f"widest prefix around the client with the same answer: {net}/{scope}"
                    f" (answer map of {amap.range_count()} ranges, health epoch"
                    f" {maps[0].epoch}){fresh}"
                )
        if service.ordering == "latency":
            return (
                "latency: the measured client network; elsewhere the GeoIP network, kept clear"
                " of every measured one"
            )
        if service.name in self._ramps:
            return "a slow start or drain in progress: the hashed client network (/24, /56)"
        if service.spillover > 1:
            return (
                "spillover: the hashed client network where its nearest datacenter is"
                " unavailable, else its GeoIP network"
            )
        if comp.uses_client:
            return "subnet rules or sticky hashing: the client network the answer depends on"
        return "the GeoIP network of the client (answer map not built)"

    def _store(self, key: Hashable, entry: Entry) -> None:
        cache = self._cache
        cache[key] = entry
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _locate(self, comp: _Compiled, address: bytes, prefix: int) -> Location | None:
        if self.locator is None or prefix <= 0 or not comp.uses_location:
            return None
        return self.locator.locate(address, prefix)

    def cache_len(self) -> int:
        return len(self._cache)

    # -- the policy chain (pure given its arguments) -------------------------------------------

    def _plan(
        self,
        comp: _Compiled,
        location: Location | None,
        address: bytes,
        prefix: int,
        snap: HealthSnapshot,
        trace: list[dict[str, Any]] | None,
    ) -> Entry:
        svc = comp.service
        dcs = self.datacenters
        use_client = prefix > 0
        version = 4 if len(address) == 4 else 6
        addr_int = int.from_bytes(address, "big")
        depends = 0  # longest client prefix the decision depends on so far
        ramps = self._ramps.get(svc.name)
        now = self._tick_now
        base_ttl = svc.ttl  # a pool's own ttl wins when that pool answers
        if ramps is not None and trace is not None:
            _t(trace, "ramp", _ramp_detail(ramps, now))

        # 1. candidates (rules -> pool with fallback chain; failover tiers; plain list) + health
        selected: list[Candidate] | None
        if svc.rules:
            match = P.match_rules(svc.rules, location, addr_int, version, use_client)
            assert match is not None  # validation requires a catch-all rule
            if use_client and comp.has_subnets:
                depends = max(depends, P.subnet_scope(svc.rules, addr_int, version, prefix))
            if use_client and comp.has_geos and location is not None:
                depends = max(depends, location.prefix_len)
            chain = P.rule_chain(svc, match.rule)
            if trace is not None:
                names = " -> ".join(p.name for p in chain)
                _t(trace, "rules", f"rule #{match.index} ({match.why}) -> pools {names}")
            initial = P.pool_candidates(chain[0], dcs)
            selected = None
            for i, pool in enumerate(chain):
                healthy = self._admit(
                    P.health_filter(P.pool_candidates(pool, dcs), snap, svc.unknown_is), ramps
                )
                if trace is not None:
                    detail = _health_detail(P.pool_candidates(pool, dcs), healthy)
                    _t(trace, "health", f"pool {pool.name}: {detail}", healthy)
                if healthy:
                    selected = healthy
                    if pool.ttl is not None:
                        base_ttl = pool.ttl
                    break
                if i + 1 < len(chain) and trace is not None:
                    _t(trace, "fallback", f"pool {pool.name} all down -> pool {chain[i + 1].name}")
        elif svc.tiers:
            tiers = comp.tier_cands
            initial = list(tiers[0])
            found = None
            for i, tier in enumerate(tiers):
                up = self._admit(P.health_filter(tier, snap, svc.unknown_is), ramps)
                if up:
                    found = (i, up)
                    break
            if found is None:
                selected = None
                if trace is not None:
                    _t(trace, "failover", "no tier has a healthy member")
            else:
                selected = found[1]
                if trace is not None:
                    _t(trace, "failover", f"tier {found[0]} answers: {_names(selected)}", selected)
        else:
            initial = list(comp.dc_cands)
            selected = self._admit(P.health_filter(initial, snap, svc.unknown_is), ramps) or None
            if trace is not None:
                _t(trace, "health", _health_detail(initial, selected or []), selected or [])

        ttl = transition_ttl(base_ttl, list(ramps.values())) if ramps else base_ttl

        # 2. everything down: the service's explicit choice
        if selected is None:
            mode = svc.on_all_down
            scope = depends
            if mode == "nodata" or mode == "servfail":
                if trace is not None:
                    _t(trace, "on_all_down", f"all candidates down -> {mode.upper()}")
                return make_decision(mode, (), (), (), ttl, scope, ramps is None)
            if mode == "fallback":
                assert svc.fallback_pool is not None
                pool = svc.pools[svc.fallback_pool]
                selected = P.fail_open(P.pool_candidates(pool, dcs))
                if trace is not None:
                    _t(trace, "on_all_down", f"all down -> fallback pool {pool.name}", selected)
            else:
                selected = P.fail_open(initial)
                if trace is not None:
                    _t(trace, "on_all_down", "all down -> fail open (ignore health)", selected)

        # 3. ordering
        ordering = svc.ordering
        ordered: list[Candidate] = selected
        if ordering == "geoproximity":
            ordered, dist = P.geoproximity(selected, location)
            if len(selected) > 1 and location is not None:
                depends = max(depends, location.prefix_len)
            if trace is not None:
                if trace is not None:
                    _t(trace, "geoproximity", _proximity_detail(ordered, dist), ordered)
        elif ordering == "latency":
            ordered, dist = P.geoproximity(selected, location)
            if len(selected) > 1 and location is not None:
                depends = max(depends, location.prefix_len)
            measured_prefix = svc.sticky_ipv4_prefix if version == 4 else svc.sticky_ipv6_prefix
            index = self._latency_index(snap, svc.latency_max_age, self._tick_now)
            measured = index.lookup(address, prefix, measured_prefix)
            rtts = measured.rtts
            if len(selected) > 1 and use_client:
                # The answer differs inside any measured network: stay clear of them.
                depends = max(depends, measured.scope)
            if rtts and use_client:
                ordered = P.latency_order(ordered, rtts)
                depends = max(depends, min(prefix, measured_prefix))
            if trace is not None:
                if rtts and measured.network is not None:
                    at = snap.latency[measured.network]
                    wall = self.clock.time()
                    text = ", ".join(
                        f"{n} {r * 1000:.1f} ms ({max(0.0, wall - at[n][1]):.0f} s ago)"
                        for n, r in rtts.items()
                    )
                    _t(trace, "latency", f"measured for {measured.network}: {text}", ordered)
                else:
                    _t(trace, "latency", "no fresh measurement: geoproximity", ordered)
        elif ordering == "sticky":
            if len(selected) > 1 and use_client:
                sticky_prefix = svc.sticky_ipv4_prefix if version == 4 else svc.sticky_ipv6_prefix
                client_key, plen = P.sticky_key(address, prefix, sticky_prefix)
                depends = max(depends, plen)
            else:
                client_key, plen = b"", 0
            ordered = P.sticky_order(selected, client_key)
            if trace is not None:
                _t(
                    trace,
                    "sticky",
                    f"rendezvous hash of client /{plen}: {_names(ordered)}",
                    ordered,
                )
        elif ordering == "weighted":
            if ramps:
                # Slow start and drains scale the weight by the datacenter's share.
                selected = [
                    replace(c, weight=c.weight * ramps[c.name].share(now)) if c.name in ramps else c
                    for c in selected
                ]
            if len(selected) > 1:
                if trace is not None:
                    weights = ", ".join(f"{c.name}={c.weight:g}" for c in selected)
                    if trace is not None:
                        _t(trace, "weighted", f"random pick by weight: {weights}", selected)
                return _Weighted(selected, svc, depends, ttl)
            if trace is not None:
                _t(trace, "weighted", "single candidate", selected)
        elif ordering == "geolocation":
            if trace is not None:
                _t(trace, "geolocation", "pool order", ordered)

        # 4. count (a datacenter in a ramp keeps only the client networks below its share)
        used, v4, v6 = P.take_count(ordered, svc.count, svc.types)
        if ramps and ordering != "weighted":
            hash_prefix = svc.sticky_ipv4_prefix if version == 4 else svc.sticky_ipv6_prefix
            point: float | None = None
            while any(n in ramps for n in used):
                if point is None:
                    point, plen = client_point(address, prefix, hash_prefix)
                    depends = max(depends, plen)
                drop = {n for n in used if n in ramps and not keeps(point, ramps[n].share(now))}
                rest = [c for c in ordered if c.name not in drop]
                if trace is not None:
                    for n in sorted(drop):
                        share = ramps[n].share(now)
                        _t(trace, "ramp", f"{n}: client point {point:.3f} >= share {share:.2f}")
                if not drop or not rest:
                    break
                ordered = rest
                used, v4, v6 = P.take_count(ordered, svc.count, svc.types)
            if point is not None and trace is not None:
                _t(trace, "ramp", f"client point {point:.3f}: {_names(ordered)}", ordered)
        if svc.spillover > 1 and ordering == "geoproximity" and location is not None:
            nearest = P.geoproximity(initial, location)[0]
            if nearest and nearest[0].name not in {c.name for c in ordered}:
                # Its nearest datacenter is down or draining for this client: spread.
                hash_prefix = svc.sticky_ipv4_prefix if version == 4 else svc.sticky_ipv6_prefix
                client_key, plen = P.sticky_key(address, prefix, hash_prefix)
                depends = max(depends, plen)
                room = {c.name: self._headroom(c.dc, snap) for c in ordered[: svc.spillover]}
                ordered = P.spill(ordered, svc.spillover, room, client_key)
                used, v4, v6 = P.take_count(ordered, svc.count, svc.types)
                if trace is not None:
                    split = ", ".join(f"{n} {r:g}" for n, r in room.items())
                    _t(
                        trace,
                        "spillover",
                        f"{nearest[0].name} unavailable: spread over headroom {split};"
                        f" client /{plen} -> {ordered[0].name}",
                        ordered,
                    )
        if ordered and ordered[0].dc.cname:
            # The first choice is a name: a CNAME cannot stand beside addresses, so it alone.
            target = ordered[0].dc.cname
            if trace is not None:
                _t(trace, "cname", f"{ordered[0].name} is a name: CNAME {target}", ordered[:1])
            return make_decision(
                "answer", (ordered[0].name,), (), (), ttl, depends, ramps is None, target
            )
        if trace is not None:
            _t(trace, "count", f"up to {svc.count} per family: {', '.join(v4 + v6) or 'none'}")
        turns = P.rotations_needed(ordered, svc.count, svc.types)
        if turns > 1:
            if trace is not None:
                _t(trace, "rotate", f"{turns} rotations of the address lists, one per query")
            return _Rotating(
                [
                    make_decision(
                        "answer",
                        *P.take_count(ordered, svc.count, svc.types, r),
                        ttl,
                        depends,
                        False,
                    )
                    for r in range(turns)
                ]
            )
        return make_decision("answer", used, v4, v6, ttl, depends, ramps is None)

    # -- explain ----------------------------------------------------------------------------------

    def narrate(
        self,
        service: Service,
        location: Location | None,
        address: bytes,
        prefix: int,
        snap: HealthSnapshot,
        trace: list[dict[str, Any]],
    ) -> None:
        """Run the policy chain once more with a trace attached (what explain prints)."""
        self._plan(
            compile_service(service, self.datacenters), location, address, prefix, snap, trace
        )

    def explain(self, service: Service, address: bytes, prefix: int) -> dict[str, Any]:
        """The decision `decide()` gives, with the location, candidates and each step narrated."""
        from .explain import explain_decision

        return explain_decision(self, service, address, prefix)


def _ramp_detail(ramps: Mapping[str, Transition], now: float) -> str:
    parts = []
    for name, t in ramps.items():
        what = "slow start" if t.kind == "slow_start" else "drain"
        parts.append(
            f"{name} {what} {t.fraction(now):.0%} of {t.end - t.start:.0f} s:"
            f" share {t.share(now):.2f}"
        )
    return "; ".join(parts) + " (answers live one step: shorter TTL)"


def _entry_scope(entry: Entry) -> int:
    if isinstance(entry, Decision):
        return entry.scope_prefix
    if isinstance(entry, _Rotating):
        return entry.decisions[0].scope_prefix
    return entry.scope


def _answer_key(entry: object) -> Hashable:
    """Entries with equal keys give the same records: an answer map merges their ranges."""
    if isinstance(entry, Decision):
        return (entry.key, entry.datacenters)
    if isinstance(entry, _Rotating):
        return ("rotate", tuple((d.key, d.datacenters) for d in entry.decisions))
    assert isinstance(entry, _Weighted)
    return ("weighted", tuple((c.name, c.weight) for c in entry.cands))


def _with_scope(entry: Entry, scope: int) -> Entry:
    if isinstance(entry, Decision):
        return replace(entry, scope_prefix=scope)
    if isinstance(entry, _Rotating):
        return _Rotating([replace(d, scope_prefix=scope) for d in entry.decisions])
    return _Weighted(entry.cands, entry.service, scope, entry.ttl)


def _t(
    trace: list[dict[str, Any]] | None,
    step: str,
    detail: str,
    cands: Sequence[Candidate] | None = None,
) -> None:
    if trace is not None:
        item: dict[str, Any] = {"step": step, "detail": detail}
        if cands is not None:
            item["datacenters"] = [c.name for c in cands]
        trace.append(item)


def _proximity_detail(ordered: Sequence[Candidate], dist: Mapping[str, float]) -> str:
    if not dist:
        return "client location has no coordinates: configured order"
    parts = []
    for c in ordered:
        text = f"{c.name} {dist[c.name]:.0f} km"
        if c.dc.bias:
            text += f" (biased {P.biased_distance(dist[c.name], c.dc.bias):.0f})"
        parts.append(text)
    return ", ".join(parts)


def _health_detail(cands: Sequence[Candidate], healthy: Sequence[Candidate]) -> str:
    up = {c.name for c in healthy}
    down = [c.name for c in cands if c.name not in up]
    text = f"healthy {_names(healthy)}"
    return f"{text}; down {', '.join(down)}" if down else text


def _names(cands: Sequence[Candidate]) -> str:
    return ", ".join(c.name for c in cands) or "none"
