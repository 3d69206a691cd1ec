"""Property-based test of the whole HTTP API against its own OpenAPI document (schemathesis).

Every operation in `/schema/openapi.json` is a test case here, found by reading the
document: a router added to create_app is covered without touching this file. Requests are
generated from the document with a fixed seed, derandomized, a bounded number per
operation, both schema-valid ("positive") and schema-violating ("negative"), and sent
in-process (ASGI) to the real app built by daemon.build_app, its lifespan running
(database on a temp dir, engine on a fake clock that never moves, so no schedule fires on
its own), always with a valid API key. About half of the cases that name a schedule_id or
run_id get one that exists. The test fails on:

- any 5xx (`not_a_server_error`);
- a schema-valid request refused (`positive_data_acceptance`: anything but 2xx, 404, 409),
  except a 422 for a rule the document states in words (tests/openapi_rules.py);
- a 401 although the key is valid; an operation that answers 2xx without the key or with
  a wrong one (`ignored_auth`);
- a method the document does not list on a path answered other than 405 with an `Allow`
  header (`unsupported_method`);
- an answer that breaks the document: undeclared status (`status_code_conformance`),
  content type (`content_type_conformance`), headers (`response_headers_conformance`) or
  body (`response_schema_conformance`).

How to run one operation and read a failure: docs/openapi.md.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import db_backend
import pg_kit
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_rules import SEMANTIC_422
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from schedd.api.openapi import served_openapi
from schedd.clock import FakeClock
from schedd.config import Settings
from schedd.daemon import build_app

SEED = 20261204
# Examples per operation in the fuzzing phase (the examples and coverage phases add their
# own, bounded by the schema). The whole file takes about a minute on the 2-core CI box.
MAX_EXAMPLES = 25
# On PostgreSQL (the same document, seed and phases) the fuzzing phase draws fewer: what
# differs there is the store (text, integer ranges, ordering), which the examples and
# coverage phases' boundary values reach; the bound keeps the second run's CI cost small.
PG_MAX_EXAMPLES = 10
T0 = 1_795_338_000_000  # 2026-11-22T09:00:00Z; the fake clock stays there

# The app is built at import, so that its document can parametrize the test; nothing runs
# (no database, no engine) until the fixture starts its lifespan.
_DIR = tempfile.mkdtemp(prefix="schedd-openapi-")
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
_DB = str(Path(_DIR) / "schedd.db")
APP = build_app(Settings(db=_DB, shutdown_grace_seconds=1), FakeClock(T0))
# exactly what GET /schema/openapi.json answers (the fixture checks it)
DOCUMENT: dict[str, Any] = served_openapi(APP)


def _config(max_examples: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {
            "mode": "all",
            "deterministic": True,
            "max-examples": max_examples,
            # the key is sent by the test; schemathesis must not invent credentials
            "with-security-parameters": False,
            "database": "none",
        },
        # stateful testing links operations through responses; not part of this bounded run
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # a random id that does not exist (404) or a state that forbids the action (409)
            # are correct answers to a well-formed request; 401, 403, 429 and 5xx are not
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409"]},
        },
    })


schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config(MAX_EXAMPLES))
schema.app = APP  # requests go to the app in-process, through its ASGI interface
# the same document on PostgreSQL: each call names the app the fixture builds there
# (`app=`, which wins over this one; schemathesis wants one set to take the ASGI path)
pg_schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config(PG_MAX_EXAMPLES))
pg_schema.app = APP


class Served:
    """The running app: the key, and ids of resources that exist (see _existing_ids)."""

    def __init__(self, app: Any, headers: dict[str, str], ids: dict[str, str]) -> None:
        self.app = app
        self.headers = headers
        self.ids = ids


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with asgi.get_client(APP) as client:  # starts the app's lifespan (database, engine)
        yield _prepare(client, APP, _DB)
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def served_pg(pg_server: pg_kit.PgServer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The same app on a fresh PostgreSQL database (tests/db_backend.py)."""
    url = db_backend.new_database(pg_server)
    db = str(tmp_path_factory.mktemp("openapi-pg") / "schedd.db")
    app = build_app(Settings(db=db, database_url=url, shutdown_grace_seconds=1), FakeClock(T0))
    try:
        with asgi.get_client(app) as client:
            assert type(app.state.services.db).__name__ == "PgDatabase"
            yield _prepare(client, app, db)
        asgi.shutdown_lifespans()
    finally:
        pg_server.drop_database(pg_kit.dbname_of(url))


