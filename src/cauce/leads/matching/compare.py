"""Pairwise comparison: field evidence, a match probability and a verdict.

Exact keys decide first: the same normalised email, tax id, or E.164 phone make a
duplicate outright; a lead's other emails and phones (`MatchRecord.other_emails`) count
as its own. Under names that clearly belong to two people, a phone, a team's mailbox
(info@, ventas@) or another of a lead's addresses is a shared one (a switchboard, a
family's line): it weighs little and decides nothing. A personal address under names
that are surely two people's, naming neither, may be a family's or a couple's: the pair
is held for a person to decide, whatever else agrees.
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
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from rapidfuzz.distance import OSA

from cauce.leads.matching._lexicon import COMMON_SURNAMES, NAME_PARTICLES
from cauce.leads.matching.fields import (
    Evidence,
    Level,
    _address,
    _company,
    _dob,
    _given,
    _place,
    _postcode,
    _surnames,
)
from cauce.leads.matching.record import Features, MatchRecord, prepare
from cauce.leads.matching.screen import Screen, shares_contact
from cauce.leads.matching.settings import DedupeSettings

# Evidence total (bits) at which the probability is one half.
PRIOR_OFFSET: Final = 12.0


class Verdict(StrEnum):
    """What the leads service should do with a pair."""

    DUPLICATE = "duplicate"
    POSSIBLE_DUPLICATE = "possible_duplicate"
    DISTINCT = "distinct"


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The verdict on a pair, with the evidence behind it."""

    score: float
    verdict: Verdict
    evidence: tuple[Evidence, ...]
    rule: str | None = None
    # Why a pair is a possible duplicate whatever its score would say (`_held_back`, one
    # personal mailbox under two people's names), if it is.
    held: str | None = None

    @property
    def matched_fields(self) -> tuple[str, ...]:
        """Fields that counted for the match (agreed or nearly agreed)."""
        return tuple(e.field for e in self.evidence if e.weight > 0)

    def explain(self) -> list[str]:
        """One line per field, strongest evidence first, e.g. "email: same mailbox"."""
        lines = [f"rule: {self.rule}"] if self.rule else []
        if self.held:
            lines.append(f"held: {self.held}")
        for e in sorted(self.evidence, key=lambda e: -abs(e.weight)):
            lines.append(f"{e.field}: {e.reason} ({e.weight:+.1f} bits)")
        return lines


def _verdict(score: float, settings: DedupeSettings) -> Verdict:
    if score >= settings.merge_threshold:
        return Verdict.DUPLICATE
    if score >= settings.review_threshold:
        return Verdict.POSSIBLE_DUPLICATE
    return Verdict.DISTINCT


def rank_of(decision: MatchDecision) -> tuple[bool, float]:
    """How candidates rank for an arrival, best first when sorted: a duplicate before a
    pair held back (which may score higher: `_held_back`), then by score, highest first."""
    return decision.verdict is not Verdict.DUPLICATE, -decision.score


def _probability(bits: float) -> float:
    x = max(-60.0, min(60.0, bits - PRIOR_OFFSET))
    return 1.0 / (1.0 + math.exp2(-x))


# --- names -------------------------------------------------------------------------


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


# Evidence that never varies, built once (the comparison is the intake's hot path).
_SAME_EMAIL: Final = Evidence("email", Level.AGREE, 1.0, 20.0, "same mailbox")
_SAME_LOCAL: Final = Evidence(
    "email", Level.PARTIAL, 0.9, 4.0, "same personal mailbox name elsewhere"
)
_OTHER_EMAIL: Final = Evidence("email", Level.DISAGREE, 0.0, -1.0, "different emails")
_SAME_PHONE: Final = Evidence("phone", Level.AGREE, 1.0, 11.0, "same phone number")
# A lead's other contacts (emails and phones its merged arrivals brought) count as its own.
_SAME_OTHER_EMAIL: Final = _SAME_EMAIL._replace(reason="same mailbox as another of the lead's")
_SAME_OTHER_PHONE: Final = _SAME_PHONE._replace(reason="same phone as another of the lead's")
_OTHER_PHONE: Final = Evidence("phone", Level.DISAGREE, 0.0, -1.0, "different phones")
# The same phone (or a team's mailbox: info@, ventas@) under the names of two people is a
# switchboard or a family's line: it says they are together, not that they are one.
_SHARED_LINE: Final = Evidence(
    "phone", Level.WEAK, 1.0, 2.0, "same phone, names of two people (a shared line)"
)
_SHARED_MAILBOX: Final = Evidence(
    "email", Level.WEAK, 1.0, 2.0, "same team mailbox, names of two people"
)
# A personal address under two people's names, naming neither, may be a family's or a
# couple's (Jorge and Valentina Paredes at familia.paredes@): no exact match.
_SHARED_PERSONAL: Final = Evidence(
    "email", Level.WEAK, 1.0, 2.0, "same mailbox, given names of two people (a shared one)"
)
_SAME_COUNTRY: Final = Evidence("country", Level.AGREE, 1.0, 0.5, "same country")
_OTHER_COUNTRY: Final = Evidence("country", Level.DISAGREE, 0.0, -4.0, "different countries")


