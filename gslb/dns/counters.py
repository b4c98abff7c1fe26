"""The DNS node's counters: plain ints and dicts the hot path adds to; read at scrape time.

The node creates one Counters and hands it to every responder generation, so totals survive
reloads without keeping retired copies around.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Latency is timed for one query in LATENCY_SAMPLE, so timing costs nothing measurable.
LATENCY_SAMPLE = 64
LATENCY_BOUNDS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)

# (qtype, rcode, service, first datacenter)
Labels = tuple[int, int, str, str]


@dataclass
class Counters:
    """Answers and cache use; packet-cache hits are counted on the entries and folded in here
    when an entry leaves its cache (eviction, health epoch change, retirement)."""

    queries: int = 0
    answer_hits: int = 0  # answers built from the plan or rendered-answer caches
    packet_hits: int = 0  # packet-cache hits folded in from entries that left their cache
    renders: int = 0
    dropped: int = 0
    errors: int = 0
    acl_refused: int = 0
    acl_dropped: int = 0
    answers: dict[Labels, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    latency_samples: int = 0

    def count(self, labels: Labels, hits: int = 1) -> None:
        self.answers[labels] = self.answers.get(labels, 0) + hits

    def fold(self, labels: Labels, hits: int) -> None:
        """Packet-cache hits of an entry that is leaving its cache."""
        if hits:
            self.answers[labels] = self.answers.get(labels, 0) + hits
            self.packet_hits += hits

    def observe_latency(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BOUNDS, seconds)
        self.latency_counts[index] += 1
        self.latency_sum += seconds
        self.latency_samples += 1
