"""Zone transfers out (AXFR, IXFR) and NOTIFY, over real sockets against a real node."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from gslb.config.yaml_loader import load_yaml_text
from gslb.dns import transfer
from gslb.dns.tsig import Keyring, make_key

from .dnshelpers import TEST_ZONE, ServerThread
from .xfrhelpers import (
    DEFAULT_TRANSFER,
    OTHER_SECRET,
    SECRET,
    keyring,
    raw_exchange,
    signed_query,
    start_node,
    tsig_rdata,
    unverified,
    write_config,
)

ORIGIN = dns.name.from_text("example.test")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    node = start_node(tmp_path)
    yield node
    node.stop()


def axfr(port: int, zone: str = "example.test", **kw: object) -> list[dns.message.Message]:
    """AXFR with dnspython, which checks the TSIG of every message of the stream."""
    return list(
        dns.query.xfr(
            "127.0.0.1",
            zone,
            port=port,
            keyring=keyring(),
            keyname="xfr-key",
            timeout=5,
            lifetime=10,
            relativize=False,
            **kw,  # type: ignore[arg-type]
        )
    )


def records(messages: list[dns.message.Message]) -> list[str]:
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
        for message in messages
        for rrset in message.answer
        for rdata in rrset
    ]


def static_zone() -> dns.zone.Zone:
    chunks = {f"big{n}" if n > 1 else "big": chr(ord("a") + n) * 250 for n in range(1, 7)}
    return dns.zone.from_text(TEST_ZONE.format(**chunks), relativize=False)


def test_axfr_with_tsig_transfers_the_static_zone(server: ServerThread) -> None:
    messages = axfr(server.port)
    got = records(messages)
    assert got[0].startswith("example.test. SOA") and got[-1] == got[0]
    expected = {
        f"{name} {dns.rdatatype.to_text(rds.rdtype)} {rdata}"
        for name, node in static_zone().nodes.items()
        for rds in node.rdatasets
        for rdata in rds
    }
    assert set(got) == expected and len(got) == len(expected) + 1  # SOA twice
    assert all(message.had_tsig for message in messages)
    # The service name is dynamic: omitted by default.
    assert not any(line.startswith("gslb.example.test.") for line in got)


def test_axfr_as_a_zone_with_dnspython(server: ServerThread) -> None:
    zone = dns.zone.from_xfr(
        dns.query.xfr(
            "127.0.0.1",
            "example.test",
            port=server.port,
            keyring=keyring(),
            keyname="xfr-key",
            timeout=5,
            relativize=False,
        ),
        relativize=False,
    )
    assert zone.find_rdataset("www.example.test.", "A")[0].to_text() == "192.0.2.1"


def test_big_zone_streams_in_several_signed_messages(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        zones = tmp_path / "zones"
        text = (zones / "example.test.zone").read_text().replace(" 1 3600 600", " 2 3600 600")
        text += "".join(f"host{n} IN A 198.51.100.{n % 250}\n" for n in range(3000))
        (zones / "example.test.zone").write_text(text)
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        messages = axfr(node.port)
        assert len(messages) > 3 and all(m.had_tsig for m in messages)
        assert sum(len(rrset) for m in messages for rrset in m.answer) > 3000
        assert len(messages[0].question) == 1 and not messages[1].question
    finally:
        node.stop()


def test_unsigned_axfr_from_a_key_only_network_is_refused(server: ServerThread) -> None:
    query = dns.message.make_query("example.test", "AXFR")
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=True)
    assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED


def test_axfr_from_another_network_is_refused_even_when_signed(tmp_path: Path) -> None:
    node = start_node(tmp_path, "  allow:\n    - {network: 127.0.0.2/32, key: xfr-key}\n")
    try:
        query = signed_query("example.test", "AXFR")
        response = dns.query.tcp(query, "127.0.0.1", port=node.port, timeout=3)
        assert response.rcode() == dns.rcode.REFUSED and response.had_tsig
    finally:
        node.stop()


def test_network_rule_without_key_allows_unsigned(tmp_path: Path) -> None:
    node = start_node(tmp_path, "  allow:\n    - {network: 127.0.0.0/8}\n")
    try:
        query = dns.message.make_query("example.test", "AXFR")
        replies = raw_exchange(node.port, query.to_wire(), tcp=True)
        first = dns.message.from_wire(replies[0])
        assert first.rcode() == dns.rcode.NOERROR and first.answer[0].rdtype == dns.rdatatype.SOA
    finally:
        node.stop()


def test_axfr_with_bad_key_gets_notauth_badkey(server: ServerThread) -> None:
    query = signed_query("example.test", "AXFR", key="unknown-key")
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=True)
    reply = unverified(wire)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert tsig_rdata(reply).error == dns.rcode.BADKEY and tsig_rdata(reply).mac == b""  # type: ignore[attr-defined]


def test_axfr_with_wrong_secret_gets_badsig(server: ServerThread) -> None:
    query = signed_query("example.test", "AXFR", secret=OTHER_SECRET)
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=True)
    assert tsig_rdata(unverified(wire)).error == dns.rcode.BADSIG  # type: ignore[attr-defined]


def test_axfr_over_udp_is_refused(server: ServerThread) -> None:
    query = signed_query("example.test", "AXFR")
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.REFUSED and response.had_tsig and not response.answer


def test_axfr_of_a_name_that_is_not_a_zone_is_notauth(server: ServerThread) -> None:
    response = dns.query.tcp(
        signed_query("www.example.test", "AXFR"), "127.0.0.1", port=server.port, timeout=3
    )
    assert response.rcode() == dns.rcode.NOTAUTH


def test_fallback_mode_transfers_static_service_answers(tmp_path: Path) -> None:
    node = start_node(
        tmp_path,
        DEFAULT_TRANSFER + "  service_names: fallback\n  fallback_ttl: 120\n",
    )
    try:
        got = records(axfr(node.port))
        assert "gslb.example.test. A 192.0.2.71" in got
        assert "gslb.example.test. A 192.0.2.72" in got
        assert "gslb.example.test. AAAA 2001:db8::71" in got
    finally:
        node.stop()


def test_fallback_addresses_from_config(tmp_path: Path) -> None:
    node = start_node(
        tmp_path,
        DEFAULT_TRANSFER
        + "  service_names: fallback\n  fallback:\n    gslb.example.test.: [203.0.113.9]\n",
    )
    try:
        got = [line for line in records(axfr(node.port)) if line.startswith("gslb.")]
        assert got == ["gslb.example.test. A 203.0.113.9"]
    finally:
        node.stop()


# -- IXFR --------------------------------------------------------------------------------------


def ixfr(port: int, serial: int, tcp: bool = True) -> list[dns.message.Message]:
    query = signed_query("example.test", "IXFR")
    soa = dns.rrset.from_text(
        "example.test.",
        3600,
        "IN",
        "SOA",
        f"ns1.example.test. hostmaster.example.test. {serial} 3600 600 1209600 60",
    )
    query.authority.append(soa)
    wires = raw_exchange(port, query.to_wire(), tcp)
    messages: list[dns.message.Message] = []
    context = None
    for index, wire in enumerate(wires):
        # Every message is signed: the first answers our MAC, later ones continue the stream.
        message = dns.message.from_wire(
            wire,
            keyring=keyring(),
            request_mac=query.mac if index == 0 else b"",
            xfr=True,
            tsig_ctx=context,
            multi=len(wires) > 1,
            one_rr_per_rrset=True,
        )
        context = message.tsig_ctx
        messages.append(message)
    return messages


def bump(tmp_path: Path, serial: int, add: str = "", drop: str = "") -> None:
    path = tmp_path / "zones" / "example.test.zone"
    text = path.read_text()
    text = text.replace(" hostmaster 1 ", f" hostmaster {serial} ")
    for number in range(2, serial):
        text = text.replace(f" hostmaster {number} ", f" hostmaster {serial} ")
    if drop:
        text = "".join(line for line in text.splitlines(True) if not line.startswith(drop))
    path.write_text(text + add)


def test_ixfr_sends_the_difference_between_serials(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        bump(tmp_path, 2, add="new IN A 192.0.2.200\n", drop="mail ")
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        bump(tmp_path, 3, add="newer IN A 192.0.2.201\n")
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        got = records(ixfr(node.port, 1))
        assert [line.split()[1] for line in got] == ["SOA", "SOA", "A", "SOA", "A", "A", "SOA"]
        assert " 3 " in got[0] and " 1 " in got[1] and " 3 " in got[3]
        assert got[2] == "mail.example.test. A 192.0.2.25"  # deleted
        assert set(got[4:6]) == {
            "new.example.test. A 192.0.2.200",
            "newer.example.test. A 192.0.2.201",
        }  # added
        # From serial 2 only the second change.
        got = records(ixfr(node.port, 2))
        assert [line.split()[1] for line in got] == ["SOA", "SOA", "SOA", "A", "SOA"]
        assert got[3] == "newer.example.test. A 192.0.2.201"
    finally:
        node.stop()


def test_ixfr_verifies_with_dnspython_inbound_xfr(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        zone = dns.zone.from_xfr(
            dns.query.xfr(
                "127.0.0.1",
                "example.test",
                port=node.port,
                keyring=keyring(),
                keyname="xfr-key",
                timeout=5,
                relativize=False,
            ),
            relativize=False,
        )
        bump(tmp_path, 2, add="new IN A 192.0.2.200\n")
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        query, _ = dns.xfr.make_query(
            zone, keyring=keyring(), keyname=dns.name.from_text("xfr-key")
        )
        dns.query.inbound_xfr("127.0.0.1", zone, query, port=node.port, timeout=5)
        assert zone.find_rdataset("new.example.test.", "A")[0].to_text() == "192.0.2.200"
        assert zone.find_rdataset("example.test.", "SOA")[0].serial == 2
    finally:
        node.stop()


def test_ixfr_from_an_unknown_serial_is_a_full_transfer(server: ServerThread) -> None:
    got = records(ixfr(server.port, 0xFFFFFFF0))  # older than anything we kept
    assert got[0].split()[1] == "SOA" and got[-1] == got[0]
    assert len(got) == len(records(axfr(server.port)))


def test_ixfr_when_current_is_one_soa(server: ServerThread) -> None:
    messages = ixfr(server.port, 1)
    assert len(records(messages)) == 1 and messages[0].answer[0].rdtype == dns.rdatatype.SOA


def test_ixfr_over_udp_is_one_soa_to_retry_over_tcp(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        bump(tmp_path, 2, add="new IN A 192.0.2.200\n")
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        (message,) = ixfr(node.port, 1, tcp=False)
        assert [line.split()[1] for line in records([message])] == ["SOA"]
    finally:
        node.stop()


def test_ixfr_without_client_soa_is_formerr(server: ServerThread) -> None:
    response = dns.query.tcp(
        signed_query("example.test", "IXFR"), "127.0.0.1", port=server.port, timeout=3
    )
    assert response.rcode() == dns.rcode.FORMERR


# -- the journal -------------------------------------------------------------------------------


def version(serial: int, *names: str) -> transfer.ZoneVersion:
    soa = dns.rrset.from_text(
        "example.test.",
        60,
        "IN",
        "SOA",
        f"ns1.example.test. hostmaster.example.test. {serial} 3600 600 1209600 60",
    )
    recs = frozenset(
        (dns.name.from_text(n), 1, 60, dns.rdata.from_text("IN", "A", "192.0.2.1")) for n in names
    )
    return transfer.ZoneVersion(ORIGIN, soa, recs)


def test_journal_keeps_history_and_reports_changed_serials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = transfer.Journal(history=2)
    assert journal.publish({ORIGIN: version(1, "a.example.test")}) == []
    assert [v.serial for v in journal.publish({ORIGIN: version(2, "b.example.test")})] == [2]
    journal.publish({ORIGIN: version(3)})
    journal.publish({ORIGIN: version(4)})
    assert journal.find(ORIGIN, 1) is None and journal.find(ORIGIN, 2) is not None
    assert journal.publish({ORIGIN: version(4, "c.example.test")}) == []
    assert "changed but its serial 4 did not" in caplog.text
    journal.publish({ORIGIN: version(3)})
    assert "went backwards" in caplog.text and journal.find(ORIGIN, 4) is None
    # Serial arithmetic (RFC 1982): 0xFFFFFFFF -> 5 is forwards.
    journal.publish({ORIGIN: version(0xFFFFFFFF)})
    assert journal.publish({ORIGIN: version(5)})[0].serial == 5
    assert journal.find(ORIGIN, 0xFFFFFFFF) is not None


# -- config ------------------------------------------------------------------------------------


def test_transfer_config_errors_carry_file_and_line() -> None:
    raw = load_yaml_text(
        "transfer:\n"
        "  allow:\n"
        "    - {network: 10.0.0.1/8}\n"
        "    - {network: 127.0.0.1/32, key: nokey}\n"
        "  notify: [127.0.0.1, 'ns.example:53', {address: '127.0.0.1:53', key: nokey}]\n"
        "  service_names: sometimes\n"
        "  notify_retries: -1\n"
        "  fallback: {www.example.test.: [not-an-ip]}\n"
        "  colour: blue\n",
        "t.yaml",
    )["transfer"]
    key = make_key("xfr-key", b"0" * 32)
    _, reasons = transfer.parse_transfer(raw, Keyring({key.name: key}))
    text = [str(r) for r in reasons]
    assert any(t.startswith("t.yaml:9:") and "colour" in t for t in text)
    assert any(t.startswith("t.yaml:3:") and "host bits" in t for t in text)
    assert any(t.startswith("t.yaml:4:") and "no key 'nokey'" in t for t in text)
    assert sum("transfer.notify:" in t for t in text) == 2  # no port; not an IP address
    assert sum("transfer.notify.key" in t for t in text) == 1
    assert any(t.startswith("t.yaml:6:") and "must be one of omit, fallback" in t for t in text)
    assert any(t.startswith("t.yaml:7:") and "notify_retries" in t for t in text)
    assert any(t.startswith("t.yaml:8:") and "fallback" in t for t in text)


def test_gslb_check_validates_keys_and_transfer(tmp_path: Path) -> None:
    import io

    from gslb.steering.cli import run_check

    config = write_config(tmp_path, "  allow:\n    - {network: 127.0.0.1/32, key: missing}\n")
    out = io.StringIO()

    class Args:
        pass

    args = Args()
    args.config = str(config)  # type: ignore[attr-defined]
    args.zones = None  # type: ignore[attr-defined]
    args.geoip = None  # type: ignore[attr-defined]
    import os

    os.environ["GSLB_TEST_OTHER_SECRET"] = OTHER_SECRET
    assert run_check(args, out) == 1  # type: ignore[arg-type]
    assert "no key 'missing' in tsig_keys" in out.getvalue()
    assert f"{config}:" in out.getvalue()
    del os.environ["GSLB_TEST_OTHER_SECRET"]
    out = io.StringIO()
    assert run_check(args, out) == 1  # type: ignore[arg-type]
    assert "GSLB_TEST_OTHER_SECRET is not set" in out.getvalue()
    assert SECRET not in out.getvalue()


def test_reload_with_bad_transfer_config_keeps_the_old_one(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        write_config(tmp_path / "conf", "  allow: nonsense\n")
        assert not node.call(node.node.reload)  # type: ignore[union-attr]
        assert len(axfr(node.port)) >= 1
    finally:
        node.stop()


# -- NOTIFY ------------------------------------------------------------------------------------


def notify_query(zone: str) -> dns.message.Message:
    query = dns.message.make_query(zone, "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    query.flags |= dns.flags.AA
    return query


def test_incoming_notify_is_acknowledged_for_our_zones(server: ServerThread) -> None:
    response = dns.query.udp(notify_query("example.test"), "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR and response.opcode() == dns.opcode.NOTIFY
    assert response.flags & dns.flags.AA
    response = dns.query.udp(notify_query("example.org"), "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.NOTAUTH
    query = notify_query("example.test")
    query.use_tsig(keyring(), keyname="xfr-key")
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.had_tsig and response.rcode() == dns.rcode.NOERROR


class Secondary:
    """A UDP socket that records NOTIFYs and answers them after `ignore` silent ones."""

    def __init__(self, ignore: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.ignore = ignore
        self.received: list[dns.message.Message] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            message = dns.message.from_wire(data, keyring=keyring())
            self.received.append(message)
            if len(self.received) <= self.ignore:
                continue
            response = dns.message.make_response(message)
            self.sock.sendto(response.to_wire(), addr)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


def wait_for(predicate: object, deadline: float = 10.0) -> bool:
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_reload_with_new_serial_notifies_with_retries(tmp_path: Path) -> None:
    secondary = Secondary(ignore=1)
    node = start_node(
        tmp_path,
        DEFAULT_TRANSFER
        + f"  notify: [{{address: '127.0.0.1:{secondary.port}', key: xfr-key}}]\n"
        + "  notify_timeout: 0.2\n",
    )
    try:
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        assert not secondary.received  # same serial: nothing to say
        bump(tmp_path, 2)
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        notifier = node.node.notifier  # type: ignore[union-attr]
        assert notifier is not None
        assert wait_for(lambda: notifier.acknowledged == 1)
        assert len(secondary.received) >= 2  # the first went unanswered, so it was resent
        first = secondary.received[0]
        assert first.opcode() == dns.opcode.NOTIFY and first.had_tsig
        assert first.question[0].name == ORIGIN and first.answer[0][0].serial == 2
    finally:
        node.stop()
        secondary.close()


def test_notify_gives_up_after_its_retries(tmp_path: Path) -> None:
    secondary = Secondary(ignore=100)
    node = start_node(
        tmp_path,
        DEFAULT_TRANSFER
        + f"  notify: ['127.0.0.1:{secondary.port}']\n"
        + "  notify_timeout: 0.05\n  notify_retries: 2\n",
    )
    try:
        bump(tmp_path, 2)
        assert node.call(node.node.reload)  # type: ignore[union-attr]
        notifier = node.node.notifier  # type: ignore[union-attr]
        assert notifier is not None
        assert wait_for(lambda: notifier.failed == 1)
        assert wait_for(lambda: len(secondary.received) == 3)  # the first and 2 resends
        assert not secondary.received[0].had_tsig  # no key named: unsigned
    finally:
        node.stop()
        secondary.close()


def test_protocol_events_are_exported_as_metrics(server: ServerThread) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gslb.admin.metrics import DnsCollector
    from gslb.dns.status import NodeStatus

    axfr(server.port)
    raw_exchange(server.port, signed_query("example.test", "AXFR", key="no-key").to_wire(), True)
    raw_exchange(server.port, dns.message.make_query("example.test", "AXFR").to_wire(), True)
    dns.query.udp(notify_query("example.test"), "127.0.0.1", port=server.port, timeout=3)
    assert server.node is not None
    counters = server.call(lambda: NodeStatus(server.node).dns_counters())
    events = counters.protocol
    assert events["axfr"] == 1 and events["tsig_badkey"] == 1 and events["tsig_verified"] == 1
    assert events["transfer_refused"] == 1 and events["notify_received"] == 1
    registry = CollectorRegistry()
    registry.register(DnsCollector(lambda: counters))
    text = generate_latest(registry).decode()
    assert 'gslb_dns_protocol_events_total{event="axfr",worker="0"} 1.0' in text


def test_a_repeated_transfer_gets_its_own_id_flags_and_question_case(server: ServerThread) -> None:
    first = axfr(server.port)
    query = signed_query("ExAmple.TEST", "AXFR")
    query.flags &= ~dns.flags.RD
    wires = raw_exchange(server.port, query.to_wire(), tcp=True)
    replies = [unverified(wire) for wire in wires]
    assert all(reply.id == query.id for reply in replies)
    assert not replies[0].flags & dns.flags.RD and replies[0].flags & dns.flags.AA
    assert wires[0][12:26] == b"\x07ExAmple\x04TEST\x00"
    assert len(replies) == len(first)
