"""Cache, compression and TLS termination through a real proxy."""

from __future__ import annotations

import asyncio
import gzip
import ssl

import aiohttp
import brotli
import pytest
import trustme
from multidict import CIMultiDict

from gslb.clock import FakeClock
from gslb.proxy.cache import Cache, freshness, parse_cache_control
from gslb.proxy.compress import accepted_encodings, choose_encoding
from gslb.proxy.server import make_ssl_context
from gslb.proxy.settings import (
    CacheSpec,
    CertSpec,
    ListenerSpec,
    MemberSpec,
    PoolSpec,
    ProxySettings,
    RouteSpec,
)


def settings_for(backends, route: RouteSpec | None = None, **kw) -> ProxySettings:  # type: ignore[no-untyped-def]
    pool = PoolSpec("p", tuple(MemberSpec("127.0.0.1", b.port) for b in backends))
    return ProxySettings(
        listeners=kw.pop("listeners", (ListenerSpec("127.0.0.1", 0),)),
        routes=(route or RouteSpec(pool="p"),),
        pools={"p": pool},
        **kw,
    )


def H(**kv: str) -> CIMultiDict[str]:
    return CIMultiDict((k.replace("_", "-"), v) for k, v in kv.items())


def test_freshness_rules() -> None:
    now = 1_700_000_000.0
    req = H()
    assert freshness(req, 200, H(Cache_Control="max-age=60"), now) == 60
    assert freshness(req, 200, H(Cache_Control="max-age=60, s-maxage=5"), now) == 5
    assert freshness(req, 200, H(Cache_Control="public, max-age=0"), now) == 0
    for cc in ("no-store", "private, max-age=60", "no-cache"):
        assert freshness(req, 200, H(Cache_Control=cc), now) is None
    assert freshness(req, 200, H(), now) is None  # no heuristic caching
    assert freshness(req, 500, H(Cache_Control="max-age=60"), now) is None
    assert freshness(H(Cache_Control="no-store"), 200, H(Cache_Control="max-age=9"), now) is None
    assert freshness(req, 200, H(Cache_Control="max-age=9", Set_Cookie="a=b"), now) is None
    assert freshness(req, 200, H(Cache_Control="max-age=9", Vary="*"), now) is None
    assert freshness(H(Authorization="x"), 200, H(Cache_Control="max-age=9"), now) is None
    assert freshness(H(Authorization="x"), 200, H(Cache_Control="public, max-age=9"), now) == 9
    expires = H(Date="Sun, 06 Nov 1994 08:49:37 GMT", Expires="Sun, 06 Nov 1994 08:50:37 GMT")
    assert freshness(req, 200, expires, now) == 60
    assert freshness(req, 200, H(Expires="garbage"), now) == 0
    assert parse_cache_control(['max-age="5", No-Store']) == {"max-age": "5", "no-store": None}


def test_cache_lru_bound_and_purge() -> None:
    clock = FakeClock()
    cache = Cache(max_bytes=3000, max_object_bytes=1500, clock=clock)
    for i in range(5):
        assert cache.store("h", f"/{i}", H(), 200, "OK", H(), b"x" * 1000, 60)
    assert cache.bytes <= 3000 and len(cache) == 2
    assert cache.lookup("h", "/0", H()) is None and cache.lookup("h", "/4", H()) is not None
    assert not cache.store("h", "/big", H(), 200, "OK", H(), b"x" * 2000, 60)
    assert cache.purge("h", "/4") == 1 and cache.lookup("h", "/4", H()) is None
    assert cache.purge("h", "*") == 1 and len(cache) == 0 and cache.bytes == 0


async def test_cache_hit_miss_age_and_expiry(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    clock = FakeClock(1_700_000_000.0)
    p = await proxy(settings_for([b], RouteSpec(pool="p", cache=True)), clock=clock)
    url = f"http://127.0.0.1:{p.port}/cache?cache-control=max-age%3D60"
    async with client.get(url) as resp:
        assert resp.headers["X-Cache"] == "MISS"
        assert await resp.text() == "b0 - #1"
    clock.advance(7)
    async with client.get(url) as resp:
        assert resp.headers["X-Cache"] == "HIT"
        assert resp.headers["Age"] == "7"
        assert await resp.text() == "b0 - #1"
    async with client.head(url) as resp:
        assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
        assert resp.headers["Content-Length"] == str(len("b0 - #1"))
    async with client.get(url, headers={"Cache-Control": "no-cache"}) as resp:
        assert resp.headers["X-Cache"] == "MISS"  # client asked to bypass
        assert await resp.text() == "b0 - #2"
    clock.advance(61)
    async with client.get(url) as resp:
        assert resp.headers["X-Cache"] == "MISS"
        assert await resp.text() == "b0 - #3"
    # Upstream Age counts towards expiry.
    aged = f"http://127.0.0.1:{p.port}/cache?cache-control=max-age%3D10&age=9"
    async with client.get(aged) as resp:
        assert resp.headers["X-Cache"] == "MISS"
    clock.advance(2)
    async with client.get(aged) as resp:
        assert resp.headers["X-Cache"] == "MISS"
    # Uncacheable responses are never stored.
    nostore = f"http://127.0.0.1:{p.port}/cache?cache-control=no-store"
    for _ in range(2):
        async with client.get(nostore) as resp:
            assert resp.headers["X-Cache"] == "MISS"


async def test_cache_vary_and_purge(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b], RouteSpec(pool="p", cache=True)))
    url = f"http://127.0.0.1:{p.port}/cache?cache-control=max-age%3D60&vary=Accept-Language"
    texts = {}
    for lang in ("en", "fr", "en", "fr"):
        async with client.get(url, headers={"Accept-Language": lang}) as resp:
            texts.setdefault(lang, []).append((resp.headers["X-Cache"], await resp.text()))
    assert texts["en"] == [("MISS", "b0 en #1"), ("HIT", "b0 en #1")]
    assert texts["fr"] == [("MISS", "b0 fr #2"), ("HIT", "b0 fr #2")]
    async with client.request("PURGE", url) as resp:
        assert resp.status == 200 and (await resp.json())["purged"] == 2
    async with client.get(url, headers={"Accept-Language": "en"}) as resp:
        assert resp.headers["X-Cache"] == "MISS"


