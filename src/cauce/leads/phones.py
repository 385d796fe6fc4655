"""Pure normalisers for phone numbers: a number to E.164 (with its extension, if it has
one, in RFC 3966's form), an extension sent on its own, the region of a stored number,
and the country a number typed with an international prefix names (`typed_country`).

As every normaliser of lead fields (`normalise` for free text and email), each function
here is pure (no I/O, no DNS, no clock) and idempotent: `f(f(x)) == f(x)`. A value that
cannot be normalised raises `NormalisationError` (a `ValueError`) with a stable `code` and
a reason for people; nothing else escapes. The schemas call these and turn the error into
a per-field 422 item.
"""

from __future__ import annotations

import re

import phonenumbers

from cauce.leads.errors import NormalisationError
from cauce.leads.places import COUNTRY_CODES

DEFAULT_PHONE_REGION = "ES"

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
    return _parsed_e164(_tidied(text, region), region)


# Ways of writing a number that phonenumbers does not read: the trunk "(0)" kept after a
# country code (`+34 (0) 612...`, `+44 (0)20...`); Latin American extension words
# (`interno 123`, `int. 123`: Argentina, Chile); Mexico's mobile prefixes 044 and 045,
# dialled before 2019 (`044 55 1234 5678`); Chile's mobiles with a trunk 0 (`09 6588
# 3337`, before 2012); two numbers in one field.
_TRUNK_ZERO = re.compile(r"^(\+\s*\d{1,3})\s*\(\s*0\s*\)")
_EXTENSION_WORD = re.compile(r"\s*,?\s*\b(?:interno|int)\b\.?\s*:?\s*(?=\d)", re.IGNORECASE)
_MX_MOBILE_PREFIX = re.compile(r"^0\s*4\s*[45]((?:\D*\d){10})(?!\d)(.*)$")
# Chile's mobiles as dialled before 2012, a trunk 0 before the 9 (`09 6588 3337`). Both
# patterns give what follows the number (an extension, `anexo 12`) as a second group.
_CL_OLD_MOBILE = re.compile(r"^0\s*(9(?:\D*\d){8})(?!\d)(.*)$")
_LEGACY_MOBILES = {"MX": _MX_MOBILE_PREFIX, "CL": _CL_OLD_MOBILE}
_TWO_NUMBERS = re.compile(r"\d[\d\s().-]{6,}\s*(?:/|\by\b|\bo\b|;)\s*\+?\d[\d\s().-]{6,}")
# A number a spreadsheet stored as a number: written back with a decimal part
# (`612345678.0`) or in scientific notation (`6.12345678E+08`).
_SPREADSHEET_DECIMAL = re.compile(r"(\+?(\d+))[.,]0+")
_SCIENTIFIC = re.compile(r"(\+?)(\d)[.,]?(\d*)\s*[eE]\s*\+?(\d{1,2})")


def spreadsheet_number(text: str, *, min_digits: int = 1) -> str:
    """A phone (or extension) a spreadsheet saved as a number, as its digits:
    `612345681.0` and `6.12345681E+08` are `612345681`; any other text as it is. Raises
    `NormalisationError` (`phone_invalid`) for scientific notation that has lost digits
    (`6.12E+08`: the spreadsheet rounded it) or has decimals left (`6.1E+00`). A
    decimal form with fewer than `min_digits` digits is left as it is (`4312.0000` is no
    phone a spreadsheet wrote; an extension cell's `12.0` is)."""
    if (found := _SPREADSHEET_DECIMAL.fullmatch(text)) and len(found.group(2)) >= min_digits:
        return found.group(1)
    if found := _SCIENTIFIC.fullmatch(text):
        sign, first, rest, power = found.groups()
        if len(rest) == int(power):
            return sign + first + rest
        raise NormalisationError(
            "phone_invalid",
            "is a number in scientific notation that the spreadsheet rounded, so digits "
            "of the phone are lost: format the column as text in the spreadsheet, type "
            "the numbers again if need be, and save the file again",
        )
    return text


def _tidied(text: str, region: str) -> str:
    if "." in text or "," in text or "e" in text or "E" in text:
        text = spreadsheet_number(text, min_digits=6)
    if _TWO_NUMBERS.search(text):
        raise NormalisationError(
            "phone_invalid", "holds two phone numbers; send one (another in a custom field)"
        )
    text = _TRUNK_ZERO.sub(r"\1 ", text)
    text = _EXTENSION_WORD.sub(" ext. ", text)
    old_form = _LEGACY_MOBILES.get(region)
    if old_form is not None and (legacy := old_form.match(text)):
        # What follows the number is kept when it has digits: an extension
        # (`09 6588 3337 anexo 12`), or more digits that make the number invalid.
        number, rest = legacy.groups()
        text = number + rest if any(char.isdigit() for char in rest) else number
    return text


# How `normalise_phone` writes an extension after the number (RFC 3966).
EXTENSION_MARK = ";ext="
MAX_EXTENSION_DIGITS = 10


def split_extension(phone: str) -> tuple[str, str | None]:
    """The E.164 number and the extension (digits, or None) of a `normalise_phone` result."""
    number, mark, extension = phone.partition(EXTENSION_MARK)
    return number, (extension if mark else None)


def normalise_extension(value: str) -> str:
    """A phone extension sent on its own: its digits, 1 to `MAX_EXTENSION_DIGITS` of them,
    after an optional marker (`ext.`, `extensión`, `interno`, `int.`, `anexo`, `x`, `#`,
    a colon after it allowed), spaces and dashes
    dropped; anything else (`12a`, `n/a`, `12.0`) raises `phone_extension_invalid`."""
    digits = _EXTENSION_SEPARATORS.sub("", _EXTENSION_MARKER.sub("", value, count=1))
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_EXTENSION_DIGITS:
        raise NormalisationError(
            "phone_extension_invalid",
            f"is 1 to {MAX_EXTENSION_DIGITS} digits, optionally after `ext.`",
        )
    return digits


