"""The `prefect` backend against a REAL Prefect 3 server (SQLite, on a free 127.0.0.1 port),
started once per session from its own virtualenv (`.ci/run` installs it at
/opt/schedd-prefect; SCHEDD_PREFECT_VENV names another). The tests create a flow and a
deployment through Prefect's REST API and drive each flow run's state through the same
API, as a Prefect worker would; schedd (the real daemon) creates, polls and cancels them.

Also here: a Prefect server that is down or hangs fails the run with a clear error and
never holds up the scheduler, and the SIGKILL test (a flow run started before the kill is
polled after the restart, not started twice; a worker's leased run survives it too)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_kit import Daemon, free_port, poll

# on SQLite and on PostgreSQL (tests/db_backend.py)
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("database_url"),
              pytest.mark.xdist_group("prefect")]

BASE = "/api/v1/syncs"
CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
VENV = Path(os.environ.get("SCHEDD_PREFECT_VENV", "/opt/schedd-prefect"))
START_TIMEOUT_S = 180  # a loaded CI box; ~15 s when quiet


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = VENV / "bin" / "prefect"
    if not exe.exists():
        reason = (f"prefect is not installed at {exe} (.ci/run installs it: "
                  f"python3 -m venv {VENV} && {VENV}/bin/pip install 'prefect>=3,<4')")
        if os.environ.get("SCHEDD_REQUIRE_PREFECT") == "1":
            pytest.fail(reason)
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    })
    log_path = home / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        # a free port can be taken by someone else before the server binds it: then the
        # server exits at once, and another port is tried
        for _ in range(3):
            port = free_port()
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
            api = f"http://127.0.0.1:{port}/api"
            if _wait_healthy(proc, api, log_path):
                break
        else:
            raise RuntimeError(f"prefect server did not start: {_tail(log_path)}")
        yield api
    finally:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def _wait_healthy(proc: subprocess.Popen[bytes], api: str, log_path: Path) -> bool:
    """True once the server answers /health; False when it exited (try another port)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return True
        if time.monotonic() > deadline:
            raise RuntimeError(f"prefect server did not answer within {START_TIMEOUT_S} s: "
                               f"{_tail(log_path)}")
        time.sleep(0.3)


# A loaded box makes Prefect's SQLite busy: it then answers 503 for a moment. The test's
# own calls (what a Prefect worker would do) ask again, bounded; schedd's are what is tested.
RETRIES = 40


def _post(c: httpx.Client, path: str, body: Any) -> Any:
    for _ in range(RETRIES):
        r = c.post(path, json=body)
        if r.status_code < 500:
            r.raise_for_status()
            return r.json()
        time.sleep(0.5)
    r.raise_for_status()
    return None


@pytest.fixture(scope="session")
def deployment(prefect_api: str) -> str:
    with httpx.Client(base_url=prefect_api, timeout=10) as c:
        flow = _post(c, "/flows/", {"name": f"schedd-sync-{uuid.uuid4().hex[:8]}"})
        dep = _post(c, "/deployments/", {"name": "sync", "flow_id": flow["id"]})
        out: str = dep["id"]
        return out


class Prefect:
    """Prefect's REST API, as a worker uses it."""

    def __init__(self, api: str) -> None:
        self.c = httpx.AsyncClient(base_url=api, timeout=10)

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        for _ in range(RETRIES):
            r = await self.c.request(method, path, json=body)
            if r.status_code < 500:
                break
            await asyncio.sleep(0.5)
        r.raise_for_status()
        return r

    async def flow_run(self, fr_id: str) -> dict[str, Any]:
        r = await self._call("GET", f"/flow_runs/{fr_id}")
        out: dict[str, Any] = r.json()
        return out

    async def set_state(self, fr_id: str, stype: str, message: str | None = None) -> None:
        name = stype.capitalize()
        r = await self._call("POST", f"/flow_runs/{fr_id}/set_state", {
            "state": {"type": stype, "name": name, "message": message}})
        assert r.json()["status"] == "ACCEPT", r.text

    async def runs_of(self, deployment_id: str, run_id: str) -> list[dict[str, Any]]:
        r = await self._call("POST", "/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": 200})
        return [fr for fr in r.json() if fr["parameters"].get("run_id") == run_id]


@pytest.fixture
async def prefect(prefect_api: str) -> AsyncIterator[Prefect]:
    p = Prefect(prefect_api)
    yield p
    await p.c.aclose()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with Daemon(tmp_path / "d") as d:
        yield d


async def prefect_sync(d: Daemon, api: str, deployment_id: str, **cfg: Any) -> dict[str, Any]:
    r = await d.post(BASE, json={
        "connectionId": CONN, "name": "prefect sync", "executionBackend": "prefect",
        "status": "active", "entities": ["orders", "refunds"], "providerKey": "shopify",
        "executionConfig": {"apiUrl": api, "deploymentId": deployment_id,
                            "pollIntervalSeconds": 0.1, "maxRetries": 0, **cfg}})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def sync_run(d: Daemon, run_id: str) -> dict[str, Any]:
    r = await d.get(f"{BASE}/runs/{run_id}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def started(d: Daemon, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = await poll(lambda: sync_run(d, run_id),
                                     lambda r: r["backendRunRef"] is not None, 15,
                                     "the flow run to be created")
    return run


