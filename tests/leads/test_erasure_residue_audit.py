"""Where an erased person's data still lives after `DELETE /v1/leads/{id}`, on both
databases (helper-147's black-box GDPR audit; the scripts that found it against a real
`cauce serve`, the sandbox HubSpot and a trace sink are in /tmp/helper-147/).

One person comes in by every path (a single lead and a batch under an `Idempotency-Key`,
a CSV import with a rejected row of theirs, a PATCH, merges, a held duplicate reviewed
under a key), is synced, then erased. Then:

- every row of every table holds nothing of them but the keyed hashes `erased_contacts`
  keeps on purpose (docs/leads.md, "Erase"); replays of the old keys show nothing of
  them; the import's error report quotes nothing (passes on both databases: what the
  audit found clean; that the sandbox HubSpot kept no contact of theirs was checked
  against the real sandbox, which `MemoryCrm` does not model after an email change);
- the database's planner statistics forget them (failed on PostgreSQL: `ANALYZE`, which
  autovacuum runs by itself, copies sampled values of every column into `pg_statistic`,
  and `pg_stats` still listed the erased email, phone, name and search text until the
  next analyze of the table; now the erasure has its tables analyzed, `request_analyze`);
- a CRM erasure the CRM refuses stays owed (failed on both: `crm.erase` fails at its first
  refusal, and once the failed job is purged, after `jobs.retention_failed_days`, nothing
  in Cauce said the person is still in the CRM; now the tombstone says `erase_failed`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cauce.app import Resources, create_app, job_worker_for
from cauce.core.jobs.ports import Retention
from cauce.leads.ports import CrmClient, CrmKey, CrmRejected
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm

EMAIL = "zxqw.erasure@empresa-audit.es"
PHONE = "+34 612 999 123"
PERSON: dict[str, Any] = {
    "first_name": "Zacarías",
    "last_name": "Quetzal",
    "email": EMAIL,
    "phone": PHONE,
    "company": "Construcciones Olmedo SL",
    "city": "Toledo",
    "country": "ES",
    "job_title": "Gerente",
    "external_id": "ZXQW-EXT-777",
    "utm": {"source": "zxqw-newsletter", "campaign": "zxqw-campaign"},
    "consent": {"marketing": True, "wording_version": "rgpd-2024-03"},
    "custom_fields": {"nota": "Zacarías Quetzal pidió presupuesto"},
}
# What identifies them, as stored or folded: any email of theirs, their surname, their
# given name without its accent (search text), their phone's digits as typed or E.164.
NEEDLES = ("zxqw", "quetzal", "zacar", "612999123", "612 999 123")
SCOPES = ("leads:read", "leads:write", "leads:admin", "jobs:admin")


def _found(text_: str) -> list[str]:
    folded = text_.casefold()
    return [needle for needle in NEEDLES if needle in folded]


@asynccontextmanager
async def _served(
    settings_factory: SettingsFactory, crm: CrmClient
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (HubSpot at the port `crm`, jobs run by hand) and a client with every
    leads scope and `jobs:admin`. Fuzzy matches are held for review (exact ones merge)."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"dedupe": {"merge_threshold": 0.9999}},
    )
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        resources: Resources = app.state.resources
        key = await resources.api_keys.create("audit", list(SCOPES))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://cauce.test",
            headers={"Authorization": f"Bearer {key.token}"},
        ) as client:
            yield app, client


async def _drain(app: FastAPI) -> None:
    await job_worker_for(app.state.resources).run_until_idle(60)


def _ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


def _cell(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


async def _rows_as_text(conn: AsyncConnection, table: str) -> str:
    rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
    return " ".join(_cell(value) for row in rows for value in row)


async def _every_table(app: FastAPI) -> dict[str, str]:
    """Every table's rows as text (the job engine's tables included)."""
    resources: Resources = app.state.resources
    async with resources.db.engine.connect() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        return {name: await _rows_as_text(conn, name) for name in names}


async def _person_everywhere(app: FastAPI, api: httpx.AsyncClient) -> dict[str, str]:
    """Send the person in by every path and sync them; their lead's id, the held lead
    reviewed into it, and the import."""
    first = _ok(await api.post("/v1/leads", json=PERSON, headers={"Idempotency-Key": "k-single"}))
    lead = first["id"]
    batch = {
        "items": [
            {**PERSON, "email": "zxqw.segundo@empresa-audit.es", "external_id": None},
            {"first_name": "Zacarías", "last_name": "Quetzal", "email": "zxqw@@empresa.es"},
        ]
    }
    answer = _ok(
        await api.post("/v1/leads/batch", json=batch, headers={"Idempotency-Key": "k-batch"})
    )
    assert answer["items"][0]["id"] == lead  # merged by phone
    rows = [
        ["Nombre", "Apellidos", "Correo electrónico", "Teléfono", "Estado del lead"],
        ["Zacarías", "Quetzal", EMAIL.upper(), "612 999 123", "Nuevo"],
        ["Zacarías", "Quetzal", "zxqw(at)empresa-audit.es", "612 999 12", "Zacarías"],
    ]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=";").writerows(rows)
    imported = _ok(
        await api.post(
            "/v1/leads/import",
            files={"file": ("leads.csv", buffer.getvalue().encode(), "text/csv")},
            headers={"Idempotency-Key": "k-import"},
        ),
        202,
    )
    await _drain(app)
    patch = {"email": "zxqw.nuevo@empresa-audit.es", "job_title": "Director zxqw"}
    _ok(await api.patch(f"/v1/leads/{lead}", json=patch))
    merged = _ok(await api.post("/v1/leads", json={**PERSON, "external_id": "ZXQW-778"}))
    assert merged["id"] == lead
    held_body = {
        "first_name": "Zacarías",
        "last_name": "Quetzal",
        "company": PERSON["company"],
        "city": "Toledo",
        "country": "ES",
        "email": "zq.personal.erasure@gmail.com",
    }
    held = _ok(await api.post("/v1/leads", json=held_body))
    assert held["outcome"] == "held_for_review", held
    review = await api.post(
        f"/v1/leads/{held['id']}/review",
        json={"decision": "duplicate", "into": lead},
        headers={"Idempotency-Key": "k-review"},
    )
    assert _found((_ok(review)).get("email") or "")  # the lead's view, contact data
    await _drain(app)
    detail = _ok(await api.get(f"/v1/leads/{lead}"))
    assert detail["sync"]["status"] == "synced", detail["sync"]
    return {"lead": lead, "held": held["id"], "import": imported["id"]}


async def test_an_erased_person_is_in_no_table_no_replay_and_no_report(
    settings_factory: SettingsFactory,
) -> None:
    crm = MemoryCrm()
    async with _served(settings_factory, crm) as (app, api):
        ids = await _person_everywhere(app, api)
        assert any(_found(str(c)) for c in crm.contacts.values())  # synced
        assert (await api.delete(f"/v1/leads/{ids['lead']}")).status_code == 204
        await _drain(app)

        leftovers = {name: _found(rows) for name, rows in (await _every_table(app)).items()}
        assert {name: found for name, found in leftovers.items() if found} == {}

        replay = await api.post("/v1/leads", json=PERSON, headers={"Idempotency-Key": "k-single"})
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert _found(replay.text) == []
        review = await api.post(
            f"/v1/leads/{ids['held']}/review",
            json={"decision": "duplicate", "into": ids["lead"]},
            headers={"Idempotency-Key": "k-review"},
        )
        assert review.status_code == 410
        assert _found(review.text) == []
        report = await api.get(f"/v1/leads/import/{ids['import']}/errors.csv")
        assert report.status_code == 200
        assert _found(report.text) == []


async def _planner_statistics(app: FastAPI) -> str:
    """What the database's planner keeps of column values: PostgreSQL's `pg_stats`
    (most common values, histogram bounds), SQLite's `sqlite_stat1`/`sqlite_stat4`."""
    resources: Resources = app.state.resources
    async with resources.db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = await conn.execute(
                text(
                    "SELECT tablename, attname, most_common_vals::text, histogram_bounds::text"
                    " FROM pg_stats WHERE schemaname = current_schema()"
                )
            )
            return " ".join(_cell(value) for row in rows for value in row)
        stats = await conn.execute(
            text("SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")
        )
        return " ".join([await _rows_as_text(conn, row[0]) for row in stats.all()])


