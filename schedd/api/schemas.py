"""Wire formats of the native /v1 API (seed 000/001: field names, defaults and ranges)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from schedd.models import (
    AfterCompletion,
    CatchupPolicy,
    OverlapPolicy,
    RunStatus,
    ScheduleStatus,
    ScheduleType,
    TriggerType,
)

# Bounds the seed leaves open are closed here so that no integer can overflow SQLite's
# 64-bit columns (docs/api.md lists them).
MAX_BACKOFF_SECONDS = 31_536_000  # one year
MAX_RATE_PER_MINUTE = 1_000_000
MAX_OFFSET_DAYS = 36_500
# A list's `offset`: far beyond any real table, and below 2^53 so that every JSON tool
# (and schemathesis, which reads bounds as floats) keeps the bound exact.
MAX_LIST_OFFSET = 1_000_000_000

# What a JSON Schema cannot state is said in the descriptions (docs/openapi.md).
_INSTANT = (
    "An RFC 3339 date-time. A date-time without an offset is also accepted, as wall time in "
    "`timezone`. Must lie between 1970-01-01 and 9999-01-01 UTC."
)

#: No string field a client sends takes U+0000 (NUL): PostgreSQL's text cannot hold it,
#: and C strings and tools end at it; a 422 naming the field otherwise, on both backends.
#: (Free JSON objects, stored as JSON text, keep it escaped.)
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Meta(pattern=NO_NUL)]
Name = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]
Timezone = Annotated[str, Meta(
    max_length=50, pattern=NO_NUL,
    description="An IANA time zone name (`Europe/Berlin`, `UTC`) known to the server's tz "
    "database; `localtime` and `posixrules` are refused.",
)]
Expression = Annotated[str, Meta(
    min_length=1, pattern=NO_NUL,
    description="Required, except for `relative`. Its syntax depends on `schedule_type`: "
    "`cron`: 5 fields or a macro "
    "(`0 9 * * 1-5`, `@daily`); `interval`: a duration (`15m`, `1h30m`, `PT15M`); `once`: an "
    "ISO 8601 date-time (wall time in `timezone` without an offset), no older than "
    "`catchup_window_minutes` before now; `relative`: a time of day `HH:MM` (default "
    "`00:00`). The schedule must have an occurrence from now on. "
    "See docs/scheduling.md.",
)]
Instant = Annotated[str, Meta(extra_json_schema={"format": "date-time"}, pattern=NO_NUL,
                               description=_INSTANT)]
ActionConfig = Annotated[dict[str, Any], Meta(
    description="Its fields depend on `action_type` (docs/api.md#actions): `webhook` "
    "{url (required), method, headers, body, payload, secret, timeout_seconds}, `command` "
    "{argv (required), env, cwd, timeout_seconds}, `worker` {queue (required), payload}, "
    "`noop` {}. Unknown fields are refused; at most 64 levels deep.",
)]
CatchupWindow = Annotated[int, Meta(ge=0, le=1440)]
FlexWindow = Annotated[int, Meta(ge=0, le=60)]
MaxRetries = Annotated[int, Meta(ge=0, le=10)]
Backoff = Annotated[int, Meta(ge=0, le=MAX_BACKOFF_SECONDS)]
PauseCount = Annotated[int, Meta(ge=1, le=100)]
RateLimit = Annotated[int, Meta(ge=1, le=MAX_RATE_PER_MINUTE)]
OffsetDays = Annotated[int, Meta(ge=-MAX_OFFSET_DAYS, le=MAX_OFFSET_DAYS,
                                  description="Relative schedules only: days added to the "
                                  "record's date (negative: before). Default 0.")]
DefinitionRef = Annotated[uuid.UUID, Meta(
    description="Relative schedules only, and required for them: the id of an entity "
    "definition of this tenant (422 otherwise).")]
FieldRef = Annotated[str, Meta(
    pattern=NO_NUL,
    description="Relative schedules only, and required for them: a `date` or `datetime` field "
    "of the entity definition (422 otherwise).")]
RelativeFilter = Annotated[dict[str, Any], Meta(
    description="Relative schedules only: `{field: condition}`, all must hold; a condition is "
    "a literal (equality) or an object of operators `eq`, `ne`, `lt`, `lte`, `gt`, `gte`, "
    "`in` (a list), `exists` (a boolean). Every field must be declared in the definition "
    "and every operand must have the field's type (422 naming "
    "[\"body\", \"relative_filter\", ...] otherwise). See docs/scheduling.md#filters.")]


class ActionType(StrEnum):
    """The action types of /v1 (the seed's); `backend` runs belong to syncs only."""

    webhook = "webhook"
    command = "command"
    worker = "worker"
    noop = "noop"


class ScheduleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new schedule. Besides the constraints below, checked at creation (each a 422 naming
    the field): `timezone` exists; `start_at`/`end_at` parse and `end_at` is after
    `start_at`; `schedule_expression` is valid for `schedule_type` and has an occurrence from
    now on; a `once` time is not older than the catch-up window; `action_config` is valid
    for `action_type`; `action_type` `command` is refused unless the server runs with
    `allow_commands`; a relative schedule's definition, field and filter exist and fit
    (docs/scheduling.md#relative-schedules), and the `relative_*` fields are refused on other
    types.
    With a `deduplication_key` already used by this tenant, the existing schedule is
    answered (200) unchanged."""

    name: Name
    schedule_type: ScheduleType
    action_type: ActionType
    action_config: ActionConfig
    schedule_expression: Expression | None = None
    timezone: Timezone = "UTC"
    start_at: Instant | None = None
    end_at: Annotated[str, Meta(
        extra_json_schema={"format": "date-time"}, pattern=NO_NUL,
        description=_INSTANT + " Must be after `start_at`.",
    )] | None = None
    description: Text | None = None
    customer_id: uuid.UUID | None = None
    external_id: Text | None = None
    deduplication_key: Text | None = None
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window_minutes: CatchupWindow = 10
    catchup_policy: CatchupPolicy = CatchupPolicy.ALL
    flexible_window_minutes: FlexWindow = 0
    max_retries: MaxRetries = 3
    retry_backoff_seconds: Backoff = 60
    pause_on_failure_count: PauseCount = 5
    rate_limit_per_minute: RateLimit | None = None
    action_after_completion: AfterCompletion = AfterCompletion.NONE
    relative_entity_definition_id: DefinitionRef | None = None
    relative_field_name: FieldRef | None = None
    relative_offset_days: OffsetDays | None = None
    relative_filter: RelativeFilter | None = None


class ScheduleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Partial update: absent fields keep their value. A new `schedule_expression` or
    `timezone` recomputes the next run from now and is checked as at creation (422 naming
    it); `action_config` is checked against the schedule's `action_type` (a redacted
    secret sent back unchanged keeps the stored one). `status` pauses or resumes; a
    completed schedule cannot be paused or resumed (409). The `relative_*` fields apply to
    relative schedules only (422 otherwise), are checked as at creation, and re-plan every
    record."""

    action_config: ActionConfig | UnsetType = UNSET
    catchup_window_minutes: CatchupWindow | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    flexible_window_minutes: FlexWindow | UnsetType = UNSET
    max_retries: MaxRetries | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    overlap_policy: OverlapPolicy | UnsetType = UNSET
    rate_limit_per_minute: RateLimit | UnsetType | None = UNSET
    schedule_expression: Expression | UnsetType = UNSET
    status: Literal["active", "paused"] | UnsetType = UNSET
    timezone: Timezone | UnsetType = UNSET
    relative_field_name: FieldRef | UnsetType = UNSET
    relative_offset_days: OffsetDays | UnsetType = UNSET
    relative_filter: RelativeFilter | UnsetType | None = UNSET

    def present(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


# Formats of what the server sends (responses): ids are UUIDs, instants RFC 3339 in UTC
# with milliseconds (`2026-11-22T09:00:00.000Z`).
Uuid = Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]


class ScheduleOut(msgspec.Struct, kw_only=True):
    id: Uuid
    tenant_id: Uuid
    name: str
    description: str | None
    schedule_type: ScheduleType
    schedule_expression: str | None
    timezone: str
    start_at: Timestamp | None
    end_at: Timestamp | None
    action_type: str  # models.ActionType: also `backend` (a sync's schedule)
    action_config: dict[str, Any]
    customer_id: Uuid | None
    external_id: str | None
    deduplication_key: str | None
    overlap_policy: OverlapPolicy
    catchup_window_minutes: int
    catchup_policy: CatchupPolicy
    flexible_window_minutes: int
    max_retries: int
    retry_backoff_seconds: int
    pause_on_failure_count: int
    rate_limit_per_minute: int | None
    action_after_completion: AfterCompletion
    relative_entity_definition_id: Uuid | None
    relative_field_name: str | None
    relative_offset_days: int | None
    relative_filter: dict[str, Any] | None
    status: ScheduleStatus
    paused_reason: str | None
    next_run_at: Timestamp | None
    last_run_at: Timestamp | None
    last_run_status: str | None
    run_count: int
    consecutive_failures: int
    missed_count: int
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp


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
    id: Uuid
    schedule_id: Uuid
    tenant_id: Uuid
    status: RunStatus
    trigger_type: TriggerType
    scheduled_for: Timestamp
    due_at: Timestamp
    triggered_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    duration_seconds: float | None
    attempt: int
    attempt_root_run_id: Uuid
    previous_attempt_run_id: Uuid | None
    next_attempt_run_id: Uuid | None
    error_code: str | None
    error_message: str | None
    result: Any
    resolved_payload: Any
    action_type: str  # models.ActionType: also `backend` (a sync's run)
    queue: str | None
    worker_id: str | None
    lease_expires_at: Timestamp | None
    last_heartbeat_at: Timestamp | None
    cancel_requested_at: Timestamp | None
    cancel_reason: str | None
    record_key: str | None


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class CancelIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500, pattern=NO_NUL)] | None = None


