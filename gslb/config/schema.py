"""The one schema framework: every config section is a frozen dataclass whose fields declare
their kind (duration, size, host:port, CIDR, enum, range, list, nested map ...).

    @dataclass(frozen=True)
    class RrlSettings:
        rate: int = setting(200, Int(0, 1_000_000))
        window: float = setting(15.0, Duration(1, 3600))

    settings, reasons = parse_section(RrlSettings, raw, "rrl")

Parsing never raises: it collects every Reason (file:line:column, dotted key, message) and
returns a usable value (the default where a field was wrong), so one run of `gslb check` shows
everything. Messages have one shape: "<file>:<line>:<col>: <key>: <what is wrong>". Unknown keys
get a "did you mean"; keys that were renamed say the new spelling. Adding a section, or a field,
is a declaration; nothing else has to change.

A section class may also say:
- `required(kind)`: the key must be given (`placeholder=` lets it follow defaulted fields);
- a plain dataclass field (no `setting`): not read from YAML, filled by a check or the owner;
- `__renamed__ = {"old": "new"}`: old spellings get "renamed: write new instead";
- `__checks__ = (fn, ...)`: cross-field checks, fn(value, report, at, raw) -> new value, None
  (keep) or INVALID; they run even when a required key was missing, so one pass says it all;
- `__all_or_nothing__ = True`: any problem inside makes the whole value INVALID (a service
  must not half-work).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast, overload

from ..errors import ConfigError, Mark, Reason
from .yaml_loader import mark_of

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_KIND = "gslb.schema.kind"
_RENAMED = "__renamed__"  # class attribute: {old key: new key}
_CHECKS = "__checks__"  # class attribute: cross-field checks, (value, Report, At, raw) -> ...
_ALL_OR_NOTHING = "__all_or_nothing__"  # class attribute: any problem inside -> INVALID


class Invalid:
    """Returned by a kind when the value was wrong (the reason is already reported)."""

    _instance: Invalid | None = None

    def __new__(cls) -> Invalid:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INVALID"


INVALID = Invalid()


@dataclass(frozen=True)
class At:
    """Where a value was written: its mark and its dotted key path."""

    mark: Mark | None
    path: str
    base: Path | None = None  # directory relative paths resolve against
    name: str = ""  # the mapping key this value was written under

    def child(self, container: object, key: str | int) -> At:
        mark = mark_of(container, key) or self.mark
        if isinstance(key, int):
            return At(mark, f"{self.path}[{key}]", self.base, self.name)
        if "." in key or not self.path:
            path = f"{self.path}[{key}]" if self.path else key
        else:
            path = f"{self.path}.{key}"
        return At(mark, path, self.base, key)


class Report:
    """Collects reasons; one per problem, in file order at the end."""

    def __init__(self, file: str = "<string>") -> None:
        self.file = file
        self.reasons: list[Reason] = []

    def error(self, at: At, message: str) -> Invalid:
        self.reasons.append(Reason(at.mark or Mark(self.file, 0), at.path, message))
        return INVALID

    def extend(self, reasons: Sequence[Reason]) -> None:
        self.reasons.extend(reasons)

    def sorted(self) -> list[Reason]:
        def order(r: Reason) -> tuple[str, int, int]:
            m = r.mark
            return (m.file, m.line, m.column) if m else ("", 0, 0)

        return sorted(self.reasons, key=order)

    def raise_if_any(self) -> None:
        if self.reasons:
            raise ConfigError(self.sorted())


def type_name(x: object) -> str:
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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# -- kinds ----------------------------------------------------------------------------------------


class Kind(Generic[T]):
    """Turns one raw YAML value into a typed value, or reports why it cannot."""

    description = "a value"
    # In a list, problems with a scalar item are reported under the list's key (at the item's
    # line); a mapping item gets its index, so its keys read agents[0].url.
    indexed = False

    def parse(self, raw: object, at: At, report: Report) -> T | Invalid:
        raise NotImplementedError


class Str(Kind[str]):
    def __init__(self, *, empty: bool = False, pattern: str | None = None, hint: str = "") -> None:
        self.empty = empty
        self.pattern = re.compile(pattern) if pattern else None
        self.hint = hint
        self.description = "a string"

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        if not isinstance(raw, str):
            return report.error(at, f"must be a string, not {type_name(raw)} {raw!r}")
        if not self.empty and not raw.strip():
            return report.error(at, "must not be empty")
        if self.pattern is not None and not self.pattern.match(raw):
            return report.error(at, self.hint or f"does not match {self.pattern.pattern}")
        return raw


class Int(Kind[int]):
    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.description = "an integer"

    def parse(self, raw: object, at: At, report: Report) -> int | Invalid:
        if isinstance(raw, bool) or not isinstance(raw, int):
            return report.error(at, f"must be an integer, not {type_name(raw)} {raw!r}")
        return _range(raw, self.lo, self.hi, at, report)


class Float(Kind[float]):
    def __init__(self, lo: float | None = None, hi: float | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.description = "a number"

    def parse(self, raw: object, at: At, report: Report) -> float | Invalid:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            return report.error(at, f"must be a number, not {type_name(raw)} {raw!r}")
        checked = _range(raw, self.lo, self.hi, at, report)
        return checked if isinstance(checked, Invalid) else float(checked)


N = TypeVar("N", int, float)


def _range(value: N, lo: float | None, hi: float | None, at: At, report: Report) -> N | Invalid:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            return report.error(at, f"must be between {_num(lo)} and {_num(hi)}, not {value!r}")
        if lo is not None:
            return report.error(at, f"must be at least {_num(lo)}, not {value!r}")
        return report.error(at, f"must be at most {_num(hi or 0)}, not {value!r}")
    return value


class Bool(Kind[bool]):
    description = "true or false"

    def parse(self, raw: object, at: At, report: Report) -> bool | Invalid:
        if not isinstance(raw, bool):
            return report.error(at, f"must be true or false, not {type_name(raw)} {raw!r}")
        return raw


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class Duration(Kind[float]):
    """Seconds: a number, or text like 250ms, 10s, 5m, 1h, 1d."""

    def __init__(self, lo: float | None = None, hi: float | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.description = "a duration (seconds, or 250ms/10s/5m/1h)"

    def parse(self, raw: object, at: At, report: Report) -> float | Invalid:
        seconds: float
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            seconds = float(raw)
        elif isinstance(raw, str) and (m := _DURATION.match(raw)):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            return report.error(at, f"must be {self.description}, not {raw!r}")
        checked = _range(seconds, self.lo, self.hi, at, report)
        return checked if isinstance(checked, Invalid) else float(checked)


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class Size(Kind[int]):
    """Bytes: an integer, or text like 64k, 1m, 2g (powers of 1024)."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.description = "a size (bytes, or 64k/1m/1g)"

    def parse(self, raw: object, at: At, report: Report) -> int | Invalid:
        if isinstance(raw, int) and not isinstance(raw, bool):
            size = raw
        elif isinstance(raw, str) and (m := _SIZE.match(raw)):
            unit = (m.group(2) or "").lower()[:1]
            size = int(m.group(1)) * _SIZE_UNITS[unit]
        else:
            return report.error(at, f"must be {self.description}, not {raw!r}")
        return _range(size, self.lo, self.hi, at, report)


