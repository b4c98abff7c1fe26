"""The `dns:` section of the config file: listeners, EDNS, TCP limits, caches, CHAOS names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar

from ..config.schema import (
    INVALID,
    At,
    Custom,
    Duration,
    Float,
    HostPort,
    HostPortKind,
    Int,
    Invalid,
    Optional,
    Report,
    Section,
    Size,
    Str,
    parse_into,
    parse_section,
    required,
    setting,
)
from ..config.schema import parse_hostport as schema_hostport
from ..config.yaml_loader import mark_of
from ..dnssec.settings import DnssecSettings
from ..errors import Reason


def _listen(raw: object, at: At, report: Report) -> tuple[str, ...] | Invalid:
    """`listen`: HOST:PORT, or a list of HOST:PORT strings and {address, acl} mappings."""
    items = [raw] if isinstance(raw, str | dict) else raw
    if not isinstance(items, list) or not items:
        return report.error(at, "must be HOST:PORT or a list of them")
    addresses: list[str] = []
    for i, item in enumerate(items):
        where = At(mark_of(items, i) if items is raw else at.mark, at.path, at.base)
        if isinstance(item, dict):
            listener = parse_into(Listener, item, where, report)
            if not isinstance(listener, Invalid):
                addresses.append(str(listener.address))
            continue
        address = HostPortKind().parse(item, where, report)
        if not isinstance(address, Invalid):
            addresses.append(str(item))
    return tuple(addresses) if addresses else INVALID


def _listener_acls(settings: DnsSettings, report: Report, at: At, raw: object) -> DnsSettings:
    """The access lists of listeners written as {address, acl} (already validated)."""
    from .acl import parse_acl

    items = raw.get("listen") if isinstance(raw, dict) else None
    items = [items] if isinstance(items, dict) else items
    acls: dict[str, Any] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("address"), str) and item.get("acl"):
            acls[item["address"]] = parse_acl(item["acl"], section="dns.listen.acl")[0]
    return replace(settings, listener_acls=MappingProxyType(acls))


def _acl_section(raw: object, at: At, report: Report) -> object:
    from .acl import parse_acl

    _, reasons = parse_acl(raw, section="dns.listen.acl")
    report.extend(reasons)
    return INVALID if reasons else raw


@dataclass(frozen=True)
class Listener:
    """One `listen` entry written as a mapping: an address with its own access list."""

    address: HostPort = required(HostPortKind())
    acl: object = setting(None, Custom(_acl_section, "an access list"))


@dataclass(frozen=True)
class DnsSettings:
    listen: tuple[str, ...] = setting(("127.0.0.1:5300",), Custom(_listen, "HOST:PORT"))
    workers: int = setting(1, Int(1, 256))
    # advertised and largest UDP answer (DNS flag day 2020)
    edns_payload: int = setting(1232, Int(512, 4096))
    # seconds a connection may wait for its next complete query
    tcp_idle_timeout: float = setting(10.0, Duration(0.1, 3600))
    tcp_max_connections: int = setting(1024, Int(1, 1_000_000))
    tcp_max_per_client: int = setting(32, Int(1, 1_000_000))
    # raw query -> response entries, static and GSLB each
    packet_cache_size: int = setting(24_576, Int(0, 10_000_000))
    answer_cache_size: int = setting(20_000, Int(1, 10_000_000))  # name plans, GSLB answers
    # UDP socket buffer: default buffers drop bursts
    receive_buffer: int = setting(8 * 1024 * 1024, Size(65536, 1 << 30))
    # CHAOS TXT version.bind / version.server; None = REFUSED
    chaos_version: str | None = setting(None, Optional(Str(empty=True)))
    # CHAOS TXT id.server / hostname.bind; None = REFUSED
    chaos_id: str | None = setting(None, Optional(Str(empty=True)))
    query_log_sample: float = setting(0.0, Float(0.0, 1.0))  # fraction of queries logged
    # Per-listener access lists ({address: AccessList}); listeners not named use `acl:`.
    listener_acls: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # `dns.dnssec`: online signing (or the top-level `dnssec:` section)
    dnssec: DnssecSettings = setting(DnssecSettings(), Section(DnssecSettings))

    __checks__: ClassVar[tuple[object, ...]] = (_listener_acls,)


def parse_dns(raw: Any) -> tuple[DnsSettings, list[Reason]]:
    """Validate the `dns:` mapping; every problem is returned, nothing is raised."""
    return parse_section(DnsSettings, raw, "dns")


def parse_hostport(text: str) -> tuple[str, int] | None:
    """'127.0.0.1:5300' or '[::1]:5300' -> (host, port); None when malformed (the schema's
    one HOST:PORT parser)."""
    parsed = schema_hostport(text)
    return (parsed.host, parsed.port) if parsed is not None else None


def _etcd_endpoints(raw: object, at: At, report: Report) -> tuple[str, ...] | Invalid:
    items = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(i, str) and i.strip() for i in items)
    ):
        return report.error(at, "must be a URL or a list of URLs")
    return tuple(i.strip() for i in items)


def _key_prefix(raw: object, at: At, report: Report) -> str | Invalid:
    if not isinstance(raw, str) or not raw.startswith("/"):
        return report.error(at, "must be a key prefix like /gslb/")
    return raw if raw.endswith("/") else raw + "/"


@dataclass(frozen=True)
class ClusterSettings:
    """The `cluster:` section: the etcd cluster this node follows (empty: files only)."""

    etcd: tuple[str, ...] = setting((), Custom(_etcd_endpoints, "a URL or a list of URLs"))
    prefix: str = setting("/gslb/", Custom(_key_prefix, "a key prefix like /gslb/"))


def parse_cluster(raw: Any) -> tuple[ClusterSettings, list[Reason]]:
    """`cluster: {etcd: [URL, ...], prefix: /gslb/}`; every problem is returned."""
    return parse_section(ClusterSettings, raw, "cluster")
