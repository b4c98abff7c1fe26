"""Rate limiting, cookies and access lists on the real server, over UDP and TCP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, tcp, udp

BASE_CONFIG = """\
datacenters:
  dc1: {region: r1, latitude: 50.0, longitude: 8.0, ipv4: [192.0.2.1]}
services:
  svc.example.test: {policy: geoproximity, datacenters: [dc1], ttl: 30, on_all_down: fail_open}
"""


def start(tmp_path: Path, zones_dir: Path, extra: str = "", **rrl: object) -> ServerThread:
    config = tmp_path / "gslb.yaml"
    config.write_text(BASE_CONFIG + extra)
    options = NodeOptions(
        zones_dir=str(zones_dir),
        config_path=str(config),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        rrl_overrides=rrl,
    )
    return ServerThread(options).start()


@pytest.fixture
def limited(tmp_path: Path, zones_dir: Path) -> Iterator[ServerThread]:
    server = start(tmp_path, zones_dir, rate=5, slip=2, window=5)
    yield server
    server.stop()


def blast(port: int, count: int, source: str = "127.0.0.1", **kw: object) -> list[bytes | None]:
    """Send `count` identical queries from `source` and collect what comes back."""
    query = dns.message.make_query("www.example.test", "A", **kw)  # type: ignore[arg-type]
    wire = query.to_wire()
    replies: list[bytes | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(0.2)
        for _ in range(count):
            sock.sendto(wire, ("127.0.0.1", port))
            try:
                replies.append(sock.recv(4096))
            except TimeoutError:
                replies.append(None)
    return replies


def classify(replies: list[bytes | None]) -> tuple[int, int, int]:
    full = truncated = dropped = 0
    for reply in replies:
        if reply is None:
            dropped += 1
            continue
        message = dns.message.from_wire(reply)
        if message.flags & dns.flags.TC:
            assert not message.answer and not message.authority
            truncated += 1
        else:
            full += 1
    return full, truncated, dropped


def test_rrl_limits_a_network_and_slips_every_second(limited: ServerThread) -> None:
    full, truncated, dropped = classify(blast(limited.port, 40, use_edns=False))
    assert 5 <= full <= 8  # the rate (5/s) plus what the bucket earns during the burst
    assert truncated + dropped == 40 - full
    assert abs(truncated - dropped) <= 1  # slip 2: every second limited answer is truncated
    # Another network is not affected, and TCP from the limited network is never limited.
    other = classify(blast(limited.port, 3, source="127.66.0.1", use_edns=False))
    assert other == (3, 0, 0)
    assert tcp(limited, dns.message.make_query("www.example.test", "A")).answer


def test_rrl_classes_are_separate(limited: ServerThread) -> None:
    classify(blast(limited.port, 20, use_edns=False))
    # NXDOMAIN answers have their own bucket.
    reply = udp(limited, dns.message.make_query("nope.example.test", "A", use_edns=False))
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_rrl_exempt_networks_and_log_only(tmp_path: Path, zones_dir: Path) -> None:
    import ipaddress

    exempt = start(tmp_path, zones_dir, rate=5, exempt=(ipaddress.ip_network("127.0.0.0/16"),))
    try:
        assert classify(blast(exempt.port, 30, use_edns=False)) == (30, 0, 0)
    finally:
        exempt.stop()
    log_only = start(tmp_path, zones_dir, rate=5, log_only=True)
    try:
        assert classify(blast(log_only.port, 30, use_edns=False)) == (30, 0, 0)
        assert log_only.node is not None
        rrl = log_only.node.holder.current.protection.rrl
        assert rrl is not None and rrl.stats.would_drop + rrl.stats.would_slip >= 20
    finally:
        log_only.stop()


def cookie_of(message: dns.message.Message) -> dns.edns.CookieOption:
    options = [o for o in message.options if isinstance(o, dns.edns.CookieOption)]
    assert len(options) == 1
    return options[0]


def test_cookies_fresh_valid_invalid_and_rrl_exemption(limited: ServerThread) -> None:
    client = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    first = udp(
        limited,
        dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.CookieOption(client, b"")]
        ),
    )
    cookie = cookie_of(first)
    assert cookie.client == client and len(cookie.server) == 16
    assert cookie.server[0] == 1  # RFC 9018 version 1
    # A valid server cookie proves the source address: no rate limit applies.
    replies = blast(
        limited.port, 30, use_edns=0, options=[dns.edns.CookieOption(client, cookie.server)]
    )
    assert classify(replies) == (30, 0, 0)
    # A wrong server cookie gets a normal answer and a fresh cookie (RFC 7873 5.2.3).
    bad = bytes(16)
    reply = udp(
        limited,
        dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.CookieOption(client, bad)]
        ),
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert cookie_of(reply).server != bad


def test_malformed_cookie_is_formerr(limited: ServerThread) -> None:
    query = dns.message.make_query(
        "www.example.test",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345")],
    )
    reply = dns.query.udp(query, "127.0.0.1", port=limited.port, timeout=2, ignore_trailing=True)
    assert reply.rcode() == dns.rcode.FORMERR


def test_badcookie_when_cookies_are_required(tmp_path: Path, zones_dir: Path) -> None:
    server = start(tmp_path, zones_dir, "cookies: {require_valid: true}\n", rate=0)
    try:
        client = b"abcdefgh"
        query = dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.CookieOption(client, b"")]
        )
        reply = udp(server, query)
        assert reply.rcode() == dns.rcode.BADCOOKIE
        server_cookie = cookie_of(reply).server
        again = udp(
            server,
            dns.message.make_query(
                "www.example.test",
                "A",
                use_edns=0,
                options=[dns.edns.CookieOption(client, server_cookie)],
            ),
        )
        assert again.rcode() == dns.rcode.NOERROR and again.answer
        assert tcp(server, query).answer  # TCP proves the address by itself
    finally:
        server.stop()


@pytest.mark.parametrize("action", ["refuse", "drop"])
def test_access_list(tmp_path: Path, zones_dir: Path, action: str) -> None:
    server = start(
        tmp_path, zones_dir, f"acl: {{deny: [127.9.0.0/16], action: {action}}}\n", rate=0
    )
    try:
        denied = blast(server.port, 1, source="127.9.0.1")[0]
        if action == "drop":
            assert denied is None
        else:
            assert denied is not None
            assert dns.message.from_wire(denied).rcode() == dns.rcode.REFUSED
        assert classify(blast(server.port, 2, source="127.8.0.1")) == (2, 0, 0)
    finally:
        server.stop()


def test_caches_stay_bounded_under_a_random_name_flood(tmp_path: Path, zones_dir: Path) -> None:
    config = tmp_path / "gslb.yaml"
    config.write_text(BASE_CONFIG)
    options = NodeOptions(
        zones_dir=str(zones_dir),
        config_path=str(config),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        rrl_overrides={"rate": 0},
        overrides={"packet_cache_size": 500, "answer_cache_size": 300},
    )
    server = ServerThread(options).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            for index in range(3000):
                query = dns.message.make_query(f"r{index}.example.test", "A")
                sock.sendto(query.to_wire(), ("127.0.0.1", server.port))
                sock.recv(4096)
        assert server.node is not None
        responder = server.node.holder.current
        caches = responder.caches
        assert len(caches.packets) <= 500
        assert len(caches.plans) <= 300 and len(caches.answers) <= 300
        assert udp(server, dns.message.make_query("www.example.test", "A")).answer
    finally:
        server.stop()


def test_access_lists_per_listener(tmp_path: Path, zones_dir: Path) -> None:
    from .stackhelpers import free_ports

    public, internal = free_ports(2)
    extra = (
        "acl: {deny: [127.9.0.0/16], action: refuse}\n"
        "dns:\n"
        "  listen:\n"
        f"    - 127.0.0.1:{public}\n"
        f"    - address: 127.0.0.1:{internal}\n"
        "      acl: {allow: [127.9.0.0/16], action: drop}\n"
    )
    config = tmp_path / "gslb.yaml"
    config.write_text(BASE_CONFIG + extra)
    options = NodeOptions(
        zones_dir=str(zones_dir),
        config_path=str(config),
        health_monitor=False,
        rrl_overrides={"rate": 0},
    )
    server = ServerThread(options).start()
    try:
        # The public listener follows the global list: 127.9/16 is refused, others answered.
        refused = blast(public, 1, source="127.9.0.1")[0]
        assert refused is not None
        assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
        assert classify(blast(public, 1, source="127.8.0.1")) == (1, 0, 0)
        # The internal listener has its own list: only 127.9/16, others silently dropped.
        assert classify(blast(internal, 1, source="127.9.0.1")) == (1, 0, 0)
        assert blast(internal, 1, source="127.8.0.1") == [None]
        # TCP obeys the same per-listener list.
        query = dns.message.make_query("www.example.test", "A")
        reply = dns.query.tcp(query, "127.0.0.1", port=internal, timeout=2, source="127.9.0.1")
        assert reply.answer
        refused_tcp = dns.query.tcp(query, "127.0.0.1", port=public, timeout=2, source="127.9.0.1")
        assert refused_tcp.rcode() == dns.rcode.REFUSED
    finally:
        server.stop()
