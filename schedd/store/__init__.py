"""The store: every SQL statement schedd runs, behind the `Store` class the engine and
services use, over SQLite (the default, one file) or PostgreSQL (`[database] url`).
`sqlite.py` holds the schedules/runs/records statements in the SQL both databases speak,
`sqlite_syncs.py` those of the Syncs API (tables `syncs` and `sync_runs`), `postgres.py`
what differs on PostgreSQL (schedd.pgdb translates the rest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schedd.db import Conn, Database
from schedd.store.sqlite import Store

if TYPE_CHECKING:
    from schedd.config import Settings

#: The transaction handle a unit of work is given (`db.write(fn, ...)` calls `fn(tx, ...)`)
#: and the store's methods take. Outside the store it is opaque: the engine and the
#: services pass it on to the store and do nothing else with it (no SQL text, no statement:
#: tests/test_layering.py), so the same calls work whichever database is behind it.
Tx = Conn

__all__ = ["Store", "Tx", "open_database", "store_for"]


def open_database(settings: Settings) -> Database:
    """The database the settings name (not yet opened): PostgreSQL when `[database] url`
    is set, else the SQLite file `db`."""
    if settings.database_url:
        from schedd.pgdb import PgDatabase  # psycopg is needed only then

        return PgDatabase(settings.database_url)
    return Database(settings.db)


def store_for(db: Database) -> Store:
    """The Store implementation of a database."""
    if getattr(db, "dialect", "sqlite") == "postgres":
        from schedd.store.postgres import PgStore

        return PgStore(db)
    return Store(db)
