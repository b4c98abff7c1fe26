"""Online signing: RRSIGs for RRsets as they are answered, and compact denial.

One ZoneSigner per signed zone; the Signers collection finds the zone of a name and shares one
signature cache and one clock. Signatures of one signing window share inception and expiration:
windows start every (validity - refresh) seconds, so any signature served has at least
`refresh` seconds left and an inception `inception_offset` before its window began. Nothing
here reads the clock except through the injected Clock.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.RRSIG
import dns.rrset
import dns.zone

from ..clock import SYSTEM_CLOCK, Clock
from ..zone.lookup import Kind
from . import denial
from .cache import SignatureCache
from .keys import DnssecKey, KeyState, entry_keys, sign_bytes
from .settings import DnssecSettings

log = logging.getLogger("gslb.dnssec")

DNSKEY = dns.rdatatype.DNSKEY
CDS = dns.rdatatype.CDS
CDNSKEY = dns.rdatatype.CDNSKEY
DS = dns.rdatatype.DS
NSEC = dns.rdatatype.NSEC
RRSIG = dns.rdatatype.RRSIG
NS = dns.rdatatype.NS
SOA = dns.rdatatype.SOA
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
KEY_SET_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})  # signed by the SEP keys


class ZoneData(Protocol):
    """What the signer reads of a loaded zone (gslb.zone.lookup's per-zone index)."""

    origin: dns.name.Name
    nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]]
    existing: set[dns.name.Name]
    delegations: set[dns.name.Name]
    negative_soa: dns.rrset.RRset


@dataclass(frozen=True)
class Window:
    inception: int
    expiration: int
    refresh_at: float  # when signatures of this window must stop being served


