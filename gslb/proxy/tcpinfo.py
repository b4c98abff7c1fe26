"""The kernel's round-trip time of a client's TCP connection (Linux TCP_INFO), for every
listener kind alike: HTTP and HTTPS (gslb/proxy/http1.py) and TCP relays (gslb/proxy/tcp.py).
The samples feed the per-network table of gslb/proxy/rtt.py."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

# Linux struct tcp_info: tcpi_rtt (smoothed RTT, microseconds) is the u32 at byte 68.
TCP_INFO = getattr(socket, "TCP_INFO", None)
TCP_INFO_SIZE = 104
TCPI_RTT = struct.Struct("=I")
TCPI_RTT_OFFSET = 68


def tcp_socket(transport: asyncio.BaseTransport) -> Any:
    """The transport's socket when it is TCP over IP (under TLS too), else None."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        return sock
    return None


def kernel_rtt(sock: Any) -> float | None:
    """The kernel's smoothed RTT of a TCP socket in seconds; None when it has none (not TCP,
    not Linux, closed). One getsockopt call."""
    if sock is None or TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, TCP_INFO_SIZE)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if len(info) < TCPI_RTT_OFFSET + 4:
        return None
    (micros,) = TCPI_RTT.unpack_from(info, TCPI_RTT_OFFSET)
    return float(micros) / 1e6 if micros else None
