"""Steering policies through SteeringEngine.decide: test database, seeded rng, injected health."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gslb.config.validate import load_config
from gslb.steering import policies as P
from gslb.steering.policies import Candidate

from .test_steering_support import EXAMPLE, config_from, harness

# -- geoproximity --


@pytest.mark.parametrize(
    "client, expected",
    [
        ("127.1.0.1", "us-west"),  # San Francisco
        ("127.6.0.1", "us-east"),  # New York
        ("127.11.0.1", "us-east"),  # Toronto
        ("127.7.0.1", "eu-west"),  # Dublin
        ("127.2.0.1", "eu-west"),  # Frankfurt
        ("127.17.0.1", "eu-west"),  # Cairo
        ("127.3.0.1", "ap-northeast"),  # Tokyo
        ("127.18.0.1", "ap-northeast"),  # Seoul
        ("127.4.0.1", "sa-east"),  # Sao Paulo
        ("127.14.0.1", "sa-east"),  # Buenos Aires
        ("127.5.0.1", "ap-southeast"),  # Sydney
        ("127.13.0.1", "ap-northeast"),  # Singapore: Tokyo is nearer than Sydney
        ("2001:db8:3::1", "ap-northeast"),  # IPv6 client in Tokyo
        ("2001:db8:7::1", "eu-west"),  # IPv6 client in Dublin
    ],
)
def test_clients_on_each_continent_get_their_nearest_datacenter(client, expected):
    with harness(load_config(EXAMPLE)) as h:
        d = h.decide("www.example.test", client)
        assert d.outcome == "answer"
        assert d.datacenters[0] == expected
        dc = h.config.datacenters[expected]
        assert d.ipv4 == dc.ipv4[:1]


def test_geoproximity_skips_down_datacenter_to_next_nearest():
    with harness(load_config(EXAMPLE)) as h:
        assert h.decide("www", "127.2.0.1").datacenters == ("eu-west",)
        h.set_health({"eu-west": "down"})
        assert h.decide("www", "127.2.0.1").datacenters == ("us-east",)


def test_unknown_location_keeps_configured_order():
    with harness(load_config(EXAMPLE)) as h:
        d = h.decide("www", "127.0.0.1")  # not in the database
        assert d.datacenters == ("us-east",)  # first in the service's list
        assert d.scope_prefix == 16  # the database's network for "unknown"


# Frankfurt is 1088 km from Dublin and ~890 km from Warsaw: bias decides.
BIAS_DCS = """
datacenters:
  dublin: {latitude: 53.3498, longitude: -6.2603, ipv4: [192.0.2.1], bias: %s}
  warsaw: {latitude: 52.2297, longitude: 21.0122, ipv4: [192.0.2.2], bias: %s}
"""
BIAS_SVC = """
prox.example.test:
  policy: geoproximity
  datacenters: [dublin, warsaw]
  on_all_down: fail_open
"""


@pytest.mark.parametrize(
    "dublin_bias, warsaw_bias, expected",
    [
        (0, 0, "warsaw"),
        (30, 0, "dublin"),  # positive bias grows Dublin's area past Frankfurt
        (0, -30, "dublin"),  # negative bias shrinks Warsaw's area
        (10, 0, "warsaw"),  # a small bias is not enough: 1088 * 0.9 = 979 > 890
    ],
)
def test_bias_moves_the_boundary(dublin_bias, warsaw_bias, expected):
    cfg = config_from(BIAS_SVC, BIAS_DCS % (dublin_bias, warsaw_bias))
    with harness(cfg) as h:
        assert h.decide("prox.example.test", "127.2.0.1").datacenters == (expected,)


def test_biased_distance_formula_matches_route53():
    assert P.biased_distance(1000.0, 0) == 1000.0
    assert P.biased_distance(1000.0, 25) == pytest.approx(750.0)
    assert P.biased_distance(1000.0, -50) == pytest.approx(1500.0)


def test_great_circle_distance():
    # Dublin -> Tokyo is about 9,600 km; a point to itself is 0.
    assert P.distance_km(53.3498, -6.2603, 35.6762, 139.6503) == pytest.approx(9600, rel=0.02)
    assert P.distance_km(10, 20, 10, 20) == 0


# -- geolocation and subnet rules --

RULES_SVC = """
geo.example.test:
  policy: geolocation
  pools:
    sub: {values: [sa-east]}
    cal: {values: [ap-northeast]}
    us: {values: [us-east]}
    na: {values: [sa-east]}
    eu: {values: [eu-west]}
    rest: {values: [us-east]}
  rules:
    - subnets: [127.2.128.0/17, 2001:db8:2:8000::/49]
      pool: sub
    - geos: [NA-US-CA]
      pool: cal
    - geos: [NA-US]
      pool: us
    - geos: [NA, EU-GB]
      pool: na
    - geos: [EU]
      pool: eu
    - pool: rest
  on_all_down: fail_open
