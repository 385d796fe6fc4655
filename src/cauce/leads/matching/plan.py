"""De-duplicate many incoming leads in one pass, as if they arrived one at a time.

Intake one by one asks the database for candidates per lead. A batch instead reads, once,
which stored leads share each of its blocking keys (`BlockView`), and the candidates'
match fields (again only for stored leads that the batch's earlier items made an item's
strongest candidates: `BatchMatcher.unknown`); `BatchMatcher` then decides item by item
against those stored leads *and* the batch's earlier items, re-filing a lead whenever a
merge changes its match fields.
The decisions are the ones sequential intake would take: the same candidate rules (fuzzy
keys shared by more than `max_block_size` leads skipped, exact keys never, at most
`max_candidates`, the strongest first: `blocking.strongest`) and the same ranking. A lead
is a plain mapping of the lead columns in `MATCH_COLUMNS`; ids of leads not stored yet
are `provisional`.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Final

from cauce.leads.matching.blocking import EXACT_PREFIXES, keys_of, strongest
from cauce.leads.matching.compare import compare_features, rank_of
from cauce.leads.matching.index import Match, screen_of
from cauce.leads.matching.merge import merge
from cauce.leads.matching.record import (
    Features,
    MatchRecord,
    email_key,
    prepare,
    role_mailbox,
    shared,
)
from cauce.leads.matching.settings import DedupeSettings
from cauce.leads.phones import EXTENSION_MARK

DEFAULT_MAX_CANDIDATES: Final = DedupeSettings.model_fields["max_candidates"].default
# Stored keys are at most this long (the column's size); lookups use the same cut.
KEY_LENGTH: Final = 200
# The lead columns matching reads.
MATCH_COLUMNS: Final = (
    "email",
    "phone",
    "phone_extension",
    "first_name",
    "last_name",
    "company",
    "city",
    "region",
    "country",
    "other_emails",
    "other_phones",
)
# A lead's other contacts: the emails (phones) merged arrivals brought that are not its
# own, space-separated, first come first, at most `MAX_OTHER_CONTACTS` of each. They are
# match keys and agree as the lead's own would (`other_contacts`).
OTHER_CONTACTS: Final = (("email", "other_emails"), ("phone", "other_phones"))
MAX_OTHER_CONTACTS: Final = 10
# Ids given to leads of the batch before the database gives them theirs: above any
# stored id, so they sort after stored leads and in the order they were filed.
PROVISIONAL: Final = 1 << 62

MatchValues = Mapping[str, str | None]


def provisional(lead_id: int) -> bool:
    """True for an id `BatchMatcher.file` gave (the lead is not stored yet)."""
    return lead_id >= PROVISIONAL


def record_of(values: Mapping[str, object]) -> MatchRecord:
    """The match record of a lead's column values (`last_name` holds every surname)."""

    def text(name: str) -> str | None:
        value = values.get(name)
        return value if isinstance(value, str) else None

    # A phone with an extension is that extension's, not the switchboard's: colleagues on
    # one number with extensions of their own are not one person's exact duplicates.
    phone, extension = text("phone"), text("phone_extension")
    return MatchRecord(
        email=text("email"),
        phone=f"{phone}{EXTENSION_MARK}{extension}" if phone and extension else phone,
        first_name=text("first_name"),
        last_names=text("last_name"),
        company=text("company"),
        city=text("city"),
        region=text("region"),
        country=text("country"),
        other_emails=tuple((text("other_emails") or "").split()),
        other_phones=tuple((text("other_phones") or "").split()),
    )


def other_contacts(
    before: Mapping[str, object], after: Mapping[str, object], incoming: Mapping[str, object]
) -> dict[str, str | None]:
    """The other contacts a lead gets from a merge (see `OTHER_CONTACTS`): `before` and
    `after` the lead's values around it, `incoming` the arrival's. An email or phone that
    is neither the merged lead's own nor listed already (compared by match key: a Gmail
    address with dots is the one without) joins the list, the lead's old one too if a
    merge overwrote it; one listed that is now the lead's own leaves it. Only the columns
    that change are returned (None: none left)."""
    out: dict[str, str | None] = {}
    for field, column in OTHER_CONTACTS:
        key = contact_key(field)
        # The lead's own, and its number without the extension: the switchboard of its
        # own extension is no other phone of its (colleagues share it).
        own = {key(_contact(after, field)), key(_text(after.get(field)))} - {None}
        was = (_text(after.get(column)) or "").split()
        listed = [value for value in was if key(value) not in own]
        known = {key(value) for value in listed} | own
        added = len(listed) != len(was)
        for value in (_contact(before, field), _contact(incoming, field)):
            if not value or len(listed) >= MAX_OTHER_CONTACTS or (k := key(value)) in known:
                continue
            if field == "email" and role_mailbox(value):
                continue  # `info@`: a team's, not the person's (it would pull others in)
            listed.append(value)
            known.add(k)
            added = True
        if added:
            out[column] = " ".join(listed) or None
    return out


