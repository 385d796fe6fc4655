"""Values that stand for "none": what people type into a required email or phone field
they cannot or will not fill, and what spreadsheets and other systems export for an
empty cell (`n/a`, `-`, `sin correo`, `no tiene`, `#N/A`, `null`, `0`), and the stand-in
addresses typed to get past a form (`test@test.com`, `xxx@xxx.com`, `notiene@gmail.com`,
anything at `example.com`, `tucorreo@ejemplo.com`).

The schemas read such a value as a field not sent, so a lead with a real phone beside
`email: "sin correo"` is kept on its phone instead of refused whole (as a blank value
always was). Pure functions, compared without case, accents or punctuation.
"""

from __future__ import annotations

import re
import unicodedata

# Words that say there is no value (`no`, `sin`, `n/a`: `n` and `a`, `null`, `x`), and
# the words that go with them (`no tiene`, `sin correo`, `no especificado`, `sin país`):
# Spanish, Portuguese and English, as forms, CRMs and spreadsheets write them.
_NONE_WORDS = frozenset(
    """
    no n na nao sin ninguno ninguna ningun nada desconocido desconocida null none nil
    nan undefined unknown not x xx xxx sincorreo sinemail noemail nomail notiene sem
    nenhum nenhuma ns nc
    """.split()  # noqa: SIM905
)
_WITH_NONE_WORDS = frozenset(
    """
    a d c tiene tengo posee tem possui aplica se disponible informado informada informa
    registra registrado registrada proporciona proporcionado proporcionada available
    applicable provided specified given especificado especificada especifica especificar
    indica indicado indicada consta informacion definir definido definida hay sabe dato
    datos correo email mail e telefono tel telf fono celular cel movil whatsapp numero
    pais empresa compania company cargo puesto ciudad city region provincia estado
    country idioma
    """.split()  # noqa: SIM905
)
# In an email or phone box every word of these says none alone too (`Email`, `Tel`,
# `Celular`), and so do the abbreviations `S/C` (sin correo), `S/N`, `S/D`, `ND`.
_TEXT_WORDS = _NONE_WORDS | _WITH_NONE_WORDS
_CONTACT_WORDS = (
    _NONE_WORDS | _WITH_NONE_WORDS | frozenset(["s", "sc", "sn", "sd", "se", "nd", "ne", "nt"])
)
# Alone in a text field (a company, a city) a none word is most often a name: `Nil`,
# `Nada`, `None` (a town near Turin), `Nan` (a Thai city), `X`. These few are not.
_TEXT_ALONE = frozenset({"na", "nd", "null", "undefined", "desconocido", "desconocida"})
_WORDS = re.compile(r"[^\W_]+")  # letters and digits of any script: Σωκράτης is a word
_MAX_PLACEHOLDER = 40  # longer text is never only these words


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def marks_only(text: str) -> bool:
    """Punctuation (`-`, `?`, `#`, `...`) and spaces, and at least one punctuation mark:
    not symbols or emoji (`★`, a logo's `🍎`)."""
    return any(unicodedata.category(c)[0] == "P" for c in text) and all(
        unicodedata.category(c)[0] == "P" or c.isspace() for c in text
    )


def says_none(text: str, *, contact: bool = False) -> bool:
    """Whether a value says "none": punctuation alone or zeros (`-`, `?`, `0`), or
    `_NONE_WORDS` and the words that go with them, with one none word at least (`N/A`,
    `No tiene`, `#N/A`, `Sin país`, `Empresa no especificada`). Alone, a none word says
    so only in `_TEXT_ALONE` (`NA`, `null`; `Nil` may be a company). `contact`: for an
    email or phone box, where `_CONTACT_WORDS` say none in any number (`Email`, `S/C`)."""
    if len(text) > _MAX_PLACEHOLDER:
        return False
    known = _CONTACT_WORDS if contact else _TEXT_WORDS
    lowered = text.lower()
    first = _WORDS.search(lowered)
    word = first.group() if first else ""
    if word.isascii() and word.strip("0") and word not in known:
        return False  # most values: a word of their own first (`Construcciones`)
    words: list[str] = []
    zeros = 0
    for found in _WORDS.finditer(lowered if text.isascii() else _fold(text)):
        word = found.group()
        if not word.strip("0"):
            zeros += 1
        elif word not in known:
            return False
        words.append(word)
    if not words:
        return marks_only(text)
    if zeros:
        return zeros == len(words)  # zeros alone say none; beside words, no
    if contact:
        return True
    if len(words) == 1:
        return words[0] in _TEXT_ALONE
    return any(word in _NONE_WORDS for word in words)


# Mailbox names that are no one's, at a domain of the same kind or at webmail
# (`test@test.com`, `correo@correo.es`, `notiene@gmail.com`), compared without `.`, `-`
# and `_` (`no.tiene@`, `sin_correo@`).
_NONE_MAILBOXES = frozenset(
    """
    test prueba pruebas correo email mail asdf qwerty nomail noemail notiene notengo
    sincorreo sinemail ninguno ninguna none nada fake falso falsa notengocorreo
    nousa noaplica na no sin nombre usuario tucorreo tuemail dominio ejemplo
    """.split()  # noqa: SIM905
)
# RFC 2606's names for documentation.
_EXAMPLE_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
_SEPARATORS = re.compile(r"[._\-]+")
# None-words that are someone's name too (`nada@hotmail.com` is Nada's; `sin@` a
# surname): at webmail they are kept, and only a none-word domain makes them stand-ins.
_NAMES_TOO = frozenset({"nada", "sin", "na", "no", "nombre", "usuario", "user"})
_LONGEST_NONE_MAILBOX = 2 * max(map(len, _NONE_MAILBOXES))  # room for separators
_ONE_CHARACTER = re.compile(r"^(.)\1*$")


def is_stand_in_address(address: str, *, webmail: bool) -> bool:
    """Whether a normalised address (lower case) is a stand-in, no one's mailbox: any at
    an example domain, one character repeated on both sides of the @ (`a@a.com`,
    `xxx@xxx.com`), or a none-word mailbox (`notiene`, `test`, `correo`) at webmail or at
    a domain named by such a word too (`test@test.com`). `webmail`: whether the domain is
    a webmail provider's (`test@empresa.es` may be a company's test inbox, and is kept)."""
    local, _, domain = address.rpartition("@")
    if domain in _EXAMPLE_DOMAINS:
        return True
    name = domain.partition(".")[0]
    if not local or not name:
        return False
    if local[0] == name[0] and _ONE_CHARACTER.match(local) and _ONE_CHARACTER.match(name):
        return True
    if len(local) > _LONGEST_NONE_MAILBOX:
        return False  # no none-word, even with separators in it
    mailbox = _SEPARATORS.sub("", local)
    if mailbox not in _NONE_MAILBOXES:
        return False
    return _SEPARATORS.sub("", name) in _NONE_MAILBOXES or (webmail and mailbox not in _NAMES_TOO)


_ZEROS_AND_SEPARATORS = "0 .-/()+"


def is_none_phone(value: str) -> bool:
    """Whether a phone field's value stands for no number: only zeros and separators
    (`0`, `000 000 000`, `-`), or a text without digits that says "none" (`sin teléfono`,
    `N/A`)."""
    text = value.strip()
    rest = text.strip(_ZEROS_AND_SEPARATORS)
    if not rest:
        return True
    if any(c.isdigit() for c in rest):
        return False
    return says_none(text, contact=True)