"""


@pytest.mark.parametrize(
    "client, prefix, expected, scope",
    [
        ("127.2.200.1", None, "sa-east", 17),  # subnet rule beats the EU geo rule
        ("127.2.1.1", None, "eu-west", 17),  # EU rule; scope must exclude the /17 rule
        # ECS /16 covers both halves: the answer holds for the lower /17 only, so the scope is
        # longer than the source (RFC 7871 section 7.2.1) and the resolver asks again.
        ("127.2.0.0", 16, "eu-west", 17),
        ("2001:db8:2:8000::", 56, "sa-east", 49),  # IPv6 subnet rule
        ("127.1.0.1", None, "ap-northeast", 16),  # subdivision beats country
        ("127.6.0.1", None, "us-east", 16),  # country beats continent
        ("127.11.0.1", None, "sa-east", 16),  # continent NA (Canada)
        ("127.10.0.1", None, "sa-east", 16),  # country EU-GB beats continent EU
        ("127.7.0.1", None, "eu-west", 16),  # continent EU
        ("127.3.0.1", None, "us-east", 16),  # no match: catch-all
        ("127.0.0.1", None, "us-east", 16),  # unknown location: catch-all
    ],
)
def test_rules_subnets_beat_geos_and_specific_geos_win(client, prefix, expected, scope):
    with harness(config_from(RULES_SVC)) as h:
        d = h.decide("geo.example.test", client, prefix)
        assert d.datacenters == (expected,)
        assert d.scope_prefix == scope


def test_prefix_zero_uses_catch_all_and_scope_zero():
    with harness(config_from(RULES_SVC)) as h:
        d = h.decide("geo.example.test", "0.0.0.0", 0)
        assert (d.datacenters, d.scope_prefix) == (("us-east",), 0)


def test_pool_fallback_chain_and_value_status():
    svc = """
    chain.example.test:
      policy: geolocation
      pools:
        eu: {values: [eu-west], fallback: na}
        na:
          values: [{value: us-east, status: down}, {value: sa-east}]
          fallback: asia
        asia: {values: [{value: ap-northeast, status: up}]}
      rules:
        - geos: [EU]
          pool: eu
        - pool: na
      on_all_down: servfail
    """
    with harness(config_from(svc)) as h:
        assert h.decide("chain.example.test", "127.2.0.1").datacenters == ("eu-west",)
        h.set_health({"eu-west": "down"})
        # us-east is forced down by its status, so na answers with sa-east
        assert h.decide("chain.example.test", "127.2.0.1").datacenters == ("sa-east",)
        h.set_health({"eu-west": "down", "sa-east": "down", "ap-northeast": "down"})
        # status: up beats the failing check
        assert h.decide("chain.example.test", "127.2.0.1").datacenters == ("ap-northeast",)


# -- failover --

FAILOVER_SVC = """
fo.example.test:
  policy: failover
  tiers:
    - [us-east]
    - [eu-west, sa-east]
    - [ap-northeast]
  count: 2
  on_all_down: servfail
