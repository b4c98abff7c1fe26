"""Regional probe agent (`gslb probe`): checks every datacenter from one region and serves
the results to DNS nodes.

HTTP API:
  GET /v1/health         full snapshot {region, generated_at, seq, targets: {name: {...}}}
  GET /v1/health/stream  server-sent events: `snapshot` on connect, `change` per state change,
                         `heartbeat` every `heartbeat` seconds so a subscriber notices a dead agent
  `report`               the load and client round-trip times a datacenter's proxy sent with
                         its health page (gslb/health/report.py), per check that carried one
`seq` grows by one per event that changes state (`report` events do not change it: they carry
no state, and every snapshot repeats the latest reports); a subscriber that sees a gap
resynchronises.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from ..admin.auth import bearer_matches
from ..admin.metrics import HealthCollector, HealthCounters
from ..clock import SYSTEM_CLOCK, Clock
from ..config.model import Config
from .checks import Checker, CheckTarget, describe_targets, targets_from_config
from .report import report_view
from .scheduler import CheckScheduler
from .state import RiseFall, Transition

log = logging.getLogger("gslb.health.agent")

QUEUE_LIMIT = 1000  # events buffered per subscriber before it is dropped (it will resync)


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event; data is one line of compact JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def target_view(machine: RiseFall, describe: str, now: float) -> dict[str, Any]:
    v = machine.view()
    last = machine.last_result
    report = last.report if last is not None else None
    return {
        "report": report_view(report, now) if report is not None else None,
        "state": v["state"],
        "since": v["since"],
        "last_error": v["last_error"],
        "last_latency_ms": v["last_latency_ms"],
        "reason": v["reason"],
        "check": describe,
        "checks": {
            "total": v["checks"],
            "consecutive_successes": v["successes"],
            "consecutive_failures": v["failures"],
            "last_checked": v["last_checked"],
            "last_detail": last.detail if last else None,
        },
    }


class Agent:
    """Schedules checks for one region and serves snapshot + change stream."""

    def __init__(
        self,
        config: Config,
        region: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        heartbeat: float = 1.0,
        max_concurrency: int = 64,
        checker: Checker | None = None,
        targets: Mapping[str, CheckTarget] | None = None,
    ) -> None:
        self.region = region
        self.token = config.health.token  # when set, every request must carry it
        self.clock = clock
        self.heartbeat = heartbeat
        self.seq = 0
        self._targets = dict(targets) if targets is not None else targets_from_config(config)
        self._describe = describe_targets(self._targets)
        self.scheduler = CheckScheduler(
            self._targets, clock=clock, checker=checker, max_concurrency=max_concurrency
        )
        self.scheduler.subscribe(self._on_result)
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        # Plain counters for /metrics, read at scrape time.
        self.transitions: dict[tuple[str, str], int] = {}  # (target, new state) -> count
        self.latency: dict[str, tuple[float, int]] = {}  # target -> (seconds summed, checks)

    # ---- state ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "generated_at": self.clock.time(),
            "seq": self.seq,
            "targets": {
                name: target_view(m, self._describe.get(name, ""), self.clock.time())
                for name, m in self.scheduler.machines.items()
            },
        }

    def _on_result(self, name: str, machine: RiseFall, transition: Transition | None) -> None:
        last = machine.last_result
        if last is not None and last.latency is not None:
            total, count = self.latency.get(name, (0.0, 0))
            self.latency[name] = (total + last.latency, count + 1)
        if transition is None:
            if last is not None and last.report is not None:
                # Load and round-trip times move with every check: pushed, without a seq.
                now = self.clock.time()
                self._broadcast(
                    "report",
                    {
                        "region": self.region,
                        "generated_at": now,
                        "seq": self.seq,
                        "targets": {name: {"report": report_view(last.report, now)}},
                    },
                )
            return  # latency/streak updates are visible in GET; only state changes are pushed
        key = (name, transition.new)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        self.seq += 1
        now = self.clock.time()
        self._broadcast(
            "change",
            {
                "region": self.region,
                "generated_at": now,
                "seq": self.seq,
                "targets": {name: target_view(machine, self._describe.get(name, ""), now)},
            },
        )

    def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait((event, data))
            except asyncio.QueueFull:
                # A subscriber that cannot keep up is cut off; it reconnects and resyncs.
                self._subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def reload(self, config: Config, targets: Mapping[str, CheckTarget] | None = None) -> None:
        self._targets = dict(targets) if targets is not None else targets_from_config(config)
        self._describe = describe_targets(self._targets)
        self.scheduler.update(self._targets)
        self.seq += 1
        self._broadcast("snapshot", self.snapshot())

    # ---- HTTP -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._require_token])
        app.router.add_get("/v1/health", self._get_health)
        app.router.add_get("/v1/health/stream", self._stream)
        app.router.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _require_token(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if self.token is not None and not bearer_matches(request, self.token):
            return web.json_response(
                {"error": "a bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    def health_counters(self) -> HealthCounters:
        region = self.region
        return HealthCounters(
            transitions={(t, region, s): n for (t, s), n in self.transitions.items()},
            state={(t, region): m.state for t, m in self.scheduler.machines.items()},
            probe_latency={(t, region): v for t, v in self.latency.items()},
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(HealthCollector(self.health_counters))
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def _get_health(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(QUEUE_LIMIT)
        # Register before taking the snapshot so no change falls between the two.
        self._subscribers.add(q)
        try:
            await resp.write(sse("snapshot", self.snapshot()))
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), self.heartbeat)
                except TimeoutError:
                    item = (
                        "heartbeat",
                        {
                            "region": self.region,
                            "generated_at": self.clock.time(),
                            "seq": self.seq,
                        },
                    )
                if item is None:
                    break
                await resp.write(sse(*item))
        except ConnectionResetError:
            pass  # subscriber went away
        finally:
            self._subscribers.discard(q)
        return resp

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start checking and serving; returns the bound port."""
        await self.scheduler.start()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # what the listening sockets are bound to
        self.port = int(addresses[0][1]) if addresses else port
        log.info("probe agent %s serving on %s:%s", self.region, host, self.port)
        return self.port

    async def stop(self) -> None:
        # End open streams first so the runner's cleanup does not wait on them.
        for q in list(self._subscribers):
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)
        self._subscribers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.scheduler.stop()