def _prepare(client: Any, app: Any, db: str) -> Served:
    key = Path(db + ".key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    assert r.json() == DOCUMENT
    ids = {}
    body = {"name": "fuzz target", "schedule_type": "cron", "schedule_expression": "@daily",
            "action_type": "noop", "action_config": {}}
    r = client.post("/v1/schedules", json=body, headers=headers)
    assert r.status_code == 201, r.text
    ids["schedule_id"] = r.json()["id"]
    r = client.post(f"/v1/schedules/{ids['schedule_id']}/trigger", headers=headers)
    assert r.status_code == 202, r.text
    ids["run_id"] = r.json()["id"]
    return Served(app, headers, ids)


def _existing_ids(case: schemathesis.Case, ids: dict[str, str]) -> None:
    """Point about half of the cases at a schedule and a run that exist (chosen by the
    generated id itself, so it stays deterministic), so that the 200/202 answers and their
    bodies are checked too, not only the 404 of a random id. DELETE keeps its random id:
    deleting the target would turn every later operation into a 404."""
    if case.method.upper() == "DELETE" or not case.path_parameters:
        return
    for name, value in case.path_parameters.items():
        if name in ids and isinstance(value, str) and value[:1] in "01234567":
            case.path_parameters[name] = ids[name]


def _semantic_422(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """A 422 whose every item is a rule the document states in words (openapi_rules.py)."""
    rules = SEMANTIC_422.get(case.operation.label)
    if response.status_code != 422 or not rules:
        return False
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(detail, list) or not detail:
        return False
    for item in detail:
        loc = tuple(item.get("loc", ())) if isinstance(item, dict) else ()
        msg = str(item.get("msg", "")) if isinstance(item, dict) else ""
        if not any(loc[: len(prefix)] == prefix and re.match(pattern, msg)
                   for prefix, pattern in rules):
            return False
    return True


def positive_data_accepted(ctx: Any, response: schemathesis.Response,
                           case: schemathesis.Case) -> bool | None:
    """schemathesis's positive_data_acceptance, less the 422s listed in openapi_rules.py."""
    if _semantic_422(case, response):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


def never_unauthorized(ctx: Any, response: schemathesis.Response,
                       case: schemathesis.Case) -> bool | None:
    """Every request carries a valid key, so a 401 is a bug (the guard, or a lost key)."""
    assert response.status_code != 401, (
        f"401 with a valid key on {case.operation.label}: {response.text[:300]}")
    return None


# operation -> (the body field that makes it wait on the wall clock, its maximum)
LONG_POLLS = {"POST /v1/worker/claim": ("wait_seconds", 30)}

CHECKS = [
    not_a_server_error,
    positive_data_accepted,
    never_unauthorized,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    unsupported_method,
    # Not negative_data_rejection: it counts as "invalid data accepted" what is only an
    # artefact of serialization (an object-valued query parameter sent as `?=`, i.e.
    # absent) and a server that is more liberal than its document (naive date-times), which
    # no client is hurt by. Negative cases still run, for 5xx and the conformance checks.
]


_HYPOTHESIS = settings(database=None, deadline=None, derandomize=True,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@schema.parametrize()
@_HYPOTHESIS
def test_operation_conforms(case: schemathesis.Case, served: Served) -> None:
    _call(case, served)


@pg_schema.parametrize()
@_HYPOTHESIS
def test_operation_conforms_on_postgresql(case: schemathesis.Case, served_pg: Served) -> None:
    _call(case, served_pg)


def _call(case: schemathesis.Case, served: Served) -> None:
    _existing_ids(case, served.ids)
    poll = LONG_POLLS.get(case.operation.label)
    if poll is not None and isinstance(case.body, dict):
        # A long poll waits on the wall clock (up to its maximum) when the request is
        # otherwise valid. A valid or absent wait becomes 0, which is also valid; an
        # invalid one (what a negative case may be testing) is left as generated.
        field, maximum = poll
        wait = case.body.get(field)
        if field not in case.body or (isinstance(wait, int | float)
                                      and not isinstance(wait, bool) and 0 <= wait <= maximum):
            case.body[field] = 0
    case.call_and_validate(headers=served.headers, checks=CHECKS, app=served.app)


# Routes deliberately left out of the document (include_in_schema=False): Prometheus text,
# the HTML console, and the document itself. Any other route must be documented, so that
# it is fuzzed here.
NOT_DOCUMENTED = ("/metrics", "/ui", "/schema")


def test_every_api_route_is_documented() -> None:
    missing = []
    for route in APP.routes:
        path = getattr(route, "path_format", None) or route.path
        if path in DOCUMENT["paths"]:
            continue
        if any(path == p or path.startswith(p + "/") for p in NOT_DOCUMENTED):
            continue
        missing.append(path)
    assert not missing, f"routes missing from /schema/openapi.json (so never fuzzed): {missing}"


def test_every_route_is_exercised() -> None:
    """The parametrized test covers every operation the app documents (and only those:
    a route left out of the schema is left out of this test, so that must be deliberate)."""
    labels = {result.ok().label for result in schema.get_all_operations()}
    documented = {f"{m.upper()} {p}" for p, item in DOCUMENT["paths"].items()
                  for m in item if m in {"get", "put", "post", "delete", "patch"}}
    assert documented, "the document lists no operations"
    assert labels == documented


def _described(node: Any) -> bool:
    """A schema (or what it refers to, or one arm of its anyOf/oneOf) carries a description."""
    if not isinstance(node, dict):
        return False
    if node.get("description"):
        return True
    if "$ref" in node:
        return _described(_resolve(node))
    return any(_described(arm) for key in ("anyOf", "oneOf", "allOf") for arm in node.get(key, []))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = DOCUMENT["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize("label", sorted(SEMANTIC_422))
def test_semantic_rules_are_described(label: str) -> None:
    """A 422 the fuzz test tolerates must be announced by the document: the field has a
    description, or the body's (the operation's) description names the field."""
    method, path = label.split(" ", 1)
    op = DOCUMENT["paths"][path][method.lower()]
    for prefix, _ in SEMANTIC_422[label]:
        where, field = prefix[0], str(prefix[1])
        if where == "body":
            body = _resolve(op["requestBody"]["content"]["application/json"]["schema"])
            prop = body["properties"][field]
            ok = _described(prop) or field.lower() in body.get("description", "").lower()
        else:
            params = [p for p in op.get("parameters", [])
                      if p["in"] == where and p["name"] == field]
            assert params, f"{label}: no {where} parameter {field!r}"
            ok = bool(params[0].get("description")) or _described(params[0].get("schema"))
            ok = ok or field.lower() in op.get("description", "").lower()
        assert ok, f"{label}: {prefix} may be refused for a rule the document does not describe"
