"""Which database the behavioural tests run on: each of them runs twice, on SQLite (a file
in tmp_path) and on PostgreSQL (a fresh database of the session's throwaway server, copied
from a migrated template), through the `backend` parameter conftest.py adds to every test
that uses `make_settings`, `database_url` or a kit (engine_kit.kit, daemon_kit.Daemon).

The kits read the current test's database from here (`current_url`, "" for SQLite), so that
the tests themselves need not pass it on.

Tests about SQLite itself (its file, its WAL, faults of its filesystem) carry
`@pytest.mark.sqlite_only("why")` and run on SQLite alone."""

from __future__ import annotations

from typing import Any

BACKENDS = ("sqlite", "postgres")
TEMPLATE = "schedd_migrated"

current_url = ""  # the running test's PostgreSQL database, "" on SQLite

_template_ready = False


def new_database(server: Any) -> str:
    """A fresh, migrated database on the session's server (a pg_kit.PgServer), copied from
    the template (migrated once per session); its url. The caller drops it."""
    global _template_ready
    if not _template_ready:
        from schedd.pgdb import migrate

        migrate(server.make_template(TEMPLATE))
        _template_ready = True
    url: str = server.create_database(template=TEMPLATE)
    return url
