"""Flood benchmark for `gslb dns` protections (RRL, bounded caches). Loopback only.

Mode `flood` (spoofed-source reflection attack):
  * starts `gslb dns --zones zones --listen 127.0.0.1:PORT --rrl-rate N --rrl-slip K
    --workers W`, pinned to core 1 with taskset;
  * an attacker process on core 0 sends queries as fast as it can (or --attack-pps) from
    sockets bound to the "victim" network 127.9.0.0/24: the victim owns those sockets and
    counts what the server reflects at it (full answers, truncated slips, bytes) without
    ever having asked (forked processes share the sockets: the attacker only sends, the
    victim only reads, which is what a spoofed source looks like from the server);
  * a legitimate client at 127.10.0.1 asks 20 queries/s, retrying over TCP on TC=1 or
    timeout, as a real resolver does, and must get every answer.
  Prints answers/s and slips/s seen by the victim, and the amplification factor
  (bytes reflected at the victim / bytes the attacker sent), which RRL keeps <= 1.

Mode `ecs` (memory bound under random names and ECS subnets):
  * one million queries (--ecs-queries), half for random names under the zone
    (NXDOMAIN) and half for service names with random ECS subnets (RFC 7871 option 8),
    from 16 source networks, with a bounded number in flight;
  * prints the server's VmRSS/VmHWM (summed over its processes) before and after, the
    query rate served and the legitimate client's success.

Usage (from the repository root, after the server integrates RRL):
  .venv/bin/python bench/dns_flood.py --mode flood --duration 10 --rrl-rate 5 --rrl-slip 2
  .venv/bin/python bench/dns_flood.py --mode ecs --ecs-queries 1000000
  .venv/bin/python bench/dns_flood.py --mode both
  .venv/bin/python bench/dns_flood.py --mode micro    # timeit of RRL/ACL/cookie/LRU calls
  Against a server already running: --no-server --port 5300 --server-pid PID
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing as mp
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TC = 0x0200
TYPE = {"A": 1, "NS": 2, "MX": 15, "TXT": 16, "AAAA": 28, "ANY": 255}


# --- wire format -------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    return bytes(out) + b"\x00"


def ecs_option(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """EDNS Client Subnet option (RFC 7871): family, source prefix, scope 0, truncated address."""
    family = 1 if network.version == 4 else 2
    prefix = network.prefixlen
    addr = network.network_address.packed[: (prefix + 7) // 8]
    data = struct.pack("!HBB", family, prefix, 0) + addr
    return struct.pack("!HH", 8, len(data)) + data


def build_query(
    qid: int,
    name: str,
    qtype: str = "A",
    payload: int = 1232,
    options: bytes = b"",
    edns: bool = True,
) -> bytes:
    header = struct.pack("!HHHHHH", qid & 0xFFFF, 0, 1, 0, 0, 1 if edns else 0)
    question = encode_name(name) + struct.pack("!HH", TYPE[qtype], 1)
    opt = b""
    if edns:
        opt = b"\x00" + struct.pack("!HHIH", 41, payload, 0, len(options)) + options
    return header + question + opt


def response_summary(data: bytes) -> tuple[int, int, int, int]:
    """(id, flags, rcode, ancount) of a response; rcode -1 if too short."""
    if len(data) < 12:
        return -1, 0, -1, 0
    qid, flags, _qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    return qid, flags, flags & 0xF, an


# --- processes ---------------------------------------------------------------------------------


def pin(core: int) -> None:
    try:
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def start_server(args: argparse.Namespace, port: int, rrl_rate: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "gslb.cli",
        "--log-level",
        "WARNING",
        "dns",
        "--zones",
        args.zones,
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--admin",
        "off",
    ]
    if not args.no_rrl_flags:
        cmd += ["--rrl-rate", str(rrl_rate), "--rrl-slip", str(args.rrl_slip)]
    if args.config:
        cmd += ["--config", args.config]
    cmd += args.server_arg
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(args.server_core), *cmd]
    print("server:", " ".join(cmd), flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def wait_ready(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    probe = build_query(1, "ns1." + ZONE_NAME, "A")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"server exited with status {proc.returncode}")
            s.sendto(probe, ("127.0.0.1", port))
            try:
                s.recvfrom(4096)
                return
            except TimeoutError:
                continue
    raise SystemExit(f"server did not answer within {timeout:.0f} s")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return pids


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over the server and its worker processes (KiB)."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])
        except OSError:
            continue
    return total


def server_pid(proc: subprocess.Popen[bytes] | None, args: argparse.Namespace) -> int | None:
    if args.server_pid:
        return int(args.server_pid)
    if proc is None:
        return None
    # With taskset the Popen pid is taskset's, which execs the server: same pid.
    return proc.pid


# --- legitimate client ------------------------------------------------------------------------


@dataclass
class LegitResult:
    asked: int = 0
    udp_answered: int = 0
    tcp_after_tc: int = 0
    tcp_after_timeout: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)


def tcp_query(port: int, source: str, packet: bytes, timeout: float) -> bytes | None:
    try:
        with socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        ) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
            return buf[2:]
    except OSError:
        return None


def legit_client(port: int, duration: float, qps: float, core: int, out: Any) -> None:
    pin(core)
    res = LegitResult()
    source = "127.10.0.1"
    names = ["static." + ZONE_NAME, "mail." + ZONE_NAME, "ns1." + ZONE_NAME]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        start = time.monotonic()
        n = 0
        while True:
            due = start + n / qps
            now = time.monotonic()
            if due - start >= duration:
                break
            if due > now:
                time.sleep(due - now)
            n += 1
            qid = n & 0xFFFF
            packet = build_query(qid, names[n % len(names)], "A")
            res.asked += 1
            t0 = time.monotonic()
            answer = None
            for _attempt in range(2):  # UDP, one retry, then TCP
                s.sendto(packet, ("127.0.0.1", port))
                s.settimeout(0.4)
                try:
                    while True:
                        data, _ = s.recvfrom(65535)
                        rid, flags, _rc, _an = response_summary(data)
                        if rid == qid:
                            answer = data
                            break
                except TimeoutError:
                    continue
                break
            if answer is not None and not response_summary(answer)[1] & TC:
                res.udp_answered += 1
            else:
                reply = tcp_query(port, source, packet, 2.0)
                if reply is None:
                    res.failed += 1
                    continue
                if answer is not None:
                    res.tcp_after_tc += 1
                else:
                    res.tcp_after_timeout += 1
            res.latencies.append(time.monotonic() - t0)
    out.send(res)


# --- flood mode -------------------------------------------------------------------------------


def attacker(
    socks: list[socket.socket], port: int, duration: float, pps: float, core: int, out: Any
) -> None:
    pin(core)
    target = ("127.0.0.1", port)
    # NS query at the apex with a big EDNS buffer: the answer (NS + glue) is several times the
    # query, the classic amplification vector.
    packets = [build_query(i, ZONE_NAME, "NS", payload=4096) for i in range(64)]
    sent = sent_bytes = errors = 0
    nsock = len(socks)
    start = time.monotonic()
    end = start + duration
    i = 0
    while True:
        if i % 256 == 0:
            now = time.monotonic()
            if now >= end:
                break
            if pps and i > (now - start) * pps:
                time.sleep(0.001)
                continue
        pkt = packets[i & 63]
        try:
            socks[i % nsock].sendto(pkt, target)
            sent += 1
            sent_bytes += len(pkt)
        except (BlockingIOError, OSError):
            errors += 1
        i += 1
    out.send((sent, sent_bytes, errors, time.monotonic() - start))


def victim(socks: list[socket.socket], duration: float, core: int, out: Any) -> None:
    pin(core)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    full = slipped = other = nbytes = 0
    per_second: dict[int, list[int]] = {}
    start = time.monotonic()
    end = start + duration
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            while True:
                try:
                    data = s.recv(65535)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                nbytes += len(data)
                _id, flags, rcode, an = response_summary(data)
                sec = int(time.monotonic() - start)
                bucket = per_second.setdefault(sec, [0, 0])
                if flags & TC:
                    slipped += 1
                    bucket[1] += 1
                elif rcode == 0 and an > 0:
                    full += 1
                    bucket[0] += 1
                else:
                    other += 1
    sel.close()
    out.send((full, slipped, other, nbytes, per_second))


def run_flood(args: argparse.Namespace, port: int, pid: int | None) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    socks = []
    for i in range(args.attack_sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind((f"127.9.0.{1 + i}", 0))
        s.setblocking(False)
        socks.append(s)
    mem_before = memory_kib(pid) if pid else None
    pipes = [ctx.Pipe(duplex=False) for _ in range(3)]
    procs = [
        ctx.Process(
            target=victim, args=(socks, args.duration + 1.5, args.client_core, pipes[0][1])
        ),
        ctx.Process(
            target=legit_client,
            args=(port, args.duration, args.legit_qps, args.client_core, pipes[1][1]),
        ),
        ctx.Process(
            target=attacker,
            args=(socks, port, args.duration, args.attack_pps, args.client_core, pipes[2][1]),
        ),
    ]
    for p in procs:
        p.start()
    results = [r.recv() for r, _w in pipes]
    for p in procs:
        p.join()
    for s in socks:
        s.close()
    for r, w in pipes:
        r.close()
        w.close()
    full, slipped, other, recv_bytes, per_second = results[0]
    legit: LegitResult = results[1]
    sent, sent_bytes, errors, elapsed = results[2]
    mem_after = memory_kib(pid) if pid else None
    return {
        "elapsed": elapsed,
        "sent": sent,
        "sent_bytes": sent_bytes,
        "send_errors": errors,
        "full": full,
        "slipped": slipped,
        "other": other,
        "recv_bytes": recv_bytes,
        "per_second": per_second,
        "legit": legit,
        "mem_before": mem_before,
        "mem_after": mem_after,
    }


def print_flood(r: dict[str, Any], args: argparse.Namespace) -> None:
    t = r["elapsed"]
    rrl = "from config" if args.no_rrl_flags else f"rate {args.rrl_rate}/s slip {args.rrl_slip}"
    print(f"\n== flood: rrl {rrl}, {t:.1f} s ==")
    print(
        f"attacker sent      {r['sent']:>10} queries  {r['sent'] / t:>10.0f}/s  "
        f"{r['sent_bytes']:>12} bytes  (send errors {r['send_errors']})"
    )
    print(f"victim got answers {r['full']:>10}          {r['full'] / t:>10.1f}/s")
    print(f"victim got slips   {r['slipped']:>10}          {r['slipped'] / t:>10.1f}/s  (TC=1)")
    print(f"victim got other   {r['other']:>10}")
    amp = r["recv_bytes"] / r["sent_bytes"] if r["sent_bytes"] else 0.0
    print(f"bytes reflected    {r['recv_bytes']:>10}  amplification {amp:.3f} (must be <= 1)")
    steady = [v for k, v in sorted(r["per_second"].items()) if 1 <= k < int(t)]
    if steady:
        print("steady answers/s   " + " ".join(str(v[0]) for v in steady))
        print("steady slips/s     " + " ".join(str(v[1]) for v in steady))
    print_legit(r["legit"])
    print_mem(r)


def print_legit(legit: LegitResult) -> None:
    answered = legit.udp_answered + legit.tcp_after_tc + legit.tcp_after_timeout
    lat = sorted(legit.latencies)
    p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    print(
        f"legit 127.10.0.1   asked {legit.asked}, answered {answered} "
        f"(udp {legit.udp_answered}, tcp after TC {legit.tcp_after_tc}, "
        f"tcp after timeout {legit.tcp_after_timeout}), failed {legit.failed}; "
        f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms"
        + ("  OK" if answered == legit.asked else "  LOST ANSWERS")
    )


def print_mem(r: dict[str, Any]) -> None:
    if r.get("mem_before") and r.get("mem_after"):
        b, a = r["mem_before"], r["mem_after"]
        print(
            f"server memory      VmRSS {b['VmRSS'] / 1024:.1f} -> {a['VmRSS'] / 1024:.1f} MiB, "
            f"VmHWM {b['VmHWM'] / 1024:.1f} -> {a['VmHWM'] / 1024:.1f} MiB"
        )


# --- ECS / random-name mode -------------------------------------------------------------------


def ecs_load(port: int, total: int, window: int, core: int, seed: int, out: Any) -> None:
    """Closed loop: keep `window` queries in flight from 16 source networks; count replies."""
    pin(core)
    rng = random.Random(seed)
    socks = []
    for i in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind((f"127.9.{1 + i}.1", 0))
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    services = SERVICE_NAMES
    target = ("127.0.0.1", port)
    sent = received = timeouts = 0
    in_flight: dict[tuple[int, int], float] = {}
    qid = 0
    start = time.monotonic()
    last_sweep = start
    while sent < total or in_flight:
        now = time.monotonic()
        while sent < total and len(in_flight) < window:
            qid = (qid + 1) & 0xFFFF
            sock_index = sent % 16
            if sent % 2:
                name = f"r{rng.getrandbits(48):x}.{ZONE_NAME}"
                pkt = build_query(qid, name, "A")
            else:
                if rng.random() < 0.7:
                    net = ipaddress.IPv4Network((rng.getrandbits(24) << 8, 24))
                else:
                    net = ipaddress.IPv6Network((rng.getrandbits(56) << 72, 56))
                pkt = build_query(qid, rng.choice(services), "A", options=ecs_option(net))
            try:
                socks[sock_index].sendto(pkt, target)
            except (BlockingIOError, OSError):
                break
            in_flight[(sock_index, qid)] = now
            sent += 1
        for key, _ in sel.select(timeout=0.01):
            s = key.fileobj
            idx = socks.index(s)  # type: ignore[arg-type]
            while True:
                try:
                    data = s.recv(65535)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                rid = response_summary(data)[0]
                if in_flight.pop((idx, rid), None) is not None:
                    received += 1
        if now - last_sweep > 0.1:
            last_sweep = now
            stale = [k for k, t0 in in_flight.items() if now - t0 > 0.5]
            for k in stale:
                del in_flight[k]
            timeouts += len(stale)
    sel.close()
    for s in socks:
        s.close()
    out.send((sent, received, timeouts, time.monotonic() - start))


def run_ecs(args: argparse.Namespace, port: int, pid: int | None) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    mem_before = memory_kib(pid) if pid else None
    r_load, w_load = ctx.Pipe(duplex=False)
    load = ctx.Process(
        target=ecs_load,
        args=(port, args.ecs_queries, args.ecs_window, args.client_core, args.seed, w_load),
    )
    load.start()
    # The legitimate client runs until the load is done (checked in slices of 5 s).
    legit_total = LegitResult()
    peak = dict(mem_before) if mem_before else None
    while True:
        r_legit, w_legit = ctx.Pipe(duplex=False)
        legit = ctx.Process(
            target=legit_client, args=(port, 5.0, args.legit_qps, args.client_core, w_legit)
        )
        legit.start()
        part: LegitResult = r_legit.recv()
        legit.join()
        r_legit.close()
        w_legit.close()
        for name in ("asked", "udp_answered", "tcp_after_tc", "tcp_after_timeout", "failed"):
            setattr(legit_total, name, getattr(legit_total, name) + getattr(part, name))
        legit_total.latencies += part.latencies
        if pid and peak is not None:
            now_mem = memory_kib(pid)
            peak = {k: max(peak[k], now_mem[k]) for k in peak}
            print(f"  ... server VmRSS {now_mem['VmRSS'] / 1024:.1f} MiB", flush=True)
        if not load.is_alive() or r_load.poll():
            break
    sent, received, timeouts, elapsed = r_load.recv()
    load.join()
    r_load.close()
    w_load.close()
    return {
        "sent": sent,
        "received": received,
        "timeouts": timeouts,
        "elapsed": elapsed,
        "legit": legit_total,
        "mem_before": mem_before,
        "mem_after": memory_kib(pid) if pid else None,
        "mem_peak": peak,
    }


def print_ecs(r: dict[str, Any], args: argparse.Namespace) -> None:
    t = r["elapsed"]
    print(f"\n== ecs/random names: {r['sent']} queries in {t:.1f} s ==")
    print(
        f"answered {r['received']} ({r['received'] / t:.0f}/s), "
        f"lost/timed out {r['timeouts']}, window {args.ecs_window}"
    )
    print_legit(r["legit"])
    print_mem(r)
    if r.get("mem_peak"):
        print(f"server peak VmHWM  {r['mem_peak']['VmHWM'] / 1024:.1f} MiB")


# --- micro benchmarks of the protection components (no server) --------------------------------


def run_micro(number: int = 200_000) -> None:
    import timeit

    sys.path.insert(0, str(ROOT))
    from gslb.clock import FakeClock
    from gslb.dns.acl import AccessList
    from gslb.dns.cookies import CookieJar
    from gslb.dns.rrl import ResponseClass, ResponseRateLimiter, RrlSettings
    from gslb.util.lru import LruCache

    rng = random.Random(1)
    key = encode_name("www." + ZONE_NAME)
    client = bytes([192, 0, 2, 7])
    v4 = [rng.randbytes(4) for _ in range(number)]
    v6 = [rng.randbytes(16) for _ in range(number)]
    answer = ResponseClass.ANSWER

    def per_call(stmt: Any, n: int = number) -> str:
        best = min(timeit.repeat(stmt, number=n, repeat=3))
        return f"{best / n * 1e6:7.3f} us"

    lim = ResponseRateLimiter(RrlSettings())
    print("rrl.check one key, limited      ", per_call(lambda: lim.check(client, 4, answer, key)))
    lim = ResponseRateLimiter(RrlSettings(exempt=(ipaddress.ip_network("198.51.100.0/24"),)))
    print("rrl.check with exempt list      ", per_call(lambda: lim.check(client, 4, answer, key)))
    for label, addrs in (("v4", v4), ("v6", v6)):
        lim = ResponseRateLimiter(RrlSettings())
        it = iter(addrs * 3)
        print(
            f"rrl.check random {label} networks    ",
            per_call(lambda it=it, lim=lim: lim.check(next(it), 4, answer, key)),
            f"(table {len(lim)})",
        )
    acl = AccessList(allow=["192.0.2.0/24", "2001:db8::/32"], deny=["192.0.2.128/25"])
    it4 = iter(v4 * 3)
    print("acl.check (3 nets, random v4)   ", per_call(lambda: acl.check(next(it4))))
    jar = CookieJar(bytes(16), FakeClock(1_700_000_000))
    cc = bytes(8)
    sc = jar.make(cc, client)
    print("cookie make                      ", per_call(lambda: jar.make(cc, client)))
    print("cookie check (valid)             ", per_call(lambda: jar.check(cc, sc, client)))
    print("cookie respond (valid, echoed)   ", per_call(lambda: jar.respond(cc, sc, client)))
    lru: LruCache[bytes, int] = LruCache(100_000)
    for a in v4[:100_000]:
        lru.put(a, 1)
    it4 = iter(v4 * 3)
    print("lru.get (100k entries, mixed)    ", per_call(lambda: lru.get(next(it4))))
    it4 = iter(v4 * 3)
    print("lru.put (full, evicting)         ", per_call(lambda: lru.put(next(it4)[::-1], 1)))


# --- main -------------------------------------------------------------------------------------

ZONE_NAME = "example.test"
SERVICE_NAMES = ["www.example.test", "api.example.test", "static.example.test"]


def main(argv: list[str] | None = None) -> int:
    global ZONE_NAME, SERVICE_NAMES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("flood", "ecs", "both", "micro"), default="flood")
    p.add_argument("--duration", type=float, default=10.0, help="flood seconds (default 10)")
    p.add_argument("--rrl-rate", type=int, default=5, help="server --rrl-rate for the flood")
    p.add_argument("--rrl-slip", type=int, default=2)
    p.add_argument("--ecs-rrl-rate", type=int, default=0, help="server --rrl-rate in ecs mode")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--zones", default="zones")
    p.add_argument("--config", help="server --config (a GSLB YAML with service names)")
    p.add_argument("--zone-name", default=ZONE_NAME)
    p.add_argument("--service", action="append", help="service names for ECS queries")
    p.add_argument("--server-arg", action="append", default=[], help="extra server argument")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--client-core", type=int, default=0)
    p.add_argument("--attack-sockets", type=int, default=8)
    p.add_argument("--attack-pps", type=float, default=0, help="0 = as fast as possible")
    p.add_argument("--legit-qps", type=float, default=20.0)
    p.add_argument("--ecs-queries", type=int, default=1_000_000)
    p.add_argument("--ecs-window", type=int, default=256, help="ECS queries in flight")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--no-rrl-flags", action="store_true", help="do not pass --rrl-* (RRL from --config)"
    )
    p.add_argument("--no-server", action="store_true", help="use a running server (--port)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--server-pid", type=int, default=0, help="for memory figures (--no-server)")
    args = p.parse_args(argv)
    ZONE_NAME = args.zone_name.rstrip(".")
    if args.service:
        SERVICE_NAMES = [s.rstrip(".") for s in args.service]

    if args.mode == "micro":
        run_micro()
        return 0
    modes = ["flood", "ecs"] if args.mode == "both" else [args.mode]
    status = 0
    for mode in modes:
        port = args.port or free_port()
        proc = None
        if not args.no_server:
            rate = args.rrl_rate if mode == "flood" else args.ecs_rrl_rate
            proc = start_server(args, port, rate)
        try:
            wait_ready(port, proc)
            pid = server_pid(proc, args)
            if mode == "flood":
                result = run_flood(args, port, pid)
                print_flood(result, args)
                amp = result["recv_bytes"] / max(1, result["sent_bytes"])
                legit = result["legit"]
                if amp > 1.0 or legit.failed:
                    status = 1
            else:
                result = run_ecs(args, port, pid)
                print_ecs(result, args)
                if result["legit"].failed:
                    status = 1
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
