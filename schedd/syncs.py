"""Use cases of the Syncs API (seed 004, SPEC 7.3), over the same store and engine as /v1.

A sync IS a schedule (same id, same tenant): its timing, action, retries and runs are the
schedule's, visible through /v1. What the seed adds (connection, provider, status,
trigger mode, backend, configs, bindings) is kept beside it in `syncs`; what a sync run
adds (runMode, triggeredBy, backend fields) in `sync_runs`.

Decisions (docs/compat.md says them to users):
- The schedule is `active` only while the sync is `active` AND its triggerMode is
  `scheduled`; otherwise it is `paused` with paused_reason `sync_<status>` (draft, paused,
  archived) or `sync_<triggerMode>` (manual, on_create). Auto-pause after
  pause_on_failure_count failed occurrences (SPEC 5) shows as status `error`; setting
  status `active` again resumes it. /v1 may pause or resume a sync's schedule too; the
  Syncs API then shows `paused` (a /v1 pause) or `active`.
- A sync without `schedule` keeps a placeholder timing on its schedule (interval 1d,
  never active); the Syncs API shows `schedule: null`.
- `on_create` fires once, when the sync first becomes active (at create or by a PATCH);
  a crash between the two is repaired at the next start.
- A manual trigger works in every status but `archived`.
- lastSuccessAt and lastError are read from the runs: the newest success; the error of
  the newest run that ended its chain when it failed, else (when the freshness SLA passed
  without a success) a freshness message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from schedd import auth, timing
from schedd.action_config import REDACTED
from schedd.backends import RemoteState
from schedd.backends import external as b_external
from schedd.backends import native as b_native
from schedd.backends import prefect as b_prefect
from schedd.backends import temporal as b_temporal
from schedd.clock import Clock
from schedd.config import Settings
from schedd.errors import ConfigError, Conflict, InvalidField, NotFound
from schedd.models import (
    ActionType,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    TriggerType,
    new_id,
)
from schedd.services import Services
from schedd.store import Store, Tx
from schedd.store import sqlite_syncs as ss

log = logging.getLogger("schedd.syncs")

class Provider(StrEnum):
    """Supported external system providers (seed 004)."""

    shopify = "shopify"
    http_api = "http_api"
    flexiroam = "flexiroam"
    starlink = "starlink"
    s3 = "s3"
    google_drive = "google_drive"
    msft_sharepoint = "msft_sharepoint"
    klaviyo = "klaviyo"
    amazon_sp = "amazon_sp"
    salesforce = "salesforce"
    netsuite = "netsuite"
    sqlserver = "sqlserver"
    postgres = "postgres"
    mlflow = "mlflow"
    sftp = "sftp"
    gmail_inbox = "gmail_inbox"
    dropbox = "dropbox"
    rydership = "rydership"
    gorgias = "gorgias"
    redo = "redo"
    bullhorn = "bullhorn"


class SyncStatus(StrEnum):
    """A sync's status."""

    draft = "draft"
    active = "active"
    paused = "paused"
    error = "error"
    archived = "archived"


class TriggerMode(StrEnum):
    """What fires a sync."""

    manual = "manual"
    scheduled = "scheduled"
    on_create = "on_create"


class ExecutionBackend(StrEnum):
    """Who does a sync run's work."""

    native = "native"
    prefect = "prefect"
    temporal = "temporal"
    external = "external"


class ExecutionMode(StrEnum):
    """How a sync run splits its work (kept, passed on)."""

    sequential = "sequential"
    fan_out_entity = "fan_out_entity"
    fan_out_window = "fan_out_window"


class RunMode(StrEnum):
    """What a sync run reads."""

    incremental = "incremental"
    full_refresh = "full_refresh"


PROVIDERS = tuple(m.value for m in Provider)
STATUSES = tuple(m.value for m in SyncStatus)
TRIGGER_MODES = tuple(m.value for m in TriggerMode)
BACKENDS = tuple(m.value for m in ExecutionBackend)
EXECUTION_MODES = tuple(m.value for m in ExecutionMode)
RUN_MODES = tuple(m.value for m in RunMode)
PLACEHOLDER = ("interval", "1d")
PAUSED_FAILURES = "consecutive_failures"
SCHEDULE_TYPES = ("cron", "interval", "once")
MAX_RETRIES = (0, 10)
MAX_BACKOFF = 31_536_000
ARCHIVED = "the sync was archived"  # the cancelReason of the runs archiving ended


class SyncView(msgspec.Struct, kw_only=True):
    id: str
    connection_id: str
    created_ms: int
    created_by: str | None
    destination_config: dict[str, Any]
    entities: list[str]
    execution_backend: str
    execution_config: dict[str, Any]
    execution_mode: str
    freshness_sla_seconds: int | None
    last_error: str | None
    last_success_ms: int | None
    name: str
    provider_key: str
    schedule: dict[str, Any] | None
    slug: str | None
    source_config: dict[str, Any]
    status: str
    table_bindings: list[dict[str, Any]]
    task_slug: str | None
    trigger_mode: str
    updated_ms: int
    updated_by: str | None


