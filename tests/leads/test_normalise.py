"""Normalisers for lead fields: text, email, phone, country, language (names, split and
cased, are in test_names.py)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.leads.errors import NormalisationError
from cauce.leads.normalise import (
    COUNTRY_CODES,
    FREE_MAIL_DOMAINS,
    MAX_RAW_TEXT,
    clean_text,
    is_disposable_domain,
    normalise_country,
    normalise_email,
    normalise_language,
)
from cauce.leads.phones import normalise_phone, phone_region


def outcome(normaliser: Callable[[str], object], text: str) -> tuple[object, str | None]:
    """(result, None) or (None, the NormalisationError's code); any other error escapes."""
    try:
        return normaliser(text), None
    except NormalisationError as exc:
        return None, exc.code


HTMLISH = st.text(
    alphabet=st.sampled_from(list("<>&;/=\"' abpscriptlt#x0123456789\t\n\u00a0\u0301é\x00\u202e")),
    max_size=60,
)

# --- free text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<b>Hola</b> &amp; adiós", "Hola & adiós"),
        ("<script>alert(1)</script>Juan", "Juan"),
        ("María<br>José", "María José"),
        ("<p>Construcciones</p><p>Ñandú</p>", "Construcciones Ñandú"),
        ("AT&T", "AT&T"),
        ("a < b", "a < b"),
        ("&lt;b&gt;x&lt;/b&gt;", "x"),
        ("  José \t\n  Pérez  ", "José Pérez"),
        ("e\u0301", "é"),
        ("Ana\u00a0María", "Ana María"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("nul\x00byte\x07", "nulbyte"),
        ("zero\u200bwidth", "zerowidth"),
        ("&#7;bell", "bell"),
        ("lone\ud800surrogate", "lonesurrogate"),
        ("", ""),
    ],
)
def test_clean_text_cases(raw: str, expected: str) -> None:
    """Free text loses HTML, controls and invisible characters and is NFC with single spaces."""
    assert clean_text(raw) == expected


def test_clean_text_rejects_text_over_the_limit() -> None:
    """Text longer than the field's limit after cleaning is rejected, saying the limit."""
    assert clean_text("<b>" + "a" * 10 + "</b>", max_length=10) == "a" * 10
    with pytest.raises(NormalisationError) as info:
        clean_text("a" * 11, max_length=10)
    assert info.value.code == "text_too_long"
    assert "10" in info.value.reason


def test_clean_text_refuses_huge_input_before_parsing() -> None:
    """Input past the raw cap is refused without being parsed, naming the caller's limit
    (the one it can act on) when there is one, else the cap."""
    with pytest.raises(NormalisationError) as capped:
        clean_text("<" * (MAX_RAW_TEXT + 1))
    assert (capped.value.code, capped.value.reason) == (
        "text_too_long",
        f"must be at most {MAX_RAW_TEXT} characters",
    )
    for limit in (100, MAX_RAW_TEXT + 10):
        with pytest.raises(NormalisationError) as limited:
            clean_text("<" * (MAX_RAW_TEXT + 1), max_length=limit)
        shown = min(limit, MAX_RAW_TEXT)
        assert limited.value.reason == f"must be at most {shown} characters"


def test_clean_text_strips_deeply_nested_escaped_markup() -> None:
    """Markup escaped many times over ends as text without tags, and stays so."""
    nested = "&amp;amp;amp;amp;amp;lt;b&amp;amp;amp;amp;amp;gt;x"
    once = clean_text(nested)
    assert "<b>" not in once
    assert clean_text(once) == once


@given(st.text(max_size=200) | HTMLISH)
@settings(max_examples=400, deadline=None)
@example("&lt;\x07b&gt;")
@example("<\x00b>x")
def test_clean_text_is_idempotent_and_clean(text: str) -> None:
    """Cleaning twice changes nothing; the result is NFC, trimmed, single-spaced, control-free."""
    once = clean_text(text)
    assert clean_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert once == once.strip()
    assert "  " not in once
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in once)


@given(st.text(max_size=300))
@settings(deadline=None)
def test_clean_text_raises_only_normalisation_errors(text: str) -> None:
    """Arbitrary text either cleans or fails with NormalisationError, nothing else."""
    result, code = outcome(lambda t: clean_text(t, max_length=50), text)
    assert code in (None, "text_too_long")
    assert (result is None) == (code is not None)


