"""Batch intake (`intake_many`) gives what sequential `intake` gives, on both databases.

Each comparison runs the same items twice on one database, each time in a transaction
that is rolled back afterwards: once one `intake` after another, once as one
`intake_many`. Leads are compared by their creation order (ids and uids differ).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.config import Settings
from cauce.core.db import Database, create_database, unit_of_work
from cauce.leads import repository as repo
from cauce.leads import service
from cauce.leads.endpoints import _item
from cauce.leads.matching.known import KnownLeads
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource, RoutingCursor
from cauce.leads.responses import BatchItemResult
from cauce.leads.schemas import LeadIn
from cauce.leads.service import IntakeResult, LeadsRuntime, intake, intake_many
from cauce.leads.views import created_view
from tests.conftest import SettingsFactory

ROUTING: dict[str, Any] = {
    "routing_rules": [{"team": "mexico", "countries": ["MX"]}],
    "teams": {
        "mexico": [{"name": "rosa", "capacity": 2}, {"name": "juan", "capacity": 1}],
        "spain": [{"name": "marta"}, {"name": "pablo"}],
    },
    "default_team": "spain",
}


class RecordingQueue:
    """Counts deferred jobs (a CRM is configured, so intake asks for deliveries)."""

    engine = "none"

    def __init__(self) -> None:
        self.deferred: list[str] = []

    async def defer(self, session: Any, task: str, payload: Any, **options: Any) -> None:
        self.deferred.append(task)


MakeRuntime = Callable[..., tuple[LeadsRuntime, Database]]


@pytest.fixture
async def make_rt(settings_factory: SettingsFactory) -> AsyncIterator[MakeRuntime]:
    """A leads runtime on this test's database, with settings overrides."""
    made: list[Database] = []

    def make(queue: Any = None, **overrides: Any) -> tuple[LeadsRuntime, Database]:
        settings_ = settings_factory(**overrides)
        database = create_database(settings_)
        made.append(database)
        return _runtime(settings_, database, queue), database

    yield make
    for database in made:
        await database.dispose()


def _runtime(settings_: Settings, database: Database, queue: Any = None) -> LeadsRuntime:
    jobs: Any = queue if queue is not None else RecordingQueue()
    return LeadsRuntime(settings=settings_, sessionmaker=database.sessionmaker, queue=jobs)


def _lead_in(fields: dict[str, Any]) -> LeadIn:
    return LeadIn.model_validate(fields)


async def _state(session: AsyncSession) -> dict[str, Any]:
    """Everything intake wrote, with leads named by creation order."""
    leads = list((await session.scalars(select(Lead).order_by(Lead.id))).all())
    position = {lead.id: i for i, lead in enumerate(leads)}
    skip = {"id", "uid", "created_at", "updated_at", "possible_duplicate_of"}
    rows = []
    for lead in leads:
        row = {c.name: getattr(lead, c.name) for c in Lead.__table__.columns if c.name not in skip}
        row["held_against"] = position.get(lead.possible_duplicate_of or -1)
        rows.append(row)
    sources = (await session.scalars(select(LeadSource).order_by(LeadSource.id))).all()
    events = (await session.scalars(select(LeadEvent).order_by(LeadEvent.id))).all()
    keys = (await session.scalars(select(LeadMatchKey))).all()
    cursors = (await session.scalars(select(RoutingCursor))).all()
    return {
        "leads": rows,
        "sources": [
            (position[s.lead_id], s.source, s.external_id, s.utm, s.consent) for s in sources
        ],
        "history": [(position[e.lead_id], e.action, e.changes, e.actor) for e in events],
        "keys": sorted((position[k.lead_id], k.key) for k in keys),
        "cursors": sorted((c.team, c.position) for c in cursors),
    }


def _outcomes(results: Sequence[IntakeResult], state_uids: dict[str, int]) -> list[Any]:
    out = []
    for r in results:
        dup = r.duplicate
        out.append(
            (
                r.outcome,
                state_uids[r.lead.uid],
                r.score.value,
                [reason.rule for reason in r.score.reasons],
                r.owner,  # as the item answers it (a later item may change the lead)
                r.lead.team,
                None
                if dup is None
                else (
                    state_uids[dup.lead_uid],
                    dup.match,
                    dup.confidence,
                    dup.action,
                    dup.merged_fields,
                ),
            )
        )
    return out


Run = Callable[[AsyncSession, LeadsRuntime, list[LeadIn]], Awaitable[list[IntakeResult]]]


async def _one_by_one(
    session: AsyncSession, rt: LeadsRuntime, items: list[LeadIn]
) -> list[IntakeResult]:
    return [await intake(session, rt, item, actor="t") for item in items]


async def _in_one_batch(
    session: AsyncSession, rt: LeadsRuntime, items: list[LeadIn]
) -> list[IntakeResult]:
    return await intake_many(session, rt, items, actor="t")


