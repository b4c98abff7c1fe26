"""Issue 11 faults 11 and 12, over real sockets: ECS scope longer than the source, and one
rule for datacenters without a health check (server, `gslb explain` and `gslb check`)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import pytest

from gslb.cli import main
from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, udp, write_zones

ROOT = Path(__file__).resolve().parent.parent
GEOIP = ROOT / "geodata" / "gslb-test-city.mmdb"

# Paris and Marseille datacenters: 127.20.0.0/16 (Paris) holds 127.20.16.0/20 (Marseille),
# so an ECS /16 query covers two different answers.
FRANCE = f"""\
geoip: {GEOIP}
datacenters:
  paris: {{region: paris, latitude: 48.86, longitude: 2.35, ipv4: [192.0.2.1]}}
  marseille: {{region: marseille, latitude: 43.30, longitude: 5.37, ipv4: [192.0.2.2]}}
services:
  www.example.test:
    policy: geoproximity
    datacenters: [paris, marseille]
    on_all_down: fail_open
"""

# `checked` has a check nothing answers; `free` has none. unknown_is: down, so only the rule
# for unchecked datacenters decides the answer while the check has no verdict yet.
UNCHECKED = f"""\
geoip: {GEOIP}
datacenters:
  checked:
    region: checked
    latitude: 48.86
    longitude: 2.35
    ipv4: [192.0.2.1]
    check: {{type: tcp, host: 127.0.0.1, port: 9, interval: 60, timeout: 0.2, rise: 1, fall: 50}}
  free: {{region: free, latitude: 35.68, longitude: 139.65, ipv4: [192.0.2.2]}}
services:
  www.example.test:
    policy: geoproximity
    datacenters: [checked, free]
    unknown_is: down
    on_all_down: fail_open
"""


def _server(tmp_path: Path, config: str, monitor: bool) -> ServerThread:
    zones = write_zones(tmp_path / "zones")
    path = tmp_path / "gslb.yaml"
    path.write_text(config)
    options = NodeOptions(
        zones_dir=str(zones),
        config_path=str(path),
        listen=["127.0.0.1:0"],
        health_monitor=monitor,
        admin_listen="off",
    )
    return ServerThread(options).start()


@pytest.fixture
def france(tmp_path: Path) -> Iterator[ServerThread]:
    server = _server(tmp_path, FRANCE, monitor=False)
    yield server
    server.stop()


def ask(server: ServerThread, subnet: str) -> tuple[list[str], int, int]:
    address, prefix = subnet.split("/")
    query = dns.message.make_query(
        "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))]
    )
    response = udp(server, query)
    ecs = [o for o in response.options if isinstance(o, dns.edns.ECSOption)][0]
    answers = [r.address for rrset in response.answer for r in rrset]
    return answers, ecs.srclen, ecs.scopelen


def test_scope_longer_than_a_source_covering_two_answers(france: ServerThread) -> None:
    # 127.20.0.0/16 holds Paris and Marseille: the answer for 127.20.0.0 holds for the Paris
    # /20 only, so the scope is /20 and the resolver asks again with more bits.
    answers, source, scope = ask(france, "127.20.0.0/16")
    assert (answers, source) == (["192.0.2.1"], 16)
    assert scope > 16
    answers, _, scope = ask(france, "127.20.16.0/24")
    assert answers == ["192.0.2.2"]
    assert scope <= 24  # Marseille's answer holds for its whole /20
    # Asking again with the scope it was given: an answer that needs no more bits.
    answers, source, again = ask(france, "127.20.0.0/20")
    assert answers == ["192.0.2.1"]
    assert again <= source


def _explain(config: Path, zones: Path, *extra: str) -> dict[str, object]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            [
                "explain",
                "www.example.test",
                "--config",
                str(config),
                "--zones",
                str(zones),
                "--client",
                "127.2.0.1",
                "--json",
                *extra,
            ]
        )
    assert rc == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def _check(config: Path, zones: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["check", "--config", str(config), "--zones", str(zones)])
    assert rc == 0
    return out.getvalue()


def test_unchecked_datacenter_one_rule_for_server_explain_and_check(tmp_path: Path) -> None:
    server = _server(tmp_path, UNCHECKED, monitor=True)
    try:
        # The server's own monitor: `free` has no check and counts up; `checked` has no
        # verdict yet (unknown -> down), so Frankfurt's clients get Tokyo's `free`.
        deadline = time.monotonic() + 10
        while True:
            answers, _, _ = ask(server, "127.2.0.0/24")
            if answers == ["192.0.2.2"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answers == ["192.0.2.2"]
    finally:
        server.stop()
    report = _explain(tmp_path / "gslb.yaml", tmp_path / "zones")
    assert report["answers"] == ["192.0.2.2"]
    states = {c["datacenter"]: (c["state"], c["healthy"]) for c in report["candidates"]}  # type: ignore[attr-defined]
    assert states == {"checked": ("unknown", False), "free": ("up", True)}
    text = _check(tmp_path / "gslb.yaml", tmp_path / "zones")
    assert "datacenter free has no check: it counts as up" in text
    assert "stays unknown" not in text


def test_server_scope_widens_once_its_answer_map_is_built(
    france: ServerThread, tmp_path: Path
) -> None:
    # San Francisco's /16, its unknown and Frankfurt neighbours all answer Paris: once the
    # server's background answer map is ready the scope is wider than the GeoIP /16.
    deadline = time.monotonic() + 30
    while True:
        answers, source, scope = ask(france, "127.1.0.0/24")
        assert answers == ["192.0.2.1"]  # the same answer before and after the map
        if scope < 16 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # 127.0/16 (unknown: configured order), San Francisco, Frankfurt and Tokyo: all Paris.
    assert (source, scope) == (24, 14)
    assert france.node is not None
    steering = france.node.generation.responder.steering
    assert steering.scope_map_state("www.example.test.") == "ready"
    report = _explain(tmp_path / "gslb.yaml", tmp_path / "zones", "--subnet", "127.1.0.0/24")
    assert (report["scope_prefix"], report["scope_network"]) == (14, "127.0.0.0/14")
