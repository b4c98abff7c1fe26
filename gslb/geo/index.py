"""The whole GeoIP database as sorted address ranges, each with the place steering sees.

Built once per database file by walking its search tree (gslb/geo/tree.py). Adjacent networks
whose records give the same steering place (continent, country, subdivision, coordinates:
what geo rules and geoproximity read) are merged, so a city's many networks become one
range wherever they touch. The steering scope maps (gslb/steering/scopemap.py) are built on
top: per service, then per health snapshot.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import maxminddb

from .locate import Location, location_from_record
from .tree import ALIAS, NO_DATA, MmdbTree

UNMAPPED = -1  # place id of a range the index does not describe (an IPv4 alias inside IPv6)
# IPv4 range starts in an array('Q') (8 bytes each: a City database has millions of
# ranges), IPv6 ones in a list of Python ints (128 bits do not fit an array).
Starts = Sequence[int]
PlaceKey = tuple[str | None, str | None, str | None, float | None, float | None]


@dataclass
class Ranges:
    """One address family: range i covers [starts[i], starts[i+1]) and has place places[i]."""

    bits: int
    starts: Starts
    places: array  # type: ignore[type-arg]  # array('i')


class LocationIndex:
    """Every address of both families -> a place id; `places[id]` is its Location."""

    def __init__(self, path: str) -> None:
        self.path = path
        tree = MmdbTree.open(path)
        self.database_type = tree.database_type
        self.places: list[Location] = []
        self._ids: dict[PlaceKey, int] = {}
        with maxminddb.open_database(path) as reader:
            self.v4 = self._ranges(tree, reader, 4)
            self.v6 = self._ranges(tree, reader, 6)

    def _place(self, record: object) -> int:
        loc = location_from_record(record, "", 0)
        key: PlaceKey = (loc.continent, loc.country, loc.subdivision, loc.latitude, loc.longitude)
        pid = self._ids.get(key)
        if pid is None:
            pid = self._ids[key] = len(self.places)
            self.places.append(loc)
        return pid

    def _ranges(self, tree: MmdbTree, reader: maxminddb.Reader, version: int) -> Ranges:
        bits = 32 if version == 4 else 128
        make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        by_offset: dict[int, int] = {}
        starts: array | list[int] = array("Q") if version == 4 else []  # type: ignore[type-arg]
        places = array("i")
        last = -3
        for first, _plen, offset in tree.networks(version):
            pid = by_offset.get(offset)
            if pid is None:
                if offset == ALIAS:
                    pid = UNMAPPED
                elif offset == NO_DATA:
                    pid = self._place(None)
                else:
                    # One C lookup per distinct record: cheaper than decoding it in Python.
                    pid = self._place(reader.get(make(first)))
                by_offset[offset] = pid
            if pid != last:
                starts.append(first)
                places.append(pid)
                last = pid
        return Ranges(bits, starts, places)

    def family(self, version: int) -> Ranges:
        return self.v4 if version == 4 else self.v6

    def range_count(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)


_shared: dict[tuple[str, int, int], LocationIndex] = {}
_shared_lock = threading.Lock()
# Walking a real City database takes tens of seconds of CPU: do it in a child process, so the
# DNS worker's event loop does not share the interpreter lock with it (small test databases
# are walked in place).
SUBPROCESS_BYTES = 4 << 20


def build_index(path: str, size: int) -> LocationIndex:
    if size < SUBPROCESS_BYTES:
        return LocationIndex(path)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(LocationIndex, path).result()
    except (OSError, RuntimeError, EOFError):  # no child process here: walk in place
        return LocationIndex(path)


def shared_index(path: str) -> LocationIndex:
    """One index per database file and version on disk, per process: a reload of the
    configuration does not walk an unchanged database again."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    with _shared_lock:
        index = _shared.get(key)
        if index is None:
            index = build_index(path, st.st_size)
            for old in [k for k in _shared if k[0] == key[0]]:
                del _shared[old]  # the database was replaced: drop the old version
            _shared[key] = index
        return index
