"""Raw YAML -> validated Config. Shape first, then meaning; every problem reported at once.

Each problem is a Reason with the file:line:column of the offending key and a dotted key path
(services[www.example.test].pools.eu.fallback). Helpers append reasons and return a usable
default so one pass finds everything; load_config raises one ConfigError at the end.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Collection
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, Mark, Reason
from ..steering.service import (
    ORDERING_STEPS,
    POLICY_STEPS,
    Pool,
    PoolValue,
    Rule,
    Service,
)
from .model import Check, Config, Datacenter, HealthSettings, ProbeAgent
from .yaml_loader import MarkedDict, load_yaml_file, load_yaml_text, mark_of

# Top-level sections owned by other parts of gslb: accepted and passed through in Config.extra.
PASS_THROUGH = ("dns", "rrl", "cookies", "acl", "admin", "proxy", "dnssec")
TOP_KEYS = ("geoip", "geoip_cache_size", "datacenters", "services", "health", *PASS_THROUGH)
DC_KEYS = ("region", "latitude", "longitude", "ipv4", "ipv6", "bias", "check")
CHECK_KEYS = (
    "type",
    "host",
    "port",
    "path",
    "host_header",
    "verify_tls",
    "interval",
    "timeout",
    "jitter",
    "rise",
    "fall",
    "expect_status",
    "body_match",
    "headers",
)
SERVICE_KEYS = (
    "types",
    "ttl",
    "count",
    "policy",
    "on_all_down",
    "fallback_pool",
    "unknown_is",
    "datacenters",
    "tiers",
    "pools",
    "rules",
    "sticky",
)
VALUE_KEYS = ("value", "weight", "status")
POOL_KEYS = ("values", "fallback")
RULE_KEYS = ("pool", "geos", "subnets")
STICKY_KEYS = ("ipv4_prefix", "ipv6_prefix")
HEALTH_KEYS = ("agents", "quorum", "stale_after", "state_file", "local_region", "token")
AGENT_KEYS = ("region", "url")
ON_ALL_DOWN = ("fail_open", "fallback", "nodata", "servfail")
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_GEO_RE = re.compile(r"^([A-Z]{2})(-([A-Z]{2})(-([A-Z0-9]{1,3}))?)?$")

_MISSING = object()


def load_config(
    path: str,
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
) -> Config:
    """Load and validate a gslb config file; raises ConfigError carrying ALL reasons.

    zone_origins: lowercase FQDNs with trailing dot; when given, every service name must lie
    inside one of them. geoip_override (--geoip) replaces the file's `geoip:` key.
    """
    raw = load_yaml_file(path)
    return validate_config(raw, path, zone_origins, geoip_override)


def load_config_text(
    text: str,
    path: str = "<string>",
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
) -> Config:
    """Like load_config, from text (relative paths resolve against dirname(path))."""
    return validate_config(load_yaml_text(text, path), path, zone_origins, geoip_override)


def validate_config(
    raw: Any,
    path: str,
    zone_origins: Collection[str] | None = None,
    geoip_override: str | None = None,
) -> Config:
    v = _Validator(path)
    config = v.config(raw, zone_origins, geoip_override)
    if v.reasons:
        raise ConfigError(sorted(v.reasons, key=_reason_order))
    return config


def normalize_name(name: str) -> str:
    """DNS name as the engine keys it: lowercase, trailing dot."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _reason_order(r: Reason) -> tuple[str, int, int]:
    m = r.mark
    return (m.file, m.line, m.column) if m else ("", 0, 0)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, int | float) and not isinstance(x, bool)) and math.isfinite(x)


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _type_name(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, int):
        return "integer"
    if isinstance(x, float):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, dict):
        return "mapping"
    if isinstance(x, list):
        return "list"
    return type(x).__name__


def _fmt_name(name: str) -> str:
    return f"[{name}]" if "." in name else f".{name}"


