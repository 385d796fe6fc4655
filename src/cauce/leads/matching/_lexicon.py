"""Word lists the comparisons lean on: name particles, nicknames, common names, legal forms.

Kept small and explicit on purpose: each entry changes a score, so each must be
defensible. Everything here is already folded (lowercase ASCII, accents stripped).
"""

from __future__ import annotations

import re
from typing import Final

# Dropped from surnames before comparing: "García de la Fuente" ~ "Garcia Fuente".
# They carry no identity and their presence varies with who typed the name.
NAME_PARTICLES: Final = frozenset(
    {"de", "del", "la", "las", "los", "y", "i", "e", "da", "das", "do", "dos", "di", "du"}
    | {"van", "von", "der", "den"}
)

# Spanish hypocoristics to the name they stand for. Only unambiguous ones: "Beto" could be
# Alberto or Roberto, so it is left out. Catalan, Galician and Basque forms map to the
# Castilian one, because the same person often appears under both.
NICKNAMES: Final[dict[str, str]] = {
    "pepe": "jose",
    "pepito": "jose",
    "chema": "jose maria",
    "josema": "jose maria",
    "paco": "francisco",
    "pako": "francisco",
    "fran": "francisco",
    "curro": "francisco",
    "pancho": "francisco",
    "quico": "francisco",
    "manolo": "manuel",
    "lola": "dolores",
    "loli": "dolores",
    "concha": "concepcion",
    "conchi": "concepcion",
    "charo": "rosario",
    "nacho": "ignacio",
    "pili": "pilar",
    "quique": "enrique",
    "kike": "enrique",
    "javi": "javier",
    "rafa": "rafael",
    "toni": "antonio",
    "tono": "antonio",
    "lupe": "guadalupe",
    "maite": "maria teresa",
    "mayte": "maria teresa",
    "tere": "teresa",
    "chus": "jesus",
    "chelo": "consuelo",
    "merche": "mercedes",
    "lalo": "eduardo",
    "nando": "fernando",
    "juanjo": "juan jose",
    "juanma": "juan manuel",
    "josemi": "jose miguel",
    "isa": "isabel",
    "dani": "daniel",
    "alex": "alejandro",
    "edu": "eduardo",
    "nico": "nicolas",
    "santi": "santiago",
    "sebas": "sebastian",
    "memo": "guillermo",
    "chucho": "jesus",
    "nati": "natalia",
    "vero": "veronica",
    "marisa": "maria luisa",
    "marisol": "maria soledad",
    "maribel": "maria isabel",
    "mariajo": "maria jose",
    "jordi": "jorge",
    "josep": "jose",
    "joan": "juan",
    "xavier": "javier",
    "xabier": "javier",
    "xose": "jose",
    "xoan": "juan",
    "xavi": "javier",
    "pau": "pablo",
    "txema": "jose maria",
    "inaki": "ignacio",
    "mikel": "miguel",
    # Latin American forms.
    "chuy": "jesus",
    "lupita": "guadalupe",
    "lucho": "luis",
    "pacho": "francisco",
    "poncho": "alfonso",
    "goyo": "gregorio",
    "checo": "sergio",
    "moncho": "ramon",
    "chente": "vicente",
    "lencho": "lorenzo",
    "chayo": "rosario",
    "chabela": "isabel",
    "meche": "mercedes",
    "pepa": "josefa",
    "pepita": "josefa",
    "paca": "francisca",
    "paquita": "francisca",
    # Abbreviations forms are typed with ("Ma. Guadalupe", "Fco. Javier").
    "ma": "maria",
    "fco": "francisco",
    "fca": "francisca",
    "gmo": "guillermo",
}

