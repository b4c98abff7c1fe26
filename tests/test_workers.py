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

        # /metrics has what each worker reports, with a label per worker; both answered GSLB
        # queries, so the checks above covered both.
        def per_worker() -> dict[str, float]:
            import urllib.request

            from prometheus_client.parser import text_string_to_metric_families

            with urllib.request.urlopen(f"{node.admin}/metrics", timeout=5) as r:
                text = r.read().decode()
            totals: dict[str, float] = {}
            for family in text_string_to_metric_families(text):
                if family.name != "gslb_dns_queries":
                    continue
                for sample in family.samples:
                    if sample.labels.get("service") and sample.name.endswith("_total"):
                        worker = sample.labels["worker"]
                        totals[worker] = totals.get(worker, 0) + sample.value
            return totals

        # (A SIGKILLed worker takes up to a second of unreported counts with it.)
        wait_until(
            lambda: (t := per_worker()) and len(t) == 2 and all(t.values()),
            what="both workers' counters",
        )
    finally:
        assert node.stop() == 0
