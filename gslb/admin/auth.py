"""Bearer-token check shared by the HTTP endpoints of every gslb process."""

from __future__ import annotations

import hmac
from typing import Protocol


class _HasHeaders(Protocol):
    @property
    def headers(self) -> object: ...


def bearer_matches(request: _HasHeaders, token: str) -> bool:
    """True when the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    given = str(request.headers.get("Authorization", ""))  # type: ignore[attr-defined]
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
