"""Fuzzing `POST /v1/leads/import` through the app, on both databases: whatever the
upload (random bytes, CSV in any encoding and delimiter, ragged rows, runaway quotes,
huge cells, NULs, odd headers, malformed options, missing or misnamed parts, wrong
content types), the answer is never a 5xx; a refusal is problem+json; an accepted import
runs to a terminal state whose counts add up and whose error report reads as CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cauce.core.jobs.factory import JobWorker
from cauce.leads.csv_headers import DEFAULT_HEADERS, LEAD_TARGETS, fold_header

BOUNDARY = "cauce-fuzz-boundary-7f3a"
PROBLEM = "application/problem+json"
TERMINAL = ("succeeded", "failed")
REPORT_HEADER = ["row", "column", "field", "reason"]


# --- what an upload is made of -------------------------------------------------------------

HEADERS = [
    "email", "Correo electrónico", "E-mail:", "Teléfono", "TELEFONO MOVIL", "Nombre",
    "Apellidos", "Primer apellido", "Segundo apellido", "Nombre completo", "Empresa",
    "País", "Provincia", "Consentimiento", "Fecha consentimiento", "estado del lead",
    "utm_source", "Sector económico", "id", "", "???", "=HYPERLINK()", "Nº empleados",
]  # fmt: skip
VALUES = [
    "ana@empresa.es", "luis@", "612 34 56 78", "+52 55 1234 5678", "12", "España", "ES",
    "Narnia", "sí", "no", "quizá", "2024-02-30", "2024-01-05T10:00:00Z", "Ganado", "won",
    "García López", "Ñandú, S.L.", "'=1+1", "-3", "@x", "   ", "",
]  # fmt: skip
SPECIALS = "\"\r\n,;\t|\x00\ufeffñÑ€é😀\u2028\x1b '="
TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(SPECIALS), max_size=12)
CELL = st.one_of(st.sampled_from(VALUES), TEXT)
HUGE = st.sampled_from([70_000, 140_000]).map(lambda n: "x" * n)
HEADER_KEYS = st.sampled_from(HEADERS) | TEXT
NAMES = st.sampled_from(["Ana", "José Luis", "García Núñez", "O'Brien", "Muñoz", "ñ", "x" * 101])
BY_TARGET: dict[str, st.SearchStrategy[str]] = {
    "email": st.integers(0, 10**6).map(lambda n: f"lead{n}@empresa.es")
    | st.sampled_from(["luis@", "ANA@Empresa.ES", "a@localhost", "", "=cmd@x.es"]),
    "phone": st.sampled_from(
        ["612 34 56 78", "+34612345678", "+52 55 1234 5678", "12", "", "'+34 612 345 678"]
    ),
    "first_name": NAMES,
    "last_name": NAMES,
    "full_name": NAMES,
    "company": st.sampled_from(["Ñandú, S.L.", 'Café "El Niño"; S.A.', "", "=HYPERLINK()"]),
    "country": st.sampled_from(["España", "ES", "MX", "Narnia", "", "méxico"]),
    "region": st.sampled_from(["Málaga", "Jalisco", ""]),
    "consent.marketing": st.sampled_from(["sí", "no", "quizá", "1", "", "SI"]),
    "consent.given_at": st.sampled_from(["2024-01-05T10:00:00Z", "2024-02-30", "ayer", ""]),
    "status": st.sampled_from(["Ganado", "won", "perdido", "nope", ""]),
    "external_id": st.sampled_from(["A-1", "x" * 201, ""]),
}
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16", "utf-16-le"]
DELIMITERS = [",", ";", "\t", "|", ":"]
TARGETS = [
    *sorted(LEAD_TARGETS),
    *["custom_fields.sector", "custom_fields.Bad Key", "custom_fields.", "nope", "", "Email"],
]


@dataclass
class Upload:
    """One request: the parts of a multipart body (or a raw body), and what to expect."""

    parts: list[tuple[str, str | None, str | None, bytes]] = field(default_factory=list)
    raw: bytes | None = None
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}"
    headers: dict[str, str] = field(default_factory=dict)
    data_rows: int | None = None  # known exactly for well-formed CSV

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        out = io.BytesIO()
        for name, filename, ctype, content in self.parts:
            out.write(f"--{BOUNDARY}\r\n".encode())
            disposition = f'Content-Disposition: form-data; name="{name}"'
            if filename is not None:
                disposition += f'; filename="{filename}"'
            out.write(disposition.encode("utf-8", "surrogatepass") + b"\r\n")
            if ctype is not None:
                out.write(f"Content-Type: {ctype}\r\n".encode("utf-8", "surrogatepass"))
            out.write(b"\r\n" + content + b"\r\n")
        out.write(f"--{BOUNDARY}--\r\n".encode())
        return out.getvalue()


def _one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in `n` draws (False is the simpler value, tried first)."""
    # True in the middle: hypothesis tries a list's ends more often.
    return draw(st.sampled_from([False] * (n // 2) + [True] + [False] * (n - 1 - n // 2)))


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "replace")


def _blank(cells: list[str]) -> bool:
    return not "".join(cells).strip()


def _cell(draw: st.DrawFn, header: str | None) -> str:
    """A cell for a column: mostly a value of the field its header defaults to (right or
    wrong), else anything."""
    values = BY_TARGET.get(DEFAULT_HEADERS.get(fold_header(header or ""), ""))
    if values is not None and not _one_in(draw, 4):
        return draw(values)
    return draw(CELL)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, dict[str, Any], int | None, list[str]]:
    """CSV bytes, the options that fit them, the data rows (when well formed), headers."""
    headers = draw(st.lists(st.sampled_from(HEADERS) | TEXT, min_size=1, max_size=7))
    if _one_in(draw, 10):  # a header row past the probed start: the job plans the columns
        headers[-1] = "Notas " + "x" * 70_000
    width = len(headers)
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        cells = width if not _one_in(draw, 5) else draw(st.integers(0, width + 2))
        rows.append([_cell(draw, headers[i] if i < width else None) for i in range(cells)])
    if _one_in(draw, 4):  # push what follows past the sniffed start (NUL checks...)
        rows.insert(0, ["relleno@empresa.es", "x" * 5000])
    if rows and _one_in(draw, 4):  # a NUL, most often past the sniffed start
        row = draw(st.sampled_from(rows))
        row[:] = [*row[:-1], (row[-1] if row else "") + "\x00"]
    if rows and _one_in(draw, 8):
        row = draw(st.sampled_from(rows))
        row.append(draw(HUGE)) if not row else row.__setitem__(0, draw(HUGE))
    delimiter = draw(st.sampled_from(DELIMITERS))
    encoding = draw(st.sampled_from(ENCODINGS))
    well_formed = draw(st.booleans())
    if well_formed:
        # Quoted by the csv module, every row as wide as the header, no NUL, no cell past
        # the csv module's limit, and an encoding that keeps every character.
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
        delimiter = draw(st.sampled_from(DELIMITERS[:4]))
        clean = [c.replace("\x00", "").replace("\ufeff", "") for c in headers]
        if not "".join(clean).strip():
            clean[0] = "email"
        headers = clean
        rows = [
            [c.replace("\x00", "")[:6000] for c in (row + [""] * width)[:width]] for row in rows
        ]
        out = io.StringIO(newline="")
        # With "\n" line ends the csv module leaves a lone "\r" in a cell unquoted (it
        # quotes only the terminator's characters), which no reader takes as data.
        quote_all = draw(st.booleans())
        writer = csv.writer(
            out,
            delimiter=delimiter,
            lineterminator="\n" if quote_all else "\r\n",
            quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
        )
        writer.writerow(headers)
        writer.writerows(rows)
        text = out.getvalue()
        data_rows: int | None = sum(1 for row in rows if not _blank(row))
        options: dict[str, Any] = {"delimiter": delimiter}
    else:
        terminator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
        lines = [delimiter.join(headers)] + [delimiter.join(row) for row in rows]
        text = terminator.join(lines) + draw(st.sampled_from(["", terminator, '"', ';"x']))
        if draw(st.booleans()):
            text = f"sep={delimiter}{terminator}{text}"
        data_rows = None
        options = {}
    return _encode(text, encoding), options, data_rows, headers


def _mapping(draw: st.DrawFn, headers: list[str]) -> dict[str, Any]:
    keys = st.sampled_from(headers or HEADERS) if draw(st.booleans()) else HEADER_KEYS
    targets = st.sampled_from(TARGETS) | st.none() | TEXT
    return draw(st.dictionaries(keys, targets, max_size=4))


@st.composite
def option_fields(draw: st.DrawFn, headers: list[str], base: dict[str, Any]) -> str | None:
    """The `options` form field: absent, not JSON, JSON of the wrong shape, or options
    whose values may each be wrong."""
    kind = draw(st.sampled_from(["options", "options", "none", "none", "text", "shapes"]))
    if kind == "none":
        return None
    if kind == "text":
        return draw(TEXT)
    if kind == "shapes":
        return draw(
            st.sampled_from(
                [
                    "[]", "1", '"x"', "null", "{}", '{"mapping": []}', '{"mapping": "email"}',
                    '{"mapping": {"email": 5}}', '{"mapping": {"email": ["email"]}}',
                    '{"unknown_columns": "drop"}', '{"delimiter": ":"}', '{"encoding": "utf-16"}',
                    '{"mapping": null}', '{"nope": 1}', '{"default_phone_region": "XX"}',
                    '{"consent_wording_version": "v\\u0000"}', '{"mapping": {"\\u0000": "email"}}',
                    '{"delimiter": ";;"}', '{"options": {}}', "\ufeff{}",
                ]
            )
        )  # fmt: skip
    options = dict(base)
    if _one_in(draw, 3):
        options["mapping"] = _mapping(draw, headers)
    if _one_in(draw, 4):
        options["unknown_columns"] = draw(st.sampled_from(["custom_fields", "ignore", "x"]))
    if _one_in(draw, 4):
        options["encoding"] = draw(st.sampled_from(["utf-8", "cp1252", "latin-1", "ascii"]))
    if _one_in(draw, 6):
        options["delimiter"] = draw(st.sampled_from([*DELIMITERS, ""]))
    if _one_in(draw, 6):
        options["default_phone_region"] = draw(st.sampled_from(["ES", "MX", "es", "XX", ""]))
    if _one_in(draw, 6):
        options["consent_wording_version"] = draw(TEXT)
    return json.dumps(options)


FILENAMES = st.sampled_from(
    ["leads.csv", "", "../../etc/passwd", "a\x00b.csv", "x" * 1000, "contactos ñ.csv"]
) | st.text(max_size=20).filter(lambda s: '"' not in s and "\r" not in s and "\n" not in s)
FILE_TYPES = st.sampled_from(
    ["text/csv", "application/octet-stream", "image/png", "text/csv; charset=latin-1", None]
)


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    """A request to the import endpoint, usually multipart, sometimes not at all."""
    base: dict[str, Any] = {}
    data_rows: int | None = None
    headers: list[str] = []
    if _one_in(draw, 5):
        content = draw(st.binary(max_size=2000))
    else:
        content, base, data_rows, headers = draw(csv_files())
    upload = Upload(data_rows=data_rows)
    options = draw(option_fields(headers, base))
    if options != json.dumps(base):
        upload.data_rows = None  # a mapping, an encoding, a detected delimiter: other rows
    # The odd shapes in the middle: hypothesis tries a list's ends more often.
    odd = ["none", "plain", "renamed", "raw", "stray"]
    shape = draw(st.sampled_from(["file"] * 8 + odd + ["file"] * 8))
    if shape == "none":  # no file part
        upload.parts = [("options", None, None, (options or "{}").encode())]
    elif shape == "plain":  # the file sent as a plain field
        upload.parts = [("file", None, None, content)]
    elif shape == "renamed":  # the file under another name
        upload.parts = [("upload", "leads.csv", "text/csv", content)]
    elif shape == "raw":  # a raw body with some content type
        upload.raw = content
        upload.content_type = draw(
            st.sampled_from(
                ["text/csv", "application/json", "application/x-www-form-urlencoded",
                 "multipart/form-data", "multipart/form-data; boundary=nope", ""]
            )
        )  # fmt: skip
    elif shape == "stray":  # a stray form field next to the file
        name = draw(st.sampled_from(["mapping", "a/b~c", "options", "file"]) | FILENAMES)
        upload.parts = [("file", "leads.csv", "text/csv", content), (name, None, None, b"{}")]
    else:
        upload.parts = [("file", draw(FILENAMES), draw(FILE_TYPES), content)]
        if options is not None:
            upload.parts.append(("options", None, None, options.encode("utf-8", "replace")))
    if _one_in(draw, 10):
        upload.headers["Idempotency-Key"] = uuid.uuid4().hex
    return upload


# --- the properties ----------------------------------------------------------------------


def _check_problem(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    body = response.json()
    assert body["status"] == response.status_code
    assert isinstance(body["code"], str)
    assert isinstance(body["title"], str)
    for error in body.get("errors", []):
        assert error["pointer"].startswith("/")
        assert error["detail"]


async def _check_import(
    api: httpx.AsyncClient, worker: JobWorker, upload: Upload, id_: str
) -> dict[str, Any]:
    await worker.run_until_idle(60)
    response = await api.get(f"/v1/leads/import/{id_}")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    assert status["state"] in TERMINAL, status
    counted = (
        status["rows_created"] + status["rows_merged"] + status["rows_held"]
        + status["rows_rejected"]
    )  # fmt: skip
    assert counted == status["rows_read"], status
    if status["state"] == "succeeded":
        assert status["progress"] == 1.0
        assert status["bytes_read"] == status["bytes_total"], status
        if upload.data_rows is not None:
            assert status["rows_read"] == upload.data_rows, status
    else:
        assert status["detail"], status
    assert (status["error_report_url"] is not None) == (status["rows_rejected"] > 0)
    report = await api.get(f"/v1/leads/import/{id_}/errors.csv")
    assert report.status_code == 200, report.text
    assert report.headers["content-type"].startswith("text/csv")
    text = report.content.decode("utf-8")
    assert text.startswith("\ufeff")
    # The report is written in the upload's delimiter (commas for `|` or none known).
    delimiter = status["delimiter"] if status["delimiter"] in (",", ";", "\t") else ","
    lines = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=delimiter))
    assert lines[0] == REPORT_HEADER
    rows = set()
    for line in lines[1:]:
        assert len(line) == 4, line
        row = int(line[0])
        assert row >= 2, line
        assert line[3], line
        rows.add(row)
    assert len(rows) == status["rows_rejected"], (status, lines)
    return status


