"""The Actions API (seed 002, SPEC §7.1) under
/v1/orgs/{org_id}/workspaces/{workspace_id}/apps/{app_id}/actions.

An action is an ordinary schedule of the key's tenant. What a schedule has no column for
(the org/workspace/app it lives under, endpoint_id, namespace_id, the thread fields, the
payload, created_by) is kept beside it as a ScheduleExt of kind "actions". Its runs deliver
`{"payload", "thread_id", "namespace_id", "action_id"}` to the worker queue named by
endpoint_id, or as a webhook body when [compat] endpoints maps it to a URL; the thread id
and the action id are §3.4 placeholders, filled in per run by the action code.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, UnsetType

from schedd import timing
from schedd.api.common import ERRORS, path_uuid, services_of
from schedd.api.compat import relabel
from schedd.api.schemas import NO_NUL, Backoff, MaxRetries, Name
from schedd.errors import InvalidField, NotFound
from schedd.models import Run, RunStatus, RunTally, Schedule, ScheduleExt, ScheduleStatus
from schedd.services import Services

R = Request[Any, Any, Any]
KIND = "actions"
WHAT = "Action"

Label = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
# endpoint_id names a worker queue: the native queue-name rule (schedd/action_config.py)
EndpointId = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$",
                                 description=(
    "The worker queue the runs go to, or a key of [compat] endpoints (a webhook URL)."))]
ThreadText = Annotated[str, Meta(min_length=1, max_length=500, pattern=NO_NUL)]
Description = Annotated[str, Meta(max_length=2000, pattern=NO_NUL)]
CronText = Annotated[str, Meta(pattern=NO_NUL, description=(
    "A 5-field cron expression or @hourly/@daily/@weekly/@monthly/@yearly (docs/scheduling.md)"
    "; required when schedule_type is cron, which is the default unless only scheduled_at is "
    "given. Not allowed with schedule_type once."))]
WhenText = Annotated[str, Meta(pattern=NO_NUL, description=(
    "ISO 8601 date-time of a one-time action (without an offset: wall time in timezone); "
    "required when schedule_type is once, not older than the 10-minute catch-up window. Not "
    "allowed with schedule_type cron."))]
ZoneText = Annotated[str, Meta(max_length=50, pattern=NO_NUL,
                                description="An IANA time zone name.")]
ThreadIdText = Annotated[str, Meta(min_length=1, max_length=500, pattern=NO_NUL, description=(
    "The thread of every run; required when thread_mode is fixed."))]
TemplateText = Annotated[str, Meta(min_length=1, max_length=500, pattern=NO_NUL, description=(
    "Each run's thread id, with placeholders such as {{run.id}} filled per run; required "
    "when thread_mode is template."))]
PayloadObject = Annotated[dict[str, Any], Meta(description=(
    "Delivered in every run's body; strings may hold {{run.id}}-style placeholders; nested "
    "at most 64 levels."))]
PathLabel = Annotated[str, PathParameter(min_length=1, max_length=200, pattern=NO_NUL)]
ActionIdPath = Annotated[str, PathParameter(format="uuid", title="Action Id")]
RunIdPath = Annotated[str, PathParameter(format="uuid", title="Run Id")]


class ThreadMode(StrEnum):
    new_each_run = "new_each_run"
    fixed = "fixed"
    template = "template"


class ActionKind(StrEnum):
    trigger = "trigger"


class ActionScheduleType(StrEnum):
    cron = "cron"
    once = "once"


class ActionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    endpoint_id: EndpointId
    namespace_id: Label
    description: Description | None = None
    thread_mode: ThreadMode = ThreadMode.new_each_run
    thread_id: ThreadIdText | None = None
    thread_id_template: TemplateText | None = None
    payload: PayloadObject | None = None
    action_type: ActionKind = ActionKind.trigger
    schedule_type: ActionScheduleType | None = None
    cron_expression: CronText | None = None
    scheduled_at: WhenText | None = None
    timezone: ZoneText = "UTC"
    max_retries: MaxRetries = 3
    retry_delay_seconds: Backoff = 60
    is_enabled: bool = True


class ActionUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Partial update: absent fields keep their value."""

    name: Name | UnsetType = UNSET
    endpoint_id: EndpointId | UnsetType = UNSET
    namespace_id: Label | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    thread_mode: ThreadMode | UnsetType = UNSET
    thread_id: ThreadIdText | UnsetType | None = UNSET
    thread_id_template: TemplateText | UnsetType | None = UNSET
    payload: PayloadObject | UnsetType | None = UNSET
    action_type: ActionKind | UnsetType = UNSET
    schedule_type: ActionScheduleType | UnsetType = UNSET
    cron_expression: CronText | UnsetType | None = UNSET
    scheduled_at: WhenText | UnsetType | None = UNSET
    timezone: ZoneText | UnsetType = UNSET
    max_retries: MaxRetries | UnsetType = UNSET
    retry_delay_seconds: Backoff | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET


