"""`cauce leads recheck`: stored leads read again under today's intake rules.

Intake learned to read values that stand for none (`N/A`, `-`, `sin correo`) and
stand-in addresses (`test@test.com`) as absent, and to refuse emails no one can have
(`gmail.con`, `josé@gmail.com`). Leads stored before keep their old values: a company of
`N/A` scores as a company given and corroborates fuzzy matches, a stand-in email is
still a match key. No migration can fix them (re-scoring needs the runtime's settings
and model), so this scan does, lead by lead, through the same PATCH service a person's
edit goes through: re-scored, re-keyed, a history line, synced again.

Each stored value is validated by the type intake validates that field with now
(`LeadIn`'s), so the rules are never restated here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db import unit_of_work
from cauce.core.errors import CauceError
from cauce.leads import service_edit
from cauce.leads.errors import LeadChanged, LeadErased, LeadNotFound
from cauce.leads.models import Lead
from cauce.leads.schemas import LeadIn, LeadPatch
from cauce.leads.service import LeadsRuntime

ACTOR = "cauce leads recheck"
PAGE_SIZE = 500
# The free-text fields intake now reads as absent when they say none (`N/A`, `-`).
TEXT_FIELDS = ("company", "job_title", "city", "region")
EMAIL = "email"
_COLUMNS = (
    Lead.id,
    Lead.uid,
    Lead.version,
    Lead.phone,
    Lead.email,
    *(getattr(Lead, name) for name in TEXT_FIELDS),
)


class Action(StrEnum):
    """What becomes of a value today's rules would not have stored."""

    CLEAR = "clear"  # it stands for none: cleared (with --apply)
    KEEP = "keep"  # a stand-in email that is the lead's only contact
    FIX = "fix"  # an email today's validator refuses: a person must correct it


@dataclass(frozen=True, slots=True)
class Finding:
    """One stored value of one lead, and what today's rules make of it."""

    lead_id: int
    uid: str
    field: str
    action: Action
    reason: str


def _validator(name: str) -> TypeAdapter[Any]:
    # The field's own type on the intake model: its rule, whatever it becomes.
    annotation = LeadIn.model_fields[name].annotation
    assert annotation is not None
    return TypeAdapter(annotation)


_VALIDATORS: dict[str, TypeAdapter[Any]] = {
    name: _validator(name) for name in (*TEXT_FIELDS, EMAIL)
}


def check(row: Mapping[str, Any]) -> list[Finding]:
    """The findings of one stored lead (a mapping of `_COLUMNS` by name): its text fields
    that say none, and its email if it is a stand-in or today's validator refuses it."""
    lead_id, uid = int(row["id"]), str(row["uid"])
    found: list[Finding] = []
    for name in TEXT_FIELDS:
        value = row[name]
        if value is None:
            continue
        try:
            today = _VALIDATORS[name].validate_python(value)
        except ValidationError:
            continue  # refused for another reason (longer than today's limit): a value
        if today is None:
            reason = f"{value!r} says none" if value.strip() else "is blank"
            found.append(Finding(lead_id, uid, name, Action.CLEAR, reason))
    email = row[EMAIL]
    if email is not None:
        try:
            today = _VALIDATORS[EMAIL].validate_python(email)
        except ValidationError as exc:
            reason = str(exc.errors()[0]["msg"])
            found.append(Finding(lead_id, uid, EMAIL, Action.FIX, reason))
        else:
            if today is None:  # a stored address always has its @: a stand-in
                stand_in = f"{email!r} is a stand-in address, no one's mailbox"
                if row["phone"] is not None:
                    found.append(Finding(lead_id, uid, EMAIL, Action.CLEAR, stand_in))
                else:
                    reason = f"{stand_in}, but the lead's only contact: kept"
                    found.append(Finding(lead_id, uid, EMAIL, Action.KEEP, reason))
    return found


@dataclass
class RecheckReport:
    """What a run found and, with `apply`, did."""

    applied: bool
    scanned: int = 0
    # Leads with at least one finding, and findings by (field, action).
    leads_found: int = 0
    found: Counter[tuple[str, Action]] = field(default_factory=Counter)
    # The first findings, in id order (as many as asked for).
    examples: list[Finding] = field(default_factory=list)
    # With `apply`: leads changed and values cleared by field; leads left alone because
    # they changed (edited, erased, merged) since the scan read them; leads whose edit
    # the PATCH service refused, and the first of them (uid and why).
    changed: int = 0
    cleared: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    refused: int = 0
    refusals: list[tuple[str, str]] = field(default_factory=list)

    @property
    def to_clear(self) -> int:
        """Values found that `apply` clears."""
        return sum(n for (_, action), n in self.found.items() if action is Action.CLEAR)


