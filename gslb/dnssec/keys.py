"""DNSSEC keys in BIND's file format, and the state of each key at a given time.

A key is two files, as `dnssec-keygen` writes them: `K<zone>.+<alg>+<tag>.key` (the DNSKEY
record, with timing comments) and `K<zone>.+<alg>+<tag>.private` (Private-key-format v1.3, the
private key and the timing metadata). The timing fields (Publish, Activate, Inactive, Delete)
are what a rollover changes; a key's state at time t follows from them alone, so keys made or
edited by BIND's tools (`dnssec-keygen`, `dnssec-settime`) behave the same here.
"""

from __future__ import annotations

import base64
import calendar
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..errors import ConfigError, Mark, Reason

ECDSAP256SHA256 = 13
ED25519 = 15
ALGORITHMS = {ECDSAP256SHA256: "ECDSAP256SHA256", ED25519: "ED25519"}
ALGORITHM_NAMES = {
    "ecdsap256sha256": ECDSAP256SHA256,
    "ecdsa": ECDSAP256SHA256,
    "13": 13,
    "ed25519": ED25519,
    "15": ED25519,
}
ZONE_FLAG = 256
SEP_FLAG = 1
TIMING_FIELDS = ("Created", "Publish", "Activate", "Inactive", "Delete")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyState(Enum):
    """Where a key is in its life, derived from its timing metadata and the time."""

    CREATED = "created"  # not yet published
    PUBLISHED = "published"  # in the DNSKEY RRset, not signing yet (pre-publication)
    ACTIVE = "active"  # published and signing
    RETIRED = "retired"  # still published (caches may hold its signatures), no longer signing
    REMOVED = "removed"  # past its Delete time: neither published nor signing

    @property
    def published(self) -> bool:
        return self in (KeyState.PUBLISHED, KeyState.ACTIVE, KeyState.RETIRED)


@dataclass(frozen=True)
class DnssecKey:
    """One key pair of one zone. The private key never appears in repr() or logs."""

    zone: dns.name.Name
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    private_key: PrivateKey = field(repr=False, compare=False)
    path: str = ""  # the .private file, for messages
    # Unix times from the metadata; None when the field is absent (BIND: in effect since ever).
    timing: dict[str, int | None] = field(default_factory=dict, compare=False)

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def algorithm(self) -> int:
        return int(self.dnskey.algorithm)

    @property
    def sep(self) -> bool:
        """The secure entry point flag: a KSK or a CSK (the key the parent's DS points at)."""
        return bool(self.dnskey.flags & SEP_FLAG)

    @property
    def role(self) -> str:
        return "ksk" if self.sep else "zsk"

    @property
    def basename(self) -> str:
        return key_basename(self.zone, self.algorithm, self.tag)

    def state(self, now: float) -> KeyState:
        """The state at `now` (Unix time); missing fields count as already passed."""
        delete = self.timing.get("Delete")
        if delete is not None and now >= delete:
            return KeyState.REMOVED
        inactive = self.timing.get("Inactive")
        if inactive is not None and now >= inactive:
            return KeyState.RETIRED
        publish = self.timing.get("Publish")
        activate = self.timing.get("Activate")
        if activate is None or now >= activate:
            if publish is None or now >= publish:
                return KeyState.ACTIVE
            return KeyState.CREATED  # active before published makes no sense: wait for Publish
        if publish is None or now >= publish:
            return KeyState.PUBLISHED
        return KeyState.CREATED

    def next_change(self, now: float) -> float | None:
        """The next timing event after `now`, if any (when the published key set changes)."""
        future = [t for t in self.timing.values() if t is not None and t > now]
        return float(min(future)) if future else None

    def with_timing(self, **changes: int | None) -> DnssecKey:
        timing = dict(self.timing)
        timing.update(changes)
        return replace(self, timing=timing)


