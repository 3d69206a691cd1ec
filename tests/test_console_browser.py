"""The web console in a real browser: Debian's headless Chromium driven by Playwright
(`executable_path=/usr/bin/chromium`, never a downloaded browser), against the real daemon
(tests/daemon_kit.py). One journey, step by step, as a person would click it:

sign in (a wrong key first), create a cron schedule through the form and watch its preview
follow the typing, create a short interval and see it fire and its run appear, pause and
resume, trigger, cancel a slow webhook run and retry it, sign out and be refused.

On failure every page the journey visited is saved as a screenshot under the test's tmp
dir (the path is printed). `.ci/run` installs chromium and the playwright package when
they are missing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_kit import Daemon
from tests.sink import Sink

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("database_url")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STEP_TIMEOUT_MS = 10_000


def _require_browser() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(f"{CHROMIUM} is missing: `apt-get install chromium` "
                             "(.ci/run does it)")


class Journey:
    """The page, the steps taken, and every distinct page visited (for screenshots)."""

    def __init__(self, page: Any, base: str, shots: Path) -> None:
        self.page = page
        self.base = base
        self.shots = shots
        self.step = "start"
        self.visited: list[str] = []
        self.console_errors: list[str] = []
        page.on("framenavigated", self._navigated)
        # script errors and CSP refusals; not the 401/422 answers the journey asks for, nor
        # htmx's note that typing on replaced (hx-sync) a preview request still in flight
        page.on("console", lambda m: m.type == "error" and not m.text.startswith(
            ("Failed to load resource: the server responded with a status of 4",
             "htmx:sendAbort", "htmx:afterRequest")) and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())  # the confirmations: yes

    def _navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame and frame.url not in self.visited:
            self.visited.append(frame.url)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def text(self, selector: str) -> str:
        t: str = await self.page.locator(selector).first.inner_text()
        return t

    async def screenshots(self, context: Any) -> list[Path]:
        self.shots.mkdir(parents=True, exist_ok=True)
        saved = []
        here = self.shots / f"failed-at-{re.sub(r'[^a-z0-9]+', '-', self.step)}.png"
        await self.page.screenshot(path=str(here), full_page=True)
        saved.append(here)
        other = await context.new_page()
        for i, url in enumerate(self.visited[-12:]):
            name = re.sub(r"[^a-z0-9]+", "-", url.removeprefix(self.base).lower()).strip("-")
            path = self.shots / f"{i:02d}-{name or 'root'}.png"
            try:
                await other.goto(url, timeout=5000)
                await other.screenshot(path=str(path), full_page=True)
                saved.append(path)
            except Exception as exc:  # a screenshot must not hide the real failure
                print(f"no screenshot of {url}: {exc}")
        return saved


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def wait_for_reload(j: Journey, selector: str, what: str, timeout: float = 10.0) -> None:
    """Reload the page (bounded) until `selector` is on it: a run appearing, a status."""
    deadline = time.monotonic() + timeout
    while not await j.page.locator(selector).count():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not on {j.page.url} within {timeout} s")
        await j.page.wait_for_timeout(200)
        await j.page.reload()


async def test_a_person_uses_the_console(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    async with Sink() as sink, Daemon(tmp_path / "d") as d:
        sink.route("/slow", delay=60.0)
        context = await browser.new_context(locale="en-GB", timezone_id="America/New_York",
                                            viewport={"width": 1100, "height": 900})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        expect.set_options(timeout=STEP_TIMEOUT_MS)
        j = Journey(await context.new_page(), d.base_url, tmp_path / "screenshots")
        try:
            await journey(j, d, sink, context)
        except BaseException:
            saved = await j.screenshots(context)
            print(f"console journey failed at step {j.step!r}; screenshots:",
                  *map(str, saved), sep="\n  ")
            raise
        finally:
            await context.close()


async def journey(j: Journey, d: Daemon, sink: Sink, context: Any) -> None:
    from playwright.async_api import expect

    page = j.page

    j.step = "sign in"
    await j.goto("/ui/schedules")
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))
    await page.fill("#key", "sk_not_a_real_key")
    await page.click("button[type=submit]")
    await expect(page.locator("#signin-error")).to_have_text("That API key is not valid.")
    await page.fill("#key", d.key)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/ui/schedules$"))
    await expect(page.locator("h1")).to_have_text("Schedules")

    j.step = "create a cron schedule, its preview following the typing"
    await page.click("#new-schedule")
    await expect(page).to_have_url(re.compile(r"/ui/schedules/new$"))
    await page.fill("#name", "weekday mornings")
    await page.select_option("#schedule_type", "cron")
    await page.locator("#schedule_expression").press_sequentially("0 9 * *", delay=20)
    await expect(page.locator("#preview-error")).to_contain_text("expected 5 cron fields")
    await page.locator("#schedule_expression").press_sequentially(" 1-5", delay=20)
    await expect(page.locator("#preview-words")).to_have_text("at 09:00 on weekdays, UTC")
    await expect(page.locator("#preview-times li")).to_have_count(10)
    utc_first = await page.locator("#preview-times time").first.get_attribute("datetime")
    assert utc_first is not None and utc_first.endswith("T09:00:00.000Z")
    await page.fill("#timezone", "")
    await page.locator("#timezone").press_sequentially("Europe/Berlin", delay=10)
    await expect(page.locator("#preview-words")).to_have_text(
        "at 09:00 on weekdays, Europe/Berlin")
    berlin = await page.locator("#preview-times time").first.get_attribute("datetime")
    expected = (await d.get("/v1/preview", params={
        "schedule_type": "cron", "schedule_expression": "0 9 * * 1-5",
        "timezone": "Europe/Berlin"})).json()["times"][0]
    assert berlin == expected and berlin != utc_first
    # shown in the browser's zone (New York), UTC on hover
    first = page.locator("#preview-times time").first
    assert "UTC" in (await first.get_attribute("title") or "")
    assert re.search(r"\b0[23]:00:00\b", await first.inner_text())  # 09:00 Berlin in NY
    await page.click("#create")
    await expect(page.locator(".notice")).to_have_text("Schedule created.")
    await expect(page.locator("#words")).to_have_text("at 09:00 on weekdays, Europe/Berlin")
    await expect(page.locator("#upcoming li")).to_have_count(10)

    j.step = "a form error is shown next to its field"
    await j.goto("/ui/schedules/new")
    await page.fill("#name", "bad one")
    await page.select_option("#schedule_type", "interval")
    await page.fill("#schedule_expression", "15m")
    await page.select_option("#action_type", "webhook")
    await page.fill("#url", "ftp://nowhere")
    await page.click("#create")
    await expect(page.locator("#error-url")).to_be_visible()
    await expect(page.locator("#schedule_expression")).to_have_value("15m")

    j.step = "an interval schedule fires and its run appears"
    await page.fill("#name", "every two seconds")
    await page.select_option("#action_type", "noop")
    await page.fill("#schedule_expression", "2s")
    await page.click("#create")
    await expect(page.locator(".notice")).to_have_text("Schedule created.")
    await expect(page.locator("#words")).to_have_text("every 2 seconds")
    interval_url = page.url.split("?")[0]
    await wait_for_reload(j, "#runs tr[data-id]", "a fired run")
    await expect(page.locator("#runs tbody tr").first).to_contain_text("scheduled")
    await wait_for_reload(j, "svg.chart circle", "the runs chart")

    j.step = "pause and resume"
    await page.click("button:text('Pause')")
    await expect(page.locator(".notice")).to_have_text("Paused.")
    await expect(page.locator("h1 .badge")).to_have_text("paused")
    sid = interval_url.rsplit("/", 1)[1]
    assert (await d.get(f"/v1/schedules/{sid}")).json()["status"] == "paused"
    await page.click("button:text('Resume')")
    await expect(page.locator(".notice")).to_have_text("Resumed.")
    await expect(page.locator("h1 .badge")).to_have_text("active")
    await page.click("button:text('Pause')")  # quiet from here on
    await expect(page.locator("h1 .badge")).to_have_text("paused")

    j.step = "trigger"
    await page.click("button:text('Trigger now')")
    await expect(page.locator(".notice")).to_contain_text("Triggered")
    await expect(page.locator("#chain li")).to_have_count(1)
    run_id = page.url.split("?")[0].rsplit("/", 1)[1]
    assert (await d.get_run(run_id))["trigger_type"] == "manual"

    j.step = "cancel a slow run"
    slow = await d.create_schedule(
        name="slow hook", schedule_type="interval", schedule_expression="1h",
        action_type="webhook", action_config={"url": sink.url("/slow")}, max_retries=0)
    await j.goto(f"/ui/schedules/{slow['id']}")
    await page.click("button:text('Trigger now')")
    await sink.wait_for(1, timeout=10)
    await wait_for_reload(j, "#run-status .b-running", "the slow run running")
    await page.fill("input[name=reason]", "too slow")
    await page.click("#cancel")
    await expect(page.locator(".notice")).to_have_text("Cancel requested.")
    await wait_for_reload(j, "#run-status .b-cancelled", "the cancelled run")
    cancelled_id = page.url.split("?")[0].rsplit("/", 1)[1]
    run = await d.get_run(cancelled_id)
    assert run["status"] == "cancelled" and run["cancel_reason"] == "too slow"

    j.step = "retry it"
    await page.click("button:text('Retry')")
    await expect(page.locator(".notice")).to_contain_text("Retry queued")
    await expect(page.locator("#chain li")).to_have_count(2)
    retry_id = page.url.split("?")[0].rsplit("/", 1)[1]
    retry = await d.get_run(retry_id)
    assert retry["previous_attempt_run_id"] == cancelled_id and retry["attempt"] == 2
    await sink.wait_for(2, timeout=10)
    await wait_for_reload(j, "#cancel", "the retry's cancel button")
    await page.click("#cancel")  # do not leave it hanging
    await wait_for_reload(j, "#run-status .b-cancelled", "the cancelled retry")

    j.step = "runs and health pages"
    await j.goto("/ui/runs?status=cancelled")
    await expect(page.locator("#runs tbody tr")).to_have_count(2)
    await j.goto("/ui/health")
    await expect(page.locator("#ready")).to_contain_text("ready")

    j.step = "sign out and be refused"
    stolen = [c for c in await context.cookies() if c["name"] == "schedd_session"]
    assert len(stolen) == 1 and stolen[0]["httpOnly"] and stolen[0]["sameSite"] == "Strict"
    await page.click("#signout")
    await expect(page).to_have_url(re.compile(r"/ui/signin\?notice=signedout$"))
    await expect(page.locator(".notice")).to_have_text("Signed out.")
    await j.goto(interval_url.removeprefix(d.base_url))
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))
    await context.add_cookies(stolen)  # a copy of the old cookie is worth nothing now
    await j.goto("/ui/schedules")
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))

    j.step = "nothing broke in the browser"
    assert j.console_errors == [], j.console_errors