class _Validator:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = Path(path).resolve().parent if not path.startswith("<") else Path.cwd()
        self.reasons: list[Reason] = []

    # -- primitives -----------------------------------------------------------------------------

    def err(self, mark: Mark | None, key: str, message: str) -> None:
        self.reasons.append(Reason(mark or Mark(self.path, 0), key, message))

    def mapping(self, value: Any, mark: Mark | None, key: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.err(mark, key, f"must be a mapping, not {_type_name(value)}")
        return None

    def keys(self, d: dict[str, Any], allowed: Collection[str], path: str) -> None:
        for k in d:
            if k not in allowed:
                self.err(
                    mark_of(d, k),
                    f"{path}.{k}" if path else k,
                    f"unknown key (expected one of: {', '.join(allowed)})",
                )

    def get(
        self,
        d: dict[str, Any],
        key: str,
        path: str,
        kind: str,
        default: Any = _MISSING,
        lo: float | None = None,
        hi: float | None = None,
        choices: Collection[str] | None = None,
    ) -> Any:
        """Typed lookup: kind is str|int|float|bool. Missing + no default -> 'required'."""
        full = f"{path}.{key}" if path else key
        if key not in d:
            if default is _MISSING:
                self.err(mark_of(d), full, "required key is missing")
                return None
            return default
        value = d[key]
        mark = mark_of(d, key)
        ok = {
            "str": isinstance(value, str),
            "int": _is_int(value),
            "float": _is_num(value),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            want = {
                "str": "a string",
                "int": "an integer",
                "float": "a number",
                "bool": "true or false",
            }[kind]
            self.err(mark, full, f"must be {want}, not {_type_name(value)} {value!r}")
            return None if default is _MISSING else default
        if kind == "str" and not value.strip():
            self.err(mark, full, "must not be empty")
            return None if default is _MISSING else default
        if choices is not None and value not in choices:
            self.err(mark, full, f"must be one of {', '.join(choices)}, not {value!r}")
            return None if default is _MISSING else default
        if lo is not None and value < lo or hi is not None and value > hi:
            self.err(mark, full, f"must be between {_num(lo)} and {_num(hi)}, not {value!r}")
            return None if default is _MISSING else default
        if kind == "float":
            value = float(value)
        return value

    def str_list(self, d: dict[str, Any], key: str, path: str) -> list[tuple[str, Mark | None]]:
        """A list of strings (a single string is accepted as a one-item list)."""
        full = f"{path}.{key}"
        value = d.get(key)
        if value is None and key not in d:
            return []
        if isinstance(value, str):
            return [(value, mark_of(d, key))]
        if not isinstance(value, list):
            self.err(mark_of(d, key), full, f"must be a list, not {_type_name(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((item, mark_of(value, i)))
            else:
                self.err(
                    mark_of(value, i),
                    f"{full}[{i}]",
                    f"must be a string, not {_type_name(item)} {item!r}",
                )
        return out

    def resolve(self, p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (self.base / path))

    # -- top level ----------------------------------------------------------------------------

    def config(
        self, raw: Any, zone_origins: Collection[str] | None, geoip_override: str | None
    ) -> Config:
        if raw is None:
            self.err(Mark(self.path, 1), "", "config file is empty")
            return Config(path=self.path)
        top = self.mapping(raw, mark_of(raw), "")
        if top is None:
            return Config(path=self.path)
        self.keys(top, TOP_KEYS, "")

        geoip_path: str | None = None
        if geoip_override:
            geoip_path = str(Path(geoip_override).expanduser().resolve())
            if not Path(geoip_path).is_file():
                self.reasons.append(
                    Reason(None, "--geoip", f"GeoIP database not found: {geoip_path}")
                )
        else:
            g = self.get(top, "geoip", "", "str", default=None)
            if g is not None:
                geoip_path = self.resolve(g)
                if not Path(geoip_path).is_file():
                    self.err(
                        mark_of(top, "geoip"), "geoip", f"GeoIP database not found: {geoip_path}"
                    )
        cache_size = self.get(top, "geoip_cache_size", "", "int", 16384, lo=1, hi=10_000_000)

        datacenters: dict[str, Datacenter] = {}
        raw_dcs = top.get("datacenters")
        if "datacenters" not in top:
            self.err(mark_of(top), "datacenters", "required key is missing")
        elif (dcs := self.mapping(raw_dcs, mark_of(top, "datacenters"), "datacenters")) is not None:
            if not dcs:
                self.err(mark_of(top, "datacenters"), "datacenters", "must not be empty")
            lowered: dict[str, str] = {}
            for name, body in dcs.items():
                mark = mark_of(dcs, name)
                path = f"datacenters{_fmt_name(name)}"
                if not _NAME_RE.match(name):
                    self.err(mark, path, "datacenter names use letters, digits, '_', '.', '-'")
                if name.lower() in lowered:
                    self.err(
                        mark, path, f"duplicate datacenter name (same as {lowered[name.lower()]!r})"
                    )
                    continue
                lowered[name.lower()] = name
                dc = self.datacenter(name, body, mark, path)
                if dc is not None:
                    datacenters[name] = dc

        services: dict[str, Service] = {}
        if "services" in top:
            raw_svcs = self.mapping(top["services"], mark_of(top, "services"), "services")
            origins = None
            if zone_origins is not None:
                origins = [normalize_name(o) for o in zone_origins]
            for name, body in (raw_svcs or {}).items():
                mark = mark_of(raw_svcs, name)
                path = f"services[{name}]"
                fqdn = self.service_name(name, mark, path, origins)
                if fqdn is None:
                    continue
                if fqdn in services:
                    self.err(
                        mark,
                        path,
                        f"duplicate service name ({fqdn} is already defined"
                        f" at line {services[fqdn].mark.line if services[fqdn].mark else '?'})",
                    )
                    continue
                svc = self.service(fqdn, body, mark, path, datacenters, dcs_declared(top))
                if svc is not None:
                    services[fqdn] = svc

        health = HealthSettings()
        if "health" in top:
            health = self.health(top["health"], mark_of(top, "health"))

        extra = {k: top[k] for k in PASS_THROUGH if k in top}
        return Config(
            path=self.path,
            datacenters=MappingProxyType(datacenters),
            services=MappingProxyType(services),
            health=health,
            geoip_path=geoip_path,
            geoip_cache_size=cache_size if cache_size is not None else 16384,
            extra=MappingProxyType(extra),
        )

    # -- datacenters ----------------------------------------------------------------------------

    def datacenter(self, name: str, body: Any, mark: Mark | None, path: str) -> Datacenter | None:
        d = self.mapping(body, mark, path)
        if d is None:
            return None
        self.keys(d, DC_KEYS, path)
        region = self.get(d, "region", path, "str", default=name)
        lat = self.get(d, "latitude", path, "float", lo=-90, hi=90)
        lon = self.get(d, "longitude", path, "float", lo=-180, hi=180)
        bias = self.get(d, "bias", path, "float", 0.0, lo=-99, hi=99)
        ipv4 = self.addresses(d, "ipv4", path, 4)
        ipv6 = self.addresses(d, "ipv6", path, 6)
        if "ipv4" not in d and "ipv6" not in d:
            self.err(mark_of(d), path, "a datacenter needs at least one of ipv4, ipv6")
        check = None
        if "check" in d:
            check = self.check(d["check"], mark_of(d, "check"), f"{path}.check")
        if lat is None or lon is None:
            return None
        return Datacenter(
            name=name,
            region=region or name,
            latitude=lat,
            longitude=lon,
            ipv4=tuple(ipv4),
            ipv6=tuple(ipv6),
            bias=bias if bias is not None else 0.0,
            check=check,
            mark=mark,
        )

    def addresses(self, d: dict[str, Any], key: str, path: str, version: int) -> list[str]:
        out: list[str] = []
        for text, mark in self.str_list(d, key, path):
            try:
                ip = ipaddress.ip_address(text.strip())
            except ValueError:
                self.err(mark, f"{path}.{key}", f"not an IP address: {text!r}")
                continue
            if ip.version != version:
                self.err(mark, f"{path}.{key}", f"{text} is not an IPv{version} address")
                continue
            if str(ip) in out:
                self.err(mark, f"{path}.{key}", f"duplicate address {ip}")
                continue
            out.append(str(ip))
        if key in d and not out and isinstance(d[key], list) and not d[key]:
            self.err(mark_of(d, key), f"{path}.{key}", "must not be an empty list")
        return out

    def check(self, body: Any, mark: Mark | None, path: str) -> Check | None:
        d = self.mapping(body, mark, path)
        if d is None:
            return None
        self.keys(d, CHECK_KEYS, path)
        defaults = Check()
        ctype = self.get(d, "type", path, "str", "http", choices=("http", "https", "tcp"))
        host = self.get(d, "host", path, "str", None)
        port = self.get(d, "port", path, "int", None, lo=1, hi=65535)
        cpath = self.get(d, "path", path, "str", defaults.path)
        if cpath is not None and not cpath.startswith("/"):
            self.err(mark_of(d, "path"), f"{path}.path", "must start with '/'")
        host_header = self.get(d, "host_header", path, "str", None)
        verify = self.get(d, "verify_tls", path, "bool", False)
        interval = self.get(d, "interval", path, "float", defaults.interval, lo=0.01, hi=3600)
        timeout = self.get(d, "timeout", path, "float", None, lo=0.001, hi=3600)
        if timeout is None and interval is not None:
            timeout = min(defaults.timeout, interval / 2)  # gdnsd: default half the interval
        elif timeout is not None and interval is not None and timeout >= interval:
            self.err(
                mark_of(d, "timeout"),
                f"{path}.timeout",
                f"timeout ({timeout:g}) must be less than interval ({interval:g})",
            )
        jitter = self.get(d, "jitter", path, "float", defaults.jitter, lo=0, hi=0.99)
        rise = self.get(d, "rise", path, "int", defaults.rise, lo=1, hi=100)
        fall = self.get(d, "fall", path, "int", defaults.fall, lo=1, hi=100)
        expect = self.expect_status(d, path)
        body_match = self.get(d, "body_match", path, "str", None)
        if body_match is not None:
            try:
                re.compile(body_match)
            except re.error as exc:
                self.err(
                    mark_of(d, "body_match"),
                    f"{path}.body_match",
                    f"not a valid regular expression: {exc}",
                )
        headers: list[tuple[str, str]] = []
        if "headers" in d:
            h = self.mapping(d["headers"], mark_of(d, "headers"), f"{path}.headers")
            for k, val in (h or {}).items():
                if not isinstance(val, str | int | float) or isinstance(val, bool):
                    self.err(mark_of(h, k), f"{path}.headers.{k}", "header value must be a string")
                    continue
                headers.append((k, str(val)))
        return Check(
            type=ctype or "http",
            host=host,
            port=port,
            path=cpath or "/",
            host_header=host_header,
            verify_tls=bool(verify),
            interval=interval or defaults.interval,
            timeout=timeout or defaults.timeout,
            jitter=jitter if jitter is not None else defaults.jitter,
            rise=rise or defaults.rise,
            fall=fall or defaults.fall,
            expect_status=expect,
            body_match=body_match,
            headers=tuple(headers),
            mark=mark,
        )

    def expect_status(self, d: dict[str, Any], path: str) -> tuple[int, ...]:
        if "expect_status" not in d:
            return (200,)
        value = d["expect_status"]
        full = f"{path}.expect_status"
        items = value if isinstance(value, list) else [value]
        out: list[int] = []
        for i, item in enumerate(items):
            mark = mark_of(value, i) if isinstance(value, list) else mark_of(d, "expect_status")
            if not _is_int(item) or not 100 <= item <= 599:
                self.err(mark, full, f"status codes are integers 100-599, not {item!r}")
            else:
                out.append(item)
        if isinstance(value, list) and not value:
            self.err(mark_of(d, "expect_status"), full, "must not be an empty list")
        return tuple(out) or (200,)

    # -- services -------------------------------------------------------------------------------

    def service_name(
        self, name: str, mark: Mark | None, path: str, origins: list[str] | None
    ) -> str | None:
        fqdn = normalize_name(name)
        labels = fqdn[:-1].split(".")
        if fqdn == "." or len(fqdn) > 254 or not all(_LABEL_RE.match(x) for x in labels):
            self.err(mark, path, f"not a valid DNS name: {name!r}")
            return None
        if origins is not None and not any(fqdn == o or fqdn.endswith("." + o) for o in origins):
            zones = ", ".join(sorted(origins)) or "none loaded"
            self.err(mark, path, f"service {fqdn} is outside every served zone ({zones})")
            return None
        return fqdn

    def service(
        self,
        fqdn: str,
        body: Any,
        mark: Mark | None,
        path: str,
        dcs: dict[str, Datacenter],
        declared: set[str],
    ) -> Service | None:
        d = self.mapping(body, mark, path)
        if d is None:
            return None
        self.keys(d, SERVICE_KEYS, path)
        n_before = len(self.reasons)

        types = self.types(d, path)
        ttl = self.get(d, "ttl", path, "int", 30, lo=0, hi=604800)
        count = self.get(d, "count", path, "int", 1, lo=1, hi=64)
        on_all_down = self.get(d, "on_all_down", path, "str", choices=ON_ALL_DOWN)
        unknown_is = self.get(d, "unknown_is", path, "str", "up", choices=("up", "down"))
        policy = self.policy(d, path)

        pools = self.pools(d, path, declared)
        sources = [k for k in ("datacenters", "tiers", "rules") if k in d]
        if not sources:
            self.err(mark_of(d), path, "a service needs one of: datacenters, tiers, rules")
        elif len(sources) > 1:
            self.err(
                mark_of(d, sources[1]),
                f"{path}.{sources[1]}",
                f"{' and '.join(sources)} are alternatives; use one",
            )
        values: tuple[PoolValue, ...] = ()
        tiers: tuple[tuple[PoolValue, ...], ...] = ()
        rules: tuple[Rule, ...] = ()
        if "datacenters" in d:
            values = self.values(d, "datacenters", path, declared)
        if "tiers" in d:
            tiers = self.tiers(d, path, declared)
        if "rules" in d:
            rules = self.rules(d, path, pools)

        fallback_pool = self.get(d, "fallback_pool", path, "str", None)
        if on_all_down == "fallback" and fallback_pool is None and "fallback_pool" not in d:
            self.err(
                mark_of(d, "on_all_down"),
                f"{path}.on_all_down",
                "on_all_down: fallback needs fallback_pool (a pool name)",
            )
        if fallback_pool is not None:
            if on_all_down != "fallback":
                self.err(
                    mark_of(d, "fallback_pool"),
                    f"{path}.fallback_pool",
                    "fallback_pool is only used with on_all_down: fallback",
                )
            if fallback_pool not in pools:
                self.err(
                    mark_of(d, "fallback_pool"),
                    f"{path}.fallback_pool",
                    f"undefined pool {fallback_pool!r}",
                )

        # policy <-> candidate source consistency
        if policy:
            if "failover" in policy and "tiers" not in d:
                self.err(mark_of(d, "policy"), f"{path}.policy", "failover needs tiers")
            if "tiers" in d and "failover" not in policy:
                self.err(
                    mark_of(d, "tiers"),
                    f"{path}.tiers",
                    "tiers are only used by the failover policy",
                )
            if "geolocation" in policy and "rules" not in d:
                self.err(mark_of(d, "policy"), f"{path}.policy", "geolocation needs rules")
        sticky4, sticky6 = 24, 56
        if "sticky" in d:
            sd = self.mapping(d["sticky"], mark_of(d, "sticky"), f"{path}.sticky")
            if sd is not None:
                self.keys(sd, STICKY_KEYS, f"{path}.sticky")
                sticky4 = self.get(sd, "ipv4_prefix", f"{path}.sticky", "int", 24, lo=0, hi=32)
                sticky6 = self.get(sd, "ipv6_prefix", f"{path}.sticky", "int", 56, lo=0, hi=128)
            if policy and "sticky" not in policy:
                self.err(
                    mark_of(d, "sticky"), f"{path}.sticky", "sticky settings need the sticky policy"
                )

        self.pool_usage(d, path, pools, rules, fallback_pool)

        if len(self.reasons) != n_before or on_all_down is None or policy is None:
            return None
        return Service(
            name=fqdn,
            on_all_down=on_all_down,
            policy=tuple(policy),
            types=types,
            ttl=ttl if ttl is not None else 30,
            count=count or 1,
            unknown_is=unknown_is or "up",
            datacenters=values,
            tiers=tiers,
            rules=rules,
            pools=MappingProxyType(pools),
            fallback_pool=fallback_pool,
            sticky_ipv4_prefix=sticky4 if sticky4 is not None else 24,
            sticky_ipv6_prefix=sticky6 if sticky6 is not None else 56,
            mark=mark,
        )

    def types(self, d: dict[str, Any], path: str) -> tuple[str, ...]:
        if "types" not in d:
            return ("A", "AAAA")
        out: list[str] = []
        for t, mark in self.str_list(d, "types", path):
            up = t.upper()
            if up not in ("A", "AAAA"):
                self.err(mark, f"{path}.types", f"record type must be A or AAAA, not {t!r}")
            elif up in out:
                self.err(mark, f"{path}.types", f"duplicate record type {up}")
            else:
                out.append(up)
        if not out and isinstance(d["types"], list) and not d["types"]:
            self.err(mark_of(d, "types"), f"{path}.types", "must not be empty")
        return tuple(out) or ("A", "AAAA")

    def policy(self, d: dict[str, Any], path: str) -> list[str] | None:
        full = f"{path}.policy"
        if "policy" not in d:
            self.err(
                mark_of(d),
                full,
                f"required key is missing (one or more of: {', '.join(POLICY_STEPS)})",
            )
            return None
        steps = self.str_list(d, "policy", path)
        if not steps:
            if isinstance(d["policy"], list):
                self.err(mark_of(d, "policy"), full, "must not be empty")
            return None
        out: list[str] = []
        ok = True
        for step, mark in steps:
            if step not in POLICY_STEPS:
                self.err(
                    mark,
                    full,
                    f"unknown policy step {step!r} (expected: {', '.join(POLICY_STEPS)})",
                )
                ok = False
            elif step in out:
                self.err(mark, full, f"duplicate policy step {step!r}")
                ok = False
            else:
                out.append(step)
        ordering = [s for s in out if s in ORDERING_STEPS]
        if len(ordering) > 1:
            self.err(
                mark_of(d, "policy"),
                full,
                f"at most one of {', '.join(ORDERING_STEPS)} (got {', '.join(ordering)})",
            )
            ok = False
        if "failover" in out and out[0] != "failover":
            self.err(mark_of(d, "policy"), full, "failover must be the first step")
            ok = False
        return out if ok else None

    def value(
        self, item: Any, mark: Mark | None, path: str, declared: set[str]
    ) -> PoolValue | None:
        if isinstance(item, str):
            name, weight, status = item, 1, "obey"
        else:
            vd = self.mapping(item, mark, path)
            if vd is None:
                return None
            self.keys(vd, VALUE_KEYS, path)
            name = self.get(vd, "value", path, "str")
            weight = self.get(vd, "weight", path, "int", 1, lo=1, hi=100)
            status = self.get(vd, "status", path, "str", "obey", choices=("up", "down", "obey"))
            if isinstance(item, MarkedDict) and "value" in vd:
                mark = mark_of(vd, "value")
            if name is None or weight is None or status is None:
                return None
        if name not in declared:
            self.err(mark, path, f"undefined datacenter {name!r}")
            return None
        return PoolValue(name, weight, status, mark)

    def values(
        self, d: dict[str, Any], key: str, path: str, declared: set[str]
    ) -> tuple[PoolValue, ...]:  # noqa: E501
        full = f"{path}.{key}"
        raw = d.get(key)
        if not isinstance(raw, list):
            self.err(mark_of(d, key), full, f"must be a list, not {_type_name(raw)}")
            return ()
        if not raw:
            self.err(mark_of(d, key), full, "must not be empty")
        return self.value_list(raw, full, declared)

    def value_list(self, raw: list[Any], full: str, declared: set[str]) -> tuple[PoolValue, ...]:
        out: list[PoolValue] = []
        for i, item in enumerate(raw):
            v = self.value(item, mark_of(raw, i), f"{full}[{i}]", declared)
            if v is None:
                continue
            if any(o.datacenter == v.datacenter for o in out):
                self.err(v.mark, f"{full}[{i}]", f"duplicate datacenter {v.datacenter!r}")
                continue
            out.append(v)
        return tuple(out)

    def tiers(
        self, d: dict[str, Any], path: str, declared: set[str]
    ) -> tuple[tuple[PoolValue, ...], ...]:  # noqa: E501
        full = f"{path}.tiers"
        raw = d["tiers"]
        if not isinstance(raw, list) or not raw:
            self.err(mark_of(d, "tiers"), full, "must be a non-empty list of lists of datacenters")
            return ()
        out: list[tuple[PoolValue, ...]] = []
        seen: set[str] = set()
        for i, tier in enumerate(raw):
            tier_list = tier if isinstance(tier, list) else [tier]
            if isinstance(tier, list) and not tier:
                self.err(mark_of(raw, i), f"{full}[{i}]", "a tier must not be empty")
                continue
            vals = self.value_list(tier_list, f"{full}[{i}]", declared)
            for v in vals:
                if v.datacenter in seen:
                    self.err(
                        v.mark,
                        f"{full}[{i}]",
                        f"datacenter {v.datacenter!r} is already in an earlier tier",
                    )
            seen.update(v.datacenter for v in vals)
            if vals:
                out.append(vals)
        return tuple(out)

    def pools(self, d: dict[str, Any], path: str, declared: set[str]) -> dict[str, Pool]:
        if "pools" not in d:
            return {}
        raw = self.mapping(d["pools"], mark_of(d, "pools"), f"{path}.pools")
        if raw is None:
            return {}
        pools: dict[str, Pool] = {}
        for name, body in raw.items():
            mark = mark_of(raw, name)
            ppath = f"{path}.pools.{name}"
            pd = self.mapping(body, mark, ppath)
            if pd is None:
                continue
            self.keys(pd, POOL_KEYS, ppath)
            if "values" not in pd:
                self.err(mark_of(pd), f"{ppath}.values", "required key is missing")
                vals: tuple[PoolValue, ...] = ()
            else:
                vals = self.values(pd, "values", ppath, declared)
            fallback = self.get(pd, "fallback", ppath, "str", None)
            pools[name] = Pool(name, vals, fallback, mark)
        # fallback references and loops
        for name, pool in pools.items():
            if pool.fallback is not None and pool.fallback not in pools:
                self.err(
                    mark_of(raw[name], "fallback"),
                    f"{path}.pools.{name}.fallback",
                    f"undefined pool {pool.fallback!r}",
                )
        reported: set[frozenset[str]] = set()
        for name in pools:
            chain = [name]
            nxt = pools[name].fallback
            while nxt is not None and nxt in pools and nxt not in chain:
                chain.append(nxt)
                nxt = pools[nxt].fallback
            if nxt is not None and nxt in chain:
                loop = chain[chain.index(nxt) :]
                key = frozenset(loop)
                if key not in reported:
                    reported.add(key)
                    last = loop[-1]
                    self.err(
                        mark_of(raw[last], "fallback"),
                        f"{path}.pools.{last}.fallback",
                        f"fallback loop: {' -> '.join([*loop, nxt])}",
                    )
        return pools

    def rules(self, d: dict[str, Any], path: str, pools: dict[str, Pool]) -> tuple[Rule, ...]:
        full = f"{path}.rules"
        raw = d["rules"]
        if not isinstance(raw, list) or not raw:
            self.err(mark_of(d, "rules"), full, "must be a non-empty list of rules")
            return ()
        if "pools" not in d:
            self.err(mark_of(d, "rules"), full, "rules need pools")
        out: list[Rule] = []
        seen_geos: dict[str, int] = {}
        seen_nets: dict[Any, int] = {}
        last_kind = -1
        kinds = ("subnets only", "subnets and geos", "geos only", "catch-all")
        catch_alls = 0
        for i, item in enumerate(raw):
            rpath = f"{full}[{i}]"
            rd = self.mapping(item, mark_of(raw, i), rpath)
            if rd is None:
                continue
            rmark = mark_of(raw, i)
            self.keys(rd, RULE_KEYS, rpath)
            pool = self.get(rd, "pool", rpath, "str")
            if pool is not None and pools and pool not in pools:
                self.err(mark_of(rd, "pool"), f"{rpath}.pool", f"undefined pool {pool!r}")
            elif pool is not None and not pools and "pools" in d:
                self.err(mark_of(rd, "pool"), f"{rpath}.pool", f"undefined pool {pool!r}")
            geos: list[str] = []
            for g, gmark in self.str_list(rd, "geos", rpath):
                code = g.strip().upper()
                m = _GEO_RE.match(code)
                if not m or m.group(1) not in CONTINENTS:
                    self.err(
                        gmark,
                        f"{rpath}.geos",
                        f"invalid geo {g!r} (continent like EU, "
                        "continent-country like NA-US, or NA-US-CA)",
                    )
                    continue
                if code in seen_geos:
                    self.err(
                        gmark,
                        f"{rpath}.geos",
                        f"geo {code} already used by rule #{seen_geos[code]}",
                    )
                    continue
                seen_geos[code] = i
                geos.append(code)
            subnets: list[Any] = []
            for s, smark in self.str_list(rd, "subnets", rpath):
                try:
                    net = ipaddress.ip_network(s.strip())
                except ValueError as exc:
                    self.err(smark, f"{rpath}.subnets", f"invalid subnet {s!r}: {exc}")
                    continue
                if net in seen_nets:
                    self.err(
                        smark,
                        f"{rpath}.subnets",
                        f"subnet {net} already used by rule #{seen_nets[net]}",
                    )
                    continue
                seen_nets[net] = i
                subnets.append(net)
            for key in ("geos", "subnets"):
                if key in rd and isinstance(rd[key], list) and not rd[key]:
                    self.err(mark_of(rd, key), f"{rpath}.{key}", "must not be an empty list")
            has_geo = "geos" in rd
            has_sub = "subnets" in rd
            kind = 0 if has_sub and not has_geo else 1 if has_sub else 2 if has_geo else 3
            if kind == 3:
                catch_alls += 1
                if catch_alls > 1:
                    self.err(rmark, rpath, "only one catch-all rule (no geos, no subnets) allowed")
            if kind < last_kind:
                self.err(
                    rmark,
                    rpath,
                    f"rule order: a rule with {kinds[kind]} must come before "
                    f"rules with {kinds[last_kind]} (subnets > subnets+geos > geos > "
                    "catch-all)",
                )
            last_kind = max(last_kind, kind)
            if pool is not None:
                out.append(Rule(pool, tuple(geos), tuple(subnets), rmark))
        if catch_alls == 0:
            self.err(
                mark_of(d, "rules"),
                full,
                "rules must end with a catch-all rule (one with only `pool`)",
            )
        return tuple(out)

    def pool_usage(
        self,
        d: dict[str, Any],
        path: str,
        pools: dict[str, Pool],
        rules: tuple[Rule, ...],
        fallback_pool: str | None,
    ) -> None:
        used: set[str] = set()
        todo = [r.pool for r in rules]
        if fallback_pool:
            todo.append(fallback_pool)
        while todo:
            name = todo.pop()
            if name in used or name not in pools:
                continue
            used.add(name)
            if pools[name].fallback:
                todo.append(pools[name].fallback)  # type: ignore[arg-type]
        raw = d.get("pools")
        for name in pools:
            if name not in used:
                self.err(
                    mark_of(raw, name),
                    f"{path}.pools.{name}",
                    "unused pool (no rule, fallback or fallback_pool refers to it)",
                )

    # -- health ---------------------------------------------------------------------------------

    def health(self, body: Any, mark: Mark | None) -> HealthSettings:
        d = self.mapping(body, mark, "health")
        if d is None:
            return HealthSettings()
        self.keys(d, HEALTH_KEYS, "health")
        defaults = HealthSettings()
        agents: list[ProbeAgent] = []
        if "agents" in d:
            raw = d["agents"]
            if not isinstance(raw, list):
                self.err(
                    mark_of(d, "agents"), "health.agents", f"must be a list, not {_type_name(raw)}"
                )
                raw = []
            regions: set[str] = set()
            for i, item in enumerate(raw):
                apath = f"health.agents[{i}]"
                ad = self.mapping(item, mark_of(raw, i), apath)
                if ad is None:
                    continue
                self.keys(ad, AGENT_KEYS, apath)
                region = self.get(ad, "region", apath, "str")
                url = self.get(ad, "url", apath, "str")
                if url is not None and not re.match(r"^https?://[^/\s]+", url):
                    self.err(
                        mark_of(ad, "url"),
                        f"{apath}.url",
                        f"must be an http:// or https:// URL, not {url!r}",
                    )
                    url = None
                if region is not None and region in regions:
                    self.err(
                        mark_of(ad, "region"),
                        f"{apath}.region",
                        f"duplicate agent region {region!r}",
                    )
                    continue
                if region is not None and url is not None:
                    regions.add(region)
                    agents.append(ProbeAgent(region, url.rstrip("/"), mark_of(raw, i)))
        quorum: str | float = defaults.quorum
        if "quorum" in d:
            q = d["quorum"]
            if isinstance(q, str) and q in ("majority", "all", "any"):
                quorum = q
            elif _is_num(q) and 0 < q <= 1:
                quorum = float(q)
            else:
                self.err(
                    mark_of(d, "quorum"),
                    "health.quorum",
                    f"must be majority, all, any or a fraction 0 < q <= 1, not {q!r}",
                )
        stale = self.get(
            d, "stale_after", "health", "float", defaults.stale_after, lo=0.01, hi=86400
        )
        state_file = self.get(d, "state_file", "health", "str", None)
        local = self.get(d, "local_region", "health", "str", defaults.local_region)
        token = self.get(d, "token", "health", "str", None)
        return HealthSettings(
            agents=tuple(agents),
            quorum=quorum,
            stale_after=stale if stale is not None else defaults.stale_after,
            state_file=self.resolve(state_file) if state_file else None,
            local_region=local or defaults.local_region,
            token=token or None,
        )


def dcs_declared(top: dict[str, Any]) -> set[str]:
    """Datacenter names as written (so a service referring to a broken datacenter reports
    only the datacenter's own problem, not an extra 'undefined datacenter')."""
    raw = top.get("datacenters")
    return set(raw) if isinstance(raw, dict) else set()


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but probably not meant (printed by `gslb check`, never fatal)."""
    warnings: list[str] = []
    used: set[str] = set()
    for name, svc in config.services.items():
        values = list(svc.datacenters)
        for tier in svc.tiers:
            values.extend(tier)
        for pool in svc.pools.values():
            values.extend(pool.values)
        used.update(v.datacenter for v in values)
        geo = any(r.geos for r in svc.rules) or svc.ordering == "geoproximity"
        if geo and not config.geoip_path:
            warnings.append(
                f"{name}: uses client location but no geoip database is configured"
                " (geo rules never match; geoproximity keeps the configured order)"
            )
    for name, dc in config.datacenters.items():
        if name not in used:
            warnings.append(f"datacenter {name} is not used by any service")
        if dc.check is None:
            warnings.append(f"datacenter {name} has no check: its health stays unknown")
    return warnings
