"""The Syncs API (seed 004, SPEC 7.3) under /api/v1/syncs: camelCase names and shapes over
schedd.syncs.SyncService. Keys by `Authorization: Bearer`, `X-API-Key` or the cookie
`vai_token`. This module only translates (docs/compat.md has the table)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, UnsetType

from schedd.api.common import ERRORS, path_uuid
from schedd.api.schemas import MAX_LIST_OFFSET, NO_NUL, CancelIn
from schedd.auth import token_from_headers
from schedd.syncs import (
    CatalogEntry,
    ExecutionBackend,
    ExecutionMode,
    Provider,
    RunMode,
    SyncRunView,
    SyncService,
    SyncStatus,
    SyncView,
    TriggerMode,
)
from schedd.timing import format_ms

R = Request[Any, Any, Any]
Name = Annotated[str, Meta(min_length=1, max_length=255, pattern=NO_NUL,
                            description="1..255 characters, no NUL.")]
Slug = Annotated[str, Meta(max_length=255, pattern=NO_NUL,
                            description="At most 255 characters, no NUL.")]
Entity = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Entities = Annotated[list[Entity], Meta(max_length=1000)]
Sla = Annotated[int, Meta(
    ge=1, le=31_536_000,
    description="Seconds an active sync may go without a successful run; past it, its "
    "lastError says so and the gauge schedd_sync_freshness_breached counts it.")]
Obj = Annotated[dict[str, Any], Meta(description="Any JSON object; kept as it is.")]
ExecutionConfig = Annotated[dict[str, Any], Meta(
    description="Depends on executionBackend (docs/compat.md#execution-backends): native "
    "{action_type, action_config} (a webhook, command or noop action; required once the "
    "sync is active), external {queue, payload}, prefect {apiUrl, deploymentId, uiUrl, "
    "pollIntervalSeconds, requestTimeoutSeconds, unavailableToleranceSeconds} (apiUrl and "
    "deploymentId required once active); every backend also takes maxRetries (0..10) and "
    "retryBackoffSeconds. Anything else is a 422 naming the key.")]
BackendField = Annotated[ExecutionBackend, Meta(
    description="Who does the work. `temporal` is refused (422): this build has no "
    "Temporal support.")]

StatusField = Annotated[Literal["draft", "active", "paused", "archived"], Meta(
    description="A sync's status as a client sets it (`error` is set by schedd when "
    "auto-pause stops a sync; send `active` to resume it). An active native sync needs an "
    "executionConfig action, an active prefect sync its apiUrl and deploymentId, and an "
    "active scheduled sync a schedule (else a 422 naming the field).")]


class SyncScheduleIn(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """When a sync fires (SPEC 3.3). The expression must be valid for scheduleType and have
    an occurrence from now on (else a 422 naming ["body", "schedule", "scheduleExpression"]);
    the timezone must exist (IANA)."""

    schedule_type: Literal["cron", "interval", "once"] = "cron"
    schedule_expression: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    timezone: Annotated[str, Meta(min_length=1, max_length=50, pattern=NO_NUL)] = "UTC"


ScheduleField = Annotated[SyncScheduleIn, Meta(
    description="The sync's timing; its expression and zone are checked by the server "
    "(a 422 naming the field).")]
Str = Annotated[str, Meta(max_length=500, pattern=NO_NUL)]


class TableBindingIn(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    entity_key: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    table_name: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    cursor_field: Str | None = None
    load_mode: Str | None = None
    logical_table_name: Str | None = None
    physical_table_name: Str | None = None
    primary_key_columns: Annotated[list[Str], Meta(max_length=100)] = msgspec.field(
        default_factory=list)
    source_instance_key: Str | None = None
    table_naming_version: Str | None = None


Bindings = Annotated[list[TableBindingIn], Meta(max_length=1000)]


class SyncCreate(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A new sync (seed 004). Rules the schema cannot state are 422s naming the field
    (see the fields' descriptions)."""

    connection_id: uuid.UUID
    name: Name
    destination_config: Obj | None = None
    entities: Entities | None = None
    execution_backend: BackendField = ExecutionBackend.native
    execution_config: ExecutionConfig | None = None
    execution_mode: ExecutionMode = ExecutionMode.sequential
    freshness_sla_seconds: Sla | None = None
    provider_key: Provider = Provider.http_api
    schedule: ScheduleField | None = None
    slug: Slug | None = None
    task_slug: Slug | None = None
    source_config: Obj | None = None
    status: StatusField = "draft"
    table_bindings: Bindings | None = None
    trigger_mode: TriggerMode = TriggerMode.manual


