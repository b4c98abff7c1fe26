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
    parser.add_argument(
        "--zones", help="directory of <origin>.zone files (default zones, or none with octoDNS)"
    )
    parser.add_argument("--config", help="GSLB configuration (YAML)")
    parser.add_argument(
        "--octodns-config",
        metavar="FILE",
        help="octoDNS main config: serve its YAML-provider zones and dynamic records",
    )
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to serve on, UDP and TCP (repeatable; default 127.0.0.1:5300)",
    )
    parser.add_argument("--geoip", help="GeoIP database path (overrides the config)")
    parser.add_argument(
        "--dnssec-keys",
        metavar="DIR",
        help="sign every zone with keys in DIR (BIND key files; overrides dns.dnssec.key_dir)",
    )
    parser.add_argument("--workers", type=int, help="worker processes sharing the port")
    parser.add_argument("--edns-payload", type=int, help="EDNS UDP payload size (default 1232)")
    parser.add_argument("--tcp-idle-timeout", type=float, help="seconds (default 10)")
    parser.add_argument("--tcp-max-connections", type=int, help="total TCP connections")
    parser.add_argument("--tcp-max-per-client", type=int, help="TCP connections per address")
    parser.add_argument("--chaos-version", help="answer CHAOS TXT version.bind with this")
    parser.add_argument("--chaos-id", help="answer CHAOS TXT id.server/hostname.bind with this")
    parser.add_argument(
        "--rrl-rate",
        type=int,
        metavar="N",
        help="responses/s per client network and class (default 200; 0 turns RRL off)",
    )
    parser.add_argument(
        "--rrl-slip",
        type=int,
        metavar="K",
        help="send every K-th limited response truncated (default 2; 0 never, 1 always)",
    )
    parser.add_argument("--rrl-log-only", action="store_true", help="count, do not limit")
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT|off",
        help="admin API (metrics, status, reload, overrides); default admin.listen or "
        "127.0.0.1:8053",
    )
    parser.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="cluster mode: follow the generations and overrides published in this etcd cluster",
    )
    parser.add_argument("--etcd-prefix", default="/gslb/", help="key prefix (default /gslb/)")
    parser.add_argument(
        "--state-file",
        help="this node's state file (overrides, last health, last good generation); "
        "default health.state_file",
    )
    parser.add_argument("--name", help="node name in /status and /metrics (default dns-1)")
    parser.set_defaults(func=_run_dns)


def _run_dns(args: argparse.Namespace) -> int:
    from .cluster.etcd import parse_endpoints
    from .dns.control import run
    from .dns.node import NodeOptions

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
        zones_dir=args.zones if args.zones or args.octodns_config else "zones",
        config_path=args.config,
        octodns_path=args.octodns_config,
        listen=args.listen,
        geoip=args.geoip,
        workers=args.workers,
        overrides=overrides,
        admin_listen=args.admin,
        etcd=parse_endpoints(args.etcd) if args.etcd else [],
        etcd_prefix=args.etcd_prefix,
        state_file=args.state_file,
        name=args.name,
        dnssec_keys=args.dnssec_keys,
        rrl_overrides={
            key: value
            for key, value in (
                ("rate", args.rrl_rate),
                ("slip", args.rrl_slip),
                ("log_only", True if args.rrl_log_only else None),
            )
            if value is not None
        },
    )
    return run(options)


def _add_run(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run", help="start the whole example stack on loopback (DNS, probes, proxies, backends)"
    )
    parser.add_argument("--config", default="zones/example.yaml")
    parser.add_argument("--zones", default="zones")
    parser.add_argument("--dns", default="127.0.0.1:5300", metavar="HOST:PORT")
    parser.add_argument("--admin", default="127.0.0.1:8053", metavar="HOST:PORT")
    parser.add_argument("--backend-port-base", type=int, default=9100)
    parser.add_argument(
        "--state-dir",
        help="state files (and etcd data) go here; default $XDG_STATE_HOME/gslb or "
        "~/.local/state/gslb, never the checkout",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run as a fleet: 3 etcd members, the config published to them, 2 DNS nodes",
    )
    parser.add_argument("--etcd-port-base", type=int, default=23790, help="etcd ports from here")
    parser.set_defaults(func=_run_stack)


def _run_stack(args: argparse.Namespace) -> int:
    import asyncio

    from .dns.control import run_loop
    from .errors import ConfigError
    from .stack import StackOptions, run_stack, venv_bin_on_path

    venv_bin_on_path()
    options = StackOptions(
        config_path=args.config,
        zones_dir=args.zones,
        dns_listen=args.dns,
        admin_listen=args.admin,
        backend_base_port=args.backend_port_base,
        state_dir=args.state_dir,
        cluster=args.cluster,
        etcd_base_port=args.etcd_port_base,
    )
    try:
        return run_loop(run_stack(options))
    except ConfigError as exc:
        print(f"gslb run: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        return 1


def _add_demo(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="break or repair a datacenter of `gslb run`")
    parser.add_argument("action", choices=("fail", "recover"))
    parser.add_argument("datacenter")
    parser.add_argument("--admin", default="http://127.0.0.1:8053", help="the stack's admin URL")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    url = f"{args.admin.rstrip('/')}/v1/demo/{args.action}/{args.datacenter}"
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        print(f"gslb demo: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gslb demo: cannot reach {url}: {exc} (is `make run` going?)", file=sys.stderr)
        return 1
    verb = "failed" if args.action == "fail" else "recovered"
    print(f"datacenter {body.get('datacenter', args.datacenter)} {verb}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gslb", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gslb {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_dns(subparsers)
    _add_run(subparsers)
    _add_demo(subparsers)
    from .cluster.cli import add_commands as add_cluster_commands
    from .dnssec.commands import add_parser as add_dnssec_commands
    from .health.cli import add_commands as add_health_commands
    from .proxy.cli import add_commands as add_proxy_commands
    from .steering.cli import add_commands as add_steering_commands

    add_steering_commands(subparsers)
    add_health_commands(subparsers)
    add_cluster_commands(subparsers)
    add_dnssec_commands(subparsers)
    add_proxy_commands(subparsers)
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
