"""Response rate limiting with a fake clock: buckets, slip, window, classes, bounds, config."""

from __future__ import annotations

import ipaddress
import logging
import random

import pytest

from gslb.clock import FakeClock
from gslb.config.yaml_loader import load_yaml_text
from gslb.dns.rrl import (
    DEFAULT_RATE,
    ResponseClass,
    ResponseRateLimiter,
    RrlSettings,
    Verdict,
    parse_rrl,
)

SEND, DROP, SLIP = Verdict.SEND, Verdict.DROP, Verdict.SLIP
A = ResponseClass.ANSWER
WWW = b"\x03www\x07example\x04test\x00"
API = b"\x03api\x07example\x04test\x00"
ZONE = b"\x07example\x04test\x00"


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def make(clock: FakeClock | None = None, **kw: object) -> ResponseRateLimiter:
    return ResponseRateLimiter(RrlSettings(**kw), clock or FakeClock())  # type: ignore[arg-type]


def run(lim: ResponseRateLimiter, n: int, client: bytes = ip("192.0.2.1"), **kw: object) -> list:
    rclass = kw.get("rclass", A)
    key = kw.get("key", WWW)
    fam = 4 if len(client) == 4 else 6
    return [lim.check(client, fam, rclass, key) for _ in range(n)]  # type: ignore[arg-type]


def test_burst_up_to_rate_then_limited() -> None:
    lim = make(rate=5, slip=0)
    assert run(lim, 8) == [SEND] * 5 + [DROP] * 3
    assert (lim.stats.sent, lim.stats.dropped, lim.stats.slipped) == (5, 3, 0)


def test_slip_every_second_limited_response() -> None:
    lim = make(rate=3, slip=2)
    assert run(lim, 9) == [SEND] * 3 + [DROP, SLIP] * 3
    assert (lim.stats.dropped, lim.stats.slipped) == (3, 3)


@pytest.mark.parametrize(
    "slip,expected", [(0, [DROP] * 6), (1, [SLIP] * 6), (3, [DROP, DROP, SLIP] * 2)]
)
def test_slip_values(slip: int, expected: list[Verdict]) -> None:
    lim = make(rate=2, slip=slip)
    assert run(lim, 8)[2:] == expected


def test_refill_at_rate_per_second() -> None:
    clock = FakeClock()
    lim = make(clock, rate=10, slip=0)
    assert run(lim, 11).count(SEND) == 10  # balance now -1
    clock.advance(0.5)  # +5 tokens -> 4 left
    assert run(lim, 6) == [SEND] * 4 + [DROP] * 2
    clock.advance(10)  # refill is capped at one second's worth
    assert run(lim, 11).count(SEND) == 10


def test_debt_is_capped_at_window_times_rate() -> None:
    clock = FakeClock()
    lim = make(clock, rate=5, window=2, slip=0)
    run(lim, 1000)  # heavy flood: debt capped at -window*rate = -10, not -995
    clock.advance(1.9)  # +9.5 -> -0.5, then -1 for this response: still limited
    assert run(lim, 1) == [DROP]
    clock.advance(0.5)  # -1.5 + 2.5 = 1 -> one response goes out
    assert run(lim, 2) == [SEND, DROP]


def test_entry_idle_for_a_window_starts_fresh() -> None:
    clock = FakeClock()
    lim = make(clock, rate=5, window=2, slip=0)
    run(lim, 1000)  # balance -10
    clock.advance(2.0)  # refill alone would give 0 -> -1; a full idle window resets to rate
    assert run(lim, 6) == [SEND] * 5 + [DROP]


def test_flooder_stays_limited_while_flooding() -> None:
    clock = FakeClock()
    lim = make(clock, rate=5, slip=0)
    sent = 0
    for _ in range(100):  # 10 s at 50 responses/s
        sent += run(lim, 5).count(SEND)
        clock.advance(0.1)
    assert sent <= 5 + 5 * 10  # initial burst + rate * duration
    assert sent >= 5


def test_networks_are_independent_and_hosts_in_one_network_share() -> None:
    lim = make(rate=2, slip=0)
    assert run(lim, 2, ip("192.0.2.1")) == [SEND, SEND]
    assert run(lim, 1, ip("192.0.2.200")) == [DROP]  # same /24
    assert run(lim, 2, ip("192.0.3.1")) == [SEND, SEND]  # next /24
    assert run(lim, 2, ip("2001:db8:0:1::1")) == [SEND, SEND]
    assert run(lim, 1, ip("2001:db8:0:ff::9")) == [DROP]  # same /56
    assert run(lim, 1, ip("2001:db8:0:100::1")) == [SEND]  # next /56


