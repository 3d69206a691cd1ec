"""Unauthenticated probes (/healthz, /readyz) and the authenticated preview."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from schedd import timing
from schedd.api.common import ERRORS, services_of
from schedd.api.schemas import PreviewOut
from schedd.errors import InvalidField
from schedd.models import ScheduleType

R = Request[Any, Any, Any]


@get("/healthz", opt={"public": True}, summary="Liveness", include_in_schema=True)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", opt={"public": True}, summary="Readiness", responses={
    503: ResponseSpec(dict[str, Any], description="The database or the scheduler loop is "
                      "not working; the body says which", generate_examples=False),
})
async def readyz(request: R) -> Response[dict[str, Any]]:
    """200 when the database answers and can be written and the scheduler loop is alive;
    503 otherwise (while the last write failed: disk full, read-only, locked, I/O error)."""
    svc = services_of(request)
    info: dict[str, Any] = {}
    ok, info["database"] = await svc.database_readiness()
    readiness = getattr(request.app.state, "readiness", None)
    if readiness is not None:
        loop_ok, loop_info = readiness()
        ok = ok and loop_ok
        info["scheduler"] = loop_info
    info["status"] = "ok" if ok else "unavailable"
    return Response(info, status_code=200 if ok else 503)


@get("/v1/preview", responses=ERRORS, summary="Preview fire times")
async def preview(
    request: R,
    schedule_type: Annotated[ScheduleType, QueryParameter(
        description="`relative` has no preview: its fire times come from records (422).",
        examples=[Example(value="cron")])],
    schedule_expression: Annotated[str, QueryParameter(
        min_length=1, description="As a schedule's (docs/scheduling.md); its syntax depends "
        "on `schedule_type`.", examples=[Example(value="0 9 * * 1-5")])],
    timezone: Annotated[str, QueryParameter(
        max_length=50, description="An IANA time zone name known to the server.",
        examples=[Example(value="Europe/Berlin")])] = "UTC",
    after: Annotated[str | None, QueryParameter(
        format="date-time", description="Times strictly after this instant (default: now). "
        "An RFC 3339 date-time; one without an offset is also accepted, as wall time in "
        "`timezone`. Between 1970-01-01 and 9999-01-01 UTC.",
        examples=[Example(value="2026-12-01T00:00:00Z")])] = None,
    count: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
) -> PreviewOut:
    svc = services_of(request)
    after_ms = None
    if after is not None:
        try:
            # a naive `after` is wall time in `timezone`, like every instant in a schedule
            zone = timing.load_zone(timezone)
            after_ms = timing.parse_instant_ms(after, zone)
        except timing.TimingError as exc:
            field = "timezone" if "timezone" in str(exc) else "after"
            raise InvalidField(("query", field), str(exc)) from None
    times = svc.preview(
        schedule_type.value, schedule_expression, timezone, after_ms=after_ms, count=count
    )
    return PreviewOut(times=[timing.format_ms(t) for t in times])
