"""The cheaper paths of batch intake decide and store exactly what the plain ones did.

The screen's shared bounds against the screen as it was (one record at a time, nothing
shared), the matcher's best match against ranking every candidate, the candidate set
against a plain weighing of every candidate, the bulk inserts against SQLAlchemy's own
INSERT, and the cached field validators against fresh ones.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import insert, select, text

from cauce.core.db import create_database
from cauce.core.db.base import utcnow
from cauce.leads import bulk, repository
from cauce.leads.errors import NormalisationError
from cauce.leads.field_types import email_flags
from cauce.leads.matching import DedupeSettings, MatchRecord
from cauce.leads.matching.compare import bits_needed
from cauce.leads.matching.fields import _address, _company, _dob, _given, _place, _postcode
from cauce.leads.matching.fields import _surnames as _surname_evidence
from cauce.leads.matching.index import rank_prepared
from cauce.leads.matching.plan import BatchMatcher, BlockView, stored_keys
from cauce.leads.matching.record import Features, prepare
from cauce.leads.matching.screen import (
    _NAME_BOUNDS,
    _PLACE_BITS,
    _SCREEN_MEMO,
    Screen,
    _surname_bits,
)
from cauce.leads.models import Lead
from cauce.leads.normalise import normalise_email
from cauce.leads.phones import normalise_phone
from cauce.leads.schemas import LeadIn
from tests.conftest import SettingsFactory
from tests.leads.match_records import records


def _reference_admits(a: Features, b: Features, nick: bool, need: float) -> bool:
    """The screen as it was before its bounds were shared: one pair, nothing remembered."""
    bits = 0.0
    if a.email_key and b.email_key:
        if a.email_key == b.email_key:
            return True
        bits += 4.0 if a.email_local is not None and a.email_local == b.email_local else -1.0
    if a.phone and b.phone:
        if a.phone == b.phone:
            return True
        bits -= 1.0
    if a.tax_id and b.tax_id and a.tax_id == b.tax_id:
        return True
    fa = a.first_canonical if nick else a.first_tokens
    fb = b.first_canonical if nick else b.first_tokens
    common = a.canonical_common if nick else a.first_common
    evidence = _given(fa, fb, "first_name")
    given_bits = evidence.weight if evidence is not None else 0.0
    la, lb = len(a.last_tokens), len(b.last_tokens)
    surname_max = _surname_bits(la, a.last_common, lb, b.last_common) if la and lb else 0.0
    crossed_max = -math.inf
    crossed = b.first_initial in a.last_initials or a.first_initial in b.last_initials
    if la and lb and evidence is not None and crossed:
        cb = b.canonical_common if nick else b.first_common
        crossed_max = (
            _surname_bits(len(fa), common, lb, b.last_common)
            + _surname_bits(la, a.last_common, len(fb), cb)
            - 2.0
        )
    if a.company and b.company:
        bits += 6.0 if a.company == b.company else 3.5
    if a.dob and b.dob:
        bits += _dob(a.dob, b.dob).weight
    addresses = a.address is not None and b.address is not None
    if addresses:
        bits += 7.0
    if a.city and b.city:
        bits += _place(a.city, b.city, "city", 4.0, 2.5, -2.0).weight
    if a.postcode and b.postcode:
        bits += _postcode(a.postcode, b.postcode).weight
    if a.region and b.region:
        bits += _place(a.region, b.region, "region", 1.0, 0.5, -1.5).weight
    if a.country and b.country:
        bits += 0.5 if a.country == b.country else -4.0
    if bits + max(given_bits + surname_max, crossed_max) < need:
        return False
    if a.company and b.company and a.company != b.company:
        bits += _company(a.company, b.company).weight - 3.5
    if addresses and (address := _address(a, b)) is not None:
        bits += address.weight - 7.0
    if (surnames := _surname_evidence(a.last_tokens, b.last_tokens, "last_names")) is not None:
        surname_max = surnames.weight
    return bits + max(given_bits + surname_max, crossed_max) >= need


@settings(max_examples=400, deadline=None)
@given(
    st.lists(records, min_size=1, max_size=4),
    st.lists(records, max_size=10),
    st.booleans(),
    st.sampled_from([0.2, 0.5, 0.7, 0.9, 0.99]),
)
def test_screens_sharing_bounds_admit_what_the_plain_screen_admitted(
    incoming: list[MatchRecord], others: list[MatchRecord], nicknames: bool, floor: float
) -> None:
    """Screens of several records, sharing their name and place bounds, admit exactly
    the candidates the one-pair screen admits."""
    need = bits_needed(floor)
    candidates = [prepare(other) for other in others]
    for record in incoming:
        a = prepare(record)
        admits = Screen(a, nicknames, need).admits
        for b in [*candidates, *candidates]:
            assert admits(b) == _reference_admits(a, b, nicknames, need)


def test_screen_memos_are_bounded() -> None:
    """The shared bounds are emptied once full, so memory stays bounded."""
    need = bits_needed(0.5)
    a = prepare(MatchRecord(first_name="Ana", last_names="Gil", city="Lugo"))
    for i in range(_SCREEN_MEMO + 10):
        b = prepare(MatchRecord(first_name=f"n{i}", last_names="Gil", city=f"c{i}"))
        Screen(a, True, need).admits(b)
    for memo in (_NAME_BOUNDS, _PLACE_BITS):
        # What the shared tables really hold (values and tables), not just the count.
        tables = memo._tables
        held = len(tables) + sum(len(table) for table in tables.values())
        assert held <= len(memo) <= _SCREEN_MEMO


@settings(max_examples=150, deadline=None)
@given(st.lists(records, min_size=1, max_size=12), records, st.booleans())
def test_best_match_is_the_top_of_the_full_ranking(
    known: list[MatchRecord], incoming: MatchRecord, nicknames: bool
) -> None:
    """The matcher's best match is the first of every candidate ranked, ties included."""
    dedupe = DedupeSettings(nicknames=nicknames, review_threshold=0.2)
    view = BlockView({}, dedupe.max_block_size)
    matcher = BatchMatcher(view, dedupe)
    by_id: dict[int, Features] = {}
    for record in known:
        f = prepare(record)
        by_id[matcher.file({}, f, stored_keys(f))] = f
    a = prepare(incoming)
    keys = stored_keys(a)
    ranked = rank_prepared(a, [(i, by_id[i]) for i in view.candidates(keys)], dedupe)
    assert matcher.best(a, keys) == (ranked[0] if ranked else None)


