"""Pairwise comparison: field evidence, a match probability and a verdict.

Exact keys decide first: the same normalised email, tax id, or E.164 phone (unless the
names clearly belong to two people: a shared switchboard) make a duplicate outright.
Otherwise every field present on both sides adds evidence in bits, Fellegi-Sunter
style: log2 of how much likelier that agreement (or disagreement) is between two
records of one person than between two records of different people. A field missing on
either side adds nothing. The sum, shifted by a fixed prior, goes through a logistic
curve to give a probability in [0, 1], so thresholds read as probabilities.

The weights are set from reasoning about how distinctive each field is (a date of birth
agrees by chance 1 time in ~30,000, a region 1 in ~10), not fitted to a benchmark.
Every comparison is symmetric, so score(a, b) == score(b, a).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler

from cauce.leads.matching._lexicon import COMMON_GIVEN_NAMES, COMMON_SURNAMES
from cauce.leads.matching.record import Features, MatchRecord, prepare
from cauce.leads.matching.settings import DedupeSettings

# Evidence total (bits) at which the probability is one half.
PRIOR_OFFSET: Final = 12.0
_TYPO_JW: Final = 0.9
# Comparisons of given names, surnames and places are memoised: they repeat a lot (José,
# García, Madrid), so most pairs meet values already compared. (Single words and whole
# companies hit too seldom, in data with typos, for a cache to pay.) Sizes follow how many
# distinct values there are: a few thousand given names or places, far more surnames.
_SMALL: Final = 1 << 12
_LARGE: Final = 1 << 16


class Verdict(StrEnum):
    """What the leads service should do with a pair."""

    DUPLICATE = "duplicate"
    POSSIBLE_DUPLICATE = "possible_duplicate"
    DISTINCT = "distinct"


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


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The verdict on a pair, with the evidence behind it."""

    score: float
    verdict: Verdict
    evidence: tuple[Evidence, ...]
    rule: str | None = None

    @property
    def matched_fields(self) -> tuple[str, ...]:
        """Fields that counted for the match (agreed or nearly agreed)."""
        return tuple(e.field for e in self.evidence if e.weight > 0)

    def explain(self) -> list[str]:
        """One line per field, strongest evidence first, e.g. "email: same mailbox"."""
        lines = [f"rule: {self.rule}"] if self.rule else []
        for e in sorted(self.evidence, key=lambda e: -abs(e.weight)):
            lines.append(f"{e.field}: {e.reason} ({e.weight:+.1f} bits)")
        return lines


def _near(a: str, b: str) -> float:
    """Similarity of two words where a single typo still scores at least 0.9."""
    if a == b:
        return 1.0
    jw = JaroWinkler.similarity(a, b)
    if min(len(a), len(b)) >= 3 and OSA.distance(a, b, score_cutoff=1) <= 1:
        return max(jw, _TYPO_JW)
    return jw


def _verdict(score: float, settings: DedupeSettings) -> Verdict:
    if score >= settings.merge_threshold:
        return Verdict.DUPLICATE
    if score >= settings.review_threshold:
        return Verdict.POSSIBLE_DUPLICATE
    return Verdict.DISTINCT


def _probability(bits: float) -> float:
    x = max(-60.0, min(60.0, bits - PRIOR_OFFSET))
    return 1.0 / (1.0 + math.exp2(-x))


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
        why = "one compound given name contains the other"
        return Evidence(field, Level.PARTIAL, 0.9, min(3.0, agree - 1.0), why)
    sim = _near(ja, jb)
    if sim >= _TYPO_JW:
        # Near agreement never outweighs exact agreement on the same names.
        why = "given names differ by a typo"
        return Evidence(field, Level.PARTIAL, sim, min(3.5, agree - 1.0), why)
    if _initials_of(ta, tb) or _initials_of(tb, ta):
        return Evidence(field, Level.WEAK, sim, 1.0, "an initial agrees with the given name")
    return Evidence(field, Level.DISAGREE, sim, -3.5, "different given names")


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


def _may_be_crossed(a: Features, b: Features) -> bool:
    # A cheap screen before the crossed comparisons: swapped names keep their initials.
    return b.first_initial in a.last_initials or a.first_initial in b.last_initials


def _names(a: Features, b: Features, nick: bool) -> list[Evidence]:
    fa = a.first_canonical if nick else a.first_tokens
    fb = b.first_canonical if nick else b.first_tokens
    given = _given(fa, fb, "first_name")
    if given and given.level is Level.AGREE and nick and a.first_joined != b.first_joined:
        given = given._replace(reason="same given name (nickname)")
    surnames = _surnames(a.last_tokens, b.last_tokens, "last_names")
    straight = [e for e in (given, surnames) if e is not None]
    if len(straight) < 2 or min(e.weight for e in straight) > 0 or not _may_be_crossed(a, b):
        return straight
    # Given name and surname typed into each other's box. Checked both ways round and
    # the better kept, so the result does not depend on which record comes first.
    crossed = [
        _surnames(fa, b.last_tokens, "first_name"),
        _surnames(a.last_tokens, fb, "last_names"),
    ]
    crossed_ok = [e for e in crossed if e is not None]
    if sum(e.weight for e in crossed_ok) > sum(e.weight for e in straight) + 4.0:
        return [
            e._replace(weight=e.weight - 1.0, reason=e.reason + " (names swapped)")
            for e in crossed_ok
        ]
    return straight


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


