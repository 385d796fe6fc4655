"""Chaos: an upstream with 30 % 5xx and a 20 s outage, behind Cauce's guarded client.

The upstream is ``_upstream_server.py`` in its own process; the 30 % 5xx come from
Cauce's own fault injection (``ClientOptions(faults=FaultPolicy(error_rate=0.3))``, the
opt-in chaos mode) and the outage from the server, which answers 503 to everything
while its phase is ``outage``.

Workload: "jobs" arrive at ``--rate`` per second. Each job is one idempotent upsert
(``PUT /work``) through ``HttpClients.get("crm")`` (in-call retries: 3 attempts with
jitter and a 20 % retry budget) and, when the call still fails, is retried at the job
level with capped exponential backoff (honouring ``retry_after``), as the job engine
does. No job is ever dropped. Timeline: ``--steady`` s of 30 % errors, ``--outage`` s
of outage, ``--recovery`` s of 30 % errors, then no new jobs until every job is done.

The same workload runs twice in one go: with the circuit breaker (the figure) and
without it (the baseline). Reported: jobs created / succeeded, the exchanges that left
the guards during the outage (client side, including injected faults) and what the
server received, against the breaker's probe allowance (probes per open interval plus
what was admitted before the breaker opened).

Run: ``.venv/bin/python benchmarks/resilience_chaos.py`` (about 100 s: two runs).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from _upstream_server import start_server
from cauce.core.errors import CauceError
from cauce.core.http import (
    ClientOptions,
    FaultPolicy,
    HttpClients,
    Request,
    Response,
    Transport,
)
from cauce.core.resilience import (
    BreakerPolicy,
    BulkheadPolicy,
    CircuitOpenError,
    CircuitState,
    NullEvents,
    RetryBudgetPolicy,
    RetryPolicy,
    TimeoutPolicy,
    UpstreamPolicy,
)

WAIT_OPEN = 2.0
PROBES = 3
# A 30 % error rate must not open the breaker by chance: with 50 calls minimum in a
# window of 100, a 50 % failure rate is > 4 standard deviations away at p = 0.3.
WINDOW = 100
MINIMUM_CALLS = 50
BULKHEAD = 32
JOB_BACKOFF_BASE = 0.2
JOB_BACKOFF_CAP = 5.0


@dataclass
class Phase:
    """The current phase, shared by the counting transport and the driver."""

    name: str = "steady"


class CountingTransport:
    """Counts every exchange that left the guards, by phase (sits above fault injection)."""

    def __init__(self, inner: Transport, phase: Phase) -> None:
        self.inner = inner
        self.phase = phase
        self.sent: Counter[str] = Counter()
        self.outage_times: list[float] = []

    async def send(self, request: Request) -> Response:
        """Count, then pass on."""
        name = self.phase.name
        self.sent[name] += 1
        if name == "outage":
            self.outage_times.append(time.monotonic())
        return await self.inner.send(request)

    async def close(self) -> None:
        """Close the inner transport."""
        await self.inner.close()


@dataclass
class Transitions(NullEvents):
    """Records breaker transitions and retry-budget exhaustion by phase."""

    phase: Phase
    log: list[tuple[float, str, CircuitState]] = field(default_factory=list)
    budget_exhausted: Counter[str] = field(default_factory=Counter)

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Keep (time, phase, new state)."""
        self.log.append((time.monotonic(), self.phase.name, to_state))

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Count retries the budget refused."""
        self.budget_exhausted[self.phase.name] += 1


@dataclass
class RunResult:
    """What one run measured."""

    breaker: bool
    created: int = 0
    succeeded: int = 0
    first_try: int = 0
    job_attempts: list[int] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    server: dict[str, dict[str, int]] = field(default_factory=dict)
    opened_in_outage: int = 0
    half_open_in_outage: int = 0
    before_open: int = 0
    after_open: int = 0
    budget_exhausted: Counter[str] = field(default_factory=Counter)
    recovered_after: float = math.nan
    drain_seconds: float = 0.0


def policy(breaker: bool) -> UpstreamPolicy:
    """The upstream's policy; the baseline differs only in having no breaker."""
    return UpstreamPolicy(
        breaker=BreakerPolicy(
            enabled=breaker,
            sliding_window_size=WINDOW,
            minimum_number_of_calls=MINIMUM_CALLS,
            failure_rate_threshold=50,
            wait_duration_in_open_state=WAIT_OPEN,
            permitted_number_of_calls_in_half_open_state=PROBES,
            max_wait_duration_in_half_open_state=10.0,
        ),
        retry=RetryPolicy(
            max_attempts=3,
            backoff_base=0.05,
            backoff_cap=0.5,
            budget=RetryBudgetPolicy(ratio=0.2, min_retries_per_second=1.0, window_seconds=10),
        ),
        bulkhead=BulkheadPolicy(max_concurrent=BULKHEAD, max_waiting=256, max_wait=2.0),
        timeouts=TimeoutPolicy(total=5.0, attempt=2.0),
    )


