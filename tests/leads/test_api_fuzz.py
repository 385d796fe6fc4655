"""Hypothesis fuzzing of the JSON leads API on both databases, through the real app: bad
input of every kind gets a clear per-field answer and never a 500.

Every response is held to one rule (`check`): status below 500; an error is
`application/problem+json` with `title` and `status`; a 422 lists its errors, each with
an RFC 6901 pointer whose parent exists in the body sent; no traceback anywhere. A batch
answers per item, each rejected item's pointers under `/items/{index}`.

The runs are bounded and reproducible (`derandomize=True`, no example database, no
shrinking): about 13 s on SQLite and 21 s on PostgreSQL on two cores, about 2,000 requests
each. The last section holds one example test per bug the fuzzing found.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cauce.app import create_app
from cauce.leads.field_types import MAX_CUSTOM_FIELDS
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm

# ---------------------------------------------------------------------------------------
# The app, and the one rule every response is held to
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def leads_app(
    settings_factory: SettingsFactory, request: pytest.FixtureRequest
) -> AsyncIterator[FastAPI]:
    """The app with a CRM at the port and no background worker; single leads committed
    in groups unless a test passes another `intake_group_max` (indirect parameter)."""
    group_max = getattr(request, "param", 100)
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"intake_group_max": group_max},
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


# No shrinking: each step of it is requests through the app (and a 500's rich traceback
# in the log takes seconds), so shrinking one failure took minutes. A failure names its
# request and the answer (`_says`) as found.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

PROBLEM = "application/problem+json"
_TRACEBACK = re.compile(r"Traceback \(most recent call|File \"[^\"]*\", line \d+")
_BAD_ESCAPE = re.compile(r"~(?![01])")
NOT_JSON = object()  # the body sent was no JSON document (or the request had none)


def _says(response: httpx.Response) -> str:
    request = response.request
    return (
        f"{request.method} {str(request.url)[:300]} -> {response.status_code} "
        f"{response.headers.get('content-type')}: {response.text[:600]}"
    )


def _resolves(document: Any, pointer: str) -> bool:
    """Whether an RFC 6901 pointer names a value inside `document`."""
    if pointer == "":
        return True
    node = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def check_pointer(pointer: Any, document: Any = NOT_JSON) -> None:
    """A well-formed pointer (into the body, or `#query/...`), whose parent exists in
    the body sent: it names the field, even one that is missing."""
    assert isinstance(pointer, str), pointer
    if pointer.startswith("#"):  # a query or path parameter: #query/limit
        assert re.fullmatch(r"#(query|path|header)/[^/]*", pointer), pointer
        assert not _BAD_ESCAPE.search(pointer), pointer
        return
    assert pointer == "" or pointer.startswith("/"), pointer
    assert not _BAD_ESCAPE.search(pointer), pointer
    if document is not NOT_JSON and pointer:
        parent = pointer.rsplit("/", 1)[0]
        assert _resolves(document, parent), (pointer, document)


# Problems that must say, in `errors`, which part of the request they refuse.
_NAMES_ITS_FIELDS = frozenset(
    {"validation_failed", "malformed_body", "idempotency_key_reused", "idempotency_key_invalid"}
)


def check(response: httpx.Response, document: Any = NOT_JSON) -> Any:
    """The issue's rule for one response; the JSON body of a JSON answer."""
    status = response.status_code
    assert status < 500, _says(response)
    assert not _TRACEBACK.search(response.text), _says(response)
    if status == 204 or 300 <= status < 400:  # /v1/leads/%2F redirects to /v1/leads/
        return None
    media = response.headers.get("content-type", "").split(";", 1)[0].strip()
    if status < 400:
        if media == "text/csv":
            return None
        assert media == "application/json", _says(response)
        return response.json()
    assert media == PROBLEM, _says(response)
    body = response.json()
    assert isinstance(body, dict), _says(response)
    assert isinstance(body.get("title"), str), _says(response)
    assert body["title"], _says(response)
    assert body.get("status") == status, _says(response)
    if body.get("code") in _NAMES_ITS_FIELDS or "errors" in body:
        errors = body.get("errors")
        assert isinstance(errors, list), _says(response)
        assert errors, _says(response)
        for error in errors:
            assert isinstance(error.get("detail"), str), _says(response)
            assert error["detail"], _says(response)
            assert isinstance(error.get("type"), str), _says(response)
            check_pointer(error.get("pointer"), document)
    return body


