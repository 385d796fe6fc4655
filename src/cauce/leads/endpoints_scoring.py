"""`GET /v1/leads/scoring/model`: the model this process scores new leads with.

A process loads its scorer once, at start-up (`wiring.scorer_for`), and keeps it: after
`cauce leads model activate`, every `cauce serve` and `cauce worker` process scores with
its old model until restarted. This answer (and the `cauce_leads_scoring_model_info`
gauge, `metrics.py`) tells a deploy script which processes did restart: each says the
model it loaded, when, the model the store names active now, and `stale` when the two
differ.

Its router is included before `endpoints_lead.lead_router`, as search's is: `/scoring/...`
is never read as a lead id.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from cauce.core.web.openapi import DATABASE_UNAVAILABLE, NUL_IN_URL, key_problems, problems
from cauce.core.web.routing import CauceRoute
from cauce.leads.endpoints import READ, Read, runtime
from cauce.leads.scoring import active_model_name, scorer_model

log = structlog.get_logger("cauce.leads")

STORE_UNAVAILABLE = (
    "`lead_scoring_store_unavailable`: the model store's active pointer cannot be read, or "
    "names no version; a process started now would refuse to start (`cauce leads model "
    "list` says why)"
)

scoring_router = APIRouter(
    prefix="/v1/leads/scoring",
    route_class=CauceRoute,
    tags=["leads"],
    responses=problems(
        {
            400: NUL_IN_URL,
            **key_problems(READ),
            503: [DATABASE_UNAVAILABLE, STORE_UNAVAILABLE],
        }
    ),
)


class ScoringModel(BaseModel):
    """The model this process scores new leads with, against the one the store names active."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        description="What this process scores new leads with, as a lead's `score_model` "
        "says: `points` or `learned-v<N>`",
        examples=["learned-v3"],
    )
    loaded_at: datetime | None = Field(
        description="When this process loaded it (UTC): at start-up",
    )
    active_model: str = Field(
        description="What the model store names active now (`cauce leads model activate`): "
        "what this process would score with once restarted",
        examples=["learned-v4"],
    )
    stale: bool = Field(
        description="true when `model` is not `active_model`: restart this process (every "
        "`cauce serve` and `cauce worker`) to score with the active model",
    )
    pid: int = Field(
        description="This process's id: with `cauce serve --workers N`, requests reach the "
        "N processes in turn; poll until each has answered `stale: false`",
    )


@scoring_router.get("/model", response_model=ScoringModel, summary="The scoring model in use")
async def scoring_model(request: Request, principal: Read) -> ScoringModel:
    """The model this process scores new leads with and when it loaded it, the model the
    store names active, and `stale` when they differ (the process needs a restart)."""
    rt = runtime(request)
    model, loaded_at = scorer_model(rt.scorer)
    try:
        # A file read (on a shared volume, perhaps): off the event loop.
        active = await asyncio.to_thread(active_model_name, rt.settings.data_dir)
    except (OSError, ValueError) as exc:
        # Imported here: the learned package imports scikit-learn, which a process
        # scoring with the points model never needs.
        from cauce.leads.learned.errors import ModelStoreUnavailable

        # The detail names no path of the server's; its log line has the whole error.
        log.warning("leads.scoring.active_unreadable", error=str(exc))
        reason = (
            f"the model store cannot be read ({exc.strerror or type(exc).__name__})"
            if isinstance(exc, OSError)
            else "the model store's active pointer names no version"
        )
        raise ModelStoreUnavailable(
            f"cannot tell which lead-scoring model is active: {reason}; this process "
            f"scores with {model}"
        ) from None
    return ScoringModel(
        model=model,
        loaded_at=loaded_at,
        active_model=active,
        stale=model != active,
        pid=os.getpid(),
    )
