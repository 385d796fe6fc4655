"""Streaming CSV import (encodings, delimiters, header mapping, row errors, Cauce's own
export) and CSV export."""

from __future__ import annotations

import codecs
import csv
import io
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cauce.leads.csv_columns import EXPORT_HEADER_PREFIX, is_cauce_export, plan_columns
from cauce.leads.csv_headers import custom_key, fold_header
from cauce.leads.csv_import import (
    MAX_RECORD_CHARS,
    CsvLeadReader,
    CsvRow,
    ReportLine,
    column_of,
    detect_delimiter,
    detect_encoding,
    validate_row,
)
from cauce.leads.csv_mapping import check_mapping
from cauce.leads.errors import ImportFileInvalid, ImportMappingInvalid, ImportTooLarge
from cauce.leads.schemas import MAX_CUSTOM_FIELDS, LeadIn
from cauce.leads.schemas_requests import ImportOptionsIn

EXCEL_ES = (
    "Nombre;Apellidos;Correo electrónico;Teléfono;Empresa;País;Provincia;Consentimiento\r\n"
    "María José;García Núñez;mj@empresa.es;612 34 56 78;Construcciones Ñandú, S.L.;España;"
    "Málaga;Sí\r\n"
    'Íñigo;Muñoz;inigo@empresa.es;+52 55 1234 5678;"Café ""El Niño""; S.A.";México;'
    "Jalisco;no\r\n"
)


def read_all(data: bytes, chunk: int = 7, **options: Any) -> tuple[CsvLeadReader, list[CsvRow]]:
    reader = CsvLeadReader(**options)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return reader, list(reader.rows(chunks))


# --- encoding and delimiter ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (codecs.BOM_UTF8 + "año".encode(), ("utf-8", 3, True)),
        (codecs.BOM_UTF16_LE + "año".encode("utf-16-le"), ("utf-16-le", 2, True)),
        (codecs.BOM_UTF16_BE + "año".encode("utf-16-be"), ("utf-16-be", 2, True)),
        ("año".encode(), ("utf-8", 0, True)),
        ("año 5 €".encode("cp1252"), ("cp1252", 0, True)),
        (b"a\x81\xf1o", ("cp1252", 0, True)),
        (b"plain ascii", ("utf-8", 0, False)),
    ],
)
def test_detect_encoding(encoded: bytes, expected: tuple[str, int, bool]) -> None:
    """BOMs win; then UTF-8 if it decodes, else cp1252 (even with bytes cp1252 leaves
    undefined, which fail their row rather than turn the file to Latin-1); pure ASCII is
    provisional."""
    assert detect_encoding(encoded, at_eof=True) == expected


def test_detect_encoding_tolerates_a_character_cut_at_the_sample_end() -> None:
    """A UTF-8 sample ending mid-character is still UTF-8."""
    sample = "nombre;ñ".encode()[:-1]
    assert detect_encoding(sample, at_eof=False)[0] == "utf-8"


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("a;b;c\n1;2,5;3\n", ";"),
        ("a,b,c\n1,2,3\n", ","),
        ("a\tb\tc\n1\t2\t3\n", "\t"),
        ("a|b\n1|2\n", "|"),
        ('nombre;empresa\n"García, Ana";"Foo, S.L."\n', ";"),
        ('name,notes\n"x","a;b;c;d"\n', ","),
        ("solo\nuno\n", ","),
    ],
)
def test_detect_delimiter(sample: str, delimiter: str) -> None:
    """The delimiter that splits the header widest and keeps rows as wide wins."""
    assert detect_delimiter(sample, at_eof=True) == delimiter


