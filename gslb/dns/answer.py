"""The pure answer core: (query, client, zones, steering) -> a frozen Answer.

No caches, no counters, no bytes out: rendering (render.py) turns an Answer into a response,
and the responder memoises the two steps below in its caches (caches.py):
1. resolve(): what the zones say about (name, type): a static Answer, or a ServicePlan when
   the name is (or leads by CNAME to) a GSLB service;
2. service_answer(): a ServicePlan plus one steering decision -> an Answer.
answer() composes them for one query; the health snapshot reaches the decision through the
steering engine, which reads its HealthHolder.
Every rcode decision that is not the zone's lives here too (protocol_rcode, CHAOS).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..zone.lookup import Kind, LookupResult, ZoneSet
from . import wire

if TYPE_CHECKING:
    from ..config.service import Service
    from ..steering.engine import Decision

CLASS_IN = 1
CLASS_CH = 3
TYPE_A = 1
TYPE_AAAA = 28
TYPE_TXT = 16
TYPE_ANY = 255
ZONE_TRANSFER_TYPES = frozenset({wire.TYPE_IXFR, wire.TYPE_AXFR})
CHAOS_VERSION_NAMES = {b"\x07version\x04bind\x00", b"\x07version\x06server\x00"}
CHAOS_ID_NAMES = {b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"}


class Steering(Protocol):
    """What the DNS side needs from gslb.steering (SteeringEngine)."""

    @property
    def services(self) -> Mapping[str, Service]: ...

    def decide(self, service: Service, address: bytes, prefix: int) -> Decision: ...

    def transitions(self) -> dict[str, dict[str, dict[str, Any]]]: ...

    def scope_map_state(self, service: str) -> str: ...

    def explain(self, service: Service, address: bytes, prefix: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Identity:
    """What CHAOS TXT version.bind / id.server say (empty: REFUSED)."""

    version: str | None = None
    server_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """Everything a response says, before it becomes bytes."""

    qname: dns.name.Name
    qtype: int
    rcode: int
    kind: Kind
    zone: dns.name.Name | None = None
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    additional_required: bool = False  # glue: the referral is useless without it
    qclass: int = CLASS_IN
    authoritative: bool = True
    wildcard: bool = False  # synthesised from a wildcard (DNSSEC proves the closer names absent)
    service: str = ""  # the GSLB service answered, for the counters
    datacenter: str = ""  # the first datacenter of the decision, for the counters
    scope: int = 0  # ECS scope prefix to return
    # True when every client sending this query gets this answer (packet-cacheable per query).
    deterministic: bool = True
    steering_key: Hashable = None  # same key => same records (the rendered-answer cache key)

    @property
    def negative(self) -> bool:
        """NXDOMAIN or NODATA straight from one zone: question plus the zone's SOA only."""
        return (
            self.kind in (Kind.NXDOMAIN, Kind.NODATA)
            and not self.answer
            and self.zone is not None
            and self.rcode in (wire.NOERROR, wire.NXDOMAIN)
        )


@dataclass(frozen=True)
class ServicePlan:
    """A name that resolves (perhaps via CNAMEs) to a GSLB service."""

    service: Any  # gslb.steering Service
    name: str  # the service's name, lowercase text with trailing dot
    owner: dns.name.Name  # the same as a Name: the owner of the address records
    zone: dns.name.Name | None
    chain: tuple[dns.rrset.RRset, ...]  # CNAMEs that led here (empty when asked directly)


def protocol_rcode(query: wire.Query) -> int | None:
    """The rcode for a query the zones never see, or None when they answer it."""
    if query.opcode != wire.OPCODE_QUERY:
        return wire.NOTIMP
    if query.tsig:
        return wire.NOTAUTH  # no TSIG keys without a protocol extension
    if query.qclass != CLASS_IN:
        return None if query.qclass == CLASS_CH else wire.REFUSED
    if query.qtype in ZONE_TRANSFER_TYPES:
        return wire.REFUSED  # transfers are a protocol extension's job
    return None


def _rcode_of(kind: Kind) -> int:
    if kind is Kind.NXDOMAIN:
        return wire.NXDOMAIN
    if kind is Kind.REFUSED:
        return wire.REFUSED
    return wire.NOERROR


def _from_lookup(qname: dns.name.Name, qtype: int, result: LookupResult) -> Answer:
    return Answer(
        qname,
        qtype,
        _rcode_of(result.kind),
        result.kind,
        zone=result.zone,
        answer=tuple(result.answer),
        authority=tuple(result.authority),
        additional=tuple(result.additional),
        additional_required=result.additional_required,
        authoritative=result.authoritative,
        wildcard=result.wildcard,
    )