class SyncUpdate(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Partial update: only the fields sent change; null clears slug, schedule and
    freshnessSlaSeconds."""

    destination_config: Obj | UnsetType = UNSET
    entities: Entities | UnsetType = UNSET
    execution_backend: BackendField | UnsetType = UNSET
    execution_config: ExecutionConfig | UnsetType = UNSET
    execution_mode: ExecutionMode | UnsetType = UNSET
    freshness_sla_seconds: Sla | UnsetType | None = UNSET
    name: Name | UnsetType = UNSET
    schedule: ScheduleField | UnsetType | None = UNSET
    slug: Slug | UnsetType | None = UNSET
    source_config: Obj | UnsetType = UNSET
    status: StatusField | UnsetType = UNSET
    table_bindings: Bindings | UnsetType = UNSET
    trigger_mode: TriggerMode | UnsetType = UNSET


def _wire(fields: dict[str, Any]) -> dict[str, Any]:
    """Request values as the service takes them: plain strings, dicts, lists."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, SyncScheduleIn):
            value = {"scheduleType": value.schedule_type,
                     "scheduleExpression": value.schedule_expression,
                     "timezone": value.timezone}
        elif isinstance(value, list) and value and isinstance(value[0], TableBindingIn):
            value = [msgspec.to_builtins(b) for b in value]
        elif isinstance(value, uuid.UUID | StrEnum):
            value = str(value)
        out[key] = value
    return out


class RunModeIn(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    run_mode: RunMode | None = None


class SyncOut(msgspec.Struct, kw_only=True, rename="camel"):
    connection_id: str
    created_at: str
    created_by: str | None
    destination_config: dict[str, Any]
    entities: list[str]
    execution_backend: str
    execution_config: dict[str, Any]
    execution_mode: str
    freshness_sla_seconds: int | None
    id: str
    last_error: str | None
    last_success_at: str | None
    name: str
    provider_key: str
    schedule: dict[str, Any] | None
    slug: str | None
    source_config: dict[str, Any]
    status: str
    table_bindings: list[dict[str, Any]]
    task_slug: str | None
    trigger_mode: str
    updated_at: str
    updated_by: str | None


class SyncList(msgspec.Struct, kw_only=True, rename="camel"):
    has_next: bool
    limit: int
    offset: int
    syncs: list[SyncOut]
    total: int


class SyncRunOut(msgspec.Struct, kw_only=True, rename="camel"):
    attempt_number: int
    attempt_root_run_id: str
    backend_heartbeat_at: str | None
    backend_run_ref: str | None
    backend_run_url: str | None
    backend_status: dict[str, Any] | None
    cancel_reason: str | None
    cancel_requested_at: str | None
    cancel_requested_by: str | None
    completed_at: str | None
    created_at: str
    error: str | None
    execution_backend: str
    execution_mode: str | None
    executor_id: str | None
    id: str
    last_heartbeat_at: str | None
    max_auto_resume_attempts: int | None
    next_attempt_run_id: str | None
    previous_attempt_run_id: str | None
    result_class: str | None
    result_reason_code: str | None
    run_mode: str
    started_at: str | None
    status: str
    summary: dict[str, Any] | None
    sync_id: str
    trigger_ref: str | None
    triggered_by: str
    updated_at: str


class SyncRunList(msgspec.Struct, kw_only=True, rename="camel"):
    has_next: bool
    limit: int
    offset: int
    runs: list[SyncRunOut]
    total: int


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def sync_out(v: SyncView) -> SyncOut:
    return SyncOut(
        connection_id=v.connection_id, created_at=format_ms(v.created_ms),
        created_by=v.created_by, destination_config=v.destination_config,
        entities=v.entities, execution_backend=v.execution_backend,
        execution_config=v.execution_config, execution_mode=v.execution_mode,
        freshness_sla_seconds=v.freshness_sla_seconds, id=v.id, last_error=v.last_error,
        last_success_at=_ts(v.last_success_ms), name=v.name, provider_key=v.provider_key,
        schedule=v.schedule, slug=v.slug, source_config=v.source_config, status=v.status,
        table_bindings=v.table_bindings, task_slug=v.task_slug, trigger_mode=v.trigger_mode,
        updated_at=format_ms(v.updated_ms), updated_by=v.updated_by,
    )


def run_out(v: SyncRunView) -> SyncRunOut:
    return SyncRunOut(
        attempt_number=v.attempt_number, attempt_root_run_id=v.attempt_root_run_id,
        backend_heartbeat_at=_ts(v.backend_heartbeat_ms), backend_run_ref=v.backend_run_ref,
        backend_run_url=v.backend_run_url, backend_status=v.backend_status,
        cancel_reason=v.cancel_reason, cancel_requested_at=_ts(v.cancel_requested_ms),
        cancel_requested_by=v.cancel_requested_by, completed_at=_ts(v.completed_ms),
        created_at=format_ms(v.created_ms), error=v.error,
        execution_backend=v.execution_backend, execution_mode=v.execution_mode,
        executor_id=v.executor_id, id=v.id, last_heartbeat_at=_ts(v.last_heartbeat_ms),
        max_auto_resume_attempts=v.max_auto_resume_attempts,
        next_attempt_run_id=v.next_attempt_run_id,
        previous_attempt_run_id=v.previous_attempt_run_id, result_class=v.result_class,
        result_reason_code=v.result_reason_code, run_mode=v.run_mode,
        started_at=_ts(v.started_ms), status=v.status, summary=v.summary, sync_id=v.sync_id,
        trigger_ref=v.trigger_ref, triggered_by=v.triggered_by,
        updated_at=format_ms(v.updated_ms),
    )


def _svc(request: R) -> SyncService:
    svc: SyncService = request.app.state.syncs
    return svc


def _tenant(request: R) -> str:
    tenant: str = request.state.tenant_id
    return tenant


def _key(request: R) -> str | None:
    key: str | None = request.state.key_id
    return key


async def syncs_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                      ) -> None:
    """A key by Bearer, X-API-Key or the `vai_token` cookie (seed 004)."""
    svc: SyncService = connection.app.state.syncs
    token = token_from_headers(connection.headers.get("authorization"),
                               connection.headers.get("x-api-key"))
    if token is None:
        token = connection.cookies.get("vai_token") or None
    tenant, key_id = await svc.authenticate(token)
    connection.state.tenant_id = tenant
    connection.state.key_id = key_id


SyncIdPath = Annotated[str, PathParameter(format="uuid", title="Sync Id")]
RunIdPath = Annotated[str, PathParameter(format="uuid", title="Run Id")]
Limit50 = Annotated[int, QueryParameter(ge=1, le=100)]
Offset = Annotated[int, QueryParameter(ge=0, le=MAX_LIST_OFFSET)]


@get("/", responses=ERRORS, summary="List Syncs")
async def list_syncs(
    request: R,
    q: Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL)] = None,
    status: Annotated[list[SyncStatus] | None, QueryParameter()] = None,
    provider: Annotated[list[Provider] | None, QueryParameter()] = None,
    limit: Limit50 = 50,
    offset: Offset = 0,
) -> SyncList:
    views, total = await _svc(request).list_syncs(
        _tenant(request), q=q, statuses=[str(s) for s in status or []],
        providers=[str(p) for p in provider or []], limit=limit, offset=offset)
    return SyncList(has_next=offset + len(views) < total, limit=limit, offset=offset,
                    syncs=[sync_out(v) for v in views], total=total)


