"""Pure quorum aggregation: fresh votes, unknowns, staleness, overrides."""

from __future__ import annotations

import pytest

from gslb.health.aggregate import (
    NO_CHECK,
    NO_FRESH,
    Override,
    RegionReport,
    aggregate,
    aggregate_checks,
    parse_quorum,
    quorum_met,
)
from gslb.health.snapshot import TargetHealth

NOW = 1000.0


def reports(*views: tuple[str, float, str]) -> dict[str, RegionReport]:
    """(region, age, state of 'dc1') -> reports."""
    return {r: RegionReport(NOW - age, {"dc1": s}) for r, age, s in views}  # type: ignore[misc]


def agg(reps, quorum="majority", overrides=None, previous=None, **kw):  # type: ignore[no-untyped-def]
    return aggregate(reps, NOW, 10.0, quorum, overrides or {}, previous or {}, **kw)


def test_majority_two_down_one_up_is_down() -> None:
    out = agg(reports(("us", 1, "down"), ("eu", 1, "down"), ("ap", 1, "up")))
    th = out["dc1"]
    assert th.state == "down"
    assert dict(th.regions) == {"us": "down", "eu": "down", "ap": "up"}
    assert "1/3" in th.reason and "majority" in th.reason


def test_majority_two_up_one_down_is_up() -> None:
    out = agg(reports(("us", 1, "up"), ("eu", 1, "down"), ("ap", 1, "up")))
    assert out["dc1"].state == "up"


def test_majority_tie_is_down() -> None:
    assert agg(reports(("us", 1, "up"), ("eu", 1, "down")))["dc1"].state == "down"


@pytest.mark.parametrize(
    ("quorum", "up", "votes", "expected"),
    [
        ("all", 3, 3, True),
        ("all", 2, 3, False),
        ("any", 1, 3, True),
        ("any", 0, 3, False),
        (0.18, 1, 5, True),  # 20% > 18% (Route 53 style)
        (0.18, 1, 6, False),  # 16.7% is not more than 18%
        ("18%", 1, 5, True),
        ("0.5", 1, 2, False),  # "more than" half
        (1.0, 3, 3, True),  # 1.0 reads as all
        (1.0, 2, 3, False),
    ],
)
def test_quorum_rules(quorum: str | float, up: int, votes: int, expected: bool) -> None:
    assert quorum_met(up, votes, quorum) is expected


@pytest.mark.parametrize("bad", ["most", 0, 1.5, -0.1, "0%", "abc%", True])
def test_bad_quorum_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quorum(bad)  # type: ignore[arg-type]


def test_unknown_reports_do_not_vote() -> None:
    # one up, two unknown: the only vote is up
    out = agg(reports(("us", 1, "up"), ("eu", 1, "unknown"), ("ap", 1, "unknown")))
    assert out["dc1"].state == "up"
    # a region that does not mention the target counts as unknown
    reps = reports(("us", 1, "down"))
    reps["eu"] = RegionReport(NOW, {})
    out = agg(reps)
    assert out["dc1"].state == "down" and out["dc1"].regions["eu"] == "unknown"


def test_all_unknown_is_unknown() -> None:
    out = agg(reports(("us", 1, "unknown"), ("eu", 1, "unknown")))
    assert out["dc1"].state == "unknown"
    assert "all 2 fresh report(s) unknown" in out["dc1"].reason


def test_stale_report_does_not_vote() -> None:
    # counted, the stale "up" would make 2/3 up; fresh only, 1/2 is no majority
    out = agg(reports(("us", 11, "up"), ("eu", 1, "down"), ("ap", 1, "up")))
    assert out["dc1"].state == "down"
    assert "us" not in out["dc1"].regions
    out = agg(reports(("us", 11, "up"), ("eu", 10, "down")))
    assert out["dc1"].state == "down"  # exactly stale_after old is still fresh