async def _analyze(app: FastAPI) -> None:
    """What PostgreSQL's autovacuum (and Cauce's hourly `core.db_analyze` on SQLite) does."""
    resources: Resources = app.state.resources
    async with resources.db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))


async def test_the_planner_statistics_forget_an_erased_person(
    settings_factory: SettingsFactory,
) -> None:
    async with _served(settings_factory, MemoryCrm()) as (app, api):
        lead = _ok(await api.post("/v1/leads", json=PERSON))["id"]
        for n in range(3):  # a few others, so the statistics have something to sample
            _ok(await api.post("/v1/leads", json={"email": f"otra{n}@ejemplo.es"}))
        await _analyze(app)
        before = _found(await _planner_statistics(app))
        assert (await api.delete(f"/v1/leads/{lead}")).status_code == 204
        await _drain(app)

        after = _found(await _planner_statistics(app))
        # PostgreSQL: before == after == the person's email, surname, phone... until the
        # next ANALYZE of each table (autovacuum: once 10 % of its rows changed).
        assert after == [], f"planner statistics still hold {after} (before: {before})"


class RefusingCrm(MemoryCrm):
    """A CRM that refuses deletions (HubSpot's 400 for a non-unique idProperty, a 403
    for a private app without the scope, a revoked token...)."""

    async def delete(self, key: CrmKey) -> bool:
        raise CrmRejected("HubSpot refused the deletion (HTTP 403)")