class ZoneSigner:
    """Signs the RRsets of one zone with the keys active for this generation."""

    # Tells the renderer that a nonexistent name is proven as NODATA (RFC 9824), so the
    # response to a DO=1 query says NOERROR.
    compact_denial = True

    def __init__(
        self,
        zone: ZoneData,
        keys: Collection[DnssecKey],
        settings: DnssecSettings,
        cache: SignatureCache,
        clock: Clock = SYSTEM_CLOCK,
        services: Collection[dns.name.Name] = (),
        now: float | None = None,
    ) -> None:
        self.zone = zone
        self.origin = zone.origin
        self.keys = list(keys)
        self.settings = settings
        self.cache = cache
        self.clock = clock
        self.services = frozenset(services)
        now = clock.time() if now is None else now
        active = [k for k in self.keys if k.state(now) is KeyState.ACTIVE]
        # A zone with only KSK-flagged keys (a CSK) or only ZSKs signs everything with them.
        self.zsks = [k for k in active if not k.sep] or [k for k in active if k.sep]
        self.ksks = [k for k in active if k.sep] or self.zsks
        # Part of every cache key: the cache outlives reloads, and a rollover changes these.
        self._zsk_ids = tuple((k.algorithm, k.tag, k.dnskey.key) for k in self.zsks)
        self._ksk_ids = tuple((k.algorithm, k.tag, k.dnskey.key) for k in self.ksks)
        self.negative_ttl = zone.negative_soa.ttl
        self._signer_name = self.origin.to_digestable()
        # id -> (the zone's own RRset, its canonical rdata once computed)
        self._static: dict[int, tuple[dns.rrset.RRset, list[bytes] | None]] = {
            id(rrset): (rrset, None) for node in zone.nodes.values() for rrset in node.values()
        }
        self._static[id(zone.negative_soa)] = (zone.negative_soa, None)
        self._window = self._make_window(now)
        self.group: Signers | None = None  # set by Signers: finds the signer of other zones

    @property
    def signing(self) -> bool:
        return bool(self.zsks)

    # -- the signing window ---------------------------------------------------------------

    def _make_window(self, now: float) -> Window:
        step = self.settings.validity - self.settings.refresh
        start = math.floor(now / step) * step
        return Window(
            inception=int(start - self.settings.inception_offset),
            expiration=int(start + self.settings.validity),
            refresh_at=float(start + step),
        )

    def window(self) -> Window:
        now = self.clock.time()
        if now >= self._window.refresh_at or now < self._window.inception:
            self._window = self._make_window(now)
        return self._window

    # -- signatures -----------------------------------------------------------------------

    def rrsigs(self, rrset: dns.rrset.RRset, cache: bool = True) -> dns.rrset.RRset | None:
        """The RRSIG RRset covering `rrset` (owner as given), or None if nothing signs.

        cache=False for records made for one query name (a random-name flood would only push
        shareable signatures out; the rendered-answer cache keeps that answer anyway)."""
        name = rrset.name
        if self.group is not None and not self._owns(name):
            other = self.group.for_name(name)  # a CNAME chain into another zone we serve
            return other.rrsigs(rrset, cache) if other is not None else None
        rdtype = rrset.rdtype
        if rdtype == RRSIG or (rdtype == NS and name != self.origin) or self._below_cut(name):
            return None  # delegation NS and glue are not authoritative data (RFC 4035 2.2)
        if rdtype == NSEC and name not in self.zone.existing:
            cache = False  # one per query name (NXNAME, wildcard proofs): do not crowd others
        if rrset.rdtype in KEY_SET_TYPES:
            signers, signer_ids = self.ksks, self._ksk_ids
        else:
            signers, signer_ids = self.zsks, self._zsk_ids
        if not signers:
            return None
        source = rrset
        # Our own NSEC records are never synthesised from a wildcard, whatever their owner.
        wildcard = None if rrset.rdtype == NSEC else self.wildcard_source(rrset.name)
        if wildcard is not None:
            # RFC 4035 5.3.2: sign the wildcard itself; the RRSIG's label count tells
            # validators the answer was synthesised. Every expansion shares the signature.
            source = dns.rrset.RRset(wildcard, rrset.rdclass, rrset.rdtype)
            source.update(rrset)  # type: ignore[no-untyped-call]
        window = self.window()
        digests = self._digests(source)
        if cache:
            key = (
                (source.name.canonicalize(), source.rdtype, source.ttl, frozenset(digests)),
                window.expiration,
                signer_ids,
            )
            rrsig = self.cache.get(key)
            if rrsig is None:
                rrsig = self._sign(source, digests, signers, window)
                self.cache.put(key, rrsig)
        else:
            rrsig = self._sign(source, digests, signers, window)
        if rrsig.name != rrset.name:
            owned = dns.rrset.RRset(rrset.name, rrsig.rdclass, rrsig.rdtype, rrsig.covers)
            owned.update(rrsig)  # type: ignore[no-untyped-call]
            return owned
        return rrsig

    def _digests(self, rrset: dns.rrset.RRset) -> list[bytes]:
        """The canonical rdata (RFC 4034 6.2) of each record; remembered for the zone's own
        RRsets, which are answered again and again."""
        static = self._static.get(id(rrset))
        if static is not None and static[0] is rrset:
            if static[1] is None:
                self._static[id(rrset)] = (rrset, [rdata.to_digestable() for rdata in rrset])
            return self._static[id(rrset)][1]  # type: ignore[return-value]
        return [rdata.to_digestable() for rdata in rrset]

    def _sign(
        self,
        rrset: dns.rrset.RRset,
        digests: list[bytes],
        signers: Iterable[DnssecKey],
        window: Window,
    ) -> dns.rrset.RRset:
        """RFC 4034 3.1.8.1 signature input, signed by `cryptography` (dns.dnssec.sign spends
        most of its time building dnspython objects; this is the same bytes, verified against
        dns.dnssec.validate, Unbound and delv in the tests)."""
        result = dns.rrset.RRset(
            rrset.name, rrset.rdclass, dns.rdatatype.RRSIG, covers=rrset.rdtype
        )
        name = rrset.name
        labels = len(name) - 1 - (1 if name.is_wild() else 0)
        owner = name.to_digestable()
        fixed = struct.pack("!HHI", rrset.rdtype, rrset.rdclass, rrset.ttl)
        records = b"".join(
            owner + fixed + struct.pack("!H", len(digest)) + digest for digest in sorted(digests)
        )
        for key in signers:
            header = struct.pack(
                "!HBBIIIH",
                rrset.rdtype,
                key.algorithm,
                labels,
                rrset.ttl,
                window.expiration,
                window.inception,
                key.tag,
            )
            signature = sign_bytes(key, header + self._signer_name + records)
            rrsig = dns.rdtypes.ANY.RRSIG.RRSIG(  # type: ignore[no-untyped-call]
                rrset.rdclass,
                dns.rdatatype.RRSIG,
                rrset.rdtype,
                key.algorithm,
                labels,
                rrset.ttl,
                window.expiration,
                window.inception,
                key.tag,
                self.origin,
                signature,
            )
            result.add(rrsig, rrset.ttl)
        return result

    # -- what exists ----------------------------------------------------------------------

    def _owns(self, name: dns.name.Name) -> bool:
        """`name` is in this zone and in no more specific zone we sign."""
        group = self.group
        return group is None or group.for_name(name) is self

    def _below_cut(self, name: dns.name.Name) -> bool:
        """Strictly below a delegation point (the DS and NSEC at the cut are ours)."""
        delegations = self.zone.delegations
        if not delegations:
            return False
        candidate = name.parent() if len(name) > len(self.origin) else name
        while len(candidate) > len(self.origin):
            if candidate in delegations:
                return True
            candidate = candidate.parent()
        return False

    def cut_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The highest delegation point at or above `name`."""
        cut = None
        candidate = name
        while len(candidate) > len(self.origin):
            if candidate in self.zone.delegations:
                cut = candidate
            candidate = candidate.parent()
        return cut

    def wildcard_source(self, name: dns.name.Name) -> dns.name.Name | None:
        """The wildcard an answer owned by `name` was synthesised from, if it was."""
        zone = self.zone
        if name in zone.nodes or name in zone.existing or name.canonicalize() in self.services:
            return None
        if not name.is_subdomain(self.origin):
            return None
        encloser = self.closest_encloser(name)
        wildcard = dns.name.Name((b"*",) + encloser.labels)
        return wildcard if wildcard in zone.nodes else None

    def closest_encloser(self, name: dns.name.Name) -> dns.name.Name:
        encloser = name
        while encloser not in self.zone.existing and encloser != self.origin:
            encloser = encloser.parent()
        return encloser

    def types_at(self, name: dns.name.Name) -> set[int]:
        types = set(self.zone.nodes.get(name, {}))
        if name.canonicalize() in self.services:
            types |= {A, AAAA}
        return types

    # -- denial of existence --------------------------------------------------------------

    def denial(
        self, zone: dns.name.Name, qname: dns.name.Name, qtype: int, kind: Kind
    ) -> list[dns.rrset.RRset]:
        """The render seam (gslb.dns.render.Signer): the records proving what `kind` says
        about `qname`, unsigned (the renderer asks rrsigs() for each). `qname` is the name the
        answer ends at (the last CNAME target of a negative answer)."""
        if self.group is not None and not self._owns(qname):
            other = self.group.for_name(qname)
            return other.denial(zone, qname, qtype, kind) if other is not None else []
        ttl = self.negative_ttl
        if kind is Kind.NXDOMAIN:
            return [denial.nxname(qname, ttl, qtype)]
        if kind is Kind.DELEGATION:
            cut = self.cut_above(qname)
            if cut is None:
                return []
            ds = self.zone.nodes.get(cut, {}).get(DS)
            return [ds] if ds is not None else [denial.nodata(cut, {NS}, ttl)]
        if kind is Kind.NODATA:
            return [self._nodata_record(qname, qtype)]
        if self.wildcard_source(qname) is not None:
            encloser = self.closest_encloser(qname)
            return [denial.covering(qname.split(len(encloser) + 1)[1], ttl)]
        return []

    def _nodata_record(self, name: dns.name.Name, qtype: int) -> dns.rrset.RRset:
        wildcard = self.wildcard_source(name)
        types = self.types_at(wildcard if wildcard is not None else name)
        types.discard(qtype)
        if qtype != DS:
            types.discard(dns.rdatatype.CNAME)  # a CNAME would have been followed
        return denial.nodata(name, types, self.negative_ttl, qtype)


class Signers(Mapping[dns.name.Name, ZoneSigner]):
    """The signers of every signed zone, by origin (what the responder takes as `signers`);
    shared cache, clock and counters."""

    def __init__(
        self,
        signers: Mapping[dns.name.Name, ZoneSigner],
        cache: SignatureCache,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.by_zone = dict(signers)
        self.cache = cache
        self.clock = clock
        for signer in self.by_zone.values():
            signer.group = self

    def __getitem__(self, origin: dns.name.Name) -> ZoneSigner:
        return self.by_zone[origin]

    def __iter__(self) -> Iterator[dns.name.Name]:
        return iter(self.by_zone)

    def __len__(self) -> int:
        return len(self.by_zone)

    def for_name(self, name: dns.name.Name) -> ZoneSigner | None:
        """The signer of the most specific signed zone holding `name`."""
        by_zone = self.by_zone
        candidate = name
        while True:
            signer = by_zone.get(candidate)
            if signer is not None:
                return signer
            if len(candidate) <= 1:
                return None
            candidate = candidate.parent()

    def valid_until(self) -> float:
        """When answers signed so far must stop being served (the earliest refresh)."""
        return min((s.window().refresh_at for s in self.by_zone.values()), default=math.inf)


def key_records(
    zone: dns.name.Name, keys: Iterable[DnssecKey], now: float, settings: DnssecSettings
) -> list[dns.rrset.RRset]:
    """The DNSKEY RRset (published keys) and, for SEP keys, CDS and CDNSKEY (RFC 7344)."""
    published = [k for k in keys if k.state(now).published]
    if not published:
        return []
    ttl = settings.dnskey_ttl
    dnskeys = dns.rrset.RRset(zone, dns.rdataclass.IN, DNSKEY)
    for key in published:
        dnskeys.add(key.dnskey, ttl)
    result = [dnskeys]
    sep = [k for k in entry_keys(published, now) if k.state(now) is not KeyState.RETIRED]
    if settings.cds and sep:
        cds = dns.rrset.RRset(zone, dns.rdataclass.IN, CDS)
        cdnskey = dns.rrset.RRset(zone, dns.rdataclass.IN, CDNSKEY)
        for key in sep:
            cds.add(dns.dnssec.make_cds(zone, key.dnskey, "SHA256"), ttl)
            public = key.private_key.public_key()
            cdnskey.add(dns.dnssec.make_cdnskey(public, key.algorithm, flags=key.dnskey.flags), ttl)
        result += [cds, cdnskey]
    return result


def publish_keys(zone: dns.zone.Zone, records: Iterable[dns.rrset.RRset]) -> None:
    """Put the key records into a loaded zone's apex, replacing any the file had."""
    with zone.writer() as txn:
        for rrset in records:
            txn.replace(zone.origin, rrset.to_rdataset())


def build_signers(
    zones: Mapping[dns.name.Name, ZoneData],
    keys: Mapping[dns.name.Name, Collection[DnssecKey]],
    settings: DnssecSettings,
    clock: Clock = SYSTEM_CLOCK,
    services: Collection[str] = (),
    now: float | None = None,
    cache: SignatureCache | None = None,
) -> Signers:
    """A signer for every zone that has an active key; zones without keys stay unsigned.

    `cache` is the previous generation's, kept across reloads so they do not re-sign."""
    now = clock.time() if now is None else now
    if cache is None or cache.maxsize != settings.signature_cache_size:
        cache = SignatureCache(settings.signature_cache_size)
    service_names = {dns.name.from_text(s).canonicalize() for s in services}
    signers: dict[dns.name.Name, ZoneSigner] = {}
    for origin, zone in zones.items():
        zone_keys = keys.get(origin)
        if not zone_keys:
            continue
        signer = ZoneSigner(zone, zone_keys, settings, cache, clock, service_names, now)
        if signer.signing:
            signers[origin] = signer
        else:
            log.warning("zone %s has keys but none is active now; serving it unsigned", origin)
    return Signers(signers, cache, clock)
