"""Addresses valid in syntax that no one can have (left from the email audit):

1. A mailbox name with accents or `ñ` at a webmail provider that gives only ASCII names
   (`josé@gmail.com`): Spanish speakers type their name's accents into their address.
   It was stored, and mail to it bounces; now it is refused with the ASCII spelling.
2. A domain label mixing Latin letters with Cyrillic or Greek lookalikes (`empresa.com`
   with the Cyrillic letter that looks like `e`, also sent as `xn--mpresa-2of.com`): a
   spoofed domain or a keyboard left in another layout. It was stored as another company's domain.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.leads.errors import NormalisationError
from cauce.leads.mailbox_rules import mixed_script_domain
from cauce.leads.normalise import normalise_email


def _refusal(raw: str) -> str:
    with pytest.raises(NormalisationError) as info:
        normalise_email(raw)
    assert info.value.code == "email_invalid"
    return str(info.value)


@pytest.mark.parametrize(
    ("raw", "meant"),
    [
        ("josé@gmail.com", "jose@gmail.com"),
        ("José.Muñoz@Hotmail.es", "jose.munoz@hotmail.es"),
        ("maría_peña@outlook.com.mx", "maria_pena@outlook.com.mx"),
        ("mª.jose@yahoo.es", "ma.jose@yahoo.es"),
        ("begoña@icloud.com", "begona@icloud.com"),
    ],
)
def test_an_accented_mailbox_at_an_ascii_only_provider_is_refused_with_its_spelling(
    raw: str, meant: str
) -> None:
    reason = _refusal(raw)
    assert "gives no mailbox names with accents" in reason
    assert reason.endswith(f"(did you mean {meant}?)")


def test_a_mailbox_in_another_script_at_gmail_is_refused_without_a_guess() -> None:
    reason = _refusal("пётр@gmail.com")
    assert "gmail.com gives no mailbox names" in reason
    assert "did you mean" not in reason


@pytest.mark.parametrize(
    "raw", ["josé@empresa.es", "josé@españa.es", "пётр@пример.рф", "müller@web.de", "ñandú@tele.ar"]
)
def test_an_accented_mailbox_elsewhere_is_kept(raw: str) -> None:
    # A company's own server or another provider may give such names (RFC 6531).
    assert normalise_email(raw).address == raw


@given(st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,2}", fullmatch=True))
def test_an_ascii_mailbox_is_never_refused_by_the_rule(local: str) -> None:
    assert normalise_email(f"{local}@gmail.com").address == f"{local}@gmail.com"


@pytest.mark.parametrize(
    ("raw", "script", "meant"),
    [
        ("juan@\u0435mpresa.com", "Cyrillic", "empresa.com"),  # Cyrillic small ie
        ("juan@xn--mpresa-2of.com", "Cyrillic", "empresa.com"),  # the same, in ASCII form
        ("ana@\u03bfutlook.com", "Greek", "outlook.com"),  # Greek small omicron
        ("ana@b\u0430nco-\u0441ol.com.co", "Cyrillic", "banco-col.com.co"),
        ("ana@pe\u00f1a-\u0441o.es", "Cyrillic", "peña-co.es"),  # ñ is Latin too
    ],
)
def test_a_domain_mixing_latin_with_lookalike_letters_is_refused(
    raw: str, script: str, meant: str
) -> None:
    reason = _refusal(raw)
    assert f"its domain mixes Latin and {script} letters" in reason
    assert reason.endswith(f"(did you mean {meant}?)")


def test_a_mixed_label_with_no_latin_lookalike_is_refused_without_a_guess() -> None:
    reason = _refusal("ana@emp\u0436resa.com")  # ж has no Latin twin
    assert "mixes Latin and Cyrillic letters in 'empжresa'" in reason
    assert "did you mean" not in reason


@pytest.mark.parametrize(
    "domain", ["пример.рф", "españa.es", "ελλάδα.gr", "empresa.рф", "xn--e1afmkfd.xn--p1ai"]
)
def test_a_domain_in_one_script_a_label_is_kept(domain: str) -> None:
    assert normalise_email(f"ana@{domain}").domain in {domain, "пример.рф"}


_LATIN_LETTERS = st.characters(
    categories=["Ll"], include_characters="ñçáéíóúàèìòùäëïöüâêîôûß", max_codepoint=0x24F
)


@given(st.text(_LATIN_LETTERS, min_size=1, max_size=20))
def test_a_label_of_latin_letters_with_accents_never_mixes_scripts(label: str) -> None:
    assert mixed_script_domain(f"{label}.com") is None
    assert mixed_script_domain(f"{label}.рф") is None  # a TLD in another script is its own


async def test_the_api_answers_both_with_the_address_meant(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/leads", json={"email": "José.Muñoz@gmail.com", "phone": "612345678"}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["pointer"], error["type"]) == ("/email", "email_invalid")
    assert error["detail"].endswith("(did you mean jose.munoz@gmail.com?)")
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": "juan@\u0435mpresa.com"}, {"email": "josé@empresa.es"}]},
    )
    assert batch.status_code == 200, batch.text
    items = batch.json()["items"]
    assert [item["outcome"] for item in items] == ["rejected", "created"]
    assert items[0]["errors"][0]["detail"].endswith("(did you mean empresa.com?)")