def test_ipv4_mapped_clients_share_ipv4_buckets() -> None:
    lim = make(rate=1, slip=0)
    assert run(lim, 1, ip("192.0.2.1")) == [SEND]
    assert run(lim, 1, ip("::ffff:192.0.2.77")) == [DROP]
    # ... and do not all fall into one IPv6 /56 bucket
    assert run(lim, 1, ip("::ffff:198.51.100.1")) == [SEND]


def test_configurable_prefixes() -> None:
    lim = make(rate=1, slip=0, ipv4_prefix=32, ipv6_prefix=128)
    assert run(lim, 1, ip("192.0.2.1")) == [SEND]
    assert run(lim, 1, ip("192.0.2.2")) == [SEND]
    lim = make(rate=1, slip=0, ipv4_prefix=16)
    assert run(lim, 1, ip("192.0.2.1")) == [SEND]
    assert run(lim, 1, ip("192.0.99.1")) == [DROP]


def test_names_and_classes_have_separate_buckets() -> None:
    lim = make(rate=1, slip=0)
    assert run(lim, 2, key=WWW) == [SEND, DROP]
    assert run(lim, 1, key=API) == [SEND]
    assert run(lim, 1, key=WWW, rclass=ResponseClass.NODATA) == [SEND]
    assert run(lim, 2, key=ZONE, rclass=ResponseClass.NXDOMAIN) == [SEND, DROP]
    assert run(lim, 1, key=ZONE, rclass=ResponseClass.REFERRAL) == [SEND]


def test_errors_are_accounted_per_network_whatever_the_name() -> None:
    lim = make(rate=2, slip=0)
    e = ResponseClass.ERROR
    assert run(lim, 1, key=WWW, rclass=e) + run(lim, 1, key=API, rclass=e) == [SEND, SEND]
    assert run(lim, 1, key=b"\x01x\x00", rclass=e) == [DROP]


def test_per_class_rates() -> None:
    lim = make(rate=10, nxdomain_rate=1, error_rate=0, slip=0)
    assert run(lim, 3, key=ZONE, rclass=ResponseClass.NXDOMAIN) == [SEND, DROP, DROP]
    assert run(lim, 50, rclass=ResponseClass.ERROR) == [SEND] * 50  # 0 = class unlimited
    assert run(lim, 11).count(SEND) == 10
    assert RrlSettings(rate=7, referral_rate=3).class_rate(ResponseClass.REFERRAL) == 3
    assert RrlSettings(rate=0, referral_rate=3).class_rate(ResponseClass.REFERRAL) == 0


def test_rate_zero_turns_rrl_off() -> None:
    lim = make(rate=0)
    assert run(lim, 1000) == [SEND] * 1000
    assert len(lim) == 0


def test_exempt_networks_are_never_limited() -> None:
    lim = make(rate=1, slip=0, exempt=(ipaddress.ip_network("198.51.100.0/24"),))
    assert run(lim, 50, ip("198.51.100.9")) == [SEND] * 50
    assert run(lim, 50, ip("::ffff:198.51.100.9")) == [SEND] * 50
    assert run(lim, 2, ip("198.51.101.9")) == [SEND, DROP]
    # Counted only when a response would have been limited: all but the first.
    assert lim.stats.exempt == 99


def test_log_only_counts_but_sends(caplog: pytest.LogCaptureFixture) -> None:
    lim = make(rate=2, slip=2, log_only=True)
    with caplog.at_level(logging.INFO, logger="gslb.dns.rrl"):
        assert run(lim, 6) == [SEND] * 6
    assert (lim.stats.would_drop, lim.stats.would_slip) == (2, 2)
    assert (lim.stats.dropped, lim.stats.slipped, lim.stats.sent) == (0, 0, 6)
    assert "would limit ANSWER responses to 192.0.2.0/24 for www.example.test." in caplog.text


def test_plain_int_class_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    lim = make(rate=1, slip=0)
    with caplog.at_level(logging.INFO, logger="gslb.dns.rrl"):
        assert [lim.check(ip("192.0.2.1"), 4, 2, ZONE) for _ in range(2)] == [SEND, DROP]  # type: ignore[arg-type]
    assert "limiting NXDOMAIN responses to 192.0.2.0/24 for example.test." in caplog.text


