"""Field comparisons of the matcher: how well one field of two records agrees, as evidence.

Each function compares one field (given names, surnames, date of birth, postcode, a
place, a company, a street address) and says how much the agreement or disagreement
weighs, in bits (see `compare` for how the bits add up to a probability). Every
comparison is symmetric. Reasons never quote the values compared.
"""

from __future__ import annotations

import functools
import itertools
from enum import StrEnum
from typing import Final, NamedTuple

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler

from cauce.leads.matching._lexicon import COMMON_GIVEN_NAMES, COMMON_SURNAMES
from cauce.leads.matching.record import Features

_TYPO_JW: Final = 0.9
# Comparisons of given names, surnames and places are memoised: they repeat a lot (José,
# García, Madrid), so most pairs meet values already compared. (Single words and whole
# companies hit too seldom, in data with typos, for a cache to pay.) Sizes follow how many
# distinct values there are: a few thousand given names or places, far more surnames.
_SMALL: Final = 1 << 12
_LARGE: Final = 1 << 16


class Level(StrEnum):
    """How well one field agrees."""

    AGREE = "agree"
    PARTIAL = "partial"
    WEAK = "weak"
    CONFLICT = "conflict"
    DISAGREE = "disagree"


class Evidence(NamedTuple):
    """One field's contribution: its level, similarity, weight in bits and why.

    Reasons never quote the values compared: decisions are logged and personal data is
    not (DESIGN.md §4.8).
    """

    field: str
    level: Level
    similarity: float
    weight: float
    reason: str


def _near(a: str, b: str) -> float:
    """Similarity of two words where a single typo still scores at least 0.9."""
    if a == b:
        return 1.0
    jw = JaroWinkler.similarity(a, b)
    if min(len(a), len(b)) >= 3 and OSA.distance(a, b, score_cutoff=1) <= 1:
        return max(jw, _TYPO_JW)
    return jw


# --- names -------------------------------------------------------------------------


def _gender_forms(x: str, y: str) -> bool:
    """Spanish masculine and feminine forms: Mario/María, Juan/Juana, Luis/Luisa."""
    if min(len(x), len(y)) < 3:
        return False
    if x[:-1] == y[:-1] and {x[-1], y[-1]} == {"o", "a"}:
        return True
    return x + "a" == y or y + "a" == x


@functools.lru_cache(maxsize=_SMALL)
def _given(ta: tuple[str, ...], tb: tuple[str, ...], field: str) -> Evidence | None:
    if not ta or not tb:
        return None
    # Agreeing on José or María says less than agreeing on Itziar.
    common = set(ta) <= COMMON_GIVEN_NAMES or set(tb) <= COMMON_GIVEN_NAMES
    agree = 3.5 if common else 6.0
    ja, jb = "".join(ta), "".join(tb)
    if ja == jb:
        return Evidence(field, Level.AGREE, 1.0, agree, "same given name")
    if len(ta) == len(tb) and any(_gender_forms(x, y) for x, y in zip(ta, tb, strict=True)):
        # One letter apart, yet two people: a brother and a sister, say.
        return Evidence(field, Level.DISAGREE, 0.9, -3.5, "male and female forms of a name")
    short, long_ = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    if set(short) <= set(long_):
        if long_[: len(short)] == short:  # José for José Luis
            why = "one compound given name begins the other"
            return Evidence(field, Level.PARTIAL, 0.9, min(3.0, agree - 1.0), why)
        if len(short) == len(long_):
            # José María is a man, María José a woman.
            why = "the same given names in another order"
            return Evidence(field, Level.DISAGREE, 0.9, -3.5, why)
        if (long_[0] == "maria" and short[0] in _MENS_NAMES) or (
            short[0] == "maria" and long_[0] in _MENS_NAMES
        ):
            # Jesús and María Jesús, José and María José; María and José María: a man and
            # a woman.
            why = "a man's given name and a woman's compound of it"
            return Evidence(field, Level.DISAGREE, 0.9, -3.5, why)
        # Teresa for María Teresa, Luis for José Luis: the name someone goes by.
        why = "one given name is the other's second"
        return Evidence(field, Level.PARTIAL, 0.9, min(2.0, agree - 1.0), why)
    if (
        len(ta) == len(tb) > 1
        and any(x == y and len(x) > 1 for x, y in zip(ta, tb, strict=True))
        and all(
            x == y or (len(x) == 1 and y.startswith(x)) or (len(y) == 1 and x.startswith(y))
            for x, y in zip(ta, tb, strict=True)
        )
    ):  # one whole name the same, the others initials of each other's
        why = "one given name abbreviated"  # M. José for María José
        return Evidence(field, Level.PARTIAL, 0.9, min(2.0, agree - 1.0), why)
    sim = _near(ja, jb)
    if sim >= _TYPO_JW:
        # Near agreement never outweighs exact agreement on the same names.
        why = "given names differ by a typo"
        return Evidence(field, Level.PARTIAL, sim, min(3.5, agree - 1.0), why)
    if _initials_of(ta, tb) or _initials_of(tb, ta):
        return Evidence(field, Level.WEAK, sim, 1.0, "an initial agrees with the given name")
    return Evidence(field, Level.DISAGREE, sim, -3.5, "different given names")


