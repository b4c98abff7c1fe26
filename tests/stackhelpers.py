"""Start `gslb run` on free loopback ports, from a copy of the shipped example config; and
`gslb dns` nodes and a real 3-member etcd cluster for the cluster and worker tests."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_block(size: int) -> int:
    """A base port with `size` consecutive free ports above it."""
    for base in range(21000, 60000, 97):
        taken = False
        for port in range(base, base + size):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
    raise RuntimeError("no free block of ports")


def example_config(directory: Path) -> Path:
    """The shipped example with every fixed port replaced by a free one."""
    text = (ROOT / "zones" / "example.yaml").read_text()
    fixed = sorted(set(int(p) for p in re.findall(r"\b(8[12]0\d)\b", text)))
    for old, new in zip(fixed, free_ports(len(fixed)), strict=True):
        text = re.sub(rf"\b{old}\b", str(new), text)
    text = text.replace("../geodata/", f"{ROOT / 'geodata'}/")
    text = text.replace("../state/health.json", str(directory / "health.json"))
    path = directory / "example.yaml"
    path.write_text(text)
    return path


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    dns_port: int
    admin: str
    config: Path
    started_in: float

    def dig(self, *args: str) -> str:
        return subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(self.dns_port), "+time=2", "+tries=1", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def status(self) -> dict:  # type: ignore[type-arg]
        with urllib.request.urlopen(f"{self.admin}/status", timeout=5) as response:
            return json.loads(response.read())

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.admin}{path}", timeout=5) as response:
            return response.read().decode()

    def gslb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gslb.cli", *args], capture_output=True, text=True, timeout=30
        )

    def wait_all_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {dc["name"]: dc["state"] for dc in self.status()["datacenters"]}
            if states and set(states.values()) == {"up"}:
                return
            time.sleep(0.2)
        raise AssertionError(f"datacenters not all up: {states}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        with self.process.stdout:
            return self.process.stdout.read()


def start_stack(directory: Path, cluster: bool = False) -> RunningStack:
    config = example_config(directory)
    block = free_block(70)  # backends: block..+59; a cluster: DNS, admin and etcd ports above
    if cluster:
        dns_port, admin_port = block + 60, block + 62  # a second node takes each port + 1
        extra = ["--cluster", "--etcd-port-base", str(block + 64)]
    else:
        dns_port, admin_port = free_ports(2)
        extra = []
    admin = f"http://127.0.0.1:{admin_port}"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gslb.cli",
            "run",
            "--config",
            str(config),
            "--zones",
            str(ROOT / "zones"),
            "--dns",
            f"127.0.0.1:{dns_port}",
            "--admin",
            f"127.0.0.1:{admin_port}",
            "--backend-port-base",
            str(block),
            "--state-dir",
            str(directory / "state"),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = RunningStack(process, dns_port, admin, config, 0.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gslb run exited:\n{stack.stop()}")
        try:
            stack.status()
            break
        except OSError:
            time.sleep(0.2)
    stack.started_in = time.monotonic() - started
    return stack


# ---- DNS nodes and a real etcd cluster on loopback (cluster and worker tests) --------------

GSLB = [sys.executable, "-m", "gslb.cli"]

NODE_ZONE = """$ORIGIN example.test.
$TTL 300
@ 3600 IN SOA ns1 hostmaster {serial} 3600 600 1209600 60
@ 3600 IN NS ns1
ns1 IN A 192.0.2.53
static IN A 192.0.2.10
"""

NODE_CONFIG = """datacenters:
  dc1: {{latitude: 10, longitude: 20, ipv4: [192.0.2.1]}}
  dc2: {{latitude: 50, longitude: 10, ipv4: [192.0.2.2]}}
  dc3: {{latitude: 40, longitude: -70, ipv4: [192.0.2.3]}}
services:
  www.example.test:
    policy: weighted
    datacenters: [{{value: dc1, weight: 1}}, {{value: dc2, weight: 1}}, {{value: dc3, weight: 1}}]
    ttl: 5
    on_all_down: nodata
  v.example.test:
    policy: failover
    tiers: [[{first}]]
    ttl: 5
    on_all_down: servfail
