"""What a DNS node tells its admin API: the /status document, events and counters.

Reads the node's current generation, health monitor and responder counters; builds plain data.
Health events come from diffing successive health snapshots, so every path that changes health
(checks, agents, overrides) shows up the same way.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype

from .. import __version__
from ..dnssec.status import describe_signing, signature_cache_counts
from ..health.snapshot import HealthSnapshot
from .node import DnsNode

ANSWER_WINDOW = 60.0  # seconds of "where recent answers went"
MAX_EVENTS = 200


class NodeStatus:
    def __init__(self, node: DnsNode, name: str = "dns-1", demo: bool = False) -> None:
        self.node = node
        self.name = name
        self.demo = demo
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

    def reload(self) -> tuple[bool, list[str]]:
        ok = self.node.reload()
        errors = [] if ok else (self.node.last_reload_error or "").splitlines()
        return ok, errors

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
                    }
                )
        services = []
        if config is not None:
            for service_name, service in config.services.items():
                services.append(
                    {
                        "name": service_name,
                        "policy": getattr(service, "policy", ""),
                        "ttl": getattr(service, "ttl", None),
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
                "listen": [f"{host}:{port}" for host, port in node.server.addresses],
            },
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

    def _config_version(self) -> str:
        digest = hashlib.sha256()
        paths = sorted(Path(self.node.options.zones_dir).glob("*.zone"))
        if self.node.options.config_path:
            paths.append(Path(self.node.options.config_path))
        for path in paths:
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue
        return digest.hexdigest()[:8]

    def answers_by_datacenter(self) -> dict[str, int]:
        totals: dict[str, int] = {}
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

    def dns_counters(self) -> Any:
        from ..admin.server import DnsCounters

        responder = self.node.holder.current
        hits, misses = responder.cache_counts()
        stats = responder.stats
        queries = {
            (
                dns.rdatatype.to_text(qtype),
                dns.rcode.to_text(rcode),
                service,
                datacenter,
            ): count
            for (qtype, rcode, service, datacenter), count in self.node.answer_counts().items()
        }
        cumulative = 0
        buckets = []
        from .responder import LATENCY_BOUNDS

        for bound, count in zip((*LATENCY_BOUNDS, float("inf")), stats.latency_counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return DnsCounters(
            queries=queries,
            worker=self.node.worker,
            cache_hits=hits + self.node.retired_cache[0],
            cache_misses=misses + self.node.retired_cache[1],
            latency_buckets=buckets,
            latency_sum=stats.latency_sum,
            latency_count=stats.latency_samples,
            rrl=self._rrl_counts(responder),
            acl={"refused": stats.acl_refused, "dropped": stats.acl_dropped},
            dnssec=signature_cache_counts(responder.signers),
        )

    @staticmethod
    def _rrl_counts(responder: Any) -> dict[str, int]:
        limiter = responder.protection.rrl
        if limiter is None:
            return {}
        return {k: v for k, v in limiter.stats.as_dict().items() if k != "evictions"}

    def health_counters(self) -> Any:
        from ..admin.server import HealthCounters

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
