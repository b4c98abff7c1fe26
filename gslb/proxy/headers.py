"""PURE header rewriting for forwarding: hop-by-hop removal (RFC 9110 7.6.1), X-Forwarded-*,
Forwarded (RFC 7239), and hiding the upstream's identity."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 7.6.1 plus the legacy ones every proxy strips.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authenticate",
        "Proxy-Authorization",
    )
)

FORWARDED_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")


def hop_by_hop_names(headers: CIMultiDict[str] | CIMultiDictProxy[str]) -> set[str]:
    """The fixed hop-by-hop set plus every header the Connection header nominates."""
    names = set(HOP_BY_HOP)
    for value in headers.getall("Connection", []):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return names


def strip_hop_by_hop(
    headers: CIMultiDict[str] | CIMultiDictProxy[str], extra_drop: Iterable[str] = ()
) -> CIMultiDict[str]:
    drop = hop_by_hop_names(headers) | {h.lower() for h in extra_drop}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _forwarded_node(ip: str) -> str:
    # RFC 7239 6: IPv6 addresses are bracketed and the value quoted.
    if ":" in ip:
        return f'"[{ip}]"'
    return ip


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_headers(
    incoming: CIMultiDictProxy[str],
    client_ip: str,
    proto: str,
    upstream_host: str,
    preserve_host: bool = True,
    trust_forwarded: bool = False,
) -> CIMultiDict[str]:
    """Headers to send upstream for one client request."""
    original_host = incoming.get("Host", "")
    drop: list[str] = []
    if not trust_forwarded:
        drop.extend(FORWARDED_HEADERS)
    out = strip_hop_by_hop(incoming, drop)
    prior_xff = incoming.get("X-Forwarded-For") if trust_forwarded else None
    out["X-Forwarded-For"] = f"{prior_xff}, {client_ip}" if prior_xff else client_ip
    out["X-Forwarded-Proto"] = proto
    if original_host:
        out["X-Forwarded-Host"] = original_host
    element = f"for={_forwarded_node(client_ip)};proto={proto}"
    if original_host:
        element += f";host={_quote(original_host)}"
    prior_fwd = incoming.get("Forwarded") if trust_forwarded else None
    out["Forwarded"] = f"{prior_fwd}, {element}" if prior_fwd else element
    if not preserve_host or not original_host:
        out["Host"] = upstream_host
    return out


def response_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str], hide: Iterable[str]
) -> CIMultiDict[str]:
    """Headers to send to the client: hop-by-hop and identifying headers removed."""
    return strip_hop_by_hop(incoming, hide)
