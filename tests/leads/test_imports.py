"""CSV imports: upload to disk, chunked import with counters, resume after a crash, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faker import Faker
from sqlalchemy import func, select, update

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.jobs.ports import DeferResult, PermanentJobError
from cauce.leads import imports, imports_upload
from cauce.leads.errors import ImportFileInvalid, ImportTooLarge
from cauce.leads.models import Lead, LeadImport
from cauce.leads.schemas_requests import ImportOptionsIn
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory

HEADER = "Nombre;Apellidos;Correo electrónico;Teléfono;Empresa;País\r\n"


class RecordingQueue:
    """Records what is deferred (the import job itself is run directly by the test)."""

    engine = "recording"

    def __init__(self) -> None:
        self.deferred: list[tuple[str, dict[str, Any]]] = []

    async def defer(self, session: Any, task: str, payload: dict[str, Any], **_: Any) -> Any:
        self.deferred.append((task, payload))
        return DeferResult(len(self.deferred))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = create_database(settings)
    yield database
    await database.dispose()


def _runtime(settings: Settings, db: Database) -> tuple[LeadsRuntime, RecordingQueue]:
    queue = RecordingQueue()
    rt = LeadsRuntime(settings=settings, sessionmaker=db.sessionmaker, queue=queue)  # type: ignore[arg-type]
    return rt, queue


def _csv(rows: int, *, bad_every: int = 0) -> bytes:
    fake = Faker("es_ES")
    fake.seed_instance(7)
    lines = [HEADER]
    for i in range(rows):
        phone = "12" if bad_every and i % bad_every == 0 else f"6{i:08d}"
        first, last = fake.first_name(), f"{fake.last_name()} {fake.last_name()}"
        lines.append(f"{first};{last};p{i}@empresa.es;{phone};{fake.company()};España\r\n")
    return "".join(lines).encode("cp1252")


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _start(rt: LeadsRuntime, data: bytes, **options: Any) -> int:
    parsed = ImportOptionsIn.model_validate(options)
    path, size = await imports_upload.store_upload(rt, _chunks(data), parsed)
    async with unit_of_work(rt.sessionmaker) as session:
        record = await imports_upload.create_import(
            session, rt, path=path, size=size, filename="leads.csv", options=parsed, actor="t"
        )
        return record.id


async def test_a_latin1_semicolon_file_imports_with_a_report(
    settings: Settings, db: Database
) -> None:
    """An Excel-style Latin-1 `;` file imports; bad rows are counted and reported."""
    rt, queue = _runtime(settings, db)
    import_id = await _start(rt, _csv(450, bad_every=50))
    assert queue.deferred == [(imports.IMPORT_TASK, {"import_id": import_id})]
    await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
        assert record.status == "succeeded"
        assert (record.rows_processed, record.rows_rejected) == (450, 9)
        # Every valid row is a lead or joined one; Faker may repeat a name at a company.
        assert record.rows_accepted + record.rows_merged + record.rows_held == 441
        assert record.rows_accepted >= 430
        assert (record.encoding, record.delimiter) == ("cp1252", ";")
        assert imports.progress(record) == 1.0
        lead = await session.scalar(select(Lead).where(Lead.email == "p1@empresa.es"))
        assert lead is not None
        row = _csv(2).decode("cp1252").splitlines()[2].split(";")
        assert [lead.first_name, lead.last_name, lead.company] == [row[0], row[1], row[4]]
        assert (lead.country, lead.source) == ("ES", "csv")
        pages = imports.error_pages(db.sessionmaker, import_id, record.mapping)
        lines = [line async for page in pages for line in page]
        assert [line.row for line in lines] == [2 + 50 * k for k in range(9)]
        assert all(line.field == "phone" for line in lines)
    assert not Path(record.path).exists()


async def test_a_rerun_after_a_crash_resumes_without_duplicates(
    settings: Settings, db: Database
) -> None:
    """Counters committed with each chunk tell a re-run where to resume."""
    rt, _ = _runtime(settings, db)
    import_id = await _start(rt, _csv(300))
    await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        leads = await session.scalar(select(func.count()).select_from(Lead))
        merged = (await imports.get_import(session, import_id)).rows_merged
    async with unit_of_work(db.sessionmaker) as session:  # as if killed after two chunks
        await session.execute(
            update(LeadImport)
            .where(LeadImport.id == import_id)
            .values(status="running", rows_processed=200)
        )
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
    Path(record.path).write_bytes(_csv(300))  # the upload is still there mid-import
    await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
        assert (record.status, record.rows_processed) == ("succeeded", 300)
        # Only the last 100 rows were read again, and each found the lead it had made.
        assert record.rows_merged == merged + 100
        assert await session.scalar(select(func.count()).select_from(Lead)) == leads


async def test_too_large_and_unreadable_uploads_are_refused_at_once(
    settings_factory: SettingsFactory,
) -> None:
    """Size past the limit and a file without a header row fail before any job."""
    settings = settings_factory(leads={"max_import_bytes": 2048})
    database = create_database(settings)
    try:
        rt, queue = _runtime(settings, database)
        with pytest.raises(ImportTooLarge):
            await _start(rt, _csv(100))
        with pytest.raises(ImportFileInvalid):
            await _start(rt, b"")
        assert queue.deferred == []
        assert list((settings.data_dir / "imports").iterdir()) == []
    finally:
        await database.dispose()


async def test_a_vanished_upload_fails_the_import_for_good(
    settings: Settings, db: Database
) -> None:
    """If the stored file is gone, the import fails with a reason instead of retrying."""
    rt, _ = _runtime(settings, db)
    import_id = await _start(rt, _csv(5))
    async with db.sessionmaker() as session:
        Path((await imports.get_import(session, import_id)).path).unlink()
    with pytest.raises(PermanentJobError):
        await imports.run_import(rt, import_id)
    async with db.sessionmaker() as session:
        record = await imports.get_import(session, import_id)
        assert record.status == "failed"
        assert record.error == "the uploaded file is gone"
