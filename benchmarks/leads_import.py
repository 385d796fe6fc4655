"""CSV import throughput: rows/s of `POST /v1/leads/import` run to the end by the job.

The app runs in-process on a fresh SQLite database (httpx ASGITransport: the upload is
not what is measured), the import job runs in the worker until the queue is idle. The
CSV is `;`-separated with Spanish headers, one distinct realistic lead per row (the
people `leads_ingest.py` sends), so every row goes through validation, de-duplication
against the rows before it, scoring, routing and the writes.

    .venv/bin/python benchmarks/leads_import.py [--rows 5000] [--rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from cauce.app import create_app, job_worker_for
from cauce.core.config import Settings
from cauce.core.observability.logging import configure_logging
from leads_ingest import LeadMaker

COLUMNS = ("first_name", "last_name", "email", "phone", "company", "city")
HEADER = "nombre;apellidos;correo;teléfono;empresa;ciudad"
IMPORT_RUN = 16  # lead numbers of their own (see `LeadMaker.seq`)


def csv_of(rows: int) -> bytes:
    """`rows` distinct leads as a Spanish `;` CSV."""
    maker = LeadMaker()
    lines = [HEADER]
    for i in range(rows):
        lead = maker(maker.seq(IMPORT_RUN, i))
        lines.append(";".join(str(lead.get(name) or "") for name in COLUMNS))
    return ("\n".join(lines) + "\n").encode()


async def run(rows: int) -> None:
    """Import `rows` rows into a fresh database and print the figures."""
    with tempfile.TemporaryDirectory(prefix="leads-import-") as tmp:
        settings = Settings.model_validate(
            {
                "data_dir": Path(tmp),
                "database_url": f"sqlite+aiosqlite:///{tmp}/cauce.db",
                "secret_key": "benchmark-secret-key-0123456789abcdef0123",
                "jobs": {"embedded_worker": False},
                "log": {"level": "warning", "format": "json"},
            }
        )
        configure_logging(settings, stream=io.StringIO())  # logs are part of the path
        app = create_app(settings)
        data = csv_of(rows)
        async with LifespanManager(app):
            resources = app.state.resources
            key = await resources.api_keys.create("bench", ["leads:read", "leads:write"])
            headers = {"Authorization": f"Bearer {key.token}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://cauce.bench", headers=headers
            ) as client:
                sent = await client.post(
                    "/v1/leads/import", files={"file": ("leads.csv", data, "text/csv")}
                )
                assert sent.status_code == 202, sent.text
                started = time.perf_counter()
                await job_worker_for(resources).run_until_idle(3600)
                seconds = time.perf_counter() - started
                status = (await client.get(f"/v1/leads/import/{sent.json()['id']}")).json()
    print(
        f"  {rows:>7,} rows ({len(data) / 1e6:.1f} MB): {seconds:6.1f} s = "
        f"{rows / seconds:6.0f} rows/s; {status['state']}: created {status['rows_created']}, "
        f"merged {status['rows_merged']}, held {status['rows_held']}, "
        f"rejected {status['rows_rejected']}"
    )


def main() -> None:
    """Run each size given (5,000 rows by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows (repeatable)")
    opts = parser.parse_args()
    print("CSV import on SQLite, in-process, the job run to the end")
    for rows in opts.rows or [5000]:
        asyncio.run(run(rows))


if __name__ == "__main__":
    main()
