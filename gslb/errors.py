"""One exception tree for gslb.

ConfigError carries every reason found, each pointing at file:line:column, so an operator
fixes a bad file in one pass instead of one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass


class GslbError(Exception):
    """Base of every error gslb raises on purpose."""


@dataclass(frozen=True)
class Mark:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    column: int = 0

    def __str__(self) -> str:
        if self.column:
            return f"{self.file}:{self.line}:{self.column}"
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Reason:
    """One problem: where it is, which key, and what is wrong."""

    mark: Mark | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.mark}: " if self.mark else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ConfigError(GslbError):
    """A configuration or zone file is invalid; holds every reason at once."""

    def __init__(self, reasons: list[Reason] | Reason | str) -> None:
        if isinstance(reasons, str):
            reasons = [Reason(None, "", reasons)]
        elif isinstance(reasons, Reason):
            reasons = [reasons]
        self.reasons: list[Reason] = list(reasons)
        super().__init__("\n".join(str(r) for r in self.reasons))


class ZoneError(ConfigError):
    """A zone file failed to load."""
