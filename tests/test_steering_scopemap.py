"""Answer maps against the per-network path: every address inside a returned scope network
gets the same answer, for random clients, sources and health (the test City database)."""

from __future__ import annotations

import ipaddress
import random
from types import MappingProxyType

import pytest

from gslb.config.validate import load_config
from gslb.geo.locate import Locator, pack_client
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth
from gslb.steering.engine import SteeringEngine
from gslb.steering.scopemap import widest_scope

from .test_steering_support import EXAMPLE

DCS = ["us-east", "eu-west", "ap-northeast", "sa-east", "us-west", "ap-southeast"]


def test_widest_scope_arithmetic():
    # [10.0.0.0, 10.255.255.255] holds 10.1.2.3 in a /8; without 10.0.0.0, 10.200/9 still fits.
    lo, hi = int(ipaddress.ip_address("10.0.0.0")), int(ipaddress.ip_address("10.255.255.255"))
    assert widest_scope(int(ipaddress.ip_address("10.1.2.3")), lo, hi, 32) == 8
    assert widest_scope(int(ipaddress.ip_address("10.200.0.0")), lo + 1, hi, 32) == 9
    assert widest_scope(int(ipaddress.ip_address("10.0.0.1")), lo + 1, hi, 32) == 32
    assert widest_scope(5, 0, 2**32 - 1, 32) == 0


@pytest.mark.parametrize("seed", range(6))
def test_every_address_in_the_scope_network_gets_the_same_answer(seed: int) -> None:
    rng = random.Random(seed)
    config = load_config(EXAMPLE)
    down = set(rng.sample(DCS, rng.randrange(0, 4)))
    states = {n: TargetHealth("down" if n in down else "up") for n in DCS}
    health = HealthHolder(HealthSnapshot(1, MappingProxyType(states)))
    with Locator(config.geoip_path) as locator:
        mapped = SteeringEngine(config, locator, health, scope_maps="sync")
        truth = SteeringEngine(config, locator, health, scope_maps="off")
        for name in ("www.example.test.", "multi.example.test."):
            service = config.services[name]
            for _ in range(60):
                if rng.random() < 0.8:
                    ip = f"127.{rng.randrange(0, 24)}.{rng.randrange(256)}.{rng.randrange(256)}"
                    prefix = rng.choice([8, 12, 16, 20, 24, 32])
                else:
                    ip = f"10.{rng.randrange(80)}.{rng.randrange(256)}.0"
                    prefix = rng.choice([16, 24])
                address, plen = pack_client(ip, prefix)
                d = mapped.decide(service, address, plen)
                assert d.datacenters == truth.decide(service, address, plen).datacenters
                net = ipaddress.ip_network(
                    (int.from_bytes(address, "big"), d.scope_prefix), strict=False
                )
                for _ in range(8):
                    inside = net.network_address + rng.randrange(net.num_addresses)
                    a2, p2 = pack_client(str(inside), 32)
                    assert truth.decide(service, a2, p2).datacenters == d.datacenters, (
                        name,
                        ip,
                        prefix,
                        d.scope_prefix,
                        str(inside),
                        sorted(down),
                    )


def test_location_index_built_in_a_child_process_equals_the_local_one(monkeypatch) -> None:
    from gslb.geo import index as geo_index

    path = load_config(EXAMPLE).geoip_path
    assert path is not None
    local = geo_index.LocationIndex(path)
    monkeypatch.setattr(geo_index, "SUBPROCESS_BYTES", 0)
    import os

    child = geo_index.build_index(path, os.stat(path).st_size)
    assert list(child.v4.starts) == list(local.v4.starts)
    assert list(child.v4.places) == list(local.v4.places)
    assert child.places == local.places and child.v6.starts == local.v6.starts