def patched_contacts(
    before: Mapping[str, object], after: Mapping[str, object]
) -> dict[str, str | None]:
    """The other contacts of a lead whose email or phone a PATCH changed (`before` and
    `after` its values): the old one joins them (as a merge that overwrote it would
    have it) unless the PATCH cleared the field, and the new one leaves them. Only the
    columns that change are returned (None: none left)."""
    out: dict[str, str | None] = {}
    for field, column in OTHER_CONTACTS:
        old, new = _contact(before, field), _contact(after, field)
        key = contact_key(field)
        if key(old) == key(new):
            continue
        listed = (_text(after.get(column)) or "").split()
        # The new one leaves them, and so does its number without its extension.
        own = {key(new), key(_text(after.get(field)))}
        kept = [value for value in listed if key(value) not in own]
        merged = other_contacts(before, {**after, column: " ".join(kept)}, {}) if new else {}
        value = merged.get(column, " ".join(kept)) or None
        if value != _text(after.get(column)):
            out[column] = value
    return out


def _phone_key(phone: str | None) -> str | None:
    return phone.replace(" ", "") if phone else None


def contact_key(field: str) -> Callable[[str | None], str | None]:
    """How two of a lead's emails (`field` "email") or phones are told apart: by match
    key (a Gmail address with dots is the one without; spaces in a number do not count)."""
    return email_key if field == "email" else _phone_key


def stored_keys(features: Features) -> frozenset[str]:
    """The blocking keys of a prepared record, cut to the stored length."""
    return frozenset(key[:KEY_LENGTH] for key in keys_of(features))


def _holds(block: list[int] | None, lead_id: int) -> bool:
    """Whether a sorted block lists `lead_id`."""
    if not block:
        return False
    at = bisect.bisect_left(block, lead_id)
    return at < len(block) and block[at] == lead_id


def _identity(lead_id: int) -> int:
    return lead_id


def _exact(key: str) -> bool:
    return key.startswith(EXACT_PREFIXES)


