"""Collectors alone (no server): counters in, Prometheus families out."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gslb.admin.metrics import (
    DnsCollector,
    DnsCounters,
    HealthCollector,
    HealthCounters,
    StatusCollector,
)


def scrape(*collectors: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    for c in collectors:
        reg.register(c)  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def get(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_dns_collector_sums_nothing_and_keeps_workers_apart() -> None:
    w0 = DnsCounters(queries={("A", "NOERROR", "www.", "us-east"): 3}, worker="0", cache_hits=2)
    w1 = DnsCounters(queries={("A", "NOERROR", "www.", "us-east"): 4}, worker="1", cache_misses=6)
    out = scrape(DnsCollector(lambda: [w0, w1]))
    labels = {"qtype": "A", "rcode": "NOERROR", "service": "www.", "datacenter": "us-east"}
    assert get(out, "gslb_dns_queries_total", **labels, worker="0") == 3
    assert get(out, "gslb_dns_queries_total", **labels, worker="1") == 4
    assert get(out, "gslb_dns_answer_cache_hits_total", worker="0") == 2
    assert get(out, "gslb_dns_answer_cache_misses_total", worker="1") == 6


def test_histogram_gets_inf_bucket_when_the_source_omits_it() -> None:
    c = DnsCounters(
        latency_buckets=[(0.01, 4), (0.001, 1)],  # unsorted, no +Inf
        latency_sum=0.02,
        latency_count=5,
    )
    out = scrape(DnsCollector(lambda: c))
    assert get(out, "gslb_dns_query_seconds_bucket", worker="0", le="0.001") == 1
    assert get(out, "gslb_dns_query_seconds_bucket", worker="0", le="0.01") == 4
    assert get(out, "gslb_dns_query_seconds_bucket", worker="0", le="+Inf") == 5
    assert get(out, "gslb_dns_query_seconds_count", worker="0") == 5


def test_histogram_with_no_observations() -> None:
    out = scrape(DnsCollector(lambda: DnsCounters()))
    assert get(out, "gslb_dns_query_seconds_bucket", worker="0", le="+Inf") == 0
    assert get(out, "gslb_dns_query_seconds_count", worker="0") == 0


def test_no_dns_no_families() -> None:
    assert scrape(DnsCollector(lambda: None)) == {}
    assert scrape(HealthCollector(lambda: None)) == {}


def test_health_state_set_and_odd_states() -> None:
    h = HealthCounters(
        transitions={("eu", "us-east", "down"): 1},
        state={("eu", "us-east"): "down", ("eu", "ap"): "draining"},
        probe_latency={("eu", "us-east"): (0.3, 3)},
    )
    out = scrape(HealthCollector(lambda: h))
    assert get(out, "gslb_health_state", target="eu", region="us-east", state="down") == 1
    assert get(out, "gslb_health_state", target="eu", region="us-east", state="up") == 0
    assert get(out, "gslb_health_state", target="eu", region="ap", state="draining") == 1
    assert get(out, "gslb_health_state", target="eu", region="ap", state="unknown") == 0
    assert get(out, "gslb_health_transitions_total", target="eu", region="us-east", state="down")
    assert get(out, "gslb_health_probe_seconds_sum", target="eu", region="us-east") == 0.3


def test_status_collector_tolerates_a_sparse_document() -> None:
    out = scrape(StatusCollector(lambda: {"node": {"name": "p1"}}))
    assert get(out, "gslb_node_info", node="p1", version="", config_version="") == 1
    assert get(out, "gslb_node_reloads_total", result="ok") == 0
    assert ("gslb_node_start_time_seconds", ()) not in out


def test_status_collector_overrides_and_times() -> None:
    doc = {
        "node": {"name": "n", "reloads": 2, "reload_failures": 1, "started_at": 5.0},
        "datacenters": [
            {"name": "a", "state": "down", "override": {"mode": "down", "reason": "m"}},
            {"name": "b", "state": "up", "override": None},
        ],
    }
    out = scrape(StatusCollector(lambda: doc))
    assert get(out, "gslb_node_reloads_total", result="failed") == 1
    assert get(out, "gslb_node_start_time_seconds") == 5.0
    assert get(out, "gslb_health_override", target="a", mode="down") == 1
    with pytest.raises(KeyError):
        get(out, "gslb_health_override", target="b", mode="down")
    assert get(out, "gslb_health_target_state", target="b", state="up") == 1
