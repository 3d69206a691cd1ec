"""An external sync worker, as a separate process (SPEC 3.6), for the end-to-end tests.

    python tests/sync_worker.py URL KEY QUEUE WORKER_ID MODE COUNT OUT

MODE:
- complete: claim COUNT runs one after the other; heartbeat each once, then complete it
  succeeded with a result;
- stall:    claim one run (lease 1 s) and never heartbeat again (a worker that hung);
- watch:    claim one run and heartbeat every 0.1 s until the answer says the run was
  cancelled, then stop.
Every event is one JSON line appended to OUT; the process gives up after 30 s.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> int:
    url, key, queue, worker, mode, count, out = sys.argv[1:8]
    deadline = time.monotonic() + 30
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=15)

    def note(**event: object) -> None:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    done = 0
    while done < int(count) and time.monotonic() < deadline:
        lease = 1 if mode == "stall" else 30
        r = client.post("/v1/worker/claim", json={"queues": [queue], "worker_id": worker,
                                                  "wait_seconds": 2, "lease_seconds": lease})
        if r.status_code == 204:
            continue
        r.raise_for_status()
        run = r.json()
        note(event="claimed", run_id=run["id"], payload=run["resolved_payload"])
        if mode == "stall":
            return 0
        if mode == "watch":
            while time.monotonic() < deadline:
                hb = client.post(f"/v1/runs/{run['id']}/heartbeat",
                                 json={"worker_id": worker, "lease_seconds": 30})
                hb.raise_for_status()
                if hb.json()["cancel_requested"]:
                    note(event="cancel_seen", run_id=run["id"])
                    return 0
                time.sleep(0.1)
            return 1
        hb = client.post(f"/v1/runs/{run['id']}/heartbeat",
                         json={"worker_id": worker, "lease_seconds": 30})
        hb.raise_for_status()
        r = client.post(f"/v1/runs/{run['id']}/complete", json={
            "worker_id": worker, "status": "succeeded",
            "result": {"rowsWritten": 10 + done, "worker": worker}})
        r.raise_for_status()
        note(event="completed", run_id=run["id"])
        done += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
