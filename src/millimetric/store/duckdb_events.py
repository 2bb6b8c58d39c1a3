"""The embedded event store: one DuckDB file, opened only inside the store process
(`millimetric.store.process`)."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from millimetric.query.plans import RowsPlan, SourcesPlan, StatsPlan
from millimetric.store import duckdb_reads, duckdb_rollup
from millimetric.store.journal import Frame, Journal
from millimetric.store.rows import COLUMNS, IDENTIFY_EVENT, decode_rows

log = logging.getLogger("millimetric.store")

# Layout. Rows arrive in time order, so DuckDB's zone maps on "timestamp" skip the row groups
# outside a read's range. A derived session id (`{anonymous_id}-{floor(unix_seconds/1800)}`, SPEC
# section 3) is not stored: `session_id` is a virtual column over `session_sent`, which keeps only
# ids that differ from the derivation. With the checkpoint setting below, bench/query.py at 10M
# events measured 31.6 bytes per event on disk, against 67.8 before (41.8 of them in use, the
# session id column 8.2 of those).
_DERIVED_SESSION = """anonymous_id || '-' || (epoch_ms("timestamp") // 1800000)::VARCHAR"""
_TYPES = {
    "timestamp": "TIMESTAMP",
    "seq": "BIGINT",
    "session_id": f"VARCHAR GENERATED ALWAYS AS (coalesce(session_sent, {_DERIVED_SESSION})) VIRTUAL",
}
TABLE_COLUMNS = ("seq", *COLUMNS)
_SEQ = pa.field("seq", pa.int64())
_DDL = "CREATE TABLE IF NOT EXISTS events ({}, session_sent VARCHAR)".format(
    ", ".join(f'"{name}" {_TYPES.get(name, "VARCHAR")}' for name in TABLE_COLUMNS)
)
_STORED = [f'"{name}"' for name in TABLE_COLUMNS if name != "session_id"]
_INSERT = "INSERT INTO events ({}, session_sent) SELECT {}, nullif(session_id, {}) FROM incoming".format(
    ", ".join(_STORED), ", ".join(_STORED), _DERIVED_SESSION
)
# Fewer, larger checkpoints: with DuckDB's default (16 MB of WAL) a bulk load rewrote the tail row
# group so often that 38% of the file ended up as free blocks.
CHECKPOINT_WAL_BYTES = "256MB"
# Every read orders its rows (ORDER BY), so DuckDB need not keep a flush's rows in the order they
# came: inserting 250,000 rows then cost 4.2-4.3 us of CPU each, against 6.6-7.0 in order (each
# thread appends the Arrow batches it takes to row groups of its own). Rows still arrive in time
# order from flush to flush, so the zone maps on "timestamp" and seq lose precision only within one
# flush's span.
INSERTION_ORDER = False
# The rollup of /v1/sources is brought up to date this often, or sooner once this many events wait:
# a fold costs a pass over the rollup; events not folded yet cost every sources read a little.
FOLD_SECONDS = 30.0
FOLD_EVENTS = 100_000
# The journal's rows reach DuckDB this often, or sooner once this many wait (and before every read
# and delete). Each insert has a fixed cost of a few ms, and DuckDB writes the full row groups
# (122,880 rows) of one insert straight to the database file instead of to the WAL first, which
# checkpoints then rewrite: at two row groups a flush, inserting cost the bench machine 6.8 us of
# CPU per row, against 9.1 at 50,000.
FLUSH_SECONDS = 5.0
FLUSH_EVENTS = 2 * 122_880


class DuckDBEventStore:
    """Appends go to the journal (`millimetric.store.journal`) and reach DuckDB in bulk (`flush`).
    Every read and delete flushes first, so it sees every acknowledged event.

    Locks, always taken in this order: `_flush_lock` (the `_writer` cursor: flushes and deletes),
    `_lock` (the journal and the rows not flushed yet), `_rollup_lock` (folds and deletes)."""

    def __init__(self, path: Path, checkpoint_threshold: str = CHECKPOINT_WAL_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = duckdb.connect(str(path), config={
            "checkpoint_threshold": checkpoint_threshold, "preserve_insertion_order": INSERTION_ORDER,
        })
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute(_DDL)
        duckdb_rollup.open_rollup(self._db)
        if not self._db.execute("SELECT 1 FROM duckdb_columns() WHERE table_name = 'events' AND column_name = "
                                "'session_sent'").fetchall():
            raise RuntimeError(f"{path} has the event table layout of an older build: start on a new data directory")
        self._db.execute("CREATE TABLE IF NOT EXISTS journal_state (flushed_seq BIGINT NOT NULL)")
        self._db.execute("INSERT INTO journal_state SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM journal_state)")
        # Deleted events leave their seq behind in journal_state: a seq is never used twice.
        flushed = self._db.execute(
            "SELECT greatest((SELECT flushed_seq FROM journal_state), (SELECT coalesce(max(seq), 0) FROM events))"
        ).fetchall()[0][0]
        self._next_seq = flushed + 1
        self._writer = self._db.cursor()
        self._flush_lock = threading.Lock()
        self._lock = threading.RLock()
        self._rollup_lock = threading.Lock()
        self._unflushed: list[Frame] = []
        self._unflushed_events = 0
        self._oldest_unflushed = 0.0
        self._journal = Journal(path.with_suffix(".journal"))
        self._replay(flushed)
        self._folder = self._db.cursor()
        self._covered_seq = duckdb_rollup.covered_seq(self._folder)
        self._folded_at = time.monotonic()

    def append(self, payload: bytes, count: int) -> None:
        """Durable on return: `count` rows (`rows.encode_rows`) are in the journal."""
        if not count:
            return
        with self._lock:
            frame = Frame(self._next_seq, count, payload)
            self._next_seq = frame.next_seq  # taken even if the write fails: a seq is never used twice
            self._journal.write(frame)
            if not self._unflushed:
                self._oldest_unflushed = time.monotonic()
            self._unflushed.append(frame)
            self._unflushed_events += count

    def flush(self) -> None:
        """Hand the journal's rows to DuckDB: one insert, one transaction."""
        with self._flush_lock:
            with self._lock:
                frames = self._take_unflushed()
            self._insert(frames)

    def flush_due(self) -> bool:
        waiting = self._unflushed_events
        return waiting >= FLUSH_EVENTS or (waiting > 0 and time.monotonic() - self._oldest_unflushed >= FLUSH_SECONDS)

    def _take_unflushed(self) -> list[Frame]:
        frames, self._unflushed, self._unflushed_events = self._unflushed, [], 0
        self._journal.rotate()
        return frames

    def _insert(self, frames: list[Frame]) -> None:
        """Insert the frames' rows, then drop the journal files that held them. If the insert
        fails, the frames stay in line for the next flush (and their files on disk for a replay)."""
        if not frames:
            return
        try:
            # DuckDB finds the Arrow table `incoming` by its Python name (a replacement scan).
            incoming = _arrow_table(frames)  # noqa: F841
            with duckdb_rollup.transaction(self._writer):
                self._writer.execute(_INSERT)
                self._writer.execute("UPDATE journal_state SET flushed_seq = $seq", {"seq": frames[-1].next_seq - 1})
        except BaseException:
            with self._lock:
                self._unflushed[:0] = frames
                self._unflushed_events += sum(frame.count for frame in frames)
            raise
        self._journal.discard_closed()

    def _replay(self, flushed: int) -> None:
        """Insert what a crash left in the journal only, then start it afresh."""
        frames = [frame for frame in self._journal.replay() if frame.first_seq > flushed]
        if frames:
            log.info("replaying %d journal frames from seq %d", len(frames), frames[0].first_seq)
            self._insert(frames)
            self._next_seq = frames[-1].next_seq
        self._journal.discard_closed()

    def delete_user(self, project_id: str, user_id: str) -> int:
        """Delete a user's events, their `$identify` rows, and every event of an anonymous_id an
        identify linked to them. Serialised with appends; returns the number of rows deleted."""
        condition = """project_id = $project AND (
            user_id = $user
            OR anonymous_id IN (
                SELECT anonymous_id FROM events
                WHERE project_id = $project AND event_name = $identify AND user_id = $user
            )
        )"""
        return self._delete(condition, {"project": project_id, "user": user_id, "identify": IDENTIFY_EVENT})

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        """Delete a project's events older than `cutoff` (naive UTC); returns how many."""
        condition = 'project_id = $project AND "timestamp" < $cutoff'
        return self._delete(condition, {"project": project_id, "cutoff": cutoff})

    def fold(self) -> int:
        """Bring the sources rollup up to date; returns how many events it took in."""
        with self._rollup_lock:
            folded = duckdb_rollup.fold(self._folder)
            self._covered_seq = duckdb_rollup.covered_seq(self._folder)
            self._folded_at = time.monotonic()
            return folded

    def fold_due(self) -> bool:
        waiting = self._next_seq - 1 - self._covered_seq
        return waiting >= FOLD_EVENTS or (waiting > 0 and time.monotonic() - self._folded_at >= FOLD_SECONDS)

    def _delete(self, condition: str, params: dict) -> int:
        with self._flush_lock, self._lock, self._rollup_lock:
            self._insert(self._take_unflushed())
            with duckdb_rollup.transaction(self._writer):
                return duckdb_rollup.delete_events(self._writer, condition, params)

    def rows(self, project_id: str, plan: RowsPlan) -> tuple[list[tuple], int]:
        with self._cursor() as cur:
            return duckdb_reads.select_rows(cur, project_id, plan)

    def stats(self, project_id: str, plan: StatsPlan) -> list[tuple]:
        with self._cursor() as cur:
            return duckdb_reads.select_stats(cur, project_id, plan)

    def sources(self, project_id: str, plan: SourcesPlan) -> list[tuple]:
        with self._cursor() as cur:
            return duckdb_reads.select_sources(cur, project_id, plan)

    def fetch(self, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of one statement: for health checks, tests and operators."""
        with self._cursor() as cur:
            result = cur.execute(sql, params)
            return [d[0] for d in result.description], result.fetchall()

    def ping(self) -> None:
        self.fetch("SELECT 1")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one read, which sees every acknowledged event."""
        self.flush()
        cur = self._db.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def close(self) -> None:
        """Flush, fold and checkpoint: the next start finds no journal or WAL to replay and the rollup
        complete."""
        with self._flush_lock, self._lock, self._rollup_lock:
            self._insert(self._take_unflushed())  # closes and deletes the last journal file too
            self._writer.close()
            try:
                duckdb_rollup.fold(self._folder)
            except duckdb.Error:  # the next start folds instead
                log.exception("could not fold new events into the sources rollup")
            self._folder.close()
            self._db.execute("CHECKPOINT")
            self._db.close()


def _arrow_table(frames: list[Frame]) -> pa.Table:
    """The frames' rows (`rows.encode_rows`) with their seqs, as one Arrow table."""
    rows = decode_rows(frame.payload for frame in frames)
    seqs = pa.array(itertools.chain.from_iterable(range(f.first_seq, f.next_seq) for f in frames), pa.int64())
    if len(seqs) != rows.num_rows:
        raise ValueError(f"journal frames announce {len(seqs)} rows but hold {rows.num_rows}")
    return rows.add_column(0, _SEQ, seqs)
