"""Reading a project's events out of the DuckDB store for `EventStore.export`, a page at a time.

Pages follow the order ("timestamp", seq) and each starts after the last row of the one before
(a keyset, not an offset): every page is one bounded query, so neither process holds more than a
page, and a page costs the same at the end of the export as at its start.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import duckdb
import pyarrow as pa

from millimetric.events.queries import TimeRange
from millimetric.store.interface import EXPORT_SCHEMA

_COLUMNS = ", ".join(f'"{name}"' for name in EXPORT_SCHEMA.names)
_PAGE = f"""
    SELECT seq, {_COLUMNS} FROM events
    WHERE project_id = $project AND "timestamp" >= $start AND "timestamp" < $end
      AND ($after_seq IS NULL OR "timestamp" > $after_time OR ("timestamp" = $after_time AND seq > $after_seq))
    ORDER BY "timestamp", seq
    LIMIT $limit"""


class Position(NamedTuple):
    """Where a page ended: the last row's timestamp and seq."""

    timestamp: dt.datetime
    seq: int


def select_page(
    cur: duckdb.DuckDBPyConnection, project_id: str, time_range: TimeRange, after: Position | None, limit: int
) -> tuple[bytes, Position | None]:
    """One page as an Arrow IPC stream (of `EXPORT_SCHEMA`), and where the next one starts (None: this
    was the last)."""
    params = {
        "project": project_id,
        "start": time_range.start,
        "end": time_range.end,
        "after_time": after.timestamp if after else None,
        "after_seq": after.seq if after else None,
        "limit": limit,
    }
    table = cur.sql(_PAGE, params=params).to_arrow_table()
    following = None
    if table.num_rows == limit:
        last = table.slice(table.num_rows - 1)
        following = Position(last.column("timestamp")[0].as_py(), last.column("seq")[0].as_py())
    rows = table.drop_columns(["seq"]).cast(EXPORT_SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EXPORT_SCHEMA) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes(), following


def read_page(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(payload).read_all()