def parsed(body: bytes) -> Any:
    """The JSON document the server read from `body`, or NOT_JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return NOT_JSON


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

NASTY_TEXT = [
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\x7f\x85\x9f",
    "\ud800",
    "\udfff",
    "x\udc00y",
    "\u202eevil\u202c",
    "\u200f\u200e",
    "\u2066isolated\u2069",
    "\ufeffbom",
    "\u00adsoft",
    "<script>alert(1)</script>",
    "<b>Ana</b>",
    "&lt;b&gt;x&lt;/b&gt;",
    "&#0;&#x0;",
    "<!-- x -->",
    "😀",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # a ZWJ sequence
    "🇪🇸",
    "مرحبا",
    "שלום",
    "日本語",
    "Ñandú",
    '=HYPERLINK("http://x")',
    "+34612345678",
    "-1",
    "@SUM(A1)",
    "null",
    "true",
    "0",
    "1e400",
    "NaN",
    "%00",
    "%ED%A0%80",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "'; DROP TABLE leads; --",
    "\\",
    "\\u0000",
    "~0~1/",
    "a/b",
]

_CHARS = st.one_of(
    st.characters(),
    st.characters(codec="ascii"),
    st.characters(categories=["Cs"]),  # lone surrogates
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]),
)


def _repeat(unit: str, times: int) -> str:
    return unit * times


LONG_TEXT = st.builds(
    _repeat,
    st.sampled_from(["x", "é", "😀", "<b>x</b>", "\u202e", " ", "9", "a "]),
    st.sampled_from([63, 64, 65, 100, 101, 150, 151, 200, 201, 255, 256, 321, 1025, 9000, 70_000]),
)

TEXT = st.one_of(st.sampled_from(NASTY_TEXT), st.text(_CHARS, max_size=24), LONG_TEXT)

NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 10**30, -(10**300), 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, 5e-324, 1.5]),
)

SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)

JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=8,
)

WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
)

EMAILS = st.one_of(
    st.sampled_from(
        [
            "ana@empresa.es",
            "ANA@Empresa.ES",
            " ana@empresa.es ",
            "Ana García <ana@empresa.es>",
            "pablo+tag@gmail.com",
            "x@mailinator.com",
            "user@bücher.de",
            "ユーザー@例え.jp",
            "a@b",
            "@",
            "a@",
            "@b.es",
            "a@@b.es",
            "a b@c.es",
            "a@[127.0.0.1]",
            "a@localhost",
            '"quoted"@empresa.es',
            "a\x00@empresa.es",
            "a@empresa.es\u202e",
            "<ana@empresa.es",
            "ana@empresa.es>",
            "a" * 64 + "@" + "b" * 63 + ".es",
            "a" * 65 + "@empresa.es",
            "a" * 64 + "@" + ".".join(["c" * 63] * 4) + ".es",
            "x" * 400 + "@empresa.es",
            "=cmd@empresa.es",
        ]
    ),
    st.builds(lambda n: f"lead{n}@empresa{n % 3}.es", st.integers(0, 40)),
    st.builds(lambda local: f"{local}@empresa.es", st.text(_CHARS, max_size=12)),
)

PHONES = st.one_of(
    st.sampled_from(
        [
            "612345678",
            "612 34 56 78",
            "+34 612 345 678",
            "0034612345678",
            "55 1234 5678",
            "+1 (202) 555-0143",
            "tel:+34612345678",
            "612345678 ext. 12",
            "+",
            "+0",
            "123",
            "٦١٢٣٤٥٦٧٨",
            "\uff16\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # fullwidth
            "612\x00345678",
            "+" + "9" * 20,
            "+" + "1" * 400,
            "1" * 60_000,
            "+34 612-345-678 (móvil)",
        ]
    ),
    st.builds(lambda n: f"6{n:08d}", st.integers(0, 40)),
    st.text(st.sampled_from("0123456789 +-()./x#*"), max_size=30),
)

COUNTRIES = st.sampled_from(
    [
        *("ES", "es", "España", "Spain", "MX", "mx", "México", "US", "GB", "UK", "DE", "JP"),
        *("ZZ", "XX", "e", "ESP", "724", "", " ", "🇪🇸"),
    ]
)
LANGUAGES = st.sampled_from(
    ["es", "es_ES", "es-419", "en-GB", "zh-Hant-TW", "pt-br", "xx", "spanish", "español", ""]
)
SOURCES = st.sampled_from(
    ["web_form", "api", "csv", "crm", "event", "referral", "chat", "other", "API", "web form", ""]
)
STATUSES = st.sampled_from(["new", "working", "qualified", "won", "lost", "junk", "NEW", "open"])


@st.composite
def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], *others: st.SearchStrategy[Any]) -> Any:
    """`usual` half of the time, else one of `others`."""
    if draw(st.booleans()):
        return draw(usual)
    return draw(st.one_of(*others))


def _offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


EDGE_DATES = [  # the ends of the calendar, most with offsets that step past them in UTC
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59-00:01",
    "0001-01-01T00:00:00Z",
    "9999-12-31",
]
DATE_TEXT = mostly(
    st.sampled_from(EDGE_DATES),
    st.sampled_from(
        [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00+02:00",
            "2024-05-01T10:00:00",
            "2024-05-01",
            "2024-02-30T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00+25:00",
            "2024-13-01",
            "1700000000",
            "-62135596800",
            "-62135596801",
            "1e20",
            "now",
            "P1D",
            "2024-W01",
            "",
        ]
    ),
    st.builds(
        lambda moment, minutes: moment.replace(tzinfo=_offset(minutes)).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        st.integers(-(24 * 60 - 1), 24 * 60 - 1),
    ),
)


def _field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value for one field: a plausible one half of the time, else odd text or the
    wrong type."""
    return mostly(good, TEXT, WRONG_TYPES)


