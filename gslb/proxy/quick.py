"""Quick mode (no config file) and the programmatic API `gslb run` uses to start a proxy."""

from __future__ import annotations

from collections.abc import Sequence

from .balancers import BALANCER_NAMES, valid_hash_key
from .outlier import OutlierSettings
from .server import ProxyServer, parse_listen
from .settings import CheckSpec, ListenerSpec, MemberSpec, PoolSpec, ProxySettings, RouteSpec
from .share import WorkerShare


def parse_upstream(text: str) -> MemberSpec:
    """'127.0.0.1:9001', '127.0.0.1:9001=3' (weight 3) or 'https://127.0.0.1:9443' (TLS)."""
    address, _, weight = text.partition("=")
    scheme, sep, rest = address.partition("://")
    tls = bool(sep) and scheme.lower() == "https"
    if sep and scheme.lower() not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, not {scheme!r}")
    host, port = parse_listen(rest.rstrip("/") if sep else address)
    return MemberSpec(host, port, float(weight) if weight else 1.0, tls=tls)


def quick_settings(
    listen: str,
    upstreams: Sequence[str],
    balance: str = "round_robin",
    hash_key: str = "ip",
    health_path: str | None = None,
    min_healthy: int = 1,
    check_interval: float = 1.0,
    check_timeout: float | None = None,
    tcp_checks: bool = False,
    access_log: str = "off",
    status_path: str | None = "/health",
    capacity: float | None = None,
) -> ProxySettings:
    """Settings of a one-listener, one-pool HTTP proxy.

    Active checks run when `health_path` is given (HTTP GET, expects 200) or `tcp_checks` is set;
    the proxy's own status endpoint (`status_path`) answers 200 while at least `min_healthy`
    members are up and 503 otherwise.
    """
    if balance not in BALANCER_NAMES:
        raise ValueError(f"unknown balancer {balance!r}; one of {', '.join(BALANCER_NAMES)}")
    if not valid_hash_key(hash_key):
        raise ValueError(f"bad hash key {hash_key!r}: ip, uri, header:NAME or cookie:NAME")
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    if capacity is not None and not capacity > 0:
        raise ValueError(f"capacity must be a positive number of requests/s, not {capacity}")
    host, port = parse_listen(listen)
    check = None
    if health_path is not None or tcp_checks:
        timeout = check_timeout if check_timeout is not None else min(1.0, check_interval / 2)
        check = CheckSpec(
            path=health_path, interval=check_interval, timeout=timeout, rise=2, fall=2
        )
    pool = PoolSpec(
        name="default",
        members=tuple(parse_upstream(u) for u in upstreams),
        balance=balance,
        hash_key=hash_key,
        check=check,
        outlier=OutlierSettings(),
        min_healthy=min_healthy,
    )
    return ProxySettings(
        listeners=(ListenerSpec(host, port, "http", name="default"),),
        routes=(RouteSpec(pool="default"),),
        pools={"default": pool},
        access_log=access_log,
        status_path=status_path,
        capacity=capacity,
    )


async def serve(
    settings: ProxySettings, reuse_port: bool = False, share: WorkerShare | None = None
) -> ProxyServer:
    server = ProxyServer(settings, reuse_port=reuse_port, share=share)
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    return server


async def serve_quick(
    listen: str,
    upstreams: list[str],
    balance: str = "round_robin",
    health_path: str | None = "/",
    min_healthy: int = 1,
    check_interval: float = 1.0,
) -> ProxyServer:
    """Start a quick-mode proxy in this event loop; `.port` is its bound port, `await .close()`
    stops it. GET /health is 200 while >= min_healthy members pass the active checks."""
    settings = quick_settings(
        listen,
        upstreams,
        balance,
        health_path=health_path,
        min_healthy=min_healthy,
        check_interval=check_interval,
    )
    return await serve(settings)
