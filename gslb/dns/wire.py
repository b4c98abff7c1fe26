"""Fast DNS wire parsing: header, question, OPT, ECS and COOKIE straight from the bytes.

The hot path never builds a dnspython Message. parse_query() returns a Query (one readable
question), or a Malformed saying which error rcode the packet gets; it raises Drop when the
packet must get no answer at all (too short to carry an ID, or a response).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HHHHHH")
TYPE_CLASS = struct.Struct("!HH")
RR_FIXED = struct.Struct("!HHIH")
OPTION = struct.Struct("!HH")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 3, 4, 5, 9
BADVERS = 16  # extended rcode: upper 8 bits go in OPT, lower 4 in the header
BADCOOKIE = 23

TYPE_OPT = 41
TYPE_TSIG = 250
TYPE_IXFR = 251
TYPE_AXFR = 252
OPCODE_QUERY = 0
OPCODE_NOTIFY = 4
OPTION_ECS = 8
OPTION_COOKIE = 10
MAX_NAME = 255


class Drop(Exception):
    """The packet gets no response."""


class ClientSubnet:
    """An EDNS Client Subnet option from a query (RFC 7871)."""

    __slots__ = ("family", "source_prefix", "address", "raw_address")

    def __init__(self, family: int, source_prefix: int, address: bytes, raw_address: bytes):
        self.family = family  # 1 = IPv4, 2 = IPv6
        self.source_prefix = source_prefix
        self.address = address  # padded to 4 or 16 bytes, host bits zero
        self.raw_address = raw_address  # exactly as sent (ceil(prefix / 8) bytes)

    def option(self, scope_prefix: int) -> bytes:
        """The option to echo in the response with the given scope (RFC 7871 section 7.2.1).

        The scope may be longer than the source prefix (the answer depends on more bits than
        the resolver sent, so it asks again with more); it is bounded by the address width."""
        scope = min(scope_prefix, 32 if self.family == 1 else 128)
        data = struct.pack("!HBB", self.family, self.source_prefix, scope) + self.raw_address
        return OPTION.pack(OPTION_ECS, len(data)) + data


class Query:
    """A well-formed query with one question: what the answer path needs; cheap to build.

    Any opcode parses into a Query (NOTIFY and UPDATE carry a question too); the responder
    decides what an opcode other than QUERY gets.
    """

    __slots__ = (
        "id",
        "flags",
        "qname",
        "qtype",
        "qclass",
        "edns",
        "payload",
        "version",
        "do",
        "ecs",
        "cookie",
        "tsig",
    )

    def __init__(self) -> None:
        self.id = 0
        self.flags = 0
        self.qname = b""  # wire form, case as received
        self.qtype = 0
        self.qclass = 0
        self.edns = False  # an OPT record was read completely
        self.payload = 512
        self.version = 0
        self.do = False
        self.ecs: ClientSubnet | None = None
        self.cookie: bytes | None = None
        self.tsig = False  # the additional section carries a TSIG record (RFC 8945)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


class Malformed:
    """A message that gets a bare header (plus the question and OPT when they could be read).

    `rcode` is FORMERR, NOTIMP or BADVERS; or NOERROR for a cookie-only query (QDCOUNT=0 with a
    COOKIE option, RFC 7873 section 5.4), which only wants a server cookie back.
    """

    __slots__ = (
        "id",
        "flags",
        "rcode",
        "question",
        "qtype",
        "edns",
        "payload",
        "do",
        "cookie",
        "ecs",
    )

    def __init__(self, query: Query, rcode: int, question: bool) -> None:
        self.id = query.id
        self.flags = query.flags
        self.rcode = rcode
        # The question as sent (name, type, class), or b"" when it was missing or unreadable.
        self.question = (
            query.qname + TYPE_CLASS.pack(query.qtype, query.qclass) if question else b""
        )
        self.qtype = query.qtype if question else 0
        self.edns = query.edns
        self.payload = query.payload
        self.do = query.do
        self.cookie = query.cookie
        self.ecs: ClientSubnet | None = None  # never echoed in an error about the message

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def _name_end(data: bytes, offset: int, pointers: bool) -> int:
    """End offset of the name at `offset`. A question name may not use compression (it could
    only point backwards into the header); names in records we skip over may."""
    end = len(data)
    pos = offset
    while True:
        if pos >= end:
            raise ValueError("name runs past the end")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0 and pointers:
            if pos + 2 > end:
                raise ValueError("truncated pointer")
            return pos + 2
        if length > 63:  # compression pointer in a question, or a reserved label type
            raise ValueError("compressed or extended label")
        pos += length + 1
    if pos - offset > MAX_NAME:
        raise ValueError("name too long")
    return pos


def question_name_end(data: bytes, offset: int) -> int:
    return _name_end(data, offset, pointers=False)


def _parse_ecs(data: bytes) -> ClientSubnet:
    if len(data) < 4:
        raise ValueError("ECS option too short")
    family, source, scope = struct.unpack_from("!HBB", data)
    address = data[4:]
    if family == 1:
        width = 4
    elif family == 2:
        width = 16
    else:
        raise ValueError("ECS family unknown")
    if source > width * 8:
        raise ValueError("ECS source prefix longer than the address")
    if scope != 0:
        raise ValueError("ECS scope prefix must be 0 in queries")
    if len(address) != (source + 7) // 8:
        raise ValueError("ECS address length does not match the source prefix")
    if source % 8 and address and address[-1] & (0xFF >> (source % 8)):
        raise ValueError("ECS address has bits set beyond the source prefix")
    return ClientSubnet(family, source, address + bytes(width - len(address)), address)


def _parse_opt(query: Query, data: bytes, pos: int, rdlength: int, klass: int, ttl: int) -> None:
    version = (ttl >> 16) & 0xFF
    end = pos + rdlength
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated EDNS option")
        code, length = OPTION.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise ValueError("EDNS option runs past the OPT record")
        if code == OPTION_ECS and version == 0:
            if query.ecs is not None:
                raise ValueError("more than one ECS option")
            query.ecs = _parse_ecs(data[pos : pos + length])
        elif code == OPTION_COOKIE:
            if query.cookie is not None:
                raise ValueError("more than one COOKIE option")
            # RFC 7873 section 5.2.2: a client cookie alone (8) or with a server cookie (16..40).
            if length != 8 and not 16 <= length <= 40:
                raise ValueError("malformed COOKIE option")
            query.cookie = data[pos : pos + length]
        pos += length


def _read_opt(query: Query, data: bytes, pos: int, rdlength: int, klass: int, ttl: int) -> None:
    query.payload = max(klass, 512)
    query.version = (ttl >> 16) & 0xFF
    query.do = bool(ttl & 0x8000)
    if query.version == 0:
        _parse_opt(query, data, pos, rdlength, klass, ttl)
    else:
        # RFC 6891 section 6.1.3: a version we do not know gets BADVERS, whatever its options
        # hold (we cannot judge them); a well-formed COOKIE still rides along (RFC 7873 5.4).
        try:
            _parse_opt(query, data, pos, rdlength, klass, ttl)
        except ValueError:
            query.cookie = None
    query.edns = True


def parse_query(data: bytes) -> Query | Malformed:
    """Parse a query, or say which error it gets (Malformed). Raises Drop for no answer."""
    if len(data) < 12:
        raise Drop
    query = Query()
    query.id, query.flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if query.flags & QR:
        raise Drop  # never answer a response: that is how reflection loops start
    question = False
    try:
        pos = 12
        if qdcount > 1:
            raise ValueError("more than one question")
        if qdcount == 1:
            pos = question_name_end(data, 12)
            if pos + 4 > len(data):
                raise ValueError("question truncated")
            query.qname = data[12:pos]
            query.qtype, query.qclass = TYPE_CLASS.unpack_from(data, pos)
            pos += 4
            question = True
        opt_seen = False
        for index in range(ancount + nscount + arcount):
            owner_start = pos
            pos = _name_end(data, pos, pointers=True)
            if pos + 10 > len(data):
                raise ValueError("record truncated")
            rtype, klass, ttl, rdlength = RR_FIXED.unpack_from(data, pos)
            pos += 10
            if pos + rdlength > len(data):
                raise ValueError("rdata runs past the end")
            if index >= ancount + nscount:
                if rtype == TYPE_OPT:
                    if opt_seen:
                        raise ValueError("more than one OPT record")
                    opt_seen = True
                    if data[owner_start] != 0:
                        raise ValueError("OPT owner is not the root")
                    _read_opt(query, data, pos, rdlength, klass, ttl)
                elif rtype == TYPE_TSIG:
                    query.tsig = True
            pos += rdlength
        if pos != len(data):
            raise ValueError("trailing bytes after the message")
    except (ValueError, struct.error):
        if query.opcode != 0:
            return Malformed(query, NOTIMP, question)
        return Malformed(query, FORMERR, question)
    if query.edns and query.version > 0:
        return Malformed(query, BADVERS, question)
    if query.opcode != 0 and not question:
        return Malformed(query, NOTIMP, False)
    if not question:
        if query.cookie is not None and query.opcode == 0:
            return Malformed(query, NOERROR, False)
        return Malformed(query, FORMERR, False)
    if query.qtype == TYPE_OPT:
        return Malformed(query, FORMERR, True)
    return query


def build_opt(payload: int, extended_rcode: int, do: bool, options: bytes) -> bytes:
    """An OPT pseudo-record: root owner, our UDP payload size, extended rcode, version 0."""
    ttl = (extended_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, payload, ttl, len(options)) + options


def error_response(
    query: Query | Malformed, rcode: int, question: bytes, opt: bytes = b""
) -> bytes:
    """A response with no records: header, the question when given, and an optional OPT."""
    flags = QR | (query.flags & (0x7800 | RD | CD)) | (rcode & 0xF)
    return (
        HEADER.pack(query.id, flags, 1 if question else 0, 0, 0, 1 if opt else 0) + question + opt
    )


def question_of(query: Query) -> bytes:
    """The question section of a parsed query, as sent."""
    return query.qname + TYPE_CLASS.pack(query.qtype, query.qclass)


def find_opt(message: bytes, offset: int, skip: int, additional: int) -> bytes:
    """The OPT record of a message we built, given where its answer section starts: skip
    `skip` records (answer and authority), then look through `additional`. b"" if none."""
    try:
        pos = offset
        for index in range(skip + additional):
            start = pos
            pos = _name_end(message, pos, pointers=True)
            rtype, _, _, rdlength = RR_FIXED.unpack_from(message, pos)
            pos += 10 + rdlength
            if index >= skip and rtype == TYPE_OPT:
                return message[start:pos]
    except (ValueError, struct.error):
        return b""
    return b""