@post("/", responses=ERRORS, summary="Create Sync", status_code=201)
async def create_sync(request: R, data: JSONBody[SyncCreate]) -> SyncOut:
    fields = _wire({f: getattr(data, f) for f in data.__struct_fields__})
    view = await _svc(request).create(_tenant(request), _key(request), fields)
    return sync_out(view)


@get("/{sync_id:str}", responses=ERRORS, summary="Get Sync")
async def get_sync(request: R, sync_id: SyncIdPath) -> SyncOut:
    return sync_out(await _svc(request).get(_tenant(request), path_uuid(sync_id, "sync_id")))


@patch("/{sync_id:str}", responses=ERRORS, summary="Update Sync")
async def update_sync(request: R, sync_id: SyncIdPath, data: JSONBody[SyncUpdate]) -> SyncOut:
    sid = path_uuid(sync_id, "sync_id")
    fields = _wire({f: getattr(data, f) for f in data.__struct_fields__
                    if getattr(data, f) is not UNSET})
    view = await _svc(request).update(_tenant(request), _key(request), sid, fields)
    return sync_out(view)


@delete("/{sync_id:str}", responses=ERRORS, summary="Delete Sync", status_code=204)
async def delete_sync(request: R, sync_id: SyncIdPath) -> None:
    await _svc(request).delete(_tenant(request), path_uuid(sync_id, "sync_id"))


