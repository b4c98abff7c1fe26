"""Signed GSLB benchmark (issue 14): gslb signing online, against itself unsigned and PowerDNS.

Run: .venv/bin/python bench/dns_signed.py [--runs 3] [--seconds 10] [--networks 20000]
                                          [--random-names 1000000]

Mixes (the GSLB mix of bench/dns_gslb.py: A www.example.test, ECS from a different /24 each):
  gslb    the mix without DO, against gslb without keys;
  signed  the same queries with DO=1, against gslb with a CSK (ECDSAP256SHA256) and against
          PowerDNS signing online: bind backend, `pdnsutil secure-zone` (its default keys,
          ECDSAP256SHA256 CSK), and www as a LUA record computing the nearest datacenter from
          latlon() (dns_gslb.lua_coords: the same answers as gslb), enable-lua-records=shared.
Every server runs on core 1 with one worker/thread, dnsperf on core 0, interleaved rounds
(dns_gslb.measure_all). Then the memory phase: a fresh signed gslb gets N queries with DO=1 for
distinct random names (half nonexistent names, half names under the *.apps wildcard, so each one
needs its own NSEC and signature) and the script prints the server's RSS as they go.
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rdatatype
import dns_gslb as gslb_bench
from dnsbench_lib import CLIENT_CORE, GSLB, free_port, require_tools, workdir, write_query_file

TARGET_SIGNED_VS_UNSIGNED = 0.5
TARGET_VS_PDNS = 2.0


def gslb_signed_server(work: Path, config: Path, port: int) -> gslb_bench.LoggedServer:
    keys = work / "gslb-keys"
    if not keys.exists():
        subprocess.run(
            [*GSLB, "dnssec", "keygen", "example.test", "--dir", str(keys)],
            check=True,
            capture_output=True,
        )
    plain = gslb_bench.gslb_server(work, config, port)
    command = [*plain.command[3:], "--dnssec-keys", str(keys)]  # without `taskset -c CORE`
    return gslb_bench.LoggedServer("gslb-signed", command, port, work / "gslb-signed.log")


def pdns_signed_server(
    work: Path, dcs: list[gslb_bench.Datacenter], port: int
) -> gslb_bench.LoggedServer:
    name = "pdns-lua-signed"
    server = gslb_bench.pdns_lua_server(work, name, gslb_bench.lua_coords(dcs), "shared", port)
    directory = work / name
    conf = directory / "pdns.conf"
    db = directory / "dnssec.sqlite3"
    conf.write_text(conf.read_text() + f"bind-dnssec-db={db}\n")
    if not db.exists():
        subprocess.run(
            ["pdnsutil", f"--config-dir={directory}", "create-bind-db", str(db)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["pdnsutil", f"--config-dir={directory}", "secure-zone", "example.test"],
            check=True,
            capture_output=True,
        )
    return server


def signed_mix(networks: int) -> list[dns.message.Message]:
    messages = gslb_bench.gslb_mix(networks)
    for message in messages:
        message.want_dnssec(True)
    return messages


def check_signed(servers: list[gslb_bench.LoggedServer]) -> None:
    """Each server must answer the DO=1 GSLB query with an RRSIG (or it signs nothing)."""
    import dns.edns
    import dns.query

    for server in servers:
        with server:
            query = dns.message.make_query(
                gslb_bench.SERVICE,
                "A",
                want_dnssec=True,
                options=[dns.edns.ECSOption("10.1.2.0", 24)],
            )
            response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
            types = [rrset.rdtype for rrset in response.answer]
            if dns.rdatatype.RRSIG not in types:
                sys.exit(f"{server.name} answered DO=1 without an RRSIG: {response}")
            print(f"{server.name}: DO=1 answer carries {dns.rdatatype.to_text(types[-1])}")


def print_results(runs: dict[tuple[str, str], list[gslb_bench.Run]]) -> None:
    def mid(key: tuple[str, str], value: Callable[[gslb_bench.Run], float]) -> float:
        return statistics.median(value(run) for run in runs[key])

    def qps(key: tuple[str, str]) -> float:
        return mid(key, lambda r: r.result.qps)

    def per_core(key: tuple[str, str]) -> float:
        return mid(key, lambda r: r.result.qps / max(r.server_cpu, 0.01))

    print(
        f"\n{'server':18s} {'mix':7s} {'queries/s':>10s} {'latency':>10s} {'lost':>7s} "
        f"{'server CPU':>10s} {'q/s/core':>9s}"
    )
    for key in runs:
        print(
            f"{key[0]:18s} {key[1]:7s} {qps(key):10,.0f} "
            f"{mid(key, lambda r: r.result.latency_ms):8.3f}ms "
            f"{mid(key, lambda r: r.result.loss_percent):6.3f}% "
            f"{mid(key, lambda r: r.server_cpu):10.0%} {per_core(key):9,.0f}"
        )
    signed, unsigned = ("gslb-signed", "signed"), ("gslb", "gslb")
    ratio = qps(signed) / qps(unsigned)
    ratio_core = per_core(signed) / per_core(unsigned)
    verdict = "met" if min(ratio, ratio_core) >= TARGET_SIGNED_VS_UNSIGNED else "MISSED"
    print(
        f"\nsigned/unsigned GSLB mix: {ratio:.2f}, per server core {ratio_core:.2f} "
        f"(target >= {TARGET_SIGNED_VS_UNSIGNED}) {verdict}"
    )
    pdns = ("pdns-lua-signed", "signed")
    if pdns in runs:
        ratio = qps(signed) / qps(pdns)
        ratio_core = per_core(signed) / per_core(pdns)
        verdict = "met" if min(ratio, ratio_core) >= TARGET_VS_PDNS else "MISSED"
        print(
            f"gslb-signed/pdns-lua-signed: {ratio:.2f}, per server core {ratio_core:.2f} "
            f"(target >= {TARGET_VS_PDNS}) {verdict}"
        )


def random_name_file(path: Path, count: int, seed: int = 14) -> None:
    """`count` distinct random names with DO=1, written straight as wire (dnspython would take
    minutes for a million): half under example.test (NXDOMAIN), half under *.apps."""
    rng = random.Random(seed)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000, 0)  # OPT, DO=1
    with path.open("wb") as out:
        for index in range(count):
            label = f"r{index:x}{rng.getrandbits(32):08x}".encode()
            parent = b"\x04apps" if index % 2 else b""
            qname = bytes([len(label)]) + label + parent + b"\x07example\x04test\x00"
            qtype = 1 if index % 4 < 2 else 16
            wire = struct.pack("!HHHHHH", index & 0xFFFF, 0, 1, 0, 0, 1) + qname
            wire += struct.pack("!HH", qtype, 1) + opt
            out.write(struct.pack("!H", len(wire)) + wire)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_phase(work: Path, config: Path, count: int) -> None:
    query_file = work / "random-names.bin"
    random_name_file(query_file, count)
    server = gslb_signed_server(work, config, free_port())
    samples: list[tuple[float, int]] = []
    with server:
        start_rss = rss_kib(server.pid)
        done = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not done.wait(2.0):
                samples.append((time.monotonic() - started, rss_kib(server.pid)))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        started = time.monotonic()
        out = subprocess.run(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-d",
                str(query_file),
                "-B",
                "-n",
                "1",
                "-c",
                "8",
                "-T",
                "1",
                "-q",
                "200",
                "-t",
                "5",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        elapsed = time.monotonic() - started
        done.set()
        thread.join()
        end_rss = rss_kib(server.pid)
    completed = next((line for line in out.splitlines() if "Queries completed" in line), "")
    print(
        f"\nmemory: {count:,} distinct random names with DO=1 in {elapsed:.0f} s;"
        f" {completed.strip()}"
    )
    print(f"  RSS at start {start_rss / 1024:.0f} MiB, at end {end_rss / 1024:.0f} MiB")
    for fraction in (0.25, 0.5, 0.75):
        if samples:
            at, rss = samples[min(len(samples) - 1, int(len(samples) * fraction))]
            print(f"  RSS after {at:4.0f} s: {rss / 1024:.0f} MiB")
    if samples:
        print(f"  RSS max {max(r for _t, r in samples) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--networks", type=int, default=20000)
    parser.add_argument("--random-names", type=int, default=1_000_000, help="0 skips the phase")
    parser.add_argument("--no-pdns", action="store_true", help="skip PowerDNS")
    parser.add_argument("--memory-only", action="store_true", help="only the random-name phase")
    args = parser.parse_args()
    require_tools("dnsperf", "pdns_server", "pdnsutil", "taskset")
    work = workdir()
    dcs = gslb_bench.load_datacenters()
    config = gslb_bench.gslb_config(work, dcs)
    unsigned_queries, signed_queries = work / "gslb-mix.bin", work / "signed-mix.bin"
    count = write_query_file(unsigned_queries, gslb_bench.gslb_mix(args.networks))
    write_query_file(signed_queries, signed_mix(args.networks))
    print(
        f"GSLB mix: {count} A queries for {gslb_bench.SERVICE}, ECS from {args.networks} /24s;"
        f" signed mix: the same with DO=1; work dir {work}"
    )
    print(f"gslb source: {gslb_bench.source_version()}")
    if args.memory_only:
        memory_phase(work, config, args.random_names)
        return
    print(f"{args.runs} runs of {args.seconds:g} s each (+2 s warm-up); medians\n")
    gslb = gslb_bench.gslb_server(work, config, free_port())
    signed = gslb_signed_server(work, config, free_port())
    servers = [signed]
    if not args.no_pdns:
        servers.append(pdns_signed_server(work, dcs, free_port()))
    check_signed(servers)
    plan = [(gslb, "gslb", unsigned_queries), (signed, "signed", signed_queries)]
    plan += [(server, "signed", signed_queries) for server in servers[1:]]
    print_results(gslb_bench.measure_all(plan, args.runs, args.seconds))
    if args.random_names:
        memory_phase(work, config, args.random_names)
    print(f"\nwork dir (configs, logs): {work}")


if __name__ == "__main__":
    main()
