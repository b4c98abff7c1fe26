"""Turn query bytes into response bytes.

Three layers, cheapest first:
1. the packet cache: the query's bytes after the ID -> the response's bytes after the ID, for
   answers that depend on nothing but the query (PowerDNS calls this a packet cache);
2. the answer cache: (name, type, steering key) -> a rendered answer, patched per query for the
   ID, RD/CD flags, the question's case, the OPT record and truncation;
3. a miss: zone lookup, steering decision and one dnspython render.
Every rcode decision that is not the zone's lives here.
"""

from __future__ import annotations

import bisect
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..dnssec.render import sign_result
from ..dnssec.signer import Signers
from ..zone.lookup import Kind, LookupResult, ZoneSet
from . import wire
from .acl import AccessList, Action
from .cookies import CookieJar, CookieStatus
from .rrl import ResponseClass, ResponseRateLimiter, Verdict
from .settings import DnsSettings

log = logging.getLogger("gslb.dns")

CLASS_IN = 1
CLASS_CH = 3
TYPE_A = 1
TYPE_AAAA = 28
TYPE_TXT = 16
TYPE_ANY = 255
ZONE_TRANSFER_TYPES = {251, 252}  # IXFR, AXFR: not offered
CHAOS_VERSION_NAMES = {b"\x07version\x04bind\x00", b"\x07version\x06server\x00"}
CHAOS_ID_NAMES = {b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"}


class Steering(Protocol):
    """What the responder needs from gslb.steering (SteeringEngine)."""

    services: Any

    def decide(self, service: Any, address: bytes, prefix: int) -> Any: ...


@dataclass
class Protection:
    """What guards the answer path: access list, rate limiter, cookies (each optional)."""

    acl: AccessList | None = None
    rrl: ResponseRateLimiter | None = None
    cookies: CookieJar | None = None
    require_cookie: bool = False  # UDP queries without a valid server cookie get BADCOOKIE


class Rendered:
    """A response rendered once, without ID and OPT; patched per query."""

    __slots__ = (
        "flags",
        "qname",
        "body",
        "body_edns",
        "body_reduced",
        "kind",
        "rrl_key",
        "rclass",
    )

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
        self.body_edns = _add_arcount(body, 1)  # the same with room counted for our OPT
        self.body_reduced = body_reduced  # without optional additional records, if any
        self.kind = kind
        self.rrl_key = rrl_key
        self.rclass = _response_class(flags & 0xF, kind)


class _Negative:
    """NXDOMAIN or NODATA for any name of one zone: question from the query, SOA shared.

    Random-name floods create one plan-cache entry per name; sharing this template keeps each
    entry down to its key instead of a rendered message.
    """

    __slots__ = ("flags", "authority", "rclass", "zone_key")

    def __init__(self, rcode: int, authority: bytes, zone_key: bytes) -> None:
        self.flags = wire.QR | wire.AA | rcode
        self.authority = authority  # the SOA record, names uncompressed
        self.rclass = ResponseClass.NXDOMAIN if rcode == wire.NXDOMAIN else ResponseClass.NODATA
        self.zone_key = zone_key


@dataclass
class _ServicePlan:
    """A name that resolves (perhaps via CNAMEs) to a GSLB service."""

    service: Any
    lookup: LookupResult


class _Packet:
    """A packet-cache entry: the response after the ID, what it counts as, and its hits."""

    __slots__ = ("response", "labels", "hits", "rclass", "rrl_key")

    def __init__(
        self,
        response: bytes,
        labels: tuple[int, int, str, str],
        rclass: ResponseClass,
        rrl_key: bytes,
    ) -> None:
        self.response = response
        self.labels = labels
        self.hits = 0
        self.rclass = rclass  # rate limiting applies to cache hits like to any answer
        self.rrl_key = rrl_key


# Latency is timed for one query in LATENCY_SAMPLE, so timing costs nothing measurable.
LATENCY_SAMPLE = 64
LATENCY_BOUNDS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)


