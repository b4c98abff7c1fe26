"""Check scheduling and the probe agent's snapshot and change stream, over real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from gslb.health.agent import Agent
from gslb.health.checks import CheckTarget
from gslb.health.follower import parse_event
from gslb.health.scheduler import CheckScheduler, jittered
from tests.test_health_support import Backend, fast_check, free_port, make_config, wait_for


async def test_slow_target_does_not_delay_fast_one() -> None:
    async with Backend(delay=0.6) as slow, Backend() as fast:
        targets = {
            "slow": CheckTarget("slow", fast_check(slow.port, timeout=1.0), "127.0.0.1"),
            "fast": CheckTarget("fast", fast_check(fast.port), "127.0.0.1"),
        }
        sched = CheckScheduler(targets)
        await sched.start()
        try:
            await asyncio.sleep(0.45)
            assert fast.hits >= 4  # ~every 50 ms while the slow probe is still waiting
            assert slow.hits == 1
            assert sched.machines["fast"].state == "up"
            assert sched.machines["slow"].state == "unknown"  # its first result is pending
        finally:
            await sched.stop()


async def test_concurrency_bound() -> None:
    async with Backend(delay=0.1) as b:
        targets = {
            f"t{i}": CheckTarget(f"t{i}", fast_check(b.port, interval=0.05), "127.0.0.1")
            for i in range(6)
        }
        sched = CheckScheduler(targets, max_concurrency=2)
        await sched.start()
        try:
            await wait_for(lambda: b.hits >= 8)
        finally:
            await sched.stop()
        assert b.max_inflight == 2


async def test_rise_fall_over_stop_and_restart() -> None:
    b = Backend()
    await b.start()
    check = fast_check(b.port, rise=2, fall=2)
    sched = CheckScheduler({"dc1": CheckTarget("dc1", check, "127.0.0.1")})
    seen: list[tuple[str, str]] = []
    sched.subscribe(lambda n, m, t: seen.append((t.old, t.new)) if t else None)
    await sched.start()
    try:
        await wait_for(lambda: sched.machines["dc1"].state == "up")
        await b.stop()
        await wait_for(lambda: sched.machines["dc1"].state == "down")
        assert sched.machines["dc1"].last_error == "connection refused"
        await b.start()
        await wait_for(lambda: sched.machines["dc1"].state == "up")
    finally:
        await sched.stop()
        await b.stop()
    assert seen == [("unknown", "up"), ("up", "down"), ("down", "up")]


async def test_reload_keeps_states_and_drops_removed_targets() -> None:
    async with Backend() as b:
        t1 = CheckTarget("a", fast_check(b.port), "127.0.0.1")
        sched = CheckScheduler({"a": t1})
        await sched.start()
        try:
            await wait_for(lambda: sched.machines["a"].state == "up")
            t2 = CheckTarget("b", fast_check(free_port()), "127.0.0.1")
            sched.update({"a": t1, "b": t2})
            assert sched.machines["a"].state == "up"
            await wait_for(lambda: sched.machines["b"].state == "down")
            sched.update({"b": t2})
            assert set(sched.machines) == {"b"}
        finally:
            await sched.stop()


def test_jitter_stays_within_bounds() -> None:
    import random

    rng = random.Random(1)
    values = [jittered(10.0, 0.2, rng) for _ in range(1000)]
    assert min(values) >= 8.0 and max(values) <= 12.0
    assert max(values) - min(values) > 3.0  # it actually spreads


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            out.append(parse_event(raw))
            if len(out) == n:
                return out
    return out


async def test_agent_snapshot_and_change_stream() -> None:
    b = Backend()
    await b.start()
    config = make_config({"dc1": fast_check(b.port), "nocheck": None})
    agent = Agent(config, "us-east", heartbeat=0.1)
    port = await agent.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            await wait_for(lambda: agent.scheduler.machines["dc1"].state == "up")
            async with s.get(f"{base}/v1/health") as r:
                snap = await r.json()
            assert snap["region"] == "us-east" and snap["seq"] == 1
            assert set(snap["targets"]) == {"dc1"}
            t = snap["targets"]["dc1"]
            assert t["state"] == "up" and t["last_error"] is None
            assert t["last_latency_ms"] is not None and t["checks"]["total"] >= 1
            assert isinstance(snap["generated_at"], float)

            async with s.get(f"{base}/v1/health/stream") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                ((ev, data),) = await read_events(r, 1)
                assert ev == "snapshot" and data["targets"]["dc1"]["state"] == "up"
                await b.stop()
                events = await asyncio.wait_for(read_events(r, 3), 5)
            names = [e for e, _ in events]
            assert "change" in names and "heartbeat" in names
            change = next(d for e, d in events if e == "change")
            assert change["seq"] == 2
            assert change["targets"]["dc1"]["state"] == "down"
            assert change["targets"]["dc1"]["last_error"] == "connection refused"
    finally:
        await agent.stop()
        await b.stop()


async def test_agent_stop_ends_open_streams() -> None:
    agent = Agent(make_config({}), "eu", heartbeat=5.0)
    port = await agent.start()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/v1/health/stream") as r:
            await read_events(r, 1)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await agent.stop()
            rest = await asyncio.wait_for(r.content.read(), 2)
            assert rest == b""
            assert loop.time() - t0 < 1.5


async def test_agent_reload_pushes_snapshot() -> None:
    async with Backend() as b:
        agent = Agent(make_config({"a": fast_check(b.port)}), "eu", heartbeat=5.0)
        port = await agent.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/v1/health/stream") as r:
                    await read_events(r, 1)
                    agent.reload(make_config({"a": fast_check(b.port), "b": fast_check(b.port)}))

                    async def next_snapshot() -> tuple[str, dict[str, Any]]:
                        # Target a may rise (a "change" event) just before the reload's snapshot.
                        while True:
                            ((event, payload),) = await read_events(r, 1)
                            if event == "snapshot":
                                return event, payload

                    ev, data = await asyncio.wait_for(next_snapshot(), 2)
            assert ev == "snapshot" and set(data["targets"]) == {"a", "b"}
            assert json.dumps(data)  # plain JSON
        finally:
            await agent.stop()


async def test_agent_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    b = Backend()
    await b.start()
    config = make_config({"dc1": fast_check(b.port)})
    agent = Agent(config, "eu-west", heartbeat=0.1)
    port = await agent.start("127.0.0.1", 0)
    try:
        await wait_for(lambda: agent.scheduler.machines["dc1"].state == "up")
        await b.stop()
        await wait_for(lambda: agent.scheduler.machines["dc1"].state == "down")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200
                text = await r.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        state = {
            (x.labels["target"], x.labels["region"], x.labels["state"]): x.value
            for x in families["gslb_health_state"].samples
        }
        assert state[("dc1", "eu-west", "down")] == 1.0
        assert state[("dc1", "eu-west", "up")] == 0.0
        transitions = {
            x.labels["state"]: x.value
            for x in families["gslb_health_transitions"].samples
            if x.name == "gslb_health_transitions_total"
        }
        assert transitions == {"up": 1.0, "down": 1.0}
        probes = [x for x in families["gslb_health_probe_seconds"].samples if "count" in x.name]
        assert probes and probes[0].value >= 2  # the successful checks that made it rise
    finally:
        await agent.stop()
        await b.stop()


async def test_agent_token_required_and_sent_by_the_monitor() -> None:
    import dataclasses

    from gslb.config.model import ProbeAgent
    from gslb.health.monitor import HealthMonitor
    from gslb.health.snapshot import HealthHolder

    b = Backend()
    await b.start()
    base_config = make_config({"dc1": fast_check(b.port)})
    config = dataclasses.replace(
        base_config, health=dataclasses.replace(base_config.health, token="probe-token-0123456")
    )
    agent = Agent(config, "eu-west", heartbeat=0.1)
    port = await agent.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    holder = HealthHolder()
    with_agent = dataclasses.replace(
        config,
        health=dataclasses.replace(config.health, agents=(ProbeAgent("eu-west", url),)),
    )
    monitor = HealthMonitor(with_agent, holder, tick=0.1)
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/v1/health", "/metrics", "/v1/health/stream"):
                async with s.get(url + path) as r:
                    assert r.status == 401, path
            headers = {"Authorization": "Bearer probe-token-0123456"}
            async with s.get(url + "/v1/health", headers=headers) as r:
                assert r.status == 200
        await monitor.start()  # the DNS side follows the agent with the token
        await wait_for(lambda: holder.current.state("dc1") == "up")
    finally:
        await monitor.stop()
        await agent.stop()
        await b.stop()
