"""Load RFC 1035 master files: every DIR/<origin>.zone, parsed by dnspython.

Errors name the file and line so an operator can fix them; a zone that fails to load stops the
start-up (or a reload) instead of serving partial data.
"""

from __future__ import annotations

import re
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.zone
import dns.zonefile

from ..errors import Mark, Reason, ZoneError

_LINE_PREFIX = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<detail>.*)$", re.S)


def load_zone_file(path: str | Path, origin: str | None = None) -> dns.zone.Zone:
    """Parse one master file; the origin defaults to the file name without `.zone`."""
    path = Path(path)
    origin_text = origin or path.name.removesuffix(".zone")
    if not origin_text.endswith("."):
        origin_text += "."
    tokenizer: _LineTrackingTokenizer | None = None
    try:
        text = path.read_text(encoding="utf-8")
        zone = dns.zone.Zone(dns.name.from_text(origin_text), relativize=False)
        with zone.writer(True) as txn:
            tokenizer = _LineTrackingTokenizer(text, str(path))
            dns.zonefile.Reader(tokenizer, dns.rdataclass.IN, txn, allow_include=False).read()
        zone.check_origin()
    except dns.exception.SyntaxError as exc:
        match = _LINE_PREFIX.match(str(exc))
        detail = match["detail"] if match else str(exc)
        line = tokenizer.token_line if tokenizer is not None else 0
        raise ZoneError(Reason(Mark(str(path), line), "", detail)) from None
    except dns.zone.NoSOA:
        raise ZoneError(
            Reason(Mark(str(path), 0), "SOA", f"no SOA at origin {origin_text}")
        ) from None
    except dns.zone.NoNS:
        raise ZoneError(
            Reason(Mark(str(path), 0), "NS", f"no NS at origin {origin_text}")
        ) from None
    except UnicodeDecodeError:
        raise ZoneError(Reason(Mark(str(path), 0), "", "not UTF-8 text")) from None
    except OSError as exc:
        raise ZoneError(Reason(Mark(str(path), 0), "", f"cannot read: {exc.strerror}")) from None
    except dns.exception.DNSException as exc:
        raise ZoneError(Reason(Mark(str(path), 0), "", str(exc) or type(exc).__name__)) from None
    _check_cname_exclusive(zone, path)
    return zone


class _LineTrackingTokenizer(dns.tokenizer.Tokenizer):
    """Remembers the line of the last real token: dnspython reports the line after an
    end-of-line it has already consumed, which points one line past a bad record."""

    token_line = 0

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:
        token = super().get(want_leading, want_comment)
        if not token.is_eol_or_eof() and not token.is_whitespace():
            # A token ended by a newline has already counted it (the newline is ungotten).
            self.token_line = self.line_number - (self.ungotten_char == "\n")
        return token


def _check_cname_exclusive(zone: dns.zone.Zone, path: Path) -> None:
    """RFC 1034 3.6.2: a CNAME owner has no other data (DNSSEC types aside)."""
    allowed = {dns.rdatatype.CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
    reasons = []
    for name, node in zone.nodes.items():
        types = {rds.rdtype for rds in node.rdatasets}
        if dns.rdatatype.CNAME in types and types - allowed:
            reasons.append(
                Reason(Mark(str(path), 0), name.to_text(), "CNAME and other data at the same name")
            )
    if reasons:
        raise ZoneError(reasons)


def load_zones(directory: str | Path) -> dict[str, dns.zone.Zone]:
    """Load every `<origin>.zone` in directory; all problems are reported together."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZoneError(Reason(Mark(str(directory), 0), "", "zone directory does not exist"))
    zones: dict[str, dns.zone.Zone] = {}
    reasons: list[Reason] = []
    for path in sorted(directory.glob("*.zone")):
        try:
            zone = load_zone_file(path)
        except ZoneError as exc:
            reasons.extend(exc.reasons)
            continue
        assert zone.origin is not None
        zones[zone.origin.to_text().lower()] = zone
    if reasons:
        raise ZoneError(reasons)
    if not zones:
        raise ZoneError(Reason(Mark(str(directory), 0), "", "no *.zone files found"))
    return zones
