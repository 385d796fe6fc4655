"""The screen: rules out, before any name comparison, the candidates that cannot score
high enough (the intake's hot path: it runs for every candidate of every arrival).

`compare.decide_above` and the index's ranking build one `Screen` per arriving record;
its bound on the evidence is exact for some fields and the most others could give (see
`Screen`), so a pair it rules out would have scored below the floor anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

from cauce.leads.matching.fields import (
    _address,
    _company,
    _dob,
    _given,
    _place,
    _postcode,
    _surnames,
)
from cauce.leads.matching.record import Features


def shares_contact(
    own_a: str, others_a: frozenset[str], own_b: str, others_b: frozenset[str]
) -> bool:
    """One side's email (phone) is among the other's other contacts, or both list one."""
    if not (others_a or others_b):
        return False
    return own_a in others_b or own_b in others_a or not others_a.isdisjoint(others_b)


def _surname_bits(a_len: int, a_common: bool, b_len: int, b_common: bool) -> float:
    # `_surname_weight` from token counts and commonness computed once per record.
    common = a_common or b_common
    if a_len >= 2 and b_len >= 2:
        return 7.0 if common else 10.0
    return 4.0 if common else 7.0


class Screen:
    """Rules out, cheaply and exactly, candidates whose evidence cannot reach `need` bits.

    First every field is counted exactly except names, company and address, which count
    the most their comparison could give: agreeing surnames weigh `_surname_weight`,
    names typed into each other's boxes at most the two crossed surname weights less
    their penalty, a company that differs its near agreement, an address its agreement,
    a tax id that differs its typo (0). The few pairs that bound does not rule out get
    company, address and surnames compared exactly before giving up. Pairs that an exact
    key (email, phone, tax id) joins always pass: a rule may decide them.

    One screen serves one record against all its candidates (`admits`, a closure: this
    runs for every candidate of every lead). The bound on the names depends on the
    candidate only through its `name_key` and whether initials cross, the places'
    evidence only through its `place_key`; most candidates share both with others
    (José, Madrid), so each is computed once, for every screen of a record with the
    same keys (`_Memo`), and looked up after.
    """

    __slots__ = ("_a", "_common", "_given_tokens", "_nick", "admits", "need")

    def __init__(self, a: Features, nick: bool, need: float) -> None:
        self._a, self._nick, self.need = a, nick, need
        self._given_tokens = a.first_canonical if nick else a.first_tokens
        self._common = a.canonical_common if nick else a.first_common
        self.admits: Callable[[Features], bool] = self._admits()

    def _name_bound(self, b: Features, cross: bool, table: dict[str, _NameBound]) -> _NameBound:
        bound = table[b.name_key] = self._new_name_bound(b, cross)
        _NAME_BOUNDS.grown()
        return bound

    def _new_name_bound(self, b: Features, cross: bool) -> _NameBound:
        a, fa = self._a, self._given_tokens
        fb = b.first_canonical if self._nick else b.first_tokens
        given = _given(fa, fb, "first_name")
        given_bits = given.weight if given is not None else 0.0
        la, lb = len(a.last_tokens), len(b.last_tokens)
        surname_max = _surname_bits(la, a.last_common, lb, b.last_common) if la and lb else 0.0
        crossed_max = -math.inf
        if cross and la and lb and given is not None:
            cb = b.canonical_common if self._nick else b.first_common
            crossed_max = (
                _surname_bits(len(fa), self._common, lb, b.last_common)
                + _surname_bits(la, a.last_common, len(fb), cb)
                - 2.0
            )
        return given_bits, crossed_max, max(given_bits + surname_max, crossed_max)

    def _place_bits(self, b: Features, table: dict[str, float]) -> float:
        bits = table[b.place_key] = self._new_place_bits(b)
        _PLACE_BITS.grown()
        return bits

    def _new_place_bits(self, b: Features) -> float:
        # Exact for date of birth, places and postcode; an address at its most (agreeing).
        a = self._a
        bits = 0.0
        if a.dob and b.dob:
            bits += _dob(a.dob, b.dob).weight
        if a.address is not None and b.address is not None:
            bits += 7.0
        if a.city and b.city:
            bits += _place(a.city, b.city, "city", 4.0, 2.5, -2.0).weight
        if a.postcode and b.postcode:
            bits += _postcode(a.postcode, b.postcode).weight
        if a.region and b.region:
            bits += _place(a.region, b.region, "region", 1.0, 0.5, -1.5).weight
        if a.country and b.country:
            bits += 0.5 if a.country == b.country else -4.0
        return bits

    def _admits(self) -> Callable[[Features], bool]:
        a, need = self._a, self.need
        email, local, phone, tax_id = a.email_key, a.email_local, a.phone, a.tax_id
        other_emails, other_phones = a.other_email_keys, a.other_phones
        company, address, last = a.company or "", a.address, a.last_tokens
        first_initial, last_initials = a.first_initial, a.last_initials
        straight = _NAME_BOUNDS.table((self._nick, False, a.name_key))
        crossed = _NAME_BOUNDS.table((self._nick, True, a.name_key))
        places = _PLACE_BITS.table(a.place_key)
        name_bound, place_bits = self._name_bound, self._place_bits

        def admits(b: Features) -> bool:
            """True unless the pair surely scores below the screen's floor."""
            bits = 0.0
            if email and b.email_key:
                if email == b.email_key or (
                    (other_emails or b.other_email_keys)
                    and shares_contact(email, other_emails, b.email_key, b.other_email_keys)
                ):
                    return True
                bits = 4.0 if local is not None and local == b.email_local else -1.0
            if phone and b.phone:
                if phone == b.phone or (
                    (other_phones or b.other_phones)
                    and shares_contact(phone, other_phones, b.phone, b.other_phones)
                ):
                    return True
                bits -= 1.0
            if tax_id and tax_id == b.tax_id:
                return True
            if b.first_initial in last_initials or first_initial in b.last_initials:
                names = crossed.get(b.name_key)
                if names is None:
                    names = name_bound(b, True, crossed)
            else:
                names = straight.get(b.name_key)
                if names is None:
                    names = name_bound(b, False, straight)
            place = places.get(b.place_key)
            if place is None:
                place = place_bits(b, places)
            bits += place
            other = b.company
            if company and other:
                if company == other:
                    bits += 6.0
                elif bits + 3.5 + names[2] < need:
                    return False
                else:
                    # Close enough to compare the companies exactly.
                    bits += _company(company, other).weight
            if bits + names[2] < need:
                return False
            # Close enough to look harder: address and straight surnames, exactly.
            if address is not None and b.address is not None:
                found = _address(a, b)
                bits += (found.weight if found is not None else 7.0) - 7.0
            surnames = _surnames(last, b.last_tokens, "last_names")
            if surnames is None:
                return bits + names[2] >= need
            return bits + max(names[0] + surnames.weight, names[1]) >= need

        return admits


