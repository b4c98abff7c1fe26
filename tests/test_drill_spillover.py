"""Capacity spillover through the running stack: real `gslb proxy` processes in front of real
backends report their load with their health, a real `gslb probe` agent relays it, and a real
`gslb dns` node spreads the clients of a failed datacenter by the headroom the proxies
reported. Everything is on 127.0.0.1; answers are read over UDP with ECS."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import pytest

from .stackhelpers import ROOT, free_ports, wait_until

GEOIP = ROOT / "geodata" / "gslb-test-city.mmdb"
# Frankfurt client networks (the test GeoIP database): nearest to fra.
CLIENTS = [f"127.2.{i}.0" for i in range(0, 250, 2)]
SITES = {  # name: (latitude, longitude, answer address)
    "fra": (50.11, 8.68, "127.0.1.1"),
    "ams": (52.37, 4.90, "127.0.1.2"),
    "par": (48.86, 2.35, "127.0.1.3"),
    "lon": (51.51, -0.13, "127.0.1.4"),
}
NAMES = {address: name for name, (_, _, address) in SITES.items()}
CAPACITY = 20  # requests/s each proxy declares (the datacenters declare none: the proxy's counts)


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Site:
    """A backend (a thread here) behind its own `gslb proxy` process."""

    def __init__(self, name: str, proxy_port: int) -> None:
        self.name = name
        self.backend = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self.backend.daemon_threads = True
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        self.proxy_port = proxy_port
        self.proxy = subprocess.Popen(
            [
                *GSLB,
                "proxy",
                "--listen",
                f"127.0.0.1:{proxy_port}",
                "--upstream",
                f"127.0.0.1:{self.backend.server_address[1]}",
                "--capacity",
                str(CAPACITY),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proxy.terminate()
        self.proxy.wait(10)
        self.backend.shutdown()
        self.backend.server_close()


GSLB = [sys.executable, "-m", "gslb.cli"]


def config(sites: dict[str, Site], agent_port: int) -> str:
    lines = [f"geoip: {GEOIP}", "datacenters:"]
    for name, (lat, lon, address) in SITES.items():
        check = (
            f"{{type: http, host: 127.0.0.1, port: {sites[name].proxy_port}, path: /health,"
            " interval: 0.3, timeout: 0.2, rise: 1, fall: 2}"
        )
        lines.append(
            f"  {name}: {{latitude: {lat}, longitude: {lon}, ipv4: [{address}], check: {check}}}"
        )
    lines += [
        "health:",
        f"  agents: [{{region: eu, url: 'http://127.0.0.1:{agent_port}'}}]",
        "  stale_after: 3s",
        "services:",
        "  www.example.test:",
        "    policy: geoproximity",
        "    spillover: 3",
        "    types: [A]",
        "    datacenters: [fra, ams, par, lon]",
        "    on_all_down: fail_open",
        "rrl: {enabled: false}  # the drill asks far faster than any one resolver would",
    ]
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, tmp: Path) -> None:
        ports = free_ports(7)
        self.dns_port, self.admin_port, agent_port = ports[:3]
        self.sites = {name: Site(name, port) for name, port in zip(SITES, ports[3:], strict=True)}
        path = tmp / "gslb.yaml"
        path.write_text(config(self.sites, agent_port))
        self.agent = subprocess.Popen(
            [*GSLB, "probe", "--config", str(path), "--region", "eu"]
            + ["--listen", f"127.0.0.1:{agent_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.node = subprocess.Popen(
            [*GSLB, "dns", "--zones", str(ROOT / "zones"), "--config", str(path)]
            + ["--listen", f"127.0.0.1:{self.dns_port}"]
            + ["--admin", f"127.0.0.1:{self.admin_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, net: str) -> str:
        q = dns.message.make_query(
            "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(net, 24)]
        )
        r = dns.query.udp(q, "127.0.0.1", port=self.dns_port, timeout=2)
        return NAMES[r.answer[0][0].address]

    def answers(self) -> dict[str, str]:
        return {net: self.ask(net) for net in CLIENTS}

    def status(self) -> dict:  # type: ignore[type-arg]
        url = f"http://127.0.0.1:{self.admin_port}/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def loads(self) -> dict[str, float | None]:
        return {dc["name"]: dc["load"] for dc in self.status()["datacenters"]}

    def override(self, target: str, *args: str) -> None:
        admin = f"http://127.0.0.1:{self.admin_port}"
        cmd = [*GSLB, "health", "override", target, *args, "--admin", admin]
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        for p in (self.node, self.agent):
            p.terminate()
            p.wait(10)
        for site in self.sites.values():
            site.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _up(stack: Stack) -> bool:
    try:
        return set(stack.answers().values()) == {"fra"} and all(
            dc["state"] == "up" for dc in stack.status()["datacenters"]
        )
    except (dns.exception.Timeout, OSError, IndexError, KeyError):
        return False


def load(port: int, rate: float, stop: threading.Event) -> None:
    """Requests at `rate` per second through one proxy, on a keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    step = 1.0 / rate
    due = time.monotonic()
    while not stop.is_set():
        conn.request("GET", "/")
        conn.getresponse().read()
        due += step
        time.sleep(max(0.0, due - time.monotonic()))
    conn.close()