EXTRA_FIELDS = st.dictionaries(
    st.one_of(
        st.sampled_from(["id", "score", "uid", "duplicate_of", "is_free_email", "created_at"]),
        st.sampled_from(["EMAIL", "e-mail", "__proto__", "", "/", "~", "a/b~c", "email "]),
        st.text(_CHARS, max_size=8),
    ),
    JSON_VALUES,
    min_size=1,
    max_size=2,
)


def _odds(chance: float) -> st.SearchStrategy[bool]:
    # sampled_from picks evenly (floats would favour 0.0), and shrinks to False.
    tenths = round(chance * 10)
    return st.sampled_from([False] * (10 - tenths) + [True] * tenths)


@st.composite
def objects(
    draw: st.DrawFn,
    fields: dict[str, st.SearchStrategy[Any]],
    base: st.SearchStrategy[dict[str, Any]] | None = None,
    most: int = 5,
    base_odds: float = 0.5,
    extra_odds: float = 0.2,
) -> dict[str, Any]:
    """An object with 0 to `most` of `fields` (over `base` at `base_odds`), and unknown
    members at `extra_odds`."""
    out: dict[str, Any] = draw(base) if base is not None and draw(_odds(base_odds)) else {}
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=most, unique=True))
    for name in names:
        out[name] = draw(fields[name])
    if draw(_odds(extra_odds)):
        out.update(draw(EXTRA_FIELDS))
    return out


UTM = mostly(
    objects({key: _field(st.text(max_size=10)) for key in ("source", "medium", "campaign")}),
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=3),
)

CONSENT = objects(
    most=4,
    fields={
        "marketing": mostly(st.booleans(), WRONG_TYPES, st.sampled_from(["true", "yes", 1])),
        "given_at": mostly(DATE_TEXT, NUMBERS, WRONG_TYPES),
        "wording_version": _field(st.sampled_from(["v1", "2024-05"])),
        "source": _field(st.sampled_from(["https://empresa.es/form", "chat"])),
    },
    base=st.fixed_dictionaries({"marketing": st.booleans(), "wording_version": st.just("v1")}),
)

CUSTOM_KEYS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,70}", fullmatch=True),
    st.sampled_from(["A", "1a", "_a", "a-b", "a b", "a/b", "a~b", "ñ", "", "a\x00"]),
    st.text(_CHARS, max_size=8),
)


def _many_custom_fields(count: int, prefix: str) -> dict[str, Any]:
    return {f"{prefix}{i}": i for i in range(count)}


CUSTOM_FIELDS = st.one_of(
    st.dictionaries(CUSTOM_KEYS, JSON_VALUES, max_size=5),
    st.builds(_many_custom_fields, st.sampled_from([49, 50, 51, 80]), st.sampled_from("km")),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.one_of(LONG_TEXT, NUMBERS), max_size=3),
)

NAMES = st.sampled_from(
    [
        *("Ana", "ana garcía", "MARÍA JOSÉ GARCÍA DE LA FUENTE", "José-Luis", "O'Neil"),
        *("van der Berg", "李小龙", "Nguyễn Văn A", "a", "Dr. Ana García López Jr.", "   "),
    ]
)

# A plausible value of each field (many valid, some not).
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "external_id": st.text(max_size=12),
    "source": SOURCES,
    "status": STATUSES,
    "email": EMAILS,
    "country": COUNTRIES,
    "phone": PHONES,
    "first_name": NAMES,
    "last_name": NAMES,
    "full_name": NAMES,
    "company": st.sampled_from(["Construcciones Ñandú, S.L.", "ACME", "<b>X</b> Corp"]),
    "job_title": st.sampled_from(["CEO", "Directora de compras"]),
    "region": st.sampled_from(["Madrid", "Comunidad de Madrid"]),
    "city": st.sampled_from(["Alcalá de Henares", "Vigo"]),
    "language": LANGUAGES,
    "owner": st.sampled_from(["ana", "equipo norte"]),
    "utm": UTM,
    "consent": CONSENT,
    "custom_fields": CUSTOM_FIELDS,
}
NESTED = ("utm", "consent", "custom_fields")
LEAD_FIELDS = {name: _field(good) for name, good in PLAUSIBLE.items()}
NESTED_FIELDS = {name: LEAD_FIELDS[name] for name in NESTED}
TEXT_FIELDS = (
    *("external_id", "first_name", "last_name", "full_name", "company", "job_title"),
    *("region", "city", "owner"),
)
# Values of the right type with odd content: most pass validation and are stored, so the
# database and the read side meet NUL, RTL marks, emoji, markup and edge timestamps.
ODD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **{name: TEXT for name in TEXT_FIELDS},
    "utm": st.dictionaries(st.sampled_from(["source", "medium", "campaign"]), TEXT, max_size=3),
    "consent": st.fixed_dictionaries(
        {"marketing": st.booleans(), "wording_version": TEXT, "given_at": DATE_TEXT}
    ),
    "custom_fields": st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), SCALARS, max_size=4
    ),
}
# A valid one half of the time, or another kind.
PATCH_FIELDS = {
    name: mostly(good, st.none(), ODD_FIELDS.get(name, TEXT), WRONG_TYPES)
    for name, good in PLAUSIBLE.items()
}


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


