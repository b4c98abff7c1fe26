"""`gslb check` and `gslb explain`: same code path as the server, text and JSON output."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest

from gslb.geo.locate import pack_client
from gslb.steering.cli import add_commands

from .test_steering_support import CONFIGS, EXAMPLE, ROOT, harness

ZONES = str(ROOT / "zones")


def run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gslb")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    rc = args.func(args, out)
    return rc, out.getvalue()


def explain_json(*argv: str) -> dict:
    rc, out = run("explain", "--config", EXAMPLE, "--zones", ZONES, "--json", *argv)
    assert rc == 0, out
    return json.loads(out)


def test_check_ok_on_the_shipped_example():
    rc, out = run("check", "--config", EXAMPLE, "--zones", ZONES)
    assert rc == 0
    assert "ok:" in out and "6 datacenter(s)" in out and "example.test." in out


def test_check_reports_every_problem_with_file_and_line():
    path = CONFIGS / "multiple_errors.yaml"
    rc, out = run("check", "--config", str(path))
    assert rc == 1
    lines = [x for x in out.splitlines() if x.startswith("error:")]
    assert len(lines) == 7
    assert f"error: {path}:7:" in out and "undefined datacenter 'dc2'" in out
    assert "7 problem(s) found" in out


def test_check_service_outside_zones(tmp_path: Path):
    cfg = tmp_path / "outside.yaml"
    shutil.copy(CONFIGS / "outside_zone.yaml", cfg)
    rc, out = run("check", "--config", str(cfg), "--zones", ZONES)
    assert rc == 1
    assert f"{cfg}:8:" in out and "outside every served zone" in out


def test_check_zone_errors_are_reported_with_config_errors(tmp_path: Path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "broken.test.zone").write_text("$ORIGIN broken.test.\n@ IN SOA garbage\n")
    rc, out = run(
        "check", "--config", str(CONFIGS / "undefined_datacenter.yaml"), "--zones", str(zones)
    )
    assert rc == 1
    assert "broken.test.zone" in out and "undefined datacenter" in out


def test_check_unreadable_geoip_database(tmp_path: Path):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"junk")
    rc, out = run("check", "--config", str(CONFIGS / "valid_minimal.yaml"), "--geoip", str(bad))
    assert rc == 1 and "cannot open GeoIP database" in out


def test_explain_json_fields():
    report = explain_json("www.example.test", "--client", "127.3.0.1")
    assert report["answers"] == ["198.51.100.31", "2001:db8:300::31"]
    assert report["datacenters"] == ["ap-northeast"]
    loc = report["location"]
    assert (loc["country"], loc["continent"], loc["network"]) == ("JP", "AS", "127.3.0.0/16")
    assert loc["latitude"] == pytest.approx(35.6762) and loc["longitude"] == pytest.approx(139.6503)
    assert report["scope_prefix"] == 16 and report["ttl"] == 30
    cands = {c["datacenter"]: c for c in report["candidates"]}
    assert set(cands) == {
        "us-east",
        "eu-west",
        "ap-northeast",
        "sa-east",
        "us-west",
        "ap-southeast",
    }
    tokyo = cands["ap-northeast"]
    assert tokyo["distance_km"] == pytest.approx(0, abs=1) and tokyo["healthy"] is True
    assert cands["eu-west"]["distance_km"] == pytest.approx(9600, rel=0.02)
    for c in cands.values():
        assert {"latitude", "longitude", "distance_km", "healthy", "weight"} <= set(c)
    assert [s["step"] for s in report["steps"]] == ["health", "geoproximity", "count"]


def test_explain_down_simulates_failed_datacenters():
    report = explain_json("www.example.test", "--client", "127.3.0.1", "--down", "ap-northeast")
    # Sydney is 7826 km away, Oregon 7974 km but its bias of +10 makes that 7177.
    assert report["datacenters"][0] == "us-west"
    cands = {c["datacenter"]: c for c in report["candidates"]}
    assert cands["ap-northeast"]["healthy"] is False and cands["ap-northeast"]["state"] == "down"


def test_explain_subnet_wins_over_client_address():
    report = explain_json("geo.example.test", "--client", "127.3.0.1", "--subnet", "127.2.200.0/24")
    assert report["client"]["network"] == "127.2.200.0/24"
    assert report["datacenters"][0] in ("us-east", "us-west")  # subnet rule -> pool na
    assert report["scope_prefix"] == 17
    assert "subnet 127.2.128.0/17" in report["steps"][0]["detail"]


def test_explain_matches_engine_decide():
    # The same engine path: explain's answer equals decide() for several services and clients.
    from gslb.config.validate import load_config

    cfg = load_config(EXAMPLE)
    with harness(cfg) as h:
        for name in ("www", "geo", "failover", "sticky", "multi", "corp"):
            for client in ("127.1.0.1", "127.2.200.1", "127.5.0.1", "2001:db8:3::1"):
                d = h.decide(name, client)
                r = explain_json(f"{name}.example.test", "--client", client)
                assert r["datacenters"] == list(d.datacenters), (name, client)
                if d.deterministic:  # else a per-query draw (us-west's two addresses rotate)
                    assert r["answers"] == list(d.ipv4 + d.ipv6), (name, client)
                assert r["scope_prefix"] == d.scope_prefix
                assert r["outcome"] == d.outcome


def test_explain_all_down_outcomes():
    down = ["--down", "us-east", "--down", "eu-west", "--down", "ap-northeast", "--down", "sa-east"]
    r = explain_json("failover.example.test", "--client", "127.1.0.1", *down)
    assert r["outcome"] == "servfail" and r["answers"] == []
    assert r["steps"][-1]["step"] == "on_all_down"
    r = explain_json("weighted.example.test", "--client", "127.1.0.1", *down)
    assert r["outcome"] == "nodata"


def test_explain_weighted_seed_is_repeatable():
    a = explain_json("weighted.example.test", "--client", "127.1.0.1", "--seed", "4")
    b = explain_json("weighted.example.test", "--client", "127.1.0.1", "--seed", "4")
    assert a["answers"] == b["answers"] and a["scope_prefix"] == 0
    assert [s["step"] for s in a["steps"]] == ["health", "weighted", "pick"]
    assert a["steps"][-1]["datacenters"] == a["datacenters"]


def test_explain_text_output():
    rc, out = run(
        "explain",
        "--config",
        EXAMPLE,
        "www.example.test",
        "--client",
        "127.2.0.1",
        "--down",
        "eu-west",
    )
    assert rc == 0
    assert "location  EU-DE-HE Frankfurt am Main" in out
    assert "eu-west" in out and "DOWN" in out
    assert "geoproximity:" in out and "ecs scope /16" in out and "ttl 30" in out
    assert "answer    192.0.2.11 2001:db8:100::11" in out


def test_explain_prefix_zero_and_unknown_location():
    r = explain_json("www.example.test", "--client", "127.3.0.1", "--subnet", "0.0.0.0/0")
    assert r["location"] is None and r["scope_prefix"] == 0
    rc, out = run("explain", "--config", EXAMPLE, "www.example.test", "--client", "127.0.0.1")
    assert rc == 0 and "location  unknown (network 127.0.0.0/16)" in out


def test_explain_errors():
    rc, out = run("explain", "--config", EXAMPLE, "nope.example.test", "--client", "127.0.0.1")
    assert rc == 2 and "not a GSLB service" in out
    rc, out = run("explain", "--config", EXAMPLE, "www.example.test", "--client", "banana")
    assert rc == 2
    rc, out = run(
        "explain",
        "--config",
        EXAMPLE,
        "www.example.test",
        "--client",
        "127.0.0.1",
        "--down",
        "mars-1",
    )
    assert rc == 2 and "unknown datacenter" in out
    rc, out = run(
        "explain",
        "--config",
        str(CONFIGS / "fallback_loop.yaml"),
        "geo.example.test",
        "--client",
        "127.0.0.1",
    )
    assert rc == 1 and "fallback loop" in out


def test_packed_client_helper_round_trip():
    assert pack_client("198.51.100.77", 24)[0] == bytes([198, 51, 100, 0])


def test_check_also_asks_owners_to_validate_their_sections(tmp_path: Path):
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(
        "datacenters:\n  dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}\n"
        "dns:\n  no_such_setting: 1\n"
    )
    rc, out = run("check", "--config", str(cfg))
    assert rc == 1
    assert f"{cfg}:4:" in out and "dns.no_such_setting" in out


def test_check_warns_but_succeeds(tmp_path: Path):
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(
        "datacenters:\n"
        "  dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}\n"
        "  dc2: {latitude: 1, longitude: 2, ipv4: [192.0.2.2]}\n"
        "services:\n"
        "  www.example.test: {policy: geoproximity, datacenters: [dc1], on_all_down: nodata}\n"
    )
    rc, out = run("check", "--config", str(cfg))
    assert rc == 0
    assert "warning: www.example.test.: uses client location but no geoip database" in out
    assert "warning: datacenter dc2 is not used by any service" in out
    assert "warning: datacenter dc1 has no check" in out
    rc, out = run("check", "--config", EXAMPLE)
    assert rc == 0 and "warning" not in out