class BlockView:
    """Which leads share each blocking key: the stored rows, then the batch's changes.

    `members` holds, per key, the stored lead ids (at most `max_block_size + 1` of them:
    one more than that tells the key is too common); `too_common` names fuzzy keys known
    to be too common without their members. A key seen too common at the start stays so
    for the whole batch, even if a merge takes a lead out of it.
    """

    def __init__(
        self,
        members: Mapping[str, Iterable[int]],
        max_block_size: int,
        too_common: Iterable[str] = (),
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        self._limit = max_block_size
        self._max_candidates = max_candidates
        self._blocks: dict[str, list[int]] = {k: sorted(set(v)) for k, v in members.items()}
        # Too common: more members than the limit, read or reported (without members).
        self._too_common = {k for k, v in self._blocks.items() if len(v) > max_block_size}
        self._too_common.update(key for key in too_common if not _exact(key))
        # The keys each filed lead is under. A stored lead's come from the blocks as read,
        # worked out for all of them the first time one is re-filed (after a merge into
        # it): most batches re-file none, and it is a set per stored lead.
        self._keys_of: dict[int, set[str]] = {}
        self._stored_keys_of: dict[int, set[str]] | None = None
        # `candidates` answers, kept while none of their keys' blocks changes: `file`
        # ticks the clock and stamps the keys it touches.
        self._clock = 0
        self._touched: dict[str, int] = {}
        self._answers: dict[frozenset[str], tuple[int, list[int]]] = {}

    def _stored_keys(self, lead_id: int) -> set[str]:
        if self._stored_keys_of is None:
            # Only `file` changes the blocks, and it records what it files in `_keys_of`:
            # a stored lead not in there is still under the keys it was read under.
            self._stored_keys_of = {}
            for key, ids in self._blocks.items():
                for member in ids:
                    self._stored_keys_of.setdefault(member, set()).add(key)
        return self._stored_keys_of.pop(lead_id, set())

    def _usable(self, key: str) -> list[int] | None:
        block = self._blocks.get(key)
        if not block:
            return None
        if not _exact(key) and (key in self._too_common or len(block) > self._limit):
            return None
        return block

    def candidates(self, keys: Iterable[str]) -> list[int]:
        """Lead ids sharing a usable key, at most `max_candidates` (`strongest`), in id
        order. The list is shared: do not change it."""
        keys = frozenset(keys)
        answer = self._answers.get(keys)
        if answer is not None:
            asked_at, ids = answer
            if asked_at == self._clock:
                return ids  # nothing filed since (the same item asked again)
            touched = self._touched
            if all(touched.get(key, 0) <= asked_at for key in keys):
                return ids
        blocks = [(key, block) for key in keys if (block := self._usable(key)) is not None]
        ids = sorted(strongest(blocks, self._max_candidates, _identity))
        self._answers[keys] = (self._clock, ids)
        return ids

    def usable_members(self) -> set[int]:
        """Every lead under a usable key: a superset of any item's candidates, as long as
        nothing was filed (`file`) since the view was read."""
        return {
            lead_id
            for key, block in self._blocks.items()
            if self._usable(key) is not None
            for lead_id in block
        }

    def file(self, lead_id: int, keys: Iterable[str], was: Iterable[str] | None = None) -> None:
        """File a lead under `keys`, dropping the keys it was filed under before: for a
        stored lead filed the first time, `was` (the keys its stored values give), when
        known, spares working out every stored lead's keys from the blocks (a pass over
        all their members: ~6 % of a batch at 200,000 stored leads). A lead stored under
        keys older code gave (nothing re-keys stored leads when the keys change) stays
        in those blocks for the rest of the batch: a candidate more for later items,
        compared by its current fields."""
        old = self._keys_of.pop(lead_id, None)
        if old is None:
            if provisional(lead_id):
                old = set()
            elif was is not None:
                old = {key for key in was if _holds(self._blocks.get(key), lead_id)}
            else:
                old = self._stored_keys(lead_id)
        for key in old:
            block = self._blocks[key]
            at = bisect.bisect_left(block, lead_id)
            if at < len(block) and block[at] == lead_id:
                del block[at]
        new = set(keys)
        for key in new:
            bisect.insort(self._blocks.setdefault(key, []), lead_id)
        self._keys_of[lead_id] = new
        self._clock += 1
        for key in old | new:
            self._touched[key] = self._clock


# A lead's `MATCH_COLUMNS` values, in that order.
MatchRow = tuple[str | None, ...]
# The columns whose values many leads share (names, companies, places), one run of them:
# first_name, last_name, company, city, region, country.
_SHARED_VALUES: Final = slice(MATCH_COLUMNS.index("first_name"), MATCH_COLUMNS.index("country") + 1)


def _share(value: str | None) -> str | None:
    return None if value is None else shared(value)


def shared_row(values: MatchRow) -> MatchRow:
    """`values` with the names, companies and places that many leads share as one string
    object each (`record.shared`): a process keeps stored leads' values by the hundred
    thousand (`known.KnownLeads`), and a row read from the database has its own copies."""
    span = _SHARED_VALUES
    return values[: span.start] + tuple(map(_share, values[span])) + values[span.stop :]


def prepare_row(values: MatchRow) -> Features:
    """The prepared record of a lead's `MATCH_COLUMNS` values."""
    return prepare(record_of(dict(zip(MATCH_COLUMNS, values, strict=True))))


@functools.lru_cache(maxsize=1 << 12)
def prepared_row(values: MatchRow) -> Features:
    """`prepare_row`, cached for arrivals: the same lead often arrives again (a form sent
    twice, a CSV row that repeats). Stored candidates are held by `known.KnownLeads`."""
    return prepare_row(values)


class BatchMatcher:
    """Decides for each incoming lead, in order, which known lead it duplicates.

    Known leads are the stored candidates (`know`) and the batch's own leads (`file`);
    `merge_into` folds an incoming lead's match fields into a known one, as a merge would.
    """

    def __init__(self, view: BlockView, settings: DedupeSettings) -> None:
        self.view = view
        self.settings = settings
        self._values: dict[int, tuple[str | None, ...]] = {}  # in `MATCH_COLUMNS` order
        self._features: dict[int, Features] = {}
        self._looked_up: set[int] = set()
        self._next = PROVISIONAL

    def unknown(self, keys: Iterable[str]) -> list[int]:
        """The stored candidates of `keys` not looked up yet (see `looked_up`)."""
        seen = self._looked_up
        ids = self.view.candidates(keys)
        # Ids are sorted, provisional ones last; most often every stored one is known.
        stored = ids[: bisect.bisect_left(ids, PROVISIONAL)]
        if seen.issuperset(stored):
            return []
        return [i for i in stored if i not in seen]

    def looked_up(self, lead_ids: Iterable[int]) -> None:
        """Stored leads read from the database: the live ones are `know`n, the others
        (erased since) are not candidates."""
        self._looked_up.update(lead_ids)

    def know(self, lead_id: int, values: MatchRow, features: Features) -> None:
        """A stored lead that may be a candidate (its keys are in the view already):
        its `MATCH_COLUMNS` values, in that order, and their `prepare_row`."""
        self._values[lead_id] = values
        self._features[lead_id] = features

    def prepared(self, lead_id: int, values: MatchRow) -> Features:
        """`prepare_row(values)`, without preparing again if `lead_id` is known with them."""
        if self._values.get(lead_id) == values:
            return self._features[lead_id]
        return prepare_row(values)

    def best(self, features: Features, keys: Iterable[str]) -> Match[int] | None:
        """The best-ranked known lead at or above the review threshold, if any.

        As `rank_prepared(...)[0]` over the known candidates in id order, without
        ranking the rest: a duplicate before a pair held back, then the highest score, the
        lowest id among equals (`compare.rank_of`).
        """
        settings = self.settings
        floor = settings.review_threshold
        admits = screen_of(features, settings, floor)
        known = self._features
        found: Match[int] | None = None
        best_rank = (True, 0.0)
        for lead_id in self.view.candidates(keys):
            other = known.get(lead_id)
            if other is None or (admits is not None and not admits(other)):
                continue
            decision = compare_features(features, other, settings)
            if decision.score >= floor and (found is None or rank_of(decision) < best_rank):
                found, best_rank = Match(lead_id, decision), rank_of(decision)
        return found

    def file(self, values: MatchValues, features: Features, keys: Iterable[str]) -> int:
        """Make a new lead known; returns its provisional id."""
        lead_id = self._next
        self._next += 1
        self._values[lead_id] = _row(values)
        self._features[lead_id] = features
        self.view.file(lead_id, keys)
        return lead_id

    def merge_into(self, lead_id: int, incoming: MatchValues) -> None:
        """Fold `incoming` into a known lead; re-file it if its match fields changed."""
        known = dict(zip(MATCH_COLUMNS, self._values[lead_id], strict=True))
        # An extension goes with its number (`merged_extension`), as the stored merge
        # folds it (`intake_merge.apply_merge`), not by the generic rules.
        fields = {name: value for name, value in incoming.items() if name != "phone_extension"}
        merged, changes = merge(known, fields, self.settings)
        extension, _ = merged_extension(
            known["phone"],
            known["phone_extension"],
            _text(merged.get("phone")),
            incoming.get("phone"),
            incoming.get("phone_extension"),
            self.settings.overwrite_fields,
        )
        moved = extension != known["phone_extension"]
        merged["phone_extension"] = extension
        others = other_contacts(known, merged, incoming)
        if not others and not moved and not any(c.changed for c in changes):
            return
        merged.update(others)
        values = match_values(merged)
        features = prepare(record_of(values))
        was = stored_keys(self._features[lead_id])  # its keys as read (or filed)
        self._values[lead_id] = _row(values)
        self._features[lead_id] = features
        self.view.file(lead_id, stored_keys(features), was)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def merged_extension(
    phone_before: str | None,
    old: str | None,
    phone_after: str | None,
    phone: str | None,
    extension: str | None,
    overwrite: tuple[str, ...],
) -> tuple[str | None, bool]:
    """A lead's phone extension after an arrival (`phone`, `extension`) merged into it,
    its phone having gone from `phone_before` to `phone_after`; and whether the arrival's
    differing extension was kept out. An extension goes with its number: when the merge
    gave the lead the arrival's number, its extension (or none) comes along; when both
    have one number, the arrival's extension fills a missing one, and replaces another
    only if configured (`overwrite_fields` naming `phone_extension` or `phone`); an
    arrival's extension of another number stays with that arrival."""
    if phone_after != phone_before:
        return extension, False
    if phone is None or phone != phone_after or extension is None or extension == old:
        return old, False
    if old is None or any(
        fnmatchcase(name, pattern) for pattern in overwrite for name in ("phone_extension", "phone")
    ):
        return extension, False
    return old, True


def phone_contact(phone: str | None, extension: str | None) -> str | None:
    """A phone with its extension as one contact (`+34910000000;ext=5`), as `record_of`
    keys it: a number with an extension is that extension's, and joins (and shows among)
    other phones so, never as the bare switchboard number."""
    return f"{phone}{EXTENSION_MARK}{extension}" if phone and extension else phone


def _contact(values: Mapping[str, object], field: str) -> str | None:
    """A lead's (an arrival's) email, or its phone with its extension (`phone_contact`)."""
    value = _text(values.get(field))
    if field != "phone":
        return value
    return phone_contact(value, _text(values.get("phone_extension")))


def _row(values: MatchValues) -> tuple[str | None, ...]:
    return tuple(values.get(name) for name in MATCH_COLUMNS)


def match_values(values: Mapping[str, object]) -> dict[str, str | None]:
    """The `MATCH_COLUMNS` of a lead's values."""
    return {name: _text(values.get(name)) for name in MATCH_COLUMNS}