# A valid base, so that some leads go all the way to the database.
BASE_LEAD = st.fixed_dictionaries(
    {"email": EMAILS}, optional={"phone": PHONES, "country": COUNTRIES}
)
LEADS = objects(LEAD_FIELDS, base=BASE_LEAD)
NESTED_LEADS = objects(NESTED_FIELDS, base=BASE_LEAD, most=3)
ODD_LEADS = objects(ODD_FIELDS, base=BASE_LEAD, base_odds=1.0, extra_odds=0.0)
DOCUMENTS = mostly(st.one_of(LEADS, ODD_LEADS), WRONG_TYPES, TEXT)


@dataclass(frozen=True)
class Encoding:
    """How a document becomes bytes."""

    name: str

    def encode(self, document: Any) -> bytes:
        if self.name == "ascii":  # lone surrogates become \ud800 escapes
            return json.dumps(document, ensure_ascii=True).encode("ascii")
        if self.name == "utf-8":  # lone surrogates become invalid UTF-8
            return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if self.name == "utf-16":
            return json.dumps(document, ensure_ascii=False).encode("utf-16", "surrogatepass")
        if self.name == "bom":
            return b"\xef\xbb\xbf" + json.dumps(document).encode("ascii")
        raise AssertionError(self.name)


ENCODINGS = st.sampled_from([Encoding(name) for name in ("ascii", "utf-8") * 4 + ("utf-16", "bom")])

JSON_MEDIA = "application/json"
CONTENT_TYPES = st.sampled_from(
    [JSON_MEDIA] * 6
    + ["application/json; charset=utf-8", "APPLICATION/JSON", "application/json;charset=latin-1"]
    + ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    + ["application/merge-patch+json", "application/problem+json", "", "json", "*/*"]
)

IDEMPOTENCY_KEYS = mostly(
    st.none(),
    st.sampled_from([b"k1", b"k2", b"k3"]),  # reused across examples: replays and reuse
    st.builds(lambda n: b"x" * n, st.sampled_from([0, 1, 254, 255, 256, 1000])),
    st.binary(max_size=40).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b" ", b"\t", b"\x7f", b"caf\xe9", b"\xa0key\xa0", b"a b", b"\x00", b"\xff"]),
)

RAW_BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b" ",
            b"{",
            b"}",
            b"{}{}",
            b"[]",
            b"null",
            b"NaN",
            b'"\\ud800"',
            b'{"email": "\\ud800@empresa.es"}',
            b'{"email": "\\udc00"}',
            b'{"email": "\xff\xfe"}',
            b'{"email": "a@empresa.es", "email": 5}',
            b'{"email": "a\\u0000@empresa.es"}',
            b'{"custom_fields": {"a": 1e999}, "email": "a@empresa.es"}',
            b'{"items": [' + b"{}," * 20 + b"{}]}",
            b'{"items": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            b"[" * 100_000,
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            b"{'email': 'a@empresa.es'}",
            b'{"email": "a@empresa.es",}',
            b'{"email": "a@empresa.es"} trailing',
            b"\x00",
            b"x" * 2_000_000,  # over the body limit
        ]
    ),
)


def _headers(content_type: str | None, key: bytes | None) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if key is not None:
        headers.append((b"idempotency-key", key))
    return headers


# ---------------------------------------------------------------------------------------
# POST /v1/leads
# ---------------------------------------------------------------------------------------


async def _read_back(api: httpx.AsyncClient, lead_id: str) -> None:
    """What was accepted reads back, alone and in the list."""
    check(await api.get(f"/v1/leads/{quote(lead_id, safe='')}"))
    check(await api.get("/v1/leads", params={"limit": 200}))


