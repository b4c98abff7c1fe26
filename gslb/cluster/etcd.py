"""A small etcd v3 client over etcd's JSON gateway (/v3/kv/*, /v3/watch), with aiohttp.

Only what gslb needs: range, transactions, puts, deletes and a watch used as a wake-up. Every
request goes to the endpoint that answered last and moves on to the next one when it fails, so
losing one member (or the leader, during an election) costs a retry, not an outage. Keys and
values are base64 in the gateway's JSON; int64 fields arrive as strings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import GslbError

log = logging.getLogger("gslb.cluster.etcd")


class EtcdUnavailable(GslbError):
    """No endpoint answered (all down, no leader, or a request timed out everywhere)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with `prefix` (last byte + 1)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


def parse_endpoints(text: str | Sequence[str]) -> list[str]:
    """ "http://a:2379,http://b:2379" (or a list) -> base URLs; a bare HOST:PORT gets http://."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        item = item.strip().rstrip("/")
        if not item:
            continue
        out.append(item if "://" in item else f"http://{item}")
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        base64.b64decode(raw["key"]).decode(),
        base64.b64decode(raw.get("value", "")),
        int(raw.get("mod_revision", 0)),
        int(raw.get("create_revision", 0)),
    )


def range_op(key: str, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = prefix_end(key)
    return {"request_range": body}


def put_op(key: str, value: str) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def delete_op(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def mod_revision_is(key: str, revision: int) -> dict[str, Any]:
    """Compare for a transaction: the key was last written at `revision` (0: does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], timeout: float = 1.0) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None
        self.last_error: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for index in self._order():
            url = self.endpoints[index] + path
            try:
                async with self._http().post(
                    url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as resp:
                    text = await resp.text()
                    data = json.loads(text) if text else {}
                    if resp.status != 200:
                        raise EtcdUnavailable(data.get("error") or data.get("message") or text)
            except (aiohttp.ClientError, TimeoutError, EtcdUnavailable, ValueError) as exc:
                errors.append(f"{self.endpoints[index]}: {exc or type(exc).__name__}")
                continue
            self._preferred = index
            self.last_error = None
            assert isinstance(data, dict)
            return data
        self.last_error = "; ".join(errors)
        self._preferred = (self._preferred + 1) % len(self.endpoints)
        raise EtcdUnavailable(self.last_error)

    async def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> tuple[bool, int, list[list[KeyValue]]]:
        """(succeeded, revision, kvs of each range in the branch that ran)."""
        data = await self._post(
            "/v3/kv/txn",
            {"compare": list(compare), "success": list(success), "failure": list(failure)},
        )
        ranges = [
            [_kv(kv) for kv in r["response_range"].get("kvs", [])]
            for r in data.get("responses", [])
            if "response_range" in r
        ]
        revision = int(data.get("header", {}).get("revision", 0))
        return bool(data.get("succeeded", False)), revision, ranges

    async def get(self, key: str, prefix: bool = False) -> tuple[list[KeyValue], int]:
        body = range_op(key, prefix)["request_range"]
        data = await self._post("/v3/kv/range", body)
        kvs = [_kv(kv) for kv in data.get("kvs", [])]
        return kvs, int(data.get("header", {}).get("revision", 0))

    async def put(self, key: str, value: str) -> int:
        data = await self._post("/v3/kv/put", put_op(key, value)["request_put"])
        return int(data.get("header", {}).get("revision", 0))

    async def delete(self, key: str) -> int:
        data = await self._post("/v3/kv/deleterange", delete_op(key)["request_delete_range"])
        return int(data.get("header", {}).get("revision", 0))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[int]:
        """Yield the revision of each batch of changes under `prefix` from start_revision on
        (and once when the watch is set up, so the caller knows it is live).

        Ends by raising EtcdUnavailable when the stream breaks; the caller resumes from the last
        revision it has seen, on whichever endpoint answers then."""
        index = self._preferred
        url = self.endpoints[index] + "/v3/watch"
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": str(start_revision),
            }
        }
        try:
            async with self._http().post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            ) as resp:
                if resp.status != 200:
                    raise EtcdUnavailable(f"{url}: HTTP {resp.status}")
                while True:
                    line = await resp.content.readline()
                    if not line:
                        raise EtcdUnavailable(f"{url}: watch stream ended")
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result") or {}
                    if result.get("compact_revision") or result.get("canceled"):
                        # History we asked for is gone: a full read catches up instead.
                        yield int(result.get("header", {}).get("revision", 0))
                        raise EtcdUnavailable(f"{url}: watch canceled")
                    if result.get("events") or result.get("created"):
                        yield int(result.get("header", {}).get("revision", 0))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._preferred = (index + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"{url}: {exc or type(exc).__name__}") from None


async def retrying(what: str, call: Any, deadline: float = 10.0) -> Any:
    """Run `call()` until it succeeds or `deadline` seconds pass (a leader election takes a
    moment; an operator's publish or drain should ride through it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = 0.1
    while True:
        try:
            return await call()
        except EtcdUnavailable as exc:
            if loop.time() + delay >= end:
                raise EtcdUnavailable(f"{what}: {exc}") from None
            log.debug("%s: etcd unavailable (%s); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
