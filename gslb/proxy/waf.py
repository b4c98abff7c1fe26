"""A small WAF rule set: path traversal, SQL injection and XSS signatures.

Not a replacement for a real WAF; it catches the obvious probes scanners send. Each rule has an
id that is logged when it blocks a request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class Rule:
    id: str
    pattern: re.Pattern[str]


# Event handler attributes browsers run; a closed list, so "?one=1" is no false positive.
_HANDLERS = (
    r"error|load|unload|beforeunload|click|dblclick|auxclick|contextmenu|mouse\w+|pointer\w+"
    r"|focus\w*|blur|toggle|key\w+|input|change|submit|reset|select|animation\w+"
    r"|transition\w+|begin|end|repeat|wheel|drag\w*|drop|touch\w+|scroll\w*|resize"
    r"|hashchange|popstate|message|show|start|copy|cut|paste|search|invalid|play\w*|pause"
)

RULES = (
    Rule("traversal-dotdot", re.compile(r"(?:^|[/\\])\.\.(?:;[^/\\]*)?(?:[/\\]|$)")),
    Rule("traversal-sensitive", re.compile(r"/etc/(?:passwd|shadow)|boot\.ini|win\.ini", re.I)),
    Rule(
        "sqli-union",
        re.compile(r"\bunion\b[\s(/*]+(?:(?:all|distinct)[\s(/*]+)?select\b", re.I),
    ),
    Rule(
        "sqli-tautology",
        re.compile(
            r"['\"]\s*(?:or|and)\s*['\"]?\s*\d+\s*['\"]?\s*=\s*['\"]?\s*\d+"
            r"|['\"]\s*(?:or|and)\s+['\"](\w*)['\"]\s*=\s*['\"]\1\b",
            re.I,
        ),
    ),
    Rule("sqli-comment", re.compile(r"['\"]\s*;?\s*(?:--|#|/\*)")),
    Rule("sqli-stacked", re.compile(r";\s*(?:drop|delete|insert|update|shutdown)\b", re.I)),
    Rule("xss-script", re.compile(r"<\s*script\b", re.I)),
    Rule("xss-handler", re.compile(r"\bon(?:" + _HANDLERS + r")\s*=", re.I)),
    # Browsers drop tabs and newlines inside a URL scheme: "java\tscript:" is "javascript:".
    Rule("xss-js-uri", re.compile(r"j\s*a\s*v\s*a\s*s\s*c\s*r\s*i\s*p\s*t\s*:", re.I)),
)


# Header values scanners and injection payloads commonly ride in (logged, echoed or parsed by
# applications). Others (Accept, Authorization...) would only add false positives.
CHECKED_HEADERS = frozenset({"user-agent", "referer", "cookie", "origin", "x-forwarded-host"})


def _decoded(text: str) -> str:
    # Decode twice: double encoding (%252e) is the classic bypass.
    return unquote_plus(unquote_plus(text))


def match(raw_target: str, extra: tuple[str, ...] = ()) -> Rule | None:
    """The first rule that matches the request target (path and query) or an extra value."""
    for text in (raw_target, *extra):
        decoded = _decoded(text)
        for rule in RULES:
            if rule.pattern.search(decoded):
                return rule
    return None


def match_request(raw_target: str, headers: Iterable[tuple[str, str]]) -> tuple[Rule, str] | None:
    """The first rule matching the target or a checked header value, and where it matched
    ("target" or the header name)."""
    rule = match(raw_target)
    if rule is not None:
        return rule, "target"
    for name, value in headers:
        if name.lower() in CHECKED_HEADERS:
            rule = match(value)
            if rule is not None:
                return rule, name
    return None