async def _post_lead(
    api: httpx.AsyncClient, document: Any, encoding: Encoding, media: str, key: bytes | None
) -> None:
    body = encoding.encode(document)
    response = await api.post("/v1/leads", content=body, headers=_headers(media, key))
    answer = check(response, parsed(body))
    if response.status_code in (200, 201):
        assert isinstance(answer["id"], str), _says(response)
        await _read_back(api, answer["id"])


@settings(FUZZ, max_examples=120)
@given(document=DOCUMENTS, encoding=ENCODINGS, media=CONTENT_TYPES, key=IDEMPOTENCY_KEYS)
async def test_post_lead_answers_every_body_per_field(
    api: httpx.AsyncClient, document: Any, encoding: Encoding, media: str, key: bytes | None
) -> None:
    """Any JSON sent as a lead (wrong types, odd text, extra or nested junk, any
    Idempotency-Key) is accepted or refused naming the field, never a 500."""
    await _post_lead(api, document, encoding, media, key)


@settings(FUZZ, max_examples=80)
@given(document=NESTED_LEADS, encoding=ENCODINGS)
async def test_post_lead_answers_nested_objects_per_field(
    api: httpx.AsyncClient, document: Any, encoding: Encoding
) -> None:
    """`utm`, `consent` and `custom_fields` of any shape (wrong types, unknown members,
    odd timestamps, too many or too long custom fields) are refused naming the member."""
    await _post_lead(api, document, encoding, JSON_MEDIA, None)


@pytest.mark.parametrize("leads_app", [1], indirect=True)
@settings(FUZZ, max_examples=40)
@given(document=st.one_of(LEADS, ODD_LEADS), encoding=ENCODINGS, key=IDEMPOTENCY_KEYS)
async def test_post_lead_without_group_commit_answers_every_body(
    api: httpx.AsyncClient, document: Any, encoding: Encoding, key: bytes | None
) -> None:
    """The same holds on the path that commits each lead alone (`intake_group_max=1`)."""
    await _post_lead(api, document, encoding, JSON_MEDIA, key)


@settings(FUZZ, max_examples=80)
@given(
    path=st.sampled_from(["/v1/leads", "/v1/leads/batch", "LIVE"]),
    body=RAW_BODIES,
    media=st.one_of(st.none(), CONTENT_TYPES),
    key=IDEMPOTENCY_KEYS,
)
async def test_raw_bodies_are_refused_clearly(
    api: httpx.AsyncClient, path: str, body: bytes, media: str | None, key: bytes | None
) -> None:
    """Bytes that are no JSON object (invalid UTF-8, broken JSON, deep nesting, empty,
    too large, wrong or missing Content-Type) get a problem, never a 500, on every JSON
    route."""
    method = "POST"
    if path == "LIVE":
        created = check(await api.post("/v1/leads", json={"email": "raw@empresa.es"}))
        method, path = "PATCH", f"/v1/leads/{created['id']}"
    response = await api.request(method, path, content=body, headers=_headers(media, key))
    check(response, parsed(body))


# ---------------------------------------------------------------------------------------
# POST /v1/leads/batch
# ---------------------------------------------------------------------------------------


def _sized(count: int, item: Any) -> list[Any]:
    return [item] * count


BATCH_ITEMS = mostly(
    st.lists(mostly(LEADS, NESTED_LEADS, ODD_LEADS, WRONG_TYPES, TEXT), min_size=1, max_size=5),
    st.builds(
        _sized,
        st.sampled_from([0, 1000, 1001, 1500]),
        st.sampled_from([{}, 1, None, "x", [], {"email": 5}]),
    ),
    WRONG_TYPES,
    TEXT,
)

BATCHES = mostly(
    st.fixed_dictionaries({"items": BATCH_ITEMS}),
    st.builds(_merge, st.fixed_dictionaries({"items": BATCH_ITEMS}), EXTRA_FIELDS),
    LEADS,
    WRONG_TYPES,
    st.lists(LEADS, max_size=2),
)


def _check_batch(answer: dict[str, Any], document: Any) -> None:
    """Each item is answered on its own, in order, rejected ones naming their fields."""
    items = document["items"]
    assert answer["received"] == len(items)
    assert answer["accepted"] + answer["rejected"] == len(items)
    assert [item["index"] for item in answer["items"]] == list(range(len(items)))
    for item in answer["items"]:
        if item["outcome"] == "rejected":
            assert item["errors"], item
            for error in item["errors"]:
                pointer = error["pointer"]
                assert pointer == f"/items/{item['index']}" or pointer.startswith(
                    f"/items/{item['index']}/"
                ), item
                check_pointer(pointer, document)
        else:
            assert isinstance(item["id"], str), item
            assert not item["errors"], item


