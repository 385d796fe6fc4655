"""More titles the learned model's `seniority=` feature must read right (helper-128).

A board chair is an executive (a vice or deputy chair a director, as a vice president
is); a subgerente is a deputy manager, one below the gerente (manager level; a subgerente
general is one below the gerente general, as a subdirector general is); an adjunto "al
CEO" or "a la Dirección" is a staff role at someone's side (a "Director Adjunto" is a
deputy director); a retired role ("jubilado", "retired") is no current one. The titles
of tests/leads/test_title_seniority.py keep their levels (it runs them).
"""

from __future__ import annotations

import pytest

from cauce.leads.learned import features_of, seniority

# (title, level): the level each title must read as.
READ: list[tuple[str, str]] = [
    # The chair of a board runs it, as a presidente del consejo does.
    ("Chairman", "executive"),
    ("Chairwoman", "executive"),
    ("Chairperson", "executive"),
    ("Chair of the Board", "executive"),
    ("Chairman of the Board", "executive"),
    ("Co-Chairman", "executive"),
    ("Chairman & CEO", "executive"),
    ("Vice Chairman", "director"),
    ("Vice-Chair", "director"),
    ("Deputy Chairman", "director"),
    ("Ex-Chairman", "staff"),
    ("Assistant to the Chairman", "staff"),
    ("Assistant to the Vice Chairman", "staff"),
    # A chair that may be a department's or a committee's is no board's.
    ("Department Chair", "staff"),
    # A subgerente is below the gerente: a manager, not a director or an executive.
    ("Subgerente", "manager"),
    ("Subgerenta", "manager"),
    ("Subgerente de Ventas", "manager"),
    ("Sub-gerente", "manager"),
    ("Sub Gerente Comercial", "manager"),
    ("Subgerente General", "director"),
    ("Sub-directora General", "director"),
    ("Asistente del Subgerente", "staff"),
    # An adjunto at someone's side assists them; a deputy's own role stays.
    ("Adjunto al CEO", "staff"),
    ("Adjunta al CEO", "staff"),
    ("Adjunta a la Dirección General", "staff"),
    ("Adjunto a la Gerencia", "staff"),
    ("Adjunto al Director Comercial", "staff"),
    ("Adjunta al Presidente", "staff"),
    ("Director Adjunto", "director"),
    ("Directora Adjunta", "director"),
    ("Gerente Adjunto", "director"),
    ("Director Adjunto al CEO", "director"),
    ("Adjunto a Dirección y Jefe de Compras", "director"),
    ("Profesor Adjunto", "staff"),
    # A retired role is not a current one.
    ("Director General (jubilado)", "staff"),
    ("Directora General (jubilada)", "staff"),
    ("Director General jubilado", "staff"),
    ("Directora de Ventas jubilada", "staff"),
    ("Presidente (jubilado)", "staff"),
    ("CEO (retired)", "staff"),
    ("CEO, retired", "staff"),
    ("Gerente retirado", "staff"),
    ("Gerente General (retirada)", "staff"),
    # ...while a current role beside it, or a title about retirees, still counts.
    ("Director General (jubilado) y Consejero Delegado de Acme", "executive"),
    ("CEO de Acme y Director jubilado", "executive"),
    ("Director del Hogar del Jubilado", "director"),
    ("Presidente del Club de Jubilados", "executive"),
    ("Director of Retired Members", "director"),
    ("Responsable de Planes de Jubilación", "manager"),
    ("Jefe de Retirada de Residuos", "director"),
]


@pytest.mark.parametrize(("title", "level"), READ)
def test_title_reads_at_its_level(title: str, level: str) -> None:
    """Each title reads as the level of the role its holder has now."""
    assert seniority(title) == level


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Subgerenta", "Subgerente"),
        ("Subgerenta General", "Subgerente General"),
        ("Chairwoman", "Chairman"),
        ("Adjunta al CEO", "Adjunto al CEO"),
        ("Directora General (jubilada)", "Director General (jubilado)"),
        ("Sub-gerente", "Subgerente"),
        ("Sub Director", "Subdirector"),
    ],
)
def test_variants_read_alike(one: str, other: str) -> None:
    """A feminine form, or a word written in two, has the level of the other spelling."""
    assert seniority(one) == seniority(other)


def test_the_ranks_are_ordered() -> None:
    """A deputy reads below the role they deputise for, and a retired holder below a
    current one."""
    order = ["staff", "manager", "director", "executive"]

    def rank(title: str) -> int:
        level = seniority(title)
        assert level is not None
        return order.index(level)

    assert rank("Subgerente") < rank("Gerente") < rank("Gerente General")
    assert rank("Subgerente General") < rank("Gerente General")
    assert rank("Vice Chairman") < rank("Chairman")
    assert rank("Adjunto al CEO") < rank("CEO")
    assert rank("Director General (jubilado)") < rank("Director General")


def test_the_feature_is_still_one_of_the_four_levels() -> None:
    """The model's vocabulary is unchanged: these titles move between the four levels."""
    features = features_of({"job_title": "Chairman"})
    assert [name for name in features if name.startswith("seniority=")] == ["seniority=executive"]
    assert {seniority(title) for title, _ in READ} == {"executive", "director", "manager", "staff"}
