"""The responder with signers: caches keyed by DO, truncation, the signing window, reloads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.rrset
import dns.zone

from gslb.clock import FakeClock
from gslb.dns.node import NodeOptions
from gslb.dns.responder import Responder
from gslb.dnssec.keys import generate_key, write_key
from gslb.dnssec.settings import DAY, DnssecSettings
from gslb.dnssec.signer import build_signers, key_records, publish_keys
from gslb.zone.lookup import ZoneSet

from .dnshelpers import ServerThread

ORIGIN = dns.name.from_text("example.test.")
BIG = " ".join(f'"{"x" * 200}"' for _ in range(2))  # ~400 bytes: fits 512 unsigned, not signed
ZONE_TEXT = f"""\
$ORIGIN example.test.
$TTL 300
@     3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@     3600 IN NS  ns1
ns1        IN A   192.0.2.53
static     IN A   192.0.2.10
big        IN TXT {BIG}
"""
START = 1_800_000_000.0


def responder(clock: FakeClock) -> Responder:
    settings = DnssecSettings(key_dir="x")
    keys = [generate_key(ORIGIN, now=clock.time())]
    zone = dns.zone.from_text(ZONE_TEXT, origin=ORIGIN, relativize=False)
    publish_keys(zone, key_records(ORIGIN, keys, clock.time(), settings))
    zoneset = ZoneSet({"example.test.": zone})
    signers = build_signers(zoneset.zones, {ORIGIN: keys}, settings, clock)
    return Responder(zoneset, signers=signers)


def ask(
    r: Responder, name: str, rdtype: str = "A", do: bool = True, payload: int = 1232
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0, payload=payload)
    reply = r.handle_udp(query.to_wire(), "127.0.0.1")
    assert reply is not None
    return dns.message.from_wire(reply)


def rrsig_of(message: dns.message.Message) -> dns.rrset.RRset:
    return next(r for r in message.answer if r.rdtype == dns.rdatatype.RRSIG)


def test_caches_keep_signed_and_unsigned_answers_apart() -> None:
    r = responder(FakeClock(START))
    for _ in range(3):  # the second and third come from the packet cache
        assert [x.rdtype for x in ask(r, "static.example.test", do=False).answer] == [1]
        assert [x.rdtype for x in ask(r, "static.example.test").answer] == [1, 46]
    assert ask(r, "nope.example.test", do=False).rcode() == 3
    assert ask(r, "nope.example.test").rcode() == 0  # compact denial
    assert ask(r, "nope.example.test", do=False).rcode() == 3


def test_signed_answer_too_big_for_udp_is_truncated_whole() -> None:
    r = responder(FakeClock(START))
    unsigned = ask(r, "big.example.test", "TXT", do=False, payload=512)
    assert not unsigned.flags & dns.flags.TC and unsigned.answer
    signed = ask(r, "big.example.test", "TXT", payload=512)
    assert signed.flags & dns.flags.TC
    assert not signed.answer  # never a TXT without its RRSIG (RFC 4035 3.1.1)
    full = ask(r, "big.example.test", "TXT", payload=1232)
    assert not full.flags & dns.flags.TC
    assert [x.rdtype for x in full.answer] == [16, 46]


def test_cached_answers_never_outlive_their_signatures() -> None:
    clock = FakeClock(START)
    r = responder(clock)
    keys: dict[dns.name.Name, Any] = {ORIGIN: ask(r, "example.test", "DNSKEY").answer[0]}
    seen = set()
    for _ in range(60):  # 60 steps of 3.1 hours: several signing windows
        message = ask(r, "static.example.test")
        answer, rrsig = message.answer
        sig = rrsig[0]
        assert sig.inception < clock.time() < sig.expiration - 2 * DAY + 1
        dns.dnssec.validate(answer, rrsig, keys, now=clock.time())
        seen.add(sig.expiration)
        clock.advance(3.1 * 3600)
    assert len(seen) >= 2  # re-signed in a new window, not served from the cache


def test_reload_publishes_a_prepublished_key_and_rolls(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old = generate_key(ORIGIN)
    write_key(old, keys)
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE_TEXT)
    options = NodeOptions(
        zones_dir=str(zones), listen=["127.0.0.1:0"], health_monitor=False, dnssec_keys=str(keys)
    )
    server = ServerThread(options).start()
    try:

        def query(name: str, rdtype: str) -> dns.message.Message:
            q = dns.message.make_query(name, rdtype, want_dnssec=True)
            return dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)

        def tags() -> tuple[list[int], list[int]]:
            published = sorted(
                dns.dnssec.key_id(k) for k in query("example.test", "DNSKEY").answer[0]
            )
            signing = [s.key_tag for s in rrsig_of(query("static.example.test", "A"))]
            return published, signing

        assert tags() == ([old.tag], [old.tag])
        # Pre-publish a new CSK that activates in a day, and reload.
        now = int(old.timing["Created"] or 0)
        new = generate_key(ORIGIN, publish=now, activate=now + 86400)
        write_key(new, keys)
        assert server.call(server.node.reload) is True  # type: ignore[union-attr]
        assert tags() == (sorted([old.tag, new.tag]), [old.tag])
        # Roll: the new key signs, the old one stays published until its signatures expire.
        write_key(new.with_timing(Activate=now), keys)
        write_key(old.with_timing(Inactive=now, Delete=now + 8 * 86400), keys)
        assert server.call(server.node.reload) is True  # type: ignore[union-attr]
        assert tags() == (sorted([old.tag, new.tag]), [new.tag])
        # A world-readable private key is refused and the node keeps its keys.
        os.chmod(keys / f"{new.basename}.private", 0o644)
        assert server.call(server.node.reload) is False  # type: ignore[union-attr]
        assert tags() == (sorted([old.tag, new.tag]), [new.tag])
    finally:
        server.stop()


def test_top_level_dnssec_section_signs_with_keys_beside_the_config(tmp_path: Path) -> None:
    from gslb.dns.node import load_generation
    from gslb.errors import ConfigError
    from gslb.health.snapshot import HealthHolder

    from .dnshelpers import two_datacenter_config

    write_key(generate_key(ORIGIN), tmp_path / "keys")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE_TEXT)
    geoip = Path(__file__).resolve().parent.parent / "geodata" / "gslb-test-city.mmdb"
    config = tmp_path / "gslb.yaml"
    config.write_text(two_datacenter_config(geoip) + "dnssec:\n  key_dir: keys\n")
    options = NodeOptions(
        zones_dir=str(zones), config_path=str(config), listen=["127.0.0.1:0"], health_monitor=False
    )
    server = ServerThread(options).start()
    try:
        q = dns.message.make_query("static.example.test", "A", want_dnssec=True)
        response = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
        assert [r.rdtype for r in response.answer] == [1, 46]
        q = dns.message.make_query("www.example.test", "A", want_dnssec=True)
        response = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
        assert [r.rdtype for r in response.answer] == [1, 46]  # the GSLB answer is signed
    finally:
        server.stop()
    config.write_text(
        two_datacenter_config(geoip)
        + "dnssec:\n  key_dir: keys\ndns:\n  dnssec:\n    key_dir: keys\n"
    )
    try:
        load_generation(options, HealthHolder())
    except ConfigError as exc:
        assert "set either `dnssec:` or `dns.dnssec:`, not both" in str(exc)
        assert f"{config}:" in str(exc)
    else:
        raise AssertionError("both dnssec sections were accepted")
