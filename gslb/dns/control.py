"""`gslb dns`: the control plane of one node, and how its processes are wired.

One process per node owns health following, overrides, reload, the GeoIP watch, the state file
and the admin API (one port). With `workers: 1` that process also serves; with more, it serves
nothing and publishes each generation and health snapshot to its worker processes
(workers.py). In cluster mode it also follows etcd (gslb.cluster.watch).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from ..cluster.etcd import EtcdClient, EtcdUnavailable
from ..cluster.generation import GenerationSource
from ..cluster.store import ClusterStore
from ..cluster.watch import ClusterFollower, ClusterUnavailable, cache_path, load_cached
from ..errors import ConfigError, GslbError
from ..health.aggregate import Override
from .node import DnsNode, NodeOptions
from .server import install_uvloop, make_socket
from .settings import parse_cluster, parse_hostport
from .status import NodeStatus

log = logging.getLogger("gslb.dns")


class PortTaken(GslbError):
    """A listening address is in use; the message is the one line an operator needs."""


def port_taken(address: str, setting: str, exc: OSError) -> PortTaken:
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return PortTaken(f"cannot listen on {address} ({setting}): {reason}")


def run_loop(coro: Coroutine[Any, Any, Any]) -> int:
    factory = install_uvloop()
    if factory is not None:
        with asyncio.Runner(loop_factory=factory) as runner:
            return int(runner.run(coro))
    return int(asyncio.run(coro))


def run(options: NodeOptions) -> int:
    """Entry point for `gslb dns`."""
    try:
        return run_loop(serve(options))
    except ConfigError as exc:
        print(f"gslb dns: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except PortTaken as exc:
        print(f"gslb dns: {exc}", file=sys.stderr)
        return 1


async def first_source(
    options: NodeOptions, store: ClusterStore | None, poll: float = 0.5
) -> GenerationSource | None:
    """What a node starts from: etcd's current generation; if etcd is down, the copy cached
    beside the state file; with neither, the local files when given (None: read them). With
    nothing at all, wait for the first `gslb publish` (or for etcd) instead of exiting."""
    if store is None:
        return None
    cached = load_cached(cache_path(options.state_file))
    waited = 0.0
    while True:
        try:
            view = await store.view()
            source = await store.generation(view.number) if view.number else None
            problem = f"nothing published under {store.prefix} yet (run `gslb publish`)"
            reachable = True
        except (EtcdUnavailable, ConfigError) as exc:
            source, problem, reachable = None, f"etcd unreachable: {exc}", False
        if source is not None:
            return source
        if cached is not None:
            if not reachable:
                log.warning("%s; serving cached generation %s", problem, cached.label)
            return cached
        if options.config_path:
            log.warning("%s; serving the local files until a generation is published", problem)
            return None
        if waited % 10 == 0:
            log.warning("%s; waiting for a generation to serve", problem)
        await asyncio.sleep(poll)
        waited += poll


def cluster_from_config(options: NodeOptions) -> NodeOptions:
    """Without --etcd, the local config file's `cluster:` section may name the etcd cluster;
    the generations then come from etcd and the file is only where the node starts from."""
    if options.etcd or not options.config_path:
        return options
    from ..cluster.etcd import parse_endpoints
    from ..config.yaml_loader import load_yaml_file

    raw = load_yaml_file(options.config_path)
    section = raw.get("cluster") if isinstance(raw, dict) else None
    settings, reasons = parse_cluster(section)
    if reasons:
        raise ConfigError(reasons)
    if not settings.etcd:
        return options
    return replace(options, etcd=parse_endpoints(settings.etcd), etcd_prefix=settings.prefix)


async def serve(options: NodeOptions) -> int:
    """Run one node until SIGINT/SIGTERM; SIGHUP reloads."""
    options = cluster_from_config(options)
    store = None
    if options.etcd:
        store = ClusterStore(EtcdClient(options.etcd), options.etcd_prefix)
        if not options.state_file:
            log.warning(
                "cluster mode without --state-file: nodes sharing a machine would share the "
                "published health.state_file; give each node its own"
            )
    try:
        source = await first_source(options, store)
    except BaseException:
        if store is not None:
            await store.client.close()
        raise
    # Validated before anything is bound; the generation also says how many workers to run.
    node = DnsNode(options, source=source)
    workers = node.generation.settings.workers
    if workers > 1:
        node.role = "control"
    listen = check_ports(list(node.generation.settings.listen)) if workers > 1 else []
    pool = None
    follower = None
    admin = None
    try:
        try:
            await node.start()
        except OSError as exc:
            raise port_taken(", ".join(node.server.listen), "dns.listen or --listen", exc) from None
        if workers > 1:
            from .workers import WorkerPool

            pool = WorkerPool(workers, options, listen, node)
            await pool.start()
            log.info("supervising %d workers on %s", workers, ", ".join(listen))
        if store is not None:
            # The cache needs this node's own state file: a start while etcd is down reads it.
            follower = ClusterFollower(store, node, cache_file=cache_path(options.state_file))
            node.reload_source = lambda: node.source  # reload: validate and reopen GeoIP
            await follower.sync()
            await follower.start()
        admin = await start_node_admin(node, pool, follower)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, node.reload)
        await stop.wait()
        log.info("stopping")
    finally:
        if admin is not None:
            await admin.close()
        if follower is not None:
            await follower.stop()
        if pool is not None:
            await pool.stop()
        await node.stop()
    return 0


def check_ports(listen: list[str]) -> list[str]:
    """Bind each address once, without SO_REUSEPORT, so a port another process holds is a clear
    error (workers share theirs with SO_REUSEPORT, which would silently join that process);
    port 0 resolves here to the one port every worker then binds."""
    resolved = []
    for item in listen:
        host, port = parse_hostport(item)  # type: ignore[misc]
        try:
            tcp = make_socket(host, port, socket.SOCK_STREAM, reuse_port=False)
        except OSError as exc:
            raise port_taken(item, "dns.listen or --listen", exc) from None
        port = tcp.getsockname()[1]
        try:
            make_socket(host, port, socket.SOCK_DGRAM, reuse_port=False).close()
        except OSError as exc:
            raise port_taken(item, "dns.listen or --listen", exc) from None
        finally:
            tcp.close()
        resolved.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return resolved


def override_setter(
    node: DnsNode, follower: ClusterFollower | None
) -> Callable[[str, str, str, float], Coroutine[Any, Any, None]]:
    """How this node's admin API sets an override: in etcd (cluster mode), else locally."""

    async def set_override(target: str, mode: str, reason: str, drain: float = 0.0) -> None:
        if follower is None:
            node.monitor.set_override(target, mode, reason, drain=drain)
            return
        override = (
            None
            if mode == "none"
            else Override(mode, reason, node.monitor.clock.time(), drain)  # type: ignore[arg-type]
        )
        await follower.set_override(target, override)

    return set_override


async def start_node_admin(
    node: DnsNode, pool: Any = None, follower: ClusterFollower | None = None
) -> Any:
    """The node's admin API (one port per node), or None when turned off."""
    settings = node.generation.admin
    listen = node.options.admin_listen or settings.listen
    if not listen or listen == "off":
        return None
    from ..admin.server import start_admin
    from ..health.admin import admin_routes

    routes = []
    if node.monitor is not None:
        routes = admin_routes(
            node.monitor,
            setter=override_setter(node, follower),
            synced=pool.synced if pool is not None else None,
            unavailable=(ClusterUnavailable,),
        )
    status = NodeStatus(node, name=node_name(node), workers=pool, cluster=follower)
    try:
        admin = await start_admin(
            listen, status, token=settings.token, allow=settings.allow_check(), extra_routes=routes
        )
    except OSError as exc:
        raise port_taken(listen, "admin.listen or --admin", exc) from None
    log.info("admin API on http://%s:%d/", admin.host, admin.port)
    return admin


def node_name(node: DnsNode) -> str:
    return node.options.name or node.generation.settings.chaos_id or "dns-1"
