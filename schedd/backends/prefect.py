"""The `prefect` backend: a Prefect 3 server runs the sync (through its REST API).

- start: `POST {apiUrl}/deployments/{deploymentId}/create_flow_run` with parameters
  `{"sync_id", "run_id", "run_mode", "entities"}` and `idempotency_key` = the schedd run id,
  so asking again (after a restart) finds the same flow run instead of making a second one;
- poll: `GET {apiUrl}/flow_runs/{id}`: its state goes to backendStatus; COMPLETED ends the
  run succeeded, FAILED and CRASHED failed (`backend_failed`, `backend_crashed`), CANCELLED
  cancelled;
- cancel: `POST {apiUrl}/flow_runs/{id}/set_state` — CANCELLED while nothing runs it yet
  (SCHEDULED, PENDING, PAUSED), else CANCELLING, which the Prefect worker running it turns
  into CANCELLED (what Prefect's own `flow-run cancel` does).

A connection error, a timeout or a 5xx answer is `BackendUnavailable` (retried by the
driver for a while); a 4xx answer is `BackendRefused`.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import msgspec

from schedd.backends import BackendRefused, BackendUnavailable, Job, RemoteState
from schedd.errors import InvalidField

NAME = "prefect"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
NOT_STARTED = {"SCHEDULED", "PENDING", "PAUSED"}
DEFAULTS = {"pollIntervalSeconds": 2.0, "requestTimeoutSeconds": 10.0,
            "unavailableToleranceSeconds": 60.0}
_LIMITS = {"pollIntervalSeconds": (0.05, 3600.0), "requestTimeoutSeconds": (0.1, 300.0),
           "unavailableToleranceSeconds": (0.0, 86_400.0)}
KEYS = ("apiUrl", "deploymentId", "uiUrl", *DEFAULTS)


def _loc(*parts: str) -> tuple[str, ...]:
    return ("body", "executionConfig", *parts)


def _url(config: dict[str, Any], key: str) -> str:
    value = config[key]
    if (not isinstance(value, str) or not value.startswith(("http://", "https://"))
            or len(value) > 2000 or any(ch.isspace() for ch in value)):
        raise InvalidField(_loc(key), "must be an http(s) URL (the Prefect API, e.g. "
                           "http://127.0.0.1:4200/api)")
    return value.rstrip("/")


def validate(config: dict[str, Any], *, complete: bool) -> dict[str, Any]:
    """The executionConfig of a prefect sync, normalised. `complete`: apiUrl and
    deploymentId are required (an active sync); a draft may lack them."""
    unknown = sorted(set(config) - set(KEYS) - {"maxRetries", "retryBackoffSeconds"})
    if unknown:
        raise InvalidField(_loc(unknown[0]), f"unknown key; a prefect executionConfig has "
                           f"{', '.join(KEYS)}", "extra_forbidden")
    out: dict[str, Any] = {}
    for key in ("apiUrl", "deploymentId"):
        if key not in config:
            if complete:
                raise InvalidField(_loc(key), "required for the prefect backend", "missing")
            continue
        if key == "apiUrl":
            out[key] = _url(config, key)
        else:
            try:
                out[key] = str(uuid.UUID(str(config[key])))
            except ValueError:
                raise InvalidField(_loc(key), "must be a Prefect deployment id (a UUID)",
                                   "uuid_parsing") from None
    if "uiUrl" in config:
        out["uiUrl"] = _url(config, "uiUrl")
    for key, default in DEFAULTS.items():
        value = config.get(key, default)
        low, high = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            raise InvalidField(_loc(key), f"must be a number from {low:g} to {high:g}")
        out[key] = float(value)
    return out


def action_config(sync_id: str, entities: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """The `backend` action a prefect sync's schedule carries."""
    return {
        "backend": NAME, "sync_id": sync_id, "entities": list(entities),
        "api_url": cfg.get("apiUrl"), "deployment_id": cfg.get("deploymentId"),
        "ui_url": cfg.get("uiUrl"),
        "poll_interval_seconds": cfg.get("pollIntervalSeconds",
                                         DEFAULTS["pollIntervalSeconds"]),
        "request_timeout_seconds": cfg.get("requestTimeoutSeconds",
                                           DEFAULTS["requestTimeoutSeconds"]),
        "unavailable_tolerance_seconds": cfg.get("unavailableToleranceSeconds",
                                                 DEFAULTS["unavailableToleranceSeconds"]),
    }