# A screen's bound on the names of a pair: (given-name bits, crossed names at most, both).
_NameBound = tuple[float, float, float]
# The bounds depend on the two records only through their keys, so screens share them
# (one per incoming lead would otherwise work out José against José again).
_SCREEN_MEMO: Final = 1 << 15
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Memo(Generic[K, V]):
    """Values shared by screens: a table per key of the screened record, of values by the
    candidate's key. A screen holds its record's tables and reads them for every candidate.

    Emptied once it holds `_SCREEN_MEMO` values and tables in all, which costs a few misses
    and keeps memory bounded (a screen still holding a table keeps it, unshared).
    """

    __slots__ = ("_size", "_tables")

    def __init__(self) -> None:
        self._tables: dict[K, dict[str, V]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def table(self, key: K) -> dict[str, V]:
        """The table of a screened record's `key`, new and empty the first time."""
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            self.grown()
        return table

    def grown(self) -> None:
        """Count a value put in a table."""
        self._size += 1
        if self._size >= _SCREEN_MEMO:
            self._tables.clear()
            self._size = 0


# By (nicknames, initials crossed, name_key), then name_key; by place_key, then place_key.
_NAME_BOUNDS: _Memo[tuple[bool, bool, str], _NameBound] = _Memo()
_PLACE_BITS: _Memo[str, float] = _Memo()
