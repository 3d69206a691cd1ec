"""Dependencies flow one way (CONVENTIONS.md): HTTP layer -> services -> engine -> actions,
services/engine -> store -> db. The store knows nothing of HTTP, the engine nothing of
Litestar, and only clock.py reads the system clock."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "schedd"
LEAVES = {"models", "errors", "clock", "config", "__init__"}

# The action layer, one module per job (schedd/actions.py dispatches over them).
ACTION_MODULES = {"actions", "action_config", "templates", "outcomes", "webhooks", "commands",
                  "webhook_http"}
_ABOVE_ACTIONS = {"db", "store", "engine", "services", "api", "console", "daemon", "cli"}

# module -> schedd modules it must not import
FORBIDDEN: dict[str, set[str]] = {
    "timing": {"db", "store", "engine", "services", "api", "daemon", "cli", "policies",
               *ACTION_MODULES},
    "policies": {"db", "store", "engine", "services", "api", "daemon", "cli", "timing",
                 *ACTION_MODULES},
    # each kind can be read alone: the shared pieces import no kind, no kind imports
    # another or the dispatcher
    "actions": _ABOVE_ACTIONS,
    "outcomes": _ABOVE_ACTIONS | ACTION_MODULES,
    "action_config": _ABOVE_ACTIONS | ACTION_MODULES,
    "templates": _ABOVE_ACTIONS | (ACTION_MODULES - {"outcomes"}),
    "webhooks": _ABOVE_ACTIONS | {"actions", "commands"},
    "commands": _ABOVE_ACTIONS | {"actions", "webhooks", "webhook_http"},
    "webhook_http": _ABOVE_ACTIONS | (ACTION_MODULES - {"webhook_http"}),
    "db": {"store", "engine", "services", "api", "daemon", "cli", *ACTION_MODULES},
    # db.py's twin for PostgreSQL
    "pgdb": {"store", "engine", "services", "api", "daemon", "cli", *ACTION_MODULES},
    # store/ holds every SQL statement (sqlite.py; sqlite_syncs.py for the Syncs API)
    "store": {"engine", "services", "entities", "syncs", "api", "backends", "daemon", "cli",
              "console", *ACTION_MODULES},
    "engine": {"services", "entities", "api", "daemon", "cli", "console"},
    "planning": {"db", "store", "engine", "services", "entities", "api", "daemon", "cli",
                 "console", *ACTION_MODULES},
    "entities": {"api", "daemon", "cli", "console"},
    "services": {"api", "daemon", "cli", "console"},
    "api": {"db", "store", "engine", "backends", "daemon", "cli", "console",
            *ACTION_MODULES},
    # the console is an HTTP layer beside api: services only (it shares api's wire shapes
    # and error wording, so that it shows exactly what the API would)
    "console": {"db", "store", "engine", "planning", "backends", "daemon",
                "cli", *ACTION_MODULES},
    "models": {"db", "store", "engine", "services", "api", "daemon", "cli", "timing",
               *ACTION_MODULES},
    "errors": {"db", "store", "engine", "services", "api", "daemon", "cli", *ACTION_MODULES},
    # the Syncs API: backends sit beside the action modules, syncs (its use cases) beside
    # services
    "backends": {"db", "store", "engine", "services", "syncs", "api", "daemon",
                 "cli"},
    "syncs": {"api", "daemon", "cli", "console"},
    # `schedd migrate-data` copies tables between the two databases: rows, not the domain
    "migrate_data": {"store", "sync_store", "engine", "services", "syncs", "entities", "api",
                     "console", "daemon", "cli", "backends", *ACTION_MODULES},
}
_NO_WEB = {"litestar", "uvicorn", "sqlite3"}
THIRD_PARTY_FORBIDDEN = {
    "store": {"litestar", "uvicorn", "aiohttp"},
    "db": {"litestar", "uvicorn", "aiohttp"},
    "pgdb": {"litestar", "uvicorn", "aiohttp", "sqlite3"},
    "engine": {"litestar", "uvicorn", "jinja2"},
    "services": {"litestar", "uvicorn", "jinja2"},
    "syncs": {"litestar", "uvicorn", "jinja2"},
    "backends": {"litestar", "uvicorn", "sqlite3"},
    "timing": {"litestar", "sqlite3", "aiohttp"},
    "policies": {"litestar", "sqlite3", "aiohttp"},
    "actions": _NO_WEB,
    "webhooks": _NO_WEB,
    "webhook_http": _NO_WEB | {"aiohttp"},
    # only webhooks.py speaks HTTP
    "outcomes": _NO_WEB | {"aiohttp"},
    "action_config": _NO_WEB | {"aiohttp"},
    "templates": _NO_WEB | {"aiohttp"},
    "commands": _NO_WEB | {"aiohttp"},
    "planning": {"litestar", "sqlite3", "aiohttp"},
    "entities": {"litestar", "uvicorn"},
}

# The engine's parts (schedd/engine/__init__.py): planning is pure like policies (no store,
# no database, no asyncio, no action runner); recording and leases work inside the
# caller's transaction through the store (claiming and recording touch no asyncio object);
# none of them imports the loop that drives them
# (nor the package, which re-exports the loop). Names match as prefixes: "schedd.store"
# covers the store package's modules too.
_PURE = {"schedd.db", "schedd.store", "schedd.engine.loop", "schedd.engine.leases",
         "schedd.engine.recording", "schedd.engine.effects", "schedd.actions",
         "schedd.backends", "schedd.metrics", "schedd.logs", "schedd.services",
         "schedd.entities", "asyncio", "sqlite3", "aiohttp", "litestar"}
ENGINE_PARTS: dict[str, set[str]] = {
    "engine.planning": _PURE,
    "engine.effects": {"schedd.engine.loop", "schedd.engine.leases", "schedd.engine.recording",
                       "schedd.engine.planning", "schedd.store", "schedd.db", "sqlite3"},
    "engine.recording": {"schedd.engine.loop", "schedd.engine.leases", "schedd.engine.claiming",
                         "asyncio", "sqlite3"},
    "engine.claiming": {"schedd.engine.loop", "schedd.engine.leases", "asyncio", "sqlite3"},
    "engine.leases": {"schedd.engine.loop", "schedd.engine.claiming", "sqlite3"},
    "engine.loop": {"sqlite3"},
    # the runs a node executes itself: recording and claiming's preparer, no asyncio
    "engine.nodes": {"schedd.engine.loop", "schedd.engine.leases", "asyncio", "sqlite3"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        out[".".join(rel.parts)] = p
    return out


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "schedd":
                found |= {f"schedd.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_follow_the_layers(module: str) -> None:
    layer = _layer(module)
    imports = _imports(_modules()[module])
    ours = {_layer(i.removeprefix("schedd.")) for i in imports if i.startswith("schedd.")}
    bad = ours & FORBIDDEN.get(layer, set())
    assert not bad, f"{module} imports {sorted(bad)}"
    third = {i.split(".")[0] for i in imports if not i.startswith("schedd")}
    bad3 = third & THIRD_PARTY_FORBIDDEN.get(layer, set())
    assert not bad3, f"{module} imports {sorted(bad3)}"


@pytest.mark.parametrize("module", sorted(ENGINE_PARTS))
def test_the_engine_parts_stand_alone(module: str) -> None:
    imports = _imports(_modules()[module])
    banned = ENGINE_PARTS[module]
    bad = {i for i in imports for f in banned if i == f or i.startswith(f + ".")}
    if "schedd.engine.loop" in banned and "schedd.engine" in imports:
        bad.add("schedd.engine")  # the package re-exports the loop
    assert not bad, f"{module} imports {sorted(bad)}"


def test_every_engine_part_has_rules() -> None:
    parts = {m for m in _modules() if m.startswith("engine.") and m != "engine.__init__"}
    assert parts == set(ENGINE_PARTS), "a new module of schedd/engine/ needs its rules here"


def _closure(module: str) -> set[str]:
    """Every import `module` reaches through schedd's own modules (theirs included)."""
    mods = _modules()
    seen: set[str] = set()
    todo = [module]
    while todo:
        for i in _imports(mods[todo.pop()]):
            if i in seen:
                continue
            seen.add(i)
            name = i.removeprefix("schedd.")
            if i.startswith("schedd.") or i == "schedd":
                for m in (name, name + ".__init__"):
                    if m in mods:
                        todo.append(m)
    return seen