def _ui_url(config: dict[str, Any], flow_run_id: str) -> str | None:
    base = config.get("ui_url")
    if not base:
        api = str(config.get("api_url") or "")
        if not api.endswith("/api"):
            return None
        base = api[: -len("/api")]
    return f"{base}/runs/flow-run/{flow_run_id}"


class PrefectBackend:
    """Talks to Prefect servers over one aiohttp session (open it with `async with`)."""

    name = NAME

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PrefectBackend:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _call(self, job: Job, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            raise RuntimeError("PrefectBackend is not open (use `async with`)")
        cfg = job.config
        url = f"{cfg['api_url']}{path}"
        timeout = float(cfg.get("request_timeout_seconds", DEFAULTS["requestTimeoutSeconds"]))
        try:
            async with self._session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                text = (await _read_capped(resp)).decode("utf-8", "replace")
                if resp.status >= 500:
                    raise BackendUnavailable(f"HTTP {resp.status} from {method} {path}")
                if resp.status >= 400:
                    raise BackendRefused(f"HTTP {resp.status} from {method} {path}: "
                                         f"{text[:200]}")
                try:
                    return msgspec.json.decode(text)
                except msgspec.DecodeError:
                    raise BackendUnavailable(f"an answer that is not JSON from {method} "
                                             f"{path}") from None
        except TimeoutError:
            raise BackendUnavailable(f"no answer within {timeout:g} s to {method} "
                                     f"{path}") from None
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from None
        except OSError as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from None

    def _state(self, job: Job, flow_run: Any) -> RemoteState:
        if not isinstance(flow_run, dict) or not isinstance(flow_run.get("id"), str):
            raise BackendUnavailable("the flow run answer has no id")
        fr_id: str = flow_run["id"]
        raw_state = flow_run.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        stype = str(flow_run.get("state_type") or state.get("type") or "UNKNOWN")
        sname = flow_run.get("state_name") or state.get("name")
        message = state.get("message")
        status = {"flowRunId": fr_id, "flowRunName": flow_run.get("name"),
                  "stateType": stype, "stateName": sname, "stateMessage": message,
                  "stateTimestamp": state.get("timestamp")}
        final = stype in FINAL
        return RemoteState(
            ref=fr_id, url=_ui_url(job.config, fr_id), final=final,
            ok=stype == "COMPLETED", cancelled=stype == "CANCELLED",
            error_code={"FAILED": "backend_failed", "CRASHED": "backend_crashed"}.get(stype),
            message=(f"Prefect flow run {sname or stype}" + (f": {message}" if message else "")
                     if final and stype != "COMPLETED" else None),
            status=status,
        )

    async def start(self, job: Job) -> RemoteState:
        cfg = job.config
        if not cfg.get("api_url") or not cfg.get("deployment_id"):
            raise BackendRefused("the sync's executionConfig has no apiUrl or deploymentId")
        body = {
            "parameters": {"sync_id": job.sync_id, "run_id": job.run_id,
                           "run_mode": job.run_mode, "entities": cfg.get("entities") or []},
            "idempotency_key": f"schedd-{job.run_id}",
            "tags": ["schedd"],
        }
        flow_run = await self._call(job, "POST",
                                    f"/deployments/{cfg['deployment_id']}/create_flow_run", body)
        return self._state(job, flow_run)

    async def poll(self, job: Job, ref: str) -> RemoteState:
        return self._state(job, await self._call(job, "GET", f"/flow_runs/{ref}"))

    async def cancel(self, job: Job, ref: str) -> None:
        current = self._state(job, await self._call(job, "GET", f"/flow_runs/{ref}"))
        if current.final:
            return
        stype = current.status.get("stateType")
        target = ("CANCELLED", "Cancelled") if stype in NOT_STARTED else (
            "CANCELLING", "Cancelling")
        await self._call(job, "POST", f"/flow_runs/{ref}/set_state", {
            "state": {"type": target[0], "name": target[1],
                      "message": "cancelled through schedd"},
            "force": True,
        })


ANSWER_CAP = 1024 * 1024


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most ANSWER_CAP bytes (a flow run is a few KiB)."""
    buf = bytearray()
    while len(buf) < ANSWER_CAP:
        chunk = await resp.content.read(ANSWER_CAP - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