@settings(FUZZ, max_examples=60)
@given(document=BATCHES, encoding=ENCODINGS, key=IDEMPOTENCY_KEYS)
async def test_post_batch_answers_per_item(
    api: httpx.AsyncClient, document: Any, encoding: Encoding, key: bytes | None
) -> None:
    """A batch of anything (0 or 1,001 items, items of every kind, no list at all) is
    answered per item or refused naming the field, never a 500."""
    body = encoding.encode(document)
    response = await api.post("/v1/leads/batch", content=body, headers=_headers(JSON_MEDIA, key))
    answer = check(response, parsed(body))
    if response.status_code == 200 and response.headers.get("Idempotent-Replayed") is None:
        _check_batch(answer, parsed(body))
        accepted = [item["id"] for item in answer["items"] if item["outcome"] != "rejected"]
        if accepted:
            await _read_back(api, accepted[0])


# ---------------------------------------------------------------------------------------
# GET /v1/leads and /v1/leads/export.csv
# ---------------------------------------------------------------------------------------

SEEDS: list[dict[str, Any]] = [
    {
        "email": "ñandú@empresa.es",
        "full_name": "<b>MARÍA</b> \u202eJOSÉ 😀",
        "company": '=HYPERLINK("http://x")',
        "country": "MX",
        "phone": "55 1234 5678",
        "custom_fields": {"a": 1, "b": "x" * 1000, "c": True, "d": None, "e": 2**53, "f": -0.0},
        "utm": {"source": "<i>google</i>", "campaign": "primavera 2025"},
        "consent": {"marketing": True, "wording_version": "v1", "given_at": "0001-01-01T00:00Z"},
    },
    {"phone": "+34 612 345 678", "first_name": "مرحبا", "owner": "ana", "source": "chat"},
    {"email": "x@mailinator.com", "status": "junk", "language": "zh-Hant-TW", "city": "日本"},
]