_EXTENSION_MARKER = re.compile(
    r"^\s*(?:ext(?:ensi[oó]n)?\.?|interno|int\.?|anexo|x|#)\s*:?\s*", re.IGNORECASE
)
_EXTENSION_SEPARATORS = re.compile(r"[\s\-]+")


_NATIONAL_HINT = (
    "read as a national number; one from another country needs + and its country code, "
    "or the lead's country"
)


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
            if (
                not text.lstrip().startswith(("+", "00"))
                and phonenumbers.country_code_for_region(region) == number.country_code
            ):
                # Read as the region's own (a national number): the Dominican Republic's
                # and Grenada's share +1 with the US, whose region the code names.
                number_region = region
            possible = phonenumbers.is_possible_number_with_reason(number)
            reason = _POSSIBLE_REASONS.get(possible)
            if reason is None or number_region == phonenumbers.UNKNOWN_REGION:
                known = number_region != phonenumbers.UNKNOWN_REGION
                reason = f"is not a valid number for region {number_region if known else region}"
            else:
                reason = f"{reason} for region {number_region}"
            national = not text.lstrip().startswith(("+", "00")) and number_region == region
            if national and possible == phonenumbers.ValidationResult.TOO_LONG:
                # Read as a national number: a longer one is most often another country's
                # (Mexico's and Colombia's 10 digits read in Spain, whose have 9), and
                # may be one with its country code but without the + (`1 305...`).
                guess = _international_guess(number)
                reason = f"{reason} ({_NATIONAL_HINT}{guess})"
            raise NormalisationError("phone_invalid", reason)
        number = fixed
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{formatted}{EXTENSION_MARK}{extension}" if extension else formatted


def _international_guess(national: phonenumbers.PhoneNumber) -> str:
    """`; with + before it, it is a valid number of US (+1)` when the digits of a number
    read as a national one (its extension aside) are one with a + before them; else
    nothing. The digits are not echoed: the reason may be logged."""
    try:
        number = phonenumbers.parse(f"+{national.national_number}", None)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_valid_number(number):
        return ""
    region = phonenumbers.region_code_for_number(number)
    return f"; with + before it, it is a valid number of {region} (+{number.country_code})"


def phone_region(e164: str) -> str | None:
    """The ISO 3166-1 alpha-2 region of a stored E.164 number (None if it has none)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


# How a number carries its own country code: after `+` (`+34...`, `(+34)`, a full-width
# plus), or after the international prefix of the region it is read in (`0034...` in
# Spain, `011 52...` in the United States).
_TYPED_CODE = frozenset(
    {
        phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN,
        phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD,
    }
)
# Digits no region's international prefix starts with (all start with 0, 1 or 8: Cuba's
# 119, Chile's carriers' 1x0, the 810 of Russia and its neighbours): a number typed
# starting with one is national, and is not parsed again to say so.
_NATIONAL_FIRST = frozenset("2345679")


def international(value: str, default_region: str = DEFAULT_PHONE_REGION) -> bool:
    """Whether `value`, a number as typed, carries its country code after an
    international prefix: `+34 612...`, `0034 612...`, `+34 (0) 612...`, or the prefix
    of the region it is read in (`011 52...` read in the US). A national number
    (`612 345 678`, `55 1234 5678` read in Mexico, `044 55...`) does not, nor do digits
    that start with the region's own code without a prefix (`34 612 345 678` read in
    Spain): phonenumbers reads those as the region's only because the region is assumed.
    A leading `+` says so at once; without one, False for what phonenumbers cannot
    read (whether the number is valid is `normalise_phone`'s answer)."""
    text = value.strip()
    if not text or len(text) > _MAX_PHONE_INPUT or text[0] in _NATIONAL_FIRST:
        return False
    if text.startswith("+"):
        return True
    region = default_region.upper()
    try:
        number = phonenumbers.parse(_tidied(text, region), region, keep_raw_input=True)
    except (NormalisationError, phonenumbers.NumberParseException):
        return False
    return number.country_code_source in _TYPED_CODE


def number_country(phone: str) -> str | None:
    """The country (ISO 3166-1 alpha-2) of a `normalise_phone` result, its extension
    aside; None for a code of no country (`+800`: "001", `+247` Ascension's "AC").

    A country code of one region (+34, +52: most) names it without parsing the number
    again (~30 us a lead at intake); a shared one (+1, +7, +44...) parses it."""
    e164 = split_extension(phone)[0]
    digits = e164[1:4]
    # Country codes are prefix-free: the first of one, two or three digits that is one
    # is the number's.
    for length in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:length] or 0))
        if regions:
            if len(regions) == 1:
                return regions[0] if regions[0] in COUNTRY_CODES else None
            break
    region = phone_region(e164)
    return region if region in COUNTRY_CODES else None


def typed_country(value: str, default_region: str = DEFAULT_PHONE_REGION) -> str | None:
    """The country of a number typed with an international prefix (`international`),
    the default region's own included: `+34 612...` and `0034 612...` are `ES` read in
    Spain too, `+52 55...` is `MX`. None for a national number, which says nothing of
    the lead's country (the region it is read in was assumed: the lead's country if
    sent, else the default), for a code of no country (`number_country`) and for what is
    no valid number. A lead without a `country` takes it, so scoring and routing see a
    Spanish lead as one."""
    if not international(value, default_region):
        return None
    try:
        return number_country(normalise_phone(value, default_region))
    except NormalisationError:
        return None
