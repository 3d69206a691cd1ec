"""The `schedd` command: serve, init, keys, backup, migrate-data, next, version.

Bad usage or a bad config exits 2 with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from schedd import __version__, client, client_entities, config, timing
from schedd.clock import SystemClock
from schedd.errors import ConfigError, ScheddError, StorageUnavailable

T = TypeVar("T")

#: `schedd serve` could not reach its PostgreSQL database at start (sysexits' EX_TEMPFAIL:
#: a temporary failure, worth trying again; systemd shows it as status=75/TEMPFAIL, and
#: Restart=on-failure restarts the service). Bad usage and bad configuration exit 2, and so
#: does a database that refuses schedd for good (a wrong password, no such database).
EXIT_DATABASE_UNREACHABLE = 75


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"schedd: {message} (see '{self.prog} --help')\n")


def _die(message: str, code: int = 2) -> NoReturn:
    print(f"schedd: {message}", file=sys.stderr)
    raise SystemExit(code)


def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLite database file (default ./schedd.db)")
    p.add_argument("--config", help="TOML config file (default $SCHEDD_CONFIG or ./schedd.toml)")


def _settings(args: argparse.Namespace, **flags: Any) -> config.Settings:
    from schedd.db import SchemaTooNew, check_schema, fault_kind

    try:
        settings = config.load(args.config, {"db": args.db, **flags})
        if not settings.database_url:
            check_schema(settings.db)
    except (ConfigError, SchemaTooNew) as exc:
        _die(str(exc))
    except sqlite3.DatabaseError as exc:
        if fault_kind(exc) is not None:
            # locked by another process, an I/O error, a file that cannot be opened now:
            # worth trying again (75, which the systemd unit retries; 2 it does not)
            _die(f"{args.db or 'the database'}: cannot be read now ({exc})",
                 EXIT_DATABASE_UNREACHABLE)
        _die(f"{args.db or 'the database'}: not a schedd database ({exc})")
    return settings


def _with_services(settings: config.Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from schedd.services import Services
    from schedd.store import open_database, store_for

    async def main() -> T:
        async with open_database(settings) as db:
            return await fn(Services(store_for(db), SystemClock(), settings))

    from schedd.db import SchemaTooNew

    try:
        return asyncio.run(main())
    except StorageUnavailable as exc:  # a PostgreSQL server that cannot be reached
        _die(f"{config.database_label(settings)}: {exc}")
    except SchemaTooNew as exc:  # PostgreSQL's (SQLite's is found by _settings)
        _die(str(exc))


def _fmt_ms(ms: int | None) -> str:
    return "-" if ms is None else timing.format_ms(ms)


# ---------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    from schedd.daemon import run_serve

    settings = _settings(args, host=args.host, port=args.port)
    if settings.database_url:
        _check_postgres(settings.database_url)
    return run_serve(settings)


def _check_postgres(url: str) -> None:
    """Before serving: connect, check the schema's version and migrate, so that a server
    that cannot be reached stops the start with one line naming the url (its password
    redacted) and the cause, exit EXIT_DATABASE_UNREACHABLE, not a traceback. A database
    that refuses the connection for good (a wrong password, an unknown role or database, a
    bad url: pgdb.refused_for_good) is a configuration error: one line, exit 2, so that
    systemd does not retry what cannot work."""
    from schedd.db import SchemaTooNew
    from schedd.pgdb import prepare

    try:
        prepare(url)
    except StorageUnavailable as exc:
        _die(f"cannot reach PostgreSQL at {config.redacted_url(url)}: {exc.message}",
             EXIT_DATABASE_UNREACHABLE)
    except ConfigError as exc:
        _die(f"PostgreSQL at {config.redacted_url(url)} refused schedd (a configuration"
             f" error, not retried): {exc}")
    except SchemaTooNew as exc:
        _die(str(exc))


def cmd_version(args: argparse.Namespace) -> int:
    print(f"schedd {__version__}")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    try:
        tz = timing.load_zone(args.tz)
        times = timing.preview(args.type, args.expression, args.tz,
                               after_ms=SystemClock().now_ms(), count=args.n)
    except timing.TimingError as exc:
        _die(f"{args.expression!r}: {exc}")
    for t in times:
        print(timing.format_local(t, tz))
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go(svc: Any) -> str:
        _, key = await svc.create_key(args.tenant)
        return str(key)

    try:
        print(_with_services(settings, go))
    except ScheddError as exc:
        _die(str(exc))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keys = _with_services(settings, lambda svc: svc.list_keys())
    rows = [("ID", "TENANT", "PREFIX", "CREATED", "LAST USED", "REVOKED")]
    rows += [(k.id, k.tenant_name, k.prefix + "…", _fmt_ms(k.created_ms), _fmt_ms(k.last_used_ms),
              _fmt_ms(k.revoked_ms)) for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        _with_services(settings, lambda svc: svc.revoke_key(args.key_id))
    except ScheddError as exc:
        _die(str(exc), 1)
    print(f"revoked {args.key_id}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cfg = Path(args.config or "schedd.toml")
    if cfg.exists():
        print(f"{cfg} exists; left as it is")
    else:
        text = config.render_example().replace(
            'db = "./schedd.db"', f'db = "{settings.db}"'
        )
        cfg.write_text(text, encoding="utf-8")
        print(f"wrote {cfg}")

    async def go(svc: Any) -> Path | None:
        path: Path | None = await svc.ensure_first_key(settings.db + ".key")
        return path

    key_path = _with_services(settings, go)
    print(f"database {config.database_label(settings)} is ready")
    if key_path is not None:
        print(f"the first API key (tenant 'default') is in {key_path} (mode 0600)")
    print(f"next: schedd serve --config {cfg}   then   curl http://{settings.host}:"
          f"{settings.port}/healthz")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from schedd.db import backup

    settings = _settings(args)
    if settings.database_url:
        _die("the database is PostgreSQL ([database] url): back it up with pg_dump, e.g."
             " pg_dump --format=custom --file=schedd.dump URL (docs/operations.md)")
    if not Path(settings.db).is_file():
        _die(f"{settings.db}: no such database")
    try:
        backup(settings.db, args.path)
    except FileExistsError as exc:
        _die(str(exc))
    print(f"backed up {settings.db} to {args.path}")
    return 0


def cmd_migrate_data(args: argparse.Namespace) -> int:
    from schedd.migrate_data import MigrateError, migrate

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        report = migrate(args.source, args.target, progress=say)
    except MigrateError as exc:
        _die(str(exc), exc.code)
    total = sum(report.tables.values())
    print(f"copied {total:,} rows in {len(report.tables)} tables; counts verified")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="schedd", description="Self-hosted scheduled-actions daemon.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("serve", help="run the daemon (HTTP API and scheduler)")
    _db_options(s)
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default 8321)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("init", help="write a config file, create the database and first key")
    _db_options(s)
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("backup", help="copy the database consistently, even while serving")
    _db_options(s)
    s.add_argument("path", help="where to write the copy (must not exist)")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("migrate-data",
                       help="copy a SQLite deployment into an empty PostgreSQL database")
    s.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                   help="the SQLite database file (stop the daemon first)")
    s.add_argument("--to", dest="target", required=True, metavar="postgresql://...",
                   help="an empty PostgreSQL database (its schema is created)")
    s.set_defaults(func=cmd_migrate_data)

    k = sub.add_parser("keys", help="manage API keys")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser,
                          required=True)
    s = ks.add_parser("create", help="create a key and print it (alone) on stdout")
    _db_options(s)
    s.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    s.set_defaults(func=cmd_keys_create)
    s = ks.add_parser("list", help="list keys (never the keys themselves)")
    _db_options(s)
    s.set_defaults(func=cmd_keys_list)
    s = ks.add_parser("revoke", help="revoke a key at once")
    _db_options(s)
    s.add_argument("key_id")
    s.set_defaults(func=cmd_keys_revoke)

    s = sub.add_parser("next", help="print the next fire times of an expression")
    s.add_argument("expression", help="a cron expression (or, with --type, interval/once)")
    s.add_argument("--tz", default="UTC", help="IANA timezone (default UTC)")
    s.add_argument("-n", type=int, default=5, choices=range(1, 101), metavar="N",
                   help="how many (1..100, default 5)")
    s.add_argument("--type", default="cron", choices=("cron", "interval", "once"))
    s.set_defaults(func=cmd_next)

    client.add_commands(sub)
    client_entities.add_commands(sub)

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    result: int = args.func(args)
    return result
