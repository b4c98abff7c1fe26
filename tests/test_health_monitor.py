"""HealthMonitor end to end: real backends, real probe agents, quorum, staleness, overrides,
persistence and warm start, all on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gslb.config.model import Check, ProbeAgent
from gslb.health.agent import Agent
from gslb.health.aggregate import NO_FRESH
from gslb.health.monitor import HealthMonitor
from gslb.health.snapshot import HealthHolder, HealthSnapshot
from gslb.health.statefile import StateFileError
from tests.test_health_support import Backend, fast_check, free_port, make_config, wait_for

STALE = 0.5


class Region:
    """A probe agent whose view of dc1 the test chooses (a live or a dead port)."""

    def __init__(self, name: str, dc1: Check, dc2: Check) -> None:
        self.name = name
        self.config = make_config({"dc1": dc1, "dc2": dc2})
        self.agent = Agent(self.config, name, heartbeat=0.1)
        self.port = 0

    async def start(self) -> None:
        self.port = await self.agent.start("127.0.0.1", self.port)

    async def stop(self) -> None:
        await self.agent.stop()
        # a fresh Agent for a later restart on the same port
        self.agent = Agent(self.config, self.name, heartbeat=0.1)

    @property
    def probe_agent(self) -> ProbeAgent:
        return ProbeAgent(self.name, f"http://127.0.0.1:{self.port}")


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with Backend() as b:
        yield b


def monitor_for(regions: list[Region], quorum: str | float = "majority", **kw) -> HealthMonitor:  # type: ignore[no-untyped-def]
    config = make_config(
        {"dc1": Check(), "dc2": Check()},  # the DNS node's own check settings are unused here
        agents=tuple(r.probe_agent for r in regions),
        quorum=quorum,
        stale_after=STALE,
        state_file=kw.pop("state_file", None),
    )
    return HealthMonitor(config, kw.pop("holder", HealthHolder()), tick=0.05, backoff_max=0.2, **kw)


async def test_unknown_at_start_and_no_agent_reachable() -> None:
    dead = ProbeAgent("us", f"http://127.0.0.1:{free_port()}")
    config = make_config({"dc1": Check()}, agents=(dead,), stale_after=STALE)
    holder = HealthHolder()
    mon = HealthMonitor(config, holder, tick=0.05, backoff_max=0.1)
    await mon.start()
    try:
        snap = holder.current
        assert snap.epoch == 1
        assert snap.state("dc1") == "unknown"
        assert snap.targets["dc1"].reason == NO_FRESH
        await wait_for(lambda: bool(mon.status()["regions"]["us"]["last_error"]))
        st = mon.status()
        assert st["regions"]["us"]["connected"] is False
        assert st["regions"]["us"]["fresh"] is False
        assert "refused" in st["regions"]["us"]["last_error"]
    finally:
        await mon.stop()


async def test_quorum_two_regions_see_down_one_sees_up(backend: Backend) -> None:
    dead = free_port()
    regions = [
        Region("us-east", fast_check(dead), fast_check(backend.port)),
        Region("eu-west", fast_check(dead), fast_check(backend.port)),
        Region("ap-ne", fast_check(backend.port), fast_check(backend.port)),
    ]
    for r in regions:
        await r.start()
    holder = HealthHolder()
    published: list[HealthSnapshot] = []
    holder.subscribe(published.append)
    mon = monitor_for(regions, holder=holder)
    await mon.start()
    try:
        # Quorum may say down before ap-ne's first check lands: wait for every region's view.
        await wait_for(
            lambda: holder.current.state("dc1") == "down"
            and holder.current.state("dc2") == "up"
            and holder.current.targets["dc1"].regions.get("ap-ne") == "up"
        )
        th = holder.current.targets["dc1"]
        assert dict(th.regions) == {"us-east": "down", "eu-west": "down", "ap-ne": "up"}
        assert "1/3" in th.reason
        # every publish is a new epoch, so DNS answers cached under older epochs are dropped
        epochs = [s.epoch for s in published]
        assert epochs == sorted(set(epochs)) and epochs[0] == 1
        st = mon.status()
        assert st["targets"]["dc1"]["regions"]["us-east"]["last_error"] == "connection refused"
        assert all(r["connected"] and r["fresh"] for r in st["regions"].values())

        # same reports, quorum "any": one up region is enough
        mon.reload(monitor_for(regions, quorum="any").config)
        assert holder.current.state("dc1") == "up"
    finally:
        await mon.stop()
        for r in regions:
            await r.stop()


async def test_stale_agents_stop_voting_then_all_gone_holds_last_state(backend: Backend) -> None:
    dead = free_port()
    down1 = Region("us-east", fast_check(dead), fast_check(backend.port))
    down2 = Region("eu-west", fast_check(dead), fast_check(backend.port))
    up = Region("ap-ne", fast_check(backend.port), fast_check(backend.port))
    regions = [down1, down2, up]
    for r in regions:
        await r.start()
    holder = HealthHolder()
    mon = monitor_for(regions, holder=holder)
    await mon.start()
    try:
        await wait_for(lambda: holder.current.state("dc1") == "down")
        # the two regions that see dc1 down go away; once stale, only ap-ne votes
        await down1.stop()
        await down2.stop()
        await wait_for(lambda: holder.current.state("dc1") == "up", timeout=3)
        st = mon.status()
        assert st["regions"]["us-east"]["fresh"] is False
        assert st["regions"]["ap-ne"]["fresh"] is True
        assert dict(holder.current.targets["dc1"].regions) == {"ap-ne": "up"}

        # all agents gone: the last state holds, flagged
        await up.stop()
        await wait_for(lambda: holder.current.targets["dc1"].reason == NO_FRESH, timeout=3)
        assert holder.current.state("dc1") == "up"
        assert holder.current.state("dc2") == "up"
        assert not any(r["fresh"] for r in mon.status()["regions"].values())

        # an agent comes back on its old port: the follower reconnects and it votes again
        await down1.start()
        await wait_for(lambda: holder.current.state("dc1") == "down", timeout=3)
        assert mon.status()["regions"]["us-east"]["connected"] is True
    finally:
        await mon.stop()
        for r in regions:
            await r.stop()


async def test_backend_stop_and_restart_propagates_through_agent() -> None:
    b = Backend()
    await b.start()
    region = Region("us-east", fast_check(b.port), fast_check(b.port))
    await region.start()
    holder = HealthHolder()
    mon = monitor_for([region], holder=holder)
    await mon.start()
    try:
        await wait_for(lambda: holder.current.state("dc1") == "up")
        await b.stop()
        await wait_for(lambda: holder.current.state("dc1") == "down")
        await b.start()
        await wait_for(lambda: holder.current.state("dc1") == "up")
    finally:
        await mon.stop()
        await region.stop()
        await b.stop()


def local_monitor(checks: dict[str, Check | None], state_file: Path, holder: HealthHolder):  # type: ignore[no-untyped-def]
    config = make_config(checks, state_file=str(state_file), stale_after=STALE)
    return HealthMonitor(config, holder, tick=0.05)


async def test_local_mode_overrides_and_persistence(backend: Backend, tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "health.json"
    checks = {"dc1": fast_check(backend.port), "dc2": fast_check(backend.port), "plain": None}
    holder = HealthHolder()
    mon = local_monitor(checks, state_file, holder)
    await mon.start()
    try:
        await wait_for(lambda: holder.current.state("dc1") == "up")
        assert holder.current.targets["dc1"].regions == {"local": "up"}
        assert holder.current.state("plain") == "up"  # no check configured
        epoch = holder.current.epoch
        mon.set_override("dc1", "down", "maintenance CHG-42")
        # published at once, not at the next tick
        assert holder.current.state("dc1") == "down"
        assert holder.current.epoch == epoch + 1
        assert "maintenance CHG-42" in holder.current.targets["dc1"].reason
        st = mon.status()["targets"]["dc1"]
        assert st["override"]["mode"] == "down" and st["checks_state"] == "up"
        assert mon.flush_state()  # written off the event loop
        saved = json.loads(state_file.read_text())
        assert saved["overrides"]["dc1"]["reason"] == "maintenance CHG-42"
        with pytest.raises(KeyError):
            mon.set_override("nope", "down", "x")
        with pytest.raises(ValueError):
            mon.set_override("dc1", "sideways", "x")  # type: ignore[arg-type]
    finally:
        await mon.stop()

    # restart: the drain survives, before and after start
    holder2 = HealthHolder()
    mon2 = local_monitor(checks, state_file, holder2)
    await mon2.start()
    try:
        assert holder2.current.state("dc1") == "down"
        assert mon2.status()["targets"]["dc1"]["override"]["reason"] == "maintenance CHG-42"
        await wait_for(lambda: mon2.status()["targets"]["dc1"]["regions"] != {})
        assert holder2.current.state("dc1") == "down"  # checks say up; the drain still wins
        mon2.set_override("dc1", "none", "done")
        assert holder2.current.state("dc1") == "up"
        assert mon2.flush_state()
        assert json.loads(state_file.read_text())["overrides"] == {}
    finally:
        await mon2.stop()


async def test_warm_start_begins_with_last_known_states(tmp_path: Path) -> None:
    state_file = tmp_path / "health.json"
    b = Backend()
    await b.start()
    dead = free_port()
    checks = {"dc1": fast_check(b.port, fall=3), "dc2": fast_check(dead)}
    holder = HealthHolder()
    mon = local_monitor(checks, state_file, holder)
    await mon.start()
    await wait_for(
        lambda: holder.current.state("dc1") == "up" and holder.current.state("dc2") == "down"
    )
    await mon.stop()
    await b.stop()  # dc1 dies while gslb dns is down

    # a node whose agents are not reachable yet starts from the saved states, marked warm
    agent = ProbeAgent("us", f"http://127.0.0.1:{free_port()}")
    config = make_config(
        {"dc1": Check(), "dc2": Check()}, agents=(agent,), state_file=str(state_file)
    )
    holder2 = HealthHolder()
    mon2 = HealthMonitor(config, holder2, tick=0.05, backoff_max=0.1)
    await mon2.start()
    try:
        assert holder2.current.state("dc1") == "up"
        assert holder2.current.state("dc2") == "down"
        assert "warm start" in holder2.current.targets["dc1"].reason
    finally:
        await mon2.stop()

    # agents that restarted too and have no verdict yet (unknown) do not erase the warm state
    undecided = fast_check(free_port(), rise=1000, fall=1000)
    region = Region("us", undecided, undecided)
    await region.start()
    config = make_config(
        {"dc1": Check(), "dc2": Check()},
        agents=(region.probe_agent,),
        state_file=str(state_file),
        stale_after=STALE,
    )
    holder4 = HealthHolder()
    mon4 = HealthMonitor(config, holder4, tick=0.05)
    await mon4.start()
    try:
        await wait_for(lambda: mon4.status()["regions"]["us"]["fresh"])
        await wait_for(lambda: region.agent.scheduler.machines["dc1"].checks > 0)
        assert holder4.current.state("dc1") == "up"
        assert holder4.current.state("dc2") == "down"
        assert "no verdict yet" in holder4.current.targets["dc1"].reason
        assert dict(holder4.current.targets["dc1"].regions) == {"us": "unknown"}
    finally:
        await mon4.stop()
        await region.stop()

    # in local mode the warm state seeds rise/fall: dc1 needs `fall` failures to go down
    holder3 = HealthHolder()
    mon3 = local_monitor(checks, state_file, holder3)
    await mon3.start()
    try:
        assert holder3.current.state("dc1") == "up"
        assert "warm start" in holder3.current.targets["dc1"].reason
        await wait_for(lambda: holder3.current.state("dc1") == "down")
        assert "connection refused" in str(mon3.status()["targets"]["dc1"]["regions"])
    finally:
        await mon3.stop()


async def test_corrupt_state_file_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "health.json"
    bad.write_text("{not json")
    with pytest.raises(StateFileError, match="health.json"):
        local_monitor({"dc1": Check()}, bad, HealthHolder())
    bad.write_text(json.dumps({"overrides": {"dc1": {"mode": "sideways"}}}))
    with pytest.raises(StateFileError, match="mode"):
        local_monitor({"dc1": Check()}, bad, HealthHolder())


async def test_reload_adds_targets_without_losing_states(backend: Backend, tmp_path: Path) -> None:
    holder = HealthHolder()
    mon = local_monitor({"dc1": fast_check(backend.port)}, tmp_path / "s.json", holder)
    await mon.start()
    try:
        await wait_for(lambda: holder.current.state("dc1") == "up")
        since = holder.current.targets["dc1"].since
        mon.reload(
            make_config(
                {"dc1": fast_check(backend.port), "dc2": fast_check(free_port())},
                stale_after=STALE,
            )
        )
        assert holder.current.state("dc1") == "up"
        assert holder.current.targets["dc1"].since == since
        await wait_for(lambda: holder.current.state("dc2") == "down")
    finally:
        await mon.stop()


async def test_reload_switches_between_local_checks_and_agents(backend: Backend) -> None:
    region = Region("eu-west", fast_check(backend.port), fast_check(backend.port))
    await region.start()
    local = make_config(
        {"dc1": fast_check(backend.port), "dc2": fast_check(backend.port)}, stale_after=STALE
    )
    holder = HealthHolder()
    mon = HealthMonitor(local, holder, tick=0.05)
    await mon.start()
    try:
        await wait_for(lambda: holder.current.state("dc1") == "up")
        mon.reload(monitor_for([region]).config)
        await wait_for(lambda: mon.status()["regions"].get("eu-west", {}).get("fresh", False))
        assert mon.status()["mode"] == "agents"
        assert set(holder.current.targets["dc1"].regions) == {"eu-west"}  # local stopped voting
        assert holder.current.state("dc1") == "up"
        mon.reload(local)
        await wait_for(lambda: set(holder.current.targets["dc1"].regions) == {"local"})
        assert holder.current.state("dc1") == "up" and mon.status()["mode"] == "local"
    finally:
        await mon.stop()
        await region.stop()


def test_state_writer_writes_off_the_callers_thread_newest_wins(tmp_path: Path) -> None:
    import threading

    from gslb.health import statefile
    from gslb.health.statefile import StateWriter

    path = tmp_path / "deep" / "state.json"
    writer = StateWriter(str(path))
    threads: list[str] = []
    real = statefile.write_atomic

    def spy(target: str, text: str) -> None:  # records the thread, then writes for real
        threads.append(threading.current_thread().name)
        real(target, text)

    statefile.write_atomic = spy  # type: ignore[assignment]
    try:
        for n in range(50):
            writer.submit(json.dumps({"n": n}))
        assert writer.flush()
    finally:
        statefile.write_atomic = real  # type: ignore[assignment]
    assert json.loads(path.read_text()) == {"n": 49}
    assert threads and set(threads) == {"gslb-state-writer"}
    assert len(threads) <= 50  # pending texts coalesce while a write is under way

    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = StateWriter(str(blocked / "state.json"))  # a file where a directory should be
    bad.submit("{}")
    assert bad.flush() and bad.errors == 1
