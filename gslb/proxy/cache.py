"""In-memory HTTP cache for GET/HEAD: size-bounded LRU honouring Cache-Control, Expires and Vary.

Decisions (is it storable, for how long, which variant) are pure functions of headers and `now`;
the store is a plain bounded LRU. Time comes from an injected clock (wall clock: Expires and Date
are wall-clock dates).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from multidict import CIMultiDict, CIMultiDictProxy

from ..clock import SYSTEM_CLOCK, Clock

CACHEABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def parse_cache_control(values: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, arg = part.partition("=")
            out[name.strip().lower()] = arg.strip().strip('"') if eq else None
    return out


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(int(value))) if value is not None else None
    except ValueError:
        return None


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def freshness(request: Headers, status: int, response: Headers, now: float) -> float | None:
    """Seconds the response may be served from cache, or None if it must not be stored."""
    if status not in CACHEABLE_STATUS:
        return None
    req_cc = parse_cache_control(request.getall("Cache-Control", []))
    if "no-store" in req_cc:
        return None
    cc = parse_cache_control(response.getall("Cache-Control", []))
    if "no-store" in cc or "private" in cc or "no-cache" in cc:
        return None
    if "Set-Cookie" in response or response.get("Vary", "").strip() == "*":
        return None
    if "Authorization" in request and "public" not in cc and "s-maxage" not in cc:
        return None
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            return _seconds(cc[directive])
    expires = response.get("Expires")
    if expires is not None:
        when = _date(expires)
        if when is None:
            return 0.0  # an invalid Expires means already expired (RFC 9111 5.3)
        date = _date(response.get("Date")) or now
        return max(0.0, when - date)
    return None  # no explicit freshness: no heuristic caching


def vary_names(response: Headers) -> tuple[str, ...]:
    names: list[str] = []
    for value in response.getall("Vary", []):
        names.extend(n.strip().lower() for n in value.split(",") if n.strip())
    return tuple(sorted(set(names)))


@dataclass
class Entry:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes
    stored_at: float
    ttl: float
    initial_age: float
    vary: tuple[str, ...]
    vary_values: tuple[str, ...]

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl

    @property
    def validators(self) -> dict[str, str]:
        """Conditional request headers that revalidate this entry (empty: it cannot be)."""
        out = {}
        etag = self.headers.get("ETag")
        if etag:
            out["If-None-Match"] = etag
        modified = self.headers.get("Last-Modified")
        if modified:
            out["If-Modified-Since"] = modified
        return out

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers.items()) + 200


class Cache:
    def __init__(self, max_bytes: int, max_object_bytes: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.clock = clock
        self.bytes = 0
        # (host, target) -> variants of that URL (one per distinct Vary values)
        self._store: OrderedDict[tuple[str, str], list[Entry]] = OrderedDict()

    @staticmethod
    def _values(request: Headers, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(",".join(request.getall(n, [])) for n in names)

    def lookup(self, host: str, target: str, request: Headers) -> Entry | None:
        """The fresh entry for this request, or None."""
        entry = self._variant(host, target, request)
        if entry is None or not entry.fresh(self.clock.time()):
            return None
        self._store.move_to_end((host.lower(), target))
        return entry

    def stale(self, host: str, target: str, request: Headers) -> Entry | None:
        """The expired entry for this request if it can be revalidated (has an ETag or a
        Last-Modified); an expired entry that cannot be is dropped."""
        entry = self._variant(host, target, request)
        if entry is None or entry.fresh(self.clock.time()):
            return None
        if not entry.validators:
            self._remove((host.lower(), target), entry)
            return None
        return entry

    def _variant(self, host: str, target: str, request: Headers) -> Entry | None:
        req_cc = parse_cache_control(request.getall("Cache-Control", []))
        if "no-cache" in req_cc or "no-store" in req_cc or "Pragma" in request:
            return None
        for entry in self._store.get((host.lower(), target), ()):
            if entry.vary_values == self._values(request, entry.vary):
                return entry
        return None

    def refresh(
        self, host: str, target: str, request: Headers, entry: Entry, response: Headers
    ) -> bool:
        """A 304 confirmed `entry`: take the 304's headers (RFC 9111 4.3.4) and restart its
        freshness. Returns False (and drops it) if the new headers forbid storing it."""
        key = (host.lower(), target)
        headers = CIMultiDict(entry.headers)
        skip = ("content-length", "content-encoding", "transfer-encoding", "set-cookie", "age")
        updated = [(k, v) for k, v in response.items() if k.lower() not in skip]
        for name in {k for k, _ in updated}:
            headers.popall(name, None)
        for name, value in updated:
            headers.add(name, value)
        now = self.clock.time()
        ttl = freshness(request, entry.status, headers, now)
        if ttl is None or ttl <= 0 or entry not in self._store.get(key, ()):
            self._remove(key, entry)
            return False
        self.bytes -= entry.size
        entry.headers = headers
        entry.stored_at = now
        entry.ttl = ttl
        entry.initial_age = _seconds(response.get("Age")) or 0.0
        self.bytes += entry.size
        self._store.move_to_end(key)
        return True

    def store(
        self,
        host: str,
        target: str,
        request: Headers,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        body: bytes,
        ttl: float,
    ) -> bool:
        if ttl <= 0:
            return False
        vary = vary_names(headers)
        initial_age = _seconds(headers.get("Age")) or 0.0
        stored = CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "age")
        entry = Entry(
            status,
            reason,
            stored,
            body,
            self.clock.time(),
            ttl,
            initial_age,
            vary,
            self._values(request, vary),
        )
        if entry.size > self.max_object_bytes or entry.size > self.max_bytes:
            return False
        key = (host.lower(), target)
        variants = self._store.setdefault(key, [])
        for old in [v for v in variants if v.vary_values == entry.vary_values]:
            self._remove(key, old)
        variants = self._store.setdefault(key, [])
        variants.append(entry)
        self.bytes += entry.size
        self._store.move_to_end(key)
        while self.bytes > self.max_bytes and self._store:
            old_key, old_variants = next(iter(self._store.items()))
            self._remove(old_key, old_variants[0])
        return True

    def _remove(self, key: tuple[str, str], entry: Entry) -> None:
        variants = self._store.get(key)
        if not variants or entry not in variants:
            return
        variants.remove(entry)
        self.bytes -= entry.size
        if not variants:
            del self._store[key]

    def purge(self, host: str, target: str) -> int:
        """Drop every variant of one URL; target '*' drops everything of the host."""
        host = host.lower()
        keys = [k for k in self._store if k[0] == host and (target == "*" or k[1] == target)]
        count = 0
        for key in keys:
            for entry in list(self._store.get(key, [])):
                self._remove(key, entry)
                count += 1
        return count

    def __len__(self) -> int:
        return sum(len(v) for v in self._store.values())
