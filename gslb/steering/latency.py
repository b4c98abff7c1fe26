"""PURE: the latency policy's view of the proxies' measurements, indexed for the query path.

HealthSnapshot.latency is {client network: {datacenter: (rtt seconds, measured at)}}. A query
needs two things from it: the fresh round-trip times of the measured network holding the
client, and how long the ECS scope must be to stay clear of every other measured network (the
answer differs inside them). Scanning the table per query costs O(networks); this index costs
one dict lookup per prefix length and one bisect, built once per snapshot, service max_age and
expiry (the engine rebuilds it when a measurement ages out).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

Table = Mapping[str, Mapping[str, tuple[float, float]]]


@dataclass(frozen=True)
class _Family:
    lengths: tuple[int, ...]  # prefix lengths present, longest first
    bases: Mapping[int, list[int]]  # length -> sorted network addresses
    rtts: Mapping[tuple[int, int], Mapping[str, float]]  # (length, base) -> {dc: rtt}
    names: Mapping[tuple[int, int], str]  # (length, base) -> the network as the table names it


@dataclass(frozen=True)
class Measured:
    rtts: Mapping[str, float]  # {dc: rtt seconds} for the client's measured network; {} if none
    scope: int  # the prefix length needed so the scope network overlaps no other measured one
    network: str | None = None  # the measured network the rtts are for (a table key)


NOTHING = Measured({}, 0)


class LatencyIndex:
    """Fresh measurements at `now` (at most `max_age` old), by family and prefix length."""

    def __init__(self, table: Table, now: float, max_age: float) -> None:
        raw: dict[int, dict[int, dict[int, dict[str, float]]]] = {4: {}, 6: {}}
        names: dict[int, dict[tuple[int, int], str]] = {4: {}, 6: {}}
        self.expires: float | None = None  # when the next fresh measurement ages out
        for text, per_dc in table.items():
            fresh: dict[str, float] = {}
            for dc, (rtt, at) in per_dc.items():
                if now - at <= max_age:
                    fresh[dc] = rtt
                    end = at + max_age
                    self.expires = end if self.expires is None else min(self.expires, end)
            if not fresh:
                continue
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            by_base = raw[net.version].setdefault(net.prefixlen, {})
            by_base[int(net.network_address)] = fresh
            names[net.version][(net.prefixlen, int(net.network_address))] = text
        self._families = {
            version: _Family(
                tuple(sorted(by_len, reverse=True)),
                {length: sorted(by_base) for length, by_base in by_len.items()},
                {
                    (length, base): rtts
                    for length, by_base in by_len.items()
                    for base, rtts in by_base.items()
                },
                names[version],
            )
            for version, by_len in raw.items()
        }
        self.empty = not any(raw[4]) and not any(raw[6])

    def lookup(self, address: bytes, prefix: int, measured_prefix: int) -> Measured:
        """What the measurements say for a client (`address` as sent, `prefix` bits of it).

        The client's network counts only if the client sent enough of its address to fall
        inside it (`prefix` at least the network's length, or `measured_prefix`); the most
        specific such network wins."""
        version = 4 if len(address) == 4 else 6
        family = self._families[version]
        if not family.lengths:
            return NOTHING
        bits = 32 if version == 4 else 128
        value = int.from_bytes(address, "big")
        rtts: Mapping[str, float] = {}
        network: str | None = None
        found = False
        scope = 0
        for length in family.lengths:
            base = value >> (bits - length) << (bits - length) if length else 0
            inside = family.rtts.get((length, base))
            if inside is not None:
                scope = max(scope, length)
                if not found and prefix >= min(length, measured_prefix):
                    rtts, found = inside, True
                    network = family.names[(length, base)]
            # The nearest other networks of this length, below and above the client: the
            # longest common prefix with any of them is reached at one of the two.
            bases = family.bases[length]
            i = bisect.bisect_left(bases, base)
            for j in (i - 1, i + 1 if inside is not None else i):
                if 0 <= j < len(bases) and bases[j] != base:
                    common = bits - (value ^ bases[j]).bit_length()
                    if common < length:
                        scope = max(scope, common + 1)
        return Measured(rtts, scope, network)
