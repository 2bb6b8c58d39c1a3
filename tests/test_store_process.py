"""The store process: DuckDB lives in a child process; the server only talks to it over a socket,
with a timeout on every call."""

import asyncio
import datetime as dt
import os
import signal
import time

import duckdb
import pytest

from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, RowsPlan, SourceRow, SourcesPlan, TimeRange
from millimetric.store.duckdb.client import DuckDBEventStore
from millimetric.store.duckdb.database import EventDatabase
from millimetric.store.interface import StoreError
from millimetric.store.rows import encode_rows
from test_auth_errors import assert_error

from conftest import bearer, stored_events

TRACK = {"event": "signup", "anonymous_id": "anon-1"}


def test_the_server_process_never_opens_the_event_file(client, keys, settings):
    client.post("/v1/track", json=TRACK, headers=bearer(keys.sk))
    store = client.app.state.services.events.process.process
    assert store.pid != os.getpid()
    own_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(settings.event_store_path) not in own_files
    child_files = {os.path.realpath(f"/proc/{store.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{store.pid}/fd")}
    assert str(settings.event_store_path) in child_files


def test_a_failed_store_call_is_reported_and_the_store_keeps_working(client, keys):
    store = client.app.state.services.events
    plan = RowsPlan(TimeRange(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)), Filters(), 10, after=b"junk")
    with pytest.raises(StoreError, match="not a page position"):
        store.rows(keys.project_id, plan)
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    assert [row["event_name"] for row in stored_events(client)] == ["signup"]


def test_a_dead_store_process_fails_the_calls_that_find_out_then_comes_back(client, keys):
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    dead = client.app.state.services.events.process.process.pid
    os.kill(dead, signal.SIGKILL)
    time.sleep(0.2)
    response = client.post("/v1/track", json={**TRACK, "event": "refused"}, headers=bearer(keys.sk))
    assert_error(response, 502, "upstream_failed")
    assert "Traceback" not in response.text
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["event_store"] == "unreachable"
    deadline = time.monotonic() + 20
    while client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the store process was not restarted"
        time.sleep(0.1)
    assert client.app.state.services.events.process.process.pid != dead
    assert client.post("/v1/track", json={**TRACK, "event": "after"}, headers=bearer(keys.sk)).status_code == 202
    assert [row["event_name"] for row in stored_events(client)] == ["signup", "after"]


def test_a_second_store_on_the_same_file_waits_then_reports_the_lock(tmp_path):
    path = tmp_path / "events.duckdb"
    first = DuckDBEventStore.start(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="cannot open the event store"):
            DuckDBEventStore.start(path)
        assert time.monotonic() - started >= 5  # it waited for the lock
    finally:
        first.close()
    DuckDBEventStore.start(path).close()  # free again once the first one closed


def test_closing_checkpoints_so_the_file_holds_every_row(tmp_path):
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore.start(path)
    asyncio.run(
        store.append([EventRow("p1", dt.datetime(2026, 1, 1), "a"), EventRow("p1", dt.datetime(2026, 1, 2), "b")])
    )
    store.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT seq, event_name FROM events ORDER BY seq").fetchall() == [(1, "a"), (2, "b")]
        assert con.execute("SELECT covered_seq FROM rollup_state").fetchall() == [(2,)]  # folded on the way out
    assert not (tmp_path / "events.duckdb.wal").exists()


def test_folds_leave_no_transaction_open_so_the_wal_is_checkpointed(tmp_path):
    """DuckDB checkpoints its WAL automatically only while no other transaction is open."""
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path, checkpoint_threshold="1KB")
    try:
        for day in range(1, 6):
            _append(store, [EventRow("p1", dt.datetime(2026, 1, day, h), "a", anonymous_id=f"v{h}") for h in range(24)])
            store.fold()
            store.sources("p1", SourcesPlan(TimeRange(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)), "source", 50))
        wal = path.with_suffix(".duckdb.wal")
        assert not wal.exists() or wal.stat().st_size < 16 * 1024
    finally:
        store.close()


def test_a_rollup_of_another_layout_is_rebuilt_from_the_events(tmp_path):
    path = tmp_path / "events.duckdb"
    plan = SourcesPlan(TimeRange(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)), "source", 50)
    store = EventDatabase(path)
    _append(
        store,
        [EventRow("p1", dt.datetime(2026, 1, d), "a", anonymous_id=f"v{d % 3}", source="google") for d in range(1, 29)],
    )
    store.fold()
    answer = store.sources("p1", plan)
    assert answer == [SourceRow("google", None, 28, 3, 0)]
    store.close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE rollup_state SET layout = layout - 1")  # as an older build left it
    store = EventDatabase(path)
    try:
        assert _rollup(path, store) == (0, 0)
        assert store.sources("p1", plan) == answer  # from the events meanwhile
        store.fold()
        assert store.sources("p1", plan) == answer
    finally:
        store.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM source_visitors").fetchall() == [(3,)]


def _rollup(path, store) -> tuple[int, int]:
    """(covered_seq, source_visitors rows) of the database `store` has open, read from a backup."""
    copy = path.with_name("copy.duckdb")
    store.backup(copy)
    with duckdb.connect(str(copy), read_only=True) as con:
        covered = con.execute("SELECT covered_seq FROM rollup_state").fetchall()[0][0]
        visitors = con.execute("SELECT count(*) FROM source_visitors").fetchall()[0][0]
    copy.unlink()
    return covered, visitors


def _append(store, rows: list[EventRow]) -> None:
    store.append(encode_rows(rows), len(rows))


def test_a_wedged_store_is_reported_by_healthz_and_ingest_answers_503(client, keys):
    """SIGSTOP freezes the store process: nothing it holds is lost, but nobody may wait on it forever."""
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    pid = client.app.state.services.events.process.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        health = client.get("/healthz")
        assert time.monotonic() - started < 5
        assert health.status_code == 503
        assert health.json()["event_store"] == "timeout"
        started = time.monotonic()
        response = client.post("/v1/track", json={**TRACK, "event": "while-wedged"}, headers=bearer(keys.sk))
        assert time.monotonic() - started < 10
        assert response.status_code == 503 and response.json()["error"] == "overloaded"
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the store did not come back after SIGCONT"
        time.sleep(0.1)
    assert client.post("/v1/track", json={**TRACK, "event": "after"}, headers=bearer(keys.sk)).status_code == 202
    names = [row["event_name"] for row in stored_events(client)]
    assert names[0] == "signup" and names[-1] == "after"