async def count_live(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """The leads not erased (for a progress display)."""
    async with sessionmaker() as session:
        total = await session.scalar(
            select(func.count()).select_from(Lead).where(Lead.erased_at.is_(None))
        )
    return int(total or 0)


async def _page(
    sessionmaker: async_sessionmaker[AsyncSession], after: int, size: int
) -> list[Mapping[str, Any]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(*_COLUMNS)
            .where(Lead.id > after, Lead.erased_at.is_(None))
            .order_by(Lead.id)
            .limit(size)
        )
        return [dict(row._mapping) for row in rows]


async def _clear(rt: LeadsRuntime, uid: str, version: int, fields: list[str], actor: str) -> None:
    """Clear `fields` of the lead through the PATCH service, in one transaction, if it
    is still the version the scan read (`LeadChanged` otherwise: the If-Match check)."""
    changes = LeadPatch.model_validate(dict.fromkeys(fields))
    async with unit_of_work(rt.sessionmaker) as session:
        await service_edit.patch(
            session, rt, uid, changes, actor, if_match=service_edit.etag_of(version)
        )


async def recheck(
    rt: LeadsRuntime,
    *,
    apply: bool = False,
    show: int = 20,
    page_size: int = PAGE_SIZE,
    actor: str = ACTOR,
    on_page: Callable[[int], None] | None = None,
) -> RecheckReport:
    """Read every live lead, in id order and `page_size` at a time, under today's rules;
    with `apply`, clear the values that say none (and stand-in emails beside a phone),
    one lead a transaction. `on_page(n)` is told the leads read after each page."""
    report = RecheckReport(applied=apply)
    after = 0
    while rows := await _page(rt.sessionmaker, after, page_size):
        after = int(rows[-1]["id"])
        for row in rows:
            findings = check(row)
            if not findings:
                continue
            report.leads_found += 1
            report.found.update((f.field, f.action) for f in findings)
            report.examples.extend(findings[: max(0, show - len(report.examples))])
            clears = [f.field for f in findings if f.action is Action.CLEAR]
            if not (apply and clears):
                continue
            try:
                await _clear(rt, str(row["uid"]), int(row["version"]), clears, actor)
            except (LeadChanged, LeadNotFound, LeadErased):
                report.skipped += 1
            except CauceError as exc:  # a patch refused: reported, the run goes on
                report.refused += 1
                if len(report.refusals) < show:
                    report.refusals.append((str(row["uid"]), exc.detail))
            else:
                report.changed += 1
                report.cleared.update(clears)
        report.scanned += len(rows)
        if on_page is not None:
            on_page(len(rows))
    return report


def _leads(n: int) -> str:
    return f"{n} lead" if n == 1 else f"{n} leads"


def _values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def render(report: RecheckReport) -> str:
    """The report as the command prints it: a summary, then the first findings."""
    lines = [
        f"checked {report.scanned} live {'lead' if report.scanned == 1 else 'leads'} "
        "under today's rules: "
        f"{report.leads_found} with values to look at"
    ]
    lines.extend(
        f"  {name:<10} {action.value:<6} {report.found[name, action]}"
        for name in (*TEXT_FIELDS, EMAIL)
        for action in Action
        if report.found[name, action]
    )
    if report.applied and (report.changed or report.skipped or report.refused):
        by_field = ", ".join(f"{name} {report.cleared[name]}" for name in report.cleared)
        done = f"cleared {_values(report.cleared.total())} on {_leads(report.changed)}"
        lines.append(f"{done} ({by_field})" if by_field else done)
        if report.skipped:
            lines.append(
                f"skipped {_leads(report.skipped)} that changed meanwhile: run again to check them"
            )
        if report.refused:
            lines.append(f"not changed, refused: {_leads(report.refused)}")
            lines.extend(f"  lead {uid}: {why}" for uid, why in report.refusals)
    elif report.to_clear and not report.applied:
        lines.append(f"dry run, nothing changed: --apply clears {_values(report.to_clear)}")
    else:
        lines.append("nothing to clear")
    kept = sum(n for (_, action), n in report.found.items() if action is not Action.CLEAR)
    if kept:
        lines.append(
            f"{_values(kept)} left for a person to fix (keep: a stand-in email that is the "
            "lead's only contact; fix: an email today's rules refuse)"
        )
    if report.examples:
        shown, total = len(report.examples), report.found.total()
        lines.append(f"first {shown} of {total} findings:" if shown < total else "findings:")
        lines.extend(
            f"  lead {f.uid}  {f.field:<9}  {f.action.value}: {f.reason}" for f in report.examples
        )
    return "\n".join(lines)
