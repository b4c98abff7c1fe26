"""The pure parts of cluster mode: generations as values, what to fetch, override records,
the `cluster:` section, and the worker pipe's snapshot form."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from gslb.cluster.etcd import parse_endpoints, prefix_end
from gslb.cluster.generation import read_source, source_from_json, zones_directory
from gslb.cluster.store import ClusterView, override_from_json, override_to_json
from gslb.cluster.watch import generation_to_fetch
from gslb.config.yaml_loader import load_yaml_text
from gslb.dns.settings import parse_cluster
from gslb.dns.workers import snapshot_from_wire, snapshot_to_wire
from gslb.errors import ConfigError
from gslb.health.aggregate import Override
from gslb.health.snapshot import HealthSnapshot, TargetHealth

from .stackhelpers import write_node_files


def test_a_generation_round_trips_and_its_digest_is_checked(tmp_path: Path) -> None:
    config, zones = write_node_files(tmp_path)
    source = read_source(str(config), str(zones), absolute=True).numbered(7, 1.5)
    assert source.config_path == str(config.resolve())
    assert [name for name, _ in source.zones] == ["example.test.zone"]
    again = source_from_json(source.to_json())
    assert again == source and again.digest == source.digest and again.label.startswith("7/")
    tampered = source.to_json().replace("192.0.2.53", "192.0.2.54")
    with pytest.raises(ConfigError, match="digest"):
        source_from_json(tampered, "etcd key")
    with pytest.raises(ConfigError, match="etcd key:0: malformed generation"):
        source_from_json("{]", "etcd key")


def test_zone_files_are_loaded_from_the_operators_directory_when_unchanged(
    tmp_path: Path,
) -> None:
    config, zones = write_node_files(tmp_path)
    source = read_source(str(config), str(zones))
    with zones_directory(source, str(zones)) as directory:
        assert directory == str(zones)
    (zones / "example.test.zone").write_text("changed since it was read")
    with zones_directory(source, str(zones)) as directory:
        assert directory != str(zones)
        assert (Path(directory) / "example.test.zone").read_text() == source.zones[0][1]


def test_what_a_node_fetches_after_a_read() -> None:
    view = ClusterView(revision=9, number=3, digest="abc", overrides={})
    assert generation_to_fetch(view, applied=2, rejected=(0, "")) == 3
    assert generation_to_fetch(view, applied=3, rejected=(0, "")) is None
    assert generation_to_fetch(view, applied=2, rejected=(3, "abc")) is None  # refused here
    assert generation_to_fetch(ClusterView(1, 0, "", {}), applied=0, rejected=(0, "")) is None


def test_override_records() -> None:
    override = Override("down", "maintenance", 12.5)
    assert override_from_json(override_to_json(override).encode()) == override
    assert override_from_json(b'{"mode": "sideways", "reason": ""}') is None
    assert override_from_json(b"not json") is None
    # A field a newer version adds is ignored, not fatal.
    assert override_from_json(b'{"mode": "up", "reason": "r", "at": 1, "later": 2}') == Override(
        "up", "r", 1
    )


def test_cluster_section() -> None:
    raw = load_yaml_text(
        "cluster:\n  etcd: [http://a:2379, 'b:2379']\n  prefix: /fleet\n", "c.yaml"
    )
    settings, reasons = parse_cluster(raw["cluster"])
    assert reasons == [] and settings.etcd == ("http://a:2379", "b:2379")
    assert settings.prefix == "/fleet/"
    assert parse_endpoints(settings.etcd) == ["http://a:2379", "http://b:2379"]
    raw = load_yaml_text("cluster:\n  etcd: 5\n  prefix: x\n  nope: 1\n", "c.yaml")
    _, reasons = parse_cluster(raw["cluster"])
    assert [str(r) for r in reasons] == [
        "c.yaml:2:3: cluster.etcd: must be a URL or a list of URLs",
        "c.yaml:3:3: cluster.prefix: must be a key prefix like /gslb/",
        "c.yaml:4:3: cluster.nope: unknown key (expected one of: etcd, prefix)",
    ]


def test_prefix_range_end() -> None:
    import base64

    assert base64.b64decode(prefix_end("/gslb/")) == b"/gslb0"


def test_health_snapshot_crosses_the_worker_pipe() -> None:
    import pickle
    from dataclasses import fields

    # Every field set away from its default: a field the wire forgot would come back default.
    full = TargetHealth(
        "up", "draining", MappingProxyType({"eu": "up"}), 3.0, 10.0, 70.0, 120.5, 400.0
    )
    defaults = {f.name: f.default for f in fields(TargetHealth) if f.name != "regions"}
    assert all(getattr(full, name) != default for name, default in defaults.items())
    snapshot = HealthSnapshot(
        4,
        MappingProxyType(
            {
                "dc1": TargetHealth("down", "override", MappingProxyType({"eu": "up"}), 3.0),
                "dc2": full,
            }
        ),
        MappingProxyType({"10.99.0.0/24": {"dc1": (0.04, 100.0), "dc2": (0.12, 101.0)}}),
    )
    again = snapshot_from_wire(pickle.loads(pickle.dumps(snapshot_to_wire(snapshot))))
    assert again.epoch == 4 and again.targets == snapshot.targets
    assert dict(again.latency) == dict(snapshot.latency)
