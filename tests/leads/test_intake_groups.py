"""Group commit of `POST /v1/leads` (ADR 0009), on both databases, through the real app.

Concurrent requests share one transaction; each still gets the answer it would get alone,
in arrival order: its own id and history line, merges against the leads before it, its
idempotency key honoured; and a group that fails never fails the leads that would not.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from structlog.testing import capture_logs

from cauce.app import Resources, create_app
from cauce.leads import intake_groups
from cauce.leads.intake_groups import IntakeGroups
from cauce.leads.models import Lead
from cauce.leads.service import LeadsRuntime, intake_many
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm


async def _app(settings_factory: SettingsFactory, **leads: Any) -> FastAPI:
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads=leads,
    )
    return create_app(settings, crm=MemoryCrm())


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    app = await _app(settings_factory)
    async with LifespanManager(app):
        yield app


async def _client(app: FastAPI, name: str = "t") -> httpx.AsyncClient:
    resources: Resources = app.state.resources
    key = await resources.api_keys.create(name, ["leads:read", "leads:write"])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    )


def _groups(app: FastAPI) -> IntakeGroups:
    rt: LeadsRuntime = app.state.leads
    assert rt.groups is not None
    return rt.groups


def _lead(**fields: Any) -> dict[str, Any]:
    base = {"email": f"{uuid.uuid4().hex[:10]}@empresa.es", "first_name": "Ana"}
    base.update(fields)
    return base


async def _stored(app: FastAPI) -> int:
    rt: LeadsRuntime = app.state.leads
    async with rt.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Lead)) or 0)


async def _post_all(
    client: httpx.AsyncClient, bodies: Sequence[dict[str, Any]], **kw: Any
) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.post("/v1/leads", json=b, **kw) for b in bodies)))


async def test_concurrent_leads_share_transactions_and_get_their_own_answers(
    leads_app: FastAPI,
) -> None:
    """30 leads at once: fewer transactions than leads, 30 distinct leads, each answered
    201 with its own id, and each history line names the key that sent it."""
    async with await _client(leads_app, "web") as web, await _client(leads_app, "app") as app_:
        bodies = [_lead(first_name=f"Persona{i}") for i in range(30)]
        responses = await asyncio.gather(
            *(
                (web if i % 2 == 0 else app_).post("/v1/leads", json=body)
                for i, body in enumerate(bodies)
            )
        )
        assert [r.status_code for r in responses] == [201] * 30
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == 30
        groups = _groups(leads_app)
        assert groups.grouped == 30
        assert groups.groups < 30  # some requests did share a transaction
        assert await _stored(leads_app) == 30
        actors = set()
        for i, lead_id in enumerate(ids):
            detail = (await web.get(f"/v1/leads/{lead_id}")).json()
            assert detail["email"] == bodies[i]["email"]
            assert [h["action"] for h in detail["history"]] == ["created"]
            actors.add((i % 2, detail["history"][0]["actor"]))
        assert len(actors) == 2  # one actor per key, never mixed up within a group
        assert len({actor for _, actor in actors}) == 2


async def test_copies_in_one_group_merge_as_they_would_one_after_another(
    leads_app: FastAPI,
) -> None:
    """The same person three times at once: one lead created, then two merges into it."""
    async with await _client(leads_app) as client:
        bodies = [
            _lead(email="maria@empresa.es"),
            _lead(email="MARIA@empresa.es", company="Acme Ibérica"),
            _lead(email="maria@empresa.es", job_title="Directora"),
        ]
        responses = await _post_all(client, bodies)
        outcomes = sorted(r.json()["outcome"] for r in responses)
        assert outcomes == ["created", "merged", "merged"]
        assert len({r.json()["id"] for r in responses}) == 1
        assert await _stored(leads_app) == 1
        detail = (await client.get(f"/v1/leads/{responses[0].json()['id']}")).json()
        assert detail["company"] == "Acme Ibérica"
        assert detail["job_title"] == "Directora"


async def test_one_idempotency_key_twice_at_once_stores_one_lead(leads_app: FastAPI) -> None:
    """Two requests with one key and one body: one lead; the other answer is the replay."""
    async with await _client(leads_app) as client:
        body = _lead()
        first, second = await _post_all(client, [body, body], headers={"Idempotency-Key": "k-1"})
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        replayed = [r.headers.get("Idempotent-Replayed") for r in (first, second)]
        assert replayed.count("true") == 1
        assert await _stored(leads_app) == 1
        # Another body under the same key is refused; leads with keys of their own that
        # share its group are not.
        keyed = [(_lead(), "k-2"), (body | {"company": "Otra"}, "k-1"), (_lead(), "k-3")]
        other = await asyncio.gather(
            *(client.post("/v1/leads", json=b, headers={"Idempotency-Key": k}) for b, k in keyed)
        )
        assert [r.status_code for r in other] == [201, 422, 201]
        assert other[1].json()["code"] == "idempotency_key_reused"
        assert await _stored(leads_app) == 3


class _PoisonScorer:
    """The runtime's scorer, failing on one lead's email (a fault of that lead alone)."""

    def __init__(self, inner: Any, poison: str) -> None:
        self.inner, self.poison = inner, poison

    def score(self, facts: Mapping[str, Any]) -> Any:
        if facts.get("email") == self.poison:
            raise ValueError("this lead cannot be scored")
        return self.inner.score(facts)


async def test_a_failing_lead_does_not_fail_its_group(leads_app: FastAPI) -> None:
    """A group whose transaction fails because of one lead is retried lead by lead: only
    the lead that fails alone gets an error, the others are stored once each."""
    poison = "veneno@empresa.es"
    rt: LeadsRuntime = leads_app.state.leads
    rt.scorer = _PoisonScorer(rt.scorer, poison)
    groups = _groups(leads_app)
    async with await _client(leads_app) as client:
        bodies = [_lead() for _ in range(5)]
        bodies.insert(2, _lead(email=poison))
        with capture_logs() as logs:  # unconfigured structlog renders each traceback slowly
            responses = await _post_all(client, bodies)
        codes = [r.status_code for r in responses]
        assert codes == [201, 201, 500, 201, 201, 201]
        assert responses[2].headers["content-type"].startswith("application/problem+json")
        # The poison shared a group, which was split: a retry alone for each of its leads.
        assert any(e["event"] == "leads.intake_group.retry_alone" for e in logs)
        assert groups.groups < len(bodies)
        assert await _stored(leads_app) == 5


def _unreachable(backend: str) -> str:
    if backend == "sqlite":
        return "sqlite+aiosqlite:////nonexistent-cauce-dir/cauce.db"  # cannot be opened
    return "postgresql+psycopg://cauce:x@127.0.0.1:1/cauce"  # nothing listens on port 1


async def test_a_lost_database_fails_the_group_at_once(leads_app: FastAPI, backend: str) -> None:
    """An outage is nobody's lead: every lead of the group answers 503 with Retry-After,
    with one try per group, not a retry lead by lead (which would wait out the outage
    once per lead)."""
    rt: LeadsRuntime = leads_app.state.leads
    lost = create_async_engine(_unreachable(backend))
    tries: list[int] = []
    event.listen(lost.sync_engine, "do_connect", lambda *_: tries.append(1))
    rt.sessionmaker = async_sessionmaker(lost, expire_on_commit=False)
    groups = _groups(leads_app)
    try:
        async with await _client(leads_app) as client:
            with capture_logs() as logs:  # unconfigured structlog renders tracebacks slowly
                responses = await _post_all(client, [_lead() for _ in range(8)])
        assert [r.status_code for r in responses] == [503] * 8
        assert all(r.headers.get("Retry-After") for r in responses)
        # One compact warning for the outage, no traceback a request (ADR 0005).
        assert sum(e["event"] == "http.unhandled_error" for e in logs) == 0
        assert sum(e["event"] == "http.database_unavailable" for e in logs) == 1
        assert groups.groups < 8
        assert len(tries) == groups.groups  # one connection attempt per group, no splitting
    finally:
        await lost.dispose()


async def test_a_request_gone_before_its_group_starts_is_left_out(
    leads_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while waiting for its group: its lead is not written; the others are."""
    started, release = asyncio.Event(), asyncio.Event()

    async def held(session: Any, rt: Any, items: Sequence[Any], **kw: Any) -> Any:
        started.set()
        await release.wait()  # the first group stays in flight until released
        return await intake_many(session, rt, items, **kw)

    monkeypatch.setattr(intake_groups, "intake_many", held)
    groups = _groups(leads_app)
    async with await _client(leads_app) as client:
        first = asyncio.create_task(client.post("/v1/leads", json=_lead()))
        await asyncio.wait_for(started.wait(), 10)
        waiting = [asyncio.create_task(client.post("/v1/leads", json=_lead())) for _ in range(3)]
        await _until(lambda: len(groups._waiting) == 3)
        waiting[1].cancel()
        release.set()
        done = await asyncio.gather(first, *waiting, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        assert [r.status_code for r in done if isinstance(r, httpx.Response)] == [201] * 3
        assert groups.grouped == 3  # the cancelled lead never joined a group
        assert await _stored(leads_app) == 3


async def test_group_size_one_turns_grouping_off(settings_factory: SettingsFactory) -> None:
    """`leads.intake_group_max = 1`: each lead in its own transaction, as before."""
    app = await _app(settings_factory, intake_group_max=1)
    async with LifespanManager(app), await _client(app) as client:
        rt: LeadsRuntime = app.state.leads
        assert rt.groups is None
        responses = await _post_all(client, [_lead(), _lead(email="x@empresa.es")])
        assert [r.status_code for r in responses] == [201, 201]
        assert await _stored(app) == 2


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until `condition()` holds."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def _hold_groups(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make every group wait, once it has started (the first event), for the second."""
    started, release = asyncio.Event(), asyncio.Event()

    async def held(session: Any, rt: Any, items: Sequence[Any], **kw: Any) -> Any:
        started.set()
        await release.wait()
        return await intake_many(session, rt, items, **kw)

    monkeypatch.setattr(intake_groups, "intake_many", held)
    return started, release


async def test_leads_beyond_the_queue_bound_are_refused_with_retry_after(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`leads.intake_queue_max` leads wait behind a group in flight; the next ones get 503
    `intake_busy` with Retry-After at once and nothing of theirs is stored; the waiting
    ones are stored when the group is through."""
    started, release = _hold_groups(monkeypatch)
    app = await _app(settings_factory, intake_queue_max=2)
    async with LifespanManager(app), await _client(app) as client:
        groups = _groups(app)
        first = asyncio.create_task(client.post("/v1/leads", json=_lead()))
        await asyncio.wait_for(started.wait(), 10)
        waiting = [asyncio.create_task(client.post("/v1/leads", json=_lead())) for _ in range(2)]
        await _until(lambda: len(groups._waiting) == 2)
        refused = await _post_all(client, [_lead(), _lead()])
        for response in refused:
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "intake_busy"
        registry = app.state.resources.registry
        assert registry.get_sample_value("cauce_leads_intake_total", {"outcome": "busy"}) == 2
        release.set()
        done = await asyncio.gather(first, *waiting)
        assert [r.status_code for r in done] == [201] * 3
        assert await _stored(app) == 3


async def test_requests_gone_away_leave_room_in_the_queue(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leads whose requests were cancelled while they waited no longer count toward
    `leads.intake_queue_max`: the next lead is accepted, and only it and the group in
    flight are stored."""
    started, release = _hold_groups(monkeypatch)
    app = await _app(settings_factory, intake_queue_max=2)
    async with LifespanManager(app), await _client(app) as client:
        groups = _groups(app)
        first = asyncio.create_task(client.post("/v1/leads", json=_lead()))
        await asyncio.wait_for(started.wait(), 10)
        gone = [asyncio.create_task(client.post("/v1/leads", json=_lead())) for _ in range(2)]
        await _until(lambda: groups.queued == 2)
        assert groups.queued == 2
        for task in gone:
            task.cancel()
        await asyncio.gather(*gone, return_exceptions=True)
        assert groups.queued == 0
        assert len(groups._waiting) == 2  # still there, until the drain reaches them
        late = asyncio.create_task(client.post("/v1/leads", json=_lead()))
        await _until(lambda: groups.queued == 1)
        release.set()
        done = await asyncio.gather(first, late)
        assert [r.status_code for r in done] == [201, 201]
        assert await _stored(app) == 2
        assert groups.queued == 0


async def _traced_app(settings_factory: SettingsFactory, exporter: InMemorySpanExporter) -> FastAPI:
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    return create_app(settings, crm=MemoryCrm(), span_exporter=exporter)


def _server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "POST /v1/leads"]


def _size(span: ReadableSpan) -> int:
    size = (span.attributes or {})["cauce.leads.group_size"]
    assert isinstance(size, int)
    return size


def _inserts_by_trace(exporter: InMemorySpanExporter) -> dict[int, int]:
    found: dict[int, int] = {}
    for span in exporter.get_finished_spans():
        statement = str((span.attributes or {}).get("db.statement", ""))
        if statement.startswith("INSERT INTO leads ") and span.context is not None:
            found[span.context.trace_id] = found.get(span.context.trace_id, 0) + 1
    return found


async def test_a_group_span_links_the_requests_it_carried(
    settings_factory: SettingsFactory,
) -> None:
    """A group's transaction has its own span, a child of its first request's, with a
    link to every other request it carried; each of those requests' spans links back."""
    exporter = InMemorySpanExporter()
    app = await _traced_app(settings_factory, exporter)
    async with LifespanManager(app), await _client(app) as client:
        exporter.clear()
        responses = await _post_all(client, [_lead() for _ in range(6)])
        assert [r.status_code for r in responses] == [201] * 6
    groups = [s for s in exporter.get_finished_spans() if s.name == "leads.intake_group"]
    servers = {s.context.span_id: s for s in _server_spans(exporter) if s.context}
    assert len(servers) == 6
    assert sum(_size(g) for g in groups) == 6
    assert any(_size(g) > 1 for g in groups)
    for group in groups:
        assert group.context is not None
        assert group.parent is not None
        first = servers[group.parent.span_id]  # a request's span is the parent
        linked = {link.context.span_id for link in group.links}
        assert first.context is not None
        assert first.context.span_id not in linked
        assert len(linked) == _size(group) - 1
        for span_id in linked:  # each other request links back to the group
            back = {link.context.span_id for link in servers[span_id].links}
            assert back == {group.context.span_id}
        # The group's statements are children of the group's span, in the first trace.
        inserts = _inserts_by_trace(exporter)
        assert inserts.get(group.context.trace_id, 0) >= 1


async def test_a_lead_retried_alone_runs_in_its_own_trace(
    settings_factory: SettingsFactory,
) -> None:
    """When a group fails and each lead runs again alone, each retry's statements are in
    that lead's own request trace, not in the trace of the group's first request."""
    exporter = InMemorySpanExporter()
    app = await _traced_app(settings_factory, exporter)
    poison = "veneno@empresa.es"
    async with LifespanManager(app), await _client(app) as client:
        rt: LeadsRuntime = app.state.leads
        rt.scorer = _PoisonScorer(rt.scorer, poison)
        exporter.clear()
        bodies = [_lead() for _ in range(5)]
        bodies.insert(2, _lead(email=poison))
        with capture_logs() as logs:
            responses = await _post_all(client, bodies)
        assert [r.status_code for r in responses].count(201) == 5
        # The poison shared a group, which failed and ran again lead by lead.
        assert any(e["event"] == "leads.intake_group.retry_alone" for e in logs)
    inserts = _inserts_by_trace(exporter)
    ok_traces = {
        s.context.trace_id
        for s in _server_spans(exporter)
        if s.context and (s.attributes or {}).get("http.status_code") == 201
    }
    assert len(ok_traces) == 5
    # Every stored lead's INSERT is in its own request's trace.
    assert all(inserts.get(trace_id, 0) >= 1 for trace_id in ok_traces)
