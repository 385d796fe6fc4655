"""HubSpot's response bodies, byte for byte where a public source shows them.

Sources (see the sandbox README in ``__init__``): HubSpot's error-handling and usage
guidelines pages for the general shape and the 429 bodies, and bodies recorded from live
portals in public client test suites for the batch errors (``Duplicate IDs found in batch
input``, ``Could not get some CONTACT objects``, ``Unable to perform update/upsert by
non-unique ...``, ``Contact already exists. Existing ID: N``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AUTH_MESSAGE",
    "BATCH_TOO_LARGE_MESSAGE",
    "error_body",
    "iso_millis",
    "property_error",
    "rate_limit_body",
]

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
    "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
# Guessed wording: HubSpot's text for 101 inputs is not in any source we found; the
# status (400) and category (VALIDATION_ERROR) are confirmed, and this follows the wording
# of its confirmed sibling message for property histories (50 inputs).
BATCH_TOO_LARGE_MESSAGE = (
    "The maximum number of inputs supported in a batch request is {limit}. "
    "Please reduce the number of items and try again"
)
NOT_FOUND_MESSAGE = "Object not found.  objectId are usually numeric."
BATCH_NOT_FOUND_MESSAGE = (
    "Could not get some CONTACT objects, they may be deleted or not exist. "
    "Check that ids are valid."
)
CONFLICT_MESSAGE = "Contact already exists. Existing ID: {id}"
DUPLICATE_IDS_MESSAGE = "Duplicate IDs found in batch input: [{ids}]. IDs must be unique"
NON_UNIQUE_MESSAGE = (
    "Unable to perform update/upsert by non-unique 0-1 property {name} in portal ID {portal}"
)
# Guessed wording: no source shows HubSpot's refusal of a contact merged into itself.
MERGE_SELF_MESSAGE = "Cannot merge object {id} into itself"


def correlation_id() -> str:
    """A fresh correlation id, as every HubSpot error carries."""
    return str(uuid.uuid4())


def iso_millis(epoch_seconds: float) -> str:
    """``2019-10-30T03:30:17.883Z``: HubSpot's timestamp format."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def error_body(
    message: str,
    category: str,
    *,
    context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    sub_category: str | None = None,
) -> dict[str, Any]:
    """The body HubSpot's CRM APIs answer on a whole-request error."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
    }
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    body["category"] = category
    if sub_category:
        body["subCategory"] = sub_category
    return body


def rate_limit_body(policy: str) -> dict[str, Any]:
    """The 429 body for ``TEN_SECONDLY_ROLLING`` or ``DAILY`` (HubSpot usage guidelines)."""
    limit_name = "ten_secondly_rolling" if policy == "TEN_SECONDLY_ROLLING" else "daily"
    return {
        "status": "error",
        "message": f"You have reached your {limit_name} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
    }


def property_error(name: str, message: str, error: str) -> dict[str, Any]:
    """One entry of HubSpot's ``Property values were not valid`` list."""
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
    }


def batch_item_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    """One entry of ``errors`` in a 207 Multi-Status batch answer."""
    return {"status": "error", "category": category, "message": message, "context": context}
