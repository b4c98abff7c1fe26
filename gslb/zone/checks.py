"""Checks of GSLB services against the zones they live in. Pure: reasons, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dns.name

from ..errors import Reason
from .lookup import ZoneSet


def services_under_delegations(zones: ZoneSet, services: Mapping[str, Any]) -> list[Reason]:
    """A reason (at the service's file:line) for every service at or below a delegation
    point: the child zone's servers answer for such a name, so gslb's answer is never used
    (and gslb itself answers with the referral)."""
    reasons = []
    for name, service in sorted(services.items()):
        qname = dns.name.from_text(name)
        cut = zones.delegation_for(qname)
        if cut is None:
            continue
        where = "at" if cut == qname else "below"
        reasons.append(
            Reason(
                getattr(service, "mark", None),
                name,
                f"service is {where} the delegation point {cut.to_text()} (NS records in the "
                "zone); the delegated servers answer for it, never gslb: move the service or "
                "remove the delegation",
            )
        )
    return reasons
