"""`Idempotency-Key` on POST requests, with Stripe's semantics.

- The same key with the same request (method, path, body) replays the first response.
- The same key with a different request is refused (422 `idempotency_key_reused`).
- Like Stripe, a body is compared by what it says, not by its bytes: a JSON body is
  fingerprinted in a canonical form (`canonical_json`), so a retry that serialises the same
  JSON with other spacing, key order or string escapes is the same request. Numbers keep
  their type: `1` and `1.0` (and `0.0` and `-0.0`) differ.
- Fingerprints stored before that (digests of the raw bytes, kept up to one TTL) still
  match the very same bytes: `Fingerprint.matches` accepts either digest.
- Keys are scoped to the API key that sent them and kept for `ttl` (24 h by default);
  a periodic job (`PURGE_TASK`, `http.idempotency_purge_cron`, hourly by default)
  deletes the expired ones with the answers they hold.
- An answer that shows a record's personal data names it as its `subject`;
  `forget_subject` deletes such answers when the record is erased (GDPR), so no copy of
  the person waits behind a key for the rest of its TTL (`move_subject` follows a record
  merged into another). A retry under a forgotten key runs again and meets the erased
  record.

The stored response is written in the same transaction as the business rows it describes:
either both exist or neither does, so a crash between "did the work" and "remembered the
answer" cannot happen. Two concurrent requests with one key race on the primary key, or
the later one (having waited for the first's locks) finds the first's answer when it comes
to store its own; either way it is rolled back with 409 `idempotency_key_in_use` and, when
it retries, gets the replay.

An answer built in parts, each its own transaction (a large batch of leads), is kept the
same way part by part, as Stripe's "recovery points": the request first `claim`s the key
in a transaction of its own; each part's transaction first renews the claim (`hold`:
the row stays locked until the part ends, so no retry takes the key over meanwhile),
then stores the answer so far (`progress`), the last one the whole answer (`finish`),
each only while the claim is still this request's (its `owner` token). A retry of a
request that stopped (an error, a crash) takes the claim over once the first one's lease
has run out (`release`, on an error, ends it at once) and goes on from the last part
stored; until then it is refused with 409 `idempotency_key_in_use` and a `Retry-After`
of the lease's time left. A claim being worked on outlives the TTL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import orjson
import structlog
from sqlalchemy import (
    ColumnElement,
    Integer,
    LargeBinary,
    String,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cauce.core.db.base import Base, UtcDateTime, utcnow
from cauce.core.errors import CauceError
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry, TaskSpec

log = structlog.get_logger("cauce.idempotency")

HEADER = "Idempotency-Key"
DEFAULT_TTL = timedelta(hours=24)
# How long a claim on a key whose answer is built in parts holds without a part stored
# (`IdempotencyStore.claim`): a retry waits this long for a request that crashed.
DEFAULT_LEASE = timedelta(seconds=10)
MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    """A remembered response for one (API key, Idempotency-Key)."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    # The record whose personal data the answer shows (e.g. a lead's id), if any.
    subject: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # An answer being built in parts: the token of the request building it (`KeyClaim`), and
    # until when its claim holds without another part stored. Both None once the answer
    # is whole (`status_code` and `body` are then the answer; before, the parts so far).
    owner: Mapped[str | None] = mapped_column(String(32), default=None)
    leased_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class IdempotencyKeyInvalid(CauceError):
    """The header is empty or too long."""

    status_code = 400
    code = "idempotency_key_invalid"
    title = "Invalid Idempotency-Key"


class IdempotencyKeyReused(CauceError):
    """The key was first used with a different request."""

    status_code = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with a different request"


class IdempotencyKeyInUse(CauceError):
    """Another request with the same key is being processed right now."""

    status_code = 409
    code = "idempotency_key_in_use"
    title = "A request with this Idempotency-Key is in progress"
    retry_after: ClassVar[int] = 1  # the `Retry-After` header: by then the other's answer


