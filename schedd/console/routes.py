"""The console's pages and actions. Every handler reads the session, then calls services
with the session's tenant, exactly as the API's handlers do with a key's tenant."""

from __future__ import annotations

import asyncio
import json
import uuid
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath
from litestar.response import Redirect, Template

from schedd import timing
from schedd.api.common import run_out, schedule_out
from schedd.api.errors import body_error_item
from schedd.api.schemas import ScheduleCreate
from schedd.console import session
from schedd.console.chart import runs_chart
from schedd.console.words import in_words
from schedd.errors import Conflict, InvalidField, NotFound, Unauthorized
from schedd.models import Run, RunStatus, Schedule, ScheduleStatus
from schedd.services import Services

R = Request[Any, Any, Any]
PAGE_SIZE = 25
SIGNIN_DELAY_S = 0.5  # a wrong key waits this long: guessing keys over HTTP stays slow
FORM_ACTION_TYPES = ("noop", "webhook", "worker", "command")
NOTICES = {
    "paused": "Paused.", "resumed": "Resumed.", "deleted": "Schedule deleted.",
    "created": "Schedule created.", "triggered": "Triggered: the run below was queued now.",
    "cancelled": "Cancel requested.", "retried": "Retry queued: this is the new attempt.",
    "signedout": "Signed out.",
}
# where an error item's loc points in the create form: ["body", field] or
# ["body", "action_config", key]
ACTION_FIELDS = {"url": "url", "method": "method", "queue": "queue", "argv": "argv",
                 "body": "payload", "payload": "payload", "headers": "payload"}


class SignInRequired(Exception):
    """No live session: answered with a redirect to the sign-in page."""


class CsrfRefused(Exception):
    """A form without the session's CSRF token: answered 403, nothing done."""


@dataclass(frozen=True)
class Ctx:
    svc: Services
    secret: bytes
    token: str
    tenant_id: str

    @property
    def csrf(self) -> str:
        return session.csrf_token(self.secret, self.token)


def _services(request: R) -> Services:
    svc: Services = request.app.state.services
    return svc


def _secret(svc: Services) -> bytes:
    if svc.console_secret is None:
        raise RuntimeError("the console secret was not loaded")
    return svc.console_secret


async def _ctx(request: R) -> Ctx:
    svc = _services(request)
    secret = _secret(svc)
    token = session.token_of(secret, request.cookies.get(session.SESSION_COOKIE))
    if token is None:
        raise SignInRequired
    tenant_id = await svc.console_session_tenant(token)
    if tenant_id is None:
        raise SignInRequired
    return Ctx(svc, secret, token, tenant_id)


