"""A small in-process StatusSource for the admin tests (no tests here).

It holds a /status document the test edits; changes publish events like a node would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gslb.admin.metrics import DnsCounters, HealthCounters

T0 = 1_790_000_000.0

DCS: list[tuple[str, float, float]] = [
    ("us-east", 39.0, -77.5),
    ("us-west", 45.6, -121.2),
    ("eu-west", 53.3, -6.3),
    ("ap-northeast", 35.7, 139.7),
    ("sa-east", -23.5, -46.6),
]
REGIONS = ["us-east", "eu-west", "ap-northeast", "sa-east"]


class FakeNode:
    """StatusSource double: datacenters, events and counters a test can change."""

    def __init__(self, demo: bool = True) -> None:
        self.lock = threading.Lock()
        self.demo = demo
        self.now = T0 + 3600
        self.reloads = 0
        self.reload_failures = 0
        self.reload_errors: list[str] = []
        self.last_reload_error: str | None = None
        self.subscribers: list[Callable[[dict], None]] = []
        self.events: list[dict[str, Any]] = []
        self.dcs: dict[str, dict[str, Any]] = {}
        for name, lat, lon in DCS:
            self.dcs[name] = {
                "name": name,
                "region": name,
                "latitude": lat,
                "longitude": lon,
                "state": "up",
                "reason": "",
                "since": T0,
                "regions": {r: "up" for r in REGIONS},
                "override": None,
            }
        self.answers = {"us-east": 700, "us-west": 120, "eu-west": 534, "ap-northeast": 300}
        self.dns: DnsCounters | None = DnsCounters(
            queries={
                ("A", "NOERROR", "www.example.test.", "us-east"): 7,
                ("AAAA", "NOERROR", "www.example.test.", "eu-west"): 2,
                ("SOA", "NOERROR", "", ""): 1,
                ("A", "NXDOMAIN", "", ""): 3,
            },
            worker="0",
            cache_hits=9,
            cache_misses=4,
            latency_buckets=[(0.0005, 5), (0.001, 11), (0.01, 13), (float("inf"), 13)],
            latency_sum=0.0123,
            latency_count=13,
        )
        self.health: HealthCounters | None = HealthCounters(
            transitions={("eu-west", "us-east", "down"): 2, ("eu-west", "us-east", "up"): 1},
            state={("eu-west", "us-east"): "up", ("us-east", "us-east"): "down"},
            probe_latency={("eu-west", "us-east"): (0.5, 10)},
        )

    # --- StatusSource -------------------------------------------------------------------------
    def status(self) -> dict:
        with self.lock:
            total = sum(self.answers.values())
            return {
                "node": {
                    "name": "dns-1",
                    "version": "0.1.0",
                    "config_path": "zones/example.yaml",
                    "config_version": "3f2a9c1d",
                    "loaded_at": T0 + 60,
                    "reloads": self.reloads,
                    "reload_failures": self.reload_failures,
                    "last_reload_error": self.last_reload_error,
                    "started_at": T0,
                },
                "demo": self.demo,
                "zones": [{"origin": "example.test.", "serial": 2026112701}],
                "services": [
                    {"name": "www.example.test.", "policy": "geoproximity", "ttl": 30},
                    {"name": "api.example.test.", "policy": "failover", "ttl": 20},
                ],
                "regions": list(REGIONS),
                "datacenters": [dict(dc, regions=dict(dc["regions"])) for dc in self.dcs.values()],
                "answers": {
                    "window_seconds": 60,
                    "total": total,
                    "by_datacenter": dict(self.answers),
                },
                "events": list(self.events[-50:]),
            }

    def reload(self) -> tuple[bool, list[str]]:
        with self.lock:
            if self.reload_errors:
                self.reload_failures += 1
                self.last_reload_error = self.reload_errors[0]
                return False, list(self.reload_errors)
            self.reloads += 1
            self.last_reload_error = None
        self.emit(
            {
                "kind": "reload",
                "target": "",
                "region": "",
                "from": "",
                "to": "",
                "detail": "configuration reloaded",
            }
        )
        return True, []

    def dns_counters(self) -> DnsCounters | None:
        return self.dns

    def health_counters(self) -> HealthCounters | None:
        return self.health

    def subscribe(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    # --- test controls -----------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        event = {"time": self.now, **event}
        with self.lock:
            self.events.append(event)
        for cb in list(self.subscribers):
            cb(event)

    def set_state(self, dc: str, state: str, detail: str = "") -> None:
        with self.lock:
            old = self.dcs[dc]["state"]
            self.now += 5
            self.dcs[dc]["state"] = state
            self.dcs[dc]["since"] = self.now
            self.dcs[dc]["reason"] = detail
            self.dcs[dc]["regions"] = {r: state for r in REGIONS}
        self.emit(
            {
                "kind": "health",
                "target": dc,
                "region": "",
                "from": old,
                "to": state,
                "detail": detail or f"all regions report {state}",
            }
        )

    def set_override(self, dc: str, mode: str | None, reason: str = "") -> None:
        with self.lock:
            self.now += 5
            self.dcs[dc]["override"] = {"mode": mode, "reason": reason} if mode else None
            if mode in ("down", "up"):
                self.dcs[dc]["state"] = mode
        self.emit(
            {
                "kind": "override",
                "target": dc,
                "region": "",
                "from": "",
                "to": mode or "",
                "detail": reason or "override cleared",
            }
        )

    def set_unknown(self, dc: str) -> None:
        with self.lock:
            self.dcs[dc]["state"] = "unknown"
            self.dcs[dc]["regions"] = {REGIONS[0]: "unknown", REGIONS[1]: "up"}
        self.emit(
            {
                "kind": "health",
                "target": dc,
                "region": "",
                "from": "up",
                "to": "unknown",
                "detail": "reports are stale",
            }
        )

    def demo_routes(self) -> list[web.RouteDef]:
        async def fail(request: web.Request) -> web.Response:
            dc = request.match_info["dc"]
            if dc not in self.dcs:
                raise web.HTTPNotFound()
            self.set_state(dc, "down", "demo: failed by operator")
            return web.json_response({"ok": True})

        async def recover(request: web.Request) -> web.Response:
            dc = request.match_info["dc"]
            if dc not in self.dcs:
                raise web.HTTPNotFound()
            self.set_state(dc, "up", "demo: recovered by operator")
            return web.json_response({"ok": True})

        return [web.post("/v1/demo/fail/{dc}", fail), web.post("/v1/demo/recover/{dc}", recover)]
