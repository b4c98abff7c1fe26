"""Failover drill: how long until DNS stops sending clients to a broken datacenter, and back.

Uses the stack of `make run` when one answers on 127.0.0.1:8053, else starts its own `gslb run`.
For each repetition it picks a datacenter and a client subnet steered to it, breaks the
datacenter (`gslb demo fail`), polls `dig` until the answer no longer points at it (failover
time), keeps polling for a while to prove no answer points back at it, then repairs it
(`gslb demo recover`) and polls until the answer returns (recovery time).

Run: .venv/bin/python bench/failover_drill.py [--repetitions 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GSLB = str(ROOT / ".venv" / "bin" / "gslb")
ADMIN = "http://127.0.0.1:8053"
# (datacenter, a client subnet the example steers to it, the datacenter's address)
CASES = [
    ("eu-west", "127.2.0.0/24", "192.0.2.21"),
    ("ap-northeast", "127.3.0.0/24", "198.51.100.31"),
    ("sa-east", "127.4.0.0/24", "198.51.100.41"),
    ("ap-southeast", "127.5.0.0/24", "203.0.113.61"),
    ("us-west", "127.1.0.0/24", "203.0.113.51"),
]
POLL = 0.05
WATCH_AFTER = 5.0  # seconds of answers checked after failover


def dig(subnet: str) -> list[str]:
    out = subprocess.run(
        [
            "dig",
            "@127.0.0.1",
            "-p",
            "5300",
            "www.example.test",
            "A",
            f"+subnet={subnet}",
            "+short",
            "+time=1",
            "+tries=1",
        ],
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.split() if line[0].isdigit()]


def stack_running() -> bool:
    try:
        with urllib.request.urlopen(f"{ADMIN}/status", timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(POLL)
    raise TimeoutError


def answers_first(subnet: str, address: str):  # type: ignore[no-untyped-def]
    return lambda: dig(subnet)[:1] == [address]


def answers_without(subnet: str, address: str):  # type: ignore[no-untyped-def]
    return lambda: address not in dig(subnet)


def demo(action: str, datacenter: str) -> None:
    subprocess.run([GSLB, "demo", action, datacenter], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    stack = None
    if not stack_running():
        print("starting `gslb run` ...")
        stack = subprocess.Popen(
            [GSLB, "run"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(stack_running, 60)
    failovers: list[float] = []
    recoveries: list[float] = []
    stray = 0
    try:
        for index in range(args.repetitions):
            datacenter, subnet, address = CASES[index % len(CASES)]
            wait_until(answers_first(subnet, address), 30)  # steady state first
            time.sleep(1.5)
            demo("fail", datacenter)
            failover = wait_until(answers_without(subnet, address), 30)
            watch_end = time.monotonic() + WATCH_AFTER
            checks = 0
            while time.monotonic() < watch_end:
                stray += address in dig(subnet)
                checks += 1
                time.sleep(POLL)
            demo("recover", datacenter)
            recovery = wait_until(answers_first(subnet, address), 30)
            failovers.append(failover)
            recoveries.append(recovery)
            print(
                f"  {datacenter:13s} client {subnet:14s} failover {failover:5.2f} s   "
                f"recovery {recovery:5.2f} s   answers after failover pointing at it: "
                f"0 of {checks}"
                if not stray
                else f"  STRAY ANSWERS: {stray}"
            )
    finally:
        if stack is not None:
            stack.terminate()
            stack.wait(30)
    print(
        f"\nfailover: median {statistics.median(failovers):.2f} s, max {max(failovers):.2f} s "
        f"(target <= 3 s)\nrecovery: median {statistics.median(recoveries):.2f} s, "
        f"max {max(recoveries):.2f} s (target <= 4 s)\n"
        f"answers pointing at a broken datacenter after failover: {stray}"
    )
    return 0 if max(failovers) <= 3 and max(recoveries) <= 4 and stray == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
