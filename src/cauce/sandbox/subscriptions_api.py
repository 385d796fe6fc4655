"""HubSpot's communication preferences v4 (email subscription statuses), the batch routes.

What the sandbox serves, and how sure each part is (sources: HubSpot's API reference for
``/communication-preferences/v4/statuses/batch/write``, ``batch/read`` and
``batch/unsubscribe-all/read``, and the v3/v4 guides):

* the bodies: ``{"inputs": [...]}`` in, HubSpot's batch response out (``status``,
  ``results``, ``startedAt``, ``completedAt``, and ``errors`` / ``numErrors``); a write's
  input is ``{subscriberIdString, channel, statusState, subscriptionId, legalBasis,
  legalBasisExplanation}`` and its result carries ``status``, ``timestamp``, ``source``
  and ``setStatusSuccessReason`` (``NO_STATUS_CHANGE``, ``RESUBSCRIBE_OCCURRED``,
  ``REQUESTED_CHANGE_OCCURRED``) - confirmed in the reference;
* the reads take ``?channel=EMAIL`` and a list of email addresses - confirmed;
* v4 may resubscribe an address that opted out (the v3 guide says v3 cannot and v4 can)
  - confirmed; that a SUBSCRIBED write also lifts an opt-out of all email is assumed;
* per-input problems (an unknown subscription id, a bad email, a status or legal basis
  HubSpot does not know, SUBSCRIBED without a legal basis on a GDPR portal) answered as
  207 with one ``errors`` entry per input, its ``context`` naming the address - guessed:
  the reference shows ``errors`` on these answers but no recorded example;
* an address without a contact is accepted (statuses are kept per address) - not
  confirmed; Cauce only writes after the contact's upsert succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cauce.sandbox import bodies
from cauce.sandbox.contacts_api import Reply

__all__ = ["StatusRecord", "SubscriptionsApi"]

CHANNEL: Final = "EMAIL"
STATES: Final = frozenset({"SUBSCRIBED", "UNSUBSCRIBED", "NOT_SPECIFIED"})
LEGAL_BASES: Final = frozenset(
    {
        "LEGITIMATE_INTEREST_PQL",
        "LEGITIMATE_INTEREST_CLIENT",
        "PERFORMANCE_OF_CONTRACT",
        "CONSENT_WITH_NOTICE",
        "NON_GDPR",
        "PROCESS_AND_STORE",
        "LEGITIMATE_INTEREST_OTHER",
    }
)


@dataclass(slots=True)
class StatusRecord:
    """One address's status for one subscription type (or for all: ``subscription_id`` 0)."""

    email: str
    subscription_id: int
    status: str
    timestamp: float  # epoch seconds
    source: str
    legal_basis: str | None = None
    legal_basis_explanation: str | None = None

    def to_api(self, name: str | None, reason: str | None = None) -> dict[str, Any]:
        """HubSpot's ``PublicStatus``."""
        body: dict[str, Any] = {
            "channel": CHANNEL,
            "source": self.source,
            "status": self.status,
            "subscriberIdString": self.email,
            "subscriptionId": self.subscription_id,
            "timestamp": bodies.iso_millis(self.timestamp),
        }
        if self.legal_basis is not None:
            body["legalBasis"] = self.legal_basis
        if self.legal_basis_explanation is not None:
            body["legalBasisExplanation"] = self.legal_basis_explanation
        if reason is not None:
            body["setStatusSuccessReason"] = reason
        if name is not None:
            body["subscriptionName"] = name
        return body


def _item_error(email: str, message: str, category: str = "VALIDATION_ERROR") -> dict[str, Any]:
    return bodies.batch_item_error(category, message, {"subscriberIdString": [email]})


def _validation(message: str) -> Reply:
    return Reply(400, bodies.error_body(message, "VALIDATION_ERROR"))


