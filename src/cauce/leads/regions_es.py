"""Spain's places as routing reads a lead's `region`: the 17 autonomous communities, Ceuta
and Melilla, their 50 provinces (and the islands of the two archipelagos), each by the
names people type: Spanish, co-official (`Euskadi`, `Catalunya`, `A Coruña`, `Lleida`),
older Spanish forms (`La Coruña`, `Lérida`, `Vizcaya`), the INE's official spellings
(`Coruña, A`, `Alicante/Alacant`, `Balears, Illes`), English, and ISO 3166-2 codes (`NA`,
`ES-NA`).

A CSV's `Provincia` column fills `region`, so a rule naming a community must take the
leads naming its provinces: a rule for `Andalucía` takes `Sevilla`; one for `Sevilla`
takes Sevilla only. A community of one province (Madrid, Asturias, Murcia...) is that
province under either name. Islands are below their province: `Tenerife` is in Santa
Cruz de Tenerife, a rule for `Tenerife` does not take `La Palma`.

Some names are Latin America's too (Guadalajara, Jalisco; Córdoba, Argentina; Valencia,
Venezuela; Cuenca, Ecuador...). Routing reads the table for a lead whose country is
Spain; for a lead without a country only the names that are Spain's alone (`SHARED` are
not).

Scoring's `equals`/`in` on `region` read it the same way (`SPAIN.rule_places`,
`SPAIN.takes`), so a scoring rule for `Andalucía` scores the leads a routing rule for
`Andalucía` (without `countries`) takes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

_NOT_LETTERS = re.compile(r"[\W_]+")


@lru_cache(maxsize=4096)
def place_key(text: str) -> str:
    """`text` as routing compares it: case, accents and punctuation aside, in any
    script (`Andalucía` and `ANDALUCIA`, `Castilla-La Mancha` and `Castilla La Mancha`
    agree; `Москва` keeps its letters). Text of punctuation only stays itself."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(word for word in _NOT_LETTERS.split(plain) if word) or text.casefold()


@dataclass(frozen=True, slots=True)
class Province:
    """A province (or autonomous city) by its ISO 3166-2 code and names, with its islands."""

    code: str
    names: tuple[str, ...]
    islands: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Community:
    """An autonomous community (or city) by its ISO 3166-2 code and names."""

    code: str
    names: tuple[str, ...]
    provinces: tuple[Province, ...]


def _p(code: str, *names: str, islands: tuple[tuple[str, ...], ...] = ()) -> Province:
    # The code is a name too: `ES-NA`, and `NA` when it has two letters (a lone `M` or `B`
    # says too little to be read as a place).
    short = code.removeprefix("ES-")
    return Province(code, (*names, code, *((short,) if len(short) == 2 else ())), islands)


def _c(code: str, names: tuple[str, ...], *provinces: Province) -> Community:
    return Community(code, (*names, code, code.removeprefix("ES-")), provinces)


