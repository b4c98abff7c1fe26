"""The whole example stack (`gslb run`) as real processes: DNS, probes, proxies, backends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.remote.webdriver import WebDriver

from .stackhelpers import RunningStack, start_stack
from .test_status_page import browser, states  # noqa: F401  (fixture and helper)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    output = running.stop()
    assert "Traceback" not in output, output


def short(stack: RunningStack, subnet: str, name: str = "www.example.test") -> str:
    return stack.dig("+short", name, f"+subnet={subnet}").strip()


def wait_answer(
    stack: RunningStack, subnet: str, want: str, present: bool, timeout: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if (want in short(stack, subnet).split()) == present:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{subnet}: {want} {'never came' if present else 'never left'}")


def test_stack_starts_quickly_and_answers(stack: RunningStack) -> None:
    assert stack.started_in < 30
    stack.wait_all_up()
    out = stack.dig("example.test", "SOA")
    assert "status: NOERROR" in out and "flags: qr aa" in out
    assert short(stack, "127.2.0.0/24") == "192.0.2.21"
    assert "CLIENT-SUBNET: 127.2.0.0/24/16" in stack.dig("www.example.test", "+subnet=127.2.0.0/24")
    assert stack.dig("+tcp", "+short", "static.example.test").strip() == "192.0.2.10"


def test_demo_failover_and_recovery(stack: RunningStack) -> None:
    stack.wait_all_up()
    assert short(stack, "127.3.0.0/24") == "198.51.100.31"
    result = stack.gslb("demo", "fail", "ap-northeast", "--admin", stack.admin)
    assert result.returncode == 0, result.stderr
    wait_answer(stack, "127.3.0.0/24", "198.51.100.31", present=False, timeout=10)
    status = {dc["name"]: dc for dc in stack.status()["datacenters"]}
    assert status["ap-northeast"]["state"] == "down"
    assert any(
        e["target"] == "ap-northeast" and e["to"] == "down" for e in stack.status()["events"]
    )
    assert stack.gslb("demo", "recover", "ap-northeast", "--admin", stack.admin).returncode == 0
    wait_answer(stack, "127.3.0.0/24", "198.51.100.31", present=True, timeout=10)


def test_metrics_and_status(stack: RunningStack) -> None:
    for _ in range(3):
        short(stack, "127.2.0.0/24")
    families = {f.name: f for f in text_string_to_metric_families(stack.get("/metrics"))}
    queries = families["gslb_dns_queries"].samples
    assert any(
        s.labels.get("service") == "www.example.test."
        and s.labels.get("datacenter") == "eu-west"
        and s.value >= 3
        for s in queries
    )
    assert "gslb_health_state" in families
    status = stack.status()
    assert [z["origin"] for z in status["zones"]] == ["example.test."]
    assert {s["name"] for s in status["services"]} >= {"www.example.test.", "geo.example.test."}
    assert status["answers"]["by_datacenter"].get("eu-west", 0) >= 3
    # Every example proxy reports its load and its capacity with its health.
    deadline = time.monotonic() + 15
    while any(dc["load"] is None for dc in stack.status()["datacenters"]):
        assert time.monotonic() < deadline, "no load reported"
        time.sleep(0.2)
    assert {dc["capacity"] for dc in stack.status()["datacenters"]} == {50.0}
    # The stack's node narrates its live decision too (one admin API for every node).
    explain = stack.gslb(
        "explain", "spill.example.test", "--client", "127.2.0.1", "--admin", stack.admin
    )
    assert explain.returncode == 0, explain.stdout + explain.stderr
    assert "geoproximity:" in explain.stdout and "/50 req/s" in explain.stdout


def test_override_drains_a_datacenter(stack: RunningStack) -> None:
    stack.wait_all_up()
    result = stack.gslb(
        "health", "override", "sa-east", "--down", "--reason", "maintenance", "--admin", stack.admin
    )
    assert result.returncode == 0, result.stderr
    try:
        wait_answer(stack, "127.4.0.0/24", "198.51.100.41", present=False, timeout=5)
        dc = {d["name"]: d for d in stack.status()["datacenters"]}["sa-east"]
        assert dc["override"]["reason"] == "maintenance"
    finally:
        stack.gslb("health", "override", "sa-east", "--clear", "--admin", stack.admin)
    wait_answer(stack, "127.4.0.0/24", "198.51.100.41", present=True, timeout=5)


def test_status_page_shows_a_failed_datacenter(
    stack: RunningStack,
    browser: WebDriver,  # noqa: F811
) -> None:
    stack.wait_all_up()
    browser.get(stack.admin + "/")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and states(browser).get("eu-west") != {"up"}:
        time.sleep(0.2)
    assert states(browser).get("eu-west") == {"up"}
    assert stack.gslb("demo", "fail", "eu-west", "--admin", stack.admin).returncode == 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and states(browser).get("eu-west") != {"down"}:
            time.sleep(0.2)
        assert states(browser).get("eu-west") == {"down"}
        browser.save_screenshot("/tmp/gslb-stack-page.png")
    finally:
        stack.gslb("demo", "recover", "eu-west", "--admin", stack.admin)
    stack.wait_all_up()


def test_reload_endpoint_rejects_a_bad_config_and_keeps_serving(stack: RunningStack) -> None:
    import urllib.error
    import urllib.request

    good = stack.config.read_text()
    try:
        stack.config.write_text(good.replace("ttl: 30\n", "ttl: thirty\n", 1))
        request = urllib.request.Request(f"{stack.admin}/v1/reload", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 409
        body = info.value.read().decode()
        assert f"{stack.config}:" in body and "ttl" in body
        assert short(stack, "127.2.0.0/24") in ("192.0.2.21", "192.0.2.11")
    finally:
        stack.config.write_text(good)
    request = urllib.request.Request(f"{stack.admin}/v1/reload", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_run_cluster_two_nodes_follow_etcd(
    tmp_path_factory: pytest.TempPathFactory,
    browser: WebDriver,  # noqa: F811
) -> None:
    """`gslb run --cluster`: 3 etcd members, 2 DNS nodes on one generation; a drain on one
    node's admin API reaches the other; the status document has a line per node."""
    import json
    import urllib.request

    directory = tmp_path_factory.mktemp("cluster-stack")
    running = start_stack(directory, cluster=True)
    try:
        deadline = time.monotonic() + 30
        nodes: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            nodes = (running.status().get("cluster") or {}).get("nodes") or []
            if len(nodes) == 2 and all((n.get("generation") or {}).get("number") for n in nodes):
                break
            time.sleep(0.2)
        assert [n["name"] for n in nodes] == ["dns-1", "dns-2"], nodes
        assert nodes[0]["generation"] == nodes[1]["generation"]
        assert nodes[0]["generation"]["number"] >= 1
        # The status page has a line per node with the generation it serves.
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        label = nodes[0]["generation"]["label"]
        browser.get(running.admin + "/")
        WebDriverWait(browser, 10, poll_frequency=0.1).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#nodes [data-node]")) == 2
        )
        for name in ("dns-1", "dns-2"):
            line = browser.find_element(By.CSS_SELECTOR, f'#nodes [data-node="{name}"]').text
            assert f"generation {label}" in line and "in sync" in line, line
        request = urllib.request.Request(
            f"{running.admin}/v1/overrides/eu-west",
            data=json.dumps({"mode": "down", "reason": "cluster demo"}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        peer = running.admin.rsplit(":", 1)[0] + ":" + str(int(running.admin.rsplit(":", 1)[1]) + 1)

        def peer_state() -> str:
            with urllib.request.urlopen(f"{peer}/status", timeout=5) as response:
                doc = json.loads(response.read())
            return {dc["name"]: dc["state"] for dc in doc["datacenters"]}.get("eu-west", "")

        deadline = time.monotonic() + 2
        while peer_state() != "down":
            assert time.monotonic() < deadline, "the drain did not reach the second node"
            time.sleep(0.05)
        # State lives in --state-dir, never in the checkout.
        assert (directory / "state" / "dns-1.json").exists()
        assert (directory / "state" / "dns-2.json").exists()
    finally:
        output = running.stop()
    assert "Traceback" not in output, output
