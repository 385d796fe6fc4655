"""Full names of leads: splitting one into given names and surnames (compound given
names, particles, `Surnames, Given names`, the Hispanic and Western conventions, as
examples and as properties), the convention a country uses, composing a full name, and
fixing a name's case."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.leads.names import compose_full_name, naming_convention
from cauce.leads.normalise import smart_case_name, split_full_name


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("María José García de la Fuente", "María José", "García de la Fuente"),
        ("María José García", "María José", "García"),
        ("Juan García López", "Juan", "García López"),
        ("José María de la Torre", "José María", "de la Torre"),
        ("María del Carmen Núñez Ibáñez", "María del Carmen", "Núñez Ibáñez"),
        ("José Ortega y Gasset", "José", "Ortega y Gasset"),
        ("Josep Puig i Cadafalch", "Josep", "Puig i Cadafalch"),
        ("João Pedro da Silva Santos", "João Pedro", "da Silva Santos"),
        ("García López, María", "María", "García López"),
        ("Íñigo Muñoz", "Íñigo", "Muñoz"),
        ("Madonna", "Madonna", None),
        ("de la Fuente", None, "de la Fuente"),
        # A generation mark stays after the surnames; an initial is a given name's (both
        # found by an audit with Latin American names).
        ("Ricardo Peralta Sosa Jr.", "Ricardo", "Peralta Sosa Jr."),
        ("Juan Gómez Paz (h)", "Juan", "Gómez Paz (h)"),
        ("Luis Ortega Ruiz II", "Luis", "Ortega Ruiz II"),
        ("Ricardo Peralta hijo", "Ricardo", "Peralta hijo"),
        ("Francisco I. Madero", "Francisco I.", "Madero"),
        ("José J. García López", "José J.", "García López"),
        # In any case, and after a comma (found by review).
        ("JUAN PEREZ GARCIA II", "JUAN", "PEREZ GARCIA II"),
        ("juan perez garcia iii", "juan", "perez garcia iii"),
        ("Juan Pérez, Jr.", "Juan", "Pérez Jr."),
        ("Pérez García, Juan Jr.", "Juan", "Pérez García Jr."),
        # Compound given names with a particle, and common second given names (found by
        # an audit with Latin American names: the second given name became a surname).
        ("María Antonieta de las Nieves", "María Antonieta", "de las Nieves"),
        ("maria das graças", "maria das graças", None),
        ("Maria das Graças Silva", "Maria das Graças", "Silva"),
        ("Juan de Dios Martínez", "Juan de Dios", "Martínez"),
        ("María del Mar Sánchez Ruiz", "María del Mar", "Sánchez Ruiz"),
        ("Maria de Fátima Souza Lima", "Maria de Fátima", "Souza Lima"),
        ("Ana Paula Oliveira", "Ana Paula", "Oliveira"),
        ("Pedro Julio García", "Pedro Julio", "García"),
        # Brazilian second given names (left from the Latin American audit).
        ("Pedro Henrique Alves", "Pedro Henrique", "Alves"),
        ("Francisco de Assis Pereira", "Francisco de Assis", "Pereira"),
        ("João Vitor Souza", "João Vitor", "Souza"),
        ("Marcos Vinícius Lima", "Marcos Vinícius", "Lima"),
        ("Ana Luiza Costa Pereira", "Ana Luiza", "Costa Pereira"),
        ("Maria Clara Santos", "Maria Clara", "Santos"),
        # ... only before a surname: alone after a given name, they are its surname.
        ("Carlos Roberto", "Carlos", "Roberto"),
        ("Juan Vitor", "Juan", "Vitor"),
        ("Ana de Assis", "Ana", "de Assis"),
        # Also surnames: after a single given name they are the surname.
        ("María de las Nieves", "María", "de las Nieves"),
        ("Julio César", "Julio", "César"),
        # Frequent surnames too (review): a surname after the given name.
        ("Marta Sebastián López", "Marta", "Sebastián López"),
        ("Luis Alfonso", "Luis", "Alfonso"),
    ],
)
def test_split_full_name_hispanic(full: str, first: str | None, last: str | None) -> None:
    """Spanish names split into given names and the two surnames, particles kept with them."""
    assert split_full_name(full) == (first, last)


@pytest.mark.parametrize(
    "full",
    [
        "María José",
        "Juan Carlos",
        "Ana María",
        "José Luis",
        "Miguel Ángel",
        "Juan Pablo",
        "Ana Paula",
        "María del Carmen",
        "María de los Ángeles",
        "maria jose",
        "JUAN CARLOS",
    ],
)
def test_two_given_names_alone_are_one_compound_given_name(full: str) -> None:
    """Two words whose second is a common second given name, and no common surname, are
    one compound given name and no surname, as one word is a first name alone."""
    assert split_full_name(full) == (full, None)


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Pedro Martín", "Pedro", "Martín"),
        ("Ana Lorenzo", "Ana", "Lorenzo"),
        ("Lucía Fernández", "Lucía", "Fernández"),
        ("Carlos Román", "Carlos", "Román"),
        ("Luis Vicente", "Luis", "Vicente"),
        ("Juan Andrés", "Juan", "Andrés"),
        ("José Ramón", "José", "Ramón"),
        ("María Rosa", "María", "Rosa"),
        ("Pedro Juan", "Pedro", "Juan"),
        ("José de la Cruz", "José", "de la Cruz"),
        ("María de Jesús", "María", "de Jesús"),
        ("José Ortega y Gasset", "José", "Ortega y Gasset"),
    ],
)
def test_given_name_and_surname_stay_split(full: str, first: str, last: str) -> None:
    """A second word that is a common surname (even one that is a given name too, like
    Andrés or de la Cruz) stays the surname of a two-word name."""
    assert split_full_name(full) == (first, last)


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("María del Carmen Núñez", "María del Carmen", "Núñez"),
        ("José de la Cruz Pérez", "José de la Cruz", "Pérez"),
        ("Juan Carlos Pérez Soto", "Juan Carlos", "Pérez Soto"),
        ("García, María José", "María José", "García"),
        ("de la Fuente, María José", "María José", "de la Fuente"),
        (", María José", "María José", None),
    ],
)
def test_compound_given_names_with_surnames_and_commas(
    full: str, first: str | None, last: str | None
) -> None:
    """Particles and the `Surnames, Given names` form keep working around the rule; a
    comma with nothing before it leaves the given names to the two-word rule."""
    assert split_full_name(full) == (first, last)


GIVEN_FIRST = ["María", "José", "Juan", "Ana", "Luis", "Carmen", "Íñigo", "Lucía"]
SECOND_GIVEN = ["José", "María", "Carlos", "Luis", "Ángel", "Manuel", "del Carmen", "Isabel"]
SURNAMES = ["García", "Martín", "Lorenzo", "Andrés", "de la Cruz", "Ramos", "Núñez", "Rosa"]


def _respelled(name: str, how: str) -> str:
    if how == "upper":
        return name.upper()
    if how == "lower":
        return name.lower()
    if how == "unaccented":
        decomposed = unicodedata.normalize("NFD", name)
        return "".join(c for c in decomposed if not unicodedata.combining(c))
    return name


@given(
    st.sampled_from(GIVEN_FIRST),
    st.sampled_from(SECOND_GIVEN),
    st.sampled_from(SURNAMES),
    st.sampled_from(["as is", "upper", "lower", "unaccented"]),
)
@settings(deadline=None)
def test_compound_given_name_reading_is_stable(
    given_name: str, second: str, surname: str, how: str
) -> None:
    """A given name and a common second given name are one given name in every form of
    the full name (alone, before one surname, after the surname and a comma), whatever
    the case or accents; a common surname after one given name is always the surname."""
    given_name, second, surname = (_respelled(w, how) for w in (given_name, second, surname))
    compound = f"{given_name} {second}"
    assert split_full_name(compound) == (compound, None)
    assert split_full_name(f"{compound} {surname}") == (compound, surname)
    assert split_full_name(f"{surname}, {compound}") == (compound, surname)
    assert split_full_name(f"{given_name} {surname}") == (given_name, surname)
    # The Western convention reads two words as given name and surname.
    assert split_full_name(compound, "western") == (given_name, second)


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Mary Ann Smith", "Mary Ann", "Smith"),
        ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
        ("John Smith", "John", "Smith"),
        ("Juan Carlos", "Juan", "Carlos"),
    ],
)
def test_split_full_name_western(full: str, first: str | None, last: str | None) -> None:
    """Outside the Hispanic convention the last unit alone is the surname."""
    assert split_full_name(full, "western") == (first, last)


def test_naming_convention_follows_country() -> None:
    """Spain, Latin America and unknown countries use two surnames; others one."""
    assert naming_convention("ES") == "hispanic"
    assert naming_convention("mx") == "hispanic"
    assert naming_convention(None) == "hispanic"
    assert naming_convention("US") == "western"


def test_compose_full_name() -> None:
    """A full name is composed from whichever halves exist."""
    assert compose_full_name("Ana", "Ruiz") == "Ana Ruiz"
    assert compose_full_name(None, "Ruiz") == "Ruiz"
    assert compose_full_name(None, None) is None


NAME_WORDS = st.lists(
    st.sampled_from(
        [
            *("María", "José", "de", "la", "y", "García", "López", "del", "Río", "Ana"),
            *("van", "i", "Carlos", "Andrés", "Carmen", "Cruz"),
        ]
    )
    | st.text(alphabet="abcdefñáéÑ-'", min_size=1, max_size=8),
    min_size=1,
    max_size=7,
)


@given(NAME_WORDS, st.sampled_from(["hispanic", "western"]))
@settings(deadline=None)
def test_split_full_name_loses_no_word(words: list[str], convention: str) -> None:
    """First name + last name give back exactly the words of the full name."""
    full = " ".join(words)
    first, last = split_full_name(full, convention)  # type: ignore[arg-type]
    assert " ".join(p for p in (first, last) if p) == full


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MARÍA DE LA FUENTE", "María de la Fuente"),
        ("josé garcía-lópez", "José García-López"),
        ("o'neill", "O'Neill"),
        ("ÍÑIGO MUÑOZ", "Íñigo Muñoz"),
        ("McDonald", "McDonald"),
        ("MCDONALD", "McDonald"),  # found by the Latin American data audit
        ("mcallister", "McAllister"),
        ("MACHADO", "Machado"),  # Mac- is no prefix to guess
        ("de la Rosa", "de la Rosa"),
        ("a", "A"),
    ],
)
def test_smart_case_name(raw: str, expected: str) -> None:
    """Names typed in one case get capitalised; mixed case is the person's spelling."""
    assert smart_case_name(raw) == expected


@given(st.text(max_size=40))
@settings(deadline=None)
@example("ŉ")
def test_smart_case_name_is_idempotent(text: str) -> None:
    """Fixing the case twice changes nothing."""
    once = smart_case_name(text)
    assert smart_case_name(once) == once


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ŞAHİN", "Şahin"), ("İSTANBUL", "İstanbul"), ("ÖZGÜR İNCE", "Özgür İnce"), ("0A-İ", "0a-İ")],
)
def test_a_capital_dotted_i_leaves_no_stray_dot(raw: str, expected: str) -> None:
    """Python lowers İ to i and a combining dot: inside a word that dot was printed as a
    second dot over the i (`Şahi̇n`), and at a word's start a second pass composed it
    back to İ, so a validated name changed when validated again."""
    assert smart_case_name(raw) == expected
    assert smart_case_name(expected) == expected