COMMUNITIES: tuple[Community, ...] = (
    _c(
        "ES-AN",
        ("Andalucía", "Andalusia", "Comunidad Autónoma de Andalucía"),
        _p("ES-AL", "Almería"),
        _p("ES-CA", "Cádiz"),
        _p("ES-CO", "Córdoba"),
        _p("ES-GR", "Granada"),
        _p("ES-H", "Huelva"),
        _p("ES-J", "Jaén"),
        _p("ES-MA", "Málaga"),
        _p("ES-SE", "Sevilla", "Seville"),
    ),
    _c(
        "ES-AR",
        ("Aragón", "Aragó", "Comunidad Autónoma de Aragón"),
        _p("ES-HU", "Huesca", "Uesca", "Osca"),
        _p("ES-TE", "Teruel"),
        _p("ES-Z", "Zaragoza", "Saragossa"),
    ),
    _c(
        "ES-AS",
        ("Principado de Asturias", "Asturias, Principado de", "Principáu d'Asturies"),
        _p("ES-O", "Asturias", "Asturies"),
    ),
    _c(
        "ES-IB",
        ("Illes Balears", "Islas Baleares", "Balears, Illes", "Baleares, Islas"),
        _p(
            "ES-PM",
            "Baleares",
            "Balears",
            "Balearic Islands",
            islands=(
                ("Mallorca", "Majorca"),
                ("Menorca", "Minorca"),
                ("Eivissa", "Ibiza"),
                ("Formentera",),
            ),
        ),
    ),
    _c(
        "ES-CN",
        ("Canarias", "Islas Canarias", "Canary Islands", "Comunidad Autónoma de Canarias"),
        _p(
            "ES-GC",
            "Las Palmas",
            "Palmas, Las",
            "Las Palmas de Gran Canaria",
            islands=(("Gran Canaria",), ("Lanzarote",), ("Fuerteventura",), ("La Graciosa",)),
        ),
        _p(
            "ES-TF",
            "Santa Cruz de Tenerife",
            "S/C de Tenerife",
            "Sta. Cruz de Tenerife",
            islands=(("Tenerife",), ("La Palma",), ("La Gomera",), ("El Hierro",)),
        ),
    ),
    _c("ES-CB", ("Comunidad Autónoma de Cantabria",), _p("ES-S", "Cantabria")),
    _c(
        "ES-CL",
        (
            "Castilla y León",
            "Castilla-León",
            "Castilla e León",
            "Castella i Lleó",
            "Castile and León",
            "Comunidad de Castilla y León",
        ),
        _p("ES-AV", "Ávila"),
        _p("ES-BU", "Burgos"),
        _p("ES-LE", "León"),
        _p("ES-P", "Palencia"),
        _p("ES-SA", "Salamanca"),
        _p("ES-SG", "Segovia"),
        _p("ES-SO", "Soria"),
        _p("ES-VA", "Valladolid"),
        _p("ES-ZA", "Zamora"),
    ),
    _c(
        "ES-CM",
        (
            "Castilla-La Mancha",
            "Castilla - La Mancha",
            "Castella-la Manxa",
            "Castile-La Mancha",
            "Comunidad de Castilla-La Mancha",
        ),
        _p("ES-AB", "Albacete"),
        _p("ES-CR", "Ciudad Real"),
        _p("ES-CU", "Cuenca"),
        _p("ES-GU", "Guadalajara"),
        _p("ES-TO", "Toledo"),
    ),
    _c(
        "ES-CT",
        ("Cataluña", "Catalunya", "Catalonia"),
        _p("ES-B", "Barcelona"),
        _p("ES-GI", "Girona", "Gerona"),
        _p("ES-L", "Lleida", "Lérida"),
        _p("ES-T", "Tarragona"),
    ),
    _c(
        "ES-VC",
        (
            "Comunitat Valenciana",
            "Comunidad Valenciana",
            "País Valencià",
            "País Valenciano",
            "Valencian Community",
        ),
        _p("ES-A", "Alicante", "Alacant", "Alicante/Alacant", "Alacant/Alicante"),
        _p(
            "ES-CS",
            "Castellón",
            "Castelló",
            "Castellón/Castelló",
            "Castelló/Castellón",
            "Castellón de la Plana",
            "Castelló de la Plana",
        ),
        _p("ES-V", "Valencia", "València", "Valencia/València", "València/Valencia"),
    ),
    _c(
        "ES-EX",
        ("Extremadura", "Comunidad Autónoma de Extremadura"),
        _p("ES-BA", "Badajoz"),
        _p("ES-CC", "Cáceres"),
    ),
    _c(
        "ES-GA",
        ("Galicia", "Galiza", "Comunidad Autónoma de Galicia"),
        _p("ES-C", "A Coruña", "La Coruña", "Coruña", "Coruña, A", "Corunna"),
        _p("ES-LU", "Lugo"),
        _p("ES-OR", "Ourense", "Orense"),
        _p("ES-PO", "Pontevedra"),
    ),
    _c(
        "ES-MD",
        (
            "Comunidad de Madrid",
            "Madrid, Comunidad de",
            "Comunidad Autónoma de Madrid",
            "Community of Madrid",
        ),
        _p("ES-M", "Madrid"),
    ),
    _c(
        "ES-MC",
        ("Región de Murcia", "Murcia, Región de", "Region of Murcia"),
        _p("ES-MU", "Murcia"),
    ),
    _c(
        "ES-NC",
        (
            "Comunidad Foral de Navarra",
            "Navarra, Comunidad Foral de",
            "Nafarroako Foru Komunitatea",
            "Navarre",
        ),
        _p("ES-NA", "Navarra", "Nafarroa"),
    ),
    _c(
        "ES-PV",
        (
            "País Vasco",
            "Euskadi",
            "Comunidad Autónoma Vasca",
            "Comunidad Autónoma del País Vasco",
            "Euskal Autonomia Erkidegoa",
            "Basque Country",
            "País Basc",
        ),
        _p("ES-VI", "Araba", "Álava", "Araba/Álava", "Álava/Araba"),
        _p("ES-BI", "Bizkaia", "Vizcaya", "Biscay"),
        _p("ES-SS", "Gipuzkoa", "Guipúzcoa", "Gipuzkoa/Guipúzcoa", "Guipúzcoa/Gipuzkoa"),
    ),
    _c(
        "ES-RI",
        ("Comunidad Autónoma de La Rioja",),
        _p("ES-LO", "La Rioja", "Rioja, La", "Rioja"),
    ),
    _c("ES-CE", ("Ciudad Autónoma de Ceuta",), _p("ES-CE", "Ceuta")),
    _c("ES-ML", ("Ciudad Autónoma de Melilla",), _p("ES-ML", "Melilla")),
)

