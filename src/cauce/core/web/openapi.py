"""What the OpenAPI document says about error answers, and the schemas and parameters
routes declare by hand.

Every error is RFC 9457 `application/problem+json` (ADR 0003), never FastAPI's
`application/json` `HTTPValidationError`: each route names the statuses it can answer in
its `responses=` with `problems(...)`, each described by the codes it may carry.

The schemas here are written inline by the routes: FastAPI registers a component only for
a model it parses or renders itself, and these describe answers of Cauce's own renderer
and bodies read by hand (the intake routes parse their bodies themselves, for speed).
Once the document is built, `share_problem_schema` replaces each error answer's copy by a
reference to one `components/schemas/Problem`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

from cauce.core.web.problems import PROBLEM_MEDIA_TYPE

# Written by `problem_response` (problems.py): these four always, `detail`, `instance`
# (the path), `request_id` and `errors` when they apply, and extension members
# (`required_scope`, `merged_into`...) next to them. Terse, as every error answer of every
# operation carries a copy: its description says which codes it may carry, and
# ADR 0003 what each member means.
_TEXT: Final = {"type": "string"}
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "RFC 9457 problem details: branch on `code`",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": _TEXT,
        "title": _TEXT,
        "status": {"type": "integer"},
        "code": _TEXT,
        "detail": _TEXT,
        "instance": _TEXT,
        "request_id": _TEXT,
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail", "type"],
                "properties": {"pointer": _TEXT, "detail": _TEXT, "type": _TEXT},
            },
        },
    },
}

# The answers of `RequestContextMiddleware` and the auth dependency, as most routes can
# give them. A route adds its own codes beside these (`problems` lists each).
NUL_IN_URL: Final = "`nul_in_url`: the URL holds a NUL character (`%00`)"
MALFORMED_BODY: Final = (
    "`malformed_body`: the body is not JSON (its `errors` says where the parser stopped)"
)
IDEMPOTENCY_KEY_INVALID: Final = (
    "`idempotency_key_invalid`: an `Idempotency-Key` empty, too long or not printable"
)
UNAUTHENTICATED: Final = "`unauthenticated`: no API key, or not a valid one"
PAYLOAD_TOO_LARGE: Final = "`payload_too_large`: the body is over the size limit"
UNSUPPORTED_CONTENT_ENCODING: Final = (
    "`unsupported_content_encoding`: a compressed body (`Content-Encoding`); only identity is read"
)
VALIDATION_FAILED: Final = (
    "`validation_failed`: the request breaks its schema; `errors` names each part and why"
)
IDEMPOTENCY_KEY_REUSED: Final = (
    "`idempotency_key_reused`: the `Idempotency-Key` was first used with another request"
)
IDEMPOTENCY_KEY_IN_USE: Final = (
    "`idempotency_key_in_use`: a request with this `Idempotency-Key` is being processed; "
    "retry after `Retry-After` seconds (its answer is then replayed; a batch that stopped "
    "part-way goes on from its last stored part)"
)
DATABASE_UNAVAILABLE: Final = (
    "`database_unavailable`: the database did not answer; retry after `Retry-After` seconds"
)


def forbidden(*scopes: str) -> str:
    """The 403 of a route that needs every one of `scopes`."""
    needed = " and ".join(f"`{scope}`" for scope in scopes)
    return f"`forbidden`: the key lacks {needed} (named in `required_scope`)"


def unsupported_media_type(accepted: str) -> str:
    """The 415 of a route that takes a body: its media types, and no compressed body."""
    return f"`unsupported_media_type`: a body that is not {accepted}; " + (
        UNSUPPORTED_CONTENT_ENCODING
    )


Reasons = str | Sequence[str]


def problem(reasons: Reasons) -> dict[str, Any]:
    """One error answer for FastAPI's `responses=`: problem+json, described by the codes
    it may carry (one reason, or several as a list)."""
    lines = [reasons] if isinstance(reasons, str) else list(reasons)
    description = lines[0] if len(lines) == 1 else "\n".join(f"- {line}" for line in lines)
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": copy.deepcopy(PROBLEM_SCHEMA)}},
    }


def problems(answers: Mapping[int, Reasons]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the error statuses `answers` names, each with its reasons."""
    return {status: problem(reasons) for status, reasons in sorted(answers.items())}


def key_problems(*scopes: str) -> dict[int, Reasons]:
    """What a route behind an API key answers before it runs: 401, 403 when it needs a
    scope (none: any valid key), 503 when the key's look-up finds no database."""
    answers: dict[int, Reasons] = {401: UNAUTHENTICATED, 503: DATABASE_UNAVAILABLE}
    if scopes:
        answers[403] = forbidden(*scopes)
    return answers


def path_parameter(name: str, description: str) -> dict[str, Any]:
    """A string path parameter, for a route that reads it from `request.path_params`: a
    FastAPI one would have FastAPI document a 422 that a free string never gets."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


# `check_key` (idempotency.py): 1 to 255 printable characters, blanks around ignored.
IDEMPOTENCY_KEY: Final[dict[str, Any]] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the request safe to retry (Stripe's semantics): the same key with "
    "the same request, within 24 hours, answers the first answer again "
    "(`Idempotent-Replayed: true`) instead of doing the work twice; with another request "
    "it is refused (422 `idempotency_key_reused`). Keys are the API key's own.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON Schema with each of its `$defs` written where it is referred to.

    Embedded as it is, a model's schema keeps its definitions in its own `$defs`, but its
    `#/$defs/...` references resolve from the document's root, where there are none.
    """
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolved(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolved(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            name = reference.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"{model.__name__}: {name} refers to itself")
            target = resolved(definitions[name], (*seen, name))
            siblings = {k: resolved(v, seen) for k, v in node.items() if k != "$ref"}
            return {**target, **siblings}
        return {key: resolved(value, seen) for key, value in node.items()}

    inlined: dict[str, Any] = resolved(schema, ())
    return inlined


def share_problem_schema(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with every error answer's schema a reference to one shared `Problem`
    (components/schemas): FastAPI registers only the models it reads or writes itself, so
    `problem` writes the schema in each answer, and a client generator would make a type
    of each. Changed in place; returned."""
    shared = False
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for answer in operation.get("responses", {}).values():
                media = answer.get("content", {}).get(PROBLEM_MEDIA_TYPE)
                if media is not None and media.get("schema") == PROBLEM_SCHEMA:
                    media["schema"] = {"$ref": "#/components/schemas/Problem"}
                    shared = True
    if shared:
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = copy.deepcopy(PROBLEM_SCHEMA)
    return document