@dataclass
class Stats:
    """Plain counters: the hot path only adds to ints; exporters read them at scrape time."""

    queries: int = 0
    answer_hits: int = 0
    renders: int = 0
    dropped: int = 0
    errors: int = 0
    acl_refused: int = 0
    acl_dropped: int = 0
    # (qtype, rcode, service, first datacenter) -> answers sent, outside the packet cache
    answers: dict[tuple[int, int, str, str], int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    latency_samples: int = 0

    def count(self, labels: tuple[int, int, str, str], hits: int = 1) -> None:
        self.answers[labels] = self.answers.get(labels, 0) + hits

    def observe_latency(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BOUNDS, seconds)
        self.latency_counts[index] += 1
        self.latency_sum += seconds
        self.latency_samples += 1


class Responder:
    """Answers queries from one immutable configuration (zones, services, settings).

    A reload builds a new Responder and swaps it in; the old one's caches go with it.
    """

    def __init__(
        self,
        zones: ZoneSet,
        settings: DnsSettings | None = None,
        steering: Steering | None = None,
        health: Any = None,
        protection: Protection | None = None,
        signers: Signers | None = None,
    ) -> None:
        self.zones = zones
        # DNSSEC (issue 14): answers to DO=1 queries carry RRSIGs and compact denial; cached
        # signed answers are dropped when the signing window moves (see _check_signatures).
        self.signers = signers
        self._signed_until = signers.valid_until() if signers is not None else float("inf")
        self.settings = settings or DnsSettings()
        self.steering = steering
        self.health = health  # HealthHolder: GSLB packet-cache entries live for one epoch
        self.stats = Stats()
        # OrderedDict, not dict: evicting the oldest of a dict with next(iter(d)) walks over
        # the holes earlier deletions left and costs ~10 us per eviction under a flood.
        self._packets: OrderedDict[bytes, _Packet] = OrderedDict()
        self._gslb_packets: OrderedDict[bytes, _Packet] = OrderedDict()
        self._gslb_epoch = -1
        self._plans: OrderedDict[tuple[bytes, int, bool], Rendered | _ServicePlan | _Negative] = (
            OrderedDict()
        )
        self._negatives: dict[tuple[dns.name.Name, Kind], _Negative] = {}
        self._answers: OrderedDict[tuple[bytes, int, Hashable, bool], Rendered] = OrderedDict()
        self._max_packets = self.settings.packet_cache_size
        self._max_answers = self.settings.answer_cache_size
        self.protection = protection or Protection()
        acl = self.protection.acl
        self._acl = acl if acl is not None and not acl.permits_all else None
        rrl = self.protection.rrl
        self._rrl = rrl if rrl is not None and rrl.settings.enabled else None
        self._cookies = self.protection.cookies
        self._listener_acls = {
            listener: listener_acl for listener, listener_acl in self.settings.listener_acls.items()
        }
        self._guarded = self._acl is not None or self._rrl is not None or bool(self._listener_acls)
        self._server_cookie: bytes | None = None  # COOKIE option for the response being built
        self._packed: dict[str, bytes] = {}
        self._labels: dict[tuple[int, int, str, str], tuple[int, int, str, str]] = {}
        # How the last slow-path answer counts for rate limiting: (class, key, cookie-valid).
        self._last: tuple[ResponseClass, bytes, bool] = (ResponseClass.ERROR, b"", False)
        sample = self.settings.query_log_sample
        self._log_every = max(1, round(1 / sample)) if sample > 0 else 0
        # One modulo on the common path decides whether this query is timed and/or logged.
        self._sample_every = min(LATENCY_SAMPLE, self._log_every or LATENCY_SAMPLE)

    # -- entry points ------------------------------------------------------------------------

    def handle_udp(self, data: bytes, client: str, listener: str = "") -> bytes | None:
        """One UDP datagram from `client` (text address) on `listener` -> the reply, or None."""
        stats = self.stats
        stats.queries += 1
        if self.signers is not None:
            self._check_signatures()
        if stats.queries % self._sample_every:
            return self._udp(data, client, listener)
        return self._sampled(data, client, listener, udp=True)

    def _sampled(self, data: bytes, client: str, listener: str, udp: bool) -> bytes | None:
        started = time.perf_counter()
        if udp:
            response = self._udp(data, client, listener)
        else:
            response = self._tcp(data, client, listener)
        elapsed = time.perf_counter() - started
        queries = self.stats.queries
        if not queries % LATENCY_SAMPLE:
            self.stats.observe_latency(elapsed)
        if self._log_every and not queries % self._log_every:
            _log_query(data, client, response, "udp" if udp else "tcp", elapsed)
        return response

    def _udp(self, data: bytes, client: str, listener: str) -> bytes | None:
        if self._guarded:
            return self._udp_guarded(data, client, listener)
        packet = self._packets.get(data[2:])
        if packet is None and self._gslb_packets:
            packet = self._gslb_packet(data[2:])
        if packet is not None:
            packet.hits += 1
            return data[:2] + packet.response
        return self._answer(data, client, udp=True)

    def _gslb_packet(self, key: bytes) -> _Packet | None:
        """A GSLB packet-cache entry, valid only for the health epoch it was made in."""
        if self.health is None:
            return None
        if self._gslb_epoch != self.health.current.epoch:
            self._fold(self._gslb_packets)
            self._gslb_packets.clear()
            return None
        return self._gslb_packets.get(key)

    def _udp_guarded(self, data: bytes, client: str, listener: str) -> bytes | None:
        """The UDP path with an access list and/or rate limiting in force."""
        packed = self._pack(client)
        acl = self._listener_acls.get(listener, self._acl)
        if acl is not None:
            action = acl.check(packed)
            if action is not Action.ALLOW:
                return self._denied(data, action)
        packet = self._packets.get(data[2:])
        if packet is None and self._gslb_packets:
            packet = self._gslb_packet(data[2:])
        if packet is not None:
            packet.hits += 1
            response: bytes | None = data[:2] + packet.response
            rclass, key, exempt = packet.rclass, packet.rrl_key, False
        else:
            response = self._answer(data, client, udp=True)
            if response is None:
                return None
            rclass, key, exempt = self._last
        if self._rrl is not None and not exempt:
            verdict = self._rrl.check(packed, 0, rclass, key)
            if verdict is not Verdict.SEND:  # the limiter counts its own verdicts
                if verdict is Verdict.DROP:
                    return None
                return _slip(response)  # type: ignore[arg-type]
        return response

    def _denied(self, data: bytes, action: Action) -> bytes | None:
        if action is Action.DROP:
            self.stats.acl_dropped += 1
            return None
        self.stats.acl_refused += 1
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            return None
        return wire.error_response(query, wire.REFUSED, with_question=query.qname is not None)

    def _pack(self, client: str) -> bytes:
        """Text address -> packed bytes (IPv4-mapped IPv6 as IPv4), cached per address."""
        packed = self._packed.get(client)
        if packed is None:
            if ":" in client:
                packed = socket.inet_pton(socket.AF_INET6, client.partition("%")[0])
                if packed[:12] == b"\x00" * 10 + b"\xff\xff":
                    packed = packed[12:]
            else:
                packed = socket.inet_aton(client)
            if len(self._packed) >= 16384:
                self._packed.clear()  # bounded whatever the number of clients
            self._packed[client] = packed
        return packed

    def _check_signatures(self) -> None:
        """Past the signing window's refresh time, no cached signed answer may be sent again."""
        assert self.signers is not None
        if self.signers.clock.time() < self._signed_until:
            return
        for cache in (self._packets, self._gslb_packets):
            self._fold(cache)
            cache.clear()
        self._plans.clear()
        self._answers.clear()
        self._signed_until = self.signers.valid_until()

    def handle_tcp(self, data: bytes, client: str, listener: str = "") -> bytes | None:
        self.stats.queries += 1
        if self.signers is not None:
            self._check_signatures()
        if self.stats.queries % self._sample_every:
            return self._tcp(data, client, listener)
        return self._sampled(data, client, listener, udp=False)

    def _tcp(self, data: bytes, client: str, listener: str) -> bytes | None:
        acl = self._listener_acls.get(listener, self._acl)
        if acl is not None:
            action = acl.check(self._pack(client))
            if action is not Action.ALLOW:
                return self._denied(data, action)
        return self._answer(data, client, udp=False)

    def answer_counts(self) -> dict[tuple[int, int, str, str], int]:
        """Answers sent so far by (qtype, rcode, service, datacenter), cache hits included."""
        counts = dict(self.stats.answers)
        for cache in (self._packets, self._gslb_packets):
            for packet in list(cache.values()):
                if packet.hits:
                    counts[packet.labels] = counts.get(packet.labels, 0) + packet.hits
        return counts

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) over both caches: packet and answer hits against renders."""
        caches = (self._packets, self._gslb_packets)
        hits = self.stats.answer_hits + sum(p.hits for c in caches for p in c.values())
        return hits, self.stats.renders

    def _fold(self, cache: OrderedDict[bytes, _Packet]) -> None:
        for packet in cache.values():
            if packet.hits:
                self.stats.count(packet.labels, packet.hits)

    # -- the slow path ----------------------------------------------------------------------

    def _answer(self, data: bytes, client: str, udp: bool) -> bytes | None:
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            self.stats.dropped += 1
            return None
        self._last = (ResponseClass.ERROR, b"", False)
        try:
            return self._respond(query, data, client, udp)
        except Exception:  # a bug must cost one answer, never the server
            self.stats.errors += 1
            log.exception("internal error answering a query; sent SERVFAIL")
            return wire.error_response(query, wire.SERVFAIL, with_question=True)

    def _respond(self, query: wire.Query, data: bytes, client: str, udp: bool) -> bytes | None:
        self._server_cookie = None
        if query.error:
            return self._error(query, query.error)
        cookie_valid = False
        if query.cookie is not None and self._cookies is not None:
            cookie_valid = self._check_cookie(query, client)
            if self.protection.require_cookie and udp and not cookie_valid:
                # RFC 7873 5.2.3: ask the client to come back with the cookie we just made.
                return self._error(query, wire.BADCOOKIE)
        if query.tsig:
            return self._error(query, wire.NOTAUTH)  # no TSIG keys are configured
        if query.qclass != CLASS_IN:
            if query.qclass == CLASS_CH:
                return self._chaos(query, udp)
            return self._error(query, wire.REFUSED)
        if query.qtype in ZONE_TRANSFER_TYPES:
            return self._error(query, wire.REFUSED)
        assert query.qname is not None
        qname_lower = query.qname.lower()
        dnssec_ok = query.do and self.signers is not None
        plan = self._plans.get((qname_lower, query.qtype, dnssec_ok))
        if plan is None:
            plan = self._plan(query.qname, qname_lower, query.qtype, dnssec_ok)
            if len(self._plans) >= self._max_answers:
                self._plans.popitem(last=False)
            self._plans[(qname_lower, query.qtype, dnssec_ok)] = plan
        else:
            self.stats.answer_hits += 1
        scope = 0
        cache_packet = udp and query.cookie is None
        service = datacenter = ""
        if isinstance(plan, _ServicePlan):
            address, prefix = self._client_subnet(query, client)
            decision = self.steering.decide(plan.service, address, prefix)  # type: ignore[union-attr]
            scope = decision.scope_prefix
            rendered = self._service_answer(query, qname_lower, plan, decision, dnssec_ok)
            service = plan.lookup.service or ""
            datacenter = decision.datacenters[0] if decision.datacenters else ""
            cache_packet = cache_packet and query.ecs is not None and decision.deterministic
        elif isinstance(plan, _Negative):
            response = self._finish_negative(query, plan)
            key = plan.zone_key if plan.rclass is ResponseClass.NXDOMAIN else qname_lower
            self._last = (plan.rclass, key, cookie_valid)
            labels = (query.qtype, plan.flags & 0xF, "", "")
            if cache_packet:
                self._remember_packet(data, response, labels, plan.rclass, key, gslb=False)
            self.stats.count(labels)
            return response
        else:
            rendered = plan
        response = self._finish(query, rendered, scope, udp)
        self._last = (rendered.rclass, rendered.rrl_key, cookie_valid)
        labels = (query.qtype, response[3] & 0xF, service, datacenter)
        if cache_packet:
            self._remember_packet(
                data, response, labels, rendered.rclass, rendered.rrl_key, gslb=bool(service)
            )
        self.stats.count(labels)
        return response

    def _client_subnet(self, query: wire.Query, client: str) -> tuple[bytes, int]:
        if query.ecs is not None:
            return query.ecs.address, query.ecs.source_prefix
        packed = self._pack(client)
        return packed, 8 * len(packed)

    def _remember_packet(
        self,
        data: bytes,
        response: bytes,
        labels: tuple[int, int, str, str],
        rclass: ResponseClass,
        rrl_key: bytes,
        gslb: bool,
    ) -> None:
        if self._max_packets <= 0:
            return
        if gslb:
            if self.health is None:
                return
            cache = self._gslb_packets
            if self._gslb_epoch != self.health.current.epoch:
                self._fold(cache)
                cache.clear()
                self._gslb_epoch = self.health.current.epoch
        else:
            cache = self._packets
        # Few distinct label tuples exist; share them instead of one per cache entry.
        labels = self._labels.setdefault(labels, labels)
        if len(cache) >= self._max_packets:
            _, evicted = cache.popitem(last=False)
            if evicted.hits:
                self.stats.count(evicted.labels, evicted.hits)
        cache[data[2:]] = _Packet(response[2:], labels, rclass, rrl_key)

    # -- assembling the final bytes ----------------------------------------------------------

    def _finish(self, query: wire.Query, rendered: Rendered, scope: int, udp: bool) -> bytes:
        flags = rendered.flags | (query.flags & (wire.RD | wire.CD))
        if query.edns:
            body = rendered.body_edns
            opt = self._opt(query, scope, 0)
        else:
            body = rendered.body
            opt = b""
        if query.qname != rendered.qname:
            # Keep the question's case as the client sent it (0x20 randomisation relies on it).
            end = 8 + len(query.qname)  # type: ignore[arg-type]
            body = body[:8] + query.qname + body[end:]  # type: ignore[operator]
        if udp:
            limit = min(query.payload, self.settings.edns_payload) if query.edns else 512
            if 4 + len(body) + len(opt) > limit:
                reduced = rendered.body_reduced
                if reduced is not None:
                    if query.qname != rendered.qname:
                        end = 8 + len(query.qname)  # type: ignore[arg-type]
                        reduced = reduced[:8] + query.qname + reduced[end:]  # type: ignore[operator]
                    if opt:
                        reduced = _add_arcount(reduced, 1)
                if reduced is not None and 4 + len(reduced) + len(opt) <= limit:
                    body = reduced
                else:
                    # RFC 1035 4.2.1 / RFC 2181 9: set TC and send no partial RRsets.
                    flags |= wire.TC
                    question = body[8 : 8 + len(query.qname) + 4]  # type: ignore[arg-type]
                    body = struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0) + question
        return struct.pack("!HH", query.id, flags) + body + opt

    def _finish_negative(self, query: wire.Query, negative: _Negative) -> bytes:
        """Header, the query's own question, the zone's SOA and our OPT: always under 512."""
        flags = negative.flags | (query.flags & (wire.RD | wire.CD))
        opt = self._opt(query, 0, 0) if query.edns else b""
        return (
            wire.HEADER.pack(query.id, flags, 1, 0, 1, 1 if opt else 0)
            + query.qname  # type: ignore[operator]
            + wire.TYPE_CLASS.pack(query.qtype, query.qclass)
            + negative.authority
            + opt
        )

    def _negative(self, zone: dns.name.Name, kind: Kind) -> _Negative:
        template = self._negatives.get((zone, kind))
        if template is None:
            soa = self.zones.zones[zone].negative_soa
            rdata = soa[0].to_wire()
            authority = (
                zone.to_wire()
                + struct.pack("!HHIH", dns.rdatatype.SOA, soa.rdclass, soa.ttl, len(rdata))
                + rdata
            )
            rcode = wire.NXDOMAIN if kind is Kind.NXDOMAIN else wire.NOERROR
            template = _Negative(rcode, authority, zone.to_wire().lower())
            self._negatives[(zone, kind)] = template
        return template

    def _opt(self, query: wire.Query, scope: int, extended_rcode: int) -> bytes:
        options = query.ecs.option(scope) if query.ecs is not None else b""
        if self._server_cookie is not None:
            options += self._server_cookie
        return wire.build_opt(self.settings.edns_payload, extended_rcode, query.do, options)

    def _check_cookie(self, query: wire.Query, client: str) -> bool:
        """Validate the query's cookie and prepare the COOKIE option of our response."""
        assert query.cookie is not None and self._cookies is not None
        client_cookie, server_cookie = query.cookie[:8], query.cookie[8:] or None
        status, fresh = self._cookies.respond(client_cookie, server_cookie, self._pack(client))
        data = client_cookie + fresh
        self._server_cookie = struct.pack("!HH", wire.OPTION_COOKIE, len(data)) + data
        return status is CookieStatus.VALID

    def _error(self, query: wire.Query, rcode: int) -> bytes:
        opt = b""
        if query.edns and query.error != wire.FORMERR:
            opt = self._opt(query, 0, rcode >> 4)
        self.stats.count((query.qtype, rcode & 0xF, "", ""))
        with_question = query.error != wire.FORMERR or query.qname is not None
        return wire.error_response(query, rcode, with_question=with_question, opt=opt)

    # -- rendering on a miss -----------------------------------------------------------------

    def _plan(
        self, qname_wire: bytes, qname_lower: bytes, qtype: int, dnssec_ok: bool = False
    ) -> Rendered | _ServicePlan | _Negative:
        qname, _ = dns.name.from_wire(qname_wire, 0)
        result = self.zones.lookup(qname, qtype)
        negative = result.kind in (Kind.NXDOMAIN, Kind.NODATA) and not result.answer
        if negative and result.zone and not dnssec_ok:
            self.stats.renders += 1
            return self._negative(result.zone, result.kind)
        if result.kind is Kind.SERVICE and self.steering is not None:
            service = self.steering.services.get(result.service)
            if service is not None:
                return _ServicePlan(service, result)
        if result.kind is Kind.SERVICE:
            # A service name without a steering engine: no addresses to give.
            result = LookupResult(Kind.NODATA, zone=result.zone, answer=result.answer)
            zone = self.zones.find_zone(qname)
            if zone is not None:
                result.authority.append(zone.negative_soa)
        return self._render(qname, qtype, result, dnssec_ok=dnssec_ok)

    def _render(
        self,
        qname: dns.name.Name,
        qtype: int,
        result: LookupResult,
        rcode: int | None = None,
        dnssec_ok: bool = False,
    ) -> Rendered:
        self.stats.renders += 1
        if rcode is None:
            rcode = {
                Kind.NXDOMAIN: wire.NXDOMAIN,
                Kind.REFUSED: wire.REFUSED,
            }.get(result.kind, wire.NOERROR)
        message = dns.message.Message(id=0)
        message.flags = dns.flags.QR | (dns.flags.AA if result.authoritative else 0)
        message.set_rcode(rcode)
        message.question.append(dns.rrset.RRset(qname, dns.rdataclass.IN, qtype))
        if dnssec_ok and rcode in (wire.NOERROR, wire.NXDOMAIN) and self.signers is not None:
            signed = sign_result(self.signers, result, qname, qtype, rcode)  # DNSSEC hook
            message.set_rcode(dns.rcode.Rcode(signed.rcode))
            message.answer.extend(signed.answer)
            message.authority.extend(signed.authority)
            message.additional.extend(signed.additional)
        else:
            message.answer.extend(result.answer)
            message.authority.extend(result.authority)
            message.additional.extend(result.additional)
        full = message.to_wire(want_shuffle=False)  # keep the steering order
        reduced = None
        if message.additional and not result.additional_required:
            message.additional = []
            reduced = message.to_wire(want_shuffle=False)[4:]
        flags = struct.unpack_from("!H", full, 2)[0]
        qname_wire = qname.to_wire()
        if result.kind is Kind.NXDOMAIN:
            rrl_key = (result.zone or dns.name.root).to_wire().lower()
        elif result.kind is Kind.DELEGATION:
            rrl_key = result.authority[0].name.to_wire().lower()
        else:
            rrl_key = qname_wire.lower()
        return Rendered(flags, qname_wire, full[4:], reduced, result.kind, rrl_key)

    def _service_answer(
        self,
        query: wire.Query,
        qname_lower: bytes,
        plan: _ServicePlan,
        decision: Any,
        dnssec_ok: bool = False,
    ) -> Rendered:
        key = (qname_lower, query.qtype, decision.key, dnssec_ok)
        rendered = self._answers.get(key)
        if rendered is not None:
            return rendered
        qname, _ = dns.name.from_wire(query.qname, 0)  # type: ignore[arg-type]
        lookup = plan.lookup
        result = LookupResult(Kind.ANSWER, zone=lookup.zone, answer=list(lookup.answer))
        rcode = None
        owner = dns.name.from_text(plan.lookup.service)
        if decision.outcome == "servfail":
            result = LookupResult(Kind.ANSWER, zone=lookup.zone, answer=list(lookup.answer))
            rcode = wire.SERVFAIL
        else:
            rdtype = TYPE_AAAA if query.qtype == TYPE_AAAA else TYPE_A
            addresses = decision.ipv6 if rdtype == TYPE_AAAA else decision.ipv4
            if decision.outcome == "answer" and addresses:
                rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, rdtype)
                rrset.update_ttl(decision.ttl)
                for address in addresses:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, address))
                result.answer.append(rrset)
            else:
                result.kind = Kind.NODATA if not result.answer else Kind.ANSWER
                zone = self.zones.find_zone(owner)
                if zone is not None:
                    result.authority.append(zone.negative_soa)
        rendered = self._render(qname, query.qtype, result, rcode, dnssec_ok)
        if len(self._answers) >= self._max_answers:
            self._answers.popitem(last=False)
        self._answers[key] = rendered
        return rendered

    def _chaos(self, query: wire.Query, udp: bool) -> bytes:
        assert query.qname is not None
        name = query.qname.lower()
        text = None
        if query.qtype in (TYPE_TXT, TYPE_ANY):
            if name in CHAOS_VERSION_NAMES:
                text = self.settings.chaos_version
            elif name in CHAOS_ID_NAMES:
                text = self.settings.chaos_id
        if text is None:
            return self._error(query, wire.REFUSED)
        qname, _ = dns.name.from_wire(query.qname, 0)
        message = dns.message.Message(id=0)
        message.flags = dns.flags.QR | dns.flags.AA
        message.question.append(dns.rrset.RRset(qname, dns.rdataclass.CH, query.qtype))
        rrset = dns.rrset.RRset(qname, dns.rdataclass.CH, dns.rdatatype.TXT)
        rrset.add(dns.rdata.from_text(dns.rdataclass.CH, dns.rdatatype.TXT, _quote(text)))
        message.answer.append(rrset)
        full = message.to_wire(want_shuffle=False)  # keep the steering order
        flags = struct.unpack_from("!H", full, 2)[0]
        rendered = Rendered(flags, query.qname, full[4:], None, Kind.ANSWER, name)
        return self._finish(query, rendered, 0, udp)