class ActionOut(msgspec.Struct, kw_only=True):
    action_id: str
    workspace_id: str
    app_id: str
    endpoint_id: str
    name: str
    description: str | None
    namespace_id: str
    thread_mode: ThreadMode
    thread_id: str | None
    thread_id_template: str | None
    payload: dict[str, Any]
    action_type: ActionKind
    schedule_type: str
    cron_expression: str | None
    scheduled_at: str | None
    timezone: str
    max_retries: int
    retry_delay_seconds: int
    is_enabled: bool
    is_running: bool
    next_run_at: str | None
    last_run_at: str | None
    last_run_status: RunStatus | None
    last_execution_id: str | None
    total_runs: int
    successful_runs: int
    failed_runs: int
    created_by: str | None
    created_at: str
    updated_at: str


class ActionList(msgspec.Struct, kw_only=True):
    total: int
    has_more: bool
    next_cursor: str | None
    actions: list[ActionOut]


class TriggerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Optional: a payload merged over the action's payload for this run (objects key by
    key, recursively; other values replace)."""

    payload: PayloadObject | None = None


class TriggerOut(msgspec.Struct, kw_only=True):
    action_id: str
    run_id: str
    execution_id: str
    status: RunStatus
    message: str


class ActionRunOut(msgspec.Struct, kw_only=True):
    run_id: str
    action_id: str
    workspace_id: str
    execution_id: str
    status: RunStatus
    attempt: int
    trigger_type: str
    triggered_at: str
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    resolved_payload: dict[str, Any] | None
    resolved_thread_id: str | None
    error_message: str | None
    error_code: str | None


class ActionRunList(msgspec.Struct, kw_only=True):
    total: int
    has_more: bool
    next_cursor: str | None
    runs: list[ActionRunOut]


# ---------------------------------------------------------------------------- translation

# The thread each run gets, as the §3.4 placeholder text the action code fills in per run.
_THREAD_OF_RUN = "{{run.id}}"
_ACTION_ID = "{{schedule.id}}"
# Compat fields kept in ScheduleExt.data
_EXT_FIELDS = ("endpoint_id", "namespace_id", "thread_mode", "thread_id", "thread_id_template",
               "payload")


def _scope(org_id: str, workspace_id: str, app_id: str) -> str:
    return json.dumps([org_id, workspace_id, app_id], separators=(",", ":"))


def _thread_text(d: dict[str, Any]) -> str:
    mode = ThreadMode(d["thread_mode"])
    if mode is ThreadMode.fixed:
        return str(d["thread_id"])
    if mode is ThreadMode.template:
        return str(d["thread_id_template"])
    return _THREAD_OF_RUN


def _delivery(svc: Services, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(action_type, action_config) of an action's fields: a worker run on queue
    endpoint_id, or a webhook to the URL [compat] endpoints maps it to, with one body."""
    body = {"payload": d["payload"], "thread_id": _thread_text(d),
            "namespace_id": d["namespace_id"], "action_id": _ACTION_ID}
    url = svc.settings.compat_endpoints.get(d["endpoint_id"])
    if url is not None:
        return "webhook", {"url": url, "body": body}
    return "worker", {"queue": d["endpoint_id"], "payload": body}


