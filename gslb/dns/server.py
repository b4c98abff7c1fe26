"""asyncio UDP and TCP listeners. Moves bytes only; the Responder decides what to say.

The responder is read through a holder on every datagram, so a reload swaps it atomically
between two queries and nothing awaits on shared state while answering.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .responder import Responder
from .settings import DnsSettings, parse_hostport

log = logging.getLogger("gslb.dns")


class ResponderHolder:
    """The current Responder; a reload replaces `.current`."""

    def __init__(self, responder: Responder) -> None:
        self.current = responder


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, holder: ResponderHolder, listener: str = "") -> None:
        self.holder = holder
        self.listener = listener  # the configured address: selects the listener's access list
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        response = self.holder.current.handle_udp(data, addr[0], self.listener)
        if response is not None:
            self.transport.sendto(response, addr)  # type: ignore[union-attr]

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone): nothing to do, and never fatal.
        log.debug("UDP error: %s", exc)


@dataclass
class TcpLimits:
    idle_timeout: float
    max_connections: int
    max_per_client: int


class TcpConnections:
    """Counts open connections, in total and per client address, to enforce the caps."""

    def __init__(self, limits: TcpLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_client: dict[str, int] = {}
        self.open: set[TcpProtocol] = set()
        self.refused = 0

    def admit(self, client: str) -> bool:
        if self.total >= self.limits.max_connections:
            return False
        if self.per_client.get(client, 0) >= self.limits.max_per_client:
            return False
        self.total += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        left = self.per_client.get(client, 1) - 1
        if left:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)


class TcpProtocol(asyncio.Protocol):
    """RFC 7766 DNS over TCP: length-prefixed messages, pipelined, answered in order.

    The idle timer restarts only when a whole message has arrived, so a client that dribbles
    bytes (slowloris) is cut off after idle_timeout like one that sends nothing.
    """

    def __init__(
        self, holder: ResponderHolder, connections: TcpConnections, listener: str = ""
    ) -> None:
        self.holder = holder
        self.connections = connections
        self.listener = listener
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.admitted = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if not self.connections.admit(self.client):
            self.connections.refused += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        self.admitted = True
        self.connections.open.add(self)
        # Bound what a client that never reads can make us hold.
        self.transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[union-attr]
        self._restart_timer()

    def _restart_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.connections.limits.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer = self.buffer
        answered = False
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            answered = True
            # A zone transfer answers with several messages; a dropped query with none, which
            # need not close the connection (RFC 7766 6.2.4).
            responses = self.holder.current.handle_tcp(message, self.client, self.listener)
            for response in responses:
                self.transport.write(len(response).to_bytes(2, "big") + response)  # type: ignore[union-attr]
        if answered:
            self._restart_timer()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its queries until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # answers already written still go out; then close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.admitted:
            self.admitted = False
            self.connections.release(self.client)
            self.connections.open.discard(self)


def make_socket(
    host: str, port: int, kind: int, reuse_port: bool, receive_buffer: int = 0
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if receive_buffer and kind == socket.SOCK_DGRAM:
            _set_receive_buffer(sock, receive_buffer)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass  # needs CAP_NET_ADMIN; fall back to the capped option
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class DnsServer:
    """UDP and TCP listeners on every configured address, answering through one holder."""

    def __init__(
        self,
        holder: ResponderHolder,
        settings: DnsSettings,
        listen: list[str] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.holder = holder
        self.settings = settings
        self.listen = list(listen or settings.listen)
        self.reuse_port = reuse_port
        self.connections = TcpConnections(
            TcpLimits(
                settings.tcp_idle_timeout, settings.tcp_max_connections, settings.tcp_max_per_client
            )
        )
        self.addresses: list[tuple[str, int]] = []
        self._udp: list[asyncio.BaseTransport] = []
        self._tcp: list[asyncio.base_events.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for item in self.listen:
            parsed = parse_hostport(item)
            if parsed is None:
                raise ValueError(f"listen address is not HOST:PORT: {item!r}")
            host, port = parsed
            # Bind TCP first so port 0 picks one port for both transports.
            tcp_sock = make_socket(host, port, socket.SOCK_STREAM, self.reuse_port)
            port = tcp_sock.getsockname()[1]
            try:
                udp_sock = make_socket(
                    host, port, socket.SOCK_DGRAM, self.reuse_port, self.settings.receive_buffer
                )
            except BaseException:
                tcp_sock.close()
                raise
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(UdpProtocol, self.holder, item), sock=udp_sock
            )
            self._udp.append(transport)
            server = await loop.create_server(
                functools.partial(TcpProtocol, self.holder, self.connections, item),
                sock=tcp_sock,
            )
            self._tcp.append(server)
            self.addresses.append((host, port))
            log.info("listening on %s port %d (UDP and TCP)", host, port)

    async def stop(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for connection in list(self.connections.open):
            if connection.transport is not None:
                connection.transport.abort()
        for server in self._tcp:
            await server.wait_closed()
        self._udp.clear()
        self._tcp.clear()


def install_uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when installed (about twice the datagram rate), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
