"""Read-only look at what an embedded event store holds, for tests: a consistent copy made by the
store's own backup, opened read-only with DuckDB (the live file belongs to the store process)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from millimetric.settings import EVENTS_FILE
from millimetric.store.duckdb.client import DuckDBEventStore


def query_stored(store: object, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of one statement over a fresh backup of `store`."""
    assert isinstance(store, DuckDBEventStore), "stored rows can be read from the embedded store only"
    with tempfile.TemporaryDirectory() as directory:
        store.backup(Path(directory))
        with duckdb.connect(str(Path(directory) / EVENTS_FILE), read_only=True) as con:
            result = con.execute(sql, params or [])
            return [d[0] for d in result.description], result.fetchall()
