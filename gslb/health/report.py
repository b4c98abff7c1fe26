"""PURE: what a regional proxy reports with its health (load, client round-trip times), and how
that report travels: proxy health body -> probe agent -> DNS node.

The proxy's health page (`gslb proxy`, status_path) carries

    "load": {"in_flight": 3, "requests_per_second": 41.5, "capacity": 500.0},
    "rtt": {"networks": {"10.99.0.0/24": {"rtt_ms": 40.2, "samples": 12, "age": 0.8}}}

Times cross machines as ages (seconds before the sender wrote them), never as wall times, so
clocks that disagree between a proxy, an agent and a DNS node do not age or rejuvenate data.
Each receiver turns an age into a time of its own clock the moment it reads it.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

# A probe reads at most this much of a health body that carries a report (a proxy lists at most
# a few thousand client networks, about 60 bytes each).
REPORT_LIMIT = 256 * 1024

# {client network: (rtt seconds, measured at)}; "measured at" is the holder's own clock.
Rtts = Mapping[str, tuple[float, float]]


@dataclass(frozen=True)
class ProxyReport:
    """One proxy's report as its holder sees it (times on the holder's clock)."""

    requests_per_second: float | None = None
    in_flight: int | None = None
    capacity: float | None = None
    rtts: Rtts = field(default_factory=lambda: MappingProxyType({}))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f >= 0 else None


def _network(text: object) -> str | None:
    """The canonical CIDR text of a client network, or None for anything else."""
    if not isinstance(text, str):
        return None
    return _canonical(text)


@lru_cache(maxsize=65536)  # the same networks come back with every check
def _canonical(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        return None


def parse_proxy_body(body: bytes, now: float) -> ProxyReport | None:
    """A proxy's health body -> its report (ages become times of `now`'s clock).

    None when the body is not JSON or carries neither "load" nor "rtt" (a plain health page).
    Malformed entries are left out: a report never fails the health check it came with."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or ("load" not in doc and "rtt" not in doc):
        return None
    load = doc.get("load") if isinstance(doc.get("load"), dict) else {}
    assert isinstance(load, dict)
    in_flight = _number(load.get("in_flight"))
    rtts: dict[str, tuple[float, float]] = {}
    rtt = doc.get("rtt")
    networks = rtt.get("networks") if isinstance(rtt, dict) else None
    if isinstance(networks, dict):
        for text, entry in networks.items():
            net = _network(text)
            if net is None or not isinstance(entry, dict):
                continue
            ms, age = _number(entry.get("rtt_ms")), _number(entry.get("age"))
            if ms is not None and age is not None:
                rtts[net] = (ms / 1000.0, now - age)
    return ProxyReport(
        _number(load.get("requests_per_second")),
        int(in_flight) if in_flight is not None else None,
        _number(load.get("capacity")),
        MappingProxyType(rtts),
    )


def report_view(report: ProxyReport, now: float) -> dict[str, Any]:
    """JSON for the agent's snapshot and events: times as ages at `now`."""
    return {
        "requests_per_second": report.requests_per_second,
        "in_flight": report.in_flight,
        "capacity": report.capacity,
        "rtt": {
            net: [round(rtt * 1000, 3), round(max(0.0, now - at), 3)]
            for net, (rtt, at) in report.rtts.items()
        },
    }


def report_from_view(view: object, now: float) -> ProxyReport | None:
    """The agent's JSON (report_view) -> a report on the receiver's clock; None if malformed."""
    if not isinstance(view, dict):
        return None
    rtts: dict[str, tuple[float, float]] = {}
    raw = view.get("rtt")
    if isinstance(raw, dict):
        for text, pair in raw.items():
            net = _network(text)
            if net is None or not isinstance(pair, list) or len(pair) != 2:
                continue
            ms, age = _number(pair[0]), _number(pair[1])
            if ms is not None and age is not None:
                rtts[net] = (ms / 1000.0, now - age)
    in_flight = _number(view.get("in_flight"))
    return ProxyReport(
        _number(view.get("requests_per_second")),
        int(in_flight) if in_flight is not None else None,
        _number(view.get("capacity")),
        MappingProxyType(rtts),
    )


# {client network: {datacenter: (rtt seconds, measured at)}}, as HealthSnapshot.latency holds it.
LatencyTable = Mapping[str, Mapping[str, tuple[float, float]]]


def merge_latency(
    reports: Iterable[Mapping[str, ProxyReport]], now: float, max_age: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """Every region's reports ({datacenter: report}) -> one latency table.

    Every region probes the same proxies, so they relay the same measurements: per (network,
    datacenter) the newest wins. Measurements older than `max_age` are left out."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for per_target in reports:
        for dc, report in per_target.items():
            for net, (rtt, at) in report.rtts.items():
                if now - at > max_age:
                    continue
                held = table.setdefault(net, {}).get(dc)
                if held is None or at > held[1]:
                    table[net][dc] = (rtt, at)
    return table


def latency_changed(
    published: LatencyTable, new: LatencyTable, *, tolerance: float = 0.1, refresh: float = 10.0
) -> bool:
    """Is `new` worth a new health snapshot over `published`?

    A snapshot makes the DNS node recompute answers (and ECS scope maps), so small wobbles are
    held back: a network or datacenter added or gone, a round-trip time moved by more than
    `tolerance` (relative; and 1 ms), or a measurement refreshed `refresh` seconds past the
    published one (so published times never age out while the proxies still measure)."""
    if published.keys() != new.keys():
        return True
    for net, per_dc in new.items():
        old = published[net]
        if old.keys() != per_dc.keys():
            return True
        for dc, (rtt, at) in per_dc.items():
            old_rtt, old_at = old[dc]
            if abs(rtt - old_rtt) > max(tolerance * old_rtt, 0.001):
                return True
            if at - old_at >= refresh:
                return True
    return False


def load_changed(published: float | None, new: float | None, tolerance: float = 0.1) -> bool:
    """Has a reported load moved enough (relative, and by more than one request/s) to matter?"""
    if published is None or new is None:
        return published is not new
    return abs(new - published) > max(tolerance * published, 1.0)