class IdempotencyKeyUnfinished(IdempotencyKeyInUse):
    """The key's answer is being built in parts (`IdempotencyStore.claim`), or was left
    unfinished by a request that stopped: only a request building its answer in parts
    takes it over."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # type: ignore[misc]  # the instance's own wait


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """A request's hold on a key whose answer it builds in parts (`IdempotencyStore.claim`).

    `done` is what the request that held the key before stored with its last part
    (`progress`): where to go on from. None when no part was stored."""

    scope: str
    key: str
    owner: str
    done: Any


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What the first request answered."""

    status_code: int
    body: Any


def _digest(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# orjson reads an integer beyond 64 bits as the nearest float, so 2**64 and 2**64 + 1
# would read alike. It writes floats as `repr` does: one that large (>= 2**63) always with
# an exponent of 18 or more. The search is on orjson's output, a function of the value
# read, so two spellings of one value always take the same path in `canonical_json`
# (and it is fast: a literal-led pattern, 0.2 ms on a 1,000-lead batch; `\d{19}` was 9 ms).
_WIDE_NUMBER = re.compile(rb"e\+(?:1[89]|[2-9]\d|\d{3})")


def canonical_json(body: bytes) -> bytes:
    """`body`'s JSON value spelt one way (keys sorted, no spaces); `body` if not JSON.

    Two bodies whose values are equal give the same bytes, whatever their spacing, key
    order or string escapes; numbers keep their type (`1` is not `1.0`). A body that is
    not JSON (which the endpoints refuse anyway) is kept as it is.
    """
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass  # not JSON to orjson (NaN, a lone surrogate, deeper than it goes): see below
    else:
        if _WIDE_NUMBER.search(canonical) is None:
            return canonical
    # The exact reading: integers of any size, and what orjson refuses but the standard
    # library reads. Rare: a huge number, or a text like "e+18", brings a body here.
    try:
        value = json.loads(body.decode("utf-8"))
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")
    except (ValueError, RecursionError):
        return body


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A request as its key remembers it: `value` is what is stored."""

    value: str
    method: str
    path: str
    body: bytes = field(repr=False)

    def matches(self, stored: str) -> bool:
        """Whether `stored` is this request's fingerprint, canonical or from before."""
        if stored == self.value:
            return True
        # Stored before fingerprints were canonical: the digest of the raw bytes (such
        # keys are gone one TTL after the upgrade; this can go in a later release).
        return stored == _digest(self.method, self.path, self.body)


def fingerprint(method: str, path: str, body: bytes) -> Fingerprint:
    """The request a key is first used with: method, path and the body's JSON value."""
    return Fingerprint(_digest(method, path, canonical_json(body)), method, path, body)


def _same(print_: Fingerprint | str, stored: str) -> bool:
    if isinstance(print_, Fingerprint):
        return print_.matches(stored)
    return stored == print_


def _header_error(detail: str, kind: str) -> dict[str, str]:
    return {"pointer": f"#header/{HEADER}", "detail": detail, "type": kind}


def check_key(key: str) -> str:
    """Validate the header's value, read as UTF-8 (the server hands headers over decoded
    as Latin-1, which turned an emoji's bytes into control characters and refused it)."""
    if not key.isascii():
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):  # else as read
            key = key.encode("latin-1").decode("utf-8")
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        detail = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters"
        raise IdempotencyKeyInvalid(detail, errors=[_header_error(detail, "invalid")])
    return key


def _check_same(print_: Fingerprint | str, row: IdempotencyRecord) -> None:
    if not _same(print_, row.fingerprint):
        raise IdempotencyKeyReused(
            f"this {HEADER} was first used with a different request; use a new key",
            errors=[_header_error("first used with a different request", "reused")],
        )


