"""Fixes of an audit of the running API's validation, each through the schema (property
based) and through the API on both databases:

1. A text far past its field's limit (past the 64 KiB refused before cleaning) is told
   the field's own limit, with the error type and pointer of one character too many;
   it used to be told "at most 65536 characters".
2. A `full_name` sent with `first_name`/`last_name` must agree with them (the same words
   once folded for case, accents and spacing, given name(s) then surname(s), or
   `Surname(s), Given name(s)`): a half not sent is the rest of the full name, and a
   disagreement is a 422 at `/full_name`. The full name used to be dropped without a
   word (it is not stored: the halves compose it).
3. `options` of an import that are not an object, or an option other than the mapping
   that is wrong, are `import_options_invalid`, not a mapping error.
4. A phone with an extension used to be kept without it; it is now stored with it
   (`tests/leads/test_phone_extensions.py`).
"""

from __future__ import annotations

import csv
import io
import unicodedata
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cauce.core.jobs.factory import JobWorker
from cauce.leads.errors import FieldError
from cauce.leads.names import compose_full_name, drop_titles, halves_of_full_name
from cauce.leads.normalise import MAX_RAW_TEXT
from cauce.leads.schemas import MAX_CUSTOM_VALUE_BYTES, LeadIn, LeadPatch
from cauce.leads.schemas_batch import field_errors, validate_batch, validate_lead

PROBLEM = "application/problem+json"


