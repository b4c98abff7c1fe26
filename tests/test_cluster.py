"""Cluster mode against a real 3-member etcd cluster and several `gslb dns` nodes on loopback:
publish, drains from any node, leader loss, total etcd loss (static stability) and catch-up."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stackhelpers import (
    ADDRESS,
    GSLB,
    DnsProcess,
    EtcdCluster,
    http,
    start_node,
    wait_until,
    write_node_files,
)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd")
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


def gslb(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GSLB, *args], capture_output=True, text=True, timeout=timeout)


def publish(etcd: EtcdCluster, config: Path, zones: Path) -> subprocess.CompletedProcess[str]:
    return gslb("publish", "--config", str(config), "--zones", str(zones), "--etcd", etcd.endpoints)


def cluster_node(tmp_path: Path, etcd: EtcdCluster, name: str, *args: str) -> DnsProcess:
    home = tmp_path / name
    return start_node(
        home,
        "--etcd",
        etcd.endpoints,
        "--state-file",
        str(home / "state.json"),
        *args,
        name=name,
    )


def generation(node: DnsProcess) -> int:
    return int(node.status()["node"]["generation"]["number"])


def time_until(condition, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    wait_until(condition, timeout)
    return time.monotonic() - start


class Load:
    """DNS queries against nodes from a thread, until stopped: counts answers and failures."""

    def __init__(self, nodes: list[DnsProcess]) -> None:
        import threading

        self.nodes = nodes
        self.answered = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in self.nodes:
                try:
                    if node.ask("www.example.test"):
                        self.answered += 1
                except Exception as exc:  # a timeout is what we are looking for
                    self.failed.append(f"{node.admin}: {exc!r}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def divergence(nodes: list[DnsProcess], publish_it, want: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Publish in the background and query every node in turn: (how long some nodes answered
    the new generation while others still answered the old, how long after publish returned
    the last node switched)."""
    import threading

    done: list[float] = []
    thread = threading.Thread(
        target=lambda: (publish_it(), done.append(time.monotonic())), daemon=True
    )
    thread.start()
    first: dict[int, float] = {}
    deadline = time.monotonic() + 15
    while len(first) < len(nodes):
        assert time.monotonic() < deadline, "not every node switched"
        for index, node in enumerate(nodes):
            if index not in first and node.ask("v.example.test") == [want]:
                first[index] = time.monotonic()
    thread.join(15)
    assert done, "publish did not finish"
    return max(first.values()) - min(first.values()), max(0.0, max(first.values()) - done[0])


def test_publish_drain_and_leader_loss(tmp_path: Path, etcd: EtcdCluster) -> None:
    config, zones = write_node_files(tmp_path / "src")
    result = publish(etcd, config, zones)
    assert result.returncode == 0, result.stderr
    assert "published generation 1" in result.stdout
    nodes = [
        cluster_node(tmp_path, etcd, "a"),
        cluster_node(tmp_path, etcd, "b", "--workers", "2"),
        cluster_node(tmp_path, etcd, "c"),
    ]
    a, b, c = nodes
    try:
        assert [generation(n) for n in nodes] == [1, 1, 1]
        assert all(n.ask("v.example.test") == [ADDRESS["dc3"]] for n in nodes)

        # A drain on node A's admin API is in force on B and C within a second.
        status, body = a.override("dc1", "down", "maintenance CHG-1")
        assert status == 200, body
        assert ADDRESS["dc1"] not in a.seen(20)
        took = time_until(lambda: all(ADDRESS["dc1"] not in n.seen(20) for n in (b, c)), timeout=5)
        print(f"drain on node a in force on b and c after {took * 1000:.0f} ms")
        assert took < 1.0, f"drain reached the other nodes after {took:.2f}s"

        # An invalid publish is refused with file:line and changes nothing anywhere.
        config.write_text(config.read_text().replace("tiers: [[dc3]]", "tiers: [[mars]]"))
        bad = publish(etcd, config, zones)
        assert bad.returncode == 1
        assert f"{config.resolve()}:" in bad.stderr or f"{config}:" in bad.stderr
        assert "mars" in bad.stderr
        time.sleep(0.3)
        assert [generation(n) for n in nodes] == [1, 1, 1]
        assert all(n.ask("v.example.test") == [ADDRESS["dc3"]] for n in nodes)

        # A new generation: every node answers from it, and the nodes disagree only briefly.
        write_node_files(tmp_path / "src", serial=2, first="dc2")
        window, after = divergence(nodes, lambda: publish(etcd, config, zones), ADDRESS["dc2"])
        print(
            f"nodes answered from different generations for {window * 1000:.0f} ms; all on "
            f"the new one {after * 1000:.0f} ms after publish returned"
        )
        assert window < 1.0 and after < 1.0
        assert [generation(n) for n in nodes] == [2, 2, 2]

        # Kill the etcd leader under DNS load: publish and overrides keep working after the
        # election, and no query goes unanswered.
        with Load(nodes) as load:
            leader = etcd.leader()
            etcd.kill(leader)
            write_node_files(tmp_path / "src", serial=3, first="dc3")
            result = publish(etcd, config, zones)
            assert result.returncode == 0, result.stderr
            wait_until(lambda: all(n.ask("v.example.test") == [ADDRESS["dc3"]] for n in nodes), 5)
        assert load.answered > 50 and not load.failed, load.failed[:3]
        cleared = gslb(
            "health", "override", "dc1", "--clear", "--etcd", etcd.endpoints, "--reason", "done"
        )
        assert cleared.returncode == 0, cleared.stderr
        wait_until(lambda: all(ADDRESS["dc1"] in n.seen(30) for n in nodes), 5)
        status, _ = c.override("dc2", "down", "after the election")
        assert status == 200
        wait_until(lambda: all(ADDRESS["dc2"] not in n.seen(20) for n in nodes), 5)
        assert all(n.status()["cluster"]["stale"] is False for n in nodes)
    finally:
        for n in nodes:
            n.stop()


