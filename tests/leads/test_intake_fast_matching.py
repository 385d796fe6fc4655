"""The fast matching paths decide exactly as the plain comparison does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.leads.intake_writer import Incoming
from cauce.leads.matching import DedupeSettings, MatchRecord
from cauce.leads.matching.compare import bits_needed, compare_features, decide_above
from cauce.leads.matching.plan import (
    MATCH_COLUMNS,
    BatchMatcher,
    BlockView,
    prepare_row,
    stored_keys,
)
from cauce.leads.matching.record import prepare
from cauce.leads.matching.screen import Screen
from cauce.leads.service import _decide
from tests.leads.match_records import records


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[MatchRecord, MatchRecord]:
    """Two records, the second often sharing fields with the first (near the thresholds)."""
    a = draw(records)
    b = draw(records)
    shared = {
        name: getattr(a, name)
        for name in MatchRecord.__dataclass_fields__
        if draw(st.integers(0, 2)) > 0
    }
    if draw(st.booleans()):
        # Given name and surnames typed into each other's boxes.
        shared.update(first_name=a.last_names, last_names=a.first_name)
    return a, MatchRecord(**{**b.__dict__, **shared})


_ITZIAR = MatchRecord(first_name="Luis", last_names="Etxeberria Goikoetxea", company="Acme")


@settings(max_examples=1500, deadline=None)
@given(_pairs(), st.booleans(), st.sampled_from([0.0, 0.2, 0.5, 0.7, 0.9, 0.99, 1.0]))
@example((_ITZIAR, _ITZIAR), True, 0.5)
@example((_ITZIAR, MatchRecord(first_name="Etxeberria", last_names="Luis")), False, 0.5)
@example((_ITZIAR, MatchRecord(first_name="Luis", company="Acmee SL")), True, 0.5)
def test_screened_decision_equals_the_full_comparison(
    pair: tuple[MatchRecord, MatchRecord], nicknames: bool, floor: float
) -> None:
    """`decide_above` drops exactly the pairs scoring below the floor, and no other."""
    dedupe = DedupeSettings(nicknames=nicknames)
    fa, fb = prepare(pair[0]), prepare(pair[1])
    full = compare_features(fa, fb, dedupe)
    screened = decide_above(fa, fb, dedupe, floor)
    if full.score < floor:
        assert screened is None
    else:
        assert screened == full
    # The tightest floor, the pair's own score: the bound must never fall below it.
    assert decide_above(fa, fb, dedupe, full.score) == full


@settings(max_examples=300, deadline=None)
@given(records, st.lists(records, max_size=12), st.booleans())
def test_one_screen_for_many_candidates_decides_as_fresh_ones(
    a: MatchRecord, others: list[MatchRecord], nicknames: bool
) -> None:
    """A screen reused across candidates (remembering their names and places) agrees
    with a fresh screen per candidate."""
    need = bits_needed(0.5)
    fa = prepare(a)
    shared = Screen(fa, nicknames, need)
    for other in [*others, *others]:
        fb = prepare(other)
        assert shared.admits(fb) == Screen(fa, nicknames, need).admits(fb)


def test_block_view_skips_common_fuzzy_keys_caps_and_refiles() -> None:
    """Too-common fuzzy keys are skipped (exact ones never), and a re-filed lead moves."""
    view = BlockView({"n:a": [3, 1, 2], "e:x": [7, 5, 6], "n:b": [9]}, max_block_size=2)
    assert view.candidates(["n:a", "e:x", "n:b"]) == [5, 6, 7, 9]
    view.file(9, ["n:c"])
    assert view.candidates(["n:b"]) == []
    assert view.candidates(["n:c"]) == [9]
    # Taking a lead out of a key that was too common does not make it usable again.
    view.file(1, ["n:c"])
    assert view.candidates(["n:a"]) == []
    assert view.candidates(["n:a", "e:x", "n:c"]) == [1, 5, 6, 7, 9]


@given(records, records, st.sets(st.integers(8, 20), max_size=6))  # not the lead, 7
@settings(max_examples=200, deadline=None)
def test_a_stored_lead_refiled_by_its_keys_as_read_moves_as_a_scan_of_the_blocks_would(
    before: MatchRecord, after: MatchRecord, others: set[int]
) -> None:
    """A merge re-files a stored lead by the keys its values as read give (`was`), not by
    a pass over every block's members: the blocks end the same either way."""
    was, keys = stored_keys(prepare(before)), stored_keys(prepare(after))
    lead = 7
    # The lead under its keys (with others), others under a key it is not under, and a
    # key of its values whose block was read without it (cut at the cap).
    members = {key: sorted({lead, *others}) for key in was}
    members["n:elsewhere"] = sorted(others | {99})
    for key in sorted(was)[:1]:
        members[key] = sorted(others)
    by_keys, by_scan = BlockView(members, max_block_size=50), BlockView(members, max_block_size=50)
    by_keys.file(lead, keys, was)
    by_scan.file(lead, keys)
    for key in {*was, *keys, "n:elsewhere"}:
        assert by_keys.candidates([key]) == by_scan.candidates([key])


