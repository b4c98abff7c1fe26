"""Admin HTTP routes for health: status and manual overrides. The lead mounts them in the
DNS admin server (`app.add_routes(admin_routes(monitor))`)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .monitor import HealthMonitor

MODES = ("down", "up", "none")


def admin_routes(monitor: HealthMonitor) -> list[web.RouteDef]:
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
            monitor.set_override(target, mode, reason.strip(), drain)
        except KeyError:
            return _error(404, f"unknown target {target!r}")
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
