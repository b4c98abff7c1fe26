"""Operator-facing behaviour of a DNS node: GeoIP file watching, JSON logs, the query log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, two_datacenter_config, udp
from .stackhelpers import ROOT, free_ports


def test_geoip_database_change_triggers_a_reload(tmp_path: Path) -> None:
    geoip = tmp_path / "city.mmdb"
    shutil.copy(ROOT / "geodata" / "gslb-test-city.mmdb", geoip)
    config = tmp_path / "gslb.yaml"
    config.write_text(two_datacenter_config(geoip))
    options = NodeOptions(
        zones_dir=str(ROOT / "zones"),
        config_path=str(config),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        geoip_poll_interval=0.1,
    )
    server = ServerThread(options).start()
    try:
        assert server.node is not None
        before = server.node.reloads
        time.sleep(0.3)
        assert server.node.reloads == before  # nothing changed, nothing reloaded
        # geoipupdate replaces the file; here the country database stands in for a new release.
        replacement = tmp_path / "new.mmdb"
        shutil.copy(ROOT / "geodata" / "gslb-test-country.mmdb", replacement)
        replacement.replace(geoip)
        deadline = time.monotonic() + 5
        while server.node.reloads == before:
            assert time.monotonic() < deadline, "the new GeoIP file was not picked up"
            time.sleep(0.05)
        locator = server.node.generation.locator
        assert locator is not None and "Country" in locator.database_type
        assert udp(server, dns.message.make_query("www.example.test", "A")).answer
    finally:
        server.stop()


def test_json_logs_and_sampled_query_log(tmp_path: Path) -> None:
    config = tmp_path / "gslb.yaml"
    config.write_text(
        two_datacenter_config(ROOT / "geodata" / "gslb-test-city.mmdb")
        + "dns:\n  query_log_sample: 1.0\n"
    )
    port, admin = free_ports(2)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gslb.cli",
            "--log-format",
            "json",
            "dns",
            "--zones",
            str(ROOT / "zones"),
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            "off",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = dns.query.udp(
                    dns.message.make_query("www.example.test", "A"),
                    "127.0.0.1",
                    port=port,
                    timeout=0.3,
                )
                break
            except Exception:
                assert time.monotonic() < deadline
        assert response.answer
    finally:
        process.terminate()
        process.wait(10)
        assert process.stderr is not None
        with process.stderr:
            lines = [json.loads(line) for line in process.stderr.read().splitlines() if line]
    messages = [entry["message"] for entry in lines]
    assert any(m.startswith("loaded 1 zone(s)") for m in messages)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)
    queries = [e for e in lines if e["logger"] == "gslb.dns.queries"]
    assert queries, messages
    assert queries[-1]["qname"] == "www.example.test." and queries[-1]["qtype"] == "A"
    assert queries[-1]["rcode"] == 0 and queries[-1]["transport"] == "udp"