async def _run(
    rt: LeadsRuntime, stored: list[LeadIn], items: list[LeadIn], how: Run
) -> tuple[list[Any], dict[str, Any]]:
    """Intake `stored` one by one, then `items` as `how` says; roll everything back."""
    async with rt.sessionmaker() as session:
        try:
            await _one_by_one(session, rt, stored)
            results = await how(session, rt, items)
            await session.flush()
            state = await _state(session)
            leads = (await session.scalars(select(Lead.uid).order_by(Lead.id))).all()
            uids = {uid: i for i, uid in enumerate(leads)}
            return _outcomes(results, uids), state
        finally:
            await session.rollback()


async def _same_both_ways(rt: LeadsRuntime, stored: list[LeadIn], items: list[LeadIn]) -> list[Any]:
    sequential = await _run(rt, stored, items, _one_by_one)
    batched = await _run(rt, stored, items, _in_one_batch)
    assert batched[0] == sequential[0]
    assert batched[1] == sequential[1]
    return sequential[0]


# --- examples ----------------------------------------------------------------------

STORED = [
    {"email": "ana.garcia@nandu.es", "first_name": "Ana", "last_name": "García Ruiz"},
    {
        "first_name": "Itziar",
        "last_name": "Etxeberria Goikoetxea",
        "company": "Talleres Urola SL",
        "city": "Azpeitia",
        "phone": "943 123 456",
    },
    {"phone": "612 000 111", "first_name": "Luis", "company": "Bodegas Peñalara"},
]


async def test_copies_in_one_batch_become_one_lead_and_merges(make_rt: MakeRuntime) -> None:
    """Three copies of a new lead in a batch: one created, two merged into it, as in turn."""
    rt, _ = make_rt()
    new = {"email": "pepe@empresa.es", "first_name": "Pepe", "country": "ES"}
    items = [_lead_in(new), _lead_in({**new, "job_title": "Gerente"}), _lead_in(new)]
    outcomes = await _same_both_ways(rt, [], items)
    assert [o[0] for o in outcomes] == ["created", "merged", "merged"]
    assert {o[1] for o in outcomes} == {0}
    assert outcomes[1][6] == (0, "email", 1.0, "merged", ("job_title",))


async def test_stored_merges_fuzzy_and_rekeying_within_a_batch(make_rt: MakeRuntime) -> None:
    """Merges into stored leads (exact and fuzzy), routing, and a merge that adds a phone
    which a later item of the same batch then matches on."""
    rt, _ = make_rt(leads=ROUTING)
    items = [
        # Same email as a stored lead, bringing a phone it lacked: merged, re-keyed...
        {"email": "ANA.GARCIA@nandu.es", "phone": "622 333 444", "company": "Ñandú"},
        # ...so a lead with only that phone and the same name merges into it too.
        {"phone": "+34 622 333 444", "first_name": "Ana", "last_name": "Garcia"},
        # Same person as a stored one, another mailbox and no phone: a fuzzy match.
        {
            "email": "itziar@urola.eus",
            "first_name": "Itziar",
            "last_name": "Etxeberria Goikoetxea",
            "company": "Talleres Urola",
            "city": "Azpeitia",
        },
        # A near miss on the name only: held for review or distinct, as in turn.
        {"email": "luisa@otra.es", "first_name": "Luisa", "company": "Bodegas Peñalara"},
        {"email": "nuevo@empresa.mx", "country": "MX"},
        {"email": "otro@empresa.mx", "country": "MX", "owner": "jefe"},
        {"email": "tercero@empresa.mx", "country": "MX"},
    ]
    outcomes = await _same_both_ways(
        rt, [_lead_in(s) for s in STORED], [_lead_in(i) for i in items]
    )
    assert [o[0] for o in outcomes[:3]] == ["merged", "merged", "merged"]
    assert [o[1] for o in outcomes[:3]] == [0, 0, 1]
    assert outcomes[2][6][1] == "fuzzy"
    assert [o[4] for o in outcomes[4:]] == ["rosa", "jefe", "juan"]


async def test_review_policy_holds_against_a_lead_of_the_same_batch(
    make_rt: MakeRuntime,
) -> None:
    """With the review policy, a second copy is held against the first, both in one batch."""
    rt, _ = make_rt(leads={"dedupe": {"on_duplicate": "review"}})
    new = {"email": "eva@empresa.es", "first_name": "Eva"}
    outcomes = await _same_both_ways(rt, [], [_lead_in(new), _lead_in({**new, "company": "X"})])
    assert [o[0] for o in outcomes] == ["created", "held_for_review"]
    assert outcomes[1][6][0] == 0