@pytest.mark.parametrize(
    ("encoding", "bom", "delimiter"),
    [
        ("cp1252", b"", ";"),
        ("utf-8", codecs.BOM_UTF8, ";"),
        ("utf-8", b"", ";"),
        ("utf-16-le", codecs.BOM_UTF16_LE, "\t"),
        ("utf-8", codecs.BOM_UTF8, ","),
    ],
)
def test_excel_spanish_exports_read_the_same(encoding: str, bom: bytes, delimiter: str) -> None:
    """Excel's CSV, CSV UTF-8 and Unicode text exports of one sheet give the same rows."""
    table = list(csv.reader(io.StringIO(EXCEL_ES, newline=""), delimiter=";"))
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=delimiter, lineterminator="\r\n").writerows(table)
    reader, rows = read_all(bom + text.getvalue().encode(encoding))
    assert reader.format is not None
    assert (reader.format.delimiter, reader.format.bom) == (delimiter, bool(bom))
    assert [r.number for r in rows] == [2, 3]
    first, second = (r.data for r in rows)
    assert first == {
        "source": "csv",
        "first_name": "María José",
        "last_name": "García Núñez",
        "email": "mj@empresa.es",
        "phone": "612 34 56 78",
        "company": "Construcciones Ñandú, S.L.",
        "country": "España",
        "region": "Málaga",
        "consent": {"marketing": True},
    }
    assert second["company"] == 'Café "El Niño"; S.A.'
    assert second["consent"] == {"marketing": False}


def test_excel_sep_hint_line_is_honoured_and_skipped() -> None:
    """Excel's `sep=;` first line sets the delimiter and is not the header."""
    reader, rows = read_all(b"sep=;\r\nemail;nombre\r\na@b.es;Ana\r\n")
    assert reader.format is not None
    assert reader.format.delimiter == ";"
    assert rows == [CsvRow(2, {"source": "csv", "email": "a@b.es", "first_name": "Ana"})]


def test_multibyte_characters_split_across_chunks() -> None:
    """Feeding one byte at a time decodes every accent correctly."""
    _, whole = read_all(EXCEL_ES.encode(), chunk=1 << 20)
    _, bytewise = read_all(EXCEL_ES.encode(), chunk=1)
    assert bytewise == whole
    assert whole[0].data["last_name"] == "García Núñez"


def test_ascii_start_then_latin1_switches_to_cp1252() -> None:
    """A file whose first 64 KiB are ASCII and later rows cp1252 decodes correctly."""
    filler = "".join(f"x{i}@empresa.es;Ana\r\n" for i in range(6000))
    data = ("email;nombre\r\n" + filler + "jose@empresa.es;José Muñoz\r\n").encode("cp1252")
    assert len(data) > 70_000
    reader, rows = read_all(data, chunk=4096)
    assert rows[-1].data["first_name"] == "José Muñoz"
    assert reader.encoding == "cp1252"


def test_bad_bytes_in_a_utf8_file_fail_only_their_row() -> None:
    """A stray Latin-1 byte in a UTF-8 file is an error of that row alone."""
    data = "email;nombre\nana@b.es;Begoña\n".encode() + b"jose@b.es;Jos\xe9\n" + b"l@b.es;Luis\n"
    _, rows = read_all(data)
    assert [r.error is None for r in rows] == [True, False, True]
    assert rows[1].number == 3
    assert rows[1].error is not None
    assert "not valid utf-8" in rows[1].error


# --- CSV structure ------------------------------------------------------------------------

CELL = st.text(alphabet=st.sampled_from(list('ab ñ"\r\n;,')), max_size=8)


