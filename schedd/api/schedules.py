"""/v1/schedules: list, create, get, update, delete, pause, resume."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, FromQuery, QueryParameter

from schedd.api.common import (
    ERRORS,
    ScheduleIdPath,
    path_uuid,
    schedule_out,
    services_of,
    tenant_of,
)
from schedd.api.schemas import (
    MAX_LIST_OFFSET,
    NO_NUL,
    OccurrenceList,
    OccurrenceOut,
    ScheduleCreate,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
)
from schedd.models import ScheduleStatus
from schedd.timing import format_ms

R = Request[Any, Any, Any]
SID = "/{schedule_id:str}"

# Valid requests, shown in the document (and sent by the schemathesis test's examples phase)
CREATE_EXAMPLES = [
    Example(summary="A weekday webhook", value={
        "name": "weekday report", "schedule_type": "cron",
        "schedule_expression": "0 9 * * 1-5", "timezone": "Europe/Berlin",
        "action_type": "webhook",
        "action_config": {"url": "https://example.com/hook", "method": "POST"},
    }),
    Example(summary="Every 15 minutes, for an external worker", value={
        "name": "sync", "schedule_type": "interval", "schedule_expression": "15m",
        "action_type": "worker", "action_config": {"queue": "sync", "payload": {"full": False}},
        "overlap_policy": "BUFFER_ONE", "max_retries": 0,
    }),
    Example(summary="Idempotent create", value={
        "name": "nightly", "schedule_type": "cron", "schedule_expression": "@daily",
        "action_type": "noop", "action_config": {}, "deduplication_key": "nightly-1",
    }),
]
UPDATE_EXAMPLES = [
    Example(summary="Rename", value={"name": "weekday report (EU)"}),
    Example(summary="Re-time", value={"schedule_expression": "30 8 * * 1-5",
                                      "timezone": "Europe/Paris"}),
    Example(summary="Pause", value={"status": "paused"}),
]
CREATED = {
    **ERRORS,
    200: ResponseSpec(ScheduleOut, description="A schedule with this deduplication_key "
                      "exists: it is answered, unchanged", generate_examples=False),
}


@get("/schedules", responses=ERRORS, summary="List Schedules")
async def list_schedules(
    request: R,
    customer_id: FromQuery[uuid.UUID | None] = None,
    external_id: Annotated[str | None, QueryParameter(pattern=NO_NUL)] = None,
    status: FromQuery[ScheduleStatus | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> ScheduleList:
    svc = services_of(request)
    items, total = await svc.list_schedules(
        tenant_of(request),
        customer_id=None if customer_id is None else str(customer_id),
        external_id=external_id,
        status=None if status is None else status.value,
        limit=limit,
        offset=offset,
    )
    return ScheduleList(
        schedules=[schedule_out(svc, s) for s in items],
        total=total, limit=limit, offset=offset, has_more=offset + len(items) < total,
    )


#: scope["state"] key: what the service raised when api/fastpath.py tried this create
CREATE_FAILED = "schedd.fastpath.create_failed"


@post("/schedules", responses=CREATED, summary="Create Schedule")
async def create_schedule(
    request: R, data: Annotated[ScheduleCreate, Body(examples=CREATE_EXAMPLES)]
) -> Response[ScheduleOut]:
    svc = services_of(request)
    failed = request.scope["state"].pop(CREATE_FAILED, None)
    if failed is not None:  # api/fastpath.py tried this very create: its one attempt counts
        raise failed
    s, created = await svc.create_schedule(tenant_of(request), create_fields(data))
    return Response(schedule_out(svc, s), status_code=201 if created else 200)


def create_fields(data: ScheduleCreate) -> dict[str, Any]:
    """A create's body as the service takes it (also used by api/fastpath.py)."""
    fields = {f: getattr(data, f) for f in data.__struct_fields__}
    for key in ("customer_id", "relative_entity_definition_id"):
        if fields[key] is not None:
            fields[key] = str(fields[key])
    return fields


@get("/schedules" + SID, responses=ERRORS, summary="Get Schedule")
async def get_schedule(request: R, schedule_id: ScheduleIdPath) -> ScheduleOut:
    svc = services_of(request)
    s = await svc.get_schedule(tenant_of(request), path_uuid(schedule_id, "schedule_id"))
    return schedule_out(svc, s)


@put("/schedules" + SID, responses=ERRORS, summary="Update Schedule")
async def update_schedule(
    request: R, schedule_id: ScheduleIdPath,
    data: Annotated[ScheduleUpdate, Body(examples=UPDATE_EXAMPLES)],
) -> ScheduleOut:
    svc = services_of(request)
    sid = path_uuid(schedule_id, "schedule_id")
    s = await svc.update_schedule(tenant_of(request), sid, data.present())
    return schedule_out(svc, s)


@delete("/schedules" + SID, responses=ERRORS, summary="Delete Schedule", status_code=204)
async def delete_schedule(request: R, schedule_id: ScheduleIdPath) -> None:
    svc = services_of(request)
    await svc.delete_schedule(tenant_of(request), path_uuid(schedule_id, "schedule_id"))


@post("/schedules" + SID + "/pause", responses=ERRORS, summary="Pause Schedule", status_code=200)
async def pause_schedule(request: R, schedule_id: ScheduleIdPath) -> ScheduleOut:
    svc = services_of(request)
    s = await svc.pause_schedule(tenant_of(request), path_uuid(schedule_id, "schedule_id"))
    return schedule_out(svc, s)


@post("/schedules" + SID + "/resume", responses=ERRORS, summary="Resume Schedule",
      status_code=200)
async def resume_schedule(request: R, schedule_id: ScheduleIdPath) -> ScheduleOut:
    svc = services_of(request)
    s = await svc.resume_schedule(tenant_of(request), path_uuid(schedule_id, "schedule_id"))
    return schedule_out(svc, s)


@get("/schedules" + SID + "/occurrences", responses=ERRORS, summary="List Occurrences")
async def list_occurrences(
    request: R,
    schedule_id: ScheduleIdPath,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> OccurrenceList:
    """The pending occurrences, soonest first (a relative schedule's per record; for the
    other types the next fire times)."""
    svc = services_of(request)
    items = await svc.occurrences(tenant_of(request), path_uuid(schedule_id, "schedule_id"),
                                  limit)
    return OccurrenceList(occurrences=[
        OccurrenceOut(record_key=o.record_key, scheduled_for=format_ms(o.scheduled_for_ms),
                      due_at=format_ms(o.due_ms)) for o in items])


HANDLERS = [
    list_schedules, create_schedule, get_schedule, update_schedule, delete_schedule,
    pause_schedule, resume_schedule, list_occurrences,
]
