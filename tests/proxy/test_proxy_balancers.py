"""Each balancer's ordering and distribution, with seeded randomness (no I/O)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from gslb.proxy.balancers import (
    BALANCER_NAMES,
    ConsistentHash,
    LeastConn,
    LeastTime,
    PowerOfTwoChoices,
    RoundRobin,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    extract_key,
    make_balancer,
    valid_hash_key,
)


@dataclass
class M:
    name: str
    weight: float = 1.0
    inflight: int = 0
    ewma: float = 0.0


def picks(balancer, members, n, key=None):  # type: ignore[no-untyped-def]
    return Counter(members[balancer.order(members, key)[0]].name for _ in range(n))


def test_round_robin_rotates_and_orders_all() -> None:
    ms = [M("a"), M("b"), M("c")]
    rr = RoundRobin()
    assert rr.order(ms) == [0, 1, 2]
    assert rr.order(ms) == [1, 2, 0]
    assert rr.order(ms) == [2, 0, 1]
    assert rr.order([]) == []
    assert picks(rr, ms, 300) == {"a": 100, "b": 100, "c": 100}


def test_smooth_weighted_round_robin_is_smooth_and_exact() -> None:
    ms = [M("a", 5), M("b", 1), M("c", 1)]
    swrr = SmoothWeightedRoundRobin()
    seq = "".join(ms[swrr.order(ms)[0]].name for _ in range(7))
    assert seq == "aabacaa"  # nginx's documented sequence
    assert picks(swrr, ms, 700) == {"a": 500, "b": 100, "c": 100}


def test_smooth_weighted_round_robin_forgets_removed_member() -> None:
    swrr = SmoothWeightedRoundRobin()
    ms = [M("a", 1), M("b", 1)]
    for _ in range(3):
        swrr.order(ms)
    assert picks(swrr, [M("a", 1)], 3) == {"a": 3}
    assert sorted(picks(swrr, ms, 10).values()) == [5, 5]


def test_least_conn_prefers_fewest_in_flight_per_weight() -> None:
    ms = [M("a", inflight=5), M("b", inflight=1), M("c", inflight=3)]
    assert LeastConn(random.Random(1)).order(ms) == [1, 2, 0]
    # weight 4 with 5 in flight (6/4=1.5) beats weight 1 with 1 in flight (2/1=2)
    ms = [M("a", weight=4, inflight=5), M("b", inflight=1)]
    assert LeastConn(random.Random(1)).order(ms)[0] == 0


def test_least_conn_ties_are_spread() -> None:
    ms = [M("a"), M("b"), M("c")]
    counts = picks(LeastConn(random.Random(7)), ms, 3000)
    assert all(900 < c < 1100 for c in counts.values())


def test_least_time_combines_latency_and_in_flight() -> None:
    lt = LeastTime(random.Random(1))
    fast_busy = M("fast", ewma=0.010, inflight=9)  # 0.1
    slow_idle = M("slow", ewma=0.050, inflight=0)  # 0.05
    assert lt.order([fast_busy, slow_idle])[0] == 1
    fast_idle = M("fast", ewma=0.010, inflight=0)
    assert lt.order([fast_idle, slow_idle])[0] == 0
    # A member with no samples borrows the fastest EWMA instead of always winning with 0.
    new = M("new", ewma=0.0, inflight=3)
    assert lt.order([fast_idle, new])[0] == 0


def test_p2c_distribution_follows_load() -> None:
    ms = [M("a", inflight=0), M("b", inflight=10), M("c", inflight=10)]
    counts = picks(PowerOfTwoChoices(random.Random(3)), ms, 3000)
    # "a" wins whenever it is one of the two sampled: 2 of 3 pairs.
    assert 1900 < counts["a"] < 2100
    order = PowerOfTwoChoices(random.Random(3)).order(ms)
    assert sorted(order) == [0, 1, 2]
    assert PowerOfTwoChoices(random.Random(3)).order([M("x")]) == [0]


def test_p2c_equal_load_is_uniform() -> None:
    ms = [M(n) for n in "abcd"]
    counts = picks(PowerOfTwoChoices(random.Random(5)), ms, 4000)
    assert all(850 < c < 1150 for c in counts.values())


def test_weighted_random_follows_weights() -> None:
    ms = [M("a", 3), M("b", 1)]
    counts = picks(WeightedRandom(random.Random(11)), ms, 4000)
    assert 2850 < counts["a"] < 3150


def test_hash_is_stable_and_spread() -> None:
    ms = [M(n) for n in "abcd"]
    ch = ConsistentHash(random.Random(1))
    first = {f"k{i}": ms[ch.order(ms, f"k{i}")[0]].name for i in range(4000)}
    again = {f"k{i}": ms[ch.order(ms, f"k{i}")[0]].name for i in range(4000)}
    assert first == again
    counts = Counter(first.values())
    assert all(700 < c < 1300 for c in counts.values()), counts
    # The ordering lists every member once (fallbacks for retries).
    assert sorted(ch.order(ms, "x")) == [0, 1, 2, 3]


def test_hash_moves_only_the_removed_members_keys() -> None:
    ms = [M(n) for n in "abcd"]
    ch = ConsistentHash(random.Random(1))
    before = {f"k{i}": ms[ch.order(ms, f"k{i}")[0]].name for i in range(3000)}
    fewer = [m for m in ms if m.name != "c"]
    after = {f"k{i}": fewer[ch.order(fewer, f"k{i}")[0]].name for i in range(3000)}
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(before[k] == "c" for k in moved)
    # Adding a member only takes keys for itself.
    more = [*ms, M("e")]
    grown = {f"k{i}": more[ch.order(more, f"k{i}")[0]].name for i in range(3000)}
    assert all(grown[k] == "e" for k in before if before[k] != grown[k])
    share = sum(1 for k in before if grown[k] == "e") / 3000
    assert 0.1 < share < 0.3


def test_hash_weights_and_missing_key() -> None:
    ms = [M("a", 3), M("b", 1)]
    ch = ConsistentHash(random.Random(2))
    counts = Counter(ms[ch.order(ms, f"key{i}")[0]].name for i in range(4000))
    assert 2700 < counts["a"] < 3300
    assert sorted(ch.order(ms, None)) == [0, 1]


def test_make_balancer_and_keys() -> None:
    for name in BALANCER_NAMES:
        assert make_balancer(name, random.Random(0)).order([M("a")]) == [0]
    with pytest.raises(ValueError, match="unknown balancer"):
        make_balancer("fastest")
    assert valid_hash_key("ip") and valid_hash_key("header:X-User") and valid_hash_key("uri")
    assert not valid_hash_key("header:") and not valid_hash_key("body")
    headers = {"X-User": "u1"}
    cookies = {"sid": "s1"}
    assert extract_key("ip", "192.0.2.1", headers, cookies, "/p?q") == "192.0.2.1"
    assert extract_key("uri", "192.0.2.1", headers, cookies, "/p?q") == "/p?q"
    assert extract_key("header:X-User", "", headers, cookies, "") == "u1"
    assert extract_key("cookie:sid", "", headers, cookies, "") == "s1"
    assert extract_key("cookie:none", "", headers, cookies, "") is None
