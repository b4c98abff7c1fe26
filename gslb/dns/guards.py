"""The guards in front of the answer path, applied in one fixed order:

1. ACL (per listener, else the global list): on the raw datagram, before any parsing;
2. cookies (RFC 7873): on the parsed query; they make the COOKIE option of the response and,
   with `require_valid`, turn away UDP queries without a valid server cookie (BADCOOKIE);
3. RRL: on the UDP response about to leave (packet-cache hits included); valid cookies exempt.

Each guard is optional; a responder with no ACL and no RRL runs its UDP fast path unguarded.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from . import wire
from .acl import AccessList, Action
from .cookies import CookieJar, CookieStatus
from .rrl import ResponseClass, ResponseRateLimiter, Verdict


@dataclass
class Protection:
    """What guards the answer path: access list, rate limiter, cookies (each optional)."""

    acl: AccessList | None = None
    rrl: ResponseRateLimiter | None = None
    cookies: CookieJar | None = None
    require_cookie: bool = False  # UDP queries without a valid server cookie get BADCOOKIE


class AclGuard:
    def __init__(self, default: AccessList | None, listeners: Mapping[str, AccessList]) -> None:
        self.default = default if default is not None and not default.permits_all else None
        self.listeners = dict(listeners)

    def check(self, client: bytes, listener: str) -> Action:
        acl = self.listeners.get(listener, self.default)
        return Action.ALLOW if acl is None else acl.check(client)


# What the cookie guard says about a query: (COOKIE option for the response, the client
# presented a valid server cookie (exempt from RRL), answer BADCOOKIE instead). A plain tuple:
# this runs for every query with a cookie.
CookieVerdict = tuple[bytes, bool, bool]


class CookieGuard:
    def __init__(self, jar: CookieJar, require_valid: bool) -> None:
        self.jar = jar
        self.require_valid = require_valid

    def check(self, cookie: bytes, client: bytes, tcp: bool) -> CookieVerdict:
        client_cookie, server_cookie = cookie[:8], cookie[8:] or None
        status, fresh = self.jar.respond(client_cookie, server_cookie, client)
        data = client_cookie + fresh
        option = struct.pack("!HH", wire.OPTION_COOKIE, len(data)) + data
        valid = status is CookieStatus.VALID
        # RFC 7873 5.2.3: ask the client to come back with the cookie we just made.
        return option, valid, self.require_valid and not tcp and not valid


class RrlGuard:
    def __init__(self, limiter: ResponseRateLimiter) -> None:
        self.limiter = limiter

    def check(self, client: bytes, rclass: ResponseClass, key: bytes) -> Verdict:
        return self.limiter.check(client, 0, rclass, key)  # it counts its own verdicts


class Guards:
    """The ordered guards of one responder generation."""

    def __init__(self, protection: Protection, listener_acls: Mapping[str, AccessList]) -> None:
        self.protection = protection
        acl = AclGuard(protection.acl, listener_acls)
        self.acl = acl if acl.default is not None or acl.listeners else None
        jar = protection.cookies
        self.cookies = CookieGuard(jar, protection.require_cookie) if jar is not None else None
        rrl = protection.rrl
        self.rrl = RrlGuard(rrl) if rrl is not None and rrl.settings.enabled else None
        self.chain = tuple(g for g in (self.acl, self.cookies, self.rrl) if g is not None)
        # The UDP fast path must consult a guard even on a packet-cache hit.
        self.guarded = self.acl is not None or self.rrl is not None
        self._packed: dict[str, bytes] = {}

    def pack(self, client: str) -> bytes:
        """Text address -> packed bytes (IPv4-mapped IPv6 as IPv4), cached per address."""
        packed = self._packed.get(client)
        if packed is None:
            if ":" in client:
                packed = socket.inet_pton(socket.AF_INET6, client.partition("%")[0])
                if packed[:12] == b"\x00" * 10 + b"\xff\xff":
                    packed = packed[12:]
            else:
                packed = socket.inet_aton(client)
            if len(self._packed) >= 16384:
                self._packed.clear()  # bounded whatever the number of clients
            self._packed[client] = packed
        return packed
