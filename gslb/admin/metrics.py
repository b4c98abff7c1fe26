"""Prometheus collectors that read plain numbers from a node at scrape time.

The DNS hot path only increments ints in dicts (DnsCounters); nothing here runs per query. A scrape
turns those numbers into metric families. Names follow gslb_<subsystem>_<what>_total|_seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString

STATES = ("up", "down", "unknown")


@dataclass
class DnsCounters:
    """Counters one DNS worker keeps; the hot path mutates these dicts and ints in place."""

    # (qtype, rcode, service, datacenter) -> count; service/datacenter "" for static answers
    queries: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    worker: str = "0"
    cache_hits: int = 0
    cache_misses: int = 0
    # (upper bound seconds, cumulative count), ascending, ending with +Inf
    latency_buckets: list[tuple[float, int]] = field(default_factory=list)
    latency_sum: float = 0.0
    latency_count: int = 0
    # Protection counters: RRL verdicts ({"dropped": n, "slipped": n, ...}) and ACL denials
    # ({"refused": n, "dropped": n}).
    rrl: dict[str, int] = field(default_factory=dict)
    acl: dict[str, int] = field(default_factory=dict)
    # TSIG verdicts, zone transfers and NOTIFY ({"tsig_badkey": n, "axfr": n, ...})
    protocol: dict[str, int] = field(default_factory=dict)
    # DNSSEC signature cache ({"hits", "misses", "evictions", "entries"}); empty when unsigned.
    dnssec: dict[str, int] = field(default_factory=dict)


@dataclass
class HealthCounters:
    """Health numbers as seen by this node (per target and reporting region)."""

    transitions: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (t, region, to)
    state: dict[tuple[str, str], str] = field(default_factory=dict)  # (target, region) -> state
    probe_latency: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)


DnsSource = Callable[[], "DnsCounters | Sequence[DnsCounters] | None"]
HealthSource = Callable[[], "HealthCounters | None"]
StatusGetter = Callable[[], Mapping[str, Any]]


def _as_list(counters: DnsCounters | Sequence[DnsCounters] | None) -> list[DnsCounters]:
    # One process may host several workers (threads or an in-process pool); accept a sequence.
    if counters is None:
        return []
    if isinstance(counters, DnsCounters):
        return [counters]
    return list(counters)


def _go_float(value: float) -> str:
    """Prometheus's text form of a bucket bound (prometheus_client's helper is untyped)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _buckets(c: DnsCounters) -> list[tuple[str, float]]:
    """Prometheus histogram buckets: ascending, cumulative, always ending with +Inf."""
    ordered = sorted(c.latency_buckets)
    out = [(_go_float(le), float(n)) for le, n in ordered]
    if not ordered or not math.isinf(ordered[-1][0]):
        out.append(("+Inf", float(c.latency_count)))
    return out


