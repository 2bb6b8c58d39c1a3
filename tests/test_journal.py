"""The ingest journal: an append is durable once journaled; DuckDB gets the rows later, exactly once,
and a frame that can never go in is set aside instead of blocking everything behind it."""

import datetime as dt
import itertools
import logging
import shutil
import struct
import zlib

import duckdb
import pytest

from millimetric.events.model import EventRow
from millimetric.events.queries import Filters, RowsPlan, TimeRange
from millimetric.store import journal as journal_module
from millimetric.store.duckdb import database as database_module
from millimetric.store.duckdb.database import EventDatabase
from millimetric.store.interface import StoreOverloaded
from millimetric.store.journal import MAGIC, Frame, Journal, JournalFormatError
from millimetric.store.rows import PAYLOAD_FORMAT, encode_rows

_MINUTES = itertools.count()


def _rows(names: str) -> list[EventRow]:
    """One event per name, each a minute after the last one made."""
    return [EventRow("p1", dt.datetime(2026, 1, 1) + dt.timedelta(minutes=next(_MINUTES)), name) for name in names]


def _append(store: EventDatabase, rows: list[EventRow]) -> None:
    store.append(encode_rows(rows), len(rows))


def _frame(first_seq: int, payload: bytes) -> Frame:
    return Frame(first_seq, 1, payload, PAYLOAD_FORMAT)


def _disk_full(fd: int) -> None:
    raise OSError(28, "No space left on device")


def _stored(path) -> list[tuple[int, str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT seq, event_name FROM events ORDER BY seq").fetchall()


def _journal_files(path) -> list:
    return sorted(path.with_suffix(".journal").glob("*.log"))


def _crash_copy(tmp_path, name: str = "crashed"):
    """The files of `tmp_path/events.*` as a crash (kill -9) would leave them, in a new folder."""
    crashed = tmp_path / name
    crashed.mkdir()
    for file in tmp_path.glob("events.*"):
        (shutil.copytree if file.is_dir() else shutil.copy)(file, crashed / file.name)
    return crashed / "events.duckdb"


def _names(store: EventDatabase) -> list[str]:
    """Event names through the store's own read, oldest first."""
    plan = RowsPlan(TimeRange(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1)), Filters(), 1000)
    return [row[2] for row in reversed(store.rows("p1", plan).rows)]


def test_an_append_is_in_the_journal_not_duckdb_until_a_flush(tmp_path):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    try:
        _append(store, _rows("ab"))
        assert len(_journal_files(path)) == 1
        assert store.status()["unflushed_events"] == 2
        assert store.flush_due() is False  # not old enough, not enough rows
        store.flush()
        assert store.status()["unflushed_events"] == 0
        assert _journal_files(path) == []  # committed to DuckDB: the journal file is gone
    finally:
        store.close()
    assert _stored(path) == [(1, "a"), (2, "b")]


def test_every_read_sees_what_was_acknowledged(tmp_path):
    store = EventDatabase(tmp_path / "events.duckdb")
    try:
        _append(store, _rows("ab"))
        _append(store, _rows("c"))
        assert _names(store) == ["a", "b", "c"]
    finally:
        store.close()


def test_the_files_a_crash_leaves_replay_every_acknowledged_row(tmp_path):
    store = EventDatabase(tmp_path / "events.duckdb")
    try:
        _append(store, _rows("ab"))
        store.flush()
        _append(store, _rows("cd"))  # only in the journal
        crashed = _crash_copy(tmp_path)
    finally:
        store.close()
    EventDatabase(crashed).close()
    assert _stored(crashed) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_frames_already_in_duckdb_are_not_replayed_twice(tmp_path):
    """A crash between DuckDB's commit and the journal file's deletion leaves both."""
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    _append(store, _rows("ab"))
    _append(store, _rows("c"))  # a one-row frame: its first seq is the last one flushed
    kept = tmp_path / "kept"
    shutil.copytree(path.with_suffix(".journal"), kept)
    store.close()
    for file in kept.glob("*.log"):
        shutil.copy(file, path.with_suffix(".journal"))
    store = EventDatabase(path)
    _append(store, _rows("d"))
    store.close()
    assert _stored(path) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_a_write_cut_short_ends_the_replay_of_its_file(tmp_path, caplog):
    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.write(_frame(1, b"first"))
    journal.write(_frame(2, b"second"))
    journal.rotate()
    (file,) = directory.glob("*.log")
    file.write_bytes(file.read_bytes()[:-2])  # the second frame's write did not finish
    with caplog.at_level(logging.WARNING, logger="millimetric.store"):
        assert Journal(directory).replay() == [_frame(1, b"first")]
    assert "ignored" in caplog.text


def test_a_damaged_frame_ends_the_replay_of_its_file(tmp_path):
    directory = tmp_path / "journal"
    journal = Journal(directory)
    for seq, payload in enumerate((b"first", b"second", b"third"), start=1):
        journal.write(_frame(seq, payload))
    journal.rotate()
    (file,) = directory.glob("*.log")
    data = bytearray(file.read_bytes())
    data[data.index(b"second")] ^= 0xFF
    file.write_bytes(bytes(data))
    assert Journal(directory).replay() == [_frame(1, b"first")]


def test_a_journal_file_of_the_first_format_replays(tmp_path):
    """0.1.0 wrote frames with no file header and no payload format: they are payload format 1."""
    directory = tmp_path / "journal"
    directory.mkdir()
    legacy = struct.Struct("<qIII")
    payload = encode_rows(_rows("a"))
    (directory / "00000000000000000007.log").write_bytes(legacy.pack(7, 1, len(payload), zlib.crc32(payload)) + payload)
    assert Journal(directory).replay() == [Frame(7, 1, payload, 1)]


def test_a_journal_file_of_a_newer_format_is_refused_not_skipped(tmp_path):
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "00000000000000000001.log").write_bytes(MAGIC + struct.pack("<H", 99) + b"future frames")
    with pytest.raises(JournalFormatError, match="newer"):
        Journal(directory).replay()


