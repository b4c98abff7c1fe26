"""Drills through a running `gslb dns` (its own health monitor and admin API): a timed drain
with `gslb health override --drain`, then slow start when the operator clears it, and slow
start after a real check failure. Answers are read over UDP with ECS."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest

from .stackhelpers import ROOT, free_ports

GEOIP = ROOT / "geodata" / "gslb-test-city.mmdb"
CONFIG = """\
geoip: {geoip}
datacenters:
  eu-west:
    latitude: 53.35
    longitude: -6.26
    ipv4: [192.0.2.21]
    slow_start: 4s
    check: {{type: tcp, host: 127.0.0.1, port: {check}, interval: 0.3, timeout: 0.2,
             rise: 1, fall: 1}}
  us-east: {{latitude: 39.04, longitude: -77.49, ipv4: [192.0.2.11]}}
services:
  www.example.test:
    policy: geoproximity
    datacenters: [eu-west, us-east]
    ttl: 60
    on_all_down: fail_open
rrl: {{enabled: false}}  # the drill asks far faster than any one resolver would
"""
# Frankfurt client networks: nearest to eu-west.
CLIENTS = [f"127.2.{i}.0" for i in range(0, 250, 2)]
EU = "192.0.2.21"


class Node:
    def __init__(self, tmp: Path, template: str = CONFIG) -> None:
        self.dns_port, self.admin_port, self.check_port = free_ports(3)
        self.listener: socket.socket | None = None
        self.listen()
        config = tmp / "gslb.yaml"
        config.write_text(template.format(geoip=GEOIP, check=self.check_port))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gslb.cli",
                "dns",
                "--zones",
                str(ROOT / "zones"),
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.dns_port}",
                "--admin",
                f"127.0.0.1:{self.admin_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.check_port))
        sock.listen(64)
        self.listener = sock

    def fail(self) -> None:
        assert self.listener is not None
        self.listener.close()
        self.listener = None

    def ask(self, net: str) -> tuple[str, int]:
        q = dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(net, 24)]
        )
        r = dns.query.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        return r.answer[0][0].address, r.answer[0].ttl

    def share(self) -> tuple[float, set[str], int]:
        """Fraction of the client networks answered eu-west, those networks, the min TTL."""
        chosen = set()
        ttl = 10**6
        for net in CLIENTS:
            address, t = self.ask(net)
            ttl = min(ttl, t)
            if address == EU:
                chosen.add(net)
        return len(chosen) / len(CLIENTS), chosen, ttl

    def override(self, *args: str, target: str = "eu-west") -> None:
        admin = f"http://127.0.0.1:{self.admin_port}"
        cmd = [sys.executable, "-m", "gslb.cli", "health", "override", target, *args]
        subprocess.run([*cmd, "--admin", admin], check=True, capture_output=True, timeout=30)

    def wait_share(self, want: float, deadline_s: float = 20) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                if self.share()[0] == want:
                    return
            except (dns.exception.Timeout, OSError, IndexError):
                pass
            assert time.monotonic() < deadline, f"share never reached {want}"
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.listener is not None:
            self.listener.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        n.wait_share(1.0)
        yield n
    finally:
        n.stop()


def _follow(node: Node, until: float, rising: bool) -> list[float]:
    """Share samples until it reaches `until`; every client network moves one way only."""
    samples: list[float] = []
    previous: set[str] | None = None
    deadline = time.monotonic() + 30
    while True:
        fraction, chosen, ttl = node.share()
        samples.append(fraction)
        if previous is not None:
            assert (previous <= chosen) if rising else (chosen <= previous)
        previous = chosen
        if fraction == until:
            return samples
        if 0 < fraction < 1:
            assert ttl < 60  # a transition is running: short TTLs
        assert time.monotonic() < deadline, f"stuck at {samples[-5:]}"


def test_drain_ramps_out_then_slow_start_after_clear(node: Node) -> None:
    node.override("--drain", "4s", "--reason", "drill")
    node.share()  # the engine notices the new snapshot on a query
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/status", timeout=10) as r:
        status = json.load(r)
    ramp = status["services"][0]["transitions"]["eu-west"]  # what the status page shows
    assert ramp["kind"] == "drain" and 0 <= ramp["share"] <= 1
    # The live node narrates where the ramp stands for a client (`gslb explain --admin`).
    admin = ["--admin", f"http://127.0.0.1:{node.admin_port}"]
    explain = subprocess.run(
        [sys.executable, "-m", "gslb.cli", "explain", "www.example.test", "--client", "127.2.0.1"]
        + ["--subnet", "127.2.0.0/24", *admin],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert explain.returncode == 0, explain.stdout
    assert "eu-west drain" in explain.stdout and "client point" in explain.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "gslb.cli", "explain", "nope.example.test", "--client", "127.2.0.1"]
        + admin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unknown.returncode == 2 and "is not a GSLB service" in unknown.stdout
    samples = _follow(node, 0.0, rising=False)
    assert any(0 < s < 1 for s in samples), samples  # a ramp, not a switch
    assert node.ask(CLIENTS[0])[1] == 60  # the drain is over: back to the full TTL
    node.override("--clear", "--reason", "drill over")
    samples = _follow(node, 1.0, rising=True)
    assert any(0 < s < 1 for s in samples), samples


def test_slow_start_after_a_failed_check_recovers(node: Node) -> None:
    node.fail()
    node.wait_share(0.0)
    node.listen()
    samples = _follow(node, 1.0, rising=True)
    assert any(0 < s < 1 for s in samples), samples


SPILL = """\
geoip: {geoip}
datacenters:
  fra: {{latitude: 50.11, longitude: 8.68, ipv4: [192.0.2.1], capacity: 100,
         check: {{type: tcp, host: 127.0.0.1, port: {check}, interval: 0.3, timeout: 0.2}}}}
  ams: {{latitude: 52.37, longitude: 4.90, ipv4: [192.0.2.2], capacity: 300}}
  par: {{latitude: 48.86, longitude: 2.35, ipv4: [192.0.2.3], capacity: 100}}
  lon: {{latitude: 51.51, longitude: -0.13, ipv4: [192.0.2.4], capacity: 100}}
  iad: {{latitude: 39.04, longitude: -77.49, ipv4: [192.0.2.5], capacity: 1000}}
