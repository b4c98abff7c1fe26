"""`gslb proxy`: quick mode (flags only) or full mode (--config FILE --region NAME).

Builds settings and runs the server; decides nothing else. With --workers N the listening
sockets are shared by N processes through SO_REUSEPORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..logs import announce
from .balancers import BALANCER_NAMES
from .settings import ProxySettings
from .share import WorkerShare


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="quick mode: host:port to listen on (e.g. 127.0.0.1:8000)")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="HOST:PORT[=WEIGHT]",
        help="quick mode: an upstream server (repeat for more)",
    )
    p.add_argument("--balance", default="round_robin", choices=BALANCER_NAMES)
    p.add_argument(
        "--hash-key", default="ip", help="with --balance hash: ip, uri, header:NAME or cookie:NAME"
    )
    p.add_argument("--health-path", help="quick mode: HTTP path actively checked on each upstream")
    p.add_argument("--tcp-checks", action="store_true", help="quick mode: TCP-connect checks")
    p.add_argument("--check-interval", type=float, default=2.0, help="seconds between checks")
    p.add_argument("--min-healthy", type=int, default=1, help="members up for /health to be 200")
    p.add_argument(
        "--capacity", type=float, help="quick mode: requests/s this proxy is sized for (reported)"
    )
    p.add_argument("--access-log", default="off", choices=("off", "combined", "json"))
    p.add_argument("--config", help="full mode: the gslb YAML file (its proxy: section)")
    p.add_argument("--region", help="full mode: which region of proxy.regions to serve")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    # SUPPRESS: when gslb's main parser already took --log-level, do not reset it here.
    p.add_argument("--log-level", default=argparse.SUPPRESS)


def build_settings(args: argparse.Namespace) -> ProxySettings:
    if args.config:
        if not args.region:
            raise ConfigError("--config needs --region")
        from .config import load_settings

        settings = load_settings(args.config, args.region)
        if args.access_log != "off":
            import dataclasses

            settings = dataclasses.replace(settings, access_log=args.access_log)
        return settings
    if not args.listen or not args.upstream:
        raise ConfigError("quick mode needs --listen and at least one --upstream (or --config)")
    from .quick import quick_settings

    try:
        return quick_settings(
            args.listen,
            args.upstream,
            args.balance,
            hash_key=args.hash_key,
            health_path=args.health_path,
            min_healthy=args.min_healthy,
            check_interval=args.check_interval,
            tcp_checks=args.tcp_checks,
            access_log=args.access_log,
            capacity=args.capacity,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _serve(settings: ProxySettings, reuse_port: bool, share: WorkerShare | None) -> None:
    from .quick import serve

    server = await serve(settings, reuse_port=reuse_port, share=share)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    names = ", ".join(
        f"{lst.mode}://{lst.host}:{port}"
        for lst, port in zip(settings.listeners, server.ports, strict=True)
    )
    announce(f"gslb proxy [{os.getpid()}] listening on {names}")
    try:
        await stop.wait()
    finally:
        await server.close()


def _run_loop(settings: ProxySettings, reuse_port: bool, share: WorkerShare | None = None) -> None:
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # uvloop is optional (e.g. on Windows)
        runner = asyncio.run
    runner(_serve(settings, reuse_port, share))


def _worker(settings: ProxySettings, share_dir: str, index: int) -> None:
    """One of --workers N processes: dies with its parent, shares the port (SO_REUSEPORT)."""
    if sys.platform == "linux":
        import ctypes

        # PR_SET_PDEATHSIG: a parent killed without a chance to forward SIGTERM (SIGKILL, OOM)
        # must not leave orphan workers holding the port.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    _run_loop(settings, reuse_port=True, share=WorkerShare(share_dir, index))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(  # a no-op when gslb's main CLI configured logging already
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = build_settings(args)
    except ConfigError as exc:
        print(f"gslb proxy: configuration error:\n{exc}", file=sys.stderr)
        return 2
    if args.access_log != "off":
        logging.getLogger("gslb.proxy.access").setLevel(logging.INFO)
    workers = max(1, args.workers)
    if workers == 1:
        _run_loop(settings, reuse_port=False)
        return 0
    if any(lst.port == 0 for lst in settings.listeners):
        print("gslb proxy: --workers > 1 needs fixed ports", file=sys.stderr)
        return 2
    ctx = multiprocessing.get_context("fork")
    # Where the workers publish their load and RTT tables so any of them reports the whole
    # proxy (share.py); removed when they are all gone.
    share_dir = tempfile.mkdtemp(prefix="gslb-proxy-")
    procs = [ctx.Process(target=_worker, args=(settings, share_dir, i)) for i in range(workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for proc in procs:
            proc.join()
    finally:
        shutil.rmtree(share_dir, ignore_errors=True)
    return max((proc.exitcode or 0) for proc in procs)


def add_commands(subparsers: Any) -> None:
    """Register `proxy` on the gslb CLI's subparsers (sets func=run)."""
    p = subparsers.add_parser(
        "proxy",
        help="regional HTTP/TCP reverse proxy and load balancer",
        description="Quick mode: --listen and --upstream. Full mode: --config FILE --region NAME.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gslb")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