async def test_purge_refused_outside_allow_list(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    s = settings_for(
        [b], RouteSpec(pool="p", cache=True), cache=CacheSpec(purge_allow=("192.0.2.0/24",))
    )
    p = await proxy(s)
    async with client.request("PURGE", f"http://127.0.0.1:{p.port}/x") as resp:
        assert resp.status == 403


def test_encoding_choice() -> None:
    req = H(Accept_Encoding="gzip, br;q=0.5")
    html = H(Content_Type="text/html; charset=utf-8")
    assert choose_encoding("GET", 200, req, html, 10) == "br"
    assert choose_encoding("GET", 200, H(Accept_Encoding="gzip"), html, 10) == "gzip"
    assert choose_encoding("GET", 200, H(Accept_Encoding="br;q=0, gzip"), html, 10) == "gzip"
    assert choose_encoding("GET", 200, H(), html, 10) is None
    assert choose_encoding("HEAD", 200, req, html, 10) is None
    assert choose_encoding("GET", 206, req, html, 10) is None
    assert choose_encoding("GET", 200, req, H(Content_Type="image/png"), 10) is None
    assert (
        choose_encoding("GET", 200, req, H(Content_Type="text/css", Content_Encoding="gzip"), 10)
        is None
    )
    assert (
        choose_encoding("GET", 200, req, H(Content_Type="text/css", Content_Length="5"), 10) is None
    )
    assert choose_encoding("GET", 200, H(Accept_Encoding="*"), html, 10) == "br"
    assert accepted_encodings("gzip;q=0.3, identity") == {"gzip": 0.3, "identity": 1.0}


async def test_compression_through_proxy(backends, proxy, client) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    p = await proxy(settings_for([b], RouteSpec(pool="p", compress=True)))
    base = f"http://127.0.0.1:{p.port}/text?size=11000"
    plain = b"hello gslb " * 1000
    async with client.get(base, headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in resp.headers["Vary"]
        assert gzip.decompress(await resp.read()) == plain
    async with client.get(base, headers={"Accept-Encoding": "gzip, br"}) as resp:
        assert resp.headers["Content-Encoding"] == "br"
        body = await resp.read()
        assert len(body) < len(plain) / 10 and brotli.decompress(body) == plain
    async with client.get(base, headers={"Accept-Encoding": "identity"}) as resp:
        assert "Content-Encoding" not in resp.headers and await resp.read() == plain
    async with client.get(base + "&type=image/png", headers={"Accept-Encoding": "gzip"}) as resp:
        assert "Content-Encoding" not in resp.headers
    async with client.get(base + "&encoding=gzip", headers={"Accept-Encoding": "gzip, br"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"  # upstream's, untouched
        assert await resp.read() == plain


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_termination_with_sni(backends, proxy, ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (b,) = await backends(1)
    certs = []
    for host in ("a.example.test", "b.example.test"):
        leaf = ca.issue_cert(host)
        cert, key = tmp_path / f"{host}.pem", tmp_path / f"{host}.key"
        leaf.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        certs.append(CertSpec((host,), str(cert), str(key)))
    listeners = (
        ListenerSpec("127.0.0.1", 0, "https", certificates=tuple(certs)),
        ListenerSpec("127.0.0.1", 0, "http", redirect_https_port=8443),
    )
    p = await proxy(settings_for([b], listeners=listeners))
    https, http = p.ports
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with aiohttp.ClientSession() as session:
        for host in ("a.example.test", "b.example.test"):
            async with session.get(
                f"https://127.0.0.1:{https}/tls",
                ssl=ctx,
                server_hostname=host,
                headers={"Host": host},
            ) as resp:
                assert resp.status == 200
                data = await resp.json()
                assert data["headers"]["X-Forwarded-Proto"] == "https"
            _, writer = await asyncio.open_connection(
                "127.0.0.1", https, ssl=ctx, server_hostname=host
            )
            peer = writer.get_extra_info("peercert")
            assert [v for _, v in peer["subjectAltName"]] == [host]
            assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            writer.close()
            await writer.wait_closed()
        # TLS 1.2 is the floor; a 1.2-only client still gets in with an AEAD cipher.
        assert make_ssl_context(listeners[0]).minimum_version == ssl.TLSVersion.TLSv1_2
        tls12 = ssl.create_default_context()
        ca.configure_trust(tls12)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        _, writer = await asyncio.open_connection(
            "127.0.0.1", https, ssl=tls12, server_hostname="a.example.test"
        )
        assert (
            "GCM" in writer.get_extra_info("cipher")[0]
            or "CHACHA" in writer.get_extra_info("cipher")[0]
        )
        writer.close()
        await writer.wait_closed()
        async with session.get(
            f"http://127.0.0.1:{http}/x?y=1",
            allow_redirects=False,
            headers={"Host": "a.example.test"},
        ) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == "https://a.example.test:8443/x?y=1"
