from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, write_zones


@pytest.fixture
def zones_dir(tmp_path: Path) -> Path:
    return write_zones(tmp_path / "zones")


@pytest.fixture
def dns_server(zones_dir: Path) -> Iterator[ServerThread]:
    options = NodeOptions(zones_dir=str(zones_dir), listen=["127.0.0.1:0"])
    server = ServerThread(options).start()
    yield server
    server.stop()
