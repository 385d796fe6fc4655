"""What CSV uploads may take of the disk: at most `leads.max_queued_imports` imports wait
(503 `import_queue_full` beyond, with Retry-After), and `leads.max_queued_imports_per_key`
of one API key (429 `key_imports_full`), the uploads being received counted too; the
file streams straight to its place, refused as soon as it passes
`leads.max_import_bytes`, never spooled to a temporary file first."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from cauce.app import Resources, create_app, job_worker_for
from cauce.leads.errors import ImportQueueFull, ImportsPerKeyFull
from cauce.leads.imports import IMPORT_QUEUE
from cauce.leads.imports_upload import check_room
from cauce.leads.models import LeadImport
from cauce.leads.repository import lock_import_room
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory
from tests.leads.import_client import post_csv
from tests.leads.test_delivery import MemoryCrm

BOUNDARY = "cauce-limits-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MAX_QUEUED = 2
MAX_BYTES = 64 * 1024
PROBLEM = "application/problem+json"


def _csv(rows: int, start: int = 0) -> bytes:
    return b"email\n" + b"".join(b"p%d@empresa.es\n" % i for i in range(start, start + rows))


@pytest.fixture
async def limited_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    """The app with room for two imports and files up to 64 KiB; no background worker."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"max_queued_imports": MAX_QUEUED, "max_import_bytes": MAX_BYTES},
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


def _resources(app: FastAPI) -> Resources:
    resources: Resources = app.state.resources
    return resources


