"""Receiving a CSV upload, and the import recorded with its job deferred, in the request's
transaction. The job that imports it: `imports`; what happens to the upload afterwards:
`imports_upkeep`.

The multipart body is parsed as it arrives (`receive_form`, python-multipart's streaming
parser): the `file` part goes straight to its place under `<data_dir>/imports`, its size
checked as it goes, so a file past `leads.max_import_bytes` is refused while it streams
and nothing is spooled to a temporary file first (Starlette's `request.form()` would
write the whole upload to `$TMPDIR`, then Cauce copy it). The file is the owner's only
(0600): it holds the leads' personal data.

Every import not finished keeps its file on disk, so their number is bounded,
installation-wide: `upload_slot` refuses an upload (503 `import_queue_full`, with
`Retry-After`) before reading its body when `leads.max_queued_imports` imports are
queued, running or stopped (their job may be replayed), counting the uploads this process
is still receiving; and per API key, so that one key cannot take every place (429
`key_imports_full` past `leads.max_queued_imports_per_key`). The transaction recording
the import checks both again (`check_room`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import io
import os
import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, Headers, UploadFile

from cauce.core.db.engine import create_private, private_dir
from cauce.core.errors import BadRequest
from cauce.leads import repository as repo
from cauce.leads.csv_import import SAMPLE_BYTES, CsvLeadReader
from cauce.leads.errors import ImportQueueFull, ImportsPerKeyFull, ImportTooLarge
from cauce.leads.imports import IMPORT_QUEUE, IMPORT_TASK, LIVE_STATES
from cauce.leads.models import LeadImport
from cauce.leads.schemas_requests import ImportOptionsIn
from cauce.leads.service import LeadsRuntime

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

UPLOAD_PART: Final = "file"
# A plain field (`options`) is held in memory: at most this much, as Starlette's forms.
MAX_FIELD_BYTES: Final = 1024 * 1024


def imports_dir(rt: LeadsRuntime) -> Path:
    """Where uploads wait for their job (made 0700 if missing)."""
    return private_dir(rt.settings.data_dir / "imports")


# --- how many imports may wait ----------------------------------------------------------

# Uploads this process is receiving, per imports directory and per (directory, key): they
# take disk before their import is recorded, so they count against the bounds too.
_RECEIVING: dict[str, int] = {}
_RECEIVING_BY_KEY: dict[tuple[str, str], int] = {}


async def live_imports(session: AsyncSession, actor: str) -> tuple[int, int]:
    """The imports not finished (queued, running, cancelling), each keeping its upload:
    all of them, and those `actor` started."""
    mine = func.coalesce(func.sum(case((LeadImport.created_by == actor, 1), else_=0)), 0)
    query = select(func.count(), mine).where(LeadImport.status.in_(LIVE_STATES))
    every, own = (await session.execute(query)).one()
    return int(every), int(own)


def _queue_full(limit: int) -> ImportQueueFull:
    return ImportQueueFull(
        f"{limit} imports are waiting or running, the most this installation keeps; "
        "send the file again once some have finished (or cancel those not needed)",
        limit=limit,
    )


def _key_full(limit: int) -> ImportsPerKeyFull:
    return ImportsPerKeyFull(
        f"{limit} imports of this API key are waiting or running, the most one key may "
        "have; send the file again once some have finished (or cancel those not needed)",
        limit=limit,
    )


def _refuse_past_bounds(rt: LeadsRuntime, live: int, own: int) -> None:
    """The key's share first: a key past it is told so (429) even when the installation
    is full too, since cancelling its own imports is what it can do."""
    leads = rt.settings.leads
    if own >= leads.max_queued_imports_per_key:
        raise _key_full(leads.max_queued_imports_per_key)
    if live >= leads.max_queued_imports:
        raise _queue_full(leads.max_queued_imports)


def _count(counts: dict[Any, int], key: Any, change: int) -> None:
    left = counts.get(key, 0) + change
    if left:
        counts[key] = left
    else:
        del counts[key]


@contextlib.asynccontextmanager
async def upload_slot(rt: LeadsRuntime, actor: str, *, bounded: bool = True) -> AsyncIterator[None]:
    """Hold a place for one upload of `actor` while it is received and recorded, at once
    (before any of the body is read) `ImportsPerKeyFull` when the key has none left,
    `ImportQueueFull` when the installation has none. Not `bounded`: a request answered
    before (its Idempotency-Key's), which records no import, is let through; it still
    counts while it is received."""
    directory = str(rt.settings.data_dir / "imports")
    mine = (directory, actor)
    if bounded:
        async with rt.sessionmaker() as session:
            live, own = await live_imports(session, actor)
        # Read after the query: no await until the places are taken.
        own += _RECEIVING_BY_KEY.get(mine, 0)
        _refuse_past_bounds(rt, live + _RECEIVING.get(directory, 0), own)
    _count(_RECEIVING, directory, 1)
    _count(_RECEIVING_BY_KEY, mine, 1)
    try:
        yield
    finally:
        _count(_RECEIVING, directory, -1)
        _count(_RECEIVING_BY_KEY, mine, -1)


async def check_room(session: AsyncSession, rt: LeadsRuntime, actor: str) -> None:
    """In the transaction that records an import: `ImportsPerKeyFull` or `ImportQueueFull`
    if imports recorded since `upload_slot` looked (by other processes) took the last
    places."""
    await repo.lock_import_room(session)  # PostgreSQL: one count at a time
    _refuse_past_bounds(rt, *(await live_imports(session, actor)))


# --- the upload -------------------------------------------------------------------------


@dataclass(slots=True)
class ReceivedForm:
    """A multipart form as received: its parts (`import_form.form_parts` checks them),
    and the first file part named `file`, written to `path` (None: there was none)."""

    form: FormData
    path: Path | None
    size: int
    digest: bytes
    head: bytes

    def discard(self) -> None:
        """Delete the stored file (the request is refused)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def probe(self, options: ImportOptionsIn) -> None:
        """Check that the file reads as CSV with `options` (`ImportFileInvalid`...)."""
        at_eof = self.size <= len(self.head)
        CsvLeadReader.from_options(options).probe(self.head, at_eof=at_eof)


def _decode(raw: bytes | bytearray, charset: str) -> str:
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return raw.decode("latin-1")


class _FormParts:
    """python-multipart's callbacks for one form. Plain fields are kept (up to
    `MAX_FIELD_BYTES` each). The bytes of the first file part named `file` are counted
    and hashed as they come, and wait in `pending` for the caller, which writes them
    once per chunk of the body (one write, not one per callback). Any other file part's
    bytes are dropped: the form is refused anyway (`import_form`)."""

    def __init__(self, charset: str, limit: int, *, max_files: int, max_fields: int) -> None:
        self.charset = charset
        self.limit = limit
        self.max_files = max_files
        self.max_fields = max_fields
        self.items: list[tuple[str, str | UploadFile]] = []
        self.files = 0
        self.fields = 0
        self.upload_started = False
        self.pending: list[bytes] = []
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        # The part being read.
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._disposition = b""
        self._name = ""
        self._file: UploadFile | None = None
        self._kept = False
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def take_pending(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        return data

    def on_part_begin(self) -> None:
        self._headers = []
        self._disposition = b""
        self._name = ""
        self._file = None
        self._kept = False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name, value = bytes(self._header_name).lower(), bytes(self._header_value)
        if name == b"content-disposition":
            self._disposition = value
        self._headers.append((name, value))
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise BadRequest('The Content-Disposition header field "name" must be provided.')
        self._name = _decode(options[b"name"], self.charset)
        if b"filename" not in options:
            self.fields += 1
            if self.fields > self.max_fields:
                raise BadRequest(f"Too many fields. Maximum number of fields is {self.max_fields}.")
            return
        self.files += 1
        if self.files > self.max_files:
            raise BadRequest(f"Too many files. Maximum number of files is {self.max_files}.")
        self._file = UploadFile(
            io.BytesIO(),  # a stand-in: the bytes of the part kept are in `path`
            size=0,
            filename=_decode(options[b"filename"], self.charset),
            headers=Headers(raw=self._headers),
        )
        self._kept = self._name == UPLOAD_PART and not self.upload_started
        self.upload_started = self.upload_started or self._kept

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            if len(self._data) + (end - start) > MAX_FIELD_BYTES:
                raise BadRequest(f"Part exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")
            self._data += data[start:end]
        elif self._kept:
            chunk = data[start:end]
            self.size += len(chunk)
            if self.size > self.limit:
                raise ImportTooLarge(f"the file is larger than {self.limit} bytes")
            self.digest.update(chunk)
            if len(self.head) < SAMPLE_BYTES:
                self.head += chunk[: SAMPLE_BYTES - len(self.head)]
            self.pending.append(chunk)

    def on_part_end(self) -> None:
        if self._file is None:
            self.items.append((self._name, _decode(self._data, self.charset)))
            return
        if self._kept:
            self._file.size = self.size
        self.items.append((self._name, self._file))


def _form_encoding(headers: Mapping[str, str]) -> tuple[bytes, str]:
    """The form's boundary and charset, from its Content-Type (as Starlette reads them)."""
    _, params = parse_options_header(headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        return boundary, codecs.lookup(charset).name
    except LookupError:
        return boundary, "latin-1"


async def _close_durably(out: BinaryIO, target: Path) -> None:
    """Flush the upload to the disk itself, and its name in the directory, before the
    import that reads it is committed: after a power cut the job would otherwise read a
    truncated file and report the rows it found as the whole import. In a thread: a
    large file takes a while."""

    def sync() -> None:
        try:
            out.flush()
            os.fsync(out.fileno())
        finally:
            out.close()  # here, not by a caller cancelled meanwhile: the thread uses it
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    done = asyncio.ensure_future(asyncio.to_thread(sync))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        # Cancelled (a shutdown): the thread finishes with the file before the caller's
        # clean-up deletes it.
        await asyncio.wait([done])
        if not done.cancelled():
            done.exception()  # retrieved: the cancellation is what the caller gets
        raise


async def receive_form(
    rt: LeadsRuntime,
    headers: Mapping[str, str],
    stream: AsyncIterator[bytes],
    *,
    max_files: int,
    max_fields: int,
) -> ReceivedForm:
    """Read a `multipart/form-data` body as it streams in (see the module docstring).

    Raises `BadRequest` for a form that cannot be read, `ImportTooLarge` as soon as the
    `file` part passes `leads.max_import_bytes`; the file written so far is deleted."""
    boundary, charset = _form_encoding(headers)
    parts = _FormParts(
        charset, rt.settings.leads.max_import_bytes, max_files=max_files, max_fields=max_fields
    )
    parser = MultipartParser(boundary, parts.callbacks())
    target = imports_dir(rt) / f"{uuid.uuid4().hex}.csv"
    out: BinaryIO | None = None
    try:
        try:
            async for chunk in stream:
                parser.write(chunk)
                if parts.upload_started and out is None:
                    out = os.fdopen(create_private(target), "wb")
                if out is not None and parts.pending:
                    out.write(parts.take_pending())
            parser.finalize()
        except FormParserError:
            raise BadRequest("Invalid multipart data.") from None
        if parts.upload_started and out is None:
            out = os.fdopen(create_private(target), "wb")
        if out is not None:
            out.write(parts.take_pending())
            await _close_durably(out, target)
    except BaseException:
        if out is not None:
            out.close()
            target.unlink(missing_ok=True)
        raise
    return ReceivedForm(
        form=FormData(parts.items),
        path=target if out is not None else None,
        size=parts.size,
        digest=parts.digest.digest(),
        head=bytes(parts.head),
    )


async def store_upload(
    rt: LeadsRuntime, chunks: AsyncIterator[bytes], options: ImportOptionsIn
) -> tuple[Path, int]:
    """Write an upload given as chunks to disk (0600), checking its size and that it
    reads as CSV (for callers that have the file alone, not a form)."""
    limit = rt.settings.leads.max_import_bytes
    target = imports_dir(rt) / f"{uuid.uuid4().hex}.csv"
    size = 0
    head = b""
    try:
        with os.fdopen(create_private(target), "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ImportTooLarge(f"the file is larger than {limit} bytes")
                if len(head) < SAMPLE_BYTES:
                    head += chunk[: SAMPLE_BYTES - len(head)]
                out.write(chunk)
            await _close_durably(out, target)
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
