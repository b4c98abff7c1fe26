"""The health state file: manual overrides and last known health, for restarts.

JSON, written atomically (temporary file in the same directory, fsync, rename) so a crash
mid-write leaves the previous file intact. StateWriter does the writing on its own thread, so
an fsync never stalls the event loop; the newest content always wins. A file that exists but
cannot be read is an error, not an empty state: silently forgetting a drain would send traffic
to a datacenter an operator took out of service.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import GslbError
from .aggregate import Override
from .snapshot import TargetHealth

VERSION = 1

log = logging.getLogger("gslb.health.statefile")


class StateFileError(GslbError):
    """The state file exists but is unreadable or malformed."""


@dataclass
class SavedState:
    overrides: dict[str, Override] = field(default_factory=dict)
    # target -> (state, since, reason) as last aggregated from checks (before overrides)
    last_known: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    saved_at: float | None = None


def load_state(path: str) -> SavedState:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        raise StateFileError(f"{path}: cannot read health state file: {exc}") from exc
    try:
        return _parse(raw)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise StateFileError(f"{path}: malformed health state file: {exc}") from exc


def _parse(raw: Any) -> SavedState:
    if not isinstance(raw, dict):
        raise ValueError("top level must be an object")
    if raw.get("version", VERSION) != VERSION:
        raise ValueError(f"unsupported version {raw.get('version')!r}")
    overrides: dict[str, Override] = {}
    for target, o in (raw.get("overrides") or {}).items():
        mode = o["mode"]
        if mode not in ("down", "up"):
            raise ValueError(f"override {target}: mode must be down or up, not {mode!r}")
        overrides[str(target)] = Override(
            mode, str(o.get("reason", "")), float(o.get("at", 0.0)), float(o.get("drain", 0.0))
        )
    last: dict[str, tuple[str, float, str]] = {}
    for target, t in (raw.get("last_known") or {}).items():
        state = t["state"]
        if state not in ("up", "down", "unknown"):
            raise ValueError(f"last_known {target}: bad state {state!r}")
        last[str(target)] = (state, float(t.get("since", 0.0)), str(t.get("reason", "")))
    saved_at = raw.get("saved_at")
    return SavedState(overrides, last, float(saved_at) if saved_at is not None else None)


def save_state(
    path: str,
    overrides: Mapping[str, Override],
    last_known: Mapping[str, TargetHealth],
    saved_at: float,
) -> None:
    write_atomic(path, render_state(overrides, last_known, saved_at))


def render_state(
    overrides: Mapping[str, Override],
    last_known: Mapping[str, TargetHealth],
    saved_at: float,
) -> str:
    data = {
        "version": VERSION,
        "saved_at": saved_at,
        "overrides": {
            t: {"mode": o.mode, "reason": o.reason, "at": o.at, "drain": o.drain}
            for t, o in sorted(overrides.items())
        },
        "last_known": {
            t: {"state": h.state, "since": h.since, "reason": h.reason}
            for t, h in sorted(last_known.items())
            if h.state != "unknown"
        },
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".health-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class StateWriter:
    """Writes one file off the caller's thread. submit() never blocks on the disk; while a
    write is under way only the newest pending text is kept (older ones would be overwritten
    anyway). flush() waits until everything submitted is on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._busy = False
        self.writes = 0
        self.errors = 0

    def submit(self, text: str) -> None:
        with self._cond:
            self._pending = text
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._run, name="gslb-state-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                text, self._pending = self._pending, None
                if text is None:
                    self._busy = False
                    self._cond.notify_all()
                    return
            try:
                write_atomic(self.path, text)
                self.writes += 1
            except OSError as exc:
                self.errors += 1
                log.error("cannot write state file %s: %s", self.path, exc)

    def flush(self, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)