def _check_thread(d: dict[str, Any]) -> None:
    mode = ThreadMode(d["thread_mode"])
    if mode is ThreadMode.fixed and not d.get("thread_id"):
        raise InvalidField(("body", "thread_id"), "required when thread_mode is 'fixed'",
                           "missing")
    if mode is ThreadMode.template and not d.get("thread_id_template"):
        raise InvalidField(("body", "thread_id_template"),
                           "required when thread_mode is 'template'", "missing")


def _expression(stype: str, cron_expression: str | None, scheduled_at: str | None) -> str | None:
    if stype == ActionScheduleType.cron:
        if scheduled_at is not None:
            raise InvalidField(("body", "scheduled_at"), "not for schedule_type 'cron'")
        return cron_expression
    if cron_expression is not None:
        raise InvalidField(("body", "cron_expression"), "not for schedule_type 'once'")
    return scheduled_at


def _renamer(stype: str, d: dict[str, Any]) -> Any:
    """Native body field names -> this API's, for errors."""
    def rename(loc: list[str | int]) -> list[str | int]:
        if not loc:
            return loc
        head, rest = loc[0], loc[1:]
        if head == "schedule_expression":
            return ["cron_expression" if stype == ActionScheduleType.cron else "scheduled_at"]
        if head == "retry_backoff_seconds":
            return ["retry_delay_seconds", *rest]
        if head == "status":
            return ["is_enabled"]
        if head == "action_config":
            if not rest:
                return ["payload"]
            if rest[0] in ("queue", "url"):
                return ["endpoint_id"]
            if rest[0] in ("payload", "body") and len(rest) > 1:
                inner = rest[1]
                if inner == "thread_id":
                    return ["thread_id_template" if d.get("thread_mode") == "template"
                            else "thread_id"]
                if inner == "namespace_id":
                    return ["namespace_id"]
                return ["payload", *rest[2:]]
            return ["payload"]
        return loc
    return rename


def _scheduled_at(s: Schedule) -> str | None:
    if s.schedule_type.value != "once" or s.schedule_expression is None:
        return None
    try:
        return timing.format_ms(timing.parse_instant_ms(s.schedule_expression,
                                                        timing.load_zone(s.timezone)))
    except (timing.TimingError, OverflowError, ValueError):
        return s.schedule_expression


def _ts(ms: int | None) -> str | None:
    return None if ms is None else timing.format_ms(ms)


def action_out(s: Schedule, ext: ScheduleExt, tally: RunTally | None) -> ActionOut:
    d = ext.data
    _, workspace_id, app_id = json.loads(ext.scope)
    t = tally or RunTally()
    active = s.status is ScheduleStatus.active
    last = s.last_run_status
    last_status = RunStatus(last) if last is not None and last in RunStatus.__members__ else None
    return ActionOut(
        action_id=s.id,
        workspace_id=workspace_id,
        app_id=app_id,
        endpoint_id=d["endpoint_id"],
        name=s.name,
        description=s.description,
        namespace_id=d["namespace_id"],
        thread_mode=ThreadMode(d["thread_mode"]),
        thread_id=d.get("thread_id"),
        thread_id_template=d.get("thread_id_template"),
        payload=d.get("payload") or {},
        action_type=ActionKind.trigger,
        schedule_type=s.schedule_type.value,
        cron_expression=s.schedule_expression if s.schedule_type.value == "cron" else None,
        scheduled_at=_scheduled_at(s),
        timezone=s.timezone,
        max_retries=s.max_retries,
        retry_delay_seconds=s.retry_backoff_seconds,
        is_enabled=active,
        is_running=t.running > 0,
        next_run_at=_ts(s.next_run_ms) if active else None,
        last_run_at=_ts(s.last_run_ms),
        last_run_status=last_status,
        last_execution_id=t.last_root_run_id,
        total_runs=t.total,
        successful_runs=t.succeeded,
        failed_runs=t.failed,
        created_by=d.get("created_by"),
        created_at=timing.format_ms(s.created_ms),
        updated_at=timing.format_ms(s.updated_ms),
    )


