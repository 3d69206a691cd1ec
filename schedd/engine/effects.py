"""What a unit of work on the writer thread leaves for the event loop to do after its commit,
and the one log line per run transition the loop writes then.

Every transaction of the engine (a cycle, a recovery, a cancel, a worker's completion) fills
an `Effects` instead of touching asyncio: the loop applies it once the transaction
committed (schedd/engine/loop.py `Engine._apply`), and a rolled-back one is dropped whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from schedd import logs
from schedd.actions import Prepared
from schedd.models import Run, Schedule

#: every part of the engine logs as "schedd.engine"
log = logging.getLogger("schedd.engine")


@dataclass
class Effects:
    """Actions to start, tasks to cancel, queues to notify, when to wake, and what to say."""

    start: list[tuple[Run, Schedule, Prepared]] = field(default_factory=list)
    cancel_tasks: list[str] = field(default_factory=list)
    cancel_schedules: list[str] = field(default_factory=list)
    cancel_records: list[tuple[str, str]] = field(default_factory=list)  # (schedule, record)
    queued: bool = False
    more: bool = False
    wake_ms: int | None = None
    next_wake_ms: int | None = None
    # said only once the transaction committed (a rolled-back cycle is tried again)
    ended: list[Run] = field(default_factory=list)  # runs that finished: a log line, counted
    webhook_times: list[tuple[bool, float]] = field(default_factory=list)
    notes: list[tuple[int, str, tuple[Any, ...]]] = field(default_factory=list)

    def wake_at(self, ms: int) -> None:
        self.wake_ms = ms if self.wake_ms is None else min(self.wake_ms, ms)

    def note(self, level: int, msg: str, *args: Any) -> None:
        self.notes.append((level, msg, args))


def log_run(run: Run) -> None:
    """One line per run transition: ids, status, lateness, duration; never a payload,
    a header or a secret."""
    if not log.isEnabledFor(logging.INFO):
        return  # nothing to build
    started = run.started_ms
    status = run.status
    logs.record(log, logging.INFO, "run %s", (status,), {
        "schedule_id": run.schedule_id, "run_id": run.id, "attempt": run.attempt,
        "trigger": run.trigger_type, "status": status,
        "error_code": run.error_code,
        "lateness_ms": None if started is None else started - run.due_ms,
        "duration_ms": None if started is None or run.completed_ms is None
        else run.completed_ms - started,
    })