FILTERS = [
    "status",
    "source",
    "owner",
    "country",
    "created_after",
    "created_before",
    "min_score",
    "max_score",
    "q",
    "cursor",
    "limit",
]
QUERY_NAMES = mostly(
    st.sampled_from(["page", "offset", "Status", "LIMIT", "q[]", "", "a/b", "~", "a~1b/", "%"]),
    st.sampled_from(FILTERS),
    st.text(st.characters(codec="utf-8"), max_size=6),
)
NUMBER_TEXT = st.one_of(
    st.sampled_from(["-1", "0", "1", "50", "100", "101", "200", "201", "abc", "1.5", "1e3"]),
    st.sampled_from(
        [str(10**30), " 5", "+5", "\u0665", "\uff15", "0x10", "1_000", "", "None", "NaN"]
    ),
    st.sampled_from(["9223372036854775807", "9223372036854775808", "²", "9" * 30, "1" * 5000]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
QUERY_VALUES = st.one_of(
    NUMBER_TEXT,
    DATE_TEXT,
    SOURCES,
    STATUSES,
    COUNTRIES,
    st.sampled_from(["%", "_", "\\", "%_\\", "ñandú", "ANA", "a" * 201, "x" * 9000]),
    TEXT.map(lambda text: text.encode("utf-8", "replace").decode("utf-8")),
).filter(lambda value: len(quote(value)) < 20_000)  # httpx refuses a query past 64 KiB


def _fits_a_url(params: list[tuple[str, str]]) -> bool:
    # httpx refuses a query string past 64 KiB (the server would refuse a longer URL).
    return len(str(httpx.QueryParams(tuple(params)))) < 60_000


VALUES_OF = {
    "status": STATUSES,
    "source": SOURCES,
    "country": COUNTRIES,
    "created_after": DATE_TEXT,
    "created_before": DATE_TEXT,
    "min_score": NUMBER_TEXT,
    "max_score": NUMBER_TEXT,
    "cursor": NUMBER_TEXT,
    "limit": NUMBER_TEXT,
}


@st.composite
def query_params(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Some filters, mostly each with its own kind of value, and now and then unknown,
    oddly spelled or repeated parameters; in any order."""
    params = [
        (name, draw(VALUES_OF[name] if name in VALUES_OF and draw(_odds(0.8)) else QUERY_VALUES))
        for name in draw(st.lists(st.sampled_from(FILTERS), max_size=4, unique=True))
    ]
    if draw(_odds(0.5)):
        params += [(name, draw(QUERY_VALUES)) for name in draw(st.lists(QUERY_NAMES, max_size=3))]
    return draw(st.permutations(params))


RAW_QUERIES = st.lists(
    st.sampled_from(list("%&=+;?/ azAZ09xyzEDA80fF") + FILTERS + ["%ED%A0%80", "%C3", "%25"]),
    max_size=20,
).map("".join)


@pytest.fixture
async def seeded(api: httpx.AsyncClient) -> list[str]:
    """A few accepted leads with odd (valid) values for the read side to show."""
    ids = []
    for seed in SEEDS:
        response = await api.post("/v1/leads", json=seed)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


@settings(FUZZ, max_examples=100)
@given(
    path=st.sampled_from(["/v1/leads", "/v1/leads/export.csv"]),
    params=query_params().filter(_fits_a_url),
    raw=mostly(st.none(), RAW_QUERIES),
)
async def test_search_and_export_answer_every_query(
    api: httpx.AsyncClient,
    seeded: list[str],
    path: str,
    params: list[tuple[str, str]],
    raw: str | None,
) -> None:
    """Any query string (each filter with any text, repeated and unknown parameters, odd
    cursors and limits, broken percent-encoding) answers a page, a CSV or a problem."""
    if raw is None:
        response = await api.get(path, params=tuple(params))
    else:
        url = httpx.URL(f"http://cauce.test{path}").copy_with(
            raw_path=f"{path}?{raw}".encode("ascii", "replace")
        )
        response = await api.get(url)
    answer = check(response)
    if response.status_code == 200 and path == "/v1/leads":
        assert isinstance(answer["items"], list), _says(response)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
async def test_each_filter_answers_any_value(
    api: httpx.AsyncClient, seeded: list[str], data: st.DataObject
) -> None:
    """Every filter, alone, on the search and the export, with a value of its own kind
    (edge dates and offsets, huge or negative numbers) or any text: never a 500."""
    for name in FILTERS:
        own = VALUES_OF.get(name, QUERY_VALUES)
        value = data.draw(own if data.draw(_odds(0.8)) else QUERY_VALUES, label=name)
        for path in ("/v1/leads", "/v1/leads/export.csv"):
            check(await api.get(path, params={name: value}))
    unknown = data.draw(QUERY_NAMES.filter(lambda name: name not in FILTERS), label="unknown")
    answer = check(await api.get("/v1/leads", params={unknown: "1"}))
    if answer is not None and answer.get("status") == 422:  # it names the parameter
        escaped = unknown.replace("~", "~0").replace("/", "~1")
        assert f"#query/{escaped}" in {e["pointer"] for e in answer["errors"]}, answer


# ---------------------------------------------------------------------------------------
# GET / PATCH / DELETE /v1/leads/{id}
# ---------------------------------------------------------------------------------------

PATCHES = mostly(
    objects(PATCH_FIELDS, most=3, extra_odds=0.1),
    objects({name: PATCH_FIELDS[name] for name in NESTED}),
    WRONG_TYPES,
    TEXT,
)

JUNK_IDS = st.one_of(
    st.sampled_from(["0", "-1", "1", "²", "9" * 19, "9" * 5000, "a" * 10_000, " ", "export.csv"]),
    st.sampled_from(["batch", "import", "00000000-0000-0000-0000-000000000000", "%s", "{id}"]),
    st.uuids().map(str),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
)
RAW_IDS = st.sampled_from(
    ["%ED%A0%80", "%", "%zz", "%2F", "..", ".", "%2e%2e", "%00", "a%00b", "%ff%fe", "%u0041"]
)


@dataclass
class Targets:
    """A live lead and an erased one; a new live one replaces a live one erased."""

    live: str
    erased: str


@pytest.fixture
async def targets(api: httpx.AsyncClient) -> Targets:
    """A live lead with some fields, and an erased lead."""
    live = await api.post("/v1/leads", json={"email": "vivo@empresa.es", "custom_fields": {"a": 1}})
    gone = await api.post("/v1/leads", json={"email": "borrado@empresa.es"})
    erased = gone.json()["id"]
    assert (await api.delete(f"/v1/leads/{erased}")).status_code == 204
    return Targets(live=live.json()["id"], erased=erased)


@settings(FUZZ, max_examples=100)
@given(
    method=st.sampled_from(["GET", "PATCH", "PATCH", "PATCH", "DELETE"]),
    target=mostly(
        st.just("LIVE"),
        st.just("ERASED"),
        JUNK_IDS.map(lambda raw: quote(raw, safe="")),
        RAW_IDS,
    ),
    document=PATCHES,
    encoding=ENCODINGS,
    media=st.sampled_from([JSON_MEDIA] * 8 + ["text/plain", "application/merge-patch+json"]),
)
async def test_lead_ids_and_patches_are_answered(
    api: httpx.AsyncClient,
    targets: Targets,
    method: str,
    target: str,
    document: Any,
    encoding: Encoding,
    media: str,
) -> None:
    """Any id (percent-encoded junk, very long, erased, unknown) and any merge patch
    (nulls, wrong types, unknown fields, no object) on a live lead or none answers the
    lead, 204, or a problem naming the field; never a 500."""
    segment = {"LIVE": targets.live, "ERASED": targets.erased}.get(target, target)
    url = httpx.URL("http://cauce.test/v1/leads/").copy_with(
        raw_path=f"/v1/leads/{segment}".encode("ascii")
    )
    body = encoding.encode(document)
    if method == "PATCH":
        response = await api.patch(url, content=body, headers=_headers(media, None))
        answer = check(response, parsed(body))
        if response.status_code == 200:  # merged key by key, still within the limit
            assert len(answer["custom_fields"]) <= MAX_CUSTOM_FIELDS, _says(response)
    else:
        response = await api.request(method, url)
        check(response)
    if target == "LIVE" and response.status_code in (200, 204):
        await _read_back(api, targets.live)
    if target == "LIVE" and method == "DELETE" and response.status_code == 204:
        again = check(await api.post("/v1/leads", json={"email": f"{uuid.uuid4().hex}@vivo.es"}))
        targets.live = again["id"]


# ---------------------------------------------------------------------------------------
# What the fuzzing found, one example each
# ---------------------------------------------------------------------------------------

# Valid ISO 8601 with an offset, yet before year 1 (or after 9999) once in UTC: converting
# it raised OverflowError, a 500.
BEFORE_YEAR_ONE = "0001-01-01T00:30:00+01:00"
AFTER_9999 = "9999-12-31T23:59:59-00:01"


def _pointers(body: dict[str, Any]) -> dict[str, str]:
    return {error["pointer"]: error["type"] for error in body["errors"]}


async def test_a_consent_time_outside_the_utc_calendar_is_named(api: httpx.AsyncClient) -> None:
    """A consent `given_at` whose UTC time is before year 1 is a 422 naming
    `/consent/given_at`, alone, in a batch item and in a PATCH (it was a 500)."""
    consent = {"marketing": True, "wording_version": "v1", "given_at": BEFORE_YEAR_ONE}
    one = await api.post("/v1/leads", json={"email": "utc@empresa.es", "consent": consent})
    assert one.status_code == 422, one.text
    assert _pointers(check(one)) == {"/consent/given_at": "datetime_out_of_range"}
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": "utc@empresa.es", "consent": consent}, {"email": "b@c.es"}]},
    )
    answer = check(batch)
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["items"][0]["errors"][0]["pointer"] == "/items/0/consent/given_at"
    lead_id = check(await api.post("/v1/leads", json={"email": "utc@empresa.es"}))["id"]
    patched = await api.patch(f"/v1/leads/{lead_id}", json={"consent": consent})
    assert patched.status_code == 422, patched.text
    assert _pointers(check(patched)) == {"/consent/given_at": "datetime_out_of_range"}


@pytest.mark.parametrize("path", ["/v1/leads", "/v1/leads/export.csv"])
@pytest.mark.parametrize(
    ("name", "value"), [("created_after", BEFORE_YEAR_ONE), ("created_before", AFTER_9999)]
)
async def test_a_date_filter_outside_the_utc_calendar_is_named(
    api: httpx.AsyncClient, path: str, name: str, value: str
) -> None:
    """A date filter whose UTC time falls outside years 1 to 9999 is a 422 naming the
    parameter on the search and the export (it was a 500)."""
    response = await api.get(path, params={name: value})
    assert response.status_code == 422, response.text
    assert _pointers(check(response)) == {f"#query/{name}": "datetime_out_of_range"}


@pytest.mark.parametrize(("name", "pointer"), [("a/b", "#query/a~1b"), ("~x", "#query/~0x")])
async def test_an_unknown_parameter_is_named_by_an_escaped_pointer(
    api: httpx.AsyncClient, name: str, pointer: str
) -> None:
    """An unknown query parameter's pointer escapes `/` and `~` (RFC 6901), as a body's
    does: `#query/a/b` would name a `b` inside `a`."""
    response = await api.get("/v1/leads", params={name: "1"})
    assert response.status_code == 422, response.text
    assert list(_pointers(check(response))) == [pointer]


async def test_patches_cannot_add_up_past_the_custom_field_limit(api: httpx.AsyncClient) -> None:
    """Each PATCH may carry up to 50 custom fields, but merged into the lead they may not
    leave more than 50: the one that would is a 422 naming `/custom_fields`, and changes
    nothing; removing keys in the same patch makes room."""
    first = {f"a{i}": i for i in range(MAX_CUSTOM_FIELDS)}
    created = await api.post("/v1/leads", json={"email": "cf@empresa.es", "custom_fields": first})
    lead_id = check(created)["id"]
    more = await api.patch(f"/v1/leads/{lead_id}", json={"custom_fields": {"b0": 1}})
    assert more.status_code == 422, more.text
    assert _pointers(check(more)) == {"/custom_fields": "too_long"}
    lead = check(await api.get(f"/v1/leads/{lead_id}"))
    assert lead["custom_fields"] == first
    swap = await api.patch(f"/v1/leads/{lead_id}", json={"custom_fields": {"a0": None, "b0": 1}})
    assert check(swap)["custom_fields"] == {
        **{k: v for k, v in first.items() if k != "a0"},
        "b0": 1,
    }
