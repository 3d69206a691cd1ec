"""The store: every SQL statement schedd runs, behind the `Store` class the engine and
services use. `sqlite.py` holds the schedules/runs/records statements, `sqlite_syncs.py`
those of the Syncs API (tables `syncs` and `sync_runs`)."""

from schedd.db import Conn
from schedd.store.sqlite import Store

#: The transaction handle a unit of work is given (`db.write(fn, ...)` calls `fn(tx, ...)`)
#: and the store's methods take. Outside the store it is opaque: the engine and the
#: services pass it on to the store and do nothing else with it (no SQL text, no statement:
#: tests/test_layering.py), so the same calls work whichever database is behind it.
Tx = Conn

__all__ = ["Store", "Tx"]
