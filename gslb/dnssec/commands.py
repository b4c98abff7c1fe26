"""`gslb dnssec`: keygen, ds, list, add, retire. Builds objects from arguments; the key logic
lives in keys.py. Times are UTC, as YYYYMMDDHHMMSS, `now`, or `+N[smhdw]` from now."""

from __future__ import annotations

import argparse
import sys
import time

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("dnssec", help="DNSSEC keys: create, list, roll, print DS")
    commands = parser.add_subparsers(dest="dnssec_command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("zone", help="zone name, e.g. example.test")
        sub.add_argument("--dir", required=True, help="key directory (BIND key files)")

    keygen = commands.add_parser(
        "keygen", help="create a key pair (a CSK by default; --ksk/--zsk for a split pair)"
    )
    common(keygen)
    _algorithm(keygen)
    keygen.add_argument("--ksk", action="store_true", help="create a key-signing key")
    keygen.add_argument("--zsk", action="store_true", help="create a zone-signing key")
    keygen.add_argument("--split", action="store_true", help="create a KSK and a ZSK")
    keygen.set_defaults(func=run, dnssec_func=_keygen)

    ds = commands.add_parser("ds", help="print the DS record(s) to give to the parent zone")
    common(ds)
    ds.add_argument("--digest", default="SHA256", choices=["SHA256", "SHA384"])
    ds.set_defaults(func=run, dnssec_func=_ds)

    listing = commands.add_parser("list", help="list the zone's keys and their states")
    common(listing)
    listing.set_defaults(func=run, dnssec_func=_list)

    add = commands.add_parser(
        "add", help="add a key for a rollover: published now, signing from --activate"
    )
    common(add)
    _algorithm(add)
    add.add_argument(
        "--role", choices=["csk", "zsk", "ksk"], default="csk", help="key role (default csk)"
    )
    add.add_argument(
        "--activate",
        default="+1d",
        metavar="TIME",
        help="when it starts signing (default +1d: wait out the DNSKEY TTL first)",
    )
    add.add_argument("--publish", default="now", metavar="TIME", help="when it is published")
    add.set_defaults(func=run, dnssec_func=_add)

    retire = commands.add_parser(
        "retire", help="stop signing with a key (--at) and unpublish it later (--delete)"
    )
    common(retire)
    retire.add_argument("tag", type=int, help="key tag (see `gslb dnssec list`)")
    retire.add_argument("--at", default="now", metavar="TIME", help="when it stops signing")
    retire.add_argument(
        "--delete",
        default="+8d",
        metavar="TIME",
        help="when it leaves the DNSKEY RRset (default +8d from --at: its signatures expire)",
    )
    retire.set_defaults(func=run, dnssec_func=_retire)


def _algorithm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        default="ecdsap256sha256",
        choices=["ecdsap256sha256", "ed25519", "13", "15"],
        help="ECDSAP256SHA256 (13, default) or ED25519 (15)",
    )


def parse_when(text: str, now: float, base: float | None = None) -> int:
    """`now`, `+N[smhdw]` (from `base`, default now) or YYYYMMDDHHMMSS -> Unix time."""
    from .keys import parse_time

    if text == "now":
        return int(now)
    if text.startswith("+"):
        unit = UNITS.get(text[-1], 1)
        number = text[1:-1] if text[-1] in UNITS else text[1:]
        if not number.isdigit():
            raise ValueError(f"not a time offset: {text!r}")
        return int((now if base is None else base) + int(number) * unit)
    return parse_time(text)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    try:
        return int(args.dnssec_func(args))
    except ConfigError as exc:
        print(f"gslb dnssec: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"gslb dnssec: {exc}", file=sys.stderr)
        return 2


def _algorithm_number(text: str) -> int:
    from .keys import ECDSAP256SHA256, ED25519

    return ED25519 if text in ("ed25519", "15") else ECDSAP256SHA256


def _keygen(args: argparse.Namespace) -> int:
    from .keys import generate_key, write_key

    now = time.time()
    roles: list[bool] = []  # SEP flag per key to make
    if args.split or (args.ksk and args.zsk):
        roles = [True, False]
    elif args.ksk:
        roles = [True]
    elif args.zsk:
        roles = [False]
    else:
        roles = [True]  # a CSK: one key with the SEP flag that signs everything
    for sep in roles:
        key = generate_key(args.zone, _algorithm_number(args.algorithm), sep=sep, now=now)
        public, _ = write_key(key, args.dir)
        print(public.with_suffix("").name)
    return 0


def _ds(args: argparse.Namespace) -> int:
    from .keys import ds_records, zone_keys

    keys = zone_keys(args.dir, args.zone)
    records = ds_records(keys, time.time(), args.digest)
    if not records:
        print(
            f"gslb dnssec: no published key-signing key for {args.zone} in {args.dir}",
            file=sys.stderr,
        )
        return 1
    zone = keys[0].zone.to_text()
    for record in records:
        print(f"{zone} IN DS {record.to_text()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .keys import KeyState, format_time, zone_keys

    now = time.time()
    keys = zone_keys(args.dir, args.zone)
    if not keys:
        print(f"gslb dnssec: no keys for {args.zone} in {args.dir}", file=sys.stderr)
        return 1
    split = any(not k.sep for k in keys if k.state(now) is not KeyState.REMOVED)
    print(f"{'tag':>5}  {'alg':>3}  {'role':4}  {'state':9}  timing (UTC)")
    for key in sorted(keys, key=lambda k: (k.timing.get("Created") or 0, k.tag)):
        role = key.role if split else "csk"
        timing = " ".join(
            f"{name}={format_time(value)}"
            for name, value in key.timing.items()
            if value is not None and name != "Created"
        )
        print(f"{key.tag:>5}  {key.algorithm:>3}  {role:4}  {key.state(now).value:9}  {timing}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from .keys import generate_key, write_key

    now = time.time()
    publish = parse_when(args.publish, now)
    activate = parse_when(args.activate, now, base=publish)
    if activate < publish:
        raise ValueError("--activate is before --publish")
    key = generate_key(
        args.zone,
        _algorithm_number(args.algorithm),
        sep=args.role != "zsk",
        now=now,
        publish=publish,
        activate=activate,
    )
    public, _ = write_key(key, args.dir)
    print(public.with_suffix("").name)
    return 0


def _retire(args: argparse.Namespace) -> int:
    from .keys import write_key, zone_keys

    now = time.time()
    keys = [k for k in zone_keys(args.dir, args.zone) if k.tag == args.tag]
    if not keys:
        raise ValueError(f"no key with tag {args.tag} for {args.zone} in {args.dir}")
    inactive = parse_when(args.at, now)
    delete = parse_when(args.delete, now, base=inactive)
    if delete < inactive:
        raise ValueError("--delete is before --at")
    key = keys[0].with_timing(Inactive=inactive, Delete=delete)
    write_key(key, args.dir)
    print(f"{key.basename}: inactive from {args.at}, deleted {args.delete}")
    return 0
