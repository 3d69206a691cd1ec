"""Verified API keys are cached briefly (no database read per request), and a revocation
is still refused at once, including one made by another process (`schedd keys revoke`)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from conftest import Api

from schedd import services as services_mod
from schedd.clock import FakeClock


def _count_lookups(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    store = api.services.store
    real = store.active_key_by_hash

    def counting(c: Any, digest: str) -> Any:
        seen.append(digest)
        return real(c, digest)

    monkeypatch.setattr(store, "active_key_by_hash", counting)
    return seen


async def test_a_verified_key_is_not_read_again_for_a_while(
        api: Api, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _count_lookups(api, monkeypatch)
    for _ in range(5):
        assert (await api.get("/v1/schedules")).status_code == 200
    assert len(lookups) == 1
    # past the cache's lifetime the key is looked up again
    api.call(clock.advance, int(services_mod.AUTH_CACHE_S * 1000) + 1)
    assert (await api.get("/v1/schedules")).status_code == 200
    assert len(lookups) == 2
    # a wrong key is never cached: each attempt is looked up and refused
    bad = {"Authorization": "Bearer sk_nope"}
    for _ in range(2):
        assert (await api.client.get("/v1/schedules", headers=bad)).status_code == 401
    assert len(lookups) == 4


async def test_a_key_revoked_by_another_process_is_refused_at_once(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id, key = api.call(api.services.create_key, "default")
    headers = {"X-Api-Key": key}
    lookups = _count_lookups(api, monkeypatch)
    for _ in range(3):  # verified once, then served from the cache
        assert (await api.client.get("/v1/schedules", headers=headers)).status_code == 200
    assert len(lookups) == 1
    db = api.services.settings.db
    env = {**os.environ, "SCHEDD_DATABASE_URL": api.services.settings.database_url}
    proc = subprocess.run([sys.executable, "-m", "schedd", "keys", "revoke", key_id, "--db", db],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    # the very next request: refused, though the key was cached a moment ago
    r = await api.client.get("/v1/schedules", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid or revoked API key"}
    # other keys work on (looked up again: the daemon forgot what it had verified)
    assert (await api.get("/v1/schedules")).status_code == 200


async def test_two_revocations_in_one_instant_are_both_seen(api: Api) -> None:
    # the mark is a new file each time (a new inode), so the same mtime cannot hide one
    keys = [api.call(api.services.create_key, "default") for _ in range(2)]
    for _, key in keys:
        assert (await api.client.get("/v1/schedules", headers={"X-Api-Key": key})
                ).status_code == 200
    other = services_mod.Services(api.services.store, api.services.clock, api.services.settings)
    for key_id, key in keys:
        api.call(other.revoke_key, key_id)  # not the serving Services: only the file tells
        r = await api.client.get("/v1/schedules", headers={"X-Api-Key": key})
        assert r.status_code == 401