@given(
    st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=40),
    st.sampled_from([";", ","]),
)
@settings(max_examples=200, deadline=None)
def test_rows_match_the_csv_module_for_any_chunking(
    table: list[list[str]], chunk: int, delimiter: str
) -> None:
    """Quotes, delimiters and line breaks inside cells survive any chunk boundary."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["email", "nombre", "empresa"])
    writer.writerows(table)
    data = out.getvalue().encode()
    _, rows = read_all(data, chunk=chunk, delimiter=delimiter)
    expected = []
    for number, cells in enumerate(table, start=2):
        stripped = [c.strip() for c in cells]
        if not "".join(cells).strip():
            continue
        fields = dict(zip(["email", "first_name", "company"], stripped, strict=True))
        expected.append(CsvRow(number, {"source": "csv", **{k: v for k, v in fields.items() if v}}))
    assert rows == expected


def test_row_numbers_count_the_header_blank_rows_and_multiline_cells() -> None:
    """Row numbers are those a spreadsheet shows: header 1, one per record."""
    data = b'email;notas\r\na@b.es;"una\r\ndos"\r\n\r\n;\r\nc@d.es;x\r\n'
    _, rows = read_all(data)
    assert [(r.number, r.data["email"]) for r in rows] == [(2, "a@b.es"), (5, "c@d.es")]
    assert rows[0].data["custom_fields"] == {"notas": "una\r\ndos"}


def test_a_row_with_extra_cells_is_an_error_but_trailing_empties_are_not() -> None:
    """Extra non-empty cells fail the row; Excel's trailing `;;;` do not."""
    _, rows = read_all(b"email;nombre\na@b.es;Ana;;;\nb@c.es;Luis;extra\nc@d.es\n")
    assert rows[0].error is None
    assert rows[1].error == "the row has 3 cells but the header 2"
    assert rows[2].data == {"source": "csv", "email": "c@d.es"}


def test_an_unterminated_quote_at_the_end_fails_its_row() -> None:
    """A quote never closed makes the last row an error naming its column, not a crash."""
    _, rows = read_all(b'email;nombre\na@b.es;Ana\nb@c.es;"Luis\n')
    assert rows[0].error is None
    assert rows[1].error is not None
    assert rows[1].error.startswith("a quote opened in column 'nombre' is never closed")
    assert rows[1].cell == 1


def test_a_runaway_record_fails_its_row_not_the_file() -> None:
    """An unterminated quote that runs past the record limit on one line fails that row
    (it used to stop the import): the rows before it are read, and those after its line."""
    data = b'email;nombre\na@b.es;Ana\nb@c.es;"' + b"x" * (MAX_RECORD_CHARS + 10)
    _, rows = read_all(data, chunk=65536)
    assert [r.number for r in rows] == [2, 3]
    assert rows[0].error is None
    assert rows[1].error is not None
    assert f"longer than {MAX_RECORD_CHARS} characters" in rows[1].error
    _, rows = read_all(data + b'\nc@d.es;"Eva"\n', chunk=65536)
    assert [(r.number, r.error is None) for r in rows] == [(2, True), (3, False), (4, True)]
    assert f"longer than {MAX_RECORD_CHARS} characters" in (rows[1].error or "")
    assert rows[2].data == {"source": "csv", "email": "c@d.es", "first_name": "Eva"}


def test_a_cell_over_the_csv_field_limit_fails_only_its_row() -> None:
    """A cell bigger than the csv module's limit is that row's error, naming the cell;
    the rest is read."""
    big = "y" * (csv.field_size_limit() + 5)
    data = f'email;notas\na@b.es;"{big}"\nc@d.es;ok\n'.encode()
    _, rows = read_all(data, chunk=65536)
    assert rows[0].error is not None
    assert f"longer than {csv.field_size_limit()} characters" in rows[0].error
    assert rows[0].cell == 1
    assert rows[1] == CsvRow(
        3, {"source": "csv", "email": "c@d.es", "custom_fields": {"notas": "ok"}}
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
    ],
)
def test_unreadable_files_are_refused(data: bytes, message: str) -> None:
    """Empty and binary files fail with a clear ImportFileInvalid."""
    with pytest.raises(ImportFileInvalid, match=message):
        read_all(data)


def test_header_only_file_has_no_rows() -> None:
    """A file with a header and no data gives no rows and a plan."""
    reader, rows = read_all(b"email;nombre\r\n")
    assert rows == []
    assert reader.plan is not None
    assert reader.plan.headers == ["email", "nombre"]


