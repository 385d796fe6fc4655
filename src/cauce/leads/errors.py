"""The leads context's errors: each is a core `CauceError` with its own stable `code`.

Every class also derives from the core error of the same HTTP status, so a handler that
catches `NotFound` or `Conflict` catches the leads variants too. `NormalisationError` is
the exception the pure normalisers (`cauce.leads.normalise`, `cauce.leads.phones`) raise:
a `ValueError`, not a client-facing error, that the schemas turn into a per-field
validation error.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict

from cauce.core.errors import (
    CauceError,
    Conflict,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    TooManyRequests,
    ValidationFailed,
)


class FieldError(TypedDict):
    """One rejected field, in the shape core's 422 renderer uses (`errors[]` items).

    `pointer` is an RFC 6901 JSON pointer into the request body (`/items/3/phone`),
    `detail` says why in plain words, `type` is a stable machine-readable reason.
    """

    pointer: str
    detail: str
    type: str


class NormalisationError(ValueError):
    """A value cannot be normalised; `code` is stable, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LeadsError(CauceError):
    """Base of every leads error a client may see."""

    code = "leads_error"
    title = "Leads error"


class LeadNotFound(LeadsError, NotFound):
    """No lead with this id (or it belongs to nobody the caller may see)."""

    code = "lead_not_found"
    title = "Lead not found"


class LeadErased(LeadsError):
    """The lead was erased (GDPR); only its tombstone is left."""

    status_code = 410
    code = "lead_erased"
    title = "Lead erased"


class LeadMerged(LeadErased):
    """A person decided the lead was a duplicate of another and merged it there; its
    tombstone names that lead in `merged_into`. A `LeadErased` (410) with its own code."""

    code = "lead_merged"
    title = "Lead merged into another"


class LeadChanged(LeadsError):
    """`If-Match` names another version of the lead than the stored one: someone changed
    it since the caller read it (RFC 9110 §13.1.1)."""

    status_code = 412
    code = "precondition_failed"
    title = "The lead changed since it was read"


class LeadInvalid(LeadsError, ValidationFailed):
    """The lead breaks the schema; `errors` names every field (JSON pointer) and why.

    The code stays core's `validation_failed`, so clients see one code for every 422.
    """

    code = ValidationFailed.code
    title = ValidationFailed.title

    def __init__(self, errors: list[FieldError], detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or f"{len(errors)} field(s) are invalid", errors=errors, **extra)
        self.errors = errors


class LeadConflict(LeadsError, Conflict):
    """The change conflicts with the lead's state (e.g. a patch would leave no contact)."""

    code = "lead_conflict"
    title = "Lead conflict"


class LeadDuplicate(LeadConflict):
    """A PATCH would give a lead the email, phone or tax id another live lead has."""

    code = "lead_duplicate"
    title = "Another lead has this contact"


class LeadNotHeld(LeadConflict):
    """Only a lead held for review (a possible duplicate) can be reviewed."""

    code = "lead_not_held"
    title = "Lead not held for review"


class LeadImportError(LeadsError):
    """Base of the CSV import errors (not named `ImportError`: that is a builtin)."""

    code = "import_error"
    title = "Import error"


class ImportFileInvalid(LeadImportError):
    """The file cannot be read as CSV at all (encoding, header, a runaway quote...).

    A bad row is not this error: rows fail one by one into the error report.
    """

    status_code = 422
    code = "import_file_invalid"
    title = "The import file cannot be read"


class ImportMappingInvalid(LeadImportError):
    """The explicit column mapping names an unknown field or a column the file lacks."""

    status_code = 422
    code = "import_mapping_invalid"
    title = "Invalid column mapping"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} mapping entr(ies) are invalid", errors=errors)
        self.errors = errors


class ImportOptionsInvalid(LeadImportError):
    """The `options` JSON is not an object, or one of its options other than the mapping
    is wrong (an unknown option, a delimiter or encoding not offered...); `errors` points
    into it (`/options`, `/options/delimiter`).

    Its own code, not `import_mapping_invalid`: a client told its mapping is wrong would
    look for the mistake in the wrong place.
    """

    status_code = 422
    code = "import_options_invalid"
    title = "Invalid import options"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} import option(s) are invalid", errors=errors)
        self.errors = errors


class ImportTooLarge(LeadImportError, PayloadTooLarge):
    """The upload is over the configured size or row limit."""

    code = "import_too_large"
    title = "Import file too large"


class ImportNotFound(LeadImportError, NotFound):
    """No import with this id."""

    code = "import_not_found"
    title = "Import not found"


class ImportNotFinished(LeadImportError, Conflict):
    """The import is still running, so its error report is not complete yet."""

    code = "import_not_finished"
    title = "Import not finished"


class ImportFinished(LeadImportError, Conflict):
    """The import ended on its own (`succeeded` or `failed`): there is nothing to cancel."""

    code = "import_finished"
    title = "Import already finished"


class IntakeBusy(LeadsError, Overloaded):
    """More single leads wait for their transaction than `leads.intake_queue_max`."""

    code = "intake_busy"
    title = "Too many leads waiting"


class ImportQueueFull(LeadImportError, Overloaded):
    """`leads.max_queued_imports` imports are not finished yet: each keeps its upload on
    disk, so no more are taken until some finish (or are cancelled)."""

    code = "import_queue_full"
    title = "Too many imports waiting"
    retry_after: ClassVar[int] = 30


class ImportsPerKeyFull(LeadImportError, TooManyRequests):
    """`leads.max_queued_imports_per_key` imports of this API key are not finished yet: one
    key may not take every place of `leads.max_queued_imports` from the others."""

    code = "key_imports_full"
    title = "Too many imports of this key waiting"
    retry_after: ClassVar[int] = 30


class ImportRequestInvalid(LeadImportError, ValidationFailed):
    """The import request's form is wrong: no `file` part, `file` sent as a plain field
    rather than a file, a part this endpoint does not take. `errors` names each part.

    The code stays core's `validation_failed`, the one a schema violation gets.
    """

    code = ValidationFailed.code
    title = "Invalid import request"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} part(s) of the form are invalid", errors=errors)
        self.errors = errors
