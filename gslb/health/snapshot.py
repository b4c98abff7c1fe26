"""Immutable view of target health, swapped by reference.

The DNS hot path reads `current` without awaiting anything; a health change builds a new
snapshot with a higher epoch, so answers cached under an older epoch are never served again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

State = Literal["up", "down", "unknown"]


@dataclass(frozen=True)
class TargetHealth:
    state: State
    reason: str = ""
    # Per-region view ({region: "up"|"down"|"unknown"}), for status and explain.
    regions: Mapping[str, State] = field(default_factory=lambda: MappingProxyType({}))
    since: float = 0.0
    # A timed drain (override down over a window): up, with a falling share, until drain_until
    # (wall times). Steering ramps the target out over the window (gslb/steering/ramp.py).
    drain_from: float = 0.0
    drain_until: float = 0.0
    # Load reported with health by the datacenter's regional proxy (requests/s), None when
    # nothing reports it; spillover weighs datacenters by capacity - load.
    load: float | None = None
    # The capacity (requests/s) the proxy declares; the datacenter's own `capacity` wins.
    capacity: float | None = None


# Round-trip times the regional proxies measured from the TCP connections they serve:
# {client network CIDR (/24 or /56): {datacenter: (rtt seconds, measured at, wall time)}}.
Latency = Mapping[str, Mapping[str, tuple[float, float]]]


@dataclass(frozen=True)
class HealthSnapshot:
    epoch: int
    targets: Mapping[str, TargetHealth] = field(default_factory=lambda: MappingProxyType({}))
    latency: Latency = field(default_factory=lambda: MappingProxyType({}))

    def state(self, target: str) -> State:
        t = self.targets.get(target)
        return t.state if t is not None else "unknown"

    def with_states(self, states: Mapping[str, TargetHealth]) -> HealthSnapshot:
        return HealthSnapshot(self.epoch + 1, MappingProxyType(dict(states)), self.latency)


EMPTY_SNAPSHOT = HealthSnapshot(0)


class HealthHolder:
    """Holds the current snapshot; writers replace it, readers just read `.current`."""

    def __init__(self, initial: HealthSnapshot = EMPTY_SNAPSHOT) -> None:
        self.current = initial
        self._listeners: list[Callable[[HealthSnapshot], object]] = []

    def publish(self, snapshot: HealthSnapshot) -> None:
        self.current = snapshot
        for listener in list(self._listeners):
            listener(snapshot)

    def subscribe(self, listener: Callable[[HealthSnapshot], object]) -> None:
        self._listeners.append(listener)
