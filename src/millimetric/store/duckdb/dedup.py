"""De-duplication by event id in the embedded store: an event whose (project_id, event_id) the
store accepted within the last `WINDOW` is not stored again.

Every server process and worker appends through the one store process, so an index
(`millimetric.store.dedup.SeenIds`) held there sees every append and the decision is exact across
workers. The index is rebuilt at start from the events table: each flush records the highest seq
it inserted and when (`dedup_marks`), so an event's time of first sight is that of the flush that
inserted it. Rows the journal still held at a crash are replayed before the rebuild, so a
duplicate decision survives a hard kill; replayed rows count as seen at the restart. Events
stored before the marks existed count as seen at their own timestamp. A forget or retention
delete removes ids from the index at the next start only: until then a repeat of a deleted event
is still a duplicate.
"""

from __future__ import annotations

import datetime as dt
import time
from array import array
from typing import Callable, Sequence

import duckdb
import pyarrow as pa

from millimetric.events.model import COLUMNS
from millimetric.store.dedup import WINDOW, SeenIds

_WINDOW_S = WINDOW.total_seconds()
_PROJECT = COLUMNS.index("project_id")
_EVENT_ID = COLUMNS.index("event_id")
_MARKS = "dedup_marks"


def open_marks(cur: duckdb.DuckDBPyConnection) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {_MARKS} (seq_upto BIGINT NOT NULL, seen_at TIMESTAMP NOT NULL)")


def record_mark(cur: duckdb.DuckDBPyConnection, seq_upto: int, now: float) -> None:
    """In the flush's transaction: rows up to `seq_upto` were seen by `now` (epoch seconds).
    Marks older than the window go, except the newest of them: it bounds the rebuild's scan."""
    at = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(tzinfo=None)
    cur.execute(f"INSERT INTO {_MARKS} VALUES ($seq, $at)", {"seq": seq_upto, "at": at})
    cur.execute(
        f"""DELETE FROM {_MARKS} WHERE seen_at < $old
            AND seq_upto < (SELECT max(seq_upto) FROM {_MARKS} WHERE seen_at < $old)""",
        {"old": at - WINDOW - dt.timedelta(days=1)},
    )


def event_ids(batch: pa.RecordBatch) -> tuple[list[str | None], list[str | None]] | None:
    """(project ids, event ids) of a batch of rows, or None when no row has an event id."""
    ids = batch.column(_EVENT_ID)
    if ids.null_count == len(ids):
        return None
    return batch.column(_PROJECT).to_pylist(), ids.to_pylist()


def encode_positions(positions: Sequence[int]) -> bytes:
    return array("I", positions).tobytes()


def decode_positions(data: bytes) -> list[int]:
    positions = array("I")
    positions.frombytes(data)
    return positions.tolist()


def rebuild(seen: SeenIds, cur: duckdb.DuckDBPyConnection, clock: Callable[[], float] = time.time) -> int:
    """Load the ids of the events stored within the window into `seen`; returns how many."""
    now = clock()
    oldest = dt.datetime.fromtimestamp(now - _WINDOW_S, dt.timezone.utc).replace(tzinfo=None)
    floor = cur.execute(f"SELECT coalesce(max(seq_upto), 0) FROM {_MARKS} WHERE seen_at < $old", {"old": oldest})
    (seq_floor,) = floor.fetchall()[0]
    result = cur.execute(
        f"""SELECT e.project_id, e.event_id, epoch(coalesce(m.seen_at, e."timestamp")) AS seen
            FROM (SELECT seq, project_id, event_id, "timestamp" FROM events
                  WHERE event_id IS NOT NULL AND seq > $floor) e
            ASOF LEFT JOIN {_MARKS} m ON e.seq <= m.seq_upto
            WHERE coalesce(m.seen_at, e."timestamp") >= $old""",
        {"floor": seq_floor, "old": oldest},
    )
    count = 0
    while chunk := result.fetchmany(100_000):
        count += seen.load(chunk)
    return count
