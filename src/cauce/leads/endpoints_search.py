"""The leads HTTP API's search side: `GET /v1/leads` (filters, cursor pages) and
`GET /v1/leads/export.csv` (the same filters, streamed as CSV).

Its router is included before `endpoints_lead.lead_router`, so `/export.csv` is never read
as a lead id by `GET /v1/leads/{id}`.

A parameter given twice (`?status=new&status=won`) is refused (`_single_values`): read
as FastAPI reads it, only the last value would count, silently. The cursor is opaque and
bound to the filters of the search that gave it (`_cursor_for`, `_cursor_position`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import structlog
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError
from starlette.responses import StreamingResponse

from cauce.core.web.instants import ISO_8601_ONLY
from cauce.core.web.openapi import NUL_IN_URL, VALIDATION_FAILED, key_problems, problems
from cauce.core.web.problems import json_pointer
from cauce.core.web.routing import CauceRoute
from cauce.core.web.whole_numbers import WHOLE_NUMBER_TEXT
from cauce.leads import repository_lead as repo_lead
from cauce.leads.csv_export import EXPORT_READS, lead_export
from cauce.leads.endpoints import Read, runtime
from cauce.leads.errors import LeadInvalid
from cauce.leads.field_types import in_utc
from cauce.leads.normalise import visible_text
from cauce.leads.places import COUNTRY_CODES
from cauce.leads.responses import LeadOut
from cauce.leads.schemas import LeadSource, LeadStatus
from cauce.leads.views import listed_view

log = structlog.get_logger("cauce.leads.export")

search_router = APIRouter(
    prefix="/v1/leads",
    route_class=CauceRoute,
    tags=["leads"],
    responses=problems(
        {
            400: NUL_IN_URL,
            **key_problems("leads:read"),
            422: f"{VALIDATION_FAILED} (a filter, the cursor)",
        }
    ),
)


class LeadPage(BaseModel):
    """One page of leads, newest first; pass `next_cursor` as `cursor` for the next."""

    model_config = ConfigDict(extra="forbid")
    items: list[LeadOut]
    next_cursor: str | None = Field(
        default=None,
        description="Opaque: send it as `cursor`, with the same filters, for the next page "
        "(null on the last page)",
    )


async def _single_values(request: Request) -> None:
    """Refuse a query parameter given more than once: FastAPI keeps only the last value
    (`?status=new&status=won` searched `won` alone, `?limit=5&limit=200` gave 200), and
    the filters are one value each (no OR). A 422 naming each such parameter."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    repeated = [(name, n) for name, n in counts.items() if n > 1]
    if repeated:
        raise LeadInvalid(
            [
                {
                    "pointer": json_pointer(("query", name)),
                    "detail": f"is given {n} times: send it once (each filter takes one "
                    "value, and only the last would have counted)",
                    "type": "repeated",
                }
                for name, n in repeated
            ]
        )


# Runs after the key's check (a parameter of the route after `Read`), before the query is
# read: a repeated parameter is refused whatever its values.
SingleValues = Annotated[None, Depends(_single_values)]

# A cursor: a version, the last row id of the page, a digest of the search's filters
# (`_filters_digest`) and a check over those, in base64url. Not a secret (a client may
# read any lead of the list anyway), only a guard: a cursor of another search, or one
# edited by hand, is refused rather than silently skipping leads.
_CURSOR_VERSION = 1
_ID_BYTES, _FILTERS_BYTES, _CHECK_BYTES = 8, 6, 4
_CURSOR_BYTES = 1 + _ID_BYTES + _FILTERS_BYTES + _CHECK_BYTES
_MAX_ROW_ID = 2**63 - 1  # BIGINT


def _filters_digest(query: repo_lead.LeadQuery) -> bytes:
    """The digest of a search's filters, as normalised (`_query`): a cursor pages only
    the search that gave it. The page size is not a filter: it may change between pages."""
    filters = dataclasses.asdict(query)
    # A filter added since cursors were first given counts only when it is given, so a
    # search without it keeps the digest (and the cursors) it had.
    if filters["consent_marketing"] is None:
        del filters["consent_marketing"]
    fields = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(fields, digest_size=_FILTERS_BYTES, person=b"cauce-leads").digest()


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_BYTES, person=b"cauce-cursor").digest()


def _cursor_for(last_id: int, query: repo_lead.LeadQuery) -> str:
    """The opaque cursor of the page after row `last_id` of the search `query`."""
    payload = bytes([_CURSOR_VERSION]) + last_id.to_bytes(_ID_BYTES, "big") + _filters_digest(query)
    return base64.urlsafe_b64encode(payload + _check(payload)).decode().rstrip("=")


def _cursor_refused(kind: str, detail: str) -> LeadInvalid:
    return LeadInvalid([{"pointer": "#query/cursor", "detail": detail, "type": kind}])


