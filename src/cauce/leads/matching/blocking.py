"""Blocking keys: which existing records are worth comparing with a new one.

Comparing a lead with every stored lead is quadratic. Instead each record gets a few
short keys and only records sharing at least one key are compared. One key per field
family, so a true duplicate is lost only if typos hit every family at once:

- `e:` normalised email, `p:` E.164 phone, `t:` tax id (exact keys, never skipped), the
  lead's other emails and phones too (`MatchRecord.other_emails`, `other_phones`);
- `m:` the personal part of an email, to find the same person at another domain;
- `n:` phonetic code of each surname word + initial of the given name, and phonetic
  code of the given name + initial of each surname word. Surnames in either order, a
  missing second surname and given name and surname swapped all still share a key;
- `b:` both surnames' codes, in either order, + initial of the given name;
- `z:` postcode + either initial; `d:` date of birth; `c:` company + either initial.

The same keys can be stored in an indexed column (one row per key) so the service can
fetch candidates with SQL; `sort_key` gives the sorted-neighbourhood column.

Sharing a key is weak evidence when the key is common: once the leads sharing some key
with an arrival outnumber `max_candidates`, `strongest` keeps the best-supported ones
(meta-blocking: a shared key weighs one over its block's size, so one shared rare key
outweighs several common ones).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Final, TypeVar

from cauce.leads.matching.record import Features, MatchRecord, phonetic, prepare

EXACT_PREFIXES: Final = ("e:", "p:", "t:")

T = TypeVar("T", bound=Hashable)


def _initials(tokens: tuple[str, ...]) -> set[str]:
    return {t[0] for t in tokens} or {"_"}


def keys_of(f: Features) -> frozenset[str]:
    """The blocking keys of a prepared record (see the module docstring)."""
    keys: set[str] = set()
    if f.email_key:
        keys.add("e:" + f.email_key)
    if f.email_local:
        keys.add("m:" + f.email_local)
    if f.phone:
        keys.add("p:" + f.phone)
    if f.tax_id:
        keys.add("t:" + f.tax_id)
    keys.update("e:" + key for key in f.other_email_keys)
    keys.update("p:" + phone for phone in f.other_phones)
    # Initials of the nickname's full form too, so "Pepe" and "José" share keys.
    given = f.first_tokens[:1] + f.first_canonical[:1]
    given_initials = _initials(given) if given else {"_"}
    last_initials = _initials(f.last_tokens) if f.last_tokens else {"_"}
    for word in f.last_tokens:
        if code := phonetic(word):
            keys.update(f"n:{code}:{i}" for i in given_initials)
    for word in set(given):
        if code := phonetic(word):
            keys.update(f"n:{code}:{i}" for i in last_initials)
    if len(f.last_tokens) >= 2:
        # Both Spanish surnames, in either order: selective even when each one alone
        # (García, López) is too common to block on.
        pair = ".".join(sorted(phonetic(w) for w in f.last_tokens[:2]))
        keys.update(f"b:{pair}:{i}" for i in given_initials)
    if f.postcode:
        keys.update(f"z:{f.postcode}:{i}" for i in given_initials | last_initials)
    if f.dob and len(f.dob) >= 6:
        keys.add("d:" + f.dob)
    if f.company:
        keys.update(f"c:{f.company}:{i}" for i in given_initials | last_initials)
    return frozenset(keys)


def blocking_keys(record: MatchRecord) -> frozenset[str]:
    """The keys under which to file `record`; two records are compared if they share one."""
    return keys_of(prepare(record))


def sort_key_of(f: Features) -> str:
    """Sorted-neighbourhood key of a prepared record: surnames, then given names."""
    return "".join(f.last_tokens) + " " + "".join(f.first_tokens)


def sort_key(record: MatchRecord) -> str:
    """The sorted-neighbourhood key: records whose keys sort close together are compared.

    It catches duplicates whose typos changed every blocking key but not the start of
    the surname. Store it in an indexed column and read the few rows either side.
    """
    return sort_key_of(prepare(record))


def strongest(
    blocks: Iterable[tuple[str, Collection[T]]], limit: int, order: Callable[[T], int]
) -> set[T]:
    """The members of `blocks` (key, members) worth comparing, at most `limit` of them.

    Every member fits when they are few enough. Otherwise members of exact keys come
    first (the first `limit` by `order` when even they are too many), then the others by
    weight: the sum, over the keys a member is under, of one over the key's block size;
    the earliest in `order` first among equal weights. Weights are floating-point sums
    (1/3 + 1/12 + 1/12 may fall a hair below 1/2), added in sorted key order, so a
    member's weight never depends on the order the blocks were given in: every process,
    and a batch as well as one lead at a time, ranks alike.
    """
    given = sorted(blocks, key=_block_key)
    if sum(len(members) for _, members in given) <= limit:
        return set().union(*(members for _, members in given))
    exact: set[T] = set()
    weight: dict[T, float] = {}
    get = weight.get
    for key, members in given:
        if key.startswith(EXACT_PREFIXES):
            exact.update(members)
        elif members:
            share = 1.0 / len(members)
            if weight:
                for member in members:
                    weight[member] = get(member, 0.0) + share
                continue
            # The first weighed block fills the empty table at once (0.0 + share is
            # share), unless a member repeats in it: then one at a time, as above.
            weight = dict.fromkeys(members, share)
            get = weight.get
            if len(weight) != len(members):
                weight.clear()
                for member in members:
                    weight[member] = get(member, 0.0) + share
    if exact:
        everyone = exact | weight.keys()
        if len(everyone) <= limit:
            return everyone
        for member in exact:
            weight.pop(member, None)
    elif len(weight) <= limit:
        return set(weight)
    if len(exact) >= limit:
        return set(heapq.nsmallest(limit, exact, key=order))
    room = limit - len(exact)
    # The room-th heaviest weight: every member above it is in; members at it, the
    # earliest first, fill what room is left (sorting floats, not members, is cheap).
    cut = sorted(weight.values(), reverse=True)[room - 1]
    chosen: list[T] = []
    tied: list[T] = []
    for member, w in weight.items():
        if w > cut:
            chosen.append(member)
        elif w == cut:
            tied.append(member)
    # `sorted` is stable, as `heapq.nsmallest` is: among equal `order`, the first met.
    tied.sort(key=order)
    exact.update(chosen, tied[: room - len(chosen)])
    return exact


def _block_key(block: tuple[str, Collection[T]]) -> str:
    return block[0]
