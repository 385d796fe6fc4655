"""Defects an audit of the running leads API found, on both databases: a client gone
mid-body is a 499 that leaves nothing behind (its Idempotency-Key free for the retry),
a compressed body is a 415, a lead id is a UUID in any case, and a 404 does not send a
huge id back."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from structlog.testing import capture_logs

from cauce.app import Resources
from cauce.core.web.idempotency import count_keys
from cauce.leads.models import Lead, LeadImport
from tests.asgi_client import post_then_vanish, posts_counted

ERROR_LEVELS = ("error", "critical", "exception")


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _resources(app: FastAPI) -> Resources:
    resources: Resources = app.state.resources
    return resources


async def _rows(app: FastAPI) -> tuple[int, int, int]:
    """Leads, imports and idempotency keys stored."""
    async with _resources(app).db.sessionmaker() as session:
        leads = await session.scalar(select(func.count()).select_from(Lead))
        imports = await session.scalar(select(func.count()).select_from(LeadImport))
        keys = await count_keys(session)
    return int(leads or 0), int(imports or 0), keys


async def _token(app: FastAPI) -> str:
    key = await _resources(app).api_keys.create("gone", ["leads:read", "leads:write"])
    return str(key.token)


def _multipart(csv: bytes, boundary: str = "cauceboundary") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="l.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + csv
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/v1/leads", {"email": "ana.gone@empresa.es", "company": "Vidrios SL"}),
        ("/v1/leads/batch", {"items": [{"email": "ana.gone@empresa.es"}, {"phone": "612345678"}]}),
    ],
)
async def test_a_client_gone_mid_body_is_a_499_that_leaves_its_key_free(
    leads_app: FastAPI, api: httpx.AsyncClient, path: str, document: dict[str, Any]
) -> None:
    """A client that closes while sending its JSON body gets no error log, is counted
    as status 499 (not 500), stores nothing and claims no Idempotency-Key: its retry
    with the same key is taken, and a second retry is the replay."""
    body = orjson.dumps(document)
    headers = {
        "authorization": f"Bearer {await _token(leads_app)}",
        "content-type": "application/json",
        "idempotency-key": "retry-me-1",
    }
    with capture_logs() as logs:
        answered = await post_then_vanish(
            leads_app, path, [body[:10]], declared=len(body), headers=headers
        )
    assert not [e for e in logs if e["log_level"] in ERROR_LEVELS], logs
    assert not [e for e in logs if "exc_info" in e], logs
    gone = [e for e in logs if e["event"] == "http.client_disconnected"]
    assert [e["log_level"] for e in gone] == ["info"]
    access = [e for e in logs if e["event"] == "http.request"]
    assert [e["status"] for e in access] == [499]
    assert not answered  # nobody is left to read an answer
    assert await _rows(leads_app) == (0, 0, 0)
    metrics = (await api.get("/metrics")).text
    assert posts_counted(metrics, path, "499") == 1
    assert posts_counted(metrics, path, "500") == 0

    first = await api.post(path, content=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    again = await api.post(path, content=body, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()


async def test_an_upload_cut_short_is_a_499_that_leaves_no_file(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A CSV upload whose client leaves mid-file stores no import, no key and no file,
    logs no error; the same upload sent again with the key is imported."""
    body, content_type = _multipart(
        b"email\n" + b"".join(b"x%d@empresa.es\n" % i for i in range(50))
    )
    headers = {
        "authorization": f"Bearer {await _token(leads_app)}",
        "content-type": content_type,
        "idempotency-key": "upload-1",
    }
    imports_dir = Path(_resources(leads_app).settings.data_dir) / "imports"
    with capture_logs() as logs:
        await post_then_vanish(
            leads_app, "/v1/leads/import", [body[:200]], declared=len(body), headers=headers
        )
    assert not [e for e in logs if e["log_level"] in ERROR_LEVELS], logs
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [499]
    assert await _rows(leads_app) == (0, 0, 0)
    assert not imports_dir.exists() or not any(imports_dir.iterdir())
    taken = await api.post("/v1/leads/import", content=body, headers=headers)
    assert taken.status_code == 202, taken.text
    replay = await api.post("/v1/leads/import", content=body, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true"


@contextlib.asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[int]:
    """`app` behind a real uvicorn on a free local port (its lifespan already runs)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # uvicorn offers no event to wait on
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


async def test_a_real_socket_closed_mid_body_is_a_499(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The audit's repro against uvicorn: headers with `Content-Length: 100`, part of the
    body, close. No error is logged and the request counts as 499, not 500."""
    token = await _token(leads_app)
    with capture_logs() as logs:
        async with _served(leads_app) as port:
            head = (
                "POST /v1/leads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Idempotency-Key: socket-1\r\nContent-Length: 100\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(head.encode() + b'{"email": "ana')
            for _ in range(500):
                if any(e["event"] == "http.request" for e in logs):
                    break
                await asyncio.sleep(0.01)
    assert not [e for e in logs if e["log_level"] in ERROR_LEVELS], logs
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [499]
    assert await _rows(leads_app) == (0, 0, 0)
    metrics = (await api.get("/metrics")).text
    assert posts_counted(metrics, "/v1/leads", "500") == 0


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate, gzip", "GZIP"])
async def test_a_compressed_body_is_a_415(api: httpx.AsyncClient, coding: str) -> None:
    """A body with a Content-Encoding other than identity is refused with 415
    `unsupported_content_encoding` (and `Accept-Encoding: identity`) on every route that
    reads one, not read as broken JSON."""
    lead = await api.post("/v1/leads", json={"email": _email()})
    document = orjson.dumps({"email": _email()})
    compressed = gzip.compress(document)
    json_headers = {"content-type": "application/json", "content-encoding": coding}
    multipart, content_type = _multipart(b"email\nana@empresa.es\n")
    sent = [
        ("POST", "/v1/leads", compressed, json_headers),
        ("POST", "/v1/leads/batch", gzip.compress(b'{"items": []}'), json_headers),
        ("PATCH", f"/v1/leads/{lead.json()['id']}", compressed, json_headers),
        (
            "POST",
            "/v1/leads/import",
            gzip.compress(multipart),
            {"content-type": content_type, "content-encoding": coding},
        ),
    ]
    for method, path, content, headers in sent:
        refused = await api.request(method, path, content=content, headers=headers)
        assert refused.status_code == 415, (path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["accept-encoding"] == "identity"
        problem = refused.json()
        assert problem["code"] == "unsupported_content_encoding"
        assert problem["type"] == "urn:cauce:problem:unsupported_content_encoding"
        assert "identity" in problem["detail"]
    plain = await api.post(
        "/v1/leads",
        content=document,
        headers={"content-type": "application/json", "content-encoding": "identity"},
    )
    assert plain.status_code == 201, plain.text


async def test_a_lead_id_is_found_in_any_case(api: httpx.AsyncClient) -> None:
    """A lead's id is a UUID: sent in upper or mixed case, GET, PATCH and DELETE find
    the lead (ids are answered in lower case)."""
    lead_id = (await api.post("/v1/leads", json={"email": _email()})).json()["id"]
    assert lead_id == lead_id.lower()
    upper = lead_id.upper()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(lead_id))
    found = await api.get(f"/v1/leads/{upper}")
    assert found.status_code == 200, found.text
    assert found.json()["id"] == lead_id
    patched = await api.patch(f"/v1/leads/{mixed}", json={"company": "Cristales SA"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["id"] == lead_id
    assert (await api.delete(f"/v1/leads/{upper}")).status_code == 204
    assert (await api.get(f"/v1/leads/{lead_id}")).status_code == 410


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_a_404_does_not_echo_a_huge_id(api: httpx.AsyncClient, method: str) -> None:
    """An id that is no UUID is a 404 `lead_not_found` whose detail shows at most its
    first 100 characters, not the 5,000 the client sent; a UUID that is nobody's is
    named in full."""
    huge = "a" * 5000
    missing = await api.request(method, f"/v1/leads/{huge}", json={"company": "x"})
    assert missing.status_code == 404, missing.text
    problem = missing.json()
    assert problem["code"] == "lead_not_found"
    assert problem["detail"] == f"no lead with id {'a' * 100}…"
    nobody = str(uuid.uuid4())
    absent = await api.request(method, f"/v1/leads/{nobody.upper()}", json={"company": "x"})
    assert absent.status_code == 404
    assert nobody in absent.json()["detail"]
