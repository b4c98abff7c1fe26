"""A node follows the fleet's intent in etcd: the current generation and the overrides.

Two loops feed one `sync()`: an etcd watch on the prefix (wakes us within milliseconds of a
change) and a poll every `interval` (catches up after any outage, and proves etcd is reachable:
staleness is the time since the last successful read). A generation is validated again on this
node before it is applied; one that fails here is not applied and is reported. When etcd is
lost the node keeps serving what it last applied (static stability) and says so in /status.

The last generation applied is kept in a local cache file next to the state file, so a node
started while etcd is down serves from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, GslbError
from ..health.aggregate import Override
from ..health.statefile import StateWriter
from .etcd import EtcdUnavailable
from .generation import GenerationSource, describe, source_from_json
from .store import ClusterStore, ClusterView

log = logging.getLogger("gslb.cluster")


def cache_path(state_file: str | None) -> str | None:
    """Where a node keeps its last good generation: beside its state file."""
    return f"{state_file}.generation.json" if state_file else None


def load_cached(path: str | None) -> GenerationSource | None:
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return source_from_json(f.read(), path)
    except (OSError, ConfigError) as exc:
        log.error("cannot use the cached generation %s: %s", path, exc)
        return None


def generation_to_fetch(view: ClusterView, applied: int, rejected: tuple[int, str]) -> int | None:
    """PURE: the generation number to fetch and apply after a read, or None."""
    if view.number == 0 or view.number == applied:
        return None
    if rejected == (view.number, view.digest):
        return None  # already refused on this node; wait for the next publish
    return view.number


class ClusterFollower:
    """Applies the cluster's intent to one node. `node` is the DnsNode of the control plane."""

    def __init__(
        self,
        store: ClusterStore,
        node: Any,
        *,
        cache_file: str | None = None,
        interval: float = 0.5,
        stale_after: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.node = node
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock
        self.cache_file = cache_file
        self._cache = StateWriter(cache_file) if cache_file else None
        self.applied = node.source.number
        self.rejected: tuple[int, str] = (0, "")
        self.rejected_errors: list[str] = []
        self.rejections = 0
        self.last_contact: float | None = None  # monotonic time of the last good read
        self.last_error: str | None = None
        self.revision = 0
        self.watch_connected = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.applied_at: float | None = None

    async def start(self) -> None:
        self._remember(self.node.source)
        self._tasks = [
            asyncio.create_task(self._poll(), name="cluster-poll"),
            asyncio.create_task(self._watch(), name="cluster-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.client.close()
        if self._cache is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cache.flush)

    # -- loops --------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await self.sync()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _watch(self) -> None:
        delay = 0.1
        while True:
            start = self.revision + 1 if self.revision else 0
            try:
                async for revision in self.store.client.watch(self.store.prefix, start):
                    self.watch_connected = True
                    delay = 0.1
                    self.revision = max(self.revision, revision)
                    self._wake.set()
            except EtcdUnavailable as exc:
                log.debug("cluster watch: %s", exc)
            except Exception:
                log.exception("cluster watch failed")
            self.watch_connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- one read, applied --------------------------------------------------------------------

    async def sync(self) -> bool:
        """Read the intent once and apply what changed. False when etcd could not be read."""
        async with self._lock:
            unreadable: ConfigError | None = None
            try:
                view = await self.store.view()
                number = generation_to_fetch(view, self.applied, self.rejected)
                try:
                    source = await self.store.generation(number) if number else None
                except ConfigError as exc:  # etcd answered; the value is not a generation
                    source, unreadable = None, exc
                if number and source is None and unreadable is None:
                    unreadable = ConfigError(f"generation {number} is missing from etcd")
            except EtcdUnavailable as exc:
                if self.last_error is None or not self.stale:
                    log.warning("etcd unreachable; serving the last good generation: %s", exc)
                self.last_error = str(exc)
                return False
            if self.stale and self.last_contact is not None:
                log.info("etcd reachable again; catching up")
            self.last_contact = self.clock.monotonic()
            self.last_error = None
            self.revision = max(self.revision, view.revision)
            if unreadable is not None:
                self._refuse(view, str(unreadable).splitlines())
            elif source is not None:
                self._apply(source, view)
            monitor = self.node.monitor
            if monitor is not None:
                monitor.replace_overrides(view.overrides)
            return True

    def _apply(self, source: GenerationSource, view: ClusterView) -> None:
        if self.node.apply(source):
            self.applied = source.number
            self.applied_at = self.clock.time()
            self.rejected_errors = []
            self._remember(source)
            return
        self._refuse(view, (self.node.last_reload_error or "").splitlines())

    def _refuse(self, view: ClusterView, errors: list[str]) -> None:
        self.rejected = (view.number, view.digest)
        self.rejections += 1
        self.rejected_errors = errors or ["generation missing from etcd"]
        log.error(
            "generation %d rejected on this node; still serving %s: %s",
            view.number,
            self.node.source.label,
            "; ".join(self.rejected_errors[:3]),
        )

    def _remember(self, source: GenerationSource) -> None:
        """Keep the generation applied here for a start while etcd is down (off the loop)."""
        if self._cache is not None and source.number:
            self._cache.submit(source.to_json())

    # -- overrides from this node's admin API ---------------------------------------------------

    async def set_override(self, target: str, override: Override | None) -> None:
        """Store in etcd first (the fleet's intent), then apply here at once. Under the sync
        lock, so a read that began before the write cannot undo it here for a moment."""
        async with self._lock:
            try:
                await self.store.set_override(target, override, deadline=5.0)
            except EtcdUnavailable as exc:
                raise ClusterUnavailable(str(exc)) from None
            monitor = self.node.monitor
            if monitor is not None:
                overrides = monitor.overrides
                if override is None:
                    overrides.pop(target, None)
                else:
                    overrides[target] = override
                monitor.replace_overrides(overrides)
        self._wake.set()

    # -- status -------------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        if self.last_contact is None:
            return True
        return self.clock.monotonic() - self.last_contact > self.stale_after

    def status(self) -> dict[str, Any]:
        age = self.clock.monotonic() - self.last_contact if self.last_contact is not None else None
        return {
            "etcd": list(self.store.client.endpoints),
            "prefix": self.store.prefix,
            "stale": self.stale,
            "last_contact_age": age,
            "last_error": self.last_error,
            "watch_connected": self.watch_connected,
            "revision": self.revision,
            "generation": describe(self.node.source),
            "applied_at": self.applied_at,
            "rejected": (
                {"number": self.rejected[0], "errors": self.rejected_errors[:20]}
                if self.rejected[0] and self.rejected_errors
                else None
            ),
            "rejections": self.rejections,
            "cache_file": self.cache_file,
        }


class ClusterUnavailable(GslbError):
    """An override could not be stored in etcd; nothing was changed."""
