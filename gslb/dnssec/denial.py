"""Compact denial of existence (RFC 9824), computed online: pure functions, no keys.

Every negative answer is a NODATA for the query name itself: one NSEC owned by the name,
pointing at its immediate successor `\\000.<name>`, whose type bitmap lists the types that
exist there (NXNAME, type 128, when the name does not exist at all). No zone walk is possible
(each NSEC covers only its own name) and no precomputed chain is needed, so GSLB names, random
names and wildcards all cost one NSEC. Wildcard expansions need the non-existence of the
"next closer" name (RFC 4035 5.3.4); that one NSEC covers just that name (RFC 4470 epsilon
functions).
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset

NXNAME = 128
RRSIG = dns.rdatatype.RRSIG
NSEC = dns.rdatatype.NSEC


def successor(name: dns.name.Name) -> dns.name.Name:
    """The immediate canonical successor: `\\000.<name>` (when that still fits in 255 octets)."""
    if _wire_length(name) + 2 <= 255:
        return dns.name.Name((b"\x00",) + name.labels)
    # Too long for another label: grow the first label instead (RFC 4470 section 3.1.3).
    first = name.labels[0]
    if len(first) < 63:
        return dns.name.Name((first + b"\x00",) + name.labels[1:])
    return name.parent()  # practically unreachable: a 255-octet name with a 63-octet label


def predecessor(name: dns.name.Name) -> dns.name.Name:
    """A name just before `name` in canonical order that does not exist in practice.

    The first label's last octet is decremented (skipping upper-case letters, which sort as
    lower case) and `\\377` appended, RFC 4470 section 3.1.2's shortcut.
    """
    first = name.labels[0].lower()
    rest = name.labels[1:]
    last = first[-1]
    if last == 0:
        shorter = first[:-1]
        return dns.name.Name((shorter,) + rest) if shorter else dns.name.Name(rest)
    lowered = last - 1
    if 0x41 <= lowered <= 0x5A:
        lowered = 0x40  # '@' sorts before every letter; 'Z' would sort as 'z'
    label = first[:-1] + bytes([lowered])
    if len(label) < 63 and _wire_length(name) + 1 <= 255:
        label += b"\xff"
    return dns.name.Name((label,) + rest)


def nsec(
    owner: dns.name.Name,
    next_name: dns.name.Name,
    types: Iterable[int],
    ttl: int,
    without: int = 0,
) -> dns.rrset.RRset:
    """An NSEC with RRSIG and NSEC in its bitmap, except `without`: a query for type NSEC or
    RRSIG itself is answered NODATA, and its proof must not list the type asked for."""
    bitmap = sorted((set(types) | {RRSIG, NSEC}) - {without})
    rdata = dns.rdtypes.ANY.NSEC.NSEC(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN,
        NSEC,
        next_name,
        dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(bitmap),  # type: ignore[arg-type]
    )
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, NSEC)
    rrset.add(rdata, ttl)
    return rrset


def nodata(name: dns.name.Name, types: Iterable[int], ttl: int, qtype: int = 0) -> dns.rrset.RRset:
    """NODATA for `qtype` at an existing name (or an empty non-terminal: no types)."""
    return nsec(name, successor(name), types, ttl, without=qtype if qtype in (NSEC, RRSIG) else 0)


def nxname(name: dns.name.Name, ttl: int, qtype: int = 0) -> dns.rrset.RRset:
    """A name that does not exist, answered as NODATA with the NXNAME type (RFC 9824 3.1)."""
    without = qtype if qtype in (NSEC, RRSIG) else 0
    return nsec(name, successor(name), (NXNAME,), ttl, without)


def after_subtree(name: dns.name.Name) -> dns.name.Name:
    """The first name after `name` and all its descendants: its first label with `\000`
    appended. Validators derive the closest encloser from both NSEC ends, so the end of a
    covering NSEC must not lie below the name it denies (Unbound checks this)."""
    first = name.labels[0]
    if len(first) < 63 and _wire_length(name) < 255:
        return dns.name.Name((first + b"\x00",) + name.labels[1:])
    return successor(name.parent())


def covering(name: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    """An NSEC that covers `name` (and its subtree) only: proof it does not exist."""
    return nsec(predecessor(name), after_subtree(name), (), ttl)


def _wire_length(name: dns.name.Name) -> int:
    return sum(len(label) + 1 for label in name.labels)
