"""Spanish and Latin American pairs of leads, labelled: how many of each kind merge.

FEBRL has Australian names and no email, company or phone, so it cannot show what a
Spanish or Latin American CRM meets: namesakes in a big city, siblings at the family
firm, compound given names of a man and a woman, a father and his son (`Jr.`, `hijo`,
`(h)`), colleagues on a team's mailbox with a branch (`info.madrid@`), a family's
mailbox; and one person under a nickname or an abbreviation (`Chuy`, `Ma. Guadalupe`).
The pairs come from an audit with Latin American data (twenty-first session). Each pair
is compared as intake compares (`compare`, the shipped settings):

    .venv/bin/python benchmarks/leads_dedupe_latam.py

Run it on older code with `PYTHONPATH=<worktree>/src` to compare.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cauce.leads.matching import MatchRecord
from cauce.leads.matching.compare import Verdict, compare

Pair = tuple[str, MatchRecord, MatchRecord]


def _rec(**fields: Any) -> MatchRecord:
    return MatchRecord(**fields)


def two_people() -> list[Pair]:
    """Pairs of two people: a merge mixes their data for good."""
    pairs: list[Pair] = []
    for given, surnames, city in [
        ("Juan Carlos", "Quispe Mamani", "Lima"),
        ("Rosa", "Mamani Quispe", "El Alto"),
        ("João", "Oliveira Pereira", "São Paulo"),
        ("Ana", "Souza Lima", "Rio de Janeiro"),
        ("Andrés", "Restrepo Ospina", "Medellín"),
        ("Alejandra", "Aguilar Chávez", "Ciudad de México"),
        ("Martín", "González Rodríguez", "Buenos Aires"),
        ("Yolanda", "Ramírez Guzmán", "Guadalajara"),
        ("Álvaro", "García Martínez", "Madrid"),
        ("Itziar", "Zubizarreta Olano", "Bilbao"),
    ]:
        a = _rec(email="a1@gmail.com", first_name=given, last_names=surnames, city=city)
        b = _rec(email="b2@hotmail.com", first_name=given, last_names=surnames, city=city)
        pairs.append(("namesakes in one city", a, b))
    firm = {"last_names": "Zubizarreta Etxeberria", "company": "Muebles Ortzi", "city": "Azpeitia"}
    for one, other in [
        ("Juan", "Juana"),
        ("Carlos", "Carla"),
        ("Mario", "María"),
        ("Luis", "Luisa"),
        ("Pedro", "Pablo"),
        ("Javier", "Ignacio"),
        ("Ane", "Miren"),
    ]:
        pairs.append(
            (
                "siblings at the family firm",
                _rec(first_name=one, **firm),
                _rec(first_name=other, **firm),
            )
        )
    for one, other in [("Jesús", "María Jesús"), ("José María", "María José")]:
        pairs.append(
            ("a man and a woman", _rec(first_name=one, **firm), _rec(first_name=other, **firm))
        )
    father = {"first_name": "Ricardo", "company": "Peralta Hnos", "city": "Rosario"}
    for mark in ("Jr.", "(h)", "hijo", "II"):
        son = _rec(last_names=f"Peralta Sosa {mark}", **father)
        pairs.append(("a father and his son", _rec(last_names="Peralta Sosa", **father), son))
    for box in (
        "info.madrid",
        "ventas1",
        "contacto_web",
        "compras.mexico",
        "contabilidad",
        "vendas",
    ):
        a = _rec(email=f"{box}@acme.es", first_name="Lucía", last_names="Ortega Ruiz")
        b = _rec(email=f"{box}@acme.es", first_name="Marcos", last_names="Vidal Soto")
        pairs.append(("colleagues on a team mailbox", a, b))
    for email, (g1, s1), (g2, s2) in [
        ("familia.paredes@gmail.com", ("Jorge", "Paredes Huamán"), ("Valentina", "Paredes Quispe")),
        ("casa.mamani@hotmail.com", ("Rosa", "Mamani Condori"), ("Efraín", "Choque Ticona")),
    ]:
        a = _rec(email=email, first_name=g1, last_names=s1)
        b = _rec(email=email, first_name=g2, last_names=s2)
        pairs.append(("a family's mailbox", a, b))
    return pairs


def one_person() -> list[Pair]:
    """Pairs of one person: not merging them leaves a duplicate (or work for a person)."""
    pairs: list[Pair] = []
    base = {"last_names": "Zubizarreta", "company": "Muebles Ortzi", "city": "Azpeitia"}
    for one, other in [
        ("Chuy", "Jesús"),
        ("Lupita", "Guadalupe"),
        ("Iñaki", "Ignacio"),
        ("Xavi", "Javier"),
        ("Ma. Guadalupe", "María Guadalupe"),
        ("Fco. Javier", "Francisco Javier"),
        ("Pepe", "José"),
        ("Teresa", "María Teresa"),
        ("M. José", "María José"),
        ("José", "José Luis"),
        ("Jose", "José"),
    ]:
        pairs.append(("name forms", _rec(first_name=one, **base), _rec(first_name=other, **base)))
    for extra in (
        {"company": "Ortzi S.L."},
        {"date_of_birth": "1984-07-06"},
        {"address": "Calle Mayor 3"},
        {"postcode": "48011"},
    ):
        person = {"first_name": "Itziar", "city": "Bilbao", **extra}
        a = _rec(email="itziar@ortzi.eus", last_names="Zubizarreta Olano", **person)
        b = _rec(email="izo@gmail.com", last_names="Zubizarreta", **person)
        pairs.append(("names and a corroborating field", a, b))
    a = _rec(email="rperez@gmail.com", first_name="Roberto", last_names="Pérez Gil")
    pairs.append(
        ("one mailbox, a nickname not listed", a, _rec(**{**a.__dict__, "first_name": "Beto"}))
    )
    return pairs


def _tally(pairs: list[Pair]) -> dict[str, Counter[Verdict]]:
    out: dict[str, Counter[Verdict]] = {}
    for kind, a, b in pairs:
        out.setdefault(kind, Counter())[compare(a, b).verdict] += 1
    return out


def main() -> None:
    for title, pairs in (("two people", two_people()), ("one person", one_person())):
        tally = _tally(pairs)
        total: Counter[Verdict] = Counter()
        print(f"\n{title}: merged / held for review / kept apart")
        for kind, counts in tally.items():
            total.update(counts)
            merged = counts[Verdict.DUPLICATE]
            held = counts[Verdict.POSSIBLE_DUPLICATE]
            print(f"  {kind:36} {merged:2} / {held:2} / {counts[Verdict.DISTINCT]:2}")
        print(
            f"  {'all (' + str(len(pairs)) + ' pairs)':36} {total[Verdict.DUPLICATE]:2} / "
            f"{total[Verdict.POSSIBLE_DUPLICATE]:2} / {total[Verdict.DISTINCT]:2}"
        )


if __name__ == "__main__":
    main()
