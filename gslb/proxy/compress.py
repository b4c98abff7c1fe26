"""Response compression (brotli or gzip) when the client accepts it, the type is compressible
and the upstream has not compressed already. Streaming: chunks in, compressed chunks out."""

from __future__ import annotations

import zlib

import brotli  # type: ignore[import-untyped]
from multidict import CIMultiDict, CIMultiDictProxy

COMPRESSIBLE_PREFIXES = ("text/",)
COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/ld+json",
        "application/manifest+json",
        "application/wasm",
        "image/svg+xml",
    }
)


def accepted_encodings(accept_encoding: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        out[name] = q
    return out


def choose_encoding(
    method: str,
    status: int,
    request: CIMultiDictProxy[str] | CIMultiDict[str],
    response: CIMultiDictProxy[str] | CIMultiDict[str],
    min_bytes: int,
) -> str | None:
    """'br', 'gzip' or None for one response."""
    if method == "HEAD" or status < 200 or status in (204, 206, 304):
        return None
    if "Content-Encoding" in response or "Content-Range" in response:
        return None
    ctype = response.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if not (ctype.startswith(COMPRESSIBLE_PREFIXES) or ctype in COMPRESSIBLE_TYPES):
        return None
    length = response.get("Content-Length")
    if length is not None and length.isdigit() and int(length) < min_bytes:
        return None
    if "no-transform" in response.get("Cache-Control", "").lower():
        return None
    accepted = accepted_encodings(request.get("Accept-Encoding", ""))
    star = accepted.get("*", 0.0)
    for enc in ("br", "gzip"):
        if accepted.get(enc, star) > 0:
            return enc
    return None


class Compressor:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "br":
            self._br = brotli.Compressor(quality=4)
        else:
            self._gz = zlib.compressobj(6, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "br":
            return bytes(self._br.process(data))
        return self._gz.compress(data)

    def finish(self) -> bytes:
        if self.encoding == "br":
            return bytes(self._br.finish())
        return self._gz.flush()
