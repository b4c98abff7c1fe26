"""The `dns:` section of the config file: listeners, EDNS, TCP limits, caches, CHAOS names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from ..config.yaml_loader import MarkedDict, mark_of
from ..dnssec.settings import DnssecSettings, parse_dnssec
from ..errors import Reason


@dataclass(frozen=True)
class DnsSettings:
    listen: tuple[str, ...] = ("127.0.0.1:5300",)
    workers: int = 1
    edns_payload: int = 1232  # advertised and largest UDP answer (DNS flag day 2020)
    tcp_idle_timeout: float = 10.0  # seconds a connection may wait for its next complete query
    tcp_max_connections: int = 1024
    tcp_max_per_client: int = 32
    packet_cache_size: int = 24_576  # raw query -> response entries, static and GSLB each
    answer_cache_size: int = 20_000  # name plans and rendered GSLB answers
    receive_buffer: int = 8 * 1024 * 1024  # UDP socket buffer: default buffers drop bursts
    chaos_version: str | None = None  # CHAOS TXT version.bind / version.server; None = REFUSED
    chaos_id: str | None = None  # CHAOS TXT id.server / hostname.bind; None = REFUSED
    query_log_sample: float = 0.0  # fraction of queries logged (0 = off)
    # Per-listener access lists ({address: AccessList}); listeners not named use `acl:`.
    listener_acls: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    dnssec: DnssecSettings = field(default_factory=DnssecSettings)  # `dns.dnssec`: online signing


_LIMITS: dict[str, tuple[float, float]] = {
    "workers": (1, 256),
    "edns_payload": (512, 4096),
    "tcp_idle_timeout": (0.1, 3600),
    "tcp_max_connections": (1, 1_000_000),
    "tcp_max_per_client": (1, 1_000_000),
    "packet_cache_size": (0, 10_000_000),
    "answer_cache_size": (1, 10_000_000),
    "receive_buffer": (65536, 1 << 30),
    "query_log_sample": (0.0, 1.0),
}


def parse_dns(raw: Any) -> tuple[DnsSettings, list[Reason]]:
    """Validate the `dns:` mapping; every problem is returned, nothing is raised."""
    settings = DnsSettings()
    if raw is None:
        return settings, []
    if not isinstance(raw, dict):
        return settings, [Reason(mark_of(raw), "dns", "must be a mapping")]
    reasons: list[Reason] = []
    known = {f.name: f for f in fields(DnsSettings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = raw.mark_of(key) if isinstance(raw, MarkedDict) else None
        if key not in known or key == "listener_acls":
            reasons.append(Reason(where, f"dns.{key}", "unknown key"))
            continue
        default = getattr(settings, key)
        if key == "listen":
            addresses, acls = _parse_listen(value, where, reasons)
            if addresses:
                values[key] = addresses
                values["listener_acls"] = MappingProxyType(acls)
        elif key == "dnssec":
            values[key], dnssec_reasons = parse_dnssec(value)
            reasons.extend(dnssec_reasons)
        elif key.startswith("chaos_"):
            if value is not None and not isinstance(value, str):
                reasons.append(Reason(where, f"dns.{key}", "must be a string"))
                continue
            values[key] = value
        else:
            expected = float if isinstance(default, float) else int
            if isinstance(value, bool) or not isinstance(value, int | float):
                reasons.append(Reason(where, f"dns.{key}", f"must be a {expected.__name__}"))
                continue
            if expected is int and not isinstance(value, int):
                reasons.append(Reason(where, f"dns.{key}", "must be a whole number"))
                continue
            low, high = _LIMITS[key]
            if not low <= value <= high:
                reasons.append(Reason(where, f"dns.{key}", f"must be between {low} and {high}"))
                continue
            values[key] = expected(value)
    return replace(settings, **values), reasons


def _parse_listen(
    value: Any, where: Any, reasons: list[Reason]
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """`listen`: HOST:PORT, or a list of HOST:PORT strings and {address, acl} mappings."""
    from .acl import parse_acl

    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list) or not items:
        reasons.append(Reason(where, "dns.listen", "must be HOST:PORT or a list of them"))
        return (), {}
    addresses: list[str] = []
    acls: dict[str, Any] = {}
    for item in items:
        item_where = mark_of(item) or where
        if isinstance(item, dict):
            unknown = set(item) - {"address", "acl"}
            if unknown:
                reasons.append(
                    Reason(item_where, f"dns.listen.{sorted(unknown)[0]}", "unknown key")
                )
                continue
            address = item.get("address")
            if item.get("acl") is not None:
                acl, acl_reasons = parse_acl(item["acl"], section="dns.listen.acl")
                reasons.extend(acl_reasons)
                if isinstance(address, str):
                    acls[address] = acl
        else:
            address = item
        if not isinstance(address, str) or parse_hostport(address) is None:
            reasons.append(Reason(item_where, "dns.listen", f"not HOST:PORT: {address!r}"))
            continue
        addresses.append(address)
    return tuple(addresses), acls


def parse_hostport(text: str) -> tuple[str, int] | None:
    """'127.0.0.1:5300' or '[::1]:5300' -> (host, port); None when malformed."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    return host, int(port)
