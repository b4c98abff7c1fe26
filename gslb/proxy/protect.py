"""PURE protection decisions: IP allow/deny lists, per-client token buckets, header limits."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


class IpAcl:
    """Deny wins over allow; an empty allow list allows everyone not denied."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = parse_networks(allow)
        self.deny = parse_networks(deny)

    def permits(self, ip: str) -> bool:
        if not self.allow and not self.deny:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return not self.allow
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.deny):
            return False
        return not self.allow or any(addr in net for net in self.allow)


class RateLimiter:
    """A token bucket per client: `rate` tokens per second, at most `burst` stored.

    Buckets live in a bounded LRU so a flood of source addresses cannot grow memory without end.
    """

    def __init__(self, rate: float, burst: float = 0.0, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst if burst > 0 else max(rate, 1.0)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """Take one token. Returns 0.0 if allowed, else the seconds until a token is available."""
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def header_limits_status(
    raw_headers: Iterable[tuple[bytes, bytes]], max_bytes: int, max_count: int
) -> int | None:
    """431 if the request head has too many headers or too many bytes of them, else None."""
    count = 0
    size = 0
    for name, value in raw_headers:
        count += 1
        size += len(name) + len(value) + 4  # ": " and CRLF
    if (max_count and count > max_count) or (max_bytes and size > max_bytes):
        return 431
    return None


class ConnectionGuard:
    """Total and per-client connection counts (the pure part of connection limiting)."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self.per_client: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        if self.max_total and self.total >= self.max_total:
            return False
        if self.max_per_client and self.per_client.get(ip, 0) >= self.max_per_client:
            return False
        self.total += 1
        self.per_client[ip] = self.per_client.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_client.get(ip, 1) - 1
        if left <= 0:
            self.per_client.pop(ip, None)
        else:
            self.per_client[ip] = left
