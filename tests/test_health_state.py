"""Pure rise/fall state machine, driven by a FakeClock."""

from __future__ import annotations

import pytest

from gslb.clock import FakeClock
from gslb.health.state import CheckResult, RiseFall


def make(rise: int = 2, fall: int = 3) -> tuple[RiseFall, FakeClock]:
    clock = FakeClock(1000.0)
    return RiseFall("dc1", rise=rise, fall=fall, clock=clock), clock


def test_starts_unknown_with_no_evidence() -> None:
    m, _ = make()
    assert m.state == "unknown"
    assert m.last_transition is None
    assert m.view()["state"] == "unknown"


def test_from_unknown_rise_successes_make_up() -> None:
    m, clock = make(rise=2)
    assert m.record(True) is None
    assert m.state == "unknown"
    clock.advance(5)
    t = m.record(CheckResult(ok=True, latency=0.012))
    assert t is not None and (t.old, t.new) == ("unknown", "up")
    assert t.at == 1005.0 and m.since == 1005.0
    assert "2 consecutive successes" in t.reason
    assert m.view()["last_latency_ms"] == 12.0


def test_from_unknown_fall_failures_make_down_with_evidence() -> None:
    m, clock = make(fall=3)
    assert m.record(False, "refused") is None
    assert m.record(False, "refused") is None
    clock.advance(1)
    t = m.record(CheckResult(ok=False, error="timeout after 2.0s"))
    assert t is not None and (t.old, t.new) == ("unknown", "down")
    assert t.last_error == "timeout after 2.0s"
    assert "3 consecutive failures: timeout" in t.reason
    assert m.view()["last_error"] == "timeout after 2.0s"


def test_up_needs_fall_consecutive_failures_and_success_resets_streak() -> None:
    m, _ = make(rise=1, fall=3)
    m.record(True)
    assert m.state == "up"
    # flapping: fail, fail, ok, fail, fail - never three in a row
    for ok in (False, False, True, False, False):
        assert m.record(ok, "boom") is None
        assert m.state == "up"
    t = m.record(False, "boom")
    assert t is not None and t.new == "down"


def test_down_needs_rise_consecutive_successes() -> None:
    m, _ = make(rise=3, fall=1)
    m.record(False, "x")
    assert m.state == "down"
    for ok in (True, True, False, True, True):
        assert m.record(ok, "x") is None
        assert m.state == "down"
    t = m.record(True)
    assert t is not None and (t.old, t.new) == ("down", "up")


def test_no_transition_when_staying_in_state() -> None:
    m, _ = make(rise=1, fall=1)
    assert m.record(True) is not None
    assert m.record(True) is None
    assert len(m.history) == 1


def test_force_and_warm_start() -> None:
    clock = FakeClock(50.0)
    m = RiseFall("pool/member", rise=2, fall=2, clock=clock, initial="up", since=10.0)
    assert m.state == "up" and m.since == 10.0
    t = m.force("down", "drained")
    assert t is not None and t.reason == "drained" and m.since == 50.0
    assert m.force("down", "again") is None
    # streaks restart after force: one success is not enough with rise=2
    assert m.record(True) is None
    assert m.record(True) is not None and m.state == "up"


def test_configure_keeps_state_and_validates() -> None:
    m, _ = make(rise=5, fall=5)
    m.record(True)
    m.configure(rise=2, fall=2)
    assert m.record(True) is not None and m.state == "up"
    with pytest.raises(ValueError):
        m.configure(0, 1)
    with pytest.raises(ValueError):
        RiseFall("x", rise=1, fall=0)


def test_history_is_bounded() -> None:
    m, _ = make(rise=1, fall=1)
    for i in range(100):
        m.record(i % 2 == 0, "e")
    assert len(m.history) == 20
    assert m.checks == 100
