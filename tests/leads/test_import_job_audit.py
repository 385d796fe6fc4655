"""CSV imports, found by an audit: the error report streamed page by page in the upload's
delimiter, uploads deleted once their import ends (and swept when left behind), replays
that answer the import as it is now, one 404 code, and the status filled in early."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from cauce.app import Resources
from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.jobs.factory import JobWorker
from cauce.core.jobs.ports import JobFilter, JobStatus, PermanentJobError
from cauce.leads import imports, imports_upkeep, imports_upload
from cauce.leads.errors import ImportFileInvalid
from cauce.leads.models import LeadImport
from cauce.leads.scoring import PointsModel, Score
from cauce.leads.service import LeadsRuntime
from tests.leads.test_imports import RecordingQueue, _csv, _runtime, _start

OLD = 2 * 3600  # seconds: older than the sweep's bound (an hour)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = create_database(settings)
    yield database
    await database.dispose()


async def _upload(
    api: httpx.AsyncClient,
    data: bytes,
    options: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    form = {"options": options} if options is not None else None
    return await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", data, "text/csv")},
        data=form,
        headers=headers,
    )


async def _imported(
    api: httpx.AsyncClient, worker: JobWorker, data: bytes, options: str | None = None
) -> dict[str, Any]:
    response = await _upload(api, data, options)
    assert response.status_code == 202, response.text
    await worker.run_until_idle(60)
    status = await api.get(f"/v1/leads/import/{response.json()['id']}")
    body: dict[str, Any] = status.json()
    return body


def _age(path: Path, seconds: float = OLD) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


class FailingScorer:
    """Scores `good` leads, then fails: a fault no retry of the same chunk can get past
    until it is cleared (a database gone, a bug)."""

    def __init__(self, good: int) -> None:
        self.left = good
        self.points = PointsModel()

    def score(self, facts: Mapping[str, Any]) -> Score:
        if self.left <= 0:
            raise RuntimeError("scorer down")
        self.left -= 1
        return self.points.score(facts)


# -- the error report -------------------------------------------------------------------


async def test_the_report_is_read_a_page_at_a_time_in_file_order(
    settings: Settings, db: Database
) -> None:
    """`error_pages` reads the rejected rows by keyset in pages of the size asked, each a
    short query of its own, and together they are every line in file order."""
    rt, _ = _runtime(settings, db)
    import_id = await _start(rt, _csv(450, bad_every=10))
    await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
        mapping = dict(record.mapping)
    pages = [
        page async for page in imports.error_pages(db.sessionmaker, import_id, mapping, page=7)
    ]
    assert [len(page) for page in pages] == [7] * 6 + [3]
    lines = [line for page in pages for line in page]
    assert [line.row for line in lines] == [2 + 10 * k for k in range(45)]
    assert {(line.column, line.field) for line in lines} == {("Teléfono", "phone")}


async def test_the_report_uses_the_uploads_delimiter_and_streams_every_line(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A Spanish Excel `;` upload gets a `;` report (it opened in one column with commas),
    every line of it, across many pages; a comma upload keeps commas."""
    lines = ["Nombre;Correo;Teléfono"] + [f"P{i};p{i}@;12" for i in range(2500)]
    status = await _imported(api, worker, ("\r\n".join(lines) + "\r\n").encode())
    assert (status["delimiter"], status["rows_rejected"]) == (";", 2500)
    report = await api.get(f"/v1/leads/import/{status['id']}/errors.csv")
    assert report.status_code == 200
    assert report.headers["content-type"] == "text/csv; charset=utf-8"
    text = report.content.decode("utf-8")
    rows = text.removeprefix("\ufeff").splitlines()
    assert rows[0] == "row;column;field;reason"
    assert rows[1].startswith("2;Correo;email;")
    assert len(rows) == 1 + 2 * 2500  # an email and a phone line per row
    assert [int(r.split(";", 1)[0]) for r in rows[1:]] == sorted(
        int(r.split(";", 1)[0]) for r in rows[1:]
    )
    commas = await _imported(api, worker, b"Nombre,Correo\r\nAna,ana@\r\n")
    report = await api.get(f"/v1/leads/import/{commas['id']}/errors.csv")
    assert report.text.removeprefix("\ufeff").splitlines()[0] == "row,column,field,reason"


# -- uploads on disk --------------------------------------------------------------------


