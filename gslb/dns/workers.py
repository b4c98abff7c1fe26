"""Worker processes of a DNS node, and the pipe between them and the control plane.

The control plane (the supervisor) owns health, overrides, reload and the admin API. Each worker
only serves: it receives every generation and every health snapshot over a socketpair, applies
it by swapping a reference, acknowledges it, and sends its counters back once a second. A worker
that dies is started again and is handed the current generation and snapshot before it binds a
socket, so it never answers from anything older.

Frames are a 4-byte length and a pickle of a tuple. Both ends are processes of this program
started by the control plane; nothing else writes to the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from ..admin.metrics import DnsCounters
from ..cluster.generation import GenerationSource
from ..health.snapshot import HealthHolder, HealthSnapshot, TargetHealth
from ..logs import setup_logging
from .node import DnsNode, NodeOptions
from .server import install_uvloop
from .status import node_counters

log = logging.getLogger("gslb.dns.workers")

FRAME = struct.Struct("!I")
COUNTERS_INTERVAL = 1.0  # seconds between counter reports from a worker
RESTART_DELAY = 0.2  # seconds before a dead worker is started again


# ---- wire -----------------------------------------------------------------------------------


def encode(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    header = await reader.readexactly(FRAME.size)
    body = await reader.readexactly(FRAME.unpack(header)[0])
    message = pickle.loads(body)
    assert isinstance(message, tuple)
    return message


def snapshot_to_wire(snapshot: HealthSnapshot) -> tuple[Any, ...]:
    """A compact, picklable form (mapping proxies do not pickle). Every field of TargetHealth
    travels (drains, loads and capacities steer answers in the workers too)."""
    return (
        snapshot.epoch,
        tuple(
            (name, {**vars(t), "regions": dict(t.regions)}) for name, t in snapshot.targets.items()
        ),
        tuple((net, dict(per_dc)) for net, per_dc in snapshot.latency.items()),
    )


def snapshot_from_wire(wire: tuple[Any, ...]) -> HealthSnapshot:
    epoch, targets, latency = wire
    return HealthSnapshot(
        epoch,
        MappingProxyType(
            {
                name: TargetHealth(**{**fields, "regions": MappingProxyType(fields["regions"])})
                for name, fields in targets
            }
        ),
        MappingProxyType(dict(latency)),
    )


def add_counters(total: DnsCounters, more: DnsCounters) -> DnsCounters:
    """Sum two counter sets of one worker slot (a restarted worker starts again from zero)."""
    buckets = _summed(dict(total.latency_buckets), dict(more.latency_buckets))
    return DnsCounters(
        queries=_summed(total.queries, more.queries),
        worker=more.worker or total.worker,
        cache_hits=total.cache_hits + more.cache_hits,
        cache_misses=total.cache_misses + more.cache_misses,
        latency_buckets=sorted(buckets.items()),
        latency_sum=total.latency_sum + more.latency_sum,
        latency_count=total.latency_count + more.latency_count,
        rrl=_summed(total.rrl, more.rrl),
        acl=_summed(total.acl, more.acl),
        protocol=_summed(total.protocol, more.protocol),
    )


K = TypeVar("K")


def _summed(a: Mapping[K, int], b: Mapping[K, int]) -> dict[K, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


# ---- control plane side ---------------------------------------------------------------------


@dataclass
class Worker:
    """The control plane's view of one worker slot."""

    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    digest: str = ""  # generation it last applied
    serial: int = 0  # how many loads the control plane had made when it applied that one
    epoch: int = -1  # health snapshot it last applied
    counters: DnsCounters | None = None
    retired: DnsCounters | None = None  # totals of earlier processes in this slot
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_DELAY / 2  # doubled on each quick death, up to 5 s
    last_error: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class WorkerPool:
    """Starts N workers, publishes generations and snapshots to them, restarts the dead."""

    def __init__(
        self, count: int, options: NodeOptions, listen: Sequence[str], node: DnsNode
    ) -> None:
        self.options = replace(options, listen=list(listen), workers=1, admin_listen="off")
        self.listen = list(listen)
        self.node = node
        self.workers = [Worker(index) for index in range(count)]
        # Counts applied loads, so a reload of the same files (a new GeoIP file) is waited for too.
        self.serial = 1
        self._changed = asyncio.Event()
        self._stopping = False
        node.on_generation.append(self.publish_generation)
        node.health.subscribe(self.publish_health)

    async def start(self, timeout: float = 60.0) -> None:
        for worker in self.workers:
            await self._spawn(worker)
        if not await self._wait(lambda: all(w.ready for w in self.workers), timeout):
            raise RuntimeError("DNS workers did not start in time")

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for worker in self.workers:
            self._send(worker, ("stop",))
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for worker in self.workers:
            for task in worker.tasks:
                task.cancel()
            await asyncio.gather(*worker.tasks, return_exceptions=True)

    # -- publishing ---------------------------------------------------------------------------

    def publish_generation(self, source: GenerationSource) -> None:
        self.serial += 1
        for worker in self.workers:
            if worker.ready:
                self._send(worker, ("generation", source, self.serial))

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        wire = snapshot_to_wire(snapshot)
        for worker in self.workers:
            if worker.ready:
                self._send(worker, ("health", wire))

    async def synced(self, timeout: float = 5.0) -> bool:
        """Wait until every serving worker has the node's current generation and snapshot.
        A worker that is (re)starting is handed both before it serves, so it does not count."""
        return await self._wait(self._in_sync, timeout)

    def _in_sync(self) -> bool:
        epoch = self.node.health.current.epoch
        return all(w.serial >= self.serial and w.epoch >= epoch for w in self.workers if w.ready)

    async def _wait(self, condition: Any, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def _send(self, worker: Worker, message: tuple[Any, ...]) -> None:
        if worker.writer is None or worker.writer.is_closing():
            return
        worker.writer.write(encode(message))

    # -- counters and status ------------------------------------------------------------------

    def counters(self) -> list[DnsCounters]:
        out = []
        for worker in self.workers:
            current = worker.counters
            if current is None and worker.retired is None:
                continue
            if worker.retired is not None:
                current = add_counters(worker.retired, current or DnsCounters(worker=""))
            assert current is not None
            out.append(replace(current, worker=str(worker.index)))
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "index": w.index,
                "pid": w.process.pid if w.process is not None else None,
                "ready": w.ready,
                "generation": w.digest,
                "health_epoch": w.epoch,
                "restarts": w.restarts,
                "started_at": w.started_at,
                "last_error": w.last_error,
            }
            for w in self.workers
        ]

    # -- processes ----------------------------------------------------------------------------

    async def _spawn(self, worker: Worker) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ, GSLB_WORKER=str(worker.index))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gslb.dns.workers",
                str(child.fileno()),
                pass_fds=[child.fileno()],
                env=env,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        worker.process, worker.writer = process, writer
        worker.ready = False
        worker.started_at = time.time()
        root = logging.getLogger()
        text_format = not any(type(h.formatter).__name__ == "JsonFormatter" for h in root.handlers)
        writer.write(
            encode(
                (
                    "init",
                    self.options,
                    self.node.source,
                    self.serial,
                    snapshot_to_wire(self.node.health.current),
                    logging.getLevelName(root.level),
                    "text" if text_format else "json",
                )
            )
        )
        worker.tasks = [
            asyncio.create_task(self._read(worker, reader), name=f"worker-{worker.index}-pipe"),
            asyncio.create_task(self._watch(worker, process), name=f"worker-{worker.index}"),
        ]

    async def _read(self, worker: Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await read_message(reader)
                self._on_message(worker, message)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def _on_message(self, worker: Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            _, worker.digest, worker.serial, worker.epoch = message
            worker.ready = True
            # Anything published while it was starting: hand it over now.
            if worker.serial < self.serial:
                self._send(worker, ("generation", self.node.source, self.serial))
            if worker.epoch < self.node.health.current.epoch:
                self._send(worker, ("health", snapshot_to_wire(self.node.health.current)))
        elif kind == "applied":
            _, digest, serial, ok, errors = message
            if ok:
                worker.digest, worker.serial = digest, serial
                worker.last_error = None
            else:
                worker.last_error = "; ".join(errors[:3])
                log.error("worker %d rejected generation %s: %s", worker.index, digest, errors)
        elif kind == "health":
            worker.epoch = max(worker.epoch, message[1])
        elif kind == "counters":
            worker.counters = message[1]
        self._changed.set()

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        status = await process.wait()
        worker.ready = False
        if worker.writer is not None:
            worker.writer.close()
        if worker.counters is not None:
            base = worker.retired or DnsCounters(worker="")
            worker.retired = add_counters(base, worker.counters)
            worker.counters = None
        self._changed.set()
        if self._stopping:
            return
        worker.restarts += 1
        # A worker that dies right after starting (a crash loop) is restarted ever more slowly.
        lived = time.time() - worker.started_at
        worker.backoff = RESTART_DELAY if lived > 10 else min(worker.backoff * 2, 5.0)
        log.error(
            "worker %d exited with status %d; restarting it in %.1fs",
            worker.index,
            status,
            worker.backoff,
        )
        await asyncio.sleep(worker.backoff)
        if not self._stopping:
            await self._spawn(worker)


# ---- worker side ----------------------------------------------------------------------------


async def worker_serve(fd: int) -> int:
    """Serve until the control plane says stop or goes away (the pipe closes)."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    message = await read_message(reader)
    _, options, source, serial, health_wire, level, log_format = message
    setup_logging(level, log_format)
    holder = HealthHolder(snapshot_from_wire(health_wire))
    node = DnsNode(options, reuse_port=True, health=holder, source=source, role="worker")
    await node.start()
    writer.write(encode(("ready", node.source.digest, serial, holder.current.epoch)))

    async def report() -> None:
        while True:
            writer.write(encode(("counters", node_counters(node))))
            await asyncio.sleep(COUNTERS_INTERVAL)

    reporter = asyncio.create_task(report())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group; the control plane decides when workers stop.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    pipe = asyncio.create_task(_follow(reader, writer, node, holder))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({pipe, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (pipe, stopper, reporter):
        task.cancel()
    await asyncio.gather(pipe, stopper, reporter, return_exceptions=True)
    await node.stop()
    writer.close()
    return 0


async def _follow(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    node: DnsNode,
    holder: HealthHolder,
) -> None:
    while True:
        try:
            message = await read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("control plane went away; worker stops")
            return
        kind = message[0]
        if kind == "generation":
            source: GenerationSource = message[1]
            ok = node.apply(source)
            errors = [] if ok else (node.last_reload_error or "").splitlines()
            writer.write(encode(("applied", source.digest, message[2], ok, errors)))
        elif kind == "health":
            snapshot = snapshot_from_wire(message[1])
            if snapshot.epoch > holder.current.epoch:
                holder.publish(snapshot)
            writer.write(encode(("health", holder.current.epoch)))
        elif kind == "stop":
            return


def main(argv: Sequence[str]) -> int:
    fd = int(argv[1])
    factory = install_uvloop()
    if factory is not None:
        with asyncio.Runner(loop_factory=factory) as runner:
            return int(runner.run(worker_serve(fd)))
    return int(asyncio.run(worker_serve(fd)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
