"""The responder's caches, and the one rule for when their entries stop being true.

- packet cache: query bytes after the ID -> response bytes after the ID (then a dict lookup and
  an ID patch answer the query). The key holds the whole query, OPT flags (DO) included.
- plan cache: (name, type, DO) -> a Rendered static answer, a shared Negative template, or a
  ServicePlan that still needs a steering decision.
- rendered-answer cache: (name, type, DO, steering key) -> a Rendered service answer.

The epoch rule: everything lives as long as its generation (a reload builds new caches), and
entries whose content depends on health (service answers in the packet cache) live for one
health epoch only. Decisions carry their records in the steering key, so the plan and
rendered-answer caches stay true across epochs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from .answer import ServicePlan
from .counters import Counters, Labels
from .render import Negative, Rendered
from .rrl import ResponseClass


class PacketEntry:
    """A packet-cache entry: the response after the ID, what it counts as, and its hits."""

    __slots__ = ("response", "labels", "hits", "rclass", "rrl_key")

    def __init__(
        self, response: bytes, labels: Labels, rclass: ResponseClass, rrl_key: bytes
    ) -> None:
        self.response = response
        self.labels = labels
        self.hits = 0
        self.rclass = rclass  # rate limiting applies to cache hits like to any answer
        self.rrl_key = rrl_key


Plan = Rendered | Negative | ServicePlan


class Caches:
    """All caches of one responder generation. OrderedDict, not dict: evicting the oldest of a
    dict with next(iter(d)) walks over the holes earlier deletions left (~10 us under a flood)."""

    def __init__(
        self, counters: Counters, packet_size: int, answer_size: int, health: Any = None
    ) -> None:
        self.counters = counters
        self.health = health  # HealthHolder, or None: then nothing health-dependent is cached
        self.packets: OrderedDict[bytes, PacketEntry] = OrderedDict()
        self.gslb_packets: OrderedDict[bytes, PacketEntry] = OrderedDict()
        self.epoch = -1  # the health epoch gslb_packets belong to
        self.plans: OrderedDict[tuple[bytes, int, bool], Plan] = OrderedDict()
        self.answers: OrderedDict[tuple[bytes, int, bool, Hashable], Rendered] = OrderedDict()
        self.negatives: dict[tuple[Any, Any], Negative] = {}
        self.packet_size = packet_size
        self.answer_size = answer_size
        self._labels: dict[Labels, Labels] = {}

    def gslb_packet(self, key: bytes) -> PacketEntry | None:
        """A health-dependent packet-cache entry, if it was made in the current epoch."""
        if self.health is None:
            return None
        if self.epoch != self.health.current.epoch:
            self._clear(self.gslb_packets)
            return None
        return self.gslb_packets.get(key)

    def remember_packet(
        self,
        key: bytes,
        response: bytes,
        labels: Labels,
        rclass: ResponseClass,
        rrl_key: bytes,
        health_dependent: bool,
    ) -> None:
        if self.packet_size <= 0:
            return
        if health_dependent:
            if self.health is None:
                return
            cache = self.gslb_packets
            epoch = self.health.current.epoch
            if self.epoch != epoch:
                self._clear(cache)
                self.epoch = epoch
        else:
            cache = self.packets
        # Few distinct label tuples exist; share them instead of one per cache entry.
        labels = self._labels.setdefault(labels, labels)
        if len(cache) >= self.packet_size:
            _, evicted = cache.popitem(last=False)
            self.counters.fold(evicted.labels, evicted.hits)
        cache[key] = PacketEntry(response, labels, rclass, rrl_key)

    def remember_plan(self, key: tuple[bytes, int, bool], plan: Plan) -> None:
        if len(self.plans) >= self.answer_size:
            self.plans.popitem(last=False)
        self.plans[key] = plan

    def remember_answer(self, key: tuple[bytes, int, bool, Hashable], rendered: Rendered) -> None:
        if len(self.answers) >= self.answer_size:
            self.answers.popitem(last=False)
        self.answers[key] = rendered

    def live_hits(self) -> tuple[dict[Labels, int], int]:
        """Hits of the entries still cached, not yet folded into the counters."""
        counts: dict[Labels, int] = {}
        total = 0
        for cache in (self.packets, self.gslb_packets):
            for entry in list(cache.values()):
                if entry.hits:
                    counts[entry.labels] = counts.get(entry.labels, 0) + entry.hits
                    total += entry.hits
        return counts, total

    def retire(self) -> None:
        """Fold every live hit into the counters; called once when a reload replaces us."""
        self._clear(self.packets)
        self._clear(self.gslb_packets)

    def _clear(self, cache: OrderedDict[bytes, PacketEntry]) -> None:
        fold = self.counters.fold
        for entry in cache.values():
            if entry.hits:
                fold(entry.labels, entry.hits)
        cache.clear()
