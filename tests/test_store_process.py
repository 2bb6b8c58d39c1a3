"""The store process: DuckDB lives in a child process; the server only talks to it over pipes."""

import asyncio
import datetime as dt
import os
import signal
import time

import pytest

from millimetric.query.plans import SourcesPlan, TimeRange
from millimetric.store.process import EventStoreProcess, StoreError
from millimetric.store.rows import EventRow, encode_rows
from test_auth_errors import assert_error

from conftest import bearer, stored_events

TRACK = {"event": "signup", "anonymous_id": "anon-1"}


def test_the_server_process_never_opens_the_event_file(client, keys, settings):
    client.post("/v1/track", json=TRACK, headers=bearer(keys.sk))
    store = client.app.state.services.events
    assert store.process.pid != os.getpid()
    own_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(settings.event_store_path) not in own_files
    child_files = {os.path.realpath(f"/proc/{store.process.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{store.process.pid}/fd")}
    assert str(settings.event_store_path) in child_files


def test_a_failed_store_call_is_reported_and_the_store_keeps_working(client, keys):
    store = client.app.state.services.events
    with pytest.raises(StoreError, match="no_such_table"):
        store.fetch("SELECT * FROM no_such_table")
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    assert [row["event_name"] for row in stored_events(client)] == ["signup"]


def test_a_dead_store_process_fails_the_calls_that_find_out_then_comes_back(client, keys):
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    dead = client.app.state.services.events.process.pid
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
    assert client.app.state.services.events.process.pid != dead
    assert client.post("/v1/track", json={**TRACK, "event": "after"}, headers=bearer(keys.sk)).status_code == 202
    assert [row["event_name"] for row in stored_events(client)] == ["signup", "after"]


def test_a_second_store_on_the_same_file_waits_then_reports_the_lock(tmp_path):
    path = tmp_path / "events.duckdb"
    first = EventStoreProcess(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="cannot open the event store"):
            EventStoreProcess(path, open_timeout=0.5)
        assert time.monotonic() - started >= 0.5
    finally:
        first.close()
    EventStoreProcess(path, open_timeout=0.5).close()  # free again once the first one closed


def test_closing_checkpoints_so_the_file_holds_every_row(tmp_path):
    import duckdb

    path = tmp_path / "events.duckdb"
    store = EventStoreProcess(path)
    asyncio.run(store.append([EventRow("p1", dt.datetime(2026, 1, 1), "a"), EventRow("p1", dt.datetime(2026, 1, 2), "b")]))
    store.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT seq, event_name FROM events ORDER BY seq").fetchall() == [(1, "a"), (2, "b")]
        assert con.execute("SELECT covered_seq FROM rollup_state").fetchall() == [(2,)]  # folded on the way out
    assert not (tmp_path / "events.duckdb.wal").exists()


def test_folds_leave_no_transaction_open_so_the_wal_is_checkpointed(tmp_path):
    """DuckDB checkpoints its WAL automatically only while no other transaction is open."""
    from millimetric.store.duckdb_events import DuckDBEventStore

    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path, checkpoint_threshold="1KB")
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
    from millimetric.store.duckdb_events import DuckDBEventStore

    path = tmp_path / "events.duckdb"
    plan = SourcesPlan(TimeRange(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)), "source", 50)
    store = DuckDBEventStore(path)
    _append(store, [EventRow("p1", dt.datetime(2026, 1, d), "a", anonymous_id=f"v{d % 3}", source="google")
                    for d in range(1, 29)])
    store.fold()
    answer = store.sources("p1", plan)
    assert answer == [("google", 28, 3, 0)]
    store._db.execute("UPDATE rollup_state SET layout = layout - 1")  # as an older build left it
    store.close()
    store = DuckDBEventStore(path)
    try:
        assert store.fetch("SELECT covered_seq FROM rollup_state")[1] == [(0,)]
        assert store.fetch("SELECT count(*) FROM source_visitors")[1] == [(0,)]
        assert store.sources("p1", plan) == answer  # from the events meanwhile
        store.fold()
        assert store.fetch("SELECT count(*) FROM source_visitors")[1] == [(3,)]
        assert store.sources("p1", plan) == answer
    finally:
        store.close()


def _append(store, rows: list[EventRow]) -> None:
    store.append(encode_rows(rows), len(rows))
