"""Proxy metrics: one `ProxyMetrics` object per proxy, passed to everything that counts (no
module-level registry). Names follow gslb_proxy_<what>_total / _seconds.

The request path only adds to plain dicts (a prometheus_client child costs a lock and several
calls per update); the registry reads them through a collector when it is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .load import LoadSnapshot
from .rtt import NetworkRtt

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ProxyMetrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (pool, "2xx") -> count
        self.upstream_requests: dict[tuple[str, str, str], int] = {}  # (pool, member, outcome)
        # (pool, member) -> [count per bucket (the last one +Inf), sum]
        self.latency: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self.retries: dict[str, int] = {}
        self.ejections: dict[tuple[str, str], int] = {}
        self.rejections: dict[str, int] = {}
        self.cache_lookups: dict[str, int] = {}
        self.members_up: dict[str, int] = {}
        self._codes = {c: f"{c}xx" for c in range(10)}
        # Set by ProxyServer: () -> (LoadSnapshot, networks, now), the whole proxy's view.
        self.load_source: Callable[[], tuple[LoadSnapshot, list[NetworkRtt], float]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector: it has collect()

    # -- updates (the request path)
    def request(self, pool: str, status: int) -> None:
        key = (pool, self._codes.get(status // 100, "xxx"))
        self.requests[key] = self.requests.get(key, 0) + 1

    def upstream(self, pool: str, member: str, outcome: str, latency: float | None) -> None:
        key = (pool, member, outcome)
        self.upstream_requests[key] = self.upstream_requests.get(key, 0) + 1
        if latency is not None:
            pm = (pool, member)
            hist = self.latency.get(pm)
            if hist is None:
                hist = self.latency[pm] = ([0] * (len(BUCKETS) + 1), [0.0])
            hist[0][bisect_left(BUCKETS, latency)] += 1
            hist[1][0] += latency

    def retry(self, pool: str) -> None:
        self.retries[pool] = self.retries.get(pool, 0) + 1

    def ejection(self, pool: str, member: str) -> None:
        key = (pool, member)
        self.ejections[key] = self.ejections.get(key, 0) + 1

    def rejected(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def cache(self, result: str) -> None:
        self.cache_lookups[result] = self.cache_lookups.get(result, 0) + 1

    def up(self, pool: str, count: int) -> None:
        self.members_up[pool] = count

    # -- the collector the registry scrapes
    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            "gslb_proxy_requests",
            "Client requests answered, by route pool and status class",
            labels=["pool", "code"],
        )
        for key, n in list(self.requests.items()):
            fam.add_metric(list(key), n)
        yield fam
        fam = CounterMetricFamily(
            "gslb_proxy_upstream_requests",
            "Requests sent to each member, by outcome",
            labels=["pool", "member", "outcome"],
        )
        for key3, n in list(self.upstream_requests.items()):
            fam.add_metric(list(key3), n)
        yield fam
        hist = HistogramMetricFamily(
            "gslb_proxy_upstream_seconds",
            "Time from sending a request to a member to its response head",
            labels=["pool", "member"],
        )
        for key2, (counts, total) in list(self.latency.items()):
            running = 0
            buckets = []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                running += n
                buckets.append((bound, float(running)))
            hist.add_metric(list(key2), buckets, total[0])
        yield hist
        for name, text, label, values in (
            ("gslb_proxy_retries", "Requests retried on another member", "pool", self.retries),
            (
                "gslb_proxy_rejected",
                "Requests refused by a protection (acl, rate, limits, waf)",
                "reason",
                self.rejections,
            ),
            ("gslb_proxy_cache", "Cache lookups by result", "result", self.cache_lookups),
        ):
            fam = CounterMetricFamily(name, text, labels=[label])
            for one, n in list(values.items()):
                fam.add_metric([one], n)
            yield fam
        fam = CounterMetricFamily(
            "gslb_proxy_ejections", "Passive outlier ejections", labels=["pool", "member"]
        )
        for key2, n in list(self.ejections.items()):
            fam.add_metric(list(key2), n)
        yield fam
        gauge = GaugeMetricFamily(
            "gslb_proxy_members_up", "Members currently available", labels=["pool"]
        )
        for pool, n in list(self.members_up.items()):
            gauge.add_metric([pool], n)
        yield gauge
        if self.load_source is not None:
            load, networks, _ = self.load_source()
            for name, text, value in (
                ("gslb_proxy_in_flight", "Client requests being answered", load.in_flight),
                (
                    "gslb_proxy_requests_per_second",
                    "Client requests completed per second (10 s window)",
                    load.requests_per_second,
                ),
                (
                    "gslb_proxy_rtt_networks",
                    "Client networks with a fresh RTT (as reported, at most report_networks)",
                    len(networks),
                ),
            ):
                g = GaugeMetricFamily(name, text)
                g.add_metric([], value)
                yield g

    def text(self) -> bytes:
        """Prometheus exposition text of every proxy metric."""
        return generate_latest(self.registry)