WorkerId = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
QueueName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]


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
    error_message: Annotated[str, Meta(max_length=2000, pattern=NO_NUL)] | None = None


# --------------------------------------------------------------------------- entities
DefinitionName = Annotated[str, Meta(min_length=1, max_length=100, pattern=NO_NUL,
                                      description="Unique in the tenant (409 otherwise); "
                                                  "no NUL character.")]
Description = Annotated[str, Meta(max_length=2000, pattern=NO_NUL)]
_FIELD_NAME_RE = "^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_FIELD_TYPES = ["date", "datetime", "string", "number", "boolean"]
# Names and types are checked by the services, so that a 422 names the field
# (["body", "fields", "<name>"]); the schema states the same rules.
Fields = Annotated[dict[str, Any], Meta(
    extra_json_schema={"minProperties": 1, "maxProperties": 100,
                       "propertyNames": {"pattern": _FIELD_NAME_RE},
                       "additionalProperties": {"enum": _FIELD_TYPES}},
    description="1..100 fields `name: type`; names `[A-Za-z_][A-Za-z0-9_]{0,63}`, types "
    "`date`, `datetime`, `string`, `number`, `boolean`.")]
FieldsPatch = Annotated[dict[str, Any], Meta(
    extra_json_schema={"maxProperties": 100,
                       "propertyNames": {"pattern": _FIELD_NAME_RE},
                       "additionalProperties": {"enum": [*_FIELD_TYPES, None]}},
    description="Merged into the definition's fields: a new name adds a field, another type "
    "retypes it, `null` removes it. The result must keep 1..100 fields (422). Retyping or "
    "removing a field a schedule uses is a 409.")]


class DefinitionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new entity definition: the declared fields of a tenant's records."""

    name: DefinitionName
    description: Description | None = None
    fields: Fields


class DefinitionUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`description` replaces, `fields` is merged (see its description)."""

    description: Description | UnsetType | None = UNSET
    fields: FieldsPatch | UnsetType = UNSET

    def present(self) -> dict[str, Any]:
        return {
            f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET
        }


class DefinitionOut(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str | None
    fields: dict[str, str]
    record_count: int
    created_at: str
    updated_at: str


class DefinitionList(msgspec.Struct, kw_only=True):
    entity_definitions: list[DefinitionOut]
    total: int
    limit: int
    offset: int
    has_more: bool


RecordData = Annotated[Any, Meta(
    extra_json_schema={"type": "object"},
    description="The record's data: each field the definition declares holds a value of its "
    "type or null (`date` `YYYY-MM-DD`, `datetime` RFC 3339 with an offset, `string`, "
    "`number`, `boolean`; a 422 naming [\"body\", \"data\", field] otherwise); other "
    "fields are kept as they are.")]


class RecordIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # an object, checked by the services: Litestar reports a type error of a top-level
    # field named `data` without its name, so the 422 could not say ["body", "data"]
    data: RecordData


class RecordOut(msgspec.Struct, kw_only=True):
    key: str
    data: dict[str, Any]
    created_at: str
    updated_at: str


class RecordList(msgspec.Struct, kw_only=True):
    records: list[RecordOut]
    next_after: str | None


RecordKey = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL,
                                 description="1..200 characters, no NUL.")]
MAX_BATCH = 10_000


class BatchUpsertItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: RecordKey
    data: Annotated[dict[str, Any], Meta(description=(
        "As a record's data: declared fields must have their type (422 naming "
        "[\"body\", \"upsert\", i, \"data\", field])."))]


class BatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Upserts and deletes applied all or none, in one transaction. At most 10,000 items in
    all, upserts and deletes together (422 otherwise); a key may appear once in a batch
    (422 naming the repeat); every upsert's data is checked as a record's."""

    upsert: Annotated[list[BatchUpsertItem], Meta(max_length=MAX_BATCH)] = msgspec.field(
        default_factory=list)
    delete: Annotated[list[RecordKey], Meta(max_length=MAX_BATCH)] = msgspec.field(
        default_factory=list)


class BatchOut(msgspec.Struct, kw_only=True):
    upserted: int
    deleted: int


class OccurrenceOut(msgspec.Struct, kw_only=True):
    record_key: str | None
    scheduled_for: str
    due_at: str


class OccurrenceList(msgspec.Struct, kw_only=True):
    occurrences: list[OccurrenceOut]