def _company(a: str, b: str) -> Evidence:
    if a == b:
        return Evidence("company", Level.AGREE, 1.0, 6.0, "same company")
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


# Evidence that never varies, built once (the comparison is the intake's hot path).
_SAME_EMAIL: Final = Evidence("email", Level.AGREE, 1.0, 20.0, "same mailbox")
_SAME_LOCAL: Final = Evidence(
    "email", Level.PARTIAL, 0.9, 4.0, "same personal mailbox name elsewhere"
)
_OTHER_EMAIL: Final = Evidence("email", Level.DISAGREE, 0.0, -1.0, "different emails")
_SAME_PHONE: Final = Evidence("phone", Level.AGREE, 1.0, 11.0, "same phone number")
_OTHER_PHONE: Final = Evidence("phone", Level.DISAGREE, 0.0, -1.0, "different phones")
_SAME_COUNTRY: Final = Evidence("country", Level.AGREE, 1.0, 0.5, "same country")
_OTHER_COUNTRY: Final = Evidence("country", Level.DISAGREE, 0.0, -4.0, "different countries")


def _contact(a: Features, b: Features) -> list[Evidence]:
    out: list[Evidence] = []
    if a.email_key and b.email_key:
        if a.email_key == b.email_key:
            out.append(_SAME_EMAIL)
        elif a.email_local is not None and a.email_local == b.email_local:
            out.append(_SAME_LOCAL)
        else:
            # People keep several addresses: a different one is weak evidence.
            out.append(_OTHER_EMAIL)
    if a.phone and b.phone:
        if a.phone == b.phone:
            out.append(_SAME_PHONE)
        else:
            out.append(_OTHER_PHONE)
    if a.tax_id and b.tax_id:
        if a.tax_id == b.tax_id:
            out.append(Evidence("tax_id", Level.AGREE, 1.0, 20.0, "same tax id"))
        elif len(a.tax_id) == len(b.tax_id) and OSA.distance(a.tax_id, b.tax_id) <= 1:
            out.append(Evidence("tax_id", Level.WEAK, 0.9, 0.0, "tax ids differ by a typo"))
        else:
            out.append(Evidence("tax_id", Level.DISAGREE, 0.0, -4.0, "different tax ids"))
    return out


def field_evidence(a: Features, b: Features, settings: DedupeSettings) -> list[Evidence]:
    """Evidence from every field present on both sides, in a fixed field order."""
    out = _contact(a, b)
    out.extend(_names(a, b, settings.nicknames))
    if a.company and b.company:
        out.append(_company(a.company, b.company))
    if a.dob and b.dob:
        out.append(_dob(a.dob, b.dob))
    address = _address(a, b)
    if address is not None:
        out.append(address)
    if a.city and b.city:
        out.append(_place(a.city, b.city, "city", 4.0, 2.5, -2.0))
    if a.postcode and b.postcode:
        out.append(_postcode(a.postcode, b.postcode))
    if a.region and b.region:
        out.append(_place(a.region, b.region, "region", 1.0, 0.5, -1.5))
    if a.country and b.country:
        out.append(_SAME_COUNTRY if a.country == b.country else _OTHER_COUNTRY)
    return out


def _names_conflict(evidence: list[Evidence]) -> bool:
    return any(
        e.field in ("first_name", "last_names") and e.level in (Level.DISAGREE, Level.CONFLICT)
        for e in evidence
    )


def compare_features(a: Features, b: Features, settings: DedupeSettings) -> MatchDecision:
    """Decide on a pair of prepared records (the index's hot path; see `compare`)."""
    evidence = field_evidence(a, b, settings)
    agreed = {e.field for e in evidence if e.level is Level.AGREE}
    rule: str | None = None
    if "email" in agreed:
        rule = "same_email"
    elif "tax_id" in agreed:
        rule = "same_tax_id"
    elif "phone" in agreed and not _names_conflict(evidence):
        rule = "same_phone"
    score = 1.0 if rule else _probability(sum(e.weight for e in evidence))
    return MatchDecision(score, _verdict(score, settings), tuple(evidence), rule)


def decide_above(
    a: Features, b: Features, settings: DedupeSettings, floor: float
) -> MatchDecision | None:
    """`compare_features`, or None when the score is below `floor`.

    Most candidates a blocking key brings are other people. A cheap upper bound on the
    evidence rules most of them out before the name comparisons run: the exact result
    is the same, only faster.
    """
    if not Screen(a, settings.nicknames, bits_needed(floor)).admits(b):
        return None
    decision = compare_features(a, b, settings)
    return decision if decision.score >= floor else None