def test_etcd_loss_static_stability_and_catch_up(tmp_path: Path, etcd: EtcdCluster) -> None:
    config, zones = write_node_files(tmp_path / "src")
    assert publish(etcd, config, zones).returncode == 0
    a = cluster_node(tmp_path, etcd, "a")
    b = cluster_node(tmp_path, etcd, "b")
    try:
        status, _ = b.override("dc1", "down", "drained before the outage")
        assert status == 200
        wait_until(lambda: ADDRESS["dc1"] not in a.seen(20), 5)

        # Every member stops: both nodes keep answering from their last good generation,
        # health and overrides, and say they are stale.
        with Load([a, b]) as load:
            etcd.stop()
            wait_until(
                lambda: a.status()["cluster"]["stale"] and b.status()["cluster"]["stale"], 10
            )
        assert load.answered > 50 and not load.failed, load.failed[:3]
        for n in (a, b):
            seen = n.seen(20)
            assert seen and ADDRESS["dc1"] not in seen
            with urllib.request.urlopen(f"{n.admin}/metrics", timeout=5) as response:
                assert "gslb_cluster_stale 1.0" in response.read().decode()
        status, body = a.override("dc2", "down", "etcd is down")
        assert status == 503, body  # not stored anywhere, so not applied here either
        assert ADDRESS["dc2"] in a.seen(30)

        # A node started while etcd is down serves from its local state file.
        b.stop()
        b = cluster_node(tmp_path, etcd, "b")
        assert generation(b) == 1 and b.status()["cluster"]["stale"]
        seen = b.seen(20)
        assert seen and ADDRESS["dc1"] not in seen

        # etcd returns: the nodes catch up.
        etcd.start()
        etcd.wait_healthy()
        wait_until(lambda: not a.status()["cluster"]["stale"], 10)
        wait_until(lambda: not b.status()["cluster"]["stale"], 10)
        # A node that missed changes (paused here) catches up on all of them when it resumes.
        a.process.send_signal(signal.SIGSTOP)
        try:
            write_node_files(tmp_path / "src", serial=2, first="dc2")
            assert publish(etcd, config, zones).returncode == 0
            cleared = gslb("health", "override", "dc1", "--clear", "--etcd", etcd.endpoints)
            assert cleared.returncode == 0, cleared.stderr
            wait_until(lambda: generation(b) == 2 and ADDRESS["dc1"] in b.seen(30), 5)
        finally:
            a.process.send_signal(signal.SIGCONT)
        wait_until(lambda: generation(a) == 2 and ADDRESS["dc1"] in a.seen(30), 5)
        assert a.ask("v.example.test") == [ADDRESS["dc2"]]
    finally:
        a.stop()
        b.stop()


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    config, zones = write_node_files(tmp_path)
    first = start_node(tmp_path / "one", "--config", str(config), "--zones", str(zones))
    try:
        for extra in ([], ["--workers", "2"]):
            second = subprocess.run(
                [
                    *GSLB,
                    "dns",
                    "--config",
                    str(config),
                    "--zones",
                    str(zones),
                    "--listen",
                    f"127.0.0.1:{first.dns_port}",
                    "--admin",
                    "127.0.0.1:0",
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert second.returncode == 1
            lines = second.stderr.strip().splitlines()
            assert lines[-1] == (
                f"gslb dns: cannot listen on 127.0.0.1:{first.dns_port} "
                "(dns.listen or --listen): address already in use"
            ), second.stderr
            assert "Traceback" not in second.stderr
        second = subprocess.run(
            [
                *GSLB,
                "dns",
                "--config",
                str(config),
                "--zones",
                str(zones),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                f"127.0.0.1:{first.admin_port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1] == (
            f"gslb dns: cannot listen on 127.0.0.1:{first.admin_port} "
            "(admin.listen or --admin): address already in use"
        ), second.stderr
    finally:
        first.stop()


def test_a_generation_that_fails_on_one_node_is_not_applied_there(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    import shutil

    from .stackhelpers import ROOT

    config, zones = write_node_files(tmp_path / "src")
    # A node started before anything is published waits for the first generation.
    home = tmp_path / "a"
    a = start_node(
        home, "--etcd", etcd.endpoints, "--state-file", str(home / "state.json"),
        name="a", wait=False,
    )  # fmt: skip
    wait_until(lambda: "waiting for a generation" in a.log(), 20)
    assert a.process.poll() is None
    assert publish(etcd, config, zones).returncode == 0
    a.wait_ready("a")
    # Node b names etcd through the `cluster:` key of its local file, and checks every
    # generation against its own GeoIP copy (which goes missing below).
    geoip = tmp_path / "city.mmdb"
    shutil.copy(ROOT / "geodata" / "gslb-test-city.mmdb", geoip)
    local = tmp_path / "b-local.yaml"
    urls = ", ".join(f'"{m.url}"' for m in etcd.members)
    local.write_text(config.read_text() + f"cluster: {{etcd: [{urls}], prefix: /gslb/}}\n")
    home = tmp_path / "b"
    b = start_node(
        home, "--config", str(local), "--zones", str(zones), "--geoip", str(geoip),
        "--state-file", str(home / "state.json"), name="b",
    )  # fmt: skip
    try:
        assert b.status()["cluster"] is not None and generation(b) == 1
        geoip.unlink()
        write_node_files(tmp_path / "src", serial=2, first="dc2")
        assert publish(etcd, config, zones).returncode == 0
        wait_until(lambda: generation(a) == 2, 5)
        rejected = wait_until(lambda: b.status()["cluster"]["rejected"], 5)
        assert rejected["number"] == 2 and "GeoIP" in " ".join(rejected["errors"])
        assert generation(b) == 1 and b.ask("v.example.test") == [ADDRESS["dc3"]]
        with urllib.request.urlopen(f"{b.admin}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "gslb_cluster_generations_rejected_total 1.0" in text
        # Fixed on the node: the next generation applies there again.
        shutil.copy(ROOT / "geodata" / "gslb-test-city.mmdb", geoip)
        write_node_files(tmp_path / "src", serial=3, first="dc1")
        assert publish(etcd, config, zones).returncode == 0
        wait_until(lambda: generation(b) == 3 and generation(a) == 3, 5)
        assert b.status()["cluster"]["rejected"] is None
        # Garbage written to etcd by hand is refused by every node, which stays in sync.
        import base64
        import json

        def put(key: str, value: str) -> None:
            body = {"key": base64.b64encode(key.encode()).decode(),
                    "value": base64.b64encode(value.encode()).decode()}  # fmt: skip
            assert http(f"{etcd.members[0].url}/v3/kv/put", body)[0] == 200

        put("/gslb/generations/000000000004", "{not json")
        put("/gslb/current", json.dumps({"number": 4, "digest": "feed"}))
        for n in (a, b):
            refused = wait_until(lambda n=n: n.status()["cluster"]["rejected"], 5)
            assert refused["number"] == 4 and "malformed generation" in refused["errors"][0]
            assert generation(n) == 3 and not n.status()["cluster"]["stale"]
    finally:
        a.stop()
        b.stop()
