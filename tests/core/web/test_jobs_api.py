"""The operator API for jobs (`/v1/jobs`), on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from tests.core.web.conftest import Defer, Switches, drain, resources_of

PROBLEM = "application/problem+json"
CRM_DOWN = "tests.core.web.conftest.CrmDown"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert `response` is a problem+json with `status` and `code`; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


async def test_needs_a_key_with_jobs_admin(
    api: httpx.AsyncClient, jobs_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    """No key is 401, a key without `jobs:admin` is 403 on every route, `admin` passes."""
    reader = await resources_of(jobs_app).api_keys.create("reader", ["leads:read"])
    root = await resources_of(jobs_app).api_keys.create("root", ["admin"])
    routes = [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/1"),
        ("POST", "/v1/jobs/1/retry"),
        ("POST", "/v1/jobs/1/cancel"),
        ("POST", "/v1/jobs/retry"),
    ]
    for method, path in routes:
        problem(await api.request(method, path, json={"all": True}), 401, "unauthenticated")
        body = problem(
            await api.request(
                method,
                path,
                json={"all": True},
                headers={"authorization": f"Bearer {reader.token}"},
            ),
            403,
            "forbidden",
        )
        assert body["required_scope"] == "jobs:admin"
    listed = await api.get("/v1/jobs", headers={"authorization": f"Bearer {root.token}"})
    assert listed.status_code == 200
    assert (await api.get("/v1/jobs", headers=admin_headers)).json() == {
        "items": [],
        "next_cursor": None,
    }


async def test_list_filters_and_cursor(
    api: httpx.AsyncClient, admin_headers: dict[str, str], defer: Defer, jobs_app: FastAPI
) -> None:
    """Listing is newest first, filters by status, task, queue and time, and pages with an
    opaque cursor until `next_cursor` is null."""
    delivers = [await defer("deliver", {"n": n}) for n in range(5)]
    other = await defer("other")
    await resources_of(jobs_app).jobs.cancel(delivers[0])

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"task": "deliver", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/jobs", params=params, headers=admin_headers)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert str(seen[-1]) not in cursor  # opaque, not the bare id
    assert seen == sorted(delivers, reverse=True)
    assert pages == 3

    async def ids(**params: Any) -> list[int]:
        response = await api.get("/v1/jobs", params=params, headers=admin_headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids(queue="slow") == [other]
    assert await ids(status="cancelled") == [delivers[0]]
    assert await ids(status="todo", task="deliver") == sorted(delivers[1:], reverse=True)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await ids(created_after=future) == []
    assert len(await ids(created_after=past, created_before=future)) == 6
    item = (await api.get("/v1/jobs", params={"queue": "slow"}, headers=admin_headers)).json()
    assert set(item["items"][0]) == {
        "id",
        "task",
        "queue",
        "status",
        "priority",
        "lock",
        "dedupe_key",
        "scheduled_at",
        "created_at",
    }


async def test_show_retry_and_error_class_filter(
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
    defer: Defer,
    jobs_app: FastAPI,
    switches: Switches,
) -> None:
    """A failed job shows its attempt and error, is found by error class, and a retry runs
    it again with a fresh budget; retrying it once it succeeded is a 409 problem."""
    switches.fail = True
    job_id = await defer("deliver", {"lead": 7})
    await drain(jobs_app)
    shown = (await api.get(f"/v1/jobs/{job_id}", headers=admin_headers)).json()
    assert shown["status"] == "failed"
    assert shown["payload"] == {"lead": 7}
    assert [a["outcome"] for a in shown["attempts"]] == ["failed"]
    assert shown["attempts"][0]["error_class"] == CRM_DOWN
    assert "503" in shown["attempts"][0]["error_message"]
    by_error = await api.get("/v1/jobs", params={"error_class": CRM_DOWN}, headers=admin_headers)
    assert [i["id"] for i in by_error.json()["items"]] == [job_id]

    switches.fail = False
    retried = await api.post(f"/v1/jobs/{job_id}/retry", headers=admin_headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "todo"
    await drain(jobs_app)
    assert switches.runs == [job_id]
    after = (await api.get(f"/v1/jobs/{job_id}", headers=admin_headers)).json()
    assert after["status"] == "succeeded"
    assert [a["outcome"] for a in after["attempts"]] == ["failed", "replayed", "succeeded"]
    assert after["attempts"][-1]["attempt"] == 1
    body = problem(
        await api.post(f"/v1/jobs/{job_id}/retry", headers=admin_headers), 409, "conflict"
    )
    assert "succeeded" in body["detail"]


async def test_cancel(
    api: httpx.AsyncClient, admin_headers: dict[str, str], defer: Defer, jobs_app: FastAPI
) -> None:
    """A waiting job is cancelled and never runs; cancelling it again is a 409 problem."""
    job_id = await defer("other")
    cancelled = await api.post(f"/v1/jobs/{job_id}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    await drain(jobs_app)
    view = await resources_of(jobs_app).jobs.get(job_id)
    assert view is not None
    assert view.status == "cancelled"
    assert view.attempts == []
    problem(await api.post(f"/v1/jobs/{job_id}/cancel", headers=admin_headers), 409, "conflict")


async def test_bulk_retry(
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
    defer: Defer,
    jobs_app: FastAPI,
    switches: Switches,
) -> None:
    """Bulk retry replays the failed jobs its filters name, needs a filter or `all`, and
    can replay cancelled jobs when asked."""
    switches.fail = True
    failed = [await defer("deliver", {"n": n}) for n in range(3)]
    await drain(jobs_app)
    waiting = await defer("other")
    await resources_of(jobs_app).jobs.cancel(waiting)

    body = problem(
        await api.post("/v1/jobs/retry", json={}, headers=admin_headers), 422, "validation_failed"
    )
    assert "all" in str(body["errors"])
    typo = await api.post("/v1/jobs/retry", json={"tsk": "deliver"}, headers=admin_headers)
    problem(typo, 422, "validation_failed")
    json_header = {**admin_headers, "Content-Type": "application/json"}
    for unreadable in (b"\xff", b"[" * 100_000, b'{"created_before": 0}'):
        answer = await api.post("/v1/jobs/retry", content=unreadable, headers=json_header)
        if unreadable.startswith(b"{"):  # a Unix time where ISO 8601 is promised
            assert problem(answer, 422, "validation_failed")["errors"][0]["pointer"] == (
                "/created_before"
            )
        else:  # not UTF-8, nested past any limit: FastAPI's bare 400 before
            assert problem(answer, 400, "malformed_body")["errors"][0]["pointer"] == ""
    todo = await api.post(
        "/v1/jobs/retry", json={"status": "todo", "all": True}, headers=admin_headers
    )
    problem(todo, 422, "validation_failed")

    none = await api.post("/v1/jobs/retry", json={"task": "other"}, headers=admin_headers)
    assert none.json() == {"retried": 0}
    some = await api.post(
        "/v1/jobs/retry", json={"task": "deliver", "error_class": CRM_DOWN}, headers=admin_headers
    )
    assert some.status_code == 200, some.text
    assert some.json() == {"retried": 3}
    switches.fail = False
    cancelled = await api.post(
        "/v1/jobs/retry", json={"status": "cancelled", "all": True}, headers=admin_headers
    )
    assert cancelled.json() == {"retried": 1}
    await drain(jobs_app)
    assert sorted(switches.runs) == sorted([*failed, waiting])


async def test_problems_for_unknown_ids_and_bad_filters(
    api: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """Unknown ids are 404 problems; bad filters, cursors and ids are 422 problems that
    point at the parameter."""
    for method, path in (
        ("GET", "/v1/jobs/987654"),
        ("POST", "/v1/jobs/987654/retry"),
        ("POST", "/v1/jobs/987654/cancel"),
    ):
        body = problem(await api.request(method, path, headers=admin_headers), 404, "not_found")
        assert "987654" in body["detail"]

    bad = {
        "status": "bogus",
        "limit": "201",
        "cursor": "not-a-cursor",
        "created_after": "2026-11-28T09:00:00",  # no offset
        "queue": "",
    }
    for name, value in bad.items():
        response = await api.get("/v1/jobs", params={name: value}, headers=admin_headers)
        body = problem(response, 422, "validation_failed")
        assert any(name in e["pointer"] for e in body["errors"]), (name, body)
    backwards = await api.get(
        "/v1/jobs",
        params={"created_after": "2026-11-28T10:00:00Z", "created_before": "2026-11-28T09:00:00Z"},
        headers=admin_headers,
    )
    problem(backwards, 422, "validation_failed")
    problem(await api.get("/v1/jobs/0", headers=admin_headers), 422, "validation_failed")
    unknown = await api.get("/v1/jobs", params={"stauts": "failed"}, headers=admin_headers)
    problem(unknown, 422, "validation_failed")
    for limit in ("2.0", "1e1", "0x10"):  # pydantic read `2.0` as 2
        response = await api.get("/v1/jobs", params={"limit": limit}, headers=admin_headers)
        problem(response, 422, "validation_failed")
    assert (await api.get("/v1/jobs", params={"limit": " 2"}, headers=admin_headers)).is_success
