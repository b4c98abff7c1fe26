"""Response rate limiting (RRL) for UDP answers: BIND `rate-limit` / NSD `rrl-*` semantics.

Why: an authoritative server answers spoofed queries to whoever the source address claims to
be, so an attacker can use it to flood a victim with answers larger than the queries. RRL
counts identical responses per (client network, response class, name) and, over the limit,
drops them, except every `slip`-th one, which is sent truncated (TC=1, no records, about the
size of the query) so a real client behind the spoofed address retries over TCP and still
gets its answer. Amplification of a slipped response is <= 1.

Accounting (BIND's): each bucket holds a balance of at most `rate` responses; it refills at
`rate` per second; each response costs one; a response is sent while the balance is >= 0.
Debt is capped at `window * rate`, so a flooder keeps being limited for up to `window`
seconds after the flood slows, and an entry idle for `window` seconds starts fresh.

Response classes and the key the caller passes (BIND's choices):
  ANSWER    per qname (lowercase wire bytes; append the 2-byte qtype to key per type)
  NODATA    per qname
  NXDOMAIN  per zone (the zone's apex name), so random-subdomain floods share one bucket
  REFERRAL  per delegation point
  ERROR     per client network only (key is ignored): FORMERR, REFUSED, NOTIMP, SERVFAIL
The caller never rate-limits TCP (a TCP client proved its address), and should exempt
queries with a valid DNS server cookie (RFC 7873 section 5.2.3), as they prove it too.

The state table is bounded: an LRU of at most `max_entries` buckets; when full, the least
recently used bucket is evicted (it is idle or the table is under a spread attack, where a
fresh bucket for the evicted key costs at most one extra burst of `rate`).

Pure: time comes from an injected Clock; no I/O except a log line when a bucket starts or
stops being limited.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any, ClassVar

from ..clock import SYSTEM_CLOCK, Clock
from ..config.schema import At, Bool, Cidr, Int, ListOf, Optional, Report, parse_section, setting
from ..errors import Reason
from .acl import V4_MAPPED_PREFIX, IPNetwork, NetworkSet

log = logging.getLogger("gslb.dns.rrl")

# NSD's default rrl-ratelimit. Per (network, class, name) a legitimate caching resolver asks at
# most once per TTL per ECS scope, far below this; see docs/protection.md for ECS resolvers.
DEFAULT_RATE = 200
DEFAULT_SLIP = 2
DEFAULT_WINDOW = 15
DEFAULT_MAX_ENTRIES = 100_000


class ResponseClass(IntEnum):
    ANSWER = 0
    NODATA = 1
    NXDOMAIN = 2
    REFERRAL = 3
    ERROR = 4


class Verdict(IntEnum):
    SEND = 0  # send the response as built
    DROP = 1  # send nothing
    SLIP = 2  # send a truncated response: TC=1, empty answer/authority/additional


def _enabled_switch(settings: RrlSettings, report: Report, at: At, raw: object) -> RrlSettings:
    """`enabled: false` is the same as `rate: 0`."""
    return settings if settings.switch else replace(settings, rate=0, switch=True)


_RATE = Int(0, 1_000_000)


@dataclass(frozen=True)
class RrlSettings:
    # responses/s per network, class and name; 0 = RRL off
    rate: int = setting(DEFAULT_RATE, _RATE)
    # every slip-th limited response is sent truncated; 0 never, 1 all
    slip: int = setting(DEFAULT_SLIP, Int(0, 10))  # BIND's range
    window: int = setting(DEFAULT_WINDOW, Int(1, 3600))  # seconds of debt (BIND `window`)
    ipv4_prefix: int = setting(24, Int(8, 32))
    ipv6_prefix: int = setting(56, Int(16, 128))
    nxdomain_rate: int | None = setting(None, Optional(_RATE))  # None = rate; 0 = unlimited
    referral_rate: int | None = setting(None, Optional(_RATE))
    error_rate: int | None = setting(None, Optional(_RATE))
    nodata_rate: int | None = setting(None, Optional(_RATE))
    exempt: tuple[IPNetwork, ...] = setting((), ListOf(Cidr(strict=True)))
    log_only: bool = setting(False, Bool())  # count what would be limited, send everything
    max_entries: int = setting(DEFAULT_MAX_ENTRIES, Int(1_000, 100_000_000))
    switch: bool = setting(True, Bool(), key="enabled")  # false: the same as rate 0

    __checks__: ClassVar[tuple[object, ...]] = (_enabled_switch,)

    def class_rate(self, rclass: ResponseClass) -> int:
        """Effective rate for one response class (0 = unlimited)."""
        if self.rate == 0:
            return 0
        specific = {
            ResponseClass.ANSWER: None,
            ResponseClass.NODATA: self.nodata_rate,
            ResponseClass.NXDOMAIN: self.nxdomain_rate,
            ResponseClass.REFERRAL: self.referral_rate,
            ResponseClass.ERROR: self.error_rate,
        }[rclass]
        return self.rate if specific is None else specific

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass
class RrlStats:
    """Counters since start; exported by the lead as gslb_dns_rrl_<name>_total."""

    sent: int = 0  # responses allowed (includes exempt and log-only sends)
    dropped: int = 0
    slipped: int = 0
    would_drop: int = 0  # log-only mode: would have been dropped
    would_slip: int = 0  # log-only mode: would have been slipped
    exempt: int = 0  # would have been limited, sent because the client network is exempt
    evictions: int = 0  # buckets pushed out of the full table

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Bucket layout (a list: cheapest mutable record in CPython): balance, last update, slip count,
# limited flag (for log lines on transitions only).
_BAL, _LAST, _SLIPS, _LIMITED = 0, 1, 2, 3
# Keeps IPv6 network numbers apart from IPv4 ones in the shared table.
_V6_TAG = 1 << 130


# Module constants: cheaper than enum attribute lookups on the hot path.
_SEND, _DROP, _SLIP = Verdict.SEND, Verdict.DROP, Verdict.SLIP
_ERROR = ResponseClass.ERROR


class ResponseRateLimiter:
    """One per worker process; `check` is called once per UDP response about to be sent."""

    def __init__(self, settings: RrlSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        for name in ("rate", "slip", "window", "max_entries"):
            if getattr(settings, name) < 0:
                raise ValueError(f"rrl {name} must be >= 0")
        if not 0 <= settings.ipv4_prefix <= 32 or not 0 <= settings.ipv6_prefix <= 128:
            raise ValueError("rrl prefix lengths out of range")
        if settings.max_entries < 1:
            raise ValueError("rrl max_entries must be >= 1")
        self.settings = settings
        self.clock = clock
        self._now = clock.monotonic  # bound once: saves a lookup per call
        self.stats = RrlStats()
        self._enabled = settings.enabled
        self._rates = tuple(float(settings.class_rate(c)) for c in ResponseClass)
        self._debt = tuple(-float(settings.window) * r for r in self._rates)
        self._window = float(settings.window)
        self._slip = settings.slip
        self._log_only = settings.log_only
        self._shift4 = 32 - settings.ipv4_prefix
        self._shift6 = 128 - settings.ipv6_prefix
        self._exempt = NetworkSet(settings.exempt)
        self._has_exempt = bool(settings.exempt)
        self._max = settings.max_entries
        self._table: OrderedDict[tuple[int, int, bytes], list[Any]] = OrderedDict()

    def __len__(self) -> int:
        """Number of buckets currently tracked (never more than max_entries)."""
        return len(self._table)

    def network_of(self, client: bytes) -> int:
        """The table's network number for a packed address (IPv4-mapped IPv6 counts as IPv4)."""
        if len(client) == 4:
            return int.from_bytes(client, "big") >> self._shift4
        if client[:12] == V4_MAPPED_PREFIX:
            return int.from_bytes(client[12:], "big") >> self._shift4
        return (int.from_bytes(client, "big") >> self._shift6) | _V6_TAG

    def check(self, client: bytes, family: int, rclass: ResponseClass, key: bytes) -> Verdict:
        """Decide the fate of one UDP response.

        client: packed source address (4 or 16 bytes; the length decides the family, `family`
        is accepted for symmetry with socket APIs and not otherwise used).
        key: lowercase wire-format name the response is accounted under (see module doc).
        """
        if not self._enabled:
            return _SEND
        rate = self._rates[rclass]
        if rate == 0.0:
            self.stats.sent += 1
            return _SEND
        # Inlined network_of: this is the hot path.
        if len(client) == 4:
            net = int.from_bytes(client, "big") >> self._shift4
        elif client[:12] == V4_MAPPED_PREFIX:
            net = int.from_bytes(client[12:], "big") >> self._shift4
        else:
            net = (int.from_bytes(client, "big") >> self._shift6) | _V6_TAG
        if rclass == _ERROR:
            key = b""
        now = self._now()
        table = self._table
        k = (net, rclass, key)
        bucket = table.get(k)
        if bucket is None:
            if len(table) >= self._max:
                table.popitem(last=False)
                self.stats.evictions += 1
            table[k] = [rate - 1.0, now, 0, False]
            self.stats.sent += 1
            return _SEND
        table.move_to_end(k)
        elapsed = now - bucket[_LAST]
        balance = bucket[_BAL]
        if elapsed > 0.0:
            bucket[_LAST] = now
            if elapsed >= self._window:
                balance = rate
            else:
                balance += elapsed * rate
                if balance > rate:
                    balance = rate
        balance -= 1.0
        debt = self._debt[rclass]
        if balance < debt:
            balance = debt
        bucket[_BAL] = balance
        if balance >= 0.0:
            if bucket[_LIMITED]:
                bucket[_LIMITED] = False
                self._log_transition(net, rclass, key, limited=False)
            self.stats.sent += 1
            return _SEND
        if self._has_exempt and self._exempt.contains(client):
            # Checked only here, on the rare limited path, so it costs nothing otherwise.
            self.stats.exempt += 1
            self.stats.sent += 1
            return _SEND
        if not bucket[_LIMITED]:
            bucket[_LIMITED] = True
            self._log_transition(net, rclass, key, limited=True)
        verdict = _DROP
        if self._slip:
            slips = bucket[_SLIPS] + 1
            if slips >= self._slip:
                slips = 0
                verdict = _SLIP
            bucket[_SLIPS] = slips
        stats = self.stats
        if self._log_only:
            if verdict == _SLIP:
                stats.would_slip += 1
            else:
                stats.would_drop += 1
            stats.sent += 1
            return _SEND
        if verdict == _SLIP:
            stats.slipped += 1
        else:
            stats.dropped += 1
        return verdict

    def _log_transition(self, net: int, rclass: ResponseClass, key: bytes, limited: bool) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        mode = "would limit" if self._log_only else "limiting"
        name = ResponseClass(rclass).name  # callers may pass a plain int
        what = f"{mode} {name} responses" if limited else f"stopped limiting {name}"
        log.info("rrl: %s to %s for %s", what, self._net_text(net), _name_text(key))

    def _net_text(self, net: int) -> str:
        if net & _V6_TAG:
            prefix = self.settings.ipv6_prefix
            addr = (net & ~_V6_TAG) << self._shift6
            return f"{ipaddress_text(addr, 6)}/{prefix}"
        return f"{ipaddress_text(net << self._shift4, 4)}/{self.settings.ipv4_prefix}"


