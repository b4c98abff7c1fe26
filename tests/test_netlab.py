"""The network-namespace lab harness (tests/netlab.py): delay wires measured with real TCP
connections (the kernel's own RTT estimate, TCP_INFO), runtime delay changes, plain veths, and
that a lab leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from . import netlab
from .netlab import Namespace, NetLab


@pytest.fixture(autouse=True)
def _lab_possible() -> None:
    # CI runs as root with iproute2 installed (.ci/system-tools): never skip, fail loudly.
    why_not = netlab.available()
    assert why_not is None, f"a network-namespace lab cannot be built here: {why_not}"

# Per accepted connection: read one line, then reply with the peer address and the kernel's RTT
# estimate (struct tcp_info: tcpi_rtt, u32 microseconds at byte offset 68).
SERVER = r"""
import json, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
srv = socket.create_server((host, port))
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    with conn:
        f = conn.makefile("rwb")
        f.readline()
        info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        rtt = struct.unpack_from("=I", info, 68)[0]
        f.write(json.dumps({"peer": peer[0], "rtt_us": rtt, "server": sys.argv[3]}).encode())
        f.write(b"\n")
        f.flush()
"""

# Connect to each HOST:PORT in turn, send a line, print the replies as one JSON list.
CLIENT = r"""
import json, socket, sys
out = []
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rwb")
        f.write(b"hello\n")
        f.flush()
        out.append(json.loads(f.readline()))
print(json.dumps(out))
"""

PORT = 8080
EAST_VIP, WEST_VIP, CLIENT_IP = "10.77.1.1", "10.77.2.1", "10.99.0.10"


def start_server(ns: Namespace, host: str, name: str) -> subprocess.Popen[str]:
    proc = ns.popen(
        [sys.executable, "-c", SERVER, host, str(PORT), name], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def measure(client: Namespace) -> dict[str, dict[str, Any]]:
    done = client.run(
        [sys.executable, "-c", CLIENT, f"{EAST_VIP}:{PORT}", f"{WEST_VIP}:{PORT}"], timeout=20
    )
    assert done.returncode == 0, done.stderr
    return {r["server"]: r for r in json.loads(done.stdout)}


@pytest.fixture
def two_regions() -> Iterator[tuple[NetLab, netlab.Wire, netlab.Wire]]:
    """client (10.99.0.10 only) -> east (10.77.1.1) over 20 ms, -> west (10.77.2.1) over 60 ms."""
    with NetLab() as lab:
        client, east, west = lab.namespace("client"), lab.namespace("east"), lab.namespace("west")
        client.add_address(f"{CLIENT_IP}/32")
        to_east = lab.delay_wire(client, east, "10.77.101.1", "10.77.101.2", delay=0.020)
        to_west = lab.delay_wire(client, west, "10.77.102.1", "10.77.102.2", delay=0.060)
        for ns, wire, vip, net in (
            (east, to_east, EAST_VIP, "10.77.1.0/24"),
            (west, to_west, WEST_VIP, "10.77.2.0/24"),
        ):
            ns.add_address(f"{vip}/32")
            client.route(net, wire.dev(client), src=CLIENT_IP)
            ns.route("10.99.0.0/16", wire.dev(ns), src=vip)
            start_server(ns, vip, ns.short)
        yield lab, to_east, to_west


def test_two_regions_see_one_client_at_their_own_rtt_and_swap(
    two_regions: tuple[NetLab, netlab.Wire, netlab.Wire],
) -> None:
    lab, to_east, to_west = two_regions
    client = lab.namespace("client")
    seen = measure(client)
    assert seen["east"]["peer"] == CLIENT_IP and seen["west"]["peer"] == CLIENT_IP
    assert 35_000 <= seen["east"]["rtt_us"] <= 70_000, seen
    assert 110_000 <= seen["west"]["rtt_us"] <= 170_000, seen

    to_east.set_delay(0.060)
    to_west.set_delay(0.020)
    swapped = measure(client)
    assert swapped["east"]["peer"] == CLIENT_IP and swapped["west"]["peer"] == CLIENT_IP
    assert 110_000 <= swapped["east"]["rtt_us"] <= 170_000, swapped
    assert 35_000 <= swapped["west"]["rtt_us"] <= 70_000, swapped
    assert to_east.packets_ab > 0 and to_east.packets_ba > 0 and to_east.dropped == 0
    print(f"rtt us: first {seen}, swapped {swapped}")


def test_one_direction_delay_and_order_kept_when_delay_shrinks() -> None:
    with NetLab() as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        wire = lab.delay_wire(a, b, "10.77.9.1", "10.77.9.2", delay=0.0, delay_ba=0.0)
        wire.set_delay(0.080, direction="ab")
        rx = b.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        tx = a.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind(("10.77.9.2", 9999))
            rx.settimeout(5)
            start = time.monotonic()
            for i in range(20):
                tx.sendto(struct.pack("!I", i), ("10.77.9.2", 9999))
                if i == 9:  # later packets would overtake the earlier ones, were order not kept
                    wire.set_delay(0.0, direction="ab")
            got = [struct.unpack("!I", rx.recv(16))[0] for _ in range(20)]
            elapsed = time.monotonic() - start
        assert got == list(range(20))
        assert 0.075 <= elapsed < 1.0
        assert wire.delay_ba == 0.0 and wire.delay_ab == 0.0


def test_veth_from_root_to_namespace_and_call() -> None:
    root_addr, ns_addr = netlab.root_p2p_pair()
    with NetLab() as lab:
        proxy = lab.namespace("proxy")
        dev_root, dev_ns = lab.veth(None, root_addr, proxy, ns_addr)
        assert dev_root.startswith(lab.ifprefix) and len(dev_root) < 16
        srv = proxy.call(socket.create_server, (netlab.bare(ns_addr), 0))
        with srv:
            port = srv.getsockname()[1]
            accepted: list[str] = []

            def serve() -> None:
                conn, peer = srv.accept()
                with conn:
                    accepted.append(peer[0])
                    conn.sendall(b"ok")

            t = threading.Thread(target=serve)
            t.start()
            # the probe side runs in the root namespace: this very process
            with socket.create_connection((netlab.bare(ns_addr), port), timeout=5) as c:
                assert c.recv(2) == b"ok"
            t.join(5)
        assert accepted == [netlab.bare(root_addr)]
        assert proxy.call(lambda: socket.gethostbyname("localhost")) == "127.0.0.1"
    assert not netlab.leftovers(lab.prefix, lab.ifprefix)


def ours(lines: str, tag: str) -> set[str]:
    """Names (netns or root link) starting with ``tag``."""
    words = (w.split("@", 1)[0] for ln in lines.splitlines() for w in ln.replace(":", " ").split())
    return {w for w in words if w.startswith(tag)}


def netns_and_links() -> tuple[set[str], set[str]]:
    """This process's lab namespaces and root-namespace lab interfaces."""
    pid = os.getpid()
    return (
        ours(netlab._ip("netns", "list").stdout, f"gslbt{pid}-"),
        ours(netlab._ip("-o", "link").stdout, f"g{pid:x}."),
    )


