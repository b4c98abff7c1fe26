"""The signer, its cache and compact denial, against dnspython's validator and a fake clock."""

from __future__ import annotations

import struct

import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from gslb.clock import FakeClock
from gslb.dns.answer import Answer, resolve
from gslb.dns.render import render
from gslb.dnssec import denial
from gslb.dnssec.cache import SignatureCache, content_key
from gslb.dnssec.keys import ECDSAP256SHA256, ED25519, DnssecKey, generate_key
from gslb.dnssec.settings import DAY, DnssecSettings, parse_dnssec
from gslb.dnssec.signer import Signers, build_signers, key_records, publish_keys
from gslb.zone.lookup import ZoneSet

ZONE_TEXT = """\
$ORIGIN example.test.
$TTL 300
@     3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@     3600 IN NS  ns1
ns1        IN A   192.0.2.53
static     IN A   192.0.2.10
docs       IN CNAME static
dangling   IN CNAME nothere
*.apps     IN A   192.0.2.80
a.b.c      IN A   192.0.2.5
lab        IN NS  ns.lab
ns.lab     IN A   203.0.113.53
secure     IN NS  ns.secure
secure     IN DS  12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.secure  IN A   203.0.113.54
"""
ORIGIN = dns.name.from_text("example.test.")
START = 1_800_000_000.0


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ORIGIN)


def build(
    clock: FakeClock, keys: list[DnssecKey] | None = None, settings: DnssecSettings | None = None
) -> tuple[ZoneSet, Signers, list[DnssecKey]]:
    settings = settings or DnssecSettings(key_dir="unused")
    keys = keys or [generate_key(ORIGIN, now=clock.time())]
    zone = dns.zone.from_text(ZONE_TEXT, origin=ORIGIN, relativize=False)
    publish_keys(zone, key_records(ORIGIN, keys, clock.time(), settings))
    zoneset = ZoneSet({"example.test.": zone}, ["www.example.test."])
    signers = build_signers(zoneset.zones, {ORIGIN: keys}, settings, clock, ["www.example.test."])
    return zoneset, signers, keys


def dnskeys(zoneset: ZoneSet) -> dns.rrset.RRset:
    rrset = zoneset.zones[ORIGIN].rrset(ORIGIN, dns.rdatatype.DNSKEY)
    assert rrset is not None
    return rrset


def validate(zoneset: ZoneSet, rrset: dns.rrset.RRset, rrsig: dns.rrset.RRset, now: float) -> None:
    dns.dnssec.validate(rrset, rrsig, {ORIGIN: dnskeys(zoneset)}, now=now)


@pytest.mark.parametrize("algorithm", [ECDSAP256SHA256, ED25519])
def test_rrsets_validate_and_share_one_signature(algorithm: int) -> None:
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock, keys=[generate_key(ORIGIN, algorithm, now=START)])
    signer = signers.for_name(n("www"))
    assert signer is not None
    first = dns.rrset.from_text(n("www"), 30, "IN", "A", "192.0.2.11")
    rrsig = signer.rrsigs(first)
    assert rrsig is not None
    validate(zoneset, first, rrsig, clock.time())
    # Another GSLB variant with the same content (another ECS network) hits the cache.
    again = dns.rrset.from_text(n("WWW"), 30, "IN", "A", "192.0.2.11")
    assert signer.rrsigs(again) is rrsig
    assert (signers.cache.hits, signers.cache.misses) == (1, 1)
    # Different content, different signature.
    other = dns.rrset.from_text(n("www"), 30, "IN", "A", "192.0.2.21")
    assert signer.rrsigs(other) is not rrsig
    assert signers.cache.misses == 2
    validate(zoneset, dnskeys(zoneset), signer.rrsigs(dnskeys(zoneset)), clock.time())  # type: ignore[arg-type]


def test_no_expired_or_future_signature_is_ever_served() -> None:
    settings = DnssecSettings(key_dir="x", validity=7 * DAY, inception_offset=3600, refresh=2 * DAY)
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock, settings=settings)
    signer = signers.for_name(ORIGIN)
    assert signer is not None
    rrset = dns.rrset.from_text(n("static"), 300, "IN", "A", "192.0.2.10")
    for _ in range(200):  # 200 steps of 1.3 hours: more than five signing windows
        rrsig = signer.rrsigs(rrset)
        assert rrsig is not None
        now = clock.time()
        sig = rrsig[0]
        assert sig.inception <= now - 3600
        assert sig.expiration - now >= 2 * DAY  # never less than `refresh` left
        validate(zoneset, rrset, rrsig, now)
        assert signers.valid_until() > now
        clock.advance(4700)


