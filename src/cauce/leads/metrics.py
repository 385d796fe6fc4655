"""Prometheus metrics of the leads context, registered on the app's registry."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db import on_commit
from cauce.leads.scoring import scorer_model


class LeadsMetrics:
    """Leads accepted by outcome, leads synced, webhooks refused, the CRM backlog and the
    erasures it owes, intake group sizes, the scoring model loaded, the candidate cache."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.intake = Counter(
            "cauce_leads_intake_total",
            "Leads received, by outcome (created, merged, held_for_review; rejected: invalid; "
            "busy: refused with 503 while too many waited)",
            ["outcome"],
            registry=registry,
        )
        self.synced = Counter(
            "cauce_leads_synced_total", "Leads delivered to the CRM", ["crm"], registry=registry
        )
        self.webhooks_rejected = Counter(
            "cauce_webhooks_rejected_total",
            "Inbound webhooks refused",
            ["source", "reason"],
            registry=registry,
        )
        # Read from the database before a scrape (`sync_backlog.refresh_sync_gauges`), when
        # a CRM is configured: with several processes, the latest reading is the answer.
        self.sync_backlog = Gauge(
            "cauce_leads_sync_backlog",
            "Live leads not in the CRM, by sync status (pending: waiting to be sent; failed: "
            "refused for good, to fix and replay; held: waiting for a person's review)",
            ["status"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.sync_oldest_pending = Gauge(
            "cauce_leads_sync_oldest_pending_seconds",
            "Age of the oldest change not yet in the CRM (since the pending lead's last "
            "update); 0 when none waits",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        # Read with the backlog: erased leads whose contact the CRM may still hold (their
        # tombstones', `sync_backlog.OWED`), which no purge of failed jobs forgets.
        self.erasures_owed = Gauge(
            "cauce_crm_erasures_owed",
            "Erased leads whose erasure the CRM still owes (pending: its crm.erase job is "
            "queued or retrying; failed: the CRM refused it for good, to fix and retry with "
            "`cauce leads erasures --retry`)",
            ["state"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.erasures_oldest_pending = Gauge(
            "cauce_crm_erasures_oldest_pending_seconds",
            "Age of the oldest erasure still pending at the CRM (since it became pending: the "
            "erasure, or a retry); "
            "0 when none is",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        # Set once, when the process loads its scorer (`wiring.open_leads`): a process keeps
        # that model until restarted, whatever `cauce leads model activate` did since.
        # `liveall`: with processes sharing a metrics directory, one series per process
        # (its `pid` label), so each one that has not been restarted shows.
        self.scoring_model = Gauge(
            "cauce_leads_scoring_model_info",
            "The model this process scores new leads with (value 1): `points` or "
            "`learned-v<N>`, as leads' `score_model` says; it changes only on a restart",
            ["model"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.intake_group = Histogram(
            "cauce_leads_intake_group_leads",
            "Leads of POST /v1/leads committed together in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=registry,
        )
        # The process's candidate cache (`matching.known.KnownLeads`), copied from it by
        # `candidate_cache_seen` (before a scrape, and every few seconds: `wiring`), never
        # on intake's path. `liveall`: with processes sharing a metrics directory, one
        # series per process (its `pid` label); each process keeps a cache of its own.
        self.candidate_cache_entries = Gauge(
            "cauce_leads_candidate_cache_entries",
            "Stored leads whose prepared match fields this process keeps "
            "(at most cauce_leads_candidate_cache_capacity; ~1.8 KiB each)",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.candidate_cache_capacity = Gauge(
            "cauce_leads_candidate_cache_capacity",
            "Most stored leads this process's candidate cache keeps "
            "(CAUCE_LEADS__CANDIDATE_CACHE_SIZE)",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.candidate_cache_evictions = Counter(
            "cauce_leads_candidate_cache_evictions",
            "Leads dropped from a full candidate cache to make room (the least recently "
            "used): steady while leads come in once more leads are stored than it holds, "
            "and intake reads them from the database again when they are candidates",
            registry=registry,
        )
        self._evictions_counted = 0

    def scorer_loaded(self, scorer: object) -> None:
        """Say which model `scorer` is (`scoring.scorer_model`) on the info gauge."""
        self.scoring_model.labels(scorer_model(scorer)[0]).set(1)

    def candidate_cache_seen(self, entries: int, capacity: int, evicted: int) -> None:
        """Copy the candidate cache's counts (`KnownLeads`: its length, `size`, and
        `evicted`, which only grows) onto its gauges and counter."""
        self.candidate_cache_entries.set(entries)
        self.candidate_cache_capacity.set(capacity)
        if evicted > self._evictions_counted:
            self.candidate_cache_evictions.inc(evicted - self._evictions_counted)
            self._evictions_counted = evicted


def count_on_commit(session: AsyncSession, metrics: LeadsMetrics, outcomes: Iterable[str]) -> None:
    """Count leads accepted by `session`'s transaction once it commits (never before: a
    group that fails and runs again lead by lead, or a batch whose transaction fails,
    would count its leads twice or count leads never stored)."""
    tally = Tally(outcomes)

    def count() -> None:
        for outcome, n in tally.items():
            metrics.intake.labels(outcome).inc(n)

    on_commit(session, count)
