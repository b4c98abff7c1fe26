"""The steering decision, narrated: what `gslb explain` prints.

It calls SteeringEngine.decide() for the answer (the very path the DNS server uses) and the
same policy chain again with a trace attached, so the narration cannot drift from the code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

from ..config.model import Datacenter
from ..geo.locate import Location, Locator
from ..health.snapshot import HealthHolder, HealthSnapshot
from . import policies as P
from .service import Service


class SteeringEngine(Protocol):
    """What explain needs from gslb.steering.engine.SteeringEngine (no import: no cycle)."""

    health: HealthHolder
    locator: Locator | None
    datacenters: Mapping[str, Datacenter]

    def decide(self, service: Service, address: bytes, prefix: int) -> Any: ...

    def narrate(
        self,
        service: Service,
        location: Location | None,
        address: bytes,
        prefix: int,
        snap: HealthSnapshot,
        trace: list[dict[str, Any]],
    ) -> None: ...

    def scope_reason(self, service: Service, address: bytes, prefix: int) -> str: ...

    def transitions(self) -> dict[str, dict[str, dict[str, Any]]]: ...


def service_datacenters(service: Service) -> list[tuple[str, int, str]]:
    """Every datacenter a service can answer with: (name, weight, status), first mention wins."""
    seen: dict[str, tuple[str, int, str]] = {}
    values = list(service.datacenters)
    for tier in service.tiers:
        values.extend(tier)
    for rule in service.rules:
        for pool in P.rule_chain(service, rule):
            values.extend(pool.values)
    if service.fallback_pool:
        values.extend(service.pools[service.fallback_pool].values)
    for v in values:
        seen.setdefault(v.datacenter, (v.datacenter, v.weight, v.status))
    return list(seen.values())


def explain_decision(
    engine: SteeringEngine, service: Service, address: bytes, prefix: int
) -> dict[str, Any]:
    snap = engine.health.current
    location = None
    if engine.locator is not None and prefix > 0:
        location = engine.locator.locate(address, prefix)
    decision = engine.decide(service, address, prefix)
    trace: list[dict[str, Any]] = []
    engine.narrate(service, location, address, prefix, snap, trace)

    if decision.outcome == "answer" and trace and trace[-1]["step"] in ("weighted", "rotate"):
        # The weighted step draws per query; show what this query's draw gave.
        trace.append(
            {
                "step": "pick",
                "detail": f"drew {', '.join(decision.datacenters)}: "
                f"{', '.join(decision.ipv4 + decision.ipv6) or 'no addresses'}",
                "datacenters": list(decision.datacenters),
            }
        )
    candidates = []
    for name, weight, status in service_datacenters(service):
        dc = engine.datacenters[name]
        state = snap.state(name)
        th = snap.targets.get(name)
        dist = None
        if (
            location is not None
            and location.latitude is not None
            and location.longitude is not None
        ):
            dist = P.distance_km(location.latitude, location.longitude, dc.latitude, dc.longitude)
        candidates.append(
            {
                "datacenter": name,
                "region": dc.region,
                "latitude": dc.latitude,
                "longitude": dc.longitude,
                "distance_km": round(dist, 1) if dist is not None else None,
                "bias": dc.bias,
                "biased_distance_km": (
                    round(P.biased_distance(dist, dc.bias), 1) if dist is not None else None
                ),
                "state": state,
                "status": status,
                "healthy": P.is_up(status, state, service.unknown_is),
                "weight": weight,
                "ipv4": list(dc.ipv4),
                "ipv6": list(dc.ipv6),
                "cname": dc.cname,
                "capacity": dc.capacity,
                # What its proxy reported with its health (spillover weighs the headroom).
                "load": th.load if th is not None else None,
                "reported_capacity": th.capacity if th is not None else None,
            }
        )
    ip = ipaddress.ip_address(address)
    return {
        "service": service.name,
        "policy": list(service.policy),
        "client": {"network": f"{ip}/{prefix}", "address": str(ip), "prefix": prefix},
        "location": location.as_dict() if location is not None else None,
        "health_epoch": snap.epoch,
        "candidates": candidates,
        "steps": trace,
        "outcome": decision.outcome,
        "answers": [decision.cname] if decision.cname else list(decision.ipv4 + decision.ipv6),
        "cname": decision.cname,
        "ipv4": list(decision.ipv4),
        "ipv6": list(decision.ipv6),
        "datacenters": list(decision.datacenters),
        "scope_prefix": decision.scope_prefix,
        "scope_network": _scope_net(address, decision.scope_prefix),
        "scope_reason": engine.scope_reason(service, address, prefix),
        "transitions": engine.transitions().get(service.name, {}),
        "ttl": decision.ttl,
    }


def _scope_net(address: bytes, scope: int) -> str:
    kind = ipaddress.IPv4Network if len(address) == 4 else ipaddress.IPv6Network
    return str(kind((int.from_bytes(address, "big"), scope), strict=False))


def format_text(report: dict[str, Any]) -> str:
    """Human-readable rendering of explain_decision()'s dict."""
    lines = [f"service   {report['service']}  policy: {' -> '.join(report['policy'])}"]
    lines.append(f"client    {report['client']['network']}")
    loc = report["location"]
    if loc is None:
        lines.append("location  not used (no GeoIP database, or source prefix 0)")
    elif loc["continent"] is None:
        lines.append(f"location  unknown (network {loc['network']})")
    else:
        place = "-".join(x for x in (loc["continent"], loc["country"], loc["subdivision"]) if x)
        city = f" {loc['city']}" if loc.get("city") else ""
        coords = (
            f" ({loc['latitude']:.2f}, {loc['longitude']:.2f})"
            if loc["latitude"] is not None
            else ""
        )
        lines.append(f"location  {place}{city}{coords} network {loc['network']}")
    lines.append(f"health    epoch {report['health_epoch']}")
    lines.append("candidates:")
    for c in report["candidates"]:
        dist = f"{c['distance_km']:>8.0f} km" if c["distance_km"] is not None else "       - km"
        bias = f" bias {c['bias']:+g}" if c["bias"] else ""
        health = "healthy" if c["healthy"] else "DOWN"
        forced = f" status {c['status']}" if c["status"] != "obey" else ""
        capacity = c["capacity"] or c.get("reported_capacity")
        load = (
            f" load {c['load']:g}{f'/{capacity:g}' if capacity else ''} req/s"
            if c.get("load") is not None
            else ""
        )
        lines.append(
            f"  {c['datacenter']:<16} {dist}{bias}  {c['state']:<7} -> {health:<7}"
            f" weight {c['weight']}{forced}{load}"
        )
    lines.append("steps:")
    for i, s in enumerate(report["steps"], 1):
        lines.append(f"  {i}. {s['step']}: {s['detail']}")
    if report["outcome"] == "answer":
        lines.append(f"answer    {' '.join(report['answers']) or '(no addresses: NODATA)'}")
        lines.append(f"          datacenters {', '.join(report['datacenters'])}")
    else:
        lines.append(f"answer    {report['outcome'].upper()}")
    lines.append(
        f"ecs scope /{report['scope_prefix']} ({report['scope_network']})   ttl {report['ttl']}"
    )
    lines.append(f"          {report['scope_reason']}")
    return "\n".join(lines)