def test_no_fresh_reports_holds_last_state_and_flags_it() -> None:
    prev = {"dc1": TargetHealth("up", "up in 3/3", since=500.0)}
    out = agg(reports(("us", 30, "down"), ("eu", 30, "down")), previous=prev)
    assert out["dc1"].state == "up"
    assert out["dc1"].reason == NO_FRESH
    assert out["dc1"].since == 500.0
    # with no previous state at all, it is unknown
    out = agg(reports(("us", 30, "down")))
    assert out["dc1"].state == "unknown" and out["dc1"].reason == NO_FRESH


def test_held_warm_state_keeps_its_mark_and_stays_stable() -> None:
    prev = {"dc1": TargetHealth("down", "warm start: last known state", since=5.0)}
    first = agg({}, targets=["dc1"], previous=prev)
    assert first["dc1"].state == "down"
    assert "warm start" in first["dc1"].reason and first["dc1"].reason.startswith(NO_FRESH)
    second = agg({}, targets=["dc1"], previous=first)
    assert second == first


def test_since_kept_while_state_stays_and_set_on_change() -> None:
    prev = {"dc1": TargetHealth("up", "x", since=10.0)}
    same = agg(reports(("us", 0, "up")), previous=prev)
    assert same["dc1"].since == 10.0
    changed = agg(reports(("us", 0, "down")), previous=prev, wall=2e9)
    assert changed["dc1"].since == 2e9


def test_override_drain_and_force_up_win_with_reason() -> None:
    reps = reports(("us", 1, "up"), ("eu", 1, "up"))
    out = agg(reps, overrides={"dc1": Override("down", "maintenance CHG-1")})
    assert out["dc1"].state == "down"
    assert "override down: maintenance CHG-1" in out["dc1"].reason
    assert "checks: up" in out["dc1"].reason
    reps = reports(("us", 1, "down"))
    out = agg(reps, overrides={"dc1": Override("up", "false alarm")})
    assert out["dc1"].state == "up"


def test_clearing_override_without_fresh_reports_falls_back_to_checked_state() -> None:
    checks_prev = {"dc1": TargetHealth("up", "up in 2/2", since=1.0)}
    final_prev = {"dc1": TargetHealth("down", "override down: x", since=2.0)}
    out = aggregate({}, NOW, 10, "majority", {}, final_prev, previous_checks=checks_prev)
    assert out["dc1"].state == "up"


def test_unchecked_target_is_up_unless_overridden() -> None:
    out = agg({}, targets=[], unchecked=["dc9"])
    assert out["dc9"].state == "up" and out["dc9"].reason == NO_CHECK
    out = agg({}, targets=[], unchecked=["dc9"], overrides={"dc9": Override("down", "x")})
    assert out["dc9"].state == "down"


def test_tuple_reports_and_explicit_targets() -> None:
    out = aggregate_checks(
        {"us": (NOW, {"dc1": "up", "dc2": "down"})}, NOW, 10, "any", {}, targets=["dc1", "dc3"]
    )
    assert set(out) == {"dc1", "dc3"}
    assert out["dc1"].state == "up" and out["dc3"].state == "unknown"


def test_warm_state_holds_until_first_real_vote() -> None:
    prev = {"dc1": TargetHealth("up", "warm start: last known state, saved X", since=5.0)}
    out = agg(reports(("us", 1, "unknown")), previous=prev)
    assert out["dc1"].state == "up" and out["dc1"].since == 5.0
    assert out["dc1"].reason.startswith("warm start")
    assert agg(reports(("us", 1, "unknown")), previous=out) == out  # stable
    # first real vote replaces it
    voted = agg(reports(("us", 1, "down")), previous=out)
    assert voted["dc1"].state == "down" and "warm" not in voted["dc1"].reason
    # after that, all-unknown is unknown again
    assert agg(reports(("us", 1, "unknown")), previous=voted)["dc1"].state == "unknown"
