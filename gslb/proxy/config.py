"""Full mode: the `proxy:` section of the gslb YAML file -> ProxySettings for one region.

Shape first (known keys, types), then meaning (pools referenced by routes exist, addresses parse,
timeouts below intervals, certificates readable). Every problem is collected with its
file:line:column and key path, and raised together as one ConfigError.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Any

from ..config.yaml_loader import load_yaml_file, mark_of
from ..errors import ConfigError, Reason
from .balancers import BALANCER_NAMES, valid_hash_key
from .outlier import OutlierSettings
from .server import parse_listen
from .settings import (
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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}

TOP_KEYS = {
    "regions",
    "defaults",
    "limits",
    "cache",
    "status_path",
    "metrics_path",
    "admin_token",
    "hide_headers",
    "access_log",
    "preserve_host",
    "trust_forwarded",
    "trusted_proxies",
    "cookie_secret",
    "compress_min_bytes",
}
REGION_KEYS = {"listeners", "routes", "pools", "limits"}
LISTENER_KEYS = {"name", "listen", "mode", "certificates", "redirect_https_port", "pool"}
ROUTE_KEYS = {"host", "hosts", "path_prefix", "pool", "cache", "compress", "waf"}
POOL_KEYS = {
    "members",
    "balance",
    "hash_key",
    "check",
    "outlier",
    "slow_start",
    "min_healthy",
    "max_connections",
    "keepalive_timeout",
    "connect_timeout",
    "response_timeout",
    "retries",
    "retry_non_idempotent",
    "retry_budget_percent",
    "persistence",
    "cookie_name",
    "tls",
    "verify",
    "ca_file",
    "server_name",
}
DEFAULT_KEYS = POOL_KEYS - {"members"}
MEMBER_KEYS = {"address", "weight"}
CHECK_KEYS = {
    "type",
    "path",
    "interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
    "expect_body",
    "host_header",
}
OUTLIER_KEYS = {"consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent"}
LIMIT_KEYS = {
    "allow",
    "deny",
    "rate",
    "burst",
    "max_connections",
    "max_connections_per_client",
    "max_header_bytes",
    "max_headers",
    "max_body_bytes",
    "header_timeout",
    "idle_timeout",
}
CACHE_KEYS = {"max_bytes", "max_object_bytes", "purge_allow"}
CERT_KEYS = {"hosts", "cert", "key"}


class _Checker:
    """Collects reasons; every converter returns a default on error so checking continues."""

    def __init__(self) -> None:
        self.reasons: list[Reason] = []

    def err(self, container: Any, key: str | int | None, path: str, message: str) -> None:
        self.reasons.append(Reason(mark_of(container, key), path, message))

    def mapping(self, value: Any, container: Any, key: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(container, key, path, "must be a mapping")
            return {}
        return value

    def sequence(self, value: Any, container: Any, key: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(container, key, path, "must be a list")
            return []
        return value

    def known(self, raw: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in raw:
            if key not in allowed:
                options = ", ".join(sorted(allowed))
                self.err(raw, key, f"{path}.{key}", f"unknown key (expected one of: {options})")

    def get(
        self,
        raw: dict[str, Any],
        key: str,
        path: str,
        convert: Callable[[Any], Any],
        default: Any,
    ) -> Any:
        if key not in raw:
            return default
        try:
            return convert(raw[key])
        except (ValueError, TypeError) as exc:
            self.err(raw, key, f"{path}.{key}", str(exc))
            return default


def _number(minimum: float = 0.0, maximum: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, not {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = (
                f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
            )
            raise ValueError(f"must be {bound}, not {value!r}")
        return float(value)

    return convert


def _integer(minimum: int = 0) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {value!r}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, not {value!r}")
        return value

    return convert


def _duration(value: Any) -> float:
    """Seconds: a number, or a string like '500ms', '2s', '1m'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"must be >= 0, not {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
            return float(m.group(1)) * scale
    raise ValueError(f"must be a duration (seconds, or like '500ms', '2s'), not {value!r}")


