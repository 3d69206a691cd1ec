"""Shared pieces of the controllers: the services dependency, tenant access, path ids,
the documented error answers, and Schedule -> wire conversion."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter

from schedd.api.schemas import ErrorOut, HTTPValidationError, RunOut, ScheduleOut
from schedd.errors import InvalidField
from schedd.models import Run, Schedule
from schedd.services import Services
from schedd.timing import format_ms

ERRORS: dict[int, ResponseSpec] = {
    401: ResponseSpec(ErrorOut, description="Missing or invalid API key", generate_examples=False),
    404: ResponseSpec(ErrorOut, description="Not found", generate_examples=False),
    409: ResponseSpec(ErrorOut, description="State conflict", generate_examples=False),
    422: ResponseSpec(HTTPValidationError, description="Validation Error",
                      generate_examples=False),
}


# Path ids are taken as text and checked by path_uuid (so a bad one is a 422 naming it);
# the OpenAPI document still says what they are, as the seed does.
ScheduleIdPath = Annotated[str, PathParameter(format="uuid", title="Schedule Id")]
RunIdPath = Annotated[str, PathParameter(format="uuid", title="Run Id")]


#: scope["state"] key: what the key check raised on api/fastpath.py's path for this request
#: (api_key_guard raises it again rather than checking twice)
AUTH_FAILED = "schedd.fastpath.auth_failed"


def services_of(request: Request[Any, Any, Any]) -> Services:
    svc: Services = request.app.state.services
    return svc


def tenant_of(request: Request[Any, Any, Any]) -> str:
    tenant: str = request.state.tenant_id
    return tenant


def path_uuid(value: str, name: str) -> str:
    """A path id must be a UUID: 422 naming ["path", name] otherwise (never a 404)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidField(("path", name), "Input should be a valid UUID", "uuid_parsing") from None


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def schedule_out(svc: Services, s: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=s.id,
        tenant_id=s.tenant_id,
        name=s.name,
        description=s.description,
        schedule_type=s.schedule_type,
        schedule_expression=s.schedule_expression,
        timezone=s.timezone,
        start_at=_ts(s.start_ms),
        end_at=_ts(s.end_ms),
        action_type=s.action_type.value,
        action_config=svc.public_action_config(s),
        customer_id=s.customer_id,
        external_id=s.external_id,
        deduplication_key=s.deduplication_key,
        overlap_policy=s.overlap_policy,
        catchup_window_minutes=s.catchup_window_minutes,
        catchup_policy=s.catchup_policy,
        flexible_window_minutes=s.flexible_window_minutes,
        max_retries=s.max_retries,
        retry_backoff_seconds=s.retry_backoff_seconds,
        pause_on_failure_count=s.pause_on_failure_count,
        rate_limit_per_minute=s.rate_limit_per_minute,
        action_after_completion=s.action_after_completion,
        relative_entity_definition_id=s.relative_entity_definition_id,
        relative_field_name=s.relative_field_name,
        relative_offset_days=s.relative_offset_days,
        relative_filter=s.relative_filter,
        status=s.status,
        paused_reason=s.paused_reason,
        next_run_at=_ts(s.next_run_ms),
        last_run_at=_ts(s.last_run_ms),
        last_run_status=s.last_run_status,
        run_count=s.run_count,
        consecutive_failures=s.consecutive_failures,
        missed_count=s.missed_count,
        last_error=s.last_error,
        created_at=format_ms(s.created_ms),
        updated_at=format_ms(s.updated_ms),
    )


def run_out(r: Run) -> RunOut:
    duration = None
    if r.started_ms is not None and r.completed_ms is not None:
        duration = round((r.completed_ms - r.started_ms) / 1000.0, 3)
    return RunOut(
        id=r.id,
        schedule_id=r.schedule_id,
        tenant_id=r.tenant_id,
        status=r.status,
        trigger_type=r.trigger_type,
        scheduled_for=format_ms(r.scheduled_for_ms),
        due_at=format_ms(r.due_ms),
        triggered_at=format_ms(r.triggered_ms),
        started_at=_ts(r.started_ms),
        completed_at=_ts(r.completed_ms),
        duration_seconds=duration,
        attempt=r.attempt,
        attempt_root_run_id=r.attempt_root_run_id,
        previous_attempt_run_id=r.previous_attempt_run_id,
        next_attempt_run_id=r.next_attempt_run_id,
        error_code=r.error_code,
        error_message=r.error_message,
        result=r.result,
        resolved_payload=r.resolved_payload,
        action_type=r.action_type.value,
        queue=r.queue,
        worker_id=r.worker_id,
        lease_expires_at=_ts(r.lease_until_ms),
        last_heartbeat_at=_ts(r.last_heartbeat_ms),
        cancel_requested_at=_ts(r.cancel_requested_ms),
        cancel_reason=r.cancel_reason,
        record_key=r.record_key,
    )
