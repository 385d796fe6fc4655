"""`cauce demo`: the whole path on the embedded defaults, against a faulty sandbox CRM.

It starts the HubSpot-compatible sandbox (HubSpot's real rate limit, some 5xx, one short
outage), starts Cauce (API + in-process worker on SQLite) in a fresh data directory,
sends a few thousand Spanish and Latin American leads through the real HTTP API
(duplicates and invalid ones included), shows live progress, and checks at the end that
every lead Cauce accepted is in the CRM exactly once. Exit status 0 means it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from cauce.app import create_app
from cauce.core.config import Settings
from cauce.core.db import create_database
from cauce.core.db.migrate import upgrade
from cauce.core.errors import ConfigError
from cauce.core.http import Request
from cauce.core.http.registry import HttpClients
from cauce.core.observability.logging import configure_logging
from cauce.core.resilience.policy import UpstreamPolicy
from cauce.core.security.apikeys import ApiKeyService
from cauce.leads.models import Lead
from cauce.leads.synthetic import LeadFactory
from cauce.sandbox.config import FaultSettings, SandboxCrmConfig
from cauce.sandbox.runner import SandboxCrm, start_sandbox_crm

BATCH = 100
SENDERS = 4
DEADLINE_SECONDS = 110.0
# One short CRM outage, from the CRM's first write for this long (s).
OUTAGE_FOR = 3.0


@dataclass
class Tally:
    """What the demo has seen so far."""

    sent: int = 0
    accepted: int = 0
    created: int = 0
    merged: int = 0
    held: int = 0
    rejected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    circuit: str = "closed"
    crm_contacts: int = 0
    crm_requests: int = 0
    crm_errors: int = 0
    crm_outage: int = 0  # requests the CRM refused during its outage
    circuit_opened: bool = False


class DemoSettings(Settings):
    """The demo's settings: its own values over the defaults, never the environment or a
    `cauce.toml`. A CAUCE_DATABASE_URL exported in the shell sent the demo's thousands of
    made-up leads into that database (a production one, say), and waited there 110 s for
    a worker that PostgreSQL does not run in-process."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_directory(data_dir: Path | None) -> Path:
    """Where the demo keeps its data: `data_dir`, refused (`ConfigError`) when it is no
    directory or holds an earlier run's database (whose leads would merge with this run's
    and fail the check that every new lead reached the CRM); a new temporary one without."""
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="cauce-demo-"))
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: not a directory")
    if (data_dir / "cauce.db").exists():
        raise ConfigError(
            f"--data-dir {data_dir} holds an earlier run's database: give the demo a new "
            "directory (or none, for a temporary one)"
        )
    return data_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# HubSpot's guards for the demo's sandbox: 18 requests/s with a burst of 10 keeps any
# 10 s under the sandbox's 190; a breaker that opens after a few failures and probes
# every 2 s with one call. The reliability tests and CRM benchmarks run with the same.
HUBSPOT_GUARDS: dict[str, Any] = {
    "breaker": {
        "minimum_number_of_calls": 5,
        "sliding_window_size": 20,
        "wait_duration_in_open_state": 2.0,
        "permitted_number_of_calls_in_half_open_state": 1,
    },
    "rate_limit": {"enabled": True, "rate": 18.0, "burst": 10, "max_wait": 15.0},
}

# The synthetic lead's fields that `POST /v1/leads` takes as they are (consent is mapped).
API_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "region",
    "city",
    "language",
    "source",
    "utm",
)


