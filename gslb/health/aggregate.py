"""PURE quorum across regional health reports, with staleness and manual overrides.

Input: what each region last said about each target and when we heard it. Output: one
TargetHealth per target. No I/O and no clock: `now` is passed in, so every rule is testable
with plain numbers.

Rules, per target:
- Only FRESH reports vote (received within `stale_after` of `now`).
- A region saying `unknown` (or not mentioning the target) casts no vote.
- up when the up votes meet the quorum over the up+down votes; otherwise down.
- All fresh votes unknown -> unknown (except that a warm-start state holds until the first
  real vote, so restarting the whole system does not begin blind).
- No fresh report at all -> the previous state holds, flagged in the reason.
- An override (drain = down, force up) wins over the checks; the reason says so.
- A target without a health check is up (nothing says otherwise), like Route 53 records
  without a health check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from .report import ProxyReport, load_changed
from .snapshot import State, TargetHealth

OverrideMode = Literal["down", "up"]
NO_FRESH = "no fresh reports; holding last state"
NO_CHECK = "no health check configured"
WARM = "warm start"


@dataclass(frozen=True)
class RegionReport:
    """What one region said last, and when we received it (monitor's clock, not the agent's)."""

    received_at: float
    states: Mapping[str, State]
    # What each target's regional proxy reported with its health (load, capacity, client
    # round-trip times); spillover weighs datacenters by capacity - load, the medians over
    # fresh regions.
    reports: Mapping[str, ProxyReport] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Override:
    mode: OverrideMode
    reason: str
    at: float = 0.0  # wall time it was set
    drain: float = 0.0  # mode down over this many seconds (a timed drain) instead of at once


Quorum = str | float


def parse_quorum(value: Quorum) -> Quorum:
    """Normalise a quorum setting: "majority" | "all" | "any" | fraction in (0, 1].

    Accepts a float, a numeric string ("0.18") or a percentage ("18%"). Raises ValueError.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid quorum {value!r}")
    if isinstance(value, int | float):
        q = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("majority", "all", "any"):
            return text
        try:
            q = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"invalid quorum {value!r}: use majority, all, any, or a fraction 0 < q <= 1"
            ) from None
    if not 0 < q <= 1:
        raise ValueError(f"invalid quorum {value!r}: a fraction must be in (0, 1]")
    return q


def quorum_met(up: int, votes: int, quorum: Quorum) -> bool:
    """Do `up` of `votes` (up+down) meet the quorum? votes must be > 0."""
    q = parse_quorum(quorum)
    if q == "majority":
        return 2 * up > votes
    if q == "all":
        return up == votes
    if q == "any":
        return up >= 1
    assert isinstance(q, float)
    if q >= 1.0:
        return up == votes  # "more than 100%" is impossible; read it as all
    return up > q * votes


def describe_quorum(quorum: Quorum) -> str:
    q = parse_quorum(quorum)
    return q if isinstance(q, str) else f">{q:.0%}"


def fresh_reports(
    reports: Mapping[str, RegionReport], now: float, stale_after: float
) -> dict[str, RegionReport]:
    return {r: rep for r, rep in reports.items() if now - rep.received_at <= stale_after}


def _as_report(value: RegionReport | tuple[float, Mapping[str, State]]) -> RegionReport:
    if isinstance(value, RegionReport):
        return value
    received_at, states = value
    return RegionReport(received_at, states)


def aggregate_checks(
    reports: Mapping[str, RegionReport | tuple[float, Mapping[str, State]]],
    now: float,
    stale_after: float,
    quorum: Quorum,
    previous: Mapping[str, TargetHealth],
    *,
    targets: Iterable[str] | None = None,
    unchecked: Iterable[str] = (),
    wall: float | None = None,
) -> dict[str, TargetHealth]:
    """What the checks say, before overrides. `previous` is the previous result of this
    function (so a held state is the last *checked* state, never a cleared override)."""
    reps = {r: _as_report(v) for r, v in reports.items()}
    fresh = fresh_reports(reps, now, stale_after)
    stamp = now if wall is None else wall
    no_check = set(unchecked)
    if targets is None:
        names: set[str] = set(previous) | no_check
        for rep in reps.values():
            names.update(rep.states)
    else:
        names = set(targets) | no_check
    qdesc = describe_quorum(quorum)

    out: dict[str, TargetHealth] = {}
    for name in sorted(names):
        prev = previous.get(name)
        regions: dict[str, State] = {r: rep.states.get(name, "unknown") for r, rep in fresh.items()}
        state: State
        if name in no_check:
            state, reason = "up", NO_CHECK
        elif not fresh:
            state = prev.state if prev is not None else "unknown"
            if prev is not None and prev.reason.startswith(NO_FRESH):
                reason = prev.reason  # already flagged; keep the text stable
            elif prev is not None and prev.reason.startswith(WARM):
                reason = f"{NO_FRESH} ({prev.reason})"
            else:
                reason = NO_FRESH
        else:
            up = sum(1 for s in regions.values() if s == "up")
            down = sum(1 for s in regions.values() if s == "down")
            votes = up + down
            if votes == 0 and prev is not None and WARM in prev.reason:
                # Agents restarted too and have no verdict yet: keep the warm state until
                # the first real vote instead of falling back to unknown.
                state = prev.state
                reason = f"{WARM}: last known state; no verdict yet in {len(fresh)} fresh report(s)"
            elif votes == 0:
                state = "unknown"
                reason = f"no verdict yet: all {len(fresh)} fresh report(s) unknown"
            elif quorum_met(up, votes, quorum):
                state = "up"
                reason = f"up in {up}/{votes} voting regions (quorum {qdesc})"
            else:
                state = "down"
                reason = f"up in only {up}/{votes} voting regions (quorum {qdesc})"
        since = prev.since if prev is not None and prev.state == state else stamp
        told = [rep.reports[name] for rep in fresh.values() if name in rep.reports]
        load = _median([r.requests_per_second for r in told])
        capacity = _median([r.capacity for r in told])
        out[name] = TargetHealth(
            state, reason, MappingProxyType(regions), since, load=load, capacity=capacity
        )
    return out


