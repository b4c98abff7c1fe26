"""Which signatures and denial records an answer carries (RFC 4035 3.1), given a lookup.

Pure apart from the signers' cache: the responder calls `sign_result` when it renders an answer
for a query with DO=1, and renders the sections it returns instead of the lookup's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name
import dns.rdatatype
import dns.rrset

from ..zone.lookup import Kind, LookupResult
from .signer import Signers

NXDOMAIN = 3
NOERROR = 0
CNAME = dns.rdatatype.CNAME
DNAME = dns.rdatatype.DNAME
SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS


@dataclass
class SignedSections:
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    rcode: int = NOERROR


def sign_result(
    signers: Signers, result: LookupResult, qname: dns.name.Name, qtype: int, rcode: int
) -> SignedSections:
    """The lookup's sections with RRSIGs after each RRset, plus NSEC proofs where needed.

    Compact denial (RFC 9824): a name that does not exist is answered NOERROR with an NSEC
    whose bitmap holds NXNAME, so NXDOMAIN becomes NOERROR for DO=1 queries.
    """
    out = SignedSections(rcode=rcode)
    final = qname  # the name the answer ends at (the last CNAME target)
    for rrset in result.answer:
        signer = signers.for_name(rrset.name)
        if signer is None:
            out.answer.append(rrset)
        else:
            out.answer.extend(signer.signed(rrset))
            if signer.wildcard_source(rrset.name) is not None:
                out.authority.extend(signer.wildcard_proof(rrset.name))
        if rrset.rdtype == CNAME and rrset.rdtype != qtype:
            final = rrset[0].target
    negative = any(r.rdtype == SOA for r in result.authority) and result.kind is not Kind.DELEGATION
    for rrset in result.authority:
        signer = signers.for_name(rrset.name)
        if result.kind is Kind.DELEGATION and rrset.rdtype == NS:
            out.authority.append(rrset)  # the parent does not sign the child's NS (RFC 4035)
            parent = signers.for_name(rrset.name.parent())
            if parent is not None:
                out.authority.extend(parent.referral(rrset.name))
            continue
        if signer is None:
            out.authority.append(rrset)
            continue
        out.authority.extend(signer.signed(rrset))
    if negative:
        signer = signers.for_name(final)
        if signer is not None:
            if result.kind is Kind.NXDOMAIN:
                out.authority.extend(signer.nxname(final))
                out.rcode = NOERROR
            else:
                out.authority.extend(signer.nodata(final, qtype))
    for rrset in result.additional:
        signer = signers.for_name(rrset.name)
        if signer is None or result.kind is Kind.DELEGATION:
            out.additional.append(rrset)  # glue is not authoritative data: never signed
        else:
            out.additional.extend(signer.signed(rrset))
    return out
