"""PURE: every HTTP/1.1 framing decision of the proxy, in one place (RFC 9112).

llhttp (httptools) parses the bytes; this module judges what it parsed: Host rules, the
request-target form, Content-Length against Transfer-Encoding, every `Connection` line, HTTP/1.0
rules, Expect and Upgrade on the request side, and how a response is framed towards the client.
Nothing here does I/O; the transport (http1.py) acts on the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Headers whose removal would change how a message is framed or routed: a `Connection` line
# naming them is ignored for them (else `Connection: content-length` smuggles a body).
PROTECTED = frozenset({b"host", b"content-length", b"transfer-encoding"})

# RFC 9110 7.6.1 hop-by-hop fields, plus the legacy ones every proxy strips.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# RFC 3986 reg-name / IP-literal characters plus ":" for the port.
_HOST_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]"
)
_TOKEN_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the proxy answers itself; `close` ends the connection after the answer."""

    status: int
    text: str
    close: bool = True


@dataclass(slots=True)
class RequestFraming:
    host: bytes  # the authority that names the origin (Host, or the absolute-form target's)
    target: bytes  # origin-form target (absolute-form reduced to path and query)
    keep_alive: bool
    chunked: bool
    length: int | None
    expect_continue: bool  # the client waits for 100 Continue before sending its body
    websocket: bool  # a websocket upgrade the transport may tunnel after a 101
    nominated: frozenset[bytes]  # header names the client's Connection lines made hop-by-hop


