"""DNS cookies: RFC 9018 Appendix A vectors, validity window, rollover, option parsing, config."""

from __future__ import annotations

import ipaddress

import pytest

from gslb.clock import FakeClock
from gslb.config.yaml_loader import load_yaml_text
from gslb.dns.cookies import (
    CookieFormError,
    CookieJar,
    CookieStatus,
    generate_secret,
    parse_cookie_option,
    parse_cookies,
)

SECRET_1 = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
OLD_SECRET_4 = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")
NEW_SECRET_4 = bytes.fromhex("445536bcd2513298075a5d379663c962")


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def option(hexstr: str) -> tuple[bytes, bytes | None]:
    return parse_cookie_option(bytes.fromhex(hexstr))


# --- RFC 9018 Appendix A --------------------------------------------------------------------


def test_a1_learning_a_new_server_cookie() -> None:
    clock = FakeClock(1559731985)
    jar = CookieJar(SECRET_1, clock)
    client, server = option("2464c4abcf10c957")
    assert server is None
    status, cookie = jar.respond(client, server, ip("198.51.100.100"))
    assert status == CookieStatus.ABSENT
    assert (client + cookie).hex() == "2464c4abcf10c957010000005cf79f111f8130c3eee29480"


def test_a2_same_client_renewed_cookie() -> None:
    clock = FakeClock(1559734385)  # 40 minutes after A.1: valid, but older than 30 minutes
    jar = CookieJar(SECRET_1, clock)
    client, server = option("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    status, cookie = jar.respond(client, server, ip("198.51.100.100"))
    assert status == CookieStatus.VALID
    assert (client + cookie).hex() == "2464c4abcf10c957010000005cf7a871d4a564a1442aca77"


def test_a3_another_client_with_reserved_bits_set() -> None:
    client, server = option("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    assert server is not None
    addr = ip("203.0.113.203")
    # The hash covers the reserved bytes as received: valid within its lifetime ...
    assert CookieJar(SECRET_1, FakeClock(0x5CF78F71 + 60)).check(client, server, addr) == (
        CookieStatus.VALID
    )
    # ... but at the example's reply time it is 1h52m old, so expired; a fresh one is made.
    jar = CookieJar(SECRET_1, FakeClock(1559734700))
    status, cookie = jar.respond(client, server, addr)
    assert status == CookieStatus.INVALID
    assert (client + cookie).hex() == "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"


def test_a4_ipv6_client_after_rollover() -> None:
    client, server = option("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    addr = ip("2001:db8:220:1:59de:d0f4:8769:82b8")
    clock = FakeClock(1559741961)
    rolled = CookieJar(NEW_SECRET_4, clock, previous_secret=OLD_SECRET_4)
    status, cookie = rolled.respond(client, server, addr)
    assert status == CookieStatus.VALID  # made with the previous secret, still accepted
    assert (client + cookie).hex() == "22681ab97d52c298010000005cf7c609a6bb79d16625507a"
    # Without the previous secret configured, the old cookie is not ours.
    assert CookieJar(NEW_SECRET_4, clock).check(client, server, addr) == CookieStatus.INVALID


# --- validity ---------------------------------------------------------------------------------


CLIENT = bytes.fromhex("0102030405060708")
ADDR = ip("192.0.2.53")


def test_fresh_cookie_is_valid_and_echoed_while_young() -> None:
    clock = FakeClock(1_700_000_000)
    jar = CookieJar(SECRET_1, clock)
    cookie = jar.make(CLIENT, ADDR)
    assert len(cookie) == 16 and cookie[:4] == b"\x01\x00\x00\x00"
    clock.advance(1799)
    assert jar.respond(CLIENT, cookie, ADDR) == (CookieStatus.VALID, cookie)
    clock.advance(1)  # 1800 s old: still valid, re-stamped
    status, renewed = jar.respond(CLIENT, cookie, ADDR)
    assert status == CookieStatus.VALID and renewed != cookie
    assert int.from_bytes(renewed[4:8], "big") == 1_700_001_800


def test_expiry_and_future_bounds() -> None:
    clock = FakeClock(1_700_000_000)
    jar = CookieJar(SECRET_1, clock)
    cookie = jar.make(CLIENT, ADDR)
    clock.advance(3600)
    assert jar.check(CLIENT, cookie, ADDR) == CookieStatus.VALID
    clock.advance(1)
    assert jar.check(CLIENT, cookie, ADDR) == CookieStatus.INVALID
    future_ok = jar.make(CLIENT, ADDR, now=int(clock.time()) + 300)
    future_bad = jar.make(CLIENT, ADDR, now=int(clock.time()) + 301)
    assert jar.check(CLIENT, future_ok, ADDR) == CookieStatus.VALID
    assert jar.check(CLIENT, future_bad, ADDR) == CookieStatus.INVALID


def test_timestamp_wraps_in_serial_arithmetic() -> None:
    clock = FakeClock(2**32 + 100)  # just after the 32-bit timestamp wrapped (year 2106)
    jar = CookieJar(SECRET_1, clock)
    before_wrap = jar.make(CLIENT, ADDR, now=2**32 - 1000)
    assert int.from_bytes(before_wrap[4:8], "big") == 2**32 - 1000
    assert jar.check(CLIENT, before_wrap, ADDR) == CookieStatus.VALID


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:15] + bytes([c[15] ^ 1]),  # hash bit flipped
        lambda c: b"\x02" + c[1:],  # unknown version
        lambda c: c[:8],  # 8-byte server cookie: legal on the wire, not ours
        lambda c: c + b"\x00" * 8,  # 24 bytes: legal on the wire, not ours
    ],
)
def test_tampered_cookie_is_invalid(mutate) -> None:  # type: ignore[no-untyped-def]
    jar = CookieJar(SECRET_1, FakeClock(1_700_000_000))
    cookie = jar.make(CLIENT, ADDR)
    assert jar.check(CLIENT, mutate(cookie), ADDR) == CookieStatus.INVALID


