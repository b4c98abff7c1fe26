"""The `dns.dnssec` section of the config file: where the keys are and how signatures live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config.schema import (
    At,
    Bool,
    Custom,
    Duration,
    Int,
    Invalid,
    Optional,
    Report,
    Str,
    parse_section,
    setting,
)
from ..config.yaml_loader import mark_of
from ..errors import Reason

DAY = 86400


def _whole_seconds(kind: Duration) -> Custom[int]:
    """A duration (3600, "1h", "7d") kept as whole seconds, as RRSIG times are."""

    def parse(raw: object, at: At, report: Report) -> int | Invalid:
        seconds = kind.parse(raw, at, report)
        return seconds if isinstance(seconds, Invalid) else int(seconds)

    return Custom(parse, kind.description)


def _refresh_below_validity(
    settings: DnssecSettings, report: Report, at: At, raw: object
) -> DnssecSettings | Invalid | None:
    if settings.refresh >= settings.validity:
        where = at.child(raw, "refresh") if isinstance(raw, dict) and "refresh" in raw else at
        return report.error(where, "must be less than validity")
    return None


@dataclass(frozen=True)
class DnssecSettings:
    key_dir: str | None = setting(None, Optional(Str()))  # None: nothing is signed
    # seconds from the window's start to a signature's expiration
    validity: int = setting(7 * DAY, _whole_seconds(Duration(3600, 90 * DAY)))
    # inception backdated by this much (clock skew of resolvers)
    inception_offset: int = setting(3600, _whole_seconds(Duration(0, 7 * DAY)))
    # re-sign when less than this much validity remains
    refresh: int = setting(2 * DAY, _whole_seconds(Duration(60, 89 * DAY)))
    # RRSIG RRsets kept (~1.5 KB each), one per content
    signature_cache_size: int = setting(50_000, Int(16, 10_000_000))
    # TTL of the DNSKEY, CDS and CDNSKEY RRsets we publish
    dnskey_ttl: int = setting(3600, _whole_seconds(Duration(0, 7 * DAY)))
    cds: bool = setting(True, Bool())  # publish CDS/CDNSKEY (RFC 7344) for the zone's SEP keys

    __checks__: ClassVar[tuple[object, ...]] = (_refresh_below_validity,)

    @property
    def enabled(self) -> bool:
        return self.key_dir is not None


def parse_dnssec(raw: Any, section: str = "dns.dnssec") -> tuple[DnssecSettings, list[Reason]]:
    """Validate the mapping; every problem is returned, nothing is raised."""
    return parse_section(DnssecSettings, raw, section)


def parse_top_level(raw: Any) -> tuple[DnssecSettings, list[Reason]]:
    """The top-level `dnssec:` section (what `gslb check` validates)."""
    return parse_dnssec(raw, section="dnssec")


def dnssec_section(
    under_dns: DnssecSettings, top_level: Any
) -> tuple[DnssecSettings, list[Reason]]:
    """The settings from a top-level `dnssec:` section, if there is one, else `dns.dnssec`.

    Both spellings are accepted (the issue and the `dns:` section each suggest one); setting
    both is an error rather than a silent merge."""
    if top_level is None:
        return under_dns, []
    settings, reasons = parse_dnssec(top_level, section="dnssec")
    if under_dns != DnssecSettings():
        reasons.append(
            Reason(mark_of(top_level), "dnssec", "set either `dnssec:` or `dns.dnssec:`, not both")
        )
    return settings, reasons