def _reference_candidates(
    members: dict[str, list[int]], limit: int, most: int, keys: list[str]
) -> list[int]:
    """Every usable block's ids; past `most` of them, the exact keys' (lowest first), then
    the others by weight (one over each shared block's size), heaviest then lowest first."""
    blocks = {}
    for key in sorted(keys):
        block = sorted(set(members.get(key, ())))
        if block and (len(block) <= limit or key.startswith(("e:", "p:", "t:"))):
            blocks[key] = block
    every = sorted(set().union(*blocks.values()))
    if len(every) <= most:
        return every
    exact = sorted({i for k, b in blocks.items() if k.startswith(("e:", "p:", "t:")) for i in b})
    if len(exact) >= most:
        return exact[:most]
    weight = {i: 0.0 for i in every if i not in exact}
    for key, block in blocks.items():
        if not key.startswith(("e:", "p:", "t:")):
            for i in block:
                if i in weight:
                    weight[i] += 1.0 / len(block)
    ranked = sorted(weight, key=lambda i: (-weight[i], i))
    return sorted(exact + ranked[: most - len(exact)])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["e:a", "p:b", "n:c", "n:d", "b:e", "c:f", "m:g"]),
        st.lists(st.integers(1, 60), max_size=40),
    ),
    st.integers(1, 40),
    st.integers(1, 60),
)
def test_candidates_are_the_strongest_at_most(
    members: dict[str, list[int]], limit: int, most: int
) -> None:
    """Up to `max_candidates`, every usable block's ids; past it, exact keys' first, then
    the heaviest (rarest shared keys), lowest id among equals."""
    keys = [*members, "n:missing"]
    view = BlockView(members, limit, max_candidates=most)
    assert view.candidates(keys) == _reference_candidates(members, limit, most, keys)


