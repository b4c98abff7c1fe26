"""HealthMonitor: the health side of `gslb dns`.

Gathers regional reports (from probe agents' change streams, or from its own checks when no
agents are configured), aggregates them with quorum/staleness/overrides (aggregate.py, pure)
and publishes a new HealthSnapshot the moment anything changes. Overrides and the last known
health are kept in a state file so a restart neither forgets a drain nor starts blind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import aiohttp

from ..clock import SYSTEM_CLOCK, Clock
from ..config.model import Config, ProbeAgent
from .aggregate import (
    NO_FRESH,
    WARM,
    Override,
    RegionReport,
    aggregate_checks,
    apply_overrides,
    describe_quorum,
    hold_steady_loads,
    manual_failback_overrides,
)
from .checks import Checker, targets_from_config, unchecked_targets
from .follower import AgentFollower
from .report import LatencyTable, ProxyReport, latency_changed, merge_latency
from .scheduler import CheckScheduler
from .snapshot import HealthHolder, HealthSnapshot, TargetHealth
from .state import RiseFall, Transition
from .statefile import StateWriter, load_state, render_state

log = logging.getLogger("gslb.health.monitor")

OverrideArg = Literal["down", "up", "none"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HealthMonitor:
    def __init__(
        self,
        config: Config,
        holder: HealthHolder,
        clock: Clock = SYSTEM_CLOCK,
        state_file: str | None = None,
        *,
        tick: float = 1.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        checker: Checker | None = None,
        max_concurrency: int = 64,
    ) -> None:
        self.config = config
        self.holder = holder
        self.clock = clock
        self.state_file = state_file if state_file is not None else config.health.state_file
        self.tick = tick
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._checker = checker
        self._max_concurrency = max_concurrency

        self._reports: dict[str, RegionReport] = {}
        self._overrides: dict[str, Override] = {}
        self._checks: dict[str, TargetHealth] = {}  # aggregated from checks, before overrides
        self._final: dict[str, TargetHealth] = {}  # what is published
        self._latency: LatencyTable = MappingProxyType({})  # published client round-trip times
        # Merging every region's tables is the costly part: at most once per tick.
        self._latency_merged_at: float | None = None
        self._holding: set[str] = set()  # targets flagged "no fresh reports"
        self._started_at: float | None = None
        self._followers: dict[str, AgentFollower] = {}
        self._scheduler: CheckScheduler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._running = False
        self._writer = StateWriter(self.state_file) if self.state_file else None
        self._load_state()

    # ---- state file ---------------------------------------------------------------------

    def _load_state(self) -> None:
        if not self.state_file:
            return
        saved = load_state(self.state_file)  # StateFileError propagates: do not lose drains
        self._overrides = dict(saved.overrides)
        when = _iso(saved.saved_at) if saved.saved_at is not None else "unknown time"
        for target, (state, since, _reason) in saved.last_known.items():
            if target not in self.config.datacenters or state == "unknown":
                continue
            self._checks[target] = TargetHealth(
                state,  # type: ignore[arg-type]
                f"{WARM}: last known state, saved {when}",
                MappingProxyType({}),
                since,
            )
        self._final = apply_overrides(self._checks, self._known_overrides(), {}, self.clock.time())
        if saved.overrides or self._checks:
            log.info(
                "health state file %s: %d override(s), %d warm state(s)",
                self.state_file,
                len(saved.overrides),
                len(self._checks),
            )

    def _save(self) -> None:
        # Rendered here (a consistent view), written on the writer's thread: no fsync on the loop.
        if self._writer is None:
            return
        self._writer.submit(render_state(self._overrides, self._checks, self.clock.time()))

    def flush_state(self, timeout: float = 10.0) -> bool:
        """Wait until the state file holds everything saved so far."""
        return self._writer.flush(timeout) if self._writer is not None else True

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def mode(self) -> Literal["agents", "local"]:
        return "agents" if self.config.health.agents else "local"

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._started_at = self.clock.monotonic()
        # Warm states (or unknowns) are served from the first query on.
        self._evaluate(force_publish=True)
        self._apply_sources()
        self._tick_task = asyncio.create_task(self._ticker(), name="health-tick")

    async def stop(self) -> None:
        self._running = False
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None
        await self._stop_local()
        for f in list(self._followers.values()):
            await f.stop()
        self._followers.clear()
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._save()
        await asyncio.get_running_loop().run_in_executor(None, self.flush_state)

    def reload(self, config: Config) -> None:
        """New targets/agents/settings; known states, reports and overrides are kept."""
        self.config = config
        if self._running:
            self._apply_sources()
        self._evaluate()

    def _apply_sources(self) -> None:
        """Start/stop the local scheduler and agent followers to match the config."""
        agents = {a.region: a for a in self.config.health.agents}
        if agents:
            sched, self._scheduler = self._scheduler, None
            if sched is not None:
                self._spawn(sched.stop())
            for region, f in list(self._followers.items()):
                if region not in agents or agents[region].url != f.agent.url:
                    self._followers.pop(region)
                    self._spawn(f.stop())
            for region, agent in agents.items():
                if region not in self._followers:
                    self._follow(agent)
            keep = set(agents)
        else:
            for f in self._followers.values():
                self._spawn(f.stop())
            self._followers.clear()
            targets = targets_from_config(self.config)
            if self._scheduler is None:
                self._scheduler = CheckScheduler(
                    targets,
                    clock=self.clock,
                    checker=self._checker,
                    max_concurrency=self._max_concurrency,
                    initial=self._known_states(),
                )
                self._scheduler.subscribe(self._on_local_result)
                self._spawn(self._scheduler.start())
            else:
                self._scheduler.update(targets)
            keep = {self.config.health.local_region}
        for region in list(self._reports):
            if region not in keep:
                del self._reports[region]  # a source that no longer exists does not vote

    def _known_states(self) -> dict[str, tuple[Any, float]]:
        # Local checks start from the last known (or warm) state, so one failing probe after
        # a restart does not flip a target; `fall` failures are still needed.
        return {t: (h.state, h.since) for t, h in self._checks.items() if h.state != "unknown"}

    async def _stop_local(self) -> None:
        sched, self._scheduler = self._scheduler, None
        if sched is not None:
            await sched.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _follow(self, agent: ProbeAgent) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        f = AgentFollower(
            agent,
            self._session,
            self._on_follower,
            self.clock,
            read_timeout=max(self.config.health.stale_after, 1.0),
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            token=self.config.health.token,
        )
        self._followers[agent.region] = f
        f.start()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                if self._scheduler is not None and self.mode == "local":
                    self._refresh_local()
                self._evaluate()
            except Exception:
                log.exception("health evaluation failed")

    # ---- inputs -------------------------------------------------------------------------

    def _on_follower(self, f: AgentFollower) -> None:
        if self._followers.get(f.region) is not f:
            return
        if f.last_event_at is not None:
            self._reports[f.region] = RegionReport(
                f.last_event_at, f.states, MappingProxyType(dict(f.reports))
            )
        self._evaluate()

    def _on_local_result(self, name: str, machine: RiseFall, t: Transition | None) -> None:
        self._refresh_local()
        if t is not None or self.config.health.local_region not in self._reports:
            self._evaluate()

    def _refresh_local(self) -> None:
        sched = self._scheduler
        if sched is None:
            return
        # A target counts once it has a result or a (warm) state; before any probe has run,
        # no local report exists and the warm state holds.
        if not any(m.checks for m in sched.machines.values()):
            return
        reports: dict[str, ProxyReport] = {}
        for name, machine in sched.machines.items():
            last = machine.last_result
            if last is not None and last.report is not None:
                reports[name] = last.report
        self._reports[self.config.health.local_region] = RegionReport(
            self.clock.monotonic(), sched.states(), MappingProxyType(reports)
        )

    # ---- decisions ----------------------------------------------------------------------

    def _known_overrides(self) -> dict[str, Override]:
        return {t: o for t, o in self._overrides.items() if t in self.config.datacenters}

    def _evaluate(self, force_publish: bool = False) -> bool:
        """Re-aggregate; publish a new snapshot if anything changed. Returns True if published."""
        hs = self.config.health
        checked = set(targets_from_config(self.config))
        unchecked = unchecked_targets(self.config)
        wall = self.clock.time()
        checks = aggregate_checks(
            self._reports,
            self.clock.monotonic(),
            hs.stale_after,
            hs.quorum,
            self._checks,
            targets=checked,
            unchecked=unchecked,
            wall=wall,
        )
        manual = [n for n, dc in self.config.datacenters.items() if dc.failback == "manual"]
        latched = manual_failback_overrides(checks, self._overrides, manual, wall)
        if latched:
            self._overrides.update(latched)
            log.warning("failback manual: holding %s down", ", ".join(sorted(latched)))
            self._save()
        final = hold_steady_loads(
            apply_overrides(checks, self._known_overrides(), self._final, wall), self._final
        )
        latency = self._latency
        now = self.clock.monotonic()
        due = self._latency_merged_at is None or now - self._latency_merged_at >= self.tick
        if due or force_publish:
            self._latency_merged_at = now
            merged = self._merged_latency(wall)
            if latency_changed(latency, merged):
                latency = MappingProxyType(merged)
        self._checks = checks
        holding = {t for t, h in checks.items() if h.reason.startswith(NO_FRESH)}
        # Right after start no agent has had time to report: that is expected, not a warning.
        starting = (
            self._started_at is not None
            and self.clock.monotonic() - self._started_at < hs.stale_after
            and not self._reports
        )
        if holding - self._holding and not starting:
            log.warning(
                "no fresh health reports for %s; holding last known state",
                ", ".join(sorted(holding - self._holding)),
            )
        if self._holding - holding and self._holding:
            log.info(
                "fresh health reports again for %s", ", ".join(sorted(self._holding - holding))
            )
        if not starting:
            self._holding = holding
        if not force_publish and final == self._final and latency is self._latency:
            return False
        changed = [t for t in final if self._final.get(t) != final[t]]
        for t in changed:
            old = self._final.get(t)
            if old is not None and old.state != final[t].state:
                regions = dict(final[t].regions)
                evidence = ", ".join(f"{r} {st}" for r, st in sorted(regions.items()))
                log.info(
                    "target %s: %s -> %s (%s)%s",
                    t,
                    old.state,
                    final[t].state,
                    final[t].reason,
                    f"; regions: {evidence}" if evidence else "",
                    extra={
                        "fields": {
                            "event": "health_transition",
                            "target": t,
                            "from": old.state,
                            "to": final[t].state,
                            "reason": final[t].reason,
                            "regions": regions,
                        }
                    },
                )
        self._final = final
        self._latency = latency
        epoch = self.holder.current.epoch + 1
        self.holder.publish(HealthSnapshot(epoch, MappingProxyType(dict(final)), latency))
        self._save()
        return True

    def _merged_latency(self, wall: float) -> dict[str, dict[str, tuple[float, float]]]:
        """Client round-trip times from every fresh region's proxy reports, for the latency
        policy; nothing when no service uses it (the table is not carried for nothing)."""
        ages = [
            s.latency_max_age for s in self.config.services.values() if s.ordering == "latency"
        ]
        if not ages:
            return {}
        hs = self.config.health
        now = self.clock.monotonic()
        fresh = [r.reports for r in self._reports.values() if now - r.received_at <= hs.stale_after]
        return merge_latency(fresh, wall, max(ages))

    # ---- overrides ----------------------------------------------------------------------

    def set_override(
        self, target: str, mode: OverrideArg, reason: str, at: float | None = None,
        drain: float = 0.0,
    ) -> None:
        """Drain (down), force up, or back to checks (none); persisted, published at once."""
        if target not in self.config.datacenters:
            raise KeyError(target)
        if mode == "none":
            removed = self._overrides.pop(target, None)
            if removed is not None:
                log.warning("override cleared for %s: %s", target, reason)
        elif mode in ("down", "up"):
            when = self.clock.time() if at is None else at
            self._overrides[target] = Override(mode, reason, when, drain)
            log.warning("override %s for %s: %s", mode, target, reason)
        else:
            raise ValueError(f"mode must be down, up or none, not {mode!r}")
        self._save()
        self._evaluate()

    def replace_overrides(self, overrides: dict[str, Override]) -> None:
        """The whole override set at once (cluster mode: what etcd holds); no-op if equal."""
        if overrides == self._overrides:
            return
        for target in sorted(set(overrides) | set(self._overrides)):
            old, new = self._overrides.get(target), overrides.get(target)
            if old != new:
                what = f"{new.mode}: {new.reason}" if new is not None else "cleared"
                log.warning("override for %s from the cluster: %s", target, what)
        self._overrides = dict(overrides)
        self._save()
        self._evaluate()

    @property
    def overrides(self) -> dict[str, Override]:
        return dict(self._overrides)

    # ---- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        hs = self.config.health
        now = self.clock.monotonic()
        regions: dict[str, dict[str, Any]] = {}
        if self.mode == "agents":
            for region, f in self._followers.items():
                age = now - f.last_event_at if f.last_event_at is not None else None
                regions[region] = {
                    "url": f.agent.url,
                    "connected": f.connected,
                    "fresh": age is not None and age <= hs.stale_after,
                    "age": age,
                    "seq": f.seq,
                    "last_error": f.last_error or None,
                }
        else:
            rep = self._reports.get(hs.local_region)
            age = now - rep.received_at if rep is not None else None
            regions[hs.local_region] = {
                "url": None,
                "connected": self._scheduler is not None,
                "fresh": age is not None and age <= hs.stale_after,
                "age": age,
                "seq": None,
                "last_error": None,
            }
        targets: dict[str, Any] = {}
        for name, th in self._final.items():
            per_region: dict[str, Any] = {}
            for region, rep in self._reports.items():
                fresh = now - rep.received_at <= hs.stale_after
                entry: dict[str, Any] = {"state": rep.states.get(name, "unknown"), "fresh": fresh}
                detail = self._detail(region, name)
                if detail:
                    entry.update(detail)
                per_region[region] = entry
            o = self._overrides.get(name)
            base = self._checks.get(name)
            targets[name] = {
                "state": th.state,
                "reason": th.reason,
                "since": th.since,
                "checks_state": base.state if base else "unknown",
                "override": {"mode": o.mode, "reason": o.reason, "at": o.at} if o else None,
                "load": th.load,
                "capacity": th.capacity,
                "regions": per_region,
            }
        return {
            "mode": self.mode,
            "epoch": self.holder.current.epoch,
            "quorum": describe_quorum(hs.quorum),
            "stale_after": hs.stale_after,
            "state_file": self.state_file,
            "regions": regions,
            "targets": targets,
            # Client networks with round-trip times from the proxies (the latency policy).
            "latency_networks": len(self._latency),
        }

    def _detail(self, region: str, target: str) -> dict[str, Any]:
        if self._scheduler is not None and region == self.config.health.local_region:
            m = self._scheduler.machines.get(target)
            if m is None:
                return {}
            v = m.view()
            return {"last_error": v["last_error"], "last_latency_ms": v["last_latency_ms"]}
        f = self._followers.get(region)
        if f is None:
            return {}
        view = f.views.get(target) or {}
        return {
            "last_error": view.get("last_error"),
            "last_latency_ms": view.get("last_latency_ms"),
        }
