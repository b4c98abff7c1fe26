"""One control plane per node: with --workers 2 the supervisor owns overrides and reload, and
every worker answers from what it publishes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .stackhelpers import ADDRESS, start_node, wait_until, write_node_files


def test_drain_and_reload_reach_every_worker_and_a_killed_worker_catches_up(
    tmp_path: Path,
) -> None:
    config, zones = write_node_files(tmp_path)
    node = start_node(
        tmp_path,
        "--config",
        str(config),
        "--zones",
        str(zones),
        "--workers",
        "2",
        "--state-file",
        str(tmp_path / "state.json"),
    )
    try:
        workers = wait_until(
            lambda: (
                len([w for w in node.status()["node"]["workers"] if w["ready"]]) == 2
                and node.status()["node"]["workers"]
            ),
            what="two workers",
        )
        assert len({w["pid"] for w in workers}) == 2
        assert ADDRESS["dc1"] in node.seen(40)

        # A drain that returned 200 is in force on every worker: no answer names dc1.
        status, body = node.override("dc1", "down", "maintenance")
        assert status == 200, body
        for _ in range(3):
            assert ADDRESS["dc1"] not in node.seen(40)

        # A reload through the API reaches every worker before it returns.
        assert node.ask("v.example.test") == [ADDRESS["dc3"]]
        write_node_files(tmp_path, serial=2, first="dc2")
        from .stackhelpers import http

        status, body = http(f"{node.admin}/v1/reload", {})
        assert status == 200, body
        answers = {tuple(node.ask("v.example.test")) for _ in range(40)}
        assert answers == {(ADDRESS["dc2"],)}

        # A killed worker is started again with the current generation and health.
        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: (
                victim not in {w["pid"] for w in node.status()["node"]["workers"]}
                and all(w["ready"] for w in node.status()["node"]["workers"])
            ),
            what="the worker to be restarted",
        )
        digest = node.status()["node"]["generation"]["digest"]
        assert {w["generation"] for w in node.status()["node"]["workers"]} == {digest}
        for _ in range(3):
            seen = node.seen(40)
            assert ADDRESS["dc1"] not in seen and seen
            assert {tuple(node.ask("v.example.test")) for _ in range(20)} == {(ADDRESS["dc2"],)}

        # /metrics sums what the workers report, with a label per worker.
        from .stackhelpers import wait_until as wait

        def counted() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"{node.admin}/metrics", timeout=5) as r:
                text = r.read().decode()
            return 'worker="0"' in text and 'worker="1"' in text

        wait(counted, what="per-worker counters in /metrics")
    finally:
        assert node.stop() == 0