def _cursor_position(raw: str | None, query: repo_lead.LeadQuery) -> int | None:
    """The row id a cursor pages from; a 422 at `#query/cursor`: `cursor_invalid` for
    anything `_cursor_for` did not write (an old numeric cursor, one edited by hand),
    `cursor_mismatch` for a cursor of a search with other filters."""
    if raw is None:
        return None
    data = b""
    if len(raw) <= 2 * _CURSOR_BYTES:
        try:
            data = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            data = b""
    if base64.urlsafe_b64encode(data).decode().rstrip("=") != raw:
        data = b""  # only as `_cursor_for` writes it: no padding, no stray bits
    payload, check = data[:-_CHECK_BYTES], data[-_CHECK_BYTES:]
    last_id = int.from_bytes(payload[1 : 1 + _ID_BYTES], "big")
    if (
        len(data) != _CURSOR_BYTES
        or payload[0] != _CURSOR_VERSION
        or check != _check(payload)
        or not 0 < last_id <= _MAX_ROW_ID
    ):
        raise _cursor_refused(
            "cursor_invalid",
            "is not a cursor this API gave: send a page's `next_cursor` as it came",
        )
    if payload[1 + _ID_BYTES :] != _filters_digest(query):
        raise _cursor_refused(
            "cursor_mismatch",
            "comes from a search with other filters: a cursor pages only the search that "
            "gave it (send the same filters, or start again without a cursor)",
        )
    return last_id


# A date or a time without an offset is read as UTC (the times Cauce stores); a number
# is no date (pydantic would read it as a Unix time).
Instant = Annotated[datetime, ISO_8601_ONLY, AfterValidator(in_utc)]


def _not_below(low: str) -> AfterValidator:
    """A range's upper bound: refused when below the field `low` (given before it)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        floor = info.data.get(low)
        if value is not None and floor is not None and value < floor:
            raise PydanticCustomError("range", "is below {low}", {"low": low})
        return value

    return AfterValidator(check)


# Each word of `q` is one LIKE over every lead (`repository_lead.search_words`, and
# `other_script_words` for words in another script), and so is each phone number
# (`phone_runs`: one condition, its forms in it).
MAX_SEARCH_WORDS = 8


def _few_words(value: str | None) -> str | None:
    phones, rest = repo_lead.phone_runs(value)
    count = (
        len(phones) + len(repo_lead.search_words(rest)) + len(repo_lead.other_script_words(value))
    )
    if value is not None and count > MAX_SEARCH_WORDS:
        raise PydanticCustomError(
            "too_many_words",
            "at most {most} different words (each is searched in every lead)",
            {"most": MAX_SEARCH_WORDS},
        )
    return value


def _nfc(value: str | None) -> str | None:
    # Owners are stored composed (NFC, as every text field): a decomposed `Iñaki`
    # (n + combining tilde, as some keyboards and macOS file names send it) is the same name.
    return unicodedata.normalize("NFC", value) if value is not None else None


def _known_country(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.upper()
    if code not in COUNTRY_CODES:
        raise PydanticCustomError(
            "country_unknown",
            "is not a country a lead can have: an ISO 3166-1 alpha-2 code such as ES, MX "
            "or AR (in any case)",
        )
    return code


class LeadSearch(BaseModel):
    """Query filters of `GET /v1/leads/export.csv` (and of `GET /v1/leads`)."""

    model_config = ConfigDict(extra="forbid")
    status: LeadStatus | None = None
    source: LeadSource | None = Field(
        default=None, description="Where the lead first came from (its `source`)"
    )
    owner: Annotated[str | None, AfterValidator(_nfc)] = Field(
        default=None, max_length=200, description="An owner's name, exactly (case too)"
    )
    country: Annotated[str | None, AfterValidator(_known_country)] = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="The lead's country: an ISO 3166-1 alpha-2 code (ES, MX...), any case",
    )
    created_after: Instant | None = Field(
        default=None,
        description="Created at or after this instant (inclusive): ISO 8601 date or time; "
        "without an offset, UTC. In a URL a `+` offset is sent as `%2B`",
    )
    created_before: Annotated[Instant | None, _not_below("created_after")] = Field(
        default=None,
        description="Created before this instant (exclusive): ISO 8601 date or time; "
        "without an offset, UTC. In a URL a `+` offset is sent as `%2B`",
    )
    min_score: Annotated[int | None, WHOLE_NUMBER_TEXT] = Field(default=None, ge=0, le=100)
    max_score: Annotated[int | None, WHOLE_NUMBER_TEXT, _not_below("min_score")] = Field(
        default=None, ge=0, le=100
    )
    q: Annotated[str | None, AfterValidator(_few_words)] = Field(
        default=None,
        max_length=200,
        description=f"Free text: up to {MAX_SEARCH_WORDS} words, each found somewhere in the "
        "lead (accents, case and punctuation aside); digits in groups (`612 34 56 78`, "
        "`+34 612-34-56-78`, `0034...`) are one phone number",
    )
    held: bool | None = Field(
        default=None,
        description="true: only leads held for review (possible duplicates); "
        "false: only leads not held",
    )
    consent_marketing: Literal["true", "false", "none"] | None = Field(
        default=None,
        description="The lead's marketing consent: `true`, given; `false`, "
        "refused or withdrawn; `none`, no consent recorded (none sent, or one without "
        "`marketing`)",
    )
    order: Literal["newest", "oldest"] = Field(
        default="newest",
        description="newest first (the default), or oldest first: a review queue "
        "(`held=true`) worked in the order the leads arrived",
    )


class LeadFilters(LeadSearch):
    """Query filters of `GET /v1/leads`: the search, and the page."""

    cursor: str | None = Field(
        default=None,
        description="`next_cursor` of the previous page, sent with the same filters: "
        "opaque, and refused (422 `cursor_mismatch`) with other filters",
    )
    limit: Annotated[int, WHOLE_NUMBER_TEXT] = Field(default=50, ge=1, le=200)


class LeadExport(LeadSearch):
    """Query of `GET /v1/leads/export.csv`: the search, and the file's delimiter."""

    delimiter: Literal[",", ";"] = Field(
        default=",",
        description="`;` (sent as `%3B`) for Excel in Spain and most of Latin America, "
        "whose list separator it is: the file then opens in columns on a double click",
    )


