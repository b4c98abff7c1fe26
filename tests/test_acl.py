"""Access lists: allow/deny semantics, both families, interval edges, config parsing."""

from __future__ import annotations

import ipaddress
import random

import pytest

from gslb.config.yaml_loader import load_yaml_text
from gslb.dns.acl import AccessList, Action, NetworkSet, parse_acl


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_empty_list_allows_everyone() -> None:
    acl = AccessList()
    assert acl.permits_all
    assert acl.check(ip("192.0.2.1")) == Action.ALLOW
    assert acl.check(ip("2001:db8::1")) == Action.ALLOW


def test_deny_only_blocks_listed_networks() -> None:
    acl = AccessList(deny=["192.0.2.0/24", "2001:db8:bad::/48"], action=Action.DROP)
    assert acl.check(ip("192.0.2.0")) == Action.DROP
    assert acl.check(ip("192.0.2.255")) == Action.DROP
    assert acl.check(ip("192.0.1.255")) == Action.ALLOW
    assert acl.check(ip("192.0.3.0")) == Action.ALLOW
    assert acl.check(ip("2001:db8:bad:ffff::1")) == Action.DROP
    assert acl.check(ip("2001:db8:bae::1")) == Action.ALLOW


def test_allow_list_refuses_everyone_else_of_both_families() -> None:
    acl = AccessList(allow=["198.51.100.0/24"])
    assert acl.check(ip("198.51.100.7")) == Action.ALLOW
    assert acl.check(ip("203.0.113.7")) == Action.REFUSE
    assert acl.check(ip("2001:db8::1")) == Action.REFUSE  # no IPv6 allowed at all


def test_deny_wins_over_allow() -> None:
    acl = AccessList(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"], action=Action.DROP)
    assert acl.check(ip("10.0.255.255")) == Action.ALLOW
    assert acl.check(ip("10.1.2.3")) == Action.DROP
    assert acl.check(ip("10.2.0.0")) == Action.ALLOW
    assert acl.check(ip("11.0.0.0")) == Action.DROP


def test_edges_of_address_space() -> None:
    acl = AccessList(deny=["0.0.0.0/8", "255.255.255.255/32", "::/128"])
    assert acl.check(ip("0.0.0.0")) == Action.REFUSE
    assert acl.check(ip("255.255.255.255")) == Action.REFUSE
    assert acl.check(ip("255.255.255.254")) == Action.ALLOW
    assert acl.check(ip("::")) == Action.REFUSE
    assert acl.check(ip("::1")) == Action.ALLOW
    everything = AccessList(deny=["0.0.0.0/0"])
    assert everything.check(ip("203.0.113.1")) == Action.REFUSE
    assert everything.check(ip("2001:db8::1")) == Action.ALLOW


def test_ipv4_mapped_ipv6_is_treated_as_ipv4() -> None:
    acl = AccessList(allow=["127.0.0.0/8"], action=Action.DROP)
    assert acl.check(ip("::ffff:127.0.0.1")) == Action.ALLOW
    assert acl.check(ip("::ffff:192.0.2.1")) == Action.DROP
    assert acl.allows("::ffff:127.0.0.1")


def test_check_text_for_http_endpoints() -> None:
    acl = AccessList(allow=["127.0.0.1/32", "::1/128"])
    assert acl.allows("127.0.0.1") and acl.allows("::1")
    assert not acl.allows("127.0.0.2")
    assert not acl.allows("not-an-address")
    assert acl.check_text("fe80::1%eth0") == Action.REFUSE


def test_matches_naive_evaluation_on_random_addresses() -> None:
    rng = random.Random(3)
    allow = [ipaddress.ip_network(f"{rng.randrange(1, 223)}.0.0.0/8") for _ in range(10)]
    deny = [
        ipaddress.ip_network(f"{n.network_address}/{rng.randrange(9, 24)}", strict=False)
        for n in allow[:5]
    ] + [ipaddress.ip_network("100.64.0.0/10")]
    acl = AccessList(allow, deny, Action.DROP)
    for _ in range(5000):
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if rng.random() < 0.5:  # bias towards listed networks
            net = rng.choice(allow + deny)
            addr = net.network_address + rng.randrange(net.num_addresses)
        if any(addr in n for n in deny):
            want = Action.DROP
        elif any(addr in n for n in allow):
            want = Action.ALLOW
        else:
            want = Action.DROP
        assert acl.check(addr.packed) == want, addr


def test_network_set_membership() -> None:
    s = NetworkSet(["192.0.2.0/25", "192.0.2.128/25", "2001:db8::/32"])
    assert ip("192.0.2.200") in s and ip("192.0.2.0") in s
    assert ip("192.0.3.0") not in s
    assert ip("2001:db8:ffff::1") in s and ip("2001:db9::") not in s
    assert "192.0.2.1" not in s  # only packed bytes are members
    assert not NetworkSet() and ip("192.0.2.1") not in NetworkSet()


def test_allow_action_is_not_a_deny_action() -> None:
    with pytest.raises(ValueError):
        AccessList(deny=["192.0.2.0/24"], action=Action.ALLOW)


def test_parse_acl_section() -> None:
    raw = load_yaml_text(
        "acl:\n"
        "  allow: [192.0.2.0/24, '2001:db8::/32']\n"
        "  deny:\n"
        "    - 192.0.2.128/25\n"
        "  action: drop\n",
        "a.yaml",
    )
    acl, reasons = parse_acl(raw["acl"])
    assert reasons == []
    assert acl.action == Action.DROP
    assert acl.check(ip("192.0.2.1")) == Action.ALLOW
    assert acl.check(ip("192.0.2.129")) == Action.DROP
    assert acl.check(ip("198.51.100.1")) == Action.DROP
    acl, reasons = parse_acl(None)
    assert reasons == [] and acl.permits_all


def test_parse_acl_reports_every_error_with_position() -> None:
    raw = load_yaml_text(
        "acl:\n"
        "  allow:\n"
        "    - 192.0.2.0/24\n"
        "    - 192.0.2.1/24\n"
        "    - banana\n"
        "    - 7\n"
        "  deny: 198.51.100.0/33\n"
        "  action: ignore\n"
        "  extra: 1\n",
        "a.yaml",
    )
    acl, reasons = parse_acl(raw["acl"])
    got = sorted((r.key, str(r.mark)) for r in reasons)
    assert got == [
        ("acl.action", "a.yaml:8:3"),
        ("acl.allow", "a.yaml:4:7"),  # host bits set
        ("acl.allow", "a.yaml:5:7"),
        ("acl.allow", "a.yaml:6:7"),
        ("acl.deny", "a.yaml:7:3"),
        ("acl.extra", "a.yaml:9:3"),
    ]
    # What was valid still applies.
    assert acl.check(ip("192.0.2.9")) == Action.ALLOW


def test_parse_acl_rejects_non_mapping_and_non_list() -> None:
    _, reasons = parse_acl(load_yaml_text("acl: [1]\n")["acl"])
    assert [r.key for r in reasons] == ["acl"]
    _, reasons = parse_acl(load_yaml_text("acl: {allow: {a: 1}}\n")["acl"])
    assert [r.key for r in reasons] == ["acl.allow"]
