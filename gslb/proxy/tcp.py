"""L4 mode: relay any TCP stream (TLS passthrough included) to a pool member, with the same
balancers, active checks and passive ejection as HTTP pools."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .balancers import extract_key
from .tcpinfo import kernel_rtt, tcp_socket

if TYPE_CHECKING:
    from .load import LoadMeter
    from .pool import Pool
    from .protect import ConnectionGuard, IpAcl
    from .rtt import RttTable

log = logging.getLogger("gslb.proxy.tcp")
BUFFER_HIGH = 256 * 1024  # pause reading when the other side is this far behind


class _Side(asyncio.Protocol):
    """One socket of a relayed pair; forwards what it reads to its peer with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # data read before the peer exists
        self.closed = asyncio.get_running_loop().create_future()
        self.eof = False
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)
            if self.transport is not None and sum(map(len, self.pending)) > BUFFER_HIGH:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if peer.eof:
                # Both directions are finished: nothing more can flow, close both sockets.
                peer.transport.close()
                return False
            if peer.transport.can_write_eof():
                peer.transport.write_eof()  # half-close: pass the FIN on, keep the other way
                return True
            peer.transport.close()
            return False
        return True  # no peer yet: keep the socket, the FIN is passed on once connected

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class TcpRelay:
    def __init__(
        self,
        pool: Pool,
        acl: IpAcl,
        guard: ConnectionGuard,
        idle_timeout: float,
        *,
        load: LoadMeter,
        rtt: RttTable,
    ) -> None:
        # A relayed connection counts as one request on the proxy's load meter (in flight while
        # open), and its handshake gives the client network an RTT sample, as HTTP does.
        self.load = load
        self.rtt = rtt
        self.pool = pool
        self.acl = acl
        self.guard = guard
        self.idle_timeout = idle_timeout  # a relayed pair with no bytes either way is closed
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.Transport] = set()

    def protocol_factory(self) -> asyncio.Protocol:
        side = _Side()
        original = side.connection_made

        def made(transport: asyncio.BaseTransport) -> None:
            original(transport)
            task = asyncio.ensure_future(self._connect(side))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        side.connection_made = made  # type: ignore[method-assign]
        return side

    async def _connect(self, client: _Side) -> None:
        assert client.transport is not None
        transport = client.transport
        self._transports.add(transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if not self.acl.permits(ip) or not self.guard.admit(ip):
            transport.abort()
            self._transports.discard(transport)
            return
        rtt = kernel_rtt(tcp_socket(transport))
        if rtt is not None:
            self.rtt.add(ip, rtt)
        self.load.begin()
        try:
            await self._relay(client, ip)
        finally:
            self.load.end()
            self.guard.release(ip)
            self._transports.discard(transport)

    async def _relay(self, client: _Side, ip: str) -> None:
        assert client.transport is not None
        loop = asyncio.get_running_loop()
        spec = self.pool.spec
        key = extract_key(spec.hash_key, ip, {}, {}, "") if spec.balance == "hash" else None
        order = self.pool.choose(key)
        upstream: _Side | None = None
        # The member's one connection pool bounds TCP relays too (max_connections).
        order = [m for m in order if m.conns.may_open()]
        for member in order[: 1 + spec.retries]:
            start = time.monotonic()
            member.inflight += 1
            member.conns.opened()
            try:
                async with asyncio.timeout(spec.connect_timeout):
                    _, side = await loop.create_connection(_Side, member.host, member.port)
            except (OSError, TimeoutError) as exc:
                member.inflight -= 1
                member.conns.closed()
                self.pool.report(member, False)
                log.info("tcp: %s unreachable: %s", member.name, exc or "timeout")
                continue
            self.pool.report(member, True, time.monotonic() - start)
            upstream = side
            break
        else:
            client.transport.abort()
            return
        assert upstream.transport is not None
        try:
            upstream.peer = client
            client.peer = upstream
            for data in client.pending:
                upstream.transport.write(data)
            client.pending.clear()
            if client.closed.done():
                upstream.transport.close()
            else:
                if client.eof and upstream.transport.can_write_eof():
                    upstream.transport.write_eof()
                client.transport.resume_reading()
            await self._until_closed_or_idle(client, upstream)
        finally:
            member.inflight -= 1
            member.conns.closed()

    async def _until_closed_or_idle(self, client: _Side, upstream: _Side) -> None:
        waiting = {client.closed, upstream.closed}
        while True:
            done, _ = await asyncio.wait(
                waiting, timeout=self.idle_timeout, return_when=asyncio.ALL_COMPLETED
            )
            if len(done) == len(waiting):
                return
            quiet = time.monotonic() - max(client.last_active, upstream.last_active)
            if quiet >= self.idle_timeout:
                log.info("tcp: closing a relay idle for %.0f s", quiet)
                for side in (client, upstream):
                    if side.transport is not None:
                        side.transport.abort()
                await asyncio.wait(waiting)
                return

    async def close(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
