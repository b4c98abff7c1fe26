"""PURE, sans-I/O: the one request pipeline of the HTTP proxy.

A transport (http1.py) parses a request head and builds a `RequestView`; everything decided
about the exchange happens here: admission (ACL, rate, limits), the proxy's own endpoints,
the route and the WAF on ONE normalised path, cache lookups, the candidate members, the retry
policy, the request head sent upstream (hop-by-hop removal, Forwarded/X-Forwarded-* with
`trusted_proxies`) and the response head sent back (hidden headers, compression, framing).
The transport only moves bytes and calls these methods.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus

from multidict import CIMultiDict

from ..admin.auth import bearer_matches
from ..clock import Clock
from . import waf
from .balancers import extract_key
from .cache import Cache, Entry, freshness
from .compress import choose_encoding
from .framing import HOP_BY_HOP, PROTECTED, RequestFraming, quote_forwarded
from .metrics import ProxyMetrics
from .persistence import CookieCodec
from .pool import Member, Pool
from .protect import IpAcl, RateLimiter, header_limits_status, parse_networks
from .settings import ProxySettings, RouteSpec

log = logging.getLogger("gslb.proxy")

VIA = b"Via: 1.1 gslb\r\n"  # RFC 9110 7.6.3: every forwarded message says it passed here
ALLOW = b"Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n"
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})  # names no other header
_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")


# ---- the one normalised path ---------------------------------------------------------------


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4."""
    out: list[bytes] = []
    segments = path.split(b"/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == b".":
            if last:
                out.append(b"")
            continue
        if seg == b"..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append(b"")
            continue
        out.append(seg)
    result = b"/".join(out)
    return result if result.startswith(b"/") else b"/" + result


def normalise_path(path: bytes) -> bytes:
    """Percent-decoding of unreserved characters (others keep their escape, in upper case),
    then dot-segment removal: the path every route and WAF decision sees."""
    if b"%" in path:
        parts = path.split(b"%")
        buf = [parts[0]]
        for part in parts[1:]:
            if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
                char = int(part[:2], 16)
                if char in _UNRESERVED:
                    buf.append(bytes((char,)) + part[2:])
                else:
                    buf.append(b"%" + part[:2].upper() + part[2:])
            else:
                buf.append(b"%25" + part)  # a stray "%" is escaped, never guessed at
        path = b"".join(buf)
    if b"/." in path or path.startswith(b"."):
        path = remove_dot_segments(path)
    return path


def normalise_target(target: bytes) -> tuple[bytes, bytes]:
    """Origin-form target -> (normalised target, normalised path)."""
    if b"%" not in target and b"/." not in target:
        return target, (target.split(b"?", 1)[0] if b"?" in target else target)  # most
    if target == b"*":
        return target, target
    path, q, query = target.partition(b"?")
    path = normalise_path(path)
    return (path + q + query if q else path), path


def host_key(host: str) -> str:
    """Host for matching: lower case, no port, no trailing dot."""
    host = host.lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".")


def host_matches(patterns: tuple[str, ...], host: str) -> bool:
    if not patterns:
        return True
    for p in patterns:
        if p == host or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


def match_route(routes: tuple[RouteSpec, ...], host: str, path: str) -> RouteSpec | None:
    """The route with the longest matching path prefix among those whose host matches;
    routes naming the host win over catch-all routes. `path` is the normalised path."""
    host = host_key(host)
    best: tuple[int, int, int] | None = None
    found = None
    for i, r in enumerate(routes):
        if not host_matches(r.hosts, host) or not path.startswith(r.path_prefix):
            continue
        rank = (1 if r.hosts else 0, len(r.path_prefix), -i)
        if best is None or rank > best:
            best, found = rank, r
    return found


# ---- values the transport carries ----------------------------------------------------------


