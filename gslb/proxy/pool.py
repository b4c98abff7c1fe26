"""Upstream pools: members, their health (active + passive), slow start and the choice of member.

The decisions come from pure pieces (balancers.py, outlier.py, gslb.health.state.RiseFall);
this module keeps the per-member state together and runs the active checks (the only I/O here).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
from typing import Any

import aiohttp

from ..clock import SYSTEM_CLOCK, Clock
from ..health.checks import BODY_LIMIT, read_limited
from ..health.state import CheckResult, RiseFall
from .balancers import SmoothWeightedRoundRobin, make_balancer
from .outlier import OutlierState, RetryBudget, record_outcome, slow_start_factor
from .settings import CheckSpec, MemberSpec, PoolSpec
from .upstream import MemberConnections
from .upstream_tls import client_context
from .upstream_tls import server_name as upstream_server_name

log = logging.getLogger("gslb.proxy.pool")

EWMA_ALPHA = 0.3


class Member:
    """One upstream server and everything known about it."""

    def __init__(self, spec: MemberSpec, pool: PoolSpec, clock: Clock) -> None:
        self.spec = spec
        self.name = spec.name
        self.host = spec.host
        self.port = spec.port
        self.tls = spec.tls or pool.tls
        self.scheme = "https" if self.tls else "http"
        self.base_weight = spec.weight
        self.weight = spec.weight  # effective weight (slow start applied) for the balancers
        self.inflight = 0
        self.ewma = 0.0
        self.requests = 0
        self.failures = 0
        check = pool.check or CheckSpec()
        self.health = RiseFall(spec.name, check.rise, check.fall, clock, initial="up")
        self.outlier = OutlierState()
        self.up_since: float | None = None  # monotonic time of the last return to service
        self.last_check_error = ""
        # Every transport's connections to this member: keep-alive, max_connections, waiters.
        self.conns = MemberConnections(pool.max_connections, pool.keepalive_timeout)

    def observe_latency(self, seconds: float) -> None:
        self.ewma = seconds if self.ewma == 0 else self.ewma + EWMA_ALPHA * (seconds - self.ewma)

    def available(self, now: float) -> bool:
        return self.health.state != "down" and not self.outlier.is_ejected(now)

    def status(self, now: float) -> dict[str, Any]:
        return {
            "member": self.name,
            "state": "up" if self.available(now) else "down",
            "active": self.health.state,
            "ejected": self.outlier.is_ejected(now),
            "weight": self.base_weight,
            "effective_weight": round(self.weight, 3),
            "inflight": self.inflight,
            "ewma_ms": round(self.ewma * 1000, 3),
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_check_error,
        }


class Pool:
    def __init__(
        self,
        spec: PoolSpec,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.clock = clock
        self.members = [Member(m, spec, clock) for m in spec.members]
        self.by_name = {m.name: m for m in self.members}
        self.balancer = make_balancer(spec.balance, rng)
        # Plain round robin ignores weights; while a member ramps up (slow start) the pool
        # switches to the weighted rotation so the ramp still applies.
        self._ramp = SmoothWeightedRoundRobin() if spec.balance == "round_robin" else None
        self.budget = RetryBudget(spec.retry_budget_percent)
        self.ejections = 0
        self.ssl = client_context(spec)  # None when no member speaks TLS

    def eligible(self, now: float | None = None) -> list[Member]:
        now = self.clock.monotonic() if now is None else now
        out = []
        window = self.spec.slow_start
        for m in self.members:
            if not m.available(now):
                continue
            if window <= 0:
                out.append(m)
                continue
            back = m.up_since
            if m.outlier.returned_at is not None and m.outlier.returned_at <= now:
                back = max(back or 0.0, m.outlier.returned_at)
            m.weight = m.base_weight * slow_start_factor(now, back, window)
            out.append(m)
        return out

    def choose(self, key: str | None = None) -> list[Member]:
        """Eligible members in the balancer's order: the first is the pick, the rest fallbacks."""
        members = self.eligible()
        balancer = self.balancer
        ramp = self._ramp
        # Weights move only during slow start: no scan of the members otherwise.
        if ramp is not None and self.spec.slow_start > 0:
            if any(m.weight != m.base_weight for m in members):
                balancer = ramp
        return [members[i] for i in balancer.order(members, key)]

    def report(self, member: Member, ok: bool, latency: float | None = None) -> None:
        """Passive health: one proxied request's outcome (ok=False: 5xx or connect failure)."""
        now = self.clock.monotonic()
        member.requests += 1
        if latency is not None:
            member.observe_latency(latency)
        if ok:
            if member.outlier.failures or member.outlier.returned_at is not None:
                record_outcome(member.outlier, True, now, self.spec.outlier, 0, len(self.members))
            return
        member.failures += 1
        ejected = sum(1 for m in self.members if m.outlier.is_ejected(now))
        if record_outcome(member.outlier, ok, now, self.spec.outlier, ejected, len(self.members)):
            self.ejections += 1
            log.warning(
                "pool %s: member %s ejected until +%.1fs (ejection #%d)",
                self.name,
                member.name,
                member.outlier.ejected_until - now,
                member.outlier.ejections,
            )

    def record_check(self, member: Member, result: CheckResult) -> None:
        member.last_check_error = result.error
        change = member.health.record(result)
        if change is not None:
            log.warning(
                "pool %s: member %s %s (%s)", self.name, member.name, change.new, change.reason
            )
            if change.new == "up":
                member.up_since = self.clock.monotonic()

    def healthy_count(self) -> int:
        now = self.clock.monotonic()
        return sum(1 for m in self.members if m.available(now))

    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        healthy = self.healthy_count()
        return {
            "pool": self.name,
            "healthy": healthy,
            "min_healthy": self.spec.min_healthy,
            "ok": healthy >= self.spec.min_healthy,
            "members": [m.status(now) for m in self.members],
        }