def _unfinished(row: IdempotencyRecord) -> IdempotencyKeyUnfinished:
    """The refusal while `row`'s answer is being built: retry when its lease ends."""
    left = 1.0
    if row.leased_until is not None:
        left = (row.leased_until - utcnow()).total_seconds()
    return IdempotencyKeyUnfinished(
        f"a request with this {HEADER} is being processed; retry to get its answer",
        retry_after=max(1, math.ceil(left)),
    )


def _holds(row: IdempotencyRecord, now: datetime) -> bool:
    """Whether a request holds the claim on `row` now (its lease has not ended)."""
    return row.owner is not None and row.leased_until is not None and row.leased_until > now


def _lease_ended(now: datetime) -> ColumnElement[bool]:
    """No request holds the claim on the row (`_holds` negated, in SQL)."""
    return or_(
        IdempotencyRecord.owner.is_(None),
        IdempotencyRecord.leased_until.is_(None),
        IdempotencyRecord.leased_until <= now,
    )


def _claimed(claim: KeyClaim) -> tuple[Any, ...]:
    """The WHERE of a statement on the key `claim` holds, only while it holds it."""
    return (
        IdempotencyRecord.scope == claim.scope,
        IdempotencyRecord.key == claim.key,
        IdempotencyRecord.owner == claim.owner,
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# A transaction-scoped advisory lock a key (PostgreSQL), in a space of its own: the
# request that takes it runs; another request under the key meanwhile is told to retry.
_KEY_LOCK_SPACE = 0x49444D50  # "IDMP"
_TRY_KEY_LOCK = text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:scope || ' ' || :key))")


