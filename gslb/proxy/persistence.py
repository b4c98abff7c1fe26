"""Session persistence by an inserted cookie naming the member.

The cookie value is an opaque token: an HMAC of the pool and member names under a per-proxy
secret. It reveals nothing about the upstream and cannot be forged or edited to pick another
member: an unknown token is simply ignored and a fresh one is issued.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def token(secret: bytes, pool: str, member: str) -> str:
    mac = hmac.new(secret, f"{pool}\0{member}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


class CookieCodec:
    """Maps members to tokens and back for one pool."""

    def __init__(self, secret: bytes, pool: str, members: Iterable[str]) -> None:
        self._to_token = {m: token(secret, pool, m) for m in members}
        self._to_member = {t: m for m, t in self._to_token.items()}

    def encode(self, member: str) -> str:
        return self._to_token[member]

    def decode(self, value: str | None) -> str | None:
        if not value:
            return None
        for known, member in self._to_member.items():
            if hmac.compare_digest(known, value):
                return member
        return None