def test_planning_is_pure_through_what_it_imports() -> None:
    """engine/planning.py must not reach the store, the database, asyncio or the action
    runner through another module either (importing claiming would, and its direct
    imports would still look clean)."""
    reached = _closure("engine.planning")
    banned = ENGINE_PARTS["engine.planning"] | {"schedd.engine.claiming"}
    bad = {i for i in reached for f in banned if i == f or i.startswith(f + ".")}
    assert not bad, f"engine.planning reaches {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_are_absolute(module: str) -> None:
    """The rules above read `from schedd.x import y`; a relative import (`from . import
    loop`, `from .store import Tx`) would pass them unseen."""
    tree = ast.parse(_modules()[module].read_text())
    rel = [node.lineno for node in ast.walk(tree)
           if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert not rel, f"{module} has relative imports on lines {rel}"

# Issue 16: the engine and the use cases reach the database only through the store's
# typed methods; no SQL text or connection type crosses it (a PostgreSQL store must be
# able to stand behind the same calls).
_BEHIND_THE_STORE = {"engine", "services", "syncs", "entities", "api", "console"}
_SQL = re.compile(r"\b(SELECT\s.*\bFROM\b|SELECT\s+1\b|INSERT\s+INTO|UPDATE\s+\w+\s+SET|"
                  r"DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|PRAGMA\s)")
_STATEMENT_CALLS = {"execute", "executemany", "executescript", "fetch_one", "fetch_all",
                    "runs_where", "_runs_where"}


@pytest.mark.parametrize("module", sorted(m for m in _modules()
                                          if _layer(m) in _BEHIND_THE_STORE))
def test_no_sql_crosses_the_store(module: str) -> None:
    tree = ast.parse(_modules()[module].read_text())
    sql = [n.value[:60] for n in ast.walk(tree)
           if isinstance(n, ast.Constant) and isinstance(n.value, str) and _SQL.search(n.value)]
    assert not sql, f"{module} holds SQL text: {sql}"
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr in _STATEMENT_CALLS]
    assert not calls, f"{module} runs statements itself: {calls}"
    # the transaction handle is the store's opaque Tx, not a database connection type
    conn = {i for i in _imports(_modules()[module])
            if i in ("sqlite3", "psycopg", "asyncpg", "schedd.db")
            or i.startswith(("psycopg.", "asyncpg."))}
    assert not conn, f"{module} imports {sorted(conn)}: take schedd.store.Tx"


