"""Names and keys that identify something take text only: a NUL character is a 422 naming
the field, and a path key whose percent-encoded bytes are not UTF-8 is a 422 too (it used
to be decoded to U+FFFD, so %FF and %FE were the same key)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api
from test_api_schedules import assert_422

CONN = "84b500d7-71c8-4b1f-adf4-f1eb0000973d"
SYNCS = "/api/v1/syncs"


async def _definition(api: Api) -> str:
    r = await api.post("/v1/entity-definitions", json={"name": "customers",
                                                        "fields": {"d": "date"}})
    assert r.status_code == 201, r.text
    did: str = r.json()["id"]
    return did


async def _put(api: Api, did: str, raw_key: str) -> Any:
    return await api.put(f"/v1/entity-definitions/{did}/records/{raw_key}",
                         json={"data": {"d": "2026-01-01"}})


async def test_record_keys_in_the_path(api: Api) -> None:
    did = await _definition(api)
    assert_422(await _put(api, did, "a%00b"), ["path", "key"], "string_pattern_mismatch")
    for raw in ("%FF", "%FE", "ab%C3", "%ED%A0%80"):  # not UTF-8 (the last: a surrogate)
        r = await _put(api, did, raw)
        body = assert_422(r, ["path", "key"], "string_unicode")
        assert "UTF-8" in body["msg"]
        for verb in ("get", "delete"):
            r = await getattr(api, verb)(f"/v1/entity-definitions/{did}/records/{raw}")
            assert_422(r, ["path", "key"], "string_unicode")
    r = await api.get(f"/v1/entity-definitions/{did}/records")
    assert r.json()["records"] == []  # nothing was stored
    # U+FFFD itself, sent as UTF-8, is an ordinary key, and only that key
    assert (await _put(api, did, "%EF%BF%BD")).status_code == 201
    r = await api.get(f"/v1/entity-definitions/{did}/records/%EF%BF%BD")
    assert r.status_code == 200 and r.json()["key"] == "\ufffd"
    assert_422(await api.get(f"/v1/entity-definitions/{did}/records/%FF"), ["path", "key"],
               "string_unicode")
    # other non-ASCII keys are untouched
    assert (await _put(api, did, "caf%C3%A9")).status_code == 201
    assert (await api.get(f"/v1/entity-definitions/{did}/records/caf%C3%A9")).json()[
        "key"] == "café"


async def test_record_keys_in_a_batch(api: Api) -> None:
    did = await _definition(api)
    url = f"/v1/entity-definitions/{did}/records/batch"
    r = await api.post(url, json={"upsert": [{"key": "ok", "data": {"d": "2026-01-01"}},
                                             {"key": "k\x00", "data": {"d": "2026-01-01"}}]})
    assert_422(r, ["body", "upsert", 1, "key"], "string_pattern_mismatch")
    assert_422(await api.post(url, json={"delete": ["x\x00y"]}), ["body", "delete", 0],
               "string_pattern_mismatch")
    assert (await api.get(f"/v1/entity-definitions/{did}/records")).json()["records"] == []


async def test_definition_names(api: Api) -> None:
    r = await api.post("/v1/entity-definitions", json={"name": "a\x00b",
                                                        "fields": {"d": "date"}})
    assert_422(r, ["body", "name"], "string_pattern_mismatch")
    assert (await api.get("/v1/entity-definitions")).json()["total"] == 0


@pytest.mark.parametrize("field", ["slug", "taskSlug", "name"])
async def test_sync_names_and_slugs(api: Api, field: str) -> None:
    body = {"connectionId": CONN, "name": "orders", field: "a\x00b"}
    assert_422(await api.post(SYNCS, json=body), ["body", field], "string_pattern_mismatch")
    r = await api.post(SYNCS, json={"connectionId": CONN, "name": "orders", field: "ok"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    if field != "taskSlug":  # set at create only
        assert_422(await api.patch(f"{SYNCS}/{sid}", json={field: "b\x00"}),
                   ["body", field], "string_pattern_mismatch")
    assert (await api.get(f"{SYNCS}/{sid}")).json()[field] == "ok"
