"""The engine, split by job so each part can be read alone:

- `planning` (pure): what a due schedule produces — its occurrences up to now turned into
  runs, missed and skipped records, and its next_run_ms. Tested by tables.
- `claiming`: the transaction side of planning — reads the due schedules and pending runs,
  writes what planning decided, resolves each starting run's payload once (`Preparer`).
- `recording`: how runs end — outcomes, retries, tallies, the pause after repeated
  failures, cancellation; in the caller's write transaction.
- `leases`: runs of worker queues, leased to external workers (claim, heartbeat, complete,
  expiry).
- `nodes`: the runs a node executes itself, leased to it and renewed while they run; a dead
  node's runs failed `interrupted` after their lease (several nodes on one database).
- `loop`: the Engine that drives them — one write transaction per cycle, actions started
  after its commit, the sleep until the next due instant — and the public API services,
  the daemon and the tests use.
- `effects`: what a transaction leaves for the loop to do after its commit.

Only `loop` and `leases` touch asyncio; only the store runs SQL. This package re-exports what
callers outside it use.
"""

from schedd.engine.loop import SLOW_WEBHOOK_MS, AlsoTx, Engine
from schedd.engine.nodes import new_node_id
from schedd.engine.planning import (
    config_of,
    context_for,
    merge_config,
    missed_note,
    missed_run,
    timer_for,
)

__all__ = [
    "SLOW_WEBHOOK_MS",
    "AlsoTx",
    "Engine",
    "config_of",
    "context_for",
    "merge_config",
    "missed_note",
    "missed_run",
    "new_node_id",
    "timer_for",
]