# --- SQLite bulk insert --------------------------------------------------------------

_NOW = utcnow()
_LEAD_COLUMNS = (
    "email, phone, phone_extension, first_name, <utm>, <consent>, <custom_fields>, "
    "email_disposable, email_free, <score_reasons>, <match_keys>, possible_duplicate_of, "
    "synced_at, created_at, updated_at"
)
_SOURCE_COLUMNS = (
    "s.source, s.external_id, s.phone, s.phone_extension, <s.utm>, <s.consent>, s.received_at"
)
_EVENT_COLUMNS = "h.action, <h.changes>, h.actor, h.at"
_JSON = ("utm", "consent", "custom_fields", "score_reasons", "match_keys", "changes")


def _raw(columns: str, backend: str) -> str:
    """Columns as stored: on SQLite the very text and storage class; on PostgreSQL JSON
    is compared as values (its `json` type keeps whatever text it was given, and the bulk
    path has always sent compact JSON there)."""
    out = columns
    for name in _JSON:
        for prefix in ("", "s.", "h."):
            column = prefix + name
            stored = (
                f"{column}, typeof({column})" if backend == "sqlite" else f"CAST({column} AS jsonb)"
            )
            out = out.replace(f"<{column}>", stored)
    if backend == "sqlite":
        out += ", typeof(created_at)" if "created_at" in out else ""
    return out