rrl: {{enabled: false}}  # the tests query as fast as they can from one address
"""

ADDRESS = {"dc1": "192.0.2.1", "dc2": "192.0.2.2", "dc3": "192.0.2.3"}


def write_node_files(directory: Path, serial: int = 1, first: str = "dc3") -> tuple[Path, Path]:
    """A small config (three datacenters without checks, so all up) and its zone."""
    zones = directory / "zones"
    zones.mkdir(parents=True, exist_ok=True)
    (zones / "example.test.zone").write_text(NODE_ZONE.format(serial=serial))
    config = directory / "gslb.yaml"
    config.write_text(NODE_CONFIG.format(first=first))
    return config, zones


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class DnsProcess:
    """A `gslb dns` process with its own DNS and admin ports."""

    process: subprocess.Popen[str]
    dns_port: int
    admin_port: int
    log_path: Path

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def status(self) -> dict:  # type: ignore[type-arg]
        return http(f"{self.admin}/status", timeout=5)[1]

    def override(self, target: str, mode: str, reason: str = "test") -> tuple[int, dict]:  # type: ignore[type-arg]
        return http(f"{self.admin}/v1/overrides/{target}", {"mode": mode, "reason": reason})

    def ask(self, name: str = "www.example.test", tries: int = 1) -> list[str]:
        """One UDP query from a fresh socket (a new source port: SO_REUSEPORT spreads those
        over the workers). Addresses answered, or ["SERVFAIL"] etc."""
        import dns.message
        import dns.query
        import dns.rcode

        query = dns.message.make_query(name, "A")
        response = dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=2)
        if response.rcode() != dns.rcode.NOERROR:
            return [dns.rcode.to_text(response.rcode())]
        return sorted(r.address for rrset in response.answer for r in rrset)

    def seen(self, count: int = 40, name: str = "www.example.test") -> set[str]:
        out: set[str] = set()
        for _ in range(count):
            out.update(self.ask(name))
        return out

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_ready(self, what: str = "the node", timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gslb dns exited {self.process.returncode}:\n{self.log()}")
            try:
                self.status()
                self.ask("static.example.test")
                return True
            except Exception:  # not listening yet, or a DNS timeout while starting
                return False

        wait_until(ready, timeout, f"{what} to serve")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_node(directory: Path, *args: str, name: str = "dns-1", wait: bool = True) -> DnsProcess:
    dns_port, admin_port = free_ports(2)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{name}.log"
    with log_path.open("w") as log_file:  # the child keeps its own copy
        process = _popen_node(dns_port, admin_port, name, args, log_file, directory)
    node = DnsProcess(process, dns_port, admin_port, log_path)
    if wait:
        node.wait_ready(name)
    return node


def _popen_node(  # type: ignore[no-untyped-def]
    dns_port: int, admin_port: int, name: str, args: tuple[str, ...], log_file, directory: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *GSLB,
            "dns",
            "--listen",
            f"127.0.0.1:{dns_port}",
            "--admin",
            f"127.0.0.1:{admin_port}",
            "--name",
            name,
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        text=True,
        cwd=directory,
    )


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"


class EtcdCluster:
    """A real 3-member etcd cluster on loopback, data in a temporary directory. Short
    heartbeat and election timeouts so that an election after a killed leader takes well
    under a second."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        ports = free_ports(2 * size)
        self.members = [
            EtcdMember(f"m{i}", ports[2 * i], ports[2 * i + 1], directory / f"m{i}")
            for i in range(size)
        ]
        self.initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members)

    def start(self, member: EtcdMember | None = None) -> None:
        for m in [member] if member is not None else self.members:
            if m.process is not None and m.process.poll() is None:
                continue
            state = "existing" if m.data_dir.exists() else "new"
            m.process = subprocess.Popen(
                [
                    "etcd",
                    "--name",
                    m.name,
                    "--data-dir",
                    str(m.data_dir),
                    "--listen-client-urls",
                    m.url,
                    "--advertise-client-urls",
                    m.url,
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{m.peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{m.peer_port}",
                    "--initial-cluster",
                    self.initial,
                    "--initial-cluster-state",
                    state,
                    "--initial-cluster-token",
                    "gslb-test",
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    "--log-level",
                    "error",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            for m in self.members:
                if m.process is None or m.process.poll() is not None:
                    continue
                try:
                    status, body = http(f"{m.url}/v3/kv/range", {"key": "eA=="}, timeout=2)
                except OSError:
                    return False
                if status != 200:
                    return False
            return True

        wait_until(healthy, timeout, "etcd to be healthy")

    def leader(self) -> EtcdMember:
        def find() -> EtcdMember | None:
            for m in self.members:
                if m.process is None or m.process.poll() is not None:
                    continue
                try:
                    _, body = http(f"{m.url}/v3/maintenance/status", {}, timeout=2)
                except OSError:
                    continue
                if body.get("leader") and body.get("leader") == body.get("header", {}).get(
                    "member_id"
                ):
                    return m
            return None

        return wait_until(find, 15, "an etcd leader")  # type: ignore[no-any-return]

    def kill(self, member: EtcdMember) -> None:
        if member.process is not None and member.process.poll() is None:
            member.process.kill()
            member.process.wait()

    def stop(self) -> None:
        for m in self.members:
            self.kill(m)
