"""Walk a MaxMind DB search tree: every network as (first address, prefix, data offset).

The steering scope maps (gslb/steering/scopemap.py) need every network of the database, but
not every record decoded: most networks share a record (one per city), so the walk reads only
the tree and hands out data-section offsets; callers decode each distinct offset once with
`records()`. Format: https://maxmind.github.io/MaxMind-DB/ (search tree, then 16 zero bytes,
then the data section).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import maxminddb
from maxminddb.decoder import Decoder

NO_DATA = -1  # a network the database has no record for
ALIAS = -2  # an IPv6 subtree that aliases the IPv4 tree (::ffff:0:0/96, 2002::/16)


@dataclass
class MmdbTree:
    """The raw search tree of one database file, read once into memory."""

    buf: bytes
    node_count: int
    record_size: int
    ip_version: int
    database_type: str

    @classmethod
    def open(cls, path: str) -> MmdbTree:
        with maxminddb.open_database(path) as reader:
            meta = reader.metadata()
        with open(path, "rb") as fh:
            buf = fh.read()
        return cls(buf, meta.node_count, meta.record_size, meta.ip_version, meta.database_type)

    @property
    def tree_size(self) -> int:
        return self.node_count * self.record_size // 4

    def _children(self, node: int) -> tuple[int, int]:
        buf = self.buf
        size = self.record_size
        if size == 24:
            o = node * 6
            return int.from_bytes(buf[o : o + 3], "big"), int.from_bytes(buf[o + 3 : o + 6], "big")
        if size == 28:
            o = node * 7
            mid = buf[o + 3]
            left = ((mid & 0xF0) << 20) | int.from_bytes(buf[o : o + 3], "big")
            right = ((mid & 0x0F) << 24) | int.from_bytes(buf[o + 4 : o + 7], "big")
            return left, right
        o = node * 8
        return int.from_bytes(buf[o : o + 4], "big"), int.from_bytes(buf[o + 4 : o + 8], "big")

    def _ipv4_start(self) -> int:
        node = 0
        if self.ip_version == 6:
            for _ in range(96):
                if node >= self.node_count:
                    break
                node = self._children(node)[0]
        return node

    def networks(self, version: int) -> Iterator[tuple[int, int, int]]:
        """(first address, prefix length, data offset | NO_DATA | ALIAS), in address order,
        covering the whole IPv4 or IPv6 space without gaps."""
        bits = 32 if version == 4 else 128
        if version == 6 and self.ip_version == 4:
            yield 0, 0, NO_DATA
            return
        start = self._ipv4_start() if version == 4 else 0
        ipv4_node = self._ipv4_start() if version == 6 else -1
        count = self.node_count
        children = self._children
        # Depth-first, right child pushed first so networks come out in address order.
        stack: list[tuple[int, int, int]] = [(start, 0, 0)]
        pop = stack.pop
        push = stack.append
        while stack:
            node, depth, first = pop()
            if node >= count:
                if node == count:
                    yield first, depth, NO_DATA
                else:
                    yield first, depth, node - count - 16
                continue
            if depth == bits:  # a malformed tree deeper than the address: stop here
                yield first, depth, NO_DATA
                continue
            if node == ipv4_node and depth > 0:
                yield first, depth, ALIAS
                continue
            left, right = children(node)
            depth += 1
            push((right, depth, first | (1 << (bits - depth))))
            push((left, depth, first))

    def records(self) -> RecordDecoder:
        return RecordDecoder(self)


class RecordDecoder:
    """Decodes data-section records by offset (one decode per distinct offset is the caller's
    memo)."""

    def __init__(self, tree: MmdbTree) -> None:
        self._base = tree.tree_size + 16
        self._decoder = Decoder(tree.buf, self._base)

    def record(self, offset: int) -> Any:
        value, _ = self._decoder.decode(offset + self._base)
        return value
