"""The seniority a job title reads as (the learned model's `seniority=` feature).

Roles that are not the person's own are not read as theirs: whom an assistant or
secretary assists, a former role, a role in a residents' or parents' association. Feminine
forms read as the masculine ones do. Everything else reads as it did before.
"""

from __future__ import annotations

import pytest

from cauce.leads.learned import features_of, seniority

# Titles that read wrongly before (helper-121's audit): (title, level now, level before).
FIXED: list[tuple[str, str, str]] = [
    # Whom an assistant or secretary assists is not their role.
    ("Secretaria del Director General", "staff", "executive"),
    ("Secretaria de la Directora General", "staff", "executive"),
    ("Asistente del CEO", "staff", "executive"),
    ("Asistente Personal del CEO", "staff", "executive"),
    ("Asistenta del Director", "staff", "director"),
    ("Asistente de Gerente General", "staff", "executive"),
    ("Asistente del Fundador y CEO", "staff", "executive"),
    ("Ayudante del Jefe de Cocina", "staff", "director"),
    ("Assistant to the CEO", "staff", "executive"),
    ("Assistant to the CEO and CFO", "staff", "executive"),
    ("Assistant to the Sales Director", "staff", "director"),
    ("Assistant to the Vice-President", "staff", "director"),
    ("Executive Assistant to the CEO", "staff", "executive"),
    ("PA to the Managing Director", "staff", "executive"),
    ("EA to the CFO", "staff", "executive"),
    ("CEO's Assistant", "staff", "executive"),
    ("CEO\u00b4s Assistant", "staff", "executive"),  # a Spanish keyboard's acute accent
    ("CEO Assistant", "staff", "executive"),
    # ...and a role of their own beside it still counts.
    ("Office Manager y Asistente del CEO", "manager", "executive"),
    ("Office Manager & PA to the CEO", "manager", "executive"),
    # A former role is not a current one.
    ("Ex-CEO", "staff", "executive"),
    ("Ex CEO", "staff", "executive"),
    ("Ex. CEO", "staff", "executive"),
    ("Former CEO", "staff", "executive"),
    ("Former Sales Director", "staff", "director"),
    ("Retired CEO", "staff", "executive"),
    ("Past President", "staff", "executive"),
    ("ex-Director General", "staff", "executive"),
    ("Ex-Vicepresidente", "staff", "director"),
    ("Antiguo Director", "staff", "director"),
    ("Antigua Directora", "staff", "director"),
    # A residents' or parents' association is not a company.
    ("Presidente de la comunidad de vecinos", "staff", "executive"),
    ("Presidente de la Comunidad de Propietarios", "staff", "executive"),
    ("Presidenta de la Asociación de Vecinos", "staff", "executive"),
    ("Presidente de la AA.VV.", "staff", "executive"),
    ("Presidenta de la Junta de Vecinos", "staff", "executive"),
    ("Presidenta del AMPA", "staff", "executive"),
    ("Presidente AMPA", "staff", "executive"),
    ("Vicepresidenta de la comunidad de vecinos", "staff", "director"),
    # Feminine forms read as the masculine ones.
    ("Gerenta", "director", "staff"),
    ("GERENTA DE VENTAS", "director", "staff"),
    ("Gerenta General", "executive", "staff"),
    ("Lideresa de Proyecto", "manager", "staff"),
]