def test_max_bytes_is_enforced_while_streaming() -> None:
    """A file over the byte limit is refused as it streams, not after."""
    with pytest.raises(ImportTooLarge):
        read_all(EXCEL_ES.encode() * 10, chunk=64, max_bytes=200)


def test_probe_detects_format_and_columns_before_the_job() -> None:
    """Probing the start of an upload gives its format and columns, or the 422 errors."""
    head = EXCEL_ES.encode("cp1252")
    csv_format, plan = CsvLeadReader().probe(head[:120], at_eof=False)
    assert (csv_format.encoding, csv_format.delimiter) == ("cp1252", ";")
    assert plan is not None
    assert plan.columns()[2] == ("Correo electrónico", "email")
    with pytest.raises(ImportMappingInvalid):
        CsvLeadReader(mapping={"Fax": "phone"}).probe(head, at_eof=True)
    with pytest.raises(ImportFileInvalid):
        CsvLeadReader().probe(b"", at_eof=True)


def test_reads_a_binary_file_object() -> None:
    """A binary file (an upload's spooled file) is read in chunks."""
    reader = CsvLeadReader()
    rows = list(reader.rows(io.BytesIO(EXCEL_ES.encode("cp1252"))))
    assert [r.data["email"] for r in rows] == ["mj@empresa.es", "inigo@empresa.es"]
    assert reader.bytes_read == len(EXCEL_ES.encode("cp1252"))


async def test_async_rows_match_sync_rows() -> None:
    """The async iterator yields the same rows as the sync one."""
    data = EXCEL_ES.encode("utf-8-sig")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 5):
            yield data[i : i + 5]

    rows = [row async for row in CsvLeadReader().arows(chunks())]
    assert rows == read_all(data)[1]


# --- header mapping -----------------------------------------------------------------------


def test_default_headers_in_spanish_and_english() -> None:
    """Spanish and English headers map without regard to case, accents or punctuation."""
    plan = plan_columns(
        ["E-mail:", "TELÉFONO MÓVIL", "Nombre completo", "Compañía", "Job Title", "país",
         "Localidad", "Idioma", "UTM_Source", "Acepta comunicaciones", "Fecha consentimiento"]
    )  # fmt: skip
    assert plan.targets == [
        "email", "phone", "full_name", "company", "job_title", "country", "city",
        "language", "utm.source", "consent.marketing", "consent.given_at",
    ]  # fmt: skip


def test_explicit_mapping_overrides_defaults_and_ignores_columns() -> None:
    """An explicit mapping wins over the defaults; None ignores a column."""
    plan = plan_columns(
        ["Correo", "Móvil", "Código"],
        mapping={"correo": None, "MOVIL": "phone", "Código": "custom_fields.codigo_cliente"},
    )
    assert plan.targets == [None, "phone", "custom_fields.codigo_cliente"]
    assert plan.ignored == ["Correo"]


def test_mapping_errors_point_at_the_mapping_entry() -> None:
    """Unknown targets and absent columns are reported per mapping key."""
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(["email", "a/b"], mapping={"email": "mail", "Fax": "phone", "a/b": "x.y"})
    assert [(e["pointer"], e["type"]) for e in info.value.errors] == [
        ("/options/mapping/email", "mapping_target_unknown"),
        ("/options/mapping/Fax", "mapping_column_unknown"),
        ("/options/mapping/a~1b", "mapping_target_unknown"),
    ]
    assert info.value.status_code == 422


def test_unknown_columns_become_custom_fields_or_are_ignored() -> None:
    """Unmapped columns become slugged custom fields, or are dropped when asked."""
    headers = ["email", "Sector económico", "Nº empleados", "Sector económico", "???"]
    plan = plan_columns(headers)
    assert plan.targets == [
        "email",
        "custom_fields.sector_economico",
        "custom_fields.no_empleados",
        "custom_fields.sector_economico_2",
        None,
    ]
    assert plan_columns(headers, unknown_columns="ignore").targets == [
        "email", None, None, None, None,
    ]  # fmt: skip
    assert custom_key("2024 ventas") == "c_2024_ventas"
    assert fold_header("  Correo-Electrónico ") == "correo electronico"


