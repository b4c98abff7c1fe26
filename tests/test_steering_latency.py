"""Latency policy (pure decision; the proxies' TCP_INFO reports feed HealthSnapshot.latency)."""

from __future__ import annotations

from types import MappingProxyType

from gslb.clock import FakeClock
from gslb.health.snapshot import HealthSnapshot, TargetHealth

from .test_steering_support import config_from, harness

LAT = """
lat.example.test:
  policy: latency
  latency: {max_age: 60s}
  types: [A]
  datacenters: [eu-west, us-east]
  on_all_down: fail_open
"""
EU, US = ("eu-west",), ("us-east",)


def publish(h, epoch: int, latency: dict, down: tuple[str, ...] = ()) -> None:
    targets = {n: TargetHealth("down" if n in down else "up") for n in ("eu-west", "us-east")}
    h.health.publish(HealthSnapshot(epoch, MappingProxyType(targets), MappingProxyType(latency)))


def test_lowest_measured_latency_wins_and_scope_is_the_measured_network():
    clock = FakeClock()
    with harness(config_from(LAT), clock=clock) as h:
        now = clock.time()
        publish(h, 1, {"127.2.5.0/24": {"us-east": (0.020, now), "eu-west": (0.080, now)}})
        d = h.decide("lat.example.test", "127.2.5.7", 24)
        assert (d.datacenters, d.scope_prefix) == (US, 24)  # measured: faster, though further
        # An unmeasured Frankfurt network: geoproximity, and a scope clear of 127.2.5.0/24.
        d = h.decide("lat.example.test", "127.2.9.1", 24)
        assert d.datacenters == EU and 16 < d.scope_prefix <= 24
        assert h.decide("lat.example.test", "127.2.200.1", 24).scope_prefix == 17
        # The faster datacenter fails: the next measured one.
        publish(h, 2, {"127.2.5.0/24": {"us-east": (0.020, now), "eu-west": (0.080, now)}}, US)
        assert h.decide("lat.example.test", "127.2.5.7", 24).datacenters == EU
        # The delays swap: DNS follows.
        publish(h, 3, {"127.2.5.0/24": {"us-east": (0.090, now), "eu-west": (0.010, now)}})
        assert h.decide("lat.example.test", "127.2.5.7", 24).datacenters == EU


def test_stale_measurements_expire_without_a_new_snapshot():
    clock = FakeClock()
    with harness(config_from(LAT), clock=clock) as h:
        now = clock.time()
        publish(h, 1, {"127.2.5.0/24": {"us-east": (0.020, now)}})
        assert h.decide("lat.example.test", "127.2.5.7", 24).datacenters == US
        clock.advance(61)
        d = h.decide("lat.example.test", "127.2.5.7", 24)
        assert d.datacenters == EU  # back to geoproximity
        assert d.scope_prefix < 24


def test_explain_shows_the_latency_data():
    clock = FakeClock()
    with harness(config_from(LAT), clock=clock) as h:
        publish(h, 1, {"127.2.5.0/24": {"us-east": (0.020, clock.time())}})
        from gslb.geo.locate import pack_client

        service = h.config.services["lat.example.test."]
        report = h.engine.explain(service, *pack_client("127.2.5.7", 24))
        steps = {s["step"]: s["detail"] for s in report["steps"]}
        assert "us-east 20.0 ms" in steps["latency"]
        assert "measured for 127.2.5.0/24" in steps["latency"]  # the network behind it
        assert report["scope_reason"].startswith("latency: the measured client network")
        clock.advance(30)
        report = h.engine.explain(service, *pack_client("127.2.5.7", 24))
        steps = {s["step"]: s["detail"] for s in report["steps"]}
        assert "us-east 20.0 ms (30 s ago)" in steps["latency"]  # and how old it is