async def test_a_flow_run_is_created_polled_and_completed(
    daemon: Daemon, prefect: Prefect, prefect_api: str, deployment: str
) -> None:
    d = daemon
    s = await prefect_sync(d, prefect_api, deployment)
    run = (await d.post(f"{BASE}/{s['id']}/trigger", json={"runMode": "full_refresh"})).json()
    run = await started(d, run["id"])
    fr_id = run["backendRunRef"]
    fr = await prefect.flow_run(fr_id)
    assert fr["deployment_id"] == deployment
    assert fr["parameters"] == {"sync_id": s["id"], "run_id": run["id"],
                                "run_mode": "full_refresh", "entities": ["orders", "refunds"]}
    assert fr["idempotency_key"] == f"schedd-{run['id']}"
    assert run["status"] == "running" and run["executionBackend"] == "prefect"
    assert run["backendStatus"]["stateType"] == "SCHEDULED"
    assert run["backendRunUrl"].endswith(f"/runs/flow-run/{fr_id}")
    await prefect.set_state(fr_id, "PENDING")
    await prefect.set_state(fr_id, "RUNNING")
    seen = await poll(lambda: sync_run(d, run["id"]),
                      lambda r: r["backendStatus"]["stateType"] == "RUNNING", 10,
                      "RUNNING to be polled")
    assert seen["status"] == "running" and seen["backendHeartbeatAt"] is not None
    await prefect.set_state(fr_id, "COMPLETED")
    done = await poll(lambda: sync_run(d, run["id"]), lambda r: r["status"] == "succeeded", 10,
                      "the run to succeed")
    assert done["resultClass"] == "success" and done["executorId"] == "schedd"
    assert done["summary"]["backendRunRef"] == fr_id
    assert done["summary"]["stateType"] == "COMPLETED"
    assert done["backendStatus"]["stateType"] == "COMPLETED"
    assert done["backendHeartbeatAt"] >= seen["backendHeartbeatAt"]
    assert len(await prefect.runs_of(deployment, run["id"])) == 1
    got = (await d.get(f"{BASE}/{s['id']}")).json()
    assert got["lastSuccessAt"] == done["completedAt"]


async def test_a_failed_flow_run_fails_the_run(
    daemon: Daemon, prefect: Prefect, prefect_api: str, deployment: str
) -> None:
    d = daemon
    s = await prefect_sync(d, prefect_api, deployment)
    run = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
    fr_id = run["backendRunRef"]
    await prefect.set_state(fr_id, "PENDING")
    await prefect.set_state(fr_id, "RUNNING")
    await prefect.set_state(fr_id, "FAILED", "the shop answered 503")
    done = await poll(lambda: sync_run(d, run["id"]), lambda r: r["status"] == "failed", 10,
                      "the run to fail")
    assert done["resultClass"] == "failure" and done["resultReasonCode"] == "backend_failed"
    assert "the shop answered 503" in done["error"]
    assert done["nextAttemptRunId"] is None  # maxRetries 0
    got = (await d.get(f"{BASE}/{s['id']}")).json()
    assert "the shop answered 503" in got["lastError"]