def _delivered(run: Run) -> dict[str, Any] | None:
    """What was delivered: the worker payload, or the webhook's body."""
    p = run.resolved_payload
    if isinstance(p, dict) and run.action_type.value == "webhook":
        p = p.get("body")
    return p if isinstance(p, dict) else None


def run_out(run: Run, workspace_id: str) -> ActionRunOut:
    body = _delivered(run)
    thread = body.get("thread_id") if body is not None else None
    duration = None
    if run.started_ms is not None and run.completed_ms is not None:
        duration = round((run.completed_ms - run.started_ms) / 1000.0, 3)
    return ActionRunOut(
        run_id=run.id,
        action_id=run.schedule_id,
        workspace_id=workspace_id,
        execution_id=run.attempt_root_run_id,
        status=run.status,
        attempt=run.attempt,
        trigger_type=run.trigger_type.value,
        triggered_at=timing.format_ms(run.triggered_ms),
        started_at=_ts(run.started_ms),
        completed_at=_ts(run.completed_ms),
        duration_seconds=duration,
        resolved_payload=body,
        resolved_thread_id=thread if isinstance(thread, str) else None,
        error_message=run.error_message,
        error_code=run.error_code,
    )


def _tenant(request: R) -> str:
    tenant: str = request.state.tenant_id
    return tenant


async def _one(request: R, org_id: str, workspace_id: str, app_id: str, action_id: str
               ) -> tuple[Schedule, ScheduleExt]:
    return await services_of(request).get_extended(
        _tenant(request), path_uuid(action_id, "action_id"), KIND,
        _scope(org_id, workspace_id, app_id), WHAT)


async def _out(svc: Services, s: Schedule, ext: ScheduleExt) -> ActionOut:
    tallies = await svc.run_tallies([s.id])
    return action_out(s, ext, tallies.get(s.id))


# ---------------------------------------------------------------------------- handlers

AID = "/{action_id:str}"
CURSOR_DOC = ("Cursor for pagination (from previous response's next_cursor). Opaque: a "
              "value schedd did not hand out is a 422; empty means the first page.")


