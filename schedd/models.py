"""Domain Structs and enums. Instants are integer epoch milliseconds (`*_ms`)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any

import msgspec


def new_id(now_ms: int) -> str:
    """A new id: a UUIDv7 (RFC 9562) — 48 bits of Unix milliseconds (now_ms, from the
    injected clock), then 74 random bits.
    Ids made together sort together, so the rows a claim or a burst of creates writes land
    on neighbouring pages of the id-keyed indexes (runs by id, by schedule; schedules by
    id) instead of one random page each: fewer pages per commit. It says when an object was
    made and nothing else; nothing relies on its order."""
    rand = int.from_bytes(os.urandom(10))  # 80 bits: 12 for rand_a, 62 for rand_b
    # unix_ts_ms (48 bits) | version 7 | rand_a (12) | variant 0b10 + rand_b (62), as hex;
    # formatted directly (uuid.UUID would cost twice as much, on every run's id)
    h = (f"{now_ms & 0xFFFF_FFFF_FFFF:012x}7{rand >> 68:03x}"
         f"{(0x2 << 62) | (rand & ((1 << 62) - 1)):016x}")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

class ScheduleType(StrEnum):
    cron = "cron"
    interval = "interval"
    once = "once"
    relative = "relative"


class ActionType(StrEnum):
    webhook = "webhook"
    command = "command"
    worker = "worker"
    noop = "noop"
    # A run handed to an execution backend that schedd drives and polls (the Syncs API's
    # `prefect`, schedd/backends/). Not offered by /v1: such schedules are syncs.
    backend = "backend"


# The action types a /v1 client may choose (the seed's list).
PUBLIC_ACTION_TYPES = ("webhook", "command", "worker", "noop")


class ScheduleStatus(StrEnum):
    active = "active"
    paused = "paused"
    completed = "completed"


class RunStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"


FINISHED = frozenset(
    {RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.skipped}
)


class TriggerType(StrEnum):
    scheduled = "scheduled"
    catchup = "catchup"
    manual = "manual"
    retry = "retry"


class OverlapPolicy(StrEnum):
    SKIP = "SKIP"
    BUFFER_ONE = "BUFFER_ONE"
    BUFFER_ALL = "BUFFER_ALL"
    CANCEL_OTHER = "CANCEL_OTHER"
    ALLOW = "ALLOW"


class CatchupPolicy(StrEnum):
    ALL = "ALL"
    LATEST = "LATEST"


class AfterCompletion(StrEnum):
    NONE = "NONE"
    DELETE = "DELETE"


class Schedule(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str | None = None
    schedule_type: ScheduleType
    schedule_expression: str | None = None
    timezone: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None
    action_type: ActionType
    action_config: dict[str, Any]
    customer_id: str | None = None
    external_id: str | None = None
    deduplication_key: str | None = None
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window_minutes: int = 10
    catchup_policy: CatchupPolicy = CatchupPolicy.ALL
    flexible_window_minutes: int = 0
    max_retries: int = 3
    retry_backoff_seconds: int = 60
    pause_on_failure_count: int = 5
    rate_limit_per_minute: int | None = None
    action_after_completion: AfterCompletion = AfterCompletion.NONE
    relative_entity_definition_id: str | None = None
    relative_field_name: str | None = None
    relative_offset_days: int | None = None
    relative_filter: dict[str, Any] | None = None
    status: ScheduleStatus = ScheduleStatus.active
    paused_reason: str | None = None
    next_run_ms: int | None = None
    last_run_ms: int | None = None
    last_run_status: str | None = None
    run_count: int = 0
    consecutive_failures: int = 0
    missed_count: int = 0
    last_error: str | None = None
    created_ms: int
    updated_ms: int


class ScheduleTally(msgspec.Struct, kw_only=True):
    """What recording a run's outcome reads of its schedule (a narrow read in the cycle's
    transaction) and writes back: counters and, when it pauses, the reason."""

    id: str
    status: ScheduleStatus
    max_retries: int
    retry_backoff_seconds: int
    pause_on_failure_count: int
    overlap_policy: OverlapPolicy
    action_after_completion: AfterCompletion
    run_count: int
    consecutive_failures: int
    last_run_ms: int | None
    last_run_status: str | None
    paused_reason: str | None = None  # set when this recording pauses the schedule


class Run(msgspec.Struct, kw_only=True):
    id: str
    schedule_id: str
    tenant_id: str
    status: RunStatus
    trigger_type: TriggerType
    manual: bool = False
    scheduled_for_ms: int
    due_ms: int
    triggered_ms: int
    started_ms: int | None = None
    completed_ms: int | None = None
    attempt: int = 1
    attempt_root_run_id: str
    previous_attempt_run_id: str | None = None
    next_attempt_run_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    result: Any = None
    resolved_payload: Any = None
    action_type: ActionType
    queue: str | None = None
    waiting: bool = False
    worker_id: str | None = None
    lease_until_ms: int | None = None
    last_heartbeat_ms: int | None = None
    cancel_requested_ms: int | None = None
    cancel_reason: str | None = None
    record_key: str | None = None  # runs of a relative schedule: the record's key
    # a manual trigger's change to the action config, merged over it for this chain
    config_patch: Any = None
    # runs a node started itself: that node, and until when its lease holds (renewed while
    # the action runs; once it ran out, any node fails the run `interrupted`)
    node_id: str | None = None
    node_lease_until_ms: int | None = None


class EntityDefinition(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str | None = None
    fields: dict[str, str]
    record_count: int = 0
    created_ms: int
    updated_ms: int


class EntityRecord(msgspec.Struct, kw_only=True):
    key: str
    data: dict[str, Any]
    created_ms: int
    updated_ms: int


class Occurrence(msgspec.Struct, kw_only=True):
    """A pending occurrence as the occurrences list shows it."""

    record_key: str | None
    scheduled_for_ms: int
    due_ms: int


class ScheduleExt(msgspec.Struct, kw_only=True):
    """What a compatibility router keeps beside a schedule (table schedule_ext): which API
    made it (`kind`), where it lives in that API (`scope`), and its own fields (`data`)."""

    kind: str
    scope: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class RunTally(msgspec.Struct, kw_only=True):
    """Exact counts over a schedule's recorded runs (every attempt is a run)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    last_root_run_id: str | None = None


class ApiKey(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    tenant_name: str
    prefix: str
    created_ms: int
    last_used_ms: int | None = None
    revoked_ms: int | None = None


class Page(msgspec.Struct, kw_only=True):
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + self.limit < self.total
