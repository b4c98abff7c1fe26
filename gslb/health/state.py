"""PURE rise/fall state machine for one health-checked target.

Generic on purpose: it knows a target *name* and check outcomes, nothing about datacenters,
sockets or HTTP, so the probe agent, the local monitor and the regional proxy's pool all share
it. Time comes from an injected Clock; nothing here sleeps or does I/O.

Rules:
- A target starts `unknown` (or in a given warm-start state) with no evidence.
- `rise` consecutive successes make it `up`; `fall` consecutive failures make it `down`.
- A success resets the failure streak and vice versa, so flapping never flips the state.
- Every state change is kept as a Transition with its evidence (streak, last error, time).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..clock import SYSTEM_CLOCK, Clock
from .report import ProxyReport
from .snapshot import State

HISTORY = 20  # transitions kept per target: enough for status/explain, bounded memory


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check attempt."""

    ok: bool
    error: str = ""  # why it failed (empty on success)
    latency: float | None = None  # seconds, if measured
    detail: str = ""  # e.g. "HTTP 200" - shown in status, never used for decisions
    report: ProxyReport | None = None  # load and client RTTs a regional proxy sent with it


@dataclass(frozen=True)
class Transition:
    """One state change and the evidence that caused it."""

    target: str
    old: State
    new: State
    at: float  # wall clock (clock.time()) of the deciding result
    reason: str  # human readable, e.g. "3 consecutive failures: connection refused"
    last_error: str = ""


class RiseFall:
    """Consecutive-result hysteresis for one target."""

    def __init__(
        self,
        target: str,
        rise: int = 2,
        fall: int = 3,
        clock: Clock = SYSTEM_CLOCK,
        initial: State = "unknown",
        since: float | None = None,
    ) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.target = target
        self.rise = rise
        self.fall = fall
        self.clock = clock
        self.state: State = initial
        self.since: float = clock.time() if since is None else since
        self.successes = 0  # current success streak
        self.failures = 0  # current failure streak
        self.last_error = ""
        self.last_result: CheckResult | None = None
        self.last_checked: float | None = None
        self.checks = 0  # total results recorded
        self.history: deque[Transition] = deque(maxlen=HISTORY)

    def configure(self, rise: int, fall: int) -> None:
        """Change thresholds (config reload) without losing state or streaks."""
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise, self.fall = rise, fall

    def record(self, result: CheckResult | bool, error: str = "") -> Transition | None:
        """Feed one check outcome; returns the Transition if the state changed."""
        if isinstance(result, bool):
            result = CheckResult(ok=result, error=error)
        now = self.clock.time()
        self.checks += 1
        self.last_result = result
        self.last_checked = now
        if result.ok:
            self.successes += 1
            self.failures = 0
            if self.state != "up" and self.successes >= self.rise:
                n = self.successes
                return self._move("up", now, f"{n} consecutive success{'es' if n != 1 else ''}")
        else:
            self.failures += 1
            self.successes = 0
            self.last_error = result.error or "check failed"
            if self.state != "down" and self.failures >= self.fall:
                n = self.failures
                return self._move(
                    "down",
                    now,
                    f"{n} consecutive failure{'s' if n != 1 else ''}: {self.last_error}",
                )
        return None

    def force(self, state: State, reason: str) -> Transition | None:
        """Set the state directly (warm start, admin action); streaks restart from zero."""
        self.successes = self.failures = 0
        if state == self.state:
            return None
        return self._move(state, self.clock.time(), reason)

    def _move(self, new: State, at: float, reason: str) -> Transition:
        t = Transition(self.target, self.state, new, at, reason, self.last_error)
        self.state = new
        self.since = at
        self.history.append(t)
        return t

    @property
    def last_transition(self) -> Transition | None:
        return self.history[-1] if self.history else None

    def view(self) -> dict[str, object]:
        """JSON-ready summary for status pages and the agent's snapshot."""
        last = self.last_result
        return {
            "state": self.state,
            "since": self.since,
            "successes": self.successes,
            "failures": self.failures,
            "last_error": self.last_error or None,
            "last_latency_ms": (
                round(last.latency * 1000, 3) if last and last.latency is not None else None
            ),
            "last_checked": self.last_checked,
            "checks": self.checks,
            "reason": self.history[-1].reason if self.history else "",
        }


def states(machines: Iterable[RiseFall]) -> dict[str, State]:
    """{target: state} of a set of machines."""
    return {m.target: m.state for m in machines}