# Men's given names that are also the second of a woman's compound one (María Jesús,
# María José, María Luisa's Luis is not: it is Luisa).
_MENS_NAMES: Final = frozenset(
    {"jose", "jesus", "luis", "antonio", "angel", "manuel", "francisco", "javier", "juan"}
)


def _initials_of(initials: tuple[str, ...], names: tuple[str, ...]) -> bool:
    return all(len(t) == 1 for t in initials) and all(
        any(x.startswith(t) for x in names) for t in initials
    )


def _assign(short: tuple[str, ...], long_: tuple[str, ...]) -> tuple[float, ...]:
    """Similarities of the best one-to-one pairing of the shorter token list into the longer."""
    if len(long_) == 1:
        return (_near(short[0], long_[0]),)
    if len(short) == len(long_) == 2:
        # The usual case (two surnames each side), unrolled: straight, then crossed.
        s0, s1 = short
        l0, l1 = long_
        x, y = _near(s0, l0), _near(s1, l1)
        straight = (x, y) if x <= y else (y, x)
        x, y = _near(s0, l1), _near(s1, l0)
        crossed = (x, y) if x <= y else (y, x)
        return crossed if (sum(crossed), crossed) > (sum(straight), straight) else straight
    # Ranked by total, then by the sorted similarities, so ties break the same way
    # whichever record is passed first (the score must be symmetric).
    best: tuple[float, tuple[float, ...]] = (-1.0, ())
    for perm in itertools.permutations(long_[:4], len(short[:4])):
        sims = tuple(sorted(_near(x, y) for x, y in zip(short, perm, strict=False)))
        best = max(best, (sum(sims), sims))
    return best[1]


def _surname_weight(ta: tuple[str, ...], tb: tuple[str, ...]) -> float:
    """Bits for agreeing surnames: two agreeing count more, common ones less."""
    common = set(ta) <= COMMON_SURNAMES or set(tb) <= COMMON_SURNAMES
    if min(len(ta), len(tb)) >= 2:
        return 7.0 if common else 10.0
    return 4.0 if common else 7.0


@functools.lru_cache(maxsize=_LARGE)
def _surnames(ta: tuple[str, ...], tb: tuple[str, ...], field: str) -> Evidence | None:
    if not ta or not tb:
        return None
    agree = _surname_weight(ta, tb)
    # Near agreement never outweighs exact agreement on the same surnames.
    typo = min(4.5, agree - 1.0)
    ja, jb = "".join(ta), "".join(tb)
    if ja == jb:
        why = "both surnames agree" if min(len(ta), len(tb)) >= 2 else "same surname"
        return Evidence(field, Level.AGREE, 1.0, agree, why)
    short, long_ = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    sims = _assign(short, long_)
    matched = sum(s >= _TYPO_JW for s in sims)
    if matched == len(short):
        if len(short) < len(long_):
            return Evidence(
                field, Level.PARTIAL, min(sims), agree - 2.0, "one side lacks a surname"
            )
        if min(sims) == 1.0:
            return Evidence(field, Level.AGREE, 1.0, agree, "same surnames in another order")
        return Evidence(field, Level.PARTIAL, min(sims), typo, "surnames differ by a typo")
    if matched and len(short) >= 2:
        # García López vs García Pérez: the same father's surname, another mother's.
        return Evidence(
            field, Level.CONFLICT, min(sims), -1.0, "one surname agrees, another differs"
        )
    # A space typed or lost inside a surname ("Mc Carthy", "Vande Velde").
    joined = sims[0] if len(long_) == 1 else _near(ja, jb) if len(ta) != len(tb) else 0.0
    if joined >= _TYPO_JW:
        return Evidence(field, Level.PARTIAL, joined, typo, "surnames differ by a typo")
    return Evidence(field, Level.DISAGREE, max(joined, *sims), -4.0, "different surnames")


