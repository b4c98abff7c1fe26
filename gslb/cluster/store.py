"""The fleet's intent in etcd: numbered generations and operator overrides, under one prefix.

    <prefix>current             {"number": N, "digest": "..."}: the generation every node serves
    <prefix>generations/<N>     GenerationSource JSON (config text and every zone file)
    <prefix>overrides/<target>  {"mode": "down"|"up", "reason": ..., "at": ...}

A publish writes generation N+1 and moves `current` in one transaction that only succeeds if
`current` is still what the publisher read, so two publishers never both think they won. The
last KEEP generations stay in etcd for inspection and rollback.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from ..health.aggregate import Override
from .etcd import EtcdClient, KeyValue, delete_op, mod_revision_is, put_op, range_op, retrying
from .generation import GenerationSource, source_from_json

KEEP = 10  # generations kept in etcd


def normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip() or "/gslb/"
    return prefix if prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class ClusterView:
    """One consistent read of the fleet's intent."""

    revision: int
    number: int  # 0: nothing published yet
    digest: str
    overrides: dict[str, Override]


def override_to_json(override: Override) -> str:
    return json.dumps(dataclasses.asdict(override), sort_keys=True)


def override_from_json(raw: bytes) -> Override | None:
    """None for a value this version cannot read (it is ignored, not fatal)."""
    try:
        data = json.loads(raw)
        known = {f.name for f in dataclasses.fields(Override)}
        override = Override(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError):
        return None
    return override if override.mode in ("down", "up") else None


class ClusterStore:
    def __init__(self, client: EtcdClient, prefix: str = "/gslb/") -> None:
        self.client = client
        self.prefix = normalise_prefix(prefix)

    @property
    def current_key(self) -> str:
        return self.prefix + "current"

    def generation_key(self, number: int) -> str:
        return f"{self.prefix}generations/{number:012d}"

    @property
    def overrides_prefix(self) -> str:
        return self.prefix + "overrides/"

    # -- reading ------------------------------------------------------------------------------

    async def view(self) -> ClusterView:
        """`current` and every override, at one revision (one linearizable transaction)."""
        _, revision, ranges = await self.client.txn(
            [], [range_op(self.current_key), range_op(self.overrides_prefix, prefix=True)]
        )
        current, overrides = ranges
        number, digest = _pointer(current)
        found: dict[str, Override] = {}
        for kv in overrides:
            override = override_from_json(kv.value)
            if override is not None:
                found[kv.key[len(self.overrides_prefix) :]] = override
        return ClusterView(revision, number, digest, found)

    async def generation(self, number: int) -> GenerationSource | None:
        kvs, _ = await self.client.get(self.generation_key(number))
        if not kvs:
            return None
        return source_from_json(kvs[0].value.decode(), f"etcd {self.generation_key(number)}")

    # -- writing ------------------------------------------------------------------------------

    async def publish(self, source: GenerationSource, deadline: float = 10.0) -> GenerationSource:
        """Write `source` as the next generation and make it current; returns it numbered."""

        async def attempt() -> GenerationSource | None:
            kvs, _ = await self.client.get(self.current_key)
            number, digest = _pointer(kvs)
            if number and digest == source.digest:
                return source.numbered(number, source.published_at or time.time())
            revision = kvs[0].mod_revision if kvs else 0
            numbered = source.numbered(number + 1, time.time())
            pointer = json.dumps({"number": numbered.number, "digest": numbered.digest})
            success = [
                put_op(self.generation_key(numbered.number), numbered.to_json()),
                put_op(self.current_key, pointer),
            ]
            if numbered.number > KEEP:
                success.append(delete_op(self.generation_key(numbered.number - KEEP)))
            ok, _, _ = await self.client.txn([mod_revision_is(self.current_key, revision)], success)
            return numbered if ok else None  # someone else published first: read again

        while True:
            result = await retrying("publish", attempt, deadline)
            if result is not None:
                return result  # type: ignore[no-any-return]

    async def set_override(
        self, target: str, override: Override | None, deadline: float = 10.0
    ) -> None:
        key = self.overrides_prefix + target
        if override is None:
            await retrying("override", lambda: self.client.delete(key), deadline)
        else:
            value = override_to_json(override)
            await retrying("override", lambda: self.client.put(key, value), deadline)


def _pointer(kvs: list[KeyValue]) -> tuple[int, str]:
    if not kvs:
        return 0, ""
    try:
        data: Any = json.loads(kvs[0].value)
        return int(data["number"]), str(data.get("digest", ""))
    except (ValueError, KeyError, TypeError):
        return 0, ""
