"""Smaller steering features: per-rule failover chains, per-pool TTL, address rotation."""

from __future__ import annotations

from collections import Counter

import pytest

from gslb.errors import ConfigError

from .test_steering_support import config_from, harness

CHAINS = """
chain.example.test:
  policy: geolocation
  pools:
    uk: {values: [eu-west], ttl: 120}
    fra: {values: [us-east]}
    iad: {values: [sa-east]}
    rest: {values: [ap-northeast]}
  rules:
    - geos: [EU]
      pools: [uk, fra, iad]
    - geos: [NA]
      pools: [fra, uk]
    - pool: rest
  on_all_down: servfail
"""


def test_rule_pools_are_a_failover_chain_over_shared_pools():
    with harness(config_from(CHAINS)) as h:
        d = h.decide("chain.example.test", "127.2.0.1")  # Frankfurt: EU
        assert (d.datacenters, d.ttl) == (("eu-west",), 120)  # the uk pool's own TTL
        h.set_health({"eu-west": "down"})
        d = h.decide("chain.example.test", "127.2.0.1")
        assert (d.datacenters, d.ttl) == (("us-east",), 30)  # fra: the service TTL
        h.set_health({"eu-west": "down", "us-east": "down"})
        assert h.decide("chain.example.test", "127.2.0.1").datacenters == ("sa-east",)
        # The NA rule shares the same pools in another order.
        h.set_health({"us-east": "down"})
        assert h.decide("chain.example.test", "127.1.0.1").datacenters == ("eu-west",)
        h.set_health({"eu-west": "down", "us-east": "down", "sa-east": "down"})
        assert h.decide("chain.example.test", "127.2.0.1").outcome == "servfail"


@pytest.mark.parametrize(
    "rule, message",
    [
        ("{geos: [EU], pools: [uk, nope]}", "undefined pool 'nope'"),
        ("{geos: [EU], pools: [uk, uk]}", "pools: duplicate uk"),
        ("{geos: [EU], pool: uk, pools: [uk]}", "pool and pools are alternatives"),
        ("{geos: [EU], pools: []}", "pools: must not be empty"),
    ],
)
def test_rule_pools_are_validated(rule, message):
    svc = f"""
    bad.example.test:
      policy: geolocation
      pools:
        uk: {{values: [eu-west]}}
        rest: {{values: [us-east]}}
      rules:
        - {rule}
        - pool: rest
      on_all_down: fail_open
    """
    with pytest.raises(ConfigError) as exc:
        config_from(svc)
    assert message in str(exc.value)
    assert "rules[0].pools" in str(exc.value)


ROTATE = """
rot.example.test:
  policy: geoproximity
  datacenters: [many, us-east]
  types: [A]
  count: 2
  on_all_down: fail_open
"""
MANY = """
datacenters:
  many: {latitude: 53.35, longitude: -6.26, ipv4: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4]}
  us-east: {latitude: 39.04, longitude: -77.49, ipv4: [192.0.2.11]}
"""


def test_addresses_rotate_when_count_is_smaller_than_the_list():
    with harness(config_from(ROTATE, datacenters=MANY)) as h:
        seen = Counter()
        for _ in range(400):
            d = h.decide("rot.example.test", "127.2.0.1")
            assert len(d.ipv4) == 2 and not d.deterministic
            assert d.datacenters == ("many",)
            seen.update(d.ipv4)
        # Every address takes its turn, about equally (each answer shows two of the four).
        assert set(seen) == {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}
        assert min(seen.values()) > 400 * 2 / 4 * 0.7


def test_no_rotation_when_every_address_fits():
    svc = ROTATE.replace("count: 2", "count: 4")
    with harness(config_from(svc, datacenters=MANY)) as h:
        d = h.decide("rot.example.test", "127.2.0.1")
        assert d.deterministic and len(d.ipv4) == 4