class SyncRunView(msgspec.Struct, kw_only=True):
    id: str
    sync_id: str
    status: str
    attempt_number: int
    attempt_root_run_id: str
    previous_attempt_run_id: str | None
    next_attempt_run_id: str | None
    triggered_by: str
    trigger_ref: str | None
    run_mode: str
    execution_backend: str
    execution_mode: str | None
    executor_id: str | None
    last_heartbeat_ms: int | None
    backend_run_ref: str | None
    backend_run_url: str | None
    backend_status: dict[str, Any] | None
    backend_heartbeat_ms: int | None
    cancel_requested_ms: int | None
    cancel_requested_by: str | None
    cancel_reason: str | None
    result_class: str | None
    result_reason_code: str | None
    summary: dict[str, Any] | None
    error: str | None
    max_auto_resume_attempts: int | None
    created_ms: int
    started_ms: int | None
    completed_ms: int | None
    updated_ms: int


class CatalogResource(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    entity_key: str
    display_name: str
    description: str | None = None
    config_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    cursor_field: str | None = None
    default_selected: bool = True
    depends_on: list[str] = msgspec.field(default_factory=list)
    load_mode: str = "append_event"
    size_class: str = "s"
    slicing: dict[str, Any] = msgspec.field(default_factory=dict)
    storage_description: str | None = None
    storage_kind: str = "postgres"


class CatalogEntry(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    provider: str
    name: str
    display_name: str
    dynamic_resources: bool = False
    config_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    defaults: dict[str, Any] = msgspec.field(default_factory=dict)
    available_resources: list[str] = msgspec.field(default_factory=list)
    default_resources: list[str] = msgspec.field(default_factory=list)
    resources: list[CatalogResource] = msgspec.field(default_factory=list)


def write_only_keys(entry: CatalogEntry | None) -> frozenset[str]:
    """The sourceConfig keys the provider's catalog marks `writeOnly` (its secrets: an
    access token, a password)."""
    if entry is None:
        return frozenset()
    props = entry.config_schema.get("properties")
    if not isinstance(props, dict):
        return frozenset()
    return frozenset(k for k, v in props.items() if isinstance(v, dict) and v.get("writeOnly"))


def redact_source(config: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    """sourceConfig as a client may see it: a secret (writeOnly) value set is "********"."""
    return {k: (REDACTED if k in secret and v is not None else v) for k, v in config.items()}


def keep_secrets(new: Mapping[str, Any], old: Mapping[str, Any],
                 secret: frozenset[str]) -> dict[str, Any]:
    """A sourceConfig sent back with a secret still "********" (as GET showed it) keeps the
    stored value, so a read-modify-write never replaces a token with the mask."""
    return {k: (old[k] if k in secret and v == REDACTED and k in old else v)
            for k, v in new.items()}


def _body(*loc: str | int, msg: str, type_: str = "value_error") -> InvalidField:
    return InvalidField(("body", *loc), msg, type_)


def _resolved_status(row: ss.SyncRow, s: Schedule) -> str:
    if (row.status == "active" and s.status is ScheduleStatus.paused
            and s.paused_reason == PAUSED_FAILURES):
        return "error"
    if row.status == "active" and s.status is ScheduleStatus.paused and s.paused_reason == (
            "manual"):
        return "paused"  # paused through /v1
    return row.status


def _backend_of(action_type: ActionType) -> str:
    return {ActionType.worker: "external", ActionType.backend: "prefect"}.get(
        action_type, "native")


class SyncService:
    def __init__(self, services: Services, store: Store, clock: Clock, settings: Settings,
                 catalog: Mapping[str, CatalogEntry]) -> None:
        self.services = services
        self.store = store
        self.db = store.db
        self.clock = clock
        self.settings = settings
        self.catalog = dict(catalog)

    # ------------------------------------------------------------------ auth
    async def authenticate(self, token: str | None) -> tuple[str, str | None]:
        """(tenant id, key id) of a valid key; Unauthorized otherwise."""
        tenant = await self.services.authenticate(token)
        found = await self.db.read(self.store.active_key_by_hash, auth.hash_key(token or ""))
        return tenant, None if found is None else found[0]

    # ------------------------------------------------------------------ validation
    def _schedule_fields(self, raw: Any) -> tuple[str, str, str]:
        if not isinstance(raw, dict):
            raise _body("schedule", msg="must be an object {scheduleType, scheduleExpression, "
                        "timezone}", type_="type_error")
        unknown = sorted(set(raw) - {"scheduleType", "scheduleExpression", "timezone"})
        if unknown:
            raise _body("schedule", unknown[0], msg="unknown key", type_="extra_forbidden")
        stype = raw.get("scheduleType", "cron")
        if stype not in SCHEDULE_TYPES:
            raise _body("schedule", "scheduleType", msg=f"must be one of "
                        f"{', '.join(SCHEDULE_TYPES)}", type_="enum")
        expr = raw.get("scheduleExpression")
        if not isinstance(expr, str) or not expr or len(expr) > 200:
            raise _body("schedule", "scheduleExpression", msg="required: 1..200 characters",
                        type_="missing" if expr is None else "value_error")
        tz = raw.get("timezone", "UTC")
        if not isinstance(tz, str) or not tz or len(tz) > 50:
            raise _body("schedule", "timezone", msg="must be an IANA zone name")
        try:
            timing.load_zone(tz)
        except timing.TimingError as exc:
            raise _body("schedule", "timezone", msg=str(exc)) from None
        return stype, expr, tz

    def _plan(self, s: Schedule, now: int) -> int | None:
        try:
            first = self.services.plan_first_run(s, now)
        except InvalidField as exc:
            raise _body("schedule", "scheduleExpression", msg=exc.msg) from None
        if first is None:
            raise _body("schedule", "scheduleExpression",
                        msg="the schedule has no occurrence in the future")
        if s.schedule_type is ScheduleType.once and first < now - s.catchup_window_minutes * 60_000:
            raise _body("schedule", "scheduleExpression",
                        msg=f"the once-time {timing.format_ms(first)} is in the past")
        return first

    def _knobs(self, cfg: Mapping[str, Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, field, (low, high) in (("maxRetries", "max_retries", MAX_RETRIES),
                                        ("retryBackoffSeconds", "retry_backoff_seconds",
                                         (0, MAX_BACKOFF))):
            if key in cfg:
                v = cfg[key]
                if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                    raise _body("executionConfig", key, msg=f"must be an integer from {low} "
                                f"to {high}")
                out[field] = v
        return out

    def _action(self, row: ss.SyncRow, *, complete: bool) -> tuple[ActionType, dict[str, Any]]:
        """The action the sync's schedule carries, from its backend and executionConfig.
        `complete`: the sync may run on its own (active), so the config must be whole."""
        cfg = row.execution_config
        backend = row.execution_backend
        if backend == "temporal":
            raise b_temporal.refuse()
        if backend == "native":
            if not b_native.has_action(cfg):
                if complete:
                    raise _body("executionConfig", msg="an active native sync needs "
                                "{\"action_type\", \"action_config\"} (a webhook, command or "
                                "noop action)", type_="missing")
                extra = sorted(set(cfg) - set(b_native.KEYS))
                if extra:
                    raise _body("executionConfig", extra[0], msg="unknown key",
                                type_="extra_forbidden")
                return ActionType.noop, {}
            atype, acfg = b_native.validate(cfg, allow_commands=self.settings.allow_commands)
            return ActionType(atype), acfg
        if backend == "external":
            ext = b_external.validate(cfg)
            queue = ext.get("queue") or b_external.default_queue(row.provider_key)
            return ActionType.worker, b_external.action_config(queue, {
                "syncId": row.id, "providerKey": row.provider_key,
                "connectionId": row.connection_id, "entities": row.entities,
                "executionMode": row.execution_mode, "runMode": "incremental",
                "destinationConfig": row.destination_config, "payload": ext.get("payload"),
            })
        pcfg = b_prefect.validate(cfg, complete=complete)
        return ActionType.backend, b_prefect.action_config(row.id, row.entities, pcfg)

    def runnable_problem(self, row: ss.SyncRow) -> str | None:
        """Why this sync cannot run now (a trigger is then 409), or None."""
        if row.status == "archived":
            return "the sync is archived"
        try:
            self._action(row, complete=True)
        except InvalidField as exc:
            where = ".".join(str(p) for p in exc.loc[1:])
            return f"the sync cannot run: {where}: {exc.msg}"
        return None

    # ------------------------------------------------------------------ reads
    def _view(self, c: Tx, row: ss.SyncRow, s: Schedule, now: int) -> SyncView:
        status = _resolved_status(row, s)
        last_ok = ss.last_success_ms(c, row.id)
        last_error: str | None = None
        end = ss.last_chain_end(c, row.id)
        if end is not None and end[0] == "failed":
            last_error = end[1] or "the last run failed"
        breach = self.freshness_breach(row, last_ok, now)
        if breach is not None and last_error is None:
            last_error = breach
        if status == "error" and last_error is None:
            last_error = s.last_error or "paused after consecutive failed runs"
        cfg = row.execution_config
        shown = b_native.redact(cfg) if row.execution_backend == "native" else dict(cfg)
        return SyncView(
            id=row.id, connection_id=row.connection_id, created_ms=row.created_ms,
            created_by=row.created_by, destination_config=row.destination_config,
            entities=row.entities, execution_backend=row.execution_backend,
            execution_config=shown, execution_mode=row.execution_mode,
            freshness_sla_seconds=row.freshness_sla_seconds, last_error=last_error,
            last_success_ms=last_ok, name=s.name, provider_key=row.provider_key,
            schedule=None if not row.has_schedule else {
                "scheduleType": s.schedule_type.value,
                "scheduleExpression": s.schedule_expression, "timezone": s.timezone},
            slug=row.slug, status=status, source_config=redact_source(
                row.source_config, write_only_keys(self.catalog.get(row.provider_key))),
            table_bindings=row.table_bindings, task_slug=row.task_slug,
            trigger_mode=row.trigger_mode, updated_ms=max(row.updated_ms, s.updated_ms),
            updated_by=row.updated_by,
        )

    @staticmethod
    def freshness_breach(row: ss.SyncRow, last_ok: int | None, now: int) -> str | None:
        sla = row.freshness_sla_seconds
        if sla is None or row.status != "active":
            return None
        since = last_ok if last_ok is not None else row.created_ms
        if now - since <= sla * 1000:
            return None
        what = (f"no successful run since {timing.format_ms(last_ok)}" if last_ok is not None
                else "no successful run yet")
        return f"freshness SLA of {sla} s breached: {what}"

    async def get(self, tenant_id: str, sync_id: str) -> SyncView:
        now = self.clock.now_ms()

        def rd(c: Tx) -> SyncView:
            row = ss.get_sync(c, tenant_id, sync_id)
            s = None if row is None else self.store.get_schedule(c, tenant_id, sync_id)
            if row is None or s is None:
                raise NotFound("Sync")
            return self._view(c, row, s, now)

        return await self.db.read(rd)

    async def list_syncs(self, tenant_id: str, *, q: str | None, statuses: Sequence[str],
                   providers: Sequence[str], limit: int, offset: int
                   ) -> tuple[list[SyncView], int]:
        now = self.clock.now_ms()

        def rd(c: Tx) -> tuple[list[SyncView], int]:
            ids, total = ss.list_syncs(c, tenant_id, q=q, statuses=statuses,
                                       providers=providers, limit=limit, offset=offset)
            by_id = ss.syncs_by_ids(c, ids)
            schedules = self.store.schedules_by_ids(c, ids)
            views = [self._view(c, by_id[i], schedules[i], now) for i in ids
                     if i in by_id and i in schedules]
            return views, total

        return await self.db.read(rd)

    # ------------------------------------------------------------------ writes
    def _bindings(self, raw: Any, old: Sequence[dict[str, Any]], now: int) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise _body("tableBindings", msg="must be a list", type_="type_error")
        known = {"cursorField", "entityKey", "loadMode", "logicalTableName",
                 "physicalTableName", "primaryKeyColumns", "sourceInstanceKey", "tableName",
                 "tableNamingVersion", "id", "createdAt", "updatedAt"}
        before = {(b.get("entityKey"), b.get("tableName")): b for b in old}
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise _body("tableBindings", i, msg="must be an object", type_="type_error")
            extra = sorted(set(item) - known)
            if extra:
                raise _body("tableBindings", i, extra[0], msg="unknown key",
                            type_="extra_forbidden")
            for key in ("entityKey", "tableName"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise _body("tableBindings", i, key, msg="required: a non-empty string",
                                type_="missing" if key not in item else "value_error")
            pk = item.get("primaryKeyColumns", [])
            if not isinstance(pk, list) or not all(isinstance(x, str) for x in pk):
                raise _body("tableBindings", i, "primaryKeyColumns",
                            msg="must be a list of strings", type_="type_error")
            for key in ("cursorField", "loadMode", "logicalTableName", "physicalTableName",
                        "sourceInstanceKey", "tableNamingVersion"):
                if item.get(key) is not None and not isinstance(item[key], str):
                    raise _body("tableBindings", i, key, msg="must be a string",
                                type_="type_error")
            prev = before.get((item["entityKey"], item["tableName"]))
            out.append({
                "id": prev["id"] if prev else str(uuid.uuid4()),
                "entityKey": item["entityKey"], "tableName": item["tableName"],
                "cursorField": item.get("cursorField"),
                "loadMode": item.get("loadMode") or "append_event",
                "logicalTableName": item.get("logicalTableName") or item["tableName"],
                "physicalTableName": item.get("physicalTableName") or item["tableName"],
                "primaryKeyColumns": pk,
                "sourceInstanceKey": item.get("sourceInstanceKey"),
                "tableNamingVersion": item.get("tableNamingVersion") or "legacy",
                "createdAt": prev["createdAt"] if prev else timing.format_ms(now),
                "updatedAt": timing.format_ms(now),
            })
        return out

    def _apply_state(self, c: Tx, row: ss.SyncRow, s: Schedule, now: int, *,
                     reactivate: bool, retimed: bool) -> None:
        """Make the schedule's status follow the sync's status and trigger mode."""
        fires = (row.status == "active" and row.trigger_mode == "scheduled"
                 and row.has_schedule)
        if s.status is ScheduleStatus.completed:
            return
        if fires:
            keep_paused = s.status is ScheduleStatus.paused and not reactivate and (
                s.paused_reason in (PAUSED_FAILURES, "manual"))
            if keep_paused:
                if retimed:
                    s.next_run_ms = self._plan(s, now)
                return
            if s.status is ScheduleStatus.paused or retimed:
                s.status = ScheduleStatus.active
                s.paused_reason = None
                s.consecutive_failures = 0
                s.next_run_ms = self._plan(s, now)
                s.last_error = None
        else:
            s.status = ScheduleStatus.paused
            s.paused_reason = (f"sync_{row.status}" if row.status != "active"
                               else f"sync_{row.trigger_mode}")
            if retimed and row.has_schedule:
                s.next_run_ms = self._plan(s, now)

    async def create(self, tenant_id: str, key_id: str | None, f: Mapping[str, Any]) -> SyncView:
        now = self.clock.now_ms()
        sid = new_id(now)
        if f.get("execution_backend") == "temporal":
            raise b_temporal.refuse()
        cfg = f.get("execution_config") or {}
        row = ss.SyncRow(
            id=sid, tenant_id=tenant_id, connection_id=f["connection_id"],
            provider_key=f.get("provider_key") or "http_api", slug=f.get("slug"),
            task_slug=f.get("task_slug"), status=f.get("status") or "draft",
            trigger_mode=f.get("trigger_mode") or "manual",
            execution_backend=f.get("execution_backend") or "native",
            execution_mode=f.get("execution_mode") or "sequential",
            execution_config=cfg, source_config=f.get("source_config") or {},
            destination_config=f.get("destination_config") or {},
            entities=list(f.get("entities") or []), table_bindings=[],
            freshness_sla_seconds=f.get("freshness_sla_seconds"),
            has_schedule=f.get("schedule") is not None, created_by=key_id, updated_by=key_id,
            created_ms=now, updated_ms=now,
        )
        if row.status == "error":
            raise _body("status", msg="error is set by schedd (auto-pause); create a sync as "
                        "draft, active, paused or archived")
        if f.get("table_bindings") is not None:
            row.table_bindings = self._bindings(f["table_bindings"], [], now)
        if (row.trigger_mode == "scheduled" and row.status == "active"
                and not row.has_schedule):
            raise _body("schedule", msg="an active sync with triggerMode scheduled needs a "
                        "schedule", type_="missing")
        stype, expr, tz = (self._schedule_fields(f["schedule"]) if row.has_schedule
                           else (*PLACEHOLDER, "UTC"))
        atype, acfg = self._action(row, complete=row.status == "active")
        s = Schedule(id=sid, tenant_id=tenant_id, name=f["name"],
                     schedule_type=ScheduleType(stype), schedule_expression=expr, timezone=tz,
                     action_type=atype, action_config=acfg, created_ms=now, updated_ms=now)
        for k, v in self._knobs(cfg).items():
            setattr(s, k, v)
        s.next_run_ms = self._plan(s, now)
        self._apply_state_new(row, s)

        def tx(c: Tx) -> None:
            self.store.insert_schedule(c, s)
            ss.insert_sync(c, row)

        await self.db.write(tx)
        self.services._wake(s.next_run_ms if s.status is ScheduleStatus.active else None)
        if row.trigger_mode == "on_create" and row.status == "active":
            await self._fire_on_create(tenant_id, sid)
        return await self.get(tenant_id, sid)

    def _apply_state_new(self, row: ss.SyncRow, s: Schedule) -> None:
        fires = row.status == "active" and row.trigger_mode == "scheduled" and row.has_schedule
        if not fires:
            s.status = ScheduleStatus.paused
            s.paused_reason = (f"sync_{row.status}" if row.status != "active"
                               else f"sync_{row.trigger_mode}")

    async def update(self, tenant_id: str, key_id: str | None, sync_id: str,
                     patch: Mapping[str, Any]) -> SyncView:
        now = self.clock.now_ms()
        if patch.get("execution_backend") == "temporal":
            raise b_temporal.refuse()
        for key in ("name", "status", "trigger_mode", "execution_backend", "execution_mode",
                    "execution_config", "entities", "table_bindings", "source_config",
                    "destination_config"):
            if key in patch and patch[key] is None:
                camel = "".join(w.capitalize() if i else w for i, w in
                                enumerate(key.split("_")))
                raise _body(camel, msg="may not be null", type_="none_forbidden")
        if patch.get("status") == "error":
            raise _body("status", msg="error is set by schedd (auto-pause); set active to "
                        "resume the sync")

        engine = self.services._engine()
        stopped: list[Any] = []

        def tx(c: Tx) -> tuple[bool, int | None]:
            row = ss.get_sync(c, tenant_id, sync_id)
            s = None if row is None else self.store.get_schedule(c, tenant_id, sync_id)
            if row is None or s is None:
                raise NotFound("Sync")
            was_active = row.status == "active"
            was_archived = row.status == "archived"
            old_source = row.source_config
            for key in ("slug", "status", "trigger_mode", "execution_backend",
                        "execution_mode", "execution_config", "source_config",
                        "destination_config", "freshness_sla_seconds"):
                if key in patch:
                    setattr(row, key, patch[key])
            if "source_config" in patch:
                row.source_config = keep_secrets(
                    row.source_config, old_source,
                    write_only_keys(self.catalog.get(row.provider_key)))
            if "entities" in patch:
                row.entities = list(patch["entities"])
            if "table_bindings" in patch:
                row.table_bindings = self._bindings(patch["table_bindings"],
                                                    row.table_bindings, now)
            if "name" in patch:
                s.name = patch["name"]
            retimed = False
            if "schedule" in patch:
                if patch["schedule"] is None:
                    row.has_schedule = False
                    s.schedule_type, s.schedule_expression = (
                        ScheduleType(PLACEHOLDER[0]), PLACEHOLDER[1])
                else:
                    stype, expr, tz = self._schedule_fields(patch["schedule"])
                    s.schedule_type, s.schedule_expression, s.timezone = (
                        ScheduleType(stype), expr, tz)
                    row.has_schedule = True
                    if s.status is ScheduleStatus.completed:
                        s.status = ScheduleStatus.paused
                retimed = True
            if (row.trigger_mode == "scheduled" and row.status == "active"
                    and not row.has_schedule):
                raise _body("schedule", msg="an active sync with triggerMode scheduled needs "
                            "a schedule", type_="missing")
            s.action_type, s.action_config = self._action(row, complete=row.status == "active")
            for k, v in self._knobs(row.execution_config).items():
                setattr(s, k, v)
            self._apply_state(c, row, s, now, reactivate="status" in patch
                              and patch["status"] == "active", retimed=retimed)
            row.updated_ms = s.updated_ms = now
            row.updated_by = key_id
            self.store.update_schedule(c, s)
            ss.update_sync(c, row)
            if row.status == "archived" and not was_archived:
                # nothing of an archived sync runs any more: its runs not started yet
                # (retries, buffered) and its running one end as cancelled
                cancelled, fx = engine.cancel_schedule_runs_tx(c, sync_id, now, ARCHIVED)
                for r in cancelled:
                    ss.set_cancelled_by(c, r.id, key_id or "api")
                stopped.append(fx)
            fire = (not was_active and row.status == "active"
                    and row.trigger_mode == "on_create" and not row.on_create_fired)
            return fire, s.next_run_ms if s.status is ScheduleStatus.active else None

        fire, wake = await self.db.write(tx)
        for fx in stopped:
            engine.after_commit(fx)
        self.services._wake(wake)
        if fire:
            await self._fire_on_create(tenant_id, sync_id)
        return await self.get(tenant_id, sync_id)

    async def delete(self, tenant_id: str, sync_id: str) -> None:
        def rd(c: Tx) -> bool:
            return ss.get_sync(c, tenant_id, sync_id) is not None

        if not await self.db.read(rd):
            raise NotFound("Sync")
        try:
            await self.services.delete_schedule(tenant_id, sync_id)
        except NotFound:
            raise NotFound("Sync") from None

    # ------------------------------------------------------------------ runs
    def _sync_run_tx(self, run_mode: str, triggered_by: str) -> Any:
        def also(c: Tx, run: Run) -> None:
            ss.upsert_sync_run(c, run.id, run_mode=run_mode, triggered_by=triggered_by)
            if run.queue is not None and isinstance(run.resolved_payload, dict):
                run.resolved_payload = {**run.resolved_payload, "runMode": run_mode,
                                        "runId": run.id}
        return also

    async def _fire_on_create(self, tenant_id: str, sync_id: str) -> None:
        s = await self.services.get_schedule(tenant_id, sync_id)
        base = self._sync_run_tx("incremental", "on_create")

        def also(c: Tx, run: Run) -> None:
            row = ss.get_sync(c, tenant_id, sync_id)
            if row is None or row.on_create_fired:
                raise Conflict("on_create already fired")
            row.on_create_fired = True
            ss.update_sync(c, row)
            base(c, run)

        try:
            await self.services._engine().trigger(s, also=also)
        except Conflict:
            return

    async def repair_on_create(self) -> int:
        """At start: on_create syncs that became active but whose run was never made."""
        ids = await self.db.read(ss.unfired_on_create)
        for sid in ids:
            s = await self.db.read(self.store.get_schedule, None, sid)
            if s is not None:
                await self._fire_on_create(s.tenant_id, sid)
        return len(ids)

    async def trigger(self, tenant_id: str, sync_id: str, run_mode: str | None) -> SyncRunView:
        row = await self.db.read(ss.get_sync, tenant_id, sync_id)
        if row is None:
            raise NotFound("Sync")
        problem = self.runnable_problem(row)
        if problem:
            raise Conflict(problem)
        s = await self.services.get_schedule(tenant_id, sync_id)
        run = await self.services._engine().trigger(
            s, also=self._sync_run_tx(run_mode or "incremental", "manual"))
        return await self.get_run(tenant_id, run.id)

    async def list_runs(self, tenant_id: str, sync_id: str, *, limit: int, offset: int
                        ) -> tuple[list[SyncRunView], int]:
        def rd(c: Tx) -> tuple[list[SyncRunView], int]:
            row = ss.get_sync(c, tenant_id, sync_id)
            if row is None:
                raise NotFound("Sync")
            runs, total = self.store.list_runs(c, tenant_id, schedule_id=sync_id, status=None,
                                               limit=limit, offset=offset)
            return self._run_views(c, runs, {sync_id: row}), total

        return await self.db.read(rd)

    def _run_views(self, c: Tx, runs: Sequence[Run], syncs: Mapping[str, ss.SyncRow]
                   ) -> list[SyncRunView]:
        extra = ss.sync_runs_by_ids(c, [r.id for r in runs]
                                    + [r.attempt_root_run_id for r in runs])
        schedules = self.store.schedules_by_ids(c, list({r.schedule_id for r in runs}))
        return [self._run_view(r, extra.get(r.id), extra.get(r.attempt_root_run_id),
                               syncs.get(r.schedule_id), schedules.get(r.schedule_id))
                for r in runs]

    def _run_view(self, r: Run, x: ss.SyncRunRow | None, root: ss.SyncRunRow | None,
                  row: ss.SyncRow | None, s: Schedule | None) -> SyncRunView:
        if x is not None and x.triggered_by:
            by = x.triggered_by
        elif r.attempt > 1:
            by = "retry"
        elif r.trigger_type in (TriggerType.scheduled, TriggerType.catchup):
            by = "schedule"
        else:
            by = "manual"
        mode = (x.run_mode if x is not None and x.run_mode else
                root.run_mode if root is not None and root.run_mode else "incremental")
        result_class = {RunStatus.succeeded: "success", RunStatus.failed: "failure",
                        RunStatus.cancelled: "cancelled"}.get(r.status)
        executor = r.worker_id
        if executor is None and r.started_ms is not None and r.action_type is not (
                ActionType.worker):
            executor = "schedd"
        summary = r.result if isinstance(r.result, dict) else (
            None if r.result is None else {"value": r.result})
        stamps = [t for t in (r.triggered_ms, r.started_ms, r.completed_ms,
                              r.last_heartbeat_ms, r.cancel_requested_ms,
                              None if x is None else x.backend_heartbeat_ms) if t is not None]
        trigger_ref = (r.previous_attempt_run_id if r.previous_attempt_run_id else
                       timing.format_ms(r.scheduled_for_ms)
                       if r.trigger_type in (TriggerType.scheduled, TriggerType.catchup)
                       else None)
        return SyncRunView(
            id=r.id, sync_id=r.schedule_id, status=r.status.value,
            attempt_number=r.attempt, attempt_root_run_id=r.attempt_root_run_id,
            previous_attempt_run_id=r.previous_attempt_run_id,
            next_attempt_run_id=r.next_attempt_run_id, triggered_by=by,
            trigger_ref=trigger_ref, run_mode=mode,
            execution_backend=_backend_of(r.action_type),
            execution_mode=None if row is None else row.execution_mode,
            executor_id=executor, last_heartbeat_ms=r.last_heartbeat_ms,
            backend_run_ref=None if x is None else x.backend_run_ref,
            backend_run_url=None if x is None else x.backend_run_url,
            backend_status=None if x is None else x.backend_status,
            backend_heartbeat_ms=None if x is None else x.backend_heartbeat_ms,
            cancel_requested_ms=r.cancel_requested_ms,
            cancel_requested_by=None if x is None else x.cancel_requested_by,
            cancel_reason=r.cancel_reason, result_class=result_class,
            result_reason_code=r.error_code, summary=summary, error=r.error_message,
            max_auto_resume_attempts=None if s is None else s.max_retries,
            created_ms=r.triggered_ms, started_ms=r.started_ms, completed_ms=r.completed_ms,
            updated_ms=max(stamps),
        )

    async def get_run(self, tenant_id: str, run_id: str) -> SyncRunView:
        def rd(c: Tx) -> SyncRunView:
            run = self.store.get_run(c, tenant_id, run_id)
            if run is None:
                raise NotFound("Run")
            row = ss.get_sync(c, tenant_id, run.schedule_id)
            if row is None and not ss.sync_runs_by_ids(c, [run.id]):
                raise NotFound("Run")  # a run of a /v1 schedule, not of a sync
            return self._run_views(c, [run], {} if row is None else {row.id: row})[0]

        return await self.db.read(rd)

    async def cancel_run(self, tenant_id: str, key_id: str | None, run_id: str,
                         reason: str | None) -> SyncRunView:
        await self.get_run(tenant_id, run_id)  # 404 unless a sync run of this tenant
        who = key_id or "api"

        def by(c: Tx, run: Run) -> None:  # in the cancel's own transaction
            ss.set_cancelled_by(c, run.id, who)

        await self.services.cancel_run(tenant_id, run_id, reason, also=by)
        return await self.get_run(tenant_id, run_id)

    async def for_worker(self, run: Run) -> Run:
        """The run as handed to the worker that claimed it: a sync run's envelope gets the
        sync's sourceConfig (its secrets included), read now, so a rotated token is the one
        the worker gets. The sourceConfig is in no stored row of the run or its schedule
        (they are shown by /v1, the compat routers, the console and logs), only here."""
        payload = run.resolved_payload
        if run.action_type is not ActionType.worker or not isinstance(payload, dict) or (
                "syncId" not in payload):
            return run
        row = await self.db.read(ss.get_sync, run.tenant_id, run.schedule_id)
        if row is None:
            return run
        return msgspec.structs.replace(
            run, resolved_payload={**payload, "sourceConfig": row.source_config})

    async def retry_run(self, tenant_id: str, run_id: str, run_mode: str | None
                        ) -> SyncRunView:
        view = await self.get_run(tenant_id, run_id)
        mode = run_mode or view.run_mode
        record = self._sync_run_tx(mode, "retry")

        def also(c: Tx, run: Run) -> None:
            self.services.not_archived_tx(c, run)
            record(c, run)

        new = await self.services._engine().retry(tenant_id, run_id, also=also)
        return await self.get_run(tenant_id, new.id)

    # ------------------------------------------------------------------ catalog
    def provider_catalog(self, provider: str) -> CatalogEntry:
        entry = self.catalog.get(provider)
        if entry is None:
            raise InvalidField(("path", "provider"), "unknown provider; one of "
                               + ", ".join(sorted(self.catalog)), "enum")
        return entry

    # ------------------------------------------------------------------ backends' port
    async def run_mode(self, run_id: str) -> str:
        def rd(c: Tx) -> str:
            run = self.store.get_run(c, None, run_id)
            ids = [run_id] + ([] if run is None else [run.attempt_root_run_id])
            found = ss.sync_runs_by_ids(c, ids)
            for rid in ids:
                x = found.get(rid)
                if x is not None and x.run_mode:
                    return x.run_mode
            return "incremental"

        return await self.db.read(rd)

    async def saved_ref(self, run_id: str) -> str | None:
        found = await self.db.read(ss.sync_runs_by_ids, [run_id])
        x = found.get(run_id)
        return None if x is None else x.backend_run_ref

    async def save(self, run_id: str, state: RemoteState, seen_ms: int) -> None:
        await self.db.write(ss.save_backend_state, run_id, state.ref, state.url, state.status,
                            seen_ms)

    async def is_cancelled(self, run_id: str) -> bool:
        return await self.db.read(ss.run_status, run_id) == RunStatus.cancelled.value

    # ------------------------------------------------------------------ metrics
    async def freshness_breaches(self) -> int:
        now = self.clock.now_ms()
        rows = await self.db.read(ss.freshness_watch)
        return sum(1 for _, sla, created, last in rows
                   if now - (last if last is not None else created) > sla * 1000)



def load_catalog(extra_dir: str | None) -> dict[str, CatalogEntry]:
    """The provider catalog: the entries shipped in schedd/sync_catalog/, then every
    `*.json` of extra_dir (one entry per file), which adds providers or replaces shipped
    ones. A bad file is a ConfigError naming it."""
    out: dict[str, CatalogEntry] = {}
    shipped = resources.files("schedd") / "sync_catalog"
    for item in sorted(shipped.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            entry = msgspec.json.decode(item.read_bytes(), type=CatalogEntry)
            out[entry.provider] = entry
    if extra_dir:
        folder = Path(extra_dir)
        if not folder.is_dir():
            raise ConfigError(f"[compat.syncs] catalog_dir: {extra_dir} is not a directory")
        for path in sorted(folder.glob("*.json")):
            try:
                entry = msgspec.json.decode(path.read_bytes(), type=CatalogEntry)
            except (OSError, msgspec.DecodeError) as exc:
                raise ConfigError(f"[compat.syncs] catalog_dir: {path}: {exc}") from None
            out[entry.provider] = entry
    return out