class IdempotencyStore:
    """Look up and remember responses inside the caller's transaction."""

    async def enter(self, session: AsyncSession, scope: str, key: str) -> None:
        """Take the key for this transaction before `lookup`, or raise
        `IdempotencyKeyInUse` (409, retry shortly: it replays) while another request
        under it runs. On PostgreSQL two such requests run side by side: both found no
        answer, both did the work, and the second failed on what the first had done
        (a review's 410 `lead_merged` for its own merge) instead of replaying. SQLite runs
        one writing transaction at a time, so there the second waits and replays."""
        bind = session.bind
        if bind is None or bind.dialect.name != "postgresql":
            return
        taken = await session.scalar(
            _TRY_KEY_LOCK, {"space": _KEY_LOCK_SPACE, "scope": scope, "key": key}
        )
        if not taken:
            raise IdempotencyKeyInUse(
                f"a request with this {HEADER} is being processed; retry to get its answer"
            )

    def __init__(self, ttl: timedelta = DEFAULT_TTL, lease: timedelta = DEFAULT_LEASE) -> None:
        self.ttl = ttl
        self.lease = lease

    def _expired(self, row: IdempotencyRecord, now: datetime) -> bool:
        """Past the TTL, and not claimed by a request at work (whose parts would be lost)."""
        return row.created_at < now - self.ttl and not _holds(row, now)

    def _expired_rows(self, now: datetime) -> ColumnElement[bool]:
        """`_expired` in SQL."""
        return (IdempotencyRecord.created_at < now - self.ttl) & _lease_ended(now)

    async def answered(self, session: AsyncSession, scope: str, key: str) -> bool:
        """Whether an answer, not expired, is stored under this key (whatever request it
        answered): a request with it will be a replay, or refused as a reuse."""
        query = select(IdempotencyRecord.created_at).where(
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
            IdempotencyRecord.owner.is_(None),  # an answer being built is no answer yet
        )
        created = await session.scalar(query)
        return created is not None and created >= utcnow() - self.ttl

    async def lookup(
        self, session: AsyncSession, scope: str, key: str, print_: Fingerprint | str
    ) -> StoredResponse | None:
        """The first response for this key, None if it is new; raises if reused.

        `print_` is the request's `fingerprint`, or a digest compared as it is."""
        row = await session.get(IdempotencyRecord, (scope, key))
        if row is not None and self._expired(row, utcnow()):
            session.expunge(row)  # expired: `remember` deletes it by a statement
            return None
        if row is None:
            return None
        _check_same(print_, row)
        if row.owner is not None:
            raise _unfinished(row)
        return StoredResponse(row.status_code, orjson.loads(row.body))

    async def claim(
        self, session: AsyncSession, scope: str, key: str, print_: Fingerprint | str
    ) -> StoredResponse | KeyClaim:
        """Before an answer built in parts: the first answer if the key has one, else the
        key claimed for this request (on the caller's transaction: commit it before the
        first part), with what a request that stopped left to go on from (`KeyClaim.done`).

        Raises `IdempotencyKeyReused` as `lookup` does, and `IdempotencyKeyUnfinished`
        while another request's claim holds."""
        row = await session.get(IdempotencyRecord, (scope, key))
        now = utcnow()  # after the read, which may have waited for SQLite's writer
        if row is not None and self._expired(row, now):
            session.expunge(row)  # expired: `_insert` deletes it by a statement
            row = None
        owner = uuid.uuid4().hex
        if row is None:
            await self._insert(session, scope, key, print_, 0, None, None, owner)
            return KeyClaim(scope, key, owner, None)
        _check_same(print_, row)
        if row.owner is None:
            return StoredResponse(row.status_code, orjson.loads(row.body))
        if _holds(row, now):
            raise _unfinished(row)
        # The request holding it stopped: take it over, unless its lease was renewed since
        # this read (a part of it committed meanwhile: on PostgreSQL this statement waits
        # for that part's lock on the row, then reads the row again) or another retry took
        # it. What it stored is read by the same statement, so no part stored since is
        # missed and done again.
        taken = await session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
                IdempotencyRecord.owner == row.owner,
                _lease_ended(now),
            )
            .values(owner=owner, leased_until=now + self.lease)
            .returning(IdempotencyRecord.body)
            .execution_options(synchronize_session=False)
        )
        done = taken.scalar_one_or_none()
        if done is None:
            raise _unfinished(row)
        log.info("idempotency.claim_taken_over", scope=scope)
        return KeyClaim(scope, key, owner, orjson.loads(done))

    async def hold(self, session: AsyncSession, claim: KeyClaim) -> None:
        """Renew the claim first thing in a part's transaction: the row stays locked until
        the part ends (on SQLite the part holds the only writer anyway), so no retry takes
        the key over while the part works, however long; raises as `progress` does."""
        await self._update(session, claim)

    async def progress(self, session: AsyncSession, claim: KeyClaim, done: Any) -> None:
        """Store `done` (the answer so far) on the caller's transaction, a part's, and
        renew the claim; raises `IdempotencyKeyUnfinished` (the part rolls back) when the
        claim was taken over meanwhile."""
        await self._update(session, claim, body=orjson.dumps(done))

    async def finish(
        self,
        session: AsyncSession,
        claim: KeyClaim,
        status_code: int,
        body: Any,
        subject: str | None = None,
    ) -> None:
        """Store the whole answer on the last part's transaction, as `remember` would,
        and end the claim; raises as `progress` does."""
        await self._update(
            session,
            claim,
            body=orjson.dumps(body),
            status_code=status_code,
            subject=subject,
            owner=None,
            leased_until=None,
        )

    async def release(self, session: AsyncSession, claim: KeyClaim) -> None:
        """End the claim's lease now (the request stopped on an error): a retry takes the
        key over at once and goes on from the last part stored."""
        await session.execute(
            update(IdempotencyRecord)
            .where(*_claimed(claim))
            .values(leased_until=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def _update(self, session: AsyncSession, claim: KeyClaim, **values: Any) -> None:
        values.setdefault("leased_until", utcnow() + self.lease)
        result = await session.execute(
            update(IdempotencyRecord)
            .where(*_claimed(claim))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            raise IdempotencyKeyUnfinished(
                f"another request with this {HEADER} took its answer over; retry to get it"
            )

    async def remember(
        self,
        session: AsyncSession,
        scope: str,
        key: str,
        print_: Fingerprint | str,
        status_code: int,
        body: Any,
        subject: str | None = None,
    ) -> None:
        """Store the response on the caller's transaction (flushes to claim the key).

        `subject` names the record whose personal data `body` shows (`forget_subject`)."""
        # An expired answer gives way (`lookup` took its key for a new one); a live one,
        # stored by a request with this key that committed after this one's lookup (on
        # PostgreSQL, after waiting for its intake locks), stays, and the insert below
        # conflicts with it: this request's work must not count too. It rolls back with
        # 409; a retry replays the other's answer. Statements, not ORM objects: two
        # requests taking over one expired key at once meet at the insert, not at an ORM
        # delete of a row the other deleted already.
        await self._insert(session, scope, key, print_, status_code, body, subject, None)

    async def _insert(
        self,
        session: AsyncSession,
        scope: str,
        key: str,
        print_: Fingerprint | str,
        status_code: int,
        body: Any,
        subject: str | None,
        owner: str | None,
    ) -> None:
        """Claim the key with this row (`remember`'s, or a `claim`'s), the expired answer
        under it deleted first; `IdempotencyKeyInUse` when a live one is there."""
        now = utcnow()
        await session.execute(
            delete(IdempotencyRecord)
            .where(
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
                self._expired_rows(now),
            )
            .execution_options(synchronize_session=False)
        )
        try:
            await session.execute(
                insert(IdempotencyRecord).values(
                    scope=scope,
                    key=key,
                    fingerprint=print_.value if isinstance(print_, Fingerprint) else print_,
                    status_code=status_code,
                    body=orjson.dumps(body),
                    subject=subject,
                    created_at=now,
                    owner=owner,
                    leased_until=None if owner is None else now + self.lease,
                )
            )
        except IntegrityError:
            raise IdempotencyKeyInUse(
                f"another request with this {HEADER} is being or was just processed; retry "
                "to get its answer"
            ) from None

    async def purge(self, session: AsyncSession) -> int:
        """Delete keys older than the TTL (but a claim a request is at work on); returns
        how many."""
        result = await session.execute(
            delete(IdempotencyRecord).where(self._expired_rows(utcnow()))
        )
        return int(getattr(result, "rowcount", 0) or 0)


async def forget_subject(session: AsyncSession, subject: str) -> int:
    """Delete every stored answer about `subject` (its record was erased), whatever API
    key stored it; returns how many."""
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.subject == subject)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def move_subject(session: AsyncSession, subject: str, to: str) -> None:
    """The record `subject` was merged into `to`, its data with it: the answers about it
    are about `to` now (and go when `to` is erased)."""
    await session.execute(
        update(IdempotencyRecord).where(IdempotencyRecord.subject == subject).values(subject=to)
    )


async def count_keys(session: AsyncSession) -> int:
    """How many keys are stored (for tests and metrics)."""
    rows = await session.execute(select(IdempotencyRecord.key))
    return len(rows.all())


PURGE_TASK = "core.idempotency_purge"


async def purge_expired(ctx: JobContext, _payload: JsonDict) -> None:
    """The periodic job: delete the keys (and stored answers) older than the TTL."""
    purged = await IdempotencyStore().purge(ctx.session)
    log.info("idempotency.purged", keys=purged)


def register_idempotency_tasks(registry: TaskRegistry, cron: str | None) -> None:
    """Register the purge job, and run it on `cron` (None: only when deferred by hand)."""
    # A failed purge is simply done again by the next period.
    registry.add(TaskSpec(PURGE_TASK, purge_expired, policy=RetryPolicy(max_attempts=1)))
    if cron is not None:
        registry.schedule(cron, PURGE_TASK)
