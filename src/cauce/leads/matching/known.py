"""Stored leads' match fields, prepared once, kept while the lead keeps its version.

Intake compares each arrival with up to `max_candidates` stored leads. Once leads number
in the thousands, the same candidates come up again and again (the leads of a common
name or company), and reading their match fields and preparing them again was most of
an arrival's cost. A lead's `version` grows on every change (merge, edit, erasure), so an
entry read at a version is right for as long as the lead is still at that version: intake
reads the candidates' versions, and their fields only for those not held here
(`candidates.read_candidates`). Nothing here is trusted without that check, so several
processes can each keep their own.

Only what a committed transaction read or wrote is kept (`candidates.hold_on_commit`
holds an intake's reads, and `IntakeWriter.written` the leads it created or merged into,
until the commit): a lead a transaction inserted or changed, then rolled back, never was
at that version, and its id and version may come again with other values.

Bounded (least recently used first out). An erased lead is forgotten by the process that
erased it, for good: an intake that read it before the erasure and commits after it does
not bring its fields back (`forget` leaves a tombstone, itself bounded). Elsewhere its
entry is never served again (erased leads are not candidates) and leaves with the bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cauce.leads.matching.plan import MatchRow, prepare_row, shared_row
from cauce.leads.matching.record import Features

DEFAULT_SIZE = 1 << 18  # `leads.candidate_cache_size`'s default


@dataclass(frozen=True, slots=True)
class Known:
    """A stored lead as matching needs it, at one version."""

    version: int
    uid: str
    values: MatchRow
    features: Features

    @classmethod
    def read(cls, version: int, uid: str, values: MatchRow) -> Known:
        """A lead as read from its row, prepared."""
        return cls(version, uid, shared_row(values), prepare_row(values))


class KnownLeads:
    """Prepared stored leads by id, each valid for one version (see the module docstring)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._by_id: OrderedDict[int, Known] = OrderedDict()
        self._forgotten: OrderedDict[int, None] = OrderedDict()  # erased: never held again
        self.evicted = 0  # leads dropped for room, ever (`cauce_leads_candidate_cache_*`)

    def __contains__(self, lead_id: object) -> bool:
        return lead_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, lead_id: int, version: int) -> Known | None:
        """The lead at `version`, if held (an entry at another version is stale)."""
        known = self._by_id.get(lead_id)
        if known is None or known.version != version:
            return None
        self._by_id.move_to_end(lead_id)
        return known

    def hold(self, lead_id: int, known: Known) -> None:
        """Keep a lead as read at `known.version`, once that version is committed (an
        entry at a newer version stays: a slower transaction read an older one)."""
        held = self._by_id.get(lead_id)
        if (held is not None and held.version > known.version) or lead_id in self._forgotten:
            return
        self._by_id[lead_id] = known
        self._by_id.move_to_end(lead_id)
        while len(self._by_id) > self.size:
            self._by_id.popitem(last=False)
            self.evicted += 1

    def entries(self) -> list[tuple[int, Known]]:
        """Every lead held, by id, the least recently used first (a copy)."""
        return list(self._by_id.items())

    def room(self) -> int:
        """How many more leads fit before the least recently used one must go."""
        return max(self.size - len(self._by_id), 0)

    def offer(self, lead_id: int, known: Known) -> None:
        """Hold a lead read by a warm-up (`candidates.warm`), once committed: only into
        free room, only if not held at all (what intake holds stays as it is), and as the
        least recently used (the first out, before anything intake used)."""
        if lead_id in self._by_id or lead_id in self._forgotten or len(self._by_id) >= self.size:
            return
        self._by_id[lead_id] = known
        self._by_id.move_to_end(lead_id, last=False)

    def forget(self, lead_id: int) -> None:
        """Drop a lead and never hold it again (erased here: its personal data should not
        outstay it, even in a slower transaction that read it before the erasure)."""
        self._by_id.pop(lead_id, None)
        self._forgotten[lead_id] = None
        while len(self._forgotten) > self.size:
            self._forgotten.popitem(last=False)