@get("/", responses=ERRORS, summary="List Actions")
async def list_actions(
    request: R,
    org_id: PathLabel,
    workspace_id: PathLabel,
    app_id: PathLabel,
    search: Annotated[str | None, QueryParameter(
        description="Search by name or description", max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, QueryParameter(
        ge=1, le=200, description="Maximum number of items to return (1-200)")] = 50,
    cursor: Annotated[str | None, QueryParameter(
        description=CURSOR_DOC, max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] = None,
) -> ActionList:
    svc = services_of(request)
    items, total, nxt = await svc.page_extended(
        _tenant(request), KIND, _scope(org_id, workspace_id, app_id), search=search,
        cursor=cursor, limit=limit)
    tallies = await svc.run_tallies([s.id for s, _ in items])
    return ActionList(total=total, has_more=nxt is not None, next_cursor=nxt,
                      actions=[action_out(s, e, tallies.get(s.id)) for s, e in items])


@post("/", responses=ERRORS, summary="Create Action", status_code=201)
async def create_action(
    request: R, org_id: PathLabel, workspace_id: PathLabel, app_id: PathLabel,
    data: JSONBody[ActionCreate],
) -> ActionOut:
    svc = services_of(request)
    d: dict[str, Any] = {f: getattr(data, f) for f in _EXT_FIELDS}
    d["thread_mode"] = data.thread_mode.value
    d["payload"] = d["payload"] or {}
    d["created_by"] = request.state.key_id
    _check_thread(d)
    stype = data.schedule_type or (
        ActionScheduleType.once if data.scheduled_at is not None and data.cron_expression is None
        else ActionScheduleType.cron)
    expression = _expression(stype, data.cron_expression, data.scheduled_at)
    action_type, action_config = _delivery(svc, d)
    fields = {
        "name": data.name, "description": data.description, "schedule_type": stype.value,
        "schedule_expression": expression, "timezone": data.timezone,
        "action_type": action_type, "action_config": action_config,
        "max_retries": data.max_retries, "retry_backoff_seconds": data.retry_delay_seconds,
        "status": ScheduleStatus.active if data.is_enabled else ScheduleStatus.paused,
    }
    ext = ScheduleExt(kind=KIND, scope=_scope(org_id, workspace_id, app_id), data=d)
    try:
        s, _ = await svc.create_schedule(_tenant(request), fields, ext)
    except InvalidField as exc:
        raise relabel(exc, _renamer(stype, d)) from None
    return action_out(s, ext, None)


@get(AID, responses=ERRORS, summary="Get Action")
async def get_action(request: R, org_id: PathLabel, workspace_id: PathLabel, app_id: PathLabel,
                     action_id: ActionIdPath) -> ActionOut:
    s, ext = await _one(request, org_id, workspace_id, app_id, action_id)
    return await _out(services_of(request), s, ext)


@put(AID, responses=ERRORS, summary="Update Action")
async def update_action(
    request: R, org_id: PathLabel, workspace_id: PathLabel, app_id: PathLabel,
    action_id: ActionIdPath, data: JSONBody[ActionUpdate],
) -> ActionOut:
    svc = services_of(request)
    s, ext = await _one(request, org_id, workspace_id, app_id, action_id)
    given = {f: getattr(data, f) for f in data.__struct_fields__
             if getattr(data, f) is not UNSET}
    for key in ("name", "endpoint_id", "namespace_id", "thread_mode", "action_type",
                "schedule_type", "timezone", "max_retries", "retry_delay_seconds",
                "is_enabled"):
        if key in given and given[key] is None:
            raise InvalidField(("body", key), "may not be null", "none_forbidden")
    d = dict(ext.data)
    for f in _EXT_FIELDS:
        if f in given:
            d[f] = given[f].value if isinstance(given[f], StrEnum) else given[f]
    d["payload"] = d.get("payload") or {}
    _check_thread(d)
    patch: dict[str, Any] = {}
    for ours, native in (("name", "name"), ("description", "description"),
                         ("timezone", "timezone"), ("max_retries", "max_retries"),
                         ("retry_delay_seconds", "retry_backoff_seconds")):
        if ours in given:
            patch[native] = given[ours]
    if "is_enabled" in given:
        patch["status"] = (ScheduleStatus.active if given["is_enabled"]
                           else ScheduleStatus.paused).value
    stype = str(given.get("schedule_type") or s.schedule_type.value)
    if {"schedule_type", "cron_expression", "scheduled_at"} & set(given):
        if stype not in ActionScheduleType.__members__:  # made an interval through /v1
            stype = "cron" if "cron_expression" in given else "once"
        own, other = (("cron_expression", "scheduled_at") if stype == ActionScheduleType.cron
                      else ("scheduled_at", "cron_expression"))
        if given.get(other) is not None:
            raise InvalidField(("body", other), f"not for schedule_type {stype!r}")
        current = s.schedule_expression if stype == s.schedule_type.value else None
        expression = given.get(own, current)
        if expression is None:
            raise InvalidField(("body", own), f"required for schedule_type {stype!r}",
                               "missing")
        patch["schedule_type"] = stype
        patch["schedule_expression"] = expression
    if any(f in given for f in _EXT_FIELDS):
        action_type, action_config = _delivery(svc, d)
        if action_type != s.action_type.value:
            patch["action_type"] = action_type
        patch["action_config"] = action_config
    try:
        s = await svc.update_schedule(_tenant(request), s.id, patch, ext_data=d)
    except InvalidField as exc:
        raise relabel(exc, _renamer(stype, d)) from None
    return await _out(svc, s, ScheduleExt(kind=KIND, scope=ext.scope, data=d))


@delete(AID, responses=ERRORS, summary="Delete Action", status_code=204)
async def delete_action(request: R, org_id: PathLabel, workspace_id: PathLabel,
                        app_id: PathLabel, action_id: ActionIdPath) -> None:
    s, _ = await _one(request, org_id, workspace_id, app_id, action_id)
    await services_of(request).delete_schedule(_tenant(request), s.id)


@post(AID + "/trigger", responses=ERRORS, summary="Trigger Action", status_code=202)
async def trigger_action(
    request: R, org_id: PathLabel, workspace_id: PathLabel, app_id: PathLabel,
    action_id: ActionIdPath, data: JSONBody[TriggerIn | None] = None,
) -> TriggerOut:
    """Run the action now; a `payload` is merged over the action's payload for this run
    (and its retries) only."""
    svc = services_of(request)
    s, _ = await _one(request, org_id, workspace_id, app_id, action_id)
    patch = None
    if data is not None and data.payload is not None:
        where = "body" if s.action_type.value == "webhook" else "payload"
        patch = {where: {"payload": data.payload}}
    try:
        run = await svc.trigger_schedule(_tenant(request), s.id, patch)
    except InvalidField as exc:
        raise relabel(exc, lambda loc: ["payload"]) from None
    return TriggerOut(action_id=s.id, run_id=run.id, execution_id=run.attempt_root_run_id,
                      status=run.status, message="Action triggered")


@get(AID + "/runs", responses=ERRORS, summary="List Action Runs")
async def list_action_runs(
    request: R, org_id: PathLabel, workspace_id: PathLabel, app_id: PathLabel,
    action_id: ActionIdPath,
    status: Annotated[RunStatus | None, QueryParameter(description="Filter by status")] = None,
    limit: Annotated[int, QueryParameter(
        ge=1, le=200, description="Maximum number of items to return (1-200)")] = 50,
    cursor: Annotated[str | None, QueryParameter(
        description=CURSOR_DOC, max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] = None,
) -> ActionRunList:
    s, _ = await _one(request, org_id, workspace_id, app_id, action_id)
    runs, total, nxt = await services_of(request).page_schedule_runs(
        _tenant(request), s.id, status=status, cursor=cursor, limit=limit)
    return ActionRunList(total=total, has_more=nxt is not None, next_cursor=nxt,
                         runs=[run_out(r, workspace_id) for r in runs])


@get(AID + "/runs/{run_id:str}", responses=ERRORS, summary="Get Action Run")
async def get_action_run(request: R, org_id: PathLabel, workspace_id: PathLabel,
                         app_id: PathLabel, action_id: ActionIdPath,
                         run_id: RunIdPath) -> ActionRunOut:
    s, _ = await _one(request, org_id, workspace_id, app_id, action_id)
    run = await services_of(request).get_run(_tenant(request), path_uuid(run_id, "run_id"))
    if run.schedule_id != s.id:
        raise NotFound("Run")
    return run_out(run, workspace_id)


@post(AID + "/enable", responses=ERRORS, summary="Enable Action", status_code=200)
async def enable_action(request: R, org_id: PathLabel, workspace_id: PathLabel,
                        app_id: PathLabel, action_id: ActionIdPath) -> ActionOut:
    svc = services_of(request)
    s, ext = await _one(request, org_id, workspace_id, app_id, action_id)
    s = await svc.resume_schedule(_tenant(request), s.id)
    return await _out(svc, s, ext)


@post(AID + "/disable", responses=ERRORS, summary="Disable Action", status_code=200)
async def disable_action(request: R, org_id: PathLabel, workspace_id: PathLabel,
                         app_id: PathLabel, action_id: ActionIdPath) -> ActionOut:
    svc = services_of(request)
    s, ext = await _one(request, org_id, workspace_id, app_id, action_id)
    s = await svc.pause_schedule(_tenant(request), s.id)
    return await _out(svc, s, ext)


def router(guards: list[Any], security: list[dict[str, list[str]]]) -> Router:
    return Router(
        "/v1/orgs/{org_id:str}/workspaces/{workspace_id:str}/apps/{app_id:str}/actions",
        route_handlers=[list_actions, create_action, get_action, update_action, delete_action,
                        trigger_action, list_action_runs, get_action_run, enable_action,
                        disable_action],
        guards=guards, security=security, tags=["Actions API (seed 002)"],
    )