query_log = logging.getLogger("gslb.dns.queries")


def _log_query(
    data: bytes, client: str, response: bytes | None, transport: str, elapsed: float
) -> None:
    """One sampled query-log line; the fields ride along for the JSON log format."""
    try:
        query = wire.parse_query(data)
        qname = dns.name.from_wire(query.qname, 0)[0].to_text() if query.qname else ""
        qtype = dns.rdatatype.to_text(query.qtype)
    except Exception:  # the query log must never fail a query
        qname, qtype = "", ""
    rcode = response[3] & 0xF if response is not None and len(response) > 3 else -1
    fields = {
        "client": client,
        "transport": transport,
        "qname": qname,
        "qtype": qtype,
        "rcode": rcode,
        "microseconds": round(elapsed * 1e6, 1),
    }
    query_log.info(
        "query %s %s from %s rcode %s", qname, qtype, client, rcode, extra={"fields": fields}
    )


def _response_class(rcode: int, kind: Kind) -> ResponseClass:
    if rcode == wire.NXDOMAIN:
        return ResponseClass.NXDOMAIN
    if rcode != wire.NOERROR:
        return ResponseClass.ERROR
    if kind is Kind.DELEGATION:
        return ResponseClass.REFERRAL
    if kind is Kind.NODATA:
        return ResponseClass.NODATA
    return ResponseClass.ANSWER


def _slip(response: bytes) -> bytes:
    """RRL's slip: the same header with TC=1 and only the question, so a real client retries
    over TCP while a spoofed victim receives no more bytes than the query had."""
    flags, qdcount = struct.unpack_from("!HH", response, 2)
    end = 12
    if qdcount:
        end = wire.question_name_end(response, 12) + 4
    return (
        response[:2]
        + struct.pack("!HHHHH", flags | wire.TC, 1 if qdcount else 0, 0, 0, 0)
        + response[12:end]
    )


def _add_arcount(body: bytes, extra: int) -> bytes:
    arcount = struct.unpack_from("!H", body, 6)[0] + extra
    return body[:6] + struct.pack("!H", arcount) + body[8:]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
