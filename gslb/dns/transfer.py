"""Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995) so NSD, Knot or BIND can be secondaries.

What a transfer contains: every record of the zone file. GSLB service names are dynamic, so a
secondary cannot steer; by config (`transfer.service_names`) it receives either nothing for
them (`omit`, the default: the secondary answers NXDOMAIN there, or NODATA where the name has
other records, so only gslb nodes belong in the NS set of zones with services) or a static
fallback A/AAAA answer (`fallback`): the addresses given in `transfer.fallback`, else the
addresses of every datacenter the service uses.

IXFR answers with the condensed difference between the client's serial and ours when the
client's serial is one this node has served since it started (kept for `ixfr_history`
generations per zone), with the whole zone in IXFR form otherwise (RFC 1995 section 4), and
with our SOA alone when the client is current.

Transfers go over TCP only: an AXFR over UDP is REFUSED (RFC 5936 defines no UDP AXFR); an IXFR
over UDP gets our SOA alone, which tells an allowed client to come back over TCP (RFC 1995 2).
Who may transfer: `transfer.allow`, a list of {network, key}; a request is allowed when its
source is in a rule's network and, if the rule names a key, it was signed with that key.
Everything else is REFUSED; a name that is not one of our zone apexes is NOTAUTH.

Pure: the node hands each generation's zones to `Journal.publish` and asks `Transfers`
for the messages of one request; no I/O here.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.serial

from ..config.schema import (
    At,
    Cidr,
    Custom,
    Duration,
    Enum,
    HostPort,
    HostPortKind,
    Int,
    Invalid,
    IpAddress,
    Kind,
    ListOf,
    MapOf,
    Optional,
    Report,
    Section,
    parse_into,
    required,
    setting,
    type_name,
)
from ..config.yaml_loader import mark_of
from ..errors import Reason
from .tsig import Envelope, Keyring, key_name

log = logging.getLogger("gslb.dns.transfer")

AXFR = dns.rdatatype.AXFR
IXFR = dns.rdatatype.IXFR
SOA = dns.rdatatype.SOA
NOERROR, FORMERR, REFUSED, NOTAUTH = 0, 1, 5, 9
MESSAGE_SIZE = 16_384  # per transfer message; leaves room for a TSIG RR under 64 KiB
QR_AA = 0x8400

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- config -----------------------------------------------------------------------------------


def _key_ref(raw: object, at: At, report: Report) -> dns.name.Name | Invalid:
    """A TSIG key name (checked against tsig_keys by parse_transfer)."""
    if not isinstance(raw, str) or not raw.strip():
        return report.error(at, f"must be a key name, not {type_name(raw)} {raw!r}")
    try:
        return key_name(raw)
    except dns.exception.DNSException:
        return report.error(at, f"not a DNS name: {raw!r}")


KEY_REF: Kind[dns.name.Name] = Custom(_key_ref, "a TSIG key name")


def _key_at(value: Any, report: Report, at: At, raw: Any) -> Any:
    """Remember where the key was written, for the cross-reference with tsig_keys."""
    if value.key is None:
        return None
    return replace(value, key_at=at.child(raw, "key"))


@dataclass(frozen=True)
class AllowRule:
    """One `transfer.allow` rule: {network, key}."""

    network: IPNetwork = required(Cidr(strict=True), placeholder=ipaddress.ip_network("0.0.0.0/32"))
    key: dns.name.Name | None = setting(None, Optional(KEY_REF))  # None: unsigned is allowed
    key_at: At | None = field(default=None, compare=False, repr=False)  # filled by _key_at

    __checks__: ClassVar = (_key_at,)


class NotifyAddress(HostPortKind):
    """HOST:PORT (the schema's one parser) whose host is an IP address and port is not 0."""

    def parse(self, raw: object, at: At, report: Report) -> HostPort | Invalid:
        parsed = super().parse(raw, at, report)
        if isinstance(parsed, Invalid):
            return parsed
        if parsed.port == 0:
            return report.error(at, f"must be {self.description}, not {raw!r} (port 0)")
        try:
            ipaddress.ip_address(parsed.host)
        except ValueError:
            return report.error(at, f"host must be an IP address: {parsed.host!r}")
        return parsed


@dataclass(frozen=True)
class NotifyEntry:
    """A notify target written as {address, key}."""

    address: HostPort = required(NotifyAddress(), placeholder=HostPort("", 0))
    key: dns.name.Name | None = setting(None, Optional(KEY_REF))  # sign the NOTIFY with it
    key_at: At | None = field(default=None, compare=False, repr=False)

    __checks__: ClassVar = (_key_at,)


@dataclass(frozen=True)
class NotifyTarget:
    host: str
    port: int
    key: dns.name.Name | None = None  # sign the NOTIFY with this key
    key_at: At | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return str(HostPort(self.host, self.port))


def _notify_target(raw: object, at: At, report: Report) -> NotifyTarget | Invalid:
    """HOST:PORT, or {address: HOST:PORT, key: NAME}."""
    if isinstance(raw, str):
        address = NotifyAddress().parse(raw, at, report)
        return address if isinstance(address, Invalid) else NotifyTarget(address.host, address.port)
    entry = parse_into(NotifyEntry, raw, at, report)
    if isinstance(entry, Invalid):
        return entry
    return NotifyTarget(entry.address.host, entry.address.port, entry.key, entry.key_at)


FALLBACK_ADDRESSES = MapOf(ListOf(IpAddress(), min_len=1))


def _fallback(
    raw: object, at: At, report: Report
) -> Mapping[dns.name.Name, tuple[str, ...]] | Invalid:
    """Service name -> the static addresses a secondary serves for it."""
    parsed = FALLBACK_ADDRESSES.parse(raw, at, report)
    if isinstance(parsed, Invalid):
        return parsed
    table: dict[dns.name.Name, tuple[str, ...]] = {}
    for name, addresses in parsed.items():
        try:
            table[dns.name.from_text(str(name).lower())] = addresses
        except dns.exception.DNSException:
            report.error(at.child(raw, name), f"not a DNS name: {name!r}")
    return MappingProxyType(table)


@dataclass(frozen=True)
class TransferSettings:
    """The `transfer:` section."""

    allow: tuple[AllowRule, ...] = setting((), ListOf(Section(AllowRule), single=False))
    notify: tuple[NotifyTarget, ...] = setting(
        (), ListOf(Custom(_notify_target, "HOST:PORT or {address, key}"), single=False)
    )
    notify_retries: int = setting(5, Int(0, 20))  # sends after the first, each waiting 2x
    notify_timeout: float = setting(2.0, Duration(0.05, 60.0))  # for the first NOTIFY reply
    ixfr_history: int = setting(16, Int(0, 1000))  # generations kept per zone for IXFR diffs
    service_names: str = setting("omit", Enum("omit", "fallback"))
    fallback: Mapping[dns.name.Name, tuple[str, ...]] = setting(
        MappingProxyType({}), Custom(_fallback, "a mapping of names to IP addresses")
    )
    fallback_ttl: int | None = setting(None, Optional(Int(0, 604_800)))  # None: service's TTL

    @property
    def enabled(self) -> bool:
        return bool(self.allow)


def parse_transfer(
    raw: Any, keyring: Keyring | None = None
) -> tuple[TransferSettings, list[Reason]]:
    """The `transfer:` section. Key names are checked against `keyring` when one is given."""
    report = Report()
    settings = TransferSettings()
    if raw is not None:
        parsed = parse_into(TransferSettings, raw, At(mark_of(raw), "transfer"), report)
        if not isinstance(parsed, Invalid):
            settings = parsed
    if keyring is not None:
        refs = [(r.key, r.key_at) for r in settings.allow]
        refs += [(t.key, t.key_at) for t in settings.notify]
        for key, key_at in refs:
            if key is not None and keyring.get(key) is None:
                at = key_at or At(None, "transfer")
                report.error(at, f"no key {key.to_text(omit_final_dot=True)!r} in tsig_keys")
    return settings, report.sorted()


# -- what a zone contains ---------------------------------------------------------------------

# One record: (owner, type, ttl, rdata). A zone's content is a frozenset of them.
Record = tuple[dns.name.Name, int, int, dns.rdata.Rdata]


@dataclass(frozen=True)
class ZoneVersion:
    origin: dns.name.Name
    soa: dns.rrset.RRset
    records: frozenset[Record]  # everything except the apex SOA
    # Rendered transfers of this (immutable) version, by (qtype, since-serial): ID 0, RD clear.
    rendered: dict[tuple[int, int], list[bytes]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def serial(self) -> int:
        return int(self.soa[0].serial)

    def messages(
        self, qtype: int, since: ZoneVersion | None, envelope: Envelope, data: bytes
    ) -> list[bytes]:
        """The transfer of this version as AXFR (or IXFR from `since`), rendered once."""
        key = (qtype, since.serial if since is not None else -1)
        messages = self.rendered.get(key)
        if messages is None:
            if since is not None:
                rrsets = _ixfr_diff(since, self)
            else:
                rrsets = [self.soa, *_rrsets(self.records), self.soa]
            messages = _render(self.origin, qtype, rrsets)
            self.rendered[key] = messages
        return _patched(messages, envelope, data)


def zone_versions(
    zones: Any,
    settings: TransferSettings,
    fallbacks: Mapping[dns.name.Name, list[dns.rrset.RRset]] | None = None,
) -> dict[dns.name.Name, ZoneVersion]:
    """The transferable content of every zone of a ZoneSet (gslb.zone.lookup)."""
    services = set(zones.services)
    extra = fallbacks if settings.service_names == "fallback" and fallbacks else {}
    versions = {}
    for origin, zone in zones.zones.items():
        records: set[Record] = set()
        soa = None
        for name, rrsets in zone.nodes.items():
            for rdtype, rrset in rrsets.items():
                if name == origin and rdtype == SOA:
                    soa = rrset
                    continue
                if name.canonicalize() in services and rdtype in (
                    dns.rdatatype.A,
                    dns.rdatatype.AAAA,
                ):
                    continue  # the service's dynamic answer shadows these
                records.update((name, rdtype, rrset.ttl, rdata) for rdata in rrset)
        for name, rrsets in extra.items():
            if dns.rdatatype.CNAME in zone.nodes.get(name, {}):
                continue  # the zone's CNAME wins over the service, as in lookup
            if zones.find_zone(name) is zone:
                for rrset in rrsets:
                    records.update((name, rrset.rdtype, rrset.ttl, rdata) for rdata in rrset)
        assert soa is not None  # the loader refuses zones without an apex SOA
        versions[origin] = ZoneVersion(origin, soa, frozenset(records))
    return versions


def service_fallbacks(
    config: Any, settings: TransferSettings
) -> dict[dns.name.Name, list[dns.rrset.RRset]]:
    """Static A/AAAA RRsets for each service: the configured fallback addresses, else the
    addresses of every datacenter the service names (pools, tiers and plain lists)."""
    result: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
    if config is None:
        return result
    for text, service in config.services.items():
        name = dns.name.from_text(text)
        addresses = settings.fallback.get(name)
        if addresses is None:
            addresses = _datacenter_addresses(config, service)
        ttl = settings.fallback_ttl if settings.fallback_ttl is not None else service.ttl
        rrsets = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            wanted = [a for a in addresses if (":" in a) == (rdtype == dns.rdatatype.AAAA)]
            type_name = dns.rdatatype.to_text(rdtype)
            if not wanted or type_name not in getattr(service, "types", ("A", "AAAA")):
                continue
            rrset = dns.rrset.from_text_list(name, ttl, "IN", type_name, wanted)
            rrsets.append(rrset)
        if rrsets:
            result[name] = rrsets
    return result


def _datacenter_addresses(config: Any, service: Any) -> tuple[str, ...]:
    values: list[Any] = list(getattr(service, "datacenters", ()))
    for tier in getattr(service, "tiers", ()):
        values.extend(tier)
    for pool in getattr(service, "pools", {}).values():
        values.extend(pool.values)
    seen: list[str] = []
    for value in values:
        datacenter = config.datacenters.get(value.datacenter)
        if datacenter is None:
            continue
        for address in (*datacenter.ipv4, *datacenter.ipv6):
            if address not in seen:
                seen.append(address)
    return tuple(seen)


class Journal:
    """The zone versions served since the node started, per zone, oldest first.

    Lives in the node across reloads (a Responder lives for one generation); a restarted
    node has no history and answers IXFR with the whole zone until it has some.
    """

    def __init__(self, history: int = 16) -> None:
        self.history = history
        self.versions: dict[dns.name.Name, list[ZoneVersion]] = {}

    def publish(self, versions: Mapping[dns.name.Name, ZoneVersion]) -> list[ZoneVersion]:
        """Record a new generation; returns the zones whose serial changed (to NOTIFY)."""
        changed: list[ZoneVersion] = []
        for origin in list(self.versions):
            if origin not in versions:
                del self.versions[origin]
        for origin, version in versions.items():
            kept = self.versions.setdefault(origin, [])
            if not kept:
                kept.append(version)
                continue
            last = kept[-1]
            if version.serial == last.serial:
                if version.records != last.records or version.soa != last.soa:
                    log.warning(
                        "zone %s changed but its serial %d did not: secondaries will not "
                        "see the change until the serial is increased",
                        origin,
                        version.serial,
                    )
                kept[-1] = version
                continue
            if dns.serial.Serial(version.serial) < dns.serial.Serial(last.serial):
                log.warning(
                    "zone %s serial went backwards (%d -> %d): IXFR history dropped",
                    origin,
                    last.serial,
                    version.serial,
                )
                kept.clear()
            kept.append(version)
            del kept[: max(0, len(kept) - max(1, self.history + 1))]
            changed.append(version)
        return changed

    def current(self, origin: dns.name.Name) -> ZoneVersion | None:
        kept = self.versions.get(origin)
        return kept[-1] if kept else None

    def find(self, origin: dns.name.Name, serial: int) -> ZoneVersion | None:
        for version in self.versions.get(origin, []):
            if version.serial == serial:
                return version
        return None


# -- answering a transfer request -------------------------------------------------------------


class Transfers:
    """Answers AXFR and IXFR requests from the journal's current versions."""

    def __init__(self, settings: TransferSettings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal

    def allowed(self, client: str, key: dns.name.Name | None) -> bool:
        try:
            address = ipaddress.ip_address(client.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule in self.settings.allow:
            if address.version != rule.network.version or address not in rule.network:
                continue
            if rule.key is None or rule.key == key:
                return True
        return False

    def respond(
        self, envelope: Envelope, data: bytes, client: str, tcp: bool, key: dns.name.Name | None
    ) -> list[bytes]:
        """The messages answering one AXFR/IXFR request (`data` without its TSIG)."""
        if envelope.qname is None or envelope.qclass != dns.rdataclass.IN:
            return [envelope.reply(data, FORMERR if envelope.qname is None else REFUSED)]
        if not tcp and envelope.qtype == AXFR:
            return [envelope.reply(data, REFUSED)]  # as before transfers existed
        if not self.allowed(client, key):
            log.info(
                "%s of %s from %s refused (key %s)",
                dns.rdatatype.to_text(dns.rdatatype.RdataType.make(envelope.qtype)),
                envelope.qname,
                client,
                key or "none",
            )
            return [envelope.reply(data, REFUSED)]
        current = self.journal.current(envelope.qname)
        if current is None:
            return [envelope.reply(data, NOTAUTH)]
        if envelope.qtype == IXFR:
            try:
                client_serial = _ixfr_serial(data)
            except ValueError:
                return [envelope.reply(data, FORMERR)]
            if not tcp or dns.serial.Serial(client_serial) >= dns.serial.Serial(current.serial):
                return _patched(_render(current.origin, IXFR, [current.soa]), envelope, data)
            since = self.journal.find(current.origin, client_serial)
            if since is not None:
                log.info(
                    "IXFR of %s from %s: serial %d -> %d",
                    current.origin,
                    client,
                    client_serial,
                    current.serial,
                )
                return current.messages(IXFR, since, envelope, data)
        log.info(
            "%s of %s serial %d to %s (%d records)",
            "AXFR" if envelope.qtype == AXFR else "IXFR as AXFR",
            current.origin,
            current.serial,
            client,
            len(current.records) + 1,
        )
        return current.messages(envelope.qtype, None, envelope, data)


def _ixfr_serial(data: bytes) -> int:
    """The client's serial: the SOA in the authority section of an IXFR request."""
    try:
        message = dns.message.from_wire(data)
    except dns.exception.DNSException as exc:
        raise ValueError(str(exc)) from None
    for rrset in message.authority:
        if rrset.rdtype == SOA and len(rrset):
            return int(rrset[0].serial)
    raise ValueError("IXFR request without an SOA in the authority section")


def _ixfr_diff(old: ZoneVersion, new: ZoneVersion) -> list[dns.rrset.RRset]:
    """RFC 1995 section 4, condensed: SOA(new), SOA(old), deletions, SOA(new), additions,
    SOA(new)."""
    deleted = _rrsets(old.records - new.records)
    added = _rrsets(new.records - old.records)
    return [new.soa, old.soa, *deleted, new.soa, *added, new.soa]


def _rrsets(records: Iterable[Record]) -> list[dns.rrset.RRset]:
    """Records grouped into RRsets by (owner, type, ttl), in canonical order (RFC 4034 6.1:
    lowercase labels compared from the root), sorted on plain byte tuples because dnspython's
    Name comparison costs ten times more."""
    groups: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
    for name, rdtype, ttl, rdata in records:
        rrset = groups.get((name, rdtype, ttl))
        if rrset is None:
            rrset = groups[(name, rdtype, ttl)] = dns.rrset.RRset(
                name, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype)
            )
            rrset.update_ttl(ttl)
        rrset.add(rdata)
    order = sorted(groups, key=lambda k: (tuple(x.lower() for x in reversed(k[0].labels)), k[1:]))
    return [groups[key] for key in order]


def _render(origin: dns.name.Name, qtype: int, rrsets: list[dns.rrset.RRset]) -> list[bytes]:
    """Pack RRsets into as few messages of at most MESSAGE_SIZE as fit; the question goes
    in the first message only (RFC 5936 section 2.2). ID 0 and RD clear: see _patched."""
    messages: list[bytes] = []
    pending = list(rrsets)
    first = True
    while pending or first:
        renderer = dns.renderer.Renderer(0, QR_AA, MESSAGE_SIZE)  # type: ignore[no-untyped-call]
        if first:
            renderer.add_question(origin, qtype, dns.rdataclass.IN)  # type: ignore[no-untyped-call]
        added = 0
        while pending:
            rrset = pending[0]
            try:
                renderer.add_rrset(dns.renderer.ANSWER, rrset)  # type: ignore[no-untyped-call]
            except dns.exception.TooBig:
                if added == 0 and len(rrset) > 1:
                    # One RRset larger than a message: send its records in pieces.
                    pending[0:1] = _split(rrset)
                    continue
                if added == 0:
                    raise
                break
            pending.pop(0)
            added += 1
        renderer.write_header()  # type: ignore[no-untyped-call]
        messages.append(renderer.get_wire())  # type: ignore[no-untyped-call]
        first = False
    return messages


def _patched(messages: list[bytes], envelope: Envelope, data: bytes) -> list[bytes]:
    """Rendered messages for this request: its ID, RD copied (RFC 5936 2.2.1), and the
    question name in the case it was asked (same length, so compression offsets hold)."""
    head = struct.pack("!HH", envelope.id, (QR_AA | (envelope.flags & 0x0100)))
    name_end = envelope.question_end - 4
    out = []
    for index, message in enumerate(messages):
        if index == 0:  # the zone's name, matched case-insensitively: the same length
            message = message[:12] + data[12:name_end] + message[name_end:]
        out.append(head + message[4:])
    return out


def _split(rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    half = len(rrset) // 2
    items = list(rrset)
    parts = []
    for chunk in (items[:half], items[half:]):
        part = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
        part.update_ttl(rrset.ttl)
        for rdata in chunk:
            part.add(rdata)
        parts.append(part)
    return parts
