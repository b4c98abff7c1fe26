"""The proxies' load and round-trip-time reports: parsed from a health page, relayed by real
probe agents, merged by the DNS node's monitor into the health snapshot (all on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gslb.clock import FakeClock
from gslb.config.validate import load_config_text
from gslb.health.agent import Agent
from gslb.health.monitor import HealthMonitor
from gslb.health.report import (
    ProxyReport,
    latency_changed,
    load_changed,
    merge_latency,
    parse_proxy_body,
    report_from_view,
    report_view,
)
from gslb.health.snapshot import HealthHolder
from gslb.steering.latency import LatencyIndex
from tests.test_health_support import wait_for


def page(rps: float, capacity: float | None, networks: dict[str, tuple[float, float]]) -> bytes:
    """A proxy health body in the shape `gslb proxy` serves."""
    return json.dumps(
        {
            "status": "ok",
            "pools": [],
            "load": {"in_flight": 2, "requests_per_second": rps, "capacity": capacity},
            "rtt": {
                "networks": {
                    net: {"rtt_ms": ms, "samples": 3, "age": age}
                    for net, (ms, age) in networks.items()
                }
            },
        }
    ).encode()


# ---- pure ---------------------------------------------------------------------------------


def test_a_health_page_becomes_a_report_with_ages_turned_into_times() -> None:
    body = page(41.5, 500.0, {"10.99.0.0/24": (40.0, 2.0), "2001:db8:1200::/56": (5.0, 1.0)})
    report = parse_proxy_body(body, now=1000.0)
    assert report is not None
    assert (report.requests_per_second, report.in_flight, report.capacity) == (41.5, 2, 500.0)
    assert dict(report.rtts) == {
        "10.99.0.0/24": (0.04, 998.0),
        "2001:db8:1200::/56": (0.005, 999.0),
    }


def test_malformed_entries_are_left_out_and_plain_pages_carry_no_report() -> None:
    body = json.dumps(
        {
            "load": {"requests_per_second": "fast", "capacity": -3, "in_flight": True},
            "rtt": {
                "networks": {
                    "10.99.0.7/24": {"rtt_ms": 1, "age": 0},  # host bits set: not a network
                    "nonsense": {"rtt_ms": 1, "age": 0},
                    "10.98.0.0/24": {"rtt_ms": "x", "age": 0},
                    "10.97.0.0/24": {"rtt_ms": float("inf"), "age": 0},
                    "10.96.0.0/24": [1, 2],
                    "10.95.0.0/24": {"rtt_ms": 7.0, "age": 1.0},
                }
            },
        }
    ).encode()
    report = parse_proxy_body(body, now=10.0)
    assert report == ProxyReport(None, None, None, report.rtts if report else {})
    assert report is not None and dict(report.rtts) == {"10.95.0.0/24": (0.007, 9.0)}
    assert parse_proxy_body(b'{"status": "ok", "pools": []}', 1.0) is None
    assert parse_proxy_body(b"ok", 1.0) is None
    assert parse_proxy_body(b"\xff\xfe", 1.0) is None
    assert parse_proxy_body(b"[1, 2]", 1.0) is None


def test_a_report_crosses_machines_as_ages_so_clocks_need_not_agree() -> None:
    agent_report = ProxyReport(10.0, 1, 100.0, {"10.99.0.0/24": (0.04, 500.0)})
    view = json.loads(json.dumps(report_view(agent_report, now=503.0)))  # the agent's clock
    node = report_from_view(view, now=9000.0)  # the DNS node's clock is far away: no matter
    assert node == ProxyReport(10.0, 1, 100.0, node.rtts if node else {})
    assert node is not None and dict(node.rtts) == {"10.99.0.0/24": (0.04, 8997.0)}
    assert report_from_view("nonsense", 1.0) is None


def test_merging_regions_keeps_the_newest_measurement_and_drops_the_old() -> None:
    a = {"east": ProxyReport(rtts={"10.99.0.0/24": (0.04, 100.0), "10.98.0.0/24": (0.1, 10.0)})}
    b = {
        "east": ProxyReport(rtts={"10.99.0.0/24": (0.05, 101.0)}),
        "west": ProxyReport(rtts={"10.99.0.0/24": (0.12, 99.0)}),
    }
    table = merge_latency([a, b], now=105.0, max_age=60.0)
    assert table == {"10.99.0.0/24": {"east": (0.05, 101.0), "west": (0.12, 99.0)}}


def test_only_changes_that_matter_make_a_new_snapshot() -> None:
    base = {"n": {"east": (0.040, 100.0)}}
    assert not latency_changed(base, {"n": {"east": (0.041, 105.0)}})  # small wobble, soon
    assert latency_changed(base, {"n": {"east": (0.050, 100.0)}})  # moved 25%
    assert latency_changed(base, {"n": {"east": (0.041, 110.0)}})  # refreshed 10 s later
    assert latency_changed(base, {"n": {"east": (0.04, 100.0), "west": (0.1, 100.0)}})
    assert latency_changed(base, {})
    assert not load_changed(100.0, 105.0) and load_changed(100.0, 120.0)
    assert not load_changed(2.0, 2.9) and load_changed(None, 1.0) and not load_changed(None, None)


def _brute_force(
    table: dict[str, dict[str, tuple[float, float]]],
    address: bytes,
    prefix: int,
    measured_prefix: int,
    now: float,
    max_age: float,
) -> tuple[dict[str, float], int]:
    """The definition: scan every fresh network (what the index must agree with)."""
    value = int.from_bytes(address, "big")
    bits = 8 * len(address)
    rtts: dict[str, float] = {}
    best = -1
    scope = 0
    for text, per_dc in table.items():
        fresh = {dc: rtt for dc, (rtt, at) in per_dc.items() if now - at <= max_age}
        net = ipaddress.ip_network(text)
        if not fresh or net.max_prefixlen != bits:
            continue
        base = int(net.network_address)
        common = bits - (value ^ base).bit_length()
        if common >= net.prefixlen:  # inside
            scope = max(scope, net.prefixlen)
            if prefix >= min(net.prefixlen, measured_prefix) and net.prefixlen > best:
                rtts, best = fresh, net.prefixlen
        else:
            scope = max(scope, common + 1)
    return rtts, scope


def test_the_latency_index_agrees_with_scanning_every_network() -> None:
    rng = random.Random(5)
    for _ in range(40):
        table: dict[str, dict[str, tuple[float, float]]] = {}
        for _ in range(rng.randint(0, 60)):
            length = rng.choice((16, 24, 24, 24, 28))
            net = ipaddress.ip_network(
                (rng.randrange(2**32) >> (32 - length) << (32 - length), length)
            )
            table[str(net)] = {
                dc: (rng.uniform(0.001, 0.2), rng.uniform(0.0, 100.0))
                for dc in rng.sample(["east", "west", "north"], rng.randint(1, 3))
            }
        for _ in range(6):
            v6 = ipaddress.ip_network((rng.randrange(2**128) >> 72 << 72, 56))
            table[str(v6)] = {"east": (0.01, 90.0)}
        index = LatencyIndex(table, now=100.0, max_age=50.0)
        for _ in range(200):
            if rng.random() < 0.5 and table:
                # often a client inside, or right next to, a measured network
                net = ipaddress.ip_network(rng.choice(list(table)))
                value = int(net.network_address) + rng.randrange(net.num_addresses)
                address = value.to_bytes(net.max_prefixlen // 8, "big")
            else:
                address = rng.randrange(2**32).to_bytes(4, "big")
            prefix = rng.choice((16, 24, 32)) if len(address) == 4 else 56
            got = index.lookup(address, prefix, 24 if len(address) == 4 else 56)
            want = _brute_force(
                table, address, prefix, 24 if len(address) == 4 else 56, 100.0, 50.0
            )
            assert (dict(got.rtts), got.scope) == want, (table, address, prefix)
        expiries = [at + 50.0 for per in table.values() for _, at in per.values() if at >= 50.0]
        assert index.expires == (min(expiries) if expiries else None)


# ---- through real probe agents to the monitor --------------------------------------------


class ProxyPage:
    """A stand-in for a `gslb proxy` health page on 127.0.0.1 whose report the test sets."""

    def __init__(self) -> None:
        self.body = page(0.0, None, {})
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def proxies() -> AsyncIterator[dict[str, ProxyPage]]:
    pages = {"east": ProxyPage(), "west": ProxyPage()}
    for p in pages.values():
        await p.start()
    yield pages
    for p in pages.values():
        await p.stop()


def stack_config(pages: dict[str, ProxyPage], agents: dict[str, int] | None) -> Any:
    check = (
        "{type: http, path: /health, port: %d, interval: 0.05s, timeout: 0.04s, rise: 1, fall: 1}"
    )
    dcs = "\n".join(
        f"  {name}: {{latitude: 40, longitude: {lon}, ipv4: [127.0.0.1], capacity: 0,"
        f" check: {check % p.port}}}"
        for (name, p), lon in zip(pages.items(), (-74, -122), strict=True)
    )
    health = "health:\n  stale_after: 1s\n"
    if agents:
        health += "  agents:\n" + "".join(
            f"    - {{region: {r}, url: 'http://127.0.0.1:{port}'}}\n" for r, port in agents.items()
        )
    text = (
        f"datacenters:\n{dcs}\n{health}"
        "services:\n  lat.example.test:\n    policy: latency\n    latency: {max_age: 30s}\n"
        "    datacenters: [east, west]\n    on_all_down: fail_open\n"
    )
    return load_config_text(text, "report-test.yaml")


async def test_reports_travel_from_proxy_pages_through_agents_into_the_snapshot(
    proxies: dict[str, ProxyPage],
) -> None:
    east, west = proxies["east"], proxies["west"]
    east.body = page(120.0, 500.0, {"10.99.0.0/24": (40.0, 0.5)})
    west.body = page(30.0, 200.0, {"10.99.0.0/24": (120.0, 0.5), "10.98.0.0/24": (9.0, 0.2)})
    agents = [Agent(stack_config(proxies, None), region, heartbeat=0.1) for region in ("r1", "r2")]
    ports = {a.region: await a.start() for a in agents}
    holder = HealthHolder()
    monitor = HealthMonitor(stack_config(proxies, ports), holder, tick=0.05, backoff_max=0.2)
    await monitor.start()
    try:
        await wait_for(
            lambda: (
                set(holder.current.latency) == {"10.99.0.0/24", "10.98.0.0/24"}
                and holder.current.targets["east"].load == 120.0
                # both regions voted on both (a vote arriving later makes a snapshot)
                and all(len(t.regions) == 2 for t in holder.current.targets.values())
            )
        )
        snap = holder.current
        assert (snap.targets["east"].load, snap.targets["east"].capacity) == (120.0, 500.0)
        assert (snap.targets["west"].load, snap.targets["west"].capacity) == (30.0, 200.0)
        measured = snap.latency["10.99.0.0/24"]
        assert measured["east"][0] == pytest.approx(0.040) and measured["west"][0] == 0.120
        # measured a moment ago, on this node's clock
        assert 0 <= monitor.clock.time() - measured["east"][1] < 3

        # A wobble of a few percent is not news: no new snapshot for it.
        epoch = holder.current.epoch
        east.body = page(123.0, 500.0, {"10.99.0.0/24": (41.0, 0.5)})
        west.body = page(31.0, 200.0, {"10.99.0.0/24": (121.0, 0.5), "10.98.0.0/24": (9.0, 0.2)})
        await asyncio.sleep(0.6)  # a dozen checks and merges
        assert holder.current.epoch == epoch
        # The delays swap and east fills up: both reach the snapshot.
        east.body = page(480.0, 500.0, {"10.99.0.0/24": (120.0, 0.1)})
        west.body = page(31.0, 200.0, {"10.99.0.0/24": (40.0, 0.1), "10.98.0.0/24": (9.0, 0.2)})
        # (each proxy page is checked on its own schedule: wait for both to land)
        await wait_for(
            lambda: (
                holder.current.latency["10.99.0.0/24"]["west"][0] == pytest.approx(0.040)
                and holder.current.latency["10.99.0.0/24"]["east"][0] == pytest.approx(0.120)
                and holder.current.targets["east"].load == 480.0
            )
        )
        # and the newest measurement wins over the old one another region may still hold
        await asyncio.sleep(0.3)
        assert holder.current.latency["10.99.0.0/24"]["east"][0] == pytest.approx(0.120)
    finally:
        await monitor.stop()
        for a in agents:
            await a.stop()


async def test_local_checks_carry_reports_too(proxies: dict[str, ProxyPage]) -> None:
    proxies["east"].body = page(7.0, None, {"10.99.0.0/24": (20.0, 1.0)})
    holder = HealthHolder()
    monitor = HealthMonitor(stack_config(proxies, None), holder, tick=0.05)
    await monitor.start()
    try:
        await wait_for(lambda: "10.99.0.0/24" in holder.current.latency)
        assert holder.current.targets["east"].load == 7.0
        assert holder.current.targets["east"].capacity is None
        assert set(holder.current.latency["10.99.0.0/24"]) == {"east"}
    finally:
        await monitor.stop()


def test_stale_measurements_from_the_proxy_are_not_merged() -> None:
    clock = FakeClock(1000.0)
    report = parse_proxy_body(page(1.0, None, {"10.99.0.0/24": (20.0, 45.0)}), clock.time())
    assert report is not None
    assert merge_latency([{"east": report}], clock.time(), max_age=30.0) == {}
    assert merge_latency([{"east": report}], clock.time(), max_age=60.0) != {}
