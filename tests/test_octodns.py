"""octoDNS configurations served as they are: a real `gslb dns --octodns-config`, real probes of
loopback backends, real queries (dnspython and dig) against octoDNS's documented example."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import pytest

from gslb.config.octodns import load_octodns
from gslb.config.sources import load_sources
from gslb.errors import ConfigError

from .stackhelpers import free_ports

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "config" / "octodns"
BIN = Path(sys.executable).parent
GSLB = str(BIN / "gslb")
VALIDATE = str(BIN / "octodns-validate")
FIXTURE_PORT = "18080"
APAC = {"127.0.0.1", "127.0.0.2"}
EU = {"127.0.0.3", "127.0.0.4"}
NA = {"127.0.0.5", "127.0.0.6", "127.0.0.7"}
BACKUP = EU | NA  # the record's own values: the never-checked default pool
PROBED = APAC | EU | NA
FORCED = {"127.0.0.8", "127.0.0.9"}  # status down / status up: never probed


class Backends:
    """One tiny HTTP server per loopback address, all on one port (octoDNS checks one port
    per record); counts the probes each address receives."""

    def __init__(self, addresses: set[str], port: int) -> None:
        self.port = port
        self.hits: Counter[str] = Counter()
        self.servers: dict[str, http.server.ThreadingHTTPServer] = {}
        for address in sorted(addresses):
            self.start(address)

    def start(self, address: str) -> None:
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hits[address] += 1
                ok = self.path == "/_dns" and self.headers["Host"] == "test.example.test"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((address, self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[address] = server

    def stop(self, *addresses: str) -> None:
        for address in addresses:
            server = self.servers.pop(address)
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        self.stop(*list(self.servers))


def _copy_fixture(tmp_path: Path, port: int) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    zone = repo / "config" / "example.test.yaml"
    zone.write_text(zone.read_text().replace(f"port: {FIXTURE_PORT}", f"port: {port}"))
    gslb = repo / "gslb.yaml"
    gslb.write_text(gslb.read_text().replace("../../../geodata/", f"{ROOT / 'geodata'}/"))
    return repo


def _validate(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VALIDATE, "--config-file", "config/octodns.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Dns:
    def __init__(self, port: int) -> None:
        self.port = port

    def answer(self, name: str, subnet: str | None = None, rdtype: str = "A") -> list[str]:
        options = []
        if subnet is not None:
            address, _, prefix = subnet.partition("/")
            options.append(dns.edns.ECSOption(address, int(prefix)))
        query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
        response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2)
        return sorted(str(rd) for rrset in response.answer for rd in rrset)

    def wait_for(self, name: str, subnet: str | None, want: set[str], deadline: float) -> None:
        """Poll until every answer for a while lies in `want` (health flips take a few probes)."""
        end = time.monotonic() + deadline
        last: list[str] = []
        while time.monotonic() < end:
            last = self.answer(name, subnet)
            if (
                last
                and set(last) <= want
                and all(set(self.answer(name, subnet)) <= want for _ in range(10))
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} from {subnet}: {last}, expected within {sorted(want)}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dns, Backends, Path]]:
    check_port, dns_port = free_ports(2)
    repo = _copy_fixture(tmp_path, check_port)
    backends = Backends(PROBED | FORCED, check_port)
    log = (tmp_path / "dns.log").open("w")
    process = subprocess.Popen(
        [
            GSLB,
            "dns",
            "--octodns-config",
            str(repo / "config" / "octodns.yaml"),
            "--config",
            str(repo / "gslb.yaml"),
            "--listen",
            f"127.0.0.1:{dns_port}",
            "--admin",
            "off",
            "--rrl-rate",
            "0",  # the weight test asks hundreds of times from one client
        ],
        cwd=tmp_path,  # not the repository: octoDNS's ./config is found beside the file
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Dns(dns_port)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                if server.answer("test.example.test", "127.1.0.0/24"):
                    break
            except (OSError, dns.exception.Timeout):
                pass
            if process.poll() is not None or time.monotonic() > end:
                output = (tmp_path / "dns.log").read_text()
                raise AssertionError(f"gslb dns did not start:\n{output}")
            time.sleep(0.1)
        yield server, backends, repo
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        backends.close()


def test_documented_example_passes_octodns_validate():
    result = _validate(FIXTURE)
    assert result.returncode == 0, result.stderr


def test_dynamic_example_answers_as_octodns_says(served: tuple[Dns, Backends, Path]):
    server, backends, repo = served
    assert _validate(repo).returncode == 0
    wait = 20.0
    # Rules in order: AF-ZA (rule 1) before AF (rule 2); AS and OC to apac; EU to eu; the rest
    # (North America, and clients with no known location) to the catch-all na.
    server.wait_for("test.example.test", "127.3.0.0/24", APAC, wait)  # Tokyo: AS
    server.wait_for("test.example.test", "127.8.0.0/24", APAC, wait)  # Johannesburg: AF-ZA
    server.wait_for("test.example.test", "127.5.0.0/24", APAC, wait)  # Sydney: OC
    server.wait_for("test.example.test", "127.17.0.0/24", EU, wait)  # Cairo: AF
    server.wait_for("test.example.test", "127.2.0.0/24", EU, wait)  # Frankfurt: EU
    server.wait_for("test.example.test", "127.1.0.0/24", NA, wait)  # San Francisco
    server.wait_for("test.example.test", None, NA, wait)  # no location: catch-all

    # Weights: eu answers 127.0.0.3 (weight 2) and 127.0.0.4 (weight 3), one per response.
    answers = Counter(tuple(server.answer("test.example.test", "127.2.0.0/24")) for _ in range(300))
    assert set(answers) == {("127.0.0.3",), ("127.0.0.4",)}
    share = answers[("127.0.0.4",)] / 300
    assert 0.45 < share < 0.75, answers

    # Fallback: apac's values all fail their checks -> its fallback pool na.
    backends.stop(*APAC)
    server.wait_for("test.example.test", "127.3.0.0/24", NA, wait)
    server.wait_for("test.example.test", "127.2.0.0/24", EU, wait)  # eu is unaffected
    # na fails too -> apac and eu's chains end in the record's own values (never checked).
    backends.stop(*NA)
    server.wait_for("test.example.test", "127.3.0.0/24", BACKUP, wait)
    server.wait_for("test.example.test", "127.1.0.0/24", BACKUP, wait)
    # Recovery: na's values come back and answer again.
    for address in sorted(NA):
        backends.start(address)
    server.wait_for("test.example.test", "127.3.0.0/24", NA, wait)

    # status up is always served, status down never, and neither is ever probed.
    assert {server.answer("forced.example.test")[0] for _ in range(20)} == {"127.0.0.9"}
    assert all(backends.hits[a] == 0 for a in FORCED), backends.hits
    assert all(backends.hits[a] > 0 for a in EU), backends.hits


def test_static_records_of_octodns_types_answer_with_dig(served: tuple[Dns, Backends, Path]):
    server, _, _ = served

    def dig(name: str, rdtype: str) -> list[str]:
        out = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(server.port), "+short", "+time=2", "+tries=1"]
            + [name, rdtype],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted(out.split("\n")[:-1])

    assert dig("example.test", "A") == ["192.0.2.10", "192.0.2.11"]
    assert dig("example.test", "AAAA") == ["2001:db8::10"]
    assert dig("forced.example.test", "AAAA") == ["2001:db8::9"]  # static, beside a dynamic A
    # A subnet rule beats a geo rule (octoDNS: subnets are more specific than geos).
    assert server.answer("subnet.example.test", "127.3.5.0/24") == ["127.0.0.10"]  # Tokyo too
    assert server.answer("subnet.example.test", "127.3.0.0/24") == ["127.0.0.12"]
    assert server.answer("subnet.example.test", "127.1.0.0/24") == ["127.0.0.11"]
    assert dig("example.test", "MX") == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert dig("example.test", "NS") == ["ns1.example.test.", "ns2.example.test."]
    assert dig("example.test", "CAA") == ['0 issue "ca.example.net"']
    assert dig("example.test", "TXT") == ['"some-verification=3becb991"', '"v=spf1 -all"']
    assert dig("_sip._tcp.example.test", "SRV") == ["10 20 5060 sip.example.test."]
    assert dig("pointer.example.test", "CNAME") == ["look.over-here.example."]
    assert dig("ptr.example.test", "PTR") == ["host.example.test."]
    assert dig("anything.example.test", "A") == ["192.0.2.45"]  # the wildcard
    assert dig("naptr.example.test", "NAPTR") == [
        '100 10 "U" "E2U+sip" "!^.*$!sip:info@example.test!" .'
    ]
    assert dig("sshfp.example.test", "SSHFP")[0].startswith("4 2 123456789ABCDEF")
    assert dig("tlsa.example.test", "TLSA")[0].startswith("3 1 1 ABABAB")
    assert dig("loc.example.test", "LOC")[0].startswith("31 58 52.100 S 115 49 11.700 E")
    soa = dig("example.test", "SOA")[0].split()
    assert soa[:2] == ["ns1.example.test.", "hostmaster.example.test."]
    referral = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(server.port), "+norec", "delegated.example.test", "A"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ns1.elsewhere.example." in referral and "AUTHORITY: 2" in referral


def test_health_targets_come_from_the_octodns_healthcheck(tmp_path: Path):
    data = load_octodns(str(_copy_fixture(tmp_path, 8999) / "config" / "octodns.yaml"))
    checked = {n: dc.check for n, dc in data.datacenters.items() if dc.check is not None}
    assert set(checked) == PROBED  # 127.0.0.8 (down) and .9 (up) are never probed
    check = checked["127.0.0.3"]
    assert (check.type, check.port, check.path, check.host_header) == (
        "http",
        8999,
        "/_dns",
        "test.example.test",
    )
    svc = data.services["test.example.test."]
    assert [r.pool for r in svc.rules] == ["apac", "eu", "na"]
    assert svc.rules[0].geos == ("AF-ZA", "AS", "OC") and svc.rules[-1].catch_all
    assert svc.pools["apac"].fallback == "na" and svc.pools["na"].fallback is None
    assert [v.weight for v in svc.pools["eu"].values] == [2, 3]
    assert svc.fallback_pool == "values" and svc.on_all_down == "fallback"
    assert {v.datacenter for v in svc.pools["values"].values} == BACKUP


def test_gslb_settings_beside_the_octodns_repository(tmp_path: Path):
    repo = _copy_fixture(tmp_path, 8999)
    sources = load_sources(
        zones_dir=None,
        config_path=str(repo / "gslb.yaml"),
        octodns_path=str(repo / "config" / "octodns.yaml"),
    )
    assert sources.config is not None
    check = sources.config.datacenters["127.0.0.5"].check
    assert check is not None
    assert (check.interval, check.timeout, check.rise, check.fall) == (0.5, 0.45, 1, 2)
    assert check.port == 8999 and check.host_header == "test.example.test"
    assert sources.config.geoip_path is not None
    assert "example.test." in sources.zones
    # Without gslb's file, --geoip alone gives the geo rules their database.
    octodns_only = load_sources(
        zones_dir=None,
        octodns_path=str(repo / "config" / "octodns.yaml"),
        geoip_override=str(ROOT / "geodata" / "gslb-test-city.mmdb"),
    )
    assert octodns_only.config is not None and octodns_only.config.geoip_path is not None


def _record_line() -> int:
    """The line octoDNS reports for the `test` record: its first key."""
    lines = (FIXTURE / "config" / "example.test.yaml").read_text().splitlines()
    start = lines.index("test:")
    return next(i for i in range(start, len(lines)) if lines[i] == "  dynamic:") + 1


RECORD = _record_line()


def test_probe_agents_and_explain_see_the_octodns_values(tmp_path: Path):
    from gslb.health.checks import targets_from_config

    repo = _copy_fixture(tmp_path, 8999)
    octodns = str(repo / "config" / "octodns.yaml")
    sources = load_sources(zones_dir=None, octodns_path=octodns)
    assert sources.config is not None
    targets = targets_from_config(sources.config)  # what `gslb probe --octodns-config` checks
    assert set(targets) == PROBED
    assert {t.address for t in targets.values()} == PROBED
    args = ["--octodns-config", octodns, "--config", str(repo / "gslb.yaml")]
    explain = subprocess.run(
        [GSLB, "explain", "test.example.test", *args, "--client", "127.3.0.1"]
        + ["--subnet", "127.3.0.0/24", "--down", "127.0.0.1", "--down", "127.0.0.2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explain.returncode == 0, explain.stdout + explain.stderr
    report = json.loads(explain.stdout)
    assert set(report["answers"]) <= NA  # apac down -> its fallback na
    steps = " ".join(step["detail"] for step in report["steps"])
    assert "pool apac" in steps and "pool na" in steps


def _broken_repo(tmp_path: Path, old: str, new: str) -> Path:
    repo = _copy_fixture(tmp_path, 8999)
    zone = repo / "config" / "example.test.yaml"
    text = zone.read_text()
    assert old in text
    zone.write_text(text.replace(old, new, 1))
    return repo


@pytest.mark.parametrize(
    ("old", "new", "line", "text"),
    [
        ("      pool: eu\n", "      pool: europe\n", RECORD, 'rule 2 undefined pool "europe"'),
        ("          weight: 3\n", "          weight: 300\n", RECORD, "invalid weight"),
        ("      - AF\n      - EU\n", "      - XX\n      - EU\n", RECORD, "unknown continent code"),
        ("_sip._tcp:\n", "zz:\n", 6, "keys out of order"),
    ],
)
def test_rejected_with_octodns_reasons_file_and_line(tmp_path, old, new, line, text):
    repo = _broken_repo(tmp_path, old, new)
    assert _validate(repo).returncode != 0  # octoDNS rejects it too
    with pytest.raises(ConfigError) as err:
        load_sources(zones_dir=None, octodns_path=str(repo / "config" / "octodns.yaml"))
    reasons = err.value.reasons
    assert any(text in r.message for r in reasons), reasons
    mark = reasons[0].mark
    assert mark is not None and mark.file.endswith("example.test.yaml") and mark.line == line
    result = subprocess.run(
        [GSLB, "check", "--octodns-config", str(repo / "config" / "octodns.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and f"example.test.yaml:{line}:" in result.stdout


def test_an_octodns_zone_file_given_as_gslb_config_says_what_to_do(tmp_path: Path):
    result = subprocess.run(
        [GSLB, "check", "--config", str(FIXTURE / "config" / "example.test.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "looks like an octoDNS zone file" in result.stdout
    assert "--octodns-config" in result.stdout
    main = subprocess.run(
        [GSLB, "check", "--config", str(FIXTURE / "config" / "octodns.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert main.returncode == 1 and "octoDNS main config" in main.stdout


def test_targets_and_plugin_sources_are_never_built(tmp_path: Path):
    """An octoDNS repository pushing to PowerDNS, with a plugin source: neither package is
    installed and the target's secret is not set, yet gslb serves the YAML zones."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "config" / "octodns-targets", repo)
    config = str(repo / "config" / "octodns.yaml")
    check = subprocess.run(
        [GSLB, "check", "--octodns-config", config], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout
    assert "powerdns (octodns_powerdns.PowerDnsProvider) is not a YAML provider" in check.stdout
    assert "source no-mail is not a YAML provider: skipped" in check.stdout
    (port,) = free_ports(1)
    log = (tmp_path / "dns.log").open("w")
    process = subprocess.Popen(
        [GSLB, "dns", "--octodns-config", config, "--listen", f"127.0.0.1:{port}"]
        + ["--admin", "off"],
        cwd=repo,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Dns(port)
    try:
        end = time.monotonic() + 30
        answer: list[str] = []
        while time.monotonic() < end and not answer:
            try:
                answer = server.answer("www.shop.test")
            except (OSError, dns.exception.Timeout):
                time.sleep(0.1)
            assert process.poll() is None, (tmp_path / "dns.log").read_text()
        assert answer == ["192.0.2.42", "192.0.2.43"]
        assert server.answer("www.shop.test", rdtype="AAAA") == ["2001:db8::44"]
        assert server.answer("anything.shop.test") == ["192.0.2.45"]
        assert server.answer("shop.test", rdtype="TXT") == ['"proof-of-ownership=1234"']
        dig = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), "+short", "pointer.shop.test", "CNAME"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert dig.stdout.strip() == "look.over-here.example."
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_reload_rereads_octodns_and_keeps_serving_on_a_bad_edit(tmp_path: Path):
    from gslb.dns.node import NodeOptions

    from .dnshelpers import ServerThread

    repo = _copy_fixture(tmp_path, free_ports(1)[0])
    zone = repo / "config" / "example.test.yaml"
    options = NodeOptions(
        zones_dir=None,
        octodns_path=str(repo / "config" / "octodns.yaml"),
        listen=["127.0.0.1:0"],
        admin_listen="off",
        health_monitor=False,  # no probes: this test is about loading
    )
    server = ServerThread(options).start()
    try:
        dns_server = Dns(server.port)
        assert dns_server.answer("mx1.example.test") == ["192.0.2.25"]
        good = zone.read_text()
        zone.write_text(good.replace("      pool: eu\n", "      pool: europe\n", 1))
        assert server.call(server.node.reload) is False  # octoDNS rejects it: old data stays
        assert 'undefined pool "europe"' in (server.node.last_reload_error or "")
        assert dns_server.answer("mx1.example.test") == ["192.0.2.25"]
        zone.write_text(good.replace("  value: 192.0.2.25\n", "  value: 192.0.2.26\n", 1))
        assert server.call(server.node.reload) is True
        assert dns_server.answer("mx1.example.test") == ["192.0.2.26"]
    finally:
        server.stop()


def test_main_config_errors_carry_octodns_reason_file_and_line(tmp_path: Path):
    repo = _copy_fixture(tmp_path, 8999)
    main = repo / "config" / "octodns.yaml"
    main.write_text(
        main.read_text().replace("    class: octodns.provider.yaml.YamlProvider\n", "", 1)
    )
    with pytest.raises(ConfigError) as err:
        load_sources(zones_dir=None, octodns_path=str(main))
    (reason,) = err.value.reasons
    assert "Provider config is missing class" in reason.message
    assert reason.mark is not None and (reason.mark.file, reason.mark.line) == (str(main), 7)


def test_alias_records_and_alias_zones(tmp_path: Path):
    """ALIAS is flattened to its target's static addresses; an alias zone serves a copy."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "octodns.yaml").write_text(
        "providers:\n  config:\n    class: octodns.provider.yaml.YamlProvider\n"
        "    directory: ./config\n    escaped_semicolons: true\n"
        "zones:\n  alias.test.:\n    sources: [config]\n  mirror.test.:\n    alias: alias.test.\n"
    )
    (tmp_path / "config" / "alias.test.yaml").write_text(
        "'':\n  - type: ALIAS\n    value: www.alias.test.\n"
        "www:\n  - type: A\n    value: 192.0.2.7\n  - type: AAAA\n    value: 2001:db8::7\n"
    )
    assert _validate(tmp_path).returncode == 0
    data = load_octodns(str(tmp_path / "config" / "octodns.yaml"))
    for origin in ("alias.test.", "mirror.test."):
        zone = data.zones[origin]
        apex = zone.find_node(origin)
        a = apex.find_rdataset(dns.rdataclass.IN, dns.rdatatype.A)
        aaaa = apex.find_rdataset(dns.rdataclass.IN, dns.rdatatype.AAAA)
        assert [r.to_text() for r in a] == ["192.0.2.7"]
        assert [r.to_text() for r in aaaa] == ["2001:db8::7"]
