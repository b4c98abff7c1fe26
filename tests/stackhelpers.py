"""Start `gslb run` on free loopback ports, from a copy of the shipped example config."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
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


def start_stack(directory: Path) -> RunningStack:
    config = example_config(directory)
    dns_port, admin_port = free_ports(2)
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
            str(free_block(60)),
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
