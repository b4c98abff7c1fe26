"""The DNSSEC seam: a per-zone Signer adds RRSIGs and denial records only for DO queries."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gslb.zone.lookup import Kind

from .dnshelpers import ServerThread, raw_udp

SIG = "{covered} 13 3 300 20300101000000 20200101000000 12345 example.test. c2lnbmF0dXJl"


class FakeSigner:
    """Not cryptography: fixed RRSIG and NSEC records that show where the seam puts them."""

    def __init__(self) -> None:
        self.denials: list[tuple[str, int, Kind]] = []

    def rrsigs(self, rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
        covered = dns.rdatatype.to_text(rrset.rdtype)
        sig = dns.rrset.from_text(rrset.name, rrset.ttl, "IN", "RRSIG", SIG.format(covered=covered))
        return sig

    def denial(
        self, zone: dns.name.Name, qname: dns.name.Name, qtype: int, kind: Kind
    ) -> list[dns.rrset.RRset]:
        self.denials.append((qname.to_text(), qtype, kind))
        return [dns.rrset.from_text(zone, 60, "IN", "NSEC", f"zzz.{zone} SOA NS RRSIG NSEC")]


def ask(server: ServerThread, name: str, do: bool) -> dns.message.Message:
    query = dns.message.make_query(name, "A", want_dnssec=do)
    reply = raw_udp(server.port, query.to_wire())
    assert reply is not None
    return dns.message.from_wire(reply)


def test_signer_adds_rrsigs_and_denial_for_do_queries_only(dns_server: ServerThread) -> None:
    assert dns_server.node is not None
    responder = dns_server.node.holder.current
    signer = FakeSigner()
    responder.signers = {dns.name.from_text("example.test."): signer}
    signed = ask(dns_server, "www.example.test", do=True)
    assert [(r.rdtype, getattr(r, "covers", 0)) for r in signed.answer] == [
        (dns.rdatatype.A, dns.rdatatype.NONE),
        (dns.rdatatype.RRSIG, dns.rdatatype.A),
    ]
    assert signed.ednsflags & dns.flags.DO
    plain = ask(dns_server, "www.example.test", do=False)  # the caches are keyed by DO
    assert [r.rdtype for r in plain.answer] == [dns.rdatatype.A]
    missing = ask(dns_server, "missing.example.test", do=True)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    types = sorted(dns.rdatatype.to_text(r.rdtype) for r in missing.authority)
    assert types == ["NSEC", "RRSIG", "RRSIG", "SOA"]
    assert signer.denials == [("missing.example.test.", dns.rdatatype.A, Kind.NXDOMAIN)]
    unsigned = ask(dns_server, "missing.example.test", do=False)
    assert [r.rdtype for r in unsigned.authority] == [dns.rdatatype.SOA]
