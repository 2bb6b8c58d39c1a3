"""De-duplication by event id against real server processes: whichever route (`/v1/track`,
`/v1/batch`, Segment's `messageId`, PostHog's `uuid`), worker process or restart brings an event
id again, the project stores it once; events without an id are never merged."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from conftest import Keys, ServerProcess, bearer, cli_project

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them


def stored(server: ServerProcess, keys: Keys) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.timezone.utc)
    window = {"from": (now - dt.timedelta(days=1)).isoformat(), "to": (now + dt.timedelta(hours=2)).isoformat()}
    r = httpx.get(f"{server.url}/v1/query", params={**window, "limit": "1000"}, headers=bearer(keys.rk))
    assert r.status_code == 200, r.text
    return r.json()["rows"]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_one_id_through_every_route_is_stored_once(server_factory, tmp_path) -> None:
    data_dir = tmp_path / "data"
    keys, other = cli_project(data_dir), cli_project(data_dir, "other")
    server = server_factory(data_dir)
    sk = bearer(keys.sk)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        first = client.post("/v1/track", json={"event": "buy", "event_id": "same", "properties": {"n": 1}}, headers=sk)
        assert (first.status_code, first.json()) == (202, {"ok": True, "event_id": "same"})
        again = client.post("/v1/track", json={"event": "buy", "event_id": "same", "properties": {"n": 2}}, headers=sk)
        assert (again.status_code, again.json()) == (202, {"ok": True, "event_id": "same", "duplicate": True})
        # in a batch: the stored id, a new one twice, and events without ids (never merged)
        events = [
            {"event": "buy", "event_id": "same"},
            {"event": "x", "event_id": "new"},
            {"event": "x", "event_id": "new"},
        ]
        events += [{"event": "anon"}, {"event": "anon"}]
        r = client.post("/v1/batch", json={"events": events}, headers=sk)
        assert (r.status_code, r.json()) == (202, {"ok": True, "count": 5, "duplicates": 2})
        # Segment's messageId and PostHog's uuid are the same id
        segment = {"batch": [{"type": "track", "event": "buy", "messageId": "same"}]}
        assert client.post("/segment/v1/batch", json=segment, headers=basic(keys.sk)).status_code == 200
        assert client.post("/v1/batch", json=segment, headers=basic(keys.sk)).status_code == 200
        posthog = {"api_key": keys.sk, "batch": [{"event": "buy", "distinct_id": "d", "uuid": "same"}]}
        assert client.post("/posthog/batch/", json=posthog).status_code == 200
        # another project's id is its own
        theirs = client.post("/v1/track", json={"event": "buy", "event_id": "same"}, headers=bearer(other.sk))
        assert "duplicate" not in theirs.json()
    rows = stored(server, keys)
    assert Counter(row["event_id"] for row in rows) == {"same": 1, "new": 1, None: 2}
    assert next(row for row in rows if row["event_id"] == "same")["properties"] in ({"n": 1}, '{"n":1}')
    assert [row["event_id"] for row in stored(server, other)] == ["same"]


def test_concurrent_duplicates_on_two_workers_are_stored_once(server_factory, tmp_path) -> None:
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_WORKERS": "2"})
    ids = [f"c{i}" for i in range(5)]
    body = {"events": [{"event": "x", "event_id": event_id} for event_id in ids]}
    requests = 40

    def send(_: int) -> dict[str, Any]:
        # A new connection each time: the kernel spreads them over both workers.
        r = httpx.post(f"{server.url}/v1/batch", json=body, headers=bearer(keys.sk), timeout=30)
        assert r.status_code == 202, r.text
        return r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(requests)))
    assert sum(answer.get("duplicates", 0) for answer in answers) == len(ids) * (requests - 1)
    assert sorted(row["event_id"] for row in stored(server, keys)) == ids


def test_a_duplicate_decision_survives_a_hard_kill(server_factory, tmp_path) -> None:
    """One id reached DuckDB before the kill, the other only the journal; both stay seen."""
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir)
    sk = bearer(keys.sk)
    flushed, journaled = f"f-{uuid.uuid4().hex}", f"j-{uuid.uuid4().hex}"
    assert httpx.post(f"{server.url}/v1/track", json={"event": "x", "event_id": flushed}, headers=sk).status_code == 202
    assert [row["event_id"] for row in stored(server, keys)] == [flushed]  # a read flushes the journal
    assert (
        httpx.post(f"{server.url}/v1/track", json={"event": "x", "event_id": journaled}, headers=sk).status_code == 202
    )
    server.kill()
    server = server_factory(data_dir)
    for event_id in (flushed, journaled):
        r = httpx.post(f"{server.url}/v1/track", json={"event": "x", "event_id": event_id}, headers=sk)
        assert r.json() == {"ok": True, "event_id": event_id, "duplicate": True}
    assert sorted(row["event_id"] for row in stored(server, keys)) == sorted([flushed, journaled])
