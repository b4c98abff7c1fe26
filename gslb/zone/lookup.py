"""Authoritative lookup over the loaded zones: a pure function of (name, type).

The result says what kind of answer it is (ANSWER, NXDOMAIN, NODATA, DELEGATION, SERVICE,
REFUSED) and carries the RRsets; turning it into a DNS message is the responder's job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
SOA = dns.rdatatype.SOA
DS = dns.rdatatype.DS
ANY = dns.rdatatype.ANY
MAX_CNAME_CHAIN = 8


class Kind(Enum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    DELEGATION = "delegation"
    SERVICE = "service"
    REFUSED = "refused"


@dataclass
class LookupResult:
    kind: Kind
    zone: dns.name.Name | None = None
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    # For SERVICE: the service's name (lowercase text with trailing dot), reached possibly
    # through the CNAMEs already in `answer`.
    service: str | None = None
    # Glue in a referral is required; address records added for NS/MX/SRV targets are not and
    # may be left out when the response would not fit.
    additional_required: bool = False
    # The answer was synthesised from a wildcard (RFC 4592).
    wildcard: bool = False

    @property
    def authoritative(self) -> bool:
        return self.kind not in (Kind.DELEGATION, Kind.REFUSED)


class _Zone:
    """One zone, indexed for lookup: owner name -> {type: RRset}."""

    def __init__(self, zone: dns.zone.Zone) -> None:
        assert zone.origin is not None  # zones are loaded with an origin
        self.origin: dns.name.Name = zone.origin
        self.nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        for name, node in zone.nodes.items():
            rrsets: dict[int, dns.rrset.RRset] = {}
            for rdataset in node.rdatasets:
                rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
                rrset.update(rdataset)  # type: ignore[no-untyped-call]
                rrsets[rdataset.rdtype] = rrset
            if rrsets:
                self.nodes[name] = rrsets
        # Every ancestor of an existing name exists too (empty non-terminals give NODATA).
        self.existing: set[dns.name.Name] = {self.origin}
        for name in self.nodes:
            self.add_existing(name)
        self.delegations = {
            name for name, rrsets in self.nodes.items() if NS in rrsets and name != self.origin
        }
        soa = self.nodes[self.origin][SOA]
        # RFC 2308 section 3: negative answers carry the SOA with TTL min(SOA TTL, MINIMUM).
        self.negative_soa = dns.rrset.RRset(self.origin, soa.rdclass, SOA)
        self.negative_soa.update(soa)  # type: ignore[no-untyped-call]
        self.negative_soa.ttl = min(soa.ttl, soa[0].minimum)

    def add_existing(self, name: dns.name.Name) -> None:
        """Mark a name and its ancestors up to the apex as existing."""
        while name != self.origin and name.is_subdomain(self.origin):
            if name in self.existing:
                return  # its ancestors are in already
            self.existing.add(name)
            name = name.parent()

    def rrset(self, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        node = self.nodes.get(name)
        return node.get(rdtype) if node else None


class ZoneSet:
    """All served zones plus the set of GSLB service names inside them."""

    def __init__(self, zones: Mapping[str, dns.zone.Zone], services: Collection[str] = ()) -> None:
        self.zones: dict[dns.name.Name, _Zone] = {}
        for zone_data in zones.values():
            indexed = _Zone(zone_data)
            self.zones[indexed.origin] = indexed
        self.services = {dns.name.from_text(s).canonicalize(): s.lower() for s in services}
        # A service name exists like any owner name, and so do its ancestors up to the apex:
        # they are empty non-terminals (NODATA, RFC 8020) and closest enclosers for wildcard
        # synthesis (RFC 4592), exactly as if the service had records in the zone.
        for name in self.services:
            zone = self.find_zone(name)
            if zone is not None:
                zone.add_existing(name)

    @property
    def origins(self) -> list[str]:
        return sorted(o.to_text().lower() for o in self.zones)

    def find_zone(self, name: dns.name.Name) -> _Zone | None:
        """The closest enclosing zone we serve (the most specific origin)."""
        candidate = name
        while True:
            zone = self.zones.get(candidate)
            if zone is not None:
                return zone
            if candidate == dns.name.root:
                return None
            candidate = candidate.parent()

    def delegation_for(self, qname: dns.name.Name) -> dns.name.Name | None:
        """The delegation point at or above qname inside its zone (None: we are authoritative)."""
        zone = self.find_zone(qname)
        if zone is None:
            return None
        return self._delegation_above(zone, qname, 0)

    def lookup(self, qname: dns.name.Name, qtype: int) -> LookupResult:
        zone = self.find_zone(qname)
        if zone is None:
            return LookupResult(Kind.REFUSED)
        result = LookupResult(Kind.ANSWER, zone=zone.origin)
        self._resolve(zone, qname, qtype, result, 0)
        return result

    def _resolve(
        self, zone: _Zone, qname: dns.name.Name, qtype: int, result: LookupResult, depth: int
    ) -> None:
        referral = self._delegation_above(zone, qname, qtype)
        if referral is not None:
            if result.answer:  # a CNAME led into a delegated zone: hand back what we have
                result.kind = Kind.ANSWER
                return
            self._refer(zone, referral, result)
            return
        service = self.services.get(qname.canonicalize())
        if service is not None and qtype in (A, AAAA, ANY) and zone.rrset(qname, CNAME) is None:
            result.kind = Kind.SERVICE
            result.service = service
            return
        node = zone.nodes.get(qname)
        owner = qname
        if node is None:
            if qname in zone.existing or service is not None:
                self._nodata(zone, result)
                return
            wildcard = self._wildcard_for(zone, qname)
            if wildcard is None:
                result.kind = Kind.NXDOMAIN if not result.answer else Kind.ANSWER
                if not result.answer:
                    result.authority.append(zone.negative_soa)
                else:
                    # RFC 6604: the rcode describes the last name in the chain.
                    result.kind = Kind.NXDOMAIN
                    result.authority.append(zone.negative_soa)
                return
            node = zone.nodes[wildcard]
            result.wildcard = True
        # Records synthesised from a wildcard carry the query name as owner (RFC 4592).
        cname = node.get(CNAME)
        if cname is not None and qtype not in (CNAME, ANY):
            result.answer.append(_with_owner(cname, owner))
            target = cname[0].target
            if depth >= MAX_CNAME_CHAIN:
                return
            if any(rrset.name == target for rrset in result.answer):
                return  # a CNAME loop: each RR once (RFC 2181 section 5), the resolver gives up
            target_zone = self.find_zone(target)
            if target_zone is None:
                return  # the resolver follows names outside our zones itself
            self._resolve(target_zone, target, qtype, result, depth + 1)
            return
        if qtype == ANY:
            # RFC 8482: answer ANY with one RRset rather than everything at the name.
            rrset = node[min(node)]
            result.answer.append(_with_owner(rrset, owner))
            return
        found = node.get(qtype)
        if found is None:
            self._nodata(zone, result)
            return
        result.answer.append(_with_owner(found, owner))
        result.kind = Kind.ANSWER
        self._add_target_addresses(found, result)

    def _delegation_above(
        self, zone: _Zone, qname: dns.name.Name, qtype: int
    ) -> dns.name.Name | None:
        """The highest delegation point at or above qname, below the zone apex."""
        if not zone.delegations:
            return None
        labels = len(qname) - len(zone.origin)
        for depth in range(labels - 1, -1, -1):
            cut = qname.split(len(zone.origin) + labels - depth)[1]
            if cut in zone.delegations:
                # DS lives in the parent side of the cut (RFC 4035 section 3.1.4.1).
                if cut == qname and qtype == DS:
                    return None
                return cut
        return None

    def _refer(self, zone: _Zone, cut: dns.name.Name, result: LookupResult) -> None:
        ns = zone.nodes[cut][NS]
        result.kind = Kind.DELEGATION
        result.authority.append(ns)
        for rdata in ns:
            target = rdata.target
            if target.is_subdomain(zone.origin):
                for rdtype in (A, AAAA):
                    glue = zone.rrset(target, rdtype)
                    if glue is not None:
                        result.additional.append(glue)
        result.additional_required = bool(result.additional)

    def _nodata(self, zone: _Zone, result: LookupResult) -> None:
        result.kind = Kind.NODATA if not result.answer else Kind.ANSWER
        result.authority.append(zone.negative_soa)

    def _wildcard_for(self, zone: _Zone, qname: dns.name.Name) -> dns.name.Name | None:
        """RFC 4592: the source of synthesis is `*.<closest encloser>`, if it exists."""
        encloser = qname.parent()
        while encloser not in zone.existing:
            if encloser == zone.origin or not encloser.is_subdomain(zone.origin):
                break
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*",) + encloser.labels)
        return wildcard if wildcard in zone.nodes else None

    def _add_target_addresses(self, rrset: dns.rrset.RRset, result: LookupResult) -> None:
        """Additional-section addresses for NS, MX and SRV targets inside our zones."""
        if rrset.rdtype not in (NS, dns.rdatatype.MX, dns.rdatatype.SRV):
            return
        seen: set[dns.name.Name] = set()
        for rdata in rrset:
            target = rdata.target if rrset.rdtype != dns.rdatatype.MX else rdata.exchange
            if target in seen:
                continue
            seen.add(target)
            zone = self.find_zone(target)
            if zone is None:
                continue
            for rdtype in (A, AAAA):
                address = zone.rrset(target, rdtype)
                if address is not None:
                    result.additional.append(address)


def _with_owner(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    if rrset.name == owner:
        return rrset
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    copy.update(rrset)  # type: ignore[no-untyped-call]
    return copy
