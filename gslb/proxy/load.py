"""The proxy's load: requests in flight, requests completed per second, configured capacity.

Pure: no I/O, time comes from the injected Clock. http1.py calls begin()/end() once per
request; the health endpoint reads a snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..clock import SYSTEM_CLOCK, Clock

WINDOW = 10  # one-second buckets in the requests-per-second window


@dataclass(frozen=True)
class LoadSnapshot:
    """One meter's numbers (or several merged): what /health reports as "load"."""

    in_flight: int
    requests_per_second: float
    capacity: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "requests_per_second": round(self.requests_per_second, 3),
            "capacity": self.capacity,
        }


class LoadMeter:
    """In-flight count plus completions in a ring of one-second buckets."""

    def __init__(
        self, capacity: float | None = None, clock: Clock = SYSTEM_CLOCK, window: int = WINDOW
    ) -> None:
        self.capacity = capacity
        self.clock = clock
        self.window = window
        self.in_flight = 0
        self._counts = [0] * window
        self._seconds = [-1] * window  # which whole second each bucket holds

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        # Never below zero: a stray end must not hide real in-flight requests elsewhere.
        self.in_flight = max(0, self.in_flight - 1)
        second = math.floor(self.clock.monotonic())
        i = second % self.window
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._counts[i] = 0
        self._counts[i] += 1

    def requests_per_second(self, now: float | None = None) -> float:
        """Completions over the last `window` whole seconds (the current, partial one
        included), divided by the window."""
        second = math.floor(self.clock.monotonic() if now is None else now)
        oldest = second - self.window + 1
        total = sum(
            n for s, n in zip(self._seconds, self._counts, strict=True) if oldest <= s <= second
        )
        return total / self.window

    def snapshot(self, now: float | None = None) -> LoadSnapshot:
        return LoadSnapshot(self.in_flight, self.requests_per_second(now), self.capacity)


def merge_loads(parts: list[LoadSnapshot], capacity: float | None) -> LoadSnapshot:
    """Several workers' loads as one proxy: the counts add up; capacity is the proxy's."""
    return LoadSnapshot(
        sum(p.in_flight for p in parts), sum(p.requests_per_second for p in parts), capacity
    )
