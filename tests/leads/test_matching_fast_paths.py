"""The cheaper paths of candidate selection and screening choose exactly what the plain
ones did: `blocking.strongest` against its plain form, `BatchMatcher.unknown` against
filtering every candidate, and the screen (its bounds shared by every screen) against
the one-pair screen and the full comparison's score."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from cauce.leads.matching import DedupeSettings, MatchRecord
from cauce.leads.matching.blocking import EXACT_PREFIXES, strongest
from cauce.leads.matching.compare import bits_needed, compare_features
from cauce.leads.matching.plan import PROVISIONAL, BatchMatcher, BlockView
from cauce.leads.matching.record import prepare
from cauce.leads.matching.screen import Screen
from tests.leads.match_records import records
from tests.leads.test_intake_fast_paths import _reference_admits

T = TypeVar("T", bound=Hashable)


def _plain_strongest(
    blocks: Iterable[tuple[str, Collection[T]]], limit: int, order: Callable[[T], int]
) -> set[T]:
    """`strongest` as first written: every member weighed one at a time, then ranked."""
    given = sorted(blocks, key=lambda block: block[0])
    if sum(len(members) for _, members in given) <= limit:
        return set().union(*(members for _, members in given))
    exact: set[T] = set()
    weight: dict[T, float] = {}
    for key, members in given:
        if key.startswith(EXACT_PREFIXES):
            exact.update(members)
        elif members:
            share = 1.0 / len(members)
            for member in members:
                weight[member] = weight.get(member, 0.0) + share
    if len(exact) + len(weight.keys() - exact) <= limit:
        return exact | weight.keys()
    if len(exact) >= limit:
        return set(heapq.nsmallest(limit, exact, key=order))
    for member in exact:
        weight.pop(member, None)
    room = limit - len(exact)
    cut = sorted(weight.values(), reverse=True)[room - 1]
    chosen = [member for member, w in weight.items() if w > cut]
    tied = [member for member, w in weight.items() if w == cut]
    chosen += heapq.nsmallest(room - len(chosen), tied, key=order)
    return exact.union(chosen)


_KEYS = ["e:a", "p:b", "t:c", "n:d", "n:e", "b:f", "c:g", "m:h", "z:i", "d:j"]
# Members from a small range, so blocks overlap and weights tie (1/3 + 1/12 + 1/12...).
_MEMBERS = st.lists(st.integers(1, 30), max_size=24)
_ORDERS: list[Callable[[int], int]] = [
    lambda i: i,
    lambda i: -i,
    lambda i: (i * 7) % 31,
    lambda i: i % 4,  # many members in one place: ties broken as met
]


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_KEYS), _MEMBERS), max_size=8),
    st.integers(-1, 40),
    st.sampled_from(range(len(_ORDERS))),
    st.booleans(),
)
def test_strongest_chooses_as_the_plain_weighing(
    blocks: list[tuple[str, list[int]]], limit: int, order: int, as_sets: bool
) -> None:
    """The same members for any blocks: repeated keys, members repeated within a block,
    exact keys, blocks given as lists or sets, any limit and any order."""
    given: list[tuple[str, Collection[int]]] = [
        (key, set(members) if as_sets else members) for key, members in blocks
    ]
    by = _ORDERS[order]
    assert strongest(given, limit, by) == _plain_strongest(given, limit, by)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(_KEYS), st.lists(st.integers(1, 40), max_size=20)),
    st.sets(st.integers(1, 40)),
    st.lists(st.sets(st.sampled_from(_KEYS), max_size=4), max_size=5),
    st.integers(1, 30),
)
def test_unknown_names_the_stored_candidates_not_looked_up(
    members: dict[str, list[int]],
    looked_up: set[int],
    filed: list[set[str]],
    most: int,
) -> None:
    """Whatever was looked up and filed since: the candidates that are stored and not
    looked up, in id order."""
    view = BlockView(members, 50, max_candidates=most)
    matcher = BatchMatcher(view, DedupeSettings())
    matcher.looked_up(looked_up)
    features = prepare(MatchRecord(first_name="Ana"))
    keys = list(_KEYS)
    for filed_keys in [set(), *filed]:
        if filed_keys:
            matcher.file({}, features, filed_keys)
        expected = [i for i in view.candidates(keys) if i < PROVISIONAL and i not in looked_up]
        assert matcher.unknown(keys) == expected


_COMPANIES = ["Acme S.L.", "ACME", "Acmee", "Acme Ibérica", "Beta SA", "Acme Iberica Sur"]


@st.composite
def _company_pairs(draw: st.DrawFn) -> tuple[MatchRecord, MatchRecord]:
    """Two records alike in most fields but often not in their company: the pairs whose
    company the screen compares exactly when the rest leaves a chance."""
    a = draw(records)
    b = draw(records)
    kept = {
        name: getattr(a, name)
        for name in ("first_name", "last_names", "city", "region", "country", "address")
        if draw(st.booleans())
    }
    a = MatchRecord(**{**a.__dict__, "company": draw(st.sampled_from(_COMPANIES))})
    company = draw(st.none() | st.sampled_from(_COMPANIES))
    return a, MatchRecord(**{**b.__dict__, **kept, "company": company})


@settings(max_examples=1500, deadline=None)
@given(_company_pairs(), st.booleans(), st.sampled_from([0.2, 0.5, 0.7, 0.9, 0.99]))
def test_the_screen_rules_out_only_pairs_scoring_below_its_floor(
    pair: tuple[MatchRecord, MatchRecord], nicknames: bool, floor: float
) -> None:
    """The screen admits what the one-pair screen admits, and what it rules out scores
    below the floor."""
    a, b = prepare(pair[0]), prepare(pair[1])
    need = bits_needed(floor)
    admitted = Screen(a, nicknames, need).admits(b)
    assert admitted == _reference_admits(a, b, nicknames, need)
    if not admitted:
        dedupe = DedupeSettings(nicknames=nicknames, review_threshold=0.0, merge_threshold=1.0)
        assert compare_features(a, b, dedupe).score < floor