class SubscriptionsApi:
    """The statuses: per (address, subscription type) and opted out of all, per address."""

    def __init__(
        self,
        definitions: Mapping[int, str],
        *,
        max_batch_inputs: int,
        gdpr: bool,
        wall_clock: Callable[[], float],
    ) -> None:
        self.definitions = dict(definitions)
        self._max = max_batch_inputs
        self._gdpr = gdpr
        self._now = wall_clock
        self.statuses: dict[tuple[str, int], StatusRecord] = {}
        self.opted_out_of_all: dict[str, StatusRecord] = {}

    def clear(self) -> None:
        """Forget every status."""
        self.statuses.clear()
        self.opted_out_of_all.clear()

    # -- what a person does in HubSpot (the preferences page), for tests ------------------

    def set_by_person(self, email: str, status: str, subscription_id: int | None) -> None:
        """Set a status as the contact would on HubSpot's preferences page, now.

        ``subscription_id`` None with UNSUBSCRIBED: opted out of all email.
        """
        key = email.strip().lower()
        now = self._now()
        if subscription_id is None:
            self.opted_out_of_all[key] = StatusRecord(
                key, 0, status, now, "SUBSCRIPTION_PREFERENCES_PAGE"
            )
            return
        self.statuses[(key, subscription_id)] = StatusRecord(
            key, subscription_id, status, now, "SUBSCRIPTION_PREFERENCES_PAGE"
        )

    def dump(self) -> dict[str, Any]:
        """Every status held, for ``GET /_sandbox/subscriptions``."""
        return {
            "definitions": {str(k): v for k, v in self.definitions.items()},
            "statuses": [
                r.to_api(self.definitions.get(r.subscription_id)) for r in self.statuses.values()
            ],
            "optedOutOfAll": [
                {
                    "subscriberIdString": r.email,
                    "status": r.status,
                    "timestamp": bodies.iso_millis(r.timestamp),
                }
                for r in self.opted_out_of_all.values()
            ],
        }

    # -- the API ---------------------------------------------------------------------------

    def _emails(self, payload: Any, channel: str | None) -> list[str] | Reply:
        if channel != CHANNEL:
            return _validation("Invalid channel: the only supported channel is EMAIL")
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return _validation("Invalid input JSON: 'inputs' must be an array of strings")
        if len(inputs) > self._max:
            return _validation(bodies.BATCH_TOO_LARGE_MESSAGE.format(limit=self._max))
        return inputs

    def batch_read(self, payload: Any, *, channel: str | None) -> Reply:
        """``POST /communication-preferences/v4/statuses/batch/read?channel=EMAIL``."""
        started = time.time()
        emails = self._emails(payload, channel)
        if isinstance(emails, Reply):
            return emails
        results = []
        for email in emails:
            key = email.strip().lower()
            held = [r for (e, _), r in self.statuses.items() if e == key]
            results.append(
                {
                    "subscriberIdString": email,
                    "statuses": [r.to_api(self.definitions.get(r.subscription_id)) for r in held],
                }
            )
        return _finish(results, [], started)

    def batch_read_opted_out(self, payload: Any, *, channel: str | None) -> Reply:
        """``POST .../statuses/batch/unsubscribe-all/read?channel=EMAIL``."""
        started = time.time()
        emails = self._emails(payload, channel)
        if isinstance(emails, Reply):
            return emails
        results = []
        for email in emails:
            record = self.opted_out_of_all.get(email.strip().lower())
            wide = (
                []
                if record is None
                else [
                    {
                        "channel": CHANNEL,
                        "status": record.status,
                        "subscriberIdString": email,
                        "timestamp": bodies.iso_millis(record.timestamp),
                        "wideStatusType": "PORTAL_WIDE",
                    }
                ]
            )
            results.append({"subscriberIdString": email, "wideStatuses": wide})
        return _finish(results, [], started)

    def batch_write(self, payload: Any) -> Reply:
        """``POST /communication-preferences/v4/statuses/batch/write``."""
        started = time.time()
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            return _validation("Invalid input JSON: 'inputs' must be an array of objects")
        if len(inputs) > self._max:
            return _validation(bodies.BATCH_TOO_LARGE_MESSAGE.format(limit=self._max))
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            email = item.get("subscriberIdString")
            shown = email if isinstance(email, str) else ""
            problem = self._problem(item)
            if problem is not None:
                errors.append(_item_error(shown, problem))
                continue
            assert isinstance(email, str)
            results.append(self._apply(email, item))
        return _finish(results, errors, started)

    def _problem(self, item: Mapping[str, Any]) -> str | None:
        email = item.get("subscriberIdString")
        if not isinstance(email, str) or "@" not in email.strip()[1:-1]:
            return f"Invalid email address: {email!r}"
        if item.get("channel") != CHANNEL:
            return f"Invalid channel {item.get('channel')!r}: the only supported channel is EMAIL"
        state = item.get("statusState")
        if state not in STATES:
            return f"Invalid statusState {state!r}"
        subscription = item.get("subscriptionId")
        if isinstance(subscription, bool) or not isinstance(subscription, int):
            return "subscriptionId must be an integer"
        if subscription not in self.definitions:
            return f"Subscription {subscription} does not exist"
        basis = item.get("legalBasis")
        if basis is not None and basis not in LEGAL_BASES:
            return f"Invalid legalBasis {basis!r}"
        if self._gdpr and state == "SUBSCRIBED" and basis is None:
            return "A legal basis is required to subscribe a contact on this portal"
        explanation = item.get("legalBasisExplanation")
        if explanation is not None and not isinstance(explanation, str):
            return "legalBasisExplanation must be a string"
        return None

    def _apply(self, email: str, item: Mapping[str, Any]) -> dict[str, Any]:
        key = email.strip().lower()
        subscription = int(item["subscriptionId"])
        state = str(item["statusState"])
        before = self.statuses.get((key, subscription))
        opted_out = self.opted_out_of_all.get(key)
        if (
            before is not None
            and before.status == state
            and (state != "SUBSCRIBED" or opted_out is None)
        ):
            return before.to_api(self.definitions[subscription], "NO_STATUS_CHANGE")
        reason = "REQUESTED_CHANGE_OCCURRED"
        if state == "SUBSCRIBED" and (
            opted_out is not None or (before is not None and before.status == "UNSUBSCRIBED")
        ):
            # v4 resubscribes (v3 refused to); an opt-out of all is lifted with it.
            reason = "RESUBSCRIBE_OCCURRED"
            self.opted_out_of_all.pop(key, None)
        record = StatusRecord(
            key,
            subscription,
            state,
            self._now(),
            "API",
            item.get("legalBasis"),
            item.get("legalBasisExplanation"),
        )
        self.statuses[(key, subscription)] = record
        return record.to_api(self.definitions[subscription], reason)


def _finish(results: list[dict[str, Any]], errors: list[dict[str, Any]], started: float) -> Reply:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "requestedAt": bodies.iso_millis(started),
        "startedAt": bodies.iso_millis(started),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    body["completedAt"] = bodies.iso_millis(time.time())
    return Reply(207 if errors else 200, body)
