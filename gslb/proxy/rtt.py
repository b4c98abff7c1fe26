"""Client RTT per client network, for latency steering on the DNS side.

Pure: no I/O, time comes from the injected Clock. http1.py feeds one kernel RTT sample per
request (keyed by the TCP peer); the health endpoint reports the freshest networks.

A network is the peer's /prefix_v4 (IPv4; an IPv4-mapped IPv6 peer counts as IPv4) or
/prefix_v6, as CIDR text. Each keeps an EWMA of its samples: one slow sample (a retransmit)
moves it a little, a real change of path moves it within a few requests.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from ..clock import SYSTEM_CLOCK, Clock

ALPHA = 0.2  # EWMA weight of a new sample


@dataclass(frozen=True)
class RttSpec:
    prefix_v4: int = 24
    prefix_v6: int = 56
    max_age: float = 300.0  # seconds without a sample before a network is not reported
    max_networks: int = 100_000  # networks kept; the least recently seen goes first
    report_networks: int = 2000  # networks in one health report, most recently seen first


@dataclass
class _Entry:
    rtt_ms: float
    samples: int
    last: float  # clock.monotonic() of the last sample


@dataclass(frozen=True)
class NetworkRtt:
    """One network as reported: `last` is the monotonic time of its last sample."""

    network: str
    rtt_ms: float
    samples: int
    last: float


def network_key(address: str, prefix_v4: int = 24, prefix_v6: int = 56) -> str | None:
    """The client network of `address` as CIDR text, or None when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class RttTable:
    """Smoothed RTT per client network, bounded in size and age."""

    def __init__(self, spec: RttSpec = RttSpec(), clock: Clock = SYSTEM_CLOCK) -> None:
        self.spec = spec
        self.clock = clock
        # Ordered by last sample, oldest first: eviction and expiry pop from the front.
        self._nets: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._nets)

    def key(self, address: str) -> str | None:
        """The table's key (client network) for a peer address; None: not an IP address.
        A connection computes it once, not per request."""
        return network_key(address, self.spec.prefix_v4, self.spec.prefix_v6)

    def add(self, address: str, rtt_seconds: float) -> str | None:
        """One RTT sample from a peer; returns its network (None: not an IP address)."""
        key = self.key(address)
        if key is not None:
            self.add_sample(key, rtt_seconds)
        return key

    def add_sample(self, key: str, rtt_seconds: float) -> None:
        """One RTT sample for a client network (a key from `key()`)."""
        if rtt_seconds < 0:
            return
        now = self.clock.monotonic()
        ms = rtt_seconds * 1000.0
        entry = self._nets.get(key)
        if entry is None:
            self._nets[key] = _Entry(ms, 1, now)
            while len(self._nets) > self.spec.max_networks:
                self._nets.popitem(last=False)
        else:
            entry.rtt_ms += ALPHA * (ms - entry.rtt_ms)
            entry.samples += 1
            entry.last = now
            self._nets.move_to_end(key)

    def expire(self) -> None:
        """Drop networks without a sample for max_age (their memory, not only their report)."""
        oldest = self.clock.monotonic() - self.spec.max_age
        while self._nets:
            key, entry = next(iter(self._nets.items()))
            if entry.last > oldest:
                break
            del self._nets[key]

    def recent(self, limit: int | None = None) -> list[NetworkRtt]:
        """Networks younger than max_age, most recently seen first, at most `limit`
        (default report_networks)."""
        self.expire()
        limit = self.spec.report_networks if limit is None else limit
        out: list[NetworkRtt] = []
        for key in reversed(self._nets):
            if len(out) >= limit:
                break
            e = self._nets[key]
            out.append(NetworkRtt(key, e.rtt_ms, e.samples, e.last))
        return out


def merge_rtts(parts: list[list[NetworkRtt]], now: float, spec: RttSpec) -> list[NetworkRtt]:
    """Several workers' reports as one: a network seen by many is their sample-weighted mean.
    Each part is its worker's most recent networks, so the most recent of the union are right."""
    merged: dict[str, NetworkRtt] = {}
    for part in parts:
        for n in part:
            if now - n.last >= spec.max_age:
                continue
            have = merged.get(n.network)
            if have is None:
                merged[n.network] = n
                continue
            samples = have.samples + n.samples
            mean = (have.rtt_ms * have.samples + n.rtt_ms * n.samples) / samples
            merged[n.network] = NetworkRtt(n.network, mean, samples, max(have.last, n.last))
    order = sorted(merged.values(), key=lambda n: n.last, reverse=True)
    return order[: spec.report_networks]


def rtt_json(networks: list[NetworkRtt], now: float) -> dict[str, object]:
    """The "rtt" key of the health body."""
    return {
        "networks": {
            n.network: {
                "rtt_ms": round(n.rtt_ms, 3),
                "samples": n.samples,
                "age": round(max(0.0, now - n.last), 3),
            }
            for n in networks
        }
    }
