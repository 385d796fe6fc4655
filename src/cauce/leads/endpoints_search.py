"""The leads HTTP API's search side: `GET /v1/leads` (filters, cursor pages) and
`GET /v1/leads/export.csv` (the same filters, streamed as CSV).

Its router is included before `endpoints.router`, so `/export.csv` is never read as a
lead id by `GET /v1/leads/{id}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError
from starlette.responses import StreamingResponse

from cauce.core.web.instants import ISO_8601_ONLY
from cauce.core.web.openapi import NUL_IN_URL, VALIDATION_FAILED, key_problems, problems
from cauce.core.web.routing import CauceRoute
from cauce.core.web.whole_numbers import WHOLE_NUMBER_TEXT
from cauce.leads import repository_lead as repo_lead
from cauce.leads.csv_export import EXPORT_COLUMNS, contacts_cell, csv_export
from cauce.leads.endpoints import Read, parse_id, runtime
from cauce.leads.errors import LeadInvalid
from cauce.leads.field_types import in_utc
from cauce.leads.models import Lead
from cauce.leads.normalise import visible_text
from cauce.leads.responses import LeadOut
from cauce.leads.schemas import LeadSource, LeadStatus
from cauce.leads.views import listed_view

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
    next_cursor: str | None = None


def _cursor(raw: str | None) -> int | None:
    if raw is None:
        return None
    cursor = parse_id(raw)
    if cursor is None:
        raise LeadInvalid(
            [
                {
                    "pointer": "#query/cursor",
                    "detail": "not a cursor from a previous page",
                    "type": "cursor",
                }
            ]
        )
    return cursor


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
# `other_script_words` for words in another script).
MAX_SEARCH_WORDS = 8


def _few_words(value: str | None) -> str | None:
    count = len(repo_lead.search_words(value)) + len(repo_lead.other_script_words(value))
    if value is not None and count > MAX_SEARCH_WORDS:
        raise PydanticCustomError(
            "too_many_words",
            "at most {most} different words (each is searched in every lead)",
            {"most": MAX_SEARCH_WORDS},
        )
    return value


class LeadSearch(BaseModel):
    """Query filters of `GET /v1/leads/export.csv` (and of `GET /v1/leads`)."""

    model_config = ConfigDict(extra="forbid")
    status: LeadStatus | None = None
    source: LeadSource | None = Field(
        default=None, description="Where the lead first came from (its `source`)"
    )
    owner: str | None = Field(
        default=None, max_length=200, description="An owner's name, exactly (case too)"
    )
    country: str | None = Field(default=None, min_length=2, max_length=2)
    created_after: Instant | None = Field(
        default=None, description="ISO 8601 date or time; without an offset, UTC"
    )
    created_before: Annotated[Instant | None, _not_below("created_after")] = None
    min_score: Annotated[int | None, WHOLE_NUMBER_TEXT] = Field(default=None, ge=0, le=100)
    max_score: Annotated[int | None, WHOLE_NUMBER_TEXT, _not_below("min_score")] = Field(
        default=None, ge=0, le=100
    )
    q: Annotated[str | None, AfterValidator(_few_words)] = Field(
        default=None,
        max_length=200,
        description=f"Free text: up to {MAX_SEARCH_WORDS} words, each found somewhere in the "
        "lead (accents, case and punctuation aside)",
    )
    held: bool | None = Field(
        default=None,
        description="true: only leads held for review (possible duplicates); "
        "false: only leads not held",
    )


class LeadFilters(LeadSearch):
    """Query filters of `GET /v1/leads`: the search, and the page."""

    cursor: str | None = None
    limit: Annotated[int, WHOLE_NUMBER_TEXT] = Field(default=50, ge=1, le=200)


class LeadExport(LeadSearch):
    """Query of `GET /v1/leads/export.csv`: the search, and the file's delimiter."""

    delimiter: Literal[",", ";"] = Field(
        default=",",
        description="`;` (sent as `%3B`) for Excel in Spain and most of Latin America, "
        "whose list separator it is: the file then opens in columns on a double click",
    )


def _query(filters: LeadSearch) -> repo_lead.LeadQuery:
    return repo_lead.LeadQuery(
        status=str(filters.status) if filters.status else None,
        source=str(filters.source) if filters.source else None,
        owner=filters.owner,
        country=filters.country.upper() if filters.country else None,
        created_after=filters.created_after,
        created_before=filters.created_before,
        min_score=filters.min_score,
        max_score=filters.max_score,
        # Invisible characters (a soft hyphen, a zero-width space) split no word, and a
        # query of spaces alone is no query.
        text=visible_text(filters.q) or None if filters.q is not None else None,
        held=filters.held,
    )


@search_router.get("", response_model=LeadPage, summary="Search leads")
async def list_leads(
    request: Request, principal: Read, filters: Annotated[LeadFilters, Query()]
) -> LeadPage:
    """Leads matching every filter given, newest first, with cursor pagination."""
    rt = runtime(request)
    async with rt.sessionmaker() as session:
        leads = await repo_lead.search(
            session, _query(filters), before_id=_cursor(filters.cursor), limit=filters.limit + 1
        )
        more = len(leads) > filters.limit
        page = leads[: filters.limit]
        extras = await repo_lead.listed_extras(session, page)
    return LeadPage(
        items=[listed_view(lead, extras) for lead in page],
        next_cursor=str(page[-1].id) if more and page else None,
    )


@search_router.get(
    "/export.csv",
    response_class=StreamingResponse,
    summary="Export leads as CSV",
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_leads(
    request: Request, principal: Read, filters: Annotated[LeadExport, Query()]
) -> StreamingResponse:
    """Every lead matching the filters, as CSV with spreadsheet formulas neutralised."""
    rt = runtime(request)
    query = _query(filters)

    async def body() -> Any:
        before: int | None = None
        first = True
        while True:
            async with rt.sessionmaker() as session:
                leads = await repo_lead.search(session, query, before_id=before, limit=500)
            if not leads and not first:
                return
            rows = [_export_row(lead) for lead in leads]
            for chunk in csv_export(
                rows, EXPORT_COLUMNS, delimiter=filters.delimiter, bom=first, header=first
            ):
                yield chunk
            if not leads:
                return
            first = False
            before = leads[-1].id

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leads.csv"'},
    )


def _export_row(lead: Lead) -> dict[str, Any]:
    # Plain columns by name; dotted ones (`utm.source`) are looked up inside `utm`.
    row = {name: getattr(lead, name, None) for name in EXPORT_COLUMNS if "." not in name}
    row.update(
        id=lead.uid,
        is_disposable_email=lead.email_disposable,
        is_free_email=lead.email_free,
        utm=lead.utm,
        consent=lead.consent,
        other_emails=contacts_cell(lead.other_emails),
        other_phones=contacts_cell(lead.other_phones),
    )
    return row