"""


def test_failover_tiers_in_priority_order():
    with harness(config_from(FAILOVER_SVC)) as h:
        d = h.decide("fo.example.test", "127.3.0.1")
        assert d.datacenters == ("us-east",)  # count 2, but only the first tier answers
        assert d.scope_prefix == 0  # client-independent
        h.set_health({"us-east": "down"})
        assert h.decide("fo.example.test", "127.3.0.1").datacenters == ("eu-west", "sa-east")
        h.set_health({"us-east": "down", "eu-west": "down"})
        assert h.decide("fo.example.test", "127.3.0.1").datacenters == ("sa-east",)
        h.set_health({"us-east": "down", "eu-west": "down", "sa-east": "down"})
        assert h.decide("fo.example.test", "127.3.0.1").datacenters == ("ap-northeast",)
        h.set_health({"us-east": "up"})
        assert h.decide("fo.example.test", "127.3.0.1").datacenters == ("us-east",)


def test_failover_then_weighted_inside_the_tier():
    with harness(load_config(EXAMPLE), seed=3) as h:
        h.set_health({"us-east": "up", "us-west": "up", "eu-west": "up"})
        firsts = Counter(h.decide("api", "127.1.0.1").ipv4[0] for _ in range(4000))
        assert set(firsts) == {"192.0.2.11", "203.0.113.51"}  # never the second tier
        assert firsts["192.0.2.11"] / 4000 == pytest.approx(0.75, abs=0.03)
        h.set_health({"us-east": "down", "us-west": "down", "eu-west": "up"})
        assert h.decide("api", "127.1.0.1").datacenters == ("eu-west",)


# -- weighted --

WEIGHTED_SVC = """
w.example.test:
  policy: weighted
  datacenters:
    - {value: us-east, weight: 70}
    - {value: eu-west, weight: 20}
    - {value: ap-northeast, weight: 10}
  count: %d
  on_all_down: nodata
"""


@pytest.mark.parametrize("count", [1, 2])
def test_weights_hold_statistically(count):
    draws = 20000
    with harness(config_from(WEIGHTED_SVC % count), seed=11) as h:
        firsts = Counter(
            h.decide("w.example.test", "127.1.0.1").datacenters[0] for _ in range(draws)
        )
        assert firsts["us-east"] / draws == pytest.approx(0.70, abs=0.015)
        assert firsts["eu-west"] / draws == pytest.approx(0.20, abs=0.015)
        assert firsts["ap-northeast"] / draws == pytest.approx(0.10, abs=0.015)
        d = h.decide("w.example.test", "127.1.0.1")
        assert d.scope_prefix == 0 and not d.deterministic
        assert len(d.ipv4) == count and len(set(d.ipv4)) == count


def test_weighted_renormalises_without_a_down_datacenter():
    with harness(config_from(WEIGHTED_SVC % 1), seed=5) as h:
        h.set_health({"us-east": "down"})
        got = Counter(h.decide("w.example.test", "127.1.0.1").datacenters[0] for _ in range(6000))
        assert set(got) == {"eu-west", "ap-northeast"}
        assert got["eu-west"] / 6000 == pytest.approx(2 / 3, abs=0.03)


def test_weighted_same_seed_same_sequence():
    cfg = config_from(WEIGHTED_SVC % 1)
    seqs = []
    for _ in range(2):
        with harness(cfg, seed=99) as h:
            seqs.append([h.decide("w.example.test", "127.1.0.1").datacenters for _ in range(50)])
    assert seqs[0] == seqs[1]


def test_weighted_order_helper_never_drops_candidates():
    dcs = load_config(EXAMPLE).datacenters
    cands = [Candidate(dcs[n], w) for n, w in (("us-east", 5), ("eu-west", 1), ("sa-east", 1))]
    for seed in range(50):
        out = P.weighted_order(cands, random.Random(seed))
        assert sorted(c.name for c in out) == sorted(c.name for c in cands)


# -- sticky --

STICKY_SVC = """
s.example.test:
  policy: sticky
  datacenters: [us-east, eu-west, ap-northeast, sa-east]
  sticky: {ipv4_prefix: 24, ipv6_prefix: 56}
  on_all_down: fail_open