@get("/{sync_id:str}/runs", responses=ERRORS, summary="List Sync Runs")
async def list_sync_runs(request: R, sync_id: SyncIdPath,
                         limit: Annotated[int, QueryParameter(ge=1, le=100)] = 25,
                         offset: Offset = 0) -> SyncRunList:
    views, total = await _svc(request).list_runs(
        _tenant(request), path_uuid(sync_id, "sync_id"), limit=limit, offset=offset)
    return SyncRunList(has_next=offset + len(views) < total, limit=limit, offset=offset,
                       runs=[run_out(v) for v in views], total=total)


@post("/{sync_id:str}/trigger", responses=ERRORS, summary="Trigger Sync", status_code=202)
async def trigger_sync(request: R, sync_id: SyncIdPath,
                       data: JSONBody[RunModeIn | None] = None) -> SyncRunOut:
    mode = None if data is None or data.run_mode is None else str(data.run_mode)
    view = await _svc(request).trigger(_tenant(request), path_uuid(sync_id, "sync_id"), mode)
    return run_out(view)


@get("/runs/{run_id:str}", responses=ERRORS, summary="Get Sync Run")
async def get_sync_run(request: R, run_id: RunIdPath) -> SyncRunOut:
    return run_out(await _svc(request).get_run(_tenant(request), path_uuid(run_id, "run_id")))


@post("/runs/{run_id:str}/cancel", responses=ERRORS, summary="Cancel Sync Run",
      status_code=200)
async def cancel_sync_run(request: R, run_id: RunIdPath,
                          data: JSONBody[CancelIn | None] = None) -> SyncRunOut:
    view = await _svc(request).cancel_run(_tenant(request), _key(request),
                                          path_uuid(run_id, "run_id"),
                                          None if data is None else data.reason)
    return run_out(view)


@post("/runs/{run_id:str}/retry", responses=ERRORS, summary="Retry Sync Run",
      status_code=202)
async def retry_sync_run(request: R, run_id: RunIdPath,
                         data: JSONBody[RunModeIn | None] = None) -> SyncRunOut:
    mode = None if data is None or data.run_mode is None else str(data.run_mode)
    view = await _svc(request).retry_run(_tenant(request), path_uuid(run_id, "run_id"), mode)
    return run_out(view)


@get("/providers/{provider:str}/catalog", responses=ERRORS,
     summary="Get Sync Provider Catalog")
async def provider_catalog(
    request: R,
    provider: Annotated[str, PathParameter(
        description="Supported external system providers (the seed's list; a catalog_dir "
        "may add others).", enum=sorted(p.value for p in Provider))],
) -> Response[CatalogEntry]:
    return Response(_svc(request).provider_catalog(provider))


HANDLERS = [list_syncs, create_sync, get_sync, update_sync, delete_sync, list_sync_runs,
            trigger_sync, get_sync_run, cancel_sync_run, retry_sync_run, provider_catalog]


def router() -> Router:
    return Router("/api/v1/syncs", route_handlers=HANDLERS, guards=[syncs_guard],
                  security=[{"bearer": []}, {"apiKey": []}, {"vaiToken": []}],
                  tags=["Syncs"])
