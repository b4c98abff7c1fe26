"""Fast DNS wire parsing: header, question, OPT, ECS and COOKIE straight from the bytes.

The hot path never builds a dnspython Message. parse_query() returns a Query whose `error`
field is the rcode to answer with when the packet is readable but wrong; it raises Drop when
the packet must get no answer at all (too short to carry an ID, or a response).
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
        """The option to echo in the response with the given scope (RFC 7871 section 7.2.1)."""
        # The scope may be longer than the source: the answer depends on more bits than the
        # client sent, and the resolver should ask again with more (RFC 7871 section 7.2.1).
        scope = min(scope_prefix, 32 if self.family == 1 else 128)
        data = struct.pack("!HBB", self.family, self.source_prefix, scope) + self.raw_address
        return OPTION.pack(OPTION_ECS, len(data)) + data


class Query:
    """What the server needs from a query; cheap to build."""

    __slots__ = (
        "id",
        "flags",
        "qname",
        "qtype",
        "qclass",
        "error",
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
        self.qname: bytes | None = None  # wire form, case as received
        self.qtype = 0
        self.qclass = 0
        self.error = NOERROR
        self.edns = False
        self.payload = 512
        self.version = 0
        self.do = False
        self.ecs: ClientSubnet | None = None
        self.cookie: bytes | None = None
        self.tsig = False

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
    query.edns = True
    query.payload = max(klass, 512)
    query.version = (ttl >> 16) & 0xFF
    query.do = bool(ttl & 0x8000)
    end = pos + rdlength
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated EDNS option")
        code, length = OPTION.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise ValueError("EDNS option runs past the OPT record")
        if code == OPTION_ECS:
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


def parse_query(data: bytes) -> Query:
    """Parse a query. Raises Drop; otherwise query.error says FORMERR/NOTIMP/BADVERS/NOERROR."""
    if len(data) < 12:
        raise Drop
    query = Query()
    query.id, query.flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if query.flags & QR:
        raise Drop  # never answer a response: that is how reflection loops start
    if query.opcode != 0:
        query.error = NOTIMP
        return query
    if qdcount != 1:
        query.error = FORMERR
        return query
    try:
        pos = question_name_end(data, 12)
        if pos + 4 > len(data):
            raise ValueError("question truncated")
        query.qname = data[12:pos]
        query.qtype, query.qclass = TYPE_CLASS.unpack_from(data, pos)
        pos += 4
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
                    _parse_opt(query, data, pos, rdlength, klass, ttl)
                elif rtype == TYPE_TSIG:
                    query.tsig = True
            pos += rdlength
        if pos != len(data):
            raise ValueError("trailing bytes after the message")
    except (ValueError, struct.error):
        query.error = FORMERR
        return query
    if query.edns and query.version > 0:
        query.error = BADVERS
    if query.qtype == TYPE_OPT:
        query.error = FORMERR
    return query


def build_opt(payload: int, extended_rcode: int, do: bool, options: bytes) -> bytes:
    """An OPT pseudo-record: root owner, our UDP payload size, extended rcode, version 0."""
    ttl = (extended_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, payload, ttl, len(options)) + options


def error_response(query: Query, rcode: int, with_question: bool, opt: bytes = b"") -> bytes:
    """A response with no records: header, the question if known, and an optional OPT."""
    flags = QR | (query.flags & (0x7800 | RD | CD)) | (rcode & 0xF)
    question = b""
    if with_question and query.qname is not None:
        question = query.qname + TYPE_CLASS.pack(query.qtype, query.qclass)
    return (
        HEADER.pack(query.id, flags, 1 if question else 0, 0, 0, 1 if opt else 0) + question + opt
    )
