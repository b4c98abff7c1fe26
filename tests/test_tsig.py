"""TSIG (RFC 8945): keys from config, signed queries and responses, BADKEY/BADSIG/BADTIME."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest

from gslb.clock import FakeClock
from gslb.config.yaml_loader import load_yaml_text
from gslb.dns import tsig

from .dnshelpers import ServerThread
from .xfrhelpers import (
    KEY_NAME,
    OTHER_SECRET,
    SECRET,
    hmac_sha256_mac,
    raw_exchange,
    signed_query,
    start_node,
    tsig_rdata,
    unverified,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    node = start_node(tmp_path)
    yield node
    node.stop()


# -- config ------------------------------------------------------------------------------------


def parse(text: str, env: dict[str, str] | None = None) -> tuple[tsig.Keyring, list[str]]:
    raw = load_yaml_text(text, "keys.yaml")["tsig_keys"]
    keyring, reasons = tsig.parse_tsig_keys(raw, env or {})
    return keyring, [str(r) for r in reasons]


def test_keys_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(SECRET + "\n")
    keyring, reasons = parse(
        f"tsig_keys:\n  - {{name: a.key, secret_file: {tmp_path / 'k'}}}\n"
        "  - {name: B.Key., algorithm: hmac-sha384, secret_env: SECRET_B}\n",
        {"SECRET_B": OTHER_SECRET},
    )
    assert reasons == []
    a, b = keyring.get("a.key"), keyring.get("b.key")
    assert a is not None and b is not None
    assert a.algorithm == dns.tsig.HMAC_SHA256 and b.algorithm == dns.tsig.HMAC_SHA384
    assert a.key.secret == base64.b64decode(SECRET)


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(SECRET)
    keyring, _ = parse(f"tsig_keys:\n  - {{name: a.key, secret_file: {tmp_path / 'k'}}}\n")
    key = keyring.get("a.key")
    assert SECRET not in repr(keyring) and SECRET not in repr(key)
    (tmp_path / "bad").write_text("not*base64*" + SECRET)
    _, reasons = parse(f"tsig_keys:\n  - {{name: a.key, secret_file: {tmp_path / 'bad'}}}\n")
    assert len(reasons) == 1 and "not base64" in reasons[0]
    assert SECRET not in reasons[0]


def test_bad_keys_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "short").write_text(base64.b64encode(b"short").decode())
    _, reasons = parse(
        "tsig_keys:\n"
        "  - {name: a.key, algorithm: hmac-md5, secret_env: X}\n"
        f"  - {{name: b.key, secret_file: {tmp_path / 'short'}}}\n"
        "  - {name: c.key, secret_env: UNSET}\n"
        "  - {name: d.key}\n"
        f"  - {{name: e.key, secret_env: X, secret_file: {tmp_path / 'short'}}}\n"
        "  - {name: f.key, secret_file: /nonexistent/key}\n"
        "  - {name: g.key, secret_env: X, colour: blue}\n"
        "  - {name: g.key, secret_env: X}\n",
        {"X": SECRET},
    )
    assert reasons[0].startswith("keys.yaml:2:") and "hmac-md5" in reasons[0]
    assert "keys.yaml:3:" in reasons[1] and "at least 16" in reasons[1]
    assert "keys.yaml:4:" in reasons[2] and "UNSET is not set" in reasons[2]
    assert "keys.yaml:5:" in reasons[3] and "exactly one" in reasons[3]
    assert "keys.yaml:6:" in reasons[4] and "exactly one" in reasons[4]
    assert "keys.yaml:7:" in reasons[5] and "cannot read" in reasons[5]
    assert "keys.yaml:8:" in reasons[6] and "tsig_keys[6].colour: unknown key" in reasons[6]
    assert "keys.yaml:9:" in reasons[7] and "duplicate" in reasons[7]
    assert len(reasons) == 8


# -- pure verify and sign ----------------------------------------------------------------------


def test_verify_and_sign_round_trip_with_dnspython() -> None:
    key = tsig.make_key(KEY_NAME, base64.b64decode(SECRET))
    ring = tsig.Keyring({key.name: key})
    query = signed_query("www.example.test", "A")
    data = query.to_wire()
    envelope = tsig.read_envelope(data)
    clock = FakeClock(query.tsig[0].time_signed)  # type: ignore[index]
    verdict = tsig.verify(data, envelope, ring, clock)
    assert verdict.ok and verdict.key == key
    # The stripped query is the same query without its TSIG.
    stripped = dns.message.from_wire(envelope.stripped(data))
    assert stripped.tsig is None and stripped.question == query.question
    # Our signature over a response validates in dnspython.
    response = dns.message.make_response(stripped)
    signed = tsig.Signer(key, verdict.request_mac, clock).sign(response.to_wire())
    check = dns.message.from_wire(signed, keyring={key.name: key.key}, request_mac=query.mac)
    assert check.had_tsig


def test_time_is_checked_only_after_the_mac() -> None:
    key = tsig.make_key(KEY_NAME, base64.b64decode(SECRET))
    ring = tsig.Keyring({key.name: key})
    query = signed_query("www.example.test", "A")
    data = query.to_wire()
    late = FakeClock(query.tsig[0].time_signed + 301)  # type: ignore[index]
    assert tsig.verify(data, tsig.read_envelope(data), ring, late).error == tsig.BADTIME
    forged = signed_query("www.example.test", "A", secret=OTHER_SECRET).to_wire()
    assert tsig.verify(forged, tsig.read_envelope(forged), ring, late).error == tsig.BADSIG


def test_tsig_must_be_the_last_record() -> None:
    query = signed_query("www.example.test", "A")
    data = query.to_wire()
    # Append a second additional record after the TSIG (an empty OPT) and count it.
    extra = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    arcount = struct.unpack_from("!H", data, 10)[0] + 1
    bad = data[:10] + struct.pack("!H", arcount) + data[12:] + extra
    with pytest.raises(tsig.Malformed):
        tsig.read_envelope(bad)


# -- over real sockets -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_signed_query_gets_a_signed_answer(server: ServerThread, transport: str) -> None:
    query = signed_query("www.example.test", "A", use_edns=0)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    # dnspython verifies the response's TSIG against the query's MAC, or raises.
    response = send(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.had_tsig and response.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in response.answer[0]] == ["192.0.2.1"]


def test_signed_query_for_a_service_and_a_negative_answer(server: ServerThread) -> None:
    for name, rcode in (("gslb.example.test", 0), ("missing.example.test", 3)):
        response = dns.query.udp(signed_query(name, "A"), "127.0.0.1", port=server.port, timeout=3)
        assert response.had_tsig and response.rcode() == rcode


def test_signed_response_too_big_for_udp_is_truncated_and_signed(server: ServerThread) -> None:
    query = signed_query("big.example.test", "TXT")  # no EDNS: 512 bytes
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.had_tsig and response.flags & dns.flags.TC and not response.answer
    query = signed_query("big.example.test", "TXT", use_edns=0, payload=1232)
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=False)
    assert len(wire) <= 1232
    response = dns.message.from_wire(wire, keyring=query.keyring, request_mac=query.mac)
    assert response.had_tsig and response.flags & dns.flags.TC
    response = dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.had_tsig and len(response.answer[0]) == 6
    # A client offering more than our edns_payload still gets at most 1232 bytes, TSIG included.
    query = signed_query("big.example.test", "TXT", use_edns=0, payload=4096)
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=False)
    assert len(wire) <= 1232


def test_unknown_key_gets_notauth_with_unsigned_badkey(server: ServerThread) -> None:
    query = signed_query("www.example.test", "A", key="nobody-key")
    for tcp in (False, True):
        (wire,) = raw_exchange(server.port, query.to_wire(), tcp)
        reply = unverified(wire)
        assert reply.rcode() == dns.rcode.NOTAUTH and reply.id == query.id
        rdata = tsig_rdata(reply)
        assert rdata.error == dns.rcode.BADKEY and rdata.mac == b""  # type: ignore[attr-defined]
        assert reply.tsig[0] and reply.tsig.name == dns.name.from_text("nobody-key")  # type: ignore[index,union-attr]
        assert not reply.answer and reply.question == query.question


def test_wrong_algorithm_is_badkey(server: ServerThread) -> None:
    query = dns.message.make_query("www.example.test", "A")
    query.use_tsig(
        {dns.name.from_text(KEY_NAME): base64.b64decode(SECRET)}, algorithm=dns.tsig.HMAC_SHA512
    )
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=False)
    assert tsig_rdata(unverified(wire)).error == dns.rcode.BADKEY  # type: ignore[attr-defined]


def test_wrong_secret_gets_unsigned_badsig(server: ServerThread) -> None:
    query = signed_query("www.example.test", "A", secret=OTHER_SECRET)
    (wire,) = raw_exchange(server.port, query.to_wire(), tcp=False)
    reply = unverified(wire)
    rdata = tsig_rdata(reply)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert rdata.error == dns.rcode.BADSIG and rdata.mac == b""  # type: ignore[attr-defined]


def test_stale_time_gets_signed_badtime_with_our_clock(server: ServerThread) -> None:
    key = tsig.make_key(KEY_NAME, base64.b64decode(SECRET))
    then = int(FakeClock().time())  # 1970: far outside the fudge
    query = dns.message.make_query("www.example.test", "A")
    data = tsig.Signer(key, b"", FakeClock(then)).sign(query.to_wire())
    request_mac = tsig_rdata(unverified(data)).mac  # type: ignore[attr-defined]
    (wire,) = raw_exchange(server.port, data, tcp=False)
    reply = unverified(wire)
    rdata = tsig_rdata(reply)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert rdata.error == dns.rcode.BADTIME  # type: ignore[attr-defined]
    assert rdata.time_signed == then  # type: ignore[attr-defined]  # the request's, echoed
    (high, low) = struct.unpack("!HI", rdata.other)  # type: ignore[attr-defined]
    server_time = (high << 32) | low
    assert abs(server_time - int(__import__("time").time())) < 60
    assert rdata.mac == hmac_sha256_mac(wire, request_mac)  # type: ignore[attr-defined]


def test_tsig_without_keys_configured_is_badkey(dns_server: ServerThread) -> None:
    """Fault 8: no keys at all still answers BADKEY per RFC 8945, not a bare NOTAUTH."""
    (wire,) = raw_exchange(dns_server.port, signed_query("www.example.test", "A").to_wire(), False)
    reply = unverified(wire)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert tsig_rdata(reply).error == dns.rcode.BADKEY  # type: ignore[attr-defined]


def test_malformed_tsig_is_formerr(server: ServerThread) -> None:
    data = signed_query("www.example.test", "A").to_wire()
    reply = raw_exchange(server.port, data[:-3], tcp=False)[0]  # cut into the TSIG rdata
    assert reply[3] & 0xF == dns.rcode.FORMERR


def test_tsig_not_last_is_formerr_over_the_wire(server: ServerThread) -> None:
    data = signed_query("www.example.test", "A").to_wire()
    extra = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # an OPT after the TSIG
    arcount = struct.unpack_from("!H", data, 10)[0] + 1
    bad = data[:10] + struct.pack("!H", arcount) + data[12:] + extra
    (reply,) = raw_exchange(server.port, bad, tcp=False)
    assert reply[:2] == data[:2] and reply[3] & 0xF == dns.rcode.FORMERR


def test_truncated_mac_gets_signed_badtrunc(server: ServerThread) -> None:
    query = signed_query("www.example.test", "A")
    data = query.to_wire()
    envelope = tsig.read_envelope(data)
    assert envelope.tsig is not None
    short = envelope.tsig.replace(mac=envelope.tsig.mac[:16])  # legal length, below our policy
    unsigned = envelope.stripped(data)
    assert envelope.tsig_owner is not None
    (wire,) = raw_exchange(
        server.port, tsig.append_tsig(unsigned, envelope.tsig_owner, short), False
    )
    reply = unverified(wire)
    rdata = tsig_rdata(reply)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert rdata.error == dns.rcode.BADTRUNC and len(rdata.mac) == 32  # type: ignore[attr-defined]
    assert rdata.mac == hmac_sha256_mac(wire, envelope.tsig.mac[:16])  # type: ignore[attr-defined]


def test_relative_secret_file_is_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.b64").write_text(SECRET)
    config = tmp_path / "gslb.yaml"
    config.write_text("tsig_keys:\n  - {name: a.key, secret_file: keys/k.b64}\n")
    from gslb.config.yaml_loader import load_yaml_file

    keyring, reasons = tsig.parse_tsig_keys(load_yaml_file(str(config))["tsig_keys"], {})
    assert reasons == [] and keyring.get("a.key") is not None
