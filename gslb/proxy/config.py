"""Full mode: the `proxy:` section of the gslb YAML file -> ProxySettings for one region.

The section is declared with the schema framework (gslb.config.schema): one frozen dataclass per
mapping (proxy, region, listener, certificate, route, pool, member, check, outlier, limits,
cache), each field with its kind. Shape and the rules inside one mapping come from the
declarations and their `__checks__`; the rules across mappings (routes and tcp listeners name
pools that exist, every pool is used, min_healthy after proxy.defaults) are checked here. Every
problem is reported at once, as "file:line:col: proxy.path.key: message".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar

from ..config.schema import (
    INVALID,
    At,
    Bool,
    Cidr,
    Custom,
    Duration,
    Enum,
    Float,
    HostPort,
    HostPortKind,
    Int,
    Invalid,
    ListOf,
    MapOf,
    Optional,
    Regex,
    Report,
    Scalar,
    Section,
    Size,
    Str,
    parse_into,
    required,
    section_keys,
    setting,
)
from ..config.yaml_loader import load_yaml_file, mark_of
from ..errors import ConfigError, Mark, Reason
from .balancers import BALANCER_NAMES, valid_hash_key
from .outlier import OutlierSettings
from .rtt import RttSpec
from .server import parse_listen
from .settings import (
    DEFAULT_HIDE_HEADERS,
    CacheSpec,
    CertSpec,
    CheckSpec,
    LimitsSpec,
    ListenerSpec,
    MemberSpec,
    PoolSpec,
    ProxySettings,
    RouteSpec,
)

_HOSTPORT = HostPortKind().description

# -- one-off kinds ----------------------------------------------------------------------------


def _listen(raw: object, at: At, report: Report) -> HostPort | Invalid:
    """HOST:PORT; ':PORT' means every IPv4 address (0.0.0.0)."""
    try:
        host, port = parse_listen(raw) if isinstance(raw, str) else ("", -1)
    except ValueError:
        host, port = "", -1
    if port < 0:
        return report.error(at, f"must be {_HOSTPORT}, not {raw!r}")
    return HostPort(host, port)


def _member_address(raw: object, at: At, report: Report) -> tuple[HostPort, bool] | Invalid:
    """'host:port', 'http://host:port' or 'https://host:port' (TLS to that member)."""
    tls = False
    if isinstance(raw, str):
        scheme, sep, rest = raw.partition("://")
        if sep:
            if scheme.lower() not in ("http", "https"):
                return report.error(at, f"scheme must be http or https, not {scheme!r}")
            tls = scheme.lower() == "https"
            raw = rest.rstrip("/")
    parsed = HostPortKind().parse(raw, at, report)
    return parsed if isinstance(parsed, Invalid) else (parsed, tls)


def _url_path(raw: object, at: At, report: Report) -> str | Invalid:
    if not isinstance(raw, str) or not raw.startswith("/"):
        return report.error(at, f"must be a path starting with '/', not {raw!r}")
    return raw


def _cidr_text(raw: object, at: At, report: Report) -> str | Invalid:
    """A network, kept as written (the servers parse it again)."""
    checked = Cidr().parse(raw, at, report)
    return INVALID if isinstance(checked, Invalid) else str(raw).strip()


def _readable(raw: object, at: At, report: Report) -> str | Invalid:
    path = Str().parse(raw, at, report)
    if isinstance(path, Invalid):
        return path
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return report.error(at, f"cannot read {path!r}: {exc.strerror}")
    return path


def _hash_key(raw: object, at: At, report: Report) -> str | Invalid:
    if not isinstance(raw, str) or not valid_hash_key(raw):
        return report.error(at, f"must be ip, uri, header:NAME or cookie:NAME, not {raw!r}")
    return raw


def _statuses(raw: object, at: At, report: Report) -> tuple[int, ...] | Invalid:
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(
        isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in items
    ):
        return report.error(at, "must be an HTTP status or a list of them (100-599)")
    return tuple(items)


def _access_log(raw: object, at: At, report: Report) -> str | Invalid:
    # YAML 1.1 reads an unquoted `off` as false: that is what the operator meant.
    return "off" if raw is False else Enum("off", "combined", "json").parse(raw, at, report)


CIDRS = ListOf(Custom(_cidr_text, "a network (CIDR)"))
NAMES = ListOf(Str())

# -- declarations -------------------------------------------------------------------------------


def _check_times(value: _Check, report: Report, at: At, raw: Any) -> None:
    if value.interval <= 0:
        report.error(at.child(raw, "interval"), "must be > 0")
    elif value.timeout >= value.interval:
        report.error(at.child(raw, "timeout"), "must be shorter than the interval")


@dataclass(frozen=True)
class _Check:
    type: str = setting("http", Enum("http", "tcp"))
    path: str = setting("/", Custom(_url_path, "a path"))
    interval: float = setting(2.0, Duration(0))
    timeout: float = setting(1.0, Duration(0))
    rise: int = setting(2, Int(1))
    fall: int = setting(3, Int(1))
    expect_status: tuple[int, ...] = setting((200,), Custom(_statuses, "HTTP statuses"))
    body_match: str | None = setting(None, Optional(Regex()))  # searched in the first 64 KiB
    host_header: str | None = setting(None, Optional(Str()))

    __renamed__: ClassVar[Mapping[str, str]] = {"expect_body": "body_match"}
    __checks__: ClassVar[tuple[object, ...]] = (_check_times,)

    def spec(self) -> CheckSpec:
        return CheckSpec(
            path=None if self.type == "tcp" else self.path,
            interval=self.interval,
            timeout=self.timeout,
            rise=self.rise,
            fall=self.fall,
            expect_status=self.expect_status,
            body_match=self.body_match,
            host_header=self.host_header,
        )


_OD = OutlierSettings()


def _ejection_order(value: _Outlier, report: Report, at: At, raw: Any) -> None:
    if value.max_ejection < value.base_ejection:
        report.error(at.child(raw, "max_ejection"), "must be >= base_ejection")


@dataclass(frozen=True)
class _Outlier:
    consecutive_failures: int = setting(_OD.consecutive_failures, Int(1))
    base_ejection: float = setting(_OD.base_ejection, Duration(0))
    max_ejection: float = setting(_OD.max_ejection, Duration(0))
    max_ejected_percent: float = setting(_OD.max_ejected_percent, Float(0, 100))

    __checks__: ClassVar[tuple[object, ...]] = (_ejection_order,)

    def spec(self) -> OutlierSettings:
        return OutlierSettings(
            consecutive_failures=self.consecutive_failures,
            base_ejection=self.base_ejection,
            max_ejection=self.max_ejection,
            max_ejected_percent=self.max_ejected_percent,
        )


@dataclass(frozen=True)
class _PoolDefaults:
    """Pool settings; None = not written here (proxy.defaults, then PoolSpec's default)."""

    balance: str | None = setting(None, Enum(*BALANCER_NAMES))
    hash_key: str | None = setting(None, Custom(_hash_key, "ip, uri, header:NAME, cookie:NAME"))
    check: _Check | None = setting(None, Optional(Section(_Check)))
    outlier: _Outlier | None = setting(None, Optional(Section(_Outlier)))
    slow_start: float | None = setting(None, Duration(0))
    min_healthy: int | None = setting(None, Int(0))
    max_connections: int | None = setting(None, Int(1))
    keepalive_timeout: float | None = setting(None, Duration(0))
    connect_timeout: float | None = setting(None, Duration(0))
    response_timeout: float | None = setting(None, Duration(0))
    retries: int | None = setting(None, Int(0))
    retry_non_idempotent: bool | None = setting(None, Bool())
    retry_budget_percent: float | None = setting(None, Float(0, 100))
    persistence: str | None = setting(None, Enum("none", "cookie"))
    cookie_name: str | None = setting(None, Str())
    tls: bool | None = setting(None, Bool())
    verify: bool | None = setting(None, Bool())
    ca_file: str | None = setting(None, Custom(_readable, "a readable file"))
    server_name: str | None = setting(None, Str())

    def given(self) -> dict[str, Any]:
        """The settings written here, as PoolSpec keyword arguments."""
        out: dict[str, Any] = {}
        for f in fields(_PoolDefaults):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.spec() if isinstance(value, _Check | _Outlier) else value
        return out


@dataclass(frozen=True)
class _Member:
    address: tuple[HostPort, bool] = required(
        Custom(_member_address, _HOSTPORT), placeholder=(HostPort("", 0), False)
    )
    weight: float = setting(1.0, Float(0.001))


class _MemberKind(Section[MemberSpec]):
    """A member: "host:port" (or http://, https://) or {address, weight}."""

    def __init__(self) -> None:
        super().__init__(MemberSpec)
        self.description = "a member (HOST:PORT or {address, weight})"

    def parse(self, raw: object, at: At, report: Report) -> MemberSpec | Invalid:
        if isinstance(raw, str):
            where = At(at.mark, f"{at.path}.address", at.base, "address")
            address = _member_address(raw, where, report)
            if isinstance(address, Invalid):
                return address
            return MemberSpec(address[0].host, address[0].port, 1.0, at.mark, address[1])
        entry = parse_into(_Member, raw, at, report)
        if isinstance(entry, Invalid):
            return entry
        (hp, tls) = entry.address
        return MemberSpec(hp.host, hp.port, entry.weight, mark_of(raw) or at.mark, tls)


def _unique_members(value: _Pool, report: Report, at: At, raw: Any) -> None:
    seen: set[str] = set()
    for i, member in enumerate(value.members):
        if member.name in seen:
            report.error(
                At(member.mark, f"{at.path}.members[{i}]"), f"duplicate member {member.name}"
            )
        seen.add(member.name)


@dataclass(frozen=True)
class _Pool(_PoolDefaults):
    members: tuple[MemberSpec, ...] = required(ListOf(_MemberKind(), min_len=1), placeholder=())
    name: str = ""
    mark: Mark | None = None

    __checks__: ClassVar[tuple[object, ...]] = (_unique_members,)


@dataclass(frozen=True)
class _Cert:
    hosts: tuple[str, ...] = setting((), NAMES)
    cert: str = required(Custom(_readable, "a readable file"), placeholder="")
    key: str = required(Custom(_readable, "a readable file"), placeholder="")

    def spec(self) -> CertSpec:
        return CertSpec(tuple(h.lower() for h in self.hosts), self.cert, self.key)


def _listener_rules(value: _Listener, report: Report, at: At, raw: Any) -> None:
    if value.mode == "https" and not value.certificates and not raw.get("certificates"):
        report.error(at.child(raw, "mode"), "https needs at least one certificate")
    if value.mode != "https" and raw.get("certificates"):
        report.error(at.child(raw, "certificates"), "only https listeners take certificates")
    if value.mode == "tcp" and "pool" not in raw:
        report.error(at, "a tcp listener needs 'pool'")
    if value.mode != "tcp" and value.pool is not None:
        report.error(at.child(raw, "pool"), "only tcp listeners name a pool; http uses routes")
    if value.redirect_https_port is not None and value.mode != "http":
        report.error(at.child(raw, "redirect_https_port"), "only http listeners redirect to https")


@dataclass(frozen=True)
class _Listener:
    listen: HostPort = required(Custom(_listen, _HOSTPORT), placeholder=HostPort("", 0))
    name: str = setting("", Scalar())
    mode: str = setting("http", Enum("http", "https", "tcp"))
    certificates: tuple[_Cert, ...] = setting((), ListOf(Section(_Cert), single=False))
    redirect_https_port: int | None = setting(None, Int(1, 65535))
    pool: str | None = setting(None, Str())
    mark: Mark | None = None

    __checks__: ClassVar[tuple[object, ...]] = (_listener_rules,)

    def spec(self) -> ListenerSpec:
        certs = tuple(c.spec() for c in self.certificates)
        return ListenerSpec(
            self.listen.host,
            self.listen.port,
            self.mode,
            self.name,
            certs,
            self.redirect_https_port,
            self.pool,
            self.mark,
        )


@dataclass(frozen=True)
class _Route:
    pool: str = required(Str(), placeholder="")
    hosts: tuple[str, ...] = setting((), NAMES)
    host: tuple[str, ...] = setting((), NAMES)  # the same as hosts, for one
    path_prefix: str = setting("/", Custom(_url_path, "a path"))
    cache: bool = setting(False, Bool())
    compress: bool = setting(False, Bool())
    waf: bool = setting(False, Bool())
    mark: Mark | None = None

    def spec(self) -> RouteSpec:
        return RouteSpec(
            pool=self.pool,
            hosts=tuple(h.lower() for h in self.hosts + self.host),
            path_prefix=self.path_prefix,
            cache=self.cache,
            compress=self.compress,
            waf=self.waf,
            mark=self.mark,
        )


@dataclass(frozen=True)
class _Limits:
    """Client-side limits; None = not written here (the proxy-wide value applies)."""

    allow: tuple[str, ...] | None = setting(None, CIDRS)
    deny: tuple[str, ...] | None = setting(None, CIDRS)
    rate: float | None = setting(None, Float(0))
    burst: float | None = setting(None, Float(0))
    max_connections: int | None = setting(None, Int(0))
    max_connections_per_client: int | None = setting(None, Int(0))
    max_header_bytes: int | None = setting(None, Size(0))
    max_headers: int | None = setting(None, Int(1))
    max_body_bytes: int | None = setting(None, Size(0))
    header_timeout: float | None = setting(None, Duration(0))
    idle_timeout: float | None = setting(None, Duration(0))

    def over(self, base: LimitsSpec) -> LimitsSpec:
        given = {f.name: getattr(self, f.name) for f in fields(_Limits)}
        return replace(base, **{k: v for k, v in given.items() if v is not None})


_CD = CacheSpec()


@dataclass(frozen=True)
class _Cache:
    max_bytes: int = setting(_CD.max_bytes, Size(0))
    max_object_bytes: int = setting(_CD.max_object_bytes, Size(0))
    purge_allow: tuple[str, ...] = setting(_CD.purge_allow, CIDRS)

    def spec(self) -> CacheSpec:
        return CacheSpec(self.max_bytes, self.max_object_bytes, self.purge_allow)


_RD = RttSpec()


def _rtt_report(value: _Rtt, report: Report, at: At, raw: Any) -> None:
    if value.report_networks > value.max_networks:
        report.error(at.child(raw, "report_networks"), "must be <= max_networks")


@dataclass(frozen=True)
class _Rtt:
    """The client RTT table reported on the status endpoint (proxy-wide)."""

    prefix_v4: int = setting(_RD.prefix_v4, Int(8, 32))
    prefix_v6: int = setting(_RD.prefix_v6, Int(16, 128))
    max_age: float = setting(_RD.max_age, Duration(1))
    max_networks: int = setting(_RD.max_networks, Int(1, 10_000_000))
    # A probe reads at most 256 KiB of the status body: up to ~80 bytes a network.
    report_networks: int = setting(_RD.report_networks, Int(0, 3000))

    __checks__: ClassVar[tuple[object, ...]] = (_rtt_report,)

    def spec(self) -> RttSpec:
        return RttSpec(
            self.prefix_v4, self.prefix_v6, self.max_age, self.max_networks, self.report_networks
        )


def _region_rules(value: _Region, report: Report, at: At, raw: Any) -> None:
    """Listeners and routes name pools of this region; every pool is used."""
    raw_pools = raw.get("pools")
    known = set(raw_pools) if isinstance(raw_pools, dict) else set()
    used: set[str] = set()
    raw_listeners = raw.get("listeners")
    if not raw_listeners:
        report.error(at.child(raw, "listeners"), "at least one listener is needed")
    http = False
    listen_at = at.child(raw, "listeners")
    for i, item in enumerate(raw_listeners if isinstance(raw_listeners, list) else []):
        if not isinstance(item, dict):
            continue
        mode, pool = item.get("mode", "http"), item.get("pool")
        http = http or mode != "tcp"
        if isinstance(pool, str):
            used.add(pool)
            if mode == "tcp" and pool not in known:
                where = listen_at.child(raw_listeners, i).child(item, "pool")
                report.error(where, f"unknown pool {pool!r}")
    raw_routes = raw.get("routes")
    routes_at = at.child(raw, "routes")
    for i, item in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        pool = item.get("pool") if isinstance(item, dict) else None
        if isinstance(pool, str):
            used.add(pool)
            if pool not in known:
                report.error(
                    routes_at.child(raw_routes, i).child(item, "pool"), f"unknown pool {pool!r}"
                )
    if http and not raw_routes:
        report.error(at, "http/https listeners need at least one route")
    pools_at = at.child(raw, "pools")
    for name in [n for n in (raw_pools if known else {}) if n not in used]:
        report.error(pools_at.child(raw_pools, name), "pool is not used by any route")


@dataclass(frozen=True)
class _Region:
    listeners: tuple[_Listener, ...] = setting((), ListOf(Section(_Listener), single=False))
    routes: tuple[_Route, ...] = setting((), ListOf(Section(_Route), single=False))
    pools: Mapping[str, _Pool] = setting(
        MappingProxyType({}), MapOf(Section(_Pool, name_field="name"))
    )
    limits: _Limits | None = setting(None, Section(_Limits))
    capacity: float | None = setting(None, Optional(Float(0.001)))  # requests/s, reported
    name: str = ""

    __checks__: ClassVar[tuple[object, ...]] = (_region_rules,)


@dataclass(frozen=True)
class _Proxy:
    regions: Mapping[str, _Region] = setting(
        MappingProxyType({}), MapOf(Section(_Region, name_field="name"))
    )
    defaults: _PoolDefaults = setting(_PoolDefaults(), Section(_PoolDefaults))
    limits: _Limits = setting(_Limits(), Section(_Limits))
    cache: _Cache = setting(_Cache(), Section(_Cache))
    status_path: str | None = setting("/health", Optional(Custom(_url_path, "a path")))
    metrics_path: str | None = setting(None, Optional(Custom(_url_path, "a path")))
    admin_token: str | None = setting(None, Optional(Str()))
    hide_headers: tuple[str, ...] = setting(DEFAULT_HIDE_HEADERS, NAMES)
    access_log: str = setting("off", Custom(_access_log, "off, combined or json"))
    preserve_host: bool = setting(True, Bool())
    trust_forwarded: bool = setting(False, Bool())
    trusted_proxies: tuple[str, ...] = setting((), CIDRS)
    cookie_secret: str = setting("", Str())
    compress_min_bytes: int = setting(256, Size(0))
    rtt: _Rtt = setting(_Rtt(), Section(_Rtt))


# The keys each mapping accepts (docs/proxy.md describes every one).
TOP_KEYS = set(section_keys(_Proxy))
REGION_KEYS = set(section_keys(_Region))
LISTENER_KEYS = set(section_keys(_Listener))
ROUTE_KEYS = set(section_keys(_Route))
DEFAULT_KEYS = set(section_keys(_PoolDefaults))
POOL_KEYS = set(section_keys(_Pool))
MEMBER_KEYS = set(section_keys(_Member))
CHECK_KEYS = set(section_keys(_Check))
OUTLIER_KEYS = set(section_keys(_Outlier))
LIMIT_KEYS = set(section_keys(_Limits))
CACHE_KEYS = set(section_keys(_Cache))
CERT_KEYS = set(section_keys(_Cert))
RTT_KEYS = set(section_keys(_Rtt))


def _region_settings(
    proxy: _Proxy, region: _Region, at: At, raw: Any, report: Report
) -> ProxySettings:
    defaults = proxy.defaults.given()
    pools: dict[str, PoolSpec] = {}
    raw_pools = raw.get("pools") if isinstance(raw, dict) else None
    for name, pool in region.pools.items():
        praw = raw_pools[name] if isinstance(raw_pools, dict) else {}
        mark = mark_of(praw) or pool.mark  # the pool's mapping, as before (not its key)
        spec = PoolSpec(name=name, members=pool.members, mark=mark, **{**defaults, **pool.given()})
        if spec.members and spec.min_healthy > len(spec.members):
            where = at.child(raw, "pools").child(raw_pools, name).child(praw, "min_healthy")
            report.error(
                where, f"is {spec.min_healthy} but the pool has only {len(spec.members)} members"
            )
        pools[name] = spec
    base_limits = proxy.limits.over(LimitsSpec())
    return ProxySettings(
        listeners=tuple(lst.spec() for lst in region.listeners),
        routes=tuple(r.spec() for r in region.routes),
        pools=pools,
        limits=region.limits.over(base_limits) if region.limits else base_limits,
        cache=proxy.cache.spec(),
        status_path=proxy.status_path,
        metrics_path=proxy.metrics_path,
        admin_token=proxy.admin_token or None,
        hide_headers=proxy.hide_headers,
        access_log=proxy.access_log,
        preserve_host=proxy.preserve_host,
        trust_forwarded=proxy.trust_forwarded,
        trusted_proxies=proxy.trusted_proxies,
        cookie_secret=proxy.cookie_secret,
        compress_min_bytes=proxy.compress_min_bytes,
        capacity=region.capacity,
        rtt=proxy.rtt.spec(),
    )


def settings_from_data(data: Any, region: str) -> ProxySettings:
    """Validate the whole top-level YAML mapping and return one region's settings.

    Every region is validated, not just the one asked for: a typo elsewhere is still a typo."""
    if not isinstance(data, dict) or "proxy" not in data:
        raise ConfigError(Reason(mark_of(data), "proxy", "no 'proxy' section in the file"))
    raw = {} if data["proxy"] is None else data["proxy"]
    at = At(mark_of(data, "proxy"), "proxy")
    report = Report(at.mark.file if at.mark else "<string>")
    proxy = parse_into(_Proxy, raw, at, report)
    raw_regions = raw.get("regions") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and not raw_regions:
        report.error(at.child(raw, "regions"), "at least one region is needed")
    chosen: ProxySettings | None = None
    if not isinstance(proxy, Invalid) and isinstance(raw_regions, dict):
        regions_at = at.child(raw, "regions")
        for name, parsed in proxy.regions.items():
            settings = _region_settings(
                proxy, parsed, regions_at.child(raw_regions, name), raw_regions[name], report
            )
            if name == region:
                chosen = settings
    if report.reasons:
        raise ConfigError(report.sorted())
    if chosen is None:
        known = ", ".join(sorted(raw_regions or ())) or "none"
        where = mark_of(raw, "regions")
        raise ConfigError(Reason(where, "proxy.regions", f"no region {region!r} (known: {known})"))
    return chosen


def load_settings(path: str, region: str) -> ProxySettings:
    """Read the gslb YAML file and return the proxy settings of `region`."""
    return settings_from_data(load_yaml_file(path), region)
