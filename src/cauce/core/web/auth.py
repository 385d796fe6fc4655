"""`require_scope`: the dependency every `/v1` route declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from cauce.core.errors import Forbidden, Unauthenticated
from cauce.core.security.apikeys import ApiKeyService, Principal
from cauce.core.security.scopes import grants

# auto_error=False: a missing or malformed header becomes Cauce's own 401 problem.
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer cauce_...`"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header, read as `HTTPBearer` reads it."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if token and scheme.lower() == "bearer" else None


async def authorize(request: Request, scope: str | None) -> Principal:
    """The caller's key, checked to hold `scope` (`None`: any valid key); 401 or 403."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("send an API key as `Authorization: Bearer cauce_...`")
    service: ApiKeyService = request.app.state.resources.api_keys
    principal = await service.verify(token)
    structlog.contextvars.bind_contextvars(principal=principal.key_id)
    if scope is not None and not grants(principal.scopes, scope):
        raise Forbidden(f"this API key lacks the `{scope}` scope", required_scope=scope)
    return principal


# What a route that calls `authorize` itself declares, for the OpenAPI document.
BEARER_SECURITY: Final[dict[str, Any]] = {"security": [{bearer_scheme.scheme_name: []}]}


def require_scope(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks it holds `scope`.

    `None` means any valid key (used by `/v1/me`, which every key may call). The
    hottest routes (`POST /v1/leads`, `/batch`) call `authorize` in their body instead,
    with `BEARER_SECURITY` in their OpenAPI entry: the same checks, without FastAPI
    solving two nested dependencies for every request (~20 us of ~1 ms).
    """

    async def dependency(request: Request, _credentials: Credentials) -> Principal:
        return await authorize(request, scope)

    dependency.__name__ = f"require_scope_{(scope or 'any').replace(':', '_')}"
    return dependency
