"""Admin HTTP routes for health: status and manual overrides. The lead mounts them in the
DNS admin server (`app.add_routes(admin_routes(monitor))`).

`setter` stores an override somewhere else first (cluster mode: etcd); `synced` waits until the
node's workers answer from the new health snapshot, so a 200 means the drain is in force."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .monitor import HealthMonitor

MODES = ("down", "up", "none")


def admin_routes(
    monitor: HealthMonitor,
    *,
    setter: Callable[[str, str, str, float], Awaitable[None]] | None = None,
    synced: Callable[[], Awaitable[bool]] | None = None,
    unavailable: tuple[type[Exception], ...] = (),
) -> list[web.RouteDef]:
    async def get_health(request: web.Request) -> web.Response:
        return web.json_response(monitor.status(), dumps=_dumps)

    async def post_override(request: web.Request) -> web.Response:
        target = request.match_info["target"]
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, 'body must be JSON: {"mode": "down|up|none", "reason": "..."}')
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        mode = body.get("mode")
        reason = body.get("reason", "")
        if mode not in MODES:
            return _error(400, f"mode must be one of {', '.join(MODES)}")
        if not isinstance(reason, str):
            return _error(400, "reason must be a string")
        if mode != "none" and not reason.strip():
            return _error(400, "a reason is required to drain or force up a target")
        if target not in monitor.config.datacenters:
            return _error(404, f"unknown target {target!r}")
        drain = 0.0
        if body.get("drain") is not None:  # a timed drain: mode down over this window
            from ..steering.ramp import parse_duration

            try:
                drain = parse_duration(body["drain"])
            except ValueError as exc:
                return _error(400, f"drain: {exc}")
            if mode != "down":
                return _error(400, "drain needs mode down")
        try:
            if setter is not None:
                await setter(target, mode, reason.strip(), drain)
            else:
                monitor.set_override(target, mode, reason.strip(), drain=drain)
        except KeyError:
            return _error(404, f"unknown target {target!r}")
        except unavailable as exc:
            return _error(503, f"override not stored, nothing changed: {exc}")
        if synced is not None and not await synced():
            return _error(504, "override stored, but not every worker applied it in time")
        status = monitor.status()
        return web.json_response(
            {"target": target, "mode": mode, "health": status["targets"].get(target)},
            dumps=_dumps,
        )

    return [
        web.get("/v1/health", get_health),
        web.post("/v1/overrides/{target}", post_override),
    ]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
