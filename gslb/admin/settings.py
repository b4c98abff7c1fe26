"""The `admin:` section: where the admin API listens, its token and its client allow list."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.yaml_loader import mark_of
from ..errors import Reason

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AdminSettings:
    listen: str | None = "127.0.0.1:8053"  # None: no admin API
    token: str | None = None  # bearer token; None: no token (bind to loopback only)
    allow: tuple[IPNetwork, ...] = ()  # empty: any client that can reach the address

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
    if raw is None:
        return AdminSettings(), []
    if not isinstance(raw, dict):
        return AdminSettings(), [Reason(mark_of(raw), "admin", "must be a mapping")]
    reasons: list[Reason] = []
    listen: str | None = AdminSettings.listen
    token = None
    allow: list[IPNetwork] = []
    for key, value in raw.items():
        where = mark_of(raw, key)
        if key == "listen":
            if value is None or value is False or value == "off":
                listen = None
            elif isinstance(value, str) and value.rpartition(":")[2].isdigit():
                listen = value
            else:
                reasons.append(Reason(where, "admin.listen", "must be HOST:PORT or off"))
        elif key == "token":
            if not isinstance(value, str) or len(value) < 16:
                reasons.append(Reason(where, "admin.token", "must be a string of 16+ characters"))
            else:
                token = value
        elif key == "allow":
            items = value if isinstance(value, list) else [value]
            for item in items:
                try:
                    allow.append(ipaddress.ip_network(str(item), strict=False))
                except ValueError:
                    reasons.append(Reason(where, "admin.allow", f"not a network: {item!r}"))
        else:
            reasons.append(Reason(where, f"admin.{key}", "unknown key"))
    return AdminSettings(listen, token, tuple(allow)), reasons
