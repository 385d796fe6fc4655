"""HubSpot email subscription statuses that follow each lead's marketing consent.

Optional (``CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID``): after the contacts' upsert,
:class:`SubscriptionStatuses` sets one email subscription type's status for each contact
upserted whose lead has a marketing consent. The consent is the lead's own, carried on
the port (``CrmContact.consent``: the stored ``marketing``, ``given_at`` as ISO 8601
text, ``wording_version``, ``source``), not read back from CRM properties, so it needs
no consent field in ``CAUCE_CRM__FIELD_MAPPING``. A yes asks ``SUBSCRIBED``, a no
``UNSUBSCRIBED``; no consent (none given, or erased) asks nothing: unknown is not a no.
A contact without an address, or whose address is withheld (another lead's contact holds
it: keyed by its Cauce id, sent without the email), gets no status.

The facts it relies on (HubSpot's API reference for communication preferences v4 and its
v3/v4 guides; what is confirmed and what is assumed is listed in
``cauce.sandbox.subscriptions_api``, which serves the same routes):

* ``POST /communication-preferences/v4/statuses/batch/write`` takes ``{"inputs": [...]}``
  of ``{subscriberIdString, channel: EMAIL, statusState, subscriptionId, legalBasis,
  legalBasisExplanation}``, at most 100 per request; writing the status an address has
  already is ``NO_STATUS_CHANGE``, so a write sent again is harmless. Cauce gives legal
  basis ``CONSENT_WITH_NOTICE`` and an explanation naming when, from which source and
  with which wording version the consent was given or withdrawn.
* v4 resubscribes an address that opted out, so a yes is written only when it is the
  newest fact: ``statuses/batch/read`` (the address's statuses, each with ``timestamp``)
  and ``statuses/batch/unsubscribe-all/read`` (its opt-outs of all email,
  ``wideStatuses``), both ``?channel=EMAIL``, are read first, and an opt-out at or after
  the consent's ``given_at`` stands (a consent without ``given_at``: any opt-out stands).
  A no is always written, without a read.
* per-input problems come back in ``errors``, each ``context`` naming the addresses.

A status request that fails as a whole (429, 5xx, an outage) leaves the contacts still
waiting for their status with a retryable outcome: their delivery is tried again, upsert
and status, so a withdrawal is not lost. A refusal (401/403, a 4xx naming the request)
is `CrmRejected`: no delivery can carry consent until a person acts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from cauce.core.http import Response, UpstreamClientError
from cauce.leads.adapters.hubspot_batch import (
    MAX_ERROR_TEXT,
    HubSpotError,
    describe,
    normalise,
    parse_error,
    retryable_category,
)
from cauce.leads.ports import (
    CrmContact,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
    utc_instant,
)

__all__ = [
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "StatusFacts",
    "StatusIntent",
    "SubscriptionSetup",
    "SubscriptionStatuses",
    "map_status_results",
    "may_subscribe",
    "read_facts",
    "status_inputs",
    "status_intents",
]

log = structlog.get_logger("cauce.leads.adapters.hubspot")

SUBSCRIBED: Final = "SUBSCRIBED"
UNSUBSCRIBED: Final = "UNSUBSCRIBED"
_EXPLANATION_CHARS: Final = 250
_STATUSES: Final = "/communication-preferences/v4/statuses"
_STATUS_WRITE: Final = f"{_STATUSES}/batch/write"
_STATUS_READ: Final = f"{_STATUSES}/batch/read"
_OPT_OUT_READ: Final = f"{_STATUSES}/batch/unsubscribe-all/read"
_EMAIL_CHANNEL: Final = {"channel": "EMAIL"}

#: One POST through the adapter's guarded client: path, JSON body, query parameters; it
#: raises the port's errors, and `UpstreamClientError` for another 4xx.
PostCall = Callable[[str, Mapping[str, Any], Mapping[str, str] | None], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class SubscriptionSetup:
    """Which subscription type follows the lead's marketing consent, and the CRM property
    a contact's email is in (the field mapping's, else ``email``). ``setting`` names the
    id where it was set (``cauce.toml: crm.hubspot_subscription_id``, or the variable),
    for the error HubSpot's refusal becomes."""

    subscription_id: int
    email_property: str = "email"
    setting: str = "CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID"


@dataclass(frozen=True, slots=True)
class StatusIntent:
    """The status one contact's consent asks for."""

    position: int
    email: str  # as HubSpot compares it: trimmed, lower-cased
    state: str  # SUBSCRIBED or UNSUBSCRIBED
    given_at: datetime | None
    explanation: str


@dataclass(slots=True)
class StatusFacts:
    """What HubSpot holds for one address: its status for the subscription type, and when
    it last opted out (of the type or of all email), if it did."""

    status: str = "NOT_SPECIFIED"
    opted_out_at: datetime | None = None