def test_custom_columns_past_the_schema_bound_are_ignored() -> None:
    """Only MAX_CUSTOM_FIELDS unknown columns become custom fields; the rest are listed."""
    headers = ["email"] + [f"col {i}" for i in range(MAX_CUSTOM_FIELDS + 3)]
    plan = plan_columns(headers)
    assert sum(1 for t in plan.targets if t and t.startswith("custom_fields.")) == 50
    assert plan.ignored == ["col 50", "col 51", "col 52"]


def test_two_surname_columns_are_joined() -> None:
    """`Primer apellido` and `Segundo apellido` fill last_name together."""
    data = "Nombre;Primer apellido;Segundo apellido;Email;Correo\nAna;García;López;a@b.es;x@y.es\n"
    _, rows = read_all(data.encode())
    assert rows[0].data["last_name"] == "García López"
    assert rows[0].data["email"] == "a@b.es"  # a second email column does not overwrite


def test_spanish_status_words_and_consent_values() -> None:
    """Status words in Spanish map to the status codes; consent yes/no words to booleans."""
    data = "email;estado del lead;consentimiento\na@b.es;Ganado;SI\nb@c.es;perdido;0\n"
    _, rows = read_all(data.encode())
    assert [(r.data["status"], r.data["consent"]["marketing"]) for r in rows] == [
        ("won", True),
        ("lost", False),
    ]


# --- validation -------------------------------------------------------------------------------


def test_rows_validate_into_leads_and_report_lines_name_the_column() -> None:
    """Valid rows become leads; invalid ones become lines naming row, column and field."""
    data = (
        "Nombre;Email;Teléfono;País;Consentimiento\n"
        "Ana García;ana@empresa.es;612345678;ES;no\n"
        "Luis;luis@;999 99 99 99;Narnia;sí\n"
        ";;;;\n"
        "Eva;;;;\n"
    ).encode()
    reader, rows = read_all(data)
    assert reader.plan is not None
    results = [validate_row(row, reader.plan) for row in rows]
    lead = results[0]
    assert isinstance(lead, LeadIn)
    assert (lead.phone, lead.source.value, lead.country) == ("+34612345678", "csv", "ES")
    assert results[1] == [
        ReportLine(3, "Email", "email", results[1][0].reason),  # type: ignore[index]
        ReportLine(3, "País", "country", results[1][1].reason),  # type: ignore[index]
        ReportLine(3, "Teléfono", "phone", "is not a valid number for region ES"),
        ReportLine(
            3,
            "Consentimiento",
            "consent.wording_version",
            results[1][3].reason,  # type: ignore[index]
        ),
    ]
    # A consent word Cauce does not read fails its row alone (test_csv_consent.py); a
    # yes without a wording version is told of the import's option.
    assert "consent_wording_version" in results[1][3].reason
    assert [(line.row, line.field) for line in results[2]] == [  # type: ignore[union-attr]
        (5, "email"),
        (5, "phone"),
    ]


def test_import_options_fill_the_consent_wording_of_consenting_rows() -> None:
    """The import's consent wording version completes rows that gave consent."""
    options = ImportOptionsIn(consent_wording_version="rgpd-v2", delimiter=";")
    reader = CsvLeadReader.from_options(options)
    rows = list(reader.rows([b"email;consentimiento\na@b.es;si\nb@c.es;\n"]))
    assert rows[0].data["consent"] == {"marketing": True, "wording_version": "rgpd-v2"}
    assert "consent" not in rows[1].data
    assert reader.plan is not None
    assert isinstance(validate_row(rows[0], reader.plan), LeadIn)


# --- memory -------------------------------------------------------------------------------

ROW = 'María José;García López;mj{0}@empresa.es;612 34 56 78;"Ñandú; S.L.";España;sí\r\n'
HEADER = "Nombre;Apellidos;Correo;Teléfono;Empresa;País;Consentimiento\r\n"