SPILL = """
sp.example.test:
  policy: geoproximity
  spillover: 3
  types: [A]
  datacenters: [fra, ams, par, lon, iad]
  on_all_down: fail_open
"""
EUROPE = """
datacenters:
  fra: {latitude: 50.11, longitude: 8.68, ipv4: [192.0.2.1], capacity: 100}
  ams: {latitude: 52.37, longitude: 4.90, ipv4: [192.0.2.2], capacity: 300}
  par: {latitude: 48.86, longitude: 2.35, ipv4: [192.0.2.3], capacity: 100}
  lon: {latitude: 51.51, longitude: -0.13, ipv4: [192.0.2.4], capacity: 100}
  iad: {latitude: 39.04, longitude: -77.49, ipv4: [192.0.2.5], capacity: 1000}
"""
FRANKFURT = [f"127.2.{i}.1" for i in range(256)]


def _split(h, clients):
    return Counter(h.decide("sp.example.test", c, 24).datacenters[0] for c in clients)


def test_spillover_spreads_a_failed_datacenters_clients_by_headroom():
    with harness(config_from(SPILL, datacenters=EUROPE)) as h:
        assert _split(h, FRANKFURT) == {"fra": 256}
        h.set_health({"fra": "down"})
        before = {c: h.decide("sp.example.test", c, 24).datacenters[0] for c in FRANKFURT}
        split = Counter(before.values())
        # The 3 nearest healthy (ams, par, lon) by capacity 300:100:100; iad gets none.
        assert set(split) == {"ams", "par", "lon"}
        assert split["ams"] / 256 == pytest.approx(0.6, abs=0.1)
        d = h.decide("sp.example.test", FRANKFURT[0], 24)
        assert d.scope_prefix == 24  # the split is per client network
        # Consistent: asking again (a new health epoch, same health) moves nobody.
        h.set_health({"fra": "down", "iad": "up"})
        again = {c: h.decide("sp.example.test", c, 24).datacenters[0] for c in FRANKFURT}
        assert again == before
        # Paris reports load at its capacity: no headroom, its share moves to the others.
        from gslb.health.snapshot import TargetHealth

        h.set_health({"fra": "down", "par": TargetHealth("up", load=100.0)})
        loaded = {c: h.decide("sp.example.test", c, 24).datacenters[0] for c in FRANKFURT}
        assert "par" not in loaded.values()
        # Only Paris's clients moved.
        assert all(loaded[c] == before[c] for c in FRANKFURT if before[c] != "par")


def test_spillover_leaves_clients_of_healthy_datacenters_alone():
    with harness(config_from(SPILL, datacenters=EUROPE)) as h:
        h.set_health({"fra": "down"})
        # London clients' nearest is lon, which is up: no spread, wide scope from the map.
        d = h.decide("sp.example.test", "127.10.0.1", 24)
        assert d.datacenters == ("lon",) and d.scope_prefix <= 16


def test_reported_load_reaches_the_snapshot_as_the_median_of_fresh_regions():
    from gslb.health.aggregate import RegionReport, aggregate
    from gslb.health.report import ProxyReport

    def told(rps: float, capacity: float | None = None) -> dict[str, ProxyReport]:
        return {"fra": ProxyReport(requests_per_second=rps, capacity=capacity)}

    reports = {
        "a": RegionReport(100.0, {"fra": "up"}, told(40.0, 500.0)),
        "b": RegionReport(100.0, {"fra": "up"}, told(60.0, 500.0)),
        "c": RegionReport(100.0, {"fra": "up"}, told(90.0)),
        "stale": RegionReport(0.0, {"fra": "up"}, told(1000.0, 9000.0)),
    }
    out = aggregate(reports, 105.0, 10.0, "majority", {}, {})
    assert out["fra"].state == "up" and out["fra"].load == 60.0
    assert out["fra"].capacity == 500.0  # regions that report no capacity do not vote
    alone = aggregate({"a": RegionReport(100.0, {"fra": "up"})}, 105.0, 10.0, "majority", {}, {})
    assert alone["fra"].load is None and alone["fra"].capacity is None
