"""Shared fixtures: a settings factory on tmp_path, a fake clock, and an API client over
the real app (its lifespan opens the database and runs the engine on the fake clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import db_backend
import pg_kit
import pytest
from daemon_kit import sink  # noqa: F401 (a fixture: every module's webhook receiver)
from litestar.testing import AsyncTestClient

from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app
from schedd.services import Services

# 2026-11-22T09:00:00Z, a Sunday
T0 = 1_795_338_000_000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): a test about SQLite itself, not run on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that reaches a database (through make_settings, database_url or a kit)
    runs on each backend (tests/db_backend.py)."""
    if "backend" in metafunc.fixturenames:
        if any(m.args and "backend" in str(m.args[0])
               for m in metafunc.definition.iter_markers("parametrize")):
            return  # the test chose its backend itself
        only = metafunc.definition.get_closest_marker("sqlite_only")
        if only is not None and not (only.args or only.kwargs.get("reason")):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason")
        params = ["sqlite"] if only is not None else list(db_backend.BACKENDS)
        metafunc.parametrize("backend", params, scope="function")


@pytest.fixture
def backend() -> str:
    return "sqlite"  # replaced by the parameter above


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's PostgreSQL database (fresh, migrated), or "" on SQLite."""
    if backend == "sqlite":
        db_backend.current_url = ""
        yield ""
        return
    server: pg_kit.PgServer = request.getfixturevalue("pg_server")
    url = db_backend.new_database(server)
    db_backend.current_url = url
    try:
        yield url
    finally:
        db_backend.current_url = ""
        server.drop_database(pg_kit.dbname_of(url))


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"db": str(tmp_path / "schedd.db"), "database_url": database_url}
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


class Api:
    """An authenticated client for one tenant, plus the services behind it."""

    def __init__(self, client: AsyncTestClient[Any], key: str) -> None:
        self.client = client
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}

    @property
    def services(self) -> Services:
        svc: Services = self.client.app.state.services
        return svc

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.client.get(path, headers=self.headers, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.post(path, json=json, headers=self.headers, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.put(path, json=json, headers=self.headers, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.client.patch(path, json=json, headers=self.headers, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.client.delete(path, headers=self.headers, **kw)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the app's event loop (the test client runs the app, its engine
        and its database connections on a loop of their own, in another thread)."""
        return self.client.blocking_portal.call(fn, *args)

    async def other_tenant(self, name: str = "other") -> Api:
        _, key = self.call(self.services.create_key, name)
        return Api(self.client, key)


@pytest.fixture
async def api(make_settings: Callable[..., Settings], clock: FakeClock) -> AsyncIterator[Api]:
    settings = make_settings(allow_commands=True)
    app = build_app(settings, clock)
    async with AsyncTestClient(app=app) as client:
        key = Path(settings.db + ".key").read_text().strip()
        yield Api(client, key)


def schedule_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body (interval, noop) with overrides."""
    body: dict[str, Any] = {
        "name": "nightly report",
        "schedule_type": "interval",
        "schedule_expression": "15m",
        "action_type": "noop",
        "action_config": {},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()
DROP: Any = _DROP


# The throwaway PostgreSQL server (tests/pg_kit.py): its fixtures, and a header line saying
# whether the PostgreSQL tests run, skip or (in CI) fail here.
try:
    from tests.pg_kit import pg_server, pg_url, report_header
except ImportError:
    from pg_kit import pg_server, pg_url, report_header

__all__ = ["pg_server", "pg_url"]


def pytest_report_header() -> str:
    return report_header()
