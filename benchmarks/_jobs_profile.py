"""The `--profile` sampler and report of benchmarks/jobs_throughput.py: where a worker's
CPU goes.

`Sampler` takes a sample on SIGPROF every `interval` of process CPU time (leads_ingest.py
uses it too): no cost per call, unlike cProfile, and SQLAlchemy's
greenlets are walked into the coroutine that awaits them. Signals that arrive together
are merged, so under load there are fewer samples than CPU milliseconds: the shares
hold, and `report` turns them into CPU ms per job with the CPU the process measured.
"""

from __future__ import annotations

import re
import signal
import time
from types import FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]  # no stubs

Site = tuple[str, int, str]  # file, first line, function


class Sampler:
    """A sampling CPU profiler: SIGPROF every `interval` of process CPU time.

    Unlike cProfile it adds no cost per call, so the many small functions of the matching
    code are not inflated; unlike a sampling thread it is not biased by where the main
    thread releases the GIL. The handler runs in the main thread and sees its stack; a
    coroutine's frame is on it while it runs, so inclusive shares hold for `async def`
    functions too, across SQLAlchemy's greenlets (the walk goes on in the parent). Time
    in C code (pydantic-core, orjson) counts for the Python function that called it. CPU
    used by other threads (aiosqlite's, running SQLite) while the loop waits shows up
    with the selector as leaf.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.samples = 0
        self.leaf: dict[Site, int] = {}
        self.inclusive: dict[Site, int] = {}
        self.stacks: dict[tuple[Site, ...], int] = {}  # leaf first
        self.wall = self.cpu = self.main_cpu = 0.0
        self._previous: Any = None
        self._start = (0.0, 0.0, 0.0)

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        self.samples += 1
        seen: set[Site] = set()
        leaf: Site | None = None
        runner = greenlet.getcurrent()
        stack: list[Site] = []
        while frame is not None:
            code = frame.f_code
            site = (code.co_filename, code.co_firstlineno, code.co_name)
            leaf = leaf or site
            seen.add(site)
            stack.append(site)
            frame = frame.f_back
            if frame is None and runner.parent is not None:
                # SQLAlchemy's async layer runs ORM code in a child greenlet whose stack
                # ends at greenlet_spawn: carry on in the suspended parent, so the ORM's
                # time counts for the Cauce function that awaited it.
                runner = runner.parent
                frame = runner.gr_frame
        if leaf is not None:
            self.leaf[leaf] = self.leaf.get(leaf, 0) + 1
        for site in seen:
            self.inclusive[site] = self.inclusive.get(site, 0) + 1
        key = tuple(stack)
        self.stacks[key] = self.stacks.get(key, 0) + 1

    def __enter__(self) -> Sampler:
        self._previous = signal.signal(signal.SIGPROF, self._sample)
        self._start = (time.perf_counter(), time.process_time(), time.thread_time())
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *_: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._previous)
        wall, cpu, main_cpu = self._start
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu
        self.main_cpu = time.thread_time() - main_cpu


# Frames that are on every stack (the event loop, the greenlet bridge): not informative.
_PLUMBING = re.compile(
    r"asyncio/(base_events|events|runners|tasks)\.py|selectors\.py|runpy\.py"
    r"|sqlalchemy/util/(concurrency|_concurrency_py3k)\.py|contextlib\.py"
)


def _area(site: Site) -> str:
    file, _line, func = site
    if file.endswith("selectors.py") and func == "select":
        return "idle in select (or other threads' CPU)"
    if "/src/cauce/" in file:
        return ".".join(file.split("/src/", 1)[1].removesuffix(".py").split("/")[:4])
    if "/benchmarks/" in file:
        return "benchmark code"
    if "site-packages/" in file:
        parts = file.split("site-packages/", 1)[1].removesuffix(".py").split("/")
        return ".".join(parts[:2]) if parts[0] in ("sqlalchemy", "opentelemetry") else parts[0]
    stem = re.search(r"python3\.\d+/([^/]+)", file)
    return f"stdlib {stem.group(1).removesuffix('.py')}" if stem else file


def label(site: Site) -> str:
    file, line, func = site
    for marker in ("/src/", "site-packages/", "/lib/python3.11/", "/benchmarks/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file}:{line})"


def report(sampler: Sampler, title: str, jobs: int, floor: float = 0.04) -> str:
    """CPU ms per job by area (self time) and by function (inclusive), above `floor` ms."""
    n = sampler.samples or 1
    per_job = sampler.cpu / max(jobs, 1) * 1e3
    lines = [
        f"  {title}: {sampler.wall:.1f} s wall, {sampler.cpu:.2f} s CPU = {per_job:.2f} ms"
        f" per job ({jobs} jobs), {sampler.samples} samples"
    ]
    areas: dict[str, int] = {}
    for site, count in sampler.leaf.items():
        areas[_area(site)] = areas.get(_area(site), 0) + count
    lines.append("  self time by area, ms per job:")
    for name, count in sorted(areas.items(), key=lambda a: -a[1]):
        if per_job * count / n >= floor:
            lines.append(f"    {per_job * count / n:6.2f}  {name}")
    lines.append("  inclusive time by function (event loop and greenlet plumbing left out):")
    shown = 0
    for site, count in sorted(sampler.inclusive.items(), key=lambda r: -r[1]):
        if _PLUMBING.search(site[0]) or per_job * count / n < floor:
            continue
        lines.append(f"    {per_job * count / n:6.2f}  {label(site)}")
        shown += 1
        if shown == 45:
            break
    return "\n".join(lines)
