"""Pure policy helpers, table-driven, plus engine edge cases (no database, Country database)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from gslb.config.validate import load_config
from gslb.geo.locate import Location, pack_client
from gslb.health.snapshot import HealthHolder
from gslb.steering import policies as P
from gslb.steering.engine import SteeringEngine
from gslb.steering.policies import Candidate
from gslb.steering.service import Rule

from .test_steering_support import EXAMPLE, GEOIP_COUNTRY, config_from, harness, snapshot


def _int(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def _loc(continent=None, country=None, sub=None) -> Location:
    return Location(continent, country, sub, None, None, "10.0.0.0/8", 8)


@pytest.mark.parametrize(
    "status, state, unknown_is, up",
    [
        ("up", "down", "down", True),
        ("down", "up", "up", False),
        ("obey", "up", "down", True),
        ("obey", "down", "up", False),
        ("obey", "unknown", "up", True),
        ("obey", "unknown", "down", False),
    ],
)
def test_is_up_table(status, state, unknown_is, up):
    assert P.is_up(status, state, unknown_is) is up


@pytest.mark.parametrize(
    "location, keys",
    [
        (_loc("NA", "US", "CA"), ["NA-US-CA", "NA-US", "NA"]),
        (_loc("EU", "DE"), ["EU-DE", "EU"]),
        (_loc("EU"), ["EU"]),
        (_loc(), []),
        (None, []),
    ],
)
def test_geo_keys_most_specific_first(location, keys):
    assert P.geo_keys(location) == keys


NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32")]
RULES = (
    Rule("a", subnets=(NETS[0],)),
    Rule("b", subnets=(NETS[1], NETS[2])),
    Rule("c", geos=("EU",)),
    Rule("d"),
)


@pytest.mark.parametrize(
    "ip, location, use_client, pool, why",
    [
        ("10.1.2.3", _loc("EU"), True, "b", "subnet 10.1.0.0/16"),  # longest prefix wins
        ("10.2.2.3", _loc("EU"), True, "a", "subnet 10.0.0.0/8"),
        ("2001:db8::1", None, True, "b", "subnet 2001:db8::/32"),
        ("11.0.0.1", _loc("EU", "DE"), True, "c", "geo EU"),
        ("11.0.0.1", _loc("NA"), True, "d", "catch-all"),
        ("10.1.2.3", _loc("EU"), False, "d", "catch-all"),  # source prefix 0: nothing matches
    ],
)
def test_match_rules(ip, location, use_client, pool, why):
    version = ipaddress.ip_address(ip).version
    m = P.match_rules(RULES, location, _int(ip), version, use_client)
    assert m is not None and (m.rule.pool, m.why) == (pool, why)


@pytest.mark.parametrize(
    "ip, prefix, scope",
    [
        ("10.1.2.3", 32, 16),  # inside 10.1/16 (and 10/8): the longer one
        ("10.2.0.0", 24, 15),  # inside 10/8; 10.2.0.0/15 is the widest net without 10.1/16
        ("11.0.0.0", 24, 8),  # outside: 11 vs 10 differ at bit 8 (of /8)
        ("10.2.0.0", 12, 15),  # longer than the source: 10.0.0.0/12 holds the 10.1/16 rule
        ("192.0.2.1", 32, 1),  # differs from 10/8 in the first bit
    ],
)
def test_subnet_scope(ip, prefix, scope):
    assert P.subnet_scope(RULES, _int(ip), 4, prefix) == scope


def test_sticky_key_masks_to_the_shorter_prefix():
    addr, _ = pack_client("10.1.2.3")
    assert P.sticky_key(addr, 32, 24) == (bytes([10, 1, 2, 0, 24]), 24)
    assert P.sticky_key(addr, 16, 24)[1] == 16
    assert P.sticky_key(addr, 0, 24) == (bytes([0, 0, 0, 0, 0]), 0)


def test_sticky_order_is_stable_and_weighted():
    dcs = load_config(EXAMPLE).datacenters
    cands = [Candidate(dcs["us-east"], 1), Candidate(dcs["eu-west"], 3)]
    first = [
        P.sticky_order(cands, bytes([10, i // 256, i % 256, 0, 24]))[0].name for i in range(4000)
    ]
    share = first.count("eu-west") / len(first)
    assert share == pytest.approx(0.75, abs=0.03)
    key = bytes([10, 0, 0, 0, 24])
    assert P.sticky_order(cands, key) == P.sticky_order(list(reversed(cands)), key)


def test_take_count_limits_per_family():
    dcs = load_config(EXAMPLE).datacenters
    order = [Candidate(dcs[n]) for n in ("us-west", "eu-west", "us-east")]
    used, v4, v6 = P.take_count(order, 1, ("A", "AAAA"))
    assert (used, v4, v6) == (("us-west", "eu-west"), ("203.0.113.51",), ("2001:db8:200::21",))
    used, v4, v6 = P.take_count(order, 2, ("A",))
    assert (used, v4, v6) == (("us-west",), ("203.0.113.51", "203.0.113.52"), ())


def test_engine_without_geoip_database():
    cfg = config_from(
        """
        www.example.test: {policy: geoproximity, datacenters: [eu-west, us-east],
                           on_all_down: fail_open}
        """,
        geoip=False,
    )
    engine = SteeringEngine(cfg, None, HealthHolder(), rng=random.Random(1))
    svc = cfg.services["www.example.test."]
    d = engine.decide(svc, *pack_client("127.3.0.1"))
    assert (d.datacenters, d.scope_prefix) == (("eu-west",), 0)  # configured order, no scope
    report = engine.explain(svc, *pack_client("127.3.0.1"))
    assert report["location"] is None and report["answers"] == list(d.ipv4 + d.ipv6)


def test_engine_with_country_database_rules_match_but_no_coordinates():
    cfg = load_config(EXAMPLE, geoip_override=GEOIP_COUNTRY)
    with harness(cfg) as h:
        assert h.decide("geo", "127.3.0.1").datacenters == ("ap-northeast",)  # geo AS
        assert h.decide("geo", "127.2.1.1").datacenters == ("eu-west",)  # geo EU
        d = h.decide("www", "127.3.0.1")
        assert d.datacenters == ("us-east",)  # no coordinates: configured order
        assert d.scope_prefix == 0  # ... everywhere: the answer does not depend on the client


def test_engine_compiles_a_service_it_was_not_built_with():
    cfg = load_config(EXAMPLE)
    other = config_from(
        "x.example.test: {policy: failover, tiers: [[sa-east]], on_all_down: nodata}"
    )
    with harness(cfg) as h:
        d = h.engine.decide(other.services["x.example.test."], *pack_client("127.1.0.1"))
        assert d.datacenters == ("sa-east",)


def test_publish_same_epoch_new_snapshot_still_invalidates():
    with harness(load_config(EXAMPLE)) as h:
        assert h.decide("www", "127.3.0.1").datacenters == ("ap-northeast",)
        h.health.publish(snapshot(0, ap_northeast="down"))
        assert h.decide("www", "127.3.0.1").datacenters != ("ap-northeast",)
