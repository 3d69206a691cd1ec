"""Runs (SPEC §3.5), manual triggers, and the external-worker protocol (SPEC §3.6)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, cast

from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, QueryParameter

from schedd.api.common import (
    ERRORS,
    RunIdPath,
    ScheduleIdPath,
    path_uuid,
    run_out,
    services_of,
    tenant_of,
)
from schedd.api.schemas import (
    MAX_LIST_OFFSET,
    CancelIn,
    ClaimIn,
    CompleteIn,
    HeartbeatIn,
    HeartbeatOut,
    RunList,
    RunOut,
)
from schedd.models import Run, RunStatus

R = Request[Any, Any, Any]
RID = "/{run_id:str}"


def _page(runs: list[Run], total: int, limit: int, offset: int) -> RunList:
    return RunList(runs=[run_out(r) for r in runs], total=total, limit=limit, offset=offset,
                   has_more=offset + len(runs) < total)


@get("/runs", responses=ERRORS, summary="List Runs")
async def list_runs(
    request: R,
    schedule_id: FromQuery[uuid.UUID | None] = None,
    status: FromQuery[RunStatus | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> RunList:
    runs, total = await services_of(request).list_runs(
        tenant_of(request), schedule_id=None if schedule_id is None else str(schedule_id),
        status=status, limit=limit, offset=offset,
    )
    return _page(runs, total, limit, offset)


@get("/runs" + RID, responses=ERRORS, summary="Get Run")
async def get_run(request: R, run_id: RunIdPath) -> RunOut:
    run = await services_of(request).get_run(tenant_of(request), path_uuid(run_id, "run_id"))
    return run_out(run)


@post("/runs" + RID + "/cancel", responses=ERRORS, summary="Cancel Run", status_code=200)
async def cancel_run(
    request: R, run_id: RunIdPath, data: JSONBody[CancelIn | None] = None
) -> RunOut:
    rid = path_uuid(run_id, "run_id")
    run = await services_of(request).cancel_run(
        tenant_of(request), rid, None if data is None else data.reason
    )
    return run_out(run)


@post("/runs" + RID + "/retry", responses=ERRORS, summary="Retry Run", status_code=202)
async def retry_run(request: R, run_id: RunIdPath) -> RunOut:
    run = await services_of(request).retry_run(tenant_of(request), path_uuid(run_id, "run_id"))
    return run_out(run)


@get("/schedules/{schedule_id:str}/runs", responses=ERRORS, summary="List Schedule Runs")
async def list_schedule_runs(
    request: R,
    schedule_id: ScheduleIdPath,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> RunList:
    sid = path_uuid(schedule_id, "schedule_id")
    runs, total = await services_of(request).list_schedule_runs(
        tenant_of(request), sid, limit=limit, offset=offset
    )
    return _page(runs, total, limit, offset)


@post("/schedules/{schedule_id:str}/trigger", responses=ERRORS, summary="Trigger Schedule",
      status_code=202)
async def trigger_schedule(request: R, schedule_id: ScheduleIdPath) -> RunOut:
    """Force immediate execution of a schedule (ignores next_run_at)."""
    sid = path_uuid(schedule_id, "schedule_id")
    run = await services_of(request).trigger_schedule(tenant_of(request), sid)
    return run_out(run)


@post("/worker/claim", responses={
    **ERRORS, 204: ResponseSpec(None, description="No run came within wait_seconds"),
}, summary="Claim a run (long poll)", status_code=200)
async def claim(request: R, data: JSONBody[ClaimIn]) -> Response[RunOut]:
    run = await services_of(request).claim_work(
        tenant_of(request), list(dict.fromkeys(data.queues)), data.worker_id,
        data.wait_seconds, data.lease_seconds,
    )
    if run is None:
        # 204 has no body; the 200 body (the document's) is a RunOut
        return cast("Response[RunOut]", Response(None, status_code=204))
    return Response(run_out(run), status_code=200)


@post("/runs" + RID + "/heartbeat", responses=ERRORS, summary="Worker heartbeat",
      status_code=200)
async def heartbeat(request: R, run_id: RunIdPath, data: JSONBody[HeartbeatIn]) -> HeartbeatOut:
    rid = path_uuid(run_id, "run_id")
    cancel = await services_of(request).heartbeat(
        tenant_of(request), rid, data.worker_id, data.lease_seconds
    )
    return HeartbeatOut(cancel_requested=cancel)


@post("/runs" + RID + "/complete", responses=ERRORS, summary="Worker completes a run",
      status_code=200)
async def complete(request: R, run_id: RunIdPath, data: JSONBody[CompleteIn]) -> RunOut:
    rid = path_uuid(run_id, "run_id")
    run = await services_of(request).complete_run(
        tenant_of(request), rid, data.worker_id, data.status == "succeeded", data.result,
        data.error_message,
    )
    return run_out(run)


HANDLERS = [list_runs, get_run, cancel_run, retry_run, list_schedule_runs, trigger_schedule,
            claim, heartbeat, complete]
