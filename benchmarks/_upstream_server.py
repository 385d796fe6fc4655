"""A local upstream for the HTTP benchmarks, run in its own process (own event loop, own CPU).

``python benchmarks/_upstream_server.py [--cpu N] [--uvloop]`` listens on 127.0.0.1 on an
ephemeral port and prints ``PORT <n>`` once it accepts connections.

- ``GET /json``: a small JSON body (what a CRM read looks like, minus the work).
- ``* /work``: 200, except 503 in any phase whose name starts with ``outage``.
- ``POST /_control?phase=<name>``: switch phase (counts are kept per phase).
- ``GET /_stats``: ``{phase: {status: count}}`` of ``/work`` requests.

Helpers start it with :func:`start_server` and stop it with ``process.terminate()``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from aiohttp import web

BODY = b'{"id":101,"properties":{"email":"ana@example.com","firstname":"Ana"}}'


def build_app() -> web.Application:
    """The benchmark upstream (see the module docstring)."""
    state: dict[str, str] = {"phase": "steady"}
    counts: defaultdict[str, Counter[int]] = defaultdict(Counter)

    async def json_route(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def work(request: web.Request) -> web.Response:
        await request.read()
        phase = state["phase"]
        status = 503 if phase.startswith("outage") else 200
        counts[phase][status] += 1
        return web.Response(status=status, body=BODY, content_type="application/json")

    async def control(request: web.Request) -> web.Response:
        state["phase"] = request.query["phase"]
        return web.Response(text=state["phase"])

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {phase: {str(k): v for k, v in c.items()} for phase, c in counts.items()}
        )

    app = web.Application()
    app.router.add_get("/json", json_route)
    app.router.add_route("*", "/work", work)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    return app


async def serve() -> None:
    """Serve until killed."""
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def start_server(
    *, cpu: int | None = None, uvloop: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """Start the server in a child process; return it and its port."""
    args = [sys.executable, str(Path(__file__).resolve())]
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    if uvloop:
        args.append("--uvloop")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"upstream server did not start: {line!r}")
    return process, int(line.split()[1])


def main() -> None:
    """Parse arguments, pin the CPU if asked, serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
