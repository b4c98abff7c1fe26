"""PURE: DNS-level slow start and timed drains.

A datacenter in transition has a share in [0, 1]: a recovered one ramps up over its
`slow_start` window, a drained one ramps down over the drain window. Weighted services
multiply its weight by the share; the other policies keep it for a client network iff the
network's point (a hash of the /24 or /56, in [0, 1)) is below the share. So the same
clients come back first after a recovery, and leave last in a drain, and no client flaps
between answers as the share moves.

Shares are quantised to STEPS steps, so the engine recomputes answers a bounded number of
times per window instead of per query.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..config.model import Datacenter
from ..health.snapshot import HealthSnapshot
from .policies import service_datacenter_names
from .service import Service

STEPS = 20
Kind = Literal["slow_start", "drain"]


@dataclass(frozen=True)
class Transition:
    kind: Kind
    start: float  # wall time the window began
    end: float  # wall time it ends

    def fraction(self, now: float) -> float:
        if self.end <= self.start:
            return 1.0
        return min(1.0, max(0.0, (now - self.start) / (self.end - self.start)))

    def share(self, now: float) -> float:
        """The quantised share at `now`: steps of 1/STEPS, rounded towards the old state."""
        f = self.fraction(now)
        if self.kind == "slow_start":
            return math.floor(f * STEPS) / STEPS
        return math.ceil((1.0 - f) * STEPS - 1e-9) / STEPS

    def active(self, now: float) -> bool:
        return now < self.end

    def step_seconds(self) -> float:
        return max(0.0, self.end - self.start) / STEPS

    def next_change(self, now: float) -> float:
        """Wall time of the next step (or the end)."""
        step = self.step_seconds()
        if step <= 0:
            return self.end
        k = math.floor((now - self.start) / step) + 1
        return min(self.end, self.start + k * step)


def recoveries(
    old: HealthSnapshot | None, new: HealthSnapshot, recovered: Mapping[str, float], now: float
) -> dict[str, float]:
    """When each datacenter last came back: down (or drained out) before and up now starts a
    slow start, from when it came up; anything not plainly up forgets it."""
    out = dict(recovered)
    for name, th in new.targets.items():
        if th.state != "up" or th.drain_until > 0:
            out.pop(name, None)
            continue
        before = old.targets.get(name) if old is not None else None
        if before is not None and (before.state == "down" or 0 < before.drain_until <= now):
            since = th.since if before.state == "down" else now
            out[name] = since if 0 < since <= now else now
    return out


@dataclass(frozen=True)
class RampView:
    ramps: Mapping[str, Mapping[str, Transition]]  # service -> datacenter -> transition
    drained: frozenset[str]  # drain window over, the snapshot not yet saying down
    next_change: float | None  # wall time a share next moves a step (or a window ends)


def ramps_in_force(
    services: Iterable[Service],
    datacenters: Mapping[str, Datacenter],
    snap: HealthSnapshot | None,
    recovered: Mapping[str, float],
    now: float,
) -> RampView:
    """The transitions in force at `now`, per service (a service's slow_start overrides its
    datacenters'), and when the view next changes."""
    targets = snap.targets if snap is not None else {}
    drained = frozenset(n for n, th in targets.items() if 0 < th.drain_until <= now)
    ramps: dict[str, dict[str, Transition]] = {}
    next_change: float | None = None
    for svc in services:
        found: dict[str, Transition] = {}
        for dc_name in service_datacenter_names(svc):
            dc = datacenters.get(dc_name)
            th = targets.get(dc_name)
            t: Transition | None = None
            if th is not None and th.drain_until > now:
                t = Transition("drain", th.drain_from, th.drain_until)
            elif dc_name in recovered and dc is not None:
                window = svc.slow_start if svc.slow_start is not None else dc.slow_start
                start = recovered[dc_name]
                if window > 0 and now < start + window:
                    t = Transition("slow_start", start, start + window)
            if t is not None:
                found[dc_name] = t
                change = t.next_change(now)
                next_change = change if next_change is None else min(next_change, change)
        if found:
            ramps[svc.name] = found
    return RampView(ramps, drained, next_change)


def client_point(address: bytes, prefix: int, hash_prefix: int) -> tuple[float, int]:
    """A client network's point in [0, 1), and the prefix it was hashed over."""
    plen = min(prefix, hash_prefix)
    bits = len(address) * 8
    value = int.from_bytes(address, "big")
    value = value >> (bits - plen) << (bits - plen) if plen else 0
    digest = hashlib.blake2b(
        value.to_bytes(len(address), "big") + bytes([plen]), digest_size=8, person=b"gslb-ramp"
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64, plen


def keeps(point: float, share: float) -> bool:
    return point < share


def transition_ttl(ttl: int, transitions: list[Transition]) -> int:
    """While a transition runs, answers live about one step, so resolvers follow the ramp."""
    if not transitions:
        return ttl
    step = min(t.step_seconds() for t in transitions)
    return max(1, min(ttl, int(step)))


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with a unit: 90, "90s", "10m", "1h". ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        for unit in ("ms", "s", "m", "h"):
            if text.endswith(unit):
                try:
                    seconds = float(text[: -len(unit)]) * units[unit]
                except ValueError:
                    raise ValueError(f"not a duration: {value!r} (use 30s, 10m, 1h)") from None
                break
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"not a duration: {value!r} (use 30s, 10m, 1h)") from None
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative: {value!r}")
    return seconds