# Names Latin America shares (a Mexican state's capital, an Argentine province...): a lead
# without a country that names one is not read as Spain's. Two-letter codes likewise
# (`CA` California, `GA` Georgia, `CO` Colorado).
SHARED: tuple[str, ...] = (
    "Valencia",
    "Córdoba",
    "Guadalajara",
    "La Rioja",
    "Rioja",
    "Granada",
    "León",
    # Names whose namesake is as large: Cuenca, Ecuador's third city (larger than Spain's
    # province); Salamanca and Zamora, Mexican cities the size of Spain's provinces. Not
    # Barcelona (Venezuela), Valladolid (Yucatán), Jaén (Peru) nor Toledo (Ohio): a lead
    # naming one without a country is far likelier Spain's.
    "Cuenca",
    "Salamanca",
    "Zamora",
)


@dataclass(frozen=True, slots=True)
class SpanishPlaces:
    """The table by folded name: what each names, what each covers, which are shared."""

    # Folded name -> the place it names (a province, an island, or a community of several).
    places: dict[str, str]
    # Place -> the places a rule naming it takes (itself and everything inside it).
    covers: dict[str, frozenset[str]]
    # Folded names a lead without a country does not name a Spanish place with.
    shared: frozenset[str]
    # How the names are folded (`place_key`); a lead's country is folded so too.
    fold: Callable[[str], str]

    def place_of(self, key: str) -> str | None:
        """The place a folded name names, or None."""
        return self.places.get(key)

    def covered_by(self, key: str) -> frozenset[str]:
        """The places a rule naming this folded name takes (empty: not a Spanish place)."""
        place = self.places.get(key)
        return self.covers[place] if place is not None else frozenset()

    def rule_places(self, keys: Iterable[str], *, spain_only: bool) -> frozenset[str]:
        """The places a rule naming these folded regions takes (their provinces and islands
        too): what `takes` checks a lead against, computed once per rule. A bare
        two-letter code is Spain's (`CA`, Cádiz; `GA`, Galicia) only in a rule for Spain
        alone (`spain_only`): elsewhere it is likelier a state's (California, Georgia),
        and a rule for those took Spanish leads from Cádiz and Galicia."""
        named = (key for key in keys if spain_only or not _bare_code(key))
        return frozenset().union(*(self.covered_by(key) for key in named))

    def takes(self, places: frozenset[str], key: str, country: str | None) -> bool:
        """Whether a lead whose folded region is `key`, of `country`, is in one of a rule's
        `places` (`rule_places`). The table is Spain's: a Mexican lead from Guadalajara is
        not in Castilla-La Mancha. Without a country, only the names no Latin American
        place shares (not `SHARED`, nor a two-letter code) are read as Spain's."""
        place = self.places.get(key) if places else None
        if place is None or place not in places:
            return False
        return key not in self.shared if country is None else self.fold(country) == "es"


def _bare_code(key: str) -> bool:
    return len(key) == 2 and key.isascii() and key.isalpha()


def spanish_places(fold: Callable[[str], str]) -> SpanishPlaces:
    """The table indexed by `fold` (routing's `place_key`). A folded name naming two
    places is a mistake in the table: raised, so no lead is routed by a guess."""
    places: dict[str, str] = {}
    covers: dict[str, frozenset[str]] = {}

    def name(names: tuple[str, ...], place: str) -> None:
        for text in names:
            key = fold(text)
            if places.setdefault(key, place) != place:
                raise ValueError(f"{text!r} names both {places[key]} and {place}")

    for community in COMMUNITIES:
        inside: set[str] = set()
        for province in community.provinces:
            islands = {f"{province.code}:{isle[0]}": isle for isle in province.islands}
            for island, names in islands.items():
                name(names, island)
                covers[island] = frozenset({island})
            covers[province.code] = frozenset({province.code, *islands})
            inside |= covers[province.code]
            name(province.names, province.code)
        if len(community.provinces) == 1:
            # One province: the community is that province under other names.
            name(community.names, community.provinces[0].code)
        else:
            covers[community.code] = frozenset({community.code, *inside})
            name(community.names, community.code)
    shared = {fold(text) for text in SHARED} | {key for key in places if len(key) == 2}
    return SpanishPlaces(places, covers, frozenset(shared), fold)


# The table as routing and scoring read it: by `place_key`.
SPAIN = spanish_places(place_key)
