"""Signed answers checked by real validators: Unbound (with ECS) and BIND's delv, on loopback.

gslb serves the shipped example zone and GSLB config with a CSK; Unbound has the zone's DS as
its trust anchor and forwards ECS (subnetcache), so every GSLB policy is validated per client
network. Unbound's cache is capped (cache-max-ttl 0); its ECS cache is not, so the health
change test uses a fresh resolver.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gslb.admin.metrics import DnsCollector
from gslb.dns.node import NodeOptions
from gslb.dns.status import NodeStatus
from gslb.dnssec.keys import ds_records, generate_key, write_key
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth

from .dnshelpers import ServerThread

ROOT = Path(__file__).resolve().parent.parent
ZONE = dns.name.from_text("example.test.")
DATACENTERS = ["us-east", "eu-west", "ap-northeast", "sa-east", "us-west", "ap-southeast"]
SERVICES = ["www", "multi", "geo", "failover", "api", "weighted", "sticky", "corp"]
CLIENTS = ["127.1.0.0/24", "127.2.0.0/24", "127.3.0.0/24", "127.4.0.0/24", "127.5.0.0/24"]


def publish(holder: HealthHolder, down: tuple[str, ...] = ()) -> None:
    states = {dc: TargetHealth("down" if dc in down else "up", "test") for dc in DATACENTERS}
    holder.publish(HealthSnapshot(holder.current.epoch + 1, MappingProxyType(states)))


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now (Unbound binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_sock:
            udp_sock.bind(("127.0.0.1", 0))
            port = int(udp_sock.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp_sock:
                try:
                    tcp_sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def ds_line(key_dir: Path) -> str:
    from gslb.dnssec.keys import zone_keys

    (ds,) = ds_records(zone_keys(key_dir, ZONE), time.time())
    return f"example.test. IN DS {ds.to_text()}"


class Unbound:
    """A validating Unbound on a free loopback port, stub to gslb, trusting `anchor`."""

    def __init__(self, directory: Path, gslb_port: int, anchor: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "anchor.ds").write_text(anchor + "\n")
        for _attempt in range(5):  # another process may take the port between check and bind
            if self._start(directory, gslb_port):
                return
        raise RuntimeError(f"unbound did not start: {self.log.read_text()}")

    def _start(self, directory: Path, gslb_port: int) -> bool:
        self.port = free_port()
        config = f"""\
server:
  do-daemonize: no
  interface: 127.0.0.1@{self.port}
  port: {self.port}
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  do-not-query-localhost: no
  do-ip6: no
  module-config: "subnetcache validator iterator"
  send-client-subnet: 127.0.0.1
  client-subnet-always-forward: yes
  max-client-subnet-ipv4: 24
  trust-anchor-file: "{directory / "anchor.ds"}"
  local-zone: "test." nodefault
  access-control: 127.0.0.0/8 allow
  qname-minimisation: no
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
stub-zone:
  name: "example.test"
  stub-addr: 127.0.0.1@{gslb_port}