async def test_one_delivery_request_and_fixed_statements_per_batch(
    make_rt: MakeRuntime,
) -> None:
    """A batch asks for one delivery, and its statement count does not grow with its size."""
    queue = RecordingQueue()
    rt, database = make_rt(queue, crm={"provider": "hubspot", "token": "t"})
    counts: list[int] = []
    for size in (3, 30):
        queue.deferred.clear()
        items = [_lead_in({"email": f"p{size}-{i}@empresa.es"}) for i in range(size)]
        statements = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(database.engine.sync_engine, "before_cursor_execute", count)
        try:
            async with rt.sessionmaker() as session:
                results = await intake_many(session, rt, items, actor="t")
                await session.rollback()
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", count)
        assert [r.outcome for r in results] == ["created"] * size
        assert len(queue.deferred) == 1
        counts.append(statements)
    assert counts[0] == counts[1]


# --- property: any mix of new leads, copies, variants and stored leads -------------

PEOPLE = [
    ("José", "García López", "Construcciones Ñandú SL", "Madrid", "jose.garcia"),
    ("Jose", "Garcia Lopez", "Construcciones Nandu", "Madrid", "jgarcia"),
    ("María", "Fernández Ruiz", "Bodegas Peñalara SA", "Sevilla", "maria.fr"),
    ("Pepe", "García", "Talleres Mecánicos del Ebro", "Zaragoza", "pepe.g"),
    ("Lucía", "Núñez Ortega", None, "Valencia", "lucia.n"),
    ("Luis", "Martín Gil", "Grupo Logístico Ibérico", "Vigo", "luis.martin"),
]
DOMAINS = ["empresa.es", "gmail.com", "correo.mx"]
PHONES = ["+34 612 345 678", "+34 622 111 222", "+34 655 000 999", "+52 55 1234 5678"]


@st.composite
def lead_fields(draw: st.DrawFn) -> dict[str, Any]:
    first, last, company, city, local = draw(st.sampled_from(PEOPLE))
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["email"] = f"{local}@{draw(st.sampled_from(DOMAINS))}"
    if draw(st.booleans()) or "email" not in fields:
        fields["phone"] = draw(st.sampled_from(PHONES))
    if draw(st.integers(0, 3)):
        fields["first_name"] = first
    if draw(st.integers(0, 3)):
        fields["last_name"] = last
    if company and draw(st.booleans()):
        fields["company"] = company
    if draw(st.booleans()):
        fields["city"] = city
    fields["country"] = draw(st.sampled_from(["ES", "ES", "MX"]))
    fields["source"] = draw(st.sampled_from(["api", "web_form", "csv"]))
    if draw(st.booleans()):
        fields["custom_fields"] = {"producto": draw(st.sampled_from(["ERP", "CRM"]))}
    if draw(st.integers(0, 5)) == 0:
        fields["owner"] = "jefe"
    if draw(st.integers(0, 3)) == 0:  # a status further on is merged (`merge_sales_state`)
        fields["status"] = draw(st.sampled_from(["working", "won", "lost"]))
    return fields


@pytest.mark.parametrize("policy", ["merge", "review"])
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stored=st.lists(lead_fields(), max_size=5),
    items=st.lists(lead_fields(), min_size=1, max_size=12),
    most=st.sampled_from([1, 2, 200]),
)
async def test_batch_equals_sequential_intake(
    settings_factory: SettingsFactory,
    policy: str,
    stored: list[dict[str, Any]],
    items: list[dict[str, Any]],
    most: int,
) -> None:
    """Whatever the items, a batch gives the outcomes and rows that intake in turn gives,
    also when few candidates are compared (which ones, the batch's earlier items change)."""
    dedupe = {"on_duplicate": policy, "max_candidates": most}
    settings_ = settings_factory(leads={**ROUTING, "dedupe": dedupe})
    database = create_database(settings_)
    try:
        rt = _runtime(settings_, database)
        await _same_both_ways(rt, [_lead_in(s) for s in stored], [_lead_in(i) for i in items])
    finally:
        await database.dispose()


async def test_batch_items_are_what_the_response_model_renders(make_rt: MakeRuntime) -> None:
    """Batch items built by hand equal `BatchItemResult` rendered from the lead's answer."""
    rt, _ = make_rt(leads=ROUTING)
    new = {"email": "ines@empresa.es", "first_name": "Inés", "country": "ES"}
    items = [_lead_in(new), _lead_in({**new, "company": "Empresa"}), _lead_in(STORED[0])]
    async with rt.sessionmaker() as session:
        results = await intake_many(session, rt, items, actor="t")
        await session.rollback()
    for index, result in enumerate(results):
        created = created_view(result)
        expected = BatchItemResult(
            index=index,
            outcome=created.outcome,
            id=created.id,
            score=created.score,
            score_model=created.score_model,
            owner=created.owner,
            duplicate=created.duplicate,
        ).model_dump(mode="json")
        assert _item(index, result) == expected
    assert results[1].duplicate is not None


