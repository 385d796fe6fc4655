"""API keys: creation, listing, revocation and fast verification.

A key reads `cauce_<key id>_<secret>`: the prefix makes leaked keys recognisable to
secret scanners, the key id finds the row without a scan, and the secret carries 192
bits of randomness. Because keys are random, not chosen by people, a keyed SHA-256
(HMAC with the deployment's secret key) is enough; a slow password hash would only make
every request slower. Verified keys are cached for `auth.cache_ttl_seconds`, so a revoked
key stops working within that time in every process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.errors import BadRequest, NotFound, Unauthenticated
from cauce.core.security.models import ApiKey
from cauce.core.security.scopes import unknown_scopes

KEY_PREFIX = "cauce_"
_KEY_RE = re.compile(r"^cauce_([a-z0-9]{12})_([A-Za-z0-9_-]{32})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a verified key."""

    api_key_id: int
    key_id: str
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: `token` is shown once and never stored."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    token: str


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What `cauce apikey list` shows: never the key."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


log = structlog.get_logger("cauce.auth")


def hash_token(secret_key: bytes, token: str) -> str:
    """The keyed hash stored for `token`."""
    return hmac.new(secret_key, token.encode(), hashlib.sha256).hexdigest()


def generate_token() -> tuple[str, str]:
    """A new `(key_id, token)` pair."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"


class ApiKeyService:
    """Key management and request-time verification."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        secret_key: bytes,
        *,
        cache_ttl: float = 5.0,
        last_used_resolution: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secret = secret_key
        self._ttl = cache_ttl
        self._resolution = timedelta(seconds=last_used_resolution)
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._inflight: dict[str, asyncio.Future[Principal]] = {}
        self._revocations = 0  # revocations in this process, for in-flight look-ups

    async def create(self, name: str, scopes: Sequence[str]) -> CreatedKey:
        """Create a key with `scopes`; raises `BadRequest` on an unknown scope or empty name."""
        name = name.strip()
        if not name or len(name) > 200:
            raise BadRequest("a key needs a name of 1 to 200 characters")
        wanted = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
        if not wanted:
            raise BadRequest("a key needs at least one scope")
        if bad := unknown_scopes(wanted):
            raise BadRequest(f"unknown scope(s): {', '.join(bad)}")
        key_id, token = generate_token()
        async with unit_of_work(self._sessionmaker) as session:
            session.add(
                ApiKey(
                    key_id=key_id,
                    name=name,
                    key_hash=hash_token(self._secret, token),
                    scopes=list(wanted),
                )
            )
        return CreatedKey(key_id=key_id, name=name, scopes=wanted, token=token)

    async def list(self) -> list[KeyInfo]:
        """Every key, newest first."""
        async with self._sessionmaker() as session:
            rows = (await session.scalars(select(ApiKey).order_by(ApiKey.id.desc()))).all()
        return [
            KeyInfo(
                key_id=r.key_id,
                name=r.name,
                scopes=tuple(r.scopes),
                created_at=r.created_at,
                revoked_at=r.revoked_at,
                last_used_at=r.last_used_at,
            )
            for r in rows
        ]

    async def revoke(self, key_id: str) -> None:
        """Revoke a key by its id (the part after `cauce_`) or its whole token; raises
        `NotFound`, naming the id as given (a token's id only, never its secret)."""
        given = key_id
        key_id = key_id.removeprefix(KEY_PREFIX).split("_", 1)[0]
        shown = key_id if given.startswith(KEY_PREFIX) else given
        async with unit_of_work(self._sessionmaker) as session:
            result = await session.execute(
                update(ApiKey)
                .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if getattr(result, "rowcount", 0) == 0:
                exists = await session.scalar(select(ApiKey.id).where(ApiKey.key_id == key_id))
                if exists is None:
                    raise NotFound(f"no API key with id {shown}")
        self._revocations += 1
        self._cache.clear()

    async def verify(self, token: str) -> Principal:
        """The principal behind `token`, or `Unauthenticated` (same message for every failure)."""
        match = _KEY_RE.match(token)
        if match is None:
            raise Unauthenticated("invalid API key")
        # The cache is keyed by the keyed hash, so raw keys never sit in memory and a
        # lookup compares digests, not secrets.
        expected = hash_token(self._secret, token)
        now = self._clock()
        cached = self._cache.get(expected)
        if cached is not None and cached[0] > now:
            return cached[1]
        # One look-up per key at a time: when the cached entry expires under load, the
        # requests that find it gone share the one database look-up instead of each
        # making their own (a burst of writers on SQLite).
        lookup = self._inflight.get(expected)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(match.group(1), expected, now))
            self._inflight[expected] = lookup
            lookup.add_done_callback(lambda done: self._done(expected, done))
        return await asyncio.shield(lookup)

    def _done(self, expected: str, lookup: asyncio.Future[Principal]) -> None:
        self._inflight.pop(expected, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved, even when every waiter went away

    async def _look_up(self, key_id: str, expected: str, now: float) -> Principal:
        revocations = self._revocations
        async with self._sessionmaker() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            # compare_digest keeps the comparison time independent of where hashes differ.
            if row is None or not hmac.compare_digest(row.key_hash, expected):
                raise Unauthenticated("invalid API key")
            if row.revoked_at is not None:
                self._cache.pop(expected, None)
                raise Unauthenticated("invalid API key")
            principal = Principal(row.id, row.key_id, row.name, frozenset(row.scopes))
            stamp = utcnow()
            stale = row.last_used_at is None or stamp - row.last_used_at >= self._resolution
        if stale:  # a write only when the stamp is due (at most once per resolution)
            try:
                async with unit_of_work(self._sessionmaker) as session:
                    await session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == principal.api_key_id, ApiKey.revoked_at.is_(None))
                        .values(last_used_at=stamp)
                    )
            except SQLAlchemyError as exc:  # bookkeeping: it never fails a request
                log.warning("auth.last_used_not_recorded", error=type(exc).__name__)
        # A key revoked here while this look-up ran is not cached (it was read before).
        if self._ttl > 0 and revocations == self._revocations:
            if len(self._cache) > 10_000:  # bound memory against key-spraying clients
                self._cache.clear()
            self._cache[expected] = (now + self._ttl, principal)
        return principal
