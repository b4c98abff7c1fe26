"""A real NSD as secondary of a real `gslb dns` process, both on loopback.

NSD transfers example.test with TSIG, answers the static records, and after the zone file gets
a new serial and gslb is reloaded (SIGHUP), gslb's NOTIFY makes NSD transfer again long before
the SOA refresh (3600 s) would. Unauthorised and badly signed AXFRs are refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from .dnshelpers import write_zones
from .stackhelpers import free_ports
from .xfrhelpers import (
    OTHER_SECRET,
    SECRET,
    raw_exchange,
    signed_query,
    tsig_rdata,
    unverified,
    write_config,
)

NSD = "/usr/sbin/nsd"

NSD_CONF = """\
server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    server-count: 1
    verbosity: 2
    xfrd-reload-timeout: 0
remote-control:
    control-enable: no
key:
    name: "xfr-key"
    algorithm: hmac-sha256
    secret: "{secret}"
zone:
    name: "example.test"
    zonefile: "example.test.secondary"
    request-xfr: 127.0.0.1@{primary} xfr-key
    allow-notify: 127.0.0.1 xfr-key
"""


def poll(check: Callable[[], bool], deadline: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.stdout is not None
    if process.stdout.closed:
        return ""  # stopped already
    with process.stdout:
        return process.stdout.read()


def dig(port: int, *args: str) -> str:
    return subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


def soa_serial(port: int) -> int:
    response = dns.query.udp(
        dns.message.make_query("example.test", "SOA"), "127.0.0.1", port=port, timeout=1
    )
    if response.rcode() != dns.rcode.NOERROR or not response.answer:
        return -1
    return int(response.answer[0][0].serial)


@dataclass
class Pair:
    gslb: subprocess.Popen[str]
    nsd: subprocess.Popen[str]
    gslb_port: int
    nsd_port: int
    zones: Path
    nsd_log: Path


@pytest.fixture
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pair]:
    mode = getattr(request, "param", "omit")
    gslb_port, nsd_port = free_ports(2)
    zones = write_zones(tmp_path / "zones")
    config = write_config(
        tmp_path / "conf",
        "  allow:\n"
        "    - {network: 127.0.0.1/32, key: xfr-key}\n"
        f"  notify: [{{address: '127.0.0.1:{nsd_port}', key: xfr-key}}]\n"
        "  notify_timeout: 0.5\n"
        f"  service_names: {mode}\n",
    )
    env = {"GSLB_TEST_OTHER_SECRET": OTHER_SECRET, "PATH": "/usr/bin:/bin"}
    gslb = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gslb.cli",
            "dns",
            "--zones",
            str(zones),
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{gslb_port}",
            "--admin",
            "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    nsd_dir = tmp_path / "nsd"
    nsd_dir.mkdir()
    conf = nsd_dir / "nsd.conf"
    conf.write_text(NSD_CONF.format(port=nsd_port, dir=nsd_dir, secret=SECRET, primary=gslb_port))
    nsd: subprocess.Popen[str] | None = None
    try:
        poll(lambda: soa_serial(gslb_port) == 1, 20, "gslb to answer")
        nsd = subprocess.Popen(
            [NSD, "-d", "-c", str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        yield Pair(gslb, nsd, gslb_port, nsd_port, zones, nsd_dir / "nsd.log")
    finally:
        if nsd is not None:
            stop(nsd)
        stop(gslb)


def test_nsd_secondary_transfers_and_follows_reloads(pair: Pair) -> None:
    poll(lambda: soa_serial(pair.nsd_port) == 1, 30, "NSD to transfer serial 1", pair.nsd_log)
    # NSD answers the static records it transferred (asked with dig, as an operator would).
    assert dig(pair.nsd_port, "+short", "www.example.test", "A").split() == ["192.0.2.1"]
    assert dig(pair.nsd_port, "+short", "mail.example.test", "A").split() == ["192.0.2.25"]
    assert "aa" in dig(pair.nsd_port, "www.example.test", "AAAA").split("flags:")[1].split(";")[0]
    # The dynamic service name was not transferred (service_names: omit).
    assert dig(pair.nsd_port, "+short", "gslb.example.test", "A").strip() == ""
    poll(
        lambda: (
            "serial 1 at" in pair.nsd_log.read_text()
            and "TSIG verified with key xfr-key" in pair.nsd_log.read_text()
        ),
        10,
        "NSD to log the signed transfer",
        pair.nsd_log,
    )

    # A new serial in the zone file, then a reload of gslb: NOTIFY brings NSD along.
    path = pair.zones / "example.test.zone"
    text = path.read_text().replace(" hostmaster 1 ", " hostmaster 2 ")
    path.write_text(text + "added IN A 192.0.2.222\n")
    pair.gslb.send_signal(signal.SIGHUP)
    poll(lambda: soa_serial(pair.nsd_port) == 2, 30, "NSD to pick up serial 2", pair.nsd_log)
    assert dig(pair.nsd_port, "+short", "added.example.test", "A").split() == ["192.0.2.222"]
    poll(
        lambda: "notify for example.test. from 127.0.0.1 serial 2" in pair.nsd_log.read_text(),
        10,
        "NSD to log gslb's NOTIFY",
        pair.nsd_log,
    )
    # NSD asked for the difference, and got it (not the whole zone again).
    log = stop(pair.gslb)
    assert "AXFR of example.test. serial 1 to 127.0.0.1" in log
    assert "IXFR of example.test. from 127.0.0.1: serial 1 -> 2" in log
    assert "NOTIFY example.test. serial 2 acknowledged by 127.0.0.1" in log


def test_unauthorised_and_badly_signed_axfr(pair: Pair) -> None:
    unsigned = dns.message.make_query("example.test", "AXFR")
    (wire,) = raw_exchange(pair.gslb_port, unsigned.to_wire(), tcp=True)
    assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED
    assert "Transfer failed" in dig(pair.gslb_port, "example.test", "AXFR")

    badly = signed_query("example.test", "AXFR", key="not-our-key")
    (wire,) = raw_exchange(pair.gslb_port, badly.to_wire(), tcp=True)
    reply = unverified(wire)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert tsig_rdata(reply).error == dns.rcode.BADKEY  # type: ignore[attr-defined]
    assert tsig_rdata(reply).mac == b""  # type: ignore[attr-defined]  # unsigned
    out = dig(pair.gslb_port, "-y", f"hmac-sha256:not-our-key:{SECRET}", "example.test", "AXFR")
    assert "BADKEY" in out or "Transfer failed" in out

    # With the right key, dig transfers the zone.
    out = dig(pair.gslb_port, "-y", f"hmac-sha256:xfr-key:{SECRET}", "example.test", "AXFR")
    assert "www.example.test." in out and "XFR size" in out


@pytest.mark.parametrize("pair", ["fallback"], indirect=True)
def test_nsd_answers_service_names_with_the_static_fallback(pair: Pair) -> None:
    poll(lambda: soa_serial(pair.nsd_port) == 1, 30, "NSD to transfer serial 1", pair.nsd_log)
    # Every datacenter's address, in the secondary's (static) order; gslb itself still steers.
    assert sorted(dig(pair.nsd_port, "+short", "gslb.example.test", "A").split()) == [
        "192.0.2.71",
        "192.0.2.72",
    ]
    assert dig(pair.nsd_port, "+short", "gslb.example.test", "AAAA").split() == ["2001:db8::71"]
    assert dig(pair.gslb_port, "+short", "gslb.example.test", "A").split() == ["192.0.2.71"]
