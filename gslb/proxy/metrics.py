"""Proxy metrics: one `ProxyMetrics` object per proxy, with its own CollectorRegistry, passed to
everything that counts (no module-level registry). Names follow gslb_proxy_<what>_total /
_seconds.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gslb_proxy_requests_total",
            "Client requests answered, by route pool and status class",
            ["pool", "code"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "gslb_proxy_upstream_requests_total",
            "Requests sent to each member, by outcome",
            ["pool", "member", "outcome"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "gslb_proxy_upstream_seconds",
            "Time from sending a request to a member to its response head",
            ["pool", "member"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.retries = Counter(
            "gslb_proxy_retries_total",
            "Requests retried on another member",
            ["pool"],
            registry=registry,
        )
        self.ejections = Counter(
            "gslb_proxy_ejections_total",
            "Passive outlier ejections",
            ["pool", "member"],
            registry=registry,
        )
        self.rejections = Counter(
            "gslb_proxy_rejected_total",
            "Requests refused by a protection (acl, rate, limits, waf)",
            ["reason"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "gslb_proxy_cache_total", "Cache lookups by result", ["result"], registry=registry
        )
        self.members_up = Gauge(
            "gslb_proxy_members_up", "Members currently available", ["pool"], registry=registry
        )
        # labels() is a locked dict lookup: the children are kept here once made.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, pool: str, status: int) -> None:
        self._child(self.requests, pool, f"{status // 100}xx").inc()

    def upstream(self, pool: str, member: str, outcome: str, latency: float | None) -> None:
        self._child(self.upstream_requests, pool, member, outcome).inc()
        if latency is not None:
            self._child(self.upstream_latency, pool, member).observe(latency)

    def retry(self, pool: str) -> None:
        self._child(self.retries, pool).inc()

    def ejection(self, pool: str, member: str) -> None:
        self._child(self.ejections, pool, member).inc()

    def rejected(self, reason: str) -> None:
        self._child(self.rejections, reason).inc()

    def cache(self, result: str) -> None:
        self._child(self.cache_lookups, result).inc()

    def up(self, pool: str, count: int) -> None:
        self._child(self.members_up, pool).set(count)

    def text(self) -> bytes:
        """Prometheus exposition text of every proxy metric."""
        return generate_latest(self.registry)
