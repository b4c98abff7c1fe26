"""--workers N: every worker publishes its load and RTT table so any of them can report the
whole proxy.

Each worker writes a small JSON snapshot to its own file in a directory the supervisor made
(atomically: write then rename) every PUBLISH_INTERVAL seconds; the worker that answers /health
reads its peers' files and merges them with its own live numbers (load.merge_loads,
rtt.merge_rtts). A file not refreshed for STALE seconds is a dead worker's and is ignored.
No pipes and no supervisor event loop: a worker that dies takes nothing with it.

Only the `report_networks` most recently seen networks of each worker are published: the most
recent of the merged report are among them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .load import LoadSnapshot
from .rtt import NetworkRtt

PUBLISH_INTERVAL = 0.5
STALE = 3.0


@dataclass(frozen=True)
class PeerSnapshot:
    load: LoadSnapshot
    networks: list[NetworkRtt]


def encode(at: float, load: LoadSnapshot, networks: list[NetworkRtt]) -> bytes:
    return json.dumps(
        {
            "at": at,
            "in_flight": load.in_flight,
            "rps": load.requests_per_second,
            "rtt": [[n.network, n.rtt_ms, n.samples, n.last] for n in networks],
        },
        separators=(",", ":"),
    ).encode()


def decode(data: bytes, now: float) -> PeerSnapshot | None:
    """A peer's snapshot, or None when it is unreadable or stale (STALE seconds old)."""
    try:
        doc = json.loads(data)
        if now - float(doc["at"]) > STALE:
            return None
        load = LoadSnapshot(int(doc["in_flight"]), float(doc["rps"]), None)
        nets = [NetworkRtt(str(k), float(r), int(s), float(t)) for k, r, s, t in doc["rtt"]]
    except (ValueError, KeyError, TypeError):
        return None  # half-written by a dying worker, or not ours: leave it out
    return PeerSnapshot(load, nets)


class WorkerShare:
    """One worker's side: publish its own snapshot, read the others'."""

    def __init__(self, directory: str, index: int) -> None:
        self.directory = directory
        self.index = index
        self.path = os.path.join(directory, f"worker-{index}.json")

    def publish(self, data: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError:
            pass  # the supervisor is gone (directory removed): nothing to share with

    def peers(self, now: float) -> list[PeerSnapshot]:
        out: list[PeerSnapshot] = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return out
        own = os.path.basename(self.path)
        for name in names:
            if name == own or not name.startswith("worker-") or not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    snap = decode(f.read(), now)
            except OSError:
                continue
            if snap is not None:
                out.append(snap)
        return out