class Enum(Kind[str]):
    """One of the choices; `fold` accepts any case (and returns the choice as declared)."""

    def __init__(self, *choices: str, fold: bool = False) -> None:
        self.choices = choices
        self.fold = fold
        self.description = "one of " + ", ".join(choices)

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        if self.fold and isinstance(raw, str) and raw.lower() in self.choices:
            return raw.lower()
        if not isinstance(raw, str) or raw not in self.choices:
            hint = _did_you_mean(str(raw), self.choices)
            return report.error(at, f"must be one of {', '.join(self.choices)}, not {raw!r}{hint}")
        return raw


@dataclass(frozen=True)
class HostPort:
    """A parsed HOST:PORT; IPv6 literals are written in brackets ([::1]:53)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, default_port: int | None = None) -> HostPort | None:
    """The one HOST:PORT parser. '127.0.0.1:53', '[::1]:53', 'name:80'; a bare host takes
    default_port when one is given. None when malformed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            return None
        if not rest and default_port is not None:
            port_text = str(default_port)
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            return None
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            if default_port is None:
                return None
            host, port_text = text, str(default_port)
        if ":" in host:  # an IPv6 literal without brackets is ambiguous
            return None
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return None
    return HostPort(host, int(port_text))


class HostPortKind(Kind[HostPort]):
    def __init__(self, default_port: int | None = None) -> None:
        self.default_port = default_port
        self.description = "HOST:PORT (IPv6 in brackets: [::1]:53)"

    def parse(self, raw: object, at: At, report: Report) -> HostPort | Invalid:
        parsed = parse_hostport(raw, self.default_port) if isinstance(raw, str) else None
        if parsed is None:
            return report.error(at, f"must be {self.description}, not {raw!r}")
        return parsed


