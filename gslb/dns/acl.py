"""Client access lists: which source networks a listener answers, refuses or ignores.

Checked before any other work on a query, so it is one bisect over a precomputed interval
table (no per-query allocation beyond one int). Pure: no I/O, no clock.

Semantics: deny wins over allow; an empty allow list allows everyone not denied; a non-empty
allow list allows only the listed networks (of either family). Anyone not allowed gets the
configured action: REFUSE (answer with rcode REFUSED) or DROP (send nothing). DROP avoids being
a reflector for spoofed traffic; REFUSE tells a misconfigured legitimate client why it fails.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..config.schema import Cidr, Enum, ListOf, parse_section, setting
from ..errors import Reason

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv4-mapped IPv6 (::ffff:a.b.c.d), what a dual-stack socket reports for IPv4 clients.
V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def unmap(client: bytes) -> bytes:
    """Packed address with an IPv4-mapped IPv6 address turned into its 4-byte IPv4 form."""
    if len(client) == 16 and client[:12] == V4_MAPPED_PREFIX:
        return client[12:]
    return client


class Action(IntEnum):
    ALLOW = 0
    REFUSE = 1
    DROP = 2


def _ranges(networks: Iterable[IPNetwork], version: int) -> list[tuple[int, int]]:
    """Merged, sorted inclusive [first, last] integer ranges of one address family."""
    spans = sorted(
        (int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == version
    )
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


class NetworkSet:
    """A set of IPv4/IPv6 networks with a fast membership test on packed addresses."""

    __slots__ = ("networks", "_v4_first", "_v4_last", "_v6_first", "_v6_last")

    def __init__(self, networks: Iterable[IPNetwork | str] = ()) -> None:
        nets = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in networks
        )
        self.networks: tuple[IPNetwork, ...] = nets
        v4 = _ranges(nets, 4)
        v6 = _ranges(nets, 6)
        self._v4_first = [a for a, _ in v4]
        self._v4_last = [b for _, b in v4]
        self._v6_first = [a for a, _ in v6]
        self._v6_last = [b for _, b in v6]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, client: object) -> bool:
        if not isinstance(client, bytes):
            return False
        return self.contains(client)

    def contains(self, client: bytes) -> bool:
        """True if the packed address (4 or 16 bytes; v4-mapped v6 counts as v4) is inside."""
        if len(client) == 4:
            first, last = self._v4_first, self._v4_last
        else:
            if client[:12] == V4_MAPPED_PREFIX:
                client = client[12:]
                first, last = self._v4_first, self._v4_last
            else:
                first, last = self._v6_first, self._v6_last
        if not first:
            return False
        addr = int.from_bytes(client, "big")
        i = bisect_right(first, addr) - 1
        return i >= 0 and addr <= last[i]


def _interval_table(
    allow: tuple[IPNetwork, ...], deny: tuple[IPNetwork, ...], action: Action, version: int
) -> tuple[list[int], list[Action]]:
    """Cut one family's address space into intervals, each with its verdict.

    Returns (starts, actions): the verdict for address a is actions[bisect_right(starts, a) - 1].
    starts[0] is always 0, so every address falls in some interval.
    """
    top = (1 << (32 if version == 4 else 128)) - 1
    allow_r = _ranges(allow, version)
    deny_r = _ranges(deny, version)
    cuts = {0}
    for first, last in allow_r + deny_r:
        cuts.add(first)
        if last < top:
            cuts.add(last + 1)
    allow_set = NetworkSet(n for n in allow if n.version == version)
    deny_set = NetworkSet(n for n in deny if n.version == version)
    nbytes = 4 if version == 4 else 16
    starts: list[int] = []
    actions: list[Action] = []
    for start in sorted(cuts):
        packed = start.to_bytes(nbytes, "big")
        if deny_set.contains(packed):
            verdict = action
        elif not allow or allow_set.contains(packed):
            verdict = Action.ALLOW
        else:
            verdict = action
        if actions and actions[-1] == verdict:
            continue  # merge with the previous interval
        starts.append(start)
        actions.append(verdict)
    return starts, actions


class AccessList:
    """Allow/deny by client network; `check` is the hot-path call."""

    __slots__ = (
        "allow",
        "deny",
        "action",
        "_v4_starts",
        "_v4_actions",
        "_v6_starts",
        "_v6_actions",
    )

    def __init__(
        self,
        allow: Iterable[IPNetwork | str] = (),
        deny: Iterable[IPNetwork | str] = (),
        action: Action = Action.REFUSE,
    ) -> None:
        if action == Action.ALLOW:
            raise ValueError("the action for denied clients must be REFUSE or DROP")
        self.allow = NetworkSet(allow).networks
        self.deny = NetworkSet(deny).networks
        self.action = action
        self._v4_starts, self._v4_actions = _interval_table(self.allow, self.deny, action, 4)
        self._v6_starts, self._v6_actions = _interval_table(self.allow, self.deny, action, 6)

    @property
    def permits_all(self) -> bool:
        """True when the list allows every client (callers may skip the check entirely)."""
        return not self.allow and not self.deny

    def check(self, client: bytes) -> Action:
        """Verdict for a packed source address (4 or 16 bytes)."""
        if len(client) == 4:
            starts, actions = self._v4_starts, self._v4_actions
        elif client[:12] == V4_MAPPED_PREFIX:
            client = client[12:]
            starts, actions = self._v4_starts, self._v4_actions
        else:
            starts, actions = self._v6_starts, self._v6_actions
        if len(actions) == 1:
            return actions[0]
        return actions[bisect_right(starts, int.from_bytes(client, "big")) - 1]

    def check_text(self, address: str) -> Action:
        """Verdict for a textual address (e.g. aiohttp's request.remote); unparsable -> denied."""
        try:
            packed = ipaddress.ip_address(address.split("%", 1)[0]).packed
        except ValueError:
            return self.action
        return self.check(packed)

    def allows(self, address: str) -> bool:
        """Convenience for HTTP endpoints: True if the textual address is allowed."""
        return self.check_text(address) == Action.ALLOW

    def __repr__(self) -> str:
        return (
            f"AccessList(allow={[str(n) for n in self.allow]}, "
            f"deny={[str(n) for n in self.deny]}, action={self.action.name})"
        )


ALLOW_ALL = AccessList()


@dataclass(frozen=True)
class AclSection:
    """The `acl:` mapping as written (declared with the schema framework)."""

    allow: tuple[IPNetwork, ...] = setting((), ListOf(Cidr(strict=True)))
    deny: tuple[IPNetwork, ...] = setting((), ListOf(Cidr(strict=True)))
    action: str = setting("refuse", Enum("refuse", "drop", fold=True))


def parse_acl(raw: Any, section: str = "acl") -> tuple[AccessList, list[Reason]]:
    """`acl: {allow: [cidr..], deny: [cidr..], action: refuse|drop}` -> (AccessList, reasons).

    None (section absent) allows everyone. On errors the returned list still works: it is built
    from the valid parts, but callers should refuse to start when reasons is non-empty.
    """
    if raw is None:
        return ALLOW_ALL, []
    parsed, reasons = parse_section(AclSection, raw, section)
    action = Action.DROP if parsed.action == "drop" else Action.REFUSE
    return AccessList(parsed.allow, parsed.deny, action), reasons
