"""Active probes: HTTP, HTTPS and TCP connect. I/O only; decisions live in state.py.

A Checker turns (Check, address) into a CheckResult and never raises for a failed probe: every
failure becomes a short error string, which is what operators read in status output.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import aiohttp

from ..clock import SYSTEM_CLOCK, Clock
from ..config.model import Check, Config, Datacenter
from .report import REPORT_LIMIT, ProxyReport, parse_proxy_body
from .state import CheckResult

# Body bytes read for body_match, at most: health pages are small, and a check must never read
# a large or endless body. Every health check of gslb (DNS side, probe agents, proxy) uses it.
BODY_LIMIT = 64 * 1024
USER_AGENT = "gslb-health/0.1"


@dataclass(frozen=True)
class CheckTarget:
    """One thing to probe: a target name, the check, and the address it connects to."""

    name: str
    check: Check
    address: str


def default_port(check: Check) -> int:
    if check.port is not None:
        return check.port
    return 443 if check.type == "https" else 80


def target_address(dc: Datacenter) -> str | None:
    """check.host, else the datacenter's first IPv4, else its first IPv6."""
    if dc.check is not None and dc.check.host:
        return dc.check.host
    if dc.ipv4:
        return dc.ipv4[0]
    if dc.ipv6:
        return dc.ipv6[0]
    return None


def targets_from_config(config: Config) -> dict[str, CheckTarget]:
    """Every datacenter that has a check and an address to check."""
    out: dict[str, CheckTarget] = {}
    for name, dc in config.datacenters.items():
        if dc.check is None:
            continue
        address = target_address(dc)
        if address is None:
            continue
        out[name] = CheckTarget(name, dc.check, address)
    return out


def unchecked_targets(config: Config) -> set[str]:
    """Datacenters nothing checks (no check, or no address to check). The one rule for them,
    used by the server, `gslb explain` and `gslb check`: they count as up (aggregate NO_CHECK)."""
    return set(config.datacenters) - set(targets_from_config(config))


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


@lru_cache(maxsize=256)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def describe_error(exc: BaseException) -> str:
    """Short, stable error text for status output."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate error: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, ConnectionRefusedError)
    ):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect failed: {exc.os_error}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Checker:
    """Runs checks. Holds one HTTP session (no keep-alive: each probe opens a fresh connection,
    so a dead listener is noticed instead of hidden behind a pooled socket)."""

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        verify_context: ssl.SSLContext | None = None,
    ) -> None:
        self.clock = clock
        # Trust store for verify_tls checks; default is the system store.
        self._verify_context = verify_context
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, limit=0, use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, target: CheckTarget) -> CheckResult:
        return await self.check(target.check, target.address)

    async def check(self, check: Check, address: str) -> CheckResult:
        start = self.clock.monotonic()
        try:
            async with asyncio.timeout(check.timeout):
                if check.type == "tcp":
                    ok, error, detail = await self._tcp(check, address)
                    report = None
                else:
                    ok, error, detail, report = await self._http(check, address)
        except TimeoutError:
            ok, error, detail, report = False, f"timeout after {check.timeout:g}s", "", None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every probe failure is a result, never a crash
            ok, error, detail, report = False, describe_error(exc), "", None
        latency = self.clock.monotonic() - start
        return CheckResult(ok=ok, error=error, latency=latency, detail=detail, report=report)

    async def _tcp(self, check: Check, address: str) -> tuple[bool, str, str]:
        _, writer = await asyncio.open_connection(address, default_port(check))
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # a reset on close still proves the port accepted the connection
        return True, "", "TCP connect ok"

    def _ssl_for(self, check: Check) -> ssl.SSLContext | bool:
        if check.type != "https":
            return True  # aiohttp's default; unused for http
        if not check.verify_tls:
            return False
        if self._verify_context is None:
            self._verify_context = ssl.create_default_context()
        return self._verify_context

    async def _http(
        self, check: Check, address: str
    ) -> tuple[bool, str, str, ProxyReport | None]:
        """(ok, error, detail, report): a JSON health page may carry the proxy's load report
        (gslb/health/report.py), read whatever the status, since a failing proxy still
        knows its load."""
        scheme = "https" if check.type == "https" else "http"
        url = f"{scheme}://{_url_host(address)}:{default_port(check)}{check.path or '/'}"
        headers: dict[str, str] = dict(check.headers)
        if check.host_header:
            headers["Host"] = check.host_header
        kwargs: dict[str, object] = {}
        if scheme == "https":
            kwargs["ssl"] = self._ssl_for(check)
            if check.host_header:
                # SNI and certificate name follow the Host header, not the IP we dial.
                kwargs["server_hostname"] = check.host_header
        session = self._get_session()
        async with session.get(
            url,
            headers=headers,
            allow_redirects=False,
            **kwargs,  # type: ignore[arg-type]
        ) as resp:
            detail = f"HTTP {resp.status}"
            body: bytes | None = None
            report = None
            if resp.content_type == "application/json":
                body = await read_limited(resp.content, REPORT_LIMIT)
                report = parse_proxy_body(body, self.clock.time())
            if resp.status not in check.expect_status:
                expected = ",".join(str(s) for s in check.expect_status)
                return False, f"status {resp.status} not in expected [{expected}]", detail, report
            if check.body_match is not None:
                if body is None:
                    body = await read_limited(resp.content, BODY_LIMIT)
                text = body[:BODY_LIMIT].decode(resp.charset or "utf-8", errors="replace")
                if not _pattern(check.body_match).search(text):
                    return False, f"body does not match {check.body_match!r}", detail, report
        return True, "", detail, report


async def read_limited(stream: aiohttp.StreamReader, limit: int = BODY_LIMIT) -> bytes:
    """At most `limit` bytes of a body (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def describe_targets(targets: Mapping[str, CheckTarget]) -> dict[str, str]:
    """{name: "https 192.0.2.10:443/health"} for logs and status."""
    return {
        n: f"{t.check.type} {_url_host(t.address)}:{default_port(t.check)}"
        + (t.check.path if t.check.type != "tcp" else "")
        for n, t in targets.items()
    }
