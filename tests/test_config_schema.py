"""The schema framework: declared fields, typed values, every reason with file:line:column."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gslb.config.schema import (
    Cidr,
    Duration,
    Enum,
    HostPort,
    HostPortKind,
    Int,
    ListOf,
    Section,
    Size,
    Str,
    parse_hostport,
    parse_section,
    required,
    setting,
)
from gslb.config.yaml_loader import load_yaml_text


@dataclass(frozen=True)
class Sample:
    listen: HostPort = setting(HostPort("127.0.0.1", 53), HostPortKind())
    window: float = setting(15.0, Duration(1, 3600))
    buffer: int = setting(65536, Size(1024, 1 << 30))
    mode: str = setting("on", Enum("on", "off", "log"))
    workers: int = setting(1, Int(1, 64))
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        (), ListOf(Cidr(strict=True))
    )
    __renamed__ = {"expect_body": "body_match"}


def _parse(text: str) -> tuple[Sample, list[str]]:
    raw = load_yaml_text(text, "s.yaml")
    value, reasons = parse_section(Sample, raw["s"], "s")
    return value, [str(r) for r in reasons]


def test_typed_values_from_text():
    value, reasons = _parse(
        "s:\n  listen: '[::1]:53'\n  window: 5m\n  buffer: 64k\n  mode: log\n"
        "  allow: [10.0.0.0/8, 2001:db8::/32]\n"
    )
    assert reasons == []
    assert value.listen == HostPort("::1", 53) and str(value.listen) == "[::1]:53"
    assert (value.window, value.buffer, value.mode) == (300.0, 65536, "log")
    assert value.allow == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_every_reason_at_once_with_file_line_column():
    _, reasons = _parse(
        "s:\n  listen: nope\n  window: 2 fortnights\n  mode: of\n  workers: 0\n"
        "  wrokers: 2\n  expect_body: x\n  allow: [10.0.0.1/8]\n"
    )
    assert reasons == [
        "s.yaml:2:3: s.listen: must be HOST:PORT (IPv6 in brackets: [::1]:53), not 'nope'",
        "s.yaml:3:3: s.window: must be a duration (seconds, or 250ms/10s/5m/1h),"
        " not '2 fortnights'",
        "s.yaml:4:3: s.mode: must be one of on, off, log, not 'of'; did you mean off?",
        "s.yaml:5:3: s.workers: must be between 1 and 64, not 0",
        "s.yaml:6:3: s.wrokers: unknown key (expected one of: listen, window, buffer, mode,"
        " workers, allow); did you mean workers?",
        "s.yaml:7:3: s.expect_body: renamed: write body_match instead",
        "s.yaml:8:11: s.allow: not a network: '10.0.0.1/8' (10.0.0.1/8 has host bits set)",
    ]


@dataclass(frozen=True)
class Agent:
    url: str = required(Str())
    region: str = setting("local", Str())


@dataclass(frozen=True)
class Top:
    agents: tuple[Agent, ...] = setting((), ListOf(Section(Agent)))


def test_required_keys_and_nested_sections():
    raw = load_yaml_text("t:\n  agents:\n    - {region: a}\n    - {url: http://x}\n", "t.yaml")
    value, reasons = parse_section(Top, raw["t"], "t")
    assert [str(r) for r in reasons] == ["t.yaml:3:7: t.agents[0].url: required key is missing"]
    assert value.agents == (Agent("http://x", "local"),)
    broken, reasons = parse_section(Top, raw, "t")
    assert broken == Top() and "unknown key" in str(reasons[0])


def test_one_hostport_parser():
    assert parse_hostport("127.0.0.1:5300") == HostPort("127.0.0.1", 5300)
    assert parse_hostport("[2001:db8::1]:53") == HostPort("2001:db8::1", 53)
    assert parse_hostport("ns1.example.test:53") == HostPort("ns1.example.test", 53)
    assert parse_hostport("example.test", default_port=80) == HostPort("example.test", 80)
    for bad in ("::1:53", "127.0.0.1:", ":53", "[::1]53", "h:70000", "[nothex]:53"):
        assert parse_hostport(bad) is None, bad
