"""DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018). Pure: no I/O.

Server cookie (16 bytes, RFC 9018 section 4):
    Version (1) = 1 | Reserved (3) = 0 | Timestamp (4, serial seconds, big endian) | Hash (8)
    Hash = SipHash-2-4(Client Cookie | Version | Reserved | Timestamp | Client-IP, Secret)
Every node and worker configured with the same 16-byte secret issues and accepts the same
cookies, so an anycast set or an NS set behind one name interoperates with any client.

Validity (RFC 9018 section 4.3): accepted while its timestamp is within [now - 3600, now + 300]
(serial arithmetic, so it survives the 2106 wrap); a fresh one is issued in every response
anyway, and the timestamp is only re-stamped when the presented cookie is older than 1800 s,
so a client sees a stable cookie for half an hour.

Rollover: configure the new secret as `secret` and the old one as `previous_secret` on every
node; cookies made with either are accepted, new ones are made with `secret`. After an hour
(the cookie lifetime) `previous_secret` can be removed.

Policy for the query path (the lead's responder implements this; RFC 7873 section 5.2):
  * COOKIE option malformed (client part not 8 bytes, total not 8 or 16..40): FORMERR
    (`parse_cookie_option` raises CookieFormError).
  * Client cookie only (ABSENT server cookie): answer normally, include a fresh server cookie;
    response subject to RRL.
  * Server cookie INVALID (wrong hash, expired, from the future, unknown version): answer
    normally with a fresh cookie (section 5.2.3 lets a server do so; BADCOOKIE would make the
    client retry for nothing, and a spoofer gains nothing from a normal answer since it is
    still subject to RRL). Send BADCOOKIE (extended rcode 23, upper 8 bits go in the OPT TTL:
    rcode 23 = header rcode 7 + OPT extended rcode 1) with the fresh cookie and no answer only
    when `require_valid` is configured and the query came over UDP: then a client must first
    learn a cookie. TCP queries are never answered BADCOOKIE.
  * Server cookie VALID: the client proved it can receive at its address; exempt the response
    from RRL and allow the client's full advertised EDNS UDP size.
  * No COOKIE option at all: normal processing, no cookie in the response.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, ClassVar

from siphashc import siphash

from ..clock import SYSTEM_CLOCK, Clock
from ..config.schema import (
    At,
    Bool,
    Custom,
    Invalid,
    Optional,
    Report,
    parse_section,
    setting,
)
from ..errors import GslbError, Reason
from .acl import unmap

COOKIE_OPTION_CODE = 10  # EDNS option code for COOKIE
BADCOOKIE_RCODE = 23
CLIENT_COOKIE_LEN = 8
SERVER_COOKIE_LEN = 16  # what we issue (RFC 9018 format)
MIN_SERVER_COOKIE_LEN = 8
MAX_SERVER_COOKIE_LEN = 32
SECRET_LEN = 16

LIFETIME = 3600  # accept cookies stamped up to this many seconds ago
MAX_SKEW = 300  # and up to this many seconds in the future (clock skew between nodes)
REFRESH_AFTER = 1800  # re-stamp when the presented cookie is older than this

_VERSION_RESERVED = b"\x01\x00\x00\x00"


class CookieFormError(GslbError):
    """A COOKIE option with an illegal length: the query must be answered FORMERR."""


class CookieStatus(IntEnum):
    ABSENT = 0  # client cookie only: the client has not learnt our cookie yet
    VALID = 1
    INVALID = 2


def parse_cookie_option(data: bytes) -> tuple[bytes, bytes | None]:
    """COOKIE option data -> (client cookie, server cookie or None).

    Legal lengths (RFC 7873 section 5.2.2): 8 (client only) or 16..40 (client + server of
    8..32). Anything else raises CookieFormError.
    """
    n = len(data)
    if n == CLIENT_COOKIE_LEN:
        return data, None
    if CLIENT_COOKIE_LEN + MIN_SERVER_COOKIE_LEN <= n <= CLIENT_COOKIE_LEN + MAX_SERVER_COOKIE_LEN:
        return data[:CLIENT_COOKIE_LEN], data[CLIENT_COOKIE_LEN:]
    raise CookieFormError(f"COOKIE option of {n} bytes (legal: 8, or 16 to 40)")


def _serial_age(now: int, stamp: int) -> int:
    """now - stamp in 32-bit serial arithmetic (RFC 1982): negative if stamp is in the future."""
    diff = (now - stamp) & 0xFFFFFFFF
    return diff - (1 << 32) if diff >= (1 << 31) else diff


def _hash(secret: bytes, client_cookie: bytes, head: bytes, client_ip: bytes) -> bytes:
    # siphashc returns the 64-bit result as an int; RFC 9018's byte order is little endian.
    return siphash(secret, client_cookie + head + client_ip).to_bytes(8, "little")


class CookieJar:
    """Issues and verifies server cookies with a shared secret (and an optional previous one)."""

    __slots__ = ("_secret", "_previous", "clock")

    def __init__(
        self, secret: bytes, clock: Clock = SYSTEM_CLOCK, previous_secret: bytes | None = None
    ) -> None:
        for name, value in (("secret", secret), ("previous_secret", previous_secret)):
            if value is not None and len(value) != SECRET_LEN:
                raise ValueError(f"cookie {name} must be {SECRET_LEN} bytes, got {len(value)}")
        self._secret = secret
        self._previous = previous_secret
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock.time()) & 0xFFFFFFFF

    def _verify(self, client_cookie: bytes, server_cookie: bytes, client_ip: bytes) -> int:
        """0 = not valid, 1 = valid with the current secret, 2 = valid with the previous one."""
        if len(server_cookie) != SERVER_COOKIE_LEN or server_cookie[0] != 1:
            return 0  # not a cookie of ours (another format or version)
        age = _serial_age(self._now(), int.from_bytes(server_cookie[4:8], "big"))
        if age > LIFETIME or age < -MAX_SKEW:
            return 0
        # The hash covers the version/reserved/timestamp bytes exactly as received.
        head = server_cookie[:8]
        ip = unmap(client_ip)
        mac = server_cookie[8:]
        if _hash(self._secret, client_cookie, head, ip) == mac:
            return 1
        if self._previous is not None and _hash(self._previous, client_cookie, head, ip) == mac:
            return 2
        return 0

    def check(
        self, client_cookie: bytes, server_cookie: bytes | None, client_ip: bytes
    ) -> CookieStatus:
        """Status of the cookie pair a query carried, for a packed client address."""
        if server_cookie is None:
            return CookieStatus.ABSENT
        if self._verify(client_cookie, server_cookie, client_ip):
            return CookieStatus.VALID
        return CookieStatus.INVALID

    def make(self, client_cookie: bytes, client_ip: bytes, now: int | None = None) -> bytes:
        """A fresh 16-byte server cookie for this client cookie and address."""
        stamp = (self._now() if now is None else now) & 0xFFFFFFFF
        head = _VERSION_RESERVED + stamp.to_bytes(4, "big")
        return head + _hash(self._secret, client_cookie, head, unmap(client_ip))

    def respond(
        self, client_cookie: bytes, server_cookie: bytes | None, client_ip: bytes
    ) -> tuple[CookieStatus, bytes]:
        """Check a query's cookie and return (status, server cookie for the response).

        A VALID cookie made with the current secret and younger than 1800 s is echoed
        unchanged (RFC 9018 section 4.3); otherwise a freshly stamped one is made.
        """
        if server_cookie is None:
            return CookieStatus.ABSENT, self.make(client_cookie, client_ip)
        which = self._verify(client_cookie, server_cookie, client_ip)
        if not which:
            return CookieStatus.INVALID, self.make(client_cookie, client_ip)
        if which == 1 and server_cookie[1:4] == b"\x00\x00\x00":
            age = _serial_age(self._now(), int.from_bytes(server_cookie[4:8], "big"))
            if 0 <= age < REFRESH_AFTER:
                return CookieStatus.VALID, server_cookie
        return CookieStatus.VALID, self.make(client_cookie, client_ip)


def generate_secret() -> bytes:
    """A random 16-byte secret, for a single node whose config sets none."""
    return secrets.token_bytes(SECRET_LEN)


def _secret(raw: object, at: At, report: Report) -> bytes | Invalid:
    """32 hex digits (16 bytes), the SipHash key of RFC 9018."""
    try:
        secret = bytes.fromhex(raw.strip()) if isinstance(raw, str) else None
    except ValueError:
        secret = None
    if secret is None:
        return report.error(at, "must be 32 hex digits (16 bytes)")
    if len(secret) != SECRET_LEN:
        return report.error(at, f"must be 16 bytes (32 hex digits), got {len(secret)}")
    return secret


def _rollover_needs_secret(
    settings: CookieSettings, report: Report, at: At, raw: object
) -> CookieSettings | None:
    if settings.previous_secret is not None and isinstance(raw, dict) and "secret" not in raw:
        report.error(
            at.child(raw, "previous_secret"), "needs `secret` too (the new secret of a rollover)"
        )
        return replace(settings, previous_secret=None)
    return None


_SECRET = Optional(Custom(_secret, "32 hex digits"))


@dataclass(frozen=True)
class CookieSettings:
    enabled: bool = setting(True, Bool())
    # None: generated at start (one node only; see docs)
    secret: bytes | None = setting(None, _SECRET)
    previous_secret: bytes | None = setting(None, _SECRET)
    # answer UDP queries without a valid server cookie BADCOOKIE
    require_valid: bool = setting(False, Bool())

    __checks__: ClassVar[tuple[object, ...]] = (_rollover_needs_secret,)

    def jar(self, clock: Clock = SYSTEM_CLOCK) -> CookieJar:
        """The CookieJar for these settings (generates a secret when none is configured).

        Call once in the parent before forking workers, so all workers share the secret.
        """
        return CookieJar(self.secret or generate_secret(), clock, self.previous_secret)


def parse_cookies(raw: Any) -> tuple[CookieSettings, list[Reason]]:
    """The `cookies:` section (MarkedDict or None) -> (settings, reasons)."""
    return parse_section(CookieSettings, raw, "cookies")