async def control(session: aiohttp.ClientSession, base: str, phase: str) -> None:
    """Switch the server's phase."""
    async with session.post(f"{base}/_control", params={"phase": phase}) as response:
        await response.read()


async def run(args: argparse.Namespace, port: int, *, breaker: bool, seed: int) -> RunResult:
    """One chaos run (see the module docstring)."""
    base = f"http://127.0.0.1:{port}"
    phase = Phase()
    events = Transitions(phase)
    counting: list[CountingTransport] = []

    def wrap(name: str, transport: Transport) -> Transport:
        counter = CountingTransport(transport, phase)
        counting.append(counter)
        return counter

    rng = random.Random(seed)
    faults = FaultPolicy(error_rate=0.3, error_statuses=(500, 502, 503, 504))
    clients = HttpClients(
        default_policy=policy(breaker),
        default_options=ClientOptions(faults=faults),
        events=events,
        rng=rng,
        wrap_transport=wrap,
    )
    client = clients.get("crm")
    result = RunResult(breaker=breaker)
    job_rng = random.Random(seed + 1)
    control_session = aiohttp.ClientSession()
    tag = "breaker" if breaker else "baseline"

    async def job(number: int) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await client.send(
                    Request.put(f"{base}/work", json={"id": number, "email": f"{number}@x.test"})
                )
            except CauceError as exc:
                retry_after = getattr(exc, "retry_after", None)
                backoff = job_rng.random() * min(JOB_BACKOFF_CAP, JOB_BACKOFF_BASE * 2**attempt)
                if isinstance(exc, CircuitOpenError) and retry_after:
                    # Wake near the half-open moment, spread so probes are not a stampede.
                    backoff = retry_after + job_rng.random()
                elif retry_after:
                    backoff = max(backoff, retry_after)
                await asyncio.sleep(backoff)
                continue
            result.succeeded += 1
            result.first_try += attempt == 1
            result.job_attempts.append(attempt)
            return

    tasks: list[asyncio.Task[None]] = []
    timeline = [
        ("steady", args.steady),
        ("outage", args.outage),
        ("recovery", args.recovery),
    ]
    outage_end = math.nan
    for name, seconds in timeline:
        phase.name = name
        await control(control_session, base, f"{name}-{tag}")
        if name == "recovery":
            outage_end = time.monotonic()
        end = time.monotonic() + seconds
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        while (now := time.monotonic()) < end:
            while next_at <= now:
                tasks.append(asyncio.create_task(job(result.created)))
                result.created += 1
                next_at += interval
            await asyncio.sleep(min(interval, end - now))
    phase.name = "drain"
    await control(control_session, base, f"drain-{tag}")
    drain_start = time.monotonic()
    _done, pending = await asyncio.wait(tasks, timeout=args.drain_timeout)
    for task in pending:
        task.cancel()
    result.drain_seconds = time.monotonic() - drain_start

    async with control_session.get(f"{base}/_stats") as response:
        result.server = orjson.loads(await response.read())
    await control_session.close()
    await clients.close()

    result.sent = counting[0].sent
    first_open = next(
        (t for t, p, s in events.log if p == "outage" and s is CircuitState.OPEN), math.inf
    )
    result.before_open = sum(1 for t in counting[0].outage_times if t < first_open)
    result.after_open = sum(1 for t in counting[0].outage_times if t >= first_open)
    result.budget_exhausted = events.budget_exhausted
    states = [(t, p, s) for t, p, s in events.log]
    result.opened_in_outage = sum(
        1 for _, p, s in states if p == "outage" and s is CircuitState.OPEN
    )
    result.half_open_in_outage = sum(
        1 for _, p, s in states if p == "outage" and s is CircuitState.HALF_OPEN
    )
    closed_after = [t for t, _, s in states if s is CircuitState.CLOSED and t >= outage_end]
    if closed_after:
        result.recovered_after = closed_after[0] - outage_end
    return result


