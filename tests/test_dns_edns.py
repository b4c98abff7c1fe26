"""EDNS on every reply (RFC 6891 7), cookie-only queries (RFC 7873 5.4) and BADVERS, over UDP."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, raw_udp, udp

CONFIG = """\
datacenters:
  dc1: {region: r1, latitude: 50.0, longitude: 8.0, ipv4: [192.0.2.1]}
services:
  svc.example.test: {policy: geoproximity, datacenters: [dc1], ttl: 30, on_all_down: fail_open}
"""
CLIENT_COOKIE = bytes(range(1, 9))


def start(tmp_path: Path, zones_dir: Path, extra: str = "", **rrl: object) -> ServerThread:
    config = tmp_path / "gslb.yaml"
    config.write_text(CONFIG + extra)
    options = NodeOptions(
        zones_dir=str(zones_dir),
        config_path=str(config),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        rrl_overrides=rrl,
    )
    return ServerThread(options).start()


def opt_record(options: bytes, version: int = 0, payload: int = 1232) -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, payload, version << 16, len(options)) + options


def cookie_option(client: bytes = CLIENT_COOKIE) -> bytes:
    return struct.pack("!HH", 10, len(client)) + client


def cookies_of(message: dns.message.Message) -> list[dns.edns.CookieOption]:
    return [o for o in message.options if isinstance(o, dns.edns.CookieOption)]


def test_cookie_only_query_gets_noerror_with_a_server_cookie(dns_server: ServerThread) -> None:
    packet = struct.pack("!HHHHHH", 0x4242, 0, 0, 0, 0, 1) + opt_record(cookie_option())
    reply = raw_udp(dns_server.port, packet)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == 0x4242 and message.rcode() == dns.rcode.NOERROR
    assert message.edns == 0 and not message.question
    (cookie,) = cookies_of(message)
    assert cookie.client == CLIENT_COOKIE and len(cookie.server) == 16
    # Without a COOKIE option, a query without a question stays FORMERR.
    packet = struct.pack("!HHHHHH", 0x4243, 0, 0, 0, 0, 1) + opt_record(b"")
    reply = raw_udp(dns_server.port, packet)
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_notimp_keeps_the_question_and_carries_opt(dns_server: ServerThread) -> None:
    for opcode in (dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE):
        query = dns.message.make_query("www.example.test", "SOA", use_edns=0)
        query.set_opcode(opcode)
        reply = raw_udp(dns_server.port, query.to_wire())
        assert reply is not None
        message = dns.message.from_wire(reply)
        assert message.rcode() == dns.rcode.NOTIMP, opcode
        assert message.edns == 0, opcode
        assert [q.name.to_text() for q in message.sections[0]] == ["www.example.test."]


def test_badvers_with_a_malformed_option_and_with_a_cookie(dns_server: ServerThread) -> None:
    question = dns.message.make_query("www.example.test", "A").to_wire()[12:]
    header = struct.pack("!HHHHHH", 0x5151, 0, 1, 0, 0, 1)
    # Version 1 with an option whose length runs past the OPT record: BADVERS, not FORMERR
    # (we cannot judge the options of a version we do not know).
    bad_option = struct.pack("!HH", 65001, 50) + b"xxxx"
    reply = raw_udp(dns_server.port, header + question + opt_record(bad_option, version=1))
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.BADVERS and message.edns == 0
    # A BADVERS reply carries the server cookie (RFC 7873 5.4 / RFC 6891 7).
    reply = raw_udp(dns_server.port, header + question + opt_record(cookie_option(), version=1))
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.BADVERS
    (cookie,) = cookies_of(message)
    assert cookie.client == CLIENT_COOKIE and len(cookie.server) == 16


def test_acl_refused_and_rrl_slip_carry_opt(tmp_path: Path, zones_dir: Path) -> None:
    server = start(tmp_path, zones_dir, "acl: {deny: [127.9.0.0/16], action: refuse}\n", rate=1)
    try:
        query = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.9.0.1", 0))
            sock.settimeout(2)
            sock.sendto(query, ("127.0.0.1", server.port))
            refused = dns.message.from_wire(sock.recv(4096))
        assert refused.rcode() == dns.rcode.REFUSED and refused.edns == 0
        assert refused.question
        # Rate 1/s, slip 2 (default): a burst gets slipped (TC) replies; each carries OPT.
        slipped = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            for _ in range(12):
                sock.sendto(query, ("127.0.0.1", server.port))
                try:
                    message = dns.message.from_wire(sock.recv(4096))
                except TimeoutError:
                    continue
                if message.flags & dns.flags.TC:
                    slipped.append(message)
        assert slipped
        for message in slipped:
            assert message.edns == 0 and not message.answer and message.question
    finally:
        server.stop()


def test_internal_error_servfail_carries_opt(dns_server: ServerThread) -> None:
    assert dns_server.node is not None
    zones = dns_server.node.holder.current.zones

    def broken(*_args: object) -> None:
        raise RuntimeError("injected fault")

    zones.lookup = broken  # type: ignore[method-assign, assignment]
    reply = udp(dns_server, dns.message.make_query("fresh.example.test", "A", use_edns=0))
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.edns == 0 and reply.question