# --- email -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("Maria.Garcia@Example.COM", "maria.garcia@example.com"),
        ("  ana@empresa.es  ", "ana@empresa.es"),
        ("María García <MGarcia@Empresa.ES>", "mgarcia@empresa.es"),
        ("mailto:info@empresa.es", "info@empresa.es"),
        ("josé+ventas@bücher.de", "josé+ventas@bücher.de"),
    ],
)
def test_normalise_email(raw: str, address: str) -> None:
    """Addresses are validated and stored in one lower-case NFC spelling."""
    assert normalise_email(raw).address == address


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("no-at-sign", "@-sign"),
        ("x@localhost", "period"),
        ("x@ex ample.com", "invalid characters"),
        ("a" * 400 + "@x.es", "too long"),
        ("x@[1.2.3.4]", "IP address"),
    ],
)
def test_normalise_email_rejects_with_reason(raw: str, fragment: str) -> None:
    """Invalid addresses raise email_invalid with email-validator's reason."""
    with pytest.raises(NormalisationError) as info:
        normalise_email(raw)
    assert info.value.code == "email_invalid"
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    ("raw", "suggestion"),
    [
        ("juan@gmail.con", "gmail.com"),
        ("juan@Gmail.CMO", "gmail.com"),  # two letters swapped
        ("juan@gmail.comm", "gmail.com"),
        ("juan@gmail.c0m", "gmail.com"),
        ("ana@hotmail.con", "hotmail.com"),  # not hotmail.co, a provider too
        ("ana@yahoo.com.mxx", "yahoo.com.mx"),
        ("ana@telefonica.nett", "telefonica.net"),
        ("ana@empresa.ess", "empresa.es"),
        ("ana@acme.con", "acme.com"),
        ("Ana <ana@outlook.con>", "outlook.com"),
        ("josé@empresa.con", "empresa.com"),  # the full validation's path says it too
    ],
)
def test_an_address_under_no_top_level_domain_is_refused_with_a_guess(
    raw: str, suggestion: str
) -> None:
    """An address whose top-level domain IANA does not list cannot be delivered
    (`gmail.con`): it is refused, and the likeliest domain is suggested, a webmail
    provider's first (an audit of Latin American data found typo domains stored)."""
    with pytest.raises(NormalisationError) as info:
        normalise_email(raw)
    assert info.value.code == "email_invalid"
    tld = raw.rstrip(">").rsplit(".", 1)[1]
    assert f"ends in '.{tld.lower()}', which is not a top-level domain" in info.value.reason
    assert info.value.reason.endswith(f"(did you mean {suggestion}?)")


@pytest.mark.parametrize("raw", ["ana@acme.xyzzy", "ana@empresa.zzzz"])
def test_an_unknown_top_level_domain_far_from_any_gets_no_guess(raw: str) -> None:
    with pytest.raises(NormalisationError) as info:
        normalise_email(raw)
    assert "not a top-level domain" in info.value.reason
    assert "did you mean" not in info.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        "ana@gmail.co",  # Colombia's: a real domain, whatever was meant
        "ana@empresa.com.ar",
        "ana@empresa.madrid",
        "ana@empresa.eus",
        "ana@empresa.cat",
        "ana@españa.es",
        "ana@пример.рф",  # a top-level domain IANA lists in its ASCII form (xn--p1ai)
        "ana@EMPRESA.ES",
    ],
)
def test_addresses_under_real_top_level_domains_are_kept(raw: str) -> None:
    assert normalise_email(raw).address == raw.lower()


def test_a_punycode_domain_is_checked_as_its_unicode_form() -> None:
    assert normalise_email("ana@xn--espaa-rta.es").address == "ana@españa.es"
    assert normalise_email("ana@xn--e1afmkfd.xn--p1ai").address == "ana@пример.рф"


def test_email_flags_disposable_and_free_mail() -> None:
    """Disposable domains (and their subdomains) and free-mail providers are flagged."""
    disposable = normalise_email("x@mailinator.com")
    assert disposable.is_disposable
    assert not disposable.is_free_mail
    assert is_disposable_domain("inbox.mailinator.com")
    for domain in ("gmail.com", "hotmail.es", "telefonica.net", "yahoo.com.mx"):
        flags = normalise_email(f"ana@{domain}")
        assert flags.is_free_mail
        assert not flags.is_disposable
    company = normalise_email("ana@construcciones-nandu.es")
    assert not company.is_free_mail
    assert not company.is_disposable


