"""`require_scope`: the dependency every `/v1` route declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cauce.core.errors import Forbidden, Unauthenticated
from cauce.core.security.apikeys import ApiKeyService, Principal
from cauce.core.security.scopes import grants

# auto_error=False: a missing or malformed header becomes Cauce's own 401 problem.
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer cauce_...`"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def require_scope(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks it holds `scope`.

    `None` means any valid key (used by `/v1/me`, which every key may call).
    """

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        if credentials is None or not credentials.credentials:
            raise Unauthenticated("send an API key as `Authorization: Bearer cauce_...`")
        service: ApiKeyService = request.app.state.resources.api_keys
        principal = await service.verify(credentials.credentials)
        structlog.contextvars.bind_contextvars(principal=principal.key_id)
        if scope is not None and not grants(principal.scopes, scope):
            raise Forbidden(f"this API key lacks the `{scope}` scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_scope_{(scope or 'any').replace(':', '_')}"
    return dependency
