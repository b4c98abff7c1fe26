"""Turn query bytes into response bytes, for one configuration generation.

Cheapest first:
1. the packet cache: the query's bytes after the ID -> the response's bytes after the ID, for
   answers that depend on nothing but the query (PowerDNS calls this a packet cache);
2. the plan and rendered-answer caches (caches.py), patched per query (render.py);
3. a miss: the pure answer core (answer.py) and one dnspython render.
The guards (guards.py) run in their fixed order around this; queries for a protocol extension
(NOTIFY, AXFR/IXFR, TSIG) go to the Extension (extension.py). This module only wires these
together and keeps the counters (counters.py, owned by the node).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import dns.name
import dns.rdatatype

from ..dnssec.signer import Signers as DnssecSigners
from ..zone.lookup import ZoneSet
from . import answer as core
from . import render, wire
from .acl import Action
from .answer import Answer, Identity, ServicePlan, Steering
from .caches import Caches
from .counters import LATENCY_BOUNDS, LATENCY_SAMPLE, Counters, Labels
from .extension import DefaultExtension, Extension, wants_extension
from .guards import Guards, Protection
from .render import Negative, Rendered, Signer
from .rrl import ResponseClass, Verdict
from .settings import DnsSettings

__all__ = ["LATENCY_BOUNDS", "Protection", "Responder"]

log = logging.getLogger("gslb.dns")

CLASS_IN = core.CLASS_IN
CLASS_CH = core.CLASS_CH
TYPE_AXFR = wire.TYPE_AXFR
TYPE_IXFR = wire.TYPE_IXFR
EXTENSION_TYPES = (TYPE_AXFR, TYPE_IXFR)  # with opcode != QUERY or TSIG: extension.wants_extension

# What a slow-path answer counts as for rate limiting: (response, class, key, cookie-valid).
Result = tuple[bytes | None, ResponseClass, bytes, bool]
_NOTHING: Result = (None, ResponseClass.ERROR, b"", False)


class Responder:
    """Answers queries from one immutable generation (zones, services, settings).

    A reload builds a new Responder (new caches) and swaps it in; the counters are the
    node's and carry over.
    """

    def __init__(
        self,
        zones: ZoneSet,
        settings: DnsSettings | None = None,
        steering: Steering | None = None,
        health: Any = None,
        protection: Protection | None = None,
        counters: Counters | None = None,
        extension: Extension | None = None,
        signers: Mapping[dns.name.Name, Signer] | None = None,
    ) -> None:
        self.zones = zones
        self.settings = settings or DnsSettings()
        self.steering = steering
        self.health = health  # HealthHolder: GSLB packet-cache entries live for one epoch
        self.counters = counters if counters is not None else Counters()
        self.stats = self.counters  # the name status pages read
        self.protection = protection or Protection()
        self.guards = Guards(self.protection, self.settings.listener_acls)
        self.caches = Caches(
            self.counters,
            self.settings.packet_cache_size,
            self.settings.answer_cache_size,
            health,
        )
        # Bound once for the hit path (the caches only ever clear these dicts, never replace them).
        self._packets = self.caches.packets
        self._gslb_packets = self.caches.gslb_packets
        self._gslb_packet = self.caches.gslb_packet
        self._guarded = self.guards.guarded
        self.extension: Extension = extension or DefaultExtension()
        self.signers: Mapping[dns.name.Name, Signer] = signers or {}
        # DNSSEC (issue 14): cached signed answers must not outlive their signing window.
        self._signing = signers if isinstance(signers, DnssecSigners) and signers else None
        self._resign_at = self._signing.valid_until() if self._signing else float("inf")
        self.identity = Identity(self.settings.chaos_version, self.settings.chaos_id)
        self._edns_payload = self.settings.edns_payload
        sample = self.settings.query_log_sample
        self._log_every = max(1, round(1 / sample)) if sample > 0 else 0
        # One modulo on the common path decides whether this query is timed and/or logged.
        self._sample_every = min(LATENCY_SAMPLE, self._log_every or LATENCY_SAMPLE)

    # -- entry points ------------------------------------------------------------------------

    def handle_udp(self, data: bytes, client: str, listener: str = "") -> bytes | None:
        """One UDP datagram from `client` (text address) on `listener` -> the reply, or None."""
        counters = self.counters
        counters.queries += 1
        if self._signing is not None:
            self._check_signatures()
        if counters.queries % self._sample_every:
            return self._udp(data, client, listener)
        started = time.perf_counter()
        response = self._udp(data, client, listener)
        self._sampled(data, client, [response] if response else [], "udp", started)
        return response

    def handle_tcp(self, data: bytes, client: str, listener: str = "") -> list[bytes]:
        """One TCP message -> the messages to write back (several for a zone transfer)."""
        counters = self.counters
        counters.queries += 1
        if self._signing is not None:
            self._check_signatures()
        if counters.queries % self._sample_every:
            return self._tcp(data, client, listener)
        started = time.perf_counter()
        responses = self._tcp(data, client, listener)
        self._sampled(data, client, responses, "tcp", started)
        return responses

    def _check_signatures(self) -> None:
        """Past the signing window's refresh time no cached signed answer is sent again."""
        signing = self._signing
        assert signing is not None
        if signing.clock.time() < self._resign_at:
            return
        self.caches.retire()  # the packet caches (their hits are folded into the counters)
        self.caches.plans.clear()
        self.caches.answers.clear()
        self._resign_at = signing.valid_until()

    def _sampled(
        self, data: bytes, client: str, responses: list[bytes], transport: str, started: float
    ) -> None:
        elapsed = time.perf_counter() - started
        queries = self.counters.queries
        if not queries % LATENCY_SAMPLE:
            self.counters.observe_latency(elapsed)
        if self._log_every and not queries % self._log_every:
            _log_query(data, client, responses[0] if responses else None, transport, elapsed)

    def _udp(self, data: bytes, client: str, listener: str) -> bytes | None:
        if self._guarded:
            return self._udp_guarded(data, client, listener)
        packet = self._packets.get(data[2:])
        if packet is None and self._gslb_packets:
            packet = self._gslb_packet(data[2:])
        if packet is not None:
            packet.hits += 1
            return data[:2] + packet.response
        return self._answer(data, client, False)[0]

    def _udp_guarded(self, data: bytes, client: str, listener: str) -> bytes | None:
        """The UDP path with an access list and/or rate limiting in force."""
        guards = self.guards
        packed = guards.pack(client)
        if guards.acl is not None:
            action = guards.acl.check(packed, listener)
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
            response, rclass, key, exempt = self._answer(data, client, False)
            if response is None:
                return None
        if guards.rrl is not None and not exempt:
            verdict = guards.rrl.check(packed, rclass, key)
            if verdict is not Verdict.SEND:
                if verdict is Verdict.DROP:
                    return None
                return render.slip(response)  # type: ignore[arg-type]
        return response

    def _tcp(self, data: bytes, client: str, listener: str) -> list[bytes]:
        acl = self.guards.acl
        if acl is not None:
            action = acl.check(self.guards.pack(client), listener)
            if action is not Action.ALLOW:
                denied = self._denied(data, action)
                return [denied] if denied is not None else []
        query = self._parse(data)
        if query is None:
            return []
        if type(query) is wire.Query and wants_extension(query):
            return self._extend(query, data, client, True)
        response = self._guarded_core(query, data, client, True)[0]
        return [response] if response is not None else []

    def _denied(self, data: bytes, action: Action) -> bytes | None:
        if action is Action.DROP:
            self.counters.acl_dropped += 1
            return None
        self.counters.acl_refused += 1
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            return None
        return self._error(query, wire.REFUSED, None)

    def answer_counts(self) -> dict[Labels, int]:
        """Answers sent so far by (qtype, rcode, service, datacenter), cache hits included."""
        counts = dict(self.counters.answers)
        live, _ = self.caches.live_hits()
        for labels, hits in live.items():
            counts[labels] = counts.get(labels, 0) + hits
        return counts

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) since the node started: packet and answer hits against renders."""
        _, live = self.caches.live_hits()
        counters = self.counters
        return counters.answer_hits + counters.packet_hits + live, counters.renders

    def retire(self) -> None:
        """A reload replaced this generation: fold its cache hits into the node's counters."""
        self.caches.retire()

    # -- the slow path ----------------------------------------------------------------------

    def _parse(self, data: bytes) -> wire.Query | wire.Malformed | None:
        try:
            return wire.parse_query(data)
        except wire.Drop:
            self.counters.dropped += 1
            return None

    def _answer(self, data: bytes, client: str, tcp: bool) -> Result:
        """The UDP miss path: parse, hand to the extension or answer (inlined: it is hot)."""
        try:
            query = wire.parse_query(data)
        except wire.Drop:
            self.counters.dropped += 1
            return _NOTHING
        if type(query) is not wire.Query:
            return self._guarded_core(query, data, client, tcp)
        if query.flags & 0x7800 or query.tsig or query.qtype in EXTENSION_TYPES:
            responses = self._extend(query, data, client, tcp)
            return (responses[0] if responses else None, ResponseClass.ERROR, b"", False)
        try:
            return self._respond(query, data, client, tcp)
        except Exception:  # a bug must cost one answer, never the server
            return self._internal_error(query)

    def _extend(self, query: wire.Query, data: bytes, client: str, tcp: bool) -> list[bytes]:
        try:
            return self.extension.handle(data, client, tcp, self._core) or []
        except Exception:  # an extension's bug costs one answer too, never the server
            response = self._internal_error(query)[0]
            return [response] if response is not None else []

    def _core(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        """The ordinary answer path, for extensions (which have dispatched already)."""
        query = self._parse(data)
        if query is None:
            return None
        return self._guarded_core(query, data, client, tcp)[0]

    def _guarded_core(
        self, query: wire.Query | wire.Malformed, data: bytes, client: str, tcp: bool
    ) -> Result:
        try:
            if type(query) is wire.Malformed:
                return self._malformed(query, client, tcp)
            return self._respond(query, data, client, tcp)  # type: ignore[arg-type]
        except Exception:  # a bug must cost one answer, never the server
            return self._internal_error(query)

    def _internal_error(self, query: wire.Query | wire.Malformed) -> Result:
        self.counters.errors += 1
        log.exception("internal error answering a query; sent SERVFAIL")
        return (self._error(query, wire.SERVFAIL, None), ResponseClass.ERROR, b"", False)

    def _malformed(self, query: wire.Malformed, client: str, tcp: bool) -> Result:
        cookie_option = None
        cookies = self.guards.cookies
        if query.cookie is not None and cookies is not None:
            cookie_option = cookies.check(query.cookie, self.guards.pack(client), tcp)[0]
        rcode = query.rcode
        if rcode == wire.NOERROR and cookie_option is None:
            rcode = wire.FORMERR  # a cookie-only query to a server without cookies
        return (self._error(query, rcode, cookie_option), ResponseClass.ERROR, b"", False)

    def _respond(self, query: wire.Query, data: bytes, client: str, tcp: bool) -> Result:
        cookie_option = None
        cookie_valid = False
        if query.cookie is not None and self.guards.cookies is not None:
            cookie_option, cookie_valid, reject = self.guards.cookies.check(
                query.cookie, self.guards.pack(client), tcp
            )
            if reject:
                response = self._error(query, wire.BADCOOKIE, cookie_option)
                return (response, ResponseClass.ERROR, b"", False)
        qtype = query.qtype
        if (
            query.qclass != CLASS_IN
            or query.flags & 0x7800
            or query.tsig
            or qtype == TYPE_AXFR
            or qtype == TYPE_IXFR
        ):
            return self._protocol(query, cookie_option, cookie_valid, tcp)
        qname_lower = query.qname.lower()
        do = query.do
        key = (qname_lower, qtype, do)
        caches = self.caches
        plan = caches.plans.get(key)
        if plan is None:
            plan = self._plan(query)
            caches.remember_plan(key, plan)
        else:
            self.counters.answer_hits += 1
        limit = 0 if tcp else (min(query.payload, self._edns_payload) if query.edns else 512)
        cache_packet = not tcp and query.cookie is None
        kind = type(plan)
        if kind is Negative:
            negative: Negative = plan  # type: ignore[assignment]
            opt = self._opt(query, 0, 0, cookie_option) if query.edns else b""
            response = render.finish_negative(query, negative, opt, limit)
            rrl_key = (
                negative.zone_key if negative.rclass is ResponseClass.NXDOMAIN else qname_lower
            )
            labels = (qtype, negative.flags & 0xF, "", "")
            if cache_packet:
                caches.remember_packet(
                    data[2:], response[2:], labels, negative.rclass, rrl_key, False
                )
            self.counters.count(labels)
            return (response, negative.rclass, rrl_key, cookie_valid)
        service = datacenter = ""
        scope = 0
        if kind is ServicePlan:
            splan: ServicePlan = plan  # type: ignore[assignment]
            ecs = query.ecs
            if ecs is not None:
                address, prefix = ecs.address, ecs.source_prefix
            else:
                address, prefix = core.client_subnet(query, self.guards.pack(client))
            decision = self.steering.decide(splan.service, address, prefix)  # type: ignore[union-attr]
            scope = decision.scope_prefix
            rendered = self._service_rendered(query, qname_lower, splan, decision)
            service = splan.name
            datacenter = decision.datacenters[0] if decision.datacenters else ""
            cache_packet = cache_packet and query.ecs is not None and decision.deterministic
        else:
            rendered = plan  # type: ignore[assignment]
        opt = self._opt(query, scope, 0, cookie_option) if query.edns else b""
        response = render.finish(query, rendered, opt, limit)
        labels = (qtype, response[3] & 0xF, service, datacenter)
        if cache_packet:
            caches.remember_packet(
                data[2:], response[2:], labels, rendered.rclass, rendered.rrl_key, bool(service)
            )
        self.counters.count(labels)
        return (response, rendered.rclass, rendered.rrl_key, cookie_valid)

    def _protocol(
        self, query: wire.Query, cookie_option: bytes | None, cookie_valid: bool, tcp: bool
    ) -> Result:
        """Queries the zones never see: other opcodes, TSIG, transfers, other classes."""
        rcode = core.protocol_rcode(query)
        if rcode is not None:
            return (self._error(query, rcode, cookie_option), ResponseClass.ERROR, b"", False)
        answer = core.chaos(query, self.identity)
        if answer.rcode != wire.NOERROR:
            return (
                self._error(query, answer.rcode, cookie_option),
                ResponseClass.ERROR,
                b"",
                False,
            )
        rendered = render.render(answer)
        limit = 0 if tcp else (min(query.payload, self._edns_payload) if query.edns else 512)
        opt = self._opt(query, 0, 0, cookie_option) if query.edns else b""
        response = render.finish(query, rendered, opt, limit)
        self.counters.count((query.qtype, wire.NOERROR, "", ""))
        return (response, rendered.rclass, rendered.rrl_key, cookie_valid)

    # -- assembling the final bytes ----------------------------------------------------------

    def _opt(
        self,
        query: wire.Query | wire.Malformed,
        scope: int,
        extended_rcode: int,
        cookie_option: bytes | None,
    ) -> bytes:
        options = b""
        ecs = query.ecs
        if ecs is not None:
            options = ecs.option(scope)
        if cookie_option is not None:
            options += cookie_option
        return wire.build_opt(self._edns_payload, extended_rcode, query.do, options)

    def _error(
        self, query: wire.Query | wire.Malformed, rcode: int, cookie_option: bytes | None
    ) -> bytes:
        """A response without records; with OPT whenever the query had one (RFC 6891 7)."""
        opt = self._opt(query, 0, rcode >> 4, cookie_option) if query.edns else b""
        if isinstance(query, wire.Query):
            question = wire.question_of(query)
        else:
            question = query.question
        self.counters.count((query.qtype, rcode & 0xF, "", ""))
        return wire.error_response(query, rcode, question, opt)

    # -- rendering on a miss -----------------------------------------------------------------

    def _plan(self, query: wire.Query) -> Rendered | Negative | ServicePlan:
        qname, _ = dns.name.from_wire(query.qname, 0)
        plan = core.resolve(self.zones, self.steering, qname, query.qtype)
        if isinstance(plan, ServicePlan):
            return plan
        return self._rendered(plan, query.do)

    def _rendered(self, answer: Answer, do: bool) -> Rendered | Negative:
        self.counters.renders += 1
        signer = self.signers.get(answer.zone) if answer.zone is not None else None
        if answer.negative and not (do and signer is not None):
            return self._negative(answer)
        return render.render(answer, do, signer)

    def _negative(self, answer: Answer) -> Negative:
        zone = answer.zone
        key = (zone, answer.kind)
        template = self.caches.negatives.get(key)
        if template is None:
            soa = self.zones.zones[zone].negative_soa  # type: ignore[index]
            template = render.negative_template(zone, soa, answer.kind)  # type: ignore[arg-type]
            self.caches.negatives[key] = template
        return template

    def _service_rendered(
        self, query: wire.Query, qname_lower: bytes, plan: ServicePlan, decision: Any
    ) -> Rendered:
        key = (qname_lower, query.qtype, query.do, decision.key)
        rendered = self.caches.answers.get(key)
        if rendered is not None:
            return rendered
        qname, _ = dns.name.from_wire(query.qname, 0)
        answer = core.service_answer(self.zones, plan, qname, query.qtype, decision)
        self.counters.renders += 1
        signer = self.signers.get(answer.zone) if answer.zone is not None else None
        rendered = render.render(answer, query.do, signer)
        self.caches.remember_answer(key, rendered)
        return rendered


query_log = logging.getLogger("gslb.dns.queries")


def _log_query(
    data: bytes, client: str, response: bytes | None, transport: str, elapsed: float
) -> None:
    """One sampled query-log line; the fields ride along for the JSON log format."""
    try:
        query = wire.parse_query(data)
        qname = qtype = ""
        if type(query) is wire.Query:
            qname = dns.name.from_wire(query.qname, 0)[0].to_text()
            qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(query.qtype))
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
