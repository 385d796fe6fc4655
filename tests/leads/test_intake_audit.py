"""Fixes from a black-box audit of lead intake (validation and normalisation).

Each test names what the audit saw before its fix.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.leads.errors import NormalisationError
from cauce.leads.names import SplitName, halves_of_full_name, split_full_name
from cauce.leads.normalise import clean_text
from cauce.leads.phones import normalise_extension, normalise_phone

# --- `<` that is text, not markup --------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        # Before: "Tornillos S.L.", "A", "<>": nh3 took `<Word>` and `<B` for tags.
        ("Tornillos <Hermanos> S.L.", "Tornillos <Hermanos> S.L."),
        ("A<B", "A<B"),
        ("<<Construcciones>>", "<<Construcciones>>"),
        ("I+D < 5 años", "I+D < 5 años"),
        ("<3 gatos", "<3 gatos"),
        ("&lt;Hermanos&gt;", "<Hermanos>"),
    ],
)
def test_angle_brackets_that_are_text_are_kept(sent: str, kept: str) -> None:
    assert clean_text(sent) == kept
    assert clean_text(kept) == kept


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("<b>Ana</b>", "Ana"),
        ("María<br>José", "María José"),
        ("<img src=x onerror=alert(1)>Ana", "Ana"),
        ("<svg/onload=alert(1)>Ana", "Ana"),
        # An unknown element with attributes is markup (an event handler may hide there).
        ("<hermanos onmouseover=alert(1)>Ana</hermanos>", "Ana"),
        ("<x-boton>Ana</x-boton>", "Ana"),
        ("a <!-- nota --> b", "a b"),
        ("<script>alert(1)</script>Ana", "Ana"),
        ("&lt;script&gt;alert(1)&lt;/script&gt;Ana", "Ana"),
        ("<Hermanos><script>alert(1)</script>", "<Hermanos>"),
        ("A<B y C>D", "AD"),  # `<b y c>`: a bold tag with two attributes, as a browser reads it
        # Never closed, with attributes: still markup (a page's next `>` would close it
        # and run the handler). A review caught the first version keeping these.
        ("<img src=x onerror=alert(1)", ""),
        ("Acme <img src=x onerror=alert(document.domain) ", "Acme"),
        ("<svg Onload=alert(1)", ""),
        ("<img/src=x/onerror=alert(1)", ""),
        ("<script src=//evil.example/x.js", ""),
        ("&lt;img src=x onerror=alert(1)", ""),
        ("<hermanos onmouseover=alert(1)", ""),
    ],
)
def test_markup_is_still_stripped(sent: str, kept: str) -> None:
    assert clean_text(sent) == kept


_WORD = st.text(st.sampled_from("abcdefghijklmnñopqrstuvwxyzáéíóú"), min_size=1, max_size=8)


@given(st.lists(st.tuples(_WORD, _WORD), min_size=1, max_size=4))
def test_a_bracketed_word_that_names_no_element_is_text(pairs: list[tuple[str, str]]) -> None:
    """`<palabra>` without attributes, for any word that is no HTML element's name (Spanish
    words with an accent or an ñ never are), is kept as sent, and cleaning is idempotent."""
    words = [f"{a}<{b}ñ>" for a, b in pairs]
    text = " ".join(words)
    assert clean_text(text) == text
    assert clean_text(clean_text(text)) == clean_text(text)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("full_name", "first", "last"),
    [
        # Before: "Dr. José" / "García", "Sr. D. José" / "García López", "José María Sr."
        ("Dr. José García", "José", "García"),
        ("Sr. D. José García López", "José", "García López"),
        ("Dña. María López", "María", "López"),
        ("Dª Carmen Vidal Soler", "Carmen", "Vidal Soler"),
        ("Aznar López, José María, Sr.", "José María", "Aznar López"),
        ("Don José García", "José", "García"),
        ("Ing. María José García", "María José", "García"),
        ("Sr. Pérez", None, "Pérez"),  # a form of address goes before a surname
        # Not forms of address: a name, or an initial without its dot.
        ("Don Draper", "Don", "Draper"),
        ("D José García", "D José", "García"),
        ("Da Silva", None, "Da Silva"),
    ],
)
def test_forms_of_address_are_not_part_of_the_name(
    full_name: str, first: str | None, last: str | None
) -> None:
    assert split_full_name(full_name) == SplitName(first, last)


def test_a_full_name_with_a_title_agrees_with_its_halves() -> None:
    assert halves_of_full_name("Dr. José García", "José", "García") == SplitName("José", "García")
    assert halves_of_full_name("García, José, Sr.", "José", None) == SplitName("José", "García")


@pytest.mark.parametrize(
    ("full_name", "first", "last", "kept"),
    [
        # Before: the half as sent won, accents lost ("Jose García", "José Garcia").
        ("José García", "Jose", None, SplitName("José", "García")),
        ("jose garcía", "José", "GARCIA", SplitName("José", "GARCÍA")),
        ("Núñez Pérez, Iñigo", None, "Nunez Perez", SplitName("Iñigo", "Núñez Pérez")),
        # A half with its own accents, or other words, is kept as sent.
        ("Jose Garcia", "José", None, SplitName("José", "Garcia")),
    ],
)
def test_a_half_takes_the_accents_the_full_name_gives_it(
    full_name: str, first: str | None, last: str | None, kept: SplitName
) -> None:
    assert halves_of_full_name(full_name, first, last) == kept


# --- null is "not sent" -------------------------------------------------------------------


async def test_null_for_a_defaulted_field_is_the_default(api: httpx.AsyncClient) -> None:
    """Before: `"status": null`, `"source": null` and `"custom_fields": null` were 422,
    while `null` for every other field meant "not sent"; form builders send `null` for a
    field left empty."""
    lead = {"email": "vacio@ejemplo.es", "status": None, "source": None, "custom_fields": None}
    response = await api.post("/v1/leads", json=lead)
    assert response.status_code == 201, response.text
    shown = (await api.get(f"/v1/leads/{response.json()['id']}")).json()
    assert (shown["status"], shown["source"], shown["custom_fields"]) == ("new", "api", {})
    batch = await api.post("/v1/leads/batch", json={"items": [{**lead, "email": "b@ejemplo.es"}]})
    assert batch.json()["items"][0]["outcome"] == "created", batch.text
    # A wrong value is still refused.
    refused = await api.post("/v1/leads", json={**lead, "status": "ganado"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "/status"


# --- Idempotency-Key in UTF-8 ---------------------------------------------------------------


async def test_an_idempotency_key_is_read_as_utf8(api: httpx.AsyncClient) -> None:
    """Before: `clave-😀` was refused (400, "printable characters"): the header, decoded as
    Latin-1, held the emoji's bytes as control characters. Read as UTF-8 it works, and
    replays under the same key."""
    key = "clave-😀-ñ".encode()
    lead = {"email": "emoji@ejemplo.es"}
    first = await api.post("/v1/leads", json=lead, headers={b"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = await api.post("/v1/leads", json=lead, headers={b"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    bad = await api.post("/v1/leads", json=lead, headers={b"Idempotency-Key": b"a\x07b"})
    assert bad.status_code == 400


# --- bodies that are not plain UTF-8 JSON -------------------------------------------------


async def test_a_utf8_bom_is_ignored_and_another_charset_is_named(api: httpx.AsyncClient) -> None:
    """Before: a body with a UTF-8 BOM got 400 "expected value at line 1 column 1", and
    `charset=utf-16le` 400 "key must be a string" (the charset ignored)."""
    body = '{"email": "bom@ejemplo.es", "first_name": "Begoña"}'
    sent = await api.post(
        "/v1/leads",
        content=b"\xef\xbb\xbf" + body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert sent.status_code == 201, sent.text
    shown = (await api.get(f"/v1/leads/{sent.json()['id']}")).json()
    assert shown["first_name"] == "Begoña"
    utf16 = await api.post(
        "/v1/leads",
        content=body.encode("utf-16-le"),
        headers={"Content-Type": "application/json; charset=utf-16le"},
    )
    assert utf16.status_code == 415
    assert "UTF-8" in utf16.json()["detail"]
    assert "utf-16le" in utf16.json()["detail"]
    fine = await api.post(
        "/v1/leads",
        content=body.replace("bom@", "charset@").encode(),
        headers={"Content-Type": 'application/json; charset="UTF-8"'},
    )
    assert fine.status_code == 201, fine.text


# --- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "region", "stored"),
    [
        # Before: each was refused as "too long" (or "not a valid number").
        ("+34 (0) 612 345 678", "ES", "+34612345678"),
        ("+44 (0)20 7946 0958", "ES", "+442079460958"),
        ("+54 11 4321-5678 interno 123", "AR", "+541143215678;ext=123"),
        ("+56 2 2345 6789 int. 45", "CL", "+56223456789;ext=45"),
        ("044 55 1234 5678", "MX", "+525512345678"),
        ("045 55 1234 5678", "MX", "+525512345678"),
        ("09 6588 3337", "CL", "+56965883337"),  # Chile's mobiles before 2012
        # With an extension after them (they were refused: the old forms took digits
        # only); words without digits after them are still dropped.
        ("09 6588 3337 anexo 12", "CL", "+56965883337;ext=12"),
        ("09 6588 3337 ext. 12", "CL", "+56965883337;ext=12"),
        ("09 6588 3337 (móvil)", "CL", "+56965883337"),
        ("044 55 1234 5678 ext 9", "MX", "+525512345678;ext=9"),
        ("045 55 1234 5678 (cel)", "MX", "+525512345678"),
    ],
)
def test_more_ways_of_writing_a_number_are_read(sent: str, region: str, stored: str) -> None:
    assert normalise_phone(sent, region) == stored
    assert normalise_phone(stored, region) == stored


def test_an_old_mobile_form_with_a_digit_too_many_is_refused() -> None:
    with pytest.raises(NormalisationError):
        normalise_phone("09 6588 3337 5", "CL")


@pytest.mark.parametrize("sent", ["+34 911234567 / 612345678", "911 234 567 y 612 345 678"])
def test_two_numbers_in_one_field_are_named_as_such(sent: str) -> None:
    """Before: "is too long for region ES", which sent people looking for a typo."""
    with pytest.raises(NormalisationError, match="two phone numbers"):
        normalise_phone(sent, "ES")


@pytest.mark.parametrize("sent", ["int. 12", "ext: 12", "interno 12", "Ext.: 12"])
def test_an_extension_field_takes_the_words_a_number_takes(sent: str) -> None:
    """Before: `phone` read `… int. 12` and `… Ext: 12`, `phone_extension` refused both."""
    assert normalise_extension(sent) == "12"
