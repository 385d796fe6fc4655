"""Person names: splitting a full name into first and last name(s), and fixing the case
of names typed in all capitals or all lower case.

Rules (the data is mostly Spanish and Latin American, so that convention is the
default):

- Words are grouped into *units*: a particle (`de`, `del`, `de la`, `van`, `da`...)
  belongs to the word after it (`de la Fuente` is one unit), and a connector (`y`, `i`,
  `e`) joins the units on both sides (`Ortega y Gasset`).
- `"García López, María"` (a comma) is last name(s), then first name(s).
- Hispanic convention (Spain, Latin America, Portugal, Brazil, or country unknown): the
  last two units are the surnames (father's and mother's), the units before them the
  given names: `María José García de la Fuente` → `María José` / `García de la Fuente`.
  With three units the middle one is a surname unless it is a common second given name
  (`María José García` → `María José` / `García`; `Juan García López` → `Juan` /
  `García López`; `María Antonieta de las Nieves` → `María Antonieta` / `de las Nieves`;
  `Juan de Dios Martínez` → `Juan de Dios` / `Martínez`). Two units are one given name
  and one surname, unless the second is a common second given name that is not also a
  common surname: then they are one compound given name and there is no surname
  (`María José`, `Juan Carlos`, `María del Carmen`; but `Juan Andrés`, `José de la
  Cruz`, `Pedro Martín` are given name and surname).
- Western convention (every other country): the last unit is the surname, the rest are
  given names (`Mary Ann Smith` → `Mary Ann` / `Smith`).
- One unit is a first name, unless it starts with a particle (then it is a surname).

The split is a guess, so the schemas only split when the caller sent a full name and
neither first nor last name: names given separately are kept as they are. A full name
sent with a first or last name is no guess: it must agree with them
(`halves_of_full_name`), and a half not sent is what remains of it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal, NamedTuple

NameConvention = Literal["hispanic", "western"]

# Countries whose people usually carry two surnames (or, in Portuguese, several).
HISPANIC_NAMING: frozenset[str] = frozenset(
    "ES MX AR CO CL PE VE EC GT CU BO DO HN PY SV NI CR PA UY PR GQ AD PT BR".split()  # noqa: SIM905
)

_PARTICLES = frozenset(
    "de del la las los da das do dos di du van von der den ter ten le san santa".split()  # noqa: SIM905
)
_CONNECTORS = frozenset({"y", "i", "e"})
_LOWER_WORDS = _PARTICLES | _CONNECTORS

# Second given names of Brazil (`Pedro Henrique Alves`, `Francisco de Assis Pereira`)
# read so only before a surname: alone after a given name they are its surname
# (`Carlos Roberto`, `Juan Vitor`, `Ana de Assis`).
_BEFORE_SURNAME = frozenset(
    "de-assis henrique vitor victor vinicius roberto clara luiza eduarda helena cecilia".split()  # noqa: SIM905
)

# Second given names common enough in Spanish and Portuguese that "A B C" is more likely
# "A B" + surname than "A" + two surnames. Compared without accents or case.
_SECOND_GIVEN = (
    frozenset(
        """
    jose maria luis carlos antonio manuel miguel angel jesus juan francisco javier
    ignacio alberto andres eduardo enrique fernando pablo ramon rafael alejandro
    pedro david daniel felipe isabel carmen teresa pilar elena eugenia fernanda josefa
    victoria cristina belen rosa lourdes dolores guadalupe luisa paula ines mercedes
    concepcion soledad esperanza jose-maria maria-jose del-carmen del-pilar del-rosario
    de-los-angeles de-jesus de-la-luz de-la-cruz de-lourdes de-las-mercedes
    antonieta antonia magdalena alejandra gabriela aparecida paulo
    paula ricardo guillermo gustavo ernesto augusto
    emilio julio cesar arturo hector raul sergio mario lucia sofia beatriz patricia
    de-dios de-las-nieves del-mar del-socorro del-rocio del-consuelo de-guadalupe
    de-fatima das-gracas da-conceicao do-carmo das-dores da-gloria da-penha do-socorro
    de-ribamar
    """.split()  # noqa: SIM905
    )
    | _BEFORE_SURNAME
)

# Given names that are also common surnames (in Spain, Latin America, Portugal or
# Brazil): after a single given name such a word is more likely the surname
# (`Juan Andrés`, `María Rosa`, `José de la Cruz`, `Pedro Martín`), so a two-unit name
# ending in one is not read as a compound given name. Some are in _SECOND_GIVEN, which
# still makes them given names before a surname (`José de la Cruz Pérez`); the rest are
# here so that adding them there never turns such two-word names into one given name.
_ALSO_SURNAMES = frozenset(
    """
    andres juan ramon rosa de-jesus de-la-cruz del-rosario martin lorenzo roman marcos
    vicente salvador nicolas pascual domingo tomas esteban cruz santiago mateo jaime
    simon leon santos bautista gil de-las-nieves del-mar cesar alfonso sebastian
    gabriel agustin
    """.split()  # noqa: SIM905
)

_WORD_SEPARATORS = re.compile("([\\s\\-'\u2019])")  # \u2019: the typographic apostrophe


class SplitName(NamedTuple):
    """The two halves of a split name; either may be None."""

    first_name: str | None
    last_name: str | None


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def naming_convention(country: str | None) -> NameConvention:
    """Which split rule fits a lead from this country (ISO alpha-2; None: hispanic)."""
    if country is None or country.upper() in HISPANIC_NAMING:
        return "hispanic"
    return "western"


def _units(words: list[str]) -> list[str]:
    units: list[list[str]] = []
    pending: list[str] = []  # particles waiting for the word they belong to
    join_next = False
    for word in words:
        folded = _fold(word)
        if folded in _CONNECTORS and units and not pending:
            units[-1].append(word)
            join_next = True
            continue
        if folded in _PARTICLES:
            pending.append(word)
            continue
        if join_next:
            units[-1].extend([*pending, word])
            join_next = False
        else:
            units.append([*pending, word])
        pending = []
    if pending:  # trailing particles ("Juan de"): keep them on the last unit
        if units:
            units[-1].extend(pending)
        else:
            units.append(pending)
    return [" ".join(u) for u in units]


def _starts_with_particle(unit: str) -> bool:
    return _fold(unit.split(" ", 1)[0]) in _PARTICLES


def _unit_key(unit: str) -> str:
    """A unit as _SECOND_GIVEN and _ALSO_SURNAMES spell it: `del Carmen` → `del-carmen`."""
    return _fold(unit).replace(" ", "-")


def _is_compound_given(second: str) -> bool:
    """Whether a name of two units ending in this one is one compound given name
    (`María José`, `María del Carmen`): a common second given name, not a common surname."""
    key = _unit_key(second)
    return key in _SECOND_GIVEN and key not in _ALSO_SURNAMES and key not in _BEFORE_SURNAME


# Forms of address before a name (`Sr. D. José García`, `Dña. María López`, `Dr. Ruiz`),
# or after it in `Surname, Given name, Sr.`: not part of the name. Compared folded, without
# a final dot. `Don` and `Doña` count only before two more words (`Don José García`), as
# `D.` only with its dot: `Don`, `Dona` and `D` alone may be a name or an initial.
_TITLES = frozenset(
    """
    sr sra srta sres sras dna dr dra drs lic lcdo lcda licdo licda ing arq prof profa
    mr mrs ms mx miss sir
    """.split()  # noqa: SIM905
)
_TITLES_BEFORE_TWO = frozenset({"don", "dona"})


def _is_title(word: str, following: int) -> bool:
    folded = _fold(word).removesuffix(".")
    if folded in _TITLES or word.removesuffix(".").casefold() == "dª":  # ª folds to a
        return True
    if folded == "d":
        return word.endswith(".")
    return folded in _TITLES_BEFORE_TWO and following >= 2


def drop_titles(words: list[str], *, at_end: bool = False) -> list[str]:
    """`words` without the forms of address before the name (`Sr. D.`, `Dra.`), and with
    `at_end` after it too (the given names of `Aznar López, José María, Sr.`); at least
    one word is always left."""
    start = 0
    while start < len(words) - 1 and _is_title(words[start], len(words) - start - 1):
        start += 1
    end = len(words)
    while at_end and end - 1 > start and _is_title(words[end - 1], 0):
        end -= 1
    return words[start:end]


def split_full_name(full_name: str, convention: NameConvention = "hispanic") -> SplitName:
    """Split a cleaned full name into (first name(s), last name(s)); see the module rules.
    Forms of address (`Sr.`, `Dña.`, `Dr.`) are left out (`drop_titles`)."""
    text = " ".join(full_name.split())
    if not text:
        return SplitName(None, None)
    if "," in text:
        last, _, first = text.partition(",")
        last_words = drop_titles(last.split()) if last.split() else []
        first_words = (
            drop_titles(first.replace(",", " ").split(), at_end=True) if first.strip(" ,") else []
        )
        # A generation mark after the given names goes after the surnames.
        mark = first_words.pop() if first_words and _is_generation(first_words[-1]) else None
        last, first = " ".join(last_words), " ".join(first_words)
        if last and first:
            return SplitName(first, f"{last} {mark}" if mark else last)
        if last and mark and len(last_words) == 1:
            return SplitName(None, f"{last} {mark}")  # `García, Jr.`
        # `Juan Pérez, Jr.`: the whole name before the comma, the mark after it.
        text = f"{last} {mark}" if last and mark else last or first or (mark or "")
    words = text.split(" ")
    titled = len(drop_titles(words)) < len(words) and _is_title(words[0], len(words) - 1)
    words = drop_titles(words)
    if titled and len(words) == 1:
        return SplitName(None, words[0])  # `Sr. Pérez`: a title goes before a surname
    # A generation mark at the end (`Jr.`, `hijo`, `(h)`, `II`) goes with the surnames,
    # after them, whatever the words before it.
    mark = words.pop() if len(words) >= 3 and _is_generation(words[-1]) else None
    given, family = _split_words(words, convention)
    if mark is None:
        return SplitName(given, family)
    if family:
        return SplitName(given, f"{family} {mark}")
    return SplitName(f"{given} {mark}" if given else mark, None)


_GENERATION_WORDS = frozenset({"jr", "junior", "hijo", "h", "filho", "sr", "senior", "padre"})
_ROMAN = frozenset({"ii", "iii", "iv"})


def _is_generation(word: str) -> bool:
    folded = _fold(word)
    if folded == "(h)":
        return True
    plain = folded.strip(".()")
    return (plain in _GENERATION_WORDS and plain != "h") or plain in _ROMAN


def _is_initial(unit: str) -> bool:
    """`I.`, `J`: one letter, perhaps with its dot."""
    plain = unit.removesuffix(".")
    return len(plain) == 1 and plain.isalpha()


def _split_words(words: list[str], convention: NameConvention) -> tuple[str | None, str | None]:
    units = _units(words)
    if len(units) == 1:
        return (None, units[0]) if _starts_with_particle(units[0]) else (units[0], None)
    if len(units) == 2:
        if convention == "hispanic" and _is_compound_given(units[1]):
            return f"{units[0]} {units[1]}", None
        return units[0], units[1]
    if convention == "western":
        start = len(units) - 1
    elif len(units) == 3:
        start = 2 if _unit_key(units[1]) in _SECOND_GIVEN else 1
    else:
        start = len(units) - 2
    # An initial is a given name's (`Francisco I. Madero`), never a surname's start.
    while start < len(units) - 1 and _is_initial(units[start]):
        start += 1
    return " ".join(units[:start]), " ".join(units[start:])


def _letters(folded: str) -> str:
    return "".join(c for c in folded if c.isalnum())


def _readings(full_name: str) -> list[list[str]]:
    """The words of a full name, given name(s) then surname(s): with a comma, first turned
    round as `split_full_name` reads `García López, María`, then as written (`Juan
    García, Jr.`); without one, as written. Each without its forms of address
    (`drop_titles`) first, then with them, so halves agree either way (`Dr. José García`
    with `José` + `García`; `Ing Pérez` with `Ing` + `Pérez`)."""
    words = full_name.split()
    readings = [drop_titles(words), words]
    if "," in full_name:
        last, _, first = full_name.partition(",")
        given, family = first.replace(",", " ").split(), last.split()
        untitled = (drop_titles(given, at_end=True) if given else []) + (
            drop_titles(family) if family else []
        )
        readings = [untitled, given + family, *readings]
    unique: list[list[str]] = []
    for reading in readings:
        if reading not in unique:
            unique.append(reading)
    return unique


def halves_of_full_name(
    full_name: str, first_name: str | None, last_name: str | None
) -> SplitName | None:
    """First and last name of a full name sent with one or both of them; None when they
    disagree.

    They agree when the full name's words are the first name's, then the last name's,
    compared without case, accents or spacing (`maria  garcia` agrees with `María` +
    `García`; with both halves sent, punctuation aside too: `José-Luis`, `José Luis`);
    a full name with a comma is read as `García, María` first, as `split_full_name`
    reads it, then as written. A half not sent is the rest of the full
    name (`Carmen` with `Carmen Vidal Soler`: last name `Vidal Soler`), so no word of it
    is lost; that half is None when no word is left for it.
    """
    if not (first_name or last_name):
        raise ValueError("a first or last name is needed; with neither, use split_full_name")
    given = [_fold(w) for w in (first_name or "").split()]
    family = [_fold(w) for w in (last_name or "").split()]
    for words in _readings(full_name):
        folded = [_fold(w) for w in words]
        if first_name and last_name:
            # Both sent, nothing to take from the full name: letters and digits alone are
            # compared, so `José-Luis` and `José Luis`, `O'Brien` and `OBrien` agree.
            if _letters(" ".join(folded)) == _letters(" ".join(given + family)):
                cut = len(first_name.split())
                return SplitName(
                    _accented(first_name, words[:cut]), _accented(last_name, words[cut:])
                )
        elif first_name:
            if folded[: len(given)] == given:
                rest = " ".join(words[len(given) :]) or None
                return SplitName(_accented(first_name, words[: len(given)]), rest)
        elif last_name:
            cut = len(folded) - len(family)
            if cut >= 0 and folded[cut:] == family:
                first = " ".join(words[:cut]) or None
                return SplitName(first, _accented(last_name, words[cut:]))
    return None


def _marks(word: str) -> int:
    return sum(1 for c in unicodedata.normalize("NFD", word) if unicodedata.combining(c))


def _accented(half: str, words: list[str]) -> str:
    """A half as sent, each word spelt with the accents the full name gives it where the
    half has none (`Jose` with `José García`: `José`), its case kept otherwise."""
    sent = half.split()
    if len(sent) != len(words):
        return half
    kept = []
    for mine, theirs in zip(sent, words, strict=True):
        better = _fold(mine) == _fold(theirs) and _marks(theirs) > _marks(mine)
        if better and mine.upper() == mine:
            kept.append(theirs.upper())  # `GARCIA` with `García`: `GARCÍA`
        elif better and mine.lower() == mine:
            kept.append(theirs.lower())
        else:
            kept.append(theirs if better else mine)
    return " ".join(kept)


def smart_case_name(name: str) -> str:
    """Capitalise a name typed all in capitals or all in lower case (`MARÍA DE LA FUENTE`
    → `María de la Fuente`, `o'neill` → `O'Neill`, `MCDONALD` → `McDonald`); mixed case
    is the person's own spelling and stays. Particles after the first word stay lower
    case.
    """
    if not (name.isupper() or name.islower()):
        return name
    result = _recase(name)
    # Some characters change case oddly (one to two characters, no title form), so a
    # result that is still single-case is kept only if it is stable: idempotence first.
    if (result.isupper() or result.islower()) and _recase(result) != result:
        return name
    return result


def _recase(name: str) -> str:
    out: list[str] = []
    seen_word = False
    for part in _WORD_SEPARATORS.split(name.lower()):
        if not part or _WORD_SEPARATORS.fullmatch(part):
            out.append(part)
            continue
        if seen_word and part in _LOWER_WORDS:
            out.append(part)
        elif part.startswith("mc") and len(part) > 2 and part[2].isalpha():
            out.append("Mc" + part[2:].capitalize())  # McDonald (Mac- is Machado's too)
        else:
            out.append(part.capitalize())
        seen_word = True
    # The capital dotted I (Turkish İ) lowers to i and a combining dot: inside a word the
    # dot is the i's own (`ŞAHİN` -> `Şahin`); at a word's start the capital and its dot
    # compose back to İ (`İSTANBUL` -> `İstanbul`, the same text a second pass gives).
    return unicodedata.normalize("NFC", "".join(out).replace("i\u0307", "i"))


def compose_full_name(first_name: str | None, last_name: str | None) -> str | None:
    """`first last`, or whichever half exists; None when neither does."""
    joined = " ".join(p for p in (first_name, last_name) if p)
    return joined or None