async def test_cancel_cancels_the_flow_run(
    daemon: Daemon, prefect: Prefect, prefect_api: str, deployment: str
) -> None:
    d = daemon
    s = await prefect_sync(d, prefect_api, deployment)
    # running in Prefect: CANCELLING, which the worker running it turns into CANCELLED
    run = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
    fr_id = run["backendRunRef"]
    await prefect.set_state(fr_id, "PENDING")
    await prefect.set_state(fr_id, "RUNNING")
    r = await d.post(f"{BASE}/runs/{run['id']}/cancel", json={"reason": "wrong shop"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    fr = await poll(lambda: prefect.flow_run(fr_id), lambda f: f["state_type"] == "CANCELLING",
                    10, "the flow run to be cancelling")
    assert "schedd" in (fr["state"]["message"] or "")
    await prefect.set_state(fr_id, "CANCELLED")
    # not started yet in Prefect: CANCELLED at once
    run2 = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
    r = await d.post(f"{BASE}/runs/{run2['id']}/cancel", json={})
    assert r.status_code == 200, r.text
    await poll(lambda: prefect.flow_run(run2["backendRunRef"]),
               lambda f: f["state_type"] == "CANCELLED", 10, "the flow run to be cancelled")
    final = await sync_run(d, run["id"])
    assert final["status"] == "cancelled" and final["cancelReason"] == "wrong shop"
    # and a flow run cancelled in Prefect ends its schedd run cancelled
    run3 = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
    await prefect.set_state(run3["backendRunRef"], "CANCELLED")
    got = await poll(lambda: sync_run(d, run3["id"]), lambda r: r["status"] == "cancelled", 10,
                     "the run to end cancelled")
    assert got["resultClass"] == "cancelled"


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Prefect)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


async def test_a_prefect_server_down_or_hanging_fails_runs_clearly_and_never_stalls_the_loop(
    daemon: Daemon
) -> None:
    d = daemon
    dep = str(uuid.uuid4())
    down = f"http://127.0.0.1:{free_port()}/api"
    heartbeat = await d.create_schedule(name="tick", schedule_type="interval",
                                        schedule_expression="1s", action_type="noop",
                                        action_config={})
    with silent_server() as port:
        hung = f"http://127.0.0.1:{port}/api"
        runs = {}
        for name, api in (("down", down), ("hung", hung)):
            s = await prefect_sync(d, api, dep, unavailableToleranceSeconds=1.5,
                                   requestTimeoutSeconds=0.5)
            runs[name] = (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"]
        before = len(await d.all_runs(heartbeat["id"]))
        for name, rid in runs.items():
            done = await poll(lambda rid=rid: sync_run(d, rid),
                              lambda r: r["status"] == "failed", 15, f"{name} to fail")
            assert done["resultReasonCode"] == "backend_unavailable", done
            assert "prefect at http://127.0.0.1:" in done["error"]
            assert "unavailable" in done["error"]
            assert ("no answer within 0.5 s" in done["error"]) == (name == "hung"), done["error"]
        after = len(await d.all_runs(heartbeat["id"]))
    assert after - before >= 1  # the every-second schedule kept firing meanwhile


async def test_sigkill_or_sigterm_a_flow_run_started_before_is_polled_after_restart_not_twice(
    tmp_path: Path, prefect: Prefect, prefect_api: str, deployment: str
) -> None:
    async with Daemon(tmp_path / "k") as d:
        s = await prefect_sync(d, prefect_api, deployment)
        ext = (await d.post(BASE, json={"connectionId": CONN, "name": "ext",
                                        "executionBackend": "external",
                                        "executionConfig": {"queue": "kill-q"}})).json()
        run = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
        fr_id = run["backendRunRef"]
        await prefect.set_state(fr_id, "PENDING")
        await prefect.set_state(fr_id, "RUNNING")
        xrun = (await d.post(f"{BASE}/{ext['id']}/trigger")).json()
        r = await d.post("/v1/worker/claim", json={"queues": ["kill-q"], "worker_id": "w1",
                                                   "wait_seconds": 5, "lease_seconds": 120})
        assert r.status_code == 200 and r.json()["id"] == xrun["id"]
        d.kill()
        await prefect.set_state(fr_id, "COMPLETED")  # it finished while schedd was down
        await d.start()
        done = await poll(lambda: sync_run(d, run["id"]), lambda r: r["status"] == "succeeded",
                          15, "the resumed run to succeed")
        assert done["attemptNumber"] == 1 and done["nextAttemptRunId"] is None
        assert done["backendRunRef"] == fr_id
        assert len(await prefect.runs_of(deployment, run["id"])) == 1  # not started twice
        assert (await d.get(f"{BASE}/{s['id']}/runs")).json()["total"] == 1
        # the worker's leased run survived the kill and completes on the new daemon
        r = await d.post(f"/v1/runs/{xrun['id']}/complete",
                         json={"worker_id": "w1", "status": "succeeded", "result": {"n": 1}})
        assert r.status_code == 200, r.text
        got = await sync_run(d, xrun["id"])
        assert got["status"] == "succeeded" and got["summary"] == {"n": 1}
        assert "resuming" in d.log_text()
        # a kill while the flow run is still running: after the restart it is polled on
        run2 = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
        d.kill()
        await d.start()
        await prefect.set_state(run2["backendRunRef"], "PENDING")
        await prefect.set_state(run2["backendRunRef"], "RUNNING")
        await prefect.set_state(run2["backendRunRef"], "COMPLETED")
        await poll(lambda: sync_run(d, run2["id"]), lambda r: r["status"] == "succeeded", 15,
                   "the second resumed run to succeed")
        assert len(await prefect.runs_of(deployment, run2["id"])) == 1
        # SIGTERM: schedd stops polling at once (nothing cancelled in Prefect), and polls
        # the same flow run after the next start
        run3 = await started(d, (await d.post(f"{BASE}/{s['id']}/trigger")).json()["id"])
        assert await d.stop() == 0
        assert (await prefect.flow_run(run3["backendRunRef"]))["state_type"] == "SCHEDULED"
        await d.start()
        await prefect.set_state(run3["backendRunRef"], "PENDING")
        await prefect.set_state(run3["backendRunRef"], "RUNNING")
        await prefect.set_state(run3["backendRunRef"], "COMPLETED")
        done3 = await poll(lambda: sync_run(d, run3["id"]),
                           lambda r: r["status"] == "succeeded", 15,
                           "the run resumed after SIGTERM to succeed")
        assert done3["attemptNumber"] == 1 and done3["error"] is None
        assert len(await prefect.runs_of(deployment, run3["id"])) == 1
        assert (await d.get(f"{BASE}/{s['id']}/runs")).json()["total"] == 3
        assert await d.stop() == 0