async def check_member(
    session: aiohttp.ClientSession,
    member: Member,
    check: CheckSpec,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> CheckResult:
    """One active check: HTTP GET of check.path (status, and body_match in the first BODY_LIMIT
    bytes) or a TCP connect."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        if check.path is None:
            async with asyncio.timeout(check.timeout):
                _, writer = await asyncio.open_connection(member.host, member.port)
                writer.close()
                await writer.wait_closed()
            return CheckResult(True, latency=loop.time() - start, detail="tcp connect")
        host = f"[{member.host}]" if ":" in member.host else member.host
        headers = {"Host": check.host_header} if check.host_header else {}
        url = f"{member.scheme}://{host}:{member.port}{check.path}"
        timeout = aiohttp.ClientTimeout(total=check.timeout)
        tls: dict[str, Any] = {}
        if member.tls and ssl_context is not None:
            tls = {"ssl": ssl_context, "server_hostname": server_name}
        async with session.get(url, headers=headers, timeout=timeout, **tls) as resp:
            if resp.status not in check.expect_status:
                return CheckResult(False, error=f"HTTP {resp.status}", detail=f"HTTP {resp.status}")
            if check.body_match:
                # The DNS side's rule: at most BODY_LIMIT bytes are read, the rest never is.
                body = await read_limited(resp.content, BODY_LIMIT)
                text = body.decode(resp.charset or "utf-8", errors="replace")
                if not re.search(check.body_match, text):
                    return CheckResult(
                        False, error="body did not match", detail=f"HTTP {resp.status}"
                    )
            return CheckResult(True, latency=loop.time() - start, detail=f"HTTP {resp.status}")
    except TimeoutError:
        return CheckResult(False, error="timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return CheckResult(False, error=str(exc) or type(exc).__name__)


class ActiveChecker:
    """Runs every pool's active checks on their interval until closed."""

    def __init__(self, pools: list[Pool]) -> None:
        self.pools = [p for p in pools if p.spec.check is not None]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if not self.pools:
            return
        # No keep-alive: a check must prove a fresh connection works.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        for pool in self.pools:
            self._tasks.append(asyncio.create_task(self._run(pool)))

    async def run_once(self, pool: Pool) -> None:
        assert pool.spec.check is not None and self._session is not None
        check = pool.spec.check
        results = await asyncio.gather(
            *(
                check_member(
                    self._session, m, check, pool.ssl, upstream_server_name(pool.spec, m.host)
                )
                for m in pool.members
            )
        )
        for member, result in zip(pool.members, results, strict=True):
            pool.record_check(member, result)

    async def _run(self, pool: Pool) -> None:
        assert pool.spec.check is not None
        while True:
            try:
                await self.run_once(pool)
            except Exception:  # a bug in one round must not stop checking forever
                log.exception("active checks of pool %s failed", pool.name)
            await asyncio.sleep(pool.spec.check.interval)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
