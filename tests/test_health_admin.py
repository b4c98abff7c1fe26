"""Admin routes for overrides/status, and the `gslb health` / `gslb probe` CLI pieces."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gslb.health.admin import admin_routes
from gslb.health.cli import add_commands, cmd_override, cmd_status, format_status, parse_listen
from gslb.health.monitor import HealthMonitor
from gslb.health.snapshot import HealthHolder
from tests.test_health_support import Backend, fast_check, free_port, make_config, wait_for


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[TestClient, HealthMonitor, HealthHolder]]:
    async with Backend() as b:
        config = make_config(
            {"dc1": fast_check(b.port), "dc2": fast_check(free_port())},
            state_file=str(tmp_path / "health.json"),
        )
        holder = HealthHolder()
        mon = HealthMonitor(config, holder, tick=0.05)
        await mon.start()
        app = web.Application()
        app.add_routes(admin_routes(mon))
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            await wait_for(
                lambda: (
                    holder.current.state("dc1") == "up" and holder.current.state("dc2") == "down"
                )
            )
            yield client, mon, holder
        finally:
            await client.close()
            await mon.stop()


async def test_get_status(setup: tuple[TestClient, HealthMonitor, HealthHolder]) -> None:
    client, _, _ = setup
    r = await client.get("/v1/health")
    assert r.status == 200
    body = await r.json()
    assert body["mode"] == "local"
    assert body["targets"]["dc1"]["state"] == "up"
    assert body["targets"]["dc2"]["regions"]["local"]["last_error"] == "connection refused"


async def test_post_override_drain_and_clear(
    setup: tuple[TestClient, HealthMonitor, HealthHolder],
) -> None:
    client, _, holder = setup
    r = await client.post("/v1/overrides/dc1", json={"mode": "down", "reason": "patching"})
    assert r.status == 200
    body = await r.json()
    assert body["health"]["state"] == "down" and body["health"]["override"]["reason"] == "patching"
    assert holder.current.state("dc1") == "down"
    r = await client.post("/v1/overrides/dc2", json={"mode": "up", "reason": "false alarm"})
    assert r.status == 200 and holder.current.state("dc2") == "up"
    r = await client.post("/v1/overrides/dc1", json={"mode": "none"})
    assert r.status == 200 and holder.current.state("dc1") == "up"


@pytest.mark.parametrize(
    ("target", "body", "status", "message"),
    [
        ("dc1", {"mode": "sideways", "reason": "x"}, 400, "mode must be"),
        ("dc1", {"mode": "down"}, 400, "reason is required"),
        ("dc1", {"mode": "down", "reason": 5}, 400, "reason must be a string"),
        ("dc1", ["down"], 400, "JSON object"),
        ("nope", {"mode": "down", "reason": "x"}, 404, "unknown target"),
    ],
)
async def test_post_override_errors(
    setup: tuple[TestClient, HealthMonitor, HealthHolder],
    target: str,
    body: object,
    status: int,
    message: str,
) -> None:
    client, _, holder = setup
    r = await client.post(f"/v1/overrides/{target}", json=body)
    assert r.status == status
    assert message in (await r.json())["error"]
    assert holder.current.state("dc1") == "up"


async def test_post_override_not_json(
    setup: tuple[TestClient, HealthMonitor, HealthHolder],
) -> None:
    client, _, _ = setup
    r = await client.post("/v1/overrides/dc1", data=b"drain it")
    assert r.status == 400


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gslb")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_parser_shapes() -> None:
    a = parse(["probe", "--config", "c.yaml", "--region", "us", "--listen", "127.0.0.1:9"])
    assert a.func.__name__ == "cmd_probe" and a.region == "us"
    a = parse(["health", "override", "dc1", "--down", "--reason", "r"])
    assert a.mode == "down" and a.admin == "http://127.0.0.1:8053"
    assert parse(["health", "override", "dc1", "--clear"]).mode == "none"
    with pytest.raises(SystemExit):
        parse(["health", "override", "dc1", "--down", "--up"])
    with pytest.raises(SystemExit):
        parse(["health", "override", "dc1"])


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8101") == ("127.0.0.1", 8101)
    assert parse_listen("[::1]:8101") == ("::1", 8101)
    for bad in ("8101", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def test_cli_override_and_status_against_admin(
    setup: tuple[TestClient, HealthMonitor, HealthHolder],
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, _, holder = setup
    admin = str(client.make_url("")).rstrip("/")
    args = parse(["health", "override", "dc1", "--down", "--reason", "rollout", "--admin", admin])
    assert await asyncio.to_thread(args.func, args) == 0
    assert holder.current.state("dc1") == "down"
    assert "dc1: down" in capsys.readouterr().out

    args = parse(["health", "status", "--admin", admin])
    assert await asyncio.to_thread(cmd_status, args) == 0
    out = capsys.readouterr().out
    assert "override down: rollout" in out and "dc2" in out and "connection refused" in out

    args = parse(["health", "override", "ghost", "--down", "--reason", "x", "--admin", admin])
    assert await asyncio.to_thread(cmd_override, args) == 1
    assert "unknown target" in capsys.readouterr().err

    args = parse(["health", "override", "dc1", "--up", "--admin", admin])
    assert await asyncio.to_thread(cmd_override, args) == 2  # no reason
    assert holder.current.state("dc1") == "down"


def test_cli_admin_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    admin = f"http://127.0.0.1:{free_port()}"
    assert cmd_status(parse(["health", "status", "--admin", admin])) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_format_status_handles_stale_and_empty() -> None:
    text = format_status(
        {
            "mode": "agents",
            "quorum": "majority",
            "stale_after": 10,
            "epoch": 3,
            "regions": {"us": {"fresh": False, "age": None, "last_error": "refused"}},
            "targets": {"dc1": {"state": "up", "reason": "held", "regions": {}}},
        }
    )
    assert "STALE" in text and "never" in text and "dc1" in text
