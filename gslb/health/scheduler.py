"""Runs the checks of a set of targets: one task per target, a shared concurrency bound.

Each target has its own schedule, so one slow target (waiting out its timeout) never delays
another's checks; the semaphore only bounds how many probes are in flight at once. Intervals
get random jitter so many targets (and many regions) do not probe in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

from ..clock import SYSTEM_CLOCK, Clock
from .checks import Checker, CheckTarget
from .snapshot import State
from .state import CheckResult, RiseFall, Transition

log = logging.getLogger("gslb.health.scheduler")

Listener = Callable[[str, RiseFall, Transition | None], None]


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """interval spread by +-jitter (a fraction), never below 10% of interval."""
    j = max(0.0, min(jitter, 0.9))
    return interval * (1.0 + rng.uniform(-j, j))


class CheckScheduler:
    """Owns one RiseFall per target and feeds it check results.

    Listeners get (target, machine, transition-or-None) after every result; transition is set
    when the state changed. Listeners run in the event loop and must not block.
    """

    def __init__(
        self,
        targets: Mapping[str, CheckTarget],
        clock: Clock = SYSTEM_CLOCK,
        checker: Checker | None = None,
        max_concurrency: int = 64,
        rng: random.Random | None = None,
        initial: Mapping[str, tuple[State, float]] | None = None,
    ) -> None:
        self.clock = clock
        self.checker = checker if checker is not None else Checker(clock)
        self._own_checker = checker is None
        self._sem = asyncio.Semaphore(max_concurrency)
        self._rng = rng if rng is not None else random.Random()
        self._initial = dict(initial or {})
        self.targets: dict[str, CheckTarget] = {}
        self.machines: dict[str, RiseFall] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._listeners: list[Listener] = []
        self._running = False
        self.update(targets)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, targets: Mapping[str, CheckTarget]) -> None:
        """Apply a new target set (reload): keep states of targets that stay."""
        for name in list(self.targets):
            if name not in targets:
                self.targets.pop(name)
                self.machines.pop(name, None)
                task = self._tasks.pop(name, None)
                if task is not None:
                    task.cancel()
        for name, target in targets.items():
            old = self.targets.get(name)
            self.targets[name] = target
            machine = self.machines.get(name)
            if machine is None:
                state: State
                since: float | None
                state, since = self._initial.get(name, ("unknown", None))
                self.machines[name] = RiseFall(
                    name,
                    rise=target.check.rise,
                    fall=target.check.fall,
                    clock=self.clock,
                    initial=state,
                    since=since,
                )
            else:
                machine.configure(target.check.rise, target.check.fall)
            if self._running and (old != target or name not in self._tasks):
                # restart the loop so a new interval/address applies at once
                task = self._tasks.pop(name, None)
                if task is not None:
                    task.cancel()
                self._spawn(name)

    def states(self) -> dict[str, State]:
        return {n: m.state for n, m in self.machines.items()}

    async def start(self) -> None:
        self._running = True
        for name in self.targets:
            if name not in self._tasks:
                self._spawn(name)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_checker:
            await self.checker.close()

    def _spawn(self, name: str) -> None:
        self._tasks[name] = asyncio.create_task(self._loop(name), name=f"health-check:{name}")

    async def run_once(self, name: str) -> Transition | None:
        """One check of one target (also used by tests and `gslb check`-style tools)."""
        target = self.targets[name]
        async with self._sem:
            result = await self.checker.run(target)
        return self._record(name, target, result)

    def _record(self, name: str, target: CheckTarget, result: CheckResult) -> Transition | None:
        machine = self.machines.get(name)
        if machine is None or self.targets.get(name) != target:
            return None  # target removed or replaced while the probe was in flight
        transition = machine.record(result)
        if transition is not None:
            log.info(
                "health %s: %s -> %s (%s)",
                name,
                transition.old,
                transition.new,
                transition.reason,
            )
        for listener in list(self._listeners):
            try:
                listener(name, machine, transition)
            except Exception:  # a broken listener must not stop checking
                log.exception("health listener failed for %s", name)
        return transition

    async def _loop(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        target = self.targets[name]
        check = target.check
        # Spread first probes over a fraction of the interval instead of all at t=0.
        await asyncio.sleep(self._rng.uniform(0, check.interval * max(check.jitter, 0.0)))
        while True:
            started = loop.time()
            try:
                await self.run_once(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check loop error for %s", name)
            # Fixed rate from the start of the probe, so slow probes do not stretch the period.
            delay = jittered(check.interval, check.jitter, self._rng) - (loop.time() - started)
            await asyncio.sleep(max(delay, 0.0))
