"""Numbered migrations of the DuckDB event store, applied when the store opens.

`store_format.version` says which migrations a database has had. A database from millimetric
0.1.0 has no such table; its events table makes it version 1. A database of a version newer than
this build knows is refused with a message, never opened. The sources rollup is derived data
with a layout of its own (`rollup.LAYOUT`): it is rebuilt, not migrated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import duckdb

from millimetric.events.model import COLUMNS

# A derived session id is not stored: `session_id` is a virtual column over `session_sent`, which
# keeps only ids that differ from the derivation (events.model.derived_session_id).
DERIVED_SESSION_SQL = """anonymous_id || '-' || (epoch_ms("timestamp") // 1800000)::VARCHAR"""
TABLE_COLUMNS = ("seq", *COLUMNS)
_TYPES = {
    "timestamp": "TIMESTAMP",
    "seq": "BIGINT",
    "session_id": f"VARCHAR GENERATED ALWAYS AS (coalesce(session_sent, {DERIVED_SESSION_SQL})) VIRTUAL",
}


class StoreFormatError(RuntimeError):
    """The database was written by a newer release (or is not an event store)."""


def _0001_events(db: duckdb.DuckDBPyConnection) -> None:
    """The events table (rows arrive in time order, so zone maps on "timestamp" skip row groups
    outside a read's range) and the journal's high-water mark."""
    columns = ", ".join(f'"{name}" {_TYPES.get(name, "VARCHAR")}' for name in TABLE_COLUMNS)
    db.execute(f"CREATE TABLE events ({columns}, session_sent VARCHAR)")
    db.execute("CREATE TABLE journal_state (flushed_seq BIGINT NOT NULL)")
    db.execute("INSERT INTO journal_state VALUES (0)")


MIGRATIONS: tuple[Callable[[duckdb.DuckDBPyConnection], None], ...] = (_0001_events,)
VERSION = len(MIGRATIONS)


def _tables(db: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in db.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}


def version(db: duckdb.DuckDBPyConnection) -> int:
    tables = _tables(db)
    if "store_format" in tables:
        return int(db.execute("SELECT version FROM store_format").fetchall()[0][0])
    return 1 if "events" in tables else 0


def migrate(db: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Apply the migrations `path` lacks, each in its own transaction; returns the version found."""
    found = version(db)
    if found > VERSION:
        raise StoreFormatError(
            f"{path} holds event store format {found}, newer than this build knows ({VERSION}): it was "
            "written by a newer millimetric. Run that version, or restore a backup made by this one."
        )
    if found == 1 and "session_sent" not in {
        name for (name,) in db.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'events'").fetchall()
    }:
        raise StoreFormatError(f"{path} has the event table of a pre-release build: start on a new data directory")
    db.execute("CREATE TABLE IF NOT EXISTS store_format (version INTEGER NOT NULL)")
    db.execute("INSERT INTO store_format SELECT $v WHERE NOT EXISTS (SELECT 1 FROM store_format)", {"v": found})
    for number in range(found, VERSION):
        db.execute("BEGIN TRANSACTION")
        try:
            MIGRATIONS[number](db)
            db.execute("UPDATE store_format SET version = $v", {"v": number + 1})
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found
