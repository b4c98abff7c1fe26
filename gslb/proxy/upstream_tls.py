"""TLS from the proxy to pool members: one client context per pool, built once at start."""

from __future__ import annotations

import ssl

from .settings import PoolSpec


def client_context(spec: PoolSpec) -> ssl.SSLContext | None:
    """The pool's client context, or None when no member speaks TLS."""
    if not (spec.tls or any(m.tls for m in spec.members)):
        return None
    if spec.verify:
        ctx = ssl.create_default_context(cafile=spec.ca_file)
    else:
        # Explicitly asked for (verify: false): encrypted, but anyone may answer.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def server_name(spec: PoolSpec, host: str) -> str:
    """The name sent as SNI and verified: the configured server_name, else the member host."""
    return spec.server_name or host