def test_answers_cached_past_the_window_are_dropped() -> None:
    clock = FakeClock(START)
    _, signers, _ = build(clock)
    until = signers.valid_until()
    assert until > clock.time()
    clock.now = until
    assert signers.valid_until() > until  # a new window


def test_cache_is_bounded_and_evicts_oldest() -> None:
    cache = SignatureCache(2)
    one, two, three = (
        dns.rrset.from_text(n(name), 60, "IN", "A", "192.0.2.1") for name in ("a", "b", "c")
    )
    for rrset in (one, two, three):
        cache.put(content_key(rrset), rrset)
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.get(content_key(one)) is None
    assert cache.get(content_key(three)) is three
    assert (cache.hits, cache.misses) == (1, 1)
    # TTL and rdata order matter as they should: TTL does, order does not.
    ab = dns.rrset.from_text(n("a"), 60, "IN", "A", "192.0.2.1", "192.0.2.2")
    ba = dns.rrset.from_text(n("A"), 60, "IN", "A", "192.0.2.2", "192.0.2.1")
    assert content_key(ab) == content_key(ba)
    assert content_key(ab) != content_key(dns.rrset.from_text(n("a"), 61, "IN", "A", "192.0.2.1"))


def test_compact_denial_records() -> None:
    name = n("nope")
    nsec = denial.nxname(name, 60)
    assert nsec[0].next == dns.name.Name((b"\x00",) + name.labels)
    assert nsec[0].to_text().endswith("RRSIG NSEC NXNAME")
    nodata = denial.nodata(n("static"), {dns.rdatatype.A}, 60)
    assert nodata[0].to_text().endswith("A RRSIG NSEC")
    covering = denial.covering(n("b.apps"), 60)
    owner, next_name = covering.name, covering[0].next
    assert owner < n("b.apps") < n("x.b.apps") < next_name < n("c.apps")
    assert denial.predecessor(n("a[.x")) < n("a[.x")  # not confused by upper-case sorting


def lookup_signed(
    zoneset: ZoneSet, signers: Signers, name: str, qtype: str
) -> tuple[Answer, dns.message.Message]:
    """The answer core's Answer, rendered through the DNSSEC seam as for a DO=1 query."""
    qname = n(name)
    answer = resolve(zoneset, None, qname, dns.rdatatype.from_text(qtype))
    assert isinstance(answer, Answer) and answer.zone is not None
    rendered = render(answer, True, signers[answer.zone])
    wire = struct.pack("!HH", 0, rendered.flags) + rendered.body
    return answer, dns.message.from_wire(wire)


def test_negative_answers_carry_compact_denial() -> None:
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock)
    _, nx = lookup_signed(zoneset, signers, "nope", "A")
    assert nx.rcode() == 0  # NXDOMAIN answered as NODATA (RFC 9824)
    types = [(r.name, r.rdtype) for r in nx.authority]
    assert (n("nope"), dns.rdatatype.NSEC) in types
    assert [r for r in nx.authority if r.rdtype == dns.rdatatype.RRSIG]
    _, ent = lookup_signed(zoneset, signers, "b.c", "A")  # empty non-terminal
    nsec = next(r for r in ent.authority if r.rdtype == dns.rdatatype.NSEC)
    assert nsec[0].to_text().endswith("RRSIG NSEC")
    _, ds = lookup_signed(zoneset, signers, "lab", "DS")
    nsec = next(r for r in ds.authority if r.rdtype == dns.rdatatype.NSEC)
    assert nsec[0].to_text().endswith("NS RRSIG NSEC")
    _, referral = lookup_signed(zoneset, signers, "x.lab", "A")
    kinds = [(r.name, r.rdtype) for r in referral.authority]
    assert kinds[0] == (n("lab"), dns.rdatatype.NS)
    assert (n("lab"), dns.rdatatype.NSEC) in kinds
    assert not referral.additional or all(
        r.rdtype != dns.rdatatype.RRSIG for r in referral.additional
    )
    _, service = lookup_signed(zoneset, signers, "www", "TXT")
    nsec = next(r for r in service.authority if r.rdtype == dns.rdatatype.NSEC)
    assert "A AAAA" in nsec[0].to_text()


def test_referral_to_a_signed_child_carries_its_signed_ds() -> None:
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock)
    _, referral = lookup_signed(zoneset, signers, "www.secure", "A")
    kinds = [(r.name, r.rdtype, r.covers) for r in referral.authority]
    assert kinds == [
        (n("secure"), dns.rdatatype.NS, 0),
        (n("secure"), dns.rdatatype.DS, 0),
        (n("secure"), dns.rdatatype.RRSIG, dns.rdatatype.DS),
    ]
    assert [r.rdtype for r in referral.additional] == [dns.rdatatype.A]  # glue, unsigned
    ds, rrsig = referral.authority[1:]
    validate(zoneset, ds, rrsig, clock.time())


