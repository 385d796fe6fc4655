"""The record the matcher compares, and the comparison-only forms derived from it.

The leads service fills a `MatchRecord` from a lead it has already validated and
normalised (email lowercased by email-validator, phone in E.164). The folding here
(accents stripped, Gmail dots removed, legal forms dropped) is for comparing only and is
never stored back into the lead.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cauce.leads.matching._lexicon import (
    COMMON_SURNAMES,
    DOTLESS_DOMAINS,
    GENERATIONS,
    LEGAL_FORMS,
    NAME_PARTICLES,
    NICKNAMES,
    PLUS_TAG_ABROAD,
    PLUS_TAG_DOMAINS,
    ROLE_MAILBOXES,
)


@dataclass(frozen=True)
class MatchRecord:
    """The fields of a lead that identify a person, as the leads service normalised them.

    Every field is optional: a field missing on either side is neither evidence for nor
    against a match. `date_of_birth` is an ISO date string ("1984-07-06"); only its digits
    are compared, so a typo in one digit still counts as near agreement. `address` is one
    free-text street line. `tax_id` (NIF/NIE/CIF, RFC, CUIT...) is an exact key when both
    sides have it. `other_emails` and `other_phones` are the lead's other contacts (see
    `plan.other_contacts`): each agrees with the other side's email or phone as its own
    would.
    """

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_names: str | None = None
    company: str | None = None
    city: str | None = None
    postcode: str | None = None
    region: str | None = None
    country: str | None = None
    date_of_birth: str | None = None
    address: str | None = None
    tax_id: str | None = None
    other_emails: tuple[str, ...] = ()
    other_phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Features:
    """Comparison forms of a `MatchRecord`, computed once per record (see `prepare`)."""

    email_key: str | None
    email_local: str | None
    phone: str | None
    tax_id: str | None
    first_tokens: tuple[str, ...]
    first_joined: str
    first_canonical: tuple[str, ...]
    last_tokens: tuple[str, ...]
    first_initial: str  # "" without a given name
    last_initials: frozenset[str]
    # Whether every word is a common surname, for the tokens and the nickname-free form
    # of the given name too (names may be typed into each other's boxes).
    last_common: bool
    first_common: bool
    canonical_common: bool
    company: str | None
    city: str | None
    postcode: str | None
    region: str | None
    country: str | None
    dob: str | None
    address: str | None
    address_numbers: frozenset[str]
    # What a screen's bound on the names reads of a candidate, and on its places: many
    # candidates of one record share them (José, Madrid), so a screen computes each once.
    # (Strings, whose hash Python keeps: a screen looks them up for every candidate.)
    name_key: str
    place_key: str
    # The keys of the other contacts (`MatchRecord.other_emails`, `other_phones`), the
    # record's own left out.
    other_email_keys: frozenset[str] = frozenset()
    other_phones: frozenset[str] = frozenset()
    # The email is a team's mailbox (info@, ventas@): shared by colleagues.
    email_role: bool = False
    # A generation mark after the surnames ("jr", "sr", "ii"...; "" without one).
    generation: str = ""


_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_DOTS = re.compile("[.,'`\u2019\u00b4]")


@functools.lru_cache(maxsize=1 << 14)
def fold(text: str | None) -> str:
    """Lowercase ASCII words of `text`: accents stripped, punctuation to single spaces.

    "José-María  Núñez" becomes "jose maria nunez". For comparison only. Cached: names,
    places and companies repeat from lead to lead.
    """
    if not text:
        return ""
    if text.isascii():  # the same result: NFKD and casefold leave ASCII as lower() does
        return _NON_ALNUM.sub(" ", text.lower()).strip()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.casefold()).strip()


def _optional(text: str | None) -> str | None:
    folded = fold(text)
    return folded or None


def email_key(email: str | None) -> str | None:
    """The identity of a mailbox: lowercase, with Gmail dots and provider +tags folded.

    "Jose.Garcia+news@GMAIL.com" and "josegarcia@googlemail.com" share a key. Only
    providers known to ignore sub-addresses have their "+tag" removed, because on other
    domains "+" may be a real part of the address.
    """
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().lower().rpartition("@")
    if not local or not domain:
        return None
    if domain == "googlemail.com":
        domain = "gmail.com"
    if "+" in local and (domain in PLUS_TAG_DOMAINS or PLUS_TAG_ABROAD.fullmatch(domain)):
        local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


def _email_local(mailbox: str | None, role: bool) -> str | None:
    """The personal part of a mailbox (`_mailbox_name`), when it is distinctive enough to
    be evidence."""
    if mailbox is None or len(mailbox) < 6 or role:
        return None
    return mailbox


def _mailbox_name(address: str) -> str:
    # The local part without a +tag, dots, dashes or underscores: `Info.Sevilla+x@` ->
    # `infosevilla`.
    return re.sub(r"[._\-]", "", address.rpartition("@")[0].lower().split("+", 1)[0])


# A team's mailbox named by a role word and a branch or a number: `info.madrid`,
# `ventas-mx`, `contacto_web`, `ventas1`, `ventas02` (not `info1985`: a person's).
_ROLE_AND_MORE = re.compile(r"([a-z]+)(?:[._\-].+|\d{1,2})")
# Webmail providers, where `correo.ana@`, `admin.jose@` are one person's.
_WEBMAIL: Final = frozenset(
    {"gmail", "googlemail", "hotmail", "outlook", "live", "msn", "yahoo", "ymail", "icloud"}
    | {"me", "aol", "proton", "protonmail", "gmx", "yandex", "zoho", "terra", "prodigy"}
)


@functools.lru_cache(maxsize=1 << 12)
def role_mailbox(email: str) -> bool:
    """Whether an address is a team's (`info@`, `ventas@`...), not one person's: its name
    is one of `ROLE_MAILBOXES`, or, at a company's domain, one of them followed by a
    branch after a dot, dash or underscore, or by one or two digits (`info.madrid@`,
    `ventas-mx@`, `contacto_web@`, `ventas1@`)."""
    if _mailbox_name(email) in ROLE_MAILBOXES:
        return True
    local, _, domain = email.lower().rpartition("@")
    if domain.split(".", 1)[0] in _WEBMAIL:
        return False
    found = _ROLE_AND_MORE.fullmatch(local.split("+", 1)[0])
    return found is not None and found.group(1) in ROLE_MAILBOXES


# The caches below also share what they return: a name, a company or a set of initials
# that many leads have is one object in memory, not one per lead (stored candidates are
# kept prepared by the hundred thousand: `known.KnownLeads`).
def name_tokens(text: str | None, *, drop_particles: bool) -> tuple[str, ...]:
    """Folded words of a name; surnames also lose particles ("de la", "del", "y")."""
    return _name_tokens(text, drop_particles)


@functools.lru_cache(maxsize=1 << 14)
def _name_tokens(text: str | None, drop_particles: bool) -> tuple[str, ...]:
    words = fold(text).split()
    if drop_particles:
        kept = [w for w in words if w not in NAME_PARTICLES]
        # A surname made only of particles ("De La") keeps them rather than vanish.
        words = kept or words
    return tuple(words)


# Argentina's "(h)", for "hijo": folded, the parentheses are gone and "h" reads as an
# initial, so it is read before folding.
_HIJO = re.compile(r"\(\s*h\s*\)\s*$", re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 14)
def _surnames_and_generation(text: str | None) -> tuple[tuple[str, ...], str]:
    """The surname words of `text` (`name_tokens`) without a generation mark at the end
    ("Pérez Gómez Jr.", "Gómez (h)", "Ortega II"), and that mark folded ("" without)."""
    if text and _HIJO.search(text):
        return _name_tokens(_HIJO.sub("", text), True), "jr"
    words = _name_tokens(text, True)
    if len(words) >= 2 and (mark := GENERATIONS.get(words[-1])):
        return words[:-1], mark
    return words, ""


@functools.lru_cache(maxsize=1 << 16)
def shared(text: str) -> str:
    """One object for equal strings that many records have (a name, a place): the first
    one seen, while it is among the most recently used. Bounded, unlike `sys.intern`
    (whose strings some CPython builds never free), so a string of an erased lead does
    not outstay the other caches here."""
    return text


def _canonical_given(tokens: tuple[str, ...]) -> tuple[str, ...]:
    if not any(token in NICKNAMES for token in tokens):
        return tokens
    out: list[str] = []
    for token in tokens:
        out.extend(NICKNAMES.get(token, token).split())
    return tuple(out)


@functools.lru_cache(maxsize=1 << 10)
def _initials_of(tokens: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t[0] for t in tokens)


@functools.lru_cache(maxsize=1 << 14)
def company_key(company: str | None) -> str | None:
    """A company name without case, accents, punctuation or trailing legal form.

    "Acme Ibérica, S.L.U." and "ACME IBERICA" share a key.
    """
    if not company:
        return None
    # Dots and commas are removed without a space so "S.L." reads as "sl", not "s l".
    words = fold(_DOTS.sub("", company)).split()
    while len(words) > 1 and words[-1] in LEGAL_FORMS:
        words.pop()
    return " ".join(words) or None


def _digits(text: str | None) -> str | None:
    if not text:
        return None
    digits = "".join(c for c in text if c.isdigit())
    return digits or None


def _compact(text: str | None) -> str | None:
    folded = fold(text).replace(" ", "")
    return folded or None


def prepare(record: MatchRecord) -> Features:
    """Fold a record into the forms the comparisons and blocking keys use."""
    key = email_key(record.email)
    mailbox = _mailbox_name(key) if key is not None else None
    role = key is not None and record.email is not None and role_mailbox(record.email)
    first = _name_tokens(record.first_name, False)
    last, generation = _surnames_and_generation(record.last_names)
    canonical = _canonical_given(first)
    address = _optional(record.address)
    last_common = set(last) <= COMMON_SURNAMES
    first_common = set(first) <= COMMON_SURNAMES
    canonical_common = set(canonical) <= COMMON_SURNAMES
    city, postcode = _optional(record.city), _compact(record.postcode)
    region, country = _optional(record.region), _compact(record.country)
    dob = _digits(record.date_of_birth)
    phone = record.phone.replace(" ", "") if record.phone else None
    return Features(
        email_key=key,
        email_local=_email_local(mailbox, role),
        phone=phone,
        tax_id=_compact(record.tax_id),
        first_tokens=first,
        first_joined="".join(first),
        first_canonical=canonical,
        last_tokens=last,
        first_initial=first[0][0] if first else "",
        last_initials=_initials_of(last),
        last_common=last_common,
        first_common=first_common,
        canonical_common=canonical_common,
        company=company_key(record.company),
        city=city,
        postcode=postcode,
        region=region,
        country=country,
        dob=dob,
        address=address,
        address_numbers=frozenset(w for w in (address or "").split() if w.isdigit()) or _NONE,
        # Folded text is [0-9a-z ], so "|" cannot occur in a part; None and "" both read as
        # absent wherever the keys are used.
        name_key=shared(
            f"{' '.join(first)}|{' '.join(canonical)}|{len(last)}|"
            f"{last_common:d}{first_common:d}{canonical_common:d}"
        ),
        place_key=shared(
            f"{city or ''}|{postcode or ''}|{region or ''}|{country or ''}|{dob or ''}|"
            f"{address is not None:d}"
        ),
        # Other contacts stand beside the record's own: without one (a PATCH cleared
        # it) they are not compared, nor filed as keys.
        other_email_keys=_other_keys(map(email_key, record.other_emails), key)
        if record.other_emails and key
        else _NONE,
        other_phones=_other_keys((p.replace(" ", "") for p in record.other_phones), phone)
        if record.other_phones and phone
        else _NONE,
        email_role=role,
        generation=generation,
    )


_NONE: frozenset[str] = frozenset()


def _other_keys(keys: Iterable[str | None], own: str | None) -> frozenset[str]:
    return frozenset(k for k in keys if k and k != own)


@functools.lru_cache(maxsize=1 << 16)
def phonetic(word: str) -> str:
    """A Spanish-leaning phonetic code for a folded word, for blocking.

    Merges letters Spanish speakers confuse or do not pronounce (b/v, c/s/z, ll/y,
    silent h, qu/k, g/j before e/i) and drops vowels after the first letter, so most
    one-letter typos and spelling variants share a code ("Jiménez" ~ "Gimenez" ~
    "Jimenes", "Vázquez" ~ "Basquez"). Not a pronunciation model: a cheap, stable key.
    """
    s = _NON_ALNUM.sub("", word)
    if not s or s.isdigit():
        return s
    for pattern, repl in _PHONETIC_RULES:
        s = pattern.sub(repl, s)
    if not s:
        return ""
    code = s[0] + re.sub(r"[aeiou]", "", s[1:])
    return re.sub(r"(.)\1+", r"\1", code)


_PHONETIC_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"ph", "f"),
        (r"[cs]h", "x"),
        (r"ll", "y"),
        (r"qu(?=[ei])", "k"),
        (r"c(?=[eiy])", "s"),
        (r"[cq]", "k"),
        (r"gu(?=[ei])", "g"),
        (r"g(?=[eiy])", "j"),
        (r"z", "s"),
        (r"[vw]", "b"),
        (r"h", ""),
        (r"y", "i"),
        (r"(.)\1+", r"\1"),
    )
)
