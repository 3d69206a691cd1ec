"""Kragle.io schedules (seed 003, SPEC §7.2) under /kragle.

A Kragle schedule is an ordinary schedule of the key's tenant: `{"period": seconds}` is an
interval schedule, `{"timestamp": unix seconds}` with `once: true` a once schedule. Its
action is `noop` unless the extension field `action` gives one; every tick is recorded as
a run. It is marked by a ScheduleExt of kind "kragle" (nothing else needs keeping: name,
once and config are read back from the schedule itself, so /v1 changes show here too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, UnsetType

from schedd import timing
from schedd.api.common import ERRORS, path_uuid, services_of
from schedd.api.compat import relabel
from schedd.api.schemas import ActionType, Name
from schedd.errors import InvalidField, NotFound
from schedd.models import Schedule, ScheduleExt
from schedd.services import Services

R = Request[Any, Any, Any]
KIND = "kragle"
PAGE_SIZE = 10
MAX_PAGE = 10**15  # (page - 1) * 10 stays inside SQLite's 64-bit OFFSET
IdPath = Annotated[str, PathParameter(format="uuid", title="Schedule Id")]


class KragleAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Extension: what each tick does (SPEC §3.4); default noop. action_config's shape
    depends on action_type (docs/api.md); command actions need [actions] allow_commands."""

    action_type: ActionType
    action_config: Annotated[dict[str, Any], Meta(description=(
        "As the native action_config of this action_type."))] = msgspec.field(
        default_factory=dict)


MAX_PERIOD_S = 366 * 86_400  # the native interval's bound
MAX_TIMESTAMP_S = 253_370_764_799  # 9998-12-31T23:59:59Z, the native instants' bound


class KragleConfigIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of `period` (seconds between runs, with once: false) and `timestamp`
    (unix seconds, with once: true); both, neither or a mismatch with `once` is a 422
    naming ["body", "config"]. A timestamp older than the 10-minute catch-up window is
    refused."""

    period: Annotated[int, Meta(ge=1, le=MAX_PERIOD_S)] | None = None
    timestamp: Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP_S)] | None = None

    def present(self) -> dict[str, int]:
        return {k: v for k in ("period", "timestamp") if (v := getattr(self, k)) is not None}


class KragleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    config: KragleConfigIn
    name: Name | None = None
    once: bool = False
    action: KragleAction | None = None


class KragleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Partial: absent fields keep their value; config and once are checked together, the
    absent one taken from the schedule."""

    config: KragleConfigIn | UnsetType = UNSET
    name: Name | UnsetType | None = UNSET
    once: bool | UnsetType = UNSET
    action: KragleAction | UnsetType = UNSET


class KragleConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    period: int | None = None
    timestamp: int | None = None


class KragleSchedule(msgspec.Struct, kw_only=True):
    id: str
    name: str | None
    once: bool
    config: KragleConfig


class KragleList(msgspec.Struct, kw_only=True):
    count: int
    pagesize: int
    page: int
    schedules: list[KragleSchedule]


class KragleId(msgspec.Struct, kw_only=True):
    id: str


_CONFIG_LOC = ("body", "config")


def _timing(config: dict[str, Any], once: bool) -> tuple[str, str]:
    """(schedule_type, schedule_expression) of a Kragle config. Exactly one of period and
    timestamp, integers, matching `once`: 422 naming ["body", "config"] otherwise."""
    unknown = sorted(set(config) - {"period", "timestamp"})
    if unknown:
        raise InvalidField((*_CONFIG_LOC, unknown[0]), "unknown config key; a config holds "
                           "`period` or `timestamp`", "extra_forbidden")
    if len(config) != 1:
        raise InvalidField(_CONFIG_LOC, "give exactly one of `period` (seconds between "
                           "runs) and `timestamp` (unix seconds, with once: true)")
    key, value = next(iter(config.items()))
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidField((*_CONFIG_LOC, key), "Input should be a valid integer", "int_type")
    if once != (key == "timestamp"):
        raise InvalidField(_CONFIG_LOC, "a one-time schedule (once: true) takes `timestamp`; "
                           "a repeating one (once: false) takes `period`")
    if key == "period":
        return "interval", f"{value}s"
    try:
        at = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidField((*_CONFIG_LOC, "timestamp"), "the timestamp is out of range") from None
    return "once", at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _renamer(stype: str) -> Callable[[list[str | int]], list[str | int]]:
    """Native body field names -> this API's, for errors."""
    def rename(loc: list[str | int]) -> list[str | int]:
        head = loc[0] if loc else None
        if head in ("schedule_expression", "schedule_type"):
            return ["config", "period" if stype == "interval" else "timestamp"]
        if head in ("action_type", "action_config"):
            return ["action", *loc]
        return loc
    return rename