async def _form(request: R, ctx: Ctx) -> dict[str, str]:
    """The posted form, once its CSRF token proved it came from our own page."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not session.verify(ctx.secret, "csrf", ctx.token, data.get("csrf")):
        raise CsrfRefused
    return data


def _page(request: R, name: str, ctx: Ctx | None, status_code: int = 200,
          **context: Any) -> Template:
    notice = NOTICES.get(request.query_params.get("notice") or "")
    return Template(template_name=name, status_code=status_code, context={
        "csrf": ctx.csrf if ctx else "", "signed_in": ctx is not None, "notice": notice,
        "path": request.url.path,
        "entities_enabled": ctx is not None and _entities(ctx.svc) is not None, **context})


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(what) from None


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(value or default)))
    except ValueError:
        return default


def _pages(total: int, page: int) -> dict[str, int]:
    last = max(1, -(-total // PAGE_SIZE))
    return {"page": min(page, last), "last": last, "total": total}


# ---------------------------------------------------------------------- sign-in / sign-out
def _secure(request: R) -> bool:
    return request.url.scheme == "https"


@get("/")
async def index(request: R) -> Redirect:
    return Redirect("/ui/schedules", status_code=303)


@get("/signin")
async def signin_page(request: R) -> Template:
    return _signin(request)


def _signin(request: R, error: str | None = None, status_code: int = 200) -> Template:
    secret = _secret(_services(request))
    nonce = session.new_signin_nonce()
    page = Template(template_name="signin.html", status_code=status_code, context={
        "csrf": session.signin_csrf(secret, nonce), "signed_in": False, "error": error,
        "notice": NOTICES.get(request.query_params.get("notice") or ""),
        "path": request.url.path})
    page.cookies.append(Cookie(key=session.SIGNIN_COOKIE, value=nonce, path="/ui",
                               max_age=3600, httponly=True, samesite="strict",
                               secure=_secure(request)))
    return page


@post("/signin")
async def signin(request: R) -> Response[Any]:
    svc = _services(request)
    secret = _secret(svc)
    form = await request.form()
    key = form.get("key")
    nonce = request.cookies.get(session.SIGNIN_COOKIE) or ""
    if not session.verify(secret, "signin", nonce, form.get("csrf")):
        raise CsrfRefused
    lifetime_ms = int(svc.settings.console_session_hours * 3_600_000)
    try:
        token, _ = await svc.open_console_session(key.strip() if isinstance(key, str) else "",
                                                  lifetime_ms)
    except Unauthorized:
        # one message whatever was wrong (unknown, revoked, malformed): no hint whether a
        # tenant or key exists; and a delay on this path only, against guessing
        await asyncio.sleep(SIGNIN_DELAY_S)
        return _signin(request, "That API key is not valid.", 401)
    resp = Redirect("/ui/schedules", status_code=303)
    resp.cookies.append(Cookie(key=session.SESSION_COOKIE,
                               value=session.session_cookie(secret, token), path="/ui",
                               max_age=lifetime_ms // 1000, httponly=True, samesite="strict",
                               secure=_secure(request)))
    resp.cookies.append(Cookie(key=session.SIGNIN_COOKIE, value="", path="/ui", max_age=0,
                               httponly=True, samesite="strict", secure=_secure(request)))
    return resp


@post("/signout")
async def signout(request: R) -> Redirect:
    ctx = await _ctx(request)
    await _form(request, ctx)
    await ctx.svc.close_console_session(ctx.token)
    resp = Redirect("/ui/signin?notice=signedout", status_code=303)
    resp.cookies.append(Cookie(key=session.SESSION_COOKIE, value="", path="/ui", max_age=0,
                               httponly=True, samesite="strict", secure=_secure(request)))
    return resp


# ---------------------------------------------------------------------- schedules
def _row(svc: Services, s: Schedule) -> dict[str, Any]:
    return {"s": schedule_out(svc, s), "words": in_words(
        s.schedule_type.value, s.schedule_expression, s.timezone,
        field=s.relative_field_name, offset_days=s.relative_offset_days)}


@get("/schedules")
async def schedules_page(request: R) -> Template:
    ctx = await _ctx(request)
    q = request.query_params
    status = q.get("status") or ""
    if status not in {s.value for s in ScheduleStatus}:
        status = ""
    text = (q.get("q") or "").strip()[:200]
    page = _int(q.get("page"), 1, 1, 10**9)
    items, total = await ctx.svc.list_schedules(
        ctx.tenant_id, status=status or None, text=text or None, limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE)
    if not items and total and page > 1:  # past the end: show the last page
        page = _pages(total, page)["page"]
        items, total = await ctx.svc.list_schedules(
            ctx.tenant_id, status=status or None, text=text or None, limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE)
    return _page(request, "schedules.html", ctx, rows=[_row(ctx.svc, s) for s in items],
                 status=status, q=text, statuses=[s.value for s in ScheduleStatus],
                 **_pages(total, page))


@get("/schedules/{schedule_id:str}")
async def schedule_page(request: R, schedule_id: FromPath[str]) -> Template:
    ctx = await _ctx(request)
    s = await ctx.svc.get_schedule(ctx.tenant_id, _uuid(schedule_id, "Schedule"))
    runs, runs_total = await ctx.svc.list_runs(ctx.tenant_id, schedule_id=s.id, limit=100)
    # the pending occurrences (a relative schedule's, per record) while it is active:
    # a paused schedule is planned again from now when it resumes
    upcoming = (await ctx.svc.occurrences(ctx.tenant_id, s.id, 10)
                if s.status is ScheduleStatus.active else [])
    return _page(request, "schedule.html", ctx, row=_row(ctx.svc, s),
                 fields=msgspec.structs.asdict(schedule_out(ctx.svc, s)),
                 upcoming=[{"at": timing.format_ms(o.scheduled_for_ms),
                            "record_key": o.record_key} for o in upcoming],
                 runs=[run_out(r) for r in runs[:20]], runs_total=runs_total,
                 chart=runs_chart(runs))


async def _schedule_action(request: R, schedule_id: str, verb: str) -> Response[Any]:
    ctx = await _ctx(request)
    await _form(request, ctx)
    sid = _uuid(schedule_id, "Schedule")
    svc, tenant = ctx.svc, ctx.tenant_id
    if verb == "pause":
        await svc.pause_schedule(tenant, sid)
        return Redirect(f"/ui/schedules/{sid}?notice=paused", status_code=303)
    if verb == "resume":
        await svc.resume_schedule(tenant, sid)
        return Redirect(f"/ui/schedules/{sid}?notice=resumed", status_code=303)
    if verb == "trigger":
        run = await svc.trigger_schedule(tenant, sid)
        return Redirect(f"/ui/runs/{run.id}?notice=triggered", status_code=303)
    await svc.delete_schedule(tenant, sid)
    return Redirect("/ui/schedules?notice=deleted", status_code=303)


@post("/schedules/{schedule_id:str}/pause")
async def pause(request: R, schedule_id: FromPath[str]) -> Response[Any]:
    return await _schedule_action(request, schedule_id, "pause")


@post("/schedules/{schedule_id:str}/resume")
async def resume(request: R, schedule_id: FromPath[str]) -> Response[Any]:
    return await _schedule_action(request, schedule_id, "resume")


@post("/schedules/{schedule_id:str}/trigger")
async def trigger(request: R, schedule_id: FromPath[str]) -> Response[Any]:
    return await _schedule_action(request, schedule_id, "trigger")


@post("/schedules/{schedule_id:str}/delete")
async def delete(request: R, schedule_id: FromPath[str]) -> Response[Any]:
    return await _schedule_action(request, schedule_id, "delete")


# ---------------------------------------------------------------------- create
@cache
def _zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


FORM_DEFAULTS = {"schedule_type": "cron", "schedule_expression": "", "timezone": "UTC",
                 "action_type": "noop", "method": "POST", "max_retries": "3",
                 "retry_backoff_seconds": "60", "catchup_window_minutes": "10",
                 "overlap_policy": "SKIP"}


def _new_page(request: R, ctx: Ctx, values: Mapping[str, str],
              errors: Mapping[str, str] | None = None, status_code: int = 200) -> Template:
    return _page(request, "new.html", ctx, status_code, v={**FORM_DEFAULTS, **values},
                 errors=errors or {}, zones=_zones(), action_types=FORM_ACTION_TYPES)


@get("/schedules/new")
async def new_page(request: R) -> Template:
    return _new_page(request, await _ctx(request), {})


def _number(text: str) -> Any:
    """A form's number as the API would receive it in JSON; anything else stays text so
    that decoding names it exactly as the API does."""
    try:
        return int(text)
    except ValueError:
        return text


def _json_field(form: Mapping[str, str], name: str) -> Any:
    text = form.get(name, "").strip()
    if not text:
        return msgspec.UNSET
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidField(("form", name), f"not valid JSON: {exc}") from None


def body_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The API create body the form stands for."""
    body: dict[str, Any] = {}
    for key in ("name", "schedule_type", "schedule_expression", "timezone", "action_type",
                "description", "overlap_policy"):
        if (value := form.get(key, "").strip()) or key in ("name", "schedule_type",
                                                          "action_type"):
            body[key] = value
    for key in ("max_retries", "retry_backoff_seconds", "catchup_window_minutes"):
        if value := form.get(key, "").strip():
            body[key] = _number(value)
    kind = body.get("action_type")
    config: dict[str, Any] = {}
    payload = _json_field(form, "payload")
    if kind == "webhook":
        config["url"] = form.get("url", "").strip()
        config["method"] = form.get("method", "POST").strip() or "POST"
        if payload is not msgspec.UNSET:
            config["body"] = payload
    elif kind == "worker":
        config["queue"] = form.get("queue", "").strip()
        if payload is not msgspec.UNSET:
            config["payload"] = payload
    elif kind == "command":
        config["argv"] = [a for a in form.get("argv", "").splitlines() if a.strip()]
    body["action_config"] = config
    return body