class Cidr(Kind[Network]):
    """A network; a plain address means its host network (/32, /128)."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.description = "a network (CIDR)"

    def parse(self, raw: object, at: At, report: Report) -> Network | Invalid:
        if not isinstance(raw, str):
            return report.error(at, f"must be a network (CIDR), not {type_name(raw)} {raw!r}")
        try:
            return ipaddress.ip_network(raw.strip(), strict=self.strict)
        except ValueError as exc:
            return report.error(at, f"not a network: {raw!r} ({exc})")


class IpAddress(Kind[str]):
    """An IP address, normalised to its compressed text."""

    def __init__(self, version: int | None = None) -> None:
        self.version = version
        self.description = f"an IPv{version} address" if version else "an IP address"

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        try:
            ip = ipaddress.ip_address(str(raw).strip()) if isinstance(raw, str) else None
        except ValueError:
            ip = None
        if ip is None:
            return report.error(at, f"not an IP address: {raw!r}")
        if self.version is not None and ip.version != self.version:
            return report.error(at, f"{raw} is not an IPv{self.version} address")
        return str(ip)


class Regex(Kind[str]):
    description = "a regular expression"

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        if not isinstance(raw, str):
            return report.error(at, f"must be a string, not {type_name(raw)} {raw!r}")
        try:
            re.compile(raw)
        except re.error as exc:
            return report.error(at, f"not a valid regular expression: {exc}")
        return raw


class FilePath(Kind[str]):
    """A path; relative paths resolve against the directory of the config file."""

    def __init__(self, must_exist: bool = False) -> None:
        self.must_exist = must_exist
        self.description = "a file path"

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        if not isinstance(raw, str) or not raw.strip():
            return report.error(at, f"must be a file path, not {type_name(raw)} {raw!r}")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (at.base or Path.cwd()) / path
        if self.must_exist and not path.is_file():
            return report.error(at, f"file not found: {path}")
        return str(path)


class Optional(Kind[T | None]):
    """`null` is allowed and means None."""

    def __init__(self, inner: Kind[T]) -> None:
        self.inner = inner
        self.description = f"{inner.description} or null"

    def parse(self, raw: object, at: At, report: Report) -> T | None | Invalid:
        if raw is None:
            return None
        return self.inner.parse(raw, at, report)


class ListOf(Kind[tuple[T, ...]]):
    """A list; `single` accepts one bare item as a one-item list; `unique` rejects repeats."""

    def __init__(
        self, item: Kind[T], *, min_len: int = 0, single: bool = True, unique: bool = False
    ) -> None:
        self.item = item
        self.min_len = min_len
        self.single = single
        self.unique = unique
        self.description = f"a list of {item.description}"

    def parse(self, raw: object, at: At, report: Report) -> tuple[T, ...] | Invalid:
        if not isinstance(raw, list):
            if self.single and raw is not None and not isinstance(raw, dict):
                single = self.item.parse(raw, at, report)
                return INVALID if isinstance(single, Invalid) else (single,)
            return report.error(at, f"must be a list, not {type_name(raw)}")
        if len(raw) < self.min_len:
            return report.error(
                at, "must not be empty" if self.min_len == 1 else f"needs {self.min_len}+ items"
            )
        out: list[T] = []
        bad = False
        for i, item in enumerate(raw):
            if self.item.indexed:
                child = at.child(raw, i)
            else:
                child = At(mark_of(raw, i) or at.mark, at.path, at.base, at.name)
            value = self.item.parse(item, child, report)
            if isinstance(value, Invalid):
                bad = True
            elif self.unique and value in out:
                report.error(child, f"duplicate {value}")
                bad = True
            else:
                out.append(value)
        return INVALID if bad and not out else tuple(out)


class MapOf(Kind[Mapping[str, T]]):
    """A mapping of names to values of one kind (datacenters, pools, headers ...)."""

    def __init__(self, value: Kind[T], *, key: Kind[str] | None = None, min_len: int = 0) -> None:
        self.value = value
        self.key = key
        self.min_len = min_len
        self.description = f"a mapping of {value.description}"

    def parse(self, raw: object, at: At, report: Report) -> Mapping[str, T] | Invalid:
        if not isinstance(raw, dict):
            return report.error(at, f"must be a mapping, not {type_name(raw)}")
        if len(raw) < self.min_len:
            return report.error(at, "must not be empty")
        out: dict[str, T] = {}
        for name, body in raw.items():
            child = at.child(raw, name)
            if self.key is not None and isinstance(self.key.parse(name, child, report), Invalid):
                continue
            value = self.value.parse(body, child, report)
            if not isinstance(value, Invalid):
                out[name] = value
        return MappingProxyType(out)


class Scalar(Kind[str]):
    """A string, number or boolean written as text (header values, tags)."""

    description = "a string"

    def parse(self, raw: object, at: At, report: Report) -> str | Invalid:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            return report.error(at, f"must be a string, not {type_name(raw)}")
        return str(raw)


class Custom(Kind[T]):
    """A kind from a function: (raw, at, report) -> value or INVALID (for one-off shapes)."""

    def __init__(
        self, fn: Callable[[object, At, Report], T | Invalid], description: str = "a value"
    ) -> None:
        self.fn = fn
        self.description = description

    def parse(self, raw: object, at: At, report: Report) -> T | Invalid:
        return self.fn(raw, at, report)


class Section(Kind[S]):
    """A nested mapping declared by a frozen dataclass (see `setting`)."""

    indexed = True

    def __init__(self, cls: type[S], *, name_field: str | None = None) -> None:
        self.cls = cls
        self.name_field = name_field  # a field filled from the mapping key (MapOf entries)
        self.description = "a mapping"

    def parse(self, raw: object, at: At, report: Report) -> S | Invalid:
        return parse_into(self.cls, raw, at, report, name_field=self.name_field)


# -- declarations ---------------------------------------------------------------------------------


def setting(default: T, kind: Kind[Any], *, key: str | None = None) -> T:
    """A dataclass field read from the YAML key of the same name (or `key`)."""
    metadata = {_KIND: (kind, key, False)}
    try:
        hash(default)
    except TypeError:  # an immutable mapping view: dataclasses wants a factory
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@overload
def required(kind: Kind[T], *, key: str | None = None) -> T: ...


@overload
def required(kind: Kind[Any], *, key: str | None = None, placeholder: T) -> T: ...


def required(
    kind: Kind[Any], *, key: str | None = None, placeholder: Any = dataclasses.MISSING
) -> Any:
    """A dataclass field the YAML must give. `placeholder` is only the Python default (so a
    required field may follow defaulted ones in the class, and cross-field checks can run when
    the key is missing); the key is still required."""
    return dataclasses.field(default=placeholder, metadata={_KIND: (kind, key, True)})


def section_keys(cls: type[object]) -> list[str]:
    """The YAML keys a section accepts, in declaration order."""
    out = []
    for f in dataclasses.fields(cast(Any, cls)):
        spec = f.metadata.get(_KIND)
        if spec is not None:
            out.append(spec[1] or f.name)
    return out


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def parse_into(
    cls: type[S],
    raw: object,
    at: At,
    report: Report,
    *,
    name_field: str | None = None,
) -> S | Invalid:
    """Read a mapping into the dataclass `cls`; every problem goes to `report`."""
    if raw is None and name_field is None and not _has_required(cls):
        raw = {}
    if not isinstance(raw, dict):
        return report.error(at, f"must be a mapping, not {type_name(raw)}")
    before = len(report.reasons)
    specs: dict[str, tuple[str, Kind[Any], bool]] = {}
    for f in dataclasses.fields(cast(Any, cls)):
        spec = f.metadata.get(_KIND)
        if spec is not None:
            kind, key, is_required = spec
            specs[key or f.name] = (f.name, kind, is_required)
    renamed: Mapping[str, str] = getattr(cls, _RENAMED, {})
    for key in raw:
        if key in specs:
            continue
        where = at.child(raw, key)
        if key in renamed:
            report.error(where, f"renamed: write {renamed[key]} instead")
        else:
            hint = _did_you_mean(key, list(specs))
            report.error(where, f"unknown key (expected one of: {', '.join(specs)}){hint}")
    values: dict[str, Any] = {}
    bad = False  # a required key is missing or wrong: the value is INVALID in the end
    placeholders = _placeholders(cls)
    for key, (fname, kind, is_required) in specs.items():
        if key not in raw:
            if is_required:
                report.error(at.child(raw, key), "required key is missing")
                bad = True
            continue
        value = kind.parse(raw[key], at.child(raw, key), report)
        if isinstance(value, Invalid):
            bad = bad or is_required
            continue
        values[fname] = value
    if bad and not all(
        fname in values or fname in placeholders
        for fname, _, is_required in specs.values()
        if is_required
    ):
        return INVALID  # cannot even build it to run the checks
    if name_field is not None:
        values[name_field] = at.name
    if "mark" in {f.name for f in dataclasses.fields(cast(Any, cls))}:
        values["mark"] = at.mark
    try:
        result = cls(**values)
    except TypeError as exc:  # a required derived field: the declaration is wrong
        raise AssertionError(f"{cls.__name__}: {exc}") from None
    # Cross-field checks run even when a required key was missing (with its placeholder), so
    # one pass reports everything.
    checks: Sequence[Callable[[Any, Report, At, Any], Any]] = getattr(cls, _CHECKS, ())
    for check in checks:
        fixed = check(result, report, at, raw)
        if isinstance(fixed, Invalid):
            return INVALID
        if fixed is not None:
            result = fixed
    if bad or (getattr(cls, _ALL_OR_NOTHING, False) and len(report.reasons) > before):
        return INVALID
    return result


def _placeholders(cls: type[object]) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(cast(Any, cls))
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


def _has_required(cls: type[object]) -> bool:
    return any(
        f.metadata.get(_KIND, (None, None, False))[2] for f in dataclasses.fields(cast(Any, cls))
    )


def parse_section(
    cls: type[S], raw: object, name: str, base: Path | None = None
) -> tuple[S, list[Reason]]:
    """A top-level section: (value, reasons). Missing or broken: the defaults, plus reasons."""
    report = Report()
    at = At(mark_of(raw), name, base)
    if raw is None:
        raw = {}
    value = parse_into(cls, raw, at, report)
    if isinstance(value, Invalid):
        value = cls()
    return value, report.sorted()
