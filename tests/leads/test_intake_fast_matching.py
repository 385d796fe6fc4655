"""The fast matching paths decide exactly as the plain comparison does."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.leads.matching import DedupeSettings, MatchRecord
from cauce.leads.matching.compare import Screen, bits_needed, compare_features, decide_above
from cauce.leads.matching.plan import BlockView
from cauce.leads.matching.record import prepare
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
    assert view.every_candidate(["n:a", "e:x", "n:c"]) == {1, 5, 6, 7, 9}
