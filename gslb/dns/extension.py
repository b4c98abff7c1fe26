"""The seam for protocol extensions (TSIG, zone transfers, NOTIFY).

The responder hands a query to its Extension when the query's opcode is not QUERY, its type
is AXFR or IXFR, or it carries a TSIG record. The extension may answer itself, or run the
ordinary answer path through `core` (e.g. verify and strip a TSIG, answer, sign the reply).
It returns the messages to send (a zone transfer streams several over TCP); None or an empty
list sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from . import wire

# core(data, client, tcp) -> the ordinary answer path's response, or None (dropped)
Core = Callable[[bytes, str, bool], "bytes | None"]


class Extension(Protocol):
    def handle(self, data: bytes, client: str, tcp: bool, core: Core) -> list[bytes] | None: ...


def wants_extension(query: wire.Query) -> bool:
    return (
        query.opcode != wire.OPCODE_QUERY
        or query.tsig
        or query.qtype == wire.TYPE_AXFR
        or query.qtype == wire.TYPE_IXFR
    )


class DefaultExtension:
    """No extensions: the core answers NOTIMP, NOTAUTH or REFUSED (see answer.protocol_rcode)."""

    def handle(self, data: bytes, client: str, tcp: bool, core: Core) -> list[bytes] | None:
        response = core(data, client, tcp)
        return [response] if response is not None else None