@dataclass(slots=True)
class RequestView:
    """One parsed client request, as the exchange layer sees it."""

    method: bytes
    version: str
    target: bytes  # normalised origin-form target: what routing, the WAF and the upstream see
    path: bytes  # normalised path (no query)
    headers: list[tuple[bytes, bytes]]
    framing: RequestFraming
    ip: str
    proto: bytes  # b"http" or b"https"
    _multi: CIMultiDict[str] | None = field(default=None, repr=False)

    @property
    def host(self) -> bytes:
        return self.framing.host

    def header(self, lname: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None

    def multidict(self) -> CIMultiDict[str]:
        """The headers as a CIMultiDict (cache and compression decisions only)."""
        if self._multi is None:
            self._multi = CIMultiDict(
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers
            )
        return self._multi


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the proxy gives itself."""

    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"
    extra: bytes = b""  # more header lines, CRLF-terminated
    close: bool = False
    head_only: bool = False
    dated: bool = False  # `extra` holds the Date already (a cached response keeps its own)

    def render(self, keep_alive: bool, head: bool = False, date: bytes = b"") -> bytes:
        """`date`: a "Date: ...CRLF" line (RFC 9110 6.6.1), from Exchange.date_line()."""
        conn = b"keep-alive" if keep_alive and not self.close else b"close"
        body = b"" if self.head_only or head else self.body
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (self.status, reason(self.status)),
                b"" if self.dated else date,
                b"Content-Type: " + self.content_type + b"\r\n",
                b"Content-Length: %d\r\n" % len(self.body),
                b"Connection: " + conn + b"\r\n",
                self.extra,
                b"\r\n",
                body,
            )
        )


def text_reply(status: int, text: str, extra: bytes = b"", close: bool = False) -> Reply:
    return Reply(status, (text + "\n").encode(), extra=extra, close=close)


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


@dataclass(slots=True)
class ResponsePlan:
    """What to send the client for one upstream response head."""

    head: bytes
    compress: str | None  # "br"/"gzip": the body is compressed on the way
    store_ttl: float | None  # cache the (uncompressed) response for this long
    store_headers: CIMultiDict[str] | None  # the headers to cache, before compression
    upstream_length: bool  # the upstream's Content-Length is forwarded as is


class _Headers:
    """What the shared bearer check reads: an object with `.headers`."""

    def __init__(self, headers: CIMultiDict[str]) -> None:
        self.headers = headers


# ---- the exchange layer ----------------------------------------------------------------------


class Exchange:
    """Every decision of one proxy's HTTP exchanges; static configuration computed once."""

    def __init__(
        self,
        settings: ProxySettings,
        pools: dict[str, Pool],
        cache: Cache,
        metrics: ProxyMetrics,
        clock: Clock,
        cookies: dict[str, CookieCodec],
        health: Callable[[], tuple[bool, dict[str, object]]],
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.cache = cache
        self.metrics = metrics
        self.clock = clock
        self.cookies = cookies
        self.health = health
        lim = settings.limits
        self.limits = lim
        self.acl = IpAcl(lim.allow, lim.deny)
        self.rate = RateLimiter(lim.rate, lim.burst) if lim.rate > 0 else None
        self.purge_allow = parse_networks(settings.cache.purge_allow)
        self.trusted = parse_networks(settings.trusted_proxies)
        self.status_path = settings.status_path.encode() if settings.status_path else None
        self.metrics_path = settings.metrics_path.encode() if settings.metrics_path else None
        self.hide = frozenset(h.lower().encode() for h in settings.hide_headers)
        self.response_drop = HOP_BY_HOP | self.hide | {b"content-length"}
        self.request_drop = HOP_BY_HOP | FORWARDED | {b"expect", b"host"}
        self._forwarding_cache: dict[tuple[str, bytes, bytes], bytes] = {}
        self._date_second = -1
        self._date_line = b""
        routes = settings.routes
        # The common single catch-all route needs no matching at all.
        self.only_route = (
            routes[0]
            if len(routes) == 1 and not routes[0].hosts and routes[0].path_prefix == "/"
            else None
        )

    def date_line(self) -> bytes:
        """`Date: <IMF-fixdate>` CRLF for now, formatted once per second."""
        now = self.clock.time()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date_line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._date_line

    def view(
        self,
        method: bytes,
        version: str,
        framing: RequestFraming,
        headers: list[tuple[bytes, bytes]],
        ip: str,
        proto: bytes,
    ) -> RequestView:
        target, path = normalise_target(framing.target)
        return RequestView(method, version, target, path, headers, framing, ip, proto)

    def record(
        self, pool: Pool, member: Member, ok: bool, latency: float | None, outcome: str
    ) -> None:
        """One attempt's outcome: passive health, latency, counters."""
        before = member.outlier.ejections
        pool.report(member, ok, latency)
        self.metrics.upstream(pool.name, member.name, outcome, latency)
        if member.outlier.ejections > before:
            self.metrics.ejection(pool.name, member.name)

    # -- admission
    def admit(self, view: RequestView) -> Reply | None:
        """ACL, rate and size limits: a refusal, or None to go on."""
        ip = view.ip
        if not self.acl.permits(ip):
            self.metrics.rejected("acl")
            return text_reply(403, "forbidden")
        if self.rate is not None:
            wait = self.rate.take(ip, self.clock.monotonic())
            if wait > 0:
                self.metrics.rejected("rate")
                retry = max(1, int(wait + 0.999))
                return text_reply(429, "too many requests", b"Retry-After: %d\r\n" % retry)
        lim = self.limits
        if lim.max_header_bytes and len(view.target) > lim.max_header_bytes:
            self.metrics.rejected("headers")
            return text_reply(414, "URI too long", close=True)
        if header_limits_status(view.headers, lim.max_header_bytes, lim.max_headers):
            self.metrics.rejected("headers")
            return text_reply(431, "request header fields too large", close=True)
        length = view.framing.length
        if lim.max_body_bytes and length is not None and length > lim.max_body_bytes:
            self.metrics.rejected("body")
            return text_reply(413, "request body too large", close=True)
        return None

    def local(self, view: RequestView, redirect_port: int | None) -> Reply | None:
        """The proxy's own answers: https redirect, health, metrics, PURGE."""
        if redirect_port is not None:
            host = host_key(view.host.decode("latin-1"))
            port = b"" if redirect_port == 443 else b":%d" % redirect_port
            where = b"https://" + host.encode("latin-1") + port + view.target
            return text_reply(308, "moved to https", b"Location: " + where + b"\r\n")
        method = view.method
        if method == b"TRACE":
            # Reflecting requests (cookies, credentials) to scripts is cross-site tracing.
            return text_reply(405, "TRACE is not allowed", ALLOW)
        if method == b"OPTIONS":
            hops = view.header(b"max-forwards")
            if hops is not None and hops.strip() == b"0":
                return Reply(200, b"", extra=ALLOW)  # RFC 9110 7.6.2: the last hop answers
        if method in (b"GET", b"HEAD"):
            if view.path == self.status_path:
                ok, detail = self.health()
                return Reply(
                    200 if ok else 503,
                    (json.dumps(detail, indent=1) + "\n").encode(),
                    b"application/json",
                    b"Cache-Control: no-store\r\n",
                    head_only=method == b"HEAD",
                )
            if view.path == self.metrics_path:
                if not self._admin_allowed(view):
                    return text_reply(401, "bearer token required")
                return Reply(200, self.metrics.text(), b"text/plain; version=0.0.4")
        if method == b"PURGE":
            if not self._admin_allowed(view):
                return text_reply(401, "bearer token required")
            return self._purge(view)
        return None

    def _admin_allowed(self, view: RequestView) -> bool:
        token = self.settings.admin_token
        if token is None:
            return True
        return bearer_matches(_Headers(view.multidict()), token)

    def _purge(self, view: RequestView) -> Reply:
        try:
            addr = ipaddress.ip_address(view.ip)
        except ValueError:
            return text_reply(403, "forbidden")
        if not any(addr in net for net in self.purge_allow):
            return text_reply(403, "forbidden")
        raw = view.header(b"x-purge-target")
        target = normalise_target(raw)[0] if raw and raw != b"*" else (raw or view.target)
        count = self.cache.purge(view.host.decode("latin-1"), target.decode("latin-1"))
        return Reply(200, json.dumps({"purged": count}).encode(), b"application/json")

    # -- route and WAF, on the normalised path
    def route(self, view: RequestView) -> RouteSpec | Reply:
        route = self.only_route
        if route is None:
            route = match_route(
                self.settings.routes, view.host.decode("latin-1"), view.path.decode("latin-1")
            )
        if route is None:
            return text_reply(404, "no route")
        return route

    def waf(self, view: RequestView, route: RouteSpec) -> Reply | None:
        if not route.waf:
            return None
        found = waf.match_request(
            view.target.decode("latin-1"),
            ((n.decode("latin-1"), v.decode("latin-1")) for n, v in view.headers),
        )
        if found is None:
            return None
        rule, where = found
        self.metrics.rejected("waf")
        log.warning(
            "waf: rule %s blocked %s %s from %s (in %s)",
            rule.id,
            view.method.decode("latin-1"),
            view.target.decode("latin-1"),
            view.ip,
            where,
        )
        return text_reply(403, f"forbidden by rule {rule.id}")

    # -- cache
    def cache_lookup(self, view: RequestView, route: RouteSpec) -> Reply | Entry | None:
        """A fresh hit answered from the cache (200 or 304), a stale entry to revalidate,
        or None (forward as usual)."""
        if not route.cache or view.method not in (b"GET", b"HEAD"):
            return None
        headers = view.multidict()
        host = view.host.decode("latin-1")
        target = view.target.decode("latin-1")
        conditional = {n.lower() for n, _ in view.headers} & CONDITIONAL
        entry = self.cache.lookup(host, target, headers)
        if entry is None:
            self.metrics.cache("miss")
            if view.method == b"GET" and not conditional:
                return self.cache.stale(host, target, headers)
            return None
        if conditional - {b"if-none-match", b"if-modified-since"}:
            return None  # preconditions the cache does not evaluate: the upstream does
        self.metrics.cache("hit")
        if conditional and not_modified(headers, entry.headers):
            return self.entry_reply(view, route, entry, "HIT", status=304)
        return self.entry_reply(view, route, entry, "HIT")

    def entry_reply(
        self, view: RequestView, route: RouteSpec, entry: Entry, how: str, status: int = 0
    ) -> Reply:
        """A cached entry as a reply: the stored (identity) body, compressed for this client
        when the route compresses."""
        headers = CIMultiDict(entry.headers)
        headers["Age"] = str(int(entry.age(self.clock.time())))
        headers["X-Cache"] = how
        body = entry.body
        status = status or entry.status
        if status == 304:
            body = b""
            for name in ("Content-Type", "Content-Encoding", "Content-Length"):
                headers.popall(name, None)
        elif route.compress:
            encoding = choose_encoding(
                view.method.decode(),
                status,
                view.multidict(),
                headers,
                self.settings.compress_min_bytes,
            )
            if encoding is not None:
                from .compress import Compressor

                comp = Compressor(encoding)
                body = comp.feed(body) + comp.finish()
                mark_compressed(headers, encoding)
        ctype = headers.popall("Content-Type", ["application/octet-stream"])[0]
        headers.popall("Content-Length", None)
        extra = b"".join(
            k.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
            for k, v in headers.items()
            if k.lower().encode() not in HOP_BY_HOP
        )
        dated = "Date" in headers
        if status == 304:
            return Reply(304, b"", ctype.encode("latin-1"), extra, head_only=True, dated=dated)
        head_only = view.method == b"HEAD"
        return Reply(status, body, ctype.encode("latin-1"), extra, head_only=head_only, dated=dated)

    def revalidated(
        self, view: RequestView, route: RouteSpec, entry: Entry, headers: list[tuple[bytes, bytes]]
    ) -> Reply:
        """The upstream confirmed a stale entry with 304: refresh it and serve its body."""
        self.metrics.cache("revalidated")
        refreshed = self._visible(headers)
        self.cache.refresh(
            view.host.decode("latin-1"),
            view.target.decode("latin-1"),
            view.multidict(),
            entry,
            refreshed,
        )
        return self.entry_reply(view, route, entry, "REVALIDATED")

    def store(
        self,
        view: RequestView,
        status: int,
        reason_text: bytes,
        headers: CIMultiDict[str],
        body: bytes,
        ttl: float,
    ) -> None:
        headers = CIMultiDict(headers)
        headers.popall("X-Cache", None)
        headers.popall("Set-Cookie", None)
        self.cache.store(
            view.host.decode("latin-1"),
            view.target.decode("latin-1"),
            view.multidict(),
            status,
            reason_text.decode("latin-1"),
            headers,
            body,
            ttl,
        )

    # -- members and retries
    def candidates(self, view: RequestView, pool: Pool) -> tuple[list[Member], Member | None]:
        """Members to try in order, and the member named by a valid persistence cookie."""
        spec = pool.spec
        key = None
        cookies: dict[str, str] = {}
        if spec.persistence == "cookie" or spec.hash_key.startswith("cookie:"):
            for name, value in view.headers:
                if name.lower() == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        k, _, v = part.strip().partition("=")
                        cookies.setdefault(k, v)
        if spec.balance == "hash":
            headers = {}
            if spec.hash_key.startswith("header:"):
                wanted = spec.hash_key[7:]
                found = view.header(wanted.lower().encode())
                if found is not None:
                    headers[wanted] = found.decode("latin-1")
            key = extract_key(
                spec.hash_key, view.ip, headers, cookies, view.target.decode("latin-1")
            )
        order = pool.choose(key)
        sticky = None
        if spec.persistence == "cookie":
            chosen = self.cookies[pool.name].decode(cookies.get(spec.cookie_name))
            for i, m in enumerate(order):
                if m.name == chosen:
                    sticky = m
                    order.insert(0, order.pop(i))
                    break
        return order, sticky

    @staticmethod
    def may_retry(method: bytes, pool: Pool, replayable: bool) -> bool:
        """Whether a failed attempt (sent, then failed) may be tried on the next member."""
        return replayable and (method in IDEMPOTENT or pool.spec.retry_non_idempotent)

    @staticmethod
    def retry_on_status(
        status: int, method: bytes, pool: Pool, replayable: bool, attempt: int, candidates: int
    ) -> bool:
        spec = pool.spec
        return (
            status in RETRYABLE_STATUS
            and Exchange.may_retry(method, pool, replayable)
            and attempt + 1 < min(candidates, 1 + spec.retries)
            and pool.budget.allows()
        )

    # -- request head towards a member
    def forwarded_from_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return self.settings.trust_forwarded
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted)

    def upstream_head(
        self,
        view: RequestView,
        member: Member,
        extra: Iterable[tuple[bytes, bytes]] = (),
        upgrade: bool = False,
    ) -> bytes:
        """The request head sent to `member`: HTTP/1.1, hop-by-hop fields (fixed ones and those
        of every Connection line) removed, Host kept or replaced, the forwarding headers."""
        framing = view.framing
        drop = self.request_drop
        if framing.nominated:
            drop = drop | framing.nominated
        hops = None
        if view.method == b"OPTIONS":
            hops = view.header(b"max-forwards")
            if hops is not None and hops.strip().isdigit():
                drop = drop | {b"max-forwards"}
                hops = b"%d" % (int(hops) - 1)
            else:
                hops = None
        parts = [view.method, b" ", view.target, b" HTTP/1.1\r\n"]
        host = framing.host
        parts += (
            b"Host: ",
            host if host and self.settings.preserve_host else member.name.encode(),
            b"\r\n",
        )
        xff_in: list[bytes] = []
        fwd_in: list[bytes] = []
        for name, value in view.headers:
            lname = name.lower()
            if lname in drop:
                if lname in FORWARDED and self.forwarded_from_trusted(view.ip):
                    if lname == b"x-forwarded-for":
                        xff_in.append(value.strip())
                    elif lname == b"forwarded":
                        fwd_in.append(value.strip())
                continue
            parts += (name, b": ", value, b"\r\n")
        for name, value in extra:
            parts += (name, b": ", value, b"\r\n")
        if xff_in or fwd_in:
            parts.append(self._forwarding(view.ip, host, view.proto, xff_in, fwd_in))
        else:
            # The common case, a chain that starts here, depends on (client, host, scheme) only.
            key = (view.ip, host, view.proto)
            block = self._forwarding_cache.get(key)
            if block is None:
                if len(self._forwarding_cache) >= 4096:
                    self._forwarding_cache.clear()
                block = self._forwarding(view.ip, host, view.proto, (), ())
                self._forwarding_cache[key] = block
            parts.append(block)
        if hops is not None:
            parts += (b"Max-Forwards: ", hops, b"\r\n")
        if upgrade:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        elif framing.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    @staticmethod
    def _forwarding(
        client: str, host: bytes, proto: bytes, xff_in: Iterable[bytes], fwd_in: Iterable[bytes]
    ) -> bytes:
        """X-Forwarded-For/-Proto/-Host, Forwarded (RFC 7239) and Via for one request."""
        ip = client.encode()
        parts = [b"X-Forwarded-For: ", b", ".join((*xff_in, ip)), b"\r\n"]
        parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node + b";proto=" + proto
        if host:
            parts += (b"X-Forwarded-Host: ", host, b"\r\n")
            element += b";host=" + quote_forwarded(host)
        parts += (b"Forwarded: ", b", ".join((*fwd_in, element)), b"\r\n", VIA)
        return b"".join(parts)

    # -- response head towards the client
    def _visible(self, headers: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
        nominated = connection_nominated(headers)
        drop = self.response_drop | nominated
        return CIMultiDict(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n.lower() not in drop
        )

    def upgrade_head(self, reason_text: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A member's 101 to a websocket upgrade, as the client gets it."""
        nominated = connection_nominated(headers)
        drop = HOP_BY_HOP | self.hide | nominated
        parts = [b"HTTP/1.1 101 ", reason_text or reason(101), b"\r\n"]
        parts += [n + b": " + v + b"\r\n" for n, v in headers if n.lower() not in drop]
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        return b"".join(parts)

    def response_plan(
        self,
        view: RequestView,
        route: RouteSpec | None,
        pool: Pool,
        member: Member,
        sticky: Member | None,
        status: int,
        reason_text: bytes,
        headers: list[tuple[bytes, bytes]],
        upstream_length: int | None,
    ) -> ResponsePlan:
        """The response head (without framing and Connection lines: the transport adds those)
        and the body decisions. The fast case (no cache, no compression) stays on bytes."""
        spec = pool.spec
        compress = None
        ttl = None
        stored = None
        if route is not None and (route.cache or route.compress):
            visible = self._visible(headers)
            if upstream_length is not None:
                visible["Content-Length"] = str(upstream_length)
            if route.cache and view.method == b"GET":
                ttl = freshness(view.multidict(), status, visible, self.clock.time())
                if ttl is not None:
                    stored = CIMultiDict(visible)
                visible["X-Cache"] = "MISS"
            if "Date" not in visible:
                visible["Date"] = self.date_line()[6:-2].decode()
            if route.compress:
                compress = choose_encoding(
                    view.method.decode(),
                    status,
                    view.multidict(),
                    visible,
                    self.settings.compress_min_bytes,
                )
                if compress is not None:
                    mark_compressed(visible, compress)
            visible.popall("Content-Length", None)
            lines = [
                k.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
                for k, v in visible.items()
            ]
        else:
            drop = self.response_drop
            lines = []  # pieces of header lines, joined once below
            named = False
            dated = False
            for n, v in headers:
                lname = n.lower()
                if lname in drop:
                    if lname == b"connection" and v.lower() not in _PLAIN_CONNECTION:
                        named = True  # it may name more headers: filtered below
                    continue
                if lname == b"date":
                    dated = True
                lines += (n, b": ", v, b"\r\n")
            nominated = connection_nominated(headers) if named else None
            if nominated:  # rare: headers the upstream's Connection made hop-by-hop
                drop = drop | nominated
                lines = []
                for n, v in headers:
                    if n.lower() not in drop:
                        lines += (n, b": ", v, b"\r\n")
            if not dated:
                lines.append(self.date_line())  # RFC 9110 6.6.1: added when missing
        head = [b"HTTP/1.1 %d " % status, reason_text or reason(status), b"\r\n", *lines, VIA]
        if spec.persistence == "cookie" and sticky is not member:
            token = self.cookies[pool.name].encode(member.name).encode()
            cookie = spec.cookie_name.encode() + b"=" + token
            head += (b"Set-Cookie: ", cookie, b"; Path=/; HttpOnly; SameSite=Lax\r\n")
        return ResponsePlan(
            b"".join(head), compress, ttl, stored, upstream_length is not None and not compress
        )


def connection_nominated(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers an upstream's Connection lines made hop-by-hop; never the framing ones."""
    out: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token and token not in PROTECTED and token not in (b"close", b"keep-alive"):
                    out.add(token)
    return frozenset(out)


def mark_compressed(headers: CIMultiDict[str], encoding: str) -> None:
    headers.popall("Content-Length", None)
    headers["Content-Encoding"] = encoding
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = "Accept-Encoding"
    elif "accept-encoding" not in vary.lower():
        headers["Vary"] = vary + ", Accept-Encoding"
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        headers["ETag"] = "W/" + etag


def _date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def not_modified(request: CIMultiDict[str], stored: CIMultiDict[str]) -> bool:
    """RFC 9110 13.1.2/13.1.3 against a stored response (If-None-Match wins)."""
    inm = request.get("If-None-Match")
    if inm is not None:
        etag = stored.get("ETag")
        if etag is None:
            return False
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    ims = request.get("If-Modified-Since")
    modified = stored.get("Last-Modified")
    if ims is None or modified is None:
        return False
    since, when = _date(ims), _date(modified)
    return since is not None and when is not None and when <= since