# --- other fields ------------------------------------------------------------------


def _dob(a: str, b: str) -> Evidence:
    field = "date_of_birth"
    if a == b:
        return Evidence(field, Level.AGREE, 1.0, 9.0, "same date of birth")
    if len(a) == len(b) == 8:
        diff = [i for i in range(8) if a[i] != b[i]]
        swapped = (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
        day_month = a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]
        if len(diff) == 1 or swapped or day_month:
            return Evidence(field, Level.PARTIAL, 0.9, 4.0, "dates of birth differ by a typo")
    return Evidence(field, Level.DISAGREE, 0.0, -5.0, "different dates of birth")


def _postcode(a: str, b: str) -> Evidence:
    if a == b:
        return Evidence("postcode", Level.AGREE, 1.0, 5.0, "same postcode")
    if len(a) == len(b) and OSA.distance(a, b, score_cutoff=1) <= 1:
        return Evidence("postcode", Level.WEAK, 0.8, 1.0, "postcodes differ by a typo")
    return Evidence("postcode", Level.DISAGREE, 0.0, -2.5, "different postcodes")


@functools.lru_cache(maxsize=_SMALL)
def _place(a: str, b: str, field: str, agree: float, partial: float, disagree: float) -> Evidence:
    if a == b or a.replace(" ", "") == b.replace(" ", ""):
        return Evidence(field, Level.AGREE, 1.0, agree, f"same {field}")
    sim = _near(a, b)
    if sim >= _TYPO_JW:
        return Evidence(field, Level.PARTIAL, sim, partial, f"{field} differs by a typo")
    return Evidence(field, Level.DISAGREE, sim, disagree, f"different {field}")


def _distinct_words(a: str, b: str) -> bool:
    """Two company names share a word, and each has one the other lacks that is no typo
    of it: "Construcciones Pérez" and "Construcciones Gómez", "Clínica Dental Sonrisa"
    and "Clínica Dental Norte". The shared word is a trade; the others name the firm."""
    wa, wb = a.split(), b.split()
    only_a = [w for w in wa if w not in wb]
    only_b = [w for w in wb if w not in wa]
    if not only_a or not only_b or len(only_a) == len(wa) or len(only_b) == len(wb):
        return False
    return _near(" ".join(only_a), " ".join(only_b)) < _TYPO_JW


def _company(a: str, b: str) -> Evidence:
    if a == b:
        return Evidence("company", Level.AGREE, 1.0, 6.0, "same company")
    if _distinct_words(a, b):
        sim = fuzz.token_sort_ratio(a, b) / 100.0
        return Evidence("company", Level.DISAGREE, sim, -1.5, "different companies in one trade")
    sim = max(_near(a, b), fuzz.token_sort_ratio(a, b) / 100.0)
    if sim >= _TYPO_JW:
        return Evidence("company", Level.PARTIAL, sim, 3.5, "company names nearly agree")
    return Evidence("company", Level.DISAGREE, sim, -1.5, "different companies")


def _address(a: Features, b: Features) -> Evidence | None:
    if a.address is None or b.address is None:
        return None
    x, y = a.address, b.address
    sim = fuzz.token_sort_ratio(x, y) / 100.0
    shared = set(x.split()) & set(y.split())
    if len(shared) >= 2:
        # One side often lacks a second line ("7 Wallaby Pl" vs "7 Wallaby Pl, Delmar").
        sim = max(sim, 0.95 * fuzz.token_set_ratio(x, y) / 100.0)
    numbers_clash = bool(a.address_numbers and b.address_numbers) and not (
        a.address_numbers & b.address_numbers
    )
    if sim >= 0.93 and not numbers_clash:
        return Evidence("address", Level.AGREE, sim, 7.0, "same street address")
    if sim >= 0.8:
        return Evidence("address", Level.PARTIAL, sim, 3.5, "street addresses nearly agree")
    if sim >= 0.65:
        return Evidence("address", Level.WEAK, sim, 1.0, "street addresses share words")
    return Evidence("address", Level.DISAGREE, sim, -2.5, "different street addresses")