def sign_bytes(key: DnssecKey, data: bytes) -> bytes:
    """The DNSSEC signature of `data`: ECDSA as r || s (RFC 6605), Ed25519 raw (RFC 8080)."""
    private = key.private_key
    if isinstance(private, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return private.sign(data)


def key_basename(zone: dns.name.Name, algorithm: int, tag: int) -> str:
    """BIND's file name stem: K<zone>.+<alg>+<tag> (zone in lowercase, with trailing dot)."""
    return f"K{zone.to_text().lower()}+{algorithm:03d}+{tag:05d}"


# -- generation --------------------------------------------------------------------------------


def generate_key(
    zone: dns.name.Name | str,
    algorithm: int = ECDSAP256SHA256,
    sep: bool = True,
    now: float | None = None,
    publish: int | None = None,
    activate: int | None = None,
) -> DnssecKey:
    """A fresh key pair; by default a CSK (SEP flag set) published and active from `now`."""
    if isinstance(zone, str):
        zone = dns.name.from_text(zone)
    private: PrivateKey
    if algorithm == ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {algorithm}; use 13 (ECDSAP256SHA256) or 15")
    flags = ZONE_FLAG | (SEP_FLAG if sep else 0)
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=flags)
    created = int(now if now is not None else time.time())
    timing: dict[str, int | None] = {
        "Created": created,
        "Publish": created if publish is None else publish,
        "Activate": created if activate is None else activate,
    }
    return DnssecKey(zone, dnskey, private, timing=timing)


# -- BIND file format --------------------------------------------------------------------------


def format_time(value: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(value))


def parse_time(text: str) -> int:
    """BIND's YYYYMMDDHHMMSS (UTC) -> Unix time."""
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"not a YYYYMMDDHHMMSS time: {text!r}")
    return calendar.timegm(time.strptime(text, "%Y%m%d%H%M%S"))


def _private_bytes(key: PrivateKey) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(32, "big")
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def render_public(key: DnssecKey) -> str:
    kind = "key-signing" if key.sep else "zone-signing"
    lines = [f"; This is a {kind} key, keyid {key.tag}, for {key.zone.to_text()}"]
    for name in TIMING_FIELDS:
        value = key.timing.get(name)
        if value is not None:
            lines.append(f"; {name}: {format_time(value)} ({time.asctime(time.gmtime(value))})")
    lines.append(f"{key.zone.to_text()} IN DNSKEY {key.dnskey.to_text()}")
    return "\n".join(lines) + "\n"


def render_private(key: DnssecKey) -> str:
    secret = base64.b64encode(_private_bytes(key.private_key)).decode()
    lines = [
        "Private-key-format: v1.3",
        f"Algorithm: {key.algorithm} ({ALGORITHMS[key.algorithm]})",
        f"PrivateKey: {secret}",
    ]
    for name in TIMING_FIELDS:
        value = key.timing.get(name)
        if value is not None:
            lines.append(f"{name}: {format_time(value)}")
    return "\n".join(lines) + "\n"


def write_key(key: DnssecKey, directory: str | Path) -> tuple[Path, Path]:
    """Write the .key and .private files; the private file is created 0600 from the start."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{key.basename}.key"
    private_path = directory / f"{key.basename}.private"
    _write(private_path, render_private(key), 0o600)
    _write(public_path, render_public(key), 0o644)
    return public_path, private_path


def _write(path: Path, text: str, mode: int) -> None:
    """Write through a temporary file and rename, so a reader never sees half a key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_key(private_path: str | Path) -> DnssecKey:
    """Read one key from its .private file and the .key file beside it."""
    private_path = Path(private_path)
    public_path = private_path.with_suffix(".key")
    reasons: list[Reason] = []
    _check_permissions(private_path, reasons)
    if reasons:
        raise ConfigError(reasons)
    fields_, lines = _read_private(private_path)
    try:
        public_text = public_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            Reason(Mark(str(public_path), 0), "", f"cannot read: {exc.strerror}")
        ) from None
    zone, dnskey, public_line = _parse_public(public_path, public_text)
    algorithm_text = fields_.get("Algorithm", "").split(" ")[0]
    where = Mark(str(private_path), lines.get("Algorithm", 0))
    if not algorithm_text.isdigit() or int(algorithm_text) != int(dnskey.algorithm):
        raise ConfigError(Reason(where, "Algorithm", "does not match the DNSKEY in the .key file"))
    algorithm = int(algorithm_text)
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            Reason(where, "Algorithm", f"unsupported algorithm {algorithm}; use 13 or 15")
        )
    where = Mark(str(private_path), lines.get("PrivateKey", 0))
    try:
        secret = base64.b64decode(fields_.get("PrivateKey", ""), validate=True)
        private = _load_private(algorithm, secret)
    except ValueError:
        raise ConfigError(Reason(where, "PrivateKey", "not a valid private key")) from None
    expected = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=dnskey.flags)
    if expected.key != dnskey.key:
        raise ConfigError(
            Reason(
                Mark(str(public_path), public_line),
                "DNSKEY",
                f"does not belong to the private key in {private_path.name}",
            )
        )
    timing: dict[str, int | None] = {}
    for name in TIMING_FIELDS:
        if name in fields_:
            try:
                timing[name] = parse_time(fields_[name])
            except ValueError as exc:
                raise ConfigError(
                    Reason(Mark(str(private_path), lines[name]), name, str(exc))
                ) from None
    return DnssecKey(zone, dnskey, private, str(private_path), timing)


