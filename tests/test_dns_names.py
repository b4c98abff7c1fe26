"""Names around GSLB services, wildcards, CNAME loops and long negative answers, over sockets."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from gslb.dns.node import NodeOptions
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth

from .dnshelpers import ServerThread, raw_udp, tcp, udp

ROOT = Path(__file__).resolve().parent.parent
GEOIP = ROOT / "geodata" / "gslb-test-city.mmdb"

NAMES_ZONE = """\
$ORIGIN names.test.
$TTL 300
@        3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@        3600 IN NS  ns1
ns1           IN A   192.0.2.53
*.wild        IN A   192.0.2.99
loop1         IN CNAME loop2
loop2         IN CNAME loop3
loop3         IN CNAME loop1
self          IN CNAME self
child         IN NS  ns.child
ns.child      IN A   192.0.2.54
"""

STAR_ZONE = """\
$ORIGIN star.test.
$TTL 300
@        3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@        3600 IN NS  ns1
ns1           IN A   192.0.2.53
*             IN TXT "apex wildcard"
"""

SERVICE = "{{policy: geoproximity, datacenters: [{dc}], ttl: 30, on_all_down: fail_open}}"
CONFIG = f"""\
geoip: {GEOIP}
datacenters:
  v4: {{region: eu-west, latitude: 53.35, longitude: -6.26, ipv4: [192.0.2.21]}}
  v6: {{region: eu-west, latitude: 53.35, longitude: -6.26, ipv6: ["2001:db8::21"]}}
services:
  www.eu.names.test: {SERVICE.format(dc="v4")}
  x.wild.names.test: {SERVICE.format(dc="v4")}
  www.eu.star.test: {SERVICE.format(dc="v4")}
  v6.names.test: {SERVICE.format(dc="v6")}