def _median(values: Iterable[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def hold_steady_loads(
    new: Mapping[str, TargetHealth], published: Mapping[str, TargetHealth]
) -> dict[str, TargetHealth]:
    """Loads within `load_changed`'s tolerance of the published ones keep the published value,
    so a wobble of a few requests/s does not make a new snapshot (and new answers)."""
    out = dict(new)
    for name, th in new.items():
        old = published.get(name)
        if old is None:
            continue
        load = th.load if load_changed(old.load, th.load) else old.load
        capacity = th.capacity if load_changed(old.capacity, th.capacity) else old.capacity
        if (load, capacity) != (th.load, th.capacity):
            out[name] = replace(th, load=load, capacity=capacity)
    return out


def apply_overrides(
    checks: Mapping[str, TargetHealth],
    overrides: Mapping[str, Override],
    previous: Mapping[str, TargetHealth],
    wall: float,
) -> dict[str, TargetHealth]:
    """Overrides win over checks; `previous` is the previous final result (for `since`)."""
    out: dict[str, TargetHealth] = {}
    for name in sorted(set(checks) | set(overrides)):
        base = checks.get(name) or TargetHealth("unknown", "not checked")
        override = overrides.get(name)
        if override is None:
            th = base
        elif override.mode == "down" and wall < override.at + override.drain and base.state == "up":
            # A timed drain: still up while steering ramps it out; down once the window ends.
            until = override.at + override.drain
            reason = f"draining until {until:.0f}: {override.reason} (checks: up; {base.reason})"
            th = replace(
                base, state="up", reason=reason, drain_from=override.at, drain_until=until
            )
        else:
            reason = (
                f"override {override.mode}: {override.reason} (checks: {base.state}; {base.reason})"
            )
            # The proxy's load still tells: a forced-down datacenter keeps its report.
            th = replace(base, state=override.mode, reason=reason, drain_from=0.0, drain_until=0.0)
        prev = previous.get(name)
        if prev is not None:
            since = prev.since if prev.state == th.state else wall
        else:
            since = th.since if override is None else wall
        out[name] = replace(th, since=since)
    return out


MANUAL_FAILBACK = "failback manual: went down; returns when an operator clears this override"


def manual_failback_overrides(
    checks: Mapping[str, TargetHealth],
    overrides: Mapping[str, Override],
    manual: Iterable[str],
    wall: float,
) -> dict[str, Override]:
    """`failback: manual` targets that the checks now call down and no override holds yet: an
    override down for each, so that recovering does not bring them back by itself (only an
    operator clearing the override does; the override machinery persists and shows it)."""
    return {
        name: Override("down", MANUAL_FAILBACK, wall)
        for name in manual
        if name not in overrides and (th := checks.get(name)) is not None and th.state == "down"
    }


def aggregate(
    reports: Mapping[str, RegionReport | tuple[float, Mapping[str, State]]],
    now: float,
    stale_after: float,
    quorum: Quorum,
    overrides: Mapping[str, Override],
    previous: Mapping[str, TargetHealth],
    *,
    previous_checks: Mapping[str, TargetHealth] | None = None,
    targets: Iterable[str] | None = None,
    unchecked: Iterable[str] = (),
    wall: float | None = None,
) -> dict[str, TargetHealth]:
    """Reports + overrides -> {target: TargetHealth}.

    previous: the previous final result. previous_checks: the previous pre-override result
    (from aggregate_checks); pass it when overrides may have been set, so clearing an
    override while no report is fresh falls back to the last checked state.
    targets: the full target set (default: every target named anywhere).
    unchecked: targets with no health check (always up unless overridden).
    wall: timestamp for `since` of changed targets (default: now).
    """
    stamp = now if wall is None else wall
    checks = aggregate_checks(
        reports,
        now,
        stale_after,
        quorum,
        previous if previous_checks is None else previous_checks,
        targets=targets,
        unchecked=unchecked,
        wall=stamp,
    )
    return apply_overrides(checks, overrides, previous, stamp)