# The most frequent surnames and given names in Spain (INE) and across Latin America
# (Mexico, Colombia, Peru and Bolivia, Argentina, Chile, Brazil). Agreement on one of
# them is weaker evidence than agreement on a rare one, so its weight is discounted.
COMMON_SURNAMES: Final = frozenset(
    {
        "garcia", "rodriguez", "gonzalez", "fernandez", "lopez", "martinez", "sanchez",
        "perez", "gomez", "martin", "jimenez", "hernandez", "ruiz", "diaz", "moreno",
        "munoz", "alvarez", "romero", "gutierrez", "alonso", "navarro", "torres",
        "dominguez", "ramos", "vazquez", "ramirez", "gil", "serrano", "morales", "molina",
        "blanco", "suarez", "castro", "ortega", "delgado", "ortiz", "marin", "rubio",
        "nunez", "medina", "sanz", "castillo", "iglesias", "cortes", "garrido", "santos",
        "guerrero", "lozano", "cano", "cruz", "mendez", "flores", "herrera", "rojas",
        "silva", "reyes", "vargas", "smith", "jones", "brown", "williams",
        # Latin America (beyond those above).
        "aguilar", "mendoza", "chavez", "rivera", "soto", "contreras", "sepulveda",
        "quispe", "mamani", "condori", "huaman", "choque", "mejia", "restrepo", "ospina",
        "sosa", "acosta", "benitez", "rios", "espinoza", "valencia", "salazar", "guzman",
        "soliz", "vasquez", "rincon", "cardenas", "bautista", "velasquez", "figueroa",
        "oliveira", "souza", "pereira", "lima", "carvalho", "ferreira", "rodrigues",
        "almeida", "costa", "gomes", "ribeiro", "martins", "araujo", "barbosa",
    }
)  # fmt: skip
COMMON_GIVEN_NAMES: Final = frozenset(
    {
        "jose", "maria", "antonio", "manuel", "juan", "francisco", "david", "carmen",
        "ana", "javier", "daniel", "carlos", "jesus", "alejandro", "miguel", "rafael",
        "pedro", "pablo", "angel", "luis", "laura", "isabel", "dolores", "pilar", "lucia",
        "josefa", "cristina", "marta", "elena", "sara", "paula", "raquel", "rosa",
        "fernando", "sergio", "jorge", "alberto", "andrea", "teresa", "guadalupe",
        "martin", "alvaro", "hugo", "mateo", "lucas", "diego", "adrian", "mario",
        "ricardo", "roberto", "eduardo", "gabriel", "andres", "felipe", "santiago",
        "sofia", "valentina", "camila", "martina", "julia", "alejandra", "gabriela",
        "mariana", "daniela", "fernanda", "patricia", "veronica", "claudia", "sandra",
        "monica", "silvia", "adriana", "paola", "joao",
    }
)  # fmt: skip

# Legal-form words stripped from the end of company names ("Acme S.L." ~ "ACME").
LEGAL_FORMS: Final = frozenset(
    {
        "sl", "slu", "sll", "slne", "sa", "sau", "sal", "scoop", "coop", "sc", "cb", "srl",
        "sas", "sapi", "sab", "cv", "ltda", "spa", "eirl", "sac", "saa", "sociedad",
        "limitada", "anonima", "cooperativa", "ltd", "limited", "inc", "llc", "llp",
        "corp", "corporation", "co", "company", "cia", "gmbh", "ag", "bv", "nv", "plc",
        "de", "y", "and",
    }
)  # fmt: skip

# Mailbox names shared by a team: the same local part at two domains says nothing.
ROLE_MAILBOXES: Final = frozenset(
    {
        "info", "contacto", "contact", "ventas", "sales", "admin", "administracion",
        "hola", "hello", "office", "oficina", "marketing", "comercial", "rrhh", "hr",
        "support", "soporte", "noreply", "facturacion", "billing", "recepcion",
        "gerencia", "direccion", "compras", "pedidos", "atencion", "clientes",
        "contabilidad", "cotizaciones", "presupuestos", "reservas", "reservaciones",
        "secretaria", "recursoshumanos", "atencionalcliente", "servicioalcliente",
        "gerenciageneral", "direcciongeneral", "consultas", "pagos", "cobranza", "cobros",
        "tesoreria", "logistica", "finanzas", "prensa", "calidad", "sistemas", "correo",
        "webmaster", "postmaster", "contato", "vendas", "administracao", "financeiro",
        "atendimento", "export", "import", "team", "equipo", "general",
    }
)  # fmt: skip

# Marks of a generation after a name: "Ricardo Pérez Jr.", "Juan Gómez (h)" (Argentina's
# "hijo"), "Luis Ortega II". Folded to one form each.
GENERATIONS: Final[dict[str, str]] = {
    "jr": "jr", "junior": "jr", "hijo": "jr", "filho": "jr",
    "sr": "sr", "senior": "sr", "padre": "sr",
    "ii": "ii", "iii": "iii", "iv": "iv",
}  # fmt: skip

# Mail providers that ignore "+tag" sub-addresses; Gmail also ignores dots.
PLUS_TAG_DOMAINS: Final = frozenset(
    {
        "gmail.com", "googlemail.com", "outlook.com", "outlook.es", "hotmail.com",
        "hotmail.es", "live.com", "msn.com", "icloud.com", "me.com", "proton.me",
        "protonmail.com", "fastmail.com",
    }
)  # fmt: skip
# Outlook.com's brands under a country's domain (`hotmail.com.mx`, `outlook.com.ar`,
# `live.cl`): one service, and it ignores "+tag" on each of them as on hotmail.com.
PLUS_TAG_ABROAD: Final = re.compile(
    r"(?:hotmail|outlook|live|msn)\.(?:com?\.)?"
    r"(?:es|pt|ad|mx|gt|hn|sv|ni|cr|pa|cu|do|pr|co|ve|ec|pe|bo|cl|ar|uy|py|br"
    r"|us|ca|uk|fr|it|de|be|nl|ch)"
)
DOTLESS_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})
