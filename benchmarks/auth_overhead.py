"""Authenticated no-op `/v1` route vs unauthenticated `/healthz`, same server, same run.

Starts `cauce serve` on a throwaway SQLite data dir, creates an API key with the CLI,
then alternates wrk runs against `GET /healthz` and `GET /v1/me` (Bearer key) and
prints requests/s and latency for each plus the ratio of the medians.

    .venv/bin/python benchmarks/auth_overhead.py [--rounds 3] [--seconds 5] [--connections 32]

Needs `wrk` (Debian: `apt-get install wrk`). Target: authenticated >= 0.8x /healthz.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    """One wrk run."""

    route: str
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit("server did not become ready")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int, header: str | None) -> Run:
    """Run wrk once and parse its requests/s and latency percentiles."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        sys.exit(f"wrk saw non-2xx answers for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: a "+/- Stdev" column such as "87.50%" also ends in "50%".
    p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return Run(url.rsplit("/", 1)[-1] if "/v1/" not in url else "/v1/me", rps, p50, p99)


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    cauce = [sys.executable, "-m", "cauce"]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
        env.update(CAUCE_DATA_DIR=str(Path(tmp) / "data"), CAUCE_LOG__FORMAT="json")
        key = subprocess.run(
            [*cauce, "apikey", "create", "--name", "bench", "--scopes", "leads:read"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        with open(Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen(
                [*cauce, "serve", "--port", str(port)], env=env, cwd=tmp, stdout=log, stderr=log
            )
            try:
                base = f"http://127.0.0.1:{port}"
                wait_ready(f"{base}/healthz", server)
                header = f"Authorization: Bearer {key}"
                targets = [(f"{base}/healthz", None), (f"{base}/v1/me", header)]
                for url, h in targets:  # warm-up: imports, caches, connection pools
                    wrk(url, 2, args.connections, h)
                runs: list[Run] = []
                for i in range(args.rounds):
                    order = targets if i % 2 == 0 else targets[::-1]
                    for url, h in order:
                        runs.append(wrk(url, args.seconds, args.connections, h))
            finally:
                server.terminate()
                server.wait(timeout=30)

    print(
        f"wrk -t2 -c{args.connections} -d{args.seconds}s, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, server and wrk on one machine"
    )
    print(f"{'route':<10} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8}   runs req/s")
    medians = {}
    for route in ("healthz", "/v1/me"):
        mine = [r for r in runs if r.route == route]
        medians[route] = statistics.median(r.rps for r in mine)
        print(
            f"{route:<10} {medians[route]:>15.0f} "
            f"{statistics.median(r.p50_ms for r in mine):>8.2f} "
            f"{statistics.median(r.p99_ms for r in mine):>8.2f}   "
            + " ".join(f"{r.rps:.0f}" for r in mine)
        )
    ratio = medians["/v1/me"] / medians["healthz"]
    print(f"authenticated / unauthenticated throughput: {ratio:.2f}x (target >= 0.80x)")


if __name__ == "__main__":
    main()