def report(result: RunResult, args: argparse.Namespace) -> None:
    """Print one run's figures."""
    label = "with breaker" if result.breaker else "baseline (no breaker)"
    tag = "breaker" if result.breaker else "baseline"
    server_outage = sum(result.server.get(f"outage-{tag}", {}).values())
    attempts = result.job_attempts or [0]
    print(f"\n== {label} ==")
    print(
        f"jobs created {result.created}, succeeded {result.succeeded}, "
        f"lost {result.created - result.succeeded}; first try {result.first_try} "
        f"({result.first_try / max(result.created, 1):.1%}); job attempts median "
        f"{statistics.median(attempts):.0f}, max {max(attempts)}; drained in "
        f"{result.drain_seconds:.1f} s"
    )
    print(
        "exchanges that left the guards, by phase: "
        + ", ".join(f"{k} {v}" for k, v in sorted(result.sent.items()))
    )
    print(f"server requests during the outage: {server_outage}")
    if result.breaker:
        intervals = math.ceil(args.outage / WAIT_OPEN)
        allowance = WINDOW + BULKHEAD + PROBES * intervals
        probes = PROBES * result.half_open_in_outage
        print(
            f"breaker: opened {result.opened_in_outage}x and went half-open "
            f"{result.half_open_in_outage}x during the outage; closed "
            f"{result.recovered_after:.2f} s after the outage ended"
        )
        print(
            f"outage exchanges: {result.before_open} before the breaker opened "
            f"(bound: window {WINDOW} + bulkhead {BULKHEAD}), {result.after_open} after "
            f"(bound: {PROBES} probes x {result.half_open_in_outage} half-open = {probes}); "
            f"total {result.sent['outage']} vs allowance {allowance} "
            f"({PROBES} probes per {WAIT_OPEN:.0f} s over {args.outage:.0f} s + window + bulkhead)"
        )
    budget = ", ".join(f"{k} {v}" for k, v in sorted(result.budget_exhausted.items()))
    print(f"retries refused by the retry budget: {budget or 'none'}")


async def main(args: argparse.Namespace) -> None:
    """Run with and without the breaker against one server process."""
    process, port = start_server()
    try:
        with_breaker = await run(args, port, breaker=True, seed=1)
        baseline = await run(args, port, breaker=False, seed=1)
    finally:
        process.terminate()
        process.wait()
    print(
        f"\nchaos: {args.rate:.0f} jobs/s, 30 % injected 5xx throughout, outage "
        f"{args.outage:.0f} s between {args.steady:.0f} s steady and "
        f"{args.recovery:.0f} s recovery"
    )
    report(with_breaker, args)
    report(baseline, args)
    ratio = with_breaker.sent["outage"] / max(baseline.sent["outage"], 1)
    print(
        f"\noutage exchanges with breaker / without = {with_breaker.sent['outage']} / "
        f"{baseline.sent['outage']} = {ratio:.3f}x"
    )
    ok = with_breaker.succeeded == with_breaker.created and baseline.succeeded == baseline.created
    print(f"every job succeeded after recovery: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="new jobs per second")
    parser.add_argument("--steady", type=float, default=5.0)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--recovery", type=float, default=5.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    asyncio.run(main(parser.parse_args()))
