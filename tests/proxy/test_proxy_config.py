"""Full-mode configuration: a good file, every error with file:line:column, and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gslb.errors import ConfigError
from gslb.proxy.cli import build_settings, main
from gslb.proxy.config import load_settings

from .test_proxy_forward import free_port

GOOD = """\
datacenters: {}          # other parts of gslb own other keys
proxy:
  status_path: /health
  access_log: json
  defaults:
    connect_timeout: 500ms
    retries: 1
  limits:
    rate: 100
    max_body_bytes: 10MiB
  regions:
    us-east:
      listeners:
        - {name: web, listen: "127.0.0.1:0"}
        - {name: db, listen: "127.0.0.1:0", mode: tcp, pool: db}
      routes:
        - {host: api.example.test, path_prefix: /v1/, pool: api, cache: true, compress: true}
        - {pool: site, waf: true}
      pools:
        api:
          balance: least_time
          members:
            - {address: "127.0.0.1:9001", weight: 3}
            - "127.0.0.1:9002"
          check: {path: /healthz, interval: 2s, timeout: 500ms, expect_status: [200, 204]}
          outlier: {consecutive_failures: 3, base_ejection: 10s}
          slow_start: 30s
        site:
          balance: hash
          hash_key: cookie:session
          persistence: cookie
          members: ["127.0.0.1:9003"]
        db:
          members: ["127.0.0.1:5432"]
          check: {type: tcp}
      limits:
        rate: 5
    eu-west:
      listeners: [{listen: "127.0.0.1:0"}]
      routes: [{pool: web}]
      pools:
        web: {members: ["127.0.0.1:9101"]}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gslb.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_good_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD), "us-east")
    assert [lst.mode for lst in s.listeners] == ["http", "tcp"]
    api = s.pools["api"]
    assert api.balance == "least_time"
    assert [(m.name, m.weight) for m in api.members] == [
        ("127.0.0.1:9001", 3.0),
        ("127.0.0.1:9002", 1.0),
    ]
    assert (
        api.check is not None and api.check.timeout == 0.5 and api.check.expect_status == (200, 204)
    )
    assert api.connect_timeout == 0.5 and api.retries == 1  # from defaults
    assert api.outlier.consecutive_failures == 3 and api.slow_start == 30
    assert s.pools["site"].hash_key == "cookie:session"
    assert s.pools["db"].check is not None and s.pools["db"].check.path is None
    assert s.routes[0].hosts == ("api.example.test",) and s.routes[0].cache
    assert s.limits.rate == 5 and s.limits.max_body_bytes == 10 * 1024 * 1024
    assert s.access_log == "json"
    eu = load_settings(write(tmp_path, GOOD), "eu-west")
    assert list(eu.pools) == ["web"] and eu.limits.rate == 100


BAD = """\
proxy:
  colour: blue
  defaults:
    balance: fastest
  regions:
    r1:
      listeners:
        - {listen: "127.0.0.1:http"}
        - {listen: "127.0.0.1:0", mode: https}
        - {listen: "127.0.0.1:0", mode: tcp, pool: nope}
      routes:
        - {pool: missing}
        - {path_prefix: api, pool: p}
      pools:
        p:
          members:
            - {address: "127.0.0.1:9001", weight: -1}
            - "127.0.0.1"
          check: {interval: 1, timeout: 2}
          min_healthy: 5
        unused:
          members: ["127.0.0.1:1"]
"""