class DnsCollector:
    """gslb_dns_* families from DnsCounters, read when Prometheus scrapes."""

    def __init__(self, source: DnsSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # families depend on what the node serves; skip duplicate-name checks

    def collect(self) -> Iterable[Metric]:
        workers = _as_list(self._source())
        if not workers:
            return []
        queries = CounterMetricFamily(
            "gslb_dns_queries_total",
            "DNS queries answered, by query type, response code, service and datacenter",
            labels=["qtype", "rcode", "service", "datacenter", "worker"],
        )
        hits = CounterMetricFamily(
            "gslb_dns_answer_cache_hits_total",
            "Answers served from the rendered-answer cache",
            labels=["worker"],
        )
        misses = CounterMetricFamily(
            "gslb_dns_answer_cache_misses_total",
            "Answers rendered because the cache had none",
            labels=["worker"],
        )
        latency = HistogramMetricFamily(
            "gslb_dns_query_seconds",
            "Time from reading a query to sending its answer",
            labels=["worker"],
        )
        rrl = CounterMetricFamily(
            "gslb_dns_rrl_responses_total",
            "Responses seen by response rate limiting, by verdict",
            labels=["verdict", "worker"],
        )
        acl = CounterMetricFamily(
            "gslb_dns_acl_denied_total",
            "Queries refused or dropped by an access list",
            labels=["action", "worker"],
        )
        protocol = CounterMetricFamily(
            "gslb_dns_protocol_events_total",
            "TSIG verdicts, zone transfers and NOTIFY messages, by event",
            labels=["event", "worker"],
        )
        for c in workers:
            for event, n in sorted(c.protocol.items()):
                protocol.add_metric([event, c.worker], n)
        signatures = CounterMetricFamily(
            "gslb_dnssec_signature_cache_total",
            "DNSSEC signature cache lookups by result (a miss signs), and evictions",
            labels=["result", "worker"],
        )
        signature_entries = GaugeMetricFamily(
            "gslb_dnssec_signature_cache_entries",
            "RRSIG RRsets held in the DNSSEC signature cache",
            labels=["worker"],
        )
        for c in workers:
            if c.dnssec:
                for result in ("hits", "misses", "evictions"):
                    signatures.add_metric([result, c.worker], c.dnssec.get(result, 0))
                signature_entries.add_metric([c.worker], c.dnssec.get("entries", 0))
            # Copy first: the hot path may add keys between our reads.
            for (qtype, rcode, service, dc), n in list(c.queries.items()):
                queries.add_metric([qtype, rcode, service, dc, c.worker], n)
            hits.add_metric([c.worker], c.cache_hits)
            misses.add_metric([c.worker], c.cache_misses)
            latency.add_metric([c.worker], _buckets(c), c.latency_sum)
            for verdict, n in sorted(c.rrl.items()):
                rrl.add_metric([verdict, c.worker], n)
            for action, n in sorted(c.acl.items()):
                acl.add_metric([action, c.worker], n)
        return [queries, hits, misses, latency, rrl, acl, protocol, signatures, signature_entries]


class HealthCollector:
    """gslb_health_* families: transitions, current state and probe latency per target/region."""

    def __init__(self, source: HealthSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        h = self._source()
        if h is None:
            return []
        transitions = CounterMetricFamily(
            "gslb_health_transitions_total",
            "Health state changes of a target as reported by a region",
            labels=["target", "region", "state"],
        )
        for (target, region, to), n in sorted(list(h.transitions.items())):
            transitions.add_metric([target, region, to], n)
        # State set: one series per possible state, 1 for the current one (alert on ==1).
        state = GaugeMetricFamily(
            "gslb_health_state",
            "Current health of a target as reported by a region (1 for the current state)",
            labels=["target", "region", "state"],
        )
        for (target, region), current in sorted(list(h.state.items())):
            for s in _states_with(current):
                state.add_metric([target, region, s], 1.0 if s == current else 0.0)
        probe = SummaryMetricFamily(
            "gslb_health_probe_seconds",
            "Duration of health checks of a target from a region",
            labels=["target", "region"],
        )
        for (target, region), (total, count) in sorted(list(h.probe_latency.items())):
            probe.add_metric([target, region], count_value=count, sum_value=total)
        return [transitions, state, probe]


class StatusCollector:
    """gslb_node_* and aggregate health families derived from the /status document."""

    def __init__(self, status: StatusGetter) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        doc = self._status()
        node = doc.get("node") or {}
        out: list[Metric] = []
        info = GaugeMetricFamily(
            "gslb_node_info",
            "Constant 1; labels name the node, version and loaded configuration",
            labels=["node", "version", "config_version"],
        )
        info.add_metric(
            [
                str(node.get("name", "")),
                str(node.get("version", "")),
                str(node.get("config_version", "")),
            ],
            1.0,
        )
        out.append(info)
        reloads = CounterMetricFamily(
            "gslb_node_reloads_total", "Configuration reloads by result", labels=["result"]
        )
        reloads.add_metric(["ok"], float(node.get("reloads", 0) or 0))
        reloads.add_metric(["failed"], float(node.get("reload_failures", 0) or 0))
        out.append(reloads)
        for key, name, doc_text in (
            ("started_at", "gslb_node_start_time_seconds", "Unix time the process started"),
            (
                "loaded_at",
                "gslb_node_config_loaded_time_seconds",
                "Unix time the current configuration was loaded",
            ),
        ):
            if isinstance(node.get(key), int | float):
                out.append(GaugeMetricFamily(name, doc_text, value=float(node[key])))
        out.extend(_cluster_families(doc.get("cluster"), node.get("generation")))
        dcs = doc.get("datacenters") or []
        if dcs:
            agg = GaugeMetricFamily(
                "gslb_health_target_state",
                "Health of a datacenter after quorum and overrides (1 for the current state)",
                labels=["target", "state"],
            )
            override = GaugeMetricFamily(
                "gslb_health_override",
                "1 when an operator override is in force for the datacenter",
                labels=["target", "mode"],
            )
            for dc in dcs:
                name = str(dc.get("name", ""))
                current = str(dc.get("state", "unknown"))
                for s in _states_with(current):
                    agg.add_metric([name, s], 1.0 if s == current else 0.0)
                ov = dc.get("override")
                if ov:
                    override.add_metric([name, str(ov.get("mode", ""))], 1.0)
            out.extend([agg, override])
        return out


def _cluster_families(cluster: Any, generation: Any) -> list[Metric]:
    """The generation served, and in cluster mode how fresh this node's view of etcd is."""
    out: list[Metric] = []
    if isinstance(generation, dict):
        gen = GaugeMetricFamily(
            "gslb_node_generation",
            "Number of the generation served (0: read from local files); digest as a label",
            labels=["digest"],
        )
        gen.add_metric([str(generation.get("digest", ""))], float(generation.get("number") or 0))
        out.append(gen)
    if not isinstance(cluster, dict):
        return out
    out.append(
        GaugeMetricFamily(
            "gslb_cluster_stale",
            "1 when this node has not read etcd recently and serves its last good generation",
            value=1.0 if cluster.get("stale") else 0.0,
        )
    )
    age = cluster.get("last_contact_age")
    out.append(
        GaugeMetricFamily(
            "gslb_cluster_last_contact_age_seconds",
            "Seconds since this node last read etcd (+Inf: never)",
            value=float(age) if isinstance(age, int | float) else math.inf,
        )
    )
    out.append(
        CounterMetricFamily(
            "gslb_cluster_generations_rejected_total",
            "Published generations that failed validation on this node and were not applied",
            value=float(cluster.get("rejections") or 0),
        )
    )
    return out


def _states_with(current: str) -> tuple[str, ...]:
    return STATES if current in STATES else (*STATES, current)


class RegistryCollector:
    """Wraps anything with collect() (e.g. a CollectorRegistry) so it can join another registry."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        metrics: Iterable[Metric] = self._inner.collect()
        return metrics
