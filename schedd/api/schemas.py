"""Wire formats of the native /v1 API (seed 000/001: field names, defaults and ranges)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from schedd.models import (
    ActionType,
    AfterCompletion,
    CatchupPolicy,
    OverlapPolicy,
    ScheduleStatus,
    ScheduleType,
)

# Bounds the seed leaves open are closed here so that no integer can overflow SQLite's
# 64-bit columns (docs/api.md lists them).
MAX_BACKOFF_SECONDS = 31_536_000  # one year
MAX_RATE_PER_MINUTE = 1_000_000
MAX_OFFSET_DAYS = 36_500

Name = Annotated[str, Meta(max_length=200)]
Timezone = Annotated[str, Meta(max_length=50)]
CatchupWindow = Annotated[int, Meta(ge=0, le=1440)]
FlexWindow = Annotated[int, Meta(ge=0, le=60)]
MaxRetries = Annotated[int, Meta(ge=0, le=10)]
Backoff = Annotated[int, Meta(ge=0, le=MAX_BACKOFF_SECONDS)]
PauseCount = Annotated[int, Meta(ge=1, le=100)]
RateLimit = Annotated[int, Meta(ge=1, le=MAX_RATE_PER_MINUTE)]
OffsetDays = Annotated[int, Meta(ge=-MAX_OFFSET_DAYS, le=MAX_OFFSET_DAYS)]


class ScheduleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    schedule_type: ScheduleType
    action_type: ActionType
    action_config: dict[str, Any]
    schedule_expression: str | None = None
    timezone: Timezone = "UTC"
    start_at: str | None = None
    end_at: str | None = None
    description: str | None = None
    customer_id: uuid.UUID | None = None
    external_id: str | None = None
    deduplication_key: str | None = None
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window_minutes: CatchupWindow = 10
    catchup_policy: CatchupPolicy = CatchupPolicy.ALL
    flexible_window_minutes: FlexWindow = 0
    max_retries: MaxRetries = 3
    retry_backoff_seconds: Backoff = 60
    pause_on_failure_count: PauseCount = 5
    rate_limit_per_minute: RateLimit | None = None
    action_after_completion: AfterCompletion = AfterCompletion.NONE
    relative_entity_definition_id: uuid.UUID | None = None
    relative_field_name: str | None = None
    relative_offset_days: OffsetDays | None = None
    relative_filter: dict[str, Any] | None = None


class ScheduleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Partial update: absent fields keep their value."""

    action_config: dict[str, Any] | UnsetType = UNSET
    catchup_window_minutes: CatchupWindow | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    flexible_window_minutes: FlexWindow | UnsetType = UNSET
    max_retries: MaxRetries | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    overlap_policy: OverlapPolicy | UnsetType = UNSET
    rate_limit_per_minute: RateLimit | UnsetType | None = UNSET
    schedule_expression: str | UnsetType = UNSET
    status: ScheduleStatus | UnsetType = UNSET
    timezone: Timezone | UnsetType = UNSET

    def present(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


class ScheduleOut(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str | None
    schedule_type: str
    schedule_expression: str | None
    timezone: str
    start_at: str | None
    end_at: str | None
    action_type: str
    action_config: dict[str, Any]
    customer_id: str | None
    external_id: str | None
    deduplication_key: str | None
    overlap_policy: str
    catchup_window_minutes: int
    catchup_policy: str
    flexible_window_minutes: int
    max_retries: int
    retry_backoff_seconds: int
    pause_on_failure_count: int
    rate_limit_per_minute: int | None
    action_after_completion: str
    relative_entity_definition_id: str | None
    relative_field_name: str | None
    relative_offset_days: int | None
    relative_filter: dict[str, Any] | None
    status: str
    paused_reason: str | None
    next_run_at: str | None
    last_run_at: str | None
    last_run_status: str | None
    run_count: int
    consecutive_failures: int
    missed_count: int
    last_error: str | None
    created_at: str
    updated_at: str


class ScheduleList(msgspec.Struct, kw_only=True):
    schedules: list[ScheduleOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class PreviewOut(msgspec.Struct, kw_only=True):
    times: list[str]


class ErrorItem(msgspec.Struct, kw_only=True):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(msgspec.Struct, kw_only=True):
    detail: list[ErrorItem]


class ErrorOut(msgspec.Struct, kw_only=True):
    detail: str


class RunOut(msgspec.Struct, kw_only=True):
    id: str
    schedule_id: str
    tenant_id: str
    status: str
    trigger_type: str
    scheduled_for: str
    due_at: str
    triggered_at: str
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    attempt: int
    attempt_root_run_id: str
    previous_attempt_run_id: str | None
    next_attempt_run_id: str | None
    error_code: str | None
    error_message: str | None
    result: Any
    resolved_payload: Any
    action_type: str
    queue: str | None
    worker_id: str | None
    lease_expires_at: str | None
    last_heartbeat_at: str | None
    cancel_requested_at: str | None
    cancel_reason: str | None


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class CancelIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] | None = None


WorkerId = Annotated[str, Meta(min_length=1, max_length=200)]
QueueName = Annotated[str, Meta(min_length=1, max_length=200)]


class ClaimIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    queues: Annotated[list[QueueName], Meta(min_length=1, max_length=50)]
    worker_id: WorkerId
    wait_seconds: Annotated[float, Meta(ge=0, le=30)] = 10
    lease_seconds: Annotated[float, Meta(ge=1, le=3600)] = 60


class HeartbeatIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    worker_id: WorkerId
    lease_seconds: Annotated[float, Meta(ge=1, le=3600)] = 60


class HeartbeatOut(msgspec.Struct, kw_only=True):
    cancel_requested: bool


class CompleteIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    worker_id: WorkerId
    status: Annotated[str, Meta(pattern="^(succeeded|failed)$")]
    result: Any = None
    error_message: Annotated[str, Meta(max_length=2000)] | None = None
