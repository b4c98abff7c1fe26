"""Benchmark gslb proxy against nginx (upstream keepalive) and HAProxy in one run (not a test).

Layout: each proxy runs one worker pinned alone to core 1 (taskset); wrk and the two nginx
backends share core 0. Rows: 1 KiB and 16 KiB bodies, gzip (16 KiB of text, Accept-Encoding:
gzip) and TLS (1 KiB over HTTPS, keep-alive). Within a row the proxies run in turns (run 1 of
each, then run 2 of each ...), so a noisy neighbour hits all of them alike; medians of req/s,
p50 and p99 are printed with gslb's ratio to nginx.

    .venv/bin/python bench/proxy/run.py [--duration 5] [--runs 3] [--connections 64]
        [--rows 1k,16k,gzip,tls] [--only gslb,nginx,haproxy] [--baseline DIR]

--baseline DIR adds a row "gslb-base" for another checkout's gslb package (e.g. `git archive
<commit> gslb | tar -x -C DIR`), to compare two versions in the same run.

Needs: apt-get install -y wrk haproxy nginx openssl (taskset is util-linux). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = sys.executable
PROXY_CORE = "1"
LOAD_CORE = "0"  # wrk and the backends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


TEMP = """
  client_body_temp_path {tmp}/{p}_body; proxy_temp_path {tmp}/{p}_proxy;
  fastcgi_temp_path {tmp}/{p}_fcgi; uwsgi_temp_path {tmp}/{p}_uwsgi; scgi_temp_path {tmp}/{p}_scgi;
"""

NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {tmp}/backend.pid;
error_log {tmp}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp}
  types {{ text/plain txt; application/octet-stream bin; }}
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port1}; listen 127.0.0.1:{port2};
           location / {{ root {tmp}/www; }} }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {tmp}/proxy-{listen}.pid;
error_log {tmp}/proxy-{listen}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp}
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{port1}; server 127.0.0.1:{port2}; keepalive 128; }}
  gzip {gzip}; gzip_types text/plain; gzip_comp_level 6; gzip_proxied any; gzip_min_length 256;
  server {{ listen 127.0.0.1:{listen} {ssl};
           {ssl_files}
           location / {{ proxy_pass http://app; proxy_http_version 1.1;
                         proxy_set_header Connection ""; }} }}
}}
"""

HAPROXY = """
global
  nbthread 1
  maxconn 4000
  {tune}
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{listen} {ssl}
  {compression}
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
"""

GSLB = """
proxy:
  status_path: /health
  regions:
    bench:
      listeners:
        - {{listen: "127.0.0.1:{listen}"{tls}}}
      routes:
        - {{pool: app, compress: {compress}}}
      pools:
        app:
          balance: round_robin
          members: ["127.0.0.1:{port1}", "127.0.0.1:{port2}"]
"""

