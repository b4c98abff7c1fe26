"""Websocket pass-through: the upgrade is accepted from the client only once the upstream member
has accepted it, then frames are relayed both ways until either side closes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from .headers import request_headers
from .upstream_tls import server_name

if TYPE_CHECKING:
    from .pool import Pool
    from .server import ProxyServer

SKIP = (
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "host",
)


async def _pump(source: Any, sink: Any) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break


async def relay_websocket(
    proxy: ProxyServer, request: web.BaseRequest, pool: Pool, proto: str, info: dict[str, Any]
) -> web.StreamResponse:
    from .server import short_response

    order, _ = proxy._candidates(request, pool)
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    session = proxy._session(pool)
    upstream = None
    for member in order[: 1 + pool.spec.retries]:
        headers = request_headers(
            request.headers,
            request.remote or "",
            proto,
            member.name,
            proxy.settings.preserve_host,
            proxy.settings.trust_forwarded,
        )
        for name in SKIP:
            headers.popall(name, None)
        if proxy.settings.preserve_host and "Host" in request.headers:
            headers["Host"] = request.headers["Host"]
        scheme = "wss" if member.tls else "ws"
        url = URL(f"{scheme}://{member.name}{request.raw_path}", encoded=True)
        tls: dict[str, Any] = {}
        if member.tls:
            tls = {"ssl": pool.ssl, "server_hostname": server_name(pool.spec, member.host)}
        try:
            upstream = await session.ws_connect(
                url,
                **tls,
                headers=headers,
                protocols=protocols,
                autoping=False,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            pool.report(member, exc.status < 500)
            return short_response(502, "upstream refused the websocket upgrade")
        except (aiohttp.ClientError, OSError, TimeoutError):
            pool.report(member, False)
            continue
        pool.report(member, True)
        info["member"] = member.name
        break
    if upstream is None:
        return short_response(
            502 if order else 503, "bad gateway" if order else "no healthy upstream"
        )
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False
    )
    await client.prepare(request)
    try:
        tasks = [
            asyncio.create_task(_pump(client, upstream)),
            asyncio.create_task(_pump(upstream, client)),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await upstream.close()
        await client.close()
    return client
