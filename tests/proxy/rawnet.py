"""Raw-socket peers for the proxy's framing tests: a backend that records every request exactly
as it parsed it off the wire, and a client that sends bytes and reads back parsed responses."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    """One request as the backend parsed it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    conn: int = 0

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


Handler = Callable[[Seen], tuple[bytes, bool]]  # -> (raw response, close after it)


def ok_response(req: Seen, seq: int) -> bytes:
    body = json.dumps({"seq": seq, "method": req.method, "target": req.target}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: secret/1\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), b"" if req.method == "HEAD" else body)
    )


class _BackendConn(asyncio.Protocol):
    def __init__(self, backend: RawBackend) -> None:
        self.backend = backend
        backend.connections += 1
        self.id = backend.connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.cur: Seen | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.open += 1
        self.backend.transports.append(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.open -= 1

    def data_received(self, data: bytes) -> None:
        self.backend.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.backend.errors.append(str(exc))
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.cur = Seen(
            self.parser.get_method().decode(),
            self.url.decode("latin-1"),
            self.parser.get_http_version(),
            self.headers,
            conn=self.id,
        )

    def on_body(self, body: bytes) -> None:
        assert self.cur is not None
        self.cur.body += body

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None and self.transport is not None
        self.backend.seen.append(req)
        if self.backend.handler is not None:
            raw, close = self.backend.handler(req)
        else:
            raw, close = ok_response(req, len(self.backend.seen)), False
        self.transport.write(raw)
        if close:
            self.transport.close()


@dataclass
class RawBackend:
    handler: Handler | None = None
    seen: list[Seen] = field(default_factory=list)
    raw: bytes = b""
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    port: int = 0
    server: asyncio.AbstractServer | None = None
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    async def start(self) -> RawBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _BackendConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def targets(self) -> list[str]:
        return [s.target for s in self.seen]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for transport in self.transports:
                transport.close()
            await self.server.wait_closed()


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class _Reader:
    def __init__(self, head: bool = False) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.interim: list[int] = []

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self.interim.append(status)
            return
        self.done.append(Response(status, self.headers, self.body))


@dataclass
class Exchange:
    responses: list[Response]
    closed: bool  # the proxy closed the connection
    raw: bytes
    interim: list[int]


async def exchange(
    port: int,
    data: bytes | list[bytes],
    expect: int,
    timeout: float = 5.0,
    wait_close: float = 0.3,
    pause: float = 0.0,
) -> Exchange:
    """Send `data` (a list: pieces with `pause` seconds between them) and read up to `expect`
    responses, then whether the connection gets closed within `wait_close` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    parts = data if isinstance(data, list) else [data]
    parsed = _Reader()
    raw = b""
    closed = False
    deadline = time.monotonic() + timeout

    async def send() -> None:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while len(parsed.done) < expect and time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                closed = True
                break
            raw += chunk
            try:
                parsed.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                break
            except httptools.HttpParserError:
                break
        if not closed and wait_close > 0:
            end = time.monotonic() + wait_close
            while time.monotonic() < end:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), end - time.monotonic())
                except (TimeoutError, ConnectionError):
                    closed = not isinstance(reader.exception(), type(None))
                    break
                if not chunk:
                    closed = True
                    break
                raw += chunk
                try:
                    parsed.parser.feed_data(chunk)
                except httptools.HttpParserError:
                    pass
    finally:
        sender.cancel()
        writer.close()
    return Exchange(parsed.done, closed, raw, parsed.interim)
