"""The signature cache: one RRSIG RRset per distinct RRset content and signing window.

Keyed by what a signature covers (owner, type, TTL, the set of rdata) plus the signing window,
so the thousands of GSLB variants (ECS networks, steering keys) that give the same addresses
share one signature. Bounded; eviction pops the oldest entry of an OrderedDict in O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import dns.rrset


def content_key(rrset: dns.rrset.RRset) -> Hashable:
    """What a signature depends on: owner (case-folded), type, TTL and the rdata set."""
    return (
        rrset.name.canonicalize(),
        rrset.rdtype,
        rrset.ttl,
        frozenset(rdata.to_digestable() for rdata in rrset),
    )


class SignatureCache:
    """A bounded map content key -> RRSIG RRset, with hit, miss and eviction counters."""

    __slots__ = ("_data", "maxsize", "hits", "misses", "evictions")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"signature cache size must be >= 1, got {maxsize}")
        self._data: OrderedDict[Hashable, dns.rrset.RRset] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> dns.rrset.RRset | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: dns.rrset.RRset) -> None:
        data = self._data
        if key not in data and len(data) >= self.maxsize:
            data.popitem(last=False)
            self.evictions += 1
        data[key] = value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
