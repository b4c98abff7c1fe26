"""Shared helpers for the config, geo, steering and explain tests (no tests in here)."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

from gslb.clock import SYSTEM_CLOCK, Clock
from gslb.config.model import Config
from gslb.config.validate import load_config_text
from gslb.geo.locate import Locator, pack_client
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth
from gslb.steering.engine import Decision, SteeringEngine

ROOT = Path(__file__).resolve().parent.parent
GEOIP_CITY = str(ROOT / "geodata" / "gslb-test-city.mmdb")
GEOIP_COUNTRY = str(ROOT / "geodata" / "gslb-test-country.mmdb")
EXAMPLE = str(ROOT / "zones" / "example.yaml")
CONFIGS = ROOT / "tests" / "configs"

# Datacenters used by the inline configs: four continents, one address per family each.
DATACENTERS = """
datacenters:
  us-east: {latitude: 39.0438, longitude: -77.4874, ipv4: [192.0.2.11], ipv6: [2001:db8:100::11]}
  eu-west: {latitude: 53.3498, longitude: -6.2603, ipv4: [192.0.2.21], ipv6: [2001:db8:200::21]}
  ap-northeast: {latitude: 35.6762, longitude: 139.6503, ipv4: [198.51.100.31],
                 ipv6: [2001:db8:300::31]}
  sa-east: {latitude: -23.5505, longitude: -46.6333, ipv4: [198.51.100.41],
            ipv6: [2001:db8:400::41]}
"""


def config_from(services_yaml: str, datacenters: str = DATACENTERS, geoip: bool = True) -> Config:
    text = (f"geoip: {GEOIP_CITY}\n" if geoip else "") + textwrap.dedent(datacenters)
    text += "services:\n" + textwrap.indent(textwrap.dedent(services_yaml), "  ")
    return load_config_text(text, str(ROOT / "tests" / "inline.yaml"))


def snapshot(epoch: int = 1, **states: str) -> HealthSnapshot:
    """HealthSnapshot from keyword states; use underscores for dashes (us_east='down')."""
    return HealthSnapshot(
        epoch,
        MappingProxyType({k.replace("_", "-"): TargetHealth(v) for k, v in states.items()}),  # type: ignore[arg-type]
    )


class Harness:
    """A SteeringEngine over a config with a controllable health view and seeded rng."""

    def __init__(
        self, config: Config, seed: int = 7, cache_size: int = 65536, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.locator = Locator(config.geoip_path) if config.geoip_path else None
        self.health = HealthHolder()
        self.rng = random.Random(seed)
        # Answer maps inline on every health change, so scopes are deterministic.
        self.engine = SteeringEngine(
            config,
            self.locator,
            self.health,
            rng=self.rng,
            cache_size=cache_size,
            scope_maps="sync",
            clock=clock or SYSTEM_CLOCK,
        )
        self._epoch = 0

    def set_health(self, states: Mapping[str, str | TargetHealth]) -> None:
        self._epoch += 1
        targets = {
            k: v if isinstance(v, TargetHealth) else TargetHealth(v) for k, v in states.items()
        }  # type: ignore[arg-type]
        self.health.publish(HealthSnapshot(self._epoch, MappingProxyType(targets)))

    def decide(self, name: str, ip: str, prefix: int | None = None) -> Decision:
        fqdn = name if name.endswith(".") else name + "."
        if fqdn not in self.config.services:
            fqdn = f"{name}.example.test."  # short names for the shipped example
        service = self.config.services[fqdn]
        return self.engine.decide(service, *pack_client(ip, prefix))

    def close(self) -> None:
        if self.locator is not None:
            self.locator.close()


@contextmanager
def harness(
    config: Config, seed: int = 7, cache_size: int = 65536, clock: Clock | None = None
) -> Iterator[Harness]:
    h = Harness(config, seed, cache_size, clock)
    try:
        yield h
    finally:
        h.close()