_LOCAL_WORDS: Final = re.compile("[^a-z]+")


def _names_either(email_key: str, a: Features, b: Features) -> bool:
    """Whether the mailbox's name is one side's own: a word of it is a given name only
    that side has, alone or before one of its surnames (`ana.gil@`, `anagil@`, `ana85@`
    for Ana Gil). Then it is that person's, whoever filled the form (an assistant for
    the boss), and decides. A family's (`familia.paredes@`) names neither side; a name
    inside another word (`ana` in `familiasantana`, `anabel`) does not count, nor one
    both sides have (a father and his son, `juan.gomez@`)."""
    words = [w for w in _LOCAL_WORDS.split(email_key.partition("@")[0]) if w]
    own_a = {*a.first_tokens, *a.first_canonical}
    own_b = {*b.first_tokens, *b.first_canonical}
    surnames = (*a.last_tokens, *b.last_tokens)
    return _names_own(words, own_a - own_b, surnames) or _names_own(words, own_b - own_a, surnames)


def _names_own(words: list[str], given: set[str], surnames: tuple[str, ...]) -> bool:
    # A word that is the given name, or the given name before a surname (`anagil`,
    # `josegarcia`: one of the pair's, or a common one).
    for token in given:
        if len(token) < 3 or token in NAME_PARTICLES:
            continue
        for word in words:
            if not word.startswith(token):
                continue
            rest = word[len(token) :]
            if (
                not rest
                or rest in COMMON_SURNAMES
                or any(rest.startswith(s) for s in surnames if len(s) >= 3)
            ):
                return True
    return False


def _two_persons(names: list[Evidence]) -> bool:
    """Whether names may well be two people's, not one typed two ways: Jr. and Sr.;
    given names that disagree (Juan and Juana, José María and María José, Jorge and
    Valentina Paredes), whatever the surnames. On one personal mailbox such a pair is
    held for a person: a nickname the lists lack (Bob, Robert) is held too, which a
    person settles in one review; merging two siblings could not be undone."""
    for e in names:
        if e is _TWO_GENERATION_MARKS:
            return True
        if e.reason.endswith("(names swapped)"):
            return False  # which label is which depends on the order of the pair
    return any(e.field == "first_name" and e.level is Level.DISAGREE for e in names)


def _contact(a: Features, b: Features, two_people: bool, two_persons: bool) -> list[Evidence]:
    # `two_people`: the names conflict (`_names_conflict`); `two_persons`: they are
    # surely two people's (`_two_persons`).
    out: list[Evidence] = []
    if a.email_key and b.email_key:
        if a.email_key == b.email_key:
            if two_people and (a.email_role or b.email_role):
                out.append(_SHARED_MAILBOX)
            elif two_persons and not _names_either(a.email_key, a, b):
                out.append(_SHARED_PERSONAL)
            else:
                out.append(_SAME_EMAIL)
        elif shares_contact(a.email_key, a.other_email_keys, b.email_key, b.other_email_keys):
            # One of a lead's other addresses may be a shared one a merge brought in.
            out.append(_SHARED_MAILBOX if two_people else _SAME_OTHER_EMAIL)
        elif a.email_local is not None and a.email_local == b.email_local:
            out.append(_SAME_LOCAL)
        else:
            # People keep several addresses: a different one is weak evidence.
            out.append(_OTHER_EMAIL)
    if a.phone and b.phone:
        if a.phone == b.phone:
            out.append(_SHARED_LINE if two_people else _SAME_PHONE)
        elif shares_contact(a.phone, a.other_phones, b.phone, b.other_phones):
            out.append(_SHARED_LINE if two_people else _SAME_OTHER_PHONE)
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


_ONE_GENERATION_MARK: Final = Evidence(
    "generation", Level.CONFLICT, 0.5, -2.0, "a generation mark (Jr., hijo) on one side only"
)
_TWO_GENERATION_MARKS: Final = Evidence(
    "generation", Level.CONFLICT, 0.0, -6.0, "different generation marks (Jr. and Sr.)"
)


