"""The embedded event database: one DuckDB file and its ingest journal, opened only inside the
store process (`millimetric.store.duckdb.child`)."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from millimetric.events.model import IDENTIFY_EVENT
from millimetric.events.queries import (
    FunnelCounts,
    FunnelPlan,
    RowsPage,
    RowsPlan,
    SourceRow,
    SourcesPlan,
    StatRow,
    StatsPlan,
    TimeRange,
)
from millimetric.operations import metrics
from millimetric.store.dedup import SeenIds
from millimetric.store.duckdb import dedup, export, migrations, reads, rollup
from millimetric.store.duckdb.funnel import select_funnel
from millimetric.store.interface import StoreOverloaded
from millimetric.store.journal import Frame, Journal, write_file
from millimetric.store.rows import PAYLOAD_FORMAT, decode_payload, decode_rows, encode_batch

log = logging.getLogger("millimetric.store")

_SEQ = pa.field("seq", pa.int64())
_STORED = [f'"{name}"' for name in migrations.TABLE_COLUMNS if name != "session_id"]
_INSERT = "INSERT INTO events ({}, session_sent) SELECT {}, nullif(session_id, {}) FROM incoming".format(
    ", ".join(_STORED), ", ".join(_STORED), migrations.DERIVED_SESSION_SQL
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
# Rows acknowledged but not in DuckDB yet are held in memory too. If flushes keep failing (a full
# disk, say), appends are refused past this many payload bytes instead of growing without bound.
MAX_UNFLUSHED_BYTES = 256 * 1024 * 1024
# A frame that fails on its own with one of these can never be inserted: it is quarantined.
# Anything else (I/O, memory, a transaction conflict) may pass on a later try and keeps its frame.
_POISON = (
    ValueError,
    TypeError,
    KeyError,
    pa.ArrowException,
    duckdb.DataError,
    duckdb.IntegrityError,
    duckdb.ProgrammingError,
)


class EventDatabase:
    """Appends go to the journal and reach DuckDB in bulk (`flush`). Every read and delete
    flushes first, so it sees every acknowledged event.

    Locks, always taken in this order: `_flush_lock` (inserts into DuckDB), `_lock` (the journal
    and the rows not inserted yet), `_rollup_lock` (folds and deletes). A delete holds
    `_flush_lock` only while it inserts what was acknowledged before it, so appends, flushes and
    reads go on while it runs (DuckDB's transactions keep them apart)."""

    def __init__(self, path: Path, checkpoint_threshold: str = CHECKPOINT_WAL_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = duckdb.connect(
            str(path),
            config={
                "checkpoint_threshold": checkpoint_threshold,
                "preserve_insertion_order": INSERTION_ORDER,
            },
        )
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET enable_progress_bar = false")  # long migrations log a line instead
        self.found_format = migrations.migrate(self._db, self.path)
        rollup.open_rollup(self._db)
        dedup.open_marks(self._db)
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
        self._unflushed_bytes = 0
        self._oldest_unflushed = 0.0
        self._quarantine = self.path.with_suffix(".quarantine")
        self._journal = Journal(self.path.with_suffix(".journal"))
        self._replay(flushed)
        self._seen = SeenIds()
        loaded = dedup.rebuild(self._seen, self._db)
        if loaded:
            log.info("de-duplication: %d event ids seen within the window", loaded)
        self._folder = self._db.cursor()
        self._covered_seq = rollup.covered_seq(self._folder)
        self._folded_at = time.monotonic()

    # writes ---------------------------------------------------------------------------------
    def append(self, payload: bytes, count: int) -> list[int]:
        """Durable on return: `count` rows (`rows.encode_rows`) are in the journal, except those
        whose event id the store accepted within the de-duplication window (or earlier in the
        same rows): their positions are returned, and they are not stored."""
        if not count:
            return []
        try:
            batch = decode_payload(payload, PAYLOAD_FORMAT)
            ids = dedup.event_ids(batch)
        except (pa.ArrowException, ValueError):
            ids = None  # journaled as sent: the flush quarantines what can never be inserted
        with self._lock:
            duplicates = self._seen.duplicates(*ids) if ids is not None else []
            if duplicates:
                if len(duplicates) == count:
                    return duplicates
                keep = [True] * count
                for position in duplicates:
                    keep[position] = False
                payload = encode_batch(batch.filter(pa.array(keep)))
            self._journal_append(payload, count - len(duplicates))
            if ids is not None:  # only once durable: a failed write must not make a retry a duplicate
                self._seen.remember(*ids, skip=duplicates)
            return duplicates

    def _journal_append(self, payload: bytes, count: int) -> None:
        """Under `_lock`."""
        if self._unflushed_bytes + len(payload) > MAX_UNFLUSHED_BYTES:
            waiting = self._unflushed_events
            raise StoreOverloaded(f"{waiting} acknowledged events wait for DuckDB (inserts keep failing)")
        frame = Frame(self._next_seq, count, payload, PAYLOAD_FORMAT)
        self._next_seq = frame.next_seq  # taken even if the write fails: a seq is never used twice
        self._journal.write(frame)
        if not self._unflushed:
            self._oldest_unflushed = time.monotonic()
        self._unflushed.append(frame)
        self._unflushed_events += count
        self._unflushed_bytes += len(payload)

    def flush(self) -> None:
        """Hand the journal's rows to DuckDB: one insert, one transaction."""
        with self._flush_lock:
            frames, files = self._take_unflushed()
            started = time.perf_counter()
            self._insert(frames, files)
            if frames:
                metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)

    def flush_due(self) -> bool:
        waiting = self._unflushed_events
        return waiting >= FLUSH_EVENTS or (waiting > 0 and time.monotonic() - self._oldest_unflushed >= FLUSH_SECONDS)

    def _take_unflushed(self) -> tuple[list[Frame], list[Path]]:
        """The rows not in DuckDB yet and the journal files that hold them (and no other rows)."""
        with self._lock:
            frames = self._unflushed
            self._unflushed, self._unflushed_events, self._unflushed_bytes = [], 0, 0
            self._journal.rotate()
            return frames, self._journal.take_closed()

    def _requeue(self, frames: list[Frame], files: list[Path]) -> None:
        with self._lock:
            self._unflushed[:0] = frames
            self._unflushed_events += sum(frame.events for frame in frames)
            self._unflushed_bytes += sum(len(frame.payload) for frame in frames)
            self._journal.restore(files)

    def _insert(self, frames: list[Frame], files: list[Path]) -> None:
        """Insert the frames' rows, then delete the journal files that held them. If the insert
        fails, each frame is tried alone: one that can never go in is quarantined; the others
        stay in line for the next flush (and their files on disk for a replay)."""
        try:
            if frames:
                self._commit(frames)
        except BaseException as exc:
            if not isinstance(exc, Exception) or len(frames) == 0:
                self._requeue(frames, files)
                raise
            kept = self._insert_each(frames)
            if kept:
                self._requeue(kept, files)
                raise
        self._journal.discard(files)

    def _insert_each(self, frames: list[Frame]) -> list[Frame]:
        """Commit frames one by one after a bulk insert failed; returns those that may pass later."""
        for index, frame in enumerate(frames):
            try:
                self._commit([frame])
            except _POISON as exc:
                self._quarantine_frame(frame, exc)
            except Exception:
                return frames[index:]
        return []

    def _commit(self, frames: list[Frame]) -> None:
        # DuckDB finds the Arrow table `incoming` by its Python name (a replacement scan).
        incoming = _arrow_table(frames)  # noqa: F841
        with rollup.transaction(self._writer):
            self._writer.execute(_INSERT)
            self._writer.execute("UPDATE journal_state SET flushed_seq = $seq", {"seq": frames[-1].next_seq - 1})
            dedup.record_mark(self._writer, frames[-1].next_seq - 1, time.time())

    def _quarantine_frame(self, frame: Frame, error: BaseException) -> None:
        """Keep a frame that cannot be inserted in a file of its own, never deleted, and move on."""
        self._quarantine.mkdir(exist_ok=True)
        target = self._quarantine / f"{frame.first_seq:020d}.log"
        write_file(target, [frame])
        with rollup.transaction(self._writer):
            self._writer.execute(
                "UPDATE journal_state SET flushed_seq = greatest(flushed_seq, $seq)", {"seq": frame.next_seq - 1}
            )
        log.error(
            "event store: quarantined %d events (seqs %d-%d) that cannot be inserted (%s: %s); kept in %s",
            frame.events,
            frame.first_seq,
            frame.next_seq - 1,
            type(error).__name__,
            error,
            target,
        )

    def quarantined_files(self) -> int:
        return len(list(self._quarantine.glob("*.log"))) if self._quarantine.exists() else 0

    def _replay(self, flushed: int) -> None:
        """Insert what a crash left in the journal only, then start it afresh."""
        frames = [frame for frame in self._journal.replay() if frame.first_seq > flushed]
        files = self._journal.take_closed()
        if frames:
            log.info("replaying %d journal frames from seq %d", len(frames), frames[0].first_seq)
            self._next_seq = max(self._next_seq, frames[-1].next_seq)
        self._insert(frames, files)

    # deletes --------------------------------------------------------------------------------
    def delete_user(self, project_id: str, user_id: str) -> int:
        """Delete a user's events, their `$identify` rows, and every event of an anonymous_id an
        identify linked to them; returns the number of rows deleted."""
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

    def _delete(self, condition: str, params: dict) -> int:
        self.flush()  # every event acknowledged before the delete is in DuckDB, so it is covered
        with self._rollup_lock:
            cur = self._db.cursor()
            try:
                with rollup.transaction(cur):
                    return rollup.delete_events(cur, condition, params)
            finally:
                cur.close()

    def fold(self) -> int:
        """Bring the sources rollup up to date; returns how many events it took in."""
        with self._rollup_lock:
            folded = rollup.fold(self._folder)
            self._covered_seq = rollup.covered_seq(self._folder)
            self._folded_at = time.monotonic()
            return folded

    def fold_due(self) -> bool:
        waiting = self._next_seq - 1 - self._covered_seq
        return waiting >= FOLD_EVENTS or (waiting > 0 and time.monotonic() - self._folded_at >= FOLD_SECONDS)

    # reads ----------------------------------------------------------------------------------
    def rows(self, project_id: str, plan: RowsPlan) -> RowsPage:
        with self._cursor() as cur:
            return reads.select_rows(cur, project_id, plan)

    def stats(self, project_id: str, plan: StatsPlan) -> list[StatRow]:
        with self._cursor() as cur:
            return reads.select_stats(cur, project_id, plan)

    def sources(self, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
        with self._cursor() as cur:
            return reads.select_sources(cur, project_id, plan)

    def funnel(self, project_id: str, plan: FunnelPlan) -> FunnelCounts:
        with self._cursor() as cur:
            return select_funnel(cur, project_id, plan)

    def export_page(
        self, project_id: str, time_range: TimeRange, after: export.Position | None, limit: int
    ) -> tuple[bytes, export.Position | None]:
        with self._cursor() as cur:
            return export.select_page(cur, project_id, time_range, after, limit)

    def ping(self) -> None:
        with self._db.cursor() as cur:
            cur.execute("SELECT 1").fetchall()

    def status(self) -> dict[str, Any]:
        with self._lock:
            waiting, waiting_bytes = self._unflushed_events, self._unflushed_bytes
            waited = time.monotonic() - self._oldest_unflushed if waiting else 0.0
        return {
            "backend": "duckdb",
            "path": str(self.path),
            "format": migrations.VERSION,
            "unflushed_events": waiting,
            "unflushed_bytes": waiting_bytes,
            "unflushed_seconds": waited,
            "quarantined_files": self.quarantined_files(),
            "quarantine": str(self._quarantine),
        }

    def backup(self, target: Path) -> int:
        """Copy every committed and acknowledged event (and the rollup) into a new DuckDB file at
        `target`, as one consistent snapshot, while appends and reads go on. Returns the events copied."""
        self.flush()
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        with self._db.cursor() as cur:
            name = cur.execute("SELECT current_database()").fetchall()[0][0]
            quoted = str(partial).replace("'", "''")
            cur.execute(f"ATTACH '{quoted}' AS millimetric_backup")
            try:
                cur.execute(f'COPY FROM DATABASE "{name}" TO millimetric_backup')
                copied = cur.execute("SELECT count(*) FROM millimetric_backup.events").fetchall()[0][0]
            finally:
                cur.execute("DETACH millimetric_backup")
        shutil.move(partial, target)
        return int(copied)

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
            self._insert(*self._take_unflushed())  # closes and deletes the last journal file too
            self._writer.close()
            try:
                rollup.fold(self._folder)
            except duckdb.Error:  # the next start folds instead
                log.exception("could not fold new events into the sources rollup")
            self._folder.close()
            self._db.execute("CHECKPOINT")
            self._db.close()


def _arrow_table(frames: list[Frame]) -> pa.Table:
    """The frames' rows (`rows.encode_rows`) with their seqs, as one Arrow table."""
    rows = decode_rows((frame.payload, frame.payload_format) for frame in frames)
    seqs = pa.array(itertools.chain.from_iterable(range(f.first_seq, f.next_seq) for f in frames), pa.int64())
    if len(seqs) != rows.num_rows:
        raise ValueError(f"journal frames announce {len(seqs)} rows but hold {rows.num_rows}")
    return rows.add_column(0, _SEQ, seqs)
