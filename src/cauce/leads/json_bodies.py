"""Reading a JSON request body and answering JSON, for the leads endpoints (intake in
`endpoints`, the routes on one lead in `endpoints_lead`).

A body is read raw (`json_body`) and validated with `model_validate_json` by its
handler; `invalid` turns the `ValidationError` into the 400 or 422 it answers, and
`schema_body` declares the request schema to OpenAPI by hand.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from cauce.core.errors import UnsupportedMediaType, malformed_json
from cauce.core.web.openapi import inline_schema
from cauce.leads.errors import LeadInvalid
from cauce.leads.schemas import LeadIn, LeadPatch
from cauce.leads.schemas_batch import MAX_ITEM_ERRORS, crowded, field_errors

# The bodies that are a lead or a change of one (`invalid`'s read-only answers).
LEAD_MODELS: Final = (LeadIn, LeadPatch)

JSON: Final = "application/json"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


_BOM = b"\xef\xbb\xbf"
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


async def json_body(request: Request, accepted: tuple[str, ...] = (JSON,)) -> bytes:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in accepted:
        raise UnsupportedMediaType(f"this endpoint accepts {' or '.join(accepted)} bodies only")
    charset = _CHARSET.search(content_type) if ";" in content_type else None
    if charset is not None and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"JSON bodies are read as UTF-8; this one says charset={charset.group(1)}"
        )
    body = await request.body()
    # A UTF-8 byte order mark (Windows tools add one) may be ignored (RFC 8259 §8.1).
    return body[3:] if body.startswith(_BOM) else body


def invalid(exc: ValidationError, body: bytes, model: type[BaseModel]) -> Exception:
    """A broken JSON body's 400, or the fields' 422: at most `MAX_ITEM_ERRORS` errors, or
    the one of an object with far more members than its model has fields (`crowded`)."""
    count = exc.error_count()
    lead = model in LEAD_MODELS  # a lead's or a change's: read-only members told so
    if count <= MAX_ITEM_ERRORS:
        return malformed_json(exc.errors()) or LeadInvalid(field_errors(exc, lead=lead))
    # Broken JSON is one error, so the body parses. Only this many errors can come from
    # a crowded object, and then turning each into a dict costs more than reading the
    # body again (60,000 unknown members in 1 MiB: 0.3 s, and 5 MB of answer).
    too_many = crowded(_parsed(body), model)
    if too_many is not None:
        return LeadInvalid([too_many])
    return LeadInvalid(
        field_errors(exc, most=MAX_ITEM_ERRORS, lead=lead), f"{count} field(s) are invalid"
    )


def _parsed(body: bytes) -> Any:
    """`body`, JSON that pydantic read, as Python values (None if it cannot be)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # what orjson refuses and pydantic reads: an integer past 64 bits, NaN...
    try:
        return json.loads(body)
    except ValueError:
        return None


def schema_body(model: type[BaseModel], media: tuple[str, ...] = (JSON,)) -> dict[str, Any]:
    schema = inline_schema(model)
    return {
        "requestBody": {
            "required": True,
            "content": {name: {"schema": schema} for name in media},
        }
    }