def _generation(a: Features, b: Features) -> Evidence | None:
    # A father and his son share names, a firm and often a phone; "Jr." (or "hijo",
    # "II") on one side only may just have been left out.
    if a.generation == b.generation or not (a.last_tokens and b.last_tokens):
        return None
    return _TWO_GENERATION_MARKS if a.generation and b.generation else _ONE_GENERATION_MARK


def field_evidence(a: Features, b: Features, settings: DedupeSettings) -> list[Evidence]:
    """Evidence from every field present on both sides, in a fixed field order."""
    names = _names(a, b, settings.nicknames)
    generation = _generation(a, b)
    if generation is not None:
        names.append(generation)
    out = _contact(a, b, _names_conflict(names), _two_persons(names))
    out.extend(names)
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
        (e.field in ("first_name", "last_names") and e.level in (Level.DISAGREE, Level.CONFLICT))
        or e is _TWO_GENERATION_MARKS
        for e in evidence
    )


# Fields whose agreement says more than "a namesake in the same place": a fuzzy merge
# needs one of them (`_held_back`).
_CORROBORATING: Final = frozenset({"email", "company", "date_of_birth", "address", "postcode"})
_FIRMLY: Final = (Level.AGREE, Level.PARTIAL)


def _held_back(evidence: list[Evidence]) -> str | None:
    """Why a pair no exact key joins, scoring at or above the merge threshold, must still
    not be merged without a person (None when it may).

    A merge folds two records into one for good, and the points alone can get there on
    names and a place: two namesakes with rare surnames in one city (Quispe Mamani in
    Lima), or siblings at the family firm (Juan and Juana, one company, one town). So a
    fuzzy merge needs a field beyond names and places to agree (the company, a personal
    mailbox name, the date of birth, the street address or the postcode), and the given
    names to agree, or one side to have none, unless the date of birth does: a family
    shares surnames, a firm and an address, not a birthday. Otherwise the pair is held
    for review.
    """
    names: list[Evidence] = []
    firm = born = False
    for e in evidence:
        if e.field == "generation":
            return e.reason
        if e.reason.endswith("(names swapped)") or e.field == "first_name":
            names.append(e)
        elif e.field in _CORROBORATING and e.level in _FIRMLY and e.weight > 0:
            firm = True
            born = born or e.field == "date_of_birth"
    if any(e.reason.endswith("(names swapped)") for e in names):
        # Typed into each other's boxes: each crossed piece must agree (which of them is
        # labelled the given name depends on the order of the pair).
        names = [e for e in names if e.reason.endswith("(names swapped)")]
    if not born and any(e.weight <= 0 or e.level not in _FIRMLY for e in names):
        return "the given names do not agree"
    if not firm:
        return "only names and places agree"
    return None


def compare_features(a: Features, b: Features, settings: DedupeSettings) -> MatchDecision:
    """Decide on a pair of prepared records (the index's hot path; see `compare`)."""
    evidence = field_evidence(a, b, settings)
    agreed = {e.field for e in evidence if e.level is Level.AGREE}
    rule: str | None = None
    # A shared contact (a team's mailbox, another of a lead's addresses, a phone) under the
    # names of two people is weak evidence, never an agreement (`_contact`): a rule decides
    # only for the one person's own.
    if "email" in agreed:
        rule = "same_email"
    elif "tax_id" in agreed:
        rule = "same_tax_id"
    elif "phone" in agreed:
        rule = "same_phone"
    score = 1.0 if rule else _probability(sum(e.weight for e in evidence))
    if rule is None and _SHARED_PERSONAL in evidence:
        # Never merged, never let go either: a person decides whether one mailbox under
        # two people's names is a family's or one person's, however the rest scores.
        score = min(max(score, settings.review_threshold), settings.merge_threshold)
        why = "one personal mailbox under the names of two people"
        return MatchDecision(score, Verdict.POSSIBLE_DUPLICATE, tuple(evidence), None, why)
    verdict = _verdict(score, settings)
    held = None
    if verdict is Verdict.DUPLICATE and rule is None:
        held = _held_back(evidence)
        if held is not None:
            verdict = Verdict.POSSIBLE_DUPLICATE
    return MatchDecision(score, verdict, tuple(evidence), rule, held)


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


def compare(
    a: MatchRecord, b: MatchRecord, settings: DedupeSettings | None = None
) -> MatchDecision:
    """Score how likely `a` and `b` describe the same person, and say why.

    Symmetric: `compare(a, b).score == compare(b, a).score`.
    """
    return compare_features(prepare(a), prepare(b), settings or DedupeSettings())