def test_lab_leaves_nothing_behind_even_when_the_test_fails() -> None:
    before = netns_and_links()
    with pytest.raises(RuntimeError, match="the test failed"):
        with NetLab() as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.delay_wire(a, b, "10.77.9.1", "10.77.9.2", delay=0.010)
            lab.veth(a, "10.78.0.1/30", b, "10.78.0.2/30")
            root_end, _ = lab.veth(None, None, a, None)
            sleeper = a.popen(["sleep", "60"])
            relay = lab.relay_thread
            assert relay is not None and relay.is_alive()
            during = netns_and_links()
            assert during[0] - before[0] == {lab.prefix + "a", lab.prefix + "b"}
            assert during[1] - before[1] == {root_end}
            assert len(b.ip("-o", "link").stdout.splitlines()) == 3  # lo, the TUN, a veth
            raise RuntimeError("the test failed")
    assert sleeper.poll() is not None and sleeper.returncode < 0  # killed, not finished
    assert not relay.is_alive()
    assert relay not in threading.enumerate()
    assert not lab.leftovers()
    assert netns_and_links() == before
    assert all(t.name != "netlab-relay" for t in threading.enumerate())


def test_sweep_removes_names_of_a_killed_lab_process() -> None:
    # a lab in a child process that is SIGKILLed before it can clean up
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from tests.netlab import NetLab; lab = NetLab(); lab.namespace('x');"
        "lab.veth(None, None, 'x', None); print(lab.prefix, lab.ifprefix, flush=True);"
        "time.sleep(60)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE, text=True)
    with child:
        assert child.stdout is not None
        prefix, ifprefix = child.stdout.readline().split()
        assert netlab.leftovers(prefix, ifprefix)
        child.kill()
        child.wait()
    assert netlab.leftovers(prefix, ifprefix)  # the killed lab left its names behind
    netlab.sweep_stale()  # (or a lab of a parallel test process swept them just before)
    assert not netlab.leftovers(prefix, ifprefix)