def ipaddress_text(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _name_text(key: bytes) -> str:
    """Best-effort text of a wire-format name (for log lines only)."""
    if not key:
        return "(any name)"
    labels: list[str] = []
    i = 0
    while i < len(key):
        n = key[i]
        if n == 0 or i + 1 + n > len(key):
            break
        labels.append(key[i + 1 : i + 1 + n].decode("ascii", "backslashreplace"))
        i += 1 + n
    return ".".join(labels) + "."


# ---------------------------------------------------------------------------------------------
# Configuration: the top-level `rrl:` section.


def parse_rrl(raw: Any) -> tuple[RrlSettings, list[Reason]]:
    """The `rrl:` section (a MarkedDict, or None for defaults) -> (settings, reasons).

    Keys: rate, slip, window, ipv4_prefix, ipv6_prefix, nxdomain_rate, referral_rate,
    error_rate, nodata_rate, exempt (list of CIDR), log_only (bool), max_entries,
    enabled (bool; false is the same as rate: 0). Reasons carry file:line:column.
    """
    return parse_section(RrlSettings, raw, "rrl")


__all__ = [
    "DEFAULT_RATE",
    "ResponseClass",
    "ResponseRateLimiter",
    "RrlSettings",
    "RrlStats",
    "Verdict",
    "parse_rrl",
]
