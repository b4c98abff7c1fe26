"""Frozen settings of one regional proxy: listeners, routes, pools and limits.

Quick mode builds these from command-line flags; full mode from the `proxy:` section of the
gslb YAML file (see config.py). Defaults live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Mark
from .outlier import OutlierSettings
from .rtt import RttSpec

DEFAULT_HIDE_HEADERS = ("Server", "X-Powered-By", "X-AspNet-Version", "X-Runtime")


@dataclass(frozen=True)
class MemberSpec:
    host: str
    port: int
    weight: float = 1.0
    mark: Mark | None = None
    tls: bool = False  # "https://host:port": TLS to this member

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class CheckSpec:
    """Active check of every pool member. `path=None` means a plain TCP connect."""

    path: str | None = "/"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    expect_status: tuple[int, ...] = (200,)
    body_match: str | None = None  # regular expression searched in the first BODY_LIMIT bytes
    host_header: str | None = None


@dataclass(frozen=True)
class PoolSpec:
    name: str
    members: tuple[MemberSpec, ...]
    balance: str = "round_robin"
    hash_key: str = "ip"  # ip | uri | header:NAME | cookie:NAME (balance: hash)
    check: CheckSpec | None = None
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    slow_start: float = 0.0  # seconds over which a recovered member ramps up to full weight
    min_healthy: int = 1
    max_connections: int = 256  # keep-alive pool bound per member
    keepalive_timeout: float = 30.0
    connect_timeout: float = 2.0
    response_timeout: float = 30.0  # to the response head, and between body chunks
    retries: int = 2
    retry_non_idempotent: bool = False
    retry_budget_percent: float = 20.0
    persistence: str = "none"  # none | cookie
    cookie_name: str = "GSLB_SRV"
    mark: Mark | None = None
    tls: bool = False  # TLS to every member (a member "https://host:port" has it on its own)
    verify: bool = True  # verify the member's certificate and name
    ca_file: str | None = None  # PEM CA bundle to verify with; default: the system store
    server_name: str | None = None  # SNI and the name verified; default: the member's host


@dataclass(frozen=True)
class RouteSpec:
    pool: str
    hosts: tuple[str, ...] = ()  # empty: any host; "*.example.test" matches subdomains
    path_prefix: str = "/"
    cache: bool = False
    compress: bool = False
    waf: bool = False
    mark: Mark | None = None


@dataclass(frozen=True)
class CertSpec:
    hosts: tuple[str, ...]
    cert: str
    key: str


@dataclass(frozen=True)
class ListenerSpec:
    host: str
    port: int
    mode: str = "http"  # http | https | tcp
    name: str = ""
    certificates: tuple[CertSpec, ...] = ()
    redirect_https_port: int | None = None  # http listener answering 308 to https on this port
    pool: str | None = None  # tcp mode only
    mark: Mark | None = None


@dataclass(frozen=True)
class LimitsSpec:
    allow: tuple[str, ...] = ()  # CIDRs; empty allows everyone not denied
    deny: tuple[str, ...] = ()
    rate: float = 0.0  # requests per second per client; 0 = unlimited
    burst: float = 0.0  # bucket size; default max(rate, 1)
    max_connections: int = 0  # total client connections; 0 = unlimited
    max_connections_per_client: int = 0
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = 0  # 0 = unlimited
    header_timeout: float = 10.0  # a request head must arrive within this (slowloris)
    idle_timeout: float = 60.0  # keep-alive idle client connections are closed after this


@dataclass(frozen=True)
class CacheSpec:
    max_bytes: int = 64 * 1024 * 1024
    max_object_bytes: int = 1024 * 1024
    purge_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class ProxySettings:
    listeners: tuple[ListenerSpec, ...]
    routes: tuple[RouteSpec, ...]
    pools: dict[str, PoolSpec]
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    status_path: str | None = "/health"
    metrics_path: str | None = None
    admin_token: str | None = None  # when set, metrics and PURGE need "Authorization: Bearer"
    hide_headers: tuple[str, ...] = DEFAULT_HIDE_HEADERS
    access_log: str = "off"  # off | combined | json
    preserve_host: bool = True
    trust_forwarded: bool = False  # keep incoming X-Forwarded-For/Forwarded chains (any peer)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For/Forwarded are extended
    cookie_secret: str = ""  # HMAC key of persistence cookies; random per start if empty
    compress_min_bytes: int = 256
    capacity: float | None = None  # requests/s this region's proxy is sized for (reported)
    rtt: RttSpec = field(default_factory=RttSpec)  # the client RTT table (proxy-wide)
