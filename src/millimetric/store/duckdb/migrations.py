"""Numbered migrations of the DuckDB event store, applied when the store opens.

`store_format.version` says which migrations a database has had. A database from millimetric
0.1.0 has no such table; its events table makes it version 1. A database of a version newer than
this build knows is refused with a message, never opened. The sources rollup is derived data
with a layout of its own (`rollup.LAYOUT`): it is rebuilt, not migrated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import duckdb

from millimetric.events.model import COLUMNS

log = logging.getLogger("millimetric.store")

# A derived session id is not stored: `session_id` is a virtual column over `session_sent`, which
# keeps only ids that differ from the derivation (events.model.derived_session_id). Whole
# microseconds: DuckDB's epoch_ms rounds, which put the last half millisecond of each half hour in
# the next session (format 1 did that).
DERIVED_SESSION_SQL = """anonymous_id || '-' || (epoch_us("timestamp") // 1800000000)::VARCHAR"""
_DERIVED_SESSION_FORMAT_1 = """anonymous_id || '-' || (epoch_ms("timestamp") // 1800000)::VARCHAR"""
TABLE_COLUMNS = ("seq", *COLUMNS)
_STORED_COLUMNS = ", ".join(f'"{name}"' for name in TABLE_COLUMNS if name != "session_id") + ", session_sent"


def _events_table(name: str, derived_session_sql: str) -> str:
    types = {
        "timestamp": "TIMESTAMP",
        "seq": "BIGINT",
        "session_id": f"VARCHAR GENERATED ALWAYS AS (coalesce(session_sent, {derived_session_sql})) VIRTUAL",
    }
    columns = ", ".join(f'"{column}" {types.get(column, "VARCHAR")}' for column in TABLE_COLUMNS)
    return f"CREATE TABLE {name} ({columns}, session_sent VARCHAR)"


class StoreFormatError(RuntimeError):
    """The database was written by a newer release (or is not an event store)."""


def _0001_events(db: duckdb.DuckDBPyConnection) -> None:
    """The events table (rows arrive in time order, so zone maps on "timestamp" skip row groups
    outside a read's range) and the journal's high-water mark."""
    db.execute(_events_table("events", _DERIVED_SESSION_FORMAT_1))
    db.execute("CREATE TABLE journal_state (flushed_seq BIGINT NOT NULL)")
    db.execute("INSERT INTO journal_state VALUES (0)")


def _0002_session_ids_by_microsecond(db: duckdb.DuckDBPyConnection) -> None:
    """Derive session ids from whole microseconds. A generated column cannot be altered, so the
    table is rebuilt (in time order, which keeps the zone maps on "timestamp" tight)."""
    db.execute(_events_table("events_rebuilt", DERIVED_SESSION_SQL))
    db.execute(f"""INSERT INTO events_rebuilt ({_STORED_COLUMNS})
        SELECT {_STORED_COLUMNS} FROM events ORDER BY "timestamp", seq""")
    db.execute("DROP TABLE events")
    db.execute("ALTER TABLE events_rebuilt RENAME TO events")


MIGRATIONS: tuple[Callable[[duckdb.DuckDBPyConnection], None], ...] = (
    _0001_events,
    _0002_session_ids_by_microsecond,
)
VERSION = len(MIGRATIONS)


def _tables(db: duckdb.DuckDBPyConnection) -> set[str]:
    found = db.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    return {name for (name,) in found}


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
    columns = db.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'events'").fetchall()
    if found == 1 and ("session_sent",) not in columns:
        raise StoreFormatError(f"{path} has the event table of a pre-release build: start on a new data directory")
    db.execute("CREATE TABLE IF NOT EXISTS store_format (version INTEGER NOT NULL)")
    db.execute("INSERT INTO store_format SELECT $v WHERE NOT EXISTS (SELECT 1 FROM store_format)", {"v": found})
    for number in range(found, VERSION):
        step = MIGRATIONS[number]
        if found:
            log.info("event store %s: migration %s", path, step.__name__.lstrip("_"))
        db.execute("BEGIN TRANSACTION")
        try:
            step(db)
            db.execute("UPDATE store_format SET version = $v", {"v": number + 1})
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found
