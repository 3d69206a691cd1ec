"""Make the screenshots of docs/console.md: start the real daemon on a temporary database,
fill it with a few schedules and runs, and photograph the main pages in Debian's headless
Chromium (the same setup as tests/test_console_browser.py). PNGs are 1000 px wide and
reduced to a 256-colour palette (Pillow, when installed) to stay well under 150 KB.

    .venv/bin/pip install pillow     # optional, for the small files
    .venv/bin/python docs/console/screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.daemon_kit import Daemon  # noqa: E402
from tests.sink import Sink  # noqa: E402
from tests.test_console_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

OUT = Path(__file__).resolve().parent
WIDTH = 1000
MAX_HEIGHT = 1500  # the top of a long page: what the docs talk about


async def populate(d: Daemon, sink: Sink) -> dict[str, str]:
    sink.route("/report", delay=0.0)
    sink.route("/flaky", status=503, body=b'{"error": "upstream down"}')
    berlin = await d.create_schedule(
        name="Morning report", schedule_type="cron", schedule_expression="0 9 * * 1-5",
        timezone="Europe/Berlin", action_type="webhook",
        action_config={"url": sink.url("/report")},
        description="Sends the sales report to the team channel.")
    await d.create_schedule(name="Cache warm-up", schedule_type="interval",
                            schedule_expression="15m", action_type="noop", action_config={})
    await d.create_schedule(name="Invoice export", schedule_type="cron",
                            schedule_expression="30 2 1 * *", timezone="America/New_York",
                            action_type="worker", action_config={"queue": "exports"})
    await d.create_schedule(name="Year-end reminder", schedule_type="once",
                            schedule_expression="2027-12-31T17:00:00",
                            timezone="Europe/London", action_type="noop", action_config={})
    flaky = await d.create_schedule(
        name="Partner sync", schedule_type="interval", schedule_expression="1h",
        action_type="webhook", action_config={"url": sink.url("/flaky")}, max_retries=0)
    paused = await d.create_schedule(name="Old newsletter", schedule_type="cron",
                                     schedule_expression="0 8 * * MON", action_type="noop",
                                     action_config={})
    await d.post(f"/v1/schedules/{paused['id']}/pause")
    customers = (await d.post("/v1/entity-definitions", json={
        "name": "customers", "description": "Paying customers and their renewal dates.",
        "fields": {"renewal": "date", "plan": "string", "seats": "number"}})).json()
    await d.post(f"/v1/entity-definitions/{customers['id']}/records/batch", json={"upsert": [
        {"key": f"cust-{i:04d}", "data": {"renewal": f"2027-0{1 + i % 9}-{10 + i % 18}",
                                          "plan": "pro", "seats": i % 40}}
        for i in range(1280)]})
    await d.post("/v1/entity-definitions", json={
        "name": "devices", "fields": {"warranty_end": "date", "site": "string"}})
    await d.create_schedule(
        name="Renewal reminder", schedule_type="relative", schedule_expression="09:00",
        timezone="Europe/Berlin", relative_entity_definition_id=customers["id"],
        relative_field_name="renewal", relative_offset_days=-3, action_type="noop",
        action_config={})
    for i in range(14):  # runs with some spread of duration for the chart
        sink.route("/report", delay=0.02 + 0.03 * (i % 5) + 0.01 * (i % 3))
        run = (await d.post(f"/v1/schedules/{berlin['id']}/trigger")).json()
        await d.wait_run(run["id"], lambda r: r["status"] == "succeeded")
    run = (await d.post(f"/v1/schedules/{flaky['id']}/trigger")).json()
    failed = await d.wait_run(run["id"], lambda r: r["status"] == "failed")
    return {"schedule": berlin["id"], "failed_run": failed["id"]}


def shrink(path: Path) -> None:
    try:
        from PIL import Image
    except ImportError:
        return
    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


async def main() -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        async with Sink() as sink, Daemon(Path(tmp)) as d, async_playwright() as p:
            ids = await populate(d, sink)
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = await browser.new_context(viewport={"width": WIDTH, "height": 700},
                                            locale="en-GB", timezone_id="Europe/Berlin")
            page = await ctx.new_page()
            await page.goto(d.base_url + "/ui/signin")
            await page.fill("#key", d.key)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/ui/schedules")
            shots = {
                "schedules": "/ui/schedules",
                "schedule": f"/ui/schedules/{ids['schedule']}",
                "run": f"/ui/runs/{ids['failed_run']}",
                "entities": "/ui/entities",
                "health": "/ui/health",
            }
            for name, path in shots.items():
                await page.goto(d.base_url + path)
                height = await page.evaluate("document.documentElement.scrollHeight")
                await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True, clip={
                    "x": 0, "y": 0, "width": WIDTH, "height": min(height, MAX_HEIGHT)})
            await page.goto(d.base_url + "/ui/schedules/new")
            await page.fill("#name", "Weekly digest")
            await page.locator("#schedule_expression").press_sequentially("0 7 * * MON")
            await page.fill("#timezone", "Europe/Berlin")
            await page.locator("#timezone").press("End")
            await page.wait_for_selector("#preview-times li")
            await page.wait_for_timeout(400)
            await page.screenshot(path=str(OUT / "new.png"), full_page=True)
            await browser.close()
    for png in OUT.glob("*.png"):
        shrink(png)
        print(f"{png.name}: {png.stat().st_size // 1024} KB")


if __name__ == "__main__":
    asyncio.run(main())
