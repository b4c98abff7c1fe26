"""The baseline: a minimal aiohttp reverse proxy (one shared ClientSession, streamed bodies,
round robin). Usage: python minimal_aiohttp_proxy.py PORT UPSTREAM [UPSTREAM ...]"""

import itertools
import sys

from aiohttp import ClientSession, TCPConnector, web

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "trailer",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
}
upstreams = itertools.cycle(sys.argv[2:])


async def on_startup(app: web.Application) -> None:
    app["session"] = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)


async def on_cleanup(app: web.Application) -> None:
    await app["session"].close()


async def handler(request: web.Request) -> web.StreamResponse:
    url = f"http://{next(upstreams)}{request.raw_path}"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    data = request.content if request.body_exists else None
    async with request.app["session"].request(
        request.method, url, headers=headers, data=data, allow_redirects=False
    ) as up:
        out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
        resp = web.StreamResponse(status=up.status, headers=out)
        if up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


app = web.Application()
app.on_startup.append(on_startup)
app.on_cleanup.append(on_cleanup)
app.router.add_route("*", "/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
