"""The store: every SQL statement schedd runs, behind the `Store` class the engine and
services use. `sqlite.py` holds the schedules/runs/records statements, `sqlite_syncs.py`
those of the Syncs API (tables `syncs` and `sync_runs`)."""

from schedd.store.sqlite import Store

__all__ = ["Store"]