def test_cookie_bound_to_client_address_and_client_cookie() -> None:
    jar = CookieJar(SECRET_1, FakeClock(1_700_000_000))
    cookie = jar.make(CLIENT, ADDR)
    assert jar.check(CLIENT, cookie, ip("192.0.2.54")) == CookieStatus.INVALID
    assert jar.check(b"\x00" * 8, cookie, ADDR) == CookieStatus.INVALID
    assert jar.check(CLIENT, None, ADDR) == CookieStatus.ABSENT


def test_ipv4_mapped_client_gets_the_ipv4_cookie() -> None:
    jar = CookieJar(SECRET_1, FakeClock(1_700_000_000))
    mapped = ipaddress.IPv6Address("::ffff:192.0.2.53").packed
    assert jar.make(CLIENT, mapped) == jar.make(CLIENT, ADDR)
    assert jar.check(CLIENT, jar.make(CLIENT, ADDR), mapped) == CookieStatus.VALID


def test_nodes_with_same_secret_interoperate() -> None:
    clock = FakeClock(1_700_000_000)
    a, b = CookieJar(SECRET_1, clock), CookieJar(SECRET_1, clock)
    assert b.check(CLIENT, a.make(CLIENT, ADDR), ADDR) == CookieStatus.VALID
    other = CookieJar(generate_secret(), clock)
    assert other.check(CLIENT, a.make(CLIENT, ADDR), ADDR) == CookieStatus.INVALID


def test_bad_secret_length_rejected() -> None:
    with pytest.raises(ValueError):
        CookieJar(b"short")
    with pytest.raises(ValueError):
        CookieJar(SECRET_1, previous_secret=b"x" * 17)


# --- option parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 7, 9, 15, 41, 64])
def test_malformed_option_lengths(length: int) -> None:
    with pytest.raises(CookieFormError):
        parse_cookie_option(b"\x00" * length)


@pytest.mark.parametrize("length,server_len", [(8, None), (16, 8), (24, 16), (40, 32)])
def test_legal_option_lengths(length: int, server_len: int | None) -> None:
    client, server = parse_cookie_option(bytes(range(length)))
    assert client == bytes(range(8))
    assert (None if server is None else len(server)) == server_len


# --- config -----------------------------------------------------------------------------------


def test_parse_cookies_defaults_and_values() -> None:
    settings, reasons = parse_cookies(None)
    assert reasons == [] and settings.enabled and settings.secret is None
    raw = load_yaml_text(
        "cookies:\n"
        "  secret: e5e973e5a6b2a43f48e7dc849e37bfcf\n"
        "  previous_secret: dd3bdf9344b678b185a6f5cb60fca715\n"
        "  require_valid: true\n",
        "c.yaml",
    )
    settings, reasons = parse_cookies(raw["cookies"])
    assert reasons == []
    assert settings.secret == SECRET_1 and settings.previous_secret == OLD_SECRET_4
    assert settings.require_valid and settings.enabled
    jar = settings.jar(FakeClock(1559731985))
    assert jar.make(bytes.fromhex("2464c4abcf10c957"), ip("198.51.100.100")).hex() == (
        "010000005cf79f111f8130c3eee29480"
    )


def test_generated_secret_when_none_configured() -> None:
    settings, _ = parse_cookies(load_yaml_text("cookies: {enabled: true}\n")["cookies"])
    a, b = settings.jar(), settings.jar()
    # Two separately generated secrets do not accept each other's cookies.
    assert b.check(CLIENT, a.make(CLIENT, ADDR), ADDR) == CookieStatus.INVALID


def test_parse_cookies_reports_every_error_with_position() -> None:
    raw = load_yaml_text(
        "cookies:\n  secret: abcd\n  previous_secret: 42\n  enabled: yes-please\n  colour: blue\n",
        "c.yaml",
    )
    settings, reasons = parse_cookies(raw["cookies"])
    by_key = {r.key: r for r in reasons}
    assert set(by_key) == {
        "cookies.secret",
        "cookies.previous_secret",
        "cookies.enabled",
        "cookies.colour",
    }
    assert str(by_key["cookies.secret"].mark) == "c.yaml:2:3"
    assert str(by_key["cookies.colour"].mark) == "c.yaml:5:3"
    assert settings.secret is None


def test_parse_cookies_rejects_non_hex_and_non_mapping() -> None:
    raw = load_yaml_text("cookies:\n  secret: zz3bdf9344b678b185a6f5cb60fca715\n", "c.yaml")
    _, reasons = parse_cookies(raw["cookies"])
    assert [r.key for r in reasons] == ["cookies.secret"]
    raw = load_yaml_text("cookies:\n  previous_secret: dd3bdf9344b678b185a6f5cb60fca715\n")
    _, reasons = parse_cookies(raw["cookies"])
    assert [r.key for r in reasons] == ["cookies.previous_secret"]
    _, reasons = parse_cookies(load_yaml_text("cookies: [1, 2]\n")["cookies"])
    assert [r.key for r in reasons] == ["cookies"]
