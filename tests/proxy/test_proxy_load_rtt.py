"""The proxy reports its load and its clients' RTTs on /health (the DNS side steers on them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gslb.clock import FakeClock
from gslb.errors import ConfigError
from gslb.proxy.config import load_settings
from gslb.proxy.load import LoadMeter, LoadSnapshot, merge_loads
from gslb.proxy.quick import quick_settings
from gslb.proxy.rtt import NetworkRtt, RttSpec, RttTable, merge_rtts, network_key, rtt_json
from gslb.proxy.share import STALE, decode, encode

from .test_proxy_config import write
from .test_proxy_forward import free_port

# -- pure: the load meter ----------------------------------------------------------------------


def test_load_meter_counts_in_flight_and_a_sliding_window() -> None:
    clock = FakeClock(1000.0)
    meter = LoadMeter(500.0, clock)
    meter.begin()
    meter.begin()
    assert meter.snapshot().in_flight == 2
    for _ in range(2):
        meter.end()
    assert meter.in_flight == 0
    meter.end()  # a stray end never drives the count below zero
    assert meter.in_flight == 0
    assert meter.requests_per_second() == pytest.approx(0.3)  # 3 completions / 10 s
    clock.advance(5)
    for _ in range(7):
        meter.begin()
        meter.end()
    assert meter.requests_per_second() == pytest.approx(1.0)
    clock.advance(5)  # the first second's 3 fall out of the 10 s window
    assert meter.requests_per_second() == pytest.approx(0.7)
    assert meter.requests_per_second(clock.now + 100) == 0.0
    clock.advance(10)  # a bucket reused for a later second starts from zero
    meter.end()
    assert meter.requests_per_second() == pytest.approx(0.1)
    assert meter.snapshot().to_json() == {
        "in_flight": 0,
        "requests_per_second": 0.1,
        "capacity": 500.0,
    }
    assert LoadMeter(None, clock).snapshot().to_json()["capacity"] is None


def test_merge_loads_adds_workers() -> None:
    merged = merge_loads([LoadSnapshot(2, 10.0, None), LoadSnapshot(3, 1.5, None)], 80.0)
    assert merged == LoadSnapshot(5, 11.5, 80.0)


# -- pure: the RTT table -----------------------------------------------------------------------


def test_network_keys() -> None:
    assert network_key("10.99.0.7") == "10.99.0.0/24"
    assert network_key("::ffff:10.99.0.7") == "10.99.0.0/24"  # IPv4-mapped counts as IPv4
    assert network_key("2001:db8:1234:5678::1") == "2001:db8:1234:5600::/56"
    assert network_key("fe80::1%eth0") == "fe80::/56"
    assert network_key("10.99.3.7", prefix_v4=16) == "10.99.0.0/16"
    assert network_key("2001:db8:1234:5678::1", prefix_v6=48) == "2001:db8:1234::/48"
    assert network_key("") is None
    assert network_key("/run/gslb.sock") is None


def test_rtt_table_smooths_per_network() -> None:
    clock = FakeClock()
    table = RttTable(RttSpec(), clock)
    assert table.add("10.99.0.1", 0.040) == "10.99.0.0/24"
    table.add("10.99.0.2", 0.040)  # the same /24
    table.add("10.99.0.3", 0.140)  # one slow sample moves the EWMA a little
    (net,) = table.recent()
    assert net.network == "10.99.0.0/24" and net.samples == 3
    assert 40 < net.rtt_ms < 70
    assert table.add("not an address", 0.01) is None
    assert len(table) == 1


def test_rtt_table_evicts_least_recently_seen_and_expires() -> None:
    clock = FakeClock()
    table = RttTable(RttSpec(max_age=60, max_networks=3, report_networks=2), clock)
    for i in range(3):
        table.add(f"10.0.{i}.1", 0.01)
        clock.advance(1)
    table.add("10.0.0.9", 0.01)  # 10.0.0.0/24 seen again: now the most recent
    table.add("10.0.3.1", 0.01)  # a 4th network evicts the least recently seen: 10.0.1.0/24
    assert len(table) == 3
    assert [n.network for n in table.recent(10)] == ["10.0.3.0/24", "10.0.0.0/24", "10.0.2.0/24"]
    assert [n.network for n in table.recent()] == ["10.0.3.0/24", "10.0.0.0/24"]  # report cap
    clock.advance(59)
    table.add("10.0.0.1", 0.01)
    clock.advance(1.5)  # 10.0.2 and 10.0.3 are now older than max_age; 10.0.0 is 1.5 s old
    assert [n.network for n in table.recent(10)] == ["10.0.0.0/24"]
    assert len(table) == 1  # expired entries free their memory too
    body = rtt_json(table.recent(), clock.monotonic())
    assert body == {"networks": {"10.0.0.0/24": {"rtt_ms": 10.0, "samples": 3, "age": 1.5}}}


def test_merge_rtts_weights_by_samples_and_keeps_the_freshest() -> None:
    spec = RttSpec(max_age=100, report_networks=2)
    a = [NetworkRtt("10.0.0.0/24", 10.0, 1, 50.0), NetworkRtt("10.0.9.0/24", 1.0, 1, 0.0)]
    b = [NetworkRtt("10.0.0.0/24", 40.0, 3, 60.0), NetworkRtt("10.0.1.0/24", 5.0, 1, 55.0)]
    merged = merge_rtts([a, b], 120.0, spec)  # 10.0.9 is 120 s old: expired
    assert merged == [
        NetworkRtt("10.0.0.0/24", 32.5, 4, 60.0),
        NetworkRtt("10.0.1.0/24", 5.0, 1, 55.0),
    ]


def test_worker_snapshot_round_trip_and_staleness() -> None:
    nets = [NetworkRtt("10.0.0.0/24", 1.5, 2, 99.0)]
    data = encode(100.0, LoadSnapshot(4, 2.5, 9.0), nets)
    snap = decode(data, 101.0)
    assert snap is not None and snap.load == LoadSnapshot(4, 2.5, None) and snap.networks == nets
    assert decode(data, 100.0 + STALE + 0.1) is None  # a dead worker's file
    assert decode(b'{"at": 1', 1.0) is None  # half-written


# -- config --------------------------------------------------------------------------------------

CONFIG = """\
proxy:
  rtt: {prefix_v4: 16, prefix_v6: 48, max_age: 90s, max_networks: 1000, report_networks: 10}
  regions:
    r1:
      capacity: 500
      listeners: [{listen: "127.0.0.1:0"}]
      routes: [{pool: web}]
      pools:
        web: {members: ["127.0.0.1:9101"]}
