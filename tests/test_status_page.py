"""The live status page in headless Chromium, against a real admin server on 127.0.0.1.

The node is FakeNode (tests/test_admin_support.py), a StatusSource double the test changes; the
lead's full-stack browser test covers the real node.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from gslb.admin.server import AdminServer, start_admin
from tests.test_admin_support import DCS, FakeNode

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = "/tmp/gslb-status.png"
pytestmark = pytest.mark.timeout(90)


@dataclass
class Served:
    node: FakeNode
    server: AdminServer
    loop: asyncio.AbstractEventLoop


@pytest.fixture
def served() -> Iterator[Served]:
    """Admin server on its own loop in a thread; Selenium blocks, so it cannot share a loop."""
    node = FakeNode(demo=True)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, AdminServer] = {}
    failed: list[BaseException] = []

    async def start() -> None:
        box["server"] = await start_admin(
            "127.0.0.1:0", node, extra_routes=node.demo_routes(), heartbeat=1.0
        )

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported by the fixture below
            failed.append(exc)
            return
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    if failed:
        thread.join(5)
        loop.close()
        raise failed[0]
    try:
        yield Served(node, box["server"], loop)
    finally:
        asyncio.run_coroutine_threadsafe(box["server"].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with tempfile.TemporaryDirectory(prefix="gslb-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1440,1000",
        ):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            yield driver
        finally:
            driver.quit()


def states(driver: WebDriver) -> dict[str, set[str]]:
    """data-dc -> the set of data-state values on every element drawn for it (one JS snapshot,
    so a redraw between reads cannot leave us holding stale elements)."""
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('[data-dc]')]"
        ".map(e => [e.dataset.dc, e.dataset.state])"
    )
    out: dict[str, set[str]] = {}
    for dc, state in pairs:
        out.setdefault(dc, set()).add(state)
    return out


def wait_state(driver: WebDriver, dc: str, state: str, timeout: float = 5.0) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: states(d).get(dc) == {state})


def test_page_draws_datacenters_and_follows_changes(served: Served, browser: WebDriver) -> None:
    browser.get(served.server.url + "/")
    WebDriverWait(browser, 10).until(lambda d: len(states(d)) == len(DCS))
    assert states(browser) == {name: {"up"} for name, _, _ in DCS}
    # Each DC is on the map (an SVG group) and in the list.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map [data-dc]")) == len(DCS)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dcs [data-dc]")) == len(DCS)
    assert browser.find_element(By.ID, "node-name").text == "dns-1"
    # The continents are drawn (inline SVG paths), and answers show as bars.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map .land path")) > 10
    assert browser.find_element(By.CSS_SELECTOR, '[data-answers="us-east"]').is_displayed()

    # The node changes by itself: the page follows within a few seconds (SSE -> refetch).
    served.loop.call_soon_threadsafe(served.node.set_state, "eu-west", "down", "2 of 3 regions")
    wait_state(browser, "eu-west", "down")
    assert states(browser)["us-east"] == {"up"}
    WebDriverWait(browser, 5).until(
        lambda d: "2 of 3 regions" in d.find_element(By.ID, "events").text
    )
    cells = browser.find_elements(By.CSS_SELECTOR, "#matrix td.cell.down")
    assert len(cells) == len(served.node.dcs["eu-west"]["regions"])

    # The operator clicks "Fail" on ap-northeast: the demo route changes the node.
    browser.find_element(
        By.CSS_SELECTOR, 'button[data-action="fail"][data-target="ap-northeast"]'
    ).click()
    wait_state(browser, "ap-northeast", "down")
    assert served.node.dcs["ap-northeast"]["state"] == "down"
    browser.find_element(
        By.CSS_SELECTOR, 'button[data-action="recover"][data-target="ap-northeast"]'
    ).click()
    wait_state(browser, "ap-northeast", "up")

    # An operator drain shows as an override; stale reports show as unknown.
    served.loop.call_soon_threadsafe(served.node.set_override, "us-west", "down", "maintenance")
    served.loop.call_soon_threadsafe(served.node.set_unknown, "sa-east")
    wait_state(browser, "sa-east", "unknown")
    wait_state(browser, "us-west", "down")
    drained = browser.find_element(By.CSS_SELECTOR, '#map [data-dc="us-west"]')
    assert drained.get_attribute("data-override") == "down"
    assert (
        "override: down" in browser.find_element(By.CSS_SELECTOR, '#dcs [data-dc="us-west"]').text
    )

    # Live indicator says the event stream is connected.
    assert browser.find_element(By.ID, "live").get_attribute("data-live") == "live"
    browser.set_window_size(1440, 1250)
    browser.save_screenshot(SCREENSHOT)
    logs = [e for e in _console_errors(browser)]
    assert logs == []


def test_page_hides_demo_buttons_and_shows_reload_error(served: Served, browser: WebDriver) -> None:
    served.node.demo = False
    served.node.reload_errors = ["zones/example.yaml:12:5: unknown datacenter 'mars'"]
    browser.get(served.server.url + "/")
    WebDriverWait(browser, 10).until(lambda d: len(states(d)) == len(DCS))
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-action]") == []
    browser.find_element(By.ID, "reload").click()
    banner = browser.find_element(By.ID, "banner")
    WebDriverWait(browser, 5).until(lambda d: banner.is_displayed())
    assert "unknown datacenter 'mars'" in banner.text
    assert "zones/example.yaml:12:5" in browser.find_element(By.ID, "toast").text


def _console_errors(driver: WebDriver) -> list[str]:
    try:
        entries = driver.get_log("browser")
    except Exception:  # some drivers do not expose the log; the page assertions still stand
        return []
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]
