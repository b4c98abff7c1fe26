"""Config validation: every problem at once, each with file, line and key (one fixture per kind)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gslb.config.model import Check
from gslb.config.validate import load_config, load_config_text, normalize_name
from gslb.errors import ConfigError

from .test_steering_support import CONFIGS, EXAMPLE, GEOIP_CITY, GEOIP_COUNTRY

SVC = "services[{}]"
WWW = SVC.format("www.example.test")
GEO = SVC.format("geo.example.test")

CASES: dict[str, list[tuple[int, str, str]]] = {
    "unknown_key.yaml": [
        (6, "datacenters.dc1.weight", "unknown key"),
        (12, f"{WWW}.tll", "unknown key"),
        (13, "colour", "unknown key"),
    ],
    "wrong_type.yaml": [
        (3, "datacenters.dc1.latitude", "must be a number, not string 'north'"),
        (10, f"{WWW}.ttl", "must be an integer, not string"),
        (11, f"{WWW}.count", "must be an integer, not boolean"),
    ],
    "undefined_datacenter.yaml": [
        (6, f"{WWW}.datacenters[1]", "undefined datacenter 'dc9'"),
    ],
    "undefined_pool.yaml": [
        (9, f"{GEO}.pools.eu.fallback", "undefined pool 'asia'"),
        (13, f"{GEO}.rules[1].pool", "undefined pool 'americas'"),
    ],
    "fallback_loop.yaml": [
        (13, f"{GEO}.pools.b.fallback", "fallback loop: a -> b -> a"),
    ],
    "rule_order.yaml": [
        (13, f"{GEO}.rules[1]", "subnets only must come before rules with geos only"),
        (16, f"{GEO}.rules[3]", "geos only must come before rules with catch-all"),
    ],
    "missing_catch_all.yaml": [
        (8, f"{GEO}.rules", "must end with a catch-all rule"),
    ],
    "duplicate_names.yaml": [
        (3, "datacenters.DC1", "duplicate datacenter name"),
        (9, SVC.format("WWW.Example.Test."), "duplicate service name"),
    ],
    "duplicate_key.yaml": [
        (8, "www.example.test", "duplicate key in mapping"),
    ],
    "yaml_syntax.yaml": [
        (3, "", "YAML syntax error"),
    ],
    "bad_check.yaml": [
        (7, "datacenters.dc1.check.type", "must be one of http, https, tcp"),
        (8, "datacenters.dc1.check.port", "between 1 and 65535"),
        (9, "datacenters.dc1.check.path", "must start with '/'"),
        (11, "datacenters.dc1.check.timeout", "must be less than interval"),
        (12, "datacenters.dc1.check.rise", "between 1 and 100"),
        (14, "datacenters.dc1.check.expect_status", "between 100 and 599, not 700"),
        (15, "datacenters.dc1.check.body_match", "not a valid regular expression"),
    ],
    "bad_values.yaml": [
        (2, "datacenters.dc1.latitude", "between -90 and 90"),
        (2, "datacenters.dc1.bias", "between -99 and 99"),
        (3, "datacenters.dc2.ipv4", "is not an IPv4 address"),
        (3, "datacenters.dc2.ipv6", "not an IP address"),
        (4, "datacenters.dc3", "at least one of ipv4, ipv6"),
        (9, f"{SVC.format('w.example.test')}.datacenters[0].weight", "between 1 and 100"),
        (10, f"{SVC.format('w.example.test')}.datacenters[1].status", "up, down, obey"),
        (11, f"{SVC.format('w.example.test')}.on_all_down", "fail_open, fallback, nodata"),
        (12, f"{SVC.format('w.example.test')}.unknown_is", "must be one of up, down"),
        (13, f"{SVC.format('w.example.test')}.types", "must be A or AAAA, not 'MX'"),
    ],
    "bad_rules.yaml": [
        (8, f"{GEO}.pools.spare", "unused pool"),
        (10, f"{GEO}.rules[0].subnets", "host bits set"),
        (12, f"{GEO}.rules[1].geos", "invalid geo 'XX-US'"),
        (14, f"{GEO}.rules[2].geos", "geo EU already used by rule #1"),
    ],
    "bad_policy.yaml": [
        (5, f"{SVC.format('a.example.test')}.policy", "at most one of"),
        (9, f"{SVC.format('b.example.test')}.policy", "unknown policy step 'roundrobin'"),
        (13, f"{SVC.format('c.example.test')}.on_all_down", "required key is missing"),
        (13, f"{SVC.format('c.example.test')}.policy", "failover needs tiers"),
        (18, f"{SVC.format('d.example.test')}.tiers", "alternatives; use one"),
        (18, f"{SVC.format('d.example.test')}.tiers", "only used by the failover policy"),
        (19, f"{SVC.format('d.example.test')}.on_all_down", "needs fallback_pool"),
    ],
    "bad_health.yaml": [
        (4, "health.quorum", "majority, all, any or a fraction"),
        (5, "health.stale_after", "between 0.01 and 86400"),
        (7, "health.agents[0].url", "http:// or https:// URL"),
        (9, "health.agents[2].region", "duplicate agent region 'eu-west'"),
        (10, "health.colour", "unknown key"),
    ],
    "geoip_missing.yaml": [
        (1, "geoip", "GeoIP database not found"),
        (2, "geoip_cache_size", "between 1 and"),
    ],
    "multiple_errors.yaml": [
        (1, "geoip_cache_size", "must be an integer"),
        (3, "datacenters.dc1.colour", "unknown key"),
        (7, f"{WWW}.datacenters[1]", "undefined datacenter 'dc2'"),
        (12, f"{GEO}.pools.a.fallback", "fallback loop: a -> a"),
        (15, f"{GEO}.rules[1]", "rule order"),
        (16, f"{GEO}.rules[1].pool", "undefined pool 'b'"),
        (17, f"{GEO}.on_all_down", "needs fallback_pool"),
    ],
}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_bad_config_reports_every_problem_with_file_line_and_key(fixture):
    path = CONFIGS / fixture
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    got = [(r.mark.line, r.key, r.message) for r in err.value.reasons if r.mark]
    expected = CASES[fixture]
    assert len(err.value.reasons) == len(expected), "\n".join(map(str, err.value.reasons))
    for (line, key, text), (gline, gkey, gmsg) in zip(expected, got, strict=True):
        assert (gline, gkey) == (line, key), gmsg
        assert text in gmsg
    for reason in err.value.reasons:
        assert reason.mark is not None and reason.mark.file == str(path)
        assert str(reason).startswith(f"{path}:{reason.mark.line}")


def test_service_outside_every_zone():
    path = CONFIGS / "outside_zone.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(str(path), zone_origins={"example.test."})
    (reason,) = err.value.reasons
    assert (reason.mark.file, reason.mark.line) == (str(path), 8)
    assert reason.key == SVC.format("www.other.test")
    assert "outside every served zone" in reason.message
    # Without zone origins the same file is valid; with the right origins too.
    assert len(load_config(str(path)).services) == 2
    assert len(load_config(str(path), {"example.test.", "OTHER.test"}).services) == 2


def test_minimal_valid_config():
    cfg = load_config(str(CONFIGS / "valid_minimal.yaml"))
    svc = cfg.services["www.example.test."]
    assert svc.policy == ("failover",) and svc.on_all_down == "servfail"
    assert (svc.ttl, svc.count, svc.types, svc.unknown_is) == (30, 1, ("A", "AAAA"), "up")
    assert cfg.datacenters["dc1"].region == "dc1"  # region defaults to the name
    assert cfg.geoip_path is None and cfg.geoip_cache_size == 16384


def test_shipped_example_is_valid_and_complete():
    cfg = load_config(EXAMPLE, zone_origins={"example.test."})
    dcs = cfg.datacenters
    assert len(dcs) >= 4
    # four continents: North America, Europe, Asia, South America
    assert dcs["us-east"].longitude < -60 and dcs["us-east"].latitude > 20
    assert -30 < dcs["eu-west"].longitude < 40 and dcs["eu-west"].latitude > 35
    assert dcs["ap-northeast"].longitude > 100 and dcs["ap-northeast"].latitude > 0
    assert dcs["sa-east"].longitude < -30 and dcs["sa-east"].latitude < 0
    policies = {step for s in cfg.services.values() for step in s.policy}
    assert {"geoproximity", "geolocation", "failover", "weighted", "sticky"} <= policies
    assert any(r.subnets for s in cfg.services.values() for r in s.rules)
    assert any(s.count > 1 for s in cfg.services.values())
    www = cfg.services["www.example.test."]
    assert www.policy == ("geoproximity",) and len(www.datacenters) >= 4
    ports = sorted(dc.check.port for dc in cfg.datacenters.values() if dc.check)
    assert ports == list(range(8201, 8201 + len(cfg.datacenters)))
    for dc in cfg.datacenters.values():
        assert dc.check is not None and dc.check.path == "/health"
        assert dc.check.host == "127.0.0.1"
    assert cfg.geoip_path is not None and Path(cfg.geoip_path).is_file()


def test_geoip_relative_to_config_and_override(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    db = tmp_path / "sub" / "city.mmdb"
    db.write_bytes(Path(GEOIP_CITY).read_bytes())
    cfg_file = tmp_path / "gslb.yaml"
    cfg_file.write_text(
        "geoip: sub/city.mmdb\ndatacenters:\n  dc1: {latitude: 1, longitude: 2, ipv4: 192.0.2.1}\n"
    )
    assert load_config(str(cfg_file)).geoip_path == str(db)
    over = load_config(str(cfg_file), geoip_override=GEOIP_COUNTRY)
    assert over.geoip_path == str(Path(GEOIP_COUNTRY).resolve())
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_file), geoip_override=str(tmp_path / "nope.mmdb"))
    assert err.value.reasons[0].key == "--geoip"


def test_other_sections_pass_through_untouched():
    text = textwrap.dedent(
        """
        datacenters:
          dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}
        dns: {listen: ["127.0.0.1:5353"], anything: [goes, here]}
        proxy: {listeners: []}
        rrl: {}
        cookies: {}
        acl: {}
        admin: {listen: "127.0.0.1:8053"}
        """
    )
    cfg = load_config_text(text, "mem.yaml")
    assert set(cfg.extra) == {"dns", "proxy", "rrl", "cookies", "acl", "admin"}
    assert cfg.extra["dns"]["anything"] == ["goes", "here"]
    assert cfg.extra["dns"].mark_of("listen").line == 4  # still marked for their owners


def test_check_and_health_values_are_typed():
    text = textwrap.dedent(
        """
        datacenters:
          dc1:
            latitude: 1
            longitude: 2
            ipv4: [192.0.2.1, 192.0.2.2]
            ipv6: 2001:db8::1
            bias: -20
            check:
              type: https
              port: 8443
              path: /health
              host_header: www.example.test
              verify_tls: true
              interval: 1
              rise: 1
              fall: 5
              expect_status: 204
              body_match: "^ok"
              headers: {X-Probe: gslb, X-Num: 1}
        health:
          quorum: 0.5
          stale_after: 3
          state_file: state/health.json
          local_region: lab
          agents:
            - {region: us-east, url: "http://127.0.0.1:8101/"}
        """
    )
    cfg = load_config_text(text, "/srv/gslb/gslb.yaml")
    dc = cfg.datacenters["dc1"]
    assert dc.ipv4 == ("192.0.2.1", "192.0.2.2") and dc.ipv6 == ("2001:db8::1",)
    assert dc.bias == -20.0
    assert dc.check == Check(
        type="https",
        host=None,
        port=8443,
        path="/health",
        host_header="www.example.test",
        verify_tls=True,
        interval=1.0,
        timeout=0.5,  # default: half the interval when that is below 2 s
        jitter=0.1,
        rise=1,
        fall=5,
        expect_status=(204,),
        body_match="^ok",
        headers=(("X-Probe", "gslb"), ("X-Num", "1")),
        mark=dc.check.mark,
    )
    h = cfg.health
    assert (h.quorum, h.stale_after, h.local_region) == (0.5, 3.0, "lab")
    assert h.state_file == "/srv/gslb/state/health.json"
    assert h.agents[0].url == "http://127.0.0.1:8101" and h.agents[0].region == "us-east"


def test_empty_and_non_mapping_files(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(str(empty))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(str(lst))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"))


def test_names_normalised():
    assert normalize_name("WWW.Example.Test") == "www.example.test."
    assert normalize_name("www.example.test.") == "www.example.test."
    text = (
        "datacenters:\n  dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}\n"
        "services:\n  bad..name.test: {policy: failover, tiers: [[dc1]], on_all_down: nodata}\n"
    )
    with pytest.raises(ConfigError, match="not a valid DNS name"):
        load_config_text(text, "mem.yaml")
