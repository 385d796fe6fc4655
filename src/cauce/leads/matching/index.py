"""`MatchIndex`: an in-memory blocking index the leads service keeps warm or rebuilds.

Also `rank`, which scores candidates the service fetched itself (by blocking keys
stored in SQL), so both paths share one comparison.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cauce.leads.matching.blocking import EXACT_PREFIXES, keys_of, sort_key_of, strongest
from cauce.leads.matching.compare import (
    MatchDecision,
    Verdict,
    bits_needed,
    compare_features,
    rank_of,
)
from cauce.leads.matching.record import Features, MatchRecord, prepare
from cauce.leads.matching.screen import Screen
from cauce.leads.matching.settings import DedupeSettings

IdT = TypeVar("IdT", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Match(Generic[IdT]):
    """An existing record that the query record may duplicate."""

    id: IdT
    decision: MatchDecision

    @property
    def is_duplicate(self) -> bool:
        """At or above the merge threshold."""
        return self.decision.verdict is Verdict.DUPLICATE


@dataclass(frozen=True, slots=True)
class _Entry:
    features: Features
    keys: frozenset[str]
    sort_key: tuple[str, int]


def screen_of(
    features: Features, settings: DedupeSettings, floor: float
) -> Callable[[Features], bool] | None:
    """What rules candidates out before comparing them (None: nothing can, floor <= 0)."""
    need = bits_needed(floor)
    return Screen(features, settings.nicknames, need).admits if need > -math.inf else None


def _ranked(matches: list[tuple[int, Match[IdT]]]) -> list[Match[IdT]]:
    # Duplicates first (a pair held back scores high but may not merge: `compare.
    # _held_back`), then the highest score; among equals, the record filed first.
    matches.sort(key=lambda pair: (*rank_of(pair[1].decision), pair[0]))
    return [m for _, m in matches]


class MatchIndex(Generic[IdT]):
    """Blocking index over existing records, with add, remove and query.

    Not thread-safe: use it from one event loop or guard it. Memory is a few hundred
    bytes per record, so a process can keep hundreds of thousands warm; `rebuild`
    loads it from the database at start-up.
    """

    def __init__(self, settings: DedupeSettings | None = None) -> None:
        self.settings = settings or DedupeSettings()
        self._entries: dict[IdT, _Entry] = {}
        self._blocks: dict[str, set[IdT]] = {}
        self._sorted: list[tuple[tuple[str, int], IdT]] = []
        self._seq = itertools.count()
        self._order: dict[IdT, int] = {}

    @classmethod
    def rebuild(
        cls, records: Iterable[tuple[IdT, MatchRecord]], settings: DedupeSettings | None = None
    ) -> MatchIndex[IdT]:
        """An index holding `records` (id, record), e.g. streamed from the leads table."""
        index: MatchIndex[IdT] = cls(settings)
        for record_id, record in records:
            index.add(record_id, record)
        return index

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._entries

    def add(self, record_id: IdT, record: MatchRecord) -> None:
        """File `record` under `record_id`, replacing what was filed under that id."""
        if record_id in self._entries:
            self.remove(record_id)
        features = prepare(record)
        seq = next(self._seq)
        entry = _Entry(features, keys_of(features), (sort_key_of(features), seq))
        self._entries[record_id] = entry
        self._order[record_id] = seq
        for key in entry.keys:
            self._blocks.setdefault(key, set()).add(record_id)
        bisect.insort(self._sorted, (entry.sort_key, record_id), key=lambda item: item[0])

    def remove(self, record_id: IdT) -> None:
        """Forget `record_id` (merged away or erased); unknown ids are ignored."""
        entry = self._entries.pop(record_id, None)
        if entry is None:
            return
        del self._order[record_id]
        for key in entry.keys:
            block = self._blocks[key]
            block.discard(record_id)
            if not block:
                del self._blocks[key]
        at = bisect.bisect_left(self._sorted, entry.sort_key, key=lambda item: item[0])
        del self._sorted[at]

    def candidates(self, record: MatchRecord, *, exclude: IdT | None = None) -> set[IdT]:
        """Ids sharing a blocking key with `record`, or near it in sorted order."""
        return self._candidates(prepare(record), exclude)

    def _candidates(self, features: Features, exclude: IdT | None) -> set[IdT]:
        limit = self.settings.max_block_size
        blocks = [
            # The excluded record (the one re-checked) takes no place among the strongest.
            (key, block - {exclude} if exclude in block else block)
            for key in keys_of(features)
            if (block := self._blocks.get(key))
            and (len(block) <= limit or key.startswith(EXACT_PREFIXES))
        ]
        found = strongest(blocks, self.settings.max_candidates, self._order.__getitem__)
        window = self.settings.window
        if window and self._sorted:
            at = bisect.bisect_left(self._sorted, sort_key_of(features), key=lambda i: i[0][0])
            for _, record_id in self._sorted[max(0, at - window) : at + window]:
                found.add(record_id)
        if exclude is not None:
            found.discard(exclude)
        return found

    def query(
        self,
        record: MatchRecord,
        *,
        exclude: IdT | None = None,
        min_score: float | None = None,
    ) -> list[Match[IdT]]:
        """Existing records `record` may duplicate, best first.

        Only matches scoring at least `min_score` (default: the review threshold) are
        returned. `exclude` leaves out one id, e.g. the lead being re-checked itself.
        """
        features = prepare(record)
        floor = self.settings.review_threshold if min_score is None else min_score
        admits = screen_of(features, self.settings, floor)
        out: list[tuple[int, Match[IdT]]] = []
        for record_id in self._candidates(features, exclude):
            other = self._entries[record_id].features
            if admits is not None and not admits(other):
                continue
            decision = compare_features(features, other, self.settings)
            if decision.score >= floor:
                out.append((self._order[record_id], Match(record_id, decision)))
        return _ranked(out)


def rank(
    record: MatchRecord,
    candidates: Iterable[tuple[IdT, MatchRecord]],
    settings: DedupeSettings | None = None,
    *,
    min_score: float | None = None,
) -> list[Match[IdT]]:
    """Score candidates fetched elsewhere (e.g. by blocking keys in SQL), best first."""
    return rank_prepared(
        prepare(record),
        ((record_id, prepare(other)) for record_id, other in candidates),
        settings,
        min_score=min_score,
    )


def rank_prepared(
    features: Features,
    candidates: Iterable[tuple[IdT, Features]],
    settings: DedupeSettings | None = None,
    *,
    min_score: float | None = None,
) -> list[Match[IdT]]:
    """`rank` for records already prepared (see `prepare`), best first.

    Among equal scores the candidate given first wins.
    """
    settings = settings or DedupeSettings()
    floor = settings.review_threshold if min_score is None else min_score
    admits = screen_of(features, settings, floor)
    out: list[tuple[int, Match[IdT]]] = []
    for position, (record_id, other) in enumerate(candidates):
        if admits is not None and not admits(other):
            continue
        decision = compare_features(features, other, settings)
        if decision.score >= floor:
            out.append((position, Match(record_id, decision)))
    return _ranked(out)