# Titles that read as before: the fixes above must not move them.
KEPT: list[tuple[str, str]] = [
    ("Presidente", "executive"),
    ("Presidenta", "executive"),
    ("Presidenta del Consejo de Administración", "executive"),
    ("Presidente Ejecutivo", "executive"),
    ("Presidente de la Asociación de Empresarios", "executive"),
    ("Presidente de la comunidad de vecinos y CEO de Acme", "executive"),
    ("CEO", "executive"),
    ("CEO & Founder", "executive"),
    ("Fundadora", "executive"),
    ("Cofundadora y CEO", "executive"),
    ("Consejera Delegada", "executive"),
    ("Directora General", "executive"),
    ("Gerente General", "executive"),
    ("Dueña", "executive"),
    ("Socia Directora", "executive"),
    ("Chief of Staff", "executive"),
    ("Ex-CEO y Fundador", "executive"),
    ("Former CEO, now Founder of Acme", "executive"),
    ("CEO at Ex Libris", "executive"),
    ("Director", "director"),
    ("Directora", "director"),
    ("Directora de Marketing", "director"),
    ("Subdirectora General", "director"),
    ("Jefa", "director"),
    ("Jefa de Sección", "director"),
    ("Gerente", "director"),
    ("Vicepresidenta", "director"),
    ("Vice President, Engineering", "director"),
    ("Director/a", "director"),
    ("Assistant Director", "director"),
    ("Director Ex Officio", "director"),
    ("Ex officio Director", "director"),
    ("Secretario del Consejo y Director Jurídico", "director"),
    ("Asistente de Marketing y Jefa de Eventos", "director"),
    ("Gerente de Hotel en Antigua Guatemala", "director"),
    ("Director EA Sports", "director"),
    ("Responsable de Compras", "manager"),
    ("Coordinadora", "manager"),
    ("Encargada", "manager"),
    ("Supervisora", "manager"),
    ("Assistant Manager", "manager"),
    ("Office Manager / PA", "manager"),
    ("Country Manager PA", "manager"),
    ("Asistente de Dirección", "staff"),
    ("Secretaria de Presidencia", "staff"),
    ("Secretaria General", "staff"),
    ("Personal Assistant", "staff"),
    ("Exdirector", "staff"),
    ("Administrativo", "staff"),
    ("N/A", "staff"),
]


@pytest.mark.parametrize(("title", "level", "before"), FIXED)
def test_a_role_that_is_not_the_persons_own_is_not_read_as_theirs(
    title: str, level: str, before: str
) -> None:
    """Assistants, former and association roles, and feminine forms read right."""
    assert level != before
    assert seniority(title) == level


@pytest.mark.parametrize(("title", "level"), KEPT)
def test_other_titles_read_as_before(title: str, level: str) -> None:
    """Titles none of the fixes is about keep their level."""
    assert seniority(title) == level


@pytest.mark.parametrize(
    ("feminine", "masculine"),
    [
        ("Gerenta", "Gerente"),
        ("Gerenta General", "Gerente General"),
        ("Directora", "Director"),
        ("Directora General", "Director General"),
        ("Subdirectora", "Subdirector"),
        ("Jefa de Ventas", "Jefe de Ventas"),
        ("Presidenta", "Presidente"),
        ("Vicepresidenta", "Vicepresidente"),
        ("Consejera Delegada", "Consejero Delegado"),
        ("Fundadora", "Fundador"),
        ("Cofundadora", "Cofundador"),
        ("Propietaria", "Propietario"),
        ("Dueña", "Dueño"),
        ("Socia", "Socio"),
        ("Directiva", "Directivo"),
        ("Coordinadora", "Coordinador"),
        ("Supervisora", "Supervisor"),
        ("Encargada", "Encargado"),
        ("Lideresa", "Líder"),
        ("Asistenta del Director", "Asistente del Director"),
        ("Antigua Directora", "Antiguo Director"),
        ("Presidenta del AMPA", "Presidente del AMPA"),
    ],
)
def test_feminine_forms_read_as_the_masculine(feminine: str, masculine: str) -> None:
    """A woman's title has the level of the same title for a man."""
    assert seniority(feminine) == seniority(masculine)


def test_the_feature_is_still_one_of_the_four_levels() -> None:
    """The model's vocabulary is unchanged: a fixed title moves to another level's feature."""
    features = features_of({"job_title": "Asistente del CEO"})
    assert [name for name in features if name.startswith("seniority=")] == ["seniority=staff"]
    levels = {seniority(title) for title, _, _ in FIXED} | {seniority(t) for t, _ in KEPT}
    assert levels == {"executive", "director", "manager", "staff"}
