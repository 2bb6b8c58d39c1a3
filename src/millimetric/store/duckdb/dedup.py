"""De-duplication by event id in the embedded store: an event whose (project_id, event_id) the
store accepted within the last `WINDOW` is not stored again.

Every server process and worker appends through the one store process, so an index held there
sees every append and the decision is exact across workers. The index lives in memory, one dict
per UTC day of first sight (a day older than the window is dropped whole), and is rebuilt at
start from the events table: each flush records the highest seq it inserted and when
(`dedup_marks`), so an event's time of first sight is that of the flush that inserted it. Rows
the journal still held at a crash are replayed before the rebuild, so a duplicate decision
survives a hard kill; replayed rows count as seen at the restart. Events stored before the marks
existed count as seen at their own timestamp. A forget or retention delete removes ids from the
index at the next start only: until then a repeat of a deleted event is still a duplicate.

The index costs roughly 100-150 bytes of memory per event id accepted within the window.
"""

from __future__ import annotations

import datetime as dt
import time
from array import array
from typing import Callable, Sequence

import duckdb
import pyarrow as pa

from millimetric.events.model import COLUMNS
from millimetric.store.interface import DEDUP_WINDOW

WINDOW = DEDUP_WINDOW
_WINDOW_S = WINDOW.total_seconds()
_DAY_S = 86_400
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


class SeenIds:
    """The (project_id, event_id) pairs accepted within the window. Not thread-safe: the store
    calls it under its journal lock, so checking and remembering are one step for every append."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._days: dict[int, dict[str, dict[str, float]]] = {}  # day -> project -> event id -> seen at

    def __len__(self) -> int:
        return sum(len(ids) for projects in self._days.values() for ids in projects.values())

    def duplicates(self, projects: list[str | None], ids: list[str | None]) -> list[int]:
        """Positions of rows whose id was seen within the window, or earlier in the same rows."""
        now = self._clock()
        oldest = now - _WINDOW_S
        self._expire(oldest)
        found: list[int] = []
        # Per project (an append rarely holds more than one): its ids so far in this call, and
        # its id maps of the days in the window.
        calls: dict[str, tuple[set[str], list[dict[str, float]]]] = {}
        for position, (project, event_id) in enumerate(zip(projects, ids)):
            if event_id is None or project is None:
                continue
            call = calls.get(project)
            if call is None:
                call = calls[project] = (set(), [day[project] for day in self._days.values() if project in day])
            earlier, days = call
            if event_id in earlier:
                found.append(position)
                continue
            earlier.add(event_id)
            for day in days:
                at = day.get(event_id)
                if at is not None and at >= oldest:
                    found.append(position)
                    break
        return found

    def remember(
        self, projects: list[str | None], ids: list[str | None], skip: Sequence[int] = (), at: float | None = None
    ) -> None:
        """Add the rows' ids (except those at `skip`), seen `at` (epoch seconds, now by default)."""
        when = self._clock() if at is None else at
        skipped = set(skip)
        day = self._days.setdefault(int(when // _DAY_S), {})
        current: tuple[str | None, dict[str, float]] = (None, {})
        for position, (project, event_id) in enumerate(zip(projects, ids)):
            if event_id is None or project is None or (skipped and position in skipped):
                continue
            if current[0] != project:
                seen = day.get(project)
                if seen is None:
                    seen = day[project] = {}
                current = (project, seen)
            current[1].setdefault(event_id, when)

    def _expire(self, oldest: float) -> None:
        for day in [d for d in self._days if (d + 1) * _DAY_S < oldest]:
            del self._days[day]

    def rebuild(self, cur: duckdb.DuckDBPyConnection) -> int:
        """Load the ids of the events stored within the window; returns how many."""
        now = self._clock()
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
            for project, event_id, seen in chunk:
                day = self._days.setdefault(int(seen // _DAY_S), {})
                ids = day.get(project)
                if ids is None:
                    ids = day[project] = {}
                if event_id not in ids:
                    ids[event_id] = seen
                    count += 1
        return count
