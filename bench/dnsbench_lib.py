"""Shared pieces of the DNS benchmarks: query files, peer server configs, dnsperf runs.

Everything runs on loopback. The server under test is pinned to one core and dnsperf to the
other, and each figure is the median of several runs, because this machine is small and noisy.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
GSLB = [str(ROOT / ".venv" / "bin" / "gslb")]
SERVER_CORE = "1"
CLIENT_CORE = "0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_query_file(path: Path, messages: Iterable[dns.message.Message]) -> int:
    """dnsperf -B format: each query as a 2-byte length and the wire message (TCP framing)."""
    count = 0
    with path.open("wb") as out:
        for message in messages:
            wire = message.to_wire()
            out.write(struct.pack("!H", len(wire)) + wire)
            count += 1
    return count


def static_mix(nxdomain_share: float = 0.10, edns_every: int = 2) -> list[dns.message.Message]:
    """Existing names of several types, 10% NXDOMAIN, every second query with EDNS."""
    existing = [
        ("example.test", "SOA"),
        ("example.test", "NS"),
        ("example.test", "MX"),
        ("example.test", "TXT"),
        ("ns1.example.test", "A"),
        ("ns1.example.test", "AAAA"),
        ("ns2.example.test", "A"),
        ("static.example.test", "A"),
        ("static.example.test", "AAAA"),
        ("docs.example.test", "A"),
        ("mail.example.test", "A"),
        ("a.apps.example.test", "A"),
        ("b.apps.example.test", "TXT"),
        ("_sip._udp.example.test", "SRV"),
        ("host.lab.example.test", "A"),
        ("static.example.test", "MX"),
    ]
    total = 1000
    messages = []
    nx_every = round(1 / nxdomain_share)
    for index in range(total):
        if index % nx_every == 0:
            name, rdtype = f"missing{index}.example.test", "A"
        else:
            name, rdtype = existing[index % len(existing)]
        use_edns = 0 if index % edns_every == 0 else False
        messages.append(dns.message.make_query(name, rdtype, use_edns=use_edns, payload=1232))
    return messages


@dataclass
class PerfResult:
    qps: float
    latency_ms: float
    sent: int
    lost: int

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0


def run_dnsperf(
    port: int, query_file: Path, seconds: float, rate: int | None = None, clients: int = 8
) -> PerfResult:
    command = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(query_file),
        "-B",
        "-l",
        str(seconds),
        "-c",
        str(clients),
        "-T",
        "1",
        "-q",
        "400",
        "-t",
        "2",
    ]
    if rate:
        command += ["-Q", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def grab(pattern: str) -> float:
        match = re.search(pattern, out)
        if not match:
            raise RuntimeError(f"dnsperf output lacks {pattern!r}:\n{out}")
        return float(match.group(1))

    return PerfResult(
        qps=grab(r"Queries per second:\s+([\d.]+)"),
        latency_ms=grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        sent=int(grab(r"Queries sent:\s+(\d+)")),
        lost=int(grab(r"Queries lost:\s+(\d+)")),
    )


def wait_for_dns(port: int, name: str = "example.test", timeout: float = 20.0) -> None:
    query = dns.message.make_query(name, "SOA").to_wire()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, ("127.0.0.1", port))
                if sock.recv(4096):
                    return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"no DNS server answered on port {port}")


class Server:
    """A DNS server process pinned to the server core."""

    def __init__(self, name: str, command: Sequence[str], port: int, cwd: Path | None = None):
        self.name = name
        self.command = ["taskset", "-c", SERVER_CORE, *command]
        self.port = port
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_dns(self.port)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def gdnsd_server(workdir: Path, zone_files: dict[str, Path], port: int) -> Server:
    config = workdir / "gdnsd"
    (config / "zones").mkdir(parents=True, exist_ok=True)
    for origin, path in zone_files.items():
        shutil.copy(path, config / "zones" / origin.rstrip("."))
    (config / "config").write_text(
        "options => {\n"
        f"  listen => [ 127.0.0.1:{port} ]\n"
        "  udp_threads => 1\n  tcp_threads => 1\n  zones_strict_data => false\n"
        "}\n"
    )
    return Server("gdnsd", ["gdnsd", "-c", str(config), "start"], port)


def nsd_server(workdir: Path, zone_files: dict[str, Path], port: int) -> Server:
    directory = workdir / "nsd"
    directory.mkdir(parents=True, exist_ok=True)
    zones = ""
    for origin, path in zone_files.items():
        shutil.copy(path, directory / path.name)
        zones += f"zone:\n  name: {origin}\n  zonefile: {directory / path.name}\n"
    conf = directory / "nsd.conf"
    conf.write_text(
        "server:\n"
        f"  ip-address: 127.0.0.1@{port}\n"
        '  server-count: 1\n  username: ""\n  chroot: ""\n'
        f"  zonesdir: {directory}\n  pidfile: {directory}/nsd.pid\n"
        f"  xfrdfile: {directory}/xfrd.state\n  zonelistfile: {directory}/zone.list\n"
        '  database: ""\n  verbosity: 0\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n'
        "remote-control:\n  control-enable: no\n" + zones
    )
    return Server("nsd", ["nsd", "-d", "-c", str(conf)], port)


def measure(server: Server, query_file: Path, runs: int, seconds: float) -> list[PerfResult]:
    results = []
    with server:
        run_dnsperf(server.port, query_file, 2)  # warm-up: caches, page faults
        for _ in range(runs):
            results.append(run_dnsperf(server.port, query_file, seconds))
    return results


def median(results: list[PerfResult], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in results)


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"missing tools: {' '.join(missing)} "
            "(apt-get install dnsperf gdnsd nsd pdns-server pdns-backend-geoip)"
        )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gslb-bench-"))


def option_ecs(address: str, prefix: int) -> dns.edns.ECSOption:
    return dns.edns.ECSOption(address, prefix)
