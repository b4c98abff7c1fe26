"""The pure answer core says what the cached, patched server path sends."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import pytest

from gslb.dns import answer as core
from gslb.dns import render, wire
from gslb.zone.lookup import Kind

from .dnshelpers import ServerThread, raw_udp

QUERIES = [
    ("www.example.test", "A"),
    ("WwW.Example.TEST", "AAAA"),
    ("missing.example.test", "A"),
    ("c.example.test", "MX"),
    ("alias.example.test", "A"),
    ("dangling.example.test", "A"),
    ("x.wild.example.test", "TXT"),
    ("host.child.example.test", "A"),
    ("example.test", "NS"),
    ("www.example.org", "A"),
    ("big.example.test", "TXT"),
    ("example.test", "AXFR"),
]


@pytest.mark.parametrize(("name", "rdtype"), QUERIES)
def test_core_answer_matches_the_server(dns_server: ServerThread, name: str, rdtype: str) -> None:
    assert dns_server.node is not None
    responder = dns_server.node.holder.current
    data = dns.message.make_query(name, rdtype, use_edns=0).to_wire()
    # Twice: the second reply comes from the caches.
    replies = [raw_udp(dns_server.port, data) for _ in range(2)]
    query = wire.parse_query(data)
    assert isinstance(query, wire.Query)
    client = socket.inet_aton("127.0.0.1")
    answer = core.answer(query, client, responder.zones, responder.steering)
    opt = wire.build_opt(responder.settings.edns_payload, answer.rcode >> 4, False, b"")
    if answer.kind is Kind.REFUSED and not answer.answer:
        expected = wire.error_response(query, answer.rcode, wire.question_of(query), opt)
    else:
        expected = render.finish(query, render.render(answer), opt, 1232)
    for reply in replies:
        assert reply is not None
        assert dns.message.from_wire(reply) == dns.message.from_wire(expected)


def test_core_is_pure_and_frozen(dns_server: ServerThread) -> None:
    assert dns_server.node is not None
    zones = dns_server.node.holder.current.zones
    query = wire.parse_query(dns.message.make_query("missing.example.test", "A").to_wire())
    assert isinstance(query, wire.Query)
    first = core.answer(query, b"\x7f\x00\x00\x01", zones, None)
    second = core.answer(query, b"\x7f\x00\x00\x01", zones, None)
    assert first == second and first.rcode == dns.rcode.NXDOMAIN and first.negative
    with pytest.raises(AttributeError):
        first.rcode = 0  # type: ignore[misc]