def _size(value: Any) -> int:
    """Bytes: an integer, or a string like '64k', '10MiB'."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "").lower()[:1]
            return int(m.group(1)) * _SIZE_UNITS.get(unit, 1)
    raise ValueError(f"must be a size in bytes (or like '64k', '10MiB'), not {value!r}")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return str(value)

    return convert


def _access_log(value: Any) -> str:
    # YAML 1.1 reads an unquoted `off` as false: that is what the operator meant.
    if value is False:
        return "off"
    return _choice(("off", "combined", "json"))(value)


def _path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be a path starting with '/', not {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def _cidrs(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
    return items


def _readable_file(value: Any) -> str:
    path = _string(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    return path


def _member_address(value: Any) -> tuple[str, int, bool]:
    """'host:port', 'http://host:port' or 'https://host:port' (TLS to that member)."""
    if isinstance(value, str):
        scheme, sep, rest = value.partition("://")
        if sep:
            if scheme.lower() not in ("http", "https"):
                raise ValueError(f"scheme must be http or https, not {scheme!r}")
            host, port = _address(rest.rstrip("/"))
            return host, port, scheme.lower() == "https"
    host, port = _address(value)
    return host, port, False


def _address(value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError(f"must be 'host:port', not {value!r}")
    host, port = parse_listen(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


def _statuses(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and 100 <= v <= 599 for v in items):
        raise ValueError("must be an HTTP status or a list of them (100-599)")
    return tuple(items)


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a regular expression string")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _hash_key(value: Any) -> str:
    if not isinstance(value, str) or not valid_hash_key(value):
        raise ValueError(f"must be ip, uri, header:NAME or cookie:NAME, not {value!r}")
    return value


def _limits(c: _Checker, raw: dict[str, Any], path: str, base: LimitsSpec) -> LimitsSpec:
    c.known(raw, LIMIT_KEYS, path)
    g = c.get
    return LimitsSpec(
        allow=g(raw, "allow", path, _cidrs, base.allow),
        deny=g(raw, "deny", path, _cidrs, base.deny),
        rate=g(raw, "rate", path, _number(), base.rate),
        burst=g(raw, "burst", path, _number(), base.burst),
        max_connections=g(raw, "max_connections", path, _integer(), base.max_connections),
        max_connections_per_client=g(
            raw, "max_connections_per_client", path, _integer(), base.max_connections_per_client
        ),
        max_header_bytes=g(raw, "max_header_bytes", path, _size, base.max_header_bytes),
        max_headers=g(raw, "max_headers", path, _integer(1), base.max_headers),
        max_body_bytes=g(raw, "max_body_bytes", path, _size, base.max_body_bytes),
        header_timeout=g(raw, "header_timeout", path, _duration, base.header_timeout),
        idle_timeout=g(raw, "idle_timeout", path, _duration, base.idle_timeout),
    )


def _check(c: _Checker, raw: dict[str, Any], path: str) -> CheckSpec:
    c.known(raw, CHECK_KEYS, path)
    g = c.get
    kind = g(raw, "type", path, _choice(("http", "tcp")), "http")
    spec = CheckSpec(
        path=None if kind == "tcp" else g(raw, "path", path, _path, "/"),
        interval=g(raw, "interval", path, _duration, 2.0),
        timeout=g(raw, "timeout", path, _duration, 1.0),
        rise=g(raw, "rise", path, _integer(1), 2),
        fall=g(raw, "fall", path, _integer(1), 3),
        expect_status=g(raw, "expect_status", path, _statuses, (200,)),
        expect_body=g(raw, "expect_body", path, _regex, None),
        host_header=g(raw, "host_header", path, _string, None),
    )
    if spec.interval <= 0:
        c.err(raw, "interval", f"{path}.interval", "must be > 0")
    elif spec.timeout >= spec.interval:
        c.err(raw, "timeout", f"{path}.timeout", "must be shorter than the interval")
    return spec


def _outlier(c: _Checker, raw: dict[str, Any], path: str) -> OutlierSettings:
    c.known(raw, OUTLIER_KEYS, path)
    g = c.get
    d = OutlierSettings()
    spec = OutlierSettings(
        consecutive_failures=g(
            raw, "consecutive_failures", path, _integer(1), d.consecutive_failures
        ),
        base_ejection=g(raw, "base_ejection", path, _duration, d.base_ejection),
        max_ejection=g(raw, "max_ejection", path, _duration, d.max_ejection),
        max_ejected_percent=g(
            raw, "max_ejected_percent", path, _number(0, 100), d.max_ejected_percent
        ),
    )
    if spec.max_ejection < spec.base_ejection:
        c.err(raw, "max_ejection", f"{path}.max_ejection", "must be >= base_ejection")
    return spec


_POOL_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "balance": _choice(BALANCER_NAMES),
    "hash_key": _hash_key,
    "slow_start": _duration,
    "min_healthy": _integer(0),
    "max_connections": _integer(1),
    "keepalive_timeout": _duration,
    "connect_timeout": _duration,
    "response_timeout": _duration,
    "retries": _integer(0),
    "retry_non_idempotent": _bool,
    "retry_budget_percent": _number(0, 100),
    "persistence": _choice(("none", "cookie")),
    "cookie_name": _string,
    "tls": _bool,
    "verify": _bool,
    "ca_file": _readable_file,
    "server_name": _string,
}


def _pool_fields(c: _Checker, raw: dict[str, Any], path: str) -> dict[str, Any]:
    """The pool settings present in `raw`, converted (shared by pools and proxy.defaults)."""
    out: dict[str, Any] = {}
    for key, convert in _POOL_CONVERTERS.items():
        if key in raw:
            try:
                out[key] = convert(raw[key])
            except (ValueError, TypeError) as exc:
                c.err(raw, key, f"{path}.{key}", str(exc))
    if raw.get("check") is not None:
        out["check"] = _check(
            c, c.mapping(raw["check"], raw, "check", f"{path}.check"), f"{path}.check"
        )
    if raw.get("outlier") is not None:
        out["outlier"] = _outlier(
            c, c.mapping(raw["outlier"], raw, "outlier", f"{path}.outlier"), f"{path}.outlier"
        )
    return out


def _pool(
    c: _Checker, name: str, raw: dict[str, Any], defaults: dict[str, Any], path: str
) -> PoolSpec:
    c.known(raw, POOL_KEYS, path)
    members: list[MemberSpec] = []
    raw_members = c.sequence(raw.get("members"), raw, "members", f"{path}.members")
    if not raw_members:
        c.err(
            raw,
            "members" if "members" in raw else None,
            f"{path}.members",
            "a pool needs at least one member",
        )
    seen: set[str] = set()
    for i, item in enumerate(raw_members):
        mpath = f"{path}.members[{i}]"
        entry: dict[str, Any]
        if isinstance(item, str):  # short form: "host:port"
            entry = {"address": item}
            mark = address_mark = mark_of(raw_members, i)
        else:
            entry = c.mapping(item, raw_members, i, mpath)
            c.known(entry, MEMBER_KEYS, mpath)
            mark, address_mark = mark_of(entry), mark_of(entry, "address")
        if "address" not in entry:
            c.err(raw_members, i, mpath, "missing key 'address'")
            continue
        try:
            host, port, tls = _member_address(entry["address"])
        except ValueError as exc:
            c.reasons.append(Reason(address_mark, f"{mpath}.address", str(exc)))
            continue
        weight = c.get(entry, "weight", mpath, _number(0.001), 1.0)
        member = MemberSpec(host, port, weight, mark, tls)
        if member.name in seen:
            c.reasons.append(Reason(mark, mpath, f"duplicate member {member.name}"))
        seen.add(member.name)
        members.append(member)
    fields = {**defaults, **_pool_fields(c, raw, path)}
    spec = PoolSpec(name=name, members=tuple(members), mark=mark_of(raw), **fields)
    if members and spec.min_healthy > len(members):
        c.err(
            raw,
            "min_healthy" if "min_healthy" in raw else None,
            f"{path}.min_healthy",
            f"is {spec.min_healthy} but the pool has only {len(members)} members",
        )
    return spec


def _listener(
    c: _Checker, raw: dict[str, Any], path: str, pools: dict[str, PoolSpec]
) -> ListenerSpec | None:
    c.known(raw, LISTENER_KEYS, path)
    if "listen" not in raw:
        c.err(raw, None, path, "missing key 'listen' (host:port)")
        return None
    try:
        host, port = _address(raw["listen"])
    except ValueError as exc:
        c.err(raw, "listen", f"{path}.listen", str(exc))
        return None
    mode = c.get(raw, "mode", path, _choice(("http", "https", "tcp")), "http")
    certs: list[CertSpec] = []
    raw_certs = c.sequence(raw.get("certificates"), raw, "certificates", f"{path}.certificates")
    for i, item in enumerate(raw_certs):
        cpath = f"{path}.certificates[{i}]"
        entry = c.mapping(item, raw_certs, i, cpath)
        c.known(entry, CERT_KEYS, cpath)
        hosts = c.get(entry, "hosts", cpath, _strings, ())
        files = {}
        for key in ("cert", "key"):
            value = c.get(entry, key, cpath, _string, None)
            if value is None:
                if key not in entry:
                    c.err(entry, None, cpath, f"missing key {key!r}")
            elif not os.access(value, os.R_OK):
                c.err(entry, key, f"{cpath}.{key}", f"cannot read file {value!r}")
            files[key] = value or ""
        certs.append(CertSpec(tuple(h.lower() for h in hosts), files["cert"], files["key"]))
    if mode == "https" and not raw_certs:
        c.err(raw, "mode", f"{path}.mode", "https needs at least one certificate")
    if mode != "https" and raw_certs:
        c.err(raw, "certificates", f"{path}.certificates", "only https listeners take certificates")
    pool = c.get(raw, "pool", path, _string, None)
    if mode == "tcp":
        if pool is None:
            c.err(raw, None, path, "a tcp listener needs 'pool'")
        elif pool not in pools:
            c.err(raw, "pool", f"{path}.pool", f"unknown pool {pool!r}")
    elif pool is not None:
        c.err(raw, "pool", f"{path}.pool", "only tcp listeners name a pool; http uses routes")
    redirect = c.get(raw, "redirect_https_port", path, _integer(1), None)
    if redirect is not None and mode != "http":
        c.err(
            raw,
            "redirect_https_port",
            f"{path}.redirect_https_port",
            "only http listeners redirect to https",
        )
    return ListenerSpec(
        host, port, mode, str(raw.get("name", "")), tuple(certs), redirect, pool, mark_of(raw)
    )


def _route(
    c: _Checker, raw: dict[str, Any], path: str, pools: dict[str, PoolSpec]
) -> RouteSpec | None:
    c.known(raw, ROUTE_KEYS, path)
    hosts = c.get(raw, "hosts", path, _strings, ())
    if "host" in raw:
        hosts = hosts + c.get(raw, "host", path, _strings, ())
    prefix = c.get(raw, "path_prefix", path, _path, "/") or "/"
    pool = c.get(raw, "pool", path, _string, None)
    if pool is None:
        if "pool" not in raw:
            c.err(raw, None, path, "missing key 'pool'")
        return None
    if pool not in pools:
        c.err(raw, "pool", f"{path}.pool", f"unknown pool {pool!r}")
    return RouteSpec(
        pool=pool,
        hosts=tuple(h.lower() for h in hosts),
        path_prefix=prefix,
        cache=c.get(raw, "cache", path, _bool, False),
        compress=c.get(raw, "compress", path, _bool, False),
        waf=c.get(raw, "waf", path, _bool, False),
        mark=mark_of(raw),
    )


def settings_from_data(data: Any, region: str) -> ProxySettings:
    """Validate the whole top-level YAML mapping and return one region's settings."""
    c = _Checker()
    root = c.mapping(data, data, None, "")
    if "proxy" not in root:
        raise ConfigError(Reason(mark_of(data), "proxy", "no 'proxy' section in the file"))
    top = c.mapping(root["proxy"], root, "proxy", "proxy")
    c.known(top, TOP_KEYS, "proxy")
    raw_defaults = c.mapping(top.get("defaults"), top, "defaults", "proxy.defaults")
    c.known(raw_defaults, DEFAULT_KEYS, "proxy.defaults")
    defaults = _pool_fields(c, raw_defaults, "proxy.defaults")
    limits = _limits(
        c, c.mapping(top.get("limits"), top, "limits", "proxy.limits"), "proxy.limits", LimitsSpec()
    )
    raw_cache = c.mapping(top.get("cache"), top, "cache", "proxy.cache")
    c.known(raw_cache, CACHE_KEYS, "proxy.cache")
    dc = CacheSpec()
    cache = CacheSpec(
        max_bytes=c.get(raw_cache, "max_bytes", "proxy.cache", _size, dc.max_bytes),
        max_object_bytes=c.get(
            raw_cache, "max_object_bytes", "proxy.cache", _size, dc.max_object_bytes
        ),
        purge_allow=c.get(raw_cache, "purge_allow", "proxy.cache", _cidrs, dc.purge_allow),
    )
    regions = c.mapping(top.get("regions"), top, "regions", "proxy.regions")
    if not regions:
        c.err(
            top,
            "regions" if "regions" in top else None,
            "proxy.regions",
            "at least one region is needed",
        )
    chosen: tuple[Any, ...] | None = None
    # Every region is validated, not just the one asked for: a typo elsewhere is still a typo.
    for name, raw_region in regions.items():
        rpath = f"proxy.regions.{name}"
        rraw = c.mapping(raw_region, regions, name, rpath)
        c.known(rraw, REGION_KEYS, rpath)
        pools: dict[str, PoolSpec] = {}
        raw_pools = c.mapping(rraw.get("pools"), rraw, "pools", f"{rpath}.pools")
        for pname, praw in raw_pools.items():
            ppath = f"{rpath}.pools.{pname}"
            pools[pname] = _pool(
                c, pname, c.mapping(praw, raw_pools, pname, ppath), defaults, ppath
            )
        listeners = []
        raw_listeners = c.sequence(rraw.get("listeners"), rraw, "listeners", f"{rpath}.listeners")
        if not raw_listeners:
            c.err(
                rraw,
                "listeners" if "listeners" in rraw else None,
                f"{rpath}.listeners",
                "at least one listener is needed",
            )
        for i, lraw in enumerate(raw_listeners):
            lpath = f"{rpath}.listeners[{i}]"
            listener = _listener(c, c.mapping(lraw, raw_listeners, i, lpath), lpath, pools)
            if listener is not None:
                listeners.append(listener)
        routes = []
        raw_routes = c.sequence(rraw.get("routes"), rraw, "routes", f"{rpath}.routes")
        for i, rtraw in enumerate(raw_routes):
            tpath = f"{rpath}.routes[{i}]"
            route = _route(c, c.mapping(rtraw, raw_routes, i, tpath), tpath, pools)
            if route is not None:
                routes.append(route)
        if any(lst.mode != "tcp" for lst in listeners) and not raw_routes:
            c.err(rraw, None, rpath, "http/https listeners need at least one route")
        used = {r.pool for r in routes} | {lst.pool for lst in listeners if lst.pool}
        for pname in pools:
            if pname not in used:
                c.err(raw_pools, pname, f"{rpath}.pools.{pname}", "pool is not used by any route")
        region_limits = limits
        if "limits" in rraw:
            region_limits = _limits(
                c,
                c.mapping(rraw["limits"], rraw, "limits", f"{rpath}.limits"),
                f"{rpath}.limits",
                limits,
            )
        if name == region:
            chosen = (tuple(listeners), tuple(routes), pools, region_limits)
    g = c.get
    status_path = g(top, "status_path", "proxy", _path, "/health")
    metrics_path = g(top, "metrics_path", "proxy", _path, None)
    settings_kwargs = {
        "cache": cache,
        "status_path": status_path,
        "metrics_path": metrics_path,
        "admin_token": g(top, "admin_token", "proxy", _string, "") or None,
        "access_log": g(top, "access_log", "proxy", _access_log, "off"),
        "preserve_host": g(top, "preserve_host", "proxy", _bool, True),
        "trust_forwarded": g(top, "trust_forwarded", "proxy", _bool, False),
        "trusted_proxies": g(top, "trusted_proxies", "proxy", _cidrs, ()),
        "cookie_secret": g(top, "cookie_secret", "proxy", _string, ""),
        "compress_min_bytes": g(top, "compress_min_bytes", "proxy", _size, 256),
    }
    if "hide_headers" in top:
        settings_kwargs["hide_headers"] = g(top, "hide_headers", "proxy", _strings, ())
    if c.reasons:
        raise ConfigError(c.reasons)
    if chosen is None:
        known = ", ".join(sorted(regions)) or "none"
        raise ConfigError(
            Reason(
                mark_of(top, "regions"), "proxy.regions", f"no region {region!r} (known: {known})"
            )
        )
    listeners_t, routes_t, pools_d, limits_r = chosen
    return ProxySettings(
        listeners=listeners_t,
        routes=routes_t,
        pools=pools_d,
        limits=limits_r,
        **settings_kwargs,
    )


def load_settings(path: str, region: str) -> ProxySettings:
    """Read the gslb YAML file and return the proxy settings of `region`."""
    return settings_from_data(load_yaml_file(path), region)