"""
        (directory / "unbound.conf").write_text(config)
        self.log = directory / "unbound.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                ["unbound", "-d", "-c", str(directory / "unbound.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while True:  # ready when it answers anything (CHAOS id is refused, which is fine)
            try:
                probe = dns.message.make_query("id.server.", "TXT", "CH")
                dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.5)
                return True
            except (dns.exception.Timeout, OSError):
                if self.process.poll() is not None:
                    return False  # e.g. the port was taken meanwhile: try another
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"unbound did not start: {self.log.read_text()}") from None

    def ask(
        self, name: str, rdtype: str = "A", client: str | None = None, timeout: float = 20
    ) -> dns.message.Message:
        options: list[dns.edns.Option] = []
        if client is not None:
            address, prefix = client.split("/")
            options.append(dns.edns.ECSOption(address, int(prefix)))
        query = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0, options=options)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=timeout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    write_key(generate_key(ZONE), directory)
    return directory


@pytest.fixture(scope="module")
def signed(keys: Path) -> Iterator[tuple[ServerThread, HealthHolder]]:
    holder = HealthHolder()
    publish(holder)
    options = NodeOptions(
        zones_dir=str(ROOT / "zones"),
        config_path=str(ROOT / "zones" / "example.yaml"),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        dnssec_keys=str(keys),
    )
    server = ServerThread(options, health=holder).start()
    yield server, holder
    server.stop()


@pytest.fixture(scope="module")
def unbound(
    signed: tuple[ServerThread, HealthHolder], keys: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Unbound]:
    resolver = Unbound(tmp_path_factory.mktemp("unbound"), signed[0].port, ds_line(keys))
    yield resolver
    resolver.stop()


def assert_validated(response: dns.message.Message, resolver: Unbound) -> None:
    assert response.rcode() == dns.rcode.NOERROR, resolver.log.read_text()[-2000:]
    assert response.flags & dns.flags.AD, resolver.log.read_text()[-2000:]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("static.example.test", "A"),
        ("static.example.test", "AAAA"),
        ("example.test", "MX"),
        ("example.test", "TXT"),
        ("example.test", "NS"),
        ("example.test", "SOA"),
        ("example.test", "DNSKEY"),
        ("example.test", "CDS"),
        ("example.test", "CDNSKEY"),
        ("_sip._udp.example.test", "SRV"),
        ("mail.example.test", "A"),
    ],
)
def test_static_answers_validate(unbound: Unbound, name: str, rdtype: str) -> None:
    response = unbound.ask(name, rdtype)
    assert_validated(response, unbound)
    assert any(r.rdtype == dns.rdatatype.from_text(rdtype) for r in response.answer)


@pytest.mark.parametrize("service", SERVICES)
def test_every_gslb_policy_validates_for_every_client(unbound: Unbound, service: str) -> None:
    answers = set()
    for client in CLIENTS:
        response = unbound.ask(f"{service}.example.test", "A", client)
        assert_validated(response, unbound)
        addresses = [r.address for rrset in response.answer if rrset.rdtype == 1 for r in rrset]
        assert addresses
        answers.add(tuple(addresses))
    if service in ("www", "geo"):
        assert len(answers) > 1  # ECS reached gslb: clients got different, validated answers


def test_aaaa_and_nodata_for_ipv4_only_steering_validate(unbound: Unbound) -> None:
    for client in CLIENTS:
        assert_validated(unbound.ask("www.example.test", "AAAA", client), unbound)
    assert_validated(unbound.ask("corp.example.test", "AAAA", CLIENTS[0]), unbound)


def test_answers_after_a_datacenter_fails_validate(
    signed: tuple[ServerThread, HealthHolder],
    unbound: Unbound,
    keys: Path,
    tmp_path: Path,
) -> None:
    server, holder = signed
    before = unbound.ask("failover.example.test", "A", CLIENTS[0])
    assert_validated(before, unbound)
    assert before.answer[0][0].address == "192.0.2.11"
    publish(holder, down=("us-east",))
    # A fresh resolver: Unbound's ECS cache would keep the old answer for its TTL.
    resolver = Unbound(tmp_path / "unbound", server.port, ds_line(keys))
    try:
        after = resolver.ask("failover.example.test", "A", CLIENTS[0])
        assert_validated(after, resolver)
        assert after.answer[0][0].address == "192.0.2.21"
        for service in SERVICES:
            for client in CLIENTS:
                response = resolver.ask(f"{service}.example.test", "A", client)
                assert_validated(response, resolver)
                if service in ("www", "multi", "failover", "sticky"):
                    assert "192.0.2.11" not in response.answer[0].to_text()
    finally:
        resolver.stop()
        publish(holder)


@pytest.mark.parametrize(
    ("name", "rdtype", "has_answer"),
    [
        ("nope.example.test", "A", False),  # NXDOMAIN, compact denial
        ("deep.nope.example.test", "TXT", False),
        ("static.example.test", "TXT", False),  # NODATA
        ("www.example.test", "TXT", False),  # NODATA at a GSLB name
        ("lab.example.test", "DS", False),  # no DS at the delegation
        ("foo.apps.example.test", "A", True),  # wildcard
        ("a.b.apps.example.test", "TXT", True),  # wildcard, two labels below
        ("foo.apps.example.test", "MX", False),  # wildcard NODATA
        ("apps.example.test", "A", False),  # empty non-terminal
        ("docs.example.test", "A", True),  # CNAME to static data
        ("app.example.test", "A", True),  # CNAME to a GSLB service
        ("static.example.test", "NSEC", False),  # the proof must not list the type asked for
        ("nope.example.test", "NSEC", False),
        ("static.example.test", "RRSIG", False),
    ],
)
def test_negative_wildcard_and_cname_answers_validate(
    unbound: Unbound, name: str, rdtype: str, has_answer: bool
) -> None:
    response = unbound.ask(name, rdtype, CLIENTS[1])
    assert_validated(response, unbound)
    assert bool(response.answer) is has_answer


def test_referral_to_unsigned_child_is_proven_insecure(
    signed: tuple[ServerThread, HealthHolder],
) -> None:
    server, _ = signed
    query = dns.message.make_query("x.lab.example.test", "A", want_dnssec=True)
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    kinds = [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in response.authority]
    assert ("lab.example.test.", "NS") in kinds
    assert ("lab.example.test.", "NSEC") in kinds
    assert ("lab.example.test.", "RRSIG") in kinds


def test_wrong_trust_anchor_gives_servfail(
    signed: tuple[ServerThread, HealthHolder], tmp_path: Path
) -> None:
    other = tmp_path / "other-keys"
    write_key(generate_key(ZONE), other)
    resolver = Unbound(tmp_path / "unbound", signed[0].port, ds_line(other))
    try:
        for name in ("static.example.test", "www.example.test", "nope.example.test"):
            response = resolver.ask(name, "A", CLIENTS[0], timeout=60)
            assert response.rcode() == dns.rcode.SERVFAIL, (response, resolver.log.read_text())
    finally:
        resolver.stop()


def test_without_do_answers_are_unchanged(signed: tuple[ServerThread, HealthHolder]) -> None:
    server, _ = signed
    for name, rdtype in (("static.example.test", "A"), ("www.example.test", "A")):
        query = dns.message.make_query(name, rdtype, use_edns=0)
        response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
        assert response.answer and all(r.rdtype != dns.rdatatype.RRSIG for r in response.answer)
    query = dns.message.make_query("nope.example.test", "A", use_edns=0)
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("static.example.test", "A"),
        ("www.example.test", "A"),
        ("nope.example.test", "A"),
        ("static.example.test", "TXT"),
        ("foo.apps.example.test", "A"),
        ("docs.example.test", "A"),
        ("example.test", "DNSKEY"),
    ],
)
def test_delv_agrees(
    signed: tuple[ServerThread, HealthHolder], keys: Path, tmp_path: Path, name: str, rdtype: str
) -> None:
    _, _, _, tag, algorithm, digest_type, digest = ds_line(keys).split()
    anchor = tmp_path / "anchor.conf"
    ds = f'{tag} {algorithm} {digest_type} "{digest}"'
    anchor.write_text(f"trust-anchors {{ example.test. static-ds {ds}; }};\n")
    out = subprocess.run(
        [
            "delv",
            "@127.0.0.1",
            "-p",
            str(signed[0].port),
            "-a",
            str(anchor),
            "+root=example.test",
            name,
            rdtype,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text = out.stdout + out.stderr
    assert "fully validated" in text, text


def test_status_and_metrics_show_keys_and_signature_cache(
    signed: tuple[ServerThread, HealthHolder], unbound: Unbound
) -> None:
    server, _ = signed
    assert_validated(unbound.ask("static.example.test"), unbound)
    assert server.node is not None
    status = NodeStatus(server.node)
    dnssec = server.call(lambda: status.status()["dnssec"])
    assert dnssec["enabled"] is True
    (key,) = dnssec["zones"]["example.test."]["keys"]
    assert key["state"] == "active" and key["role"] == "csk" and key["algorithm"] == 13
    counters = server.call(lambda: status.dns_counters())
    assert counters.dnssec["misses"] >= 1 and counters.dnssec["entries"] >= 1
    registry = CollectorRegistry()
    registry.register(DnsCollector(lambda: counters))
    text = generate_latest(registry).decode()
    assert 'gslb_dnssec_signature_cache_total{result="hits",worker="0"}' in text
    assert "gslb_dnssec_signature_cache_entries" in text


def test_zonemaster_dnssec_module_passes(keys: Path, tmp_path: Path) -> None:
    """Zonemaster's DNSSEC tests on the signed example zone, served on port 53 of two loopback
    addresses (Zonemaster cannot use another port). The zone's name server addresses point
    at those, so Zonemaster sends nothing off loopback."""
    zones = tmp_path / "zones"
    zones.mkdir()
    text = (ROOT / "zones" / "example.test.zone").read_text()
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] in (["ns1"], ["ns2"]) and "AAAA" in fields:
            continue
        if fields[:3] == ["ns1", "IN", "A"]:
            line = "ns1              IN A    127.0.0.153"
        if fields[:3] == ["ns2", "IN", "A"]:
            line = "ns2              IN A    127.0.0.154"
        lines.append(line)
    (zones / "example.test.zone").write_text("\n".join(lines) + "\n")
    options = NodeOptions(
        zones_dir=str(zones),
        listen=["127.0.0.153:53", "127.0.0.154:53"],
        health_monitor=False,
        dnssec_keys=str(keys),
    )
    server = ServerThread(options).start()
    try:
        _, _, _, tag, algorithm, digest_type, digest = ds_line(keys).split()
        out = subprocess.run(
            [
                "zonemaster-cli",
                "--no-ipv6",
                "--ns",
                "ns1.example.test/127.0.0.153",
                "--ns",
                "ns2.example.test/127.0.0.154",
                "--ds",
                f"{tag},{algorithm},{digest_type},{digest}",
                "--test",
                "DNSSEC",
                "--level",
                "INFO",
                "example.test",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    problems = [
        line
        for line in text.splitlines()
        if any(f" {level} " in line for level in ("NOTICE", "WARNING", "ERROR", "CRITICAL"))
    ]
    assert not problems, text
    assert "uses algorithm number 13" in text, text  # the DNSSEC tests did run
    assert "The zone has NSEC records" in text, text


def test_a_zone_signed_by_a_bind_zsk_alone_validates(tmp_path: Path) -> None:
    """Keys from `dnssec-keygen -a ECDSAP256SHA256 example.test` (no -f KSK): the ZSK signs
    everything, the DNSKEY RRset included, and the DS points at it."""
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["dnssec-keygen", "-q", "-K", str(keys), "-a", "ECDSAP256SHA256", "example.test"],
        check=True,
        capture_output=True,
    )
    for path in keys.glob("*.private"):
        path.chmod(0o600)
    options = NodeOptions(
        zones_dir=str(ROOT / "zones"),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        dnssec_keys=str(keys),
    )
    server = ServerThread(options).start()
    resolver = Unbound(tmp_path / "unbound", server.port, ds_line(keys))
    try:
        for name, rdtype in (("static.example.test", "A"), ("nope.example.test", "A")):
            assert_validated(resolver.ask(name, rdtype), resolver)
    finally:
        resolver.stop()
        server.stop()