def test_seqs_of_deleted_events_are_not_used_again(tmp_path):
    """Cursors page by seq: a seq handed out once must never come back after a restart."""
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    _append(store, _rows("abc"))
    assert store.delete_before("p1", dt.datetime(2027, 1, 1)) == 3
    store.close()
    store = EventDatabase(path)
    _append(store, _rows("d"))
    store.close()
    assert _stored(path) == [(4, "d")]


def test_a_failed_flush_keeps_the_rows_for_the_next_one(tmp_path, monkeypatch):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    build = database_module._arrow_table
    try:
        _append(store, _rows("ab"))
        monkeypatch.setattr(database_module, "_arrow_table", _io_error)
        with pytest.raises(duckdb.IOException):
            store.flush()
        assert len(_journal_files(path)) == 1  # still on disk
        _append(store, _rows("c"))
        monkeypatch.setattr(database_module, "_arrow_table", build)
        assert store.flush_due() is False
        assert _names(store) == ["a", "b", "c"]
        assert _journal_files(path) == []
    finally:
        store.close()
    assert _stored(path) == [(1, "a"), (2, "b"), (3, "c")]


def _io_error(frames):
    raise duckdb.IOException("could not write: no space left on device")


def test_a_failed_write_leaves_no_torn_frame_before_later_ones(tmp_path, monkeypatch):
    directory = tmp_path / "journal"
    journal = Journal(directory)
    journal.write(_frame(1, b"first"))
    monkeypatch.setattr(journal_module.os, "fdatasync", _disk_full)
    with pytest.raises(OSError):
        journal.write(_frame(2, b"refused"))
    monkeypatch.undo()
    journal.write(_frame(3, b"third"))
    journal.rotate()
    assert Journal(directory).replay() == [_frame(1, b"first"), _frame(3, b"third")]


def test_the_store_answers_a_failed_append_and_goes_on(tmp_path, monkeypatch):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    _append(store, _rows("a"))
    monkeypatch.setattr(journal_module.os, "fdatasync", _disk_full)
    with pytest.raises(OSError):
        _append(store, _rows("x"))
    monkeypatch.undo()
    _append(store, _rows("b"))
    store.close()
    assert _stored(path) == [(1, "a"), (3, "b")]