def resolve(
    zones: ZoneSet, steering: Steering | None, qname: dns.name.Name, qtype: int
) -> Answer | ServicePlan:
    """What the zones say about (qname, qtype) in class IN."""
    result = zones.lookup(qname, qtype)
    if result.kind is Kind.SERVICE:
        service = None
        if steering is not None and result.service is not None:
            service = steering.services.get(result.service)
        owner = dns.name.from_text(result.service or "")
        if service is not None:
            return ServicePlan(
                service, result.service or "", owner, result.zone, tuple(result.answer)
            )
        # A service name without a steering engine: no addresses to give.
        zone = zones.find_zone(owner)
        authority = (zone.negative_soa,) if zone is not None else ()
        kind = Kind.ANSWER if result.answer else Kind.NODATA
        return Answer(
            qname,
            qtype,
            wire.NOERROR,
            kind,
            zone=result.zone,
            answer=tuple(result.answer),
            authority=authority,
        )
    return _from_lookup(qname, qtype, result)


def client_subnet(query: wire.Query, client: bytes) -> tuple[bytes, int]:
    """The network steering decides for: the ECS option's, else the client's own address."""
    if query.ecs is not None:
        return query.ecs.address, query.ecs.source_prefix
    return client, 8 * len(client)


def service_answer(
    zones: ZoneSet, plan: ServicePlan, qname: dns.name.Name, qtype: int, decision: Any
) -> Answer:
    """The records for one steering decision about a service."""
    datacenter = decision.datacenters[0] if decision.datacenters else ""
    common: dict[str, Any] = {
        "zone": plan.zone,
        "service": plan.name,
        "datacenter": datacenter,
        "scope": decision.scope_prefix,
        "deterministic": decision.deterministic,
        "steering_key": decision.key,
    }
    if decision.outcome == "servfail":
        return Answer(qname, qtype, wire.SERVFAIL, Kind.ANSWER, answer=plan.chain, **common)
    if decision.outcome == "answer" and decision.cname:  # a datacenter whose target is a name
        rrset = dns.rrset.RRset(plan.owner, dns.rdataclass.IN, dns.rdatatype.CNAME)
        rrset.update_ttl(decision.ttl)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, decision.cname))
        return Answer(
            qname, qtype, wire.NOERROR, Kind.ANSWER, answer=(*plan.chain, rrset), **common
        )
    if qtype == TYPE_AAAA:
        rdtype, addresses = TYPE_AAAA, decision.ipv6
    elif qtype == TYPE_A or decision.ipv4:
        rdtype, addresses = TYPE_A, decision.ipv4
    else:  # ANY at a service with IPv6 addresses only (RFC 8482: one RRset that exists)
        rdtype, addresses = TYPE_AAAA, decision.ipv6
    if decision.outcome == "answer" and addresses:
        rrset = dns.rrset.RRset(plan.owner, dns.rdataclass.IN, dns.rdatatype.RdataType(rdtype))
        rrset.update_ttl(decision.ttl)
        for address in addresses:
            rrset.add(
                dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RdataType(rdtype), address)
            )
        return Answer(
            qname, qtype, wire.NOERROR, Kind.ANSWER, answer=(*plan.chain, rrset), **common
        )
    zone = zones.find_zone(plan.owner)
    authority = (zone.negative_soa,) if zone is not None else ()
    kind = Kind.ANSWER if plan.chain else Kind.NODATA
    return Answer(
        qname, qtype, wire.NOERROR, kind, answer=plan.chain, authority=authority, **common
    )


def chaos(query: wire.Query, identity: Identity) -> Answer:
    """CHAOS TXT version.bind / id.server (and their aliases); anything else in CH: REFUSED."""
    qname, _ = dns.name.from_wire(query.qname, 0)
    name = query.qname.lower()
    text = None
    if query.qtype in (TYPE_TXT, TYPE_ANY):
        if name in CHAOS_VERSION_NAMES:
            text = identity.version
        elif name in CHAOS_ID_NAMES:
            text = identity.server_id
    if text is None:
        return Answer(
            qname, query.qtype, wire.REFUSED, Kind.REFUSED, qclass=CLASS_CH, authoritative=False
        )
    rrset = dns.rrset.RRset(qname, dns.rdataclass.CH, dns.rdatatype.TXT)
    rrset.add(dns.rdata.from_text(dns.rdataclass.CH, dns.rdatatype.TXT, _quote(text)))
    return Answer(qname, query.qtype, wire.NOERROR, Kind.ANSWER, answer=(rrset,), qclass=CLASS_CH)


def answer(
    query: wire.Query,
    client: bytes,
    zones: ZoneSet,
    steering: Steering | None,
    identity: Identity = Identity(),
) -> Answer:
    """The whole core for one parsed query; `client` is the packed source address."""
    qname, _ = dns.name.from_wire(query.qname, 0)
    rcode = protocol_rcode(query)
    if rcode is not None:
        return Answer(
            qname, query.qtype, rcode, Kind.REFUSED, qclass=query.qclass, authoritative=False
        )
    if query.qclass == CLASS_CH:
        return chaos(query, identity)
    plan = resolve(zones, steering, qname, query.qtype)
    if isinstance(plan, Answer):
        return plan
    assert steering is not None
    address, prefix = client_subnet(query, client)
    decision = steering.decide(plan.service, address, prefix)
    return service_answer(zones, plan, qname, query.qtype, decision)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