"""


def test_config_capacity_and_rtt(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, CONFIG), "r1")
    assert s.capacity == 500.0
    assert s.rtt == RttSpec(16, 48, 90.0, 1000, 10)
    plain = CONFIG.replace("      capacity: 500\n", "").replace("  rtt: {", "  x_rtt: {")
    lines = [line for line in plain.splitlines() if "x_rtt" not in line]
    s = load_settings(write(tmp_path, "\n".join(lines) + "\n"), "r1")
    assert s.capacity is None and s.rtt == RttSpec()
    assert s.rtt.max_age == 300.0 and s.rtt.max_networks == 100_000


def test_config_bad_capacity_and_rtt_values(tmp_path: Path) -> None:
    text = CONFIG.replace("capacity: 500", "capacity: 0").replace("prefix_v4: 16", "prefix_v4: 40")
    text = text.replace("max_age: 90s", "max_age: soon").replace(
        "max_networks: 1000", "max_networks: 5"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, "r1")
    msg = str(info.value)
    assert f"{path}:2:" in msg and "proxy.rtt.prefix_v4: must be between 8 and 32, not 40" in msg
    assert "proxy.rtt.max_age: must be a duration" in msg
    assert "proxy.rtt.report_networks: must be <= max_networks" in msg
    assert f"{path}:5:" in msg and "proxy.regions.r1.capacity: must be at least" in msg


def test_quick_capacity() -> None:
    assert quick_settings("127.0.0.1:0", ["127.0.0.1:9"], capacity=20).capacity == 20
    with pytest.raises(ValueError):
        quick_settings("127.0.0.1:0", ["127.0.0.1:9"], capacity=0)


# -- real sockets ----------------------------------------------------------------------------------


async def health(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/health") as resp:
        body: dict[str, Any] = json.loads(await resp.text())
        return body


async def wait_for(check: Any, timeout: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > end:
            return value
        await asyncio.sleep(0.05)


async def test_health_reports_load_and_loopback_rtt(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    settings = dataclasses.replace(quick_settings("127.0.0.1:0", [b.address]), capacity=250.0)
    p = await proxy(settings)
    base = f"http://127.0.0.1:{p.port}"
    n = 12
    # A fresh connection per request: every one gives the kernel a handshake RTT.
    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn) as session:
        for i in range(n):
            async with session.get(f"{base}/r{i}") as resp:
                assert resp.status == 200
        body = await health(session, base)
    assert body["status"] == "ok" and body["pools"][0]["pool"] == "default"  # unchanged keys
    assert body["load"] == {
        "in_flight": 0,  # the probe itself is not load
        "requests_per_second": pytest.approx(n / 10),
        "capacity": 250.0,
    }
    nets = body["rtt"]["networks"]
    assert list(nets) == ["127.0.0.0/24"]
    entry = nets["127.0.0.0/24"]
    assert entry["samples"] >= n + 1  # the /health request is sampled too
    assert 0 < entry["rtt_ms"] < 50
    assert 0 <= entry["age"] < 5


async def test_https_requests_are_measured_too(backends, proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    import trustme

    from gslb.proxy.settings import CertSpec, ListenerSpec

    ca = trustme.CA()
    issued = ca.issue_cert("app.test")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    (b,) = await backends(1)
    tls = ListenerSpec(
        "127.0.0.1", 0, mode="https", certificates=(CertSpec(("app.test",), str(cert), str(key)),)
    )
    settings = dataclasses.replace(quick_settings("127.0.0.1:0", [b.address]), listeners=(tls,))
    p = await proxy(settings)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    # The RTT is the TCP socket's under the TLS layer: HTTPS clients are measured like HTTP ones.
    conn = aiohttp.TCPConnector(force_close=True, ssl=ctx)
    async with aiohttp.ClientSession(connector=conn) as session:
        for i in range(3):
            async with session.get(
                f"https://127.0.0.1:{p.port}/r{i}", server_hostname="app.test"
            ) as resp:
                assert resp.status == 200
        async with session.get(
            f"https://127.0.0.1:{p.port}/health", server_hostname="app.test"
        ) as resp:
            body = json.loads(await resp.text())
    entry = body["rtt"]["networks"]["127.0.0.0/24"]
    assert entry["samples"] >= 4 and 0 < entry["rtt_ms"] < 50
    assert body["load"]["requests_per_second"] == pytest.approx(3 / 10)


async def test_health_rtt_over_ipv6_loopback(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    # ::1 is there wherever the suite runs (CI too): no skip.
    (b,) = await backends(1)
    p = await proxy(quick_settings("[::1]:0", [b.address]))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://[::1]:{p.port}/x") as resp:
            assert resp.status == 200
        body = await health(session, f"http://[::1]:{p.port}")
    assert list(body["rtt"]["networks"]) == ["::/56"]


async def test_in_flight_rises_while_a_slow_backend_holds_requests(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    b.delay = 1.0
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    base = f"http://127.0.0.1:{p.port}"
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.get(f"{base}/slow{i}") as resp:
                await resp.read()
                return resp.status

        tasks = [asyncio.ensure_future(one(i)) for i in range(3)]

        async def three() -> bool:
            return bool((await health(session, base))["load"]["in_flight"] == 3)

        assert await wait_for(three), "in_flight never reached 3"
        assert await asyncio.gather(*tasks) == [200, 200, 200]
        body = await health(session, base)
    assert body["load"]["in_flight"] == 0
    assert body["load"]["requests_per_second"] == pytest.approx(0.3)


async def test_in_flight_never_leaks(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    """Every way a request can end ends it once: client gone mid-request, pipelined requests
    dropped with the connection, a malformed request, an upstream that is down."""
    (b,) = await backends(1)
    b.delay = 0.5
    dead = free_port()
    p = await proxy(quick_settings("127.0.0.1:0", [b.address]))
    port = p.port
    loop = asyncio.get_running_loop()

    async def raw(data: bytes, read: bool) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(data)
        await w.drain()
        if read:
            await asyncio.wait_for(r.read(), 5)
        else:
            await asyncio.sleep(0.1)  # the proxy is waiting on the slow member
        w.close()

    # Client gone while its request and two pipelined ones are in the proxy.
    get = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    await raw(get * 3, read=False)
    # A malformed request, then a good one refused behind it.
    await raw(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", True)
    # Connection: close with a pipelined request after it that is never answered.
    await raw(b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + get, read=True)
    meter = p.load
    end = loop.time() + 5
    while meter.in_flight and loop.time() < end:
        await asyncio.sleep(0.05)
    assert meter.in_flight == 0
    # Upstream down: 502, ended once.
    p2 = await proxy(quick_settings("127.0.0.1:0", [f"127.0.0.1:{dead}"]))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{p2.port}/x") as resp:
            assert resp.status == 502
        body = await health(session, f"http://127.0.0.1:{p2.port}")
    assert body["load"]["in_flight"] == 0
    assert body["load"]["requests_per_second"] == pytest.approx(0.1)


async def test_metrics_show_load(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    settings = dataclasses.replace(
        quick_settings("127.0.0.1:0", [b.address]), metrics_path="/metrics"
    )
    p = await proxy(settings)
    base = f"http://127.0.0.1:{p.port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(f"{base}/m") as resp:
                assert resp.status == 200
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
    assert "gslb_proxy_in_flight 1.0" in text  # the scrape itself is a request in flight
    assert "gslb_proxy_requests_per_second 0.5" in text
    assert "gslb_proxy_rtt_networks 1.0" in text


async def test_workers_report_the_whole_proxy(backends) -> None:  # type: ignore[no-untyped-def]
    """--workers 2: whichever worker answers /health reports both workers' load and RTTs."""
    (b,) = await backends(1)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gslb.proxy.cli", "proxy", "--listen", f"127.0.0.1:{port}",
        "--upstream", b.address, "--workers", "2", "--capacity", "300",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(2)]
        assert all(b"listening" in line for line in lines), lines
        n = 20
        timeout = aiohttp.ClientTimeout(total=10)
        # A new connection each time: SO_REUSEPORT spreads them over both workers.
        fresh = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=fresh) as session:
            for i in range(n):
                async with session.get(f"{base}/w{i}") as resp:
                    assert resp.status == 200
            await asyncio.sleep(1.2)  # both workers have published since
            for _ in range(6):  # several probes, answered by either worker: all see everything
                body = await health(session, base)
                assert body["load"]["capacity"] == 300.0
                assert body["load"]["in_flight"] == 0
                assert body["load"]["requests_per_second"] >= n / 10
                entry = body["rtt"]["networks"]["127.0.0.0/24"]
                assert entry["samples"] >= n
                assert 0 < entry["rtt_ms"] < 50
            b.delay = 3.0
            # Slow requests spread over both workers: in flight sums them.
            slow = [asyncio.ensure_future(session.get(f"{base}/s{i}")) for i in range(4)]

            async def four() -> bool:
                loads = [(await health(session, base))["load"]["in_flight"] for _ in range(3)]
                return loads == [4, 4, 4]

            assert await wait_for(four, 5), "in_flight of both workers never summed to 4"
            for resp in await asyncio.gather(*slow):
                assert resp.status == 200
                resp.release()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
