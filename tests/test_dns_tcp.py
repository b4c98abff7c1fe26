"""DNS over TCP (RFC 7766): pipelining, idle timeout, connection caps, slow clients."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, tcp, udp


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def read_message(sock: socket.socket) -> dns.message.Message:
    header = _read_exactly(sock, 2)
    return dns.message.from_wire(_read_exactly(sock, struct.unpack("!H", header)[0]))


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@pytest.fixture
def limited_server(zones_dir: Path) -> Iterator[ServerThread]:
    options = NodeOptions(
        zones_dir=str(zones_dir),
        listen=["127.0.0.1:0"],
        overrides={"tcp_idle_timeout": 0.5, "tcp_max_per_client": 3, "tcp_max_connections": 5},
    )
    server = ServerThread(options).start()
    yield server
    server.stop()


def test_pipelined_queries_on_one_connection(dns_server: ServerThread) -> None:
    names = ["www.example.test", "mail.example.test", "missing.example.test", "ns1.example.test"]
    queries = [dns.message.make_query(name, "A") for name in names]
    with socket.create_connection(("127.0.0.1", dns_server.port), timeout=3) as sock:
        sock.sendall(b"".join(framed(query) for query in queries))
        replies = [read_message(sock) for _ in queries]
    assert [reply.id for reply in replies] == [query.id for query in queries]
    assert [reply.rcode() for reply in replies] == [0, 0, dns.rcode.NXDOMAIN, 0]


def test_message_split_across_segments(dns_server: ServerThread) -> None:
    data = framed(dns.message.make_query("www.example.test", "A"))
    with socket.create_connection(("127.0.0.1", dns_server.port), timeout=3) as sock:
        for byte in data:
            sock.sendall(bytes([byte]))
        assert read_message(sock).answer


def test_idle_connection_is_closed(limited_server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=3) as sock:
        sock.sendall(framed(dns.message.make_query("www.example.test", "A")))
        assert read_message(sock).answer
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closes after the idle timeout
        assert time.monotonic() - started < 2.5


def test_slow_dribbling_client_is_cut_off(limited_server: ServerThread) -> None:
    data = framed(dns.message.make_query("www.example.test", "A"))
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=3) as sock:
        started = time.monotonic()
        with pytest.raises((ConnectionError, OSError)):
            for byte in data:  # one byte every 0.2 s never completes a message in time
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 2.5:
                    break
            read_message(sock)
        assert time.monotonic() - started < 2.5


def test_per_client_connection_cap(limited_server: ServerThread) -> None:
    held = [socket.create_connection(("127.0.0.1", limited_server.port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", limited_server.port), timeout=2) as extra:
            extra.sendall(framed(dns.message.make_query("www.example.test", "A")))
            with pytest.raises((ConnectionError, OSError)):
                read_message(extra)
        # UDP service is unaffected.
        assert udp(limited_server, dns.message.make_query("www.example.test", "A")).answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)
    assert tcp(limited_server, dns.message.make_query("www.example.test", "A")).answer


def test_half_open_connections_do_not_block_others(dns_server: ServerThread) -> None:
    stalled = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", dns_server.port))
            sock.sendall(b"\x00\x40\x12")  # a length prefix and one byte, then silence
            stalled.append(sock)
        started = time.monotonic()
        assert tcp(dns_server, dns.message.make_query("www.example.test", "A")).answer
        assert udp(dns_server, dns.message.make_query("www.example.test", "A")).answer
        assert time.monotonic() - started < 1.0
    finally:
        for sock in stalled:
            sock.close()


def test_client_that_never_reads_does_not_stall_server(dns_server: ServerThread) -> None:
    query = framed(dns.message.make_query("big.example.test", "TXT"))
    greedy = socket.create_connection(("127.0.0.1", dns_server.port))
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        greedy.setblocking(False)
        sent = 0
        for _ in range(3000):
            try:
                sent += greedy.send(query)
            except BlockingIOError:
                break
        started = time.monotonic()
        assert udp(dns_server, dns.message.make_query("www.example.test", "A")).answer
        assert tcp(dns_server, dns.message.make_query("www.example.test", "A")).answer
        assert time.monotonic() - started < 1.0
        assert sent > 0
    finally:
        greedy.close()
