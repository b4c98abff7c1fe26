"""NOTIFY (RFC 1996): tell secondaries a zone changed, and answer NOTIFY sent to us.

Out: after a reload publishes a zone with a new serial, each `transfer.notify` target gets a
NOTIFY over UDP (signed when the target names a key), resent with a doubling timeout until it
answers or `notify_retries` resends are used up. A secondary answers, then asks for the SOA
and transfers; a lost NOTIFY only delays it to the zone's refresh timer.

In: this node is a primary only, so a NOTIFY for one of our zones changes nothing; it is
acknowledged (NOERROR, so the sender stops resending). One for a zone we do not serve gets
NOTAUTH, a NOTIFY whose question is not SOA gets FORMERR.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import struct
from collections.abc import Collection
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.renderer

from ..clock import SYSTEM_CLOCK, Clock
from .transfer import NotifyTarget, ZoneVersion
from .tsig import Envelope, Keyring, Malformed, Signer, read_envelope, verify

log = logging.getLogger("gslb.dns.notify")

OPCODE_NOTIFY = 4
NOERROR, FORMERR, NOTAUTH = 0, 1, 9


def answer_notify(envelope: Envelope, data: bytes, origins: Collection[dns.name.Name]) -> bytes:
    """The reply to an incoming NOTIFY (`data` without its TSIG)."""
    if envelope.qname is None or envelope.qtype != dns.rdatatype.SOA:
        return envelope.reply(data, FORMERR)
    if envelope.qname not in origins:
        return envelope.reply(data, NOTAUTH)
    log.info("NOTIFY for %s received; this node is its primary, nothing to do", envelope.qname)
    reply = bytearray(envelope.reply(data, NOERROR))
    reply[2] |= 0x04  # AA
    return bytes(reply)


def notify_message(version: ZoneVersion, ident: int) -> bytes:
    """NOTIFY for a zone: opcode 4, AA, question <origin> SOA, our SOA as a hint."""
    flags = (OPCODE_NOTIFY << 11) | 0x0400
    renderer = dns.renderer.Renderer(ident, flags, 65535)  # type: ignore[no-untyped-call]
    renderer.add_question(version.origin, dns.rdatatype.SOA, dns.rdataclass.IN)  # type: ignore[no-untyped-call]
    renderer.add_rrset(dns.renderer.ANSWER, version.soa)  # type: ignore[no-untyped-call]
    renderer.write_header()  # type: ignore[no-untyped-call]
    wire: bytes = renderer.get_wire()  # type: ignore[no-untyped-call]
    return wire


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("NOTIFY socket error: %s", exc)  # ICMP unreachable: retried on timeout


class Notifier:
    """Sends NOTIFY messages; one task per (zone, target), replaced by a newer serial."""

    def __init__(self, keyring: Keyring | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.keyring = keyring or Keyring()
        self.clock = clock
        self.tasks: dict[tuple[dns.name.Name, str], asyncio.Task[bool]] = {}
        self.sent = 0
        self.acknowledged = 0
        self.failed = 0

    def notify(
        self,
        version: ZoneVersion,
        targets: Collection[NotifyTarget],
        retries: int = 5,
        timeout: float = 2.0,
    ) -> list[asyncio.Task[bool]]:
        """Start notifying every target of `version` (needs a running event loop)."""
        started = []
        for target in targets:
            slot = (version.origin, str(target))
            previous = self.tasks.pop(slot, None)
            if previous is not None:
                previous.cancel()  # a newer serial supersedes the one still being sent
            task = asyncio.get_running_loop().create_task(
                self._notify(version, target, retries, timeout)
            )
            self.tasks[slot] = task
            task.add_done_callback(functools.partial(self._forget, slot))
            started.append(task)
        return started

    def _forget(self, slot: tuple[dns.name.Name, str], task: asyncio.Task[bool]) -> None:
        if self.tasks.get(slot) is task:
            del self.tasks[slot]

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _notify(
        self, version: ZoneVersion, target: NotifyTarget, retries: int, timeout: float
    ) -> bool:
        key = self.keyring.get(target.key) if target.key is not None else None
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _Reply, remote_addr=(target.host, target.port)
        )
        try:
            wait = timeout
            for attempt in range(retries + 1):
                ident = secrets.randbelow(65536)
                wire = notify_message(version, ident)
                signer = None
                if key is not None:
                    signer = Signer(key, b"", self.clock)
                    wire = signer.sign(wire)
                transport.sendto(wire)
                self.sent += 1
                rcode = await self._await_reply(protocol, ident, wait, wire, key)
                if rcode is not None:
                    if rcode == NOERROR:
                        self.acknowledged += 1
                        log.info(
                            "NOTIFY %s serial %d acknowledged by %s",
                            version.origin,
                            version.serial,
                            target,
                        )
                        return True
                    self.failed += 1
                    log.warning(
                        "NOTIFY %s serial %d to %s answered with rcode %d",
                        version.origin,
                        version.serial,
                        target,
                        rcode,
                    )
                    return False
                if attempt < retries:
                    log.debug("NOTIFY %s to %s: no reply, resending", version.origin, target)
                wait *= 2
            self.failed += 1
            log.warning(
                "NOTIFY %s serial %d to %s: no reply after %d attempts",
                version.origin,
                version.serial,
                target,
                retries + 1,
            )
            return False
        finally:
            transport.close()

    async def _await_reply(
        self, protocol: _Reply, ident: int, wait: float, request: bytes, key: Any
    ) -> int | None:
        """The rcode of the reply to this NOTIFY, or None when none came in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(protocol.replies.get(), left)
            except TimeoutError:
                return None
            if len(data) < 12:
                continue
            reply_id, flags = struct.unpack_from("!HH", data)
            if reply_id != ident or not flags & 0x8000 or (flags >> 11) & 0xF != OPCODE_NOTIFY:
                continue  # not the reply to this message (a late one to an earlier send)
            if key is not None and not self._signed_by(data, request, key):
                continue
            rcode: int = flags & 0xF
            return rcode

    def _signed_by(self, data: bytes, request: bytes, key: Any) -> bool:
        """Does the reply carry a valid TSIG from our key (covering our request's MAC)?"""
        try:
            reply = read_envelope(data)
            sent = read_envelope(request)
        except Malformed:
            return False
        if reply.tsig is None or sent.tsig is None:
            return False
        if reply.tsig.error:
            log.warning("NOTIFY reply carries TSIG error %d", reply.tsig.error)
            return True  # a definite answer: the rcode says the rest
        verdict = verify(data, reply, Keyring({key.name: key}), self.clock, sent.tsig.mac)
        return verdict.ok
