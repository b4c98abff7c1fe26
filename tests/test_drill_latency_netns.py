"""Latency steering for real, in network namespaces: two regions' `gslb proxy` processes serve
the same client network (10.99.0.10, one address) over links of different delay, measure it
with TCP_INFO and report it with their health; `gslb dns` in the root namespace steers that
network to the faster region, and follows when the delays swap.

This kernel has no `tc netem` (CONFIG_NET_SCH_NETEM unset), so the delays come from the
userspace delay wires of tests/netlab.py (TUN devices and a relay): the proxies' kernels see
real round-trip times either way. Only namespace addresses and loopback are used."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import pytest

from . import netlab
from .netlab import NetLab, bare
from .stackhelpers import ROOT, free_ports, wait_until

GSLB = [sys.executable, "-m", "gslb.cli"]
PROXY_PORT, BACKEND_PORT = 8080, 9000  # inside each region's namespace
CLIENT = "10.99.0.10"
VIP = {"east": "10.77.1.1", "west": "10.77.2.1"}  # what DNS answers for each region

# Per round: one new connection and request to each region (a fresh handshake is a fresh RTT
# sample for the proxy), from the client's one address.
CLIENT_LOOP = r"""
import socket, sys, time
port, source, targets = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while True:
    for host in targets:
        try:
            s = socket.create_connection((host, port), timeout=3, source_address=(source, 0))
            s.sendall(b"GET / HTTP/1.1\r\nHost: drill\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            s.close()
        except OSError as exc:
            print("client:", host, exc, file=sys.stderr, flush=True)
    time.sleep(0.2)
"""

CONFIG = """\
geoip: {geoip}
datacenters:
  east: {{latitude: 40.71, longitude: -74.0, ipv4: [{east}],
         check: {{type: http, host: {east_check}, port: {port}, path: /health, interval: 0.3,
                  timeout: 0.25, rise: 1, fall: 2}}}}
  west: {{latitude: 37.77, longitude: -122.42, ipv4: [{west}],
         check: {{type: http, host: {west_check}, port: {port}, path: /health, interval: 0.3,
                  timeout: 0.25, rise: 1, fall: 2}}}}
services:
  www.example.test:
    policy: latency
    latency: {{max_age: 30s}}
    datacenters: [west, east]  # unmeasured (and no GeoIP place): west, the first
    types: [A]
    ttl: 5
    on_all_down: fail_open
rrl: {{enabled: false}}
"""


class Drill:
    def __init__(self, lab: NetLab, tmp: Path) -> None:
        client = lab.namespace("client")
        client.add_address(f"{CLIENT}/32")
        self.wires = {}
        checks = {}
        for i, (region, delay) in enumerate((("east", 0.020), ("west", 0.060)), start=1):
            ns = lab.namespace(region)
            wire = lab.delay_wire(client, ns, f"10.77.10{i}.1", f"10.77.10{i}.2", delay=delay)
            ns.add_address(f"{VIP[region]}/32")
            client.route(f"10.77.{i}.0/24", wire.dev(client), src=CLIENT)
            ns.route("10.99.0.0/16", wire.dev(ns), src=VIP[region])
            probe_side, proxy_side = netlab.root_p2p_pair()
            lab.veth(None, probe_side, ns, proxy_side)  # the control plane: no delay
            checks[region] = bare(proxy_side)
            self.wires[region] = wire
            ns.popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(BACKEND_PORT)],
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            ns.popen(
                [*GSLB, "proxy", "--listen", f"0.0.0.0:{PROXY_PORT}"]
                + ["--upstream", f"127.0.0.1:{BACKEND_PORT}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.dns_port, self.admin_port = free_ports(2)
        config = tmp / "gslb.yaml"
        config.write_text(
            CONFIG.format(
                geoip=ROOT / "geodata" / "gslb-test-city.mmdb",
                east=VIP["east"],
                west=VIP["west"],
                east_check=checks["east"],
                west_check=checks["west"],
                port=PROXY_PORT,
            )
        )
        self.node = subprocess.Popen(
            [*GSLB, "dns", "--zones", str(ROOT / "zones"), "--config", str(config)]
            + ["--listen", f"127.0.0.1:{self.dns_port}", "--admin", f"127.0.0.1:{self.admin_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client.popen(
            [sys.executable, "-c", CLIENT_LOOP, str(PROXY_PORT), CLIENT, VIP["east"], VIP["west"]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, net: str) -> tuple[str, int]:
        """(the region answered for client network `net`/24, the ECS scope)."""
        q = dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(net, 24)]
        )
        r = dns.query.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        address = r.answer[0][0].address
        scope = next(o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption))
        return next(region for region, vip in VIP.items() if vip == address), scope

    def answered(self, region: str) -> bool:
        """Is 10.99.0.0/24 answered `region` by measurement (scope: the measured /24)?"""
        try:
            return self.ask("10.99.0.0") == (region, 24)
        except (dns.exception.Timeout, OSError, IndexError, StopIteration):
            return False

    def admin(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)

    def explain(self) -> dict[str, Any]:
        query = urllib.parse.urlencode(
            {"name": "www.example.test", "client": CLIENT, "subnet": "10.99.0.0/24"}
        )
        return self.admin(f"/v1/explain?{query}")  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.node.terminate()
        self.node.wait(10)


@pytest.fixture
def drill(tmp_path: Path) -> Iterator[Drill]:
    why_not = netlab.available()
    assert why_not is None, f"a network-namespace lab cannot be built here: {why_not}"
    with NetLab() as lab:
        d = Drill(lab, tmp_path)
        try:
            yield d
        finally:
            d.stop()


def test_dns_steers_the_client_network_to_the_faster_region_and_follows_a_swap(
    drill: Drill,
) -> None:
    # east is 2 x 20 ms away, west 2 x 60 ms: the proxies measure it, DNS answers east.
    wait_until(lambda: drill.answered("east"), timeout=40, what="10.99.0.0/24 answered east")
    region, scope = drill.ask("10.99.0.0")
    assert (region, scope) == ("east", 24)  # the scope is the measured network
    report = drill.explain()
    step = next(s["detail"] for s in report["steps"] if s["step"] == "latency")
    assert step.startswith("measured for 10.99.0.0/24")
    rtts = dict(part.split(" ", 1) for part in step.split(": ", 1)[1].split(", "))
    east_ms, west_ms = (float(rtts[r].split(" ms")[0]) for r in ("east", "west"))
    assert 35 < east_ms < 70 and 110 < west_ms < 170, step
    # A network nothing measured is not steered by it: the fallback, with a scope clear of it.
    assert drill.ask("10.98.0.0")[0] == "west" and drill.ask("10.98.0.0")[1] < 24

    # The delays swap: DNS follows once the proxies' measurements move.
    drill.wires["east"].set_delay(0.060)
    drill.wires["west"].set_delay(0.020)
    swapped = time.monotonic()
    wait_until(lambda: drill.answered("west"), timeout=40, what="10.99.0.0/24 answered west")
    followed = time.monotonic() - swapped
    assert followed < 30  # within the latency window (max_age 30 s)
    print(f"DNS followed the swap in {followed:.1f} s")
    step = next(s["detail"] for s in drill.explain()["steps"] if s["step"] == "latency")
    rtts = dict(part.split(" ", 1) for part in step.split(": ", 1)[1].split(", "))
    assert float(rtts["west"].split(" ms")[0]) < float(rtts["east"].split(" ms")[0]), step