def _errors(payload: dict[str, Any]) -> list[FieldError]:
    outcome = validate_lead(payload)
    assert not isinstance(outcome, LeadIn), "expected the payload to be rejected"
    return outcome


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _problem(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    return body


# --- 1. a text's length error names the field's own limit ---------------------------------

# (path in the lead, limit) of every length-limited text field.
TEXT_LIMITS: list[tuple[tuple[str, ...], int]] = [
    (("first_name",), 100),
    (("last_name",), 100),
    (("full_name",), 201),
    (("company",), 200),
    (("job_title",), 150),
    (("region",), 100),
    (("city",), 100),
    (("owner",), 100),
    (("external_id",), 200),
    *((("utm", key), 255) for key in ("source", "medium", "campaign", "term", "content")),
    (("consent", "wording_version"), 255),
    (("consent", "source"), 255),
]


def _lead_with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {"email": "ana@empresa.es"}
    if len(path) == 1:
        lead[path[0]] = value
    elif path[0] == "consent":
        lead["consent"] = {"marketing": False, path[1]: value}
    else:
        lead[path[0]] = {path[1]: value}
    return lead


@given(
    st.sampled_from(TEXT_LIMITS),
    st.integers(1, 3 * MAX_RAW_TEXT),
    st.sampled_from(["x", "ñ", "李", "😀"]),
)
@settings(max_examples=150, deadline=None)
@example(TEXT_LIMITS[0], 70_000 - 100, "x")  # the audit's first_name
@example((("company",), 200), MAX_RAW_TEXT + 1 - 200, "x")
def test_a_text_too_long_is_told_its_fields_own_limit(
    field: tuple[tuple[str, ...], int], extra: int, char: str
) -> None:
    """Any text past a field's limit, far past it or by one, gets `text_too_long` at the
    field saying the field's limit, whichever check refused it."""
    path, limit = field
    errors = _errors(_lead_with(path, char * (limit + extra)))
    pointer = "/" + "/".join(path)
    assert errors == [
        {
            "pointer": pointer,
            "detail": f"must be at most {limit} characters",
            "type": "text_too_long",
        }
    ]


@given(st.integers(MAX_CUSTOM_VALUE_BYTES + 1, 3 * MAX_RAW_TEXT))
@settings(max_examples=50, deadline=None)
@example(70_000)
def test_a_custom_value_too_long_is_told_its_byte_limit(length: int) -> None:
    """A custom field's text far past its 1 KiB gets the same error as one byte past it."""
    errors = _errors({"email": "ana@empresa.es", "custom_fields": {"notas": "x" * length}})
    assert errors == [
        {
            "pointer": "/custom_fields/notas",
            "detail": f"must be at most {MAX_CUSTOM_VALUE_BYTES} bytes (UTF-8)",
            "type": "custom_field_value_too_long",
        }
    ]


async def test_the_api_names_the_fields_limit_for_a_huge_text(api: httpx.AsyncClient) -> None:
    """The audit's requests: a 70,000-character first name alone, and a 15 MiB company in
    a batch item, are told their field's limit, as 101 characters are."""
    for length in (101, 70_000):
        response = await api.post("/v1/leads", json={"email": _email(), "first_name": "x" * length})
        errors = _problem(response)["errors"]
        assert errors == [
            {
                "pointer": "/first_name",
                "detail": "must be at most 100 characters",
                "type": "text_too_long",
            }
        ]
    items = [{"email": _email()}, {"email": _email(), "company": "x" * (15 * 1024 * 1024)}]
    batch = await api.post("/v1/leads/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    rejected = batch.json()["items"][1]
    assert rejected["outcome"] == "rejected"
    assert rejected["errors"] == [
        {
            "pointer": "/items/1/company",
            "detail": "must be at most 200 characters",
            "type": "text_too_long",
        }
    ]
    assert batch.json()["items"][0]["outcome"] == "created"


# --- 2. full_name and first/last name sent together --------------------------------------

# Name words: letters with and without accents, a hyphen or an apostrophe inside.
# A name's word: never a form of address (`Dr`, `Sra`, `Don`), which names drop.
WORD = st.from_regex(r"[A-Za-zÁÉÍÓÚáéíóúÑñÜü]{1,8}([-'][A-Za-zñáé]{1,6})?", fullmatch=True).filter(
    lambda word: drop_titles([word, "Ana", "Ruiz"]) == [word, "Ana", "Ruiz"]
)
WORDS = st.lists(WORD, min_size=1, max_size=3)


def _unaccented(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    )


@st.composite
def respelt(draw: st.DrawFn, words: list[str]) -> str:
    """The words as another source may spell them: other case, no accents, more spaces."""
    out = []
    for word in words:
        word = draw(st.sampled_from([word, word.upper(), word.lower(), _unaccented(word)]))
        out.append(word)
    gaps = [draw(st.sampled_from([" ", "  ", "\t"])) for _ in out[1:]]
    text = out[0] + "".join(gap + word for gap, word in zip(gaps, out[1:], strict=True))
    return draw(st.sampled_from(["", " "])) + text


def _sent_alone(first: list[str], last: list[str]) -> tuple[str, str]:
    lead = LeadIn.model_validate(
        {"email": "a@empresa.es", "first_name": " ".join(first), "last_name": " ".join(last)}
    )
    assert lead.first_name is not None
    assert lead.last_name is not None
    return lead.first_name, lead.last_name


@given(WORDS, WORDS, st.data())
@settings(max_examples=200, deadline=None)
def test_a_full_name_that_agrees_with_first_and_last_name_is_taken(
    first: list[str], last: list[str], data: st.DataObject
) -> None:
    """A full name of the same words as first + last name, however spelt (case, accents,
    spacing) or turned round with a comma, keeps the halves as sent."""
    halves = _sent_alone(first, last)
    full = data.draw(respelt(first + last))
    if data.draw(st.booleans()):
        full = f"{data.draw(respelt(last))}, {data.draw(respelt(first))}"
    lead = LeadIn.model_validate(
        {
            "email": "a@empresa.es",
            "first_name": " ".join(first),
            "last_name": " ".join(last),
            "full_name": full,
        }
    )
    assert (lead.first_name, lead.last_name) == halves


def _folded(text: str | None) -> list[str]:
    return [_unaccented(w).casefold() for w in (text or "").split()]


def _letters(text: str) -> str:
    return "".join(c for c in _unaccented(text).casefold() if c.isalnum())


@given(WORDS, WORDS, st.sampled_from(["first_name", "last_name"]), st.data())
@settings(max_examples=200, deadline=None)
@example(["Carmen"], ["Vidal", "Soler"], "first_name", None)
def test_a_full_name_sent_with_one_half_gives_the_other_half_the_rest(
    first: list[str], last: list[str], sent: str, data: st.DataObject | None
) -> None:
    """With only the first (last) name, the full name's other words are the last (first)
    name: no word of it is lost, and the half sent stays as sent."""
    full = " ".join(first + last) if data is None else data.draw(respelt(first + last))
    half = " ".join(first if sent == "first_name" else last)
    lead = LeadIn.model_validate({"email": "a@empresa.es", sent: half, "full_name": full})
    alone = LeadIn.model_validate({"email": "a@empresa.es", sent: half})
    assert getattr(lead, sent) == getattr(alone, sent)
    assert _folded(compose_full_name(lead.first_name, lead.last_name)) == _folded(full)
    assert _folded(lead.last_name if sent == "first_name" else lead.first_name) == _folded(
        " ".join(last if sent == "first_name" else first)
    )


@given(WORDS, WORDS, WORD, st.sampled_from(["add", "replace", "swap"]))
@settings(max_examples=200, deadline=None)
@example(["X"], ["Ruiz"], "Carmen", "add")
@example(["A"], ["AA"], "A", "swap")  # once taken for a disagreement (CI, random seed)
@example(["A"], ["AAAAA'A"], "AAAAA-A", "replace")
def test_a_full_name_that_disagrees_is_refused_at_full_name(
    first: list[str], last: list[str], other: str, change: str
) -> None:
    """A full name with a word more, a word changed, or the halves in the other order
    (without a comma) is a 422 at `/full_name`, not a name dropped or guessed; so is
    one that does not start with the first name sent alone."""
    if change == "add":
        words = [*first, other, *last]
    elif change == "replace":
        # A word that differs only by its punctuation (`O'Neil`, `O-Neil`) is the same
        # name typed another way, and agrees (once drawn in CI: `AAAAA-A` for `AAAAA'A`).
        if _letters(other) == _letters(last[-1]):
            return
        words = [*first, *last[:-1], other]
    else:
        words = [*last, *first]
        # The same letters either way round ("AA A" and "A AA"): a name read without its
        # spaces ("Delafuente" for "De la Fuente") cannot tell the two orders apart.
        if _folded("".join(words)) == _folded("".join(first + last)):
            return
    sent = {
        "first_name": " ".join(first),
        "last_name": " ".join(last),
        "full_name": " ".join(words),
    }
    payloads = [sent]
    if _folded(other) != _folded(first[0]):
        payloads.append({"first_name": " ".join(first), "full_name": " ".join([other, *last])})
    for payload in payloads:
        errors = _errors({"email": "a@empresa.es", **payload})
        assert [(e["pointer"], e["type"]) for e in errors] == [("/full_name", "full_name_mismatch")]
        assert "send either full_name or first_name/last_name" in errors[0]["detail"]
        with pytest.raises(ValidationError) as info:
            LeadPatch.model_validate(payload)
        assert [(e["pointer"], e["type"]) for e in field_errors(info.value)] == [
            ("/full_name", "full_name_mismatch")
        ]


@given(st.lists(WORD, min_size=1, max_size=4), st.lists(WORD, min_size=1, max_size=4))
@settings(deadline=None)
@example(["A"], ["A", "A"])  # "A A, A" with first name "A": the comma decides
def test_halves_of_a_full_name_are_found_by_their_words(first: list[str], last: list[str]) -> None:
    """`halves_of_full_name` of first + last name gives them back, from either half."""
    full, given_, family = " ".join(first + last), " ".join(first), " ".join(last)
    assert halves_of_full_name(full, given_, family) == (given_, family)
    assert halves_of_full_name(full, given_, None) == (given_, family)
    assert halves_of_full_name(full, None, family) == (given_, family)
    assert halves_of_full_name(f"{family}, {given_}", given_, None) == (given_, family)
    assert halves_of_full_name(f"{family}, {given_}", None, family) == (given_, family)


def test_a_full_name_whose_halves_are_too_long_is_refused() -> None:
    """A full name alone that splits into a half longer than a name field is refused at
    `/full_name` (it used to be kept nowhere); so is one that would leave such a rest."""
    for payload in (
        {"full_name": "x" * 150 + " " + "y" * 40},
        {"first_name": "Ana", "full_name": "Ana " + "y" * 150},
    ):
        errors = _errors({"email": "a@empresa.es", **payload})
        assert [(e["pointer"], e["type"]) for e in errors] == [("/full_name", "text_too_long")]
        assert "100 characters" in errors[0]["detail"]


def test_a_batch_names_the_item_whose_full_name_disagrees() -> None:
    """In a batch the disagreement points at `/items/{i}/full_name`; the others pass."""
    checked = validate_batch(
        [
            {"email": "a@b.es", "first_name": "Ana", "full_name": "Ana Ruiz"},
            {
                "email": "c@d.es",
                "first_name": "X",
                "last_name": "Ruiz",
                "full_name": "Carmen Vidal Soler",
            },
        ]
    )
    assert [index for index, _ in checked.valid] == [0]
    [bad] = checked.invalid
    assert [e["pointer"] for e in bad.errors] == ["/items/1/full_name"]


async def test_the_api_refuses_a_full_name_that_disagrees(api: httpx.AsyncClient) -> None:
    """The audit's POST and PATCH are 422 problems at `/full_name` and change nothing; a
    full name that agrees is taken, and one sent with the first name only fills the last
    name (POST and PATCH)."""
    email = _email()
    refused = await api.post(
        "/v1/leads",
        json={
            "email": email,
            "first_name": "X",
            "last_name": "Ruiz",
            "full_name": "Carmen Vidal Soler",
        },
    )
    body = _problem(refused)
    assert [(e["pointer"], e["type"]) for e in body["errors"]] == [
        ("/full_name", "full_name_mismatch")
    ]
    created = await api.post(
        "/v1/leads",
        json={"email": email, "first_name": "Carmen", "full_name": "carmen vidal soler"},
    )
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    lead = (await api.get(f"/v1/leads/{uid}")).json()
    assert (lead["first_name"], lead["last_name"], lead["full_name"]) == (
        "Carmen",
        "Vidal Soler",
        "Carmen Vidal Soler",
    )
    patch = await api.patch(
        f"/v1/leads/{uid}", json={"full_name": "Carmen Vidal Soler", "first_name": "X"}
    )
    assert [e["pointer"] for e in _problem(patch)["errors"]] == ["/full_name"]
    unchanged = (await api.get(f"/v1/leads/{uid}")).json()
    assert (unchanged["first_name"], unchanged["last_name"]) == ("Carmen", "Vidal Soler")
    agreed = await api.patch(
        f"/v1/leads/{uid}",
        json={"full_name": "Vidal Sánchez, María Carmen", "first_name": "María Carmen"},
    )
    assert agreed.status_code == 200, agreed.text
    assert (agreed.json()["first_name"], agreed.json()["last_name"]) == (
        "María Carmen",
        "Vidal Sánchez",
    )


async def test_a_csv_full_name_column_beside_a_first_name_column(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """ "Nombre completo" beside "Nombre": a row where they agree keeps every word (the
    rest of the full name is the last name); one where they disagree is rejected, its
    report line naming the "Nombre completo" column; a row without "Nombre" is split."""
    emails = [_email() for _ in range(4)]
    rows = [
        ("Carmen", "Carmen Vidal Soler", emails[0]),
        ("Luis", "Ruiz Gil, Luis", emails[1]),
        ("Ana", "Carmen Vidal Soler", emails[2]),
        ("", "Jorge Martín Sanz", emails[3]),
    ]
    text = "Nombre;Nombre completo;Email\n" + "".join(";".join(row) + "\n" for row in rows)
    response = await api.post(
        "/v1/leads/import", files={"file": ("leads.csv", text.encode(), "text/csv")}
    )
    assert response.status_code == 202, response.text
    await worker.run_until_idle(60)
    status = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    assert (status["state"], status["rows_created"], status["rows_rejected"]) == ("succeeded", 3, 1)
    report = await api.get(status["error_report_url"])
    text = report.content.decode("utf-8-sig")  # in the upload's delimiter
    lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    assert [line[:3] for line in lines[1:]] == [["4", "Nombre completo", "full_name"]]
    assert "send either full_name or first_name/last_name" in lines[1][3]
    names = {}
    for email in (emails[0], emails[1], emails[3]):
        [lead] = (await api.get("/v1/leads", params={"q": email})).json()["items"]
        names[email] = (lead["first_name"], lead["last_name"])
    assert names == {
        emails[0]: ("Carmen", "Vidal Soler"),
        emails[1]: ("Luis", "Ruiz Gil"),
        emails[3]: ("Jorge", "Martín Sanz"),
    }


# --- 3. import options that are not a mapping problem --------------------------------------


@pytest.mark.parametrize(
    ("options", "code", "errors"),
    [
        ("[1]", "import_options_invalid", [("/options", "model_type")]),
        ('{"x": 1}', "import_options_invalid", [("/options/x", "extra_forbidden")]),
        ('{"delimiter": ":"}', "import_options_invalid", [("/options/delimiter", "literal_error")]),
        (
            '{"mapping": {"Email": 5}, "encoding": "ascii"}',
            "import_options_invalid",
            [("/options/mapping/Email", "string_type"), ("/options/encoding", "literal_error")],
        ),
        (
            '{"mapping": {"Email": 5}}',
            "import_mapping_invalid",
            [("/options/mapping/Email", "string_type")],
        ),
        ('{"mapping": []}', "import_mapping_invalid", [("/options/mapping", "dict_type")]),
        (
            '{"mapping": {"Email": "nope"}}',
            "import_mapping_invalid",
            [("/options/mapping/Email", None)],
        ),
    ],
)
async def test_import_options_errors_say_what_is_wrong(
    api: httpx.AsyncClient, options: str, code: str, errors: list[tuple[str, str | None]]
) -> None:
    """Options that are not an object, or a wrong option besides the mapping, are
    `import_options_invalid` pointing into the options; a mapping error stays
    `import_mapping_invalid`."""
    response = await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", b"Email\nana@empresa.es\n", "text/csv")},
        data={"options": options},
    )
    body = _problem(response)
    assert body["code"] == code
    assert [(e["pointer"], e["type"] if errors[0][1] else None) for e in body["errors"]] == errors
    if code == "import_options_invalid":
        assert body["detail"] == f"{len(errors)} import option(s) are invalid"
        assert "mapping" not in body["title"].lower()
