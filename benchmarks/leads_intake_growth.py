"""Single-lead intake as the stored leads grow: req/s and CPU per lead, in-process.

The app (`cauce.app.create_app`, the settings `cauce serve` gets in
benchmarks/leads_ingest.py) behind httpx's ASGI transport, one process, no HTTP server:
the leads of `leads_ingest.lua` (few names and places, so blocks fill up as they would
for a company with many Garcías in Madrid) are stored with `POST /v1/leads/batch` up to
each size, then `--requests` single leads are sent `--concurrency` at a time. What it
shows is how the cost of an arrival grows with the leads it is matched against; the
client's own CPU is in the figures (the same at every size).

    source /tmp/svc.env   # optional: also PostgreSQL (CAUCE_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/leads_intake_growth.py [--sizes 5000,10000,25000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from leads_ingest import (
    LeadMaker,
    add_setting_options,
    app_client,
    cauce_env,
    environment,
    pg_database,
    run_cli,
    send_singles,
)


async def _measure(settings: Any, key: str, sizes: list[int], opts: argparse.Namespace) -> None:
    maker = LeadMaker()
    numbers = iter(range(10**8))
    stored = 0
    async with app_client(settings, key) as (client, headers):

        async def singles(n: int) -> None:
            await send_singles(client, headers, maker, numbers, n)

        for size in sizes:
            while stored < size:
                items = [maker(next(numbers)) for _ in range(min(1000, size - stored))]
                body = orjson.dumps({"items": items})
                r = await client.post("/v1/leads/batch", content=body, headers=headers)
                assert r.status_code == 200, r.text
                stored += len(items)
            each = opts.requests // opts.concurrency
            await asyncio.gather(*(singles(5) for _ in range(opts.concurrency)))  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(singles(each) for _ in range(opts.concurrency)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sent = each * opts.concurrency
            stored += sent + 5 * opts.concurrency
            print(
                f"  {size:>7,} stored   {sent / wall:6.0f} req/s   "
                f"{1000 * cpu / sent:5.2f} ms CPU per lead",
                flush=True,
            )


def _settings(env: dict[str, str], log: Any) -> Any:
    from cauce.core.config import load_settings
    from cauce.core.observability.logging import configure_logging

    with environment(env):
        settings = load_settings()
    configure_logging(settings, stream=log)  # the JSON access log is part of the path
    return settings


def main() -> None:
    """Measure each database at each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,25000")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=32)
    add_setting_options(parser)
    opts = parser.parse_args()
    sizes = sorted(int(s) for s in opts.sizes.split(","))
    admin_url = os.environ.get("CAUCE_TEST_POSTGRES_URL")
    with (
        tempfile.TemporaryDirectory(prefix="leads-growth-") as tmp_name,
        open(os.devnull, "w") as log,
    ):
        tmp = Path(tmp_name)
        print(f"SQLite: {opts.requests} single leads, {opts.concurrency} at a time, per size")
        env = cauce_env(tmp / "sqlite", None, opts)
        key = run_cli(
            ["apikey", "create", "--name", "b", "--scopes", "leads:write,leads:read"], env, tmp
        )
        asyncio.run(_measure(_settings(env, log), key, sizes, opts))
        if not admin_url:
            print("CAUCE_TEST_POSTGRES_URL is not set: PostgreSQL skipped")
            return
        with pg_database(admin_url, "growth") as url:
            print(f"PostgreSQL: {opts.requests} single leads, {opts.concurrency} at a time")
            env = cauce_env(tmp / "pg", url, opts)
            run_cli(["db", "upgrade"], env, tmp)
            key = run_cli(
                ["apikey", "create", "--name", "b", "--scopes", "leads:write,leads:read"], env, tmp
            )
            asyncio.run(_measure(_settings(env, log), key, sizes, opts))


if __name__ == "__main__":
    main()
