"""What the admin API shows of DNSSEC: key states per zone and the signature cache."""

from __future__ import annotations

from typing import Any

from .signer import Signers


def describe_signing(signers: object, now: float) -> dict[str, Any]:
    """/status `dnssec`: each signed zone's keys (tag, algorithm, role, state) and the cache.
    `signers` is the responder's (an empty mapping when nothing is signed)."""
    if not isinstance(signers, Signers) or not signers:
        return {"enabled": False, "zones": {}}
    zones = {}
    for origin, signer in sorted(signers.by_zone.items()):
        split = any(not key.sep for key in signer.keys)
        zones[origin.to_text()] = {
            "keys": [
                {
                    "tag": key.tag,
                    "algorithm": key.algorithm,
                    "role": key.role if split else "csk",
                    "state": key.state(now).value,
                    "next_change": key.next_change(now),
                    "timing": {name: value for name, value in key.timing.items() if value},
                }
                for key in signer.keys
            ],
            "signature_inception": signer.window().inception,
            "signature_expiration": signer.window().expiration,
        }
    return {
        "enabled": True,
        "zones": zones,
        "signature_cache": signature_cache_counts(signers),
    }


def signature_cache_counts(signers: object) -> dict[str, int]:
    if not isinstance(signers, Signers) or not signers:
        return {}
    cache = signers.cache
    return {
        "hits": cache.hits,
        "misses": cache.misses,
        "evictions": cache.evictions,
        "entries": len(cache),
        "max": cache.maxsize,
    }
