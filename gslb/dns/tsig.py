"""TSIG (RFC 8945): keys from config, verifying signed messages and signing responses.

dnspython computes the MACs (`dns.tsig.sign` / `dns.tsig.validate`); this module decides
what a failure means on the wire:

* unknown key name, or a known name with another algorithm: NOTAUTH with an unsigned TSIG
  RR carrying error BADKEY (section 5.2.1);
* wrong MAC: NOTAUTH, unsigned TSIG, error BADSIG (5.2.2);
* MAC shorter than our full digest but still legal: NOTAUTH, signed, BADTRUNC (5.2.2.1);
  a MAC shorter than max(10, half the digest) or longer than the digest is FORMERR;
* time signed outside the fudge: NOTAUTH, signed, BADTIME, with our time as other data and
  the request's time signed echoed (5.2.3); time is checked only after the MAC verified.

Secrets come from a file or an environment variable and are never logged: `TsigKey` keeps
the dnspython key (whose repr prints the secret) out of its own repr.
Pure apart from reading the secret at config load; time comes from an injected Clock.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig
import dns.wire

from ..clock import Clock
from ..config.schema import (
    INVALID,
    At,
    Custom,
    Enum,
    Invalid,
    ListOf,
    Report,
    Section,
    Str,
    required,
    setting,
)
from ..config.yaml_loader import mark_of
from ..errors import Mark, Reason

ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
DIGEST_SIZES = {dns.tsig.HMAC_SHA256: 32, dns.tsig.HMAC_SHA384: 48, dns.tsig.HMAC_SHA512: 64}
FUDGE = 300  # seconds of clock skew accepted, RFC 8945 section 10 recommends 300
REPLY_PAYLOAD = 1232  # our UDP payload size in the OPT of replies built here
MIN_SECRET = 16  # bytes; shorter secrets are refused at config load
NOTAUTH = 9
FORMERR = 1
BADSIG = int(dns.rcode.BADSIG)
BADKEY = int(dns.rcode.BADKEY)
BADTIME = int(dns.rcode.BADTIME)
BADTRUNC = int(dns.rcode.BADTRUNC)
_RR_FIXED = struct.Struct("!HHIH")


class Malformed(Exception):
    """The message cannot be read: answer FORMERR."""


@dataclass(frozen=True)
class TsigKey:
    name: dns.name.Name
    algorithm: dns.name.Name
    key: dns.tsig.Key = field(repr=False, compare=False)  # holds the secret: never printed


class Keyring:
    """Configured keys by name."""

    def __init__(self, keys: Mapping[dns.name.Name, TsigKey] | None = None) -> None:
        self.keys: Mapping[dns.name.Name, TsigKey] = MappingProxyType(dict(keys or {}))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def get(self, name: dns.name.Name | str) -> TsigKey | None:
        if isinstance(name, str):
            name = key_name(name)
        return self.keys.get(name)

    def __repr__(self) -> str:
        return f"Keyring({sorted(str(name) for name in self.keys)})"


def key_name(text: str) -> dns.name.Name:
    """A key name from config: case-insensitive, trailing dot optional."""
    return dns.name.from_text(text.lower())


def make_key(name: str, secret: bytes, algorithm: str = "hmac-sha256") -> TsigKey:
    owner = key_name(name)
    alg = ALGORITHMS[algorithm]
    return TsigKey(owner, alg, dns.tsig.Key(owner, secret, alg))


# -- config -----------------------------------------------------------------------------------


def _dns_name(raw: object, at: At, report: Report) -> dns.name.Name | Invalid:
    try:
        if isinstance(raw, str) and raw.strip():
            return key_name(raw)
    except dns.exception.DNSException:
        pass
    return report.error(at, f"must be a DNS name, not {raw!r}")


def _one_secret_source(value: KeySpec, report: Report, at: At, raw: Any) -> Invalid | None:
    if (value.secret_file is None) == (value.secret_env is None):
        return report.error(at, "needs exactly one of secret_file, secret_env")
    if raw.get("algorithm", "hmac-sha256") not in ALGORITHMS:
        return INVALID  # already reported; no key with another algorithm than the one written
    return None


@dataclass(frozen=True)
class KeySpec:
    """One `tsig_keys:` item. Only where the secret is: never the secret itself."""

    name: dns.name.Name = required(Custom(_dns_name, "a DNS name"), placeholder=dns.name.root)
    algorithm: str = setting("hmac-sha256", Enum(*ALGORITHMS))
    secret_file: str | None = setting(None, Str())
    secret_env: str | None = setting(None, Str())
    mark: Mark | None = field(default=None, compare=False)

    __checks__: ClassVar = (_one_secret_source,)


TSIG_KEYS = ListOf(Section(KeySpec), single=False)


def parse_tsig_keys(
    raw: Any, environ: Mapping[str, str] | None = None
) -> tuple[Keyring, list[Reason]]:
    """The `tsig_keys:` section: a list of {name, algorithm, secret_file | secret_env}."""
    report = Report()
    if raw is None:
        return Keyring(), []
    specs = TSIG_KEYS.parse(raw, At(mark_of(raw), "tsig_keys"), report)
    env = os.environ if environ is None else environ
    keys: dict[dns.name.Name, TsigKey] = {}
    for spec in () if isinstance(specs, Invalid) else specs:
        if spec.name in keys:
            report.error(At(spec.mark, "tsig_keys.name"), f"duplicate key {spec.name}")
            continue
        secret = _read_secret(spec, env, report)
        if secret is not None:
            alg = ALGORITHMS[spec.algorithm]
            keys[spec.name] = TsigKey(spec.name, alg, dns.tsig.Key(spec.name, secret, alg))
    return Keyring(keys), report.sorted()


def _read_secret(spec: KeySpec, env: Mapping[str, str], report: Report) -> bytes | None:
    """The base64 secret from `secret_file` or `secret_env`; messages name the source only."""
    where = spec.mark
    if spec.secret_file is not None:
        source, value = "secret_file", spec.secret_file
        at = At(where, f"tsig_keys.{source}")
        path = Path(value).expanduser()
        if not path.is_absolute() and where is not None and not where.file.startswith("<"):
            path = Path(where.file).resolve().parent / path  # like geoip: beside the config
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not base64 text"
            report.error(at, f"cannot read {value}: {reason}")
            return None
    else:
        source, value = "secret_env", spec.secret_env or ""
        at = At(where, f"tsig_keys.{source}")
        if value not in env:
            report.error(at, f"environment variable {value} is not set")
            return None
        text = env[value]
    try:
        secret = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        report.error(at, f"{value}: secret is not base64")
        return None
    if len(secret) < MIN_SECRET:
        report.error(
            at, f"{value}: secret is {len(secret)} bytes, at least {MIN_SECRET} are needed"
        )
        return None
    return secret


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What the protocol extension needs from a message, read with dnspython's wire parser."""

    id: int
    flags: int
    qname: dns.name.Name | None
    qtype: int
    qclass: int
    question_end: int  # offset just after the question (12 when there is none)
    tsig_owner: dns.name.Name | None = None
    tsig: dns.rdtypes.ANY.TSIG.TSIG | None = None
    tsig_start: int = 0  # offset of the TSIG RR: the message before it is what was signed
    opt_class: int = 0  # offset of the OPT record's CLASS (the UDP payload size); 0 = no EDNS

    @property
    def edns(self) -> bool:
        return self.opt_class != 0

    def reply(self, data: bytes, rcode: int) -> bytes:
        """A reply without records: header (QR, the opcode and RD echoed), the question, and
        an OPT when the request had one (RFC 6891 section 7)."""
        flags = 0x8000 | (self.flags & 0x7900) | (rcode & 0xF)
        question = data[12 : self.question_end]
        qdcount = 1 if self.qname is not None else 0
        opt = b""
        if self.edns:
            opt = b"\x00" + _RR_FIXED.pack(dns.rdatatype.OPT, REPLY_PAYLOAD, (rcode >> 4) << 24, 0)
        header = struct.pack("!6H", self.id, flags, qdcount, 0, 0, 1 if opt else 0)
        return header + question + opt

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    def stripped(self, data: bytes) -> bytes:
        """The message without its TSIG RR (ARCOUNT one less), as the core should see it."""
        if self.tsig is None:
            return data
        arcount = struct.unpack_from("!H", data, 10)[0] - 1
        return data[:10] + struct.pack("!H", arcount) + data[12 : self.tsig_start]