ROWS = {
    # name: (path, tls, gzip, wrk headers)
    "1k": ("/1k.bin", False, False, []),
    "16k": ("/16k.bin", False, False, []),
    "gzip": ("/16k.txt", False, True, ["-H", "Accept-Encoding: gzip"]),
    "tls": ("/1k.bin", True, False, []),
}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (nginx workers) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wrk(
    url: str, duration: int, connections: int, headers: list[str], pid: int = 0
) -> tuple[float, float, float, float]:
    """req/s, p50 ms, p99 ms and the proxy's CPU microseconds per request (robust to noise:
    what the proxy costs, whatever else the machine runs)."""
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
        + ["--latency", *headers, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = cpu_seconds(pid) - before if pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}", file=sys.stderr)

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99"), used * 1e6 / max(count, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rows", default="1k,16k,gzip,tls")
    ap.add_argument("--only", default="gslb,nginx,haproxy")
    ap.add_argument("--baseline", help="directory holding another version's gslb package")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "haproxy", "taskset", "openssl"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install -y wrk haproxy nginx openssl", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="gslb-bench-"))
    tmp.chmod(0o755)  # nginx workers run as nobody when started as root
    www = tmp / "www"
    www.mkdir()
    (www / "1k.bin").write_bytes(b"x" * 1024)
    (www / "16k.bin").write_bytes(os.urandom(16384))
    words = b"the quick brown fox jumps over the lazy dog; gslb proxies it. "
    (www / "16k.txt").write_bytes((words * (16384 // len(words) + 1))[:16384])
    for p in ("www",):
        (tmp / p).chmod(0o755)
    cert, key, pem = tmp / "cert.pem", tmp / "key.pem", tmp / "both.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=bench"]
        + ["-addext", "subjectAltName=DNS:bench,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    port1, port2 = free_port(), free_port()
    (tmp / "backend.conf").write_text(
        NGINX_BACKEND.format(tmp=tmp, port1=port1, port2=port2, temp=TEMP.format(tmp=tmp, p="b"))
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], port: int, root: Path = ROOT) -> subprocess.Popen[bytes]:
        # stderr to a file, never a pipe: a chatty proxy would block on a full pipe.
        log = tmp / f"{port}.log"
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        procs.append(proc)
        try:
            wait_port(port)
        except RuntimeError:
            proc.kill()
            proc.wait()
            text = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} did not start:\n{text}") from None
        return proc

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        procs.remove(proc)

    def command(name: str, listen: int, tls: bool, gzip: bool) -> list[str]:
        pin = ["taskset", "-c", PROXY_CORE]
        if name in ("gslb", "gslb-base"):
            cfg = tmp / f"gslb-{listen}.yaml"
            tls_yaml = (
                f', mode: https, certificates: [{{hosts: [bench], cert: "{cert}", key: "{key}"}}]'
                if tls
                else ""
            )
            cfg.write_text(
                GSLB.format(
                    listen=listen,
                    tls=tls_yaml,
                    compress="true" if gzip else "false",
                    port1=port1,
                    port2=port2,
                )
            )
            return [*pin, PYTHON, "-m", "gslb.proxy.cli", "proxy", "--config", str(cfg)] + [
                "--region",
                "bench",
                "--log-level",
                "WARNING",
            ]
        if name == "haproxy":
            cfg = tmp / f"haproxy-{listen}.cfg"
            cfg.write_text(
                HAPROXY.format(
                    listen=listen,
                    port1=port1,
                    port2=port2,
                    ssl=f"ssl crt {pem}" if tls else "",
                    tune="tune.comp.maxlevel 6" if gzip else "",
                    compression="compression algo gzip\n  compression type text/plain"
                    if gzip
                    else "",
                )
            )
            return [*pin, "haproxy", "-f", str(cfg), "-db"]
        if name == "nginx":
            cfg = tmp / f"nginx-{listen}.conf"
            cfg.write_text(
                NGINX_PROXY.format(
                    tmp=tmp,
                    listen=listen,
                    port1=port1,
                    port2=port2,
                    temp=TEMP.format(tmp=tmp, p=f"p{listen}"),
                    gzip="on" if gzip else "off",
                    ssl="ssl" if tls else "",
                    ssl_files=f"ssl_certificate {cert}; ssl_certificate_key {key};" if tls else "",
                )
            )
            return [*pin, "nginx", "-c", str(cfg), "-p", str(tmp)]
        raise ValueError(f"unknown proxy {name}")

    names = args.only.split(",")
    if args.baseline:
        names.insert(1, "gslb-base")
    table: list[tuple[str, str, float, float, float, float]] = []
    try:
        backend = ["taskset", "-c", LOAD_CORE, "nginx", "-c", str(tmp / "backend.conf")]
        start([*backend, "-p", str(tmp)], port2)
        for row in args.rows.split(","):
            path, tls, gzip, headers = ROWS[row]
            scheme = "https" if tls else "http"
            running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
            for name in names:
                listen = free_port()
                root = Path(args.baseline) if name == "gslb-base" else ROOT
                running[name] = (start(command(name, listen, tls, gzip), listen, root), "")
                url = f"{scheme}://127.0.0.1:{listen}{path}"
                running[name] = (running[name][0], url)
                wrk(url, 1, args.connections, headers)  # warm-up
            samples: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
            try:
                for _ in range(args.runs):
                    for name in names:
                        proc, url = running[name]
                        samples[name].append(
                            wrk(url, args.duration, args.connections, headers, proc.pid)
                        )
            finally:
                for proc, _url in running.values():
                    stop(proc)
            for name in names:
                runs = samples[name]
                med = (
                    statistics.median(r[0] for r in runs),
                    statistics.median(r[1] for r in runs),
                    statistics.median(r[2] for r in runs),
                    statistics.median(r[3] for r in runs),
                )
                table.append((row, name, *med))
                print(
                    f"  {row:5} {name:9} {med[0]:9.0f} req/s  p50 {med[1]:7.2f} ms"
                    f"  p99 {med[2]:7.2f} ms  cpu {med[3]:6.1f} us/req",
                    flush=True,
                )
    finally:
        for proc in list(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nmedians of {args.runs} x {args.duration}s, wrk -t1 -c{args.connections}; "
        f"proxy alone on core {PROXY_CORE}, wrk + backends on core {LOAD_CORE}; "
        "cpu: the proxy's own CPU time per request"
    )
    head = (
        "row",
        "proxy",
        "req/s",
        "p50 ms",
        "p99 ms",
        "x nginx",
        "p99/nginx",
        "cpu us",
        "cpu/ngx",
    )
    print("{:6}{:10}{:>9}{:>9}{:>9}{:>9}{:>11}{:>9}{:>9}".format(*head))
    nginx = {r[0]: r for r in table if r[1] == "nginx"}
    for row, name, rps, p50, p99, cpu in table:
        ref = nginx.get(row)
        ratio = f"{rps / ref[2]:.2f}" if ref and ref[2] else "-"
        tail = f"{p99 / ref[4]:.2f}" if ref and ref[4] else "-"
        # nginx's CPU per request over ours: the throughput ratio on a quiet dedicated core.
        cost = f"{ref[5] / cpu:.2f}" if ref and cpu else "-"
        print(
            f"{row:6}{name:10}{rps:9.0f}{p50:9.2f}{p99:9.2f}{ratio:>9}{tail:>11}{cpu:9.1f}{cost:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
