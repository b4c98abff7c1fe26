"""Answers to bytes: render once, then patch per query (ID, RD/CD, question case, OPT) and
truncate to what the client can receive.

A Rendered holds a response without ID and OPT; a Negative is the shared NXDOMAIN/NODATA
template of one zone (the question comes from the query). DNSSEC plugs in through a Signer per
zone: with the query's DO bit set, render() adds its RRSIGs after every RRset and its denial
records to negative and wildcard answers; truncation never splits an RRset from its RRSIG
(either the optional additional records go, or the whole answer does, with TC=1).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Protocol

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..zone.lookup import Kind
from . import wire
from .answer import Answer
from .rrl import ResponseClass


class Signer(Protocol):
    """Online DNSSEC signing for one zone (gslb.dnssec.signer.ZoneSigner). `denial` gets the
    name the answer ends at (a negative answer's last CNAME target). A signer whose attribute
    `compact_denial` is true proves NXDOMAIN as NODATA (RFC 9824): the rcode becomes NOERROR.
    rrsigs() returns None for what is not signed (the child's NS and glue of a referral)."""

    def rrsigs(self, rrset: dns.rrset.RRset) -> dns.rrset.RRset | None: ...

    def denial(
        self, zone: dns.name.Name, qname: dns.name.Name, qtype: int, kind: Kind
    ) -> list[dns.rrset.RRset]: ...


Signers = Mapping[dns.name.Name, Signer]  # zone origin -> its signer; empty: unsigned


class Rendered:
    """A response rendered once, without ID and OPT; patched per query."""

    __slots__ = ("flags", "qname", "body", "body_edns", "body_reduced", "kind", "rrl_key", "rclass")

    def __init__(
        self,
        flags: int,
        qname: bytes,
        body: bytes,
        body_reduced: bytes | None,
        kind: Kind,
        rrl_key: bytes,
    ) -> None:
        self.flags = flags  # QR, AA and the rcode
        self.qname = qname  # the question name's bytes as rendered (for the case patch)
        self.body = body  # from the QDCOUNT field on; ARCOUNT excludes our OPT
        self.body_edns = add_arcount(body, 1)  # the same with room counted for our OPT
        self.body_reduced = body_reduced  # without optional additional records, if any
        self.kind = kind
        self.rrl_key = rrl_key
        self.rclass = response_class(flags & 0xF, kind)


class Negative:
    """NXDOMAIN or NODATA for any name of one zone: question from the query, SOA shared.

    Random-name floods create one plan-cache entry per name; sharing this template keeps each
    entry down to its key instead of a rendered message.
    """

    __slots__ = ("flags", "soa_fixed", "rclass", "zone_key")

    def __init__(self, rcode: int, soa_fixed: bytes, zone_key: bytes) -> None:
        self.flags = wire.QR | wire.AA | rcode
        self.soa_fixed = soa_fixed  # the SOA record after its owner name
        self.rclass = ResponseClass.NXDOMAIN if rcode == wire.NXDOMAIN else ResponseClass.NODATA
        self.zone_key = zone_key  # the zone's name, lowercase wire form


def negative_template(zone: dns.name.Name, soa: dns.rrset.RRset, kind: Kind) -> Negative:
    rdata = soa[0].to_wire()
    fixed = struct.pack("!HHIH", dns.rdatatype.SOA, soa.rdclass, soa.ttl, len(rdata)) + rdata
    rcode = wire.NXDOMAIN if kind is Kind.NXDOMAIN else wire.NOERROR
    return Negative(rcode, fixed, _wire(zone).lower())


def render(answer: Answer, dnssec_ok: bool = False, signer: Signer | None = None) -> Rendered:
    """One dnspython render of an Answer (compressed, in steering order)."""
    sign = signer is not None and dnssec_ok
    rcode = answer.rcode
    if sign and rcode == wire.NXDOMAIN and getattr(signer, "compact_denial", False):
        rcode = wire.NOERROR  # RFC 9824: the signer proves NXDOMAIN as NODATA with NXNAME
    message = dns.message.Message(id=0)
    message.flags = dns.flags.QR | (dns.flags.AA if answer.authoritative else 0)
    message.set_rcode(dns.rcode.Rcode.make(rcode))
    message.question.append(
        dns.rrset.RRset(
            answer.qname,
            dns.rdataclass.RdataClass.make(answer.qclass),
            dns.rdatatype.RdataType.make(answer.qtype),
        )
    )
    message.answer.extend(_signed(answer.answer, signer) if sign else answer.answer)
    authority = list(answer.authority)
    if sign and answer.zone is not None and (answer.kind in _DENIED or answer.wildcard):
        # DNSSEC: negative answers (also at the end of a CNAME chain), referrals (DS or the
        # NSEC proving none) and wildcard expansions carry the signer's proof.
        name = _denial_name(answer)
        authority.extend(signer.denial(answer.zone, name, answer.qtype, answer.kind))  # type: ignore[union-attr]
    message.authority.extend(_signed(authority, signer) if sign else authority)
    message.additional.extend(_signed(answer.additional, signer) if sign else answer.additional)
    full = message.to_wire(want_shuffle=False)  # keep the steering order
    reduced = None
    if answer.additional and not answer.additional_required:
        message.additional = []
        reduced = message.to_wire(want_shuffle=False)[4:]
    flags = struct.unpack_from("!H", full, 2)[0]
    qname_wire = _wire(answer.qname)
    if answer.kind is Kind.NXDOMAIN:
        rrl_key = _wire(answer.zone or dns.name.root).lower()
    elif answer.kind is Kind.DELEGATION:
        rrl_key = _wire(answer.authority[0].name).lower()
    else:
        rrl_key = qname_wire.lower()
    return Rendered(flags, qname_wire, full[4:], reduced, answer.kind, rrl_key)


_DENIED = (Kind.NXDOMAIN, Kind.NODATA, Kind.DELEGATION)


def _denial_name(answer: Answer) -> dns.name.Name:
    """The name a proof is about: the last CNAME's target of a negative answer, the owner of
    the last (wildcard) RRset of a positive one, else the question."""
    if not answer.answer or answer.kind is Kind.DELEGATION:
        return answer.qname
    last = answer.answer[-1]
    if last.rdtype == dns.rdatatype.CNAME and answer.kind in (Kind.NXDOMAIN, Kind.NODATA):
        return last[0].target  # type: ignore[no-any-return]
    return last.name


def _signed(
    rrsets: tuple[dns.rrset.RRset, ...] | list[dns.rrset.RRset], signer: Signer | None
) -> list[dns.rrset.RRset]:
    out: list[dns.rrset.RRset] = []
    for rrset in rrsets:
        out.append(rrset)
        if signer is not None and rrset.rdtype != dns.rdatatype.RRSIG:
            sig = signer.rrsigs(rrset)
            if sig is not None:
                out.append(sig)
    return out


def finish(query: wire.Query, rendered: Rendered, opt: bytes, limit: int) -> bytes:
    """Patch a rendered answer for this query; limit 0 means no size limit (TCP)."""
    flags = rendered.flags | (query.flags & (wire.RD | wire.CD))
    body = rendered.body_edns if opt else rendered.body
    qname = query.qname
    if qname != rendered.qname:
        # Keep the question's case as the client sent it (0x20 randomisation relies on it).
        body = body[:8] + qname + body[8 + len(qname) :]
    if limit and 4 + len(body) + len(opt) > limit:
        reduced = rendered.body_reduced
        if reduced is not None:
            if qname != rendered.qname:
                reduced = reduced[:8] + qname + reduced[8 + len(qname) :]
            if opt:
                reduced = add_arcount(reduced, 1)
        if reduced is not None and 4 + len(reduced) + len(opt) <= limit:
            body = reduced
        else:
            # RFC 1035 4.2.1 / RFC 2181 9: set TC and send no partial RRsets.
            flags |= wire.TC
            question = body[8 : 8 + len(qname) + 4]
            body = struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0) + question
    return struct.pack("!HH", query.id, flags) + body + opt


def finish_negative(query: wire.Query, negative: Negative, opt: bytes, limit: int) -> bytes:
    """Header, the query's own question, the zone's SOA (owner compressed) and our OPT."""
    flags = negative.flags | (query.flags & (wire.RD | wire.CD))
    qname = query.qname
    # The SOA's owner is the zone's apex, a suffix of the question name: point at it.
    owner = 0xC000 | (12 + len(qname) - len(negative.zone_key))
    response = (
        wire.HEADER.pack(query.id, flags, 1, 0, 1, 1 if opt else 0)
        + qname
        + wire.TYPE_CLASS.pack(query.qtype, query.qclass)
        + struct.pack("!H", owner)
        + negative.soa_fixed
        + opt
    )
    if limit and len(response) > limit:
        # A long name and SOA do not fit (RFC 1035 4.2.1): TC, and the client asks over TCP.
        return (
            wire.HEADER.pack(query.id, flags | wire.TC, 1, 0, 0, 1 if opt else 0)
            + wire.question_of(query)
            + opt
        )
    return response


def slip(response: bytes) -> bytes:
    """RRL's slip: the same header with TC=1, only the question and our OPT (RFC 6891 7), so
    a real client retries over TCP while a spoofed victim gets no more than the query had."""
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHH", response, 2)
    end = 12
    if qdcount:
        end = wire.question_name_end(response, 12) + 4
    opt = wire.find_opt(response, end, ancount + nscount, arcount)
    return (
        response[:2]
        + struct.pack("!HHHHH", flags | wire.TC, 1 if qdcount else 0, 0, 0, 1 if opt else 0)
        + response[12:end]
        + opt
    )


def response_class(rcode: int, kind: Kind) -> ResponseClass:
    if rcode == wire.NXDOMAIN:
        return ResponseClass.NXDOMAIN
    if rcode != wire.NOERROR:
        return ResponseClass.ERROR
    if kind is Kind.DELEGATION:
        return ResponseClass.REFERRAL
    if kind is Kind.NODATA:
        return ResponseClass.NODATA
    return ResponseClass.ANSWER


def add_arcount(body: bytes, extra: int) -> bytes:
    arcount = struct.unpack_from("!H", body, 6)[0] + extra
    return body[:6] + struct.pack("!H", arcount) + body[8:]


def _wire(name: dns.name.Name) -> bytes:
    """A name's uncompressed wire form (to_wire without a file always returns bytes)."""
    data = name.to_wire()
    assert data is not None
    return data