@functools.lru_cache(maxsize=64)
def bits_needed(floor: float) -> float:
    """The evidence below which the score stays under `floor` (a hair low, for rounding)."""
    if floor <= 0.0:
        return -math.inf
    if floor >= 1.0:
        return math.inf
    bits = PRIOR_OFFSET + math.log2(floor / (1.0 - floor))
    # `_probability` is flat below -60 bits from the offset: no bound helps down there.
    return bits - 1e-6 if bits > PRIOR_OFFSET - 59.0 else -math.inf


def _surname_bits(a_len: int, a_common: bool, b_len: int, b_common: bool) -> float:
    # `_surname_weight` from token counts and commonness computed once per record.
    common = a_common or b_common
    if a_len >= 2 and b_len >= 2:
        return 7.0 if common else 10.0
    return 4.0 if common else 7.0


_MISSING: Final = object()


class Screen:
    """Rules out, cheaply and exactly, candidates whose evidence cannot reach `need` bits.

    First every field is counted exactly except names, company and address, which count
    the most their comparison could give: agreeing surnames weigh `_surname_weight`,
    names typed into each other's boxes at most the two crossed surname weights less
    their penalty, a company that differs its near agreement, an address its agreement,
    a tax id that differs its typo (0). The few pairs that bound does not rule out get
    company, address and surnames compared exactly before giving up. Pairs that an exact
    key (email, phone, tax id) joins always pass: a rule may decide them. One screen
    serves one record against all its candidates and remembers its comparisons of their
    given names and places, which repeat.
    """

    __slots__ = ("_a", "_city", "_common", "_given", "_given_tokens", "_nick", "_region", "need")

    def __init__(self, a: Features, nick: bool, need: float) -> None:
        self._a, self._nick, self.need = a, nick, need
        self._given_tokens = a.first_canonical if nick else a.first_tokens
        self._common = a.canonical_common if nick else a.first_common
        self._given: dict[tuple[str, ...], object] = {}
        self._city: dict[str, float] = {}
        self._region: dict[str, float] = {}

    def admits(self, b: Features) -> bool:
        """True unless the pair surely scores below the screen's floor."""
        a = self._a
        bits = 0.0
        if a.email_key and b.email_key:
            if a.email_key == b.email_key:
                return True
            bits += 4.0 if a.email_local is not None and a.email_local == b.email_local else -1.0
        if a.phone and b.phone:
            if a.phone == b.phone:
                return True
            bits -= 1.0
        if a.tax_id and b.tax_id and a.tax_id == b.tax_id:
            return True
        fa = self._given_tokens
        fb = b.first_canonical if self._nick else b.first_tokens
        given = self._given.get(fb, _MISSING)
        if given is _MISSING:
            evidence = _given(fa, fb, "first_name")
            given = self._given[fb] = evidence.weight if evidence is not None else None
        given_bits = given if isinstance(given, float) else 0.0
        la, lb = len(a.last_tokens), len(b.last_tokens)
        surname_max = _surname_bits(la, a.last_common, lb, b.last_common) if la and lb else 0.0
        crossed_max = -math.inf
        if (
            la
            and lb
            and given is not None
            and (b.first_initial in a.last_initials or a.first_initial in b.last_initials)
        ):
            cb = b.canonical_common if self._nick else b.first_common
            crossed_max = (
                _surname_bits(len(fa), self._common, lb, b.last_common)
                + _surname_bits(la, a.last_common, len(fb), cb)
                - 2.0
            )
        company_a, company_b = a.company, b.company
        if company_a and company_b:
            bits += 6.0 if company_a == company_b else 3.5
        if a.dob and b.dob:
            bits += _dob(a.dob, b.dob).weight
        addresses = a.address is not None and b.address is not None
        if addresses:
            bits += 7.0  # at most: compared below, only if it could matter
        if a.city and b.city:
            city = self._city.get(b.city)
            if city is None:
                city = self._city[b.city] = _place(a.city, b.city, "city", 4.0, 2.5, -2.0).weight
            bits += city
        if a.postcode and b.postcode:
            bits += _postcode(a.postcode, b.postcode).weight
        if a.region and b.region:
            region = self._region.get(b.region)
            if region is None:
                region = _place(a.region, b.region, "region", 1.0, 0.5, -1.5).weight
                self._region[b.region] = region
            bits += region
        if a.country and b.country:
            bits += 0.5 if a.country == b.country else -4.0
        if bits + max(given_bits + surname_max, crossed_max) < self.need:
            return False
        # Close enough to look harder: company, address and straight surnames, exactly.
        if company_a and company_b and company_a != company_b:
            bits += _company(company_a, company_b).weight - 3.5
        if addresses and (address := _address(a, b)) is not None:
            bits += address.weight - 7.0
        if (surnames := _surnames(a.last_tokens, b.last_tokens, "last_names")) is not None:
            surname_max = surnames.weight
        return bits + max(given_bits + surname_max, crossed_max) >= self.need


def compare(
    a: MatchRecord, b: MatchRecord, settings: DedupeSettings | None = None
) -> MatchDecision:
    """Score how likely `a` and `b` describe the same person, and say why.

    Symmetric: `compare(a, b).score == compare(b, a).score`.
    """
    return compare_features(prepare(a), prepare(b), settings or DedupeSettings())