def _field_of(loc: list[Any]) -> str:
    if len(loc) >= 3 and loc[1] == "action_config":
        return ACTION_FIELDS.get(str(loc[2]), "action_type")
    if len(loc) >= 2:
        return "action_type" if loc[1] == "action_config" else str(loc[1])
    return "name"


@post("/schedules")
async def create(request: R) -> Response[Any]:
    ctx = await _ctx(request)
    form = await _form(request, ctx)
    values = {k: v for k, v in form.items() if k != "csrf"}
    try:
        body = body_from_form(form)
        try:
            data = msgspec.convert(body, ScheduleCreate)
        except msgspec.ValidationError as exc:
            item = body_error_item(exc)
            raise InvalidField(item["loc"], item["msg"], item["type"]) from None
        fields = {f: getattr(data, f) for f in data.__struct_fields__}
        s, _ = await ctx.svc.create_schedule(ctx.tenant_id, fields)
    except InvalidField as exc:
        return _new_page(request, ctx, values, {_field_of(exc.loc): exc.msg}, 422)
    return Redirect(f"/ui/schedules/{s.id}?notice=created", status_code=303)


@get("/preview")
async def preview(request: R) -> Template:
    """The create form's live preview (htmx): the next fire times, through the same
    service as GET /v1/preview, or its error message."""
    ctx = await _ctx(request)
    q = request.query_params
    stype = q.get("schedule_type") or "cron"
    expr = (q.get("schedule_expression") or "").strip()
    tz = (q.get("timezone") or "UTC").strip() or "UTC"
    times: list[str] = []
    error = None
    words = ""
    if not expr:
        error = "Type an expression to see when it fires."
    elif stype not in ("cron", "interval", "once"):
        error = "Choose a schedule type."
    else:
        try:
            times = [timing.format_ms(t) for t in ctx.svc.preview(
                stype, expr, tz[:50], after_ms=None, count=10)]
            words = in_words(stype, expr, tz)
        except InvalidField as exc:
            error = exc.msg
    return Template(template_name="_preview.html",
                    context={"times": times, "error": error, "words": words})