def test_spilled_clients_follow_the_headroom_the_proxies_report(stack: Stack) -> None:
    wait_until(lambda: _up(stack), timeout=30, what="every datacenter up, fra answering")
    # Idle proxies report ~0 requests/s of 20: fra's clients spread about evenly.
    wait_until(
        lambda: all(v is not None and v < 2 for v in stack.loads().values()),
        timeout=15,
        what="idle loads reported",
    )
    assert {dc["capacity"] for dc in stack.status()["datacenters"]} == {CAPACITY}
    stack.override("fra", "--down", "--reason", "drill")
    wait_until(lambda: "fra" not in stack.answers().values(), timeout=15, what="fra out")
    idle = stack.answers()
    split = {dc: sum(1 for v in idle.values() if v == dc) for dc in ("ams", "par", "lon")}
    assert min(split.values()) > len(CLIENTS) / 6, split  # three ways, none starved

    # ams gets busy: 16 of its 20 requests/s are taken, so it keeps far fewer spilled clients.
    stop = threading.Event()
    worker = threading.Thread(target=load, args=(stack.sites["ams"].proxy_port, 16, stop))
    worker.start()
    try:
        wait_until(
            lambda: (stack.loads()["ams"] or 0) > 10, timeout=30, what="ams reports its load"
        )
        busy = stack.answers()
        moved = {net for net in CLIENTS if busy[net] != idle[net]}
        busy_split = {dc: sum(1 for v in busy.values() if v == dc) for dc in ("ams", "par", "lon")}
        assert busy_split["ams"] < split["ams"] / 2, (split, busy_split)
        assert busy_split["ams"] * 2 < min(busy_split["par"], busy_split["lon"]), busy_split
        # Consistent hashing: only clients leaving ams moved; nobody moved between the others.
        assert all(idle[net] == "ams" and busy[net] != "ams" for net in moved)
        assert stack.answers() == busy  # and they stay put while the headroom holds
        explain = subprocess.run(
            [*GSLB, "explain", "www.example.test", "--client", "127.2.0.1", "--json"]
            + ["--subnet", "127.2.0.0/24", "--admin", f"http://127.0.0.1:{stack.admin_port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert explain.returncode == 0, explain.stdout
        report = json.loads(explain.stdout)  # the live node narrates its decision
        steps = {step["step"]: step["detail"] for step in report["steps"]}
        assert "fra unavailable: spread over headroom" in steps["spillover"]
        loads = {c["datacenter"]: c["load"] for c in report["candidates"]}
        assert loads["ams"] > 10 and report["answers"] == [SITES[busy["127.2.0.0"]][2]]
        text = subprocess.run(
            [*GSLB, "explain", "www.example.test", "--client", "127.2.0.1"]
            + ["--subnet", "127.2.0.0/24", "--admin", f"http://127.0.0.1:{stack.admin_port}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert f"/{CAPACITY:g} req/s" in text and "spillover: fra unavailable" in text
    finally:
        stop.set()
        worker.join(10)
