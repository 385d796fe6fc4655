"""The fast paths of `cauce.leads.normalise` and `cauce.leads.phones` give what the
libraries give.

`normalise_email` handles an ASCII address with a plain local part using the remembered
checks of its domain (`_plain_email`), and `normalise_phone` handles a Spanish number in
the common shape without parsing it (`_spanish_e164`). Each must agree with the full
path (email-validator, phonenumbers): the same value where it answers, and no answer
where the full path refuses (so the refusal and its reason come from the library).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cauce.leads.errors import NormalisationError
from cauce.leads.normalise import (
    NormalisedEmail,
    _plain_email,
    _validated_email,
    normalise_email,
)
from cauce.leads.phones import _parsed_e164, _spanish_e164, normalise_phone

# ---------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------

_ATEXT = "abcxyzABCXYZ0189_!#$%&'*+-/=?^`{|}~"
_LOCAL = st.text(alphabet=_ATEXT + '."\\ @<>(),:;[]é\u00a0\u0301', min_size=0, max_size=70)
_LABEL = st.one_of(
    st.text(alphabet="abcxyzABCXYZ0189-", min_size=0, max_size=66),
    st.sampled_from(
        [
            "xn--caf-dma",  # café
            "xn--zz",  # not IDNA
            "xn--80ak6aa92e",  # a Cyrillic label
            "XN--CAF-DMA",
            "ab--cd",
            "1",
            "123",
            "local",
            "localhost",
            "test",
            "invalid",
            "onion",
            "arpa",
            "example",
            "café",
            "ß",
            "Ⅸ",
            "a\u0301",
            "_x",
            "a b",
            "a@b",
            "[1",
            "2]",
            "a\u3002b",  # an ideographic full stop
            "a\uff0eb",  # a fullwidth full stop
        ]
    ),
)
_DOMAIN = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=5).map(".".join),
    st.builds(
        lambda n, tld: "a" * n + "." + tld,
        st.integers(180, 260),
        st.sampled_from(["es", "com", "1"]),
    ),
    st.builds(lambda n: ".".join(["abcdefghi"] * n) + ".es", st.integers(20, 30)),
)
_ADDRESSES = st.one_of(
    st.emails(),
    st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN),
    st.builds(lambda n, domain: "x" * n + "@" + domain, st.integers(60, 250), _DOMAIN),
)


def _full(text: str) -> NormalisedEmail | None:
    try:
        return _validated_email(text)
    except NormalisationError:
        return None


@settings(max_examples=600, deadline=None)
@given(_ADDRESSES)
@example("Maria.Garcia.12@Gmail.COM")
@example("maria@hotmail.es")
@example("a@xn--caf-dma.es")
@example("a@XN--CAF-DMA.ES")
@example("a@xn--zz.es")
@example("Postmaster@Empresa.ES")
@example("a@localhost")
@example("a@foo.local")
@example("a@foo.test")
@example("a@1.2.3.4")
@example("a@[1.2.3.4]")
@example("a..b@x.es")
@example(".a@x.es")
@example("a.@x.es")
@example("a@x..es")
@example("a@-x.es")
@example("a@x-.es")
@example("a@x.es.")
@example("a@.x.es")
@example("a@b@c.es")
@example("a@")
@example("@x.es")
@example("a@x")
@example("a@x.123")
@example("a@mailinator.com")
@example("a@sub.mailinator.com")
@example("x" * 64 + "@" + "y" * 185 + ".com")  # 254 characters: the longest accepted
@example("x" * 64 + "@" + "y" * 186 + ".com")  # 255: one too many
@example("x" * 200 + "@" + "y" * 50 + ".com")
@example("x" * 200 + "@" + "y" * 50 + ".xn--p1ai")
def test_plain_email_agrees_with_email_validator(text: str) -> None:
    plain = _plain_email(text)
    full = _full(text)
    if plain is not None:
        assert plain == full
    elif text.isascii() and "@" in text and full is not None:
        # The fast path may pass on a valid address (a quoted local part, say), but not
        # on the plain shape it exists for.
        local = text.partition("@")[0]
        assert not local or '"' in local or any(c not in _ATEXT for c in local.replace(".", ""))


@pytest.mark.parametrize(
    "raw",
    [
        "  María José <MJ.Garcia@Hotmail.ES> ",
        "mailto:Ana@Empresa.es",
        "MAILTO: ana.lopez@gmail.com",
        "ana.lopez+leads@gmail.com",
        "info@ayuntamiento.madrid.es",
    ],
)
def test_normalise_email_takes_the_fast_path_for_common_addresses(raw: str) -> None:
    text = raw.strip()
    if "<" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    if text.lower().startswith("mailto:"):
        text = text[7:].strip()
    assert _plain_email(text) is not None
    assert normalise_email(raw) == _validated_email(text)


# ---------------------------------------------------------------------------------------
# Phone
# ---------------------------------------------------------------------------------------

_REGIONS = st.sampled_from(["ES", "ES", "ES", "MX", "US", "FR", "PT", "AR", "GB", "IT"])


@st.composite
def _spaced_numbers(draw: st.DrawFn) -> str:
    prefix = draw(
        st.sampled_from(["", "", "+34", "+ 34", "+3 4", "+34 ", "0034", "34", "+33", "+", "+52 1"])
    )
    first = draw(st.sampled_from("01234567899876"))
    # Mostly nine digits, the length of a Spanish number.
    size = draw(st.one_of(st.just(8), st.just(8), st.integers(5, 11)))
    rest = draw(st.text(alphabet="0123456789", min_size=size, max_size=size))
    digits = prefix + first + rest
    out = []
    for char in digits:
        out.append(char)
        out.append(draw(st.sampled_from(["", "", "", " ", "  "])))
    return "".join(out).strip()


def _full_phone(text: str, region: str) -> str | None:
    try:
        return _parsed_e164(text, region)
    except NormalisationError:
        return None


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(_spaced_numbers(), st.text(alphabet="+0123456789 ()-.", max_size=20)),
    _REGIONS,
)
@example("+34 612 34 56 78", "MX")
@example("612 345 678", "ES")
@example("612345678", "ES")
@example("912 345 678", "ES")
@example("812 345 678", "ES")
@example("712 345 678", "ES")
@example("612 345 678", "MX")
@example("+34 512 345 678", "ES")
@example("+34 400 123 456", "ES")
@example("+34 612 345 67", "ES")
@example("+34 612 345 6789", "ES")
@example("34 612 345 678", "ES")
@example("0034 612 345 678", "ES")
@example("+ 3 4 6 1 2 3 4 5 6 7 8", "US")
def test_spanish_e164_agrees_with_phonenumbers(text: str, region: str) -> None:
    fast = _spanish_e164(text, region)
    if fast is not None:
        assert fast == _full_phone(text, region)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+34 612 34 56 78", "ES", "+34612345678"),
        ("612 345 678", "ES", "+34612345678"),
        ("  912345678 ", "es", "+34912345678"),
        ("+34 612 34 56 78", "MX", "+34612345678"),
    ],
)
def test_normalise_phone_takes_the_fast_path_for_spanish_numbers(
    raw: str, region: str, e164: str
) -> None:
    assert _spanish_e164(raw.strip(), region.upper()) == e164
    assert normalise_phone(raw, region) == e164 == _parsed_e164(raw.strip(), region.upper())
