"""The protocol-extension seam: which queries reach it, and that TCP writes every message."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.opcode
import dns.rcode
import dns.tsigkeyring

from gslb.dns.extension import Core

from .dnshelpers import ServerThread, raw_udp


class Recording:
    """Answers AXFR with two copies of the core's answer for the apex SOA; else the core."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def handle(self, data: bytes, client: str, tcp: bool, core: Core) -> list[bytes] | None:
        query = dns.message.from_wire(data, ignore_trailing=True, keyring=False)
        self.seen.append((query.opcode(), query.question[0].rdtype, tcp))
        if query.question[0].rdtype == 252:
            soa = dns.message.make_query(query.question[0].name, "SOA")
            soa.id = query.id
            answer = core(soa.to_wire(), client, tcp)
            assert answer is not None
            return [answer, answer]
        response = core(data, client, tcp)
        return [response] if response is not None else None


def read_message(sock: socket.socket) -> dns.message.Message:
    length = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
    return dns.message.from_wire(sock.recv(length, socket.MSG_WAITALL))


def test_extension_gets_transfers_notify_and_tsig(dns_server: ServerThread) -> None:
    assert dns_server.node is not None
    extension = Recording()
    dns_server.node.holder.current.extension = extension
    axfr = dns.message.make_query("example.test", "AXFR")
    with socket.create_connection(("127.0.0.1", dns_server.port), timeout=3) as sock:
        wire = axfr.to_wire()
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        first, second = read_message(sock), read_message(sock)
    for message in (first, second):
        assert message.id == axfr.id and message.answer[0].rdtype == 6  # SOA
    notify = dns.message.make_query("example.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = raw_udp(dns_server.port, notify.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP
    signed = dns.message.make_query("www.example.test", "A")
    signed.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"}), keyname="k.")
    reply = raw_udp(dns_server.port, signed.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply, keyring=False).rcode() == dns.rcode.NOTAUTH
    plain = raw_udp(dns_server.port, dns.message.make_query("www.example.test", "A").to_wire())
    assert plain is not None
    assert extension.seen == [(0, 252, True), (4, 6, False), (0, 1, False)]
