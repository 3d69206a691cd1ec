"""The web console (/ui) without a browser: its security rules (sign-in, signed HttpOnly
SameSite=Strict cookies, CSRF, sign-out, revoked keys, tenant isolation) and that its pages
show what the API shows. Browser tests in real Chromium: tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.console import routes, session
from schedd.daemon import build_app
from tests.conftest import Api, schedule_body

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class Browser:
    """One person's cookies over the shared test client (each request sends exactly this
    jar, so two people can use one app)."""

    def __init__(self, api: Api) -> None:
        self.client = api.client
        self.jar: dict[str, str] = {}
        self.csrf = ""

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        self.client.cookies.clear()
        r = await self.client.request(method, path, headers=headers, follow_redirects=False,
                                      **kw)
        self.client.cookies.clear()
        for raw in r.headers.get_list("set-cookie"):
            c = SimpleCookie()
            c.load(raw)
            for name, morsel in c.items():
                if morsel["max-age"] == "0":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        if m := CSRF.search(r.text):
            self.csrf = m[1]
        return r

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, data: dict[str, Any] | None = None,
                   csrf: bool = True) -> Any:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf", self.csrf)
        return await self.request("POST", path, data=form)

    async def sign_in(self, key: str) -> Any:
        await self.get("/ui/signin")
        return await self.post("/ui/signin", {"key": key})


async def signed_in(api: Api, key: str | None = None) -> Browser:
    b = Browser(api)
    r = await b.sign_in(key or api.key)
    assert r.status_code == 303 and r.headers["location"] == "/ui/schedules", r.text
    assert (await b.get("/ui/schedules")).status_code == 200  # its forms' CSRF token
    return b


async def make_schedule(api: Api, **overrides: Any) -> dict[str, Any]:
    r = await api.post("/v1/schedules", json=schedule_body(**overrides))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def errors_of(html: str) -> dict[str, str]:
    """field -> the error message shown next to it on the create form."""
    import html as h

    return {m[1]: h.unescape(m[2]) for m in re.finditer(
        r'<span class="error" id="error-([a-z_]+)" role="alert">([^<]*)</span>', html)}


# ------------------------------------------------------------------------------ sign-in
async def test_signin_sets_a_signed_httponly_strict_cookie(api: Api) -> None:
    b = Browser(api)
    page = await b.get("/ui/signin")
    assert page.status_code == 200 and 'name="key"' in page.text
    r = await b.post("/ui/signin", {"key": api.key})
    assert r.status_code == 303
    raw = [c for c in r.headers.get_list("set-cookie") if c.startswith("schedd_session=")]
    assert len(raw) == 1
    flags = [p.strip().lower() for p in raw[0].split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
    assert any(f.startswith("max-age=") and int(f[8:]) == 12 * 3600 for f in flags)
    token, mac = b.jar["schedd_session"].split(".")
    assert len(token) >= 40 and len(mac) >= 40 and api.key not in raw[0]
    assert (await b.get("/ui/schedules")).status_code == 200


async def test_a_tampered_or_foreign_cookie_is_a_new_sign_in(api: Api) -> None:
    b = await signed_in(api)
    token, mac = b.jar["schedd_session"].split(".")
    for forged in (f"{token}.{'A' * len(mac)}", f"{token[:-1]}x.{mac}", token, "garbage"):
        b.jar["schedd_session"] = forged
        r = await b.get("/ui/schedules")
        assert r.status_code == 303 and r.headers["location"] == "/ui/signin", forged


@pytest.mark.parametrize("key", ["", "not-a-key", "sk_" + "0" * 40])
async def test_a_wrong_key_gets_one_clear_message_after_a_delay(api: Api, key: str) -> None:
    b = Browser(api)
    await b.get("/ui/signin")
    started = time.monotonic()
    r = await b.post("/ui/signin", {"key": key})
    elapsed = time.monotonic() - started
    assert r.status_code == 401
    assert "That API key is not valid." in r.text
    assert "schedd_session" not in b.jar
    # asyncio.sleep never returns early: a lower bound, not a speed assertion
    assert elapsed >= routes.SIGNIN_DELAY_S * 0.95


async def test_a_revoked_key_cannot_sign_in_and_reads_like_any_wrong_key(api: Api) -> None:
    key_id, key = api.call(api.services.create_key, "default")
    api.call(api.services.revoke_key, key_id)
    b = Browser(api)
    await b.get("/ui/signin")
    revoked = await b.post("/ui/signin", {"key": key})
    await b.get("/ui/signin")
    unknown = await b.post("/ui/signin", {"key": key[:-4] + "zzzz"})
    assert revoked.status_code == unknown.status_code == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", revoked.text) == strip.sub("", unknown.text)


async def test_signin_form_without_its_csrf_token_is_refused(api: Api) -> None:
    b = Browser(api)
    await b.get("/ui/signin")
    r = await b.post("/ui/signin", {"key": api.key, "csrf": "forged"})
    assert r.status_code == 403 and "schedd_session" not in b.jar
    other = Browser(api)  # a page that never fetched the form has no nonce cookie
    r = await other.post("/ui/signin", {"key": api.key, "csrf": b.csrf})
    assert r.status_code == 403 and "schedd_session" not in other.jar


async def test_pages_need_a_session(api: Api) -> None:
    b = Browser(api)
    for path in ("/ui/schedules", "/ui/runs", "/ui/health", "/ui/schedules/new", "/ui/"):
        r = await b.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] in ("/ui/signin", "/ui/schedules"), path
    r = await b.get("/ui/preview?schedule_type=cron&schedule_expression=*+*+*+*+*",
                    headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/ui/signin"


# ------------------------------------------------------------------------------ CSRF
async def test_forged_or_missing_csrf_is_403_and_changes_nothing(api: Api) -> None:
    s = await make_schedule(api)
    b = await signed_in(api)
    other = await signed_in(api)  # a valid token, but of another session
    assert other.csrf != b.csrf
    for action in ("pause", "trigger", "delete"):
        for data, send in (({}, False), ({"csrf": ""}, True), ({"csrf": "x" * 43}, True),
                           ({"csrf": other.csrf}, True)):
            r = await b.post(f"/ui/schedules/{s['id']}/{action}", data, csrf=send)
            assert r.status_code == 403, (action, data)
            assert "Nothing was changed" in r.text
    r = await b.post("/ui/schedules", {**schedule_body(), "csrf": other.csrf})
    assert r.status_code == 403
    after = (await api.get(f"/v1/schedules/{s['id']}")).json()
    assert after["status"] == "active"
    assert (await api.get("/v1/runs")).json()["total"] == 0
    assert (await api.get("/v1/schedules")).json()["total"] == 1
    r = await b.post("/ui/signout", {"csrf": other.csrf})
    assert r.status_code == 403
    assert (await b.get("/ui/schedules")).status_code == 200


# ------------------------------------------------------------------------------ sign-out
async def test_signout_forgets_the_session_even_for_a_copied_cookie(api: Api) -> None:
    b = await signed_in(api)
    stolen = b.jar["schedd_session"]
    r = await b.post("/ui/signout")
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin?notice=signedout"
    assert "schedd_session" not in b.jar  # the browser is told to drop it
    thief = Browser(api)
    thief.jar["schedd_session"] = stolen
    r = await thief.get("/ui/schedules")
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"


async def test_a_revoked_key_ends_its_sessions_at_the_next_request(api: Api) -> None:
    key_id, key = api.call(api.services.create_key, "default")
    b = await signed_in(api, key)
    keep = await signed_in(api)  # another key of the same tenant
    assert (await b.get("/ui/schedules")).status_code == 200
    api.call(api.services.revoke_key, key_id)
    r = await b.get("/ui/schedules")
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    assert (await keep.get("/ui/schedules")).status_code == 200


async def test_a_session_expires(api: Api, clock: FakeClock) -> None:
    b = await signed_in(api)
    api.call(clock.advance, 12 * 3_600_000 - 1)
    assert (await b.get("/ui/schedules")).status_code == 200
    api.call(clock.advance, 1)
    assert (await b.get("/ui/schedules")).status_code == 303


# ------------------------------------------------------------------------------ tenants
async def test_the_console_sees_exactly_its_tenant(api: Api) -> None:
    mine = await make_schedule(api, name="mine-schedule")
    theirs_api = await api.other_tenant("tenant-b")
    theirs = await make_schedule(theirs_api, name="theirs-schedule")
    run = (await theirs_api.post(f"/v1/schedules/{theirs['id']}/trigger")).json()
    b = await signed_in(api)
    page = (await b.get("/ui/schedules")).text
    assert "mine-schedule" in page and "theirs-schedule" not in page
    assert theirs["id"] not in (await b.get("/ui/runs")).text
    for path in (f"/ui/schedules/{theirs['id']}", f"/ui/runs/{run['id']}",
                 f"/ui/runs?schedule_id={theirs['id']}"):
        r = await b.get(path)
        assert r.status_code == 404 and "not yours to see" in r.text, path
    for action in ("pause", "trigger", "delete"):
        r = await b.post(f"/ui/schedules/{theirs['id']}/{action}")
        assert r.status_code == 404, action
    for action in ("cancel", "retry"):
        assert (await b.post(f"/ui/runs/{run['id']}/{action}")).status_code == 404
    after = (await theirs_api.get(f"/v1/schedules/{theirs['id']}")).json()
    assert after["status"] == "active"
    assert (await theirs_api.get("/v1/runs")).json()["total"] == 1
    # tenant b's own session sees its schedule and not ours
    b2 = await signed_in(api, theirs_api.key)
    page = (await b2.get("/ui/schedules")).text
    assert "theirs-schedule" in page and mine["id"] not in page


@pytest.mark.parametrize("path", ["/ui/schedules/not-a-uuid", "/ui/runs/12345",
                                  "/ui/schedules/00000000-0000-4000-8000-000000000000",
                                  "/ui/no/such/page"])
async def test_missing_ids_are_the_404_page(api: Api, path: str) -> None:
    b = await signed_in(api)
    r = await b.get(path)
    assert r.status_code == 404 and "<h1>Not found</h1>" in r.text


# ------------------------------------------------------------------------------ pages
async def test_schedules_list_in_words_with_filters_and_pages(api: Api) -> None:
    await make_schedule(api, name="berlin mornings", schedule_type="cron",
                        schedule_expression="0 9 * * 1-5", timezone="Europe/Berlin")
    paused = await make_schedule(api, name="quarter hours", schedule_expression="15m")
    await api.post(f"/v1/schedules/{paused['id']}/pause")
    for i in range(30):
        await make_schedule(api, name=f"bulk {i:02d}", schedule_expression="1h")
    b = await signed_in(api)
    page = (await b.get("/ui/schedules")).text
    assert "at 09:00 on weekdays, Europe/Berlin" in page
    assert "every 15 minutes" in page
    assert "Page 1 of 2 · 32 in all" in page and "bulk 22" in page and "bulk 23" not in page
    page2 = (await b.get("/ui/schedules?page=2")).text
    assert "bulk 23" in page2 and "bulk 29" in page2 and "berlin" not in page2
    only_paused = (await b.get("/ui/schedules?status=paused")).text
    assert "quarter hours" in only_paused and "berlin" not in only_paused
    text = (await b.get("/ui/schedules?q=BERLIN")).text
    assert "berlin mornings" in text and "bulk" not in text and "1 in all" in text
    assert "match this filter" in (await b.get("/ui/schedules?q=100%25")).text
    # nonsense filters are ignored, never a 500
    assert (await b.get("/ui/schedules?status=zzz&page=-4")).status_code == 200


async def test_schedule_page_shows_fields_next_ten_times_runs_and_chart(
        api: Api, clock: FakeClock) -> None:
    s = await make_schedule(api, name="every quarter", schedule_expression="15m")
    for _ in range(3):
        assert (await api.post(f"/v1/schedules/{s['id']}/trigger")).status_code == 202
    await wait_runs_done(api, 3)
    b = await signed_in(api)
    page = (await b.get(f"/ui/schedules/{s['id']}")).text
    upcoming = re.search(r'<ol id="upcoming">(.*?)</ol>', page, re.S)
    assert upcoming is not None
    times = re.findall(r'datetime="([^"]+)"', upcoming[1])
    created = s["created_at"]
    assert len(times) == 10 and times[0] == s["next_run_at"]
    assert times == sorted(times) and created < times[0]
    assert '<svg class="chart"' in page and page.count("<circle") == 6  # 2 panels x 3 runs
    for field in ("retry_backoff_seconds", "pause_on_failure_count", "created_at"):
        assert f"<dt>{field}</dt>" in page
    assert "every 15 minutes" in page


async def wait_runs_done(api: Api, n: int) -> None:
    import asyncio

    for _ in range(200):
        runs = (await api.get("/v1/runs?limit=100")).json()["runs"]
        if len([r for r in runs if r["status"] == "succeeded"]) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} runs ended")


async def test_actions_from_the_console_do_what_the_api_does(api: Api) -> None:
    s = await make_schedule(api)
    b = await signed_in(api)
    await b.get(f"/ui/schedules/{s['id']}")
    r = await b.post(f"/ui/schedules/{s['id']}/pause")
    assert r.status_code == 303
    assert (await api.get(f"/v1/schedules/{s['id']}")).json()["status"] == "paused"
    assert "Paused." in (await b.get(r.headers["location"])).text
    await b.post(f"/ui/schedules/{s['id']}/resume")
    assert (await api.get(f"/v1/schedules/{s['id']}")).json()["status"] == "active"
    r = await b.post(f"/ui/schedules/{s['id']}/trigger")
    run_id = r.headers["location"].split("/")[-1].split("?")[0]
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert run["trigger_type"] == "manual" and run["schedule_id"] == s["id"]
    r = await b.post(f"/ui/schedules/{s['id']}/delete")
    assert r.headers["location"] == "/ui/schedules?notice=deleted"
    assert (await api.get(f"/v1/schedules/{s['id']}")).status_code == 404


async def test_cancel_and_retry_a_run(api: Api) -> None:
    s = await make_schedule(api, action_type="worker", action_config={"queue": "q1"})
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    b = await signed_in(api)
    page = (await b.get(f"/ui/runs/{run['id']}")).text
    assert 'id="cancel"' in page and "/retry" not in page
    r = await b.post(f"/ui/runs/{run['id']}/cancel", {"reason": "not today"})
    assert r.status_code == 303
    cancelled = (await api.get(f"/v1/runs/{run['id']}")).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "not today"
    page = (await b.get(f"/ui/runs/{run['id']}")).text
    assert "/retry" in page and 'id="cancel"' not in page
    r = await b.post(f"/ui/runs/{run['id']}/retry")
    new_id = r.headers["location"].split("/")[-1].split("?")[0]
    new = (await api.get(f"/v1/runs/{new_id}")).json()
    assert new["previous_attempt_run_id"] == run["id"] and new["attempt"] == 2
    page = (await b.get(f"/ui/runs/{new_id}")).text
    chain = page[page.index('<ol id="chain">'):]
    assert chain.index(run["id"]) < chain.index(new_id)
    # a second retry of the old attempt is a conflict, shown as a page
    r = await b.post(f"/ui/runs/{run['id']}/retry")
    assert r.status_code == 409 and "Not possible now" in r.text


async def test_runs_filter_by_status(api: Api) -> None:
    s = await make_schedule(api, action_type="worker", action_config={"queue": "q1"})
    first = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    second = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    await api.post(f"/v1/runs/{first['id']}/cancel", json={})
    b = await signed_in(api)
    page = (await b.get("/ui/runs?status=cancelled")).text
    assert first["id"] in page and second["id"] not in page
    page = (await b.get("/ui/runs?status=pending")).text
    assert second["id"] in page and first["id"] not in page


# ------------------------------------------------------------------------------ create
FORM = {"name": "form made", "schedule_type": "cron", "schedule_expression": "0 9 * * 1-5",
        "timezone": "Europe/Berlin", "action_type": "webhook",
        "url": "http://127.0.0.1:9/hook", "method": "POST", "max_retries": "2",
        "retry_backoff_seconds": "30", "catchup_window_minutes": "5",
        "overlap_policy": "SKIP", "payload": '{"hello": "world"}'}


async def test_create_through_the_form(api: Api) -> None:
    b = await signed_in(api)
    await b.get("/ui/schedules/new")
    r = await b.post("/ui/schedules", FORM)
    assert r.status_code == 303, r.text
    sid = r.headers["location"].split("/")[-1].split("?")[0]
    s = (await api.get(f"/v1/schedules/{sid}")).json()
    assert (s["name"], s["schedule_expression"], s["timezone"], s["max_retries"]) == (
        "form made", "0 9 * * 1-5", "Europe/Berlin", 2)
    assert s["action_config"]["url"] == "http://127.0.0.1:9/hook"
    assert s["action_config"]["body"] == {"hello": "world"}


@pytest.mark.parametrize(("change", "field", "api_change"), [
    ({"schedule_expression": "0 9 * *"}, "schedule_expression", None),
    ({"timezone": "Mars/Olympus"}, "timezone", None),
    ({"max_retries": "11"}, "max_retries", {"max_retries": 11}),
    ({"max_retries": "three"}, "max_retries", {"max_retries": "three"}),
    ({"url": "ftp://x"}, "url", {"action_config": {"url": "ftp://x"}}),
    ({"name": "n" * 201}, "name", None),
    ({"schedule_type": "once", "schedule_expression": "2001-01-01T00:00:00"},
     "schedule_expression", None),
])
async def test_a_form_error_shows_the_apis_422_message_next_to_its_field(
        api: Api, change: dict[str, str], field: str, api_change: dict[str, Any] | None) -> None:
    b = await signed_in(api)
    await b.get("/ui/schedules/new")
    r = await b.post("/ui/schedules", {**FORM, **change})
    assert r.status_code == 422
    shown = errors_of(r.text)
    body = {"name": FORM["name"], "schedule_type": FORM["schedule_type"],
            "schedule_expression": FORM["schedule_expression"], "timezone": FORM["timezone"],
            "action_type": "webhook", "action_config": {"url": FORM["url"]},
            "max_retries": 2, "retry_backoff_seconds": 30, "catchup_window_minutes": 5}
    body.update(api_change or {k: v for k, v in change.items()})
    answer = await api.post("/v1/schedules", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert shown == {field: detail["msg"]}, (shown, detail)
    # what was typed is kept
    assert f'value="{change.get("schedule_expression", FORM["schedule_expression"])}"' in r.text
    assert (await api.get("/v1/schedules")).json()["total"] == 0


async def test_preview_is_the_same_service_as_v1_preview(api: Api) -> None:
    b = await signed_in(api)
    q = "schedule_type=cron&schedule_expression=0+9+*+*+1-5&timezone=Europe%2FBerlin"
    fragment = (await b.get(f"/ui/preview?{q}")).text
    times = re.findall(r'datetime="([^"]+)"', fragment)
    assert times == (await api.get(f"/v1/preview?{q}")).json()["times"]
    assert "at 09:00 on weekdays, Europe/Berlin" in fragment
    bad = (await b.get("/ui/preview?schedule_type=cron&schedule_expression=61+*+*+*+*")).text
    api_bad = (await api.get("/v1/preview?schedule_type=cron&schedule_expression=61+*+*+*+*"))
    import html

    assert html.escape(api_bad.json()["detail"][0]["msg"], quote=False) in bad


async def test_health_page(api: Api) -> None:
    s = await make_schedule(api, action_type="worker", action_config={"queue": "q"},
                            max_retries=0)
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    await api.post("/v1/worker/claim", json={"queues": ["q"], "worker_id": "w",
                                             "wait_seconds": 0})
    await api.post(f"/v1/runs/{run['id']}/complete", json={"worker_id": "w",
                                                           "status": "failed"})
    b = await signed_in(api)
    page = (await b.get("/ui/health")).text
    assert re.search(r'id="failed">1<', page)
    assert re.search(r'id="backlog">\d+<', page)
    assert re.search(r"<p>1 runs", page), page


# ------------------------------------------------------------------------------ hygiene
EXTERNAL = re.compile(r'''(?:src|href|action|xlink:href)\s*=\s*["']?\s*(?:[a-z]+:)?//''', re.I)


async def test_no_page_references_anything_outside_the_daemon(api: Api) -> None:
    s = await make_schedule(api)
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    b = await signed_in(api)
    pages = ["/ui/schedules", f"/ui/schedules/{s['id']}", "/ui/schedules/new", "/ui/runs",
             f"/ui/runs/{run['id']}", "/ui/health",
             "/ui/preview?schedule_type=cron&schedule_expression=*+*+*+*+*"]
    for path in pages:
        r = await b.get(path)
        assert r.status_code == 200, path
        assert not EXTERNAL.search(r.text), (path, EXTERNAL.search(r.text))
        assert "url(" not in r.text and "@import" not in r.text, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
        for ref in re.findall(r'(?:src|href)="([^"]+)"', r.text):
            assert ref.startswith("/ui/"), (path, ref)
    assert not EXTERNAL.search((await Browser(api).get("/ui/signin")).text)
    css = (await b.get("/ui/static/console.css")).text
    assert "url(" not in css and "@import" not in css
    js = await b.get("/ui/static/htmx.min.js")
    assert js.status_code == 200 and js.text.startswith("/*! htmx 2.0.11")
    assert (await b.get("/ui/static/../../schedd.db.key")).status_code == 404


async def test_the_console_is_not_in_the_openapi_document(api: Api) -> None:
    doc = (await api.client.get("/schema/openapi.json")).json()
    assert doc["paths"] and not [p for p in doc["paths"] if p.startswith("/ui")]


def _sign_in_sync(client: Any, key: str) -> dict[str, str]:
    page = client.get("/ui/signin")
    r = client.post("/ui/signin", data={"key": key, "csrf": CSRF.findall(page.text)[0]},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return dict(client.cookies)


def test_the_secret_is_kept_in_the_database_and_survives_restarts(
        make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    from litestar.testing import TestClient

    settings = make_settings()
    with TestClient(app=build_app(settings, clock)) as client:
        secret = client.app.state.services.console_secret
        assert secret is not None and len(secret) == 64
        cookies = _sign_in_sync(client, Path(settings.db + ".key").read_text().strip())
    assert not Path(settings.db + ".console-secret").exists()  # no file any more
    with TestClient(app=build_app(settings, clock)) as client:
        assert client.app.state.services.console_secret == secret
        client.cookies.update(cookies)
        assert client.get("/ui/schedules", follow_redirects=False).status_code == 200


def test_an_earlier_versions_secret_file_is_carried_into_the_database(
        make_settings: Callable[..., Settings], clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade: the file <db>.console-secret of an earlier version becomes the shared
    secret, so a cookie it signed stays valid; the secret is never logged."""
    from litestar.testing import TestClient

    settings = make_settings()
    legacy = Path(settings.db + ".console-secret")
    old_secret = "ab" * 32
    legacy.write_text(old_secret + "\n")
    with caplog.at_level("INFO"), TestClient(app=build_app(settings, clock)) as client:
        assert client.app.state.services.console_secret == old_secret.encode()
        cookies = _sign_in_sync(client, Path(settings.db + ".key").read_text().strip())
    token = cookies[session.SESSION_COOKIE].split(".")[0]
    assert cookies[session.SESSION_COOKIE] == session.session_cookie(old_secret.encode(), token)
    assert "moved from" in caplog.text and old_secret not in caplog.text
    legacy.write_text("cd" * 32 + "\n")  # read once: the database holds it now
    with TestClient(app=build_app(settings, clock)) as client:
        assert client.app.state.services.console_secret == old_secret.encode()
        client.cookies.update(cookies)
        assert client.get("/ui/schedules", follow_redirects=False).status_code == 200


