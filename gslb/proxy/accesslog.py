"""Access log lines in the combined format or as JSON, written to the gslb.proxy.access logger."""

from __future__ import annotations

import json
import logging
import time

access_log = logging.getLogger("gslb.proxy.access")


def format_combined(
    remote: str,
    method: str,
    target: str,
    version: str,
    status: int,
    size: int,
    referer: str,
    agent: str,
    when: float,
) -> str:
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(when))
    return (
        f'{remote} - - [{stamp}] "{method} {target} HTTP/{version}" {status} {size} '
        f'"{referer or "-"}" "{agent or "-"}"'
    )


def format_json(fields: dict[str, object]) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def write(
    fmt: str,
    remote: str,
    method: str,
    target: str,
    version: str,
    status: int,
    size: int,
    referer: str,
    agent: str,
    when: float,
    duration: float,
    member: str,
) -> None:
    if fmt == "combined":
        line = format_combined(remote, method, target, version, status, size, referer, agent, when)
    else:
        line = format_json(
            {
                "remote": remote,
                "method": method,
                "target": target,
                "status": status,
                "bytes": size,
                "referer": referer,
                "agent": agent,
                "time": when,
                "duration_ms": round(duration * 1000, 3),
                "member": member,
            }
        )
    access_log.info(line)
