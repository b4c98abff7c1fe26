"""Zone errors, reload and the `gslb dns` command as a real process answering `dig`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from gslb.dns.node import NodeOptions
from gslb.errors import ZoneError
from gslb.zone import load_zones

from .dnshelpers import ServerThread, udp

GSLB = [sys.executable, "-m", "gslb.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bad_zone_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.test.zone").write_text(
        "$ORIGIN bad.test.\n@ 3600 IN SOA ns1 host 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 999.1.1.1\n"
    )
    with pytest.raises(ZoneError) as info:
        load_zones(tmp_path)
    text = str(info.value)
    assert f"{tmp_path / 'bad.test.zone'}:4:" in text


def test_zone_without_soa_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "nosoa.test.zone").write_text("$ORIGIN nosoa.test.\n@ 300 IN NS ns1\n")
    with pytest.raises(ZoneError, match="nosoa.test.zone.*SOA"):
        load_zones(tmp_path)


def test_cname_with_other_data_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "c.test.zone").write_text(
        "$ORIGIN c.test.\n@ 300 IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\n"
        "x IN CNAME y\nx IN A 192.0.2.1\n"
    )
    with pytest.raises(ZoneError):
        load_zones(tmp_path)


def test_reload_with_bad_zone_keeps_serving_old_data(zones_dir: Path) -> None:
    server = ServerThread(NodeOptions(zones_dir=str(zones_dir), listen=["127.0.0.1:0"])).start()
    try:
        query = dns.message.make_query("www.example.test", "A")
        assert udp(server, query).answer[0][0].address == "192.0.2.1"
        zone_file = zones_dir / "example.test.zone"
        good = zone_file.read_text()
        zone_file.write_text(good.replace("www          IN A   192.0.2.1", "www IN A bogus"))
        assert server.call(server.node.reload) is False  # type: ignore[union-attr]
        assert udp(server, query).answer[0][0].address == "192.0.2.1"
        zone_file.write_text(good.replace("192.0.2.1\n", "192.0.2.111\n", 1))
        assert server.call(server.node.reload) is True  # type: ignore[union-attr]
        assert udp(server, query).answer[0][0].address == "192.0.2.111"
    finally:
        server.stop()


def test_counters_are_the_nodes_and_survive_reloads(zones_dir: Path) -> None:
    server = ServerThread(NodeOptions(zones_dir=str(zones_dir), listen=["127.0.0.1:0"])).start()
    try:
        assert server.node is not None
        node = server.node
        counters = node.counters
        query = dns.message.make_query("www.example.test", "A")
        for _ in range(5):  # the first renders, the rest are packet-cache hits
            udp(server, query)
        assert server.call(node.reload) is True
        assert node.holder.current.counters is counters
        for _ in range(3):
            udp(server, query)
        counts = node.answer_counts()
        assert counts[(1, 0, "", "")] == 8
        hits, misses = node.holder.current.cache_counts()
        assert hits == 6 and misses == 2  # one render per generation
    finally:
        server.stop()


def test_chaos_answers_when_configured(zones_dir: Path) -> None:
    options = NodeOptions(
        zones_dir=str(zones_dir),
        listen=["127.0.0.1:0"],
        overrides={"chaos_version": "gslb test", "chaos_id": "node-7"},
    )
    server = ServerThread(options).start()
    try:
        version = udp(server, dns.message.make_query("version.bind", "TXT", rdclass="CH"))
        assert version.answer[0][0].strings == (b"gslb test",)
        ident = udp(server, dns.message.make_query("id.server", "TXT", rdclass="CH"))
        assert ident.answer[0][0].strings == (b"node-7",)
        other = udp(server, dns.message.make_query("authors.bind", "TXT", rdclass="CH"))
        assert other.rcode() == dns.rcode.REFUSED
    finally:
        server.stop()


@pytest.fixture
def dns_process(zones_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port, admin = free_port(), free_port()
    process = subprocess.Popen(
        [*GSLB, "dns", "--zones", str(zones_dir), "--listen", f"127.0.0.1:{port}"]
        + ["--admin", f"127.0.0.1:{admin}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_port(port)
    _wait_for_port(admin)
    process.admin_port = admin  # type: ignore[attr-defined]
    yield process, port
    if process.poll() is None:
        process.kill()
    process.wait()
    assert process.stderr is not None
    process.stderr.close()


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port}")


def dig(port: int, *args: str) -> str:
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_dig_over_udp_and_tcp_then_clean_stop(
    dns_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = dns_process
    out = dig(port, "example.test", "SOA")
    assert "status: NOERROR" in out and "flags: qr aa" in out
    assert "example.test.\t\t3600\tIN\tSOA\tns1.example.test. hostmaster.example.test." in out
    assert dig(port, "+tcp", "+short", "www.example.test", "AAAA").strip() == "2001:db8::1"
    assert "status: NXDOMAIN" in dig(port, "nope.example.test")
    assert "status: REFUSED" in dig(port, "example.org")
    admin = f"http://127.0.0.1:{process.admin_port}"  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert "gslb_dns_queries_total{" in metrics and 'rcode="NXDOMAIN"' in metrics
    with urllib.request.urlopen(f"{admin}/status", timeout=5) as response:
        assert json.loads(response.read())["zones"][0]["origin"] == "example.test."
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert process.stderr is not None
    log = process.stderr.read()
    assert "loaded 2 zone(s)" in log and f"port {port}" in log
    assert "Traceback" not in log


def test_sighup_reloads_zones(
    dns_process: tuple[subprocess.Popen[str], int], zones_dir: Path
) -> None:
    process, port = dns_process
    zone_file = zones_dir / "example.test.zone"
    zone_file.write_text(zone_file.read_text() + "added IN A 192.0.2.77\n")
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while dig(port, "+short", "added.example.test").strip() != "192.0.2.77":
        assert time.monotonic() < deadline, "reload did not take effect"
        time.sleep(0.1)


def test_bad_zone_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "bad.test.zone").write_text("$ORIGIN bad.test.\n@ IN SOA\n")
    result = subprocess.run(
        [*GSLB, "dns", "--zones", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "off"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'bad.test.zone'}:2" in result.stderr


def test_workers_share_the_port(zones_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *GSLB,
            "dns",
            "--zones",
            str(zones_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--admin",
            "off",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        time.sleep(0.6)  # the supervisor closes its placeholder socket
        answers = set()
        for _ in range(40):
            out = dig(port, "+short", "www.example.test")
            answers.add(out.strip())
        assert answers == {"192.0.2.1"}
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0


def test_ipv4_and_ipv6_listeners(zones_dir: Path) -> None:
    options = NodeOptions(zones_dir=str(zones_dir), listen=["127.0.0.1:0", "[::1]:0"])
    server = ServerThread(options).start()
    try:
        assert server.node is not None
        (v4_host, v4_port), (v6_host, v6_port) = server.node.server.addresses
        assert (v4_host, v6_host) == ("127.0.0.1", "::1")
        query = dns.message.make_query("www.example.test", "AAAA")
        for host, port in ((v4_host, v4_port), (v6_host, v6_port)):
            assert dns.query.udp(query, host, port=port, timeout=2).answer
            assert dns.query.tcp(query, host, port=port, timeout=2).answer
        # A client on ::1 is located (and rate limited) by its IPv6 address without errors.
        assert server.node.holder.current.stats.errors == 0
    finally:
        server.stop()
