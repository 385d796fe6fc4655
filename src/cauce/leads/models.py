"""The leads context's tables.

A lead row holds the normalised fields, its score and owner, its de-duplication state and
its CRM delivery state. Every source that contributed to it and every change are kept
(`lead_sources`, `lead_history`) so a merge can be explained and GDPR consent proven.
An erased lead keeps its row as a tombstone: personal fields are cleared, `erased_at` set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from cauce.core.db.base import Base, UtcDateTime, utcnow
from cauce.leads.matching.record import fold

BigId = BigInteger().with_variant(Integer(), "sqlite")


class Lead(Base):
    """One person who may buy, as Cauce knows them now."""

    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_created", "created_at", "id"),
        Index("ix_leads_sync", "sync_status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    email_key: Mapped[str | None] = mapped_column(String(320), default=None, index=True)
    phone: Mapped[str | None] = mapped_column(String(20), default=None, index=True)
    # The extension of `phone` (digits), when it has one: it goes with that number only.
    phone_extension: Mapped[str | None] = mapped_column(String(10), default=None)
    first_name: Mapped[str | None] = mapped_column(String(200), default=None)
    last_name: Mapped[str | None] = mapped_column(String(200), default=None)
    company: Mapped[str | None] = mapped_column(String(200), default=None)
    job_title: Mapped[str | None] = mapped_column(String(200), default=None)
    country: Mapped[str | None] = mapped_column(String(2), default=None, index=True)
    region: Mapped[str | None] = mapped_column(String(200), default=None)
    city: Mapped[str | None] = mapped_column(String(200), default=None)
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    source: Mapped[str] = mapped_column(String(32), index=True)
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    utm: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    email_disposable: Mapped[bool] = mapped_column(Boolean, default=False)
    email_free: Mapped[bool] = mapped_column(Boolean, default=False)
    # Emails and phones merged arrivals brought that are not the lead's own, for matching
    # (`matching.plan.other_contacts`: space-separated, at most 10 of each).
    other_emails: Mapped[str | None] = mapped_column(Text, default=None)
    other_phones: Mapped[str | None] = mapped_column(Text, default=None)

    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    owner: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    team: Mapped[str | None] = mapped_column(String(100), default=None)
    score: Mapped[int] = mapped_column(Integer, default=0, index=True)
    score_model: Mapped[str] = mapped_column(String(64), default="points")
    score_reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    # De-duplication: a lead held for review points at the lead it may duplicate. Indexed
    # (migration 0025): a lead's view lists the leads held against it.
    possible_duplicate_of: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("leads.id", ondelete="SET NULL"), default=None, index=True
    )
    # Why it was held, for the person who reviews it: the match kind, the confidence and
    # the comparison's explanation lines (field reasons, never values). SQL NULL when not
    # held, and for leads held before migration 0022.
    hold_evidence: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    match_keys: Mapped[list[str]] = mapped_column(JSON, default=list)

    # CRM delivery: `version` grows on every change; the CRM has seen `synced_version`.
    version: Mapped[int] = mapped_column(Integer, default=1)
    sync_status: Mapped[str] = mapped_column(String(16), default="pending")
    synced_version: Mapped[int] = mapped_column(Integer, default=0)
    crm_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    sync_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_sync_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The CRM properties Cauce has given a value there (its last successful sync's, written
    # with `synced_version`); None: not known yet (never synced since migration 0016). One
    # whose field is empty now is sent cleared; a property never given one is left alone.
    crm_sent_properties: Mapped[list[str] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    # A CRM without an upsert (Pipedrive, `leads.delivery`): when a create of this lead
    # was marked in flight (right before it left; cleared once its answer is recorded),
    # and since when one may have been applied without Cauce learning its outcome (in
    # doubt: not searched for nor created again for a while). Both cleared by the success
    # that records the contact id. Migration 0027.
    crm_create_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    crm_create_doubt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)

    # The W3C traceparent of the work that last made the lead pending (its intake, merge,
    # PATCH or review): the delivery span that sends it links to it, so a lead's trace
    # goes on to the CRM call even when a delivery job started in another request's trace
    # carries it (deliveries coalesce). An id of a span, nothing personal.
    trace_parent: Mapped[str | None] = mapped_column(String(55), default=None)

    # Inbound CRM changes: when the newest applied event happened (older ones are ignored,
    # HubSpot reorders), and whether the CRM deleted the contact.
    crm_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    crm_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)

    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    # What free-text search reads: `SEARCHED` folded (`search_text_of`), kept up to date
    # by the insert (`IntakeWriter`) and by every ORM update (`_refold`).
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")


# The fields `GET /v1/leads?q=` looks in: a person asking what is held about them gives
# an email or a phone, which a merge may have kept among the other contacts (0015).
SEARCHED = ("first_name", "last_name", "company", "email", "phone", "other_emails", "other_phones")


def search_text_of(lead: Lead) -> str:
    """The lead's searched fields, lower case, accents and punctuation folded away
    ("María García, m.garcia@bodegas.es, +34612345678" → "maria garcia m garcia bodegas
    es 34612345678"), so
    `garcia` finds García and `GARCÍA` finds Garcia on SQLite and PostgreSQL alike.

    A word punctuation splits is there joined too ("O'Brien S.L." → "o brien s l obrien
    sl"): `obrien` and `sl` find it, as `o'brien` and `s.l.` do."""
    return search_text(" ".join(v for name in SEARCHED if (v := lead.__dict__.get(name))))


# Latin letters Unicode gives no decomposition (so `fold` drops them: "Łukasz" was
# "ukasz", "Søren" "s ren"), as a keyboard without them types them: `q=lukasz` finds
# Łukasz, `q=soren` Søren, `q=orsted` Ørsted. Lower case only: `search_fold` casefolds
# first. Search only; matching's `fold` and its stored keys stay as they are.
_PLAIN_LETTERS = str.maketrans(
    {
        "ł": "l",
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "\u0131": "i",  # dotless i
        "ħ": "h",
        "ŧ": "t",
        "ŋ": "n",
        "ĸ": "k",
        "ŀ": "l",
    }
)


def search_fold(text: str | None) -> str:
    """`fold` for search: the letters of `_PLAIN_LETTERS` kept as their plain ones."""
    if not text:
        return ""
    if text.isascii():
        return fold(text)
    return fold(text.casefold().translate(_PLAIN_LETTERS))


def search_text(text: str) -> str:
    """`search_text_of` for the searched fields' text (migration 0023 has a frozen copy)."""
    folded = search_fold(text)
    joined = []
    for token in text.split():
        words = search_fold(token).split()
        if len(words) > 1:
            joined.append("".join(words))
    return " ".join([folded, *joined]) if joined else folded


@event.listens_for(Lead, "before_insert")
def _fold_new(_mapper: Mapper[Lead], _connection: object, lead: Lead) -> None:
    # Intake inserts in bulk (`IntakeWriter` folds those); a lead added to a session too.
    lead.search_text = search_text_of(lead)


@event.listens_for(Lead, "before_update")
def _refold(_mapper: Mapper[Lead], _connection: object, lead: Lead) -> None:
    # A merge, a PATCH or an erasure changed a searched field: the search text follows.
    # (Every searched field is loaded then: leads are read whole and never expired.)
    state = inspect(lead)
    if any(state.attrs[name].history.has_changes() for name in SEARCHED):
        lead.search_text = search_text_of(lead)


class LeadMatchKey(Base):
    """Blocking keys of a lead: candidate duplicates are the leads sharing one."""

    __tablename__ = "lead_match_keys"
    # A key's members straight from the index, lowest id first (migration 0007).
    __table_args__ = (Index("ix_lead_match_keys_key_lead_id", "key", "lead_id"),)

    lead_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)


class LeadKeyLock(Base):
    """An intake's lock on one exact key (email, phone, tax id), PostgreSQL only: a row
    inserted and deleted again at once by the intake's transaction, which other intakes
    inserting it wait for (a unique index's wait: a row lock, not a slot of the server's
    shared lock table). The table is empty outside those statements, and unlogged. `h`
    is the key's 64-bit hash (`hashtextextended`), never the key itself: a row left over
    would keep no email or phone (`repository.lock_exact_keys`)."""

    __tablename__ = "lead_key_locks"

    h: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class LeadSource(Base):
    """One arrival of a lead (a form post, an API call, a CSV row), kept after merges."""

    __tablename__ = "lead_sources"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("leads.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    # What this arrival sent: a merge keeps the lead's own, so another one stays here.
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(20), default=None)
    phone_extension: Mapped[str | None] = mapped_column(String(10), default=None)
    utm: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LeadEvent(Base):
    """The history of a lead: created, merged, updated, status changed, synced, erased."""

    __tablename__ = "lead_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lead_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("leads.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str | None] = mapped_column(String(200), default=None)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LeadImport(Base):
    """A CSV import: the upload is stored on disk and processed by a job."""

    __tablename__ = "lead_imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    path: Mapped[str] = mapped_column(String(1024))
    # How each column is read (header -> field, None: ignored): the explicit mapping
    # until the import starts, then every column of the file.
    mapping: Mapped[dict[str, str | None]] = mapped_column(JSON, default=dict)
    encoding: Mapped[str | None] = mapped_column(String(32), default=None)
    delimiter: Mapped[str | None] = mapped_column(String(4), default=None)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_processed: Mapped[int] = mapped_column(Integer, default=0)
    rows_accepted: Mapped[int] = mapped_column(Integer, default=0)
    rows_merged: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    rows_held: Mapped[int] = mapped_column(Integer, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # The job that runs it (no foreign key: the job table is the engine's, and a purged
    # job leaves the id behind); null for imports recorded before it was kept.
    job_id: Mapped[int | None] = mapped_column(BigInteger, default=None)


class LeadImportError(Base):
    """One rejected row of an import (downloadable as CSV)."""

    __tablename__ = "lead_import_errors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    import_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("lead_imports.id", ondelete="CASCADE"), index=True
    )
    row: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class ErasedContact(Base):
    """A keyed hash of an erased lead's email or phone (`erased_contacts`): an imported
    file cannot bring the person back (migration 0024)."""

    __tablename__ = "erased_contacts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RoutingCursor(Base):
    """Weighted round-robin position per team (shared by every API process)."""

    __tablename__ = "lead_routing_cursors"

    team: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)


class WebhookInboxEvent(Base):
    """An inbound webhook event, recorded once per (source, event id) and processed later."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        Index("ix_webhook_inbox_pending", "processed_at", "id"),
        UniqueConstraint("source", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    outcome: Mapped[str | None] = mapped_column(String(64), default=None)