_NONE: frozenset[bytes] = frozenset()
_FRAMING_FIELDS = frozenset(
    {b"host", b"connection", b"transfer-encoding", b"content-length", b"expect", b"upgrade"}
)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Every token of every Connection line, lower case."""
    out = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                out.add(token)
    return frozenset(out)


_HOST_DELETE = bytes(sorted(_HOST_CHARS))
_GOOD_HOSTS: dict[bytes, bool] = {}  # the few names a proxy serves, judged once each


def valid_host(host: bytes) -> bool:
    good = _GOOD_HOSTS.get(host)
    if good is None:
        good = _valid_host(host)
        if len(_GOOD_HOSTS) < 4096:
            _GOOD_HOSTS[host] = good
    return good


def _valid_host(host: bytes) -> bool:
    if not host or len(host) > 255:
        return False
    if host.translate(None, _HOST_DELETE):
        return False  # a character outside reg-name, IP-literal and port
    if host.startswith(b"["):
        end = host.find(b"]")
        if end < 0:
            return False
        rest = host[end + 1 :]
        return not rest or (rest.startswith(b":") and rest[1:].isdigit())
    name, colon, port = host.rpartition(b":")
    if colon and (not port.isdigit() or not name):
        return False
    return b"[" not in host and b"]" not in host


def split_absolute(target: bytes) -> tuple[bytes, bytes] | None:
    """`http://authority/path?q` -> (authority, /path?q); None when not absolute-form."""
    lower = target[:8].lower()
    if lower.startswith(b"http://"):
        rest = target[7:]
    elif lower.startswith(b"https://"):
        rest = target[8:]
    else:
        return None
    cut = len(rest)
    for sep in (b"/", b"?"):
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        authority = b""  # userinfo is deprecated and a classic confusion vector: refused below
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


def request_framing(
    method: bytes,
    version: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    parser_keep_alive: bool,
) -> RequestFraming | Refusal:
    """The framing of one parsed request head, or why the proxy refuses it."""
    hosts: list[bytes] = []
    conn_lines: list[bytes] = []
    te: list[bytes] = []
    length: int | None = None
    expect: bytes | None = None
    upgrade: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in _FRAMING_FIELDS:
            continue
        if lname == b"host":
            hosts.append(value.strip())
        elif lname == b"connection":
            conn_lines.append(value)
        elif lname == b"transfer-encoding":
            te.append(value)
        elif lname == b"content-length":
            value = value.strip()
            if not value.isdigit():
                return Refusal(400, "bad content-length")
            if length is not None and int(value) != length:
                return Refusal(400, "conflicting content-length")
            length = int(value)
        elif lname == b"expect":
            expect = value.strip().lower() if expect is None else b"\x00"
        elif lname == b"upgrade":
            upgrade.append(value)
    if version not in ("1.1", "1.0"):
        return Refusal(505, "HTTP version not supported")
    if method == b"CONNECT":
        return Refusal(405, "CONNECT is not supported")
    if b"#" in target:
        return Refusal(400, "a fragment in the request target")
    if len(hosts) > 1:
        return Refusal(400, "more than one Host header")  # RFC 9112 3.2
    absolute = None if target[:1] == b"/" else split_absolute(target)
    if absolute is not None:
        host, target = absolute  # RFC 9112 3.2.2: the target's authority wins over Host
        if not valid_host(host):
            return Refusal(400, "bad authority in the request target")
    elif target.startswith(b"/") or (target == b"*" and method == b"OPTIONS"):
        host = hosts[0] if hosts else b""
    else:
        return Refusal(400, "bad request target")
    if (hosts or version != "1.0") and not valid_host(host):
        return Refusal(400, "missing or invalid Host header")
    if absolute is not None and version != "1.0" and (not hosts or not valid_host(hosts[0])):
        return Refusal(400, "missing or invalid Host header")  # RFC 9112 3.2, absolute-form too
    chunked = False
    keep_alive = parser_keep_alive
    if te:
        codings = [c.strip().lower() for line in te for c in line.split(b",") if c.strip()]
        if not codings or codings[-1] != b"chunked":
            return Refusal(400, "bad transfer-encoding")  # RFC 9112 6.3: not chunked last
        if codings.count(b"chunked") > 1:
            return Refusal(400, "chunked more than once")  # RFC 9112 7: at most once
        if codings != [b"chunked"]:
            return Refusal(501, "transfer coding not implemented")
        if length is not None:
            return Refusal(400, "both content-length and transfer-encoding")
        chunked = True
        if version == "1.0":
            keep_alive = False  # RFC 9112 6.1: faulty framing in 1.0; close after it
    tokens = connection_tokens(conn_lines) if conn_lines else _NONE
    if b"close" in tokens:
        keep_alive = False
    if upgrade and b"upgrade" in tokens and (chunked or length):
        # llhttp switches protocols right after such a head, leaving the body unread: the body
        # would become the next request. Refused rather than framed two ways.
        return Refusal(400, "an upgrade request with a body")
    expect_continue = False
    if expect is not None and version != "1.0":
        if expect != b"100-continue":
            return Refusal(417, "expectation failed")
        expect_continue = chunked or bool(length)
    websocket = (
        bool(upgrade)
        and b"upgrade" in tokens
        and method == b"GET"
        and version == "1.1"  # RFC 6455 4.1
        and any(t.strip().lower() == b"websocket" for u in upgrade for t in u.split(b","))
    )
    nominated = tokens - PROTECTED if tokens else _NONE
    return RequestFraming(
        host, target, keep_alive, chunked, length, expect_continue, websocket, nominated
    )


@dataclass(frozen=True, slots=True)
class ResponseFraming:
    """How the proxy frames one response towards its client."""

    mode: str  # "none" (no body), "length" (Content-Length kept), "chunked", "close"
    keep_alive: bool


def response_framing(
    request_method: bytes,
    client_version: str,
    status: int,
    upstream_length: bool,
    recoded: bool,
    keep_alive: bool,
) -> ResponseFraming:
    """`upstream_length`: the upstream framed its body with a Content-Length we forward;
    `recoded`: the proxy changes the body (compression), so that length no longer holds."""
    if request_method == b"HEAD" or status in (204, 304) or status < 200:
        return _FRAMINGS["none", keep_alive]
    if upstream_length and not recoded:
        return _FRAMINGS["length", keep_alive]
    if client_version != "1.0":
        return _FRAMINGS["chunked", keep_alive]
    return _FRAMINGS["close", False]  # HTTP/1.0 without a length: the close ends it


# The few possible answers, made once (this runs for every response).
_FRAMINGS = {
    (mode, keep): ResponseFraming(mode, keep)
    for mode in ("none", "length", "chunked", "close")
    for keep in (False, True)
}


_TOKEN_DELETE = bytes(sorted(_TOKEN_CHARS))


def quote_forwarded(value: bytes) -> bytes:
    """RFC 7239 4: a value is a token or a quoted-string."""
    if value and not value.translate(None, _TOKEN_DELETE):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
