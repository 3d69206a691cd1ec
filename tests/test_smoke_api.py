from conftest import Api, schedule_body


async def test_create_and_get(api: Api) -> None:
    r = await api.post("/v1/schedules", schedule_body())
    assert r.status_code == 201, r.text
    got = await api.get(f"/v1/schedules/{r.json()['id']}")
    assert got.status_code == 200
    assert got.json()["next_run_at"] == "2026-11-22T09:15:00.000Z"
