"""Bounded LRU mapping: bound holds, recency order, eviction callback."""

from __future__ import annotations

import random

import pytest

from gslb.util.lru import LruCache


def test_get_put_and_miss() -> None:
    c: LruCache[str, int] = LruCache(3)
    assert c.get("a") is None
    assert c.get("a", -1) == -1
    c.put("a", 1)
    assert c.get("a") == 1
    assert "a" in c and "b" not in c
    assert len(c) == 1
    assert (c.hits, c.misses) == (1, 2)


def test_evicts_least_recently_used() -> None:
    c: LruCache[str, int] = LruCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now most recent; b is the LRU
    c.put("c", 3)
    assert "b" not in c
    assert c.keys() == ["a", "c"]
    assert c.evictions == 1


def test_peek_and_contains_do_not_refresh() -> None:
    c: LruCache[str, int] = LruCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.peek("a") == 1
    assert "a" in c
    c.put("c", 3)
    assert "a" not in c and c.keys() == ["b", "c"]
    assert c.hits == 0 and c.misses == 0


def test_replace_refreshes_without_growing() -> None:
    c: LruCache[str, int] = LruCache(2)
    c.put("a", 1)
    c.put("b", 2)
    c.put("a", 10)
    assert len(c) == 2 and c.evictions == 0
    c.put("c", 3)
    assert c.keys() == ["a", "c"]
    assert c.get("a") == 10


def test_on_evict_called_with_evicted_pair() -> None:
    seen: list[tuple[int, str]] = []
    c: LruCache[int, str] = LruCache(2, on_evict=lambda k, v: seen.append((k, v)))
    for i in range(4):
        c.put(i, str(i))
    assert seen == [(0, "0"), (1, "1")]
    c.resize(1)
    assert seen[-1] == (2, "2") and len(c) == 1 and c.maxsize == 1


def test_pop_clear_iter() -> None:
    c: LruCache[int, int] = LruCache(5)
    for i in range(3):
        c.put(i, i * i)
    assert c.pop(1) == 1 and c.pop(1) is None
    assert list(c) == [0, 2]
    c.clear()
    assert len(c) == 0 and list(c) == []


def test_bound_holds_under_many_random_keys() -> None:
    rng = random.Random(7)
    c: LruCache[bytes, int] = LruCache(1000)
    for i in range(100_000):
        c.put(rng.randbytes(4), i)
        assert len(c) <= 1000
    assert len(c) == 1000
    assert c.evictions == 99_000


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_non_positive_size(bad: int) -> None:
    with pytest.raises(ValueError):
        LruCache(bad)
    with pytest.raises(ValueError):
        LruCache(1).resize(bad)