def test_bad_file_reports_every_reason_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(ConfigError) as info:
        load_settings(path, "r1")
    text = str(info.value)
    expected = [
        f"{path}:2:3: proxy.colour: unknown key",
        f"{path}:4:5: proxy.defaults.balance: must be one of",
        f"{path}:8:12: proxy.regions.r1.listeners[0].listen: must be HOST:PORT (IPv6 in brackets: "
        "[::1]:53), not '127.0.0.1:http'",
        f"{path}:9:35: proxy.regions.r1.listeners[1].mode: https needs at least one certificate",
        f"{path}:10:46: proxy.regions.r1.listeners[2].pool: unknown pool 'nope'",
        f"{path}:12:12: proxy.regions.r1.routes[0].pool: unknown pool 'missing'",
        f"{path}:13:12: proxy.regions.r1.routes[1].path_prefix: must be a path",
        f"{path}:17:43: proxy.regions.r1.pools.p.members[0].weight: must be at least 0.001, not -1",
        f"{path}:18:15: proxy.regions.r1.pools.p.members[1].address: must be HOST:PORT",
        f"{path}:19:32: proxy.regions.r1.pools.p.check.timeout: must be shorter than the interval",
        f"{path}:20:11: proxy.regions.r1.pools.p.min_healthy: is 5 but the pool has only 1",
        f"{path}:21:9: proxy.regions.r1.pools.unused: pool is not used by any route",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in:\n{text}"
    assert len(info.value.reasons) == len(expected)


def test_missing_region_and_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no region 'mars' \\(known: eu-west, us-east\\)"):
        load_settings(write(tmp_path, GOOD), "mars")
    with pytest.raises(ConfigError, match="no 'proxy' section"):
        load_settings(write(tmp_path, "datacenters: {}\n"), "r")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_settings(write(tmp_path, "proxy: [\n"), "r")


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--listen", "127.0.0.1:0"]) == 2
    assert "needs --listen and at least one --upstream" in capsys.readouterr().err
    assert main(["proxy", "--config", write(tmp_path, BAD), "--region", "r1"]) == 2
    assert "unknown pool 'missing'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["proxy", "--listen", "x:1", "--upstream", "y:2", "--balance", "fastest"])


def test_cli_quick_settings() -> None:
    import argparse

    from gslb.proxy.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(
        [
            "proxy",
            "--listen",
            "127.0.0.1:8000",
            "--upstream",
            "127.0.0.1:9001=2",
            "--upstream",
            "127.0.0.1:9002",
            "--balance",
            "hash",
            "--hash-key",
            "uri",
            "--health-path",
            "/hc",
            "--check-interval",
            "0.5",
        ]
    )
    s = build_settings(args)
    pool = s.pools["default"]
    assert pool.balance == "hash" and pool.hash_key == "uri"
    assert [m.weight for m in pool.members] == [2.0, 1.0]
    assert pool.check is not None and pool.check.path == "/hc" and pool.check.interval == 0.5
    assert args.func.__name__ == "run"


async def test_cli_process_serves_and_stops_on_sigterm(backends) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gslb.proxy.cli",
        "proxy",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        b.address,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"listening on http://127.0.0.1:{port}" in line.decode()
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"http://127.0.0.1:{port}/via-cli") as resp:
                assert resp.status == 200
                assert (await resp.json())["backend"] == "b0"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_cli_workers_share_the_port(backends) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gslb.proxy.cli", "proxy", "--listen", f"127.0.0.1:{port}",
        "--upstream", b.address, "--workers", "2",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(2)]
        if not all(b"listening" in line for line in lines):
            assert proc.stderr is not None
            proc.kill()
            raise AssertionError((lines, await proc.stderr.read()))
        pids = {line.split(b"[")[1].split(b"]")[0] for line in lines}
        assert len(pids) == 2  # two processes, one port (SO_REUSEPORT)
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/w") as resp:
                    assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_full_mode_file_serves_routes(backends, proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import aiohttp

    api, site = await backends(2)
    text = f"""\
    proxy:
      limits: {{max_body_bytes: 100}}
      regions:
        r1:
          listeners: [{{listen: "127.0.0.1:0"}}]
          routes:
            - {{host: api.example.test, pool: api}}
            - {{path_prefix: /cache, pool: site, cache: true}}
            - {{pool: site}}
          pools:
            api: {{members: ["{api.address}"], balance: least_conn}}
            site: {{members: [{{address: "{site.address}", weight: 2}}]}}
    """
    settings = load_settings(write(tmp_path, text), "r1")
    p = await proxy(settings)
    base = f"http://127.0.0.1:{p.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1", headers={"Host": "api.example.test"}) as resp:
            assert (await resp.json())["backend"] == api.name
        async with session.get(f"{base}/v1", headers={"Host": "www.example.test"}) as resp:
            assert (await resp.json())["backend"] == site.name
        async with session.get(f"{base}/cache?cache-control=max-age%3D9") as resp:
            assert resp.headers["X-Cache"] == "MISS"
        async with session.get(f"{base}/cache?cache-control=max-age%3D9") as resp:
            assert resp.headers["X-Cache"] == "HIT"
        async with session.post(f"{base}/upload", data=b"x" * 101) as resp:
            assert resp.status == 413
        async with session.get(f"{base}/health") as resp:
            assert resp.status == 200
            assert [p["pool"] for p in (await resp.json())["pools"]] == ["api", "site"]


def test_docs_describe_every_key() -> None:
    from gslb.proxy import config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "proxy.md").read_text()
    groups = (
        config.TOP_KEYS, config.REGION_KEYS, config.LISTENER_KEYS, config.ROUTE_KEYS,
        config.POOL_KEYS, config.MEMBER_KEYS, config.CHECK_KEYS, config.OUTLIER_KEYS,
        config.LIMIT_KEYS, config.CACHE_KEYS, config.CERT_KEYS, config.RTT_KEYS,
    )  # fmt: skip
    missing = sorted({k for group in groups for k in group if f"`{k}`" not in doc})
    assert not missing, f"docs/proxy.md does not describe: {missing}"