def _query(filters: LeadSearch, request: Request) -> repo_lead.LeadQuery:
    # A national phone number in `q` is read where intake reads one without a country.
    return query_for(filters, runtime(request).settings.leads.default_region)


def query_for(filters: LeadSearch, default_region: str) -> repo_lead.LeadQuery:
    """The repository's query for a search's filters (`benchmarks/leads_read_scale.py`
    asks it too, for the plans of the SQL this endpoint issues)."""
    return repo_lead.LeadQuery(
        status=str(filters.status) if filters.status else None,
        source=str(filters.source) if filters.source else None,
        owner=filters.owner,
        country=filters.country,
        created_after=filters.created_after,
        created_before=filters.created_before,
        min_score=filters.min_score,
        max_score=filters.max_score,
        # Invisible characters (a soft hyphen, a zero-width space) split no word, and a
        # query of spaces alone is no query.
        text=visible_text(filters.q) or None if filters.q is not None else None,
        held=filters.held,
        consent_marketing=filters.consent_marketing,
        oldest_first=filters.order == "oldest",
        phone_region=default_region.upper(),
    )


@search_router.get("", response_model=LeadPage, summary="Search leads")
async def list_leads(
    request: Request,
    principal: Read,
    _single: SingleValues,
    filters: Annotated[LeadFilters, Query()],
) -> LeadPage:
    """Leads matching every filter given, newest first, with cursor pagination. A
    parameter given twice is refused (422 `repeated`), as is a cursor of a search with
    other filters (422 `cursor_mismatch`) or one this API did not give (`cursor_invalid`)."""
    rt = runtime(request)
    query = _query(filters, request)
    before = _cursor_position(filters.cursor, query)
    async with rt.sessionmaker() as session:
        leads = await repo_lead.search(session, query, before_id=before, limit=filters.limit + 1)
        more = len(leads) > filters.limit
        page = leads[: filters.limit]
        extras = await repo_lead.listed_extras(session, page)
    return LeadPage(
        items=[listed_view(lead, extras) for lead in page],
        next_cursor=_cursor_for(page[-1].id, query) if more and page else None,
    )


@search_router.get(
    "/export.csv",
    response_class=StreamingResponse,
    summary="Export leads as CSV",
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_leads(
    request: Request,
    principal: Read,
    _single: SingleValues,
    filters: Annotated[LeadExport, Query()],
) -> StreamingResponse:
    """Every lead matching the filters, as CSV with spreadsheet formulas neutralised and
    identifiers that look like numbers or dates kept as text. A parameter given twice is
    refused (422 `repeated`)."""
    rt = runtime(request)
    query = _query(filters, request)
    sent = 0

    async def pages() -> AsyncIterator[bytes]:
        nonlocal sent
        before: int | None = None
        first = True
        while True:
            # Rows of the columns the file shows, not ORM objects, and pages of 2,000:
            # loading each lead whole, 500 at a time, was most of an export's time.
            async with rt.sessionmaker() as session:
                rows = await repo_lead.search_rows(
                    session, query, EXPORT_READS, before_id=before, limit=2000
                )
                held = await repo_lead.live_uids(session, {row[1] for row in rows} - {None})
            if not rows and not first:
                return
            for chunk in lead_export(
                rows, held, delimiter=filters.delimiter, bom=first, header=first
            ):
                yield chunk
            sent += len(rows)
            if not rows:
                return
            first = False
            before = rows[-1][0]

    async def body() -> AsyncIterator[bytes]:
        # The status line (200) went out with the first chunk: a failure after it, or a
        # client that went away, leaves a cut file, which the access line cannot say.
        try:
            async for chunk in pages():
                yield chunk
        except Exception as exc:
            log.error("leads.export.aborted", reason="error", error=type(exc).__name__, rows=sent)
            raise
        except BaseException:  # cancelled, or closed: the client went away
            log.warning("leads.export.aborted", reason="client_gone", rows=sent)
            raise

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leads.csv"'},
    )
