"""Node leases: the runs a node executes itself (webhook, command, noop, backend), and how a
dead node's runs are found (docs/operations.md, "Running several nodes").

Every engine is a node, with an id new at every start. A run it starts carries `node_id`
and `node_lease_until_ms` (now + node_lease_seconds, written with the start: claiming.py).
Every third of the lease the loop's cycle calls `check_tx` with the runs to renew: one UPDATE
renews the leases of the runs executing here; the runs it could not renew ended elsewhere
meanwhile (a cancel through another node, or a failure by one after this node stalled past
the lease), so their actions stop. Every check (each second on a shared database, so that a
dead node's runs are retried within a second of their lease's end) also fails with
`interrupted` and follow their retry policy (a `backend` run is taken over instead: its
work goes on remotely, so this node polls it again, never starts it twice).

At start (`recover_tx`), an `exclusive` node (SQLite: one node owns the file) fails every
run left running, as a restart always did. On a shared database a node fails only what no
live node holds: runs whose lease ran out, runs of no node, and the runs of the nodes in
`previous` (its own earlier lives, known dead: schedd/node_file.py).

External workers' runs are not node runs: they hold a worker lease (leases.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

from schedd.engine.claiming import Preparer
from schedd.engine.effects import Effects
from schedd.engine.recording import Recorder
from schedd.models import ActionType, Run
from schedd.outcomes import Outcome
from schedd.store import Store, Tx

NODE_COLS = ("node_id", "node_lease_until_ms")
EXPIRE_BATCH = 1000  # expired node runs failed per check
AT_START = "schedd stopped while the action was running"


def new_node_id() -> str:
    """A node's id: new at every start of the daemon."""
    return "node-" + secrets.token_hex(6)


class NodeLeases:
    def __init__(self, store: Store, preparer: Preparer, recorder: Recorder, *,
                 node_id: str, lease_ms: int, exclusive: bool,
                 previous: Iterable[str] = ()) -> None:
        self.store = store
        self.preparer = preparer
        self.recorder = recorder
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.exclusive = exclusive
        self.previous = tuple(previous)

    def recover_tx(self, c: Tx, now: int, fx: Effects) -> int:
        """At start: fail (or take over) the runs no live process drives; how many failed."""
        stale = (self.store.unleased_running_runs(c) if self.exclusive
                 else self.store.recoverable_runs(c, now, self.previous))
        return self._fail_or_resume_tx(c, stale, now, fx, AT_START, at_start=True)

    def check_tx(self, c: Tx, now: int, renew: list[str] | None, fx: Effects) -> None:
        """Renew the leases of the runs executing here (`renew`; None: not their turn);
        stop the actions of those that ended elsewhere; fail or take over the runs of any
        node whose lease ran out."""
        if renew is not None:
            self._renew_tx(c, now, renew, fx)
        # not this node's own: their outcomes may be on the way to the writer in another
        # unit (a cycle and a tick at once); what this node forgot fails at its next start
        expired = self.store.expired_node_runs(c, now, EXPIRE_BATCH, other_than=self.node_id)
        if expired:
            nodes = ", ".join(sorted({r.node_id or "?" for r in expired}))
            self._fail_or_resume_tx(c, expired, now, fx, f"the lease of node {nodes} ran out "
                                    "while the action was running")

    def _renew_tx(self, c: Tx, now: int, renew: list[str], fx: Effects) -> None:
        kept = self.store.renew_node_leases(c, self.node_id, renew, now + self.lease_ms)
        lost = [rid for rid in renew if rid not in kept]
        if lost:
            fx.cancel_tasks.extend(lost)
            fx.note(logging.WARNING, "%d run(s) executing on node %s ended elsewhere; their "
                    "actions are stopped", len(lost), self.node_id)

    def _fail_or_resume_tx(self, c: Tx, stale: list[Run], now: int, fx: Effects,
                           why: str, *, at_start: bool = False) -> int:
        backend = [r for r in stale if r.action_type is ActionType.backend]
        if backend:
            schedules = self.store.schedules_by_ids(c, [r.schedule_id for r in backend])
            taken: list[Run] = []
            for r in backend:
                s = schedules.get(r.schedule_id)
                if s is not None:
                    r.node_id = self.node_id
                    r.node_lease_until_ms = now + self.lease_ms
                    taken.append(r)
                    fx.start.append((r, s, self.preparer.prepare(r, s)))
            self.store.update_runs(c, taken, NODE_COLS)
            resumed = {r.id for r in taken}
            stale = [r for r in stale if r.id not in resumed]
            if resumed and at_start:
                fx.note(logging.INFO, "%d backend run(s) were running when schedd last "
                        "stopped; resuming them", len(resumed))
            elif resumed:
                fx.note(logging.INFO, "%d backend run(s) no longer driven (%s); node %s "
                        "resumes them", len(resumed), why, self.node_id)
        if not stale:
            return 0
        if at_start:
            fx.note(logging.WARNING, "%d run(s) were running when schedd last stopped; "
                    "marking them interrupted", len(stale))
        else:
            fx.note(logging.WARNING, "%d run(s) no longer driven (%s); marking them "
                    "interrupted", len(stale), why)
        self.recorder.record_tx(c, [
            (r, Outcome(ok=False, error_code="interrupted", error_message=why), now)
            for r in stale
        ], fx)
        return len(stale)
