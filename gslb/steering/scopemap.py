"""Widest correct ECS scope: the address space as ranges over which a service's whole answer
is the same, per (service, health snapshot).

Three layers, each built from the one below and cheaper than it:

1. `LocationIndex` (gslb/geo/index.py), per database: ranges of equal place.
2. `ServiceRanges`, per (service, database), health-independent: places are folded into
   classes, a class being everything the policy chain reads from a location (the geo rule
   it matches, and for geoproximity the full distance ranking of the service's
   datacenters). Germany's hundreds of cities have one ranking, so they become one range.
3. `AnswerMap`, per (service, health snapshot): each class is planned once by the engine's
   own policy chain, and adjacent classes with the same answer merge (with Frankfurt down,
   Germany and France may share Amsterdam's answer).

A query then costs one bisect: the range around the client gives the widest aligned prefix
(the scope) inside it. Scope 0 when the answer does not depend on the client; longer than
the source prefix when the source network spans several answers (RFC 7871 section 7.2.1).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from ..config.model import Datacenter
from ..geo.index import UNMAPPED, LocationIndex
from ..geo.locate import Location
from . import policies as P
from .policies import service_datacenter_names
from .service import Service

# A class's plan (the engine's Entry: a Decision or a weighted plan) and its answer identity.
Plan = Callable[[Location], object | None]  # None: no single answer for this class
AnswerKey = Callable[[object], Hashable]


def place_class_key(service: Service, location: Location, dcs: Sequence[Datacenter]) -> Hashable:
    """Everything the policy chain reads from a location, for this service."""
    rule: int | None = None
    if service.rules:
        match = P.match_rules(service.rules, location, 0, 4, True)
        rule = match.index if match is not None else None
    ranking: tuple[int, ...] | None = None
    if (
        service.ordering == "geoproximity"
        and location.latitude is not None
        and location.longitude is not None
    ):
        here = (location.latitude, location.longitude)
        scored = sorted(
            (P.biased_distance(P.distance_km(*here, dc.latitude, dc.longitude), dc.bias), i)
            for i, dc in enumerate(dcs)
        )
        ranking = tuple(i for _, i in scored)
    return (rule, ranking)


@dataclass
class _Family:
    bits: int
    starts: Sequence[int]
    ids: array  # type: ignore[type-arg]  # array('i'): class id (or answer id) per range


def _fold(starts: Sequence[int], ids: Sequence[int], mapping: Sequence[int], bits: int) -> _Family:
    """Map every range's id through `mapping` and merge neighbours that become equal."""
    out_starts: array | list[int] = array("Q") if bits == 32 else []  # type: ignore[type-arg]
    out_ids = array("i")
    last = -2
    for start, old in zip(starts, ids, strict=True):
        new = mapping[old] if old >= 0 else UNMAPPED
        if new != last:
            out_starts.append(start)
            out_ids.append(new)
            last = new
    return _Family(bits, out_starts, out_ids)


class ServiceRanges:
    """Per (service, database): ranges of equal class, and one representative place each."""

    def __init__(
        self, index: LocationIndex, service: Service, datacenters: Mapping[str, Datacenter]
    ) -> None:
        self.service = service
        dcs = [datacenters[n] for n in service_datacenter_names(service)]
        ids: dict[Hashable, int] = {}
        self.representatives: list[Location] = []
        place_to_class: list[int] = []
        for loc in index.places:
            key = place_class_key(service, loc, dcs)
            cid = ids.get(key)
            if cid is None:
                cid = ids[key] = len(self.representatives)
                self.representatives.append(loc)
            place_to_class.append(cid)
        self.v4 = _fold(index.v4.starts, index.v4.places, place_to_class, 32)
        self.v6 = _fold(index.v6.starts, index.v6.places, place_to_class, 128)

    def range_count(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)


class AnswerMap:
    """Per (service, health snapshot): ranges of equal answer. `find` is the hot-path call."""

    def __init__(self, ranges: ServiceRanges, plan: Plan, answer_key: AnswerKey) -> None:
        self.service = ranges.service
        keys: dict[Hashable, int] = {}
        self.entries: list[object] = []
        class_answer: list[int] = []
        for loc in ranges.representatives:
            entry = plan(loc)  # services with scope maps have no subnet rules: family-blind
            if entry is None:
                class_answer.append(UNMAPPED)
                continue
            key = answer_key(entry)
            aid = keys.get(key)
            if aid is None:
                aid = keys[key] = len(self.entries)
                self.entries.append(entry)
            class_answer.append(aid)
        self.v4 = _fold(ranges.v4.starts, ranges.v4.ids, class_answer, 32)
        self.v6 = _fold(ranges.v6.starts, ranges.v6.ids, class_answer, 128)

    def find(self, address: int, version: int) -> tuple[int, int] | None:
        """(answer id, widest scope) for a client address; None where the map has no answer
        (an IPv4 alias inside the IPv6 tree): the caller asks the database instead."""
        fam = self.v4 if version == 4 else self.v6
        starts = fam.starts
        i = bisect_right(starts, address) - 1
        aid = fam.ids[i]
        if aid < 0:
            return None
        if len(starts) == 1:
            return aid, 0  # one answer for the whole family: client-independent
        lo = starts[i]
        hi = starts[i + 1] - 1 if i + 1 < len(starts) else (1 << fam.bits) - 1
        return aid, widest_scope(address, lo, hi, fam.bits)

    def range_count(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)


def widest_scope(address: int, lo: int, hi: int, bits: int) -> int:
    """The shortest prefix length p whose network around `address` lies inside [lo, hi]:
    it must exclude lo - 1 and hi + 1, i.e. be longer than its common prefix with each."""
    p = 0
    if lo > 0:
        p = bits - (address ^ (lo - 1)).bit_length() + 1
    if hi < (1 << bits) - 1:
        p = max(p, bits - (address ^ (hi + 1)).bit_length() + 1)
    return p


def scope_network(address: int, scope: int, bits: int) -> tuple[int, int]:
    """The scope network (first address, prefix) around an address."""
    mask = ((1 << bits) - 1) ^ ((1 << (bits - scope)) - 1) if scope else 0
    return address & mask, scope
