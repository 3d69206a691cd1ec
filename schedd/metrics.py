"""Domain metrics in the Prometheus text format (no per-request middleware: it costs more
than a third of the API's throughput). One registry per daemon, not the global one."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                    60, 300)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.runs = Counter("schedd_runs", "Runs that ended, by status and action type",
                            ["status", "action_type"], registry=r)
        self.missed = Counter("schedd_missed_occurrences",
                              "Occurrences older than the catch-up window, recorded as missed",
                              registry=r)
        self.lateness = Histogram("schedd_fire_lateness_seconds",
                                  "A run's start minus its due time", buckets=LATENESS_BUCKETS,
                                  registry=r)
        self.webhook = Histogram("schedd_webhook_duration_seconds",
                                 "Time from a webhook's start to its answer (or failure)",
                                 ["outcome"], buckets=WEBHOOK_BUCKETS, registry=r)
        self.backlog = Gauge("schedd_due_backlog",
                             "Occurrences and runs due now but not started yet", registry=r)
        self.schedules = Gauge("schedd_schedules", "Schedules by status", ["status"],
                               registry=r)
        self.running = Gauge("schedd_running_actions", "Actions running in this process",
                             registry=r)
        self.loop_wake = Gauge("schedd_loop_last_wake_seconds_ago",
                               "Seconds since the scheduler loop last woke", registry=r)
        self.db_errors = Counter("schedd_db_errors",
                                 "Writes the storage refused, by kind: full (disk full), "
                                 "readonly, locked (busy timeout), io", ["kind"], registry=r)
        for kind in ("full", "readonly", "locked", "io"):
            self.db_errors.labels(kind)  # present at 0 from the start, for alert rules
        self.db_writable = Gauge("schedd_db_writable",
                                 "1 when the last write succeeded, 0 while the database "
                                 "cannot be written", registry=r)
        self.db_writable.set(1)

        # labelled children, looked up once: labels() takes a lock and builds a key on every
        # call, and these two are counted for every run
        self._runs_by: dict[tuple[str, str], Any] = {}
        self._webhook_ok = self.webhook.labels("ok")
        self._webhook_failed = self.webhook.labels("failed")

    def run_ended(self, status: str, action_type: str) -> None:
        child = self._runs_by.get((status, action_type))
        if child is None:
            child = self._runs_by[status, action_type] = self.runs.labels(status, action_type)
        child.inc()

    def webhook_done(self, ok: bool, seconds: float) -> None:
        (self._webhook_ok if ok else self._webhook_failed).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
