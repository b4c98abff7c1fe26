"""GSLB answers over real sockets: the example config, ECS in and out, health changes."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from gslb.dns.node import NodeOptions
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth

from .dnshelpers import ServerThread, raw_udp, udp

ROOT = Path(__file__).resolve().parent.parent
DATACENTERS = ["us-east", "eu-west", "ap-northeast", "sa-east", "us-west", "ap-southeast"]


def all_up(holder: HealthHolder, down: tuple[str, ...] = ()) -> None:
    states = {name: TargetHealth("down" if name in down else "up", "test") for name in DATACENTERS}
    current = holder.current
    holder.publish(HealthSnapshot(current.epoch + 1, MappingProxyType(states)))


@pytest.fixture
def gslb_server() -> Iterator[tuple[ServerThread, HealthHolder]]:
    holder = HealthHolder()
    all_up(holder)
    options = NodeOptions(
        zones_dir=str(ROOT / "zones"),
        config_path=str(ROOT / "zones" / "example.yaml"),
        listen=["127.0.0.1:0"],
        health_monitor=False,
    )
    server = ServerThread(options, health=holder).start()
    yield server, holder
    server.stop()


def ask(
    server: ServerThread, subnet: str | None, rdtype: str = "A", name: str = "www.example.test"
) -> dns.message.Message:
    options = []
    if subnet is not None:
        address, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    return udp(server, query)


def addresses(response: dns.message.Message) -> list[str]:
    return [r.address for rrset in response.answer if rrset.rdtype in (1, 28) for r in rrset]


def ecs_of(response: dns.message.Message) -> dns.edns.ECSOption:
    options = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    assert len(options) == 1
    return options[0]


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("127.1.0.0/24", "203.0.113.51|203.0.113.52"),  # California -> us-west (rotates)
        ("127.2.0.0/24", "192.0.2.21"),  # Germany -> eu-west
        ("127.3.0.0/24", "198.51.100.31"),  # Japan -> ap-northeast
        ("127.4.0.0/24", "198.51.100.41"),  # Brazil -> sa-east
        ("127.5.0.0/24", "203.0.113.61"),  # Australia -> ap-southeast
    ],
)
def test_nearest_datacenter_with_ecs_scope(
    gslb_server: tuple[ServerThread, HealthHolder], subnet: str, expected: str
) -> None:
    server, _ = gslb_server
    for _ in range(2):  # the second answer comes from the packet cache
        response = ask(server, subnet)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert addresses(response) in [[e] for e in expected.split("|")]
        ecs = ecs_of(response)
        assert ecs.address == subnet.split("/")[0] and ecs.srclen == 24
        assert ecs.scopelen == 16  # the test database maps these /16s; never above the source


def test_scope_longer_than_source_when_the_source_spans_answers(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    # 127.0.0.0/8 holds every test city: the answer is good for 127.0.0.0/16 only, so the
    # scope is longer than the source and the resolver asks again (RFC 7871 section 7.2.1).
    server, _ = gslb_server
    ecs = ecs_of(ask(server, "127.2.0.0/8"))
    assert (ecs.srclen, ecs.scopelen) == (8, 16)


def test_source_prefix_zero_ignores_location(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    server, _ = gslb_server
    response = ask(server, "0.0.0.0/0")
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response)
    assert ecs_of(response).scopelen == 0


def test_static_names_echo_ecs_with_scope_zero(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    server, _ = gslb_server
    response = ask(server, "127.2.0.0/24", name="static.example.test")
    assert addresses(response) == ["192.0.2.10"]
    assert ecs_of(response).scopelen == 0


def test_source_address_used_without_ecs(gslb_server: tuple[ServerThread, HealthHolder]) -> None:
    server, _ = gslb_server
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.3.0.9", 0))  # a Japanese client (the test database maps 127.3/16)
        sock.settimeout(2)
        query = dns.message.make_query("www.example.test", "A")
        sock.sendto(query.to_wire(), ("127.0.0.1", server.port))
        response = dns.message.from_wire(sock.recv(4096))
    assert addresses(response) == ["198.51.100.31"]


def test_aaaa_and_ipv4_only_datacenter(gslb_server: tuple[ServerThread, HealthHolder]) -> None:
    server, _ = gslb_server
    japan = ask(server, "127.3.0.0/24", "AAAA")
    assert addresses(japan) == ["2001:db8:300::31"]
    # us-west has no IPv6: Californian clients get the next datacenter that has one.
    california = ask(server, "127.1.0.0/24", "AAAA")
    assert addresses(california) and addresses(california)[0] != "203.0.113.51"
    # corp.example.test has no IPv6 anywhere: NODATA with the SOA.
    corp = ask(server, "127.7.0.0/24", "AAAA", name="corp.example.test")
    assert corp.rcode() == dns.rcode.NOERROR and not corp.answer
    assert corp.authority[0].rdtype == dns.rdatatype.SOA


def test_cname_into_a_service(gslb_server: tuple[ServerThread, HealthHolder]) -> None:
    server, _ = gslb_server
    response = ask(server, "127.2.0.0/24", name="app.example.test")
    assert response.answer[0].rdtype == dns.rdatatype.CNAME
    assert addresses(response) == ["192.0.2.21"]


def test_health_change_reaches_answers_at_once(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    server, holder = gslb_server
    assert addresses(ask(server, "127.2.0.0/24")) == ["192.0.2.21"]
    server.call(all_up, holder, ("eu-west",))
    # The very next query, even one byte-identical to a cached one, avoids the dead datacenter.
    assert addresses(ask(server, "127.2.0.0/24")) == ["192.0.2.11"]
    server.call(all_up, holder)
    assert addresses(ask(server, "127.2.0.0/24")) == ["192.0.2.21"]


def test_all_down_fails_open_for_www(gslb_server: tuple[ServerThread, HealthHolder]) -> None:
    server, holder = gslb_server
    server.call(all_up, holder, tuple(DATACENTERS))
    response = ask(server, "127.2.0.0/24")
    assert addresses(response) == ["192.0.2.21"]  # fail open: as if all were up


def test_all_down_servfail_and_nodata_policies(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    server, holder = gslb_server
    server.call(all_up, holder, tuple(DATACENTERS))
    failover = ask(server, "127.2.0.0/24", name="failover.example.test")
    assert failover.rcode() == dns.rcode.SERVFAIL
    weighted = ask(server, "127.2.0.0/24", name="weighted.example.test")
    assert weighted.rcode() == dns.rcode.NOERROR and not weighted.answer


def test_multivalue_count(gslb_server: tuple[ServerThread, HealthHolder]) -> None:
    server, _ = gslb_server
    response = ask(server, "127.2.0.0/24", name="multi.example.test")
    assert len(addresses(response)) == 3
    assert addresses(response)[0] == "192.0.2.21"


def _ecs_query(option: bytes) -> bytes:
    base = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    rdata = struct.pack("!HH", 8, len(option)) + option
    return base[:-2] + struct.pack("!H", len(rdata)) + rdata


@pytest.mark.parametrize(
    "option",
    [
        struct.pack("!HBB", 3, 24, 0) + b"\x7f\x02\x00",  # unknown family
        struct.pack("!HBB", 1, 33, 0) + b"\x7f\x02\x00\x00\x00",  # prefix longer than IPv4
        struct.pack("!HBB", 1, 24, 0) + b"\x7f\x02\x00\x01",  # more address bytes than prefix
        struct.pack("!HBB", 1, 20, 0) + b"\x7f\x02\x0f",  # bits set beyond the source prefix
        struct.pack("!HBB", 1, 24, 8) + b"\x7f\x02\x00",  # scope set in a query
        b"\x00\x01",  # too short
    ],
    ids=["family", "prefix", "length", "host-bits", "scope", "short"],
)
def test_malformed_ecs_is_formerr(
    gslb_server: tuple[ServerThread, HealthHolder], option: bytes
) -> None:
    server, _ = gslb_server
    reply = raw_udp(server.port, _ecs_query(option))
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_different_networks_never_share_a_cached_answer(
    gslb_server: tuple[ServerThread, HealthHolder],
) -> None:
    server, _ = gslb_server
    seen = {}
    for _ in range(3):
        for subnet in ("127.2.0.0/24", "127.3.0.0/24", "127.2.1.0/24", "127.3.1.0/24"):
            seen.setdefault(subnet, set()).update(addresses(ask(server, subnet)))
    assert seen["127.2.0.0/24"] == seen["127.2.1.0/24"] == {"192.0.2.21"}
    assert seen["127.3.0.0/24"] == seen["127.3.1.0/24"] == {"198.51.100.31"}