def demo_leads(count: int, seed: int) -> list[dict[str, Any]]:
    """Realistic leads as API payloads: about 8 % re-sent duplicates and 5 % invalid."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    factory = LeadFactory(seed)
    payloads: list[dict[str, Any]] = []
    while len(payloads) < count:
        fields = factory.lead().fields
        consent = fields["consent"]
        payload = {key: fields[key] for key in API_FIELDS if fields.get(key) not in (None, {}, "")}
        payload["consent"] = {
            "marketing": consent["marketing"],
            "given_at": consent["at"],
            "wording_version": consent["wording_version"],
            "source": consent["where"],
        }
        roll = rng.random()
        if roll < 0.05:  # invalid: a phone that is no number, or an email without a domain
            if "email" in payload and rng.random() < 0.5:
                payload["email"] = payload["email"].split("@")[0] + "@"
            else:
                payload["phone"] = "12"
        payloads.append(payload)
        if roll > 0.92 and "email" in payload and len(payloads) < count:
            again = dict(payload)  # the same person again, from another form
            again["source"] = "csv"
            again["job_title"] = "Director General"
            payloads.append(again)
    rng.shuffle(payloads)
    return payloads


async def _counts(settings: Settings) -> dict[str, int]:
    db = create_database(settings)
    try:
        async with db.sessionmaker() as session:
            rows = await session.execute(
                select(Lead.sync_status, func.count()).group_by(Lead.sync_status)
            )
            return {status: int(n) for status, n in rows}
    finally:
        await db.dispose()


def _table(tally: Tally, elapsed: float, final: bool = False) -> Table:
    title = "Cauce demo: summary" if final else f"Cauce demo: {elapsed:5.1f} s"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    statuses = tally.statuses
    for label, value in (
        ("leads sent", tally.sent),
        ("accepted (new leads)", tally.created),
        ("merged into an existing lead", tally.merged),
        ("held as possible duplicates", tally.held),
        ("rejected (invalid)", tally.rejected),
        ("synced to the CRM", statuses.get("synced", 0)),
        ("waiting or retrying", statuses.get("pending", 0)),
        ("failed for good", statuses.get("failed", 0)),
        ("contacts in the CRM", tally.crm_contacts),
        ("CRM requests (5xx/429 answered)", f"{tally.crm_requests} ({tally.crm_errors})"),
        ("CRM requests refused in its outage", tally.crm_outage),
    ):
        table.add_row(label, str(value))
    opened = " (opened in the outage)" if tally.circuit_opened and final else ""
    table.add_row("CRM circuit", f"{tally.circuit}{opened}")
    return table


async def _send(
    clients: HttpClients, base: str, token: str, payloads: list[dict[str, Any]], tally: Tally
) -> None:
    client = clients.get("cauce-api")
    batches = [payloads[i : i + BATCH] for i in range(0, len(payloads), BATCH)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def sender() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            key = uuid.uuid4().hex
            response = await client.send(
                Request.post(
                    f"{base}/v1/leads/batch",
                    json={"items": batch},
                    headers={"Authorization": f"Bearer {token}"},
                    idempotency_key=key,
                )
            )
            result = orjson.loads(response.content)
            tally.sent += result["received"]
            tally.rejected += result["rejected"]
            for item in result["items"]:
                outcome = item["outcome"]
                if outcome == "created":
                    tally.created += 1
                elif outcome == "merged":
                    tally.merged += 1
                elif outcome == "held_for_review":
                    tally.held += 1

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


def _crm_state(sandbox: SandboxCrm, tally: Tally) -> dict[str, Any]:
    stats: dict[str, Any] = sandbox.state.snapshot()
    tally.crm_contacts = int(stats["contacts"])
    requests = stats["requests"]
    tally.crm_requests = int(requests.get("total", 0))
    by_status = requests.get("by_status", {})
    tally.crm_errors = sum(int(n) for code, n in by_status.items() if int(code) >= 429)
    tally.crm_outage = int(requests.get("faults_injected", {}).get("outage", 0))
    return stats


async def _outage_when_deliveries_start(sandbox: SandboxCrm) -> None:
    """Start the CRM's outage at its first written record, whatever the machine's speed.

    A timer from the first lead sent missed the deliveries on a slow machine (they had not
    begun when its window closed); the first write is when deliveries are surely running.
    """
    state = sandbox.state
    while state.stats.records_written == 0:  # noqa: ASYNC110 - a counter, no event to await
        await asyncio.sleep(0.02)
    state.faults.reconfigure(
        state.faults.settings.updated({"outage_after": 0.0, "outage_for": OUTAGE_FOR})
    )


async def run_demo(
    *, count: int = 3000, seed: int = 7, data_dir: Path | None = None, console: Console
) -> bool:
    """Run the demo; True when every accepted lead is in the CRM exactly once."""
    workdir = demo_directory(data_dir)
    sandbox = await start_sandbox_crm(
        SandboxCrmConfig(
            rate_limit=190,
            extra_properties=("cauce_score", "cauce_owner"),
            # The outage starts with the deliveries (`_outage_when_deliveries_start`).
            faults=FaultSettings(error_rate=0.05),
            seed=seed,
        )
    )
    try:
        return await _run_against(sandbox, workdir, count, seed, console)
    except asyncio.CancelledError:  # Ctrl-C: say where the leads sent so far are
        console.print(Text(f"interrupted; data so far: {workdir}"), highlight=False)
        raise
    finally:
        await sandbox.stop()


async def _run_against(
    sandbox: SandboxCrm, workdir: Path, count: int, seed: int, console: Console
) -> bool:
    port = _free_port()
    values: dict[str, Any] = dict(
        env="development",
        data_dir=workdir,
        log={"level": "warning", "format": "json"},
        http={"port": port, "access_log": False},
        # Nobody reviews possible duplicates during a demo: a lead merges or stands alone.
        leads={"dedupe": {"review_threshold": 0.9}},
        crm={
            "provider": "hubspot",
            "base_url": sandbox.url,
            "token": sandbox.token,
            "allow_hosts": ("127.0.0.1",),
        },
        upstreams={
            "hubspot": {
                "retry": {"max_attempts": 1},  # deliveries retry as jobs, not in the call
                **HUBSPOT_GUARDS,
            }
        },
    )
    settings = DemoSettings(**values)
    configure_logging(settings)  # warnings only, on stderr: the live table owns stdout
    db = create_database(settings)
    await upgrade(db)
    keys = ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())
    key = await keys.create("demo", ["leads:write", "leads:read"])
    await db.dispose()

    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    payloads = demo_leads(count, seed)
    tally = Tally()
    clients = HttpClients(
        default_policy=UpstreamPolicy.model_validate(
            {"breaker": {"enabled": False}, "timeouts": {"total": 60, "attempt": 60}}
        )
    )
    started = time.monotonic()
    ok = False
    outage = asyncio.create_task(_outage_when_deliveries_start(sandbox))
    try:
        # Transient: the summary below replaces the running table (kept, a log piped to a
        # file got the last frame glued to the summary's title, and the table twice).
        with Live(
            _table(tally, 0.0), console=console, refresh_per_second=4, transient=True
        ) as live:
            sending = asyncio.create_task(_send(clients, base, key.token, payloads, tally))
            while True:
                await asyncio.sleep(0.5)
                tally.statuses = await _counts(settings)
                resources = getattr(app.state, "resources", None)
                http = getattr(resources, "http", None)
                if http is not None:
                    tally.circuit = http.circuit_states().get("hubspot", "closed")
                    tally.circuit_opened |= tally.circuit != "closed"
                _crm_state(sandbox, tally)
                elapsed = time.monotonic() - started
                live.update(_table(tally, elapsed))
                if sending.done():
                    sending.result()
                    waiting = tally.statuses.get("pending", 0)
                    if waiting == 0 or elapsed > DEADLINE_SECONDS:
                        break
        stats = _crm_state(sandbox, tally)
        expected = tally.statuses.get("synced", 0)
        ok = (
            tally.statuses.get("pending", 0) == 0
            and tally.statuses.get("failed", 0) == 0
            and stats["duplicate_count"] == 0
            and tally.crm_contacts == expected
            and expected == tally.created
        )
        console.print(_table(tally, time.monotonic() - started, final=True))
        verdict = "[green]OK[/]" if ok else "[red]FAILED[/]"
        console.print(
            f"{verdict}: {expected} leads synced, {tally.crm_contacts} contacts in the CRM, "
            f"{stats['duplicate_count']} stored twice; "
            f"{time.monotonic() - started:.1f} s"
        )
        console.print(
            Text(
                f"data: {workdir}; to look at these leads: "
                f"CAUCE_DATA_DIR={workdir} ./run serve, then http://127.0.0.1:8000/docs"
            ),
            highlight=False,
        )
    finally:
        outage.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outage  # an error of its own is raised here, not lost
        await clients.close()
        server.should_exit = True
        await serving
    return ok