# ---------------------------------------------------------------------- runs
@get("/runs")
async def runs_page(request: R) -> Template:
    ctx = await _ctx(request)
    q = request.query_params
    status_text = q.get("status") or ""
    status = RunStatus(status_text) if status_text in {s.value for s in RunStatus} else None
    page = _int(q.get("page"), 1, 1, 10**9)
    schedule = None
    if sid := q.get("schedule_id"):
        schedule = await ctx.svc.get_schedule(ctx.tenant_id, _uuid(sid, "Schedule"))
    runs, total = await ctx.svc.list_runs(
        ctx.tenant_id, schedule_id=schedule.id if schedule else None, status=status,
        limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    names = await _schedule_names(ctx, runs)
    return _page(request, "runs.html", ctx, runs=[run_out(r) for r in runs], names=names,
                 schedule=schedule,
                 status=status.value if status else "",
                 statuses=[s.value for s in RunStatus], **_pages(total, page))


async def _schedule_names(ctx: Ctx, runs: list[Run]) -> dict[str, str]:
    names: dict[str, str] = {}
    for sid in {r.schedule_id for r in runs}:
        try:
            names[sid] = (await ctx.svc.get_schedule(ctx.tenant_id, sid)).name
        except NotFound:
            names[sid] = "(deleted schedule)"
    return names


MAX_CHAIN = 50


@get("/runs/{run_id:str}")
async def run_page(request: R, run_id: FromPath[str]) -> Template:
    ctx = await _ctx(request)
    run = await ctx.svc.get_run(ctx.tenant_id, _uuid(run_id, "Run"))
    chain: list[Run] = []
    current: Run | None = await ctx.svc.get_run(ctx.tenant_id, run.attempt_root_run_id)
    while current is not None and len(chain) < MAX_CHAIN:
        chain.append(current)
        nxt = current.next_attempt_run_id
        current = None if nxt is None else await ctx.svc.get_run(ctx.tenant_id, nxt)
    names = await _schedule_names(ctx, [run])
    out = run_out(run)
    result = out.result
    excerpt = None if result is None else json.dumps(result, indent=2, default=str)[:4096]
    payload = None if out.resolved_payload is None else json.dumps(
        out.resolved_payload, indent=2, default=str)[:4096]
    return _page(request, "run.html", ctx, r=out, chain=[run_out(c) for c in chain],
                 schedule_name=names[run.schedule_id], result=excerpt, payload=payload,
                 node_id=run.node_id,
                 fields=msgspec.structs.asdict(out),
                 can_cancel=run.status in (RunStatus.pending, RunStatus.running),
                 can_retry=run.status in (RunStatus.failed, RunStatus.cancelled)
                 and run.next_attempt_run_id is None)


@post("/runs/{run_id:str}/cancel")
async def cancel(request: R, run_id: FromPath[str]) -> Redirect:
    ctx = await _ctx(request)
    form = await _form(request, ctx)
    rid = _uuid(run_id, "Run")
    reason = (form.get("reason") or "").strip()[:500] or "cancelled from the console"
    await ctx.svc.cancel_run(ctx.tenant_id, rid, reason)
    return Redirect(f"/ui/runs/{rid}?notice=cancelled", status_code=303)


@post("/runs/{run_id:str}/retry")
async def retry(request: R, run_id: FromPath[str]) -> Redirect:
    ctx = await _ctx(request)
    await _form(request, ctx)
    new = await ctx.svc.retry_run(ctx.tenant_id, _uuid(run_id, "Run"))
    return Redirect(f"/ui/runs/{new.id}?notice=retried", status_code=303)


# ---------------------------------------------------------------------- entities
def _entities(svc: Services) -> Any:
    """The entity-definition service (SPEC §3.7) when this build has it, else None."""
    return getattr(svc, "entities", None)


@get("/entities")
async def entities_page(request: R) -> Template:
    ctx = await _ctx(request)
    entities = _entities(ctx.svc)
    if entities is None:
        raise NotFound("Entity definitions")
    page = _int(request.query_params.get("page"), 1, 1, 10**9)
    items, total = await entities.list_definitions(ctx.tenant_id, PAGE_SIZE,
                                                   (page - 1) * PAGE_SIZE)
    rows = [{"id": d.id, "name": d.name, "description": d.description,
             "fields": dict(d.fields), "record_count": d.record_count,
             "created_at": timing.format_ms(d.created_ms),
             "updated_at": timing.format_ms(d.updated_ms)} for d in items]
    return _page(request, "entities.html", ctx, rows=rows, **_pages(total, page))


# ---------------------------------------------------------------------- health
@get("/health")
async def health_page(request: R) -> Template:
    ctx = await _ctx(request)
    return _page(request, "health.html", ctx, h=await ctx.svc.tenant_health(ctx.tenant_id))


@get("/{rest:path}")
async def unknown(request: R, rest: FromPath[str]) -> Template:
    """Any other /ui address: the 404 page (signed in or not, it says nothing more)."""
    raise NotFound("Page")


# ---------------------------------------------------------------------- errors
def signin_required(request: R, exc: SignInRequired) -> Response[Any]:
    if request.headers.get("hx-request"):
        # an htmx fragment cannot redirect the page by a 303; tell htmx to
        return Response("", status_code=401, headers={"HX-Redirect": "/ui/signin"})
    resp = Redirect("/ui/signin", status_code=303)
    if request.cookies.get(session.SESSION_COOKIE):
        resp.cookies.append(Cookie(key=session.SESSION_COOKIE, value="", path="/ui", max_age=0,
                                   httponly=True, samesite="strict", secure=_secure(request)))
    return resp


def _error(request: R, status_code: int, title: str, message: str) -> Template:
    return Template(template_name="error.html", status_code=status_code, context={
        "signed_in": True, "csrf": "", "notice": None, "path": request.url.path,
        "title": title, "message": message})


def csrf_refused(request: R, exc: CsrfRefused) -> Template:
    return _error(request, 403, "Refused",
                  "This form was not sent from this console's own page (its CSRF token is "
                  "missing or wrong). Nothing was changed. Reload the page and try again.")


def not_found(request: R, exc: NotFound) -> Template:
    return _error(request, 404, "Not found",
                  f"{exc.what} not found: it does not exist, or it is not yours to see.")


def conflict(request: R, exc: Conflict) -> Template:
    return _error(request, 409, "Not possible now", str(exc))


def invalid(request: R, exc: InvalidField) -> Template:
    return _error(request, 422, "Invalid", exc.msg)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SignInRequired: signin_required,
    CsrfRefused: csrf_refused,
    NotFound: not_found,
    Conflict: conflict,
    InvalidField: invalid,
}

HANDLERS = [
    index, signin_page, signin, signout, schedules_page, new_page, create, preview,
    schedule_page, pause, resume, trigger, delete, runs_page, run_page, cancel, retry,
    entities_page, health_page, unknown,
]
