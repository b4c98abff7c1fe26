"""The `gslb` command: builds objects from arguments and hands over; decides nothing."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .logs import setup_logging


def _add_dns(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("dns", help="run the authoritative DNS server")
    parser.add_argument("--zones", default="zones", help="directory of <origin>.zone files")
    parser.add_argument("--config", help="GSLB configuration (YAML)")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to serve on, UDP and TCP (repeatable; default 127.0.0.1:5300)",
    )
    parser.add_argument("--geoip", help="GeoIP database path (overrides the config)")
    parser.add_argument("--workers", type=int, help="worker processes sharing the port")
    parser.add_argument("--edns-payload", type=int, help="EDNS UDP payload size (default 1232)")
    parser.add_argument("--tcp-idle-timeout", type=float, help="seconds (default 10)")
    parser.add_argument("--tcp-max-connections", type=int, help="total TCP connections")
    parser.add_argument("--tcp-max-per-client", type=int, help="TCP connections per address")
    parser.add_argument("--chaos-version", help="answer CHAOS TXT version.bind with this")
    parser.add_argument("--chaos-id", help="answer CHAOS TXT id.server/hostname.bind with this")
    parser.set_defaults(func=_run_dns)


def _run_dns(args: argparse.Namespace) -> int:
    from .dns.node import NodeOptions, run

    overrides = {
        key: value
        for key in (
            "edns_payload",
            "tcp_idle_timeout",
            "tcp_max_connections",
            "tcp_max_per_client",
            "chaos_version",
            "chaos_id",
        )
        if (value := getattr(args, key)) is not None
    }
    options = NodeOptions(
        zones_dir=args.zones,
        config_path=args.config,
        listen=args.listen,
        geoip=args.geoip,
        workers=args.workers,
        overrides=overrides,
    )
    return run(options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gslb", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gslb {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_dns(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