def test_a_rare_shared_key_outweighs_common_ones() -> None:
    """Past `max_candidates`, a lead sharing one rare key beats leads sharing only common
    ones, and exact keys' leads always come first."""
    members = {"n:a": list(range(1, 21)), "n:b": list(range(11, 31)), "c:x": [40, 41]}
    view = BlockView(members, max_block_size=50, max_candidates=3)
    # 40 and 41 weigh 1/2; 11-20 share two blocks of 20 (1/10); the rest 1/20.
    assert view.candidates(["n:a", "n:b", "c:x"]) == [11, 40, 41]
    assert view.candidates(["n:a", "n:b", "c:x", "e:z"]) == [11, 40, 41]  # no such block
    exact = BlockView({**members, "p:1": [30, 29]}, max_block_size=50, max_candidates=3)
    assert exact.candidates(["n:a", "n:b", "c:x", "p:1"]) == [29, 30, 40]


def test_filing_changes_the_strongest_and_the_matcher_asks_for_new_ones() -> None:
    """A lead filed under a key makes its block bigger, so its members weigh less: the
    candidates move, and the matcher names the stored ones it has not looked up."""
    members = {"n:a": [1, 2], "n:b": [3, 4, 5, 6], "n:c": [3, 4, 5, 6]}
    view = BlockView(members, max_block_size=50, max_candidates=4)
    matcher = BatchMatcher(view, DedupeSettings())
    keys = ["n:a", "n:b", "n:c"]
    assert view.candidates(keys) == [1, 2, 3, 4]  # 1/2 each, then 1/4 + 1/4, lowest first
    assert matcher.unknown(keys) == [1, 2, 3, 4]
    matcher.looked_up([1, 2, 3, 4])
    assert matcher.unknown(keys) == []
    # A batch item filed under n:a and n:b: 1 and 2 now weigh 1/3, 3-6 weigh 1/5 + 1/4,
    # the new lead 1/3 + 1/5.
    features = prepare(MatchRecord(first_name="Ana"))
    new = matcher.file({}, features, ["n:a", "n:b"])
    assert view.candidates(keys) == [3, 4, 5, new]
    assert matcher.unknown(keys) == [5]  # the new lead is not stored: nothing to read
    view.file(new, ["n:z"])  # moved away again: as at first
    assert view.candidates(keys) == [1, 2, 3, 4]
    view.file(new, ["n:a"])  # n:a alone grows: 1 and 2 (1/3) drop below 3-6 (1/2)
    assert view.candidates(keys) == [3, 4, 5, 6]
    assert matcher.unknown(keys) == [5, 6]


async def test_intake_reads_the_stored_leads_earlier_items_made_candidates() -> None:
    """Intake reads the stored candidates before deciding, and again when a batch item
    filed before changes which stored leads are an item's strongest: the duplicate found
    is one the first read could not know about."""
    members = {"n:a": [1, 2], "n:b": [3, 4, 5, 6], "n:c": [3, 4, 5, 6]}
    matcher = BatchMatcher(BlockView(members, 50, max_candidates=4), DedupeSettings())
    ana = {"email": "ana@nandu.es", "first_name": "Ana", "last_name": "García Ruiz"}
    luis = {"email": "luis@otra.es", "first_name": "Luis", "last_name": "Pérez"}
    rows = {i: tuple(luis.get(c) for c in MATCH_COLUMNS) for i in range(1, 6)}
    rows[6] = tuple(ana.get(c) for c in MATCH_COLUMNS)  # the stored Ana
    reads: list[set[int]] = []

    async def look_up(ids: set[int]) -> None:
        reads.append(set(ids))
        for lead_id in ids:
            matcher.know(lead_id, rows[lead_id], prepare_row(rows[lead_id]))
        matcher.looked_up(ids)

    def item(values: dict[str, str], keys: set[str]) -> Incoming:
        return Incoming(
            values, prepare_row(tuple(values.get(c) for c in MATCH_COLUMNS)), frozenset(keys), None
        )

    items = [item({**luis, "email": "otro@luis.es"}, {"n:a"}), item(ana, {"n:a", "n:b", "n:c"})]
    await look_up(set().union(*(matcher.unknown(i.keys) for i in items)))
    steps = await _decide(matcher, items, "merge", look_up)
    # At first Ana's strongest are 1-4 (1/2 each); the Luis filed under n:a makes 3-6
    # (1/4 + 1/4) outweigh 1 and 2 (1/3), so 5 and 6 are read before Ana is decided.
    assert reads == [{1, 2, 3, 4}, {5, 6}]
    assert [(s.outcome, s.lead_id) for s in steps][1] == ("merged", 6)
