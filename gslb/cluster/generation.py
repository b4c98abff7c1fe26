"""A configuration generation: the config text and every zone file, as one immutable value.

The control plane reads a generation once (from files, or from etcd) and hands the same value to
every worker and, in cluster mode, to every node; each loads it through the one loader
(`gslb.dns.node.load_generation`). Zone files are written to a private temporary directory for
that load, so the zone loader stays the only parser of master files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Mark, Reason


@dataclass(frozen=True)
class GenerationSource:
    """What one generation consists of. `config_path` is where the config was read from: its
    relative paths (geoip, state_file) resolve against that directory on every node."""

    config_path: str | None
    config_text: str | None
    zones: tuple[tuple[str, str], ...]  # (file name, text), sorted by name
    number: int = 0  # 0: read from local files; N: the Nth generation published to etcd
    published_at: float = 0.0
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", content_digest(self))

    @property
    def label(self) -> str:
        """How status pages and logs name this generation."""
        return f"{self.number}/{self.digest}" if self.number else f"local/{self.digest}"

    def numbered(self, number: int, published_at: float) -> GenerationSource:
        return replace(self, number=number, published_at=published_at)

    def to_json(self) -> str:
        return json.dumps(
            {
                "number": self.number,
                "published_at": self.published_at,
                "config_path": self.config_path,
                "config_text": self.config_text,
                "zones": dict(self.zones),
                "digest": self.digest,
            },
            sort_keys=True,
        )


def content_digest(source: GenerationSource) -> str:
    digest = hashlib.sha256()
    digest.update((source.config_text or "").encode())
    for name, text in source.zones:
        digest.update(b"\0" + name.encode() + b"\0" + text.encode())
    return digest.hexdigest()[:12]


def source_from_json(text: str, where: str = "generation") -> GenerationSource:
    """Parse what to_json wrote; a malformed value raises ConfigError naming `where`."""
    try:
        raw = json.loads(text)
        zones = raw["zones"]
        if not isinstance(zones, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in zones.items()
        ):
            raise ValueError("zones must map file names to text")
        config_text = raw.get("config_text")
        if config_text is not None and not isinstance(config_text, str):
            raise ValueError("config_text must be text")
        source = GenerationSource(
            config_path=raw.get("config_path"),
            config_text=config_text,
            zones=tuple(sorted(zones.items())),
            number=int(raw.get("number", 0)),
            published_at=float(raw.get("published_at", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError([Reason(Mark(where, 0), "", f"malformed generation: {exc}")]) from None
    stored = raw.get("digest")
    if stored and stored != source.digest:
        raise ConfigError([Reason(Mark(where, 0), "", "generation digest does not match")])
    return source


def read_source(
    config_path: str | None, zones_dir: str | None, absolute: bool = False
) -> GenerationSource:
    """Read the config file and every DIR/*.zone once. Missing files are ConfigErrors.

    absolute: record the config's absolute path (a published generation is loaded elsewhere)."""
    reasons: list[Reason] = []
    config_text = None
    if config_path:
        try:
            config_text = Path(config_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reasons.append(Reason(Mark(config_path, 0), "", f"cannot read: {exc}"))
    zones: list[tuple[str, str]] = []
    directory = Path(zones_dir) if zones_dir is not None else None
    if directory is None:
        pass  # zones come from elsewhere (an octoDNS config)
    elif not directory.is_dir():
        reasons.append(Reason(Mark(str(directory), 0), "", "zone directory does not exist"))
    else:
        for path in sorted(directory.glob("*.zone")):
            try:
                zones.append((path.name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                reasons.append(Reason(Mark(str(path), 0), "", f"cannot read: {exc}"))
    if reasons:
        raise ConfigError(reasons)
    recorded = str(Path(config_path).resolve()) if config_path and absolute else config_path
    return GenerationSource(recorded, config_text, tuple(zones))


@contextlib.contextmanager
def zones_directory(source: GenerationSource, original: str | None = None) -> Iterator[str]:
    """A directory holding the generation's zone files, for the zone loader.

    With `original` (the directory the files were read from) that directory is used as is when
    its files still hold the same text, so error messages name the operator's own files.
    """
    if original is not None and _same_files(original, source):
        yield original
        return
    with tempfile.TemporaryDirectory(prefix="gslb-gen-") as directory:
        for name, text in source.zones:
            if "/" in name or name.startswith("."):
                raise ConfigError([Reason(Mark(name, 0), "", "zone file name is not plain")])
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                f.write(text)
        yield directory


def _same_files(directory: str, source: GenerationSource) -> bool:
    try:
        names = sorted(p.name for p in Path(directory).glob("*.zone"))
        if names != [name for name, _ in source.zones]:
            return False
        return all(
            (Path(directory) / name).read_text(encoding="utf-8") == text
            for name, text in source.zones
        )
    except (OSError, UnicodeDecodeError):
        return False


def relabel(exc: ConfigError, directory: str, label: str) -> ConfigError:
    """Errors found in a temporary zone directory name the generation instead."""
    reasons = []
    for reason in exc.reasons:
        mark = reason.mark
        if mark is not None and mark.file.startswith(directory):
            mark = Mark(label + mark.file[len(directory) :], mark.line, mark.column)
        reasons.append(Reason(mark, reason.key, reason.message))
    return ConfigError(reasons)


def now() -> float:
    return time.time()


def describe(source: GenerationSource) -> dict[str, Any]:
    """The /status view of a generation."""
    return {
        "number": source.number,
        "digest": source.digest,
        "label": source.label,
        "published_at": source.published_at or None,
        "zones": [name for name, _ in source.zones],
    }
