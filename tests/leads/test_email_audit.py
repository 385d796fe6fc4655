"""Fixes of a black-box audit of the emails (and phones) a Spanish and Latin American
business really receives, through the schema and through the API on both databases:

1. A value that stands for none (`n/a`, `sin correo`, `#N/A`, `-`, `0`, `sin teléfono`)
   and a stand-in address (`test@test.com`, `notiene@gmail.com`, `a@a.com`, anything at
   `example.com`) are no email (phone): a lead with a real phone beside one is kept on
   its phone. They refused the whole lead (30 of 48 rows of a CSV export).
2. An address that cannot be anyone's is refused, with the domain meant: a top-level
   domain IANA does not list (`gmail.con`), a webmail provider's misspelling (`gamil.com`,
   `gmail.com.com`). They were stored, scored +15 as company email, and sent to the CRM.
3. Debris pasted round an address (`juan@x.es;`, `"juan@x.es"`, `Email: juan@x.es`,
   `Juan <juan@x.es>;`, `juan@x.es (oficina)`, a zero-width space or a soft hyphen) is
   taken off; two addresses in one field are told as such; full-width letters are their
   ASCII ones; a mailbox name past 64 characters is refused (RFC 5321).
4. Phones from spreadsheets: `612345678.0` is the number, scientific notation is refused
   saying why, and a number with its country code but no `+` is told which country's it is.
5. `x+tag@hotmail.com.mx` is the lead of `x@hotmail.com.mx` (Outlook.com ignores "+tag"
   under every domain of its own); migration 0021 gives stored leads the folded key.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cauce.core.db import create_database
from cauce.core.db.migrate import upgrade
from cauce.core.jobs.factory import JobWorker
from cauce.leads.errors import NormalisationError
from cauce.leads.normalise import normalise_email
from cauce.leads.phones import normalise_phone
from cauce.leads.placeholders import is_none_phone, is_stand_in_address, says_none
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import validate_lead
from tests.conftest import make_settings

from .import_client import post_csv

PHONE = "612345678"


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _phone() -> str:
    return f"6{uuid.uuid4().int % 10**8:08d}"


def _refusal(raw: str) -> str:
    with pytest.raises(NormalisationError) as info:
        normalise_email(raw)
    assert info.value.code == "email_invalid"
    return info.value.reason


# --- 1. values that stand for none -----------------------------------------------------

NONE_TEXTS = [
    *("-", "--", ".", "?", "#", "0", "no", "No", "n/a", "N/A", "NA", "n.a.", "#N/A", "N/D"),
    *("no tiene", "No Tiene", "no aplica", "sin correo", "Sin e-mail", "sin email", "s/c"),
    *("S/N", "S/D", "ND", "s/correo", "Email", "correo", "NS/NC", "No consta"),
    *("ninguno", "desconocido", "null", "NULL", "None", "NaN", "undefined", "x", "XXX"),
    *("no disponible", "Não tem", "not available", "sin dato", "no informado"),
]


@pytest.mark.parametrize("text", NONE_TEXTS)
def test_an_email_that_says_none_leaves_the_lead_on_its_phone(text: str) -> None:
    lead = validate_lead({"email": text, "phone": PHONE})
    assert isinstance(lead, LeadIn), lead
    assert (lead.email, lead.phone) == (None, "+34612345678")


@pytest.mark.parametrize(
    "address",
    [
        *("test@test.com", "prueba@prueba.es", "correo@correo.com", "sin@correo.com"),
        *("notiene@gmail.com", "no.tiene@hotmail.com", "sin_correo@yahoo.es", "NOMAIL@gmail.com"),
        *("a@a.com", "xxx@xxx.com", "1@1.com", "x@x.es", "ana@example.com", "info@example.org"),
        *("tucorreo@ejemplo.com", "nombre@dominio.com", "usuario@dominio.es"),
    ],
)
def test_a_stand_in_address_is_no_email(address: str) -> None:
    lead = validate_lead({"email": address, "phone": PHONE})
    assert isinstance(lead, LeadIn), lead
    assert lead.email is None


@pytest.mark.parametrize(
    "address",
    [
        # Someone's: a company's test inbox, one-letter names at different letters, a
        # none-word only on one side of a company domain, a name that starts like one.
        *("test@empresa.es", "b@c.es", "a@b.com", "correo@empresa.es", "info@ejemplo.es"),
        *("nadal@gmail.com", "noelia@gmail.com", "sinfonia@empresa.es", "persona1@ejemplo.es"),
        *("nada@hotmail.com", "sin@gmail.com", "na@gmail.com"),  # Nada; a surname (review)
        *("xavi@x.es", "ana@a.es", "nombre@empresa.com"),
    ],
)
def test_addresses_like_stand_ins_are_kept(address: str) -> None:
    lead = validate_lead({"email": address})
    assert isinstance(lead, LeadIn), lead
    assert lead.email == address


@pytest.mark.parametrize(
    "text",
    [
        *("sin teléfono", "Sin Telefono", "N/A", "-", "no tiene", "sin celular", "0"),
        *("000 000 000", "00000", "(0)", "+0", "sin móvil", "#N/A", "sin número"),
        *("S/N", "S/D", "ND", "Tel", "Celular", "s/tel"),
    ],
)
def test_a_phone_that_says_none_leaves_the_lead_on_its_email(text: str) -> None:
    lead = validate_lead({"email": "ana@empresa.es", "phone": text})
    assert isinstance(lead, LeadIn), lead
    assert (lead.email, lead.phone) == ("ana@empresa.es", None)


def test_both_saying_none_is_a_lead_without_contact() -> None:
    errors = validate_lead({"email": "n/a", "phone": "sin teléfono"})
    assert not isinstance(errors, LeadIn)
    assert {(e["pointer"], e["type"]) for e in errors} == {
        ("/email", "contact_required"),
        ("/phone", "contact_required"),
    }


@pytest.mark.parametrize(
    "text", ["juan", "no es un email", "juan.gmail.com", "sin correo pero 612345678", "n/a2"]
)
def test_other_text_without_an_address_is_still_refused(text: str) -> None:
    errors = validate_lead({"email": text, "phone": PHONE})
    assert not isinstance(errors, LeadIn)
    assert [(e["pointer"], e["type"]) for e in errors] == [("/email", "email_invalid")]


@pytest.mark.parametrize("text", ["612 345 678", "0 612 345 678", "1", "no 612345678", "O"])
def test_numbers_and_other_text_are_no_none_phone(text: str) -> None:
    assert not is_none_phone(text)


@given(st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_a_word_outside_the_none_words_is_never_none(word: str) -> None:
    """Only the listed words (and punctuation) say none: any other word beside them keeps
    the value what it was."""
    if says_none(f"no {word}"):
        return  # the word is one of them, or one that goes with them
    assert not says_none(f"n/a {word}")
    assert not says_none(f"{word} sin correo")


def test_stand_in_check_reads_the_normalised_address() -> None:
    assert is_stand_in_address("notiene@gmail.com", webmail=True)
    assert not is_stand_in_address("notiene@empresa.es", webmail=False)


# --- 2. addresses that cannot be anyone's --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "meant"),
    [
        *(("ana@gmai.com", "gmail.com"), ("ana@gamil.com", "gmail.com")),
        *(("ana@gnail.com", "gmail.com"), ("ana@gmaill.com", "gmail.com")),
        *(("ana@gmial.com", "gmail.com"), ("ana@hotmal.com", "hotmail.com")),
        *(("ana@homail.com", "hotmail.com"), ("ana@hotmial.com", "hotmail.com")),
        *(("ana@outlok.es", "outlook.es"), ("ana@yahooo.com", "yahoo.com")),
        *(("ana@yaoo.es", "yahoo.es"), ("ana@gmail.com.com", "gmail.com")),
        *(("ana@hotmail.es.es", "hotmail.es"), ("ana@icloud.con", "icloud.com")),
    ],
)
def test_a_webmail_providers_misspelling_is_refused_with_the_domain_meant(
    raw: str, meant: str
) -> None:
    assert _refusal(raw).endswith(f"(did you mean {meant}?)")


@pytest.mark.parametrize(
    "domain",
    [
        # Providers of their own, one slip from a big one; and real country domains.
        *("mail.com", "email.com", "ymail.com", "gmx.es", "gmail.co", "hotmail.co"),
        *("yahoo.com.mx", "hotmail.com.mx", "outlook.com.ar", "hotmart.com", "gmailer.es"),
        # A slip at the first letter is most often another name (review).
        *("cloud.com", "pcloud.com", "xcloud.es", "wahoo.com", "email.es", "kmail.com"),
    ],
)
def test_domains_near_a_provider_that_are_real_are_kept(domain: str) -> None:
    assert normalise_email(f"ana@{domain}").domain == domain


# --- 3. pasted debris, two addresses, full-width letters, long mailbox names ------------

DEBRIS = [
    *("{a};", "{a},", "{a}.", "{a}..", "{a}。", "{a}\t;", " ;{a}"),
    *('"{a}"', "'{a}'", "“{a}”", "«{a}»", "({a})", "[{a}]", "<{a}>"),
    *("Juan Pérez <{a}>;", '"Pérez, Juan" <{a}>,', "mailto:{a}?subject=Hola"),
    *("Email: {a}", "E-mail: {a}", "Correo electrónico: {a}", "correo: {a}"),
    *("{a} (oficina)", "\u200b{a}", "{a}\ufeff", "\u200e{a}\u200f"),
]


@pytest.mark.parametrize("form", DEBRIS)
def test_debris_round_an_address_is_taken_off(form: str) -> None:
    assert normalise_email(form.format(a="Juan.Perez@Empresa.es")).address == (
        "juan.perez@empresa.es"
    )


def test_invisible_characters_inside_an_address_are_taken_off() -> None:
    assert normalise_email("ju\u200ban@empresa.es").address == "juan@empresa.es"
    assert normalise_email("ju\u00adan@empre\u00adsa.es").address == "juan@empresa.es"


@given(st.emails())
@settings(max_examples=200, deadline=None)
def test_debris_never_changes_the_address_it_wraps(address: str) -> None:
    try:
        plain = normalise_email(address)
    except NormalisationError:
        return  # not an address Cauce takes (a special-use domain, say)
    for form in ("{a};", '"{a}"', "Email: {a}", "{a} (casa)", "<{a}>,"):
        assert normalise_email(form.format(a=address)) == plain


@pytest.mark.parametrize(
    "raw",
    [
        *("a@x.com; b@y.com", "a@x.com, b@y.com", "a@x.com / b@y.com", "a@x.com y b@y.com"),
        *("a@x.com b@y.com", "a@x.com|b@y.com", "Juan <a@x.com>, Ana <b@y.com>"),
    ],
)
def test_two_addresses_in_one_field_are_told_as_such(raw: str) -> None:
    assert (
        _refusal(raw) == "holds more than one email address; send one (another in a custom field)"
    )


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("\uff43\uff13@empresa.com", "c3@empresa.com"),
        ("juan\uff20gmail\uff0ecom", "juan@gmail.com"),
    ],
)
def test_full_width_letters_are_their_ascii_ones(raw: str, address: str) -> None:
    assert normalise_email(raw).address == address


def test_a_mailbox_name_past_64_characters_is_refused() -> None:
    assert normalise_email("x" * 64 + "@empresa.es").address == "x" * 64 + "@empresa.es"
    for raw in ("x" * 65 + "@empresa.es", "josé" + "x" * 61 + "@empresa.es"):
        assert "the part before the @-sign is longer than 64 bytes" in _refusal(raw)


# --- 4. phones from spreadsheets -----------------------------------------------------------


@pytest.mark.parametrize("raw", ["612345678.0", "612345678,00", "34612345678.0", "+34612345678.0"])
def test_a_number_a_spreadsheet_wrote_with_decimals_is_the_number(raw: str) -> None:
    assert normalise_phone(raw, "ES") == "+34612345678"


@pytest.mark.parametrize("raw", ["3,46123E+10", "6.12E+08", "6.1234567891E+08"])
def test_a_number_in_scientific_notation_without_its_digits_is_refused_saying_why(
    raw: str,
) -> None:
    with pytest.raises(NormalisationError) as info:
        normalise_phone(raw, "ES")
    assert "scientific notation that the spreadsheet rounded" in info.value.reason
    assert "format the column as text" in info.value.reason


@pytest.mark.parametrize("raw", ["6.12345678E+08", "6,12345678e8", "3.4612345678E+10"])
def test_a_number_in_scientific_notation_with_all_its_digits_is_read(raw: str) -> None:
    """As a CSV import reads it (review: the API refused what the import took)."""
    assert normalise_phone(raw, "ES") == "+34612345678"


@pytest.mark.parametrize(
    ("raw", "region", "told"),
    [
        ("1-305-555-1234", "MX", "a valid number of US (+1)"),
        ("52 55 1234 5678", "ES", "a valid number of MX (+52)"),
        ("573001234567", "ES", "a valid number of CO (+57)"),
        ("5255 1234 5678 ext 12", "ES", "a valid number of MX (+52)"),
    ],
)
def test_a_foreign_number_without_its_plus_is_told_whose_it_is(
    raw: str, region: str, told: str
) -> None:
    with pytest.raises(NormalisationError) as info:
        normalise_phone(raw, region)
    assert info.value.reason.endswith(f"with + before it, it is {told})")
    assert "1234" not in info.value.reason  # the digits are not echoed


def test_a_long_number_that_is_no_country_s_gets_no_guess() -> None:
    with pytest.raises(NormalisationError) as info:
        normalise_phone("12345678901234", "ES")
    assert "with + before it" not in info.value.reason


# --- through the API, on both databases ----------------------------------------------------


async def test_the_api_keeps_a_lead_whose_email_says_none(api: httpx.AsyncClient) -> None:
    phone = _phone()
    created = await api.post("/v1/leads", json={"email": "sin correo", "phone": phone})
    assert created.status_code == 201, created.text
    lead = (await api.get(f"/v1/leads/{created.json()['id']}")).json()
    assert (lead["email"], lead["phone"]) == (None, f"+34{phone}")


async def test_the_api_refuses_a_misspelt_domain_naming_the_one_meant(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/leads", json={"email": "ana.ruiz@gmail.con", "phone": _phone()})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["pointer"], error["type"]) == ("/email", "email_invalid")
    assert error["detail"].endswith("(did you mean gmail.com?)")
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": "Email: " + _email() + ";"}, {"email": "ana@gamil.com"}]},
    )
    assert batch.status_code == 200, batch.text
    outcomes = [item["outcome"] for item in batch.json()["items"]]
    assert outcomes == ["created", "rejected"]
    assert batch.json()["items"][1]["errors"][0]["detail"].endswith("(did you mean gmail.com?)")


async def test_a_csv_export_with_placeholders_is_imported_on_what_it_has(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """The audit's CSV: placeholders beside real phones or emails were 30 of 48 rows
    rejected. Now each row with one real contact is a lead; a typo domain is the one row
    rejected, its report saying which domain was meant."""
    phones = [_phone() for _ in range(4)]
    email = _email()
    rows = [
        ("Ana", "n/a", phones[0]),
        ("Luis", "sin correo", phones[1]),
        ("Eva", "#N/A", phones[2]),
        ("Marta", email, "sin teléfono"),
        ("Pablo", "pablo@hotmial.com", phones[3]),
        ("Nadie", "-", "-"),
    ]
    data = "Nombre;Correo;Teléfono\n" + "".join(";".join(row) + "\n" for row in rows)
    response = await post_csv(api, data.encode())
    assert response.status_code == 202, response.text
    await worker.run_until_idle(60)
    status = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    assert (status["state"], status["rows_created"], status["rows_rejected"]) == ("succeeded", 4, 2)
    report = (await api.get(status["error_report_url"])).content.decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(report, newline=""), delimiter=";"))
    assert [line[0] for line in lines[1:]] == ["6", "7", "7"]  # the header is line 1
    assert "(did you mean hotmail.com?)" in lines[1][3]
    marta = (await api.get("/v1/leads", params={"q": email})).json()["items"]
    assert [(lead["first_name"], lead["phone"]) for lead in marta] == [("Marta", None)]
    ana = (await api.get("/v1/leads", params={"q": phones[0]})).json()["items"]
    assert [(lead["first_name"], lead["email"]) for lead in ana] == [("Ana", None)]


# --- 5. Outlook.com's "+tag" under a country's domain ----------------------------------


@pytest.mark.parametrize("domain", ["hotmail.com.mx", "outlook.com.ar", "live.cl", "hotmail.co"])
async def test_a_tagged_outlook_address_abroad_is_the_untagged_lead(
    api: httpx.AsyncClient, domain: str
) -> None:
    """`x+tag@hotmail.com.mx` is `x@hotmail.com.mx`, as at hotmail.com (two leads before)."""
    mailbox = f"ana.{uuid.uuid4().hex[:8]}"
    first = await api.post("/v1/leads", json={"email": f"{mailbox}@{domain}"})
    again = await api.post("/v1/leads", json={"email": f"{mailbox}+ofertas@{domain}"})
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"]


async def test_migration_0021_adds_the_folded_key_of_stored_tagged_addresses(
    empty_database_url: str, tmp_path: Path
) -> None:
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    insert = text(
        "INSERT INTO leads (uid, email, status, source, score, score_model, version,"
        " sync_status, synced_version, sync_attempts, email_disposable, email_free, utm,"
        " custom_fields, score_reasons, match_keys, search_text, created_at, updated_at)"
        " VALUES (:uid, :email, 'new', 'api', 0, 'points', 1, 'pending', 0, 0, false, true,"
        " '{}', '{}', '[]', '[]', '', :now, :now)"
    )
    keys = [
        "e:ana+ofertas@hotmail.com.mx",  # folded: ana@hotmail.com.mx
        "e:luis+x+y@live.cl",  # folded: luis@live.cl
        "e:eva+news@yahoo.com.mx",  # Yahoo keeps its tags: unchanged
        "e:+solo@outlook.com.ar",  # nothing before the tag: unchanged
        "p:+34612345678",
    ]
    read = text("SELECT key FROM lead_match_keys ORDER BY key")
    try:
        await upgrade(db, "0020")
        async with db.engine.begin() as conn:
            await conn.execute(insert, {"uid": "a", "email": "ana@x.es", "now": datetime.now(UTC)})
            lead_id = (await conn.execute(text("SELECT id FROM leads"))).scalar_one()
            await conn.execute(
                text("INSERT INTO lead_match_keys (lead_id, key) VALUES (:id, :key)"),
                [{"id": lead_id, "key": key} for key in keys],
            )
        await upgrade(db)
        async with db.engine.connect() as conn:
            stored = [row[0] for row in (await conn.execute(read)).all()]
        assert stored == sorted([*keys, "e:ana@hotmail.com.mx", "e:luis@live.cl"])
    finally:
        await db.dispose()


# --- 6. other fields that say none; regions in the country box -------------------------


@pytest.mark.parametrize(
    "text",
    [
        *("N/A", "-", "no tiene", "#N/A", "Sin empresa", "?", "null", "No consta"),
        *("Empresa no especificada", "Ciudad no indicada", "Sin información", "NS/NC"),
        *("Sem empresa", "Não se aplica", "Company: N/A", "Not specified", "!!!"),
    ],
)
def test_a_company_title_or_place_that_says_none_is_no_value(text: str) -> None:
    """`N/A` as company scored as a company given, and two leads with it agreed on a
    field beyond names: evidence they were one person."""
    fields = ("company", "job_title", "city", "region")
    lead = validate_lead({"email": _email(), **dict.fromkeys(fields, text)})
    assert isinstance(lead, LeadIn), lead
    assert [getattr(lead, field) for field in fields] == [None] * len(fields)


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("company", "Nada S.L."),
        ("company", "X Corp."),
        ("city", "Noja"),
        ("first_name", "Nada"),  # a given name
        ("last_name", "Na"),  # a Korean surname
        ("job_title", "Director de empresa"),
        ("region", "NA"),  # Navarra's code
        ("region", "NT"),  # Northern Territory
        ("region", "SC"),
        ("city", "No"),
        # Alone, a none word is most often a name (second review).
        *(("city", "None"), ("city", "Nan"), ("city", "Nada"), ("company", "X")),
        *(("company", "Nil"), ("company", "NADA"), ("company", "Sin"), ("company", "★")),
        *(("owner", "Nil"), ("owner", "Nada"), ("owner", "x"), ("company", "🍎")),
    ],
)
def test_values_with_none_words_in_them_are_kept(field: str, text: str) -> None:
    """An owner named Nil was read as none, and a PATCH re-routed the lead."""
    lead = validate_lead({"email": _email(), field: text})
    assert isinstance(lead, LeadIn), lead
    assert getattr(lead, field) == text


@pytest.mark.parametrize(
    ("text", "code"),
    [
        *(("N/A", None), ("-", None), ("Sin país", None), ("desconocido", None)),
        *(("NA", "NA"), ("no", "NO")),  # codes first: Namibia, Norway
        *(("Galicia", "ES"), ("Asturias", "ES"), ("Illes Balears", "ES"), ("Oaxaca", "MX")),
        *(("Querétaro", "MX"), ("Yucatán", "MX"), ("Buenos Aires", "AR"), ("Bogotá", "CO")),
        *(("Murcia", "ES"), ("Guerrero", "MX")),
    ],
)
def test_the_country_box_reads_none_and_regions(text: str, code: str | None) -> None:
    lead = validate_lead({"email": _email(), "country": text})
    assert isinstance(lead, LeadIn), lead
    assert lead.country == code


def test_a_language_that_says_none_is_none_and_a_code_is_a_code() -> None:
    for raw, tag in (("-", None), ("N/A", None), ("no", "no"), ("ES", "es")):
        lead = validate_lead({"email": _email(), "language": raw})
        assert isinstance(lead, LeadIn), lead
        assert lead.language == tag


@pytest.mark.parametrize("text", ["ΠΑΠΑΔΌΠΟΥΛΟΣ \u0391.\u0395.", "Женя", "株式会社", "١٢٣"])
def test_text_in_another_script_never_says_none(text: str) -> None:
    assert not says_none(text)


@pytest.mark.parametrize("text", ["Empresa", "Cargo", "Cargo 0", "Correo", "Estado", "A"])
def test_words_that_only_go_with_a_none_word_say_nothing_alone(text: str) -> None:
    assert not says_none(text)


# --- 7. from a review ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "meant"),
    [
        ("juan@gmail.con;", "gmail.com"),
        ('"ana@hotmial.com"', "hotmail.com"),
        ("Email: ana@gamil.com", "gmail.com"),
    ],
)
def test_debris_round_a_misspelt_address_keeps_the_guess(raw: str, meant: str) -> None:
    assert _refusal(raw).endswith(f"(did you mean {meant}?)")


def test_outlooks_copy_of_an_address_without_a_name_is_one_address() -> None:
    assert normalise_email("ana@empresa.es <ana@empresa.es>;").address == "ana@empresa.es"


@pytest.mark.parametrize("raw", ["mª.jose@empresa.es", "jose²@empresa.es", "ﬁnanzas@empresa.es"])
def test_only_full_width_forms_are_folded(raw: str) -> None:
    """Full NFKC gave `ma.jose@`, `jose2@`, `finanzas@`: other mailboxes than the one sent."""
    assert normalise_email(raw).address == raw


def test_a_correo_e_label_is_taken_off() -> None:
    assert normalise_email("Correo-e: ana@empresa.es").address == "ana@empresa.es"


def test_a_name_in_another_script_in_the_email_box_is_refused_not_dropped() -> None:
    errors = validate_lead({"email": "Иван Петров", "phone": PHONE})
    assert not isinstance(errors, LeadIn)
    assert [e["type"] for e in errors] == ["email_invalid"]


def test_contact_required_says_a_none_value_counts_as_none() -> None:
    errors = validate_lead({"email": "test@test.com"})
    assert not isinstance(errors, LeadIn)
    assert errors[0]["detail"] == (
        "at least one of email or phone is required (one that is empty or stands for none,"
        " such as n/a or test@test.com, counts as none)"
    )


async def test_a_patch_refuses_a_stand_in_address_and_clears_on_none(
    api: httpx.AsyncClient,
) -> None:
    """A PATCH of `test@test.com` cleared the email without a word (review); `n/a`
    clears it as a blank does, and a lead left without contact is refused."""
    created = await api.post("/v1/leads", json={"email": _email(), "phone": _phone()})
    uid = created.json()["id"]
    stand_in = await api.patch(f"/v1/leads/{uid}", json={"email": "test@test.com"})
    assert stand_in.status_code == 422, stand_in.text
    [error] = stand_in.json()["errors"]
    assert (error["pointer"], error["type"]) == ("/email", "email_invalid")
    assert "stand-in address" in error["detail"]
    cleared = await api.patch(f"/v1/leads/{uid}", json={"email": "n/a"})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["email"] is None
    alone = await api.patch(f"/v1/leads/{uid}", json={"phone": "sin teléfono"})
    assert alone.status_code == 422, alone.text


def test_an_owner_of_marks_alone_is_none_and_na_in_a_company_is_none() -> None:
    lead = validate_lead({"email": _email(), "owner": "-", "company": "NA", "job_title": "NA"})
    assert isinstance(lead, LeadIn), lead
    assert (lead.owner, lead.company, lead.job_title) == (None, None, None)


@pytest.mark.parametrize("text", ["La Rioja", "Valencia", "Durango"])
def test_regions_other_countries_share_are_not_read_as_a_country(text: str) -> None:
    """La Rioja is an Argentine province too: a +54 lead became Spain's (second review)."""
    errors = validate_lead({"email": _email(), "country": text})
    assert not isinstance(errors, LeadIn)
    assert [e["type"] for e in errors] == ["country_unknown"]


def test_a_short_decimal_is_no_spreadsheet_phone() -> None:
    with pytest.raises(NormalisationError) as info:
        normalise_phone("4312.0000", "AR")
    assert "too short" not in info.value.reason
