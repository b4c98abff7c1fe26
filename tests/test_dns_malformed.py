"""Hostile and malformed packets: FORMERR when the header is readable, else drop; never a crash."""

from __future__ import annotations

import logging
import random
import struct

import dns.message
import dns.rcode
import pytest

from gslb.dns import wire

from .dnshelpers import ServerThread, raw_udp, udp

GOOD = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()


def rcode_of(reply: bytes) -> int:
    return struct.unpack_from("!H", reply, 2)[0] & 0xF


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x12", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00"],
    ids=["empty", "one-byte", "eleven-bytes"],
)
def test_too_short_for_a_header_is_dropped(dns_server: ServerThread, packet: bytes) -> None:
    assert raw_udp(dns_server.port, packet, timeout=0.3) is None


@pytest.mark.parametrize("qdcount", [0, 2, 65535])
def test_qdcount_other_than_one_is_formerr(dns_server: ServerThread, qdcount: int) -> None:
    packet = GOOD[:4] + struct.pack("!H", qdcount) + GOOD[6:]
    reply = raw_udp(dns_server.port, packet)
    assert reply is not None
    assert reply[:2] == GOOD[:2]  # the ID is echoed
    assert rcode_of(reply) == dns.rcode.FORMERR


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p[:20],  # question cut in the middle of a label
        lambda p: p[:12] + b"\x03www" + b"\x00\x01",  # no terminating label, no type
        lambda p: p[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer in question
        lambda p: p[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label too long
        lambda p: p[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name > 255
        lambda p: p + b"junk",  # trailing bytes
        lambda p: p[:10] + b"\x00\x05" + p[12:],  # ARCOUNT larger than what follows
        lambda p: p[:-11] + b"\x01a" + p[-10:],  # OPT with a non-root owner
    ],
    ids=[
        "cut",
        "no-root",
        "pointer",
        "long-label",
        "long-name",
        "trailing",
        "arcount",
        "opt-owner",
    ],
)
def test_unparseable_body_is_formerr(dns_server: ServerThread, mutate) -> None:  # type: ignore[no-untyped-def]
    reply = raw_udp(dns_server.port, mutate(GOOD))
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.FORMERR
    assert struct.unpack_from("!H", reply, 2)[0] & wire.QR


def test_bad_edns_options_are_formerr(dns_server: ServerThread) -> None:
    # An option whose length runs past the OPT record.
    opt_rdata = struct.pack("!HH", 65001, 50) + b"x" * 4
    packet = GOOD[:-11] + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(opt_rdata)) + opt_rdata
    reply = raw_udp(dns_server.port, packet)
    assert reply is not None and rcode_of(reply) == dns.rcode.FORMERR
    # A COOKIE option of a length RFC 7873 does not allow.
    cookie = struct.pack("!HH", 10, 5) + b"12345"
    packet = GOOD[:-11] + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(cookie)) + cookie
    reply = raw_udp(dns_server.port, packet)
    assert reply is not None and rcode_of(reply) == dns.rcode.FORMERR


def test_random_garbage_never_crashes(
    dns_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(7)
    caplog.set_level(logging.WARNING)
    for _ in range(1500):
        kind = rng.random()
        if kind < 0.4:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:
            packet = bytearray(GOOD)
            for _ in range(rng.randrange(1, 6)):
                packet[rng.randrange(len(packet))] = rng.getrandbits(8)
            packet = bytes(packet[: rng.randrange(len(packet) + 1)])
        # Also feed the parser directly: it may only raise Drop.
        try:
            wire.parse_query(packet)
        except wire.Drop:
            pass
        raw_udp(dns_server.port, packet, timeout=0.001)
    assert udp(dns_server, dns.message.make_query("www.example.test", "A")).answer
    assert dns_server.node is not None
    assert dns_server.node.holder.current.stats.errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
