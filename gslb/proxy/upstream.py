"""One connection pool per member, for every transport (HTTP, websocket, TCP): the idle
keep-alive connections, the count of open ones bounded by the pool's `max_connections`, and
the requests waiting for a free slot."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class MemberConnections:
    def __init__(self, limit: int, keepalive_timeout: float) -> None:
        self.limit = limit  # 0: unbounded
        self.keepalive_timeout = keepalive_timeout
        self.idle: list[Any] = []  # idle keep-alive connections (transport objects)
        self.open = 0  # connections open or being opened, idle ones included
        self.waiters: deque[Callable[[], None]] = deque()

    def may_open(self) -> bool:
        return not self.limit or self.open < self.limit

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        """A connection of this member went away: its slot may serve a waiter."""
        self.open -= 1
        self.wake()

    def park(self, conn: Any) -> None:
        """An exchange is over: `conn` is idle (a waiter may take it at once)."""
        self.idle.append(conn)
        self.wake()

    def wait(self, resume: Callable[[], None]) -> None:
        self.waiters.append(resume)

    def wake(self) -> None:
        if self.waiters and (self.idle or self.may_open()):
            self.waiters.popleft()()

    def discard(self, conn: Any) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
