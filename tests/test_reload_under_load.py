"""Reloads while queries keep flowing: no query lost, no wrong answer, bad configs rejected."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.query

from .dnshelpers import two_datacenter_config
from .stackhelpers import ROOT, free_ports

EXPECTED = {"127.2.0.0": "192.0.2.21", "127.3.0.0": "198.51.100.31"}


def write_config(path: Path, ttl: object) -> None:
    path.write_text(two_datacenter_config(ROOT / "geodata" / "gslb-test-city.mmdb", ttl))


def test_continuous_queries_survive_repeated_reloads(tmp_path: Path) -> None:
    config = tmp_path / "gslb.yaml"
    write_config(config, 30)
    (port,) = free_ports(1)
    process = subprocess.Popen(
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
            f"127.0.0.1:{port}",
            "--admin",
            "off",
            "--rrl-rate",
            "0",  # one client at full speed: this test is about reloads, not rate limits
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    results = {"sent": 0, "lost": 0, "wrong": []}

    def query_loop() -> None:
        subnets = list(EXPECTED)
        while not stop.is_set():
            subnet = subnets[results["sent"] % 2]
            names = ("www.example.test", "static.example.test")
            name = names[results["sent"] % 3 == 0]
            query = dns.message.make_query(
                name, "A", use_edns=0, options=[dns.edns.ECSOption(subnet, 24)]
            )
            results["sent"] += 1
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1.0)
            except dns.exception.Timeout:
                results["lost"] += 1
                continue
            got = [r.address for rrset in reply.answer for r in rrset]
            want = ["192.0.2.10"] if name.startswith("static") else [EXPECTED[subnet]]
            if got != want:
                results["wrong"].append((name, subnet, got))

    try:
        deadline = time.monotonic() + 15
        while True:  # wait until the server answers
            try:
                dns.query.udp(
                    dns.message.make_query("example.test", "SOA"),
                    "127.0.0.1",
                    port=port,
                    timeout=0.2,
                )
                break
            except (dns.exception.Timeout, OSError):
                assert time.monotonic() < deadline, "server did not start"
        worker = threading.Thread(target=query_loop)
        worker.start()
        for round_number in range(12):
            if round_number % 3 == 2:
                write_config(config, "not-a-number")  # must be rejected, old config kept
            else:
                write_config(config, 30 + round_number)
            process.send_signal(signal.SIGHUP)
            time.sleep(0.25)
        stop.set()
        worker.join(10)
        # The last good file (round 10) is what is served after the final, rejected one.
        reply = dns.query.udp(
            dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port, timeout=1
        )
        assert reply.answer[0].ttl == 40
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert process.stderr is not None
        with process.stderr:
            log = process.stderr.read()
    assert results["sent"] > 200
    assert results["lost"] == 0
    assert results["wrong"] == []
    assert log.count("reload rejected") == 4
    assert f"{config}:" in log and "ttl" in log
    assert log.count("reload complete") == 8
    assert "Traceback" not in log
