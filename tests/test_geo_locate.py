"""GeoIP location: the shipped test database, prefix handling, the LRU cache, Country DBs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gslb.errors import ConfigError
from gslb.geo.locate import Locator, location_from_record, pack_client

from .test_steering_support import GEOIP_CITY, GEOIP_COUNTRY, ROOT


@pytest.fixture
def locator():
    with Locator(GEOIP_CITY) as loc:
        yield loc


@pytest.mark.parametrize(
    "ip, continent, country, subdivision, city, network",
    [
        ("127.1.2.3", "NA", "US", "CA", "San Francisco", "127.1.0.0/16"),
        ("127.2.0.1", "EU", "DE", "HE", "Frankfurt am Main", "127.2.0.0/16"),
        ("127.3.9.9", "AS", "JP", "13", "Tokyo", "127.3.0.0/16"),
        ("127.4.0.1", "SA", "BR", "SP", "Sao Paulo", "127.4.0.0/16"),
        ("127.5.0.1", "OC", "AU", "NSW", "Sydney", "127.5.0.0/16"),
        ("127.8.0.1", "AF", "ZA", "GP", "Johannesburg", "127.8.0.0/16"),
        ("198.51.100.7", "EU", "DE", "BE", "Berlin", "198.51.100.0/24"),
        ("2001:db8:3::1", "AS", "JP", "13", "Tokyo", "2001:db8:3::/48"),
        ("2001:db8:a:100::1", "EU", "GB", "SCT", "Edinburgh", "2001:db8:a:100::/56"),
    ],
)
def test_locates_networks_on_every_continent(
    locator, ip, continent, country, subdivision, city, network
):
    loc = locator.locate(*pack_client(ip))
    assert loc is not None
    assert (loc.continent, loc.country, loc.subdivision, loc.city) == (
        continent,
        country,
        subdivision,
        city,
    )
    assert loc.network == network
    assert loc.prefix_len == int(network.split("/")[1])
    assert loc.latitude is not None and loc.longitude is not None


def test_unknown_network_still_has_a_network(locator):
    loc = locator.locate(*pack_client("127.0.0.1"))
    assert loc is not None and not loc.known
    assert loc.continent is None and loc.latitude is None
    assert (loc.network, loc.prefix_len) == ("127.0.0.0/16", 16)


def test_partial_records_country_only_and_continent_only(locator):
    nz = locator.locate(*pack_client("127.30.1.1"))
    assert (nz.continent, nz.country, nz.subdivision, nz.city) == ("OC", "NZ", None, None)
    assert nz.latitude == pytest.approx(-40.9006)
    eu = locator.locate(*pack_client("127.31.1.1"))
    assert (eu.continent, eu.country, eu.latitude) == ("EU", None, None)


def test_network_is_the_database_network_of_the_masked_address(locator):
    # Database: 127.20.32.0/24 is Lyon inside 127.20.0.0/16 Paris.
    exact = locator.locate(*pack_client("127.20.32.0", 24))
    assert (exact.city, exact.network, exact.prefix_len) == ("Lyon", "127.20.32.0/24", 24)
    # A /20 source spanning Lyon and Paris: the answer is Lyon's, for Lyon's /24 only.
    wide = locator.locate(*pack_client("127.20.32.0", 20))
    assert (wide.city, wide.network, wide.prefix_len) == ("Lyon", "127.20.32.0/24", 24)
    host = locator.locate(*pack_client("127.20.16.9"))
    assert (host.city, host.network) == ("Marseille", "127.20.16.0/20")


def test_prefix_zero_means_no_location(locator):
    assert locator.locate(*pack_client("0.0.0.0", 0)) is None
    assert locator.locate(*pack_client("::", 0)) is None


def test_bulk_networks_for_benchmarks(locator):
    first = locator.locate(*pack_client("10.0.0.1"))
    last = locator.locate(*pack_client("10.79.255.1"))
    assert first.known and last.known
    assert (first.network, last.network) == ("10.0.0.0/24", "10.79.255.0/24")
    beyond = locator.locate(*pack_client("10.80.0.1"))
    assert not beyond.known


def test_cache_is_per_client_network_and_bounded_lru():
    with Locator(GEOIP_CITY, cache_size=2) as loc:
        a, b, c = (pack_client(ip, 24) for ip in ("127.1.0.0", "127.2.0.0", "127.3.0.0"))
        first = loc.locate(*a)
        assert loc.locate(*a) is first  # hit returns the cached object
        assert (loc.hits, loc.misses) == (1, 1)
        loc.locate(*b)
        loc.locate(*a)  # a is now most recently used
        loc.locate(*c)  # evicts b, the least recently used
        assert loc.cache_len() == 2
        misses = loc.misses
        loc.locate(*a)
        assert loc.misses == misses
        loc.locate(*b)
        assert loc.misses == misses + 1


def test_country_database_gives_country_without_coordinates():
    with Locator(GEOIP_COUNTRY) as loc:
        assert loc.database_type == "GeoLite2-Country"
        got = loc.locate(*pack_client("127.3.0.1"))
        assert (got.continent, got.country, got.latitude, got.subdivision) == (
            "AS",
            "JP",
            None,
            None,
        )


def test_bad_database_path_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        Locator(str(tmp_path / "missing.mmdb"))
    assert "cannot open GeoIP database" in str(err.value)
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database")
    with pytest.raises(ConfigError):
        Locator(str(junk))


def test_location_from_record_tolerates_odd_records():
    loc = location_from_record({"country": "weird", "subdivisions": []}, "10.0.0.0/8", 8)
    assert (loc.country, loc.subdivision, loc.network) == (None, None, "10.0.0.0/8")
    reg = location_from_record({"registered_country": {"iso_code": "FR"}}, "10.0.0.0/8", 8)
    assert reg.country == "FR"


def test_pack_client_masks_and_checks_prefix():
    assert pack_client("127.1.2.3", 16) == (bytes([127, 1, 0, 0]), 16)
    assert pack_client("2001:db8::1") == (bytes.fromhex("20010db8" + "00" * 11 + "01"), 128)
    with pytest.raises(ValueError):
        pack_client("127.0.0.1", 33)


def test_shipped_database_is_reproducible_from_the_csv(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("build_testdb", ROOT / "geodata/build_testdb.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.read_rows(ROOT / "geodata" / "networks.csv")
    paths = mod.build(rows, tmp_path)
    for path in paths:
        assert path.read_bytes() == (ROOT / "geodata" / path.name).read_bytes(), path.name
