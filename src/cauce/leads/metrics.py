"""Prometheus metrics of the leads context, registered on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class LeadsMetrics:
    """Leads accepted by outcome, leads synced, webhooks refused, intake group sizes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.intake = Counter(
            "cauce_leads_intake_total",
            "Leads received, by outcome (created, merged, held_for_review, rejected)",
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
        self.intake_group = Histogram(
            "cauce_leads_intake_group_leads",
            "Leads of POST /v1/leads committed together in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=registry,
        )