def generated_csv(total_bytes: int) -> Iterator[bytes]:
    """A cp1252 CSV of about `total_bytes`, produced 64 KiB at a time, never held whole."""
    yield HEADER.encode("cp1252")
    block = "".join(ROW.format(i) for i in range(700)).encode("cp1252")
    for _ in range(total_bytes // len(block) + 1):
        yield block


def peak_while_reading(total_bytes: int) -> tuple[int, int]:
    tracemalloc.start()
    try:
        reader = CsvLeadReader()
        rows = sum(1 for _ in reader.rows(generated_csv(total_bytes)))
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file() -> None:
    """Reading 4x more data does not raise the traced peak: memory is bounded, not O(file)."""
    small_rows, small_peak = peak_while_reading(512 * 1024)
    large_rows, large_peak = peak_while_reading(2 * 1024 * 1024)
    assert large_rows > 3 * small_rows
    # The peak is one chunk's rows plus fixed costs, whatever the file size.
    assert large_peak < small_peak * 1.25 + 64 * 1024
    assert large_peak < 4 * 1024 * 1024


def test_a_50_mb_file_streams_in_bounded_memory() -> None:
    """A 50 MB CSV is read with the process's resident memory growing by a few MB only."""
    script = textwrap.dedent(
        """
        import resource
        from tests.leads.test_csv_import import generated_csv
        from cauce.leads.csv_import import CsvLeadReader

        list(CsvLeadReader().rows(generated_csv(200_000)))  # warm-up: imports, caches
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reader = CsvLeadReader()
        rows = sum(1 for _ in reader.rows(generated_csv(50 * 1024 * 1024)))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(rows, reader.bytes_read, (after - before) * 1024)
        """
    )
    # A child process of its own, so the figure is not the test runner's memory; without
    # pytest-cov's subprocess hook, which would slow it several times over.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env=env,
    )
    rows, size, growth = (int(x) for x in done.stdout.split())
    assert size > 50 * 1024 * 1024
    assert rows > 500_000
    assert growth < size // 5, f"resident memory grew {growth} bytes for a {size} byte file"


# --- one field, several columns; row errors name their column ----------------------------


@pytest.mark.parametrize(
    ("mapping", "target"),
    [
        ({"Email": "email", "Correo": "email"}, "email"),
        ({"Email": "consent.marketing", "Correo": "consent.marketing"}, "consent.marketing"),
        ({"Email": "custom_fields.mails", "Correo": "custom_fields.mails"}, "custom_fields.mails"),
    ],
)  # fmt: skip
def test_a_mapping_sending_two_columns_to_a_one_value_field_is_refused(
    mapping: dict[str, str | None], target: str
) -> None:
    """Two columns mapped to the email (or any field but the names) would be joined into
    a value that cannot be right: the mapping is refused, naming both columns and the
    field, with or without the file's headers."""
    headers = ["Nombre", "Email", "Correo"]
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(headers, mapping=mapping)
    errors = info.value.errors
    assert [(e["pointer"], e["type"]) for e in errors] == [
        ("/options/mapping/Email", "mapping_target_repeated"),
        ("/options/mapping/Correo", "mapping_target_repeated"),
    ]
    assert all("'Email' and 'Correo'" in e["detail"] for e in errors)
    assert all(f"'{target}'" in e["detail"] for e in errors)
    with pytest.raises(ImportMappingInvalid):
        check_mapping(mapping)  # the endpoint's check, before the upload is stored


def test_a_mapping_may_join_name_columns() -> None:
    """Two surname columns mapped to last_name are joined, as the default headers are."""
    data = "Nombre;Paterno;Materno;Email\nAna;García;López;a@b.es\n"
    mapping: dict[str, str | None] = {"Paterno": "last_name", "Materno": "last_name"}
    check_mapping(mapping)
    _, rows = read_all(data.encode(), mapping=mapping)
    assert rows[0].data["last_name"] == "García López"
    assert rows[0].data["first_name"] == "Ana"


