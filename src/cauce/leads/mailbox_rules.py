"""Addresses that pass email syntax but that no one can have: a mailbox name with accents
or `ñ` at a webmail provider that gives only ASCII names (`josé@gmail.com`), and a domain
that mixes Latin letters with Cyrillic or Greek lookalikes (`empresa.com` with the
Cyrillic letter that looks like `e`), the shape of a spoofed domain or of a keyboard
left in another layout.

Each function gives the reason for people, with the address most likely meant when one
is near, or None. Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from email_validator.rfc_constants import DOT_ATOM_TEXT

__all__ = ["ascii_only_mailbox", "mixed_script_domain"]

# Webmail providers whose sign-up takes only ASCII letters, digits and a few marks for a
# mailbox name (Gmail: letters, digits and dots; Outlook.com, Yahoo, iCloud, AOL alike),
# under any of their country domains: `josé@gmail.com` is no one's address, however
# valid its syntax (RFC 6531 allows it, the provider never gave it).
_ASCII_ONLY_PROVIDERS = frozenset(
    {
        "gmail", "googlemail", "hotmail", "outlook", "live", "msn", "yahoo", "ymail",
        "rocketmail", "icloud", "me", "mac", "aol",
    }
)  # fmt: skip


def ascii_only_mailbox(local_part: str, domain: str, *, is_free_mail: bool) -> str | None:
    """Why `local_part@domain` cannot exist when the local part has letters outside ASCII
    and the domain is a provider that gives only ASCII names; else None."""
    if local_part.isascii() or not is_free_mail:
        return None
    if domain.split(".", 1)[0] not in _ASCII_ONLY_PROVIDERS:
        return None
    reason = f"{domain} gives no mailbox names with accents, ñ or other letters outside a-z"
    meant = _ascii_spelling(local_part)
    return f"{reason} (did you mean {meant}@{domain}?)" if meant else reason


def _ascii_spelling(text: str) -> str | None:
    """The text with its accents taken off (`josé.muñoz` -> `jose.munoz`, `mª` -> `ma`),
    when that leaves a plain mailbox name; else None."""
    bare = "".join(
        char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char)
    )
    return bare.lower() if bare.isascii() and DOT_ATOM_TEXT.fullmatch(bare) else None


# The letters of Cyrillic and Greek that look like Latin ones, lower case (a domain is
# compared in lower case): what a lookalike domain is made of.
_LOOKALIKES = str.maketrans(
    # Cyrillic a e o er es u ha, Ukrainian i, je, dze, Komi de, shha, palochka, qa, we
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456"
    "\u0458\u0455\u0501\u04bb\u04cf\u051b\u051d"
    # Greek alpha omicron nu iota kappa rho tau upsilon chi epsilon
    "\u03b1\u03bf\u03bd\u03b9\u03ba\u03c1\u03c4\u03c5\u03c7\u03b5",
    "aeopcyxijsdhlqw" "aovikptuxe",
)  # fmt: skip
_LOOKALIKE_SCRIPTS = ("CYRILLIC", "GREEK")


@lru_cache(maxsize=1024)
def mixed_script_domain(domain: str) -> str | None:
    """Why a domain (its Unicode form) is refused when one of its labels mixes Latin
    letters with Cyrillic or Greek ones (no registry gives such a name; a lookalike of a
    Latin domain is made so); else None. A label wholly in one script (`пример.рф`,
    `españa.es`) is kept."""
    if domain.isascii():
        return None
    for label in domain.lower().split("."):
        if label.isascii():
            continue
        scripts = {_script(char) for char in label if not char.isascii() and char.isalpha()}
        latin = "LATIN" in scripts or any("a" <= char <= "z" for char in label)
        foreign = sorted(scripts.intersection(_LOOKALIKE_SCRIPTS))
        if not (latin and foreign):
            continue
        script = foreign[0].capitalize()
        reason = (
            f"its domain mixes Latin and {script} letters in '{label}', "
            "as a lookalike of another domain does"
        )
        meant = domain.lower().translate(_LOOKALIKES)
        if any(_script(char) in _LOOKALIKE_SCRIPTS for char in meant if not char.isascii()):
            return reason  # a letter with no Latin twin
        return f"{reason} (did you mean {meant}?)"
    return None


def _script(char: str) -> str:
    """The first word of a letter's Unicode name: LATIN, CYRILLIC, GREEK, ..."""
    return unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
