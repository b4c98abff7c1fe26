"""CLI commands of the health subsystem: `gslb probe` and `gslb health override|status`.

The lead wires `add_commands(subparsers)` into gslb/cli.py; each command sets func(args)->int.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..logs import announce

DEFAULT_ADMIN = "http://127.0.0.1:8053"
DEFAULT_LISTEN = "127.0.0.1:8101"

log = logging.getLogger("gslb.health.cli")


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe",
        help="run a regional probe agent",
        description="Check every datacenter from this region and serve /v1/health "
        "(snapshot) and /v1/health/stream (server-sent events) to DNS nodes.",
    )
    p.add_argument("--config", help="gslb configuration file")
    p.add_argument("--octodns-config", metavar="FILE", help="octoDNS main config: probe its values")
    p.add_argument("--region", required=True, help="name of the region this agent probes from")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between stream heartbeats")
    p.set_defaults(func=cmd_probe)

    h = subparsers.add_parser("health", help="health status and manual overrides")
    hs = h.add_subparsers(dest="health_command", metavar="{override,status}")
    hs.required = True

    o = hs.add_parser(
        "override", help="drain (--down), force up (--up) or return to checks (--clear)"
    )
    o.add_argument("target", help="datacenter name")
    mode = o.add_mutually_exclusive_group(required=True)
    mode.add_argument("--down", dest="mode", action="store_const", const="down")
    mode.add_argument("--up", dest="mode", action="store_const", const="up")
    mode.add_argument("--clear", dest="mode", action="store_const", const="none")
    mode.add_argument(
        "--drain", metavar="DURATION", help="ramp down over a window (10m): DNS-level drain"
    )
    o.add_argument("--reason", default="", help="why (required with --down/--up/--drain)")
    o.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin URL (default {DEFAULT_ADMIN})")
    o.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="cluster mode: store the override in etcd (every node applies it) instead of "
        "asking one node's admin API",
    )
    o.add_argument("--etcd-prefix", default="/gslb/", help="key prefix (default /gslb/)")
    o.set_defaults(func=cmd_override)

    s = hs.add_parser("status", help="show aggregated health per target and region")
    s.add_argument("--admin", default=DEFAULT_ADMIN, help=f"admin URL (default {DEFAULT_ADMIN})")
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    s.set_defaults(func=cmd_status)


# ---- gslb probe ---------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    from ..config.schema import parse_hostport

    parsed = parse_hostport(text)
    if parsed is None:
        raise ValueError(f"--listen must be HOST:PORT, not {text!r}")
    return parsed.host, parsed.port


def cmd_probe(args: argparse.Namespace) -> int:
    from ..config.model import Config
    from ..config.sources import load_sources  # another module; loaded only when needed
    from ..errors import GslbError

    def load_config(_path: object = None) -> Config:
        """The same targets `gslb dns` checks: gslb's file and/or the octoDNS values."""
        config = load_sources(
            zones_dir=None, config_path=args.config, octodns_path=args.octodns_config
        ).config
        if config is None:
            raise GslbError("give --config FILE, --octodns-config FILE or both")
        return config

    try:
        host, port = parse_listen(args.listen)
        config = load_config()
    except (ValueError, GslbError) as exc:
        print(f"gslb probe: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(_run_probe(config, args, host, port, load_config))
    except OSError as exc:
        print(f"gslb probe: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1


async def _run_probe(config: Any, args: argparse.Namespace, host: str, port: int, load: Any) -> int:
    from .agent import Agent

    agent = Agent(config, args.region, heartbeat=args.heartbeat)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            agent.reload(load(args.config))
            log.info("configuration reloaded")
        except Exception as exc:  # a bad edit keeps the running config
            log.error("reload failed, keeping the running configuration: %s", exc)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        bound = await agent.start(host, port)
        announce(f"gslb probe: region {args.region} listening on {host}:{bound}")
        await stop.wait()
    finally:
        await agent.stop()
    return 0


# ---- gslb health override / status ----------------------------------------------------------


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"} if body is not None else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw.decode(errors="replace") or exc.reason}


def cmd_override(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"mode": args.mode, "reason": args.reason}
    if getattr(args, "drain", None):
        request = {"mode": "down", "reason": args.reason, "drain": args.drain}
    if request["mode"] != "none" and not args.reason.strip():
        print("gslb health override: --reason is required with --down/--up", file=sys.stderr)
        return 2
    if args.etcd:
        from ..cluster.cli import override_in_etcd

        return override_in_etcd(args)
    url = f"{args.admin.rstrip('/')}/v1/overrides/{urllib.parse.quote(args.target, safe='')}"
    try:
        status, body = _request(url, request)
    except (urllib.error.URLError, OSError) as exc:
        print(f"gslb health override: cannot reach {args.admin}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else body
        print(f"gslb health override: {error} (HTTP {status})", file=sys.stderr)
        return 1
    health = body.get("health") or {}
    print(f"{args.target}: {health.get('state', '?')} ({health.get('reason', '')})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status, body = _request(f"{args.admin.rstrip('/')}/v1/health")
    except (urllib.error.URLError, OSError) as exc:
        print(f"gslb health status: cannot reach {args.admin}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"gslb health status: HTTP {status}: {body}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print(format_status(body))
    return 0


def format_status(status: dict[str, Any]) -> str:
    lines = [
        f"mode {status.get('mode')}  quorum {status.get('quorum')}  "
        f"stale after {status.get('stale_after')}s  epoch {status.get('epoch')}"
    ]
    for region, r in sorted((status.get("regions") or {}).items()):
        age = r.get("age")
        age_text = f"{age:.1f}s ago" if isinstance(age, int | float) else "never"
        flag = "fresh" if r.get("fresh") else "STALE"
        err = f"  ({r['last_error']})" if r.get("last_error") else ""
        lines.append(f"  region {region:<16} {flag:<6} last report {age_text}{err}")
    for name, t in sorted((status.get("targets") or {}).items()):
        override = t.get("override")
        mark = f"  [override {override['mode']}: {override['reason']}]" if override else ""
        lines.append(f"{name:<20} {t.get('state', '?'):<8} {t.get('reason', '')}{mark}")
        for region, r in sorted((t.get("regions") or {}).items()):
            extra = f"  {r['last_error']}" if r.get("last_error") else ""
            stale = "" if r.get("fresh") else " (stale)"
            lines.append(f"    {region:<16} {r.get('state', '?')}{stale}{extra}")
    return "\n".join(lines)