async def test_a_failed_import_deletes_its_upload(settings: Settings, db: Database) -> None:
    """An import the job finds unreadable ends `failed` and its upload is deleted (it was
    kept for ever, personal data out of reach of an erasure)."""
    rt, _ = _runtime(settings, db)
    import_id = await _start(rt, _csv(5))
    async with db.sessionmaker() as session:
        path = Path((await imports.get_import(session, import_id)).path)
    path.write_bytes(b"")  # unreadable now: no header row
    with pytest.raises(PermanentJobError) as failed:
        await imports.run_import(rt, import_id)
    assert isinstance(failed.value.__cause__, ImportFileInvalid)
    async with db.sessionmaker() as session:
        assert (await imports.get_import(session, import_id)).status == "failed"
    assert not path.exists()


async def test_an_import_that_will_run_again_keeps_its_upload_and_shows_its_format(
    settings: Settings, db: Database
) -> None:
    """A fault past the first chunk leaves the import running with its file (the job
    will resume it), and the status already shows the detected encoding, delimiter and
    columns; the run after the fault finishes it and deletes the file."""
    rt, _ = _runtime(settings, db)
    import_id = await _start(rt, _csv(450))
    failing = LeadsRuntime(
        settings=rt.settings,
        sessionmaker=rt.sessionmaker,
        queue=rt.queue,
        scorer=FailingScorer(imports.CHUNK_ROWS),
    )
    with pytest.raises(RuntimeError):
        await imports.run_import(failing, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
    assert (record.status, record.rows_processed) == ("running", imports.CHUNK_ROWS)
    assert (record.encoding, record.delimiter) == ("cp1252", ";")
    assert list(record.mapping)[:3] == ["Nombre", "Apellidos", "Correo electrónico"]
    path = Path(record.path)
    assert path.exists()
    await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
    assert (record.status, record.rows_processed) == ("succeeded", 450)
    assert not path.exists()


async def test_the_sweep_deletes_only_uploads_no_import_can_use(leads_app: FastAPI) -> None:
    """Old uploads with no import row, or of a finished import, are deleted; a new one (an
    upload still being stored), a queued import's, and a cancelled import job's (it may be
    replayed) are kept; an import whose job is gone is marked failed and its file deleted."""
    resources: Resources = leads_app.state.resources
    rt: LeadsRuntime = leads_app.state.leads
    directory = imports_upload.imports_dir(rt)
    stray_old, stray_new = directory / "a.csv", directory / "b.csv"
    for path in (stray_old, stray_new):
        path.write_bytes(b"x")
    _age(stray_old)
    queued = await _start(rt, _csv(3))
    cancelled = await _start(rt, _csv(3))
    finished = await _start(rt, _csv(3))
    # Recorded with no job in the queue: as after its job was cancelled, then purged.
    no_job = await _start(dataclasses.replace(rt, queue=RecordingQueue()), _csv(3))  # type: ignore[arg-type]
    async with unit_of_work(rt.sessionmaker) as session:
        records = {
            r.id: r
            for r in await session.scalars(
                select(LeadImport).where(LeadImport.id.in_([queued, cancelled, finished, no_job]))
            )
        }
        records[finished].status = "succeeded"  # as if killed before deleting its file
        paths = {k: Path(r.path) for k, r in records.items()}
    for path in paths.values():
        _age(path)
    [job] = [
        j
        for j in await resources.jobs.list(JobFilter(task=imports.IMPORT_TASK), limit=50)
        if j.payload["import_id"] == cancelled
    ]
    await resources.jobs.cancel(job.id)

    assert await imports_upkeep.sweep_uploads(rt) == 3
    assert not stray_old.exists()
    assert stray_new.exists()
    assert paths[queued].exists()
    assert paths[cancelled].exists()
    assert not paths[finished].exists()
    assert not paths[no_job].exists()
    async with rt.sessionmaker() as session:
        states = dict((await session.execute(select(LeadImport.id, LeadImport.status))).all())
        gone = await imports.get_import(session, no_job)
    assert states[queued] == states[cancelled] == "queued"
    assert (gone.status, gone.finished_at is not None) == ("failed", True)
    assert gone.error is not None
    assert "job is gone" in gone.error
    view = await resources.jobs.get(job.id)
    assert view is not None
    assert view.status == JobStatus.CANCELLED


async def test_the_sweep_runs_with_the_job_purge(leads_app: FastAPI) -> None:
    """The sweep is a registered task scheduled on `jobs.purge_cron`."""
    resources: Resources = leads_app.state.resources
    assert imports_upkeep.SWEEP_TASK in resources.tasks
    crons = [(s.task, s.cron) for s in resources.tasks.schedules]
    assert (imports_upkeep.SWEEP_TASK, resources.settings.jobs.purge_cron) in crons


# -- idempotency ------------------------------------------------------------------------


OPTIONS = '{"unknown_columns":"ignore","delimiter":","}'


async def test_a_replay_answers_the_import_as_it_is_now(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A replay after the import finished answers `succeeded` with its counts, not the
    `queued` of the first answer."""
    data = b"Nombre,Correo\r\nIdem,idem@ejidem.es\r\n"
    first = await _upload(api, data, OPTIONS, {"Idempotency-Key": "k1"})
    assert (first.status_code, first.json()["state"]) == (202, "queued")
    await worker.run_until_idle(60)
    replay = await _upload(api, data, OPTIONS, {"Idempotency-Key": "k1"})
    assert replay.status_code == 202, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    body = replay.json()
    assert (body["id"], body["state"], body["rows_read"], body["rows_created"]) == (
        first.json()["id"],
        "succeeded",
        1,
        1,
    )
    assert body["finished_at"] is not None


async def test_a_replay_compares_the_options_by_their_json_value(
    leads_app: FastAPI, api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """The same options spelt otherwise (key order, spacing), or `{}` for no options, are
    the same request, not a reused key; other options are."""
    data = b"Nombre,Correo\r\nIdem,idem@ejidem.es\r\n"
    first = await _upload(api, data, OPTIONS, {"Idempotency-Key": "k1"})
    spelt_otherwise = '{ "delimiter": ",",\n  "unknown_columns": "ignore" }'
    replay = await _upload(api, data, spelt_otherwise, {"Idempotency-Key": "k1"})
    assert replay.status_code == 202, replay.text
    assert replay.json()["id"] == first.json()["id"]
    bare = await _upload(api, data, None, {"Idempotency-Key": "k2"})
    assert bare.status_code == 202
    for options in ("{}", " { } "):
        again = await _upload(api, data, options, {"Idempotency-Key": "k2"})
        assert again.status_code == 202, again.text
        assert again.json()["id"] == bare.json()["id"]
    other = await _upload(
        api, data, '{"unknown_columns":"custom_fields"}', {"Idempotency-Key": "k2"}
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    await worker.run_until_idle(60)
    rt: LeadsRuntime = leads_app.state.leads
    # Replays kept no copy of the file, and the imports done deleted theirs.
    assert not list(imports_upload.imports_dir(rt).iterdir())


# -- ids, header-only files -------------------------------------------------------------


async def test_an_id_that_is_not_one_is_import_not_found(api: httpx.AsyncClient) -> None:
    """`/v1/leads/import/abc` is the 404 `import_not_found` an unknown id gets (it was
    core's `not_found`), for the status and the report alike."""
    for path in ("/v1/leads/import/abc", "/v1/leads/import/abc/errors.csv", "/v1/leads/import/999"):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "import_not_found", path


async def test_a_header_only_file_lists_its_columns(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A file with a header and no rows succeeds reading nothing, and its `columns` say
    how the header was read (they were empty)."""
    status = await _imported(api, worker, b"Nombre;Correo;Sector\r\n")
    assert (status["state"], status["rows_read"]) == ("succeeded", 0)
    assert (status["encoding"], status["delimiter"]) == ("utf-8", ";")
    assert status["columns"] == [
        {"column": "Nombre", "field": "first_name"},
        {"column": "Correo", "field": "email"},
        {"column": "Sector", "field": "custom_fields.sector"},
    ]


async def test_columns_past_the_custom_fields_limit_are_shown_ignored(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """As the guide says: 50 unknown columns become custom fields, the rest show `null`."""
    headers = ["Correo"] + [f"Extra {i}" for i in range(55)]
    row = ["ana@ejextra.es"] + [str(i) for i in range(55)]
    data = (",".join(headers) + "\r\n" + ",".join(row) + "\r\n").encode()
    status = await _imported(api, worker, data, json.dumps({}))
    fields = [c["field"] for c in status["columns"][1:]]
    assert fields[:50] == [f"custom_fields.extra_{i}" for i in range(50)]
    assert fields[50:] == [None] * 5