def _check_permissions(path: Path, reasons: list[Reason]) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        reasons.append(Reason(Mark(str(path), 0), "", f"cannot read: {exc.strerror}"))
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        reasons.append(
            Reason(
                Mark(str(path), 0),
                "",
                f"private key is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                f" run: chmod 600 {path}",
            )
        )


def _read_private(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(Reason(Mark(str(path), 0), "", f"cannot read: {detail}")) from None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            # Never echo the line: it could be key material.
            raise ConfigError(Reason(Mark(str(path), number), "", "expected `Field: value`"))
        values[name.strip()] = value.strip()
        lines[name.strip()] = number
    if not values.get("Private-key-format", "").startswith("v1."):
        raise ConfigError(
            Reason(Mark(str(path), 1), "Private-key-format", "expected v1.2 or v1.3 (BIND)")
        )
    return values, lines


def _parse_public(
    path: Path, text: str
) -> tuple[dns.name.Name, dns.rdtypes.ANY.DNSKEY.DNSKEY, int]:
    for number, line in enumerate(text.splitlines(), 1):
        body = line.split(";", 1)[0].strip()
        if not body:
            continue
        tokens = body.split()
        try:
            owner = dns.name.from_text(tokens[0])
            rest = tokens[1:]
            if rest and rest[0].isdigit():
                rest = rest[1:]  # an explicit TTL
            if rest and rest[0].upper() == "IN":
                rest = rest[1:]
            if not rest or rest[0].upper() != "DNSKEY":
                raise ValueError("not a DNSKEY record")
            rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, " ".join(rest[1:]))
        except Exception as exc:  # dnspython raises several types for bad text
            raise ConfigError(Reason(Mark(str(path), number), "DNSKEY", str(exc))) from None
        assert isinstance(rdata, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        if not rdata.flags & ZONE_FLAG:
            raise ConfigError(
                Reason(Mark(str(path), number), "DNSKEY", "not a zone key (flags lack 256)")
            )
        return owner, rdata, number
    raise ConfigError(Reason(Mark(str(path), 0), "DNSKEY", "no DNSKEY record in the file"))


def _load_private(algorithm: int, secret: bytes) -> PrivateKey:
    if algorithm == ECDSAP256SHA256:
        if len(secret) != 32:
            raise ValueError("ECDSA P-256 private key must be 32 bytes")
        return ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
    if len(secret) != 32:
        raise ValueError("Ed25519 private key must be 32 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(secret)


def load_key_dir(directory: str | Path) -> dict[dns.name.Name, list[DnssecKey]]:
    """Every key in DIR, by zone; every problem is reported at once."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(Reason(Mark(str(directory), 0), "", "key directory does not exist"))
    keys: dict[dns.name.Name, list[DnssecKey]] = {}
    reasons: list[Reason] = []
    for path in sorted(directory.glob("K*.private")):
        try:
            key = read_key(path)
        except ConfigError as exc:
            reasons.extend(exc.reasons)
            continue
        keys.setdefault(key.zone, []).append(key)
    if reasons:
        raise ConfigError(reasons)
    return keys


def zone_keys(directory: str | Path, zone: dns.name.Name | str) -> list[DnssecKey]:
    if isinstance(zone, str):
        zone = dns.name.from_text(zone)
    return load_key_dir(directory).get(zone, [])


def entry_keys(keys: Iterable[DnssecKey], now: float) -> list[DnssecKey]:
    """The keys the parent's DS should point at: the published SEP keys, or, in a zone whose
    keys all lack the SEP flag (`dnssec-keygen` without `-f KSK`), every published key (they
    sign the DNSKEY RRset then, see signer.py)."""
    published = [k for k in keys if k.state(now).published]
    return [k for k in published if k.sep] or published


def ds_records(keys: Iterable[DnssecKey], now: float, digest: str = "SHA256") -> list[Any]:
    """DS rdata for the zone's entry keys (what the parent should hold)."""
    return [dns.dnssec.make_ds(k.zone, k.dnskey, digest) for k in entry_keys(keys, now)]
