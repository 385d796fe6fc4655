"""Prometheus metrics of the job engines."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cauce.core.jobs.ports import QueueStats

ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class JobMetrics:
    """Counters by task, queue depth by state, oldest waiting age, attempt durations,
    and finished jobs purged."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deferred = Counter("cauce_jobs_deferred", "Jobs deferred", ["task"], registry=r)
        self.started = Counter("cauce_jobs_started", "Job attempts started", ["task"], registry=r)
        self.succeeded = Counter("cauce_jobs_succeeded", "Jobs succeeded", ["task"], registry=r)
        self.failed = Counter("cauce_jobs_failed", "Jobs failed for good", ["task"], registry=r)
        self.retried = Counter(
            "cauce_jobs_retried", "Attempts that failed and were rescheduled", ["task"], registry=r
        )
        self.postponed = Counter(
            "cauce_jobs_postponed", "Attempts the handler postponed", ["task"], registry=r
        )
        self.duration = Histogram(
            "cauce_job_attempt_duration_seconds",
            "Duration of job attempts",
            ["task", "outcome"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.purged = Counter(
            "cauce_jobs_purged",
            "Finished jobs deleted past their retention, by the status they finished in",
            ["status"],
            registry=r,
        )
        for status in ("succeeded", "failed", "cancelled"):
            self.purged.labels(status)  # exported at 0 before the first purge
        # Read from the database before a scrape by the process scraped: with several
        # processes sharing their metrics, the latest reading is the answer.
        self.depth = Gauge(
            "cauce_jobs_queue_depth",
            "Jobs by state",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.oldest = Gauge(
            "cauce_jobs_oldest_waiting_seconds",
            "Age of the oldest due todo job",
            registry=r,
            multiprocess_mode="mostrecent",
        )

    def set_stats(self, stats: QueueStats) -> None:
        """Publish a fresh snapshot of queue depth (called before each scrape)."""
        for state in ("todo", "doing", "succeeded", "failed", "cancelled"):
            self.depth.labels(state).set(stats.depth.get(state, 0))
        self.oldest.set(stats.oldest_todo_age_seconds or 0.0)