async def test_too_common_fuzzy_keys_come_without_members(make_rt: MakeRuntime) -> None:
    """A fuzzy key with more members than `max_block_size` is reported too common, not read
    member by member; an exact key (a shared phone) is read up to the cap all the same; and
    intake over such keys still gives what sequential intake gives."""
    # The review policy keeps duplicates as leads of their own (held), so five leads can
    # share a phone: five Marías García of Sevilla, all on the same switchboard.
    dedupe = {"max_block_size": 3, "max_candidates": 3, "on_duplicate": "review"}
    rt, _ = make_rt(leads={"dedupe": dedupe})
    stored = [
        _lead_in(
            {
                "email": f"maria{i}@empresa{i}.es",
                "first_name": "María",
                "last_name": "García López",
                "city": "Sevilla",
                "phone": "954 000 000",
            }
        )
        for i in range(5)
    ]
    async with rt.sessionmaker() as session:
        try:
            await _one_by_one(session, rt, stored)
            await session.flush()
            first = await session.scalar(select(func.min(Lead.id)))
            keys = set(
                (
                    await session.scalars(
                        select(LeadMatchKey.key).where(LeadMatchKey.lead_id == first)
                    )
                ).all()
            )
            found = await repo.key_members(session, keys, cap=4)
        finally:
            await session.rollback()
    phone = next(k for k in keys if k.startswith("p:"))
    assert len(found.members[phone]) == 4  # exact: read, up to the cap
    assert phone not in found.too_common
    assert found.too_common  # the name and place keys all five share
    assert not found.too_common & set(found.members)
    assert all(len(ids) <= 3 for key, ids in found.members.items() if key != phone)
    # A sixth María arriving in a batch meets the same keys as she would on her own.
    newcomer = {"first_name": "Maria", "last_name": "Garcia Lopez", "city": "Sevilla"}
    items = [_lead_in({**newcomer, "email": "maria.nueva@otra.es"}), stored[2]]
    await _same_both_ways(rt, stored, items)


def _namesake(i: int) -> dict[str, Any]:
    """Person `i` of a few sharing names and places: copies (same phone) 40 apart, some
    with an unaccented surname."""
    firsts, lasts = ["Ana", "José", "María"], ["García López", "García Ruiz", "Pérez López"]
    cities, companies = ["Sevilla", "Cádiz"], ["Sol", "Luna", None]
    fields: dict[str, Any] = {
        "first_name": firsts[i % 3],
        "last_name": lasts[(i // 3) % 3],
        "city": cities[(i // 9) % 2],
        "phone": f"+34 600 000 {i % 40:03d}",
    }
    if company := companies[(i // 5) % 3]:
        fields["company"] = company
    if i % 7 == 0:
        fields["last_name"] = fields["last_name"].replace("García", "Garcia")
    return fields


@pytest.mark.parametrize("most", [2, 50])
async def test_a_big_batch_of_namesakes_equals_sequential_intake(
    make_rt: MakeRuntime, most: int
) -> None:
    """A batch big enough to read every lead under its keys at once, of people sharing
    few names (so which stored leads are an item's strongest candidates keeps changing),
    with copies and typos among them, gives what intake in turn gives."""
    rt, _ = make_rt(leads={"dedupe": {"max_candidates": most}})
    stored = [_lead_in(_namesake(i)) for i in range(12)]
    items = [_lead_in(_namesake(i)) for i in range(5, 85)]
    outcomes = await _same_both_ways(rt, stored, items)
    assert len(items) >= service._READ_EVERY_MEMBER
    assert {o[0] for o in outcomes} >= {"created", "merged"}


async def test_the_candidate_cache_never_changes_a_decision(make_rt: MakeRuntime) -> None:
    """Namesakes sent one at a time, each committed (so the process keeps the leads it
    read and wrote), decide as they do when every candidate is read afresh."""
    rt, _ = make_rt(leads={"dedupe": {"max_candidates": 4}})
    items = [_lead_in(_namesake(i)) for i in range(60)]
    rt.known = KnownLeads(size=0)  # holds nothing: every candidate is read
    cold, _ = await _run(rt, [], items, _one_by_one)  # rolled back afterwards
    rt.known = KnownLeads()
    results = []
    for item in items:
        async with unit_of_work(rt.sessionmaker) as session:
            results.append(await intake(session, rt, item, actor="t"))
    assert len(rt.known) > 0
    async with rt.sessionmaker() as session:
        uids = (await session.scalars(select(Lead.uid).order_by(Lead.id))).all()
    warm = _outcomes(results, {uid: i for i, uid in enumerate(uids)})
    assert warm == cold
    assert {o[0] for o in warm} >= {"created", "merged"}
