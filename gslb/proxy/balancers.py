"""PURE load-balancing orderings.

Each balancer takes the *eligible* members of a pool (the caller has already removed members that
are down or ejected) and returns an ordering of their indices: the first is the choice, the rest
are fallbacks for retries. Nothing here does I/O or reads the clock; randomness comes from an
injected `random.Random`, so every algorithm's distribution is testable with a seed.

Members are read through the `MemberView` protocol: a name, an effective weight (slow start
already applied), the number of requests in flight and an EWMA of response time.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

BALANCER_NAMES = (
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "least_time",
    "p2c",
    "random",
    "hash",
)


class MemberView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def inflight(self) -> int: ...

    @property
    def ewma(self) -> float: ...


class Balancer(Protocol):
    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]: ...


def _rest(first: int, n: int) -> list[int]:
    return [first] + [i for i in range(n) if i != first]


class RoundRobin:
    """Plain rotation; the position is this balancer's own counter (per worker, never shared)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._next = 0

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        n = len(members)
        if n == 0:
            return []
        start = self._next % n
        self._next = start + 1
        return [(start + i) % n for i in range(n)]


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._current: dict[str, float] = {}

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        n = len(members)
        if n == 0:
            return []
        names = {m.name for m in members}
        # Forget members that left, so a returning member starts fresh.
        for gone in [k for k in self._current if k not in names]:
            del self._current[gone]
        total = 0.0
        best = 0
        best_value = float("-inf")
        for i, m in enumerate(members):
            w = max(m.weight, 0.0)
            value = self._current.get(m.name, 0.0) + w
            self._current[m.name] = value
            total += w
            if value > best_value:
                best, best_value = i, value
        self._current[members[best].name] -= total
        fallback = sorted(
            (i for i in range(n) if i != best), key=lambda i: -self._current[members[i].name]
        )
        return [best, *fallback]


def _load(m: MemberView) -> float:
    return (m.inflight + 1) / max(m.weight, 1e-9)


class LeastConn:
    """Fewest in-flight requests per unit of weight; ties broken at random."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        ties = [self._rng.random() for _ in members]
        return sorted(range(len(members)), key=lambda i: (_load(members[i]), ties[i]))


class LeastTime:
    """Lowest EWMA latency times (in-flight + 1) per weight, like nginx's least_time/Envoy's
    least_request with latency. A member without samples borrows the fastest known EWMA so it
    gets tried instead of being starved or flooded."""

    DEFAULT_EWMA = 0.001

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        known = [m.ewma for m in members if m.ewma > 0]
        default = min(known) if known else self.DEFAULT_EWMA
        ties = [self._rng.random() for _ in members]

        def score(i: int) -> tuple[float, float]:
            m = members[i]
            ewma = m.ewma if m.ewma > 0 else default
            return (ewma * (m.inflight + 1) / max(m.weight, 1e-9), ties[i])

        return sorted(range(len(members)), key=score)


def _weighted_pick(members: Sequence[MemberView], rng: random.Random, skip: int = -1) -> int:
    total = sum(max(m.weight, 0.0) for i, m in enumerate(members) if i != skip)
    if total <= 0:
        choices = [i for i in range(len(members)) if i != skip]
        return rng.choice(choices)
    point = rng.random() * total
    last = -1
    for i, m in enumerate(members):
        if i == skip:
            continue
        point -= max(m.weight, 0.0)
        last = i
        if point < 0:
            return i
    return last


class PowerOfTwoChoices:
    """Pick two members at random (weighted), keep the less loaded one."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        n = len(members)
        if n <= 1:
            return list(range(n))
        a = _weighted_pick(members, self._rng)
        b = _weighted_pick(members, self._rng, skip=a)
        if _load(members[b]) < _load(members[a]):
            a, b = b, a
        rest = [i for i in range(n) if i not in (a, b)]
        self._rng.shuffle(rest)
        return [a, b, *rest]


class WeightedRandom:
    """Weighted random ordering (Efraimidis-Spirakis keys: u ** (1 / w))."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        keys = []
        for m in members:
            w = max(m.weight, 1e-9)
            keys.append(self._rng.random() ** (1.0 / w))
        return sorted(range(len(members)), key=lambda i: -keys[i])


def hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    """A hash ring with virtual nodes (`points` per unit of weight).

    Removing a member only moves the keys it owned; adding one only takes keys for itself. The
    ordering after the owner is the next distinct members clockwise, so a retry stays stable too.
    Uses the configured weight, not the slow-start weight: a ring that moved on every ramp step
    would defeat the point of hashing.
    """

    def __init__(self, rng: random.Random | None = None, points: int = 160) -> None:
        self._rng = rng or random.Random()
        self._points = points
        self._ring_for: tuple[tuple[str, float], ...] | None = None
        self._hashes: list[int] = []
        self._owners: list[str] = []

    def _build(self, spec: tuple[tuple[str, float], ...]) -> None:
        pairs: list[tuple[int, str]] = []
        for name, weight in spec:
            count = max(1, round(self._points * weight))
            pairs.extend((hash64(f"{name}#{v}"), name) for v in range(count))
        pairs.sort()
        self._hashes = [h for h, _ in pairs]
        self._owners = [o for _, o in pairs]
        self._ring_for = spec

    def order(self, members: Sequence[MemberView], key: str | None = None) -> list[int]:
        n = len(members)
        if n == 0:
            return []
        if key is None:
            # No key (e.g. missing cookie): behave like weighted random.
            return WeightedRandom(self._rng).order(members)
        spec = tuple(sorted((m.name, getattr(m, "base_weight", m.weight)) for m in members))
        if spec != self._ring_for:
            self._build(spec)
        index = {m.name: i for i, m in enumerate(members)}
        start = bisect.bisect_left(self._hashes, hash64(key))
        out: list[int] = []
        seen: set[str] = set()
        size = len(self._hashes)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                out.append(index[owner])
                if len(out) == n:
                    break
        return out


_FACTORIES: Mapping[str, Callable[[random.Random | None], Balancer]] = {
    "round_robin": RoundRobin,
    "weighted_round_robin": SmoothWeightedRoundRobin,
    "least_conn": LeastConn,
    "least_time": LeastTime,
    "p2c": PowerOfTwoChoices,
    "random": WeightedRandom,
    "hash": ConsistentHash,
}


def make_balancer(name: str, rng: random.Random | None = None) -> Balancer:
    try:
        return _FACTORIES[name](rng)
    except KeyError:
        raise ValueError(f"unknown balancer {name!r}; one of {', '.join(BALANCER_NAMES)}") from None


def valid_hash_key(spec: str) -> bool:
    if spec in ("ip", "uri"):
        return True
    kind, _, name = spec.partition(":")
    return kind in ("header", "cookie") and bool(name)


def extract_key(
    spec: str,
    remote: str,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    path_qs: str,
) -> str | None:
    """The hashing key of one request: `ip`, `uri`, `header:NAME` or `cookie:NAME`."""
    if spec == "ip":
        return remote
    if spec == "uri":
        return path_qs
    kind, _, name = spec.partition(":")
    if kind == "header":
        return headers.get(name)
    if kind == "cookie":
        return cookies.get(name)
    return None
