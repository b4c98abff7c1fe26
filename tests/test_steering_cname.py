"""CNAME targets: a datacenter may be a name (a CDN); answered over real sockets."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype
import pytest

from gslb.dns.node import NodeOptions
from gslb.errors import ConfigError

from .dnshelpers import ServerThread, udp, write_zones
from .test_steering_support import config_from

GEOIP = Path(__file__).resolve().parent.parent / "geodata" / "gslb-test-city.mmdb"
CONFIG = f"""\
geoip: {GEOIP}
datacenters:
  cdn: {{latitude: 50.11, longitude: 8.68, cname: edge.cdn.example.net}}
  us-east: {{latitude: 39.04, longitude: -77.49, ipv4: [192.0.2.11]}}
services:
  www.example.test:
    policy: geoproximity
    datacenters: [cdn, us-east]
    ttl: 45
    on_all_down: fail_open
"""


def test_cname_datacenter_over_real_sockets(tmp_path: Path) -> None:
    zones = write_zones(tmp_path / "zones")
    (tmp_path / "gslb.yaml").write_text(CONFIG)
    options = NodeOptions(
        zones_dir=str(zones),
        config_path=str(tmp_path / "gslb.yaml"),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        admin_listen="off",
    )
    server = ServerThread(options).start()
    try:

        def ask(net: str, rdtype: str = "A") -> dns.message.Message:
            address, prefix = net.split("/")
            q = dns.message.make_query(
                "www.example.test",
                rdtype,
                use_edns=0,
                options=[dns.edns.ECSOption(address, int(prefix))],
            )
            return udp(server, q)

        for rdtype in ("A", "AAAA"):
            r = ask("127.2.0.0/24", rdtype)  # Frankfurt: the CDN
            assert len(r.answer) == 1 and r.answer[0].rdtype == dns.rdatatype.CNAME
            assert r.answer[0][0].target.to_text() == "edge.cdn.example.net."
            assert r.answer[0].ttl == 45
        r = ask("127.6.0.0/24")  # New York: an address
        assert [rr.address for rr in r.answer[0]] == ["192.0.2.11"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "dc, message",
    [
        ("{latitude: 1, longitude: 1, cname: 'bad name'}", "not a host name"),
        ("{latitude: 1, longitude: 1, cname: a.example, ipv4: [192.0.2.1]}", "alternatives"),
        ("{latitude: 1, longitude: 1}", "at least one of ipv4, ipv6, cname"),
    ],
)
def test_cname_validation(dc: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from(
            "x.example.test: {policy: geoproximity, datacenters: [c], on_all_down: fail_open}",
            datacenters=f"datacenters:\n  c: {dc}\n",
        )
    assert message in str(exc.value)
