"""PURE passive health: outlier ejection, slow start and the retry budget.

Everything takes `now` (monotonic seconds) as an argument; nothing sleeps or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_failures: int = 5  # 5xx answers or connection failures in a row
    base_ejection: float = 30.0  # first ejection lasts this long; the n-th lasts n times as long
    max_ejection: float = 300.0  # cap on one ejection's length
    max_ejected_percent: float = 50.0  # never eject more than this share of the pool at once


class OutlierState:
    """Per-member passive-health record (Envoy's outlier detection, simplified)."""

    __slots__ = ("failures", "ejections", "ejected_until", "returned_at")

    def __init__(self) -> None:
        self.failures = 0
        self.ejections = 0  # consecutive ejections; grows the next ejection's length
        self.ejected_until = 0.0
        self.returned_at: float | None = None

    def is_ejected(self, now: float) -> bool:
        return now < self.ejected_until


def record_outcome(
    state: OutlierState,
    ok: bool,
    now: float,
    settings: OutlierSettings,
    ejected_now: int,
    pool_size: int,
) -> bool:
    """Feed one request outcome. Returns True if the member has just been ejected.

    `ejected_now` is how many members of the pool are ejected at this moment; the cap on the
    ejected share keeps a pool-wide outage (e.g. a bad deploy everywhere) from emptying the pool.
    """
    if ok:
        state.failures = 0
        # A member that has behaved for a full max_ejection after coming back starts over.
        if state.returned_at is not None and now - state.returned_at >= settings.max_ejection:
            state.ejections = 0
            state.returned_at = None
        return False
    state.failures += 1
    if state.failures < settings.consecutive_failures or state.is_ejected(now):
        return False
    if (ejected_now + 1) * 100.0 > settings.max_ejected_percent * pool_size:
        return False
    state.ejections += 1
    length = min(settings.base_ejection * state.ejections, settings.max_ejection)
    state.ejected_until = now + length
    state.returned_at = state.ejected_until
    state.failures = 0
    return True


def slow_start_factor(now: float, up_since: float | None, window: float) -> float:
    """Share of its weight a member gets `now`: ramps linearly from 10% to 100% over `window`."""
    if window <= 0 or up_since is None:
        return 1.0
    elapsed = now - up_since
    if elapsed >= window:
        return 1.0
    return max(0.1, elapsed / window)


class RetryBudget:
    """Envoy-style budget: retries in flight may not exceed a share of active requests
    (with a floor), so a failing upstream does not get a multiplied retry storm."""

    def __init__(self, percent: float = 20.0, min_concurrency: int = 3) -> None:
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.active_requests = 0
        self.active_retries = 0

    def allows(self) -> bool:
        limit = max(self.min_concurrency, self.active_requests * self.percent / 100.0)
        return self.active_retries < limit