def _tasks(items: Iterable[dict[str, Any]]) -> list[str]:
    return [str(item["task"]) for item in items]


async def test_a_crm_erasure_the_crm_refused_is_still_owed_after_the_job_purge(
    settings_factory: SettingsFactory,
) -> None:
    crm = RefusingCrm()
    async with _served(settings_factory, crm) as (app, api):
        lead = _ok(await api.post("/v1/leads", json=PERSON))["id"]
        await _drain(app)
        assert (await api.delete(f"/v1/leads/{lead}")).status_code == 204
        await _drain(app)
        failed = _ok(await api.get("/v1/jobs", params={"status": "failed"}))["items"]
        assert _tasks(failed) == ["crm.erase"]  # at its first refusal: no retry
        # A later job (SQLite's purge never deletes the newest), then the periodic purge
        # once `jobs.retention_failed_days` has passed.
        _ok(await api.post("/v1/leads", json={"email": "otra@ejemplo.es"}))
        await _drain(app)
        resources: Resources = app.state.resources
        past = timedelta(milliseconds=1)  # retention_failed_days later, as it were
        await resources.jobs.purge(Retention(succeeded=past, failed=past))

        assert [c for c in crm.contacts.values() if _found(str(c))]  # still in the CRM
        # The failed job is gone with the purge, as it should be; the tombstone keeps the
        # erasure owed (test_crm_erasure_owed.py), with a reason that quotes nothing.
        assert _tasks(_ok(await api.get("/v1/jobs", params={"task": "crm.erase"}))["items"]) == []
        async with resources.db.sessionmaker() as session:
            status, reason = (
                await session.execute(
                    text("SELECT sync_status, last_sync_error FROM leads WHERE uid = :uid"),
                    {"uid": lead},
                )
            ).one()
        assert (status, reason) == ("erase_failed", "hubspot refused: HTTP 403"), (
            "the person is still in the CRM, and nothing in Cauce says so any more"
        )
        metrics = (await api.get("/metrics")).text
        assert 'cauce_crm_erasures_owed{state="failed"} 1.0' in metrics