def read_envelope(data: bytes) -> Envelope:
    """Header, question and TSIG of a message; raises Malformed when malformed
    (a TSIG RR that is not the last record, or appears twice, is malformed: RFC 8945 5.1)."""
    if len(data) < 12:
        raise Malformed("short header")
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    parser = dns.wire.Parser(data, 12)
    qname: dns.name.Name | None = None
    qtype = qclass = 0
    try:
        if qdcount > 1:
            raise Malformed("more than one question")
        if qdcount == 1:
            qname = parser.get_name(decompress=True)
            qtype, qclass = parser.get_struct("!HH")
        question_end = parser.current
        total = ancount + nscount + arcount
        owner = tsig = None
        start = opt_class = 0
        for index in range(total):
            rr_start = parser.current
            name = parser.get_name(decompress=True)
            rdtype, rdclass, _ttl, rdlength = parser.get_struct("!HHIH")
            if rdtype == dns.rdatatype.TSIG:
                if index != total - 1 or index < ancount + nscount:
                    raise Malformed("TSIG is not the last additional record")
                if rdclass != dns.rdataclass.ANY:
                    raise Malformed("TSIG class is not ANY")
                with parser.restrict_to(rdlength):
                    rdata = dns.rdata.from_wire_parser(
                        dns.rdataclass.ANY, dns.rdatatype.TSIG, parser
                    )
                owner, tsig, start = name, rdata, rr_start
            else:
                if rdtype == dns.rdatatype.OPT and index >= ancount + nscount:
                    opt_class = parser.current - 8
                parser.seek(parser.current + rdlength)
        if parser.remaining() != 0:
            raise Malformed("trailing bytes")
    except Malformed:
        raise
    except (dns.exception.DNSException, struct.error, ValueError) as exc:
        raise Malformed(str(exc) or type(exc).__name__) from None
    return Envelope(ident, flags, qname, qtype, qclass, question_end, owner, tsig, start, opt_class)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying a signed request."""

    key: TsigKey | None  # the verified key; None with error set when no key matched
    error: int = 0  # 0, or BADKEY / BADSIG / BADTIME / BADTRUNC / FORMERR
    request_mac: bytes = b""
    request_time: int = 0  # the request's time signed (echoed in BADTIME)
    owner: dns.name.Name = dns.name.root
    algorithm: dns.name.Name = dns.tsig.HMAC_SHA256

    @property
    def ok(self) -> bool:
        return self.error == 0 and self.key is not None


def verify(
    data: bytes,
    envelope: Envelope,
    keyring: Keyring,
    clock: Clock,
    request_mac: bytes | None = None,
) -> Verdict:
    """Check a signed message's TSIG against the keyring (RFC 8945 section 5.2); for a
    response, `request_mac` is the MAC of the request it answers."""
    assert envelope.tsig is not None and envelope.tsig_owner is not None
    rdata = envelope.tsig
    owner = envelope.tsig_owner
    base = Verdict(None, 0, rdata.mac, rdata.time_signed, owner, rdata.algorithm)
    key = keyring.get(owner)
    if key is None or key.algorithm != rdata.algorithm:
        return replace(base, error=BADKEY)
    size = DIGEST_SIZES.get(key.algorithm, 0)
    mac_length = len(rdata.mac)
    if mac_length > size or mac_length < max(10, size // 2):
        return replace(base, error=FORMERR)
    if mac_length < size:
        # A legal truncation (RFC 8945 5.2.2.1), but our policy is full MACs only.
        return replace(base, key=key, error=BADTRUNC)
    now = int(clock.time())
    try:
        dns.tsig.validate(  # type: ignore[no-untyped-call]
            data, key.key, owner, rdata, now, request_mac, envelope.tsig_start
        )
    except dns.tsig.BadTime:
        return replace(base, key=key, error=BADTIME)
    except (dns.tsig.BadSignature, dns.tsig.PeerError, dns.exception.FormError):
        return replace(base, error=BADSIG)
    except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
        return replace(base, error=BADKEY)
    return replace(base, key=key)


class Signer:
    """Signs the messages of one response (one, or an AXFR/IXFR stream, RFC 8945 5.3.1)."""

    def __init__(
        self,
        key: TsigKey,
        request_mac: bytes,
        clock: Clock,
        error: int = 0,
        other: bytes = b"",
        time_signed: int | None = None,
    ) -> None:
        self.key = key
        self.request_mac = request_mac
        self.clock = clock
        self.error = error
        self.other = other
        self.time_signed = time_signed
        self._ctx: Any = None

    def sign(self, wire: bytes, multi: bool = False) -> bytes:
        """`wire` with a TSIG RR appended. With multi=True, later calls continue the stream:
        each MAC covers the previous MAC, the message and the timers."""
        when = int(self.clock.time()) if self.time_signed is None else self.time_signed
        ident = struct.unpack_from("!H", wire)[0]
        rdata = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            self.key.algorithm,
            when,
            FUDGE,
            b"",
            ident,
            self.error,
            self.other,
        )
        request_mac = self.request_mac if self._ctx is None else None
        signed, ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            wire, self.key.key, rdata, when, request_mac, self._ctx, multi
        )
        self._ctx = ctx
        return append_tsig(wire, self.key.name, signed)


def append_tsig(wire: bytes, owner: dns.name.Name, rdata: dns.rdata.Rdata) -> bytes:
    """Add a TSIG RR (uncompressed owner) as the last record and count it in ARCOUNT."""
    body = rdata.to_wire()
    assert body is not None
    record = _name_wire(owner) + _RR_FIXED.pack(
        dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(body)
    )
    arcount = struct.unpack_from("!H", wire, 10)[0] + 1
    return wire[:10] + struct.pack("!H", arcount) + wire[12:] + record + body


def tsig_overhead(key: TsigKey) -> int:
    """Bytes a TSIG RR with this key adds to a message (no other data)."""
    name = len(_name_wire(key.name))
    algorithm = len(_name_wire(key.algorithm))
    return name + 10 + algorithm + 6 + 2 + 2 + DIGEST_SIZES[key.algorithm] + 2 + 2 + 2


def error_response(
    data: bytes, envelope: Envelope, verdict: Verdict, clock: Clock, rcode: int = NOTAUTH
) -> bytes:
    """The reply to a request whose TSIG failed: header and question, plus a TSIG RR that
    is unsigned for BADKEY/BADSIG and signed for BADTIME/BADTRUNC (RFC 8945 5.2 and 5.3.2)."""
    if verdict.error == FORMERR:
        return envelope.reply(data, FORMERR)
    wire = envelope.reply(data, rcode)
    now = int(clock.time())
    if verdict.key is not None and verdict.error in (BADTIME, BADTRUNC):
        other = b""
        time_signed = None
        if verdict.error == BADTIME:
            other = struct.pack("!HI", (now >> 32) & 0xFFFF, now & 0xFFFFFFFF)
            time_signed = verdict.request_time
        signer = Signer(verdict.key, verdict.request_mac, clock, verdict.error, other, time_signed)
        return signer.sign(wire)
    rdata = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        dns.rdataclass.ANY,
        dns.rdatatype.TSIG,
        verdict.algorithm,
        now,
        FUDGE,
        b"",
        envelope.id,
        verdict.error,
        b"",
    )
    return append_tsig(wire, verdict.owner, rdata)


def _name_wire(name: dns.name.Name) -> bytes:
    wire = name.to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire
