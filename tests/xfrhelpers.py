"""Helpers for the TSIG / transfer / NOTIFY tests: a node with keys and transfer rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from pathlib import Path

import dns.message
import dns.name
import dns.tsig
import dns.tsigkeyring

from gslb.dns.node import NodeOptions

from .dnshelpers import ServerThread, write_zones

SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
KEY_NAME = "xfr-key"

CONFIG = """\
datacenters:
  dc1: {{latitude: 10, longitude: 20, ipv4: [192.0.2.71], ipv6: ["2001:db8::71"]}}
  dc2: {{latitude: 11, longitude: 21, ipv4: [192.0.2.72]}}
services:
  gslb.example.test:
    policy: failover
    tiers: [[dc1], [dc2]]
    on_all_down: servfail
tsig_keys:
  - name: {key}
    algorithm: hmac-sha256
    secret_file: {secret_file}
  - name: other-key
    algorithm: hmac-sha512
    secret_env: GSLB_TEST_OTHER_SECRET
transfer:
{transfer}
"""

DEFAULT_TRANSFER = """\
  allow:
    - {network: 127.0.0.1/32, key: xfr-key}
    - {network: 127.0.0.3/32}
"""


def write_config(directory: Path, transfer: str = DEFAULT_TRANSFER, key: str = KEY_NAME) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "xfr.key"
    secret_file.write_text(SECRET + "\n")
    path = directory / "gslb.yaml"
    path.write_text(CONFIG.format(key=key, secret_file=secret_file, transfer=transfer))
    return path


def start_node(tmp_path: Path, transfer: str = DEFAULT_TRANSFER) -> ServerThread:
    os.environ["GSLB_TEST_OTHER_SECRET"] = OTHER_SECRET  # read by secret_env at load
    zones = write_zones(tmp_path / "zones")
    config = write_config(tmp_path / "conf", transfer)
    options = NodeOptions(
        zones_dir=str(zones),
        config_path=str(config),
        listen=["127.0.0.1:0"],
        health_monitor=False,
        admin_listen="off",
    )
    return ServerThread(options).start()


def keyring(secret: str = SECRET, name: str = KEY_NAME) -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({name: ("hmac-sha256", secret)})


def signed_query(
    name: str, rdtype: str, secret: str = SECRET, key: str = KEY_NAME, **kw: object
) -> dns.message.QueryMessage:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    query.use_tsig(keyring(secret, key), keyname=key)
    return query


def raw_exchange(port: int, wire: bytes, tcp: bool, timeout: float = 3.0) -> list[bytes]:
    """Send one message; return the reply (UDP) or every message until the server stops
    sending for `timeout`/10 seconds after at least one (TCP)."""
    if not tcp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(wire, ("127.0.0.1", port))
            return [sock.recv(65535)]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        replies = [_read_framed(sock)]
        sock.settimeout(timeout / 10)
        while True:
            try:
                replies.append(_read_framed(sock))
            except (TimeoutError, ConnectionError):
                return replies


def _read_framed(sock: socket.socket) -> bytes:
    length = struct.unpack("!H", _read_exactly(sock, 2))[0]
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def unverified(wire: bytes) -> dns.message.Message:
    """Parse a reply without checking its TSIG (to look at error replies)."""
    return dns.message.from_wire(wire, keyring=False)


def tsig_rdata(message: dns.message.Message) -> object:
    assert message.tsig is not None
    return message.tsig[0]


def hmac_sha256_mac(
    wire: bytes, request_mac: bytes, secret: str = SECRET, key: str = KEY_NAME
) -> bytes:
    """An independent RFC 8945 section 4.3 MAC over a reply (to check signed error replies
    that dnspython refuses to validate because they carry a TSIG error)."""
    message = dns.message.from_wire(wire, keyring=False)
    rdata = tsig_rdata(message)
    # The TSIG RR is the last record; recompute where it starts from its encoded length.
    owner = dns.name.from_text(key).to_wire()
    assert owner is not None
    record = rdata.to_wire()  # type: ignore[attr-defined]
    start = len(wire) - len(owner) - 10 - len(record)
    body = bytearray(wire[:start])
    struct.pack_into("!H", body, 10, struct.unpack_from("!H", body, 10)[0] - 1)
    struct.pack_into("!H", body, 0, rdata.original_id)  # type: ignore[attr-defined]
    algorithm = rdata.algorithm.to_digestable()  # type: ignore[attr-defined]
    time_signed = rdata.time_signed  # type: ignore[attr-defined]
    variables = (
        dns.name.from_text(key).to_digestable()
        + struct.pack("!HI", 255, 0)
        + algorithm
        + struct.pack("!HIH", time_signed >> 32, time_signed & 0xFFFFFFFF, rdata.fudge)  # type: ignore[attr-defined]
        + struct.pack("!HH", rdata.error, len(rdata.other))  # type: ignore[attr-defined]
        + rdata.other  # type: ignore[attr-defined]
    )
    digest = hmac.new(base64.b64decode(secret), digestmod=hashlib.sha256)
    digest.update(struct.pack("!H", len(request_mac)) + request_mac + bytes(body) + variables)
    return digest.digest()
