"""Follows one probe agent's change stream (server-sent events) and keeps its latest report.

The stream starts with a full snapshot, so every (re)connect resynchronises. A sequence gap
or a silent stream (no event within `read_timeout`, though agents send heartbeats) ends the
connection; the follower reconnects with exponential backoff. It decides nothing: the
monitor reads `states`, `reports` and `last_event_at` and aggregates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from ..clock import SYSTEM_CLOCK, Clock
from ..config.model import ProbeAgent
from .checks import describe_error
from .report import ProxyReport, report_from_view
from .snapshot import State

log = logging.getLogger("gslb.health.follower")

MAX_EVENT = 16 * 1024 * 1024  # a snapshot of many targets is large, but not unbounded


def parse_event(raw: bytes) -> tuple[str, dict[str, Any]]:
    """One SSE block -> (event name, JSON data). Comment lines and ids are ignored."""
    event = "message"
    data: list[str] = []
    for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    payload = json.loads("\n".join(data)) if data else {}
    if not isinstance(payload, dict):
        raise ValueError("event data must be a JSON object")
    return event, payload


class StreamError(Exception):
    """The stream cannot be used (bad status, sequence gap, oversized event)."""


class SequenceGap(StreamError):
    pass


class AgentFollower:
    def __init__(
        self,
        agent: ProbeAgent,
        session: aiohttp.ClientSession,
        on_update: Callable[[AgentFollower], None],
        clock: Clock = SYSTEM_CLOCK,
        *,
        read_timeout: float = 10.0,
        connect_timeout: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.agent = agent
        self._headers = {"Accept": "text/event-stream"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.region = agent.region
        self._session = session
        self._on_update = on_update
        self.clock = clock
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.views: dict[str, dict[str, Any]] = {}
        # What each datacenter's proxy reported with its health, on this node's clock (an
        # age becomes a time the moment the event is read).
        self.reports: dict[str, ProxyReport] = {}
        self.seq: int | None = None
        self.connected = False
        self.last_event_at: float | None = None  # clock.monotonic() of the last event
        self.last_error = ""
        self.connects = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def states(self) -> dict[str, State]:
        out: dict[str, State] = {}
        for name, v in self.views.items():
            s = v.get("state")
            out[name] = s if s in ("up", "down") else "unknown"
        return out

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"health-follow:{self.region}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.connected = False

    async def run(self) -> None:
        delay = self.backoff_initial
        while True:
            before = self.connects
            try:
                await self._follow_once()
                self.last_error = "stream ended"
            except asyncio.CancelledError:
                raise
            except StreamError as exc:
                self.last_error = str(exc)
            except Exception as exc:
                self.last_error = (
                    describe_error(exc)
                    if not isinstance(exc, TimeoutError)
                    else (f"no event within {self.read_timeout:g}s")
                )
            if self.connected or self.connects != before:
                log.warning("probe agent %s disconnected: %s", self.region, self.last_error)
                delay = self.backoff_initial  # it was up; retry quickly
            self.connected = False
            self._notify()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    async def _follow_once(self) -> None:
        url = self.agent.url.rstrip("/") + "/v1/health/stream"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        async with self._session.get(url, timeout=timeout, headers=self._headers) as resp:
            if resp.status != 200:
                raise StreamError(f"HTTP {resp.status} from {url}")
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while (i := buf.find(b"\n\n")) >= 0:
                    raw, buf = buf[:i], buf[i + 2 :]
                    self._handle(*parse_event(raw))
                if len(buf) > MAX_EVENT:
                    raise StreamError("event too large")

    def _handle(self, event: str, data: dict[str, Any]) -> None:
        seq = data.get("seq")
        targets = data.get("targets") or {}
        if event == "snapshot":
            self.views = dict(targets)
            self.reports = {}
            self._take_reports(targets)
            self.seq = seq
            if not self.connected:
                self.connects += 1
                log.info("probe agent %s connected (seq %s)", self.region, seq)
            self.connected = True
            self.last_error = ""
        elif event == "change":
            if self.seq is None or seq != self.seq + 1:
                raise SequenceGap(f"sequence gap: had {self.seq}, got {seq}")
            self.views.update(targets)
            self._take_reports(targets)
            self.seq = seq
        elif event == "report":
            if seq != self.seq:
                raise SequenceGap(f"sequence gap on report: had {self.seq}, got {seq}")
            for name, view in targets.items():
                if name in self.views and isinstance(view, dict):
                    self.views[name]["report"] = view.get("report")
            self._take_reports(targets)
        elif event == "heartbeat":
            if seq != self.seq:
                raise SequenceGap(f"sequence gap on heartbeat: had {self.seq}, got {seq}")
        else:
            return  # unknown events are ignored for forward compatibility
        self.last_event_at = self.clock.monotonic()
        self._notify()

    def _take_reports(self, targets: dict[str, Any]) -> None:
        now = self.clock.time()
        for name, view in targets.items():
            report = report_from_view(view.get("report"), now) if isinstance(view, dict) else None
            if report is not None:
                self.reports[name] = report
            else:
                self.reports.pop(name, None)

    def _notify(self) -> None:
        try:
            self._on_update(self)
        except Exception:
            log.exception("health follower listener failed for %s", self.region)