@pytest.fixture
async def api(limited_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `limited_app` with every leads scope."""
    key = await _resources(limited_app).api_keys.create(
        "t", ["leads:read", "leads:write", "leads:admin"]
    )
    transport = httpx.ASGITransport(app=limited_app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    ) as client:
        yield client


def _uploads(app: FastAPI) -> list[Path]:
    directory = _resources(app).settings.data_dir / "imports"
    return sorted(directory.iterdir()) if directory.exists() else []


async def _run_imports(app: FastAPI) -> None:
    await job_worker_for(_resources(app), queues=[IMPORT_QUEUE]).run_until_idle(60)


def _refused(response: httpx.Response, status: int, code: str, limit: int) -> None:
    """A refusal of the import bounds: its status and code, Retry-After, the limit."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["retry-after"] == "30"
    body = response.json()
    assert body["code"] == code
    assert body["limit"] == limit
    assert str(limit) in body["detail"]


def _queue_full(response: httpx.Response) -> None:
    _refused(response, 503, "import_queue_full", MAX_QUEUED)


def _head(filename: str = "leads.csv") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_past_the_bound_an_upload_is_refused_with_retry_after_until_imports_finish(
    limited_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """With two imports waiting a third upload is a 503 `import_queue_full` with
    Retry-After, and nothing of it is stored; once they have run, uploads are taken."""
    for start in (0, 100):
        assert (await post_csv(api, _csv(3, start))).status_code == 202
    _queue_full(await post_csv(api, _csv(3, 200)))
    assert len(_uploads(limited_app)) == MAX_QUEUED
    await _run_imports(limited_app)
    assert _uploads(limited_app) == []
    taken = await post_csv(api, _csv(3, 300))
    assert taken.status_code == 202, taken.text


async def test_cancelling_a_queued_import_frees_its_place(
    limited_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """An import cancelled before it ran no longer counts against the bound."""
    first = await post_csv(api, _csv(3))
    assert (await post_csv(api, _csv(3, 100))).status_code == 202
    _queue_full(await post_csv(api, _csv(3, 200)))
    cancelled = await api.post(f"/v1/leads/import/{first.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert (await post_csv(api, _csv(3, 200))).status_code == 202


async def test_the_transaction_checks_the_bound_again(
    limited_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The check made in the transaction that records an import sees the imports other
    processes recorded while this upload streamed in."""
    rt: LeadsRuntime = limited_app.state.leads
    for start in (0, 100):
        assert (await post_csv(api, _csv(3, start))).status_code == 202
    async with rt.sessionmaker() as session:
        with pytest.raises(ImportQueueFull):
            await check_room(session, rt, "apikey:another")


async def test_an_upload_streams_into_its_file_and_counts_while_it_is_received(
    limited_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Midway through an upload its bytes are already in its file under the imports
    directory (no spooled copy first), and that upload holds a place: with one import
    waiting, a third upload is refused until the second is in."""
    assert (await post_csv(api, _csv(3))).status_code == 202
    data = _csv(2500, 1000)
    assert 40 * 1024 < len(data) <= MAX_BYTES
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield _head() + data[: 40 * 1024]
        halfway.set()  # the app asked for more: it has handled the first chunk
        await go_on.wait()
        yield data[40 * 1024 :] + TAIL

    streaming = asyncio.create_task(
        api.post("/v1/leads/import", content=body(), headers={"content-type": CONTENT_TYPE})
    )
    await asyncio.wait_for(halfway.wait(), 10)
    sizes = sorted(p.stat().st_size for p in _uploads(limited_app))
    assert len(sizes) == 2  # the waiting import's, and this one's, growing
    assert sizes[-1] >= 40 * 1024 - 64, sizes
    _queue_full(await post_csv(api, _csv(3, 200)))
    go_on.set()
    taken = await asyncio.wait_for(streaming, 10)
    assert taken.status_code == 202, taken.text
    assert taken.json()["bytes_total"] == len(data)
    await _run_imports(limited_app)
    status = await api.get(f"/v1/leads/import/{taken.json()['id']}")
    assert status.json()["rows_created"] == 2500


async def test_a_file_past_the_limit_is_refused_while_it_streams(
    limited_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A file past `max_import_bytes` is a 413 `import_too_large` naming the `file` part
    as soon as it passes the limit: the rest of the body is never read, nothing is kept,
    and its place is free again."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield _head() + b"email\n"
        for i in range(256):  # 4 MiB, 64 times the limit
            sent += 1
            yield b"".join(b"x%05d%04d@empresa.es\n" % (i, n) for n in range(780))[: 16 * 1024]
        yield TAIL

    response = await api.post(
        "/v1/leads/import", content=body(), headers={"content-type": CONTENT_TYPE}
    )
    assert response.status_code == 413, response.text
    problem = response.json()
    assert problem["code"] == "import_too_large"
    assert [e["pointer"] for e in problem["errors"]] == ["/file"]
    assert sent <= MAX_BYTES // (16 * 1024) + 2, sent
    assert _uploads(limited_app) == []
    for start in (0, 100):
        assert (await post_csv(api, _csv(3, start))).status_code == 202


async def test_no_temporary_copy_is_spooled(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette's form parser (which spools a file over 1 MiB to `$TMPDIR` before Cauce
    copies it) is not used: an upload is taken with it unable to make a spool file."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr("starlette.formparsers.SpooledTemporaryFile", refuse)
    response = await post_csv(api, _csv(3))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"", "multipart/form-data", "Missing boundary"),
        (
            b"\r\n".join(_head(f"{n}.csv") + b"email\na@b.es\n" for n in range(3)) + TAIL,
            CONTENT_TYPE,
            "Too many files",
        ),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="options"\r\n\r\n'.encode()
            + b" " * (1024 * 1024 + 1)
            + TAIL,
            CONTENT_TYPE,
            "maximum size",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx".encode() + TAIL,
            CONTENT_TYPE,
            '"name" must be provided',
        ),
    ],
)
async def test_a_form_that_cannot_be_read_is_a_400_and_leaves_no_file(
    limited_app: FastAPI, api: httpx.AsyncClient, body: bytes, content_type: str, detail: str
) -> None:
    """A missing boundary, too many files, a plain field over 1 MiB, a part without a
    name: each is a 400 `bad_request` saying so, as Starlette's parser answered, and no
    upload is left behind."""
    response = await api.post(
        "/v1/leads/import", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"
    assert detail in response.json()["detail"]
    assert _uploads(limited_app) == []


async def test_the_upload_is_on_the_disk_itself_before_its_import_is_recorded(
    limited_app: FastAPI, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file and its directory entry are fsynced before the import row commits: after a
    power cut the job would read a truncated file and report its rows as the import's."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # the module calls os.fsync
    response = await post_csv(api, _csv(10))
    assert response.status_code == 202, response.text
    [upload] = _uploads(limited_app)
    assert synced == [str(upload), str(upload.parent)]


# --- one key's share --------------------------------------------------------------------

PER_KEY = 2


@pytest.fixture
async def shared_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    """Room for four imports, two of any one key; no background worker."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"max_queued_imports": 4, "max_queued_imports_per_key": PER_KEY},
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


async def _key_client(app: FastAPI, name: str) -> httpx.AsyncClient:
    key = await _resources(app).api_keys.create(name, ["leads:read", "leads:write"])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    )


def _key_full(response: httpx.Response) -> None:
    _refused(response, 429, "key_imports_full", PER_KEY)


async def test_one_key_cannot_take_every_place(shared_app: FastAPI) -> None:
    """A key with its two imports waiting gets a 429 `key_imports_full` (nothing stored),
    while another key's uploads are still taken. Once the installation is full, a key
    with room gets the 503 `import_queue_full`, a key at its share still the 429 (its own
    imports are what it can cancel); the first key's cancelled import frees its place."""
    async with (
        await _key_client(shared_app, "busy") as busy,
        await _key_client(shared_app, "other") as other,
        await _key_client(shared_app, "third") as third,
    ):
        first = await post_csv(busy, _csv(3))
        assert first.status_code == 202, first.text
        assert (await post_csv(busy, _csv(3, 100))).status_code == 202
        _key_full(await post_csv(busy, _csv(3, 200)))
        assert len(_uploads(shared_app)) == PER_KEY
        for start in (300, 400):
            taken = await post_csv(other, _csv(3, start))
            assert taken.status_code == 202, taken.text
        full = await post_csv(third, _csv(3, 500))
        assert full.status_code == 503, full.text
        assert full.json()["code"] == "import_queue_full"
        _key_full(await post_csv(busy, _csv(3, 200)))
        cancelled = await busy.post(f"/v1/leads/import/{first.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        again = await post_csv(busy, _csv(3, 200))
        assert again.status_code == 202, again.text


async def test_a_keys_upload_being_received_counts_against_its_share(
    shared_app: FastAPI,
) -> None:
    """While one of a key's uploads streams in, with another of its imports waiting, the
    key's next upload is refused; another key's is not."""
    async with (
        await _key_client(shared_app, "busy") as busy,
        await _key_client(shared_app, "other") as other,
    ):
        assert (await post_csv(busy, _csv(3))).status_code == 202
        halfway, go_on = asyncio.Event(), asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield _head() + b"email\nslow@empresa.es\n"
            halfway.set()
            await go_on.wait()
            yield TAIL

        streaming = asyncio.create_task(
            busy.post("/v1/leads/import", content=body(), headers={"content-type": CONTENT_TYPE})
        )
        await asyncio.wait_for(halfway.wait(), 10)
        _key_full(await post_csv(busy, _csv(3, 100)))
        assert (await post_csv(other, _csv(3, 200))).status_code == 202
        go_on.set()
        taken = await asyncio.wait_for(streaming, 10)
        assert taken.status_code == 202, taken.text


async def test_the_transaction_checks_the_keys_share_again(shared_app: FastAPI) -> None:
    """The check in the recording transaction counts the key's imports other processes
    recorded meanwhile."""
    rt: LeadsRuntime = shared_app.state.leads
    async with await _key_client(shared_app, "busy") as busy:
        for start in (0, 100):
            assert (await post_csv(busy, _csv(3, start))).status_code == 202
    actors = {row[0] for row in await _actors(rt)}
    (actor,) = actors
    async with rt.sessionmaker() as session:
        with pytest.raises(ImportsPerKeyFull):
            await check_room(session, rt, actor)
        await check_room(session, rt, "apikey:another")  # room for others


async def _actors(rt: LeadsRuntime) -> list[Any]:
    async with rt.sessionmaker() as session:
        return list((await session.execute(select(LeadImport.created_by))).all())


async def _post_keyed(api: httpx.AsyncClient, data: bytes, key: str) -> httpx.Response:
    """Upload `data` as `leads.csv` with an Idempotency-Key."""
    files = {"file": ("leads.csv", data, "text/csv")}
    return await api.post("/v1/leads/import", files=files, headers={"Idempotency-Key": key})


async def test_a_retry_answered_before_is_never_refused_by_the_bounds(
    shared_app: FastAPI,
) -> None:
    """A key at its share that lost the answer to its last upload sends it again with the
    same Idempotency-Key: it gets that import's status (a replay), not a 429; a new
    upload still gets the 429, and a reused key with another file the 422."""
    async with await _key_client(shared_app, "busy") as busy:
        assert (await post_csv(busy, _csv(3))).status_code == 202
        first = await _post_keyed(busy, _csv(3, 100), "last-one")
        assert first.status_code == 202, first.text
        again = await _post_keyed(busy, _csv(3, 100), "last-one")
        assert again.status_code == 202, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        _key_full(await _post_keyed(busy, _csv(3, 200), "new-one"))
        reused = await _post_keyed(busy, _csv(3, 300), "last-one")
        assert reused.status_code == 422, reused.text
        assert reused.json()["code"] == "idempotency_key_reused"
        assert len(_uploads(shared_app)) == PER_KEY


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_recording_an_import_waits_for_another_process_counting(
    shared_app: FastAPI,
) -> None:
    """On PostgreSQL the recording transaction counts under a lock: while another
    transaction holds it (another API process recording an import), this one waits."""
    rt: LeadsRuntime = shared_app.state.leads
    async with rt.sessionmaker() as holder, holder.begin():
        await lock_import_room(holder)
        async with rt.sessionmaker() as session, session.begin():
            checking = asyncio.create_task(check_room(session, rt, "apikey:x"))
            await asyncio.sleep(0.5)
            assert not checking.done()
            await holder.rollback()
            await asyncio.wait_for(checking, 10)
