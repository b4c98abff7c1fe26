"""The protocol extension (the seam in extension.py): TSIG, AXFR/IXFR and NOTIFY.

The responder routes a query here when its opcode is not QUERY, its qtype is AXFR/IXFR, or it
has a TSIG RR (`extension.wants_extension`); everything else never comes near this module, so
the common path pays nothing. Here a signed query is verified (failures answered per RFC 8945),
its TSIG stripped, the stripped query answered (a transfer, a NOTIFY reply, or by `core`, the
responder's ordinary answer path), and every message of the answer signed with the same key.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import dns.name
import dns.rdatatype

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import Reason
from . import notify, tsig
from .extension import Core
from .transfer import Transfers, TransferSettings, parse_transfer

log = logging.getLogger("gslb.dns")

OPCODE_QUERY = 0
TRANSFER_TYPES = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
FORMERR, REFUSED = 1, 5
TC = 0x0200


def parse_protocol(extra: Any) -> tuple[tsig.Keyring, TransferSettings, list[Reason]]:
    """`tsig_keys:` and `transfer:` together, since transfer rules name keys."""
    keyring, reasons = tsig.parse_tsig_keys(extra.get("tsig_keys"))
    transfer, transfer_reasons = parse_transfer(extra.get("transfer"), keyring)
    return keyring, transfer, reasons + transfer_reasons


@dataclass
class ExtensionStats:
    """Protocol events since the node started (kept by the node, so reloads keep them)."""

    # tsig_verified, tsig_badkey, tsig_badsig, tsig_badtime, tsig_badtrunc, tsig_formerr,
    # axfr, ixfr (transfers answered), transfer_refused, transfer_error, notify_received
    events: dict[str, int] = field(default_factory=dict)

    def count(self, event: str) -> None:
        self.events[event] = self.events.get(event, 0) + 1


class ProtocolExtension:
    def __init__(
        self,
        keyring: tsig.Keyring | None = None,
        transfers: Transfers | None = None,
        origins: Collection[dns.name.Name] = (),
        clock: Clock = SYSTEM_CLOCK,
        stats: ExtensionStats | None = None,
        edns_payload: int = 1232,
    ) -> None:
        self.keyring = keyring or tsig.Keyring()
        self.edns_payload = edns_payload  # our largest UDP answer (dns.edns_payload)
        self.transfers = transfers
        self.origins = frozenset(origins)
        self.clock = clock
        self.stats = stats or ExtensionStats()

    def handle(self, data: bytes, client: str, tcp: bool, core: Core) -> list[bytes] | None:
        """The messages answering `data` (several for a transfer), or None to send nothing."""
        if len(data) < 12 or data[2] & 0x80:
            return None  # no header, or a response: never answered
        try:
            envelope = tsig.read_envelope(data)
        except tsig.Malformed:
            flags = struct.unpack_from("!H", data, 2)[0]
            if (flags >> 11) & 0xF not in (OPCODE_QUERY, notify.OPCODE_NOTIFY):
                response = core(data, client, tcp)  # an opcode we do not implement: NOTIMP
                return None if response is None else [response]
            # Unreadable records (a TSIG not last, a bad name...): FORMERR, the header only.
            flags = 0x8000 | (flags & 0x7900) | FORMERR
            return [data[:2] + struct.pack("!5H", flags, 0, 0, 0, 0)]
        signer = None
        if envelope.tsig is not None:
            verdict = tsig.verify(data, envelope, self.keyring, self.clock)
            if not verdict.ok:
                self.stats.count("tsig_" + _error_name(verdict.error).lower())
                log.info(
                    "TSIG %s from %s (key %s)",
                    _error_name(verdict.error),
                    client,
                    envelope.tsig_owner,
                )
                return [tsig.error_response(data, envelope, verdict, self.clock)]
            assert verdict.key is not None
            self.stats.count("tsig_verified")
            signer = tsig.Signer(verdict.key, verdict.request_mac, self.clock)
        stripped = envelope.stripped(data)
        key = signer.key.name if signer is not None else None
        if envelope.opcode == notify.OPCODE_NOTIFY:
            self.stats.count("notify_received")
            responses = [notify.answer_notify(envelope, stripped, self.origins)]
        elif envelope.opcode == OPCODE_QUERY and envelope.qtype in TRANSFER_TYPES:
            if self.transfers is None:
                responses = [envelope.reply(stripped, REFUSED)]
            else:
                responses = self.transfers.respond(envelope, stripped, client, tcp, key)
            rcode = responses[0][3] & 0xF
            if rcode == 0:
                self.stats.count("axfr" if envelope.qtype == dns.rdatatype.AXFR else "ixfr")
            else:
                self.stats.count("transfer_refused" if rcode == REFUSED else "transfer_error")
        else:
            if signer is not None and not tcp and envelope.edns:
                limit = _udp_limit(data, envelope, self.edns_payload)
                stripped = _reserve(stripped, envelope, limit - tsig.tsig_overhead(signer.key))
            response = core(stripped, client, tcp)
            if response is None:
                return None
            responses = [response]
        if signer is None:
            return responses
        if len(responses) == 1:
            signed = signer.sign(responses[0])
            if not tcp and len(signed) > _udp_limit(data, envelope, self.edns_payload):
                signed = signer.sign(_truncated(responses[0]))
            return [signed]
        return [signer.sign(message, multi=True) for message in responses]


def _reserve(stripped: bytes, envelope: tsig.Envelope, size: int) -> bytes:
    """Lower the query's advertised UDP size to leave room for the TSIG the answer will
    carry, so the core truncates with the signature counted (RFC 8945 5.3)."""
    offset = envelope.opt_class
    return stripped[:offset] + struct.pack("!H", max(512, size)) + stripped[offset + 2 :]


def _udp_limit(data: bytes, envelope: tsig.Envelope, ours: int) -> int:
    """The largest UDP reply: 512 without EDNS, else min(the client's size, ours)."""
    if not envelope.edns:
        return 512
    return max(512, min(ours, int(struct.unpack_from("!H", data, envelope.opt_class)[0])))


def _truncated(response: bytes) -> bytes:
    """The response cut to its header (TC=1, AA kept) and question: the signed reply did not
    fit the client's UDP size, so it retries over TCP."""
    try:
        envelope = tsig.read_envelope(response)
    except tsig.Malformed:
        return response[:2] + struct.pack("!5H", 0x8000 | TC | 2, 0, 0, 0, 0)  # SERVFAIL
    cut = bytearray(envelope.reply(response, response[3] & 0xF))
    cut[2] |= (response[2] & 0x04) | 0x02  # AA as answered, and TC
    return bytes(cut)


def _error_name(error: int) -> str:
    return {
        tsig.BADKEY: "BADKEY",
        tsig.BADSIG: "BADSIG",
        tsig.BADTIME: "BADTIME",
        tsig.BADTRUNC: "BADTRUNC",
        tsig.FORMERR: "FORMERR",
    }.get(error, str(error))