def test_a_flush_deletes_only_the_journal_files_whose_frames_it_inserted(tmp_path, monkeypatch):
    """While a flush inserts frame F1 (file A), an append journals F2 into a new file B, and the next
    append's fdatasync fails (disk full), which closes B. The flush must delete A only: B holds F2,
    acknowledged and not yet in DuckDB, and a crash right after must still find it."""
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    build = database_module._arrow_table
    interleaved = []

    def insert_meanwhile(frames):
        if not interleaved:
            interleaved.append(True)
            _append(store, _rows("b"))  # F2, acknowledged, in file B
            monkeypatch.setattr(journal_module.os, "fdatasync", _disk_full)
            with pytest.raises(OSError):
                _append(store, _rows("x"))  # refused: B is closed
            monkeypatch.setattr(journal_module.os, "fdatasync", _real_fdatasync)
        return build(frames)

    _append(store, _rows("a"))  # F1, in file A
    monkeypatch.setattr(database_module, "_arrow_table", insert_meanwhile)
    store.flush()
    assert interleaved
    crashed = _crash_copy(tmp_path)  # the state a crash at this moment leaves
    monkeypatch.setattr(database_module, "_arrow_table", build)
    store.close()
    EventDatabase(crashed).close()
    assert _stored(crashed) == [(1, "a"), (2, "b")]


_real_fdatasync = journal_module.os.fdatasync


def test_a_frame_that_cannot_be_inserted_is_quarantined_and_blocks_nothing(tmp_path, caplog):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    try:
        _append(store, _rows("a"))
        store.append(b"not an arrow payload", 3)  # journaled (acknowledged) but never insertable
        _append(store, _rows("b"))
        with caplog.at_level(logging.ERROR, logger="millimetric.store"):
            assert _names(store) == ["a", "b"]  # the read flushed around it
        assert "quarantined 3 events" in caplog.text
        assert store.status()["quarantined_files"] == 1
        _append(store, _rows("c"))
        assert _names(store) == ["a", "b", "c"]
    finally:
        store.close()
    (kept,) = path.with_suffix(".quarantine").glob("*.log")
    assert Journal(kept.parent).replay() == [Frame(2, 3, b"not an arrow payload", PAYLOAD_FORMAT)]
    assert _journal_files(path) == []
    assert _stored(path) == [(1, "a"), (5, "b"), (6, "c")]


def test_a_poisoned_journal_does_not_stop_the_store_from_starting(tmp_path):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    _append(store, _rows("a"))
    store.append(b"garbage", 1)
    _append(store, _rows("b"))
    crashed = _crash_copy(tmp_path)
    store.close()
    reopened = EventDatabase(crashed)  # replays: quarantines the bad frame, inserts the rest
    try:
        assert reopened.status()["quarantined_files"] == 1
        assert _names(reopened) == ["a", "b"]
    finally:
        reopened.close()


def test_appends_are_refused_once_failing_flushes_hold_too_much(tmp_path, monkeypatch):
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    build = database_module._arrow_table
    monkeypatch.setattr(database_module, "MAX_UNFLUSHED_BYTES", 20_000)
    monkeypatch.setattr(database_module, "_arrow_table", _io_error)
    accepted = 0
    try:
        with pytest.raises(StoreOverloaded):
            for _ in range(1000):
                _append(store, _rows("abcde"))
                accepted += 5
                with pytest.raises(duckdb.IOException):
                    store.flush()
        assert 0 < accepted < 5000
        monkeypatch.setattr(database_module, "_arrow_table", build)
        store.flush()
        _append(store, _rows("z"))  # accepted again once the rows are written
    finally:
        store.close()
    assert len(_stored(path)) == accepted + 1


def test_every_value_reaches_duckdb_as_it_was_sent(tmp_path):
    """Rows travel as Arrow IPC streams: text, nulls and microseconds intact."""
    odd = 'quote " backslash \\ newline \n tab \t emoji 🦆 cjk 漢字 nul-free \u2028'
    row = EventRow(
        "p1",
        dt.datetime(2026, 3, 29, 1, 59, 59, 123456),
        odd,
        event_id=None,
        anonymous_id="a\nb",
        user_id=odd,
        session_id="",
        source="google",
        campaign=None,
        referrer=None,
        url='https://example.com/ü?q="x"',
        path="/ü",
        properties='{"k":"v \\" \\n","n":[1,2.5,null],"e":"🦆"}',
    )
    path = tmp_path / "events.duckdb"
    store = EventDatabase(path)
    _append(store, [row, EventRow("p1", dt.datetime(2026, 3, 29), "plain")])
    store.close()
    columns = ", ".join(f'"{name}"' for name in EventRow.__struct_fields__)
    with duckdb.connect(str(path), read_only=True) as con:
        stored = con.execute(f"SELECT {columns} FROM events ORDER BY seq").fetchall()
    assert stored[0] == tuple(getattr(row, name) for name in EventRow.__struct_fields__)
    assert stored[1][2] == "plain"
