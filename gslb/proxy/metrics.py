"""Proxy metrics in one module-level registry the admin endpoint (or /metrics here) can expose.

Names follow gslb_proxy_<what>_total / _seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "gslb_proxy_requests_total",
    "Client requests answered, by route pool and status class",
    ["pool", "code"],
    registry=REGISTRY,
)
UPSTREAM_REQUESTS = Counter(
    "gslb_proxy_upstream_requests_total",
    "Requests sent to each member, by outcome",
    ["pool", "member", "outcome"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "gslb_proxy_upstream_seconds",
    "Time from sending a request to a member to its response head",
    ["pool", "member"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "gslb_proxy_retries_total", "Requests retried on another member", ["pool"], registry=REGISTRY
)
EJECTIONS = Counter(
    "gslb_proxy_ejections_total", "Passive outlier ejections", ["pool", "member"], registry=REGISTRY
)
REJECTED = Counter(
    "gslb_proxy_rejected_total",
    "Requests refused by a protection (acl, rate, limits, waf)",
    ["reason"],
    registry=REGISTRY,
)
CACHE = Counter("gslb_proxy_cache_total", "Cache lookups by result", ["result"], registry=REGISTRY)
MEMBERS_UP = Gauge(
    "gslb_proxy_members_up", "Members currently available", ["pool"], registry=REGISTRY
)


def metrics_text() -> bytes:
    """Prometheus exposition text of every proxy metric."""
    return generate_latest(REGISTRY)