def _lead_row(uid: str, consent: dict[str, Any] | None, utm: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(bulk.LEAD_COLUMNS)
    row.update(
        uid=uid,
        email="ana@empresa.es",
        email_key="ana@empresa.es",
        phone="+34911234567",
        phone_extension="12",
        first_name="Ána",
        source="api",
        status="new",
        utm=utm,
        consent=consent,
        custom_fields={"nota": "ñandú \u2019"},
        email_disposable=False,
        email_free=True,
        score=40,
        score_model="points",
        score_reasons=[{"rule": "has_email", "points": 10, "reason": "tiene email"}],
        match_keys=[],
        version=1,
        sync_status="pending",
        synced_version=0,
        sync_attempts=0,
        created_at=_NOW,
        updated_at=_NOW,
        search_text="ana ana empresa es",
    )
    return row


@pytest.mark.parametrize(
    ("consent", "utm"),
    [(None, {}), ({"marketing": True, "given_at": "2025-01-01T00:00:00+00:00"}, {"a": "b"})],
)
async def test_bulk_insert_stores_what_sqlalchemy_stores(
    backend: str,
    settings_factory: SettingsFactory,
    consent: dict[str, Any] | None,
    utm: dict[str, Any],
) -> None:
    """Leads, arrivals, history and keys written by the bulk path are stored as
    SQLAlchemy's own INSERT stores them (on SQLite byte for byte: JSON text, booleans,
    timestamps, nulls); one lead or many, ids come back by uid."""
    database = create_database(settings_factory())
    lead_sql = text(f"SELECT {_raw(_LEAD_COLUMNS, backend)} FROM leads WHERE uid = :uid")
    try:
        async with database.sessionmaker() as session:
            ours = [_lead_row(f"ours-{i}", consent, utm) for i in range(2)]
            ids = await bulk.insert_leads(session, ours)
            ids.update(await bulk.insert_leads(session, [_lead_row("ours-one", consent, utm)]))
            assert set(ids) == {"ours-0", "ours-1", "ours-one"}
            theirs = _lead_row("theirs", consent, utm)
            await session.execute(insert(repository.LEADS), [theirs])
            their_id = (await session.execute(select(Lead.id).where(Lead.uid == "theirs"))).one()
            expected = (await session.execute(lead_sql, {"uid": "theirs"})).one()
            for uid, lead_id in ids.items():
                assert (await session.execute(lead_sql, {"uid": uid})).one() == expected
                assert (await session.scalar(select(Lead.uid).where(Lead.id == lead_id))) == uid

            for lead_id in (*ids.values(), their_id[0]):
                source = {
                    "lead_id": lead_id,
                    "source": "api",
                    "external_id": None,
                    "email": "ana@empresa.es",
                    "phone": "+34911234567",
                    "phone_extension": "12",
                    "utm": utm,
                    "consent": consent,
                    "received_at": _NOW,
                }
                event = {"lead_id": lead_id, "action": "created", "changes": {}, "actor": None}
                event["at"] = _NOW
                if lead_id == their_id[0]:
                    await session.execute(insert(repository.SOURCES), [source])
                    await session.execute(insert(repository.EVENTS), [event])
                else:
                    await bulk.insert_sources(session, [source, source])
                    await bulk.insert_events(session, [event, event])
            columns = f"{_raw(_SOURCE_COLUMNS, backend)}, {_raw(_EVENT_COLUMNS, backend)}"
            raw = await session.execute(
                text(
                    f"SELECT {columns} FROM lead_sources s "
                    "JOIN lead_history h ON h.lead_id = s.lead_id"
                )
            )
            rows = [tuple(row) for row in raw]
            assert len(rows) == 4 * 3 + 1
            assert all(row == rows[0] for row in rows)

            long_key = "c:" + "x" * 300
            await bulk.insert_match_keys(session, {ids["ours-0"]: ["n:b", long_key, "n:a", "n:b"]})
            stored = await session.scalars(
                select(repository.KEYS.c.key)
                .where(repository.KEYS.c.lead_id == ids["ours-0"])
                .order_by(repository.KEYS.c.key)
            )
            assert list(stored) == sorted(["n:a", "n:b", long_key[:200]])
            await session.rollback()
    finally:
        await database.dispose()


# --- validation caches ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120), st.sampled_from(["first_name", "company", "city", "job_title"]))
def test_cached_text_validators_answer_as_fresh_ones(value: str, name: str) -> None:
    """A repeated value validates the same each time; a rejected one is rejected again."""
    outcomes = []
    for _ in range(2):
        try:
            lead = LeadIn.model_validate({"email": "a@empresa.es", name: value})
            outcomes.append(("ok", getattr(lead, name)))
        except ValueError as exc:
            outcomes.append(("error", str(exc)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "address",
    ["ana@gmail.com", "x@mailinator.com", "ana@inbox.mailinator.com", "ana@empresa.es"],
)
def test_email_flags_follow_the_domain(address: str) -> None:
    """The flags read by domain are the normaliser's flags for the whole address."""
    normalised = normalise_email(address)
    assert email_flags(normalised.address) == (
        normalised.is_disposable,
        normalised.is_free_mail,
    )


@pytest.mark.parametrize(
    ("phone", "country"),
    [("612 345 678", "ES"), ("612 345 678", "MX"), ("+52 1 55 1234 5678", None), ("12", "ES")],
)
def test_cached_phone_validation_answers_as_the_normaliser(phone: str, country: str | None) -> None:
    """A repeated phone reads the same in its lead's country each time, or fails the same."""
    expected: tuple[str, str]
    try:
        expected = ("ok", normalise_phone(phone, country or "ES"))
    except NormalisationError as exc:
        expected = ("error", exc.code)
    for _ in range(2):
        try:
            got = ("ok", LeadIn.model_validate({"phone": phone, "country": country}).phone)
        except ValidationError as exc:
            got = ("error", exc.errors()[0]["type"])
        assert got == expected
