"""Benchmark gslb proxy against HAProxy, nginx and a minimal aiohttp proxy (not part of tests).

Every proxy runs one worker pinned to core 1 (taskset), wrk runs on core 0, and all forward to
the same two nginx backends serving a 1 KiB body. Each proxy gets a warm-up and N runs; the
medians of req/s, p50 and p99 are printed with ratios to the minimal aiohttp proxy.

    .venv/bin/python bench/proxy/run.py [--duration 10] [--runs 3] [--connections 64]
        [--only gslb,aiohttp,haproxy,nginx] [--workers N]

Needs: apt-get install -y wrk haproxy nginx. Loopback only.
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {tmp}/backend.pid;
error_log {tmp}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/b_body; proxy_temp_path {tmp}/b_proxy;
  fastcgi_temp_path {tmp}/b_fcgi; uwsgi_temp_path {tmp}/b_uwsgi; scgi_temp_path {tmp}/b_scgi;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port1}; listen 127.0.0.1:{port2};
           location / {{ root {tmp}/www; try_files /1k.bin =404; }} }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {tmp}/proxy.pid;
error_log {tmp}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/p_body; proxy_temp_path {tmp}/p_proxy;
  fastcgi_temp_path {tmp}/p_fcgi; uwsgi_temp_path {tmp}/p_uwsgi; scgi_temp_path {tmp}/p_scgi;
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{port1}; server 127.0.0.1:{port2}; keepalive 128; }}
  server {{ listen 127.0.0.1:{listen};
           location / {{ proxy_pass http://app; proxy_http_version 1.1;
                         proxy_set_header Connection ""; }} }}
}}
"""

HAPROXY = """
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{listen}
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
"""


def wrk(port: int, duration: int, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}", file=sys.stderr)

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--only", default="aiohttp,gslb,haproxy,nginx")
    ap.add_argument("--workers", type=int, default=1, help="gslb workers (unpinned if > 1)")
    ap.add_argument(
        "--unpinned", action="store_true", help="do not pin gslb (to compare worker counts fairly)"
    )
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install -y wrk haproxy nginx", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="gslb-bench-"))
    tmp.chmod(0o755)  # nginx workers run as nobody when started as root
    (tmp / "www").mkdir()
    (tmp / "www" / "1k.bin").write_bytes(b"x" * 1024)
    port1, port2 = free_port(), free_port()
    (tmp / "backend.conf").write_text(NGINX_BACKEND.format(tmp=tmp, port1=port1, port2=port2))
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
        # stderr to a file, never a pipe: a chatty proxy would block on a full pipe.
        log = tmp / f"{port}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
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

    results: dict[str, tuple[float, float, float]] = {}
    try:
        start(["nginx", "-c", str(tmp / "backend.conf"), "-p", str(tmp)], port2)
        ups = [f"127.0.0.1:{port1}", f"127.0.0.1:{port2}"]
        for name in args.only.split(","):
            listen = free_port()
            pin = ["taskset", "-c", "1"]
            if name == "aiohttp":
                cmd = [*pin, PYTHON, str(HERE / "minimal_aiohttp_proxy.py"), str(listen), *ups]
            elif name == "gslb":
                cmd = [
                    PYTHON,
                    "-m",
                    "gslb.proxy.cli",
                    "proxy",
                    "--listen",
                    f"127.0.0.1:{listen}",
                    "--upstream",
                    ups[0],
                    "--upstream",
                    ups[1],
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "WARNING",
                ]
                if args.workers == 1 and not args.unpinned:
                    cmd = [*pin, *cmd]
            elif name == "haproxy":
                cfg = tmp / "haproxy.cfg"
                cfg.write_text(HAPROXY.format(listen=listen, port1=port1, port2=port2))
                cmd = [*pin, "haproxy", "-f", str(cfg), "-db"]
            elif name == "nginx":
                cfg = tmp / "proxy.conf"
                cfg.write_text(NGINX_PROXY.format(tmp=tmp, listen=listen, port1=port1, port2=port2))
                cmd = [*pin, "nginx", "-c", str(cfg), "-p", str(tmp)]
            else:
                print(f"unknown proxy {name}", file=sys.stderr)
                return 2
            proc = start(cmd, listen)
            try:
                wrk(listen, 2, args.connections)  # warm-up
                runs = [wrk(listen, args.duration, args.connections) for _ in range(args.runs)]
            finally:
                stop(proc)
                procs.remove(proc)
            results[name] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
                statistics.median(r[2] for r in runs),
            )
            rps, p50, p99 = results[name]
            print(f"  {name:8} {rps:10.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", flush=True)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    base = results.get("aiohttp")
    print(f"\nmedians of {args.runs} x {args.duration}s, wrk -c{args.connections}, 1 KiB body")
    print(f"{'proxy':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'x aiohttp':>11}")
    for name, (rps, p50, p99) in results.items():
        ratio = f"{rps / base[0]:.2f}" if base and base[0] > 0 else "-"
        print(f"{name:10}{rps:10.0f}{p50:10.2f}{p99:10.2f}{ratio:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