"""


def test_sticky_moves_only_the_failed_datacenters_clients():
    clients = [f"10.{i // 256}.{i % 256}.0" for i in range(2000)]
    with harness(config_from(STICKY_SVC)) as h:
        before = {c: h.decide("s.example.test", c, 24).datacenters[0] for c in clients}
        spread = Counter(before.values())
        assert set(spread) == {"us-east", "eu-west", "ap-northeast", "sa-east"}
        assert min(spread.values()) > 350  # roughly even: 500 each
        h.set_health({"eu-west": "down"})
        after = {c: h.decide("s.example.test", c, 24).datacenters[0] for c in clients}
        for c in clients:
            if before[c] != "eu-west":
                assert after[c] == before[c], c
            else:
                assert after[c] != "eu-west"
        moved = Counter(after[c] for c in clients if before[c] == "eu-west")
        assert len(moved) == 3  # the failed DC's clients spread over all the others
        h.set_health({})
        assert {c: h.decide("s.example.test", c, 24).datacenters[0] for c in clients} == before


def test_sticky_hashes_the_network_not_the_host():
    with harness(config_from(STICKY_SVC)) as h:
        a = h.decide("s.example.test", "10.1.2.3")
        b = h.decide("s.example.test", "10.1.2.200")
        assert a.datacenters == b.datacenters
        assert a.scope_prefix == 24
        assert h.decide("s.example.test", "2001:db8:5:1::1").scope_prefix == 56
        assert h.decide("s.example.test", "10.1.0.0", 16).scope_prefix == 16
        assert h.decide("s.example.test", "0.0.0.0", 0).scope_prefix == 0


# -- on_all_down and unknown --

DOWN_SVC = """
d.example.test:
  policy: geoproximity
  datacenters: [us-east, {value: eu-west, status: down}, sa-east]
  on_all_down: %s
  %s
