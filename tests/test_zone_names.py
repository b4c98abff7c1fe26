"""Properties of the zone lookup around service names (RFC 8020, RFC 4592), for random names."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import dns.zone
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.zone.lookup import Kind, ZoneSet

ZONE = """\
$ORIGIN example.test.
$TTL 300
@        3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60
@        3600 IN NS  ns1
ns1           IN A   192.0.2.53
*.wild        IN A   192.0.2.99
*             IN TXT "apex"
a.b           IN A   192.0.2.5
"""
PLAIN = ZONE.replace("example.test.", "plain.test.").replace('*             IN TXT "apex"\n', "")
SERVICES = [
    f"{name}.{origin}"
    for origin in ("example.test.", "plain.test.")
    for name in ("www.eu", "x.wild", "deep.er.than.ever")
]
LABELS = ["eu", "www", "wild", "x", "y", "b", "a", "deep", "er", "than", "ever", "z"]


def zoneset() -> ZoneSet:
    zones = {
        "example.test.": dns.zone.from_text(ZONE, relativize=False),
        "plain.test.": dns.zone.from_text(PLAIN, relativize=False),
    }
    return ZoneSet(zones, SERVICES)


ZONES = zoneset()
names = st.tuples(
    st.lists(st.sampled_from(LABELS), min_size=1, max_size=5),
    st.sampled_from(["example.test.", "plain.test."]),
).map(lambda pair: dns.name.from_text(".".join(pair[0]) + "." + pair[1]))
types = st.sampled_from([dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.MX])


@settings(max_examples=400, deadline=None)
@given(names, types)
def test_nxdomain_means_nothing_below(name: dns.name.Name, rdtype: int) -> None:
    """RFC 8020: if a name is NXDOMAIN, so is every name below it; its ancestors exist."""
    kind = ZONES.lookup(name, rdtype).kind
    if kind is Kind.NXDOMAIN:
        child = dns.name.from_text("probe", origin=name)
        assert ZONES.lookup(child, rdtype).kind is Kind.NXDOMAIN
    for service in SERVICES:
        service_name = dns.name.from_text(service)
        if service_name.is_subdomain(name):  # name is the service or one of its ancestors
            assert kind is not Kind.NXDOMAIN, (name, service)


@settings(max_examples=200, deadline=None)
@given(names)
def test_no_wildcard_synthesis_at_or_below_service_names(name: dns.name.Name) -> None:
    """Names at, above or below a service never come from a wildcard above the service."""
    result = ZONES.lookup(name, dns.rdatatype.TXT)
    for service in SERVICES:
        service_name = dns.name.from_text(service)
        if name.is_subdomain(service_name) or service_name.is_subdomain(name):
            assert not result.wildcard, (name, service)


def test_services_at_or_below_a_delegation_point_are_reported() -> None:
    from gslb.errors import Mark
    from gslb.zone.checks import services_under_delegations

    class Service:
        def __init__(self, line: int) -> None:
            self.mark = Mark("gslb.yaml", line)

    zone = dns.zone.from_text(ZONE + "child IN NS ns.elsewhere.example.net.\n", relativize=False)
    names = ["child.example.test.", "www.child.example.test.", "www.eu.example.test."]
    zones = ZoneSet({"example.test.": zone}, names)
    services = {name: Service(line) for line, name in enumerate(names, start=10)}
    reasons = services_under_delegations(zones, services)
    assert [(str(r.mark), r.key) for r in reasons] == [
        ("gslb.yaml:10", "child.example.test."),
        ("gslb.yaml:11", "www.child.example.test."),
    ]
    assert "is at the delegation point child.example.test." in reasons[0].message
    assert "is below the delegation point child.example.test." in reasons[1].message
