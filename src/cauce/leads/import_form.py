"""The multipart form of `POST /v1/leads/import`: its parts read by hand, so that every
mistake gets its own words (a part unknown or repeated, the file missing or sent as a
plain field), and its `options` checked before the upload is stored."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from cauce.core.errors import malformed_json
from cauce.core.web.openapi import inline_schema
from cauce.core.web.problems import json_pointer
from cauce.leads.csv_mapping import check_mapping
from cauce.leads.errors import (
    FieldError,
    ImportMappingInvalid,
    ImportOptionsInvalid,
    ImportRequestInvalid,
)
from cauce.leads.schemas_batch import MAX_ITEM_ERRORS, crowded, field_errors
from cauce.leads.schemas_requests import ImportOptionsIn

FORM_PARTS = ("file", "options")
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The CSV: UTF-8 (with or without BOM), UTF-16, "
                            "cp1252 or Latin-1; `,`, `;`, tab or `|`",
                        },
                        "options": {
                            "type": "string",
                            "description": "JSON: mapping, unknown_columns, delimiter, "
                            "encoding, default_phone_region, consent_wording_version, "
                            "consent_given_at",
                            "contentSchema": inline_schema(ImportOptionsIn),
                        },
                    },
                }
            }
        },
    }
}


def part_error(name: str, detail: str, kind: str) -> FieldError:
    """An error of the form part `name`, pointing at it."""
    return FieldError(pointer=json_pointer(("body", name)), detail=detail, type=kind)


def form_parts(form: FormData) -> tuple[UploadFile, str | None]:
    """The file and the options of the form, or `ImportRequestInvalid` naming each bad
    part (the parts are read by hand so that every mistake gets its own words)."""
    errors: list[FieldError] = []
    for name in dict.fromkeys(form.keys()):
        if name not in FORM_PARTS:
            hint = " (the mapping goes inside `options`)" if name == "mapping" else ""
            shown = name if len(name) <= 100 else name[:100] + "…"
            errors.append(
                part_error(
                    name,
                    f"this endpoint takes a `file` and an `options` part, not '{shown}'{hint}",
                    "part_unknown",
                )
            )
        elif len(form.getlist(name)) > 1:
            errors.append(part_error(name, f"`{name}` is sent more than once", "part_repeated"))
    file, options = form.get("file"), form.get("options")
    if file is None:
        errors.append(
            part_error(
                "file",
                "the CSV file is missing: send it as a multipart part named `file`",
                "missing",
            )
        )
    elif not isinstance(file, UploadFile):
        errors.append(
            part_error(
                "file",
                "`file` came as a plain form field, not a file: a file part needs a "
                "filename, and an empty one makes some clients send a plain field "
                "(e.g. curl -F file=@leads.csv)",
                "file_expected",
            )
        )
    if options is not None and not isinstance(options, str):
        errors.append(
            part_error("options", "`options` is a file: send it as a plain JSON field", "text")
        )
    if errors:
        raise ImportRequestInvalid(errors)
    assert isinstance(file, UploadFile)
    return file, options if isinstance(options, str) else None


def _in_mapping(pointer: str) -> bool:
    return pointer == "/options/mapping" or pointer.startswith("/options/mapping/")


def parse_options(options: str | None) -> ImportOptionsIn:
    try:
        parsed = ImportOptionsIn.model_validate_json(options or "{}")
    except ValidationError as exc:
        if exc.error_count() > MAX_ITEM_ERRORS:
            # An object with thousands of unknown members is one error, and any other
            # answer lists `MAX_ITEM_ERRORS` errors at most (as a lead's does).
            try:
                raw = orjson.loads(options or "{}")
            except orjson.JSONDecodeError:
                raw = None  # what pydantic reads and orjson does not (a 30-digit integer)
            too_many = crowded(raw, ImportOptionsIn, "/options")
            if too_many is not None:
                raise ImportOptionsInvalid([too_many]) from None
        malformed = malformed_json(
            exc.errors(), json_pointer(("body", "options")), "the `options` form field"
        )
        if malformed is not None:
            raise malformed from None
        errors = field_errors(exc, "/options", most=MAX_ITEM_ERRORS)
        # Only errors inside `mapping` are mapping errors; with any other, every error is
        # reported as an options error (a mapping error among them keeps its pointer).
        if all(_in_mapping(e["pointer"]) for e in errors):
            raise ImportMappingInvalid(errors) from None
        raise ImportOptionsInvalid(errors) from None
    check_mapping(parsed.mapping)  # before the upload is stored, not after
    return parsed
