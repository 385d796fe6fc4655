"""Operational routes: liveness, readiness, metrics, `/v1/me`, and the docs page."""

from __future__ import annotations

import asyncio
import html
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from cauce.core.observability.metrics import exposition
from cauce.core.security.apikeys import Principal
from cauce.core.web.auth import require_scope
from cauce.core.web.openapi import NUL_IN_URL, key_problems, problems
from cauce.core.web.problems import problem_response
from cauce.core.web.routing import CauceRoute

system_router = APIRouter(
    route_class=CauceRoute, tags=["operations"], responses=problems({400: NUL_IN_URL})
)
v1_router = APIRouter(
    prefix="/v1",
    route_class=CauceRoute,
    tags=["identity"],
    responses=problems({400: NUL_IN_URL, **key_problems()}),
)

READY_TIMEOUT_SECONDS = 2.0
log = structlog.get_logger("cauce.http")


class Health(BaseModel):
    """Liveness answer."""

    model_config = ConfigDict(extra="forbid")
    status: str


class Me(BaseModel):
    """The calling API key."""

    model_config = ConfigDict(extra="forbid")
    key_id: str
    name: str
    scopes: list[str]


@system_router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is up and its event loop answers; checks nothing else."""
    return Health(status="ok")


@system_router.get(
    "/readyz",
    summary="Readiness",
    responses=problems(
        {503: "`not_ready`: a dependency does not answer; `checks` says which (`failed`)"}
    ),
)
async def readyz(request: Request) -> Response:
    """Every configured dependency answers; 503 names the ones that do not.

    A check with details (the job engine names itself) answers an object
    `{"status": "ok", ...details}`; the others answer `"ok"` or `"failed"`.
    """
    resources = request.app.state.resources
    checks = resources.health_checks
    details: dict[str, dict[str, str]] = getattr(resources, "health_details", {})
    names = list(checks)

    async def run(name: str) -> str | None:
        try:
            # Probes are polled every few seconds: tracing them would bury real traces.
            with suppress_instrumentation():
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    await checks[name]()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"{type(exc).__name__}"
        return None

    results = await asyncio.gather(*(run(n) for n in names))
    failed = {n: r for n, r in zip(names, results, strict=True) if r is not None}
    status: dict[str, object] = {}
    for n in names:
        state = "ok" if n not in failed else "failed"
        status[n] = {"status": state, **details[n]} if n in details else state
    if failed:
        return problem_response(
            request,
            status=503,
            code="not_ready",
            title="Not ready",
            detail="failed: " + ", ".join(f"{n} ({e})" for n, e in failed.items()),
            checks=status,
        )
    return Response(
        content=orjson.dumps({"status": "ready", "checks": status}),
        media_type="application/json",
    )


@system_router.get(
    "/metrics",
    summary="Prometheus metrics",
    # Its answer is the text exposition format (`text/plain; version=...`), for the
    # document: the route builds its `Response` itself.
    response_class=PlainTextResponse,
    response_description="The metrics, in Prometheus's text exposition format",
)
async def metrics(request: Request) -> Response:
    """The app's Prometheus registry in the text exposition format (with several
    serving processes, all of theirs summed: `exposition`).

    Gauges read from the database (job queue depth) are refreshed first; if that fails or
    is slow, the scrape still answers, with the previous values.
    """
    resources = request.app.state.resources
    for refresh in getattr(resources, "before_scrape", ()):
        try:
            with suppress_instrumentation():
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    await refresh()
        except Exception as exc:  # noqa: BLE001 - stale gauges beat a failed scrape
            log.warning("metrics.refresh_failed", error_class=type(exc).__name__)
    return Response(exposition(resources.registry), media_type=CONTENT_TYPE_LATEST)


@v1_router.get("/me", response_model=Me, summary="The calling API key")
async def me(principal: Annotated[Principal, Depends(require_scope(None))]) -> Me:
    """Name and scopes of the key that made this request."""
    return Me(key_id=principal.key_id, name=principal.name, scopes=sorted(principal.scopes))


# Swagger UI for `/docs`, pinned to one release of swagger-ui-dist with the hashes of its
# files (Subresource Integrity): operators paste admin keys into this page, so a
# changed file on the CDN must not run in it. The hashes are of the files in the npm
# tarball (whose sha512 the registry publishes), which jsDelivr serves unchanged. To
# upgrade: `npm view swagger-ui-dist@<v> dist.tarball`, fetch it, and for each file
# `openssl dgst -sha384 -binary <file> | openssl base64 -A`.
SWAGGER_UI_VERSION = "5.35.0"
_SWAGGER_UI_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
SWAGGER_UI_JS = f"{_SWAGGER_UI_CDN}/swagger-ui-bundle.js"
SWAGGER_UI_JS_SRI = "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9"
SWAGGER_UI_CSS = f"{_SWAGGER_UI_CDN}/swagger-ui.css"
SWAGGER_UI_CSS_SRI = "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I"

# FastAPI's page (`get_swagger_ui_html`, which takes no integrity attributes) with its
# default Swagger UI parameters; no third-party favicon, and no Referer sent to the CDN.
_DOCS_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="referrer" content="no-referrer">
<link type="text/css" rel="stylesheet" href="{css}" integrity="{css_sri}" crossorigin="anonymous">
<link rel="icon" href="data:,">
<title>{title}</title>
</head>
<body>
<div id="swagger-ui">
</div>
<script src="{js}" integrity="{js_sri}" crossorigin="anonymous"></script>
<script>
const ui = SwaggerUIBundle({{
    url: {openapi_url},
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": true,
    "showExtensions": true,
    "showCommonExtensions": true,
    presets: [
        SwaggerUIBundle.presets.apis,
        SwaggerUIBundle.SwaggerUIStandalonePreset
    ],
}})
</script>
</body>
</html>
"""


def _script_string(value: str) -> str:
    """`value` as a JavaScript string literal that cannot end the <script> element."""
    return orjson.dumps(value).decode().replace("<", "\\u003c").replace(">", "\\u003e")


def docs_page(title: str, openapi_url: str) -> str:
    """The HTML of the interactive docs for the OpenAPI document at `openapi_url`."""
    return _DOCS_PAGE.format(
        css=SWAGGER_UI_CSS,
        css_sri=SWAGGER_UI_CSS_SRI,
        js=SWAGGER_UI_JS,
        js_sri=SWAGGER_UI_JS_SRI,
        title=html.escape(f"{title} - Swagger UI"),
        openapi_url=_script_string(openapi_url),
    )


def install_docs(app: FastAPI, path: str = "/docs") -> None:
    """Serve Swagger UI at `path` (GET and HEAD, outside the OpenAPI document), as
    FastAPI's `docs_url` would, but from pinned, integrity-checked files."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return

    async def swagger_ui(request: Request) -> HTMLResponse:
        root_path = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(docs_page(app.title, root_path + openapi_url))

    app.add_route(path, swagger_ui, include_in_schema=False)