@pytest.mark.parametrize(
    "domain",
    [
        *("hotmail.com.mx", "hotmail.cl", "outlook.com.ar", "yahoo.com.pe", "live.com.co"),
        *("terra.com.mx", "prodigy.net.mx", "movistar.es", "fibertel.com.ar", "une.net.co"),
    ],
)
def test_latin_american_personal_mailboxes_are_free_mail(domain: str) -> None:
    """The big providers under a country's domain and the ISPs' own mailboxes are
    personal inboxes, not company email (an audit found them scored +15 as company)."""
    assert normalise_email(f"ana@{domain}").is_free_mail


@pytest.mark.parametrize("domain", ["acme.com.mx", "hotmail.acme.com", "mihotmail.com.mx"])
def test_a_company_domain_that_names_a_provider_is_not_free_mail(domain: str) -> None:
    assert not normalise_email(f"ana@{domain}").is_free_mail


def test_free_mail_list_does_not_overlap_disposable_list() -> None:
    """A curated free-mail domain is never also on the disposable list."""
    assert not [d for d in FREE_MAIL_DOMAINS if is_disposable_domain(d)]


@given(st.emails())
@settings(max_examples=200, deadline=None)
def test_normalise_email_is_idempotent(email: str) -> None:
    """Normalising a normalised address gives it back unchanged."""
    try:
        first = normalise_email(email)
    except NormalisationError:
        return  # hypothesis emails include special-use domains email-validator refuses
    assert normalise_email(first.address) == first


@given(st.text(max_size=80))
@settings(deadline=None)
def test_normalise_email_raises_only_normalisation_errors(text: str) -> None:
    """Arbitrary text is an address or an email_invalid error, nothing else."""
    result, code = outcome(normalise_email, text)
    assert code in (None, "email_invalid")
    assert (result is None) == (code is not None)


# --- phone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("612 34 56 78", "ES", "+34612345678"),
        ("612-345-678", "ES", "+34612345678"),
        ("(+34) 612.34.56.78", "ES", "+34612345678"),
        ("0034 612 345 678", "ES", "+34612345678"),
        ("+34 912 345 678", "MX", "+34912345678"),
        ("55 1234 5678", "MX", "+525512345678"),
        ("+52 55 1234 5678", "ES", "+525512345678"),
        ("+52 1 55 1234 5678", "ES", "+525512345678"),
        ("+1 202 555 0143", "ES", "+12025550143"),
    ],
)
def test_normalise_phone(raw: str, region: str, e164: str) -> None:
    """Spanish and Mexican numbers, national or international, become E.164."""
    assert normalise_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("999 99 99 99", "ES", "is not a valid number for region ES"),
        ("12345", "ES", "is too short for region ES"),
        ("+34 612 34 56 7", "ES", "is too short for region ES"),
        (
            "55 1234 5678",
            "ES",
            "is too long for region ES (read as a national number; one from another "
            "country needs + and its country code, or the lead's country)",
        ),
        ("hola", "ES", "is not a phone number"),
        ("+999 1234", "ES", "has an unknown country code"),
        ("6" * 70, "ES", "is too long to be a phone number"),
        ("612345678 ext. 12345678901", "ES", "has an extension longer than 10 digits"),
    ],
)
def test_normalise_phone_rejects_with_reason(raw: str, region: str, reason: str) -> None:
    """Invalid numbers raise phone_invalid saying why, naming the region."""
    with pytest.raises(NormalisationError) as info:
        normalise_phone(raw, region)
    assert info.value.code == "phone_invalid"
    assert info.value.reason == reason


SPANISH_MOBILE = st.tuples(st.sampled_from("67"), st.text("0123456789", min_size=8, max_size=8))


@given(
    SPANISH_MOBILE,
    st.sampled_from(["", "+34", "0034", "+34 ", "(+34) "]),
    st.sampled_from(["", " ", "-", "."]),
)
@settings(deadline=None)
def test_spanish_mobiles_round_trip(number: tuple[str, str], prefix: str, separator: str) -> None:
    """Any formatting of a Spanish mobile gives the same E.164, which re-parses to itself."""
    digits = number[0] + number[1]
    if not phonenumbers.is_valid_number(phonenumbers.parse(digits, "ES")):
        return
    spaced = separator.join([digits[:3], digits[3:6], digits[6:]])
    e164 = normalise_phone(prefix + spaced, "ES")
    assert e164 == "+34" + digits
    assert normalise_phone(e164, "MX") == e164
    reparsed = phonenumbers.parse(e164, None)
    assert phonenumbers.format_number(reparsed, phonenumbers.PhoneNumberFormat.E164) == e164