services:
  www.example.test:
    policy: geoproximity
    spillover: 3
    types: [A]
    datacenters: [fra, ams, par, lon, iad]
    on_all_down: fail_open
rrl: {{enabled: false}}
"""
NAMES = {"192.0.2.1": "fra", "192.0.2.2": "ams", "192.0.2.3": "par", "192.0.2.4": "lon"}


def test_spillover_through_a_running_node(tmp_path: Path) -> None:
    node = Node(tmp_path, SPILL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if {node.ask(net)[0] for net in CLIENTS} == {"192.0.2.1"}:
                    break
            except (dns.exception.Timeout, OSError, IndexError):
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        node.override("--down", "--reason", "drill", target="fra")
        deadline = time.monotonic() + 20
        while "192.0.2.1" in {node.ask(net)[0] for net in CLIENTS[:8]}:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first = {net: NAMES[node.ask(net)[0]] for net in CLIENTS}
        split = {dc: sum(1 for v in first.values() if v == dc) for dc in set(first.values())}
        assert set(split) == {"ams", "par", "lon"}  # the 3 nearest healthy, not just one
        assert split["ams"] > split["par"] and split["ams"] > split["lon"]  # 300 vs 100
        assert {net: NAMES[node.ask(net)[0]] for net in CLIENTS} == first  # no flapping
    finally:
        node.stop()


MANUAL = CONFIG.replace("    slow_start: 4s\n", "    failback: manual\n")


def test_manual_failback_waits_for_the_operator(tmp_path: Path) -> None:
    node = Node(tmp_path, MANUAL)
    try:
        node.wait_share(1.0)
        node.fail()
        node.wait_share(0.0)
        node.listen()  # the check passes again...
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert node.share()[0] == 0.0  # ...but eu-west stays out
            time.sleep(0.1)
        node.override("--clear", "--reason", "checked by hand")
        node.wait_share(1.0)
    finally:
        node.stop()
