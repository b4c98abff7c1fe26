"""ECS scope benchmark: what a resolver's ECS cache holds, before and after the answer maps,
and against gdnsd's merged-supernet map on the very same queries.

    .venv/bin/python bench/ecs_scope.py [--clients 20000] [--seed 1] [--no-gdnsd]

Uses the GeoLite2 City database the `maxminddb-geolite2` package ships. For each scenario
(all healthy; eu-west down) it sends the same random client /24s to:

- gslb before: the per-network path (scope = the GeoIP network, capped at the source /24, as
  the server answered before the answer maps);
- gslb after: the answer maps (SteeringEngine.decide, the call the DNS server makes);
- gdnsd 3 with its geoip plugin in city-auto-mode over the same database and datacenter
  coordinates, started on 127.0.0.1 and queried over UDP with ECS.

It counts distinct (scope network, answer) pairs, checks every answer against an independent
nearest-healthy-datacenter computation, and for gslb samples addresses inside every scope
network to check the whole network really has that answer.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.message
import dns.query
import maxminddb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gslb.config.validate import load_config_text  # noqa: E402
from gslb.geo.locate import Locator  # noqa: E402
from gslb.health.snapshot import HealthHolder, HealthSnapshot, TargetHealth  # noqa: E402
from gslb.steering.engine import SteeringEngine  # noqa: E402

DCS = {
    "us-east": (39.0438, -77.4874, "192.0.2.11"),
    "eu-west": (53.3498, -6.2603, "192.0.2.21"),
    "ap-northeast": (35.6762, 139.6503, "198.51.100.31"),
    "sa-east": (-23.5505, -46.6333, "198.51.100.41"),
    "us-west": (45.8399, -119.7006, "203.0.113.51"),
    "ap-southeast": (-33.8688, 151.2093, "203.0.113.61"),
}
ADDRESS_DC = {v[2]: k for k, v in DCS.items()}
SCENARIOS = {"all healthy": (), "eu-west down": ("eu-west",)}


def geolite2_path() -> str:
    from _maxminddb_geolite2 import geolite2_database  # the package's own path helper

    return str(geolite2_database())


def gslb_config(db: str) -> str:
    lines = [f"geoip: {db}", "datacenters:"]
    for name, (lat, lon, addr) in DCS.items():
        lines.append(f"  {name}: {{latitude: {lat}, longitude: {lon}, ipv4: [{addr}]}}")
    lines += [
        "services:",
        "  www.example.test:",
        "    policy: geoproximity",
        f"    datacenters: [{', '.join(DCS)}]",
        "    types: [A]",
        "    on_all_down: fail_open",
    ]
    return "\n".join(lines) + "\n"


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def nearest(reader: maxminddb.Reader, address: str, down: tuple[str, ...]) -> str | None:
    """Independent oracle: the nearest healthy datacenter, None without coordinates."""
    rec = reader.get(address)
    loc = rec.get("location") if isinstance(rec, dict) else None
    if not loc or "latitude" not in loc:
        return None
    up = [n for n in DCS if n not in down]
    return min(up, key=lambda n: haversine(loc["latitude"], loc["longitude"], *DCS[n][:2]))


def clients(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        value = rng.getrandbits(24) << 8
        ip = ipaddress.IPv4Address(value)
        if ip.is_private or ip.is_multicast or ip.is_reserved or ip.is_loopback:
            continue  # answers for these are not geography
        out.append(str(ip))
    return out


def net_text(address: str, scope: int) -> str:
    return str(ipaddress.ip_network(f"{address}/{scope}", strict=False))


def run_gslb(db: str, nets: list[str], down: tuple[str, ...], maps: bool) -> dict[str, tuple]:
    config = load_config_text(gslb_config(db), "bench.yaml")
    locator = Locator(db)
    states = {n: TargetHealth("down" if n in down else "up") for n in DCS}
    health = HealthHolder(HealthSnapshot(1, MappingProxyType(states)))
    engine = SteeringEngine(config, locator, health, scope_maps="sync" if maps else "off")
    service = config.services["www.example.test."]
    out = {}
    for address in nets:
        d = engine.decide(service, ipaddress.IPv4Address(address).packed, 24)
        scope = d.scope_prefix if maps else min(d.scope_prefix, 24)
        out[address] = (net_text(address, scope), d.ipv4[0])
    locator.close()
    return out


def run_gslb_server(db: str, nets: list[str], down: tuple[str, ...]) -> dict[str, tuple]:
    """The same queries through a running `gslb dns` over UDP, once its answer maps are ready
    (a failed datacenter is drained by the admin API, as an operator would)."""
    import json
    import urllib.request

    with tempfile.TemporaryDirectory(prefix="gslb-bench-") as tmp:
        config = Path(tmp, "gslb.yaml")
        config.write_text(gslb_config(db) + "rrl: {enabled: false}\n")
        zones = Path(tmp, "zones")
        zones.mkdir()
        zones.joinpath("example.test.zone").write_text(
            "$ORIGIN example.test.\n@ 3600 IN SOA ns1 hostmaster 1 3600 600 1209600 60\n"
            "@ 3600 IN NS ns1\nns1 IN A 192.0.2.53\n"
        )
        port, admin = free_port(), free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gslb.cli",
                "dns",
                "--zones",
                str(zones),
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--admin",
                f"127.0.0.1:{admin}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{admin}"
        try:
            deadline = time.monotonic() + 300
            for dc in down:
                while True:
                    try:
                        req = urllib.request.Request(
                            f"{base}/v1/overrides/{dc}",
                            data=json.dumps({"mode": "down", "reason": "bench"}).encode(),
                            headers={"Content-Type": "application/json"},
                            method="POST",
                        )
                        urllib.request.urlopen(req, timeout=5).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
            while True:
                q = dns.message.make_query(
                    "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(nets[0], 24)]
                )
                try:
                    dns.query.udp(q, "127.0.0.1", port=port, timeout=1)  # the engine wakes up
                    with urllib.request.urlopen(f"{base}/status", timeout=5) as r:
                        status = json.load(r)
                    if status["services"][0]["scope_map"] == "ready":
                        break
                except (OSError, dns.exception.Timeout, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server's answer maps were not ready in time")
                time.sleep(0.5)
            out = {}
            for address in nets:
                q = dns.message.make_query(
                    "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(address, 24)]
                )
                r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
                ecs = [o for o in r.options if isinstance(o, dns.edns.ECSOption)][0]
                out[address] = (net_text(address, ecs.scopelen), r.answer[0][0].address)
            return out
        finally:
            proc.terminate()
            proc.wait(10)


GDNSD_CONFIG = """\
options => {{ listen => [ 127.0.0.1:{port} ], run_dir => {run}, state_dir => {state} }}
plugins => {{ geoip => {{
  maps => {{ m => {{
    geoip2_db => {db},
    datacenters => [{names}],
    auto_dc_coords => {{ {coords} }}
  }} }}
  resources => {{ www => {{ map => m, dcmap => {{ {dcmap} }} }} }}
}} }}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_gdnsd(db: str, nets: list[str], down: tuple[str, ...]) -> dict[str, tuple] | None:
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    if not os.path.exists(gdnsd):
        return None
    with tempfile.TemporaryDirectory(prefix="gslb-gdnsd-") as tmp:
        port = free_port()
        for sub in ("zones", "run", "state"):
            os.mkdir(os.path.join(tmp, sub))
        dcmap = ", ".join(
            f"{n} => {{ lb01 => {v[2]}, service_types => down }}" if n in down else f"{n} => {v[2]}"
            for n, v in DCS.items()
        )
        text = GDNSD_CONFIG.format(
            port=port,
            run=os.path.join(tmp, "run"),
            state=os.path.join(tmp, "state"),
            db=db,
            names=", ".join(DCS),
            coords=", ".join(f"{n} => [{v[0]}, {v[1]}]" for n, v in DCS.items()),
            dcmap=dcmap,
        )
        Path(tmp, "config").write_text(text)
        Path(tmp, "zones", "example.test").write_text(
            "@ SOA ns1 hostmaster 1 3600 600 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n"
            "www 30 DYNA geoip!www\n"
        )
        proc = subprocess.Popen(
            [gdnsd, "-c", tmp, "start"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    q = dns.message.make_query("www.example.test", "A")
                    dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
                    break
                except (dns.exception.Timeout, OSError) as exc:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read() if proc.stderr else b""
                        raise RuntimeError(f"gdnsd did not start: {err!r}") from exc
            out = {}
            for address in nets:
                q = dns.message.make_query(
                    "www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption(address, 24)]
                )
                r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
                ecs = [o for o in r.options if isinstance(o, dns.edns.ECSOption)][0]
                answer = r.answer[0][0].address
                out[address] = (net_text(address, ecs.scopelen), answer)
            return out
        finally:
            proc.terminate()
            proc.wait(10)


def check(
    reader: maxminddb.Reader, result: dict[str, tuple], down: tuple[str, ...]
) -> tuple[int, int]:
    """(wrong answers, answers with no oracle: no coordinates)."""
    wrong = unknown = 0
    for address, (_net, answer) in result.items():
        want = nearest(reader, address, down)
        if want is None:
            unknown += 1
        elif ADDRESS_DC[answer] != want:
            wrong += 1
    return wrong, unknown


def sample_scopes(
    reader: maxminddb.Reader, result: dict[str, tuple], down: tuple[str, ...], seed: int
) -> tuple[int, int]:
    """Addresses drawn inside each distinct gslb scope network whose nearest healthy
    datacenter differs from the answer given for the network: (violations, samples)."""
    rng = random.Random(seed)
    bad = total = 0
    for net_s, answer in set(result.values()):
        net = ipaddress.ip_network(net_s)
        for _ in range(3):
            ip = str(net.network_address + rng.randrange(net.num_addresses))
            want = nearest(reader, ip, down)
            if want is None:
                continue
            total += 1
            bad += ADDRESS_DC[answer] != want
    return bad, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-gdnsd", action="store_true")
    parser.add_argument(
        "--server", action="store_true", help="also ask a running gslb dns over UDP"
    )
    args = parser.parse_args()
    db = geolite2_path()
    nets = clients(args.clients, args.seed)
    reader = maxminddb.open_database(db)
    print(f"database {db}")
    print(f"{len(nets)} random client /24s (seed {args.seed}), {len(DCS)} datacenters")
    for title, down in SCENARIOS.items():
        print(f"\n== {title}")
        t = time.monotonic()
        rows = [("gslb before", run_gslb(db, nets, down, maps=False))]
        rows.append(("gslb after", run_gslb(db, nets, down, maps=True)))
        built = time.monotonic() - t
        if args.server:
            rows.append(("gslb dns (UDP)", run_gslb_server(db, nets, down)))
        if not args.no_gdnsd:
            g = run_gdnsd(db, nets, down)
            if g is not None:
                rows.append(("gdnsd 3 geoip", g))
        print(f"   ({built:.1f} s for both gslb runs, including the answer-map build)")
        print(f"   {'':<14} {'cache entries':>13} {'mean scope':>10} {'wrong':>6} {'no coords':>9}")
        for name, res in rows:
            pairs = len(set(res.values()))
            mean = sum(int(n.split("/")[1]) for n, _ in res.values()) / len(res)
            wrong, unknown = check(reader, res, down)
            print(
                f"   {name:<14} {pairs:>13} {'/' + format(mean, '.1f'):>10} {wrong:>6} {unknown:>9}"
            )
        bad, total = sample_scopes(reader, rows[1][1], down, args.seed)
        print(
            f"   gslb after: {bad} of {total} addresses sampled inside its scope networks"
            " have another nearest healthy datacenter"
        )
    reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