"""


def long_zone_origin() -> str:
    return "a" * 60 + "." + "b" * 60 + ".test."


def long_zone() -> str:
    origin = long_zone_origin()
    return (
        f"$ORIGIN {origin}\n$TTL 300\n"
        f"@ 3600 IN SOA ns1.{origin} hostmaster.{origin} 1 3600 600 1209600 60\n"
        f"@ 3600 IN NS ns1.{origin}\nns1 IN A 192.0.2.53\n"
    )


def name_in_long_zone(wire_length: int) -> str:
    """A name under the long zone whose wire form is at most `wire_length` bytes."""
    name = dns.name.from_text(long_zone_origin())
    while True:
        try:
            longer = dns.name.Name((b"c" * 40, *name.labels))
        except dns.name.NameTooLong:
            return name.to_text()
        if len(longer.to_wire() or b"") > wire_length:
            return name.to_text()
        name = longer


def write(tmp_path: Path, config: str = CONFIG) -> tuple[Path, Path]:
    zones = tmp_path / "zones"
    zones.mkdir(parents=True, exist_ok=True)
    (zones / "names.test.zone").write_text(NAMES_ZONE)
    (zones / "star.test.zone").write_text(STAR_ZONE)
    (zones / f"{long_zone_origin()}zone").write_text(long_zone())
    path = tmp_path / "gslb.yaml"
    path.write_text(config)
    return zones, path


@pytest.fixture
def names_server(tmp_path: Path) -> Iterator[ServerThread]:
    zones, config = write(tmp_path)
    holder = HealthHolder()
    states = {name: TargetHealth("up", "test") for name in ("v4", "v6")}
    holder.publish(HealthSnapshot(holder.current.epoch + 1, MappingProxyType(states)))
    options = NodeOptions(
        zones_dir=str(zones), config_path=str(config), listen=["127.0.0.1:0"], health_monitor=False
    )
    server = ServerThread(options, health=holder).start()
    yield server
    server.stop()


def ask(server: ServerThread, name: str, rdtype: str = "A") -> dns.message.Message:
    return udp(server, dns.message.make_query(name, rdtype))


def is_nodata(response: dns.message.Message) -> bool:
    return (
        response.rcode() == dns.rcode.NOERROR
        and not response.answer
        and bool(response.authority)
        and response.authority[0].rdtype == dns.rdatatype.SOA
    )


def test_empty_non_terminals_above_services_are_nodata(names_server: ServerThread) -> None:
    assert ask(names_server, "www.eu.names.test").answer  # the service answers
    for rdtype in ("A", "AAAA", "TXT", "MX"):
        assert is_nodata(ask(names_server, "eu.names.test", rdtype)), rdtype
    # Below the service and beside it nothing exists.
    assert ask(names_server, "deeper.www.eu.names.test").rcode() == dns.rcode.NXDOMAIN
    assert ask(names_server, "other.eu.names.test").rcode() == dns.rcode.NXDOMAIN
    # The service's own name has no TXT: NODATA, not NXDOMAIN.
    assert is_nodata(ask(names_server, "www.eu.names.test", "TXT"))


def test_wildcards_see_service_names_as_closest_encloser(names_server: ServerThread) -> None:
    # x.wild is a service: it is the closest encloser of y.x.wild, and *.x.wild does not exist.
    assert ask(names_server, "y.x.wild.names.test").rcode() == dns.rcode.NXDOMAIN
    # Other names under wild still come from the wildcard.
    synthesised = ask(names_server, "z.wild.names.test")
    assert [r.address for r in synthesised.answer[0]] == ["192.0.2.99"]
    # An apex `* TXT` does not answer for the empty non-terminal above a service...
    assert is_nodata(ask(names_server, "eu.star.test", "TXT"))
    assert is_nodata(ask(names_server, "www.eu.star.test", "TXT"))
    # ...and a name below that non-terminal has `eu` as closest encloser: NXDOMAIN.
    assert ask(names_server, "nothere.eu.star.test", "TXT").rcode() == dns.rcode.NXDOMAIN
    # Names elsewhere in the zone are still synthesised.
    assert ask(names_server, "elsewhere.star.test", "TXT").answer


def test_any_on_an_ipv6_only_service_returns_the_aaaa(names_server: ServerThread) -> None:
    response = ask(names_server, "v6.names.test", "ANY")
    assert response.rcode() == dns.rcode.NOERROR
    assert [(rrset.rdtype, [r.address for r in rrset]) for rrset in response.answer] == [
        (dns.rdatatype.AAAA, ["2001:db8::21"])
    ]
    assert is_nodata(ask(names_server, "v6.names.test", "A"))


def test_cname_loops_list_every_record_once(names_server: ServerThread) -> None:
    # dnspython merges repeated RRsets when parsing, so count the records in the raw reply.
    for name, owners in (
        ("loop1.names.test", ["loop1.names.test.", "loop2.names.test.", "loop3.names.test."]),
        ("self.names.test", ["self.names.test."]),
    ):
        reply = raw_udp(names_server.port, dns.message.make_query(name, "A").to_wire())
        assert reply is not None
        assert struct.unpack_from("!H", reply, 6)[0] == len(owners), name  # ANCOUNT
        message = dns.message.from_wire(reply)
        assert message.rcode() == dns.rcode.NOERROR
        assert [rrset.name.to_text() for rrset in message.answer] == owners


def test_plain_udp_negative_answers_fit_in_512_bytes(names_server: ServerThread) -> None:
    for length in (170, 215, 255):
        name = name_in_long_zone(length)
        query = dns.message.make_query(name, "A")  # no EDNS: 512 bytes at most
        reply = raw_udp(names_server.port, query.to_wire())
        assert reply is not None and len(reply) <= 512, length
        message = dns.message.from_wire(reply)
        assert message.rcode() == dns.rcode.NXDOMAIN
        if message.flags & dns.flags.TC:
            full = tcp(names_server, query)
            assert full.rcode() == dns.rcode.NXDOMAIN and full.authority
        else:
            assert message.authority[0].rdtype == dns.rdatatype.SOA
    # A medium name fits once the SOA owner is compressed.
    medium = dns.message.make_query(name_in_long_zone(170), "A")
    message = udp(names_server, medium)
    assert not message.flags & dns.flags.TC and message.authority


DELEGATED = CONFIG + f"  svc.child.names.test: {SERVICE.format(dc='v4')}\n"


def test_check_and_reload_reject_services_below_a_delegation(
    names_server: ServerThread, tmp_path: Path
) -> None:
    zones, config = write(tmp_path / "bad", DELEGATED)
    result = subprocess.run(
        [sys.executable, "-m", "gslb.cli", "check", "--config", str(config), "--zones", str(zones)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = DELEGATED.splitlines().index(next(x for x in DELEGATED.splitlines() if "svc.child" in x))
    assert f"{config}:{line + 1}" in result.stdout
    assert "delegation point child.names.test." in result.stdout
    # The running node refuses the same configuration on reload and keeps serving.
    assert names_server.node is not None
    assert names_server.node.options.config_path is not None
    Path(names_server.node.options.config_path).write_text(DELEGATED)
    assert names_server.call(names_server.node.reload) is False
    assert "child.names.test." in (names_server.node.last_reload_error or "")
    assert ask(names_server, "www.eu.names.test").answer
