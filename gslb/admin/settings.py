"""The `admin:` section: where the admin API listens, its token and its client allow list."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.schema import (
    At,
    Cidr,
    Custom,
    Invalid,
    ListOf,
    Report,
    parse_hostport,
    parse_section,
    setting,
)
from ..errors import Reason

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _listen(raw: object, at: At, report: Report) -> str | None | Invalid:
    """HOST:PORT, or off (also null or false): no admin API."""
    if raw is None or raw is False or raw == "off":
        return None
    if isinstance(raw, str) and parse_hostport(raw) is not None:
        return raw
    return report.error(at, "must be HOST:PORT or off")


def _token(raw: object, at: At, report: Report) -> str | Invalid:
    if not isinstance(raw, str) or len(raw) < 16:
        return report.error(at, "must be a string of 16+ characters")
    return raw


@dataclass(frozen=True)
class AdminSettings:
    # None: no admin API
    listen: str | None = setting("127.0.0.1:8053", Custom(_listen, "HOST:PORT or off"))
    # bearer token; None: no token (bind to loopback only)
    token: str | None = setting(None, Custom(_token, "a token"))
    # empty: any client that can reach the address
    allow: tuple[IPNetwork, ...] = setting((), ListOf(Cidr()))

    def allow_check(self) -> Callable[[str], bool] | None:
        if not self.allow:
            return None
        networks = self.allow

        def allowed(client: str) -> bool:
            try:
                address = ipaddress.ip_address(client.partition("%")[0])
            except ValueError:
                return False
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            return any(address in network for network in networks)

        return allowed


def parse_admin(raw: Any) -> tuple[AdminSettings, list[Reason]]:
    """The `admin:` section (or None for the defaults) -> (settings, reasons)."""
    return parse_section(AdminSettings, raw, "admin")