def _config_of(s: Schedule) -> tuple[bool, KragleConfig]:
    """once and config, read back from the schedule."""
    expr = s.schedule_expression or ""
    try:
        if s.schedule_type.value == "interval":
            return False, KragleConfig(period=math.ceil(timing.parse_duration_ms(expr) / 1000))
        if s.schedule_type.value == "once":
            ms = timing.parse_instant_ms(expr, timing.load_zone(s.timezone))
            return True, KragleConfig(timestamp=ms // 1000)
    except (timing.TimingError, OverflowError, ValueError):
        pass
    return s.schedule_type.value == "once", KragleConfig()


def schedule_out(s: Schedule) -> KragleSchedule:
    once, config = _config_of(s)
    return KragleSchedule(id=s.id, name=s.name or None, once=once, config=config)


def _tenant(request: R) -> str | None:
    tenant: str | None = request.state.tenant_id
    return tenant


async def _get(svc: Services, tenant: str | None, schedule_id: str) -> tuple[Schedule, Any]:
    if tenant is None:
        raise NotFound("Schedule")
    return await svc.get_extended(tenant, path_uuid(schedule_id, "id"), KIND)


@get("/schedules", responses=ERRORS, summary="List Kragle Schedules")
async def list_schedules(
    request: R,
    page: Annotated[int, QueryParameter(
        ge=1, le=MAX_PAGE, description="The page # of the result set (10 a page)")] = 1,
) -> KragleList:
    tenant = _tenant(request)
    items: list[tuple[Schedule, ScheduleExt]] = []
    total = 0
    if tenant is not None:
        items, total = await services_of(request).list_extended(
            tenant, KIND, "", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return KragleList(count=total, pagesize=len(items), page=page,
                      schedules=[schedule_out(s) for s, _ in items])


@get("/schedules/byid/{id:str}", responses=ERRORS, summary="Get Kragle Schedule")
async def get_schedule(request: R, id: IdPath) -> KragleSchedule:
    s, _ = await _get(services_of(request), _tenant(request), id)
    return schedule_out(s)


@post("/schedules", responses=ERRORS, summary="Create Kragle Schedule", status_code=201)
async def create_schedule(request: R, data: JSONBody[KragleCreate]) -> KragleId:
    tenant = _tenant(request)
    assert tenant is not None  # writes always need a key
    stype, expression = _timing(data.config.present(), data.once)
    action = data.action or KragleAction(action_type=ActionType.noop)
    fields = {"name": data.name or "", "schedule_type": stype, "schedule_expression": expression,
              "action_type": action.action_type.value, "action_config": action.action_config}
    try:
        s, _ = await services_of(request).create_schedule(tenant, fields, ScheduleExt(kind=KIND))
    except InvalidField as exc:
        raise relabel(exc, _renamer(stype)) from None
    return KragleId(id=s.id)


@put("/schedules/{id:str}", responses=ERRORS, summary="Update Kragle Schedule")
async def update_schedule(request: R, id: IdPath,
                          data: JSONBody[KragleUpdate]) -> KragleSchedule:
    svc = services_of(request)
    tenant = _tenant(request)
    s, _ = await _get(svc, tenant, id)
    assert tenant is not None
    patch: dict[str, Any] = {}
    stype = s.schedule_type.value
    if data.name is not UNSET:
        patch["name"] = data.name or ""
    if data.config is not UNSET or data.once is not UNSET:
        once_now, config_now = _config_of(s)
        once = once_now if data.once is UNSET else data.once
        config = {k: v for k, v in msgspec.structs.asdict(
            config_now if data.config is UNSET else data.config).items() if v is not None}
        stype, expression = _timing(config, once)
        patch["schedule_type"] = stype
        patch["schedule_expression"] = expression
    if data.action is not UNSET:
        patch["action_type"] = data.action.action_type.value
        patch["action_config"] = data.action.action_config
    try:
        s = await svc.update_schedule(tenant, s.id, patch)
    except InvalidField as exc:
        raise relabel(exc, _renamer(stype)) from None
    return schedule_out(s)


def _guard(key_guard: Callable[..., Any], public_read: bool, tenant_name: str) -> Any:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], h: BaseRouteHandler) -> None:
        """Writes need a key. Reads too, unless public_read: then a request without a key
        reads the schedules of the tenant named by [compat.kragle] tenant."""
        keyless = not (connection.headers.get("authorization")
                       or connection.headers.get("x-api-key"))
        if public_read and keyless and connection.scope.get("method") in ("GET", "HEAD"):
            svc: Services = connection.app.state.services
            connection.state.tenant_id = await svc.tenant_by_name(tenant_name)
            return
        await key_guard(connection, h)

    return guard


def router(key_guard: Callable[..., Any], security: list[dict[str, list[str]]], *,
           public_read: bool, tenant_name: str) -> Router:
    return Router(
        "/kragle",
        route_handlers=[list_schedules, get_schedule, create_schedule, update_schedule],
        guards=[_guard(key_guard, public_read, tenant_name)],
        security=security, tags=["Kragle schedules (seed 003)"],
    )