def test_the_sql_check_sees_sql() -> None:
    for text in ("SELECT 1", "SELECT id FROM runs WHERE x = ?", "UPDATE runs SET a = 1",
                 "INSERT INTO runs VALUES (?)", "DELETE FROM runs"):
        assert _SQL.search(text), text
    for text in ("select a schedule from the list", "Run is already cancelled"):
        assert not _SQL.search(text), text

@pytest.mark.parametrize("module", sorted(m for m in _modules() if m != "clock"))
def test_only_the_clock_reads_the_system_clock(module: str) -> None:
    tree = ast.parse(_modules()[module].read_text())
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("time", "time_ns", "now", "utcnow",
                                                             "monotonic"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("time", "datetime"):
                calls.append(f"{base.id}.{node.attr}")
    allowed = {"logs": {"time.time"}}  # log record timestamps come from logging itself
    assert set(calls) <= allowed.get(module, set()), f"{module} reads the clock: {calls}"


def test_no_sql_reads_the_clock() -> None:
    text = "".join(p.read_text() for p in (PKG / "store").glob("*.py")) + "".join(
        p.read_text() for p in (PKG / "migrations").rglob("*.sql"))
    assert "CREATE TABLE schedules" in text  # the files are where this test looks
    for word in ("'now'", "CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME", "julianday("):
        assert word.lower() not in text.lower(), word
