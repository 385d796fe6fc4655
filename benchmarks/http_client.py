"""Outbound HTTP throughput at 64 concurrent requests: raw aiohttp vs Cauce's client vs httpx.

A local aiohttp.web server runs in a separate process (``_upstream_server.py``) so it
does not share the client's event loop; the server is pinned to CPU 1 and the client
to CPU 0 (Linux; ``--no-pin`` leaves both to the scheduler). Each variant drives
``GET /json`` from 64 concurrent tasks for ``--seconds`` per round. The machine is
shared and noisy, so rounds are short and many, every round runs each variant once
(in an order rotated from round to round), and ratios are *paired*: each round's ratio
compares variants measured seconds apart, and the figure is the median of those
per-round ratios.

- **raw aiohttp**: one ``ClientSession`` (``TCPConnector(limit=100)``), ``get`` + ``read``.
- **cauce unguarded**: ``UpstreamClient`` with ``pipeline=None`` over ``AiohttpTransport``
  (with its own 10 s timeout): Cauce's types, header merge, classification.
- **cauce guarded**: ``HttpClients(...).get("bench")``: the full pipeline (deadline,
  retry + budget, breaker, bulkhead, attempt timeout) and the production event sinks
  (Prometheus, OpenTelemetry span events, structlog), tracing off. Bulkhead at 64
  concurrent so it does not cap the load itself. **guarded, no sinks** is the same with
  the null event sink, to separate the guards' cost from the metrics'. **guarded, lean
  sink** swaps ``PrometheusEvents`` for ``_collector_sink.CollectorEvents`` (same
  metrics, counted without locks and exported at scrape time), a proposed replacement.
- **httpx**: plain ``httpx.AsyncClient`` 0.28, for the ADR (``--no-httpx`` skips it).

Targets (issue 4): unguarded >= 0.8x raw aiohttp; guarded >= 0.9x unguarded.

Run: ``.venv/bin/python benchmarks/http_client.py`` (about 100 s; httpx rounds run long
because its in-flight requests finish after each round's second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import httpx
from prometheus_client import CollectorRegistry

from _collector_sink import CollectorEvents
from _upstream_server import start_server
from cauce.core.http import AiohttpTransport, HttpClients, Request, UpstreamClient
from cauce.core.http.registry import USER_AGENT
from cauce.core.resilience import (
    BulkheadPolicy,
    FanoutEvents,
    OpenTelemetryEvents,
    PrometheusEvents,
    StructlogEvents,
    UpstreamPolicy,
)

CONCURRENCY = 64
Call = Callable[[], Awaitable[object]]


@dataclass
class Variant:
    """One client under test and its per-round results."""

    name: str
    call: Call
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


async def run_round(call: Call, seconds: float) -> tuple[float, float, float]:
    """Drive ``call`` from 64 tasks for ``seconds``.

    Returns requests/s, the p99 latency (seconds) and the client process's CPU time per
    request (microseconds), which the shared machine's noise affects less than wall time.
    """
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    clock = time.perf_counter

    async def worker() -> None:
        while True:
            started = clock()
            if started >= stop:
                return
            await call()
            latencies.append(clock() - started)

    began, cpu = clock(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed, cpu = clock() - began, time.process_time() - cpu
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    count = max(len(latencies), 1)
    return len(latencies) / elapsed, p99, cpu / count * 1e6


async def main(args: argparse.Namespace) -> None:
    """Build the clients, interleave the rounds, print the table and ratios."""
    process, port = start_server(cpu=1 if args.pin else None, uvloop=args.server_uvloop)
    url = f"http://127.0.0.1:{port}/json"
    try:
        raw_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

        async def raw() -> object:
            async with raw_session.get(url) as response:
                return await response.read()

        unguarded_client = UpstreamClient(
            "bench",
            AiohttpTransport("bench", user_agent=USER_AGENT, timeout=10.0),
            pipeline=None,
        )
        request = Request.get(url)

        async def unguarded() -> object:
            return await unguarded_client.send(request)

        registry = CollectorRegistry()
        events = FanoutEvents(
            [PrometheusEvents(registry), OpenTelemetryEvents(), StructlogEvents()]
        )
        policy = UpstreamPolicy(bulkhead=BulkheadPolicy(max_concurrent=CONCURRENCY))
        clients = HttpClients(default_policy=policy, events=events, metrics_registry=registry)
        guarded_client = clients.get("bench")

        async def guarded() -> object:
            return await guarded_client.send(request)

        collector_registry = CollectorRegistry()
        collector_events = FanoutEvents(
            [CollectorEvents(collector_registry), OpenTelemetryEvents(), StructlogEvents()]
        )
        collector_clients = HttpClients(
            default_policy=policy, events=collector_events, metrics_registry=collector_registry
        )
        collector_client = collector_clients.get("bench")

        async def guarded_collector() -> object:
            return await collector_client.send(request)

        bare_clients = HttpClients(default_policy=policy)
        bare_client = bare_clients.get("bench")

        async def guarded_no_sinks() -> object:
            return await bare_client.send(request)

        httpx_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )

        async def plain_httpx() -> object:
            return (await httpx_client.get(url)).content

        variants = [
            Variant("raw aiohttp", raw),
            Variant("cauce unguarded", unguarded),
            Variant("cauce guarded", guarded),
            Variant("guarded, no sinks", guarded_no_sinks),
            Variant("guarded, lean sink", guarded_collector),
        ]
        if args.httpx:
            variants.append(Variant("httpx 0.28", plain_httpx))

        for variant in variants:  # warm pools and code paths
            await run_round(variant.call, 0.5)
        for number in range(args.rounds):
            shift = number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                rate, p99, cpu_us = await run_round(variant.call, args.seconds)
                variant.rates.append(rate)
                variant.p99s.append(p99)
                variant.cpu_us.append(cpu_us)

        await raw_session.close()
        await unguarded_client.transport.close()
        await clients.close()
        await bare_clients.close()
        await collector_clients.close()
        await httpx_client.aclose()
    finally:
        process.terminate()
        process.wait()

    median = {v.name: statistics.median(v.rates) for v in variants}
    by_name = {v.name: v for v in variants}

    def paired(a: str, b: str) -> float:
        """Median over rounds of rate(a) / rate(b) measured in the same round."""
        return statistics.median(
            x / y for x, y in zip(by_name[a].rates, by_name[b].rates, strict=True)
        )

    print(
        f"\n{CONCURRENCY} concurrent GET /json, {args.rounds} rounds of {args.seconds:g} s "
        f"per variant (pinned: {args.pin})\n"
    )
    print(f"{'client':<18}{'req/s':>9}{'p99 ms':>9}{'CPU us/req':>12}   (medians over rounds)")
    for v in variants:
        p99_ms = statistics.median(v.p99s) * 1000
        cpu_us = statistics.median(v.cpu_us)
        print(f"{v.name:<18}{median[v.name]:>9.0f}{p99_ms:>9.1f}{cpu_us:>12.0f}")
    cpu = {v.name: statistics.median(v.cpu_us) for v in variants}
    print("\npaired throughput ratios (median of per-round ratios); CPU ratio = inverse CPU/req")
    rows = [
        ("cauce unguarded", "raw aiohttp", "target >= 0.80x"),
        ("cauce guarded", "cauce unguarded", "target >= 0.90x"),
        ("guarded, no sinks", "cauce unguarded", "(decomposition)"),
        ("guarded, lean sink", "cauce unguarded", "(proposal: _collector_sink.py)"),
        ("cauce guarded", "raw aiohttp", ""),
    ]
    if args.httpx:
        rows.append(("httpx 0.28", "raw aiohttp", ""))
    for a, b, target in rows:
        print(
            f"{a + ' / ' + b:<38} = {paired(a, b):.2f}x   (CPU {cpu[b] / cpu[a]:.2f}x)   {target}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-httpx", dest="httpx", action="store_false")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--server-uvloop", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    arguments = parser.parse_args()
    if arguments.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    else:
        arguments.pin = False
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
