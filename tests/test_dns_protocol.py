"""Authoritative DNS behaviour over real UDP and TCP sockets."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from .dnshelpers import ServerThread, raw_udp, tcp, udp


def q(name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def rrs(section: list) -> list[str]:  # type: ignore[type-arg]
    return sorted(str(rrset) for rrset in section)


def test_authoritative_answer_sets_aa_and_copies_rd(dns_server: ServerThread) -> None:
    query = q("www.example.test", "A")
    response = udp(dns_server, query)
    assert response.id == query.id
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD
    assert not response.flags & dns.flags.RA
    assert rrs(response.answer) == ["www.example.test. 300 IN A 192.0.2.1"]
    query.flags &= ~dns.flags.RD
    assert not udp(dns_server, query).flags & dns.flags.RD


def test_apex_soa_and_ns(dns_server: ServerThread) -> None:
    soa = udp(dns_server, q("example.test", "SOA"))
    assert soa.answer[0].rdtype == dns.rdatatype.SOA and soa.answer[0].ttl == 3600
    ns = udp(dns_server, q("example.test", "NS"))
    assert sorted(r.target.to_text() for r in ns.answer[0]) == [
        "ns1.example.test.",
        "ns2.example.net.",
    ]
    # Addresses of in-zone name servers ride along in the additional section.
    assert "ns1.example.test. 300 IN A 192.0.2.53" in rrs(ns.additional)


def test_nxdomain_carries_soa_with_negative_ttl(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("missing.example.test", "A"))
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 60  # min(SOA TTL 3600, MINIMUM 60), RFC 2308


def test_nodata_ttl_uses_soa_ttl_when_smaller(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("short.test", "TXT"))
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert response.authority[0].ttl == 30  # min(SOA TTL 30, MINIMUM 600)


def test_nodata_for_existing_name_and_empty_non_terminal(dns_server: ServerThread) -> None:
    for name in ("www.example.test", "b.c.example.test", "c.example.test"):
        response = udp(dns_server, q(name, "MX"))
        assert response.rcode() == dns.rcode.NOERROR, name
        assert not response.answer
        assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_refused_outside_served_zones(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("www.example.org", "A"))
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert not response.answer and not response.authority


def test_notimp_for_other_opcodes(dns_server: ServerThread) -> None:
    # NOTIFY is answered (gslb.dns.notify, tests/test_transfer.py); UPDATE is not implemented.
    query = q("example.test", "SOA")
    query.set_opcode(dns.opcode.UPDATE)
    response = udp(dns_server, query)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == dns.opcode.UPDATE


def test_responses_are_dropped(dns_server: ServerThread) -> None:
    query = q("www.example.test", "A")
    query.flags |= dns.flags.QR
    assert raw_udp(dns_server.port, query.to_wire(), timeout=0.3) is None
    # ... and the server is still there.
    assert udp(dns_server, q("www.example.test")).rcode() == dns.rcode.NOERROR


def test_cname_chain_followed_inside_zone(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("alias.example.test", "A"))
    assert [str(r) for r in response.answer] == [
        "alias.example.test. 300 IN CNAME alias2.example.test.",
        "alias2.example.test. 300 IN CNAME www.example.test.",
        "www.example.test. 300 IN A 192.0.2.1",
    ]
    # Asking for the CNAME itself returns just it.
    direct = udp(dns_server, q("alias.example.test", "CNAME"))
    assert rrs(direct.answer) == ["alias.example.test. 300 IN CNAME alias2.example.test."]


def test_cname_to_missing_name_is_nxdomain_with_chain(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("dangling.example.test", "A"))
    assert response.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: rcode of the last name
    assert response.answer[0].rdtype == dns.rdatatype.CNAME


def test_cname_out_of_zone_stops(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("outside.example.test", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert rrs(response.answer) == ["outside.example.test. 300 IN CNAME www.example.org."]


def test_wildcard_synthesis(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("anything.wild.example.test", "A"))
    assert rrs(response.answer) == ["anything.wild.example.test. 300 IN A 192.0.2.99"]
    deeper = udp(dns_server, q("x.y.wild.example.test", "TXT"))
    assert rrs(deeper.answer) == ['x.y.wild.example.test. 300 IN TXT "wild"']
    # An existing name is not covered by the wildcard (RFC 4592 section 2.2).
    real = udp(dns_server, q("real.wild.example.test", "TXT"))
    assert not real.answer and real.rcode() == dns.rcode.NOERROR
    assert rrs(udp(dns_server, q("real.wild.example.test")).answer) == [
        "real.wild.example.test. 300 IN A 192.0.2.100"
    ]
    # Wildcard without the type: NODATA, not NXDOMAIN.
    nodata = udp(dns_server, q("other.wild.example.test", "MX"))
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    # Below an existing name the wildcard does not apply.
    below = udp(dns_server, q("x.real.wild.example.test", "A"))
    assert below.rcode() == dns.rcode.NXDOMAIN


def test_delegation_is_a_referral_with_glue(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("host.child.example.test", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.flags & dns.flags.AA
    assert not response.answer
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.NS]
    assert rrs(response.additional) == [
        "ns.child.example.test. 300 IN A 203.0.113.53",
        "ns.child.example.test. 300 IN AAAA 2001:db8:53::53",
    ]
    at_cut = udp(dns_server, q("child.example.test", "A"))
    assert at_cut.authority[0].rdtype == dns.rdatatype.NS and not at_cut.flags & dns.flags.AA
    # DS belongs to the parent side of the cut.
    ds = udp(dns_server, q("child.example.test", "DS"))
    assert ds.flags & dns.flags.AA and ds.authority[0].rdtype == dns.rdatatype.SOA


def test_case_insensitive_match_preserves_question_case(dns_server: ServerThread) -> None:
    for name in ("WwW.ExAmPlE.TeSt", "www.example.test", "WWW.EXAMPLE.TEST"):
        for _ in range(2):  # second time from the packet cache
            response = udp(dns_server, q(name, "A"))
            assert response.question[0].name.to_text() == name + "."
            assert response.question[0].name.labels == dns.name.from_text(name).labels
            assert response.answer[0][0].address == "192.0.2.1"
    raw = dns.message.make_query("MiXeD.wild.example.test", "A").to_wire()
    reply = raw_udp(dns_server.port, raw)
    assert reply is not None and b"\x05MiXeD\x04wild" in reply


def test_any_is_answered_minimally(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("www.example.test", "ANY"))
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer) == 1  # RFC 8482: one RRset, not everything at the name


def test_edns_payload_and_unknown_options(dns_server: ServerThread) -> None:
    unknown = dns.edns.GenericOption(65001, b"hello")
    response = udp(dns_server, q("www.example.test", use_edns=0, payload=4096, options=[unknown]))
    assert response.edns == 0
    assert response.payload == 1232
    assert response.options == ()  # unknown options are ignored, not echoed
    assert response.answer
    plain = udp(dns_server, q("www.example.test", use_edns=False))
    assert plain.edns == -1


def test_edns_do_bit_is_echoed(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("www.example.test", want_dnssec=True))
    assert response.ednsflags & dns.flags.DO


def test_badvers_for_edns_version_above_zero(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("www.example.test", use_edns=1))
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0
    assert not response.answer


def test_formerr_for_two_opt_records(dns_server: ServerThread) -> None:
    wire = bytearray(q("www.example.test", use_edns=0).to_wire())
    opt = wire[-11:]  # root name + fixed OPT header, no options
    wire[10:12] = struct.pack("!H", 2)
    reply = raw_udp(dns_server.port, bytes(wire + opt))
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_udp_truncation_and_tcp_full_answer(dns_server: ServerThread) -> None:
    small = udp(dns_server, q("big.example.test", "TXT", use_edns=False), ignore_trailing=True)
    assert small.flags & dns.flags.TC
    assert not small.answer
    edns = udp(dns_server, q("big.example.test", "TXT", use_edns=0, payload=4096))
    assert edns.flags & dns.flags.TC  # 1500+ bytes exceed our 1232-byte UDP limit
    full = tcp(dns_server, q("big.example.test", "TXT"))
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == 6


def test_optional_additional_dropped_before_truncating(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("example.test", "MX", use_edns=False))
    assert not response.flags & dns.flags.TC
    assert response.answer


def test_chaos_refused_by_default(dns_server: ServerThread) -> None:
    response = udp(dns_server, q("version.bind", "TXT", rdclass="CH"))
    assert response.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("klass", ["HS", "NONE"])
def test_other_classes_refused(dns_server: ServerThread, klass: str) -> None:
    response = udp(dns_server, q("www.example.test", "A", rdclass=klass))
    assert response.rcode() == dns.rcode.REFUSED


def test_zone_transfer_refused(dns_server: ServerThread) -> None:
    response = tcp(dns_server, q("example.test", "AXFR"))
    assert response.rcode() == dns.rcode.REFUSED
