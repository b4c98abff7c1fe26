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
