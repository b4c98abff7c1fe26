"""`gslb check` validates what `gslb dns` and `gslb proxy` would load: every section, at once."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from gslb.admin.settings import parse_admin
from gslb.dns.acl import parse_acl
from gslb.dns.cookies import parse_cookies
from gslb.dns.rrl import parse_rrl
from gslb.dns.settings import parse_dns
from gslb.steering.cli import add_commands

OWNERS = {
    "dns": parse_dns,
    "rrl": parse_rrl,
    "cookies": parse_cookies,
    "acl": parse_acl,
    "admin": parse_admin,
}


def run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gslb")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    rc = args.func(args, out)
    return rc, out.getvalue()


def test_check_reports_admin_dns_and_proxy_sections_together(tmp_path: Path):
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(
        "datacenters:\n"
        "  dc1: {latitude: 1, longitude: 2, ipv4: [192.0.2.1]}\n"
        "admin:\n"
        "  listen: nowhere\n"
        "dns:\n"
        "  tcp_idle_timeout: 2 fortnights\n"
        "rrl:\n"
        "  rate: fast\n"
        "proxy:\n"
        "  colour: blue\n"
    )
    rc, out = run("check", "--config", str(cfg))
    assert rc == 1
    assert f"{cfg}:4:3: admin.listen: must be HOST:PORT or off" in out
    assert f"{cfg}:6:3: dns.tcp_idle_timeout: must be a duration" in out
    assert f"{cfg}:8:3: rrl.rate: must be an integer" in out
    assert f"{cfg}:10:3: proxy.colour" in out  # the proxy's own parser
    assert "4 problem(s) found" in out


def test_check_accepts_what_the_servers_accept(tmp_path: Path):
    cfg = tmp_path / "gslb.yaml"
    cfg.write_text(
        "datacenters:\n"
        "  dc1:\n"
        "    latitude: 1\n"
        "    longitude: 2\n"
        "    ipv4: [192.0.2.1]\n"
        "    check: {port: 8080, interval: 10s, timeout: 500ms}\n"
        "services:\n"
        "  www.example.test: {policy: weighted, datacenters: [dc1], on_all_down: nodata}\n"
        "dns:\n"
        "  listen: ['[::1]:5300', 127.0.0.1:5300]\n"
        "  receive_buffer: 4m\n"
        "admin:\n"
        "  listen: off\n"
    )
    rc, out = run("check", "--config", str(cfg))
    assert rc == 0, out
    assert "1 datacenter(s), 1 service(s)" in out


def test_check_needs_a_file():
    rc, out = run("check")
    assert rc == 2 and "--octodns-config" in out


def test_every_config_example_in_docs_still_loads():
    """Nothing lost: each top-level YAML example in docs/ validates (paths it names aside)."""
    import re

    from gslb.config.schema import section_keys
    from gslb.config.validate import TopLevel, validate_config
    from gslb.config.yaml_loader import load_yaml_text
    from gslb.errors import ConfigError

    keys = set(section_keys(TopLevel))
    docs = Path(__file__).resolve().parent.parent / "docs"
    checked = 0
    for page in sorted(docs.glob("*.md")):
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", page.read_text(), re.S)):
            raw = load_yaml_text(block, f"{page.name}#{i}")
            if (
                not isinstance(raw, dict)
                or not set(raw) <= keys
                or "datacenters" in raw
                and (not isinstance(raw["datacenters"], dict))
            ):
                continue  # a fragment of a section, not a file
            checked += 1
            try:
                validate_config(raw, f"{page.name}#{i}", datacenters_required=False)
            except ConfigError as exc:
                real = [
                    r
                    for r in exc.reasons
                    if "not found" not in r.message and "undefined datacenter" not in r.message
                ]
                assert not real, "\n".join(map(str, real))
            for section, parse in OWNERS.items():
                if section in raw:
                    _, reasons = parse(raw[section])
                    assert not reasons, "\n".join(map(str, reasons))
    assert checked >= 10