async def test_the_console_can_be_switched_off(
        make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    settings = make_settings(console_enabled=False)
    async with AsyncTestClient(app=build_app(settings, clock)) as client:
        assert (await client.get("/ui/signin")).status_code == 404
        assert not Path(settings.db + ".console-secret").exists()


async def test_entity_definitions_and_their_record_counts(api: Api) -> None:
    b = await signed_in(api)
    if getattr(api.services, "entities", None) is None:
        # a build without entity records (SPEC §3.7): no link, and the page is the 404
        assert 'href="/ui/entities"' not in (await b.get("/ui/schedules")).text
        assert (await b.get("/ui/entities")).status_code == 404
        return
    r = await api.post("/v1/entity-definitions", json={
        "name": "customers", "description": "paying ones",
        "fields": {"renewal": "date", "plan": "string"}})
    assert r.status_code == 201, r.text
    d = r.json()
    for key in ("c1", "c2", "c3"):
        r = await api.put(f"/v1/entity-definitions/{d['id']}/records/{key}",
                          json={"data": {"renewal": "2027-01-15", "plan": "pro"}})
        assert r.status_code == 201, r.text
    other = await api.other_tenant("tenant-e")
    assert (await other.post("/v1/entity-definitions", json={
        "name": "theirs-def", "fields": {"d": "date"}})).status_code == 201
    page = (await b.get("/ui/schedules")).text
    assert 'href="/ui/entities"' in page
    page = (await b.get("/ui/entities")).text
    row = re.search(rf'<tr data-id="{d["id"]}">(.*?)</tr>', page, re.S)
    assert row is not None and "customers" in row[1] and "paying ones" in row[1]
    assert '<td class="record-count">3</td>' in row[1]
    assert "renewal" in row[1] and "date" in row[1]
    assert "theirs-def" not in page
    # a relative schedule over it: its timing in words, its next occurrences per record
    r = await api.post("/v1/schedules", json=schedule_body(
        name="renewal reminder", schedule_type="relative", schedule_expression="09:00",
        timezone="Europe/Berlin", relative_entity_definition_id=d["id"],
        relative_field_name="renewal", relative_offset_days=-3))
    assert r.status_code == 201, r.text
    page = (await b.get(f"/ui/schedules/{r.json()['id']}")).text
    assert "at 09:00, 3 days before each record&#39;s renewal, Europe/Berlin" in page
    upcoming = re.search(r'<ol id="upcoming">(.*?)</ol>', page, re.S)
    assert upcoming is not None
    assert re.findall(r'datetime="([^"]+)"', upcoming[1]) == ["2027-01-12T08:00:00.000Z"] * 3
    assert sorted(re.findall(r'record <span class="mono">(c\d)</span>', upcoming[1])) == [
        "c1", "c2", "c3"]


@pytest.mark.parametrize(("stype", "expr", "tz", "extra", "words"), [
    ("cron", "0 9 * * 1-5", "Europe/Berlin", {}, "at 09:00 on weekdays, Europe/Berlin"),
    ("cron", "*/15 * * * *", "UTC", {}, "every 15 minutes, UTC"),
    ("cron", "0 */2 * * *", "UTC", {}, "every 2 hours, UTC"),
    ("cron", "@daily", "UTC", {}, "at 00:00 every day, UTC"),
    ("cron", "0 10 * * 6,0", "UTC", {}, "at 10:00 on weekends, UTC"),
    ("interval", "15m", "UTC", {}, "every 15 minutes"),
    ("interval", "1h30m", "UTC", {}, "every 1 hour 30 minutes"),
    ("interval", "PT1M", "UTC", {}, "every minute"),
    ("interval", "1.5s", "UTC", {}, "every 1.5 seconds"),
    ("once", "2026-12-01T09:00:00", "Europe/Berlin", {},
     "once, on 2026-12-01 at 09:00, Europe/Berlin"),
    ("relative", "09:00", "UTC", {"field": "renewal", "offset_days": -3},
     "at 09:00, 3 days before each record's renewal, UTC"),
    ("relative", "", "UTC", {"field": "due", "offset_days": 0},
     "at 00:00, on each record's due, UTC"),
    ("cron", "not cron", "UTC", {}, "not cron"),  # unreadable: the expression as it is
])
def test_timing_in_words(stype: str, expr: str, tz: str, extra: dict[str, Any],
                         words: str) -> None:
    from schedd.console.words import in_words

    assert in_words(stype, expr, tz, **extra) == words


async def test_a_run_page_names_the_node_that_ran_it(api: Api) -> None:
    """Not in /v1's run object (SPEC §3.5 lists its fields): the console shows which
    `schedd serve` process ran a run (docs/operations.md "Running several nodes")."""
    s = await make_schedule(api, action_type="noop", action_config={})
    run = (await api.post(f"/v1/schedules/{s['id']}/trigger")).json()
    for _ in range(200):  # the engine starts it on its own loop (bounded poll)
        got = (await api.get(f"/v1/runs/{run['id']}")).json()
        if got["status"] == "succeeded":
            break
        await asyncio.sleep(0.02)
    assert got["status"] == "succeeded" and "node_id" not in got
    b = await signed_in(api)
    page = (await b.get(f"/ui/runs/{run['id']}")).text
    node_id = api.services.engine.node_id
    assert 'id="run-node" title="the schedd serve process that ran it' in page
    assert f">{node_id}</dd>" in page
    # a worker's run was run by no node: no such row
    w = await make_schedule(api, action_type="worker", action_config={"queue": "q1"})
    queued = (await api.post(f"/v1/schedules/{w['id']}/trigger")).json()
    assert 'id="run-node"' not in (await b.get(f"/ui/runs/{queued['id']}")).text
