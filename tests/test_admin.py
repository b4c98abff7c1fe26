"""Admin HTTP API over real sockets on 127.0.0.1: status, metrics, auth, allow list, reload, SSE."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from gslb.admin.server import AdminServer, parse_listen, start_admin
from tests.test_admin_support import DCS, FakeNode

TOKEN = "s3cret-token"


@pytest.fixture
async def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe cookie jar: the server is addressed by IP, which the default jar ignores
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


@pytest.fixture
async def serve(node: FakeNode) -> AsyncIterator[Callable[..., object]]:
    servers: list[AdminServer] = []

    async def start(**kwargs: object) -> AdminServer:
        kwargs.setdefault("extra_routes", node.demo_routes())
        server = await start_admin("127.0.0.1:0", node, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.close()


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, object], name: str, **labels: str) -> float:
    for fam in fams.values():
        for s in fam.samples:  # type: ignore[attr-defined]
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(f"{name} {labels}")


# --- /status and the page ----------------------------------------------------------------------


async def test_status_is_the_source_document(serve, http, node) -> None:
    server = await serve()
    async with http.get(server.url + "/status") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert r.headers["Cache-Control"] == "no-store"
        doc = await r.json()
    assert doc == json.loads(json.dumps(node.status()))
    assert [dc["name"] for dc in doc["datacenters"]] == [name for name, _, _ in DCS]


async def test_page_and_assets_are_served_with_a_strict_policy(serve, http) -> None:
    server = await serve()
    async with http.get(server.url + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        html = await r.text()
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "/static/app.js" in html
    for name, ctype in [
        ("app.js", "text/javascript"),
        ("world.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        async with http.get(f"{server.url}/static/{name}") as r:
            assert r.status == 200, name
            assert r.content_type == ctype
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    for bad in ["nope.js", ".hidden.js", "..%2Fserver.py", "%2E%2E%2F__init__.py", "server.py"]:
        async with http.get(f"{server.url}/static/{bad}") as r:
            assert r.status == 404, bad


def test_static_assets_reference_no_other_origin() -> None:
    # No CDN, no web fonts: the only absolute URL allowed is the SVG XML namespace.
    static = Path(__file__).parent.parent / "gslb" / "admin" / "static"
    files = sorted(static.iterdir())
    assert {f.name for f in files} >= {"index.html", "app.js", "world.js", "style.css"}
    for f in files:
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", f.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (f.name, urls)


# --- /metrics ----------------------------------------------------------------------------------


async def test_metrics_read_counters_at_scrape_time(serve, http, node) -> None:
    proxy = CollectorRegistry()
    proxied = Counter("gslb_proxy_requests_total", "x", ["pool"], registry=proxy)
    proxied.labels("web").inc(3)
    server = await serve(extra_collectors=[proxy])

    async with http.get(server.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        fams = families(await r.text())
    assert (
        sample(
            fams,
            "gslb_dns_queries_total",
            qtype="A",
            rcode="NOERROR",
            service="www.example.test.",
            datacenter="us-east",
            worker="0",
        )
        == 7
    )
    assert sample(fams, "gslb_dns_queries_total", qtype="SOA", service="", datacenter="") == 1
    assert sample(fams, "gslb_dns_answer_cache_hits_total", worker="0") == 9
    assert sample(fams, "gslb_dns_answer_cache_misses_total", worker="0") == 4
    assert sample(fams, "gslb_dns_query_seconds_bucket", le="0.001") == 11
    assert sample(fams, "gslb_dns_query_seconds_bucket", le="+Inf") == 13
    assert sample(fams, "gslb_dns_query_seconds_count") == 13
    assert sample(fams, "gslb_dns_query_seconds_sum") == pytest.approx(0.0123)
    assert sample(fams, "gslb_health_transitions_total", target="eu-west", state="down") == 2
    assert sample(fams, "gslb_health_state", target="us-east", region="us-east", state="down") == 1
    assert sample(fams, "gslb_health_state", target="us-east", region="us-east", state="up") == 0
    assert sample(fams, "gslb_health_probe_seconds_count", target="eu-west") == 10
    assert sample(fams, "gslb_health_probe_seconds_sum", target="eu-west") == 0.5
    assert sample(fams, "gslb_node_info", node="dns-1", config_version="3f2a9c1d") == 1
    assert sample(fams, "gslb_health_target_state", target="eu-west", state="up") == 1
    assert sample(fams, "gslb_proxy_requests_total", pool="web") == 3

    # The hot path increments plain ints; the next scrape sees them, nothing else to call.
    assert node.dns is not None
    node.dns.queries[("A", "NOERROR", "www.example.test.", "us-east")] += 5
    node.dns.queries[("MX", "NOERROR", "", "")] = 1
    node.dns.cache_hits += 1
    node.set_state("eu-west", "down")
    proxied.labels("web").inc()
    async with http.get(server.url + "/metrics") as r:
        fams = families(await r.text())
    assert sample(fams, "gslb_dns_queries_total", qtype="A", datacenter="us-east") == 12
    assert sample(fams, "gslb_dns_queries_total", qtype="MX") == 1
    assert sample(fams, "gslb_dns_answer_cache_hits_total") == 10
    assert sample(fams, "gslb_health_target_state", target="eu-west", state="down") == 1
    assert sample(fams, "gslb_proxy_requests_total", pool="web") == 4


async def test_metrics_without_dns_or_health(serve, http, node) -> None:
    node.dns = None
    node.health = None
    server = await serve()
    async with http.get(server.url + "/metrics") as r:
        fams = families(await r.text())
    assert not [n for n in fams if n.startswith("gslb_dns_")]
    assert "gslb_health_transitions" not in fams
    assert "gslb_node_info" in fams


async def test_metrics_openmetrics_when_asked(serve, http) -> None:
    server = await serve()
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(server.url + "/metrics", headers=headers) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).endswith("# EOF\n")


async def test_two_servers_have_private_registries(serve, http, node) -> None:
    a = await serve()
    other = FakeNode()
    assert other.dns is not None
    other.dns.cache_hits = 1234
    b = await start_admin("127.0.0.1:0", other)
    try:
        async with http.get(a.url + "/metrics") as r:
            fa = families(await r.text())
        async with http.get(b.url + "/metrics") as r:
            fb = families(await r.text())
    finally:
        await b.close()
    assert a.port != b.port
    assert sample(fa, "gslb_dns_answer_cache_hits_total") == 9
    assert sample(fb, "gslb_dns_answer_cache_hits_total") == 1234


# --- access control ----------------------------------------------------------------------------


async def test_token_required_everywhere_when_configured(serve, http) -> None:
    server = await serve(token=TOKEN)
    for path in ["/", "/static/app.js", "/status", "/metrics", "/v1/events"]:
        async with http.get(server.url + path) as r:
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(server.url + path, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401, path
    async with http.post(server.url + "/v1/reload") as r:
        assert r.status == 401
    async with http.post(server.url + "/v1/demo/fail/eu-west") as r:
        assert r.status == 401  # the lead's extra routes are behind the same gate
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ["/", "/static/app.js", "/status", "/metrics"]:
        async with http.get(server.url + path, headers=auth) as r:
            assert r.status == 200, path
    async with http.post(server.url + "/v1/reload", headers=auth) as r:
        assert r.status == 200


async def test_browser_gets_a_session_cookie_from_access_token(serve, http) -> None:
    server = await serve(token=TOKEN)
    async with http.get(server.url + "/?access_token=nope", allow_redirects=False) as r:
        assert r.status == 401
    async with http.get(server.url + f"/?access_token={TOKEN}", allow_redirects=False) as r:
        assert r.status == 303
        assert r.headers["Location"] == "/"
        cookie = r.cookies["gslb_admin"]
        assert TOKEN not in cookie.value  # a digest, not the token
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
    # The jar now carries the cookie: page, assets, status and a POST from the page all work.
    for path in ["/", "/static/style.css", "/status"]:
        async with http.get(server.url + path) as r:
            assert r.status == 200, path
    async with http.post(server.url + "/v1/reload", headers={"Origin": server.url}) as r:
        assert r.status == 200
    # access_token is only honoured on the page URL.
    http.cookie_jar.clear()
    async with http.get(server.url + f"/status?access_token={TOKEN}") as r:
        assert r.status == 401


async def test_page_is_public_without_token(serve, http) -> None:
    server = await serve(token=None)
    async with http.get(server.url + "/") as r:
        assert r.status == 200


async def test_allow_list(serve, http, node) -> None:
    seen: list[str] = []

    def deny(ip: str) -> bool:
        seen.append(ip)
        return False

    server = await serve(allow=deny)
    for path in ["/", "/status", "/metrics", "/static/app.js"]:
        async with http.get(server.url + path) as r:
            assert r.status == 403, path
    async with http.post(server.url + "/v1/reload") as r:
        assert r.status == 403
    assert node.reloads == 0
    assert set(seen) == {"127.0.0.1"}

    ok = await serve(allow=lambda ip: ip == "127.0.0.1", token=TOKEN)
    async with http.get(ok.url + "/status", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    async with http.get(ok.url + "/status") as r:
        assert r.status == 401  # allowed address still needs the token


async def test_cross_origin_posts_are_refused(serve, http, node) -> None:
    server = await serve()
    async with http.post(server.url + "/v1/reload", headers={"Origin": "http://evil.test"}) as r:
        assert r.status == 403
    async with http.post(
        server.url + "/v1/demo/fail/eu-west", headers={"Origin": "http://evil.test"}
    ) as r:
        assert r.status == 403
    assert node.reloads == 0 and node.dcs["eu-west"]["state"] == "up"
    async with http.post(server.url + "/v1/demo/fail/eu-west", headers={"Origin": server.url}) as r:
        assert r.status == 200
    assert node.dcs["eu-west"]["state"] == "down"


# --- reload and extra routes -------------------------------------------------------------------


async def test_reload_success_and_failure(serve, http, node) -> None:
    server = await serve()
    async with http.post(server.url + "/v1/reload") as r:
        assert r.status == 200
        assert await r.json() == {"ok": True}
    assert node.reloads == 1

    node.reload_errors = [
        "zones/example.yaml:12:5: unknown datacenter 'mars'",
        "zones/example.yaml:30:3: ttl must be positive",
    ]
    async with http.post(server.url + "/v1/reload") as r:
        assert r.status == 409
        assert await r.json() == {"ok": False, "errors": node.reload_errors}
    assert node.reload_failures == 1
    async with http.get(server.url + "/status") as r:
        assert (await r.json())["node"]["last_reload_error"].startswith("zones/example.yaml:12:5")
    async with http.get(server.url + "/v1/reload") as r:
        assert r.status == 405


async def test_reload_that_raises_is_a_500_not_a_dead_server(serve, http, node) -> None:
    def boom() -> tuple[bool, list[str]]:
        raise RuntimeError("disk on fire")

    node.reload = boom  # type: ignore[method-assign]
    server = await serve()
    async with http.post(server.url + "/v1/reload") as r:
        assert r.status == 500
        body = await r.json()
    assert body["ok"] is False and "disk on fire" in body["errors"][0]
    async with http.get(server.url + "/status") as r:
        assert r.status == 200


async def test_extra_routes_are_mounted(serve, http, node) -> None:
    async def override(request: web.Request) -> web.Response:
        return web.json_response({"target": request.match_info["target"]})

    server = await serve(extra_routes=[web.post("/v1/overrides/{target}", override)])
    async with http.post(server.url + "/v1/overrides/eu-west", json={"mode": "down"}) as r:
        assert r.status == 200
        assert await r.json() == {"target": "eu-west"}
    async with http.post(server.url + "/v1/demo/fail/eu-west") as r:
        assert r.status == 404  # only what was passed is mounted


# --- server-sent events ------------------------------------------------------------------------


async def read_event(resp: aiohttp.ClientResponse, timeout: float = 3.0) -> tuple[str, dict]:
    """Next `id`/`data` event, skipping comments and the retry preamble."""
    event_id, data = "", None
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode()
        assert line, "stream ended"
        line = line.rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            return event_id, data


async def test_events_stream_pushes_each_event(serve, http, node) -> None:
    server = await serve()
    async with http.get(server.url + "/v1/events") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert (await r.content.readline()) == b"retry: 2000\n"
        node.set_state("eu-west", "down", "2 of 3 regions report down")
        _, ev = await read_event(r)
        assert ev["kind"] == "health" and ev["target"] == "eu-west"
        assert (ev["from"], ev["to"], ev["detail"]) == ("up", "down", "2 of 3 regions report down")
        # From another thread too (a probe follower thread, say).
        t = threading.Thread(target=node.set_state, args=("eu-west", "up"))
        t.start()
        t.join()
        first_id, ev = await read_event(r)
        assert ev["to"] == "up"
        node.emit({"kind": "failover", "target": "www.example.test.", "detail": "to us-east"})
        _, ev = await read_event(r)
        assert ev["kind"] == "failover"
    # A reconnect with Last-Event-ID gets what it missed.
    async with http.get(server.url + "/v1/events", headers={"Last-Event-ID": first_id}) as r:
        _, ev = await read_event(r)
        assert ev["kind"] == "failover"


async def test_events_heartbeat_and_close_ends_streams(http, node) -> None:
    server = await start_admin("127.0.0.1:0", node, heartbeat=0.05)
    assert len(node.subscribers) == 1
    try:
        async with http.get(server.url + "/v1/events") as r:
            lines = [await asyncio.wait_for(r.content.readline(), 2) for _ in range(5)]
            assert b": keepalive\n" in lines
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await server.close()
            rest = await asyncio.wait_for(r.content.read(), 2)  # EOF, not a hang
            assert set(rest.split(b"\n")) <= {b"", b": keepalive"}
            assert loop.time() - t0 < 1.5
    finally:
        await server.close()
    assert node.subscribers == []  # unsubscribed from the node
    await server.close()  # idempotent


# --- listen address ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:8053", ("127.0.0.1", 8053)),
        (":8053", ("127.0.0.1", 8053)),
        ("8053", ("127.0.0.1", 8053)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["", "host", "::1:80", "[::1]80", "127.0.0.1:99999", "a:b"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="admin listen"):
        parse_listen(text)


async def test_start_rejects_empty_token_and_busy_port(serve, node) -> None:
    with pytest.raises(ValueError, match="token"):
        await start_admin("127.0.0.1:0", node, token="")
    first = await serve()
    with pytest.raises(OSError):
        await start_admin(f"127.0.0.1:{first.port}", node)
    assert len(node.subscribers) == 1  # the failed start did not leave a subscription behind


async def test_proxy_registry_joins_as_extra_collector(serve, http) -> None:
    # The proxy keeps its own CollectorRegistry; the lead passes it straight in.
    from gslb.proxy.metrics import ProxyMetrics

    proxy_metrics = ProxyMetrics()
    proxy_metrics.request("p", 200)  # a family without samples is not exposed
    proxy_metrics.upstream("p", "m", "2xx", 0.001)
    server = await serve(extra_collectors=[proxy_metrics.registry])
    async with http.get(server.url + "/metrics") as r:
        fams = families(await r.text())
    assert {"gslb_proxy_requests", "gslb_proxy_upstream_seconds"} <= set(fams)
    assert "gslb_dns_queries" in fams
