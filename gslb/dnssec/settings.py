"""The `dns.dnssec` section of the config file: where the keys are and how signatures live."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..config.yaml_loader import MarkedDict, mark_of
from ..errors import Reason

DAY = 86400


@dataclass(frozen=True)
class DnssecSettings:
    key_dir: str | None = None  # None: nothing is signed
    validity: int = 7 * DAY  # seconds from the window's start to a signature's expiration
    inception_offset: int = 3600  # inception backdated by this much (clock skew of resolvers)
    refresh: int = 2 * DAY  # re-sign when less than this much validity remains
    signature_cache_size: int = 50_000  # RRSIG RRsets kept (~1.5 KB each), one per content
    dnskey_ttl: int = 3600  # TTL of the DNSKEY, CDS and CDNSKEY RRsets we publish
    cds: bool = True  # publish CDS/CDNSKEY (RFC 7344) for the zone's SEP keys

    @property
    def enabled(self) -> bool:
        return self.key_dir is not None


_LIMITS: dict[str, tuple[int, int]] = {
    "validity": (3600, 90 * DAY),
    "inception_offset": (0, 7 * DAY),
    "refresh": (60, 89 * DAY),
    "signature_cache_size": (16, 10_000_000),
    "dnskey_ttl": (0, 7 * DAY),
}


def parse_dnssec(raw: Any, section: str = "dns.dnssec") -> tuple[DnssecSettings, list[Reason]]:
    """Validate the mapping; every problem is returned, nothing is raised."""
    settings = DnssecSettings()
    if raw is None:
        return settings, []
    if not isinstance(raw, dict):
        return settings, [Reason(mark_of(raw), section, "must be a mapping")]
    reasons: list[Reason] = []
    known = {f.name for f in fields(DnssecSettings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = raw.mark_of(key) if isinstance(raw, MarkedDict) else None
        name = f"{section}.{key}"
        if key not in known:
            reasons.append(Reason(where, name, f"unknown key; expected one of {sorted(known)}"))
        elif key == "key_dir":
            if not isinstance(value, str) or not value:
                reasons.append(Reason(where, name, "must be a directory path"))
            else:
                values[key] = value
        elif key == "cds":
            if not isinstance(value, bool):
                reasons.append(Reason(where, name, "must be true or false"))
            else:
                values[key] = value
        elif isinstance(value, bool) or not isinstance(value, int):
            reasons.append(Reason(where, name, "must be a whole number (seconds or entries)"))
        else:
            low, high = _LIMITS[key]
            if not low <= value <= high:
                reasons.append(Reason(where, name, f"must be between {low} and {high}"))
            else:
                values[key] = value
    settings = replace(settings, **values)
    if settings.refresh >= settings.validity:
        where = mark_of(raw, "refresh") if "refresh" in raw else mark_of(raw)
        reasons.append(Reason(where, f"{section}.refresh", "must be less than validity"))
    return settings, reasons


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
