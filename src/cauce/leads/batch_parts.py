"""A large batch of leads committed in parts, so single leads are not kept waiting.

A `POST /v1/leads/batch` of 1,000 leads is 0.5-1 s of work. In one transaction it held
SQLite's only writer (on PostgreSQL, until ADR 0014, the intake lock of every key) for
all of it, and every single lead arriving meanwhile waited for its commit: a web form's
p95 was ~0.8-1.6 s under back-to-back batches. While single leads come (`in_parts_now`),
a batch with more valid leads than `leads.batch_transaction_size` (250) commits them in
parts of that many, in order; between two parts the writer goes to whoever waits for it
(the gate is first come, first served), and each part decides its leads after the ones
committed before it, as one transaction would.

What a part commits stays committed when a later one fails. With an `Idempotency-Key`
the answer is kept part by part (`IdempotencyStore.claim`, `progress`, `finish`: the
recovery points of Stripe's idempotency design): a retry after an error or a crash goes
on from the last part stored, and answers for the whole batch, each lead stored once.
Without a key, a retry sends the stored leads again, and they merge into themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError

from cauce.core.db import unit_of_work
from cauce.core.web.idempotency import IdempotencyStore, KeyClaim, StoredResponse
from cauce.leads.intake_groups import Claim, IntakeGroups, conflict
from cauce.leads.schemas import LeadIn
from cauce.leads.service import IntakeResult, LeadsRuntime, intake_many

log = structlog.get_logger("cauce.leads.batch")

# One accepted item's answer, from its index in the batch and its intake's result.
Item = Callable[[int, IntakeResult], dict[str, Any]]
# What the caller is shown of an answer (a key without `leads:read` sees less).
Shown = Callable[[Any], tuple[int, Any]]
# Valid leads not taken in yet, by their index in the batch.
Todo = Sequence[tuple[int, LeadIn]]


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """The batch's answer; `replayed` when it is the one stored under its key."""

    status: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated batch: its valid leads by index, its rejected items' answers."""

    received: int
    valid: Sequence[tuple[int, LeadIn]]
    rejected: list[dict[str, Any]]