# CAUCE_FUZZ_EXAMPLES=N runs a longer campaign with fresh random examples each time.
CAMPAIGN = int(os.environ.get("CAUCE_FUZZ_EXAMPLES", "0"))


@settings(
    max_examples=CAMPAIGN or 80,
    deadline=None,
    derandomize=not CAMPAIGN,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(upload=uploads())
async def test_any_upload_gets_a_clear_answer(
    api: httpx.AsyncClient, worker: JobWorker, upload: Upload
) -> None:
    """Never a 5xx; refusals are problem+json; an accepted import ends succeeded or
    failed with consistent counts and a report that parses as CSV."""
    response = await api.post(
        "/v1/leads/import",
        content=upload.body(),
        headers={"content-type": upload.content_type, **upload.headers},
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code != 202:
        assert 400 <= response.status_code < 500, response.text
        _check_problem(response)
        event(f"refused: {response.json()['code']} {response.json().get('errors', [{}])[0]}")
        return
    body = response.json()
    assert body["state"] == "queued"
    status = await _check_import(api, worker, upload, body["id"])
    event(f"import {status['state']}")
    read, rejected = min(status["rows_read"], 3), min(status["rows_rejected"], 1)
    event(f"rows read: {read}+, rejected: {rejected}+")
    if status["rows_created"] + status["rows_merged"] + status["rows_held"]:
        event("some rows imported")


# --- what the fuzzing and the audit found ------------------------------------------------


def _files(data: bytes, filename: str = "leads.csv") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (filename, data, "text/csv")}


@pytest.mark.parametrize(
    ("request_", "errors"),
    [
        # httpx (like other clients) sends a part with an empty filename as a plain field.
        ({"files": _files(b"email\na@b.es\n", filename="")}, [("/file", "file_expected")]),
        ({"files": {"options": (None, b"{}")}}, [("/file", "missing")]),
        (
            {"files": {"upload": ("a.csv", b"email\na@b.es\n", "text/csv")}},
            [("/upload", "part_unknown"), ("/file", "missing")],
        ),
        (
            {"files": _files(b"email\na@b.es\n"), "data": {"mapping": '{"email": "email"}'}},
            [("/mapping", "part_unknown")],
        ),
    ],
)
async def test_a_form_without_a_proper_file_part_names_the_part(
    api: httpx.AsyncClient, request_: dict[str, Any], errors: list[tuple[str, str]]
) -> None:
    """A file part without a filename, no file part, a part under another name, a
    `mapping` outside `options`: each is a 422 problem naming the part, in plain words."""
    response = await api.post("/v1/leads/import", **request_)
    assert response.status_code == 422, response.text
    _check_problem(response)
    body = response.json()
    assert body["code"] == "validation_failed"
    assert [(e["pointer"], e["type"]) for e in body["errors"]] == errors
    assert "Expected UploadFile" not in response.text


async def test_a_body_that_is_not_a_form_is_refused_with_415(api: httpx.AsyncClient) -> None:
    """A CSV sent as the raw body (not multipart) is told how to send it."""
    response = await api.post(
        "/v1/leads/import", content=b"email\na@b.es\n", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 415
    _check_problem(response)
    assert "`file`" in response.json()["detail"]


async def test_two_columns_mapped_to_the_email_are_refused_before_the_upload_is_kept(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The audit's case: a mapping sending `Email` and `Correo` to email used to import
    every row with both joined by a space (an invalid email); now it is a 422 naming
    both columns and the field, and nothing is stored or queued."""
    data = b"Email;Correo;Nombre;Tel\nana@b.es;ana@c.es;Ana;612345678\n"
    options = '{"mapping": {"Email": "email", "Correo": "email"}}'
    response = await api.post("/v1/leads/import", files=_files(data), data={"options": options})
    assert response.status_code == 422, response.text
    _check_problem(response)
    body = response.json()
    assert body["code"] == "import_mapping_invalid"
    assert [e["pointer"] for e in body["errors"]] == [
        "/options/mapping/Email",
        "/options/mapping/Correo",
    ]
    assert "'Email' and 'Correo'" in body["errors"][0]["detail"]
    assert "'email'" in body["errors"][0]["detail"]
    imports_dir = leads_app.state.resources.settings.data_dir / "imports"
    assert not imports_dir.exists() or list(imports_dir.iterdir()) == []
    joined = '{"mapping": {"Email": "last_name", "Correo": "last_name"}}'
    allowed = await api.post("/v1/leads/import", files=_files(data), data={"options": joined})
    assert allowed.status_code == 202, allowed.text  # name fields still join


async def test_an_unreadable_file_names_the_file_part(api: httpx.AsyncClient) -> None:
    """A file refused as a whole (empty, binary) is a 422 whose error points at `file`."""
    for data in (b"", b"\x00\x01binary\x00"):
        response = await api.post("/v1/leads/import", files=_files(data))
        assert response.status_code == 422
        _check_problem(response)
        assert response.json()["code"] == "import_file_invalid"
        assert [e["pointer"] for e in response.json()["errors"]] == ["/file"]


async def _import(api: httpx.AsyncClient, worker: JobWorker, upload: Upload) -> dict[str, Any]:
    response = await api.post(
        "/v1/leads/import", content=upload.body(), headers={"content-type": upload.content_type}
    )
    assert response.status_code == 202, response.text
    return await _check_import(api, worker, upload, response.json()["id"])


async def test_the_error_report_names_the_csv_column_of_each_error(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """Each report line names the column as the file writes it (its header) besides the
    lead field, for a field's error and for a cell that cannot be decoded; NULs past the
    sniffed start (in a header too) go the schema's way on both databases: dropped from
    text, refused in an email."""
    long_header = "Notas " + "x" * 5000 + "\x00"
    filler = "".join(f"Begoña;r{i}@empresa.es;612345678;x\n" for i in range(300))
    text = (
        f"Nombre;Correo electrónico;Teléfono;{long_header}\n"
        + filler
        + "Luis;luis@;612345678;x\n"
        + "Eva;eva@empresa.es;12;x\n"
        + "Ana;ana\x00@empresa.es;612345678;no\x00ta\n"
        + "Lu\x00is;luis@empresa.es;612345678;no\x00ta\n"
    )
    data = text.encode() + b"Jos\xe9;jose@empresa.es;612345678;x\n"
    status = await _import(api, worker, Upload(parts=[("file", "leads.csv", "text/csv", data)]))
    assert (status["state"], status["rows_read"], status["rows_rejected"]) == ("succeeded", 305, 4)
    report = await api.get(status["error_report_url"])
    text = report.content.decode("utf-8-sig")  # in the upload's delimiter
    lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    assert [line[:3] for line in lines] == [
        ["row", "column", "field"],
        ["302", "Correo electrónico", "email"],
        ["303", "Teléfono", "phone"],
        ["304", "Correo electrónico", "email"],
        ["306", "Nombre", "first_name"],
    ]
    assert lines[2][3] == "is too short for region ES"
    assert "U+0000" in lines[3][3]
    assert lines[4][3].startswith("the cell has bytes that are not valid utf-8; ")
    found = await api.get("/v1/leads", params={"q": "luis@empresa.es"})
    assert [lead["first_name"] for lead in found.json()["items"]] == ["Luis"]


async def test_a_filename_with_control_characters_is_kept_without_them(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A NUL in the upload's filename was a 500 on PostgreSQL; the name is a label, so
    its control characters are dropped."""
    upload = Upload(parts=[("file", "a\x00b\x1b.csv", "text/csv", b"email\na@empresa.es\n")])
    status = await _import(api, worker, upload)
    assert status["filename"] == "ab.csv"


async def test_a_finished_import_has_read_every_byte(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """`bytes_read` reaches `bytes_total` when an import succeeds, even with no rows
    after the header or a last chunk that ends the rows exactly."""
    header_only = Upload(parts=[("file", "a.csv", "text/csv", b"email;nombre\n")])
    rows = "".join(f"l{i}@empresa.es;Ana\n" for i in range(200))  # one chunk exactly
    exact = Upload(parts=[("file", "b.csv", "text/csv", f"email;nombre\n{rows}".encode())])
    for upload in (header_only, exact):
        status = await _import(api, worker, upload)
        assert status["bytes_read"] == status["bytes_total"] > 0


async def test_a_mapping_only_the_job_can_check_fails_the_import_saying_why(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A header row longer than the probed start is planned by the job: a mapping entry
    for a column the file lacks then fails the import, and its detail names the entry."""
    header = "email;Notas " + "x" * 70_000 + "\n"
    upload = Upload(
        parts=[
            ("file", "a.csv", "text/csv", (header + "a@empresa.es;x\n").encode()),
            ("options", None, None, b'{"mapping": {"Fax": "phone"}}'),
        ]
    )
    status = await _import(api, worker, upload)
    assert (status["state"], status["rows_read"]) == ("failed", 0)
    assert "/options/mapping/Fax: the file has no column named 'Fax'" in status["detail"]