def test_cname_to_a_missing_name_denies_the_target() -> None:
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock)
    _, signed = lookup_signed(zoneset, signers, "dangling", "A")
    assert signed.rcode() == 0
    assert [r.rdtype for r in signed.answer] == [dns.rdatatype.CNAME, dns.rdatatype.RRSIG]
    nsec = next(r for r in signed.authority if r.rdtype == dns.rdatatype.NSEC)
    assert nsec.name == n("nothere")
    assert nsec[0].to_text().endswith("NXNAME")
    rrsig = next(r for r in signed.authority if r.rdtype == dns.rdatatype.RRSIG and r.covers == 47)
    validate(zoneset, nsec, rrsig, clock.time())


def test_wildcard_answer_signed_as_the_wildcard_with_proof() -> None:
    clock = FakeClock(START)
    zoneset, signers, _ = build(clock)
    _, signed = lookup_signed(zoneset, signers, "x.y.apps", "A")
    answer, rrsig = signed.answer
    assert rrsig[0].labels == 3  # *.apps.example.test: the validator re-creates the wildcard
    wildcard = dns.rrset.RRset(n("*.apps"), answer.rdclass, answer.rdtype)
    wildcard.update(answer)  # type: ignore[no-untyped-call]
    wildcard_sig = dns.rrset.RRset(n("*.apps"), rrsig.rdclass, rrsig.rdtype, rrsig.covers)
    wildcard_sig.update(rrsig)  # type: ignore[no-untyped-call]
    validate(zoneset, wildcard, wildcard_sig, clock.time())
    nsec = next(r for r in signed.authority if r.rdtype == dns.rdatatype.NSEC)
    assert nsec.name < n("y.apps") < nsec[0].next  # covers the next closer name


def test_split_keys_sign_dnskey_with_ksk_and_data_with_zsk() -> None:
    clock = FakeClock(START)
    ksk = generate_key(ORIGIN, sep=True, now=START)
    zsk = generate_key(ORIGIN, sep=False, now=START)
    prepublished = generate_key(ORIGIN, sep=False, now=START, activate=int(START) + 3600)
    zoneset, signers, _ = build(clock, keys=[ksk, zsk, prepublished])
    signer = signers.for_name(ORIGIN)
    assert signer is not None
    assert len(dnskeys(zoneset)) == 3  # the pre-published key is in the DNSKEY RRset
    key_sig = signer.rrsigs(dnskeys(zoneset))
    data_sig = signer.rrsigs(dns.rrset.from_text(n("static"), 300, "IN", "A", "192.0.2.10"))
    assert key_sig is not None and data_sig is not None
    assert [s.key_tag for s in key_sig] == [ksk.tag]
    assert [s.key_tag for s in data_sig] == [zsk.tag]


def test_zone_without_active_key_stays_unsigned() -> None:
    clock = FakeClock(START)
    future = generate_key(ORIGIN, now=START, publish=int(START) + 10, activate=int(START) + 10)
    _, signers, _ = build(clock, keys=[future])
    assert not signers
    assert signers.for_name(ORIGIN) is None


def test_settings_validation() -> None:
    settings, reasons = parse_dnssec({"key_dir": "k", "validity": 86400, "refresh": 3600})
    assert not reasons and settings.enabled and settings.validity == 86400
    _, reasons = parse_dnssec({"key_dir": "k", "validity": 7200, "refresh": 7200, "bogus": 1})
    messages = sorted(str(r) for r in reasons)
    assert any("dns.dnssec.bogus: unknown key" in m for m in messages)
    assert any("dns.dnssec.refresh: must be less than validity" in m for m in messages)
    settings, reasons = parse_dnssec({"validity": "7d", "refresh": "2d"})  # durations, like others
    assert not reasons and (settings.validity, settings.refresh) == (7 * 86400, 2 * 86400)
    _, reasons = parse_dnssec({"validity": "a week"})
    assert reasons and "duration" in str(reasons[0])


@pytest.mark.parametrize("text", ["a", "zz", "a\\000", "\\255"])
def test_epsilon_functions_order(text: str) -> None:
    name = n(f"{text}.apps")
    assert denial.predecessor(name) < name < denial.successor(name)
    assert denial.after_subtree(name) > n(f"x.{text}.apps")
