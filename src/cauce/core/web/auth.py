"""`require_scope` (`require_scopes`): the dependency every `/v1` route declares."""

from __future__ import annotations

from typing import Any, Final

import structlog
from fastapi import Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from cauce.core.errors import Forbidden, Unauthenticated
from cauce.core.security.apikeys import ApiKeyService, Principal
from cauce.core.security.scopes import grants

# The OpenAPI security scheme of every `/v1` route.
SCHEME_NAME: Final = "ApiKey"
SCHEME: Final = HTTPBearerModel(description="`Authorization: Bearer cauce_...`")


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
BEARER_SECURITY: Final[dict[str, Any]] = {"security": [{SCHEME_NAME: []}]}


class ScopeGuard(SecurityBase):
    """The dependency `require_scope` makes: authenticates the caller and checks it holds
    `scope` (see `authorize`).

    A `SecurityBase`, so FastAPI writes the bearer scheme into the route's OpenAPI entry as
    it would for its own `HTTPBearer`, while the request is its only parameter: FastAPI
    solves one dependency, not one nested in another (HTTPBearer's, ~20 us a request, a
    tenth of a small route's time). A missing or malformed header is Cauce's own 401.
    """

    def __init__(self, scope: str | None, also: tuple[str, ...] = ()) -> None:
        self.model = SCHEME
        self.scheme_name = SCHEME_NAME
        self.scope = scope
        self.also = also
        # FastAPI's debug messages and error reports name a dependency by its callable.
        names = "_".join(s.replace(":", "_") for s in (scope or "any", *also))
        self.__name__ = f"require_scope_{names}"

    async def __call__(self, request: Request) -> Principal:
        principal = await authorize(request, self.scope)
        for scope in self.also:
            if not grants(principal.scopes, scope):
                raise Forbidden(f"this API key lacks the `{scope}` scope", required_scope=scope)
        return principal


def require_scopes(scope: str, *also: str) -> ScopeGuard:
    """`require_scope` for a route that needs every one of several scopes (checked in
    order; a 403 names the first one missing)."""
    return ScopeGuard(scope, also)


def require_scope(scope: str | None) -> ScopeGuard:
    """A dependency that authenticates the caller and checks it holds `scope`.

    `None` means any valid key (used by `/v1/me`, which every key may call). The
    hottest routes (`POST /v1/leads`, `/batch`) call `authorize` in their body instead,
    with `BEARER_SECURITY` in their OpenAPI entry: the same checks, without a dependency
    for FastAPI to solve.
    """
    return ScopeGuard(scope)
