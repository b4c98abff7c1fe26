"""Passive ejection, slow start, retries, retry budget and cookie persistence."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import aiohttp

from gslb.clock import FakeClock
from gslb.proxy.outlier import (
    OutlierSettings,
    OutlierState,
    RetryBudget,
    record_outcome,
    slow_start_factor,
)
from gslb.proxy.pool import Pool
from gslb.proxy.quick import quick_settings
from gslb.proxy.settings import MemberSpec, PoolSpec, ProxySettings

from .test_proxy_forward import free_port


def with_pool(settings: ProxySettings, **changes: object) -> ProxySettings:
    pool = dataclasses.replace(settings.pools["default"], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(settings, pools={"default": pool})


def test_outlier_ejection_grows_and_is_capped() -> None:
    s = OutlierSettings(consecutive_failures=3, base_ejection=10, max_ejection=25)
    st = OutlierState()
    now = 0.0
    assert not record_outcome(st, False, now, s, 0, 4)
    assert not record_outcome(st, False, now, s, 0, 4)
    assert record_outcome(st, False, now, s, 0, 4)
    assert st.is_ejected(9.9) and not st.is_ejected(10.0)
    now = 10.0
    for _ in range(2):
        record_outcome(st, False, now, s, 0, 4)
    assert record_outcome(st, False, now, s, 0, 4)
    assert st.ejected_until == 30.0  # second ejection: 2 x 10 s
    now = 30.0
    for _ in range(3):
        record_outcome(st, False, now, s, 0, 4)
    assert st.ejected_until == 55.0  # third: 30 s capped to 25 s


def test_outlier_success_resets_streak_and_history() -> None:
    s = OutlierSettings(consecutive_failures=2, base_ejection=10, max_ejection=20)
    st = OutlierState()
    record_outcome(st, False, 0, s, 0, 2)
    record_outcome(st, True, 0, s, 0, 2)
    assert not record_outcome(st, False, 0, s, 0, 2)  # streak was reset
    assert record_outcome(st, False, 0, s, 0, 2)
    record_outcome(st, True, 10 + 20, s, 0, 2)  # behaved for max_ejection after returning
    assert st.ejections == 0


def test_outlier_cap_on_ejected_share() -> None:
    s = OutlierSettings(consecutive_failures=1, max_ejected_percent=50)
    st = OutlierState()
    assert not record_outcome(st, False, 0, s, ejected_now=1, pool_size=2)
    assert record_outcome(st, False, 0, s, ejected_now=1, pool_size=4)


def test_slow_start_factor_ramps() -> None:
    assert slow_start_factor(100, None, 10) == 1.0
    assert slow_start_factor(100, 100, 0) == 1.0
    assert slow_start_factor(100, 100, 10) == 0.1
    assert slow_start_factor(105, 100, 10) == 0.5
    assert slow_start_factor(110, 100, 10) == 1.0


def test_retry_budget() -> None:
    b = RetryBudget(percent=20, min_concurrency=2)
    b.active_requests = 100
    b.active_retries = 19
    assert b.allows()
    b.active_retries = 20
    assert not b.allows()
    b.active_requests = 1
    b.active_retries = 1
    assert b.allows()
    b.active_retries = 2
    assert not b.allows()


def test_pool_slow_start_weight_after_recovery() -> None:
    clock = FakeClock()
    spec = PoolSpec(
        "p",
        (MemberSpec("127.0.0.1", 1), MemberSpec("127.0.0.1", 2)),
        balance="weighted_round_robin",
        slow_start=10.0,
    )
    pool = Pool(spec, clock, random.Random(1))
    a, b = pool.members
    from gslb.health.state import CheckResult

    for _ in range(3):
        pool.record_check(b, CheckResult(False, "refused"))
    assert [m.name for m in pool.eligible()] == [a.name]
    for _ in range(2):
        pool.record_check(b, CheckResult(True))
    eligible = pool.eligible()
    assert len(eligible) == 2 and b.weight == 0.1
    counts = Counter(pool.choose()[0].name for _ in range(110))
    assert counts[b.name] == 10
    clock.advance(5)
    pool.eligible()
    assert b.weight == 0.5
    clock.advance(5)
    pool.eligible()
    assert b.weight == 1.0


async def test_passive_ejection_and_return(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(3)
    clock = FakeClock()
    s = with_pool(
        quick_settings("127.0.0.1:0", [b.address for b in bs]),
        retries=0,
        outlier=OutlierSettings(consecutive_failures=3, base_ejection=30, max_ejection=300),
        slow_start=20.0,
    )
    p = await proxy(s, clock=clock)
    bs[1].fail_status = 500
    url = f"http://127.0.0.1:{p.port}/"
    statuses = Counter()
    for _ in range(12):
        async with client.get(url) as resp:
            statuses[resp.status] += 1
    assert statuses[500] == 3  # third consecutive 5xx ejected the member
    bad = p.pools["default"].by_name[bs[1].address]
    assert bad.outlier.is_ejected(clock.monotonic())
    bs[1].fail_status = None
    before = bs[1].hits["GET /"]
    for _ in range(10):
        async with client.get(url) as resp:
            assert resp.status == 200
    assert bs[1].hits["GET /"] == before
    async with client.get(f"http://127.0.0.1:{p.port}/health") as resp:
        detail = await resp.json()
        states = {m["member"]: m["ejected"] for m in detail["pools"][0]["members"]}
        assert states[bs[1].address] is True
    clock.advance(30)
    for _ in range(30):
        async with client.get(url) as resp:
            assert resp.status == 200
    got = bs[1].hits["GET /"] - before
    assert 0 < got < 10  # back, but on a slow start ramp (round robin would give 10)


async def test_get_retried_on_another_member(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    bs[0].fail_status = 503
    p = await proxy(quick_settings("127.0.0.1:0", [b.address for b in bs]))
    for _ in range(4):
        async with client.get(f"http://127.0.0.1:{p.port}/r") as resp:
            assert resp.status == 200
            assert (await resp.json())["backend"] == "b1"
    assert bs[0].hits["GET /r"] == 2


async def test_post_never_sent_twice(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    for b in bs:
        b.fail_status = 503
    p = await proxy(quick_settings("127.0.0.1:0", [b.address for b in bs]))
    async with client.post(f"http://127.0.0.1:{p.port}/order", data=b"buy 1") as resp:
        assert resp.status == 503
    assert bs[0].hits["POST /order"] + bs[1].hits["POST /order"] == 1


async def test_post_retried_only_when_never_sent(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    dead = f"127.0.0.1:{free_port()}"
    p = await proxy(quick_settings("127.0.0.1:0", [dead, b.address]))
    for _ in range(2):
        async with client.post(f"http://127.0.0.1:{p.port}/order", data=b"buy 1") as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "buy 1"
    assert b.hits["POST /order"] == 2


async def test_post_upstream_timeout_not_retried(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    for b in bs:
        b.delay = 0.5
    p = await proxy(
        with_pool(quick_settings("127.0.0.1:0", [b.address for b in bs]), response_timeout=0.1)
    )
    async with client.post(f"http://127.0.0.1:{p.port}/pay", data=b"x") as resp:
        assert resp.status == 504
    async with client.get(f"http://127.0.0.1:{p.port}/read") as resp:
        assert resp.status == 504
    assert bs[0].hits["POST /pay"] + bs[1].hits["POST /pay"] == 1
    assert bs[0].hits["GET /read"] + bs[1].hits["GET /read"] == 2  # idempotent: retried


async def test_non_idempotent_retry_when_configured(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    bs[0].fail_status = 502
    s = with_pool(quick_settings("127.0.0.1:0", [b.address for b in bs]), retry_non_idempotent=True)
    p = await proxy(s)
    async with client.post(f"http://127.0.0.1:{p.port}/o", data=b"1") as resp:
        assert resp.status == 200


async def test_retry_budget_exhausted(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(2)
    bs[0].fail_status = 503
    p = await proxy(quick_settings("127.0.0.1:0", [b.address for b in bs]))
    budget = p.pools["default"].budget
    budget.min_concurrency = 0
    budget.percent = 0
    async with client.get(f"http://127.0.0.1:{p.port}/r") as resp:
        assert resp.status == 503


async def test_cookie_persistence_follows_member_and_moves_on_failure(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    bs = await backends(3)
    s = with_pool(quick_settings("127.0.0.1:0", [b.address for b in bs]), persistence="cookie")
    p = await proxy(s)
    url = f"http://127.0.0.1:{p.port}/"
    jar = aiohttp.CookieJar(unsafe=True)  # IP-address host: cookies only in unsafe mode
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(url) as resp:
            first = (await resp.json())["backend"]
            cookie = resp.cookies["GSLB_SRV"].value
            assert "127.0.0.1" not in cookie  # opaque
        for _ in range(5):
            async with session.get(url) as resp:
                assert (await resp.json())["backend"] == first
                assert "Set-Cookie" not in resp.headers
        # The member fails: the client moves and gets a new cookie naming the new member.
        victim = next(b for b in bs if b.name == first)
        await victim.stop()
        async with session.get(url) as resp:
            moved = (await resp.json())["backend"]
            assert moved != first
            assert resp.cookies["GSLB_SRV"].value != cookie
        for _ in range(3):
            async with session.get(url) as resp:
                assert (await resp.json())["backend"] == moved
    # A tampered cookie is ignored and replaced.
    async with aiohttp.ClientSession(cookies={"GSLB_SRV": cookie[:-1] + "0"}) as session:
        async with session.get(url) as resp:
            assert resp.status == 200
            assert "GSLB_SRV" in resp.cookies


async def test_concurrent_load_while_a_member_dies(backends, proxy) -> None:  # type: ignore[no-untyped-def]
    """Many concurrent keep-alive clients, a member stops mid-way: GETs are retried on the
    survivor, nothing hangs, and every counter returns to zero (checked by the fixture).
    The budget is opened fully here: with the default 20% a burst of simultaneous failures
    is partly answered 502 instead of doubling the load (test_retry_budget_exhausted)."""
    import asyncio

    bs = await backends(2)
    s = with_pool(
        quick_settings("127.0.0.1:0", [b.address for b in bs]),
        retries=1,
        retry_budget_percent=100,
    )
    p = await proxy(s)
    url = f"http://127.0.0.1:{p.port}/load"
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            for _ in range(40):
                async with session.get(url) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        tasks = [asyncio.create_task(worker()) for _ in range(25)]
        await asyncio.sleep(0.05)
        await bs[0].stop()
        await asyncio.gather(*tasks)
    assert sum(statuses.values()) == 1000
    assert statuses[200] == 1000, statuses
    assert bs[1].hits["GET /load"] > 500