def test_a_field_the_mapping_names_is_not_also_filled_by_a_default_header() -> None:
    """A mapping that sends `Correo personal` to email wins over a default `Email`
    column, which becomes a custom field instead of being joined into the email."""
    data = "Email;Correo personal\nana@trabajo.es;ana@casa.es\n"
    mapping: dict[str, str | None] = {"Correo personal": "email"}
    reader, rows = read_all(data.encode(), mapping=mapping)
    assert reader.plan is not None
    assert reader.plan.targets == ["custom_fields.email", "email"]
    assert rows[0].data["email"] == "ana@casa.es"
    assert rows[0].data["custom_fields"] == {"email": "ana@trabajo.es"}
    names = plan_columns(["Nombre", "Nombre de pila"], mapping={"Nombre de pila": "first_name"})
    assert names.targets == ["custom_fields.nombre", "first_name"]


def test_a_mapping_may_not_name_one_column_twice_or_a_repeated_header_once() -> None:
    """Two entries for one column (`E-mail`, `e mail`) are refused; so is one entry
    naming a header the file repeats, which cannot say which column it means."""
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(["E-mail"], mapping={"E-mail": "email", "e mail": "phone"})
    assert [(e["pointer"], e["type"]) for e in info.value.errors] == [
        ("/options/mapping/e mail", "mapping_column_repeated")
    ]
    with pytest.raises(ImportMappingInvalid) as info:
        plan_columns(["Email", "email"], mapping={"email": "email"})
    assert [(e["pointer"], e["type"]) for e in info.value.errors] == [
        ("/options/mapping/email", "mapping_column_ambiguous")
    ]
    assert "'Email' in column 1 and 'email' in column 2" in info.value.errors[0]["detail"]


def test_undecodable_bytes_name_their_column_and_fail_nothing_in_an_ignored_one() -> None:
    """A cell that is not valid in the file's encoding fails its row naming the column
    (and the field it fills); in an ignored column it fails nothing, since that cell is
    never read."""
    data = "email;nombre;notas\nana@b.es;Begoña Núñez Ibáñez;x\n".encode() + (
        b"luis@b.es;Lu\xedis;x\neva@b.es;Eva;no\xefta\n"
    )
    reader, rows = read_all(data, mapping={"notas": None})
    assert reader.plan is not None
    results = [validate_row(row, reader.plan) for row in rows]
    assert isinstance(results[0], LeadIn)
    assert isinstance(results[1], list)
    assert [(r.row, r.column, r.field) for r in results[1]] == [(3, "nombre", "first_name")]
    assert results[1][0].reason.startswith("the cell has bytes that are not valid utf-8; ")
    assert isinstance(results[2], LeadIn)


def test_report_lines_name_the_column_of_nested_and_custom_fields() -> None:
    """`column_of` finds the header of a nested or custom field, and of the object
    holding it (`consent` → its columns)."""
    plan = plan_columns(["Consentimiento", "Fecha consentimiento", "Sector"])
    assert column_of(plan, "consent.marketing") == "Consentimiento"
    assert column_of(plan, "consent") == "Consentimiento + Fecha consentimiento"
    assert column_of(plan, "custom_fields.sector") == "Sector"
    assert column_of(plan, "email") == ""
    assert column_of(plan, "") == ""


# --- Cauce's own export -----------------------------------------------------------------------


def test_cauce_s_export_is_known_by_its_first_fifteen_headers() -> None:
    """The export's header, today's or the fifteen columns of an older one, is Cauce's;
    a file with Cauce's computed names in another order, or with one of the fifteen
    deleted or renamed, is any other file."""
    prefix = list(EXPORT_HEADER_PREFIX)
    assert is_cauce_export(prefix)
    assert is_cauce_export([*prefix, "external_id", "notas"])
    assert not is_cauce_export(["id", "email", "score", "created_at", "updated_at"])
    assert not is_cauce_export(prefix[:-1])
    assert not is_cauce_export([p for p in prefix if p != "company"] + ["company"])
    assert not is_cauce_export(["ID", *prefix[1:]])


