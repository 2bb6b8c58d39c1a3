"""The ingest journal: an append is durable once journaled; DuckDB gets the rows later, exactly once."""

import asyncio
import datetime as dt
import logging
import os
import shutil
import signal

import duckdb
import pytest

from millimetric.store import duckdb_events
from millimetric.store.duckdb_events import DuckDBEventStore
from millimetric.store.journal import Frame, Journal
from millimetric.store.process import EventStoreProcess
from millimetric.store.rows import EventRow, encode_rows


def _rows(names: str) -> list[EventRow]:
    return [EventRow("p1", dt.datetime(2026, 1, 1, 0, i), name) for i, name in enumerate(names)]


def _append(store, rows: list[EventRow]) -> None:
    store.append(encode_rows(rows), len(rows))


def _disk_full(fd: int) -> None:
    raise OSError(28, "No space left on device")


def _stored(path) -> list[tuple[int, str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT seq, event_name FROM events ORDER BY seq").fetchall()


def _journal_files(path) -> list:
    return sorted(path.with_suffix(".journal").glob("*.log"))


def test_an_append_is_in_the_journal_not_duckdb_until_a_flush(tmp_path):
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    try:
        _append(store, _rows("ab"))
        assert store._writer.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
        assert len(_journal_files(path)) == 1
        assert store.flush_due() is False  # not old enough, not enough rows
        store.flush()
        assert store._writer.execute("SELECT seq, event_name FROM events").fetchall() == [(1, "a"), (2, "b")]
        assert _journal_files(path) == []  # committed to DuckDB: the journal file is gone
    finally:
        store.close()


def test_every_read_sees_what_was_acknowledged(tmp_path):
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    try:
        _append(store, _rows("ab"))
        _append(store, _rows("c"))
        assert store.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [(1, "a"), (2, "b"), (3, "c")]
    finally:
        store.close()


def test_a_killed_store_process_loses_no_acknowledged_row(tmp_path):
    path = tmp_path / "events.duckdb"
    store = EventStoreProcess(path)
    asyncio.run(store.append(_rows("ab")))
    asyncio.run(store.append(_rows("cde")))
    os.kill(store.process.pid, signal.SIGKILL)
    store._child.process.join()
    reopened = EventStoreProcess(path)
    try:
        assert reopened.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [
            (1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")
        ]
        asyncio.run(reopened.append(_rows("f")))
        assert reopened.fetch("SELECT max(seq) FROM events")[1] == [(6,)]
    finally:
        reopened.close()
    assert _journal_files(path) == []


def test_the_files_a_crash_leaves_replay_every_acknowledged_row(tmp_path):
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    try:
        _append(store, _rows("ab"))
        store.flush()
        _append(store, _rows("cd"))  # only in the journal
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for file in tmp_path.glob("events.*"):
            (shutil.copytree if file.is_dir() else shutil.copy)(file, crashed / file.name)
    finally:
        store.close()
    store = DuckDBEventStore(crashed / "events.duckdb")
    try:
        assert store.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [
            (1, "a"), (2, "b"), (3, "c"), (4, "d")
        ]
    finally:
        store.close()


def test_frames_already_in_duckdb_are_not_replayed_twice(tmp_path):
    """A crash between DuckDB's commit and the journal file's deletion leaves both."""
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    _append(store, _rows("ab"))
    _append(store, _rows("c"))  # a one-row frame: its first seq is the last one flushed
    kept = tmp_path / "kept"
    shutil.copytree(path.with_suffix(".journal"), kept)
    store.close()
    for file in kept.glob("*.log"):
        shutil.copy(file, path.with_suffix(".journal"))
    store = DuckDBEventStore(path)
    try:
        _append(store, _rows("d"))
        assert store.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [
            (1, "a"), (2, "b"), (3, "c"), (4, "d")
        ]
    finally:
        store.close()


def test_a_write_cut_short_ends_the_replay_of_its_file(tmp_path, caplog):
    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.write(Frame(1, 1, b"first"))
    journal.write(Frame(2, 1, b"second"))
    journal.rotate()
    (file,) = directory.glob("*.log")
    file.write_bytes(file.read_bytes()[:-2])  # the second frame's write did not finish
    with caplog.at_level(logging.WARNING, logger="millimetric.store"):
        assert Journal(directory).replay() == [Frame(1, 1, b"first")]
    assert "ignored" in caplog.text


def test_a_damaged_frame_ends_the_replay_of_its_file(tmp_path):
    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.write(Frame(1, 1, b"first"))
    journal.write(Frame(2, 1, b"second"))
    journal.write(Frame(3, 1, b"third"))
    journal.rotate()
    (file,) = directory.glob("*.log")
    data = bytearray(file.read_bytes())
    data[data.index(b"second")] ^= 0xFF
    file.write_bytes(bytes(data))
    assert Journal(directory).replay() == [Frame(1, 1, b"first")]


def test_seqs_of_deleted_events_are_not_used_again(tmp_path):
    """Cursors page by seq: a seq handed out once must never come back after a restart."""
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    _append(store, _rows("abc"))
    assert store.delete_before("p1", dt.datetime(2027, 1, 1)) == 3
    store.close()
    store = DuckDBEventStore(path)
    try:
        _append(store, _rows("d"))
        assert store.fetch("SELECT seq, event_name FROM events")[1] == [(4, "d")]
    finally:
        store.close()


def test_a_failed_flush_keeps_the_rows_for_the_next_one(tmp_path, monkeypatch):
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    try:
        _append(store, _rows("ab"))
        build = duckdb_events._arrow_table
        monkeypatch.setattr(duckdb_events, "_arrow_table", lambda frames: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            store.flush()
        assert len(_journal_files(path)) == 1  # still on disk
        _append(store, _rows("c"))
        monkeypatch.setattr(duckdb_events, "_arrow_table", build)
        assert store.flush_due() is False
        assert store.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [(1, "a"), (2, "b"), (3, "c")]
        assert _journal_files(path) == []
    finally:
        store.close()
    assert _stored(path) == [(1, "a"), (2, "b"), (3, "c")]


def test_a_failed_write_leaves_no_torn_frame_before_later_ones(tmp_path, monkeypatch):
    from millimetric.store import journal as journal_module

    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.write(Frame(1, 1, b"first"))
    monkeypatch.setattr(journal_module.os, "fdatasync", _disk_full)
    with pytest.raises(OSError):
        journal.write(Frame(2, 1, b"refused"))
    monkeypatch.undo()
    journal.write(Frame(3, 1, b"third"))
    journal.rotate()
    assert Journal(directory).replay() == [Frame(1, 1, b"first"), Frame(3, 1, b"third")]


def test_the_store_answers_a_failed_append_and_goes_on(tmp_path, monkeypatch):
    from millimetric.store import journal as journal_module

    store = DuckDBEventStore(tmp_path / "events.duckdb")
    try:
        _append(store, _rows("a"))
        monkeypatch.setattr(journal_module.os, "fdatasync", _disk_full)
        with pytest.raises(OSError):
            _append(store, _rows("x"))
        monkeypatch.undo()
        _append(store, _rows("b"))
        assert store.fetch("SELECT seq, event_name FROM events ORDER BY seq")[1] == [(1, "a"), (3, "b")]
    finally:
        store.close()


def test_every_value_reaches_duckdb_as_it_was_sent(tmp_path):
    """Rows travel as Arrow IPC streams: text, nulls and microseconds intact."""
    odd = 'quote " backslash \\ newline \n tab \t emoji 🦆 cjk 漢字 nul-free \u2028'
    row = EventRow(
        "p1", dt.datetime(2026, 3, 29, 1, 59, 59, 123456), odd, event_id=None, anonymous_id="a\nb", user_id=odd,
        session_id="", source="google", campaign=None, referrer=None, url="https://example.com/ü?q=\"x\"",
        path="/ü", properties='{"k":"v \\" \\n","n":[1,2.5,null],"e":"🦆"}',
    )
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    try:
        _append(store, [row, EventRow("p1", dt.datetime(2026, 3, 29), "plain")])
        columns = ", ".join(f'"{name}"' for name in EventRow.__struct_fields__)
        stored = store.fetch(f"SELECT {columns} FROM events ORDER BY seq")[1]
    finally:
        store.close()
    assert stored[0] == tuple(getattr(row, name) for name in EventRow.__struct_fields__)
    assert stored[1][2] == "plain"