@given(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
@settings(deadline=None)
def test_example_numbers_of_every_region_round_trip(region: str) -> None:
    """Each region's example number normalises to E.164 that re-parses to the same number."""
    example_number = phonenumbers.example_number(region)
    if example_number is None:
        return
    national = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.NATIONAL)
    e164 = normalise_phone(national, region)
    assert phonenumbers.parse(e164, None) == phonenumbers.parse(e164, region)
    assert normalise_phone(e164) == e164
    assert re.fullmatch(r"\+[1-9][0-9]{1,14}", e164)


@given(st.text(max_size=40) | st.text(alphabet="+0123456789 -()", max_size=25))
@settings(deadline=None)
def test_normalise_phone_raises_only_normalisation_errors(text: str) -> None:
    """Arbitrary text is E.164 or a phone_invalid error, nothing else."""
    result, code = outcome(normalise_phone, text)
    assert code in (None, "phone_invalid")
    if isinstance(result, str):
        assert normalise_phone(result, "ES") == result


def test_phone_region() -> None:
    """The region of a stored number is read back from it."""
    assert phone_region("+525512345678") == "MX"
    assert phone_region("+34612345678") == "ES"
    assert phone_region("nonsense") is None


# --- country and language ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("es", "ES"),
        ("ESP", "ES"),
        ("España", "ES"),
        ("espana", "ES"),
        ("Spain", "ES"),
        ("México", "MX"),
        ("Mejico", "MX"),
        ("EE.UU.", "US"),
        ("Estados Unidos", "US"),
        ("UK", "GB"),
        ("Reino Unido", "GB"),
        ("Brasil", "BR"),
        ("Perú", "PE"),
        ("República Dominicana", "DO"),
        ("Espanya", "ES"),
        (" argentina ", "AR"),
        # Found by an audit with Latin American forms (each was country_unknown).
        ("Rep. Dominicana", "DO"),
        ("RD", "DO"),
        ("Estados Unidos Mexicanos", "MX"),
        ("Reino de España", "ES"),
        ("MX.", "MX"),
        ("Catalunya", "ES"),
        ("Euskadi", "ES"),
        ("CDMX", "MX"),
        ("Ciudad de México", "MX"),
    ],
)
def test_normalise_country(raw: str, code: str) -> None:
    """Codes and common names (Spanish, English, Catalan...) give ISO 3166-1 alpha-2."""
    assert normalise_country(raw) == code


@pytest.mark.parametrize("raw", ["Narnia", "XX", "AN", "", "E"])
def test_normalise_country_rejects_unknown(raw: str) -> None:
    """Unknown countries (and the withdrawn AN) are rejected with country_unknown."""
    with pytest.raises(NormalisationError) as info:
        normalise_country(raw)
    assert info.value.code == "country_unknown"


@given(st.sampled_from(sorted(COUNTRY_CODES)) | st.text(max_size=30))
@settings(deadline=None)
def test_normalise_country_is_idempotent(text: str) -> None:
    """A country result is a known code that normalises to itself; else country_unknown."""
    result, code = outcome(normalise_country, text)
    assert code in (None, "country_unknown")
    if isinstance(result, str):
        assert result in COUNTRY_CODES
        assert normalise_country(result) == result


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("es", "es"),
        ("ES", "es"),
        ("es_mx", "es-MX"),
        ("es-419", "es-419"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("Español", "es"),
        ("castellano", "es"),
        ("English", "en"),
        ("catalán", "ca"),
        ("euskera", "eu"),
        ("spa", "es"),
        ("iw", "he"),
    ],
)
def test_normalise_language(raw: str, tag: str) -> None:
    """Codes, locales and language names give a BCP 47 tag with an ISO 639-1 language."""
    assert normalise_language(raw) == tag


@pytest.mark.parametrize("raw", ["xx", "en-ZZ", "klingon", "", "e"])
def test_normalise_language_rejects_unknown(raw: str) -> None:
    """Unknown languages or regions are rejected with language_unknown."""
    with pytest.raises(NormalisationError) as info:
        normalise_language(raw)
    assert info.value.code == "language_unknown"


@given(st.text(max_size=20) | st.from_regex(r"[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?", fullmatch=True))
@settings(deadline=None)
def test_normalise_language_is_idempotent(text: str) -> None:
    """A language result normalises to itself; anything else is language_unknown."""
    result, code = outcome(normalise_language, text)
    assert code in (None, "language_unknown")
    if isinstance(result, str):
        assert normalise_language(result) == result


def test_country_table_covers_every_phone_region() -> None:
    """Every region phonenumbers knows (but the non-ISO AC, TA, XK) is a known country."""
    missing = set(phonenumbers.SUPPORTED_REGIONS) - COUNTRY_CODES - {"AC", "TA", "XK"}
    assert not missing