class SubscriptionStatuses:
    """Sets the statuses the upserted contacts' consents ask for (the module docstring).

    ``post`` sends one request through the adapter (its rate-limit pause, its errors);
    ``max_batch`` (at most 100) caps the addresses per request.
    """

    def __init__(self, setup: SubscriptionSetup, post: PostCall, max_batch: int) -> None:
        self.setup = setup
        self._post = post
        self._max_batch = max_batch

    async def apply(
        self, contacts: Sequence[CrmContact], outcomes: list[UpsertOutcome]
    ) -> list[UpsertOutcome]:
        """``outcomes`` with those of the contacts whose status could not be set failed.

        A whole-request failure (throttled, unavailable) leaves the contacts still waiting
        for their status with a retryable outcome; a refusal is raised.
        """
        intents = status_intents(self.setup, contacts, outcomes)
        waiting = {intent.position for intent in intents}
        results: dict[int, tuple[str, bool] | None] = {}
        try:
            facts = await self._facts([i.email for i in intents if i.state == SUBSCRIBED])
            writes: list[StatusIntent] = []
            for intent in intents:
                fact = facts.get(intent.email)
                if intent.state != SUBSCRIBED or (fact is not None and may_subscribe(intent, fact)):
                    writes.append(intent)
                    continue
                if fact is None:
                    # HubSpot named the address in an error: nothing is known of its
                    # opt-outs, so no "yes" is written (the safe side). Not retried: an
                    # address HubSpot refuses would be read again at every delivery.
                    results[intent.position] = None
                    log.warning("crm.hubspot.subscription.unread")
                else:  # subscribed already, or an opt-out newer than the consent stands
                    results[intent.position] = None
                    if fact.opted_out_at is not None:
                        log.info("crm.hubspot.subscription.opt_out_kept")
                waiting.discard(intent.position)
            for start in range(0, len(writes), self._max_batch):
                chunk = writes[start : start + self._max_batch]
                results.update(await self._write(chunk))
                waiting.difference_update(i.position for i in chunk)
        except (CrmThrottled, CrmUnavailable) as exc:
            for position in waiting:
                results[position] = (f"marketing subscription not set: {exc}", True)
        done = list(outcomes)
        for position, problem in results.items():
            if problem is not None:
                error, retryable = problem
                done[position] = replace(done[position], error=error, retryable=retryable)
        return done

    async def _facts(self, emails: list[str]) -> dict[str, StatusFacts]:
        """HubSpot's status and latest opt-out per address (absent: an error named it)."""
        facts: dict[str, StatusFacts] = {}
        unknown: set[str] = set()
        for start in range(0, len(emails), self._max_batch):
            chunk = emails[start : start + self._max_batch]
            statuses = await self._call(_STATUS_READ, {"inputs": chunk}, _EMAIL_CHANNEL)
            wide = await self._call(_OPT_OUT_READ, {"inputs": chunk}, _EMAIL_CHANNEL)
            for email in chunk:
                facts.setdefault(email, StatusFacts())
            unknown |= read_facts(self.setup.subscription_id, statuses, wide, facts)
        return {email: fact for email, fact in facts.items() if email not in unknown}

    async def _write(self, chunk: list[StatusIntent]) -> dict[int, tuple[str, bool] | None]:
        body = await self._call(_STATUS_WRITE, {"inputs": status_inputs(self.setup, chunk)})
        return map_status_results(chunk, body)

    async def _call(
        self, path: str, payload: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Any:
        """One communication preferences request; the port's errors, a 4xx as a refusal."""
        try:
            response = await self._post(path, payload, params)
        except CrmRejected as exc:
            raise CrmRejected(
                f"{exc}; subscription statuses need the app's "
                "communication_preferences.statuses.batch scopes (Marketing Hub Enterprise)"
            ) from exc
        except UpstreamClientError as exc:
            error = parse_error(exc.body)
            raise CrmRejected(
                f"HubSpot refused the subscription status request (HTTP {exc.status} "
                f"{error.category}); check {self.setup.setting}"
            ) from exc
        try:
            return response.json()
        except ValueError:
            raise CrmUnavailable("HubSpot answered a status request unreadably") from None


# -- the bodies: pure functions -------------------------------------------------------------


def _text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    return value if isinstance(value, str) and value else None


def _address(setup: SubscriptionSetup, contact: CrmContact) -> str | None:
    # The address the contact carries: none when the lead has none, or when another
    # lead's contact holds it (then it is keyed by its Cauce id and sent without it).
    email = _text(contact.properties, setup.email_property)
    if email is None and contact.key.property == "email":
        email = contact.key.value
    return email if email is not None and email.strip() else None


def status_intents(
    setup: SubscriptionSetup,
    contacts: Sequence[CrmContact],
    outcomes: Sequence[UpsertOutcome],
) -> list[StatusIntent]:
    """What each contact now in HubSpot asks of its subscription status.

    The lead's consent (``contact.consent``) with ``marketing`` true asks SUBSCRIBED and
    false UNSUBSCRIBED; no consent (none given, or erased) asks nothing: unknown is not a
    no. A contact without an email (or whose email another lead's contact holds, so it is
    withheld) cannot have a status. Two contacts with one address: a no wins.
    """
    chosen: dict[str, StatusIntent] = {}
    for position, (contact, outcome) in enumerate(zip(contacts, outcomes, strict=True)):
        consent = contact.consent
        if not outcome.ok or consent is None:
            continue
        marketing = consent.get("marketing")
        if not isinstance(marketing, bool):
            continue
        email = _address(setup, contact)
        if email is None:
            continue
        state = SUBSCRIBED if marketing else UNSUBSCRIBED
        given_at = utc_instant(consent.get("given_at"))
        wording = _text(consent, "wording_version") or "unknown"
        source = _text(consent, "source") or "unknown"
        when = given_at.isoformat(timespec="seconds") if given_at else "an unknown time"
        verb = "given" if state == SUBSCRIBED else "withdrawn"
        explanation = (
            f"Marketing consent {verb} at {when} (source: {source}, wording version: "
            f"{wording}), recorded by Cauce"
        )[:_EXPLANATION_CHARS]
        key = normalise("email", email)
        intent = StatusIntent(position, key, state, given_at, explanation)
        if key not in chosen or state == UNSUBSCRIBED:
            chosen[key] = intent
    return list(chosen.values())


def status_inputs(
    setup: SubscriptionSetup, intents: Sequence[StatusIntent]
) -> list[dict[str, Any]]:
    """The ``inputs`` of one ``statuses/batch/write``."""
    return [
        {
            "subscriberIdString": intent.email,
            "channel": "EMAIL",
            "statusState": intent.state,
            "subscriptionId": setup.subscription_id,
            "legalBasis": "CONSENT_WITH_NOTICE",
            "legalBasisExplanation": intent.explanation,
        }
        for intent in intents
    ]


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def read_facts(
    subscription_id: int, statuses: object, wide: object, facts: dict[str, StatusFacts]
) -> set[str]:
    """Add to ``facts`` what a ``batch/read`` and a ``batch/unsubscribe-all/read`` answer
    say; return the addresses an ``errors`` entry names (nothing known of them)."""
    for body, key in ((statuses, "statuses"), (wide, "wideStatuses")):
        if not isinstance(body, dict):
            continue
        for result in body.get("results") or []:
            if not isinstance(result, dict) or not isinstance(
                result.get("subscriberIdString"), str
            ):
                continue
            fact = facts.setdefault(normalise("email", result["subscriberIdString"]), StatusFacts())
            for status in result.get(key) or []:
                if not isinstance(status, dict):
                    continue
                if key == "statuses" and status.get("subscriptionId") != subscription_id:
                    continue
                if key == "statuses":
                    fact.status = str(status.get("status") or fact.status)
                if status.get("status") == UNSUBSCRIBED:
                    # No timestamp: the opt-out counts as newer than any consent.
                    at = utc_instant(status.get("timestamp")) or datetime.max.replace(tzinfo=UTC)
                    fact.opted_out_at = _later(fact.opted_out_at, at)
    return _named_addresses(statuses) | _named_addresses(wide)


def _named_addresses(body: object) -> set[str]:
    named: set[str] = set()
    if not isinstance(body, dict):
        return named
    for error in body.get("errors") or []:
        context = error.get("context") if isinstance(error, dict) else None
        if not isinstance(context, dict):
            continue
        for values in context.values():
            if isinstance(values, list):
                named.update(normalise("email", v) for v in values if isinstance(v, str))
    return named


def may_subscribe(intent: StatusIntent, fact: StatusFacts) -> bool:
    """Whether a yes may be written: only when it is the newest fact known.

    v4 resubscribes an address that opted out, so a consent older than HubSpot's opt-out
    (re-sent because the lead was edited, say) must not undo it; without ``given_at`` any
    opt-out stands. An address already subscribed needs no write.
    """
    if fact.status == SUBSCRIBED and fact.opted_out_at is None:
        return False
    if fact.opted_out_at is None:
        return True
    return intent.given_at is not None and intent.given_at > fact.opted_out_at


def map_status_results(
    intents: Sequence[StatusIntent], body: object
) -> dict[int, tuple[str, bool] | None]:
    """Per intent's position: None when HubSpot set the status, else (error, retryable)."""
    found: dict[int, tuple[str, bool] | None] = {}
    by_email = {i.email: i.position for i in intents}
    if isinstance(body, dict):
        for result in body.get("results") or []:
            email = result.get("subscriberIdString") if isinstance(result, dict) else None
            if isinstance(email, str) and normalise("email", email) in by_email:
                found[by_email[normalise("email", email)]] = None
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            parsed = HubSpotError(
                category=str(error.get("category") or ""), message=str(error.get("message") or "")
            )
            text = "marketing subscription not set: " + describe(parsed)
            for email in _named_addresses({"errors": [error]}):
                if email in by_email:
                    found[by_email[email]] = (
                        text[:MAX_ERROR_TEXT],
                        retryable_category(parsed.category),
                    )
    for intent in intents:
        found.setdefault(intent.position, ("HubSpot did not report this subscription status", True))
    return found