def test_in_an_export_computed_columns_are_ignored_and_the_json_fills_custom_fields() -> None:
    """Read from an export (here with `;`, as a Spanish Excel saves it), `id`, `score` and
    `created_at` are ignored, `source` is the lead's source and `custom_fields` is read
    as JSON; a column the person added fills its custom field, winning over the JSON."""
    header = ";".join([*EXPORT_HEADER_PREFIX, "custom_fields", "Sector"])
    cells = [""] * len(EXPORT_HEADER_PREFIX)
    cells[0], cells[2], cells[11], cells[12] = "a1b2", "ana@empresa.es", "web_form", "80"
    cells[14] = "2025-01-02T03:04:05+00:00"
    json_cell = '"{""sector"": ""vino"", ""empleados"": 12, ""vip"": true}"'
    data = f"{header}\n{';'.join(cells)};{json_cell};Aceite\n".encode()
    reader, rows = read_all(data)
    assert reader.plan is not None
    assert reader.plan.ignored == ["id", "score", "created_at"]
    assert rows[0].data == {
        "source": "web_form",
        "email": "ana@empresa.es",
        "custom_fields": {"sector": "Aceite", "empleados": 12, "vip": True},
    }


def test_an_explicit_mapping_wins_over_the_export_s_defaults() -> None:
    """Each column the mapping names goes where it says; the others keep the export's
    defaults (`id` ignored, `custom_fields` read as JSON)."""
    headers = [*EXPORT_HEADER_PREFIX, "custom_fields"]
    plan = plan_columns(headers, mapping={"score": "custom_fields.puntuacion", "owner": None})
    targets = dict(zip(headers, plan.targets, strict=True))
    assert (targets["id"], targets["score"], targets["owner"]) == (
        None,
        "custom_fields.puntuacion",
        None,
    )
    assert (targets["source"], targets["custom_fields"]) == ("source", "custom_fields")
    assert plan_columns(headers, mapping={"custom_fields": None}).targets[-1] is None


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("{sector: vino}", "is not valid JSON (unexpected character"),
        ("[1, 2]", "is an array in JSON, not an object of custom fields"),
        ('"vino"', "is a string in JSON, not an object of custom fields"),
        ("12", "is a number in JSON, not an object of custom fields"),
        ("null", "is null in JSON, not an object of custom fields"),
    ],
)
def test_an_export_s_custom_fields_cell_that_is_no_json_object_fails_its_row(
    cell: str, reason: str
) -> None:
    """The row fails, the report naming the column and the field; nothing is raised."""
    header = ",".join([*EXPORT_HEADER_PREFIX, "custom_fields"])
    cells = ["a1b2", "", "ana@empresa.es", *[""] * (len(EXPORT_HEADER_PREFIX) - 3)]
    quoted = '"' + cell.replace('"', '""') + '"'
    reader, rows = read_all(f"{header}\n{','.join(cells)},{quoted}\n".encode())
    assert reader.plan is not None
    assert rows[0].error is not None
    assert rows[0].error.startswith(reason)
    outcome = validate_row(rows[0], reader.plan)
    assert isinstance(outcome, list)
    [line] = outcome
    assert (line.row, line.column, line.field) == (2, "custom_fields", "custom_fields")


def test_report_lines_name_the_json_column_of_an_export_s_custom_fields() -> None:
    """A custom field read from the export's JSON is reported under that column, and
    one from a column of its own under that column."""
    plan = plan_columns([*EXPORT_HEADER_PREFIX, "custom_fields", "Sector"])
    assert column_of(plan, "custom_fields.Bad Key") == "custom_fields"
    assert column_of(plan, "custom_fields") == "custom_fields"
    assert column_of(plan, "custom_fields.sector") == "Sector"