"""
ALL_DOWN = {"us-east": "down", "eu-west": "down", "sa-east": "down"}


def test_on_all_down_fail_open_answers_nearest_ignoring_health():
    with harness(config_from(DOWN_SVC % ("fail_open", ""))) as h:
        h.set_health(ALL_DOWN)
        d = h.decide("d.example.test", "127.4.0.1")
        assert d.outcome == "answer"
        # nearest of the values not forced down by their status
        assert d.datacenters == ("sa-east",)
        assert h.decide("d.example.test", "127.2.0.1").datacenters == ("us-east",)


def test_on_all_down_fallback_pool():
    extra = "fallback_pool: sorry\n  pools:\n    sorry: {values: [ap-northeast]}"
    with harness(config_from(DOWN_SVC % ("fallback", extra))) as h:
        assert h.decide("d.example.test", "127.4.0.1").datacenters == ("sa-east",)
        h.set_health({**ALL_DOWN, "ap-northeast": "down"})
        d = h.decide("d.example.test", "127.4.0.1")
        assert (d.outcome, d.datacenters) == ("answer", ("ap-northeast",))


@pytest.mark.parametrize("mode", ["nodata", "servfail"])
def test_on_all_down_nodata_and_servfail(mode):
    with harness(config_from(DOWN_SVC % (mode, ""))) as h:
        h.set_health(ALL_DOWN)
        d = h.decide("d.example.test", "127.4.0.1")
        assert d.outcome == mode
        assert d.ipv4 == () and d.ipv6 == () and d.datacenters == ()
        h.set_health({**ALL_DOWN, "us-east": "up"})
        assert h.decide("d.example.test", "127.4.0.1").outcome == "answer"


@pytest.mark.parametrize("unknown_is, outcome", [("up", "answer"), ("down", "servfail")])
def test_unknown_is_decides_what_unchecked_means(unknown_is, outcome):
    cfg = config_from(DOWN_SVC % ("servfail", f"unknown_is: {unknown_is}"))
    with harness(cfg) as h:  # no health reports at all: every state is unknown
        assert h.decide("d.example.test", "127.4.0.1").outcome == outcome


# -- count, families, scope, caching --


def test_count_walks_datacenters_in_order_per_family():
    with harness(load_config(EXAMPLE)) as h:
        d = h.decide("multi", "127.1.0.1")  # San Francisco: us-west (v4 only, 2 addresses) first
        assert d.ipv4 == ("203.0.113.51", "203.0.113.52", "192.0.2.11")
        assert d.ipv6 == ("2001:db8:100::11", "2001:db8:200::21", "2001:db8:300::31")
        assert d.datacenters[:2] == ("us-west", "us-east")


def test_service_without_ipv6_has_no_aaaa_addresses():
    dcs = """
    datacenters:
      a: {latitude: 0, longitude: 0, ipv4: [192.0.2.1]}
      b: {latitude: 0, longitude: 50, ipv4: [192.0.2.2]}
      us-east: {latitude: 39.0, longitude: -77.5, ipv4: [192.0.2.11], ipv6: [2001:db8:100::11]}
    """
    svc = """
    v4.example.test: {policy: geoproximity, datacenters: [a, b], on_all_down: fail_open}
    only-a.example.test:
      policy: geoproximity
      datacenters: [us-east]
      types: [A]
      on_all_down: fail_open
    """
    with harness(config_from(svc, dcs)) as h:
        d = h.decide("v4.example.test", "127.2.0.1")
        assert d.ipv4 and d.ipv6 == ()
        d = h.decide("only-a.example.test", "127.2.0.1")
        assert d.ipv4 == ("192.0.2.11",) and d.ipv6 == ()


def test_scope_zero_for_single_datacenter_and_weighted_and_failover():
    svc = """
    one.example.test: {policy: geoproximity, datacenters: [us-east], on_all_down: fail_open}
    """
    with harness(config_from(svc)) as h:
        assert h.decide("one.example.test", "127.2.0.1").scope_prefix == 0
    with harness(config_from(WEIGHTED_SVC % 1)) as h:
        assert h.decide("w.example.test", "127.2.0.1").scope_prefix == 0


def test_scope_is_the_widest_prefix_with_the_same_answer():
    with harness(load_config(EXAMPLE)) as h:
        # Paris /16 holds Marseille /20 and Lyon /24: all answer eu-west, so one /16 scope
        # (127.21/16 next door answers us-east, so no wider).
        assert h.decide("www", "127.20.32.0", 24).scope_prefix == 16
        assert h.decide("www", "127.20.16.7").scope_prefix == 16
        # 127.0.0.0/8 spans many answers; 127.0.0.0/16 (unknown) is the network it got
        assert h.decide("www", "127.0.0.0", 8).scope_prefix == 16
        # The /56 and its neighbours up to the /48 are all nearest to eu-west.
        assert h.decide("www", "2001:db8:a:100::", 64).scope_prefix == 48
        d0 = h.decide("www", "0.0.0.0", 0)
        assert (d0.scope_prefix, d0.datacenters) == (0, ("us-east",))


def test_scope_merges_wider_when_health_changes_the_answer():
    with harness(load_config(EXAMPLE)) as h:
        # Paris (127.20/16) and Ashburn-side 127.21/16 differ while eu-west is up...
        assert h.decide("www", "127.20.0.1").scope_prefix == 16
        # ...and with eu-west down Paris answers as its neighbours do: a wider scope.
        h.set_health({"eu-west": "down"})
        d = h.decide("www", "127.20.0.1")
        assert d.datacenters != ("eu-west",)
        assert d.scope_prefix < 16


def test_scope_longer_than_source_from_the_answer_map():
    with harness(load_config(EXAMPLE)) as h:
        # The source /8 spans every city: the answer for 127.0.0.0 holds for its /16 only.
        d = h.decide("www", "127.0.0.0", 8)
        assert (d.datacenters, d.scope_prefix) == (("us-east",), 16)


def test_geoproximity_with_one_healthy_candidate_is_client_independent():
    with harness(load_config(EXAMPLE)) as h:
        others = ("us-east", "eu-west", "ap-northeast", "sa-east", "us-west")
        h.set_health({dc: "down" for dc in others})
        d = h.decide("www", "127.2.0.1")
        assert (d.datacenters, d.scope_prefix) == (("ap-southeast",), 0)


def test_new_health_epoch_invalidates_cached_decisions_immediately():
    with harness(load_config(EXAMPLE)) as h:
        first = h.decide("www", "127.3.0.1")
        assert h.decide("www", "127.3.0.1") is first  # cached
        h.set_health({"ap-northeast": "down"})
        assert h.decide("www", "127.3.0.1").datacenters != ("ap-northeast",)
        h.set_health({"ap-northeast": "up"})
        assert h.decide("www", "127.3.0.1").datacenters == ("ap-northeast",)


def test_decision_cache_is_bounded_and_shared_per_geoip_network():
    with harness(load_config(EXAMPLE), cache_size=50) as h:
        for i in range(300):
            h.decide("www", f"10.{i // 256}.{i % 256}.0", 24)
        assert h.engine.cache_len() <= 50
        h.engine.misses = 0
        a = h.decide("www", "127.2.1.0", 24)
        b = h.decide("www", "127.2.2.0", 24)  # same GeoIP network 127.2.0.0/16
        assert a is b


def test_same_answer_same_key():
    with harness(load_config(EXAMPLE)) as h:
        a = h.decide("www", "127.2.0.1")
        b = h.decide("www", "127.7.0.1")
        c = h.decide("www", "127.3.0.1")
        assert a.key == b.key and hash(a.key) == hash(b.key)
        assert a.key != c.key
