"""Receiving a CSV upload: the file streamed to disk (size checked, head read as CSV),
and the import recorded with its job deferred, in the request's transaction. The job that
imports it: `imports`; what happens to the upload afterwards: `imports_upkeep`."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from cauce.leads.csv_import import SAMPLE_BYTES, CsvLeadReader
from cauce.leads.errors import ImportTooLarge
from cauce.leads.imports import IMPORT_QUEUE, IMPORT_TASK
from cauce.leads.models import LeadImport
from cauce.leads.schemas_requests import ImportOptionsIn
from cauce.leads.service import LeadsRuntime


def imports_dir(rt: LeadsRuntime) -> Path:
    """Where uploads wait for their job."""
    path = rt.settings.data_dir / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def store_upload(
    rt: LeadsRuntime, chunks: AsyncIterator[bytes], options: ImportOptionsIn
) -> tuple[Path, int]:
    """Copy an upload to disk, checking its size and that it reads as CSV."""
    limit = rt.settings.leads.max_import_bytes
    target = imports_dir(rt) / f"{uuid.uuid4().hex}.csv"
    size = 0
    head = b""
    try:
        with target.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ImportTooLarge(f"the file is larger than {limit} bytes")
                if len(head) < SAMPLE_BYTES:
                    head += chunk[: SAMPLE_BYTES - len(head)]
                out.write(chunk)
        CsvLeadReader.from_options(options).probe(head, at_eof=size <= len(head))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, size


def display_filename(filename: str | None) -> str | None:
    """The upload's name as a label (it never names a path): without control characters,
    which PostgreSQL text may not hold (NUL), and at most 255 characters."""
    name = "".join(c for c in filename or "" if unicodedata.category(c) not in ("Cc", "Cs"))
    return name.strip()[:255] or None


async def create_import(
    session: AsyncSession,
    rt: LeadsRuntime,
    *,
    path: Path,
    size: int,
    filename: str | None,
    options: ImportOptionsIn,
    actor: str | None,
) -> LeadImport:
    """Record the import and defer its job, in the caller's transaction."""
    record = LeadImport(
        status="queued",
        filename=display_filename(filename),
        path=str(path),
        mapping={k: v for k, v in (options.mapping or {}).items() if v is not None},
        options=options.model_dump(mode="json"),
        size_bytes=size,
        created_by=actor,
    )
    session.add(record)
    await session.flush()
    deferred = await rt.queue.defer(
        session,
        IMPORT_TASK,
        {"import_id": record.id},
        queue=IMPORT_QUEUE,
        lock=f"import:{record.id}",
        dedupe_key=f"import:{record.id}",
    )
    record.job_id = deferred.job_id
    return record