def answer_of(batch: Batch, accepted: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The batch's answer (`BatchResult`): every item, in the order sent. An item stored
    by an earlier attempt is answered as stored, even if it would be rejected now (a
    setting it is validated against changed between the attempts)."""
    rejected = [item for item in batch.rejected if int(item["index"]) not in accepted]
    items = rejected + list(accepted.values())
    items.sort(key=lambda item: int(item["index"]))
    return {
        "received": batch.received,
        "accepted": len(accepted),
        "rejected": len(rejected),
        "items": items,
    }


async def in_parts(
    rt: LeadsRuntime,
    store: IdempotencyStore,
    keyed: Claim | None,
    batch: Batch,
    actor: str,
    item: Item,
    shown: Shown | None,
) -> BatchAnswer:
    """Take the batch's valid leads in parts of `leads.batch_transaction_size` (while
    single leads come: `_next_part`), each in a transaction of its own; with a key,
    claimed and stored part by part (module doc)."""
    how = _How(actor, item, shown)
    done: dict[int, dict[str, Any]] = {}
    claim: KeyClaim | None = None
    if keyed is not None:
        async with unit_of_work(rt.sessionmaker, short=True) as session:
            got = await store.claim(session, keyed.scope, keyed.key, keyed.fingerprint)
        if isinstance(got, StoredResponse):
            return BatchAnswer(*_shown(shown, got.status_code, got.body), replayed=True)
        claim = got
        done = _resumed(got.done)
    resumed = len(done)
    todo: Todo = [(index, lead) for index, lead in batch.valid if index not in done]
    answer: BatchAnswer | None = None  # the last part's
    try:
        while answer is None:
            if len(done) > resumed and rt.groups is not None:
                # The single leads that came during the last part go first: else those
                # that came while a group of them waited for it would wait a whole part
                # more (the next one queues for the writer before their group starts).
                await _singles_first(rt.groups)
            part, todo = _next_part(rt, todo)
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    new, answer = await _part(rt, store, claim, batch, done, part, bool(todo), how)
                    break
                except DBAPIError as exc:
                    if attempt == _ATTEMPTS or not conflict(exc):
                        raise
                    # Nothing of the part was written: it runs again (see `_ATTEMPTS`).
                    log.info("leads.batch.part_again", sqlstate=getattr(exc.orig, "sqlstate", None))
            done.update(new)
    except BaseException as exc:
        log.warning(
            "leads.batch.stopped",
            error=type(exc).__name__,
            stored=len(done) - resumed,
            stored_before=resumed,
            left=len(batch.valid) - len(done),
            keyed=claim is not None,
        )
        if claim is not None:
            # Shielded: a second cancellation (a shutdown) leaves it to finish on its own.
            await asyncio.shield(_release(rt, store, claim))
        raise
    return answer


# A part that PostgreSQL ends as a deadlock's victim runs again, once. A part first holds
# its key's claim (`IdempotencyStore.hold`), then the intake locks; a request under the
# same key that decided before the claim was stored (a copy of the batch on another
# process) holds the intake lock, then inserts its answer, which waits for the claim
# row: a deadlock. Either one is ended; the other request then meets the claim (409).
_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class _How:
    """How a batch's answers are made: who sent it, an item's answer, what is shown."""

    actor: str
    item: Item
    shown: Shown | None


async def _part(
    rt: LeadsRuntime,
    store: IdempotencyStore,
    claim: KeyClaim | None,
    batch: Batch,
    done: dict[int, dict[str, Any]],
    part: Todo,
    more: bool,
    how: _How,
) -> tuple[dict[int, dict[str, Any]], BatchAnswer | None]:
    """One part in its own transaction: its items' answers, and the batch's answer when
    it is the last (`more` is false); with a claim, the answer so far stored under it."""
    answer: BatchAnswer | None = None
    async with unit_of_work(rt.sessionmaker, short=True) as session:
        if claim is not None:
            await store.hold(session, claim)  # first: see `IdempotencyStore.hold`
        results = await intake_many(session, rt, [lead for _, lead in part], how.actor)
        await session.flush()
        new = {i: how.item(i, result) for (i, _), result in zip(part, results, strict=True)}
        if more:
            if claim is not None:
                await store.progress(session, claim, _stored(done | new))
        else:
            answer = BatchAnswer(*_shown(how.shown, 200, answer_of(batch, done | new)))
            if claim is not None:
                await store.finish(session, claim, answer.status, answer.body)
    return new, answer


# Single leads that came this recently (to this process) are likely to come while a
# batch works: it commits in parts then.
SINGLES_LATELY = 10.0
# Between two parts, how long a batch waits at most for the single leads that came
# during the first one to be stored (their groups take a few ms each).
SINGLES_FIRST = 0.5


def in_parts_now(rt: LeadsRuntime, valid: int) -> bool:
    """Whether a batch of `valid` valid leads is taken in parts now: it has more than
    `leads.batch_transaction_size` and single leads came lately. Parts cost more than
    one transaction (each reads and checks the stored leads under its keys, which a
    batch's leads share: ~25 % of a batch's leads/s in parts of 250), so a batch no
    single lead would wait for is one transaction, as before."""
    return valid > rt.settings.leads.batch_transaction_size and rt.singles.within(SINGLES_LATELY)


def _next_part(rt: LeadsRuntime, todo: Todo) -> tuple[Todo, Todo]:
    """The leads of the next part, and those left after it: all of them once no single
    lead came lately (the parts' cost buys nothing then)."""
    size = rt.settings.leads.batch_transaction_size
    if not rt.singles.within(SINGLES_LATELY):
        size = len(todo)
    return todo[:size], todo[size:]


async def _singles_first(groups: IntakeGroups) -> None:
    try:
        async with asyncio.timeout(SINGLES_FIRST):
            await groups.through()
    except TimeoutError:
        log.info("leads.batch.singles_not_through", waited=SINGLES_FIRST)


def _shown(shown: Shown | None, status: int, payload: Any) -> tuple[int, Any]:
    return (status, payload) if shown is None else shown(payload)


def _stored(done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What a part stores under the key: the accepted items' answers so far."""
    return {"items": list(done.values())}


def _resumed(stored: Any) -> dict[int, dict[str, Any]]:
    """The accepted items' answers a request that stopped stored (`_stored`)."""
    if not isinstance(stored, dict):
        return {}
    return {int(entry["index"]): entry for entry in stored.get("items", [])}


# After a release that failed, how often it is tried again (until the lease would end
# by itself): a database back after a blip lets the client's retry go on at once, where
# it met 409 `idempotency_key_in_use` for the rest of the lease (up to 10 s).
RELEASE_AGAIN_EVERY = 0.25
# The releases being tried again (a task nothing holds could be collected mid-way).
_RELEASING: set[asyncio.Task[None]] = set()


async def _release(rt: LeadsRuntime, store: IdempotencyStore, claim: KeyClaim) -> None:
    """End the claim's lease now, so a retry goes on at once; if even that fails (the
    database is what failed), try again in the background until it is done or the lease
    has ended by itself (`_release_later`)."""
    try:
        await _release_now(rt, store, claim)
    except Exception as exc:  # noqa: BLE001 - the batch's own error is what is raised
        log.warning("leads.batch.claim_kept", error=type(exc).__name__)
        task = asyncio.get_running_loop().create_task(_release_later(rt, store, claim))
        _RELEASING.add(task)
        task.add_done_callback(_RELEASING.discard)


async def _release_now(rt: LeadsRuntime, store: IdempotencyStore, claim: KeyClaim) -> None:
    async with unit_of_work(rt.sessionmaker, short=True) as session:
        await store.release(session, claim)


async def _release_later(rt: LeadsRuntime, store: IdempotencyStore, claim: KeyClaim) -> None:
    """Release `claim` every `RELEASE_AGAIN_EVERY` until it works or its lease is over.
    Only this request's claim is released (`IdempotencyStore.release` matches its owner
    token), so a retry that took the key over meanwhile keeps it."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + store.lease.total_seconds()
    tries = 0
    while loop.time() + RELEASE_AGAIN_EVERY < ends:
        await asyncio.sleep(RELEASE_AGAIN_EVERY)
        tries += 1
        try:
            # Not cut by a timeout: a database call cut half-way is what `_to_the_end`
            # avoids elsewhere; a call that fails slowly only makes the tries fewer.
            await _release_now(rt, store, claim)
        except Exception:  # noqa: BLE001, S112 - the database is still away: try again
            continue
        log.info("leads.batch.claim_released", tries=tries)
        return
