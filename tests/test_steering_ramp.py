"""DNS-level slow start and timed drains, with the injected clock: shares over time, the same
client networks first, shorter TTLs while a transition runs."""

from __future__ import annotations

from collections import Counter

import pytest

from gslb.clock import FakeClock
from gslb.health.aggregate import Override, apply_overrides
from gslb.health.snapshot import TargetHealth
from gslb.steering import ramp

from .test_steering_support import config_from, harness

WEIGHTED = """
w.example.test:
  policy: weighted
  ttl: 60
  slow_start: 100s
  datacenters:
    - {value: us-east, weight: 50}
    - {value: eu-west, weight: 50}
  on_all_down: fail_open
"""

# Two datacenters near each other so that every European client ranks eu-west first.
GEO = """
g.example.test:
  policy: geoproximity
  ttl: 60
  datacenters: [eu-west, us-east]
  on_all_down: fail_open
"""
EU_SLOW = """
datacenters:
  us-east: {latitude: 39.0438, longitude: -77.4874, ipv4: [192.0.2.11]}
  eu-west: {latitude: 53.3498, longitude: -6.2603, ipv4: [192.0.2.21], slow_start: 10m}
"""
# Frankfurt (127.2/16) client /24s.
CLIENTS = [f"127.2.{i}.1" for i in range(200)]


def _share_of(h, name: str, dc: str, clients: list[str]) -> tuple[float, set[str], set[int]]:
    got = [h.decide(name, c, 24) for c in clients]
    chosen = {c for c, d in zip(clients, got, strict=True) if d.datacenters == (dc,)}
    return len(chosen) / len(clients), chosen, {d.ttl for d in got}


def test_transition_shares_are_quantised_towards_the_old_state():
    up = ramp.Transition("slow_start", 100.0, 200.0)
    assert [up.share(t) for t in (100, 104.9, 105, 150, 199, 200)] == [0, 0, 0.05, 0.5, 0.95, 1]
    down = ramp.Transition("drain", 100.0, 200.0)
    assert [down.share(t) for t in (100, 104.9, 105, 150, 199, 200)] == [1, 1, 0.95, 0.5, 0.05, 0]
    assert up.next_change(101) == 105 and up.next_change(199.5) == 200
    assert ramp.transition_ttl(60, [up]) == 5 and ramp.transition_ttl(3, [up]) == 3


@pytest.mark.parametrize("text, seconds", [(90, 90), ("90s", 90), ("10m", 600), ("1h", 3600)])
def test_durations(text, seconds):
    assert ramp.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten", "-5s", True, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        ramp.parse_duration(bad)


def test_weighted_slow_start_ramps_the_recovered_share():
    clock = FakeClock()
    with harness(config_from(WEIGHTED), clock=clock) as h:
        h.set_health({"us-east": "up", "eu-west": "down"})
        assert h.decide("w.example.test", "127.2.0.1").datacenters == ("us-east",)
        h.set_health({"us-east": "up", "eu-west": TargetHealth("up", since=clock.time())})
        shares = []
        for i in range(5):
            picks = Counter(
                h.decide("w.example.test", "127.2.0.1").datacenters for _ in range(4000)
            )
            shares.append(picks[("eu-west",)] / 4000)
            ttl = h.decide("w.example.test", "127.2.0.1").ttl
            assert ttl == (5 if i < 4 else 60)  # one step of the 100 s window during the ramp
            clock.advance(25)
        # weights 50 * share vs 50: share s gives s / (1 + s) of the picks
        assert shares[0] == 0
        for got, s in zip(shares[1:4], (0.25, 0.5, 0.75), strict=True):
            assert got == pytest.approx(s / (1 + s), abs=0.04)
        assert shares[4] == pytest.approx(0.5, abs=0.04)  # full share once the window is over
        assert h.decide("w.example.test", "127.2.0.1").ttl == 60


def test_geoproximity_slow_start_brings_the_same_clients_back_first():
    clock = FakeClock()
    with harness(config_from(GEO, datacenters=EU_SLOW), clock=clock) as h:
        h.set_health({"us-east": "up", "eu-west": "down"})
        assert _share_of(h, "g.example.test", "eu-west", CLIENTS)[0] == 0
        h.set_health({"us-east": "up", "eu-west": TargetHealth("up", since=clock.time())})
        previous: set[str] = set()
        fractions = []
        for minute in range(11):
            fraction, chosen, ttls = _share_of(h, "g.example.test", "eu-west", CLIENTS)
            fractions.append(fraction)
            assert previous <= chosen  # nobody who came back is sent away again
            previous = chosen
            if minute < 10:
                assert ttls == {30}  # a step is 30 s of the 10 minute window
                assert fraction == pytest.approx(minute / 10, abs=0.12)
            clock.advance(60)
        assert fractions[-1] == 1.0
        d = h.decide("g.example.test", "127.2.0.1", 24)
        assert d.ttl == 60 and d.deterministic


def test_timed_drain_ramps_the_datacenter_out_over_the_window():
    clock = FakeClock()
    with harness(config_from(GEO), clock=clock) as h:
        checks = {"us-east": TargetHealth("up"), "eu-west": TargetHealth("up")}
        drain = {"eu-west": Override("down", "maintenance", clock.time(), drain=600)}
        previous: set[str] = set(CLIENTS)
        for minute in range(11):
            states = apply_overrides(checks, drain, {}, clock.time())
            if minute == 0:
                assert states["eu-west"].state == "up"
                assert states["eu-west"].drain_until == clock.time() + 600
            h.set_health(states)
            fraction, chosen, _ = _share_of(h, "g.example.test", "eu-west", CLIENTS)
            assert chosen <= previous  # clients only leave; none comes back mid-drain
            previous = chosen
            assert fraction == pytest.approx(1 - minute / 10, abs=0.12)
            clock.advance(60)
        assert apply_overrides(checks, drain, {}, clock.time())["eu-west"].state == "down"


def test_drain_window_passes_without_a_new_snapshot():
    # The engine's own clock ends the drain even if no new health snapshot arrives.
    clock = FakeClock()
    with harness(config_from(GEO), clock=clock) as h:
        checks = {"us-east": TargetHealth("up"), "eu-west": TargetHealth("up")}
        drain = {"eu-west": Override("down", "maintenance", clock.time(), drain=100)}
        h.set_health(apply_overrides(checks, drain, {}, clock.time()))
        assert _share_of(h, "g.example.test", "eu-west", CLIENTS)[0] == 1.0
        clock.advance(50)
        assert _share_of(h, "g.example.test", "eu-west", CLIENTS)[0] == pytest.approx(0.5, abs=0.12)
        clock.advance(60)
        assert _share_of(h, "g.example.test", "eu-west", CLIENTS)[0] == 0


def test_explain_narrates_the_ramp():
    clock = FakeClock()
    with harness(config_from(GEO, datacenters=EU_SLOW), clock=clock) as h:
        h.set_health({"us-east": "up", "eu-west": "down"})
        h.decide("g.example.test", "127.2.0.1", 24)
        h.set_health({"us-east": "up", "eu-west": TargetHealth("up", since=clock.time())})
        clock.advance(300)
        service = h.config.services["g.example.test."]
        from gslb.geo.locate import pack_client

        report = h.engine.explain(service, *pack_client("127.2.0.1", 24))
        ramp_steps = [s["detail"] for s in report["steps"] if s["step"] == "ramp"]
        assert any("eu-west slow start 50% of 600 s: share 0.50" in s for s in ramp_steps)
        assert report["transitions"]["eu-west"]["kind"] == "slow_start"
        assert report["transitions"]["eu-west"]["share"] == 0.5
