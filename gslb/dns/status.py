"""What a DNS node tells its admin API: the /status document, events and counters.

Reads the node's current generation, health monitor and responder counters; builds plain data.
Health events come from diffing successive health snapshots, so every path that changes health
(checks, agents, overrides) shows up the same way.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype

from .. import __version__
from ..admin.metrics import DnsCounters, HealthCounters
from ..cluster.generation import describe
from ..dnssec.status import describe_signing, signature_cache_counts
from ..health.snapshot import HealthSnapshot
from .node import DnsNode
from .responder import LATENCY_BOUNDS

ANSWER_WINDOW = 60.0  # seconds of "where recent answers went"
MAX_EVENTS = 200


class NodeStatus:
    """`workers`: the node's worker pool when it has one (counters, per-worker view, sync);
    `cluster`: its etcd follower in cluster mode (status, staleness)."""

    def __init__(
        self,
        node: DnsNode,
        name: str = "dns-1",
        demo: bool = False,
        *,
        workers: Any = None,
        cluster: Any = None,
    ) -> None:
        self.node = node
        self.name = name
        self.demo = demo
        self.workers = workers
        self.cluster = cluster
        # Other nodes of the fleet as someone polled them (`gslb run --cluster`): one line each.
        self.peers: list[dict[str, Any]] = []
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._previous = node.health.current
        self._transitions: dict[tuple[str, str, str], int] = {}
        # Seeded at start, so answers given before anyone opens the page are counted.
        self._answer_samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            [(time.monotonic(), {})]
        )
        node.health.subscribe(self._on_snapshot)
        node.on_reload.append(self._on_reload)

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for callback in list(self._subscribers):
            callback(event)

    def _on_snapshot(self, snapshot: HealthSnapshot) -> None:
        previous, self._previous = self._previous, snapshot
        for target, health in snapshot.targets.items():
            before = previous.state(target)
            if health.state == before:
                continue
            self._transitions[(target, "", health.state)] = (
                self._transitions.get((target, "", health.state), 0) + 1
            )
            kind = "override" if "override" in health.reason.lower() else "health"
            self._emit(
                {
                    "time": time.time(),
                    "kind": kind,
                    "target": target,
                    "region": "",
                    "from": before,
                    "to": health.state,
                    "detail": health.reason,
                }
            )

    def _on_reload(self, ok: bool, errors: list[str]) -> None:
        self._emit(
            {
                "time": time.time(),
                "kind": "reload",
                "target": "",
                "region": "",
                "from": "",
                "to": "ok" if ok else "rejected",
                "detail": "; ".join(errors[:3]),
            }
        )

    # -- admin API ---------------------------------------------------------------------------

    def reload(self) -> Any:
        """(ok, errors); with workers, an awaitable that resolves once every worker has the
        new generation, so a 200 from /v1/reload means every worker answers from it."""
        ok = self.node.reload()
        errors = [] if ok else (self.node.last_reload_error or "").splitlines()
        if self.workers is None:
            return ok, errors
        workers = self.workers

        async def synced() -> tuple[bool, list[str]]:
            if ok and not await workers.synced():
                return False, ["not every worker applied the new generation in time"]
            return ok, errors

        return synced()

    def status(self) -> dict[str, Any]:
        node = self.node
        generation = node.generation
        config = generation.config
        monitor_status = node.monitor.status() if node.monitor is not None else {"targets": {}}
        targets = monitor_status.get("targets", {})
        datacenters = []
        regions: set[str] = set(monitor_status.get("regions", {}))
        if config is not None:
            for name, dc in config.datacenters.items():
                target = targets.get(name, {})
                health = node.health.current.targets.get(name)
                per_region = {
                    region: view.get("state", "unknown")
                    for region, view in target.get("regions", {}).items()
                }
                regions.update(per_region)
                datacenters.append(
                    {
                        "name": name,
                        "region": dc.region,
                        "latitude": dc.latitude,
                        "longitude": dc.longitude,
                        "state": node.health.current.state(name),
                        "reason": target.get("reason", ""),
                        "since": target.get("since"),
                        "regions": per_region,
                        "override": target.get("override"),
                        # Reported by the datacenter's proxy with its health (requests/s);
                        # the declared capacity wins over the reported one, as in spillover.
                        "load": health.load if health is not None else None,
                        "capacity": dc.capacity
                        or (health.capacity if health is not None else None),
                    }
                )
        services = []
        steering = generation.responder.steering
        # Slow starts and drains in force: {service: {datacenter: {kind, share, progress}}}.
        ramps = steering.transitions() if steering is not None else {}
        if config is not None:
            for service_name, service in config.services.items():
                services.append(
                    {
                        "name": service_name,
                        "policy": getattr(service, "policy", ""),
                        "ttl": getattr(service, "ttl", None),
                        "transitions": ramps.get(service_name, {}),
                        # Widest-scope answer map: off, building (GeoIP-network scopes), ready.
                        "scope_map": (
                            steering.scope_map_state(service_name)
                            if steering is not None
                            else "off"
                        ),
                    }
                )
        zones = []
        for origin, zone in sorted(generation.responder.zones.zones.items()):
            soa = zone.nodes[origin][dns.rdatatype.SOA]
            zones.append({"origin": origin.to_text().lower(), "serial": soa[0].serial})
        return {
            "node": {
                "name": self.name,
                "version": __version__,
                "config_path": node.options.config_path,
                "config_version": self._config_version(),
                "loaded_at": generation.loaded_at,
                "reloads": node.reloads,
                "reload_failures": node.reload_failures,
                "last_reload_error": node.last_reload_error,
                "started_at": node.started_at,
                "listen": self._listen(),
                "generation": describe(node.source),
                "workers": self.workers.describe() if self.workers is not None else [],
            },
            "cluster": self._cluster(),
            "demo": self.demo,
            "zones": zones,
            "services": services,
            "regions": sorted(regions),
            "datacenters": datacenters,
            "health": monitor_status,
            "answers": self._recent_answers(),
            "events": list(self.events)[-50:],
            "dnssec": describe_signing(generation.responder.signers, time.time()),
        }

    def explain(self, name: str, client: str, subnet: str | None) -> tuple[int, dict[str, Any]]:
        """`gslb explain --admin`: the decision this node gives now, on its live health (the
        proxies' loads and round-trip times included), narrated. (HTTP status, body)."""
        from ..config.validate import normalize_name

        generation = self.node.generation
        steering = generation.responder.steering
        if steering is None:
            return 404, {"error": "this node serves no GSLB services"}
        service = steering.services.get(normalize_name(name))
        if service is None:
            known = ", ".join(steering.services) or "none"
            return 404, {"error": f"{name} is not a GSLB service (services: {known})"}
        try:
            ipaddress.ip_address(client)
            net = ipaddress.ip_network(subnet or client, strict=False)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        report = steering.explain(service, net.network_address.packed, net.prefixlen)
        report["client"]["source"] = client
        report["node"] = self.name
        return 200, report

    def _cluster(self) -> dict[str, Any] | None:
        if self.cluster is None:
            return None
        doc: dict[str, Any] = self.cluster.status()
        me = {"name": self.name, "generation": doc["generation"], "stale": doc["stale"]}
        doc["nodes"] = [me, *self.peers]
        return doc

    def _listen(self) -> list[str]:
        if self.workers is not None:
            return list(self.workers.listen)
        return [f"{host}:{port}" for host, port in self.node.server.addresses]

    def _config_version(self) -> str:
        if self.node.generation.source is not None:
            return self.node.source.digest[:8]
        digest = hashlib.sha256()
        options = self.node.options
        paths = sorted(Path(options.zones_dir).glob("*.zone")) if options.zones_dir else []
        for extra in (options.config_path, options.octodns_path):
            if extra:
                paths.append(Path(extra))
        if options.octodns_path:  # the zone YAMLs live beside (or below) octoDNS's main config
            paths.extend(sorted(Path(options.octodns_path).resolve().parent.rglob("*.yaml")))
        for path in paths:
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue
        return digest.hexdigest()[:8]

    def answers_by_datacenter(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        if self.workers is not None:
            for counters in self.workers.counters():
                for (_qt, _rc, _service, datacenter), count in counters.queries.items():
                    if datacenter:
                        totals[datacenter] = totals.get(datacenter, 0) + count
            return totals
        for (_qtype, _rcode, _service, datacenter), count in self.node.answer_counts().items():
            if datacenter:
                totals[datacenter] = totals.get(datacenter, 0) + count
        return totals

    def _recent_answers(self) -> dict[str, Any]:
        now = time.monotonic()
        current = self.answers_by_datacenter()
        samples = self._answer_samples
        samples.append((now, current))
        while len(samples) > 1 and now - samples[1][0] >= ANSWER_WINDOW:
            samples.popleft()
        base_time, base = samples[0]
        recent = {dc: count - base.get(dc, 0) for dc, count in current.items()}
        recent = {dc: count for dc, count in recent.items() if count > 0}
        return {
            "window_seconds": round(max(now - base_time, 0.0), 1),
            "total": sum(recent.values()),
            "by_datacenter": recent,
        }

    def dns_counters(self) -> DnsCounters | list[DnsCounters]:
        if self.workers is not None:
            counters: list[DnsCounters] = self.workers.counters()
            return counters  # one per worker, summed by Prometheus
        return node_counters(self.node)

    def health_counters(self) -> HealthCounters:
        state: dict[tuple[str, str], str] = {}
        latency: dict[tuple[str, str], tuple[float, int]] = {}
        if self.node.monitor is not None:
            for target, view in self.node.monitor.status().get("targets", {}).items():
                state[(target, "")] = view.get("state", "unknown")
                for region, regional in view.get("regions", {}).items():
                    state[(target, region)] = regional.get("state", "unknown")
                    ms = regional.get("last_latency_ms")
                    if ms is not None:
                        latency[(target, region)] = (ms / 1000.0, 1)
        return HealthCounters(
            transitions=dict(self._transitions), state=state, probe_latency=latency
        )


def node_counters(node: DnsNode) -> DnsCounters:
    """The counters of the process serving `node` (a worker, or a single-process node)."""
    responder = node.holder.current
    hits, misses = responder.cache_counts()
    stats = responder.stats
    queries = {
        (
            dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype)),
            dns.rcode.to_text(dns.rcode.Rcode(rcode)),
            service,
            datacenter,
        ): count
        for (qtype, rcode, service, datacenter), count in node.answer_counts().items()
    }
    cumulative = 0
    buckets = []
    for bound, count in zip((*LATENCY_BOUNDS, float("inf")), stats.latency_counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return DnsCounters(
        queries=queries,
        worker=node.worker,
        cache_hits=hits + node.retired_cache[0],
        cache_misses=misses + node.retired_cache[1],
        latency_buckets=buckets,
        latency_sum=stats.latency_sum,
        latency_count=stats.latency_samples,
        rrl=_rrl_counts(responder),
        acl={"refused": stats.acl_refused, "dropped": stats.acl_dropped},
        protocol=node.protocol_counts(),
        dnssec=signature_cache_counts(responder.signers),
    )


def _rrl_counts(responder: Any) -> dict[str, int]:
    limiter = responder.protection.rrl
    if limiter is None:
        return {}
    return {k: v for k, v in limiter.stats.as_dict().items() if k != "evictions"}
