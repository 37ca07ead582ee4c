"""wrk under a gateway: requests/s, latency and the server's CPU per request
(the server process and its live children: `serve --workers`' workers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
from common import ServerProcess

PATH = "/v1/chat/completions"
Result = dict[str, Any]


_WRK_DONE = """
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('WRK_JSON {"requests": %d, "us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', s.requests, s.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of a process and its live children (`serve --workers`'
    workers), all their threads, ended ones too, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if stat.parent.name == str(pid) or int(fields[1]) == pid:
            user, system = user + int(fields[11]) / tick, system + int(fields[12]) / tick
    return user, system


def wrk(
    server: ServerProcess,
    key: str,
    body: dict[str, object],
    secs: float,
    workdir: Path,
    connections: int = 32,
) -> Result:
    """wrk -t1 -c32 for `secs`, plus the server's CPU: ms per request and cores used."""
    assert server.process is not None
    script = workdir / ("wrk-stream.lua" if body.get("stream") else "wrk.lua")
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{orjson.dumps(body).decode()}]]\n'
        f'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n{_WRK_DONE}'
    )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{secs:g}s", "--timeout", "10s", "-s", str(script)]
    cpu = cpu_seconds(server.process.pid)
    run = subprocess.run([*argv, server.url + PATH], capture_output=True, text=True,
                         timeout=secs + 60)  # fmt: skip
    user, system = (b - a for a, b in zip(cpu, cpu_seconds(server.process.pid), strict=True))
    match = re.search(r"^WRK_JSON (.*)$", run.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{run.stdout}{run.stderr}")
    r = json.loads(match.group(1))
    if r["errors"] or r["non2xx"] or not r["requests"]:
        raise RuntimeError(f"wrk against {server.name}: {r}")
    return {**r, "rps": r["requests"] / r["us"] * 1e6, "cores": (user + system) / r["us"] * 1e6,
            "cpu_ms": (user + system) / r["requests"] * 1e3,
            "sys_ms": system / r["requests"] * 1e3}  # fmt: skip
