"""Static-answer benchmark: gslb dns against gdnsd and NSD serving the same zone.

Run: .venv/bin/python bench/dns_static.py [--runs 3] [--seconds 10]
Prints queries/s, average latency and loss for each server, the ratio gslb/peer, and then
gslb's loss at 80% of its own peak rate.
"""

from __future__ import annotations

import argparse

from dnsbench_lib import (
    GSLB,
    ROOT,
    Server,
    free_port,
    gdnsd_server,
    measure,
    median,
    nsd_server,
    require_tools,
    run_dnsperf,
    static_mix,
    workdir,
    write_query_file,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    require_tools("dnsperf", "gdnsd", "nsd", "taskset")
    work = workdir()
    queries = work / "static.bin"
    count = write_query_file(queries, static_mix())
    zone = ROOT / "zones" / "example.test.zone"
    zone_files = {"example.test.": zone}
    print(f"query mix: {count} queries (10% NXDOMAIN, half with EDNS), work dir {work}")
    print(f"{args.runs} runs of {args.seconds:g} s each; server on core 1, dnsperf on core 0\n")

    port = free_port()
    gslb = Server(
        "gslb",
        [
            *GSLB,
            "--log-level",
            "WARNING",
            "dns",
            "--zones",
            str(ROOT / "zones"),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--admin",
            "off",
            "--rrl-rate",
            "0",  # dnsperf is one client at full speed; peers run without RRL too
        ],
        port,
    )
    servers = [
        gslb,
        gdnsd_server(work, zone_files, free_port()),
        nsd_server(work, zone_files, free_port()),
    ]
    results = {}
    for server in servers:
        results[server.name] = measure(server, queries, args.runs, args.seconds)
        runs = ", ".join(f"{r.qps:,.0f}" for r in results[server.name])
        print(f"  {server.name:6s} runs: {runs} q/s")
    print()
    print(f"{'server':8s} {'queries/s':>12s} {'avg latency':>12s} {'lost':>8s} {'gslb/peer':>10s}")
    ours = median(results["gslb"], "qps")
    for name, runs in results.items():
        qps = median(runs, "qps")
        ratio = "" if name == "gslb" else f"{ours / qps:.2f}"
        print(
            f"{name:8s} {qps:12,.0f} {median(runs, 'latency_ms'):10.3f}ms "
            f"{median(runs, 'loss_percent'):7.3f}% {ratio:>10s}"
        )
    target = int(ours * 0.8)
    with gslb:
        paced = run_dnsperf(port, queries, args.seconds, rate=target)
    print(
        f"\ngslb at 80% of its peak ({target:,} q/s offered): {paced.qps:,.0f} q/s answered, "
        f"{paced.lost} of {paced.sent} lost ({paced.loss_percent:.3f}%)"
    )


if __name__ == "__main__":
    main()