def test_logs_start_and_end_of_limiting_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    lim = make(clock, rate=1, slip=0)
    with caplog.at_level(logging.INFO, logger="gslb.dns.rrl"):
        run(lim, 10, ip("2001:db8:0:42::1"))
        clock.advance(30)
        run(lim, 1, ip("2001:db8:0:42::1"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rrl: limiting ANSWER responses to 2001:db8::/56 for www.example.test.",
        "rrl: stopped limiting ANSWER to 2001:db8::/56 for www.example.test.",
    ]


def test_table_is_bounded_under_many_random_networks() -> None:
    lim = make(rate=5, max_entries=5000)
    rng = random.Random(11)
    distinct = set()
    for i in range(100_000):
        client = rng.randbytes(4) if i % 2 else rng.randbytes(16)
        distinct.add(lim.network_of(client))
        lim.check(client, 4, A, WWW)
        if i % 1000 == 0:
            assert len(lim) <= 5000
    assert len(distinct) > 99_000
    assert len(lim) == 5000
    assert lim.stats.evictions >= len(distinct) - 5000


def test_active_flooder_survives_churn_from_other_networks() -> None:
    # LRU, not FIFO: a bucket in use is not evicted by a spread of one-off networks.
    lim = make(rate=5, slip=0, max_entries=1000)
    rng = random.Random(5)
    victim = ip("203.0.113.10")
    run(lim, 5, victim)
    for _ in range(50):
        for _ in range(500):
            lim.check(rng.randbytes(4), 4, A, WWW)
        assert run(lim, 1, victim) == [DROP]


def test_default_settings() -> None:
    s, reasons = parse_rrl(None)
    assert reasons == [] and s == RrlSettings()
    assert (s.rate, s.slip, s.window, s.max_entries) == (DEFAULT_RATE, 2, 15, 100_000)
    assert (s.ipv4_prefix, s.ipv6_prefix, s.log_only) == (24, 56, False)


def test_parse_rrl_values() -> None:
    raw = load_yaml_text(
        "rrl:\n"
        "  rate: 50\n"
        "  slip: 1\n"
        "  window: 5\n"
        "  ipv4_prefix: 32\n"
        "  ipv6_prefix: 64\n"
        "  nxdomain_rate: 10\n"
        "  referral_rate: null\n"
        "  error_rate: 0\n"
        "  exempt: [192.0.2.0/24, '2001:db8::/32']\n"
        "  log_only: true\n"
        "  max_entries: 2000\n",
        "r.yaml",
    )
    s, reasons = parse_rrl(raw["rrl"])
    assert reasons == []
    assert (s.rate, s.slip, s.window, s.ipv4_prefix, s.ipv6_prefix) == (50, 1, 5, 32, 64)
    assert (s.nxdomain_rate, s.referral_rate, s.error_rate) == (10, None, 0)
    assert [str(n) for n in s.exempt] == ["192.0.2.0/24", "2001:db8::/32"]
    assert s.log_only and s.max_entries == 2000
    off, _ = parse_rrl(load_yaml_text("rrl: {enabled: false, rate: 9}\n")["rrl"])
    assert off.rate == 0 and not off.enabled


def test_parse_rrl_reports_every_error_with_position() -> None:
    raw = load_yaml_text(
        "rrl:\n"
        "  rate: fast\n"
        "  slip: 11\n"
        "  window: true\n"
        "  exempt: [192.0.2.1/24]\n"
        "  log_only: 1\n"
        "  burst: 3\n",
        "r.yaml",
    )
    s, reasons = parse_rrl(raw["rrl"])
    got = sorted((r.key, str(r.mark)) for r in reasons)
    assert got == [
        ("rrl.burst", "r.yaml:7:3"),
        ("rrl.exempt", "r.yaml:5:12"),
        ("rrl.log_only", "r.yaml:6:3"),
        ("rrl.rate", "r.yaml:2:3"),
        ("rrl.slip", "r.yaml:3:3"),
        ("rrl.window", "r.yaml:4:3"),
    ]
    assert s == RrlSettings()  # invalid values fall back to defaults
    _, reasons = parse_rrl(load_yaml_text("rrl: 5\n")["rrl"])
    assert [r.key for r in reasons] == ["rrl"]


def test_invalid_settings_rejected_by_constructor() -> None:
    with pytest.raises(ValueError):
        ResponseRateLimiter(RrlSettings(max_entries=0))
    with pytest.raises(ValueError):
        ResponseRateLimiter(RrlSettings(ipv4_prefix=33))
    with pytest.raises(ValueError):
        ResponseRateLimiter(RrlSettings(slip=-1))
