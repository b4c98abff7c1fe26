"""A bounded least-recently-used mapping.

Used for hot-path caches (answer cache, GeoIP lookups) whose key space is attacker-controlled:
memory stays bounded at ``maxsize`` entries however many distinct keys arrive. Built on
OrderedDict because its move_to_end/popitem are O(1) and implemented in C.
Not thread-safe: each event loop / worker owns its own instance.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

_MISSING = object()


class LruCache(Generic[K, V]):
    """Mapping of at most ``maxsize`` entries; inserting into a full cache evicts the LRU entry.

    ``get`` and ``put`` refresh an entry's recency; ``peek`` and ``in`` do not.
    ``on_evict(key, value)``, if given, is called for each entry pushed out by the bound.
    """

    __slots__ = ("_data", "maxsize", "hits", "misses", "evictions", "_on_evict")

    def __init__(self, maxsize: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._data: OrderedDict[K, V] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._on_evict = on_evict

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """Return the value for key (marking it most recently used), else default."""
        data = self._data
        value = data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: K, default: V | None = None) -> V | None:
        """Return the value for key without touching recency or counters."""
        return self._data.get(key, default)

    def put(self, key: K, value: V) -> None:
        """Insert or replace key as the most recently used entry, evicting the LRU if full."""
        data = self._data
        if key in data:
            data[key] = value
            data.move_to_end(key)
            return
        data[key] = value
        if len(data) > self.maxsize:
            old_key, old_value = data.popitem(last=False)
            self.evictions += 1
            if self._on_evict is not None:
                self._on_evict(old_key, old_value)

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove key and return its value, else default."""
        return self._data.pop(key, default)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._data.clear()

    def resize(self, maxsize: int) -> None:
        """Change the bound, evicting LRU entries at once if the cache is now over it."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        data = self._data
        while len(data) > maxsize:
            old_key, old_value = data.popitem(last=False)
            self.evictions += 1
            if self._on_evict is not None:
                self._on_evict(old_key, old_value)

    def keys(self) -> list[K]:
        """Keys from least to most recently used (a copy)."""
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def __repr__(self) -> str:
        return f"LruCache(maxsize={self.maxsize}, len={len(self._data)})"
