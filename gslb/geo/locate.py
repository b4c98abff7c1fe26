"""Client address or ECS subnet -> Location, from a MaxMind-format (City or Country) database.

The hot path reads a bounded LRU keyed by the client network as the DNS server saw it
(packed address already masked to the source prefix, and the prefix); a miss costs one
maxminddb lookup. The Location's network is the database network the answer came from, so
it is also the ECS scope a location-based answer has: shorter than the source prefix when
the database network is wider, longer when the client's network spans several database
networks (RFC 7871 section 7.2.1 lets the scope exceed the source).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import maxminddb

from ..errors import ConfigError, Reason


@dataclass(frozen=True)
class Location:
    """Where a client network is. Fields are None when the database does not know them."""

    continent: str | None
    country: str | None
    subdivision: str | None
    latitude: float | None
    longitude: float | None
    network: str  # CIDR of the database network holding the (masked) client address
    prefix_len: int
    city: str | None = None

    @property
    def known(self) -> bool:
        return self.continent is not None or self.country is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "continent": self.continent,
            "country": self.country,
            "subdivision": self.subdivision,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "network": self.network,
            "prefix_len": self.prefix_len,
        }


def location_from_record(record: Any, network: str, prefix_len: int) -> Location:
    """Build a Location from a GeoIP2 City or Country record (or None: unknown network)."""
    if not isinstance(record, dict):
        return Location(None, None, None, None, None, network, prefix_len)
    continent = _get(record, "continent", "code")
    country = _get(record, "country", "iso_code") or _get(record, "registered_country", "iso_code")
    subdivision = None
    subs = record.get("subdivisions")
    if isinstance(subs, list) and subs and isinstance(subs[0], dict):
        subdivision = subs[0].get("iso_code")
    lat = _get(record, "location", "latitude")
    lon = _get(record, "location", "longitude")
    city = None
    names = _get(record, "city", "names")
    if isinstance(names, dict):
        city = names.get("en")
    return Location(
        continent=continent,
        country=country,
        subdivision=subdivision,
        latitude=float(lat) if lat is not None else None,
        longitude=float(lon) if lon is not None else None,
        network=network,
        prefix_len=prefix_len,
        city=city,
    )


def _get(record: dict[str, Any], section: str, key: str) -> Any:
    part = record.get(section)
    return part.get(key) if isinstance(part, dict) else None


class Locator:
    """Looks client networks up in a GeoIP database, with a bounded LRU per client network."""

    def __init__(self, path: str, cache_size: int = 16384) -> None:
        try:
            self._reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(
                Reason(None, "geoip", f"cannot open GeoIP database {path}: {exc}")
            ) from None
        self.path = path
        self.database_type: str = self._reader.metadata().database_type
        self._ip_version: int = self._reader.metadata().ip_version
        self._cache: OrderedDict[tuple[bytes, int], Location] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self.hits = 0
        self.misses = 0

    def locate(self, address: bytes, prefix: int) -> Location | None:
        """Location of the client network `address`/`prefix`; None when prefix is 0.

        `address` is packed (4 or 16 bytes) and already masked to `prefix` bits. A network the
        database does not know gives a Location whose fields are None (its network is still
        meaningful: it is the scope of "unknown").
        """
        if prefix <= 0:
            return None
        key = (address, prefix)
        cache = self._cache
        loc = cache.get(key)
        if loc is not None:
            cache.move_to_end(key)
            self.hits += 1
            return loc
        self.misses += 1
        loc = self._lookup(address, prefix)
        cache[key] = loc
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return loc

    def _lookup(self, address: bytes, prefix: int) -> Location:
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and self._ip_version == 4:
            # An IPv4-only database knows nothing about IPv6 clients.
            plen = min(prefix, 0)
            return location_from_record(None, f"{_mask(ip, plen)}/{plen}", plen)
        record, plen = self._reader.get_with_prefix_len(ip)
        return location_from_record(record, f"{_mask(ip, plen)}/{plen}", plen)

    def cache_len(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._reader.close()
        self._cache.clear()

    def __enter__(self) -> Locator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mask(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, plen: int) -> str:
    bits = ip.max_prefixlen
    value = int(ip) >> (bits - plen) << (bits - plen) if plen else 0
    return str(type(ip)(value))


def pack_client(address: str, prefix: int | None = None) -> tuple[bytes, int]:
    """Text address (and optional source prefix) -> (packed masked address, prefix).

    Convenience for tools and tests; the DNS server already has packed ECS bytes.
    """
    ip = ipaddress.ip_address(address)
    plen = ip.max_prefixlen if prefix is None else prefix
    if not 0 <= plen <= ip.max_prefixlen:
        raise ValueError(f"prefix {plen} out of range for {address}")
    net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
    return net.network_address.packed, plen
